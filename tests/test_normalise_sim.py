"""Normalisation on simulated scans of a known phantom, through the real fit (issue 4's acceptance).

Snake scans (with the half-pixel lag of fly scans) and time-triggered scans are simulated with I0
fluctuations and dead time, fitted with PyMca's fast fit and normalised; the regridded maps must
match the phantom, without a row offset, and be free of the I0 and dead-time variations.
"""
from __future__ import annotations

import numpy as np
import pytest

import xrfproc
from xrfproc import store
from xrfproc.core import simulate as sim
from xrfproc.core.scanpattern import ScanPattern
from xrfproc.core.simphysics import Beam, Detector

MATRIX = {"O": 0.5, "Si": 0.35, "Ca": 0.1, "K": 0.05}


def phantom(rows: int = 14, cols: int = 18) -> dict[str, np.ndarray]:
    """Features a few pixels wide (a real sample is not sharp at the pixel scale): two blobs on a gradient."""
    y, x = np.mgrid[0:rows, 0:cols].astype(float)
    fe = (2000.0 + 300.0 * x + 18000.0 * np.exp(-((x - 5) ** 2 + (y - 5) ** 2) / 6.0)
          + 12000.0 * np.exp(-((x - 13) ** 2 + (y - 10) ** 2) / 4.0))
    zn = 1000.0 + 400.0 * x
    return {"Fe": fe, "Zn": zn}


def run_chain(tmp_path, pattern: ScanPattern, beam: Beam, name: str, **norm_options):
    raw, truth = sim.simulate_map(phantom(), MATRIX, thickness_um=20.0, density=2.5, energy_keV=15.0,
                                  pixel_um=2.0, detectors=[Detector(dead_time_s=5e-7)], beam=beam,
                                  pattern=pattern, seed=4)
    path = store.write_raw(tmp_path / f"{name}.h5", raw)
    cfg = xrfproc.make_config(path, ["Fe", "Zn", "Ca", "K", "Si"], 15.0)
    xrfproc.fit(path, cfg, mode="fast")
    summary = xrfproc.normalise(path, I0norm=1e6, **norm_options)
    with store.open_read(path) as f:
        names = store.decode_names(f["norm/channel00/names"][()])
        ims = f["norm/channel00/ims"][()]
    return summary, dict(zip(names, ims)), truth


def corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


@pytest.mark.parametrize("kind", ["snake", "timetriggered"])
def test_regridded_map_matches_phantom_without_row_offset(tmp_path, kind):
    if kind == "snake":
        pattern = ScanPattern(kind="snake", lag=0.5, dwell_s=0.2)
        options = {"snake": True}
    else:
        pattern = ScanPattern(kind="timetriggered", oversample=1.6, jitter=0.05, snake=True, dwell_s=0.2)
        options = {}  # detected from the scan command
    summary, ims, truth = run_chain(tmp_path, pattern, Beam(flux=5e10, i0_noise=0.05), kind, **options)
    assert summary["time_triggered"] == (kind == "timetriggered")
    ph = phantom()["Fe"]
    fe = ims["Fe K"]
    assert fe.shape == ph.shape
    c = corr(fe, ph)
    assert c > 0.98, c
    # no one-pixel offset: the map correlates better with the phantom than with it shifted by a row or column
    assert c > corr(fe[1:], ph[:-1]) and c > corr(fe[:, 1:], ph[:, :-1]) and c > corr(fe[:, :-1], ph[:, 1:])
    if kind == "snake":  # the half-pixel shift correction is what removes the zig-zag between rows
        xrfproc.normalise(tmp_path / "snake.h5", I0norm=1e6, snake=True, halfpixshift=False)
        with store.open_read(tmp_path / "snake.h5") as f:
            names = store.decode_names(f["norm/channel00/names"][()])
            unshifted = f["norm/channel00/ims"][names.index("Fe K")]
        assert corr(unshifted, ph) < c - 0.01


def test_normalised_map_is_free_of_I0_fluctuations_and_dead_time(tmp_path):
    """A homogeneous sample under a strongly fluctuating, drifting beam: the normalised map is flat to
    within counting noise, while the fitted (dead-time corrected, not I0 normalised) map is not."""
    rows, cols = 10, 12
    flat = {"Fe": np.full((rows, cols), 20000.0), "Zn": np.full((rows, cols), 5000.0)}
    beam = Beam(flux=2e11, i0_noise=0.15, i0_drift=0.4)
    raw, truth = sim.simulate_map(flat, MATRIX, thickness_um=20.0, density=2.5, energy_keV=15.0, pixel_um=2.0,
                                  detectors=[Detector(dead_time_s=1e-6)], beam=beam, seed=7)
    dead = 1 - truth.ocr["channel00"] / truth.icr["channel00"]
    assert dead.max() - dead.min() > 0.05  # the dead time really varies from pixel to pixel
    path = store.write_raw(tmp_path / "flat.h5", raw)
    cfg = xrfproc.make_config(path, ["Fe", "Zn", "Ca", "K", "Si"], 15.0)
    xrfproc.fit(path, cfg, mode="fast")
    xrfproc.normalise(path, I0norm=1e6)
    with store.open_read(path) as f:
        names = store.decode_names(f["norm/channel00/names"][()])
        norm = f["norm/channel00/ims"][names.index("Fe K")]
        fitted = f["fit/channel00/ims"][names.index("Fe K")]
        recorded = truth.counts_recorded["channel00"]["Fe K"]
    counting = 1 / np.sqrt(recorded.mean())  # relative Poisson noise of one pixel's Fe K area
    rel_spread = norm.std() / norm.mean()
    assert rel_spread < 2.0 * counting, (rel_spread, counting)
    assert fitted.std() / fitted.mean() > 5 * rel_spread  # the beam fluctuations were there before
