"""Files PyMca's own readers open (SPEC, plain column files, EDF) -> RawMap.

Reading goes through :mod:`xrfproc.core.pymca_bridge` (the only module importing PyMca).

SPEC files
    One scan (``scan="1.1"`` or a number; default the first scan with MCA spectra). The MCA spectra
    (``@A`` lines, several per point for several detectors) are the spectra; ``elements="sum"``
    sums the detectors per point into ``channel00``, ``"separate"`` keeps ``channel00..``. The grid
    comes from ``dims=(rows, cols)``, else from a ``mesh m1 s e n1 m2 s e n2 t`` command
    (``rows = n2+1``, ``cols = n1+1``: the first mesh motor is the fast one), else it is a line
    ``(1, npts)``. Counter columns named by ``i0=``, ``i1=``, ``icr=``, ``ocr=``, ``time=``,
    ``mot1=``, ``mot2=`` (defaults: ``I0``/``Monitor``, none, ``icr``, ``ocr``, ``Seconds``, the mesh
    motors) give the per-point arrays; absent ones default to 1 (motors: indices).
    ``#@CALIB`` gives the calibration.
Plain column files (PyMca's ``XRFSpectrum.mca``: ``#`` comments and one column of counts)
    A single spectrum (the last column), a 1 x 1 map.
EDF files
    Each image is one row of spectra ``(cols, nbins)``; a single 1-D image is one spectrum.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from ..rawmap import RawChannel, RawMap
from .provenance import set_calibration_source

log = logging.getLogger(__name__)

KIND = "pymca"
_NUM = re.compile(r"^[\s+\-.0-9eE]+$")


def _kind_of(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(65536)
    if head.lstrip().startswith(b"{") and (b"HeaderID" in head[:4096] or b"ByteOrder" in head[:4096]):
        return "edf"
    try:
        text = head.decode("ascii")
    except UnicodeDecodeError:
        return None
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return None
    if any(ln.startswith("#S ") for ln in lines) or lines[0].startswith(("#F ", "#E ")):
        return "spec"
    body = [ln for ln in lines[:-1] if not ln.startswith("#")]  # the last line may be cut
    if len(body) >= 16 and all(_NUM.match(ln) for ln in body):
        return "columns"
    return None


def sniff(path: str | Path) -> bool:
    """True for a SPEC file, a plain numeric column file or an EDF file."""
    try:
        p = Path(path)
        return p.is_file() and _kind_of(p) is not None
    except Exception:
        return False


def _column(labels: list[str], data: np.ndarray, names: Sequence[str]) -> np.ndarray | None:
    low = [lb.lower() for lb in labels]
    for n in names:
        if n.lower() in low:
            return data[low.index(n.lower())]
    return None


def _grid_from_command(cmd: str, npts: int) -> tuple[tuple[int, int], tuple[str, str] | None]:
    tok = cmd.split()
    if len(tok) >= 9 and "mesh" in tok[0].lower():
        try:
            cols, rows = int(tok[4]) + 1, int(tok[8]) + 1
        except ValueError:
            return (1, npts), None
        if rows * cols == npts:
            return (rows, cols), (tok[5], tok[1])
        log.warning("mesh command %r announces %d x %d points, the scan has %d: read as a line", cmd, rows, cols, npts)
    return (1, npts), None


def _read_spec(path: Path, scan: str | int | None, dims: Sequence[int] | None, elements: str,
               opts: dict[str, Any], columns: bool = False) -> RawMap:
    from .. import pymca_bridge

    try:
        scans = pymca_bridge.read_spec_scans(path)
    except (OSError, ValueError, TypeError, IndexError) as exc:
        raise InputError(f"PyMca cannot read this SPEC file ({exc})", path=path) from None
    if not scans:
        raise InputError("no scan in this SPEC file", path=path)
    if columns:  # PyMca shows a column file as a data scan and as a one-MCA scan: one spectrum
        s0 = scans[0]
        if s0.data.size == 0:
            raise InputError("no numeric column found", path=path)
        y = s0.data[-1]
        counts = y.astype(np.int64) if np.all(np.mod(y, 1) == 0) else y
        ones = np.ones((1, 1))
        return RawMap(channels={"channel00": RawChannel(counts.reshape(1, 1, -1), ones.copy(), ones.copy())},
                      I0=ones.copy(), acquisition_time=ones.copy(), mot1=np.zeros((1, 1)), mot2=np.zeros((1, 1)),
                      cmd=f"columns {path.name}", sources=[str(path)], attrs={"source_format": "column file (PyMca)"})
    if scan is not None:
        key = str(scan) if "." in str(scan) else f"{scan}.1"
        sel = next((s for s in scans if s.key == key), None)
        if sel is None:
            raise InputError(f"no scan {key}; scans: {', '.join(s.key for s in scans)}", path=path)
    else:
        sel = next((s for s in scans if s.mca.size), scans[0])
    data, labels = sel.data, sel.labels
    if sel.mca.size:
        npts = data.shape[1] if data.size else sel.mca.shape[0]
        if npts == 0 or sel.mca.shape[0] % npts:
            raise InputError(f"scan {sel.key}: {sel.mca.shape[0]} MCA spectra for {npts} points", path=path)
        ndet = sel.mca.shape[0] // npts
        spectra = sel.mca.reshape(npts, ndet, -1)
    else:
        raise InputError(f"scan {sel.key} holds no MCA spectra (@A lines)", path=path)
    if dims is not None:
        rows, cols = (int(d) for d in dims)
        if rows * cols != npts:
            raise InputError(f"dims={tuple(dims)} needs {rows * cols} points, scan {sel.key} has {npts}", path=path)
        motors = None
    else:
        (rows, cols), motors = _grid_from_command(sel.command, npts)
    grid = (rows, cols)

    def per_point(option: str, defaults: Sequence[str], fill: Any) -> np.ndarray:
        name = opts.get(option)
        names = [name] if name else list(defaults)
        col = _column(labels, data, names) if data.size else None
        if col is None:
            if name:
                raise InputError(f"scan {sel.key} has no column {name!r}; columns: {', '.join(labels)}", path=path)
            return np.asarray(fill, dtype=np.float64)
        return np.asarray(col, dtype=np.float64).reshape(grid)

    chans = {}
    groups = [list(range(ndet))] if elements == "sum" else [[j] for j in range(ndet)]
    counts = spectra.astype(np.int64) if np.all(np.mod(spectra, 1) == 0) else spectra
    for ci, idx in enumerate(groups):
        sp = counts[:, idx].sum(axis=1).reshape(rows, cols, -1)
        icr = per_point("icr", ["icr"], np.ones(grid))
        ocr = per_point("ocr", ["ocr"], np.ones(grid))
        chans[f"channel{ci:02d}"] = RawChannel(sp, icr, ocr, sel.calibration)
    m1 = opts.get("mot1") or (motors[0] if motors else None)
    m2 = opts.get("mot2") or (motors[1] if motors else None)
    mot1 = per_point("mot1", [m1] if m1 else [], np.broadcast_to(np.arange(rows, dtype=float)[:, None], grid))
    mot2 = per_point("mot2", [m2] if m2 else [], np.broadcast_to(np.arange(cols, dtype=float), grid))
    i1 = per_point("i1", [], None) if opts.get("i1") else None
    raw = RawMap(channels=chans, I0=per_point("i0", ["I0", "Monitor", "mon"], np.ones(grid)),
                 acquisition_time=per_point("time", ["Seconds", "sec", "time"], np.ones(grid)),
                 mot1=np.array(mot1, dtype=float), mot2=np.array(mot2, dtype=float), I1=i1,
                 cmd=sel.command, mot1_name=m1 or "row", mot2_name=m2 or "column", sources=[str(path)],
                 attrs={"source_format": "SPEC (PyMca)", "scan": sel.key})
    set_calibration_source(raw, f"SPEC #@CALIB of scan {sel.key} (PyMca)")
    return raw


def _read_edf(path: Path) -> RawMap:
    from .. import pymca_bridge

    try:
        images = pymca_bridge.read_edf(path)
    except (OSError, ValueError, TypeError, KeyError, IndexError) as exc:
        raise InputError(f"PyMca cannot read this EDF file ({exc})", path=path) from None
    if not images:
        raise InputError("no image in this EDF file", path=path)
    arrays = [np.asarray(d) for _, d in images]
    shapes = {a.shape for a in arrays}
    if len(shapes) > 1:
        raise InputError(f"EDF images of different shapes {sorted(shapes)}", path=path)
    if arrays[0].ndim == 1:
        spectra = np.stack(arrays)[None]  # one row of len(images) spectra
        if len(arrays) == 1:
            spectra = spectra.reshape(1, 1, -1)
    elif arrays[0].ndim == 2:
        spectra = np.stack(arrays)
    else:
        raise InputError(f"EDF image of rank {arrays[0].ndim}; expected rows of spectra (cols, nbins)", path=path)
    if spectra.dtype.kind not in "uif":
        raise InputError(f"EDF data of type {spectra.dtype} is not numeric", path=path)
    grid = spectra.shape[:2]
    ones = np.ones(grid)
    return RawMap(channels={"channel00": RawChannel(spectra, ones.copy(), ones.copy())}, I0=ones.copy(),
                  acquisition_time=ones.copy(),
                  mot1=np.broadcast_to(np.arange(grid[0], dtype=float)[:, None], grid).copy(),
                  mot2=np.broadcast_to(np.arange(grid[1], dtype=float), grid).copy(),
                  cmd=f"EDF {path.name}", mot1_name="row", mot2_name="column", sources=[str(path)],
                  attrs={"source_format": "EDF (PyMca)"})


def read(source: str | Path, *, scan: str | int | None = None, dims: Sequence[int] | None = None,
         elements: str = "sum", i0: str | None = None, i1: str | None = None, icr: str | None = None,
         ocr: str | None = None, time: str | None = None, mot1: str | None = None, mot2: str | None = None,
         **_ignored: Any) -> RawMap:
    """Read a SPEC, plain column or EDF file with PyMca's readers (see module docstring).

    Raises
    ------
    InputError
        Unrecognised or unreadable file, unknown scan or column, grid that does not fit.
    """
    path = Path(source)
    if not path.is_file():
        raise InputError("file not found", path=path)
    if elements not in ("sum", "separate"):
        raise InputError(f"elements must be 'sum' or 'separate', not {elements!r}", path=path)
    kind = _kind_of(path)
    if kind is None:
        raise InputError("not a SPEC, column or EDF file PyMca can read", path=path)
    if kind == "edf":
        raw = _read_edf(path)
    else:
        opts = {"i0": i0, "i1": i1, "icr": icr, "ocr": ocr, "time": time, "mot1": mot1, "mot2": mot2}
        raw = _read_spec(path, scan, dims, elements, opts, columns=kind == "columns")
    raw.validate(str(path))
    return raw
