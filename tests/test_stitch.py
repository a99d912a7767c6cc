"""Stitching scans into one map and sorting points by motor position."""
from __future__ import annotations

import dataclasses

import h5py
import numpy as np
import pytest

from xrfproc import api
from xrfproc.core.convert import merge, read_any
from xrfproc.core.convert.sorting import apply_order, fast_motor, sort_order, sort_points
from xrfproc.core.convert.stitch import stitch_axis
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import InputError
from xrfproc.testing.beamline_fixtures import make_p06_scan


def make_map(rows=3, cols=4, r0=0.0, c0=0.0, step=0.1, nbins=8, seed=0, i1=True, mot_names=("y", "x")):
    rng = np.random.default_rng(seed)
    slow, fast = np.meshgrid(r0 + step * np.arange(rows), c0 + step * np.arange(cols), indexing="ij")
    sp = rng.integers(0, 100, size=(rows, cols, nbins)).astype(np.int32)
    return RawMap(channels={"channel00": RawChannel(sp, rng.uniform(1, 2, (rows, cols)), rng.uniform(0.5, 1, (rows, cols)))},
                  I0=rng.uniform(1, 2, (rows, cols)), acquisition_time=np.full((rows, cols), 0.1),
                  mot1=slow, mot2=fast, I1=rng.uniform(size=(rows, cols)) if i1 else None, cmd=f"scan {seed}",
                  mot1_name=mot_names[0], mot2_name=mot_names[1], sources=[f"s{seed}"])


def test_stitch_along_rows():
    a, b = make_map(seed=1), make_map(rows=2, r0=0.3, seed=2)
    m = merge([a, b])
    assert m.grid_shape == (5, 4) and m.attrs["stitched_axis"] == 0
    np.testing.assert_array_equal(m.channels["channel00"].spectra,
                                  np.concatenate([a.channels["channel00"].spectra, b.channels["channel00"].spectra]))
    np.testing.assert_array_equal(m.channels["channel00"].icr,
                                  np.concatenate([a.channels["channel00"].icr, b.channels["channel00"].icr]))
    for key in ("I0", "I1", "acquisition_time", "mot1", "mot2"):
        np.testing.assert_array_equal(getattr(m, key), np.concatenate([getattr(a, key), getattr(b, key)]))
    assert m.cmd == "scan 1; scan 2" and m.sources == ["s1", "s2"]


def test_stitch_along_columns_three_scans():
    maps = [make_map(c0=0.4 * k, seed=k) for k in range(3)]
    m = merge(maps)
    assert m.grid_shape == (3, 12) and m.attrs["stitched_axis"] == 1
    np.testing.assert_array_equal(m.mot2[0], np.concatenate([mm.mot2[0] for mm in maps]))
    np.testing.assert_array_equal(m.channels["channel00"].spectra[:, 4:8], maps[1].channels["channel00"].spectra)


def test_tolerance():
    a, b = make_map(seed=1), make_map(rows=2, r0=0.3, seed=2)
    b.mot2 = b.mot2 + 5e-5  # the same columns within the default atol=1e-4
    assert stitch_axis(a, b) == 0
    b.mot2 = b.mot2 + 1e-3
    with pytest.raises(InputError, match="do not fit together"):
        merge([a, b])
    assert merge([a, b], atol=2e-3).grid_shape == (5, 4)


def test_snake_rows_still_match():
    a, b = make_map(seed=1), make_map(rows=2, r0=0.3, seed=2)
    b.mot2 = b.mot2.copy()
    b.mot2[1] = b.mot2[1][::-1]  # a backward row
    assert stitch_axis(a, b) == 0


def test_not_fitting():
    a, b = make_map(), make_map(rows=2, cols=5, r0=0.3, c0=0.7)
    with pytest.raises(InputError) as e:
        merge([a, b])
    assert "4 vs 5 columns" in str(e.value) and "s0" in str(e.value)


def test_same_area_twice():
    with pytest.raises(InputError, match="same positions"):
        merge([make_map(seed=1), make_map(seed=2)])


def test_mismatched_channels_bins_motors_i1():
    a = make_map()
    b = make_map(r0=0.3, nbins=16)
    with pytest.raises(InputError, match="16 energy bins"):
        merge([a, b])
    with pytest.raises(InputError, match="channels"):
        b = make_map(r0=0.3)
        b.channels = {"channel01": b.channels["channel00"]}
        merge([a, b])
    with pytest.raises(InputError, match="motors"):
        merge([a, make_map(r0=0.3, mot_names=("z", "x"))])
    with pytest.raises(InputError, match="I1"):
        merge([a, make_map(r0=0.3, i1=False)])
    with pytest.raises(InputError, match="no scan"):
        merge([])


def test_one_dimensional_concatenated():
    a = make_map(rows=1, cols=6)
    flat = [dataclasses.replace(a, channels={"channel00": RawChannel(a.channels["channel00"].spectra[0],
                                                                     a.channels["channel00"].icr[0],
                                                                     a.channels["channel00"].ocr[0])},
                                I0=a.I0[0], acquisition_time=a.acquisition_time[0], mot1=a.mot1[0], mot2=a.mot2[0],
                                I1=a.I1[0]) for _ in range(2)]
    m = merge(flat)
    assert m.grid_shape == (12,)
    np.testing.assert_array_equal(m.I0, np.concatenate([a.I0[0], a.I0[0]]))


def test_p06_two_scans_into_one_file(tmp_path):
    t1 = make_p06_scan(tmp_path, number=1, shape=(3, 5), nbins=32, elements=("channel00",), seed=1)
    t2 = make_p06_scan(tmp_path, number=2, shape=(2, 5), nbins=32, elements=("channel00",), seed=2,
                       start=(2.0 + 3 * 0.005, -1.0))
    out = api.convert([t1["dir"], t2["dir"]], tmp_path / "both.h5")
    with h5py.File(out, "r") as f:
        sp = f["raw/channel00/spectra"][()]
        assert sp.shape == (5, 5, 32)
        np.testing.assert_array_equal(sp.reshape(25, 32),
                                      np.concatenate([t1["spectra"]["channel00"], t2["spectra"]["channel00"]]))
        np.testing.assert_array_equal(f["raw/I0"][()].ravel(), np.concatenate([t1["i0"], t2["i0"]]))
        np.testing.assert_array_equal(f["raw/channel00/sumspec"][()], sp.reshape(-1, 32).sum(axis=0))


# ---------------------------------------------------------------------------------- sorting
def test_sort_order_snake():
    rows, cols = 3, 4
    slow, fast = np.meshgrid(np.arange(rows) * 1.0, np.arange(cols) * 0.5, indexing="ij")
    fast[1] = fast[1][::-1]
    order = sort_order(slow, fast)
    np.testing.assert_array_equal(order, [[0, 1, 2, 3], [7, 6, 5, 4], [8, 9, 10, 11]])
    np.testing.assert_array_equal(apply_order(fast, order)[1], [0, 0.5, 1.0, 1.5])
    # motors swapped (mot1 varying along the rows) sort the same way
    np.testing.assert_array_equal(sort_order(fast, slow), order)
    assert fast_motor(slow, fast) == 2 and fast_motor(fast, slow) == 1


def test_sort_rows_and_nan_last():
    slow = np.array([[2.0, 2.0], [1.0, 1.0], [np.nan, np.nan]])
    fast = np.array([[0.1, 0.0], [0.0, 0.1], [np.nan, np.nan]])
    np.testing.assert_array_equal(sort_order(slow, fast), [[2, 3], [1, 0], [4, 5]])
    np.testing.assert_array_equal(sort_order(np.array([3.0, 1.0, 2.0]), np.zeros(3)), [1, 2, 0])


def test_sort_points_moves_everything_together():
    a = make_map(seed=3)
    rng = np.random.default_rng(0)
    # scrambled within each row and row order shuffled (each row stays one line of the slow motor)
    flat = np.arange(a.mot1.size).reshape(a.mot1.shape)
    perm = np.stack([rng.permutation(row) for row in flat])[rng.permutation(flat.shape[0])]
    shuffled = dataclasses.replace(
        a, channels={"channel00": RawChannel(apply_order(a.channels["channel00"].spectra, perm),
                                             apply_order(a.channels["channel00"].icr, perm),
                                             apply_order(a.channels["channel00"].ocr, perm))},
        I0=apply_order(a.I0, perm), I1=apply_order(a.I1, perm), mot1=apply_order(a.mot1, perm),
        mot2=apply_order(a.mot2, perm))
    back = sort_points(shuffled)
    for key in ("I0", "I1", "mot1", "mot2"):
        np.testing.assert_array_equal(getattr(back, key), getattr(a, key))
    np.testing.assert_array_equal(back.channels["channel00"].spectra, a.channels["channel00"].spectra)
    assert sort_points(a) is a  # already in order: untouched


def test_read_any_list_merges(tmp_path):
    t1 = make_p06_scan(tmp_path, number=1, shape=(2, 3), nbins=16, elements=("channel00",))
    t2 = make_p06_scan(tmp_path, number=2, shape=(2, 3), nbins=16, elements=("channel00",),
                       start=(2.0, -1.0 + 3 * 0.004))
    raw = read_any([t1["dir"], t2["dir"]])
    assert raw.grid_shape == (2, 6) and raw.attrs["stitched_axis"] == 1
