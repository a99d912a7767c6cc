"""Stitching several scans into one map along the axis whose motor positions continue.

Two 2-D scans ``(rows, cols)`` fit together along the rows when their columns sit at the same
positions (the motor varying along a row has the same values within ``atol``) and they have the
same number of columns; they fit together along the columns when their rows sit at the same
positions. 1-D scans (lines of points) are concatenated. Anything else is an
:class:`~xrfproc.errors.InputError` saying which scans and why.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from ..rawmap import RawChannel, RawMap
from .lazy import LazySpectra
from .sorting import _quiet, fast_motor

log = logging.getLogger(__name__)


def _label(raw: RawMap, i: int) -> str:
    src = raw.sources[0] if raw.sources else f"scan #{i}"
    return f"{src} ({raw.cmd})" if raw.cmd else str(src)


def _line_positions(raw: RawMap, axis: int) -> np.ndarray:
    """Positions of the motor that varies along ``axis`` of a 2-D grid, one per index along it.

    Sorted per line, so snake rows and reversed rows compare equal; NaN padding is ignored.
    """
    m1, m2 = np.asarray(raw.mot1, float), np.asarray(raw.mot2, float)
    along_cols = m1 if fast_motor(m1, m2) == 1 else m2
    along_rows = m2 if along_cols is m1 else m1
    motor = along_cols if axis == 1 else along_rows
    other = 0 if axis == 1 else 1
    with _quiet():
        line = np.nanmedian(np.sort(motor, axis=axis), axis=other)
    return line


def _same(a: np.ndarray, b: np.ndarray, atol: float) -> bool:
    return a.shape == b.shape and bool(np.all((np.abs(a - b) <= atol) | (np.isnan(a) & np.isnan(b))))


def stitch_axis(a: RawMap, b: RawMap, atol: float = 1e-4) -> int:
    """The grid axis along which ``b`` continues ``a`` (0: more rows, 1: more columns).

    Raises
    ------
    InputError
        When the scans share neither their column nor their row positions, or share both (the
        same area measured twice).
    """
    ga, gb = a.grid_shape, b.grid_shape
    if len(ga) != len(gb):
        raise InputError(f"cannot stitch a {len(ga)}-D scan {ga} to a {len(gb)}-D scan {gb}")
    if len(ga) == 1:
        return 0
    if len(ga) != 2:
        raise InputError(f"can only stitch 1-D or 2-D scans, got grid {ga}")
    cols_same = _same(_line_positions(a, 1), _line_positions(b, 1), atol)
    rows_same = _same(_line_positions(a, 0), _line_positions(b, 0), atol)
    if cols_same and rows_same:
        raise InputError(f"both scans cover the same positions (grid {ga}, within atol={atol}); "
                         "the same area measured twice cannot be stitched")
    if cols_same:
        return 0
    if rows_same:
        return 1
    why = []
    if ga[1] != gb[1]:
        why.append(f"{ga[1]} vs {gb[1]} columns")
    else:
        why.append("the column positions differ")
    if ga[0] != gb[0]:
        why.append(f"{ga[0]} vs {gb[0]} rows")
    else:
        why.append("the row positions differ")
    raise InputError(f"scans do not fit together: grids {ga} and {gb} share neither their column positions "
                     f"nor their row positions within atol={atol} ({'; '.join(why)})")


def _concat(values: Sequence[np.ndarray], axis: int) -> np.ndarray:
    return np.concatenate([np.asarray(v[()] if hasattr(v, "id") else v) for v in values], axis=axis)


def _concat_spectra(values: Sequence[Any], axis: int) -> Any:
    """Spectra joined along ``axis``: lazily (nothing read) when any part is a :class:`LazySpectra`."""
    if any(isinstance(v, LazySpectra) for v in values):
        return LazySpectra.concat(values, axis)
    return _concat(values, axis)


def merge(maps: Sequence[RawMap], atol: float = 1e-4) -> RawMap:
    """Stitch several scans into one map.

    Parameters
    ----------
    maps : sequence of RawMap
        Scans in the order they should appear; each must continue the previous one along the same
        axis (see :func:`stitch_axis`).
    atol : float
        Absolute tolerance (motor units) within which two motor positions are the same.

    Returns
    -------
    RawMap
        One map whose spectra and per-point arrays are the concatenation of the scans' along the
        stitching axis (spectra of lazy readers stay on disk, see :mod:`.lazy`; others are joined
        in memory). ``cmd`` joins the commands with ``"; "``,
        ``sources`` lists every source and ``attrs["stitched_axis"]`` records the axis.

    Raises
    ------
    InputError
        When the scans don't fit together: different channels, energy bins, motor names, grids
        that share no line of positions, or a mixed presence of I1.
    """
    maps = list(maps)
    if not maps:
        raise InputError("no scan to merge")
    if len(maps) == 1:
        return maps[0]
    first = maps[0]
    axis = None
    for i, m in enumerate(maps[1:], start=1):
        prev = maps[i - 1]
        where = f"{_label(prev, i - 1)} + {_label(m, i)}"
        if sorted(m.channels) != sorted(first.channels):
            raise InputError(f"cannot stitch: channels {sorted(m.channels)} differ from {sorted(first.channels)}",
                             path=where)
        for name, ch in m.channels.items():
            if ch.spectra.shape[-1] != first.channels[name].spectra.shape[-1]:
                raise InputError(f"cannot stitch: {name} has {ch.spectra.shape[-1]} energy bins, "
                                 f"the first scan {first.channels[name].spectra.shape[-1]}", path=where)
        if (m.mot1_name, m.mot2_name) != (first.mot1_name, first.mot2_name):
            raise InputError(f"cannot stitch: motors ({m.mot1_name}, {m.mot2_name}) differ from "
                             f"({first.mot1_name}, {first.mot2_name})", path=where)
        if (m.I1 is None) != (first.I1 is None):
            raise InputError("cannot stitch: I1 recorded in some scans only", path=where)
        try:
            ax = stitch_axis(prev, m, atol)
        except InputError as exc:
            raise InputError(exc.message, path=where) from None
        if axis is not None and ax != axis:
            raise InputError(f"cannot stitch: scan continues along axis {ax}, the previous ones along {axis}",
                             path=where)
        axis = ax
    assert axis is not None
    energies = {m.energy_keV for m in maps if m.energy_keV is not None}
    if len(energies) > 1:
        log.warning("stitched scans have different energies %s keV; keeping %s", sorted(energies), first.energy_keV)
    channels = {
        name: RawChannel(
            _concat_spectra([m.channels[name].spectra for m in maps], axis),
            _concat([m.channels[name].icr for m in maps], axis),
            _concat([m.channels[name].ocr for m in maps], axis),
            first.channels[name].calibration)
        for name in first.channels
    }
    attrs = dict(first.attrs)
    attrs["stitched_axis"] = axis
    attrs["stitched_scans"] = len(maps)
    for key in ("missing_points",):
        total = sum(int(m.attrs.get(key, 0)) for m in maps)
        if total:
            attrs[key] = total
    sources: list[str] = []
    for m in maps:
        sources.extend(str(s) for s in m.sources)
    out = RawMap(
        channels=channels,
        I0=_concat([m.I0 for m in maps], axis),
        acquisition_time=_concat([m.acquisition_time for m in maps], axis),
        mot1=_concat([m.mot1 for m in maps], axis),
        mot2=_concat([m.mot2 for m in maps], axis),
        I1=None if first.I1 is None else _concat([m.I1 for m in maps], axis),  # type: ignore[misc]
        cmd="; ".join(m.cmd for m in maps if m.cmd),
        mot1_name=first.mot1_name, mot2_name=first.mot2_name,
        energy_keV=first.energy_keV, sources=sources, attrs=attrs)
    log.info("stitched %d scans along axis %d into grid %s", len(maps), axis, out.grid_shape)
    return out


__all__ = ["merge", "stitch_axis"]
