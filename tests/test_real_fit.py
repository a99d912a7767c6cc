"""Real measured spectra as the reference of the fit: PyMca's own full fit, the calibration of the
configuration PyMca ships with the spectrum, and the sum rule on a real APS fly scan.

Data: PyMca's ``Steel.spe``/``Steel.cfg`` (NIST SRM 1155, from the installed PyMca5) and the APS
2-ID-E fly scan in ``tests/data/real`` (see its README for sources and licences).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

import xrfproc
from xrfproc.core import fit_model, pymca_bridge, sumfit
from xrfproc.core.calibrate import peak_calibration

REAL = Path(__file__).parent / "data" / "real"
#: elements XRF-Maps fits for this data set plus those of the AXO thin-film standard it resembles
ALLOWED_2XFM = {"Si", "P", "S", "Cl", "Ar", "K", "Ca", "Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu", "Zn", "Mo",
                "Pd", "La", "Pb"}


@pytest.fixture(scope="module")
def steel():
    cfg = pymca_bridge.read_config(pymca_bridge.PYMCA_DATA_DIR / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1  # SNIP, as the engine and PyMca's fast fit need
    y = pymca_bridge.read_spectrum_file(pymca_bridge.PYMCA_DATA_DIR / "Steel.spe").astype(np.float64).ravel()
    return cfg, y


def test_engine_sum_fit_equals_pymca_full_fit_on_steel(steel):
    cfg, y = steel
    ref = pymca_bridge.full_fit(y, cfg)
    model = fit_model.build_model(cfg, y, y.size)
    res = sumfit.fit_sum(model, y, 1, background="snip")
    assert res.chisq == pytest.approx(ref.chisq, rel=1e-3)
    names = [pymca_bridge.rename_group(n) for n in ref.names]
    for n, area, sig, stat in zip(names, ref.fitarea, ref.sigmaarea, ref.statistics):
        i = res.names.index(n)
        # areas: within 0.5 % for lines measured to better than 2 %, and within half a sigma for all
        if sig < 0.02 * area:
            assert res.fitarea[i] == pytest.approx(area, rel=5e-3), n
        assert abs(res.fitarea[i] - area) < 0.5 * sig, n
        assert res.sigma[i] == pytest.approx(sig, rel=0.02), n
        # the background under the lines (what detection limits use): PyMca's statistics - fitarea
        assert res.bkg[i] == pytest.approx(stat - area, rel=0.03), n
    # the calibration PyMca's fit finds
    assert res.theta[0] == pytest.approx(ref.calibration[0], abs=1e-3)
    assert res.theta[1] == pytest.approx(ref.calibration[1], rel=1e-3)


def test_steel_calibrated_from_its_peaks_without_a_calibration(steel):
    cfg, y = steel
    zero, gain = float(cfg["detector"]["zero"]), float(cfg["detector"]["gain"])
    fe_ka = 6.4039
    ch = (fe_ka - zero) / gain
    for energy in (16.0, None):  # the energy Steel.cfg records, and none at all
        cal = peak_calibration(y, energy)
        assert abs(cal.energy(ch) - fe_ka) < 0.010, energy
    from xrfproc.steps.calibrate import calibrate_spectrum

    r = calibrate_spectrum(y, 16.0)
    assert r["method"] == "peaks + sum-spectrum fit"
    assert abs(r["zero_keV"] + r["gain_keV"] * ch - fe_ka) < 0.005  # within 5 eV of Steel.cfg at Fe Ka


@pytest.fixture(scope="module")
def aps(tmp_path_factory):
    d = tmp_path_factory.mktemp("aps")
    for name in ("2xfm_0011.mda", "2xfm_0011_2xfm3__0.h5"):
        shutil.copy(REAL / name, d / name)
    return xrfproc.convert(d / "2xfm_0011.mda")


def test_aps_fly_scan_calibration_corrects_the_mda_header(aps):
    res = xrfproc.calibrate(aps)
    r = res["channels"]["channel00"]
    assert r["energy_keV"] == pytest.approx(10.2975, abs=1e-4)  # from the MDA's extra PVs
    # the header (0.05 keV + 0.0094 keV/channel) reads some line 60-200 eV off (issue: 90-185 eV)
    assert 60 < abs(r["shift_eV"]) < 200
    # independent check: Fe Ka and Cu Ka of detector elements a and b (which see the sample) land on
    # the channels where those raw spectra have their maxima
    with h5py.File(REAL / "2xfm_0011_2xfm3__0.h5") as f:
        ab = sum(f[f"MAPS_RAW/data_{k}"][()].reshape(2048, -1).sum(1) for k in "ab").astype(float)
    for energy in (6.4039, 8.0478):
        ch = (energy - r["zero_keV"]) / r["gain_keV"]
        lo = int(ch) - 12
        peak = lo + int(np.argmax(np.convolve(ab[lo:lo + 25], np.ones(3) / 3, "same")))
        assert abs(peak - ch) <= 2.0, energy
    with h5py.File(aps) as f:
        assert "calib/channel00" in f and "raw/channel00/spectra" in f


@pytest.mark.parametrize("mode", ["engine", "fast", "precise"])
def test_aps_fly_scan_default_chain(aps, mode):
    els = xrfproc.suggest_elements(aps)
    assert set(els) <= ALLOWED_2XFM, els
    assert {"Ca", "Fe", "Cu", "La"} <= set(els)
    cfg = xrfproc.make_config(aps, els)
    res = xrfproc.fit(aps, cfg, mode=mode, scheduler="sync")
    ch = res["channels"]["channel00"]
    # the sum rule for every line holding >= 2 % of the fluorescence
    assert {"Ca K", "Fe K", "Cu K", "La L"} <= set(ch["sum_rule"])
    for line, ratio in ch["sum_rule"].items():
        assert abs(ratio - 1) < 0.05, (mode, line, ratio)
    assert ch["chi2_median"] < 2.0
    assert not [w for w in ch["warnings"] if "sum rule" in w]
    with h5py.File(aps) as f:
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in f["fit/channel00/names"][()]]
        ims = f["fit/channel00/ims"][()]
        rule = f["fit/channel00/sum_rule"][()]
        sum_int = f["fit/channel00/sum/int"][()]
    i = names.index("Fe K")
    assert np.isfinite(rule[i]) and abs(rule[i] - 1) < 0.05
    assert np.isfinite(ims).all() and sum_int[i] > 0


def test_per_pixel_snip_breaks_the_sum_rule_and_is_warned(aps):
    """PyMca's own way (a SNIP background per pixel) on this low-count map: the check flags it."""
    cfg = xrfproc.make_config(aps, ["Si", "Ar", "Ca", "La", "Fe", "Cu"])
    res = xrfproc.fit(aps, cfg, mode="fast", background="snip")
    ch = res["channels"]["channel00"]
    off = [n for n, r in ch["sum_rule"].items() if abs(r - 1) > 0.05]
    assert off  # measured: Si 1.24, La 1.11, Ca 1.07
    assert any("sum rule" in w and off[0] in w for w in ch["warnings"])


def test_steel_through_the_steps_without_a_calibration(tmp_path):
    """PyMca's Steel.spe holds no calibration: calibrate, then suggest, as a user would from the file."""
    src = tmp_path / "Steel.spe"
    shutil.copy(pymca_bridge.PYMCA_DATA_DIR / "Steel.spe", src)
    h5 = xrfproc.convert(src)
    cal = xrfproc.calibrate(h5, 16.0)["channels"]["channel00"]  # the energy Steel.cfg records
    ref = pymca_bridge.read_config(pymca_bridge.PYMCA_DATA_DIR / "Steel.cfg")
    zero, gain = float(ref["detector"]["zero"]), float(ref["detector"]["gain"])
    ch = (6.4039 - zero) / gain
    assert abs(cal["zero_keV"] + cal["gain_keV"] * ch - 6.4039) < 0.005  # within 5 eV of Steel.cfg at Fe Ka
    found = xrfproc.suggest_elements(h5, 16.0)
    assert {"Cr", "Mn", "Fe", "Ni", "Cu", "Mo"} <= set(found), found
    # nothing implausible for a steel: SRM 1155's certified elements, Steel.cfg's groups, and air
    allowed = set(ref["peaks"]) | set(ref["materials"]["SRM_1155_COMPLETE"]["CompoundList"]) | {"Ar"}
    assert set(found) <= allowed, set(found) - allowed


def test_energy_from_the_fit_configuration_when_the_file_records_none(tmp_path):
    """Steel.spe records no energy; after a fit with Steel.cfg (16 keV) the later steps know it."""
    import h5py as _h5

    from xrfproc import store

    src = tmp_path / "Steel.spe"
    shutil.copy(pymca_bridge.PYMCA_DATA_DIR / "Steel.spe", src)
    h5 = xrfproc.convert(src)
    with _h5.File(h5) as f:
        assert store.recorded_energy(f) == (None, "")
    cfg = pymca_bridge.read_config(pymca_bridge.PYMCA_DATA_DIR / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1
    xrfproc.fit(h5, pymca_bridge.write_config(cfg, tmp_path / "steel.cfg"), mode="engine")
    with _h5.File(h5) as f:
        energy, source = store.recorded_energy(f)
    assert energy == pytest.approx(16.0) and "cfg_text" in source
    assert set(xrfproc.suggest_elements(h5)) >= {"Fe", "Cr", "Ni"}  # no energy asked


def test_xrfspectrum_calibrated_from_its_peaks():
    """PyMca's training spectrum (17.5 keV, a zero of -0.49 keV): its own calibration, from the peaks alone."""
    from PyMca5.tests import XrfTest

    from xrfproc.steps.calibrate import calibrate_spectrum

    ref = pymca_bridge.config_from_text(XrfTest.cfg)["detector"]
    y = pymca_bridge.read_spectrum_file(pymca_bridge.PYMCA_DATA_DIR / "XRFSpectrum.mca").astype(np.float64).ravel()
    r = calibrate_spectrum(y, 17.5)
    for energy in (3.0, 6.4, 10.0, 15.0):
        ch = (energy - ref["zero"]) / ref["gain"]
        assert abs(r["zero_keV"] + r["gain_keV"] * ch - energy) < 0.005, energy
