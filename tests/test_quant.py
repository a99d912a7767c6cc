"""Quantification: yield averaging and interpolation, normalisation, self-absorption, the quant step."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from xrfproc import store
from xrfproc.core import quant as cq
from xrfproc.core import quant_maps as qm
from xrfproc.core import xraydata as xd
from xrfproc.core.cnc import Cnc, write_cnc
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import ConfigError, InputError
from xrfproc.steps.quant import div_by_cnc, quantify


# --------------------------------------------------------------------------- yields
def test_average_yields_standard_error_of_the_mean():
    t = cq.average_yields([(["Fe K", "Zn K"], np.array([1.0, 2.0]), np.array([0.01, 0.02])),
                           (["Fe K"], np.array([1.2]), np.array([0.01])),
                           (["Fe K", "Cu K"], np.array([1.1, 3.0]), np.array([0.01, 0.3]))])
    assert t.names == ["Fe K", "Zn K", "Cu K"]
    fe = np.array([1.0, 1.2, 1.1])
    assert t.get("Fe K")[0] == pytest.approx(fe.mean())
    assert t.get("Fe K")[1] == pytest.approx(fe.std(ddof=1) / np.sqrt(3))
    assert t.get("Zn K") == pytest.approx((2.0, 0.02))  # a single reference keeps its own error
    assert list(t.n_refs) == [3, 1, 1]
    # two references agreeing by chance: the propagated error is the floor
    t2 = cq.average_yields([(["Fe K"], np.array([1.0]), np.array([0.1])), (["Fe K"], np.array([1.0]), np.array([0.1]))])
    assert t2.get("Fe K")[1] == pytest.approx(np.sqrt(0.02) / 2)


def test_complete_yields_interpolates_extrapolates_reuses_and_reports():
    table = cq.average_yields([(["Fe K", "Zn K", "Sr K", "Pb L"], np.array([1.0, 2.0, 4.0, 5.0]),
                                np.array([0.1, 0.2, 0.4, 0.5]))])
    wanted = ["Cu K", "Mn K", "Y K", "Ba L", "Au M", "Compt", "Zn K"]
    out = cq.complete_yields(table, wanted)
    assert out.names == ["Cu K", "Mn K", "Y K", "Ba L", "Zn K"]
    assert out.missing == ["Au M", "Compt"]  # no M yield at all, scatter: left out, never -1
    v = dict(zip(out.names, out.values))
    origin = dict(zip(out.names, out.origin))
    # Cu (29) between Fe (26) and Zn (30)
    assert v["Cu K"] == pytest.approx(1.0 + 3 / 4 * 1.0) and origin["Cu K"] == "interpolated"
    assert out.stddev[0] == pytest.approx(np.hypot(0.25 * 0.1, 0.75 * 0.2))
    # Mn (25) below Fe: extrapolated from Fe and Zn
    assert v["Mn K"] == pytest.approx(1.0 - 1 / 4 * 1.0) and origin["Mn K"] == "extrapolated"
    # Y (39) above Sr (38): from Zn and Sr
    assert v["Y K"] == pytest.approx(4.0 + 2.0 / 8) and origin["Y K"] == "extrapolated"
    assert v["Ba L"] == pytest.approx(5.0) and origin["Ba L"] == "reused"
    assert origin["Zn K"] == "measured"
    assert not np.any(out.values == -1)
    # an extrapolation to a non-positive yield is left out and reported
    low = cq.complete_yields(table, ["Ca K"])  # 1 - 6/4 < 0
    assert low.names == [] and low.missing == ["Ca K"]


def test_merge_ka_kb():
    names = ["Fe Ka", "Cu K", "Fe Kb", "Compt"]
    ims = np.arange(4 * 6, dtype=float).reshape(4, 2, 3) + 1
    std = np.ones_like(ims)
    n, i, s = cq.merge_ka_kb(names, ims, std)
    assert n == ["Fe K", "Cu K", "Compt"]
    np.testing.assert_allclose(i[0], ims[0] + ims[2])
    np.testing.assert_allclose(s[0], np.sqrt(2.0))
    n2, i2, _ = cq.merge_ka_kb(["Fe K", "Fe Ka", "Fe Kb"], np.ones(3), np.ones(3))
    assert n2 == ["Fe K", "Fe Ka", "Fe Kb"]  # an existing Fe K group is not replaced


def test_normalise_by_signal_never_in_place():
    ims = np.array([[[4.0, 8.0]], [[2.0, 2.0]]])
    std = np.array([[[0.4, 0.8]], [[0.2, 0.1]]])
    out, err = cq.normalise_by_signal(ims, std, ims[1], std[1])  # a row of the stack itself
    np.testing.assert_allclose(out[0], [[2.0, 4.0]])
    np.testing.assert_allclose(out[1], 1.0)
    np.testing.assert_allclose(ims[1], 2.0)  # input untouched
    np.testing.assert_allclose(err[0], out[0] * np.sqrt(0.1 ** 2 + np.array([[0.1, 0.05]]) ** 2))
    with pytest.raises(InputError, match="normalising signal 'Rayl' not found"):
        cq.find_signal(["Fe K", "Compt"], "Rayl")


def test_theoretical_ratio_and_subgroup_energies():
    g = xd.line_group("Fe", "K")
    ka = [ln for ln in g.lines if ln.startswith("KL")]
    kb = [ln for ln in g.lines if not ln.startswith("KL")]
    rates = dict(zip(g.lines, g.rates))
    expected = sum(rates[ln] for ln in ka) / sum(rates[ln] for ln in kb)
    assert cq.theoretical_ka_kb("Fe", 18.0) == pytest.approx(expected, rel=1e-6)
    assert 6.39 < cq.line_energy("Fe Ka", 18.0) < 6.41
    assert 7.05 < cq.line_energy("Fe Kb", 18.0) < 7.11
    assert cq.line_energy("Fe Ka", 18.0) < cq.line_energy("Fe K", 18.0) < cq.line_energy("Fe Kb", 18.0)


# --------------------------------------------------------------------------- self-absorption
def test_rhot_round_trip_and_flags():
    chi_a, chi_b, r_th = 80.0, 65.0, 7.5
    true = np.array([1e-4, 1e-3, 5e-3, 2e-2, 5e-2])
    ratio = r_th * qm.ratio_model(true, chi_a, chi_b)
    rhot, flags = qm.rhot_from_ratio(ratio, r_th, chi_a, chi_b, nominal=0.01)
    np.testing.assert_allclose(rhot, true, rtol=1e-6)
    assert not flags.any()
    # thin side, thick side, missing
    odd = np.array([r_th * 1.01, r_th * chi_b / chi_a * 0.99, np.nan, -1.0])
    rhot, flags = qm.rhot_from_ratio(odd, r_th, chi_a, chi_b, nominal=0.01)
    assert list(flags) == [qm.FLAG_NO_ABSORPTION, qm.FLAG_THICK, qm.FLAG_NO_RATIO, qm.FLAG_NO_RATIO]
    assert rhot[0] == 0.01 and np.isinf(rhot[1]) and rhot[2] == 0.01
    # an edge between Ka and Kb (Kb more absorbed): the ratio rises with thickness
    ratio = r_th * qm.ratio_model(true, 40.0, 90.0)
    assert np.all(np.diff(ratio) > 0)
    np.testing.assert_allclose(qm.rhot_from_ratio(ratio, r_th, 40.0, 90.0, 0.0)[0], true, rtol=1e-6)
    with pytest.raises(InputError, match="equally"):
        qm.rhot_from_ratio(ratio, r_th, 50.0, 50.0, 0.0)


def test_corrected_concentrations_thin_thick_and_factor_flag():
    chi_a, chi_b, r_th = 80.0, 65.0, 7.5
    rhot_true = np.array([1e-3, 2e-2, np.inf])
    ratio = r_th * np.where(np.isinf(rhot_true), chi_b / chi_a * 0.999, qm.ratio_model(rhot_true, chi_a, chi_b))
    sa = qm.self_absorption("Fe", ratio * 1e6, ratio * 1e-3, np.full(3, 1e6), np.full(3, 1e-3), r_th, chi_a, chi_b,
                            nominal=0.05)
    chi = np.array([200.0, 60.0])
    c_true = np.array([[300.0], [50.0]])
    areal = c_true * qm.absorbed_mass(chi[:, None], rhot_true[None])
    ppm, err, factor, flags = qm.correct_concentrations(areal, 0.01 * areal, chi, sa, max_factor=3.0)
    np.testing.assert_allclose(ppm, np.broadcast_to(c_true, (2, 3)), rtol=1e-5)
    assert flags[2] == qm.FLAG_THICK and np.isinf(factor[:, 2]).all()
    assert flags[1] == qm.FLAG_FACTOR  # chi rho t = 4 for the first line: factor ~4 > 3
    assert factor[0, 1] == pytest.approx(4.0 / (1 - np.exp(-4.0)))
    assert np.all(err > 0)


# --------------------------------------------------------------------------- the step
GRID = (2, 3)


def _layout(path: Path, names: list[str], ims: np.ndarray, sums: np.ndarray, I0: float = 1e5) -> Path:
    raw = RawMap({"channel00": RawChannel(np.ones(GRID + (16,), np.uint32), np.ones(GRID), np.ones(GRID))},
                 I0=np.full(GRID, I0), acquisition_time=np.full(GRID, 1.0), mot1=np.zeros(GRID), mot2=np.zeros(GRID),
                 energy_keV=18.0)
    path = store.write_raw(path, raw)
    with store.transaction(path, "normalise", replace=["norm"]) as tx:
        g = tx.group("norm")
        store.write_array(g, "I0", I0)
        c = g.create_group("channel00")
        store.write_array(c, "names", names)
        store.write_array(c, "ims", ims)
        store.write_array(c, "stddev", 0.01 * np.abs(ims))
        store.write_array(c, "sum/int", sums)
        store.write_array(c, "sum/int_stddev", 0.01 * np.abs(sums))
    return path


def _reference(path: Path, yields: dict[str, float], compt_sum: float = 5e4) -> Path:
    names = list(yields) + ["Compt"]
    p = _layout(path, names, np.ones((len(names),) + GRID), np.array([1.0] * len(yields) + [compt_sum]))
    with store.transaction(p, "detlim", replace=["elyield/ref"]) as tx:
        g = tx.group("elyield/ref/channel00")
        store.write_array(g, "names", list(yields))
        store.write_array(g, "yield", np.array(list(yields.values())))
        store.write_array(g, "stddev", 0.02 * np.array(list(yields.values())))
    return p


def test_quantify_areal_norm_mask_and_div_by_cnc(tmp_path):
    ref = _reference(tmp_path / "ref.h5", {"Fe K": 2e-3, "Zn K": 4e-3})
    names = ["Fe K", "Cu K", "Zn K", "Compt"]
    rng = np.random.default_rng(0)
    ims = rng.uniform(50, 100, (4,) + GRID)
    sums = ims.reshape(4, -1).mean(axis=1)
    path = _layout(tmp_path / "s.h5", names, ims, sums)
    mask = np.zeros(GRID, bool)
    mask[0, 0] = True
    summary = quantify(path, ref, mask=mask, yields="z")  # linear interpolation in Z, kept as an option
    ch = summary["channels"]["channel00"]
    assert ch["names"] == ["Fe K", "Cu K", "Zn K"] and ch["yield_origin"]["Cu K"] == "interpolated"
    y_cu = 2e-3 + 3 / 4 * 2e-3
    with store.open_read(path) as f:
        g = f["quant/channel00"]
        q = g["ims"][()]
        assert g["ims"].attrs["unit"] == "ug/cm^2"
        assert np.isnan(q[:, 0, 0]).all()
        np.testing.assert_allclose(q[1, 1], ims[1, 1] / 1e5 / y_cu, rtol=1e-5)
        np.testing.assert_allclose(g["sum/int"][()][0], sums[0] / 1e5 / 2e-3)
        assert g["sum/int_stddev"][()][0] == pytest.approx(sums[0] / 1e5 / 2e-3 * np.hypot(0.01, 0.02))
        assert store.decode_names(g["refs"][()]) == [f"{ref}::elyield/ref/channel00"]
        prov = store.read_provenance(f["quant"])
        assert prov["step"] == "quantify" and json.loads(json.dumps(prov["parameters"]))["mask"] is True
    # normalised by Compton: yields per Compton count of the reference, maps per Compton count
    quantify(path, ref, norm="Compt")
    with store.open_read(path) as f:
        g = f["quant/channel00"]
        assert store.decode_names(g["names"][()]) == ["Fe K", "Cu K", "Zn K"]
        y_fe = 2e-3 * 1e5 / 5e4
        np.testing.assert_allclose(g["ims"][()][0], ims[0] / ims[3] / y_fe, rtol=1e-5)
    # a line as normaliser is not quantified (and not divided by itself in place)
    s2 = quantify(path, ref, norm="Zn K")
    assert s2["channels"]["channel00"]["names"] == ["Fe K", "Cu K"]
    # div_by_cnc on areal maps needs an areal file; ppm with ppm
    quantify(path, ref)
    areal_cnc = write_cnc(tmp_path / "film.cnc", Cnc("film", np.array([26, 29]), np.array([100.0, 50.0]),
                                                     np.array([5.0, 0.0]), unit="ng/mm^2"))
    out = div_by_cnc(path, areal_cnc)
    assert out["channels"]["channel00"]["skipped"] == ["Zn K"]
    with store.open_read(path) as f:
        q = f["quant/channel00/ims"][()]
        qs = f["quant/channel00/stddev"][()]
        g = f["rel_dif/channel00"]
        assert store.decode_names(g["names"][()]) == ["Fe K", "Cu K"]
        assert g["cnc"][()].decode() == str(areal_cnc)
        np.testing.assert_allclose(g["ims"][()][0], q[0] / 10.0, rtol=1e-6)
        rel = np.sqrt((qs[0] / q[0]) ** 2 + 0.05 ** 2)  # errors propagated once
        np.testing.assert_allclose(g["stddev"][()][0], q[0] / 10.0 * rel, rtol=1e-5)
        assert "quant" in f  # the quant group is kept
    ppm_cnc = write_cnc(tmp_path / "ci.cnc", Cnc("ci", np.array([26]), np.array([1e5]), np.array([0.0]), density=2000))
    with pytest.raises(InputError, match="units must agree"):
        div_by_cnc(path, ppm_cnc)


def test_quantify_bulk_matrix_and_errors(tmp_path):
    ref = _reference(tmp_path / "ref.h5", {"Fe K": 2e-3, "Zn K": 4e-3})
    names = ["Fe K", "Zn K", "Compt"]
    ims = np.full((3,) + GRID, 80.0)
    path = _layout(tmp_path / "s.h5", names, ims, ims.reshape(3, -1).mean(axis=1))
    matrix = write_cnc(tmp_path / "m.cnc", Cnc("m", np.array([8, 14]), np.array([5.3e5, 4.7e5]), np.zeros(2),
                                               density=2500, thickness=0))
    quantify(path, ref, matrix=matrix)
    from xrfproc.core import absorption
    from xrfproc.core.geometry import PRESETS
    # line-averaged information depth of the thick matrix (each Fe K line its own, weighted as detected)
    d_eff = absorption.group_effective_thickness("Fe K", 18.0, {8: 0.53, 14: 0.47}, 2.5, np.inf,
                                                 geometry=PRESETS["generic"])
    chi = absorption.chi({8: 0.53, 14: 0.47}, 18.0, np.array([absorption.group_energy("Fe K", 18.0)]))
    assert d_eff == pytest.approx(1.0 / (chi[0] * 2.5), rel=0.02)  # near the mean-energy value
    with store.open_read(path) as f:
        g = f["quant/channel00"]
        assert g["ims"].attrs["unit"] == "ppm"
        np.testing.assert_allclose(g["ims"][()][0], 80.0 / 1e5 / 2e-3 / (2.5 * d_eff), rtol=1e-4)
    with pytest.raises(ConfigError, match="either matrix"):
        quantify(path, ref, matrix=matrix, absorb=(["Fe"], matrix))
    with pytest.raises(InputError, match="separate Ka and Kb"):
        quantify(path, ref, absorb=(["Fe"], matrix))
    with pytest.raises(Exception, match="elyield"):
        quantify(path, path)


def test_quantify_absorb_writes_ratio_and_flags(tmp_path):
    ref = _reference(tmp_path / "ref.h5", {"Fe K": 2e-3, "Zn K": 4e-3})
    matrix = {26: 0.5, 8: 0.3, 14: 0.2}
    mcnc = write_cnc(tmp_path / "fe.cnc", Cnc("fe", np.array(list(matrix)), np.array(list(matrix.values())) * 1e6,
                                              np.zeros(3), density=4000, thickness=30))
    from xrfproc.core import absorption
    ea, eb = cq.line_energy("Fe Ka", 18.0), cq.line_energy("Fe Kb", 18.0)
    chi_a, chi_b = absorption.chi(matrix, 18.0, np.array([ea, eb]))
    from xrfproc.core.geometry import PRESETS
    r_th = cq.theoretical_ka_kb("Fe", 18.0, PRESETS["generic"])  # quantify's default geometry
    rhot = np.array([[2e-3, 5e-3, 1e-2], [2e-2, 1.0, 1e-3]])
    q = qm.ratio_model(rhot, chi_a, chi_b)
    q[1, 2] = 1.02  # no measurable absorption: nominal rho t
    ka = np.full(GRID, 1e6) * r_th * q
    kb = np.full(GRID, 1e6)
    names = ["Fe Ka", "Fe Kb", "Zn K", "Compt"]
    ims = np.stack([ka, kb, np.full(GRID, 50.0), np.full(GRID, 1e3)])
    path = _layout(tmp_path / "s.h5", names, ims, ims.reshape(4, -1).mean(axis=1))
    summary = quantify(path, ref, absorb=("Fe", mcnc))
    ch = summary["channels"]["channel00"]
    assert ch["names"] == ["Fe K", "Zn K"] and ch["element"] == "Fe"
    assert ch["flags"]["no_absorption"] == 1 and ch["flags"]["thick"] == 1
    with store.open_read(path) as f:
        g = f["quant/channel00"]
        got = g["rhot"][()]
        np.testing.assert_allclose(got.ravel()[:4], rhot.ravel()[:4], rtol=1e-5)
        assert np.isinf(got[1, 1]) and got[1, 2] == pytest.approx(4.0 * 30e-4)
        assert g["ratio_th"][()] == pytest.approx(r_th)
        assert g["absorb_flag"][()][1, 1] == qm.FLAG_THICK
        # each Zn K line absorbed at its own energy, weighted as detected (as the yields are made)
        chis, w = absorption.group_line_chi("Zn K", 18.0, matrix, geometry=PRESETS["generic"])
        m_zn = sum(wk * qm.absorbed_mass(ck, got) for ck, wk in zip(chis, w)) / w.sum()
        chi_zn = absorption.chi(matrix, 18.0, np.array([cq.line_energy("Zn K", 18.0)]))[0]
        np.testing.assert_allclose(m_zn, qm.absorbed_mass(chi_zn, got), rtol=0.03)  # near the mean-energy value
        expected = 50.0 / 1e5 / 4e-3 / m_zn
        np.testing.assert_allclose(g["ims"][()][1], expected, rtol=1e-4)
        assert g["ims"].attrs["unit"] == "ppm"
