"""The map simulator, checked against hand computations with xraylib's numbers."""
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import xraylib

from xrfproc import store
from xrfproc.core.scanpattern import ScanPattern
from xrfproc.core.simulate import (Beam, Detector, Geometry, demo_dataset, simulate_map, simulate_reference,
                                   write_simulated)
from xrfproc.errors import InputError
from _shared import CNC_DIR, CHECK_LAYOUT

CNC = CNC_DIR
CHECK = CHECK_LAYOUT
ORGANIC = {"C": 0.6, "O": 0.4}
# no continuum, so that peak windows hold only their own lines
CLEAN = Detector(background=0.0, escape=False)


def uniform(shape, **ppm):
    return {k: np.full(shape, float(v)) for k, v in ppm.items()}


def energies(det, nbins=None):
    k = np.arange(nbins or det.nbins)
    return det.zero + det.gain * k + det.quadratic * k * k


def window(spec, det, centre, half):
    e = energies(det)
    sel = np.abs(e - centre) <= half
    return spec[..., sel].sum(axis=-1), e[sel]


def eff_by_hand(det, e):
    be = math.exp(-xraylib.CS_Total(4, e) * 1.848 * det.be_window_um * 1e-4)
    si = 1 - math.exp(-xraylib.CS_Photo(14, e) * 2.33 * det.si_thickness_mm * 0.1)
    return be * si


def absorb_by_hand(w, rho, d_um, e0, e, s_in=math.sqrt(0.5), s_out=math.sqrt(0.5)):
    mu = lambda en: sum(f * xraylib.CS_Total(xraylib.SymbolToAtomicNumber(k), en) for k, f in w.items())
    chi = mu(e0) / s_in + mu(e) / s_out
    return (1 - math.exp(-chi * rho * d_um * 1e-4)) / chi


def test_ka_centroid_within_half_channel():
    det = Detector(zero=-0.0317, gain=0.0098, background=0.0)
    raw, truth = simulate_map(uniform((3, 3), Zn=500), ORGANIC, thickness_um=5, density=1.0, detectors=det,
                              noise=False)
    spec = raw.channels["channel00"].spectra[1, 1]
    counts, e = window(spec, det, 8.63, 0.3)
    centroid = (spec[np.abs(energies(det) - 8.63) <= 0.3] * e).sum() / counts
    # expected: the KL2/KL3 doublet weighted by its rates and efficiency
    lines = [(xraylib.LineEnergy(30, m), xraylib.RadRate(30, m) * eff_by_hand(det, xraylib.LineEnergy(30, m)))
             for m in (xraylib.KL2_LINE, xraylib.KL3_LINE)]
    expected = sum(en * wt for en, wt in lines) / sum(wt for _, wt in lines)
    assert abs(centroid - expected) < det.gain / 2
    assert truth.lines["Zn K"]["KL3"] == pytest.approx(xraylib.LineEnergy(30, xraylib.KL3_LINE))


def test_ka_kb_ratio_thin_sample():
    det = Detector(be_window_um=100.0, si_thickness_mm=0.1, background=0.0)
    raw, truth = simulate_map(uniform((2, 2), Fe=1000), ORGANIC, thickness_um=1, density=1.0, detectors=det,
                              noise=False)
    spec = raw.channels["channel00"].spectra[0, 0]
    sig = 0.08
    ka, _ = window(spec, det, 6.40, 4 * sig)
    kb, _ = window(spec, det, 7.058, 4 * sig)
    w = {"C": 0.6 * (1 - 1e-3), "O": 0.4 * (1 - 1e-3), "Fe": 1e-3}

    def part(macros):
        tot = 0.0
        for m in macros:
            e = xraylib.LineEnergy(26, m)
            tot += xraylib.RadRate(26, m) * eff_by_hand(det, e) * absorb_by_hand(w, 1.0, 1.0, 18.0, e)
        return tot

    expected = part([xraylib.KL2_LINE, xraylib.KL3_LINE]) / part([xraylib.KM2_LINE, xraylib.KM3_LINE])
    rate_ratio = (0.29799 + 0.58357) / (0.03988 + 0.07856)
    assert ka / kb == pytest.approx(expected, rel=2e-3)
    assert abs(expected / rate_ratio - 1) > 0.02  # the efficiency correction matters here


def test_absolute_intensity_by_hand():
    det = Detector(background=0.0, solid_angle_sr=0.1)
    beam = Beam(flux=1e10, i0_noise=0.0)
    raw, truth = simulate_map(uniform((2, 3), Sr=200, Fe=300), {"Si": 0.47, "O": 0.53}, thickness_um=20,
                              density=2.5, detectors=det, beam=beam, noise=False, pattern=ScanPattern(dwell_s=0.5))
    photons = 1e10 * 0.5
    w = {"Si": 0.47 * (1 - 5e-4), "O": 0.53 * (1 - 5e-4), "Sr": 2e-4, "Fe": 3e-4}
    total = 0.0
    for line in truth.lines["Sr K"]:
        m = getattr(xraylib, line + "_LINE")
        e = xraylib.LineEnergy(38, m)
        total += (xraylib.CS_FluorLine_Kissel_Cascade(38, m, 18.0) * eff_by_hand(det, e)
                  * absorb_by_hand(w, 2.5, 20, 18.0, e))
    expected = photons * 0.1 / (4 * math.pi) * 2e-4 * total / math.sqrt(0.5)
    assert truth.counts["channel00"]["Sr K"] == pytest.approx(np.full((2, 3), expected), rel=1e-9)
    assert truth.photons == pytest.approx(np.full((2, 3), photons))
    assert truth.I0 == pytest.approx(truth.photons * beam.i0_gain)
    # Rayleigh: differential cross section times the solid angle
    dcs = sum(f * xraylib.DCS_Rayl(xraylib.SymbolToAtomicNumber(k), 18.0, math.pi / 2) for k, f in w.items())
    rayl = photons * 0.1 * eff_by_hand(det, 18.0) * dcs * absorb_by_hand(w, 2.5, 20, 18.0, 18.0) / math.sqrt(0.5)
    assert truth.counts["channel00"]["Rayl"][0, 0] == pytest.approx(rayl, rel=1e-9)
    assert truth.lines["Compt"]["Compt"] == pytest.approx(xraylib.ComptonEnergy(18.0, math.pi / 2))


def test_attenuation_trends_and_saturation():
    kw = dict(detectors=CLEAN, noise=False, beam=Beam(i0_noise=0.0))
    conc = uniform((2, 2), Ca=0, Sr=100)  # Ca comes from the matrix
    matrix = {"Si": 0.4, "O": 0.5, "Ca": 0.1}
    thin = simulate_map(conc, matrix, thickness_um=1, density=2.5, **kw)[1].counts["channel00"]
    thick = simulate_map(conc, matrix, thickness_um=50, density=2.5, **kw)[1].counts["channel00"]
    dense = simulate_map(conc, matrix, thickness_um=50, density=5.0, **kw)[1].counts["channel00"]
    r = [c["Ca K"][0, 0] / c["Sr K"][0, 0] for c in (thin, thick, dense)]
    assert r[0] > r[1] > r[2]
    # infinite thickness: counts -> photons * Omega/4pi * eff * w * sigma / (sin(in) * chi)
    sat1 = simulate_map(conc, matrix, thickness_um=20000, density=2.5, **kw)[1]
    sat2 = simulate_map(conc, matrix, thickness_um=40000, density=2.5, **kw)[1].counts["channel00"]
    assert sat1.counts["channel00"]["Sr K"] == pytest.approx(sat2["Sr K"], rel=1e-9)
    w = {"Si": 0.4 * (1 - 1e-4), "O": 0.5 * (1 - 1e-4), "Ca": 0.1 * (1 - 1e-4), "Sr": 1e-4}
    mu = lambda en: sum(f * xraylib.CS_Total(xraylib.SymbolToAtomicNumber(k), en) for k, f in w.items())
    total = 0.0
    for line in sat1.lines["Sr K"]:
        m = getattr(xraylib, line + "_LINE")
        e = xraylib.LineEnergy(38, m)
        chi = (mu(18.0) + mu(e)) / math.sqrt(0.5)
        total += xraylib.CS_FluorLine_Kissel_Cascade(38, m, 18.0) * eff_by_hand(CLEAN, e) / chi
    expected = sat1.photons[0, 0] * CLEAN.solid_angle_sr / (4 * math.pi) * 1e-4 * total / math.sqrt(0.5)
    assert sat1.counts["channel00"]["Sr K"][0, 0] == pytest.approx(expected, rel=1e-9)


def test_dead_time_and_totals():
    det = Detector(dead_time_s=1e-6)
    raw, truth = simulate_map(uniform((8, 8), Fe=2000, Zn=500), {"Si": 0.47, "O": 0.53}, thickness_um=50,
                              density=2.5, detectors=det, noise=False, seed=3)
    ch = raw.channels["channel00"]
    assert ch.ocr / ch.icr == pytest.approx(np.exp(-ch.icr * 1e-6), rel=1e-12)
    assert np.all(ch.ocr / ch.icr < 0.95)  # the test is not trivial
    expected_total = sum(truth.counts["channel00"][g] for g in truth.names) + truth.background["channel00"]
    assert ch.icr * raw.acquisition_time == pytest.approx(expected_total, rel=1e-12)
    # the recorded spectrum holds the dead-time corrected counts (all peaks lie inside the range)
    assert ch.spectra.sum(axis=-1) == pytest.approx(expected_total * ch.ocr / ch.icr, rel=2e-3)
    assert truth.counts_recorded["channel00"]["Fe K"] == pytest.approx(
        truth.counts["channel00"]["Fe K"] * ch.ocr / ch.icr)
    assert truth.live_time["channel00"] == pytest.approx(raw.acquisition_time * ch.ocr / ch.icr)
    noisy, truth2 = simulate_map(uniform((8, 8), Fe=2000, Zn=500), {"Si": 0.47, "O": 0.53}, thickness_um=50,
                                 density=2.5, detectors=det, noise=True, seed=3)
    assert np.array_equal(truth2.I0, truth.I0)  # I0 does not depend on the noise flag
    sums = noisy.channels["channel00"].spectra.sum(axis=-1)
    exp = ch.spectra.sum(axis=-1)
    assert abs((sums - exp).sum()) < 5 * math.sqrt(exp.sum())


def test_poisson_statistics():
    raw, _ = simulate_map(uniform((20, 20), Fe=500, Cu=300), {"Si": 0.47, "O": 0.53}, thickness_um=30, density=2.5,
                          beam=Beam(i0_noise=0.0), seed=1)
    s = raw.channels["channel00"].spectra.reshape(400, -1).astype(float)
    assert raw.channels["channel00"].spectra.dtype.kind == "i"
    mean, var = s.mean(axis=0), s.var(axis=0, ddof=1)
    sel = mean > 20
    assert sel.sum() > 200
    ratio = var[sel] / mean[sel]
    assert ratio.mean() == pytest.approx(1.0, abs=0.03)


def test_snake_positions_and_lag():
    cols, rows = 12, 5
    fe = np.tile(100.0 + 10.0 * np.arange(cols), (rows, 1))  # linear in the fast direction
    pat = ScanPattern(kind="snake", lag=0.5)
    raw, truth = simulate_map({"Fe": fe}, {"Si": 1.0}, pixel_um=2.0, pattern=pat, noise=False)
    step = 0.002  # mm
    assert raw.mot2.shape == (rows, cols)
    assert np.allclose(raw.mot2[0], np.arange(cols) * step)
    assert np.allclose(raw.mot2[1], np.arange(cols)[::-1] * step)
    assert np.allclose(np.sort(raw.mot2, axis=1), truth.positions.grid_mot2[None, :])
    assert np.allclose(raw.mot1[:, 0], truth.positions.grid_mot1) and np.allclose(raw.mot1, raw.mot1[:, :1])
    tok = raw.cmd.split()
    assert tok[0] == "dmesh" and tok[1] == "hry" and tok[5] == "hrz"
    assert int(tok[4]) + 1 == cols and int(tok[8]) + 1 == rows and truth.grid_shape == (rows, cols)
    assert float(tok[3]) == pytest.approx((cols - 1) * step)
    # true positions trail by half a step in the direction of motion
    assert np.allclose(truth.positions.true_mot2[0] - raw.mot2[0], step / 2)
    assert np.allclose(truth.positions.true_mot2[1] - raw.mot2[1], -step / 2)
    conc = truth.concentrations["Fe"]
    assert conc[0, :-1] == pytest.approx(105.0 + 10.0 * np.arange(cols - 1))
    # odd rows run backwards: array index k is grid column cols-1-k, measured half a step lower
    assert conc[1, :-1] == pytest.approx((95.0 + 10.0 * np.arange(cols))[::-1][:-1])
    assert conc[1, -1] == 100.0  # beyond the phantom's edge the edge value holds


def test_raster_samples_phantom_exactly():
    fe = np.random.default_rng(0).uniform(10, 100, (4, 6))
    raw, truth = simulate_map({"Fe": fe}, {"Si": 1.0}, pattern=ScanPattern(slow_motor="samz", fast_motor="samy"),
                              beam=Beam(i0_noise=0.0, i0_drift=0.1))
    assert np.array_equal(truth.concentrations["Fe"], fe)
    assert raw.I0[-1, -1] / raw.I0[0, 0] == pytest.approx(0.9)
    assert truth.counts["channel00"]["Fe K"] / truth.photons == pytest.approx(
        truth.counts["channel00"]["Fe K"][0, 0] / truth.photons[0, 0] * fe / fe[0, 0], rel=1e-3)
    assert raw.mot1_name == "samz" and raw.mot2_name == "samy"
    assert raw.cmd.startswith("dmesh samy 0 0.005 5 samz 0 0.003 3 ")


def test_time_triggered_positions():
    cols, rows = 10, 4
    pat = ScanPattern(kind="timetriggered", oversample=1.5, jitter=0.05, snake=True, dwell_s=0.2)
    raw, truth = simulate_map(uniform((rows, cols), Fe=100), {"Si": 1.0}, pixel_um=1.0, pattern=pat, noise=False)
    npts = 15
    assert raw.mot2.shape == (rows, npts) and raw.channels["channel00"].spectra.shape == (rows, npts, 2048)
    step = 0.001
    tok = raw.cmd.split()
    assert tok[0] == "cdmesh" and int(tok[4]) == cols and int(tok[8]) + 1 == rows
    assert truth.grid_shape == (rows, cols)
    assert np.allclose(truth.positions.true_mot2, raw.mot2)  # encoder positions, no lag
    assert np.all(np.diff(raw.mot2[0]) > 0) and np.all(np.diff(raw.mot2[1]) < 0)
    assert raw.mot2.min() > -step and raw.mot2.max() < (cols - 1) * step + step
    spacing = np.abs(np.diff(raw.mot2, axis=1)).mean()
    assert spacing == pytest.approx(cols * step / npts, rel=0.05)
    assert raw.acquisition_time == pytest.approx(np.full((rows, npts), 0.2 * cols / npts))
    assert np.allclose(raw.mot1, truth.positions.grid_mot1[:, None])


def test_several_channels_independent_noise():
    dets = [Detector(), Detector(zero=-0.02, gain=0.0101, solid_angle_sr=0.025, nbins=1024)]
    kw = dict(thickness_um=20, density=2.5, detectors=dets, seed=5)
    conc = uniform((10, 10), Fe=500, Zn=200)
    raw, truth = simulate_map(conc, {"Si": 0.47, "O": 0.53}, noise=True, **kw)
    exp, _ = simulate_map(conc, {"Si": 0.47, "O": 0.53}, noise=False, **kw)
    assert sorted(raw.channels) == ["channel00", "channel01"]
    assert raw.channels["channel01"].spectra.shape == (10, 10, 1024)
    assert raw.channels["channel01"].calibration == (-0.02, 0.0101, 0.0)
    c0, c1 = truth.counts["channel00"]["Fe K"], truth.counts["channel01"]["Fe K"]
    assert c1 / c0 == pytest.approx(np.full_like(c0, 0.5), rel=1e-12)
    r0 = (raw.channels["channel00"].spectra.sum(-1) - exp.channels["channel00"].spectra.sum(-1)).ravel()
    r1 = (raw.channels["channel01"].spectra.sum(-1) - exp.channels["channel01"].spectra.sum(-1)).ravel()
    assert abs(np.corrcoef(r0, r1)[0, 1]) < 0.4


def test_escape_peaks():
    det = Detector(escape=True, background=0.0)
    raw, _ = simulate_map(uniform((1 + 1, 2), Zn=2000), ORGANIC, thickness_um=5, density=1.0, detectors=det,
                          noise=False)
    ref, _ = simulate_map(uniform((2, 2), Zn=2000), ORGANIC, thickness_um=5, density=1.0, detectors=CLEAN,
                          noise=False)
    spec, plain = raw.channels["channel00"].spectra[0, 0], ref.channels["channel00"].spectra[0, 0]
    esc, _ = window(spec, det, 8.63 - 1.74, 0.25)
    none, _ = window(plain, det, 8.63 - 1.74, 0.25)
    main, _ = window(spec, det, 8.63, 0.25)
    assert none < 1e-6 * main
    # Reed and Ware by hand: P = omega/2 (1 - 1/J) [1 - x ln(1 + 1/x)], x = mu(Si Ka) / mu(E)
    x = xraylib.CS_Total(14, xraylib.LineEnergy(14, xraylib.KL3_LINE))
    p = {}
    for m in (xraylib.KL2_LINE, xraylib.KL3_LINE):
        xe = x / xraylib.CS_Photo(14, xraylib.LineEnergy(30, m))
        p[m] = 0.5 * xraylib.FluorYield(14, xraylib.K_SHELL) * (1 - 1 / xraylib.JumpFactor(14, xraylib.K_SHELL)) * (
            1 - xe * math.log1p(1 / xe))
    p_ka = (p[xraylib.KL2_LINE] * 0.3 + p[xraylib.KL3_LINE] * 0.6) / 0.9  # about 0.16 % at 8.6 keV
    assert esc / main == pytest.approx(p_ka / (1 - p_ka), rel=0.02)
    assert spec.sum() == pytest.approx(plain.sum(), rel=1e-6)  # escape moves counts, does not add any


def test_reference_material_map():
    raw, truth = simulate_reference(CNC / "nist613.cnc", (5, 5), noise=False, beam=Beam(i0_noise=0.0))
    assert raw.grid_shape == (5, 5)
    assert truth.concentrations["Sr"] == pytest.approx(np.full((5, 5), 78.4))
    assert truth.density == pytest.approx(2.490945) and truth.thickness_um == 960
    assert {"Ca K", "Sr K", "Pb L", "Rayl", "Compt"} <= set(truth.names)
    s = raw.channels["channel00"].spectra
    assert np.allclose(s, s[0, 0], rtol=1e-9)  # homogeneous, no noise, no I0 fluctuation


def test_bad_inputs():
    with pytest.raises(InputError, match="Xx"):
        simulate_map({"Xx": np.ones((3, 3))}, {"Si": 1.0})
    with pytest.raises(InputError, match="negative"):
        simulate_map({"Fe": -np.ones((3, 3))}, {"Si": 1.0})
    with pytest.raises(InputError):
        simulate_map({"Fe": np.ones((3, 3))}, {"Si": -1.0})
    with pytest.raises(InputError, match="shape"):
        simulate_map({"Fe": np.ones((3, 3)), "Cu": np.ones((3, 4))}, {"Si": 1.0})
    with pytest.raises(InputError, match="ng/mm"):
        simulate_reference(CNC / "axo.cnc")
    with pytest.raises(InputError):
        simulate_map({"Fe": np.ones((3, 3))}, {"Si": 1.0}, pattern=ScanPattern(kind="spiral"))


def test_written_file_passes_layout_check(tmp_path):
    path = write_simulated(tmp_path / "sim.h5", uniform((4, 5), Fe=300, Pb=50), {"Si": 0.47, "O": 0.53},
                           detectors=[Detector(), Detector(noise=0.15)], seed=2)
    out = subprocess.run([sys.executable, str(CHECK), str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
    back = store.read_raw(path)
    raw, _ = simulate_map(uniform((4, 5), Fe=300, Pb=50), {"Si": 0.47, "O": 0.53},
                          detectors=[Detector(), Detector(noise=0.15)], seed=2)
    assert back.cmd == raw.cmd and back.energy_keV == 18.0
    assert np.array_equal(back.channels["channel01"].spectra, raw.channels["channel01"].spectra)
    assert back.I0 == pytest.approx(raw.I0)


def test_demo_dataset(tmp_path):
    sample, ref = demo_dataset(tmp_path, seed=0, snake=True)
    for path in (sample, ref):
        out = subprocess.run([sys.executable, str(CHECK), str(path)], capture_output=True, text=True)
        assert out.returncode == 0, out.stdout
    s = store.read_raw(sample)
    assert s.grid_shape == (30, 40) and sorted(s.channels) == ["channel00", "channel01"]
    assert s.channels["channel00"].spectra.shape[-1] == 2048
    assert np.all(np.diff(s.mot2[1]) < 0)  # snake
    r = store.read_raw(ref)
    assert r.grid_shape == (5, 5)
