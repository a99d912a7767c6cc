"""Ordering the points of a scan by their motor positions (for snake and unordered scans).

A pure function over a :class:`~xrfproc.core.rawmap.RawMap`: the converters call it after reading
(option ``sort``), and the normalisation step may call it later for time-triggered scans.

Axis order: a 2-D grid is ``(rows, cols)``; the motor that varies along the columns ("fast") is
found from the positions themselves, so it does not matter which of ``mot1`` / ``mot2`` it is.
"""
from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..rawmap import RawChannel, RawMap
from .lazy import LazySpectra

log = logging.getLogger(__name__)


def _span(values: np.ndarray, axis: int) -> float:
    """Median range of ``values`` along ``axis`` (NaN-safe; 0 for an all-NaN array)."""
    with np.errstate(all="ignore"), _quiet():
        rng = np.nanmax(values, axis=axis) - np.nanmin(values, axis=axis)
        med = np.nanmedian(rng) if np.size(rng) else 0.0
    return 0.0 if not np.isfinite(med) else float(med)


class _quiet:
    """Silence numpy's 'All-NaN slice' RuntimeWarnings inside a block."""

    def __enter__(self) -> None:
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


def fast_motor(mot1: np.ndarray, mot2: np.ndarray) -> int:
    """Which motor (1 or 2) varies along the columns of a 2-D grid ``(rows, cols)``.

    The motor with the larger median range along a row; ``2`` (the layout's convention) on a tie.
    """
    m1, m2 = np.asarray(mot1, dtype=float), np.asarray(mot2, dtype=float)
    if m1.ndim != 2:
        return 2
    return 1 if _span(m1, 1) > _span(m2, 1) else 2


def sort_order(mot1: np.ndarray, mot2: np.ndarray) -> np.ndarray:
    """Flat indices that put the points of a grid in motor order.

    Parameters
    ----------
    mot1, mot2 : ndarray, shape grid
        Motor positions per point; ``grid`` is ``(points,)`` or ``(rows, cols)``.

    Returns
    -------
    ndarray of int, shape grid
        ``order[i, j]`` is the flat index (into the original grid) of the point that belongs at
        ``(i, j)``. For a 2-D grid, the points of each row are sorted by the fast motor (the one
        varying along the rows, see :func:`fast_motor`) and the rows by the mean position of the
        slow motor; for a 1-D grid the points are sorted by ``mot1`` then ``mot2``. Sorting is
        stable and NaN positions (padding of a scan cut short) go last. Each row of a 2-D grid
        must hold one line of the slow motor, as acquired (step, snake and continuous scans):
        points are never moved between rows, so a noisy slow encoder cannot scramble them.
    """
    m1, m2 = np.asarray(mot1, dtype=float), np.asarray(mot2, dtype=float)
    if m1.shape != m2.shape:
        raise ValueError(f"mot1 shape {m1.shape} differs from mot2 shape {m2.shape}")
    flat = np.arange(m1.size).reshape(m1.shape)
    if m1.ndim == 0:
        return flat
    if m1.ndim == 1:
        return flat[np.lexsort((m2, m1))]
    if m1.ndim != 2:
        raise ValueError(f"can only sort 1-D or 2-D grids, got shape {m1.shape}")
    fast, slow = (m1, m2) if fast_motor(m1, m2) == 1 else (m2, m1)
    within = np.argsort(fast, axis=1, kind="stable")
    order = np.take_along_axis(flat, within, axis=1)
    with _quiet():
        row_pos = np.nanmean(slow, axis=1)
    row_pos = np.where(np.isfinite(row_pos), row_pos, np.inf)
    rows = np.argsort(row_pos, kind="stable")
    return order[rows]


def apply_order(values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Rearrange an array of shape ``(*grid, ...)`` by the flat indices of :func:`sort_order`."""
    arr = np.asarray(values)
    grid = order.shape
    tail = arr.shape[len(grid):]
    return arr.reshape((-1,) + tail)[order.ravel()].reshape(grid + tail)


def sort_points(raw: RawMap) -> RawMap:
    """Return a copy of ``raw`` with its points sorted by motor position (see :func:`sort_order`).

    Lazy spectra (:class:`~.lazy.LazySpectra`) stay on disk: only their point index is
    reordered. Other spectra are read into memory when they need reordering; a map already in
    order is returned with its arrays untouched (an h5py dataset stays lazy).
    """
    order = sort_order(raw.mot1, raw.mot2)
    if np.array_equal(order.ravel(), np.arange(order.size)):
        return raw
    log.info("sorting %d points by motor position", order.size)
    channels = {
        name: RawChannel(ch.spectra.reorder(order) if isinstance(ch.spectra, LazySpectra)
                         else apply_order(ch.spectra[()] if hasattr(ch.spectra, "id") else ch.spectra, order),
                         apply_order(ch.icr, order), apply_order(ch.ocr, order), ch.calibration)
        for name, ch in raw.channels.items()
    }
    return dataclasses.replace(
        raw, channels=channels, I0=apply_order(raw.I0, order),
        acquisition_time=apply_order(raw.acquisition_time, order),
        mot1=apply_order(raw.mot1, order), mot2=apply_order(raw.mot2, order),
        I1=None if raw.I1 is None else apply_order(raw.I1, order),
        attrs=dict(raw.attrs), sources=list(raw.sources))


__all__ = ["fast_motor", "sort_order", "apply_order", "sort_points"]
