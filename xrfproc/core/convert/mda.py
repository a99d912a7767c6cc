"""APS MDA scans (EPICS sscan ``saveData``) -> :class:`~xrfproc.core.rawmap.RawMap`.

Two kinds of MDA map are read:

* **spectra inside** (step scans, e.g. 2-ID-E rank 3 ``[rows, cols, 2000]``): the innermost level has no
  positioner and its detectors ``...mcaN.VAL`` are the spectra of the detector elements; the per-pixel
  scalers (ICR/OCR ``dxpN:InputCountRate/OutputCountRate``, real/live time ``mcaN.ERTM/ELTM``, ion
  chambers) are the detectors of the level above. A rank-2 file of this kind is one line of spectra
  (grid ``(1, npts)``), a rank-1 file a single spectrum (grid ``(1, 1)``).
* **fly scans** (rank 2, ``[rows, cols]`` of scalers only): the spectra are in a separate XRF-Maps
  ``flyXRF`` HDF5 file (``MAPS_RAW/data_a..data_d``, shape ``(channels, rows, cols)``, with per-element
  ``inputcounts``, ``ouputcounts`` (sic), ``realtime``, ``livetime``), given by ``spectra=`` or found next
  to the MDA file (``<stem>_*.h5`` in the same folder or in a sibling ``flyXRF.h5``/``flyXRF`` folder).

Grid mismatch (fly scans): the MDA row holds the points the sscan record *requested* while the
spectra
file holds the pixels the XMAP actually recorded. In the APS 2-ID-E example the MDA has 11 points per row,
of which only the first 9 carry scaler data (the MCS ``NuseAll`` reads 9, the last two points are zero),
and the HDF5 file has 9 columns whose real times agree point by point with the MCS clock. The reader
therefore **crops to the common grid** (the first ``min`` rows and columns of both, aligned at index 0)
and logs a warning saying what was dropped; ``strict=True`` raises an :class:`InputError` instead.
Incomplete scans (``cpt < npts``) are cropped to the complete rows (a lone partial first row keeps its
acquired points) with a warning.

Quantities stored
-----------------
``I0``
    The ion-chamber scaler named by ``i0=`` (PV name, description, or an alias from :data:`SCALER_ALIASES`;
    default ``"US_IC"``, the upstream ion chamber: ``*:scaler3_cts1.B`` in step scans,
    ``*:mcs:mca2.VAL`` in fly scans), as recorded (counts per pixel for the MCS of fly scans; the
    step-scan ``scaler3`` values are rates). When the default is absent I0 is 1 with a warning.
``acquisition_time``
    Real time per pixel (s), mean over the elements summed: ``realtime`` (fly HDF5) or ``mcaN.ERTM``;
    else the fly-scan clock ``mcs:mca1 / 25 MHz``; else 1 with a warning.
``icr``, ``ocr``
    Counts per second. Fly HDF5: ``inputcounts / realtime`` and ``ouputcounts / realtime`` (the file holds
    counts per pixel; their sum over the spectrum equals ``ouputcounts``). Step scans: the XMAP
    ``InputCountRate``/``OutputCountRate`` scalers. Summed channels sum the elements' rates.
``mot1``, ``mot2``
    Readbacks of the first positioner of the row level (slow) and of the point level (fast).
``raw@energy_keV``, ``raw@energy_source``
    The excitation energy from the extra PVs (else the row-level detectors) named in :data:`ENERGY_PVS`,
    in keV (the PV's unit ``keV``/``eV``; without one, eV above 200); e.g. ``ID02ds:Energy.VAL`` =
    10.2975 keV in the 2-ID-E fly scan. ``energy_keV=`` given wins (a difference of more than 1 eV is
    logged).
``raw/channelXX@calibration_keV``, ``@calibration_source``
    The MCA calibration PVs of the header (``mcaN.CALO/CALS/CALQ``): the EPICS MCA record's setting,
    often 0.1-0.2 keV off the spectrum's own peaks; the source says so, for a later calibration step.
``raw/I0@units``, ``raw@dwell_s``
    ``"counts"`` for the fly-scan MCS channels, ``"counts/s"`` for step-scan scalers (rates), ``"mA"``
    for the ring current; ``dwell_s`` the median real time per point (s).
"""
from __future__ import annotations

import fnmatch
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._sniff import head_bytes
from .provenance import (apply_given_energy, plausible_keV, set_energy, set_member_attrs,
                         set_time_units, to_keV)
from ...errors import InputError
from ..mdafile import MdaFile, acquired_shape, level_arrays, read_mda
from ..rawmap import RawChannel, RawMap

log = logging.getLogger(__name__)

KIND = "mda"

#: scaler aliases (XRF-Maps' Scaler_to_PV_map names) -> PV patterns, tried in order
SCALER_ALIASES: dict[str, tuple[str, ...]] = {
    "US_IC": ("*:scaler3_cts1.B", "*:mcs:mca2.VAL", "2idd:scaler1_cts1.C"),
    "DS_IC": ("*:scaler3_cts1.C", "*:mcs:mca3.VAL", "2idd:scaler1_cts1.B"),
    "SRCURRENT": ("S:SRcurrentAI", "S:SRcurrentAI.VAL"),
}
#: PVs recording the incident energy at APS XFM beamlines (fnmatch, case-insensitive), most trusted first:
#: monochromator readbacks, then the undulator energies (2-ID: ``ID02ds`` fed the 2-ID-E mono in the
#: example file, ``ID02us`` recorded beside it)
ENERGY_PVS: tuple[str, ...] = ("*:DCMenergy*", "*:mono*energy*rbv*", "*:mono*energy*", "2xfm:Energy*", "*:Energy_RBV",
                               "ID??ds:Energy.VAL", "ID??ds:Energy", "ID??us:Energy.VAL", "ID??us:Energy")
#: fly-scan clock channel and its frequency (Hz)
TIME_SCALER = ("*:mcs:mca1.VAL", 25e6)
#: innermost levels at least this long, without positioner, are taken for MCA spectra
MIN_SPECTRUM_LENGTH = 256
_ELEM = ("a", "b", "c", "d", "e", "f", "g", "h")


def sniff(path: str | Path) -> bool:
    """True for a file starting with an MDA 1.2-1.4 version word and a sane rank."""
    head = head_bytes(path, 12)
    if len(head) < 12:
        return False
    try:
        ver = np.frombuffer(head[:4], ">f4")[0]
        rank = int(np.frombuffer(head[8:12], ">i4")[0])
        return bool(np.isfinite(ver)) and round(100 * float(ver)) in (120, 130, 140) and 1 <= rank <= 8
    except Exception:
        return False


# --------------------------------------------------------------------------- helpers
def _match(names: list[str], descs: list[str], key: str) -> int | None:
    """Index of the detector named ``key`` (PV, description, alias or glob), or None."""
    patterns = SCALER_ALIASES.get(key.upper(), ()) + (key,)
    for pat in patterns:
        for i, (n, d) in enumerate(zip(names, descs)):
            if n == pat or (d and d == pat) or fnmatch.fnmatchcase(n, pat) or n.split(".")[0] == pat:
                return i
    return None


def _element_number(name: str) -> int | None:
    m = re.search(r"mca(\d+)(?:\.VAL)?$", name)
    return int(m.group(1)) if m else None


def _find_scaler(names: list[str], regex: str) -> int | None:
    for i, n in enumerate(names):
        if re.search(regex, n):
            return i
    return None


def find_spectra_file(mda_path: Path) -> Path | None:
    """The flyXRF HDF5 file of a fly scan, by name, next to the MDA file (None if not found).

    Raises
    ------
    InputError
        When several candidates are found.
    """
    stem = mda_path.stem
    folders = [mda_path.parent] + [mda_path.parent.parent / d for d in ("flyXRF.h5", "flyXRF")]
    found: list[Path] = []
    for folder in folders:
        if folder.is_dir():
            found.extend(sorted(p for p in folder.glob(f"{stem}_*.h5") if p.is_file() and not is_layout_file(p)))
    if len(found) > 1:
        raise InputError(f"several spectra files match this fly scan ({', '.join(map(str, found))}); "
                         "choose one with spectra=", path=mda_path)
    return found[0] if found else None


def is_layout_file(path: Path) -> bool:
    """True for a file xrfproc wrote (an output of ``convert``, never a spectra file to read).

    Layout files carry the root attribute ``xrfproc_schema_version``, or (files of the original
    xrf_proc) a ``raw`` group beside a ``cmd`` dataset; flyXRF spectra files have ``MAPS_RAW``.
    A file that cannot be opened is not called a layout file (reading it then says why).
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if "xrfproc_schema_version" in f.attrs:
                return True
            return "MAPS_RAW" not in f and isinstance(f.get("raw"), h5py.Group) and "cmd" in f
    except Exception:  # locked, truncated, not HDF5: left to the reader's error
        return False


def _read_fly_h5(path: Path) -> dict[str, Any]:
    """Spectra ``(elements, rows, cols, nbins)`` and per-element stats ``(elements, rows, cols)``."""
    import h5py

    if not path.is_file():
        raise InputError("spectra file not found", path=path)
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path=path) from None
    with f:
        if "MAPS_RAW" not in f:
            raise InputError("no 'MAPS_RAW' group: not an XRF-Maps flyXRF spectra file", path=path)
        g = f["MAPS_RAW"]
        keys = [f"data_{c}" for c in _ELEM if f"data_{c}" in g]
        if not keys:
            raise InputError("no spectra datasets 'data_a', 'data_b', ...", path=path, dataset="MAPS_RAW")
        shape = None
        for k in keys:
            ds = g[k]
            if ds.ndim != 3:
                raise InputError(f"expected (channels, rows, cols), found shape {ds.shape}", path=path,
                                 dataset=f"MAPS_RAW/{k}")
            if ds.dtype.kind not in "uif":
                raise InputError(f"spectra must be numbers, found dtype {ds.dtype}", path=path, dataset=f"MAPS_RAW/{k}")
            here = ds.shape[1:] + ds.shape[:1]  # (rows, cols, nbins)
            if shape is not None and here != shape:
                raise InputError(f"shape {ds.shape} differs from data_a's {shape[-1:] + shape[:2]}", path=path,
                                 dataset=f"MAPS_RAW/{k}")
            shape = here
        # the spectra are read one element at a time when the channels are built (_fly_element)
        out: dict[str, Any] = {"path": path, "keys": keys, "shape": shape, "n": len(keys)}
        for name in ("inputcounts", "ouputcounts", "outputcounts", "realtime", "livetime"):
            if name in g:
                arr = np.asarray(g[name][()], dtype=np.float64)
                if arr.shape != (16,) and arr.shape[1:] != shape[:2]:
                    raise InputError(f"shape {arr.shape}, expected (elements, {shape[0]}, {shape[1]})",
                                     path=path, dataset=f"MAPS_RAW/{name}")
                out["outputcounts" if name == "ouputcounts" else name] = arr[: len(keys)]
    return out


def _fly_element(fly: dict[str, Any], j: int, rows: int, cols: int) -> np.ndarray:
    """Spectra ``(rows, cols, nbins)`` int32 of element ``j`` of a flyXRF file (see :func:`_read_fly_h5`)."""
    import h5py

    path, key = fly["path"], f"MAPS_RAW/{fly['keys'][j]}"
    try:
        with h5py.File(path, "r") as f:
            ds = f[key]
            a = np.moveaxis(ds[:, :rows, :cols], 0, -1).astype(np.int32)
            int16 = ds.dtype == np.int16
    except (OSError, RuntimeError, ValueError, KeyError) as exc:
        raise InputError(f"cannot read the spectra ({exc})", path=path, dataset=key) from None
    if int16 and (a < 0).any():
        log.warning("%s: %s holds negative int16 counts; read as unsigned 16-bit", path, key)
        a[a < 0] += 65536
    return a


def _integral(a: np.ndarray) -> bool:
    """Whole numbers that fit int32 (spectra can then be stored as counts without loss)."""
    return bool(np.all(np.abs(a) < 2.0**31) and np.all(np.mod(a, 1) == 0))


def _bcast(a: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    return np.broadcast_to(a[: grid[0], : grid[1]], grid).copy()


def _cmd(m: MdaFile) -> str:
    parts = []
    for lv in m.levels():
        p = lv.positioners[0] if lv.positioners else None
        if p is not None and p.data.size:
            n = max(lv.cpt, 1)
            parts.append(f"{lv.name} {p.name} {p.data[0]:g} {p.data[n - 1]:g} {lv.npts}")
        else:
            parts.append(f"{lv.name} {lv.npts}")
    return f"MDA scan {m.scan_number}: " + " / ".join(parts) + f" ({m.scan.time})"


def _calibration(extra: dict[str, Any], elem: int | None) -> tuple[tuple[float, float, float], str] | None:
    """The header calibration ``(zero, gain, quad)`` (keV) of MCA element ``elem`` and the PVs it came from."""
    if elem is None:
        return None
    vals, keys = [], []
    for suffix in ("CALO", "CALS", "CALQ"):
        key = next((k for k in extra if k.endswith(f"mca{elem}.{suffix}")), None)
        if key is None:
            return None
        try:
            vals.append(float(np.asarray(extra[key]).ravel()[0]))
        except (TypeError, ValueError, IndexError):
            return None
        keys.append(key)
    source = f"MDA header PVs {keys[0]}/{keys[1].rsplit('.', 1)[-1]}/{keys[2].rsplit('.', 1)[-1]}"
    return (vals[0], vals[1], vals[2]), source


def _energy_candidates(m: MdaFile) -> list[tuple[str, float, str]]:
    """``(PV, keV, where)`` of every PV matching :data:`ENERGY_PVS` with a plausible value, most trusted first.

    Extra PVs first (the values at the start of the scan); a PV recorded only as a detector of the
    row level counts with its mean over the rows acquired.
    """
    found: list[tuple[int, str, float, str]] = []
    seen: set[str] = set()

    def consider(name: str, unit: str, value: Any, where: str) -> None:
        rank = next((i for i, pat in enumerate(ENERGY_PVS) if fnmatch.fnmatch(name.lower(), pat.lower())), None)
        if rank is None or name in seen:
            return
        try:
            arr = np.asarray(value, dtype=np.float64).ravel()
        except (TypeError, ValueError):
            return
        arr = arr[np.isfinite(arr) & (arr != 0)]
        if not arr.size:
            return
        kev = to_keV(float(arr.mean()), unit)
        if plausible_keV(kev):
            seen.add(name)
            found.append((rank, name, kev, where))

    for name, _desc, unit, value in m.extra:
        consider(name, unit, value, "MDA extra PV")
    if m.rank >= 2:
        for d in m.levels()[0].detectors:
            consider(d.name, d.unit, d.data[: max(m.scan.cpt, 1)], "MDA row-level detector")
    found.sort(key=lambda c: c[0])
    return [(name, kev, where) for _, name, kev, where in found]


def file_energy(m: MdaFile) -> tuple[float, str] | None:
    """The excitation energy (keV) recorded in an MDA file and its source, e.g. ``"MDA extra PV ID02ds:Energy.VAL"``.

    None when no PV of :data:`ENERGY_PVS` holds a plausible energy. Other candidates that disagree
    with the one taken by more than 1 eV are logged.
    """
    cands = _energy_candidates(m)
    if not cands:
        return None
    name, kev, where = cands[0]
    others = [f"{n} = {e:g} keV" for n, e, _ in cands[1:] if abs(e - kev) > 1e-3]
    if others:
        log.info("%s: energy %g keV from %s; the file also records %s (give energy_keV= if the beam came "
                 "from that one)", m.path, kev, name, ", ".join(others))
    return kev, f"{where} {name}"


def _i0_units(name: str | None, fly: bool) -> str | None:
    """Units of the I0 scaler ``name``: MCS channels count per point, step-scan scalers are rates."""
    if name is None:
        return "1"
    if fnmatch.fnmatchcase(name, "S:SRcurrentAI*"):
        return "mA"
    if fnmatch.fnmatchcase(name, "*:mcs:mca*"):
        return "counts"
    if not fly and re.search(r":scaler\d+_cts\d+\.[A-Z]$", name):
        return "counts/s"
    return None


# --------------------------------------------------------------------------- reader
def read(source: str | Path, *, spectra: str | Path | None = None, elements: str = "sum", i0: str = "US_IC",
         spectral: bool | None = None, strict: bool = False, energy_keV: float | None = None,
         **_ignored: Any) -> RawMap:
    """Read an MDA scan (and, for fly scans, its spectra file) into a RawMap.

    Parameters
    ----------
    source : path
        The ``.mda`` file.
    spectra : path, optional
        The flyXRF HDF5 spectra file of a fly scan (default: looked for by name, see module docstring).
    elements : {"sum", "separate"}
        Sum the detector elements into ``channel00`` or keep them as ``channel00..channelNN``.
    i0 : str
        The I0 scaler: PV name, description, glob or alias (``US_IC``, ``DS_IC``, ``SRCURRENT``).
    spectral : bool, optional
        Force (True) or forbid (False) reading the innermost level as spectra; default by its shape.
    strict : bool
        Raise instead of cropping when the MDA and spectra grids differ or the scan is incomplete.
    energy_keV : float, optional
        Incident energy (keV) to record instead of the file's (see :func:`file_energy`); a difference
        of more than 1 eV is logged as a warning.

    Raises
    ------
    InputError
        For a corrupt/truncated file, a missing spectra file, an unknown ``i0``, grids that disagree
        with ``strict=True``, or unsupported scan ranks.
    """
    path = Path(source)
    if elements not in ("sum", "separate"):
        raise InputError(f"elements must be 'sum' or 'separate', not {elements!r}", path=path)
    m = read_mda(path)
    levels = m.levels()
    inner = levels[-1]
    if len(levels) != m.rank:
        raise InputError(f"only {len(levels)} of {m.rank} scan levels were written", path=path)
    if spectral is None:
        spectral = not inner.positioners and inner.npts >= MIN_SPECTRUM_LENGTH and spectra is None
    point_level = 2 if spectral else 1
    grid_levels = m.rank - point_level + 1
    if grid_levels > 2:
        raise InputError(f"a rank-{m.rank} MDA scan {'with' if spectral else 'without'} spectra has "
                         f"{grid_levels} scan dimensions; only maps (2) and lines (1) are supported", path=path)
    extra = m.extra_dict()
    acq = acquired_shape(m)

    # grid of complete points, outermost first
    if grid_levels == 2:
        rows, cols = acq[0], levels[1].npts
        if rows == 0:  # a lone partial first row
            rows, cols = 1, levels[1].cpt
        if rows < levels[0].npts or cols < levels[1].npts:
            msg = (f"incomplete scan: keeping the {rows} x {cols} points acquired of the "
                   f"{levels[0].npts} x {levels[1].npts} requested")
            if strict:
                raise InputError(msg, path=path)
            log.warning("%s: %s", path, msg)
    elif grid_levels == 1:
        rows, cols = 1, acq[0]
        if cols < levels[0].npts:
            if strict:
                raise InputError(f"incomplete line: {cols} of {levels[0].npts} points", path=path)
            log.warning("%s: incomplete line: %d of %d points", path, cols, levels[0].npts)
    else:
        rows, cols = 1, 1
    if rows * cols == 0:
        raise InputError("the scan holds no complete point", path=path)

    # per-point detectors and positioners
    if m.rank >= point_level:
        dets, ditems = level_arrays(m, point_level, "detectors")
        fast, fitems = level_arrays(m, point_level, "positioners")
    else:
        dets, ditems, fast, fitems = {}, [], {}, []
    names = [d.name for d in ditems]
    descs = [d.desc for d in ditems]

    def det(i: int) -> np.ndarray:
        return _grid(dets[ditems[i].number], rows, cols)

    # spectra
    chans: dict[str, RawChannel] = {}
    if spectral:
        sitems = list(inner.detectors)
        elems = [(it, _element_number(it.name)) for it in sitems]
        if any(e is not None for _, e in elems):
            elems = [(it, e) for it, e in elems if e is not None]
        if not elems:
            raise InputError("the innermost scan level has no detector to read as spectra", path=path)

        def element(j: int) -> np.ndarray:
            """Spectra of element ``j``, (rows, cols, nbins) float32, NaN (never acquired) -> 0."""
            arrays, _ = level_arrays(m, 1, "detectors", numbers=[elems[j][0].number])
            return np.nan_to_num(_to3(arrays[elems[j][0].number])[:rows, :cols], copy=False)

        # one element in memory at a time (besides the file and the output): first, can it be int32?
        integral = all(_integral(element(j)) for j in range(len(elems)))  # no silent int32 overflow
        spectra_dtype = np.dtype(np.int32 if integral else np.float32)
        enums = [e for _, e in elems]
        stats: dict[str, list[np.ndarray | None]] = {k: [] for k in ("icr", "ocr", "realtime", "livetime")}
        regex = {"icr": r"dxp{n}[.:]InputCountRate", "ocr": r"dxp{n}[.:]OutputCountRate",
                 "realtime": r"mca{n}\.ERTM$", "livetime": r"mca{n}\.ELTM$"}
        for e in enums:
            for key, rx in regex.items():
                i = _find_scaler(names, rx.format(n=e)) if e is not None else None
                stats[key].append(None if i is None else det(i))
        sources = [str(path)]
    else:
        if spectra is None:
            spectra = find_spectra_file(path)
            if spectra is None:
                raise InputError("this MDA scan holds no spectra (a fly scan) and no spectra file was found "
                                 f"next to it ({path.stem}_*.h5, ../flyXRF.h5/); give spectra=", path=path)
        fly = _read_fly_h5(Path(spectra))
        hrows, hcols = fly["shape"][:2]
        if (hrows, hcols) != (rows, cols):
            msg = (f"the MDA grid is {rows} x {cols} points but the spectra file {spectra} holds {hrows} x {hcols}")
            if strict:
                raise InputError(msg, path=path)
            tail = ""
            if cols > hcols and dets:
                extra_pts = np.concatenate([_grid(a, rows, cols)[:, hcols:].ravel() for a in dets.values()])
                tail = (" (the dropped MDA points hold only zeros)" if not np.any(extra_pts)
                        else " (the dropped MDA points hold non-zero scaler values)")
            log.warning("%s: %s; cropping both to the common %d x %d grid%s", path, msg,
                        min(rows, hrows), min(cols, hcols), tail)
            rows, cols = min(rows, hrows), min(cols, hcols)
        spectra_dtype = np.dtype(np.int32)

        def element(j: int) -> np.ndarray:
            return _fly_element(fly, j, rows, cols)

        n = fly["n"]
        enums = list(range(1, n + 1))
        stats = {k: [] for k in ("icr", "ocr", "realtime", "livetime")}
        rt = fly.get("realtime")
        for j in range(n):
            rtj = None if rt is None else rt[j, :rows, :cols]
            stats["realtime"].append(rtj)
            stats["livetime"].append(None if "livetime" not in fly else fly["livetime"][j, :rows, :cols])
            for key, src in (("icr", "inputcounts"), ("ocr", "outputcounts")):
                if src in fly and rtj is not None:
                    with np.errstate(divide="ignore", invalid="ignore"):
                        rate = np.where(rtj > 0, fly[src][j, :rows, :cols] / rtj, 0.0)
                    stats[key].append(rate)
                else:
                    stats[key].append(None)
        sources = [str(path), str(spectra)]

    grid = (rows, cols)

    def combine(key: str, idx: list[int]) -> np.ndarray | None:
        vals = [stats[key][j] for j in idx]
        if any(v is None for v in vals):
            return None
        if key in ("realtime", "livetime"):
            return np.mean(vals, axis=0)
        return np.sum(vals, axis=0)

    groups = [list(range(len(enums)))] if elements == "sum" else [[j] for j in range(len(enums))]
    cal_sources: dict[str, str] = {}
    for ci, idx in enumerate(groups):
        spec = None
        for j in idx:  # summed element by element: never all elements in memory
            e = element(j)  # whole numbers when spectra_dtype is int32: the cast is exact
            spec = e.astype(spectra_dtype) if spec is None else np.add(spec, e, out=spec, casting="unsafe")
        icr, ocr = combine("icr", idx), combine("ocr", idx)
        if icr is None or ocr is None:
            log.warning("%s: no ICR/OCR for %s; dead-time factor set to 1", path, f"channel{ci:02d}")
            icr = ocr = np.ones(grid)
        cal = _calibration(extra, enums[idx[0]])
        chans[f"channel{ci:02d}"] = RawChannel(spec, np.asarray(icr, float)[:rows, :cols],
                                               np.asarray(ocr, float)[:rows, :cols], None if cal is None else cal[0])
        if cal is not None:
            cal_sources[f"channel{ci:02d}"] = cal[1]

    allidx = list(range(len(enums)))
    atime = combine("realtime", allidx)
    if atime is None:
        k = _match(names, descs, TIME_SCALER[0])
        if k is not None:
            atime = det(k) / TIME_SCALER[1]
        else:
            log.warning("%s: no real-time record; acquisition_time set to 1 s", path)
            atime = np.ones(grid)
    atime = np.asarray(atime, float)[:rows, :cols]

    k = _match(names, descs, i0)
    if k is None:
        if i0 != "US_IC":
            raise InputError(f"no I0 detector {i0!r}; per-point detectors are: {', '.join(names)}", path=path)
        log.warning("%s: no upstream ion chamber (US_IC) scaler found; I0 set to 1", path)
        I0 = np.ones(grid)
    else:
        I0 = det(k)
        log.info("%s: I0 from %s", path, names[k])

    # motors: fast = point level, slow = the level above
    if fitems:
        mot2 = _grid(fast[fitems[0].number], rows, cols)
        mot2_name = fitems[0].desc or fitems[0].name
    else:
        mot2 = np.broadcast_to(np.arange(cols, dtype=float), grid).copy()
        mot2_name = "point"
    if grid_levels == 2 and levels[0].positioners:
        p = levels[0].positioners[0]
        mot1 = _bcast(np.nan_to_num(p.data), grid)
        mot1_name = p.desc or p.name
    else:
        mot1 = np.broadcast_to(np.arange(rows, dtype=float)[:, None], grid).copy()
        mot1_name = "row"

    raw = RawMap(channels=chans, I0=I0, acquisition_time=atime, mot1=mot1, mot2=mot2, cmd=_cmd(m),
                 mot1_name=mot1_name, mot2_name=mot2_name, sources=sources,
                 attrs={"source_format": "APS MDA", "I0_source": names[k] if k is not None else "none"})
    i0_name = names[k] if k is not None else None
    set_member_attrs(raw, "I0", units=_i0_units(i0_name, fly=not spectral),
                     source=i0_name or "none: no I0 scaler in the file (1 everywhere)")
    for name, src in cal_sources.items():
        set_member_attrs(raw, name, calibration_source=src)
    set_time_units(raw)
    recorded = file_energy(m)
    if recorded is not None:
        set_energy(raw, recorded[0], recorded[1])
    apply_given_energy(raw, energy_keV, str(path))
    raw.validate(str(path))
    return raw


def _grid(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Per-point values (``(rows, cols)``, ``(npts,)`` for a line) cropped to the grid, float64, NaN -> 0."""
    a = np.asarray(a, dtype=np.float64)
    a = a.reshape((1,) * (2 - a.ndim) + a.shape)
    return np.nan_to_num(a[:rows, :cols])


def _to3(a: np.ndarray) -> np.ndarray:
    """Spectra ``(rows, cols, nbins)`` from a map, a line ``(npts, nbins)`` or one spectrum ``(nbins,)``."""
    return a.reshape((1,) * (3 - a.ndim) + a.shape)
