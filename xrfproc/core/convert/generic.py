"""Spectra given as an array (``.npy`` file, HDF5 dataset or numpy array) -> RawMap.

The spectra are ``(rows, cols, nbins)`` (a map), ``(npts, nbins)`` (a line, or a map when ``dims=(rows,
cols)`` is given) or ``(nbins,)`` (one spectrum, a 1 x 1 map); a line becomes a ``(1, npts)`` map.
The per-point arrays ``I0``, ``I1``, ``icr``, ``ocr``, ``acquisition_time``, ``mot1``, ``mot2`` may be
given as arrays, ``.npy`` paths or HDF5 dataset paths of the same file (``"h5:entry/i0"``); each must
have ``rows * cols`` values (any shape of that size is reshaped to the grid), or be a scalar.
Missing ones default to 1 (I0, icr, ocr, time) and to the grid indices (motors).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ._sniff import head_bytes
from ...errors import InputError
from ..limits import check_size, nbytes
from ..rawmap import RawChannel, RawMap
from .provenance import apply_given_energy, set_calibration_source

log = logging.getLogger(__name__)

KIND = "npy"
_PER_POINT = ("I0", "I1", "icr", "ocr", "acquisition_time", "mot1", "mot2")


def sniff(path: str | Path) -> bool:
    """True for a ``.npy`` file (numpy magic) holding a numeric array of rank 1 to 3."""
    if head_bytes(path, 6) != b"\x93NUMPY":
        return False
    try:
        arr = np.load(Path(path), mmap_mode="r", allow_pickle=False)
        return arr.dtype.kind in "uif" and 1 <= arr.ndim <= 3
    except Exception:
        return False


def _load(value: Any, what: str, h5file: Path | None, where: str) -> np.ndarray:
    """An array from an ndarray, a list, a ``.npy`` path or ``h5:<dataset>`` of ``h5file``."""
    if isinstance(value, (str, Path)):
        s = str(value)
        if s.startswith("h5:"):
            if h5file is None:
                raise InputError(f"{what}={s!r}: 'h5:' paths need the spectra in an HDF5 file", path=where)
            return _h5_dataset(h5file, s[3:])
        p = Path(s)
        if not p.is_file():
            raise InputError(f"{what}: file not found", path=p)
        return _load_npy(p, what)
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{what}: not a numeric array ({exc})", path=where) from None
    return arr


def _load_npy(p: Path, what: str) -> np.ndarray:
    """A ``.npy`` file, its declared shape checked against the file size and the memory limit first."""
    try:
        with open(p, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
            offset = fh.tell()
    except (OSError, ValueError, SyntaxError, TypeError) as exc:
        raise InputError(f"{what}: not a readable .npy file ({exc})", path=p) from None
    if dtype.hasobject:
        raise InputError(f"{what}: .npy file of Python objects refused (numbers expected)", path=p)
    size = nbytes(shape, dtype)
    if size > p.stat().st_size - offset:
        check_size(shape, dtype, what, path=p)
        raise InputError(f"{what}: the .npy header declares shape {shape} ({size} bytes) but the file holds "
                         f"{p.stat().st_size - offset} bytes of data (truncated)", path=p)
    check_size(shape, dtype, what, path=p)
    try:
        return np.load(p, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{what}: not a readable .npy file ({exc})", path=p) from None


def _h5_dataset(path: Path, dataset: str) -> np.ndarray:
    from ...store import open_read
    from ...store.raw import read_dataset

    with open_read(path) as f:
        try:
            ds = f.get(dataset)
        except (KeyError, OSError, RuntimeError, ValueError):
            ds = None
        if ds is None or not hasattr(ds, "dtype") or not hasattr(ds, "shape"):
            raise InputError("no such dataset", path=path, dataset=dataset)
        if ds.dtype.kind not in "uif":
            raise InputError(f"expected a numeric dataset, found dtype {ds.dtype}", path=path, dataset=dataset)
        return read_dataset(ds, path, dataset)


def read(source: str | Path | np.ndarray, *, dataset: str | None = None, dims: Sequence[int] | None = None,
         calibration: Sequence[float] | None = None, energy_keV: float | None = None,
         mot1_name: str = "mot1", mot2_name: str = "mot2", cmd: str = "", **arrays: Any) -> RawMap:
    """Build a RawMap from a spectra array and optional per-point arrays.

    Parameters
    ----------
    source : path or ndarray
        ``.npy`` file, HDF5 file (then ``dataset=`` is required) or the spectra array itself.
    dataset : str, optional
        Path of the spectra dataset inside an HDF5 ``source``.
    dims : (rows, cols), optional
        Grid to reshape ``(npts, nbins)`` spectra to.
    calibration : (zero, gain, quad), optional
        Energy calibration in keV.
    **arrays
        ``I0``, ``I1``, ``icr``, ``ocr``, ``acquisition_time``, ``mot1``, ``mot2``: see module docstring.

    Raises
    ------
    InputError
        Unreadable files, a missing dataset, non-numeric data or shapes that do not fit the grid.
    """
    unknown = set(arrays) - set(_PER_POINT)
    if unknown:
        raise InputError(f"unknown option(s) {sorted(unknown)}; per-point arrays are {', '.join(_PER_POINT)}")
    h5file: Path | None = None
    if isinstance(source, np.ndarray):
        spectra, where, sources = source, "<array>", []
    else:
        path = Path(source)
        where, sources = str(path), [str(path)]
        if not path.is_file():
            raise InputError("file not found", path=path)
        with open(path, "rb") as fh:
            magic = fh.read(8)
        if magic.startswith(b"\x93NUMPY"):
            spectra = _load_npy(path, "spectra")
        elif magic == b"\x89HDF\r\n\x1a\n":
            if not dataset:
                raise InputError("an HDF5 source needs dataset='path/to/spectra'", path=path)
            h5file = path
            spectra = _h5_dataset(path, dataset)
            where = f"{path}:{dataset}"
        else:
            raise InputError("neither a .npy nor an HDF5 file", path=path)
    spectra = np.asarray(spectra)
    if spectra.dtype.kind not in "uif":
        raise InputError(f"spectra must be numeric, found dtype {spectra.dtype}", path=where)
    if spectra.size == 0:
        raise InputError(f"empty spectra array, shape {spectra.shape}", path=where)
    if spectra.ndim == 1:
        spectra = spectra.reshape(1, 1, -1)
    elif spectra.ndim == 2:
        if dims is not None:
            rows, cols = (int(d) for d in dims)
            if rows * cols != spectra.shape[0]:
                raise InputError(f"dims={tuple(dims)} needs {rows * cols} spectra, found {spectra.shape[0]}",
                                 path=where)
            spectra = spectra.reshape(rows, cols, -1)
        else:
            spectra = spectra.reshape(1, spectra.shape[0], -1)
    elif spectra.ndim != 3:
        raise InputError(f"spectra must be (rows, cols, nbins), (npts, nbins) or (nbins,); found shape "
                         f"{spectra.shape}", path=where)
    elif dims is not None and tuple(dims) != spectra.shape[:2]:
        raise InputError(f"dims={tuple(dims)} but the spectra grid is {spectra.shape[:2]}", path=where)
    grid = spectra.shape[:2]
    if spectra.shape[-1] == 0 or 0 in grid:
        raise InputError(f"empty spectra array, shape {spectra.shape}", path=where)
    if spectra.dtype.kind == "f" and np.isfinite(spectra).all() and np.all(np.abs(spectra) < 2.0**62) \
            and np.all(np.mod(spectra, 1) == 0):
        spectra = spectra.astype(np.int64)
    npts = grid[0] * grid[1]
    vals: dict[str, np.ndarray | None] = {}
    for key in _PER_POINT:
        v = arrays.get(key)
        if v is None:
            vals[key] = None
            continue
        a = np.asarray(_load(v, key, h5file, where), dtype=np.float64)
        if a.ndim == 0:
            a = np.full(grid, float(a))
        elif a.size != npts:
            raise InputError(f"{key} has shape {a.shape} ({a.size} values) but the spectra grid {grid} has "
                             f"{npts} points", path=where)
        vals[key] = a.reshape(grid)
    ones = np.ones(grid)
    cal = None
    if calibration is not None:
        c = [float(x) for x in calibration]
        if not 2 <= len(c) <= 3:
            raise InputError(f"calibration must be (zero, gain[, quad]) in keV, found {calibration!r}", path=where)
        cal = (c[0], c[1], c[2] if len(c) == 3 else 0.0)
    ch = RawChannel(spectra, vals["icr"] if vals["icr"] is not None else ones.copy(),
                    vals["ocr"] if vals["ocr"] is not None else ones.copy(), cal)
    raw = RawMap(channels={"channel00": ch},
                 I0=vals["I0"] if vals["I0"] is not None else ones.copy(),
                 acquisition_time=vals["acquisition_time"] if vals["acquisition_time"] is not None else ones.copy(),
                 mot1=vals["mot1"] if vals["mot1"] is not None else np.broadcast_to(np.arange(grid[0], dtype=float)[:, None], grid).copy(),
                 mot2=vals["mot2"] if vals["mot2"] is not None else np.broadcast_to(np.arange(grid[1], dtype=float), grid).copy(),
                 I1=vals["I1"], cmd=cmd or f"array {where}", mot1_name=mot1_name, mot2_name=mot2_name,
                 sources=sources, attrs={"source_format": "array"})
    set_calibration_source(raw, "given (calibration=)")
    apply_given_energy(raw, energy_keV, where)
    raw.validate(where)
    return raw
