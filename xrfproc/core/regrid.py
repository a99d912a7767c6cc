"""Scan geometry: the grid a scan command describes, sorting, snake and time-triggered regridding.

Conventions: ``mot1`` is the slow motor (rows), ``mot2`` the fast motor (columns). Positions are
per point, shaped like the scan grid ``(rows, points per row)`` or flat ``(points,)``. Images are
``(lines, *grid)``.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass

import numpy as np
from scipy.interpolate import griddata

from ..errors import InputError

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
        point's value.
    """
    if method not in ("nearest", "linear", "cubic"):
        raise InputError(f"regridding method must be 'nearest', 'linear' or 'cubic', got {method!r}")
    nlines = values.shape[0]
    pts_vals = np.asarray(values, dtype=np.float64).reshape(nlines, -1).T
    y = np.asarray(mot1, dtype=np.float64).reshape(-1)
    x = np.asarray(mot2, dtype=np.float64).reshape(-1)
    keep = np.isfinite(y) & np.isfinite(x) & np.all(np.isfinite(pts_vals), axis=1)
    if keep.sum() == 0:
        raise InputError("no valid point to regrid (all masked or without positions)")
    # scale both axes to units of one grid step, so "nearest" means nearest in pixels
    dy = abs(slow[1] - slow[0]) if len(slow) > 1 else 1.0
    dx = abs(fast[1] - fast[0]) if len(fast) > 1 else 1.0
    dy = dy or 1.0
    dx = dx or 1.0
    gy, gx = np.meshgrid(slow / dy, fast / dx, indexing="ij")
    if len(slow) == 1 or len(fast) == 1:
        # a line: interpolate in one dimension along the moving axis
        coord = x[keep] / dx if len(fast) > 1 else y[keep] / dy
        target = (gx if len(fast) > 1 else gy).reshape(-1)
        order = np.argsort(coord)
        out = np.empty((nlines, target.size))
        for i in range(nlines):
            v = pts_vals[keep][order, i]
            if method == "nearest":
                idx = np.clip(np.searchsorted(coord[order], target), 1, len(order) - 1)
                left = coord[order][idx - 1]
                right = coord[order][idx]
                pick = np.where(np.abs(target - left) <= np.abs(right - target), idx - 1, idx)
                out[i] = v[pick] if len(order) > 1 else v[0]
            else:
                out[i] = np.interp(target, coord[order], v)  # ends take the end values
        return out.reshape(nlines, len(slow), len(fast))
    coords = np.column_stack([y[keep] / dy, x[keep] / dx])
    res = griddata(coords, pts_vals[keep], (gy, gx), method=method)
    if method != "nearest":
        holes = ~np.all(np.isfinite(res), axis=-1)
        if holes.any():
            res[holes] = griddata(coords, pts_vals[keep], (gy[holes], gx[holes]), method="nearest")
    return np.moveaxis(res, -1, 0)
