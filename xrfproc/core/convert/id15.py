"""ESRF ID15 (Bliss HDF5) reader: one file per sample, scans as top-level groups ``<n>.1``.

Inside a scan group (see ``shared/reference/beamline-formats.md``):

- ``title``: the scan command, e.g. ``"dmesh hry 0 1 10 hrz 0 1 10 0.1"`` (Bliss counts intervals:
  10 intervals are 11 points; the first motor is the fast one);
- ``measurement/<det>``: spectra ``(npoints, nbins)``; ``<det>_trigger_count_rate`` (ICR),
  ``<det>_event_count_rate`` (OCR), ``<det>_elapsed_time`` (s);
- ``measurement/<counter>``: I0 / I1 monitors; ``instrument/machine/current``: ring current (mA);
- ``measurement/<motor>`` for moving motors, else ``instrument/positioners/<motor>``;
- the ``<n>.2`` group holds slower counters used to correct I0 / I1.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from ...errors import InputError
from ..rawmap import RawChannel, RawMap
from .lazy import H5Points, LazySpectra, SumPoints
from .provenance import plausible_keV, set_energy, set_member_attrs, set_time_units, to_keV
from .sorting import sort_points
from .stitch import merge

log = logging.getLogger(__name__)

KIND = "id15"
#: read() takes a list of files itself (with one scan id per file), see :func:`read`
READS_LISTS = True

_SCAN_RE = re.compile(r"^\d+\.\d+$")
#: Bliss 2-D scans: ``<cmd> m1 start stop intervals m2 start stop intervals time`` (m1 fast)
_MESH = {"amesh", "dmesh", "mesh", "a2mesh", "fmesh"}
#: Bliss 1-D scans: ``<cmd> m start stop intervals time``
_LINE = {"ascan", "dscan", "lineup", "fscan"}
DEFAULT_DETECTORS = ("falconx_det0", "falconx2_det0")


def sniff(path: str | Path) -> bool:
    """True for an HDF5 file whose top level holds Bliss scan groups (``1.1`` with ``measurement``)."""
    try:
        p = Path(path)
        if not p.is_file():
            return False
        with h5py.File(p, "r") as f:
            if "raw" in f:
                return False
            return any(_SCAN_RE.match(k) and isinstance(f.get(k, getlink=False), h5py.Group)
                       and "measurement" in f[k] for k in f)
    except Exception:
        return False


def parse_title(title: str) -> dict[str, Any]:
    """Grid shape and motor names from a Bliss scan command.

    Parameters
    ----------
    title : str
        E.g. ``"dmesh hry 0 1 10 hrz 0 1 10 0.1"`` (intervals, not points; first motor fast).

    Returns
    -------
    dict
        ``dims`` ``(rows, cols)`` or ``(points,)``, ``fast`` and ``slow`` motor names (``slow`` is
        None for a line scan), ``count_time`` (s). Empty dict when the command is not a known scan.
    """
    tok = title.split()
    if not tok:
        return {}
    cmd = tok[0].lower()
    try:
        if cmd in _MESH and len(tok) >= 10:
            return {"dims": (int(tok[8]) + 1, int(tok[4]) + 1), "fast": tok[1], "slow": tok[5],
                    "count_time": float(tok[9])}
        if cmd in _LINE and len(tok) >= 6:
            return {"dims": (int(tok[4]) + 1,), "fast": tok[1], "slow": None, "count_time": float(tok[5])}
        if cmd in ("ct", "sct", "loopscan", "timescan") and len(tok) >= 2:
            n = int(tok[1]) if cmd in ("loopscan", "timescan") and len(tok) >= 3 else 1
            ct = float(tok[2] if cmd in ("loopscan", "timescan") and len(tok) >= 3 else tok[1])
            return {"dims": (n,), "fast": None, "slow": None, "count_time": ct}
    except ValueError:
        return {}
    return {}


def _dataset(f: h5py.File, key: str, path: Path) -> h5py.Dataset:
    obj = f.get(key)
    if not isinstance(obj, h5py.Dataset):
        group, _, name = key.rpartition("/")
        present = sorted(f[group]) if group in f and isinstance(f[group], h5py.Group) else []
        hint = f"; {group}/ holds: {', '.join(present)}" if present else ""
        raise InputError(f"missing dataset{hint}", path=path, dataset=key)
    return obj


def _points(ds: h5py.Dataset, npts: int, path: Path) -> np.ndarray:
    arr = np.asarray(ds[()], dtype=np.float64)
    if arr.ndim == 0:
        return np.full(npts, float(arr))
    arr = arr.reshape(-1)
    if arr.size != npts:
        raise InputError(f"{arr.size} values, the spectra have {npts} points", path=path, dataset=ds.name)
    return arr


def _counter(f: h5py.File, scan: str, name: str, npts: int, path: Path) -> np.ndarray:
    return _points(_dataset(f, f"{scan}/measurement/{name}", path), npts, path)


def _motor(f: h5py.File, scan: str, name: str, npts: int, path: Path) -> np.ndarray:
    for key in (f"{scan}/measurement/{name}", f"{scan}/instrument/positioners/{name}"):
        if isinstance(f.get(key), h5py.Dataset):
            return _points(f[key], npts, path)
    found = [k for g in ("measurement", "instrument/positioners") if f"{scan}/{g}" in f for k in f[f"{scan}/{g}"]]
    raise InputError(f"motor {name!r} found neither in measurement/ nor in instrument/positioners/ "
                     f"(present: {', '.join(sorted(set(found)))})", path=path, dataset=f"{scan}/measurement/{name}")


def _correction(f: h5py.File, scan: str, name: str, path: Path) -> float:
    """Mean of counter ``name`` in the ``<n>.2`` scan recorded alongside ``scan``."""
    other = scan.split(".")[0] + ".2"
    if other not in f:
        raise InputError(f"correction counter {name!r} needs scan {other}, which the file lacks "
                         f"(scans: {', '.join(_scans(f))})", path=path, dataset=other)
    values = np.asarray(_dataset(f, f"{other}/measurement/{name}", path)[()], dtype=np.float64)
    if values.size == 0:
        raise InputError("empty correction counter", path=path, dataset=f"{other}/measurement/{name}")
    return float(np.nanmean(values))


def _scans(f: h5py.File) -> list[str]:
    def key(s: str) -> tuple[int, int]:
        a, b = s.split(".")
        return int(a), int(b)
    return sorted((k for k in f if _SCAN_RE.match(k)), key=key)


def _energy(f: h5py.File, scan: str) -> tuple[float, str] | None:
    """The excitation energy (keV; the dataset's ``units`` attribute, else eV above 200) and its dataset."""
    for key in ("instrument/positioners/energy", "instrument/monochromator/energy", "instrument/mono/energy",
                "sample/energy"):
        obj = f.get(f"{scan}/{key}")
        if isinstance(obj, h5py.Dataset) and obj.size == 1 and obj.dtype.kind in "uif":
            unit = obj.attrs.get("units", "")
            unit = unit.decode("utf8", "replace") if isinstance(unit, bytes) else str(unit)
            value = to_keV(float(np.asarray(obj[()]).reshape(-1)[0]), unit)
            if plausible_keV(value):
                return value, f"ID15 {scan}/{key}"
    return None


def _record_units(raw: RawMap, f: h5py.File, scan: str, i0: str, i1: str | None, divided: bool,
                  correction: str | None, count_time: float | None) -> None:
    """Energy with its source; I0/I1 units and origin; dwell (the title's count time, s).

    I0 is in counts per point, per mA when divided by the ring current, and back in the correction
    counter's counts when scaled to its mean (``i0_correction``).
    """
    energy = _energy(f, scan)
    if energy is not None:
        set_energy(raw, *energy)
    source = f"{scan}/measurement/{i0}" + (" / instrument/machine/current" if divided else "")
    if correction:
        source += f", scaled to the mean of the {scan.split('.')[0]}.2 counter {correction}"
    set_member_attrs(raw, "I0", units="counts/mA" if divided and not correction else "counts", source=source)
    if i1 is not None:
        set_member_attrs(raw, "I1", units="counts", source=f"{scan}/measurement/{i1}")
    set_time_units(raw, dwell_s=count_time)


def _detector_groups(detectors: Sequence[Any] | None, present: list[str]) -> list[list[str]]:
    if detectors is None:
        groups = [[d] for d in DEFAULT_DETECTORS if d in present]
        if not groups:  # any 2-D dataset that has a count-rate companion is a detector
            groups = [[d] for d in present if f"{d}_trigger_count_rate" in present]
        return groups
    if isinstance(detectors, str):
        detectors = [detectors]
    return [[d] if isinstance(d, str) else [str(x) for x in d] for d in detectors]


def read_scan(f: h5py.File, path: Path, scan: str, *, dims: Sequence[int] | None = None,
              mot1: str | None = None, mot2: str | None = None, detectors: Sequence[Any] | None = None,
              i0: str = "fpico2", i0_correction: str | None = None, i1: str | None = "fpico3",
              i1_correction: str | None = None, icr: str = "trigger_count_rate", ocr: str = "event_count_rate",
              time: str = "elapsed_time", divide_by_current: bool = True) -> RawMap:
    """Read one scan group of an open Bliss file (no sorting); see :func:`read` for the options."""
    if scan not in f or not isinstance(f[scan], h5py.Group):
        raise InputError(f"no scan {scan!r}; the file holds scans {', '.join(_scans(f)) or '(none)'}",
                         path=path, dataset=scan)
    meas_key = f"{scan}/measurement"
    if meas_key not in f:
        raise InputError("missing group (empty scan?)", path=path, dataset=meas_key)
    present = sorted(f[meas_key])
    title_obj = f.get(f"{scan}/title")
    title = ""
    if isinstance(title_obj, h5py.Dataset):
        t = title_obj[()]
        title = t.decode("utf8", "replace") if isinstance(t, bytes) else str(t)
    parsed = parse_title(title)

    groups = _detector_groups(detectors, present)
    if not groups:
        raise InputError(f"no detector found among {', '.join(present)}; give detectors=[...]",
                         path=path, dataset=meas_key)
    channels: dict[str, RawChannel] = {}
    npts = None
    acq_time = None
    for c, group in enumerate(groups):
        elements: list[H5Points] = []
        icr_sum = ocr_sum = None
        for det in group:
            key = f"{meas_key}/{det}"
            if det not in present:
                raise InputError(f"detector {det!r} not found; measurement/ holds: {', '.join(present)}",
                                 path=path, dataset=key)
            ds = f[key]
            if ds.ndim != 2 or ds.shape[0] == 0 or ds.shape[1] == 0:
                raise InputError(f"spectra must be (points, bins) with at least one point, found shape {ds.shape}"
                                 + (" (empty scan)" if ds.size == 0 else ""), path=path, dataset=key)
            if npts is None:
                npts = ds.shape[0]
            elif ds.shape[0] != npts:
                raise InputError(f"{ds.shape[0]} points, other detectors have {npts}", path=path, dataset=key)
            spectra = H5Points([(path, key, ds.shape, ds.dtype)])  # stays on disk: read block by block when written
            if elements and (spectra.npts, spectra.nbins) != (elements[0].npts, elements[0].nbins):
                raise InputError(f"shape {(spectra.npts, spectra.nbins)} differs from the other summed elements' "
                                 f"{(elements[0].npts, elements[0].nbins)}", path=path, dataset=key)
            elements.append(spectra)
            r_in = _counter(f, scan, f"{det}_{icr}", npts, path)
            r_out = _counter(f, scan, f"{det}_{ocr}", npts, path)
            icr_sum = r_in if icr_sum is None else icr_sum + r_in
            ocr_sum = r_out if ocr_sum is None else ocr_sum + r_out
            if acq_time is None and f"{det}_{time}" in present:
                acq_time = _counter(f, scan, f"{det}_{time}", npts, path)
        summed = elements[0] if len(elements) == 1 else SumPoints(elements, path, f"{meas_key}/{group[0]}")
        channels[f"channel{c:02d}"] = RawChannel(summed, icr_sum, ocr_sum)
    assert npts is not None

    if acq_time is None:
        if "elapsed_time" in present:
            acq_time = _counter(f, scan, "elapsed_time", npts, path)
        elif "count_time" in parsed:
            log.warning("%s:%s: no elapsed time recorded; using the count time %g s of the title",
                        path, scan, parsed["count_time"])
            acq_time = np.full(npts, parsed["count_time"])
        else:
            raise InputError(f"no acquisition time: neither {groups[0][0]}_{time} nor elapsed_time in measurement/",
                             path=path, dataset=meas_key)

    I0 = _counter(f, scan, i0, npts, path)
    current_key = f"{scan}/instrument/machine/current"
    current = None
    if divide_by_current and isinstance(f.get(current_key), h5py.Dataset):
        cur = np.asarray(f[current_key][()], dtype=np.float64)
        current = cur.reshape(-1) if cur.size == npts else float(np.nanmean(cur))
        I0 = I0 / current
    if i0_correction:
        I0 = I0 / np.nanmean(I0) * _correction(f, scan, i0_correction, path)
    I1 = None
    if i1:
        if i1 in present:
            I1 = _counter(f, scan, i1, npts, path)
            if i1_correction:
                I1 = I1 / np.nanmean(I1) * _correction(f, scan, i1_correction, path)
        elif i1_correction:
            raise InputError(f"I1 counter {i1!r} not found; measurement/ holds: {', '.join(present)}",
                             path=path, dataset=f"{meas_key}/{i1}")

    mot2_name = mot2 or parsed.get("fast") or "hrz"
    mot1_name = mot1 or parsed.get("slow") or "hry"
    m1 = _motor(f, scan, mot1_name, npts, path)
    m2 = _motor(f, scan, mot2_name, npts, path)

    grid = tuple(int(d) for d in dims) if dims is not None else parsed.get("dims")
    if grid is None:
        raise InputError(f"cannot tell the scan dimensions from the title {title!r}; give dims=(rows, cols)",
                         path=path, dataset=f"{scan}/title")
    if int(np.prod(grid)) != npts:
        source = "dims" if dims is not None else f"title {title!r}"
        raise InputError(f"{source} give a grid {grid} of {int(np.prod(grid))} points, but the scan has {npts} "
                         f"points", path=path, dataset=f"{meas_key}/{groups[0][0]}")

    def shape(a: np.ndarray) -> np.ndarray:
        return np.asarray(a).reshape(grid + np.shape(a)[1:])

    chans = {k: RawChannel(LazySpectra.grid(ch.spectra, grid), shape(ch.icr), shape(ch.ocr))
             for k, ch in channels.items()}
    attrs: dict[str, Any] = {"scan": scan}
    if current is not None:
        attrs["ring_current_mA"] = float(np.nanmean(current))
    raw = RawMap(channels=chans, I0=shape(I0), acquisition_time=shape(acq_time), mot1=shape(m1), mot2=shape(m2),
                 I1=None if I1 is None else shape(I1), cmd=title, mot1_name=mot1_name, mot2_name=mot2_name,
                 sources=[f"{path}::{scan}"], attrs=attrs)
    count_time = parsed.get("count_time")
    _record_units(raw, f, scan, i0, i1 if I1 is not None else None, current is not None, i0_correction,
                  None if count_time is None else float(count_time))
    return raw


def read(source: str | Path | Sequence[str | Path], scan: str | Sequence[str] = "1.1", *,
         dims: Sequence[int] | None = None, mot1: str | None = None, mot2: str | None = None,
         detectors: Sequence[Any] | None = None, i0: str = "fpico2", i0_correction: str | None = None,
         i1: str | None = "fpico3", i1_correction: str | None = None, icr: str = "trigger_count_rate",
         ocr: str = "event_count_rate", time: str = "elapsed_time", divide_by_current: bool = True,
         sort: bool = True, atol: float = 1e-4) -> RawMap:
    """Read one or several scans of Bliss HDF5 file(s) into one map.

    Parameters
    ----------
    source : path or list of paths
        The Bliss file; a list of files is read with ``scan`` a list of the same length (one scan
        per file) or one scan id used for every file.
    scan : str or list of str
        Scan id(s) such as ``"1.1"``; several are stitched (:func:`~.stitch.merge`).
    dims : (rows, cols) or (points,), optional
        Scan grid; default parsed from the title (Bliss counts intervals: ``dmesh hry 0 1 10 hrz
        0 1 4 0.1`` is 5 rows x 11 columns).
    mot1, mot2 : str, optional
        Slow and fast motor; default from the title (second and first motor), else ``hry``/``hrz``.
    detectors : list, optional
        One entry per output channel (``channel00``, ``channel01``, ...); an entry is a detector
        name or a list of names whose spectra (and ICR, OCR) are summed. Default: those of
        ``falconx_det0``, ``falconx2_det0`` present.
    i0, i1 : str
        Monitor counters in ``measurement/`` (``i1=None``: no I1; a missing I1 is skipped).
    i0_correction, i1_correction : str, optional
        Counter of the ``<n>.2`` scan: ``I0 = I0 / mean(I0) * mean(counter)`` (after the current
        division).
    icr, ocr, time : str
        Suffixes of the per-detector datasets ``<det>_<suffix>``.
    divide_by_current : bool
        Divide I0 by ``instrument/machine/current`` (mA) when present.
    sort : bool
        Put the points in motor order (:func:`~.sorting.sort_points`) after stitching.
    atol : float
        Tolerance (motor units) for stitching.
    """
    options = dict(dims=dims, mot1=mot1, mot2=mot2, detectors=detectors, i0=i0, i0_correction=i0_correction, i1=i1,
                   i1_correction=i1_correction, icr=icr, ocr=ocr, time=time, divide_by_current=divide_by_current)
    files = [Path(s) for s in source] if isinstance(source, (list, tuple)) else [Path(source)]
    scans = [scan] if isinstance(scan, str) else list(scan)
    if not scans:
        raise InputError("empty list of scan ids", path=files[0])
    if len(files) > 1:
        if len(scans) == 1:
            scans = scans * len(files)
        if len(scans) != len(files):
            raise InputError(f"{len(files)} files but {len(scans)} scan ids; give one scan id per file")
        pairs = list(zip(files, scans))
    else:
        pairs = [(files[0], s) for s in scans]
    maps = []
    for path, sid in pairs:
        if not path.is_file():
            raise InputError("file not found", path=path)
        try:
            f = h5py.File(path, "r")
        except OSError as exc:
            raise InputError(f"not an HDF5 file ({exc})", path=path) from None
        with f:
            maps.append(read_scan(f, path, str(sid), **options))  # type: ignore[arg-type]
    raw = merge(maps, atol=atol) if len(maps) > 1 else maps[0]
    return sort_points(raw) if sort else raw


__all__ = ["KIND", "sniff", "read", "read_scan", "parse_title"]
