"""EPICS / GSECARS ``.mca`` ASCII spectrum files -> :class:`~xrfproc.core.rawmap.RawMap`.

Layout: header lines ``KEY: values`` (one value per detector element for ``REAL_TIME``,
``LIVE_TIME``, ``CAL_OFFSET``, ``CAL_SLOPE``, ``CAL_QUAD``, ``ROI_n_LEFT/RIGHT/LABEL``, ...),
``ENVIRONMENT: PV="value" (description)`` lines, then ``DATA:`` followed by one row per channel
with one column per element. Energy (keV) = CAL_OFFSET + CAL_SLOPE*ch + CAL_QUAD*ch^2.

A file is one measurement point: the result is a 1 x 1 map (grid ``(1, 1)``), so later steps treat a
single spectrum like a map. Several files (a list given to ``convert``) are stitched by the merger.
The elements are summed into ``channel00`` (``elements="sum"``, calibration of the first element)
or kept as ``channel00..`` (``elements="separate"``). ``acquisition_time`` is the real time (mean
over the elements summed); the dead-time factor ``icr/ocr`` is ``REAL_TIME/LIVE_TIME`` (the file has no
count rates), stored as ``ocr`` = counts / real time and ``icr`` = counts / live time (counts/s).
The incident energy is taken from an ENVIRONMENT line whose description mentions the mono energy
(readback preferred), in eV when above 200, converted to keV.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from ._sniff import head_bytes
from ...errors import InputError
from ..rawmap import RawChannel, RawMap
from .provenance import apply_given_energy, plausible_keV, set_energy, set_member_attrs, set_time_units, to_keV

log = logging.getLogger(__name__)

KIND = "gse"
_ENV = re.compile(r'^\s*(\S+?)\s*=\s*"(.*?)"\s*(?:\((.*)\))?\s*$')


def sniff(path: str | Path) -> bool:
    """True for a text file whose first line is ``VERSION:`` and which has a ``DATA:`` line."""
    text = head_bytes(path, 65536).decode("latin-1")
    return text.lstrip().startswith("VERSION:") and "\nDATA:" in text


def parse(path: str | Path) -> dict[str, Any]:
    """Parse a GSE ``.mca`` file.

    Returns
    -------
    dict
        ``header`` (key -> list of str), ``environment`` (list of (pv, value, description)),
        ``data`` (ndarray, shape (elements, channels), float64).

    Raises
    ------
    InputError
        Missing DATA section, non-numeric or ragged data rows, channel count mismatch.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", path=path) from None
    header: dict[str, list[str]] = {}
    env: list[tuple[str, str, str]] = []
    data_at = None
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        key, sep, rest = line.partition(":")
        if not sep:
            raise InputError(f"line {i + 1}: expected 'KEY: values' before DATA:, found {line[:60]!r}", path=path)
        key = key.strip().upper()
        if key == "DATA":
            data_at = i + 1
            break
        if key == "ENVIRONMENT":
            m = _ENV.match(rest)
            if m:
                env.append((m.group(1), m.group(2).strip(), (m.group(3) or "").strip()))
            continue
        header[key] = rest.split() if not key.endswith("LABEL") and key != "DATE" else [rest.strip()]
    if data_at is None:
        raise InputError("no 'DATA:' line: not a GSE/EPICS .mca file", path=path)
    rows = []
    for j, line in enumerate(lines[data_at:], start=data_at + 1):
        if not line.strip():
            continue
        try:
            rows.append([float(v) for v in line.split()])
        except ValueError:
            raise InputError(f"line {j}: non-numeric data row {line.strip()[:60]!r}", path=path) from None
    if not rows:
        raise InputError("no data rows after 'DATA:'", path=path)
    width = len(rows[0])
    bad = next((k for k, r in enumerate(rows) if len(r) != width), None)
    if bad is not None:
        raise InputError(f"data row {bad + 1} has {len(rows[bad])} columns, the first row {width}", path=path)
    data = np.asarray(rows, dtype=np.float64).T
    nel = _int(header, "ELEMENTS", path, default=data.shape[0])
    if nel != data.shape[0]:
        raise InputError(f"ELEMENTS says {nel} detector elements but the data rows have {data.shape[0]} columns",
                         path=path)
    nch = _int(header, "CHANNELS", path, default=data.shape[1])
    if nch != data.shape[1]:
        raise InputError(f"CHANNELS says {nch} but {data.shape[1]} data rows follow DATA:", path=path)
    return {"header": header, "environment": env, "data": data}


def _int(header: dict[str, list[str]], key: str, path: Path, default: int) -> int:
    if key not in header or not header[key]:
        return default
    try:
        return int(float(header[key][0]))
    except ValueError:
        raise InputError(f"{key}: expected a number, found {header[key][0]!r}", path=path) from None


def _floats(header: dict[str, list[str]], key: str, n: int, path: Path) -> np.ndarray | None:
    vals = header.get(key)
    if not vals:
        return None
    try:
        arr = np.array([float(v) for v in vals], dtype=np.float64)
    except ValueError:
        raise InputError(f"{key}: expected {n} numbers, found {' '.join(vals)!r}", path=path) from None
    if arr.size == 1 and n > 1:
        arr = np.repeat(arr, n)
    if arr.size != n:
        raise InputError(f"{key}: {arr.size} values for {n} detector elements", path=path)
    return arr


def mono_energy(environment: list[tuple[str, str, str]]) -> tuple[float, str] | None:
    """The monochromator energy from ENVIRONMENT lines (readback first) and its source.

    Returns
    -------
    (float, str) or None
        The energy in keV (values above 200 are eV) and where it was read, e.g.
        ``'GSE ENVIRONMENT 13IDA:E:E_RBV (Mono Energy readback)'``; None if absent.
    """
    cands = [(pv, v, d) for pv, v, d in environment if "energy" in (d + pv).lower() and "mono" in (d + pv).lower()]
    cands.sort(key=lambda e: 0 if ("readback" in e[2].lower() or "RBV" in e[0]) else 1)
    for pv, value, desc in cands:
        try:
            e = float(value)
        except ValueError:
            continue
        if e > 0 and plausible_keV(to_keV(e)):
            return to_keV(e), f"GSE ENVIRONMENT {pv}" + (f" ({desc})" if desc else "")
    return None


def mono_energy_keV(environment: list[tuple[str, str, str]]) -> float | None:
    """The monochromator energy from ENVIRONMENT lines (readback first), in keV; None if absent."""
    found = mono_energy(environment)
    return None if found is None else found[0]


def read(source: str | Path, *, elements: str = "sum", energy_keV: float | None = None, **_ignored: Any) -> RawMap:
    """Read one GSE ``.mca`` file as a 1 x 1 map.

    Parameters
    ----------
    source : path
    elements : {"sum", "separate"}
        Sum the detector elements into ``channel00`` or keep one channel per element.
    energy_keV : float, optional
        Excitation energy (keV) to record instead of the ENVIRONMENT's mono energy (a difference of
        more than 1 eV is logged as a warning).

    The file records no beam monitor: ``raw/I0`` is 1 (``units`` ``"1"``); ``raw@dwell_s`` is the
    real time, ``raw/channelXX@calibration_source`` names the ``CAL_*`` header lines.
    """
    path = Path(source)
    if elements not in ("sum", "separate"):
        raise InputError(f"elements must be 'sum' or 'separate', not {elements!r}", path=path)
    p = parse(path)
    header, data = p["header"], p["data"]
    nel = data.shape[0]
    real = _floats(header, "REAL_TIME", nel, path)
    live = _floats(header, "LIVE_TIME", nel, path)
    cal = [_floats(header, k, nel, path) for k in ("CAL_OFFSET", "CAL_SLOPE", "CAL_QUAD")]
    if real is None and live is not None:
        real = live
    if live is None and real is not None:
        live = real
    integral = np.isfinite(data).all() and np.all(np.abs(data) < 2.0**53) and np.all(np.mod(data, 1) == 0)
    counts = np.rint(data).astype(np.int64) if integral else data
    groups = [list(range(nel))] if elements == "sum" else [[j] for j in range(nel)]
    chans = {}
    for ci, idx in enumerate(groups):
        spec = counts[idx].sum(axis=0)
        total = float(spec.sum())
        if real is not None and live is not None and np.all(live[idx] > 0):
            rt, lt = float(real[idx].mean()), float(live[idx].mean())
            icr, ocr = total / lt, total / rt
        else:
            icr = ocr = 1.0
        c = None
        if cal[0] is not None and cal[1] is not None:
            j = idx[0]
            c = (float(cal[0][j]), float(cal[1][j]), float(cal[2][j]) if cal[2] is not None else 0.0)
        chans[f"channel{ci:02d}"] = RawChannel(spec.reshape(1, 1, -1), np.full((1, 1), icr), np.full((1, 1), ocr), c)
    atime = float(real.mean()) if real is not None else 1.0
    if real is None:
        log.warning("%s: no REAL_TIME/LIVE_TIME; acquisition time set to 1 s", path)
    date = header.get("DATE", [""])[0]
    raw = RawMap(channels=chans, I0=np.ones((1, 1)), acquisition_time=np.full((1, 1), atime),
                 mot1=np.zeros((1, 1)), mot2=np.zeros((1, 1)), cmd=f"GSE mca {path.name} {date}".strip(),
                 sources=[str(path)],
                 attrs={"source_format": "GSE/EPICS mca", "live_time": float(live.mean()) if live is not None else 1.0})
    for ci, idx in enumerate(groups):
        set_member_attrs(raw, f"channel{ci:02d}", calibration_source=(
            f"GSE header CAL_OFFSET/CAL_SLOPE/CAL_QUAD of element {idx[0] + 1}"
            if raw.channels[f"channel{ci:02d}"].calibration is not None else None))
    set_member_attrs(raw, "I0", units="1", source="none: the file records no beam monitor (1)")
    set_time_units(raw, dwell_s=atime if real is not None else None)
    energy = mono_energy(p["environment"])
    if energy is not None:
        set_energy(raw, *energy)
    apply_given_energy(raw, energy_keV, str(path))
    raw.validate(str(path))
    return raw
