"""Regridding in bands of grid rows equals regridding with one triangulation of the whole map.

The reference is :class:`~xrfproc.core.regrid.Regridder` with a single band (``band_rows`` = all
rows): one Delaunay triangulation of every point, itself checked against ``griddata`` in
``test_normalise_stream.py``. Bands of 1-7 rows force many bands and margins to be widened
(masked holes, a masked corner whose hull edge spans the map, scattered points).
"""
from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from scipy.spatial import cKDTree

from xrfproc.core import regrid as cr


def snake(rows, cols, jitter, rng, shift=True):
    mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], cols, axis=1) + rng.normal(0, jitter, (rows, cols))
    mot2 = np.tile(np.arange(cols, dtype=float), (rows, 1)) + rng.normal(0, jitter, (rows, cols))
    mot2[1::2] = mot2[1::2, ::-1] + 0.5
    mot2[0::2] -= 0.5
    if shift:
        mot2 = cr.half_pixel_shift(mot2, 1.0)
    return mot1, mot2


def build(mot1, mot2, shape, method, keep=None, band_rows=None):
    slow, fast = cr.regular_axes(mot1, mot2, shape)
    return cr.Regridder(mot1, mot2, slow, fast, method, keep=keep, band_rows=band_rows)


def outside(rg):
    """Grid points outside the convex hull (the nearest point's value)."""
    v = rg.vertices
    return (v[0] == v[1]) & (v[1] == v[2])


def assert_same(banded, whole, images, rtol=1e-12):
    assert banded.method == whole.method
    if whole.method == "linear":
        np.testing.assert_array_equal(outside(banded), outside(whole))
    else:
        np.testing.assert_array_equal(banded.src, whole.src)
    for im in images:
        np.testing.assert_allclose(banded.apply(im), whole.apply(im), rtol=rtol, atol=1e-9 * np.abs(im).max())


def images(rng, shape, n=3):
    """Random images (not linear: a different triangle would show) and a smooth one."""
    y, x = np.indices(shape)
    return [rng.gamma(2.0, 300.0, shape) for _ in range(n)] + [np.sin(0.3 * y) * np.cos(0.2 * x) * 50 + 100]


@pytest.mark.parametrize("method", ["linear", "nearest"])
@pytest.mark.parametrize("band_rows", [1, 3, 7])
def test_snake_jittered_bands_equal_whole_map(method, band_rows):
    rng = np.random.default_rng(1)
    mot1, mot2 = snake(31, 23, 0.02, rng)
    whole = build(mot1, mot2, (31, 23), method)
    assert whole.bands == 1
    banded = build(mot1, mot2, (31, 23), method, band_rows=band_rows)
    assert banded.bands == -(-31 // band_rows)
    if method == "linear":
        assert outside(whole).any()  # corners of the shifted snake scan are outside the hull
    assert_same(banded, whole, images(rng, (31, 23)))


@pytest.mark.parametrize("method", ["linear", "nearest"])
def test_scattered_points_and_masked_holes(method):
    """Points anywhere (no rows), a masked hole and a masked corner: triangles span them, so the
    bands must widen their margins; the hull's long diagonal edge gives the same outside points."""
    rng = np.random.default_rng(2)
    rows, cols = 30, 25
    mot1 = rng.uniform(0, rows - 1, (rows, cols))
    mot2 = rng.uniform(0, cols - 1, (rows, cols))
    keep = np.ones((rows, cols), bool)
    keep[(mot1 > 10) & (mot1 < 19) & (mot2 > 5) & (mot2 < 12)] = False  # a hole 9 rows high
    keep[mot1 + mot2 < 12] = False  # a corner: the hull edge runs across 12 rows
    mot1[3, 4] = np.nan  # a point without position
    whole = build(mot1, mot2, (rows, cols), method, keep=keep)
    banded = build(mot1, mot2, (rows, cols), method, keep=keep, band_rows=2)
    assert banded.widened > 0
    if method == "linear":
        out = outside(whole)
        assert out.sum() > 20  # the corner
    assert_same(banded, whole, images(rng, (rows, cols)))


def test_time_triggered_flat_positions():
    """Time-triggered readout: three points per grid point, positions flat in time order."""
    rng = np.random.default_rng(3)
    rows, cols, npts = 20, 15, 46
    mot2 = np.array([np.linspace(-0.4, cols - 0.6, npts) + rng.normal(0, 0.02, npts) for _ in range(rows)])
    mot2[1::2] = mot2[1::2, ::-1]
    mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], npts, axis=1) + rng.normal(0, 0.01, (rows, npts))
    m1, m2 = mot1.reshape(1, -1), mot2.reshape(1, -1)  # as the step passes flat positions
    keep = rng.uniform(size=m1.shape) > 0.02  # scattered NaN pixels
    for method in ("linear", "nearest"):
        whole = build(m1, m2, (rows, cols), method, keep=keep)
        banded = build(m1, m2, (rows, cols), method, keep=keep, band_rows=3)
        assert banded.bands == 7
        assert_same(banded, whole, [rng.normal(100, 20, m1.shape) for _ in range(3)])


def test_exact_lattice_both_triangulations_are_delaunay():
    """Positions on an exact lattice: squares have four co-circular corners and qhull may split one
    along either diagonal, in a band as in the whole map. Both are Delaunay triangulations: every
    triangle a band uses has no point inside its circumcircle, linear data come out alike, and the
    same grid points are outside the hull."""
    rows, cols, npts = 24, 10, 31
    mot2 = np.tile(np.linspace(0.0, 9.0, npts) + 0.013, (rows, 1))
    mot2[1::2] += 0.1
    mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], npts, axis=1)
    whole = build(mot1, mot2, (rows, cols), "linear")
    banded = build(mot1, mot2, (rows, cols), "linear", band_rows=3)
    assert banded.method == "linear"
    np.testing.assert_array_equal(outside(banded), outside(whole))
    linear = 3.0 * mot1 - 2.0 * mot2 + 7.0
    np.testing.assert_allclose(banded.apply(linear), whole.apply(linear), rtol=1e-12, atol=1e-9)
    slow, fast = cr.regular_axes(mot1, mot2, (rows, cols))
    dy, dx = slow[1] - slow[0], fast[1] - fast[0]
    pts = np.column_stack([mot1.ravel() / dy, mot2.ravel() / dx])
    tree = cKDTree(pts)
    inside = ~outside(banded)
    tri = pts[banded.vertices[:, inside]]  # (3, n, 2)
    a, b, c = tri[0], tri[1] - tri[0], tri[2] - tri[0]
    d = 2.0 * (b[:, 0] * c[:, 1] - b[:, 1] * c[:, 0])
    b2, c2 = (b * b).sum(1), (c * c).sum(1)
    centre = a + np.column_stack([(c[:, 1] * b2 - b[:, 1] * c2) / d, (b[:, 0] * c2 - c[:, 0] * b2) / d])
    radius = np.hypot(*(centre - a).T)
    for ctr, r in zip(centre, radius):
        assert len(tree.query_ball_point(ctr, r * (1 - 1e-9))) == 0


def test_points_on_the_grid_take_the_nearest_path():
    """Every grid point measured (a snake scan shifted back onto its grid): no triangulation, in
    bands as in one piece."""
    rows, cols = 12, 9
    mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], cols, axis=1)
    mot2 = np.tile(np.arange(cols, dtype=float) * 0.3, (rows, 1))
    mot2[1::2] = mot2[1::2, ::-1] + 0.15
    mot2[0::2] -= 0.15
    mot2 = cr.half_pixel_shift(mot2, 0.3)
    whole = build(mot1, mot2, (rows, cols), "linear")
    banded = build(mot1, mot2, (rows, cols), "linear", band_rows=2)
    assert whole.method == banded.method == "nearest"
    np.testing.assert_array_equal(banded.src, whole.src)
    # one jittered point far down the map makes every band interpolate (bands before it too)
    mot1[10, 4] += 0.05
    whole = build(mot1, mot2, (rows, cols), "linear")
    banded = build(mot1, mot2, (rows, cols), "linear", band_rows=2)
    assert whole.method == banded.method == "linear"
    vals = np.random.default_rng(4).normal(100, 20, (rows, cols))
    np.testing.assert_allclose(banded.apply(vals), whole.apply(vals), rtol=1e-12)


def _peak_beyond_result(rows, cols, band_rows):
    rng = np.random.default_rng(5)
    mot1, mot2 = snake(rows, cols, 0.02, rng)
    slow, fast = cr.regular_axes(mot1, mot2, (rows, cols))
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        rg = cr.Regridder(mot1, mot2, slow, fast, "linear", band_rows=band_rows)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert rg.bands == -(-rows // band_rows)
    return peak - kept, kept - base


def test_memory_bounded_by_the_band_not_the_map():
    """Working memory (numpy arrays; qhull's own is likewise per band) beyond the kept geometry
    does not grow with the map; with one triangulation it grows with it. (A band's margin widens
    where the map's hull edges span many rows: the jittered left and right sides; that depends on
    the sides' shape, not on the map's length.)"""
    _peak_beyond_result(24, 60, 4)  # first-call allocations of numpy and scipy
    medium, kept_medium = _peak_beyond_result(384, 60, 4)
    large, kept_large = _peak_beyond_result(1536, 60, 4)
    assert kept_large <= 36 * 1536 * 60 + 65536  # 36 bytes per grid point: int32 indices, float64 weights
    assert large < 1.25 * medium  # the chunk summary and mask of the positions grow: 1-2 bytes a point
    assert large < 2_000_000
    whole, _ = _peak_beyond_result(384, 60, 384)
    assert whole > 5 * medium
