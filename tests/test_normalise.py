"""Normalisation: I0/time scaling, errors, masking, sorting, snake and time-triggered regridding."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from xrfproc import store
from xrfproc.core import normalise as cn
from xrfproc.core import regrid as cr
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import InputError, LayoutError
from xrfproc.steps.normalise import normalise

positive = st.floats(min_value=1.0, max_value=1e7, allow_nan=False)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (3, 4), elements=positive), arrays(np.float64, (2, 3, 4), elements=st.floats(0, 1e6)),
       st.floats(min_value=1e-3, max_value=1e3))
def test_scaling_I0_by_a_constant_changes_nothing(I0, ims, k):
    a = cn.normalise_images(ims, cn.norm_factors(I0))[0]  # I0norm = max(I0) by default
    b = cn.normalise_images(ims, cn.norm_factors(I0 * k))[0]
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (3, 4), elements=positive), arrays(np.float64, (3, 4), elements=st.floats(0.01, 10)),
       arrays(np.float64, (2, 3, 4), elements=st.floats(0, 1e6)))
def test_tmnorm_doubling_time_and_counts_changes_nothing(I0, t, ims):
    a = cn.normalise_images(ims, cn.norm_factors(I0, 1e6, t, tmnorm=True))[0]
    b = cn.normalise_images(2 * ims, cn.norm_factors(I0, 1e6, 2 * t, tmnorm=True))[0]
    np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-9)


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (5,), elements=st.floats(0, 1e6)), arrays(np.float64, (5,), elements=st.floats(0, 1e6)))
def test_deadtime_correction_never_lowers_counts(icr, ocr):
    factor, _ = cn.deadtime_factor(icr, ocr)
    assert np.all(np.isnan(factor) | (factor >= 1.0))


@settings(max_examples=60, deadline=None)
@given(arrays(np.float64, (3, 4), elements=positive), arrays(np.float64, (2, 3, 4), elements=st.floats(0, 1e5)),
       arrays(np.float64, (2, 3, 4), elements=st.floats(0, 1e5)), st.floats(-10, 10))
def test_normalisation_is_linear_in_counts(I0, a, b, k):
    f = cn.norm_factors(I0, 1e6)
    lhs = cn.normalise_images(a + k * b, f)[0]
    rhs = cn.normalise_images(a, f)[0] + k * cn.normalise_images(b, f)[0]
    np.testing.assert_allclose(lhs, rhs, rtol=1e-9, atol=1e-6)


def test_norm_factors_by_hand():
    I0 = np.array([[1e5, 2e5], [0.0, 4e5]])
    t = np.array([[0.1, 0.2], [0.1, 0.1]])
    f = cn.norm_factors(I0, None, t, tmnorm=True)
    assert f.I0norm == 4e5 and f.masked == 1
    np.testing.assert_allclose(f.scale[0], [4e5 / 1e5 / 0.1, 4e5 / 2e5 / 0.2])
    assert np.isnan(f.scale[1, 0])
    # sums: homogeneous map gives its pixels' value: I0norm / sum(I0) / mean(t) over valid points
    assert f.sum_scale == pytest.approx(4e5 / 7e5 / ((0.1 + 0.2 + 0.1) / 3))
    sums = cn.normalise_sums(np.array([100.0]), np.array([50.0]), f)
    assert sums["int_stddev"][0] == pytest.approx(np.sqrt(200.0) * f.sum_scale)
    assert sums["bkg_stddev"][0] == pytest.approx(np.sqrt(50.0) * f.sum_scale)
    with pytest.raises(InputError, match="acquisition_time"):
        cn.norm_factors(I0, None, None, tmnorm=True)
    with pytest.raises(InputError, match="no point has a valid I0"):
        cn.norm_factors(np.zeros((2, 2)))


def test_deadtime_missing_ocr_is_nan_not_patched():
    factor, missing = cn.deadtime_factor(np.array([1000.0, 1000.0, 0.0]), np.array([800.0, 0.0, 0.0]))
    assert factor[0] == pytest.approx(1.25) and np.isnan(factor[1]) and factor[2] == 1.0 and missing == 1


@pytest.mark.parametrize("cmd,shape,cont", [
    ("dmesh hry 0 1 10 hrz 0 2 20 0.1", (21, 11), False),
    ("mesh sampx -5 5 4 sampy 0 1 2 0.5", (3, 5), False),
    ("cmesh hry 0 1 100 hrz 0 1 10 0.01", (11, 100), True),
])
def test_grid_from_command_points_versus_intervals(cmd, shape, cont):
    g = cr.grid_from_command(cmd)
    assert g.shape == shape and g.continuous == cont


def test_grid_from_command_rejects_garbage_without_eval():
    assert cr.grid_from_command("ascan hry 0 1 10 0.1") is None
    with pytest.raises(InputError, match="expected a number"):
        cr.grid_from_command("dmesh hry 0 1 __import__('os') hrz 0 1 10 0.1")
    with pytest.raises(InputError, match="at least 9"):
        cr.grid_from_command("dmesh hry 0 1")


def phantom(rows=12, cols=16):
    y, x = np.mgrid[0:rows, 0:cols]
    img = np.exp(-((x - 5.0) ** 2 + (y - 4.0) ** 2) / 8.0) * 1000 + 50
    img[7:10, 9:14] += 600
    return img


def write_fitted(tmp_path, ims_points, mot1, mot2, cmd, I0=None, names=("Fe K", "Compt")):
    grid = mot1.shape
    nb = 16
    spectra = np.zeros(grid + (nb,), dtype=np.uint32)
    ch = RawChannel(spectra, np.ones(grid), np.ones(grid))
    I0 = np.full(grid, 1e5) if I0 is None else I0
    raw = RawMap({"channel00": ch}, I0=I0, acquisition_time=np.full(grid, 0.1), mot1=mot1, mot2=mot2, cmd=cmd)
    path = store.write_raw(tmp_path / "scan.h5", raw)
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        g = tx.group("fit/channel00")
        store.write_array(g, "ims", ims_points)
        store.write_array(g, "stddev", np.sqrt(ims_points))
        store.write_array(g, "names", list(names))
        store.write_array(g, "cfg", "x.cfg")
        store.write_array(g, "sum/int", ims_points.reshape(len(names), -1).sum(axis=1))
        store.write_array(g, "sum/bkg", np.full(len(names), 10.0))
        tx.file["fit"].attrs["deadtime_corrected"] = 1
    return path


def test_snake_scan_regrids_onto_phantom_without_row_offset(tmp_path):
    img = phantom()
    rows, cols = img.shape
    dx = 0.5
    centres = np.arange(cols) * dx
    mot2 = np.empty((rows, cols))
    vals = np.empty((rows, cols))
    for r in range(rows):
        forward = r % 2 == 0
        order = np.arange(cols) if forward else np.arange(cols)[::-1]
        # recorded positions mark where each point's integration started
        mot2[r] = centres[order] - (dx / 2 if forward else -dx / 2)
        vals[r] = img[r, order]
    mot1 = np.repeat(np.arange(rows)[:, None] * 1.0, cols, axis=1)
    ims = np.stack([vals, np.full_like(vals, 100.0)])
    path = write_fitted(tmp_path, ims, mot1, mot2, f"dmesh hrz 0 {dx * (cols - 1)} {cols - 1} hry 0 {rows - 1} {rows - 1} 0.1")
    summary = normalise(path, I0norm=1e5, snake=True)
    with store.open_read(path) as f:
        out = f["norm/channel00/ims"][0]
        raw_mot2 = f["mot2"][()]
    np.testing.assert_array_equal(raw_mot2, mot2)  # raw positions untouched
    assert out.shape == img.shape and not summary["time_triggered"]
    np.testing.assert_allclose(out, img, rtol=1e-6)
    # without the half-pixel shift the backward rows land one pixel off: visibly worse
    normalise(path, I0norm=1e5, snake=True, halfpixshift=False)
    with store.open_read(path) as f:
        unshifted = f["norm/channel00/ims"][0]
    assert np.corrcoef(unshifted.ravel(), img.ravel())[0, 1] < np.corrcoef(out.ravel(), img.ravel())[0, 1]


def test_time_triggered_scan_regrids_to_command_grid(tmp_path):
    img = phantom(10, 14)
    rows, cols = img.shape
    rng = np.random.default_rng(5)
    npts = 3 * cols + 2
    mot2 = np.empty((rows, npts))
    vals = np.empty((rows, npts))
    for r in range(rows):
        x = np.linspace(-0.4, cols - 0.6, npts) + rng.normal(0, 0.02, npts)
        x = x if r % 2 == 0 else x[::-1]
        mot2[r] = x
        vals[r] = img[r, np.clip(np.rint(x).astype(int), 0, cols - 1)]
    mot1 = np.repeat(np.arange(rows)[:, None] * 1.0, npts, axis=1) + rng.normal(0, 0.01, (rows, npts))
    ims = np.stack([vals, np.ones_like(vals)])
    path = write_fitted(tmp_path, ims, mot1, mot2, f"dmesh hrz 0 {cols - 1} {cols - 1} hry 0 {rows - 1} {rows - 1} 0.1")
    summary = normalise(path, I0norm=1e5, snake=True, halfpixshift=False)
    assert summary["time_triggered"]
    with store.open_read(path) as f:
        out = f["norm/channel00/ims"][0]
    assert out.shape == (rows, cols)
    assert np.corrcoef(out.ravel(), img.ravel())[0, 1] > 0.98
    # no one-pixel row offset: shifting by a row correlates worse
    assert np.corrcoef(out[1:].ravel(), img[1:].ravel())[0, 1] > np.corrcoef(out[1:].ravel(), img[:-1].ravel())[0, 1]


def test_sort_puts_points_in_motor_order(tmp_path):
    img = phantom(4, 5)
    order = np.array([3, 0, 4, 1, 2])
    mot2 = np.tile(order * 1.0, (4, 1))
    mot1 = np.repeat(np.array([2.0, 0.0, 3.0, 1.0])[:, None], 5, axis=1)
    vals = img[np.array([2, 0, 3, 1])][:, order]
    path = write_fitted(tmp_path, np.stack([vals, vals]), mot1, mot2, "")
    normalise(path, I0norm=1e5, sort=True)
    with store.open_read(path) as f:
        np.testing.assert_allclose(f["norm/channel00/ims"][0], img)


def test_masked_I0_and_line_scan_and_single_point(tmp_path):
    vals = np.array([[100.0, 200.0, 300.0]])
    I0 = np.array([1e5, 0.0, 2e5])
    path = write_fitted(tmp_path, vals, np.zeros(3), np.arange(3.0), "ascan hrz 0 2 2 0.1", I0=I0, names=("Fe K",))
    summary = normalise(path)
    assert summary["masked_points"] == 1
    with store.open_read(path) as f:
        out = f["norm/channel00/ims"][0]
        std = f["norm/channel00/stddev"][0]
        assert f["norm/I0"][()] == 2e5
    assert out[0] == pytest.approx(200.0) and np.isnan(out[1]) and out[2] == pytest.approx(300.0)
    assert std[0] == pytest.approx(np.sqrt(100.0) * 2)  # absolute, scaled like the counts
    # a single point
    (tmp_path / "one").mkdir()
    path1 = write_fitted(tmp_path / "one", np.array([[[50.0]]]), np.zeros((1, 1)), np.zeros((1, 1)), "", names=("Fe K",))
    normalise(path1, I0norm=1e6)
    with store.open_read(path1) as f:
        assert f["norm/channel00/ims"][0, 0, 0] == pytest.approx(500.0)


def test_normalise_without_fit_is_a_clear_error(tmp_path):
    grid = (2, 2)
    raw = RawMap({"channel00": RawChannel(np.ones(grid + (8,), np.uint32), np.ones(grid), np.ones(grid))},
                 I0=np.ones(grid), acquisition_time=np.ones(grid), mot1=np.zeros(grid), mot2=np.zeros(grid))
    path = store.write_raw(tmp_path / "a.h5", raw)
    with pytest.raises(LayoutError, match="missing group.*fit"):
        normalise(path)
