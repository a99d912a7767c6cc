"""Low-level reader of APS MDA files (EPICS synApps ``saveData``, versions 1.2-1.4).

The format is XDR (big-endian, 4-byte aligned); see ``reference/formats/mda.md``. This module only
parses the file into a tree of :class:`MdaScan` records and turns one scan level into N-D arrays;
the mapping to the xrfproc layout lives in :mod:`xrfproc.core.convert.mda`.

Axis order of the arrays from :func:`level_arrays`: the outer levels first (outermost = slow axis),
then the points of the level asked for. Points that were never acquired (``cpt < npts``, missing
child records) are NaN for positioners and detectors.
"""
from __future__ import annotations

import logging
import mmap
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .limits import check_size

log = logging.getLogger(__name__)

#: MDA versions accepted (round(100 * version))
VERSIONS = (120, 130, 140)
#: longest string accepted (mda-load guards against anything above 4095)
MAX_STRING = 4095
#: extra-PV type codes and the dtype of their values
_EXTRA_TYPES = {29: ">i4", 30: ">f4", 32: ">i4", 33: ">i4", 34: ">f8"}


@dataclass
class MdaPositioner:
    """One positioner (motor) of a scan level; ``data`` has ``npts`` float64 readbacks."""

    number: int
    name: str
    desc: str
    step_mode: str
    unit: str
    readback_name: str
    readback_desc: str
    readback_unit: str
    data: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0))


@dataclass
class MdaDetector:
    """One detector of a scan level (slot ``number``: 0 = D01); ``data`` has ``npts`` float32 values."""

    number: int
    name: str
    desc: str
    unit: str
    data: np.ndarray = field(repr=False, default_factory=lambda: np.zeros(0, np.float32))


@dataclass
class MdaScan:
    """One scan record; ``children`` holds the rank-1-lower records (None where never written)."""

    rank: int
    npts: int
    cpt: int
    name: str
    time: str
    positioners: list[MdaPositioner]
    detectors: list[MdaDetector]
    triggers: list[tuple[int, str, float]]
    offset: int
    children: list[MdaScan | None] = field(default_factory=list, repr=False)


@dataclass
class MdaFile:
    """A parsed MDA file.

    Attributes
    ----------
    dims : list of int
        Requested points per level from the header, outermost first (may be -1 in crashed files).
    scan : MdaScan
        The outermost scan record.
    extra : list of (name, desc, unit, value)
        The extra-PV section (names may repeat); ``value`` is a str, or a 1-D numpy array.
    """

    path: str
    version: float
    scan_number: int
    rank: int
    dims: list[int]
    regular: bool
    scan: MdaScan
    extra: list[tuple[str, str, str, Any]]

    def extra_dict(self) -> dict[str, Any]:
        """Extra PVs by name (the first occurrence wins); arrays of one value become scalars."""
        out: dict[str, Any] = {}
        for name, _desc, _unit, value in self.extra:
            if name in out:
                continue
            if isinstance(value, np.ndarray) and value.size == 1:
                value = value.item()
            out[name] = value
        return out

    def levels(self) -> list[MdaScan]:
        """The first written record of every level, outermost first (for the names and units)."""
        out = []
        s: MdaScan | None = self.scan
        while s is not None:
            out.append(s)
            s = next((c for c in s.children if c is not None), None)
        return out


class _Cursor:
    """Bounds-checked big-endian reads from a byte buffer; errors name the file and offset."""

    def __init__(self, buf: Any, path: str):
        self.buf = buf
        self.size = len(buf)
        self.pos = 0
        self.path = path

    def fail(self, what: str) -> InputError:
        return InputError(f"corrupt or truncated MDA file: {what} at byte {self.pos} (file size {self.size})",
                          path=self.path)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} needs {n} bytes")

    def i32(self, what: str = "integer") -> int:
        self.need(4, what)
        (v,) = struct.unpack_from(">i", self.buf, self.pos)
        self.pos += 4
        return int(v)

    def f32(self, what: str = "float") -> float:
        self.need(4, what)
        (v,) = struct.unpack_from(">f", self.buf, self.pos)
        self.pos += 4
        return float(v)

    def cstr(self, what: str = "string") -> str:
        n = self.i32(what + " length")
        if n == 0:
            return ""
        if n < 0 or n > MAX_STRING:
            self.pos -= 4
            raise self.fail(f"{what} has impossible length {n}")
        self.i32(what + " length")
        padded = (n + 3) & ~3
        self.need(padded, what)
        raw = bytes(self.buf[self.pos:self.pos + n])
        self.pos += padded
        return raw.decode("latin-1").rstrip("\x00 ")

    def array(self, dtype: str, count: int, what: str) -> np.ndarray:
        itemsize = np.dtype(dtype).itemsize
        self.need(count * itemsize, what)
        arr = np.frombuffer(self.buf, dtype=dtype, count=count, offset=self.pos)
        self.pos += count * itemsize
        return arr


def _read_scan(cur: _Cursor, offset: int, expect_rank: int, depth_left: int) -> MdaScan:
    cur.pos = offset
    rank = cur.i32("scan rank")
    if rank != expect_rank:
        raise cur.fail(f"scan record at offset {offset} has rank {rank}, expected {expect_rank}")
    npts = cur.i32("npts")
    cpt = cur.i32("cpt")
    if npts < 0 or cpt < 0 or cpt > npts:
        raise cur.fail(f"scan record at offset {offset} has npts={npts}, cpt={cpt}")
    offsets: list[int] = []
    if rank > 1:
        offsets = [int(v) for v in cur.array(">i4", npts, "child offset table")]
    name = cur.cstr("scan name")
    time = cur.cstr("scan time")
    np_, nd, nt = cur.i32("number of positioners"), cur.i32("number of detectors"), cur.i32("number of triggers")
    if not (0 <= np_ <= 64 and 0 <= nd <= 10000 and 0 <= nt <= 64):
        raise cur.fail(f"scan record at offset {offset} claims {np_} positioners, {nd} detectors, {nt} triggers")
    pos = []
    for _ in range(np_):
        num = cur.i32("positioner number")
        fields = [cur.cstr("positioner field") for _ in range(7)]
        pos.append(MdaPositioner(num, *fields))
    dets = []
    for _ in range(nd):
        num = cur.i32("detector number")
        dets.append(MdaDetector(num, cur.cstr("detector name"), cur.cstr("detector description"),
                                cur.cstr("detector unit")))
    trig = []
    for _ in range(nt):
        num = cur.i32("trigger number")
        trig.append((num, cur.cstr("trigger name"), cur.f32("trigger command")))
    for p in pos:
        p.data = cur.array(">f8", npts, f"positioner {p.name} data")
    for d in dets:
        d.data = cur.array(">f4", npts, f"detector {d.name} data")
    scan = MdaScan(rank, npts, cpt, name, time, pos, dets, trig, offset)
    if rank > 1:
        for i, off in enumerate(offsets):
            if off <= 0 or off >= cur.size:
                if off != 0:
                    log.warning("%s: child %d of %s points outside the file (offset %d); ignored",
                                cur.path, i, name, off)
                scan.children.append(None)
                continue
            scan.children.append(_read_scan(cur, off, rank - 1, depth_left - 1))
    return scan


def _read_extra(cur: _Cursor, offset: int) -> list[tuple[str, str, str, Any]]:
    cur.pos = offset
    n = cur.i32("extra-PV count")
    if n < 0 or n > 100000:
        raise cur.fail(f"extra-PV section claims {n} entries")
    out = []
    for _ in range(n):
        name = cur.cstr("extra-PV name")
        desc = cur.cstr("extra-PV description")
        code = cur.i32("extra-PV type code")
        if code == 0:
            out.append((name, desc, "", cur.cstr(f"extra PV {name} value")))
            continue
        if code not in _EXTRA_TYPES:
            cur.pos -= 4
            raise cur.fail(f"extra PV {name!r} has unknown type code {code}")
        count = cur.i32("extra-PV count")
        if count < 0 or count > 1 << 20:
            raise cur.fail(f"extra PV {name!r} claims {count} values")
        unit = cur.cstr("extra-PV unit")
        values = cur.array(_EXTRA_TYPES[code], count, f"extra PV {name} values")
        if code == 32:
            chars = []
            for c in values:
                if c & 0xFF == 0:
                    break
                chars.append(chr(int(c) & 0xFF))
            out.append((name, desc, unit, "".join(chars)))
        else:
            if code == 30:  # keep the decimal value the user typed (0.0094, not 0.00939999986)
                conv = np.array([float(str(v)) for v in values.astype(np.float32)], dtype=np.float64)
            else:
                conv = values.astype(np.int64) if code in (29, 33) else values.astype(np.float64)
            out.append((name, desc, unit, conv))
    if cur.pos != cur.size:
        log.debug("%s: %d bytes after the extra-PV section", cur.path, cur.size - cur.pos)
    return out


def read_mda(path: str | Path, extra: bool = True) -> MdaFile:
    """Parse an MDA file.

    Parameters
    ----------
    path : path
        The ``.mda`` file.
    extra : bool
        Also parse the extra-PV section (a corrupt section is then an error; with False it is skipped).

    Raises
    ------
    InputError
        When the file is missing, is not an MDA file of version 1.2-1.4, or is truncated/corrupt
        (naming the byte offset where reading failed).
    """
    path = Path(path)
    try:
        fh = open(path, "rb")
    except OSError as exc:
        raise InputError(f"cannot open MDA file ({exc.strerror})", path=path) from None
    with fh:
        try:
            buf: Any = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:  # empty file
            buf = b""
        # copy into bytes: numpy views must outlive the mmap
        data = bytes(buf)
        if isinstance(buf, mmap.mmap):
            buf.close()
    cur = _Cursor(data, str(path))
    if cur.size < 12:
        raise InputError(f"not an MDA file: only {cur.size} bytes", path=path)
    version = cur.f32("version")
    if not np.isfinite(version) or round(100 * version) not in VERSIONS:
        raise InputError(f"not an MDA file: version field reads {version!r}, expected 1.2, 1.3 or 1.4", path=path)
    scan_number = cur.i32("scan number")
    rank = cur.i32("rank")
    if not 1 <= rank <= 8:
        raise cur.fail(f"impossible data rank {rank}")
    dims = [int(v) for v in cur.array(">i4", rank, "dimensions")]
    regular = bool(cur.i32("regular flag"))
    extra_offset = cur.i32("extra-PV offset")
    root = _read_scan(cur, cur.pos, rank, rank)
    extras: list[tuple[str, str, str, Any]] = []
    if extra and 0 < extra_offset < cur.size:
        extras = _read_extra(cur, extra_offset)
    elif extra_offset >= cur.size:
        log.warning("%s: extra-PV offset %d lies beyond the end of the file", path, extra_offset)
    return MdaFile(str(path), float(version), scan_number, rank, dims, regular, root, extras)


def _level_records(scan: MdaScan, level: int) -> list[tuple[tuple[int, ...], MdaScan]]:
    """(index tuple, record) of every record of rank ``level`` under ``scan``."""
    if scan.rank == level:
        return [((), scan)]
    out = []
    for i, child in enumerate(scan.children):
        if child is None:
            continue
        out.extend(((i,) + idx, rec) for idx, rec in _level_records(child, level))
    return out


def level_arrays(mda: MdaFile, level: int, what: str = "detectors",
                 numbers: list[int] | None = None) -> tuple[dict[int, np.ndarray], list[MdaPositioner | MdaDetector]]:
    """The per-point values of one scan level as N-D arrays.

    Parameters
    ----------
    level : int
        Scan rank of the records (``mda.rank`` = outermost, 1 = innermost).
    what : {"detectors", "positioners"}
    numbers : list of int, optional
        Only these slot numbers (default all of the first record of that level).

    Returns
    -------
    arrays : dict of slot number to ndarray
        Shape ``(n_outer_1, ..., n_outer_k, npts)``, outermost first, where the outer lengths are the
        npts of the enclosing records. Unacquired points are NaN; dtype float64 for positioners,
        float32 for detectors.
    items : list
        The positioner/detector descriptions of the first record of that level.
    """
    if not 1 <= level <= mda.rank:
        raise InputError(f"MDA file has levels 1..{mda.rank}, not {level}", path=mda.path)
    shape = []
    s: MdaScan | None = mda.scan
    while s is not None and s.rank > level:
        shape.append(s.npts)
        s = next((c for c in s.children if c is not None), None)
    if s is None:
        raise InputError(f"no scan record of level {level} was written", path=mda.path)
    records = _level_records(mda.scan, level)
    npts = max(r.npts for _, r in records)
    shape.append(npts)
    items: list[Any] = list(getattr(s, what))
    if numbers is not None:
        items = [it for it in items if it.number in numbers]
    dtype = np.float64 if what == "positioners" else np.float32
    # the point counts come from the file: a corrupt header must not make us allocate terabytes
    check_size([len(items)] + shape, dtype, f"level-{level} {what} ({len(items)} x {'x'.join(map(str, shape))} points)",
               path=mda.path)
    out = {it.number: np.full(shape, np.nan, dtype=dtype) for it in items}
    for idx, rec in records:
        recs = {it.number: it for it in getattr(rec, what)}
        for num, arr in out.items():
            it = recs.get(num)
            if it is not None:
                n = min(rec.cpt, len(it.data))
                arr[idx + (slice(0, n),)] = it.data[:n]
    return out, items


def acquired_shape(mda: MdaFile) -> tuple[int, ...]:
    """Grid of points acquired at every level, outermost first, counting only complete outer points.

    For each outer level the count is the number of leading children that were written completely
    (their own ``cpt == npts``); the innermost level counts its ``cpt``.
    """

    def complete(scan: MdaScan) -> bool:
        if scan.cpt < scan.npts:
            return False
        return all(c is not None and complete(c) for c in scan.children[: scan.npts]) if scan.rank > 1 else True

    shape = []
    s: MdaScan | None = mda.scan
    while s is not None:
        if s.rank == 1:
            shape.append(s.cpt)
            break
        n = 0
        for c in s.children:
            if c is None or not complete(c):
                break
            n += 1
        shape.append(n)
        s = next((c for c in s.children if c is not None), None)
    return tuple(shape)
