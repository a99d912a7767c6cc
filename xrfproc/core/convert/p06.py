"""PETRA III P06 (NeXus) reader: one directory ``scan_NNNNN/`` per scan, one folder per device.

Layout read (see ``shared/reference/beamline-formats.md``):

- ``xspress3_01/*.nxs``: ``entry/instrument/xspress3/channelNN/histogram`` ``(points, bins)``
  per detector element, with ``scaler/allEvent`` (ICR) and ``scaler/allGood`` (OCR) - any letter
  case - or ``scaler/deadtimeticks`` and ``totalticks`` (then ICR = totalticks and
  OCR = totalticks - deadtimeticks, so ICR/OCR is the dead-time factor);
- ``adc_01/*.nxs`` (older ``adc01``): ``entry/data/value1`` (I0), ``value2`` (I1),
  ``exposuretime`` (s), any letter case;
- ``pilctriggergenerator_0N/*.nxs``: ``entry/data/encoder_N`` with attribute ``Name`` (the motor)
  and ``entry/data/counter`` (the trigger number of each entry: entries with counter <= 0 and
  repeated counter values are not valid points);
- the context file ``scan_NNNNN.nxs`` (inside the directory or next to it): the command in the
  attribute ``scan/program_name@scan_command``, ``scan/data/energy`` (eV), ``scan/sample/name``;
- ``scan_logbook.txt`` (in the scan directory or its parent): virtual motors as linear
  combinations of encoder motors, one per line, ``scanx = 0.5*samx + 0.5*samz - 0.1`` (``:`` also
  separates); parsed term by term, never evaluated.

Files split over ``*_00001.nxs``, ``*_00002.nxs``, ... are concatenated in name order.
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

KIND = "p06"
#: read() takes a list of scan directories itself (stitched, then sorted once)
READS_LISTS = True

DEFAULT_DEVICE = "xspress3_01"
_XSP = "entry/instrument/xspress3"


def sniff(path: str | Path) -> bool:
    """True for a directory holding an ``xspress3*`` device folder of ``.nxs`` files."""
    try:
        p = Path(path)
        return p.is_dir() and any(d.is_dir() and d.name.lower().startswith("xspress3") and any(d.glob("*.nxs"))
                                  for d in p.iterdir())
    except Exception:
        return False


# ------------------------------------------------------------------------------ small helpers
def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*.nxs") if "master" not in p.name.lower())


def _find(group: h5py.Group, *names: str) -> Any:
    """``group[name]`` for the first of ``names`` present, comparing without letter case; or None."""
    lower = {k.lower(): k for k in group}
    for n in names:
        if n in group:
            return group[n]
        if n.lower() in lower:
            return group[lower[n.lower()]]
    return None


def _device_dir(scan_dir: Path, *names: str) -> Path | None:
    for n in names:
        if (scan_dir / n).is_dir():
            return scan_dir / n
    return None


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf8", "replace")
    if isinstance(value, np.ndarray):
        return _text(value.reshape(-1)[0]) if value.size else ""
    return str(value)


def _concat_dataset(files: list[Path], key: str, names: Sequence[str], dtype: Any = np.float64) -> np.ndarray:
    """Concatenate ``<key>/<one of names>`` over split files; InputError naming file and dataset if missing."""
    parts = []
    for path in files:
        with h5py.File(path, "r") as f:
            grp = f.get(key)
            ds = _find(grp, *names) if isinstance(grp, h5py.Group) else None
            if not isinstance(ds, h5py.Dataset):
                present = ", ".join(sorted(grp)) if isinstance(grp, h5py.Group) else "(group missing)"
                raise InputError(f"missing dataset (one of {', '.join(names)}); {key}/ holds: {present}",
                                 path=path, dataset=f"{key}/{names[0]}")
            parts.append(np.asarray(ds[()], dtype=dtype))
    return np.concatenate(parts, axis=0)


# ------------------------------------------------------------------------------ scan command
def parse_command(cmd: str) -> dict[str, Any]:
    """Grid and motors of a P06 scan command.

    ``mesh fast s e n slow s e m t``: ``(m+1) x (n+1)`` points (intervals); continuous scans
    (``c*``): ``n`` columns (points). 1-D scans ``ascan m s e n t``: ``n+1`` points (``n`` for
    ``c*``).

    Returns
    -------
    dict
        ``dims``, ``fast``, ``slow`` (None for 1-D), ``fast_range`` and ``slow_range`` (start, stop),
        ``continuous``; empty when the command cannot be read.
    """
    tok = cmd.split()
    if len(tok) < 5:
        return {}
    continuous = tok[0].lower().startswith("c")
    try:
        n = int(float(tok[4]))
        cols = n if continuous else n + 1
        out: dict[str, Any] = {"fast": tok[1], "fast_range": (float(tok[2]), float(tok[3])),
                               "continuous": continuous, "slow": None, "dims": (cols,)}
        if len(tok) >= 9:
            rows = int(float(tok[8])) + 1
            out.update(slow=tok[5], slow_range=(float(tok[6]), float(tok[7])), dims=(rows, cols))
        return out
    except ValueError:
        return {}


_TERM = re.compile(r"\s*([+-]?)\s*(?:(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)\s*\*\s*([A-Za-z_]\w*)"
                   r"|([A-Za-z_]\w*)\s*\*\s*(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
                   r"|(\d+\.?\d*(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)|([A-Za-z_]\w*))\s*")


def parse_linear(expr: str) -> tuple[dict[str, float], float]:
    """Parse ``"0.5*samx + 0.5*samz - 0.1"`` into ``({"samx": 0.5, "samz": 0.5}, -0.1)`` (no eval).

    Raises
    ------
    ValueError
        For anything that is not a sum of ``number``, ``name``, ``number*name`` or ``name*number``.
    """
    coef: dict[str, float] = {}
    offset = 0.0
    pos = 0
    expr = expr.strip()
    if not expr:
        raise ValueError("empty expression")
    first = True
    while pos < len(expr):
        m = _TERM.match(expr, pos)
        if not m or m.end() == pos or (not first and not m.group(1)):
            raise ValueError(f"cannot read {expr[pos:]!r} as a linear term")
        sign = -1.0 if m.group(1) == "-" else 1.0
        if m.group(3):
            coef[m.group(3)] = coef.get(m.group(3), 0.0) + sign * float(m.group(2))
        elif m.group(4):
            coef[m.group(4)] = coef.get(m.group(4), 0.0) + sign * float(m.group(5))
        elif m.group(6):
            offset += sign * float(m.group(6))
        else:
            coef[m.group(7)] = coef.get(m.group(7), 0.0) + sign
        pos = m.end()
        first = False
    return coef, offset


def virtual_motor(logbook: Path, name: str) -> tuple[dict[str, float], float] | None:
    """The definition of virtual motor ``name`` in a ``scan_logbook.txt`` (last one wins), or None."""
    found = None
    pattern = re.compile(rf"^\s*{re.escape(name)}\s*[=:]\s*(.+?)\s*$")
    for lineno, line in enumerate(logbook.read_text(errors="replace").splitlines(), start=1):
        m = pattern.match(line)
        if m:
            try:
                found = parse_linear(m.group(1))
            except ValueError as exc:
                raise InputError(f"line {lineno}: virtual motor {name!r}: {exc}", path=logbook) from None
    return found


# ------------------------------------------------------------------------------ devices
def _encoders(scan_dir: Path) -> dict[str, tuple[np.ndarray, Path]]:
    """Valid encoder positions per motor name, from every ``pilctriggergenerator_*`` folder."""
    out: dict[str, tuple[np.ndarray, Path]] = {}
    for d in sorted(scan_dir.glob("pilctriggergenerator*")):
        files = _files(d)
        if not files:
            continue
        values: dict[str, list[np.ndarray]] = {}
        counters = []
        for path in files:
            with h5py.File(path, "r") as f:
                data = f.get("entry/data")
                if not isinstance(data, h5py.Group):
                    raise InputError("missing group", path=path, dataset="entry/data")
                cnt = _find(data, "counter")
                counters.append(None if cnt is None else np.asarray(cnt[()]).reshape(-1))
                for key in data:
                    if key.lower().startswith("encoder") and isinstance(data[key], h5py.Dataset):
                        label = _text(data[key].attrs.get("Name", data[key].attrs.get("name", key))).strip()
                        values.setdefault(label, []).append(np.asarray(data[key][()], dtype=np.float64).reshape(-1))
        keep = None
        if all(c is not None for c in counters):
            counter = np.concatenate(counters)  # type: ignore[arg-type]
            _, first = np.unique(counter, return_index=True)
            keep = np.sort(first[counter[first] > 0])
        for label, parts in values.items():
            arr = np.concatenate(parts)
            if keep is not None:
                if arr.size != counter.size:
                    raise InputError(f"encoder {label!r} has {arr.size} entries, counter {counter.size}",
                                     path=d, dataset="entry/data/counter")
                arr = arr[keep]
            out[label] = (arr, d)
    return out


def _element_key(entry: str) -> tuple[str, str]:
    device, _, element = entry.rpartition("/")
    return (device or DEFAULT_DEVICE), element


def _read_element(scan_dir: Path, entry: str) -> tuple[H5Points, np.ndarray, np.ndarray]:
    device, element = _element_key(entry)
    folder = scan_dir / device
    files = _files(folder) if folder.is_dir() else []
    if not files:
        present = sorted(p.name for p in scan_dir.iterdir() if p.is_dir())
        raise InputError(f"no .nxs files for detector {device!r}; folders present: {', '.join(present)}",
                         path=folder)
    parts: list[tuple[Path, str, tuple[int, ...], Any]] = []
    icr: list[np.ndarray] = []
    ocr: list[np.ndarray] = []
    for path in files:
        with h5py.File(path, "r") as f:
            xsp = f.get(_XSP)
            if not isinstance(xsp, h5py.Group):
                raise InputError("missing group", path=path, dataset=_XSP)
            ch = _find(xsp, element)
            if not isinstance(ch, h5py.Group):
                raise InputError(f"detector element {element!r} not found; {_XSP}/ holds: {', '.join(sorted(xsp))}",
                                 path=path, dataset=f"{_XSP}/{element}")
            hist = _find(ch, "histogram")
            if not isinstance(hist, h5py.Dataset):
                raise InputError("missing dataset", path=path, dataset=f"{ch.name}/histogram")
            hshape = tuple(hist.shape or ())
            if len(hshape) not in (1, 2):
                raise InputError(f"histogram must be (points, bins), found shape {hshape}", path=path,
                                 dataset=hist.name)
            hpts = 1 if len(hshape) == 1 else hshape[0]
            sc = _find(ch, "scaler")
            if not isinstance(sc, h5py.Group):
                raise InputError("missing group", path=path, dataset=f"{ch.name}/scaler")
            ev, good = _find(sc, "allEvent"), _find(sc, "allGood")
            if ev is not None and good is not None:
                i, o = np.asarray(ev[()], float).reshape(-1), np.asarray(good[()], float).reshape(-1)
            else:
                dead, total = _find(sc, "deadtimeticks"), _find(sc, "totalticks")
                if dead is None or total is None:
                    raise InputError(f"no allEvent/allGood nor deadtimeticks/totalticks; scaler/ holds: "
                                     f"{', '.join(sorted(sc))}", path=path, dataset=sc.name)
                i = np.asarray(total[()], float).reshape(-1)
                o = i - np.asarray(dead[()], float).reshape(-1)
            for name, arr in (("ICR", i), ("OCR", o)):
                if arr.size != hpts:
                    raise InputError(f"{name} has {arr.size} values, the histogram {hpts} points",
                                     path=path, dataset=sc.name)
            parts.append((path, hist.name, hshape, hist.dtype)), icr.append(i), ocr.append(o)
    # the histograms stay on disk (read block by block when written)
    return H5Points(parts), np.concatenate(icr), np.concatenate(ocr)


def _context(scan_dir: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for path in (scan_dir / f"{scan_dir.name}.nxs", scan_dir.parent / f"{scan_dir.name}.nxs"):
        if not path.is_file():
            continue
        with h5py.File(path, "r") as f:
            prog = f.get("scan/program_name")
            if prog is not None and "scan_command" in prog.attrs:
                out["cmd"] = _text(prog.attrs["scan_command"])
            for key, name in (("scan/data/energy", "energy"), ("scan/sample/name", "sample"),
                              ("scan/instrument/name", "instrument")):
                if isinstance(f.get(key), h5py.Dataset):
                    v = f[key][()]
                    out[name] = float(np.asarray(v).reshape(-1)[0]) if name == "energy" else _text(v)
        out["context"] = path
        break
    return out


def _take(arr: np.ndarray, n: int, what: str, where: Path) -> np.ndarray:
    if arr.size < n:
        raise InputError(f"{what} has {arr.size} points, the spectra {n}", path=where)
    if arr.size > n:
        log.info("%s: %s has %d points, keeping the first %d (those with spectra)", where, what, arr.size, n)
    return arr[:n]


def _positions(scan_dir: Path, name: str, npts: int, enc: dict[str, tuple[np.ndarray, Path]],
               fallback: np.ndarray | None) -> tuple[np.ndarray, str]:
    if name in enc:
        arr, d = enc[name]
        return _take(arr, npts, f"encoder {name!r}", d), "encoder"
    for logbook in (scan_dir / "scan_logbook.txt", scan_dir.parent / "scan_logbook.txt"):
        if logbook.is_file():
            definition = virtual_motor(logbook, name)
            if definition is not None:
                coef, offset = definition
                missing = [m for m in coef if m not in enc]
                if missing:
                    raise InputError(f"virtual motor {name!r} uses {', '.join(missing)}, not among the encoders "
                                     f"({', '.join(sorted(enc)) or 'none'})", path=logbook)
                total = np.full(npts, offset)
                for m, c in coef.items():
                    total = total + c * _take(enc[m][0], npts, f"encoder {m!r}", enc[m][1])
                return total, "logbook"
    if fallback is None:
        raise InputError(f"motor {name!r}: no encoder (encoders: {', '.join(sorted(enc)) or 'none'}) and no "
                         "definition in scan_logbook.txt", path=scan_dir)
    log.warning("%s: motor %r not recorded; using the positions set by the scan command", scan_dir, name)
    return fallback, "command"


# ------------------------------------------------------------------------------ the reader
def read_scan(scan_dir: str | Path, *, dims: Sequence[int] | None = None, mot1: str | None = None,
              mot2: str | None = None, detectors: Sequence[Any] | None = None, i0: str = "value1",
              i1: str | None = "value2", time: str = "exposuretime", time_triggered: bool = False) -> RawMap:
    """Read one P06 scan directory (no sorting); see :func:`read` for the options."""
    scan_dir = Path(scan_dir)
    if not scan_dir.is_dir():
        raise InputError("scan directory not found", path=scan_dir)
    groups = [[d] if isinstance(d, str) else [str(x) for x in d]
              for d in ([detectors] if isinstance(detectors, str) else (detectors or ["channel00"]))]
    channels: dict[str, RawChannel] = {}
    npts = None
    for c, group in enumerate(groups):
        elements: list[H5Points] = []
        icr = ocr = None
        for entry in group:
            sp, i, o = _read_element(scan_dir, entry)
            if npts is None:
                npts = sp.npts
            if sp.npts != npts or (elements and sp.nbins != elements[0].nbins):
                raise InputError(f"detector element {entry!r} has spectra {(sp.npts, sp.nbins)}, expected {npts} "
                                 f"points like the first element", path=scan_dir / _element_key(entry)[0])
            elements.append(sp)
            icr = i if icr is None else icr + i
            ocr = o if ocr is None else ocr + o
        channels[f"channel{c:02d}"] = RawChannel(elements[0] if len(elements) == 1 else SumPoints(elements),
                                                 icr, ocr)
    assert npts is not None
    if npts == 0:
        raise InputError("empty scan: the detector recorded no point", path=scan_dir / DEFAULT_DEVICE)

    adc = _device_dir(scan_dir, "adc_01", "adc01", "ADC_01")
    if adc is None or not _files(adc):
        raise InputError("no adc_01 (or adc01) folder with .nxs files: I0 and exposure time missing", path=scan_dir)
    adc_files = _files(adc)
    I0 = _take(_concat_dataset(adc_files, "entry/data", [i0]), npts, f"I0 ({i0})", adc)
    t = _take(_concat_dataset(adc_files, "entry/data", [time, "exposure_time"]), npts, "exposure time", adc)
    I1 = None
    if i1:
        try:
            I1 = _take(_concat_dataset(adc_files, "entry/data", [i1]), npts, f"I1 ({i1})", adc)
        except InputError:
            log.info("%s: no I1 counter %r", adc, i1)

    ctx = _context(scan_dir)
    cmd = ctx.get("cmd", "")
    parsed = parse_command(cmd)
    mot2_name = mot2 or parsed.get("fast") or "mot2"
    mot1_name = mot1 or parsed.get("slow") or "mot1"
    grid = tuple(int(d) for d in dims) if dims is not None else parsed.get("dims")
    if grid is None and not time_triggered:
        raise InputError(f"cannot tell the scan grid from the command {cmd!r}; give dims=(rows, cols) or "
                         "time_triggered=True", path=ctx.get("context", scan_dir), dataset="scan/program_name@scan_command")
    expected = npts if grid is None else int(np.prod(grid))
    if time_triggered:
        grid = (npts,)
    elif npts > expected:
        raise InputError(f"{npts} points recorded but the grid {grid} has {expected}; give dims= or read it "
                         "as time-triggered (time_triggered=True)", path=scan_dir / DEFAULT_DEVICE)

    enc = _encoders(scan_dir)
    fb1 = fb2 = None
    if parsed and not time_triggered and grid is not None and len(grid) == 2 and "slow_range" in parsed:
        rows, cols = grid
        fb1 = np.repeat(np.linspace(*parsed["slow_range"], rows), cols)[:npts]
        fb2 = np.tile(np.linspace(*parsed["fast_range"], cols), rows)[:npts]
    elif parsed and not time_triggered and grid is not None and len(grid) == 1:
        fb2 = np.linspace(*parsed["fast_range"], grid[0])[:npts]
        fb1 = np.zeros(npts)
    if time_triggered:
        fb1 = fb2 = np.arange(npts, dtype=float)
    # a motor the user names explicitly must be recorded; the command's motors may fall back
    m2, how2 = _positions(scan_dir, mot2_name, npts, enc, None if mot2 else fb2)
    if parsed.get("slow") is None and mot1 is None and fb1 is not None:
        m1, how1 = fb1, "none"
    else:
        m1, how1 = _positions(scan_dir, mot1_name, npts, enc, None if mot1 else fb1)

    attrs: dict[str, Any] = {"positions": f"{mot1_name}: {how1}, {mot2_name}: {how2}",
                             "time_triggered": bool(time_triggered)}
    if "sample" in ctx:
        attrs["sample"] = ctx["sample"]
    missing = expected - npts if not time_triggered else 0
    if missing:
        log.warning("%s: scan cut short: %d of %d points recorded; padding with NaN", scan_dir, npts, expected)
        attrs["missing_points"] = missing

    def shape(a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        if missing:
            a = a.astype(np.float32 if a.ndim == 2 else np.float64, copy=False)
            a = np.concatenate([a, np.full((missing,) + a.shape[1:], np.nan, dtype=a.dtype)])
        return a.reshape(tuple(grid) + a.shape[1:])  # type: ignore[arg-type]

    chans = {k: RawChannel(LazySpectra.grid(ch.spectra, tuple(grid), missing),  # type: ignore[arg-type]
                           shape(ch.icr), shape(ch.ocr)) for k, ch in channels.items()}
    raw = RawMap(channels=chans, I0=shape(I0), acquisition_time=shape(t), mot1=shape(m1), mot2=shape(m2),
                 I1=None if I1 is None else shape(I1), cmd=cmd, mot1_name=mot1_name, mot2_name=mot2_name,
                 sources=[str(scan_dir)], attrs=attrs)
    _record_units(raw, i0, i1 if I1 is not None else None, ctx)
    return raw


def _record_units(raw: RawMap, i0: str, i1: str | None, ctx: dict[str, Any]) -> None:
    """Energy (``scan/data/energy``, eV above 200) with its source; I0/I1 units (ADC counts per point); dwell."""
    energy = ctx.get("energy")
    if energy is not None and plausible_keV(to_keV(energy)):
        context = Path(ctx["context"]).name if "context" in ctx else "the context file"
        set_energy(raw, to_keV(energy), f"P06 {context} scan/data/energy")
    set_member_attrs(raw, "I0", units="counts", source=f"adc_01 entry/data/{i0}")
    if i1 is not None:
        set_member_attrs(raw, "I1", units="counts", source=f"adc_01 entry/data/{i1}")
    set_time_units(raw)


def read(source: str | Path | Sequence[str | Path], *, dims: Sequence[int] | None = None, mot1: str | None = None,
         mot2: str | None = None, detectors: Sequence[Any] | None = None, i0: str = "value1",
         i1: str | None = "value2", time: str = "exposuretime", time_triggered: bool = False,
         sort: bool | None = None, atol: float = 1e-4) -> RawMap:
    """Read P06 scan directory(ies) into one map.

    Parameters
    ----------
    source : path or list of paths
        ``.../scan_NNNNN`` directory; several are stitched (:func:`~.stitch.merge`).
    dims : (rows, cols) or (points,), optional
        Grid; default from the scan command (intervals for step scans, points for ``c*`` scans).
        A scan cut short is padded with NaN (``attrs["missing_points"]``).
    mot1, mot2 : str, optional
        Slow and fast motor (default: the command's second and first motor). Positions come from
        the encoder whose ``Name`` matches, else a virtual motor of ``scan_logbook.txt``, else the
        positions the command sets (with a warning).
    detectors : list, optional
        One entry per output channel; an entry is ``"channel00"`` (of ``xspress3_01``),
        ``"xspress3_02/channel00"``, or a list of them summed. Default ``["channel00"]``.
    i0, i1, time : str
        Datasets of ``adc_01/entry/data`` (letter case ignored); ``i1=None`` or a missing I1 gives no I1.
    time_triggered : bool
        Keep the points as a 1-D line in acquisition order, with their encoder positions
        (for time-triggered scans that do not fill a grid).
    sort : bool, optional
        Put the points in motor order (:func:`~.sorting.sort_points`) after stitching; default
        True, except for time-triggered scans (better sorted after fitting, at normalisation).
    atol : float
        Tolerance (motor units) for stitching.
    """
    if sort is None:
        sort = not time_triggered
    options = dict(dims=dims, mot1=mot1, mot2=mot2, detectors=detectors, i0=i0, i1=i1, time=time,
                   time_triggered=time_triggered)
    dirs = [Path(s) for s in source] if isinstance(source, (list, tuple)) else [Path(source)]
    if not dirs:
        raise InputError("empty list of scan directories")
    maps = [read_scan(d, **options) for d in dirs]  # type: ignore[arg-type]
    raw = merge(maps, atol=atol) if len(maps) > 1 else maps[0]
    return sort_points(raw) if sort else raw


__all__ = ["KIND", "sniff", "read", "read_scan", "parse_command", "parse_linear", "virtual_motor"]
