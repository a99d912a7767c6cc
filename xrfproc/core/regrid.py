"""Scan geometry: the grid a scan command describes, sorting, snake and time-triggered regridding.

Conventions: ``mot1`` is the slow motor (rows), ``mot2`` the fast motor (columns). Positions are
per point, shaped like the scan grid ``(rows, points per row)`` or flat ``(points,)``. Images are
``(lines, *grid)``.

Regridding is split in two: :class:`Regridder` works out, once per scan, where every grid point
takes its value from (Delaunay triangulation and barycentric weights for linear interpolation,
nearest points for ``nearest`` and outside the convex hull); :meth:`Regridder.apply` then regrids
any number of images for a few gathers per grid point. The results equal those of
``scipy.interpolate.griddata`` (as :func:`regrid` used to call it) to float rounding.
``nearest`` and ``linear`` geometry is worked out one band of grid rows at a time
(:mod:`xrfproc.core.triangulation`), in memory bounded by the band, not the map; ``cubic``
(Clough-Tocher, whose gradients are estimated over the whole triangulation) triangulates the
whole map at once.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import CloughTocher2DInterpolator
from scipy.spatial import Delaunay, cKDTree

from ..errors import InputError
from .triangulation import (_COINCIDE, BAND_POINTS, banded_geometry, barycentric_transforms,  # noqa: F401
                            find_simplices)

#: grid points regridded at once by :meth:`Regridder.apply` (bounds its temporaries)
_APPLY_CHUNK = 1 << 16

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ScanGrid:
    """The regular grid a scan command asks for.

    Attributes
    ----------
    rows, cols : int
        Number of points along the slow and fast motors (points, not intervals).
    fast_motor, slow_motor : str
    fast_range, slow_range : tuple of float
        Start and end positions as written in the command (relative for ``d*`` scans).
    continuous : bool
        A continuous (``c*``) scan, whose point count is written as points rather than intervals.
    """

    rows: int
    cols: int
    fast_motor: str
    slow_motor: str
    fast_range: tuple[float, float]
    slow_range: tuple[float, float]
    continuous: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return (self.rows, self.cols)


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")


def _num(token: str, cmd: str) -> float:
    if not _NUMBER.match(token):
        raise InputError(f"scan command {cmd!r}: expected a number, found {token!r}", dataset="cmd")
    return float(token)


def grid_from_command(cmd: str) -> ScanGrid | None:
    """Parse a mesh command (``dmesh hry 0 1 10 hrz 0 1 10 0.1``, ``cmesh ...``) into its grid.

    Mesh commands give *intervals* (10 intervals = 11 points) for step scans; continuous ``c*``
    scans give the number of points of the fast axis. Returns None for commands that are not
    2-D meshes (line scans, unknown commands); raises InputError when a mesh command is malformed.
    Nothing of the text is evaluated.
    """
    tokens = cmd.replace(",", " ").split()
    if not tokens or "mesh" not in tokens[0].lower():
        return None
    if len(tokens) < 9:
        raise InputError(f"mesh command {cmd!r} has {len(tokens)} words, expected at least 9 "
                         "(name fast start end n slow start end n [time])", dataset="cmd")
    continuous = tokens[0].lower().startswith("c")
    n_fast = _num(tokens[4], cmd)
    n_slow = _num(tokens[8], cmd)
    if n_fast != int(n_fast) or n_slow != int(n_slow) or n_fast < 1 or n_slow < 0:
        raise InputError(f"mesh command {cmd!r}: point counts must be whole numbers", dataset="cmd")
    cols = int(n_fast) if continuous else int(n_fast) + 1
    rows = int(n_slow) + 1
    return ScanGrid(rows=rows, cols=cols, fast_motor=tokens[1], slow_motor=tokens[5],
                    fast_range=(_num(tokens[2], cmd), _num(tokens[3], cmd)),
                    slow_range=(_num(tokens[6], cmd), _num(tokens[7], cmd)), continuous=continuous)


def is_time_triggered(grid_shape: tuple[int, ...], scan: ScanGrid | None) -> bool:
    """True when a 2-D scan has more points per row than the commanded grid (time-triggered readout)."""
    if scan is None or len(grid_shape) != 2:
        return False
    return grid_shape[1] > scan.cols or (grid_shape[0] * grid_shape[1] > scan.rows * scan.cols)


def sort_order(mot1: np.ndarray, mot2: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index arrays that put a 2-D scan's points in motor order (rows by mot1, each row by mot2).

    Returns ``(row_index, col_index)`` of shape grid, to be used as ``data[..., row_index, col_index]``.
    """
    mot1 = np.asarray(mot1, dtype=np.float64)
    mot2 = np.asarray(mot2, dtype=np.float64)
    if mot1.ndim != 2 or mot1.shape != mot2.shape:
        raise InputError(f"sorting needs 2-D motor positions of one shape, got {mot1.shape} and {mot2.shape}")
    row_order = np.argsort(np.nanmean(mot1, axis=1), kind="stable")
    col_order = np.argsort(mot2[row_order], axis=1, kind="stable")
    rows = np.repeat(row_order[:, None], mot1.shape[1], axis=1)
    return rows, col_order


def row_directions(mot2: np.ndarray) -> np.ndarray:
    """Direction of the fast motor in each row: +1 forwards, -1 backwards (0 when it did not move)."""
    mot2 = np.asarray(mot2, dtype=np.float64)
    if mot2.ndim != 2:
        return np.array([np.sign(np.nanmedian(np.diff(mot2)))]) if mot2.size > 1 else np.zeros(1)
    return np.sign(np.nanmedian(np.diff(mot2, axis=1), axis=1)) if mot2.shape[1] > 1 else np.zeros(mot2.shape[0])


def half_pixel_shift(mot2: np.ndarray, step: float) -> np.ndarray:
    """Positions of the pixel centres of a fly scan whose recorded positions mark where each
    pixel's integration *started*: shifted by half a step along each row's direction of motion.

    Forward and backward rows of a snake scan are shifted in opposite senses, which removes the
    one-pixel zig-zag between them.
    """
    mot2 = np.asarray(mot2, dtype=np.float64)
    d = row_directions(mot2)
    if mot2.ndim == 2:
        return mot2 + d[:, None] * abs(step) / 2.0
    return mot2 + d[0] * abs(step) / 2.0


def regular_axes(mot1: np.ndarray, mot2: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Regular axis vectors ``(slow (rows,), fast (cols,))`` spanning the measured positions.

    The fast axis runs from the mean over rows of each row's smallest position to the mean of the
    largest: for a snake scan whose positions were shifted half a point along each row's motion, the
    forward and backward rows' shifts cancel and the axis stays on the commanded grid.
    """
    rows, cols = shape
    m1 = np.asarray(mot1, dtype=np.float64).reshape(-1)
    m2 = np.asarray(mot2, dtype=np.float64)
    m2rows = m2 if m2.ndim == 2 else m2.reshape(1, -1)
    lo = float(np.nanmean(np.nanmin(m2rows, axis=1)))
    hi = float(np.nanmean(np.nanmax(m2rows, axis=1)))
    fast = np.linspace(lo, hi, cols) if cols > 1 else np.array([0.5 * (lo + hi)])
    if rows > 1:
        slow = np.linspace(np.nanmin(m1), np.nanmax(m1), rows)
    else:
        slow = np.array([float(np.nanmean(m1))])
    return slow, fast


class Regridder:
    """How every point of a regular grid takes its value from scattered points, computed once.

    The geometry (Delaunay triangulation and barycentric weights for ``linear``, nearest points for
    ``nearest`` and for the grid points outside the points' convex hull, sorted coordinates for a
    line) depends on the positions only, so one regridder serves every line image and every
    uncertainty image of a scan: :meth:`apply` costs a few gathers per grid point.

    Parameters
    ----------
    mot1, mot2 : ndarray, shape grid
        Positions of the points (slow, fast), after any half-pixel shift.
    slow, fast : ndarray, shape (rows,), (cols,)
        The target axes.
    method : {"nearest", "linear", "cubic"}
    keep : ndarray of bool, shape grid, optional
        Points to use (e.g. those whose values are finite in every line); points without finite
        positions are always left out.
    band_rows : int, optional
        Grid rows per band of ``nearest`` and ``linear`` regridding; default: as many as hold about
        ``band_points`` measured points. Working memory is bounded by the band (~600 bytes per
        point of it); what is kept is 36 bytes per grid point (``linear``: 3 int32 indices and 3
        float64 weights; float32 weights would give up agreement with the one-triangulation result
        beyond 1e-7) or 4 (``nearest``).

    Attributes
    ----------
    bands, widened : int
        Bands the geometry was computed in; times a band's margin had to be widened.

    Raises
    ------
    InputError
        Unknown method, or no usable point.
    """

    def __init__(self, mot1: np.ndarray, mot2: np.ndarray, slow: np.ndarray, fast: np.ndarray,
                 method: str = "nearest", keep: np.ndarray | None = None, band_rows: int | None = None,
                 band_points: int = BAND_POINTS):
        if method not in ("nearest", "linear", "cubic"):
            raise InputError(f"regridding method must be 'nearest', 'linear' or 'cubic', got {method!r}")
        self.method = method
        self.shape = (len(slow), len(fast))
        y = np.asarray(mot1, dtype=np.float64).reshape(-1)
        x = np.asarray(mot2, dtype=np.float64).reshape(-1)
        self.npoints = y.size
        ok = np.isfinite(y) & np.isfinite(x)
        if keep is not None:
            ok &= np.asarray(keep, dtype=bool).reshape(-1)
        if not ok.any():
            raise InputError("no valid point to regrid (all masked or without positions)")
        # scale both axes to units of one grid step, so "nearest" means nearest in pixels
        dy = (abs(slow[1] - slow[0]) if len(slow) > 1 else 1.0) or 1.0
        dx = (abs(fast[1] - fast[0]) if len(fast) > 1 else 1.0) or 1.0
        self.line = len(slow) == 1 or len(fast) == 1
        self.bands, self.widened = 1, 0
        if not self.line and method != "cubic":
            # one band of grid rows at a time: memory bounded by the band, not the map
            geo = banded_geometry(y, x, ok, dy, dx, slow, fast, method, band_rows=band_rows, band_points=band_points)
            self.method, self.bands, self.widened = geo.method, geo.bands, geo.widened
            self.src, self.vertices, self.weights = geo.src, geo.vertices, geo.weights
            return
        kept = np.flatnonzero(ok)
        gy, gx = np.meshgrid(np.asarray(slow) / dy, np.asarray(fast) / dx, indexing="ij")
        if self.line:
            # a line: interpolate in one dimension along the moving axis
            coord = x[kept] / dx if len(fast) > 1 else y[kept] / dy
            self.target = (gx if len(fast) > 1 else gy).reshape(-1)
            order = np.argsort(coord)
            self.xp = coord[order]
            self.src = kept[order]
            if method == "nearest":
                if len(order) > 1:
                    idx = np.clip(np.searchsorted(self.xp, self.target), 1, len(order) - 1)
                    left, right = self.xp[idx - 1], self.xp[idx]
                    pick = np.where(np.abs(self.target - left) <= np.abs(right - self.target), idx - 1, idx)
                else:
                    pick = np.zeros(self.target.size, dtype=np.intp)
                self.src = self.src[pick]
            return
        # cubic: one triangulation of every point (Clough-Tocher's gradients are not local)
        coords = np.column_stack([y[kept] / dy, x[kept] / dx])
        targets = np.column_stack([gy.reshape(-1), gx.reshape(-1)])
        self.kept = kept
        tree = cKDTree(coords)
        dist, near = tree.query(targets)
        del tree
        if np.all(dist <= _COINCIDE):
            # every grid point was measured (a step scan at its commanded positions, a snake scan
            # shifted back onto them): interpolation gives the point's value, to float rounding
            self.method = "nearest"
            self.src = kept[near]
            return
        # scipy's own search finds what is outside the convex hull (NaN): the nearest point's value
        self.tri, self.targets, self.near_src = Delaunay(coords), targets, kept[near]

    def apply(self, values: np.ndarray) -> np.ndarray:
        """Regrid one image.

        Parameters
        ----------
        values : ndarray, shape grid (or flat, one value per point)

        Returns
        -------
        ndarray, shape (rows, cols), float64
        """
        v = np.asarray(values, dtype=np.float64).reshape(-1)
        if v.size != self.npoints:
            raise InputError(f"{v.size} values for {self.npoints} regridding points")
        if self.line:
            out = v[self.src] if self.method == "nearest" else np.interp(self.target, self.xp, v[self.src])
            return out.reshape(self.shape)
        if self.method == "nearest":
            return v[self.src].reshape(self.shape)
        if self.method == "cubic":
            out = CloughTocher2DInterpolator(self.tri, v[self.kept])(self.targets)
            holes = ~np.isfinite(out)
            out[holes] = v[self.near_src[holes]]
            return out.reshape(self.shape)
        out = np.empty(self.shape[0] * self.shape[1])
        w, m = self.weights, self.vertices
        for s in range(0, out.size, _APPLY_CHUNK):  # temporaries of one chunk, not of the map
            e = s + _APPLY_CHUNK
            out[s:e] = w[0, s:e] * v[m[0, s:e]] + w[1, s:e] * v[m[1, s:e]] + w[2, s:e] * v[m[2, s:e]]
        return out.reshape(self.shape)


def regrid(values: np.ndarray, mot1: np.ndarray, mot2: np.ndarray, slow: np.ndarray, fast: np.ndarray,
           method: str = "nearest") -> np.ndarray:
    """Interpolate scattered point values onto the regular grid ``slow x fast``.

    Parameters
    ----------
    values : ndarray, shape (lines, *grid)
        Per-point values; points where any line is NaN (masked) are left out.
    mot1, mot2 : ndarray, shape grid
        Positions of the points (slow, fast), after any half-pixel shift.
    slow, fast : ndarray, shape (rows,), (cols,)
        The target axes.
    method : {"nearest", "linear", "cubic"}

    Returns
    -------
    ndarray, shape (lines, rows, cols)
        Grid points outside the points' convex hull (where linear/cubic interpolation has no data
        around them, e.g. the corners of a snake scan whose rows were shifted) take the nearest
        point's value. One :class:`Regridder` serves all lines; the normalisation step uses it
        directly, one image at a time.
    """
    nlines = values.shape[0]
    vals = np.asarray(values, dtype=np.float64).reshape(nlines, -1)
    keep = np.all(np.isfinite(vals), axis=0)
    rg = Regridder(mot1, mot2, slow, fast, method, keep=keep)
    out = np.empty((nlines,) + rg.shape)
    for i in range(nlines):
        out[i] = rg.apply(vals[i])
    return out
