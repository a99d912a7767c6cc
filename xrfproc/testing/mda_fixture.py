"""A small MDA (EPICS saveData, XDR) *writer* for tests: synthetic scans of rank 1-3.

:func:`write_mda` serialises a tree of :class:`ScanSpec` exactly as ``saveData`` lays it out
(header, outer record, children depth-first, extra PVs last, offsets patched in), and
:func:`write_xfm_map` builds a 2-ID-E style rank-3 map with spectra inside.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np


@dataclass
class ScanSpec:
    """One scan record to write.

    ``positioners``: ``(number, pv, desc, unit, data[npts])``; ``detectors``: ``(number, pv, desc,
    unit, data[npts])``; ``children``: ``npts`` child specs (None = never written) when rank > 1.
    """

    rank: int
    npts: int
    cpt: int
    name: str = "test:scan1"
    time: str = "JAN 01, 2024 00:00:00.000000"
    positioners: list[tuple[int, str, str, str, Any]] = field(default_factory=list)
    detectors: list[tuple[int, str, str, str, Any]] = field(default_factory=list)
    triggers: list[tuple[int, str, float]] = field(default_factory=list)
    children: list[ScanSpec | None] = field(default_factory=list)


def _i32(v: int) -> bytes:
    return struct.pack(">i", int(v))


def _cstr(s: str) -> bytes:
    b = s.encode("latin-1")
    if not b:
        return _i32(0)
    return _i32(len(b)) + _i32(len(b)) + b + b"\0" * ((-len(b)) % 4)


def _record(spec: ScanSpec, start: int) -> bytes:
    """Serialise ``spec`` (and its children) to start at absolute offset ``start``."""
    head = _i32(spec.rank) + _i32(spec.npts) + _i32(spec.cpt)
    table_at = len(head)
    if spec.rank > 1:
        head += b"\0" * (4 * spec.npts)
    body = _cstr(spec.name) + _cstr(spec.time)
    body += _i32(len(spec.positioners)) + _i32(len(spec.detectors)) + _i32(len(spec.triggers))
    for num, pv, desc, unit, _ in spec.positioners:
        body += _i32(num) + _cstr(pv) + _cstr(desc) + _cstr("LINEAR") + _cstr(unit) + _cstr(pv + ".RBV") + _cstr(desc) + _cstr(unit)
    for num, pv, desc, unit, _ in spec.detectors:
        body += _i32(num) + _cstr(pv) + _cstr(desc) + _cstr(unit)
    for num, pv, val in spec.triggers:
        body += _i32(num) + _cstr(pv) + struct.pack(">f", val)
    for *_, data in spec.positioners:
        body += np.asarray(data, dtype=">f8").reshape(spec.npts).tobytes()
    for *_, data in spec.detectors:
        body += np.asarray(data, dtype=">f4").reshape(spec.npts).tobytes()
    out = bytearray(head + body)
    if spec.rank > 1:
        offsets = []
        for child in spec.children:
            if child is None:
                offsets.append(0)
                continue
            offsets.append(start + len(out))
            out += _record(child, start + len(out))
        offsets += [0] * (spec.npts - len(offsets))
        out[table_at:table_at + 4 * spec.npts] = np.asarray(offsets, dtype=">i4").tobytes()
    return bytes(out)


def _extra(entries: Sequence[tuple[str, str, int, Any]]) -> bytes:
    out = _i32(len(entries))
    for name, desc, code, value in entries:
        out += _cstr(name) + _cstr(desc) + _i32(code)
        if code == 0:
            out += _cstr(str(value))
            continue
        if code == 32:
            vals = np.frombuffer(str(value).encode("latin-1") + b"\0", dtype=np.uint8).astype(">i4")
        else:
            vals = np.atleast_1d(np.asarray(value, dtype={29: ">i4", 30: ">f4", 33: ">i4", 34: ">f8"}[code]))
        out += _i32(len(vals)) + _cstr("") + vals.tobytes()
    return out


def write_mda(path: str | Path, root: ScanSpec, extra: Sequence[tuple[str, str, int, Any]] = (),
              version: float = 1.3, scan_number: int = 1, dims: Sequence[int] | None = None) -> Path:
    """Write an MDA file; ``extra`` entries are ``(pv, desc, type code, value)``."""
    path = Path(path)
    rank = root.rank
    if dims is None:
        dims, s = [], root
        while s is not None:
            dims.append(s.npts)
            s = next((c for c in s.children if c is not None), None) if s.rank > 1 else None
    header_len = 20 + 4 * rank
    rec = _record(root, header_len)
    extra_off = header_len + len(rec) if extra else 0
    head = struct.pack(">f", version) + _i32(scan_number) + _i32(rank) + b"".join(_i32(d) for d in dims)
    head += _i32(1) + _i32(extra_off)
    path.write_bytes(head + rec + (_extra(extra) if extra else b""))
    return path


def write_xfm_map(path: str | Path, spectra: np.ndarray, x: np.ndarray, y: np.ndarray,
                  scalers: dict[str, np.ndarray], rows_done: int | None = None, last_row_cpt: int | None = None,
                  calibration: tuple[float, float, float] = (0.05, 0.0094, 0.0), prefix: str = "dxpXMAP2xfm3:",
                  detector_numbers: Sequence[int] | None = None) -> Path:
    """A 2-ID-E style rank-3 map: ``spectra`` (rows, cols, elements, channels), per-pixel ``scalers``.

    Scaler detector slots are given gaps (numbers 0, 2, 4, ...) unless ``detector_numbers`` says
    otherwise. ``rows_done`` < rows writes an aborted scan (outer cpt, missing children); with
    ``last_row_cpt`` a partial row ``rows_done`` with that many points is written too.
    """
    rows, cols, nel, nch = spectra.shape
    rows_done = rows if rows_done is None else rows_done
    names = list(scalers)
    nums = list(detector_numbers) if detector_numbers is not None else [2 * i for i in range(len(names))]
    row_specs: list[ScanSpec | None] = []
    for r in range(rows):
        ncpt = cols if r < rows_done else (last_row_cpt if (r == rows_done and last_row_cpt) else None)
        if ncpt is None:
            row_specs.append(None)
            continue
        pix: list[ScanSpec | None] = []
        for c in range(cols):
            if c >= ncpt:
                pix.append(None)
                continue
            dets = [(e, f"{prefix}mca{e + 1}.VAL", "", "", spectra[r, c, e]) for e in range(nel)]
            pix.append(ScanSpec(1, nch, nch, "2xfm:scanH", detectors=dets))
        sc = [(n, pv, "", "", np.where(np.arange(cols) < ncpt, scalers[pv][r], 0.0)) for n, pv in zip(nums, names)]
        row_specs.append(ScanSpec(2, cols, ncpt, "2xfm:scan1", positioners=[(0, "2xfm:m24.VAL", "Sample X", "mm", x)],
                                  detectors=sc, children=pix))
    outer_cpt = rows_done + (1 if last_row_cpt else 0)
    root = ScanSpec(3, rows, outer_cpt, "2xfm:scan2", positioners=[(0, "2xfm:m13.VAL", "Sample Y", "mm", y)],
                    detectors=[(0, "S:SRcurrentAI", "SR Current", "mA", np.full(rows, 102.0))], children=row_specs)
    extra: list[tuple[str, str, int, Any]] = [("2xfm:scaler1.TP", "", 34, 0.5), ("2xfm:scaler1.NM2", "", 0, "US_IC"),
                                              ("2xfm:m13.DESC", "", 32, "Sample Y")]
    for e in range(nel):
        for suffix, v in zip(("CALO", "CALS", "CALQ"), calibration):
            extra.append((f"{prefix}mca{e + 1}.{suffix}", f"CAL_{suffix}", 30, v))
    return write_mda(path, root, extra=extra, dims=[rows, cols, nch])
