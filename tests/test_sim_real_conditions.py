"""What real beamline data brings, simulated where the truth is known: a wrong stored calibration
(zero +-50 eV, gain +-1 %) and few counts per spectrum (300-3000).

The default chain (calibrate, make_config, fit) must give the simulated counts and honest
uncertainties: on a uniform map the pixel-to-pixel scatter of the areas around the truth is the
noise the ``stddev`` maps must state.
"""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

import xrfproc
from xrfproc import store
from xrfproc.core.simphysics import Beam, Detector
from xrfproc.core.simulate import simulate_map

E0 = 12.0
LINES = ("Ca K", "Fe K", "Cu K", "Zn K")
MATRIX = {"Si": 0.47, "O": 0.53}


def _uniform_map(tmp_path, flux: float, shift: tuple[float, float], seed: int):
    det = Detector(zero=-0.01, gain=0.01, nbins=2048, solid_angle_sr=0.05, escape=True)
    shape = (12, 12)
    conc = {"Ca": np.full(shape, 20000.0), "Fe": np.full(shape, 5000.0), "Cu": np.full(shape, 1000.0),
            "Zn": np.full(shape, 800.0)}
    raw, truth = simulate_map(conc, MATRIX, thickness_um=20, density=2.5, energy_keV=E0, detectors=det,
                              beam=Beam(flux=flux), seed=seed)
    ch = raw.channels["channel00"]
    # the converter recorded a wrong calibration (as an APS MDA header does)
    raw.channels["channel00"] = dataclasses.replace(ch, calibration=(det.zero + shift[0], det.gain * shift[1], 0.0))
    h5 = store.write_raw(tmp_path / "sim.h5", raw)
    counts = float(np.median(np.asarray(ch.spectra).reshape(-1, det.nbins).sum(axis=1)))
    return h5, truth, det, counts


@pytest.mark.parametrize("flux, shift, lo, hi", [(2e8, (0.05, 1.01), 200, 500), (2e9, (-0.05, 0.99), 2000, 5000)])
def test_wrong_calibration_and_low_counts(tmp_path, flux, shift, lo, hi):
    h5, truth, det, counts = _uniform_map(tmp_path, flux, shift, seed=3)
    assert lo < counts < hi  # counts per spectrum of the case
    cal = xrfproc.calibrate(h5, E0)["channels"]["channel00"]
    ch_fe = (6.4039 - det.zero) / det.gain
    assert abs(cal["zero_keV"] + cal["gain_keV"] * ch_fe - 6.4039) < 0.010  # the simulator's calibration
    assert abs(cal["shift_eV"]) > 40  # and the stored one named as off
    cfg = xrfproc.make_config(h5, ["Si", "Ca", "Fe", "Cu", "Zn"], E0,
                              matrix={"composition": MATRIX, "density": 2.5, "thickness": 20e-4})
    for mode in ("engine", "fast", "precise") if counts < 1000 else ("engine", "fast"):
        xrfproc.fit(h5, cfg, mode=mode, deadtime=False, scheduler="sync")
        with h5py.File(h5) as f:
            names = store.decode_names(f["fit/channel00/names"][()])
            ims = f["fit/channel00/ims"][()]
            sd = f["fit/channel00/stddev"][()]
        for n in LINES:
            i = names.index(n)
            t = truth.counts_recorded["channel00"][n]
            # the map's total within 3 %, or 3 standard deviations of that total when its noise is larger
            tol = max(0.03, 3 * float(np.sqrt((sd[i] ** 2).sum())) / t.sum())
            assert ims[i].sum() / t.sum() == pytest.approx(1.0, abs=tol), (mode, n, tol)
            scatter = float(np.std(ims[i] - t))
            assert float(np.median(sd[i])) / scatter == pytest.approx(1.0, abs=0.2), (mode, n)
