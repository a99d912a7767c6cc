"""``.spe`` spectrum files with ``$KEY:`` sections (PyMca's ``Steel.spe``, XMI MicroXRF) -> RawMap.

A file is a list of sections, each a line ``$NAME:`` followed by its value lines:

``$DATA:``
    first line ``first last`` channel numbers, then the counts (any number per line);
``$MEAS_TIM:``
    ``live real`` times (s);
``$ICR_&_OCR (normalised to 1s):`` (XMI MicroXRF)
    ``icr ocr`` (counts/s);
``$MCA_CAL:``
    number of coefficients, then the coefficients (``zero gain [quad]`` and an optional unit; eV is
    converted to keV);
``$XYZT...:`` (XMI MicroXRF)
    stage position ``x y z [t]`` of the point.

One file is a 1 x 1 map. A folder, a glob pattern or a list of files named ``<prefix>Y_X.spe``
(one file per point, Y = row index, X = column index) becomes a ``(rows, cols)`` map; every grid
point must be present. ``acquisition_time`` is the real time; without ``$ICR_&_OCR``, ``icr`` =
counts / live time and ``ocr`` = counts / real time, so ``icr/ocr`` is the live-time correction.
``mot1``/``mot2`` are the y/x positions of ``$XYZT`` when present, else the file indices.
"""
from __future__ import annotations

import glob as _glob
import logging
import re
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from ..rawmap import RawChannel, RawMap
from .provenance import set_calibration_source, set_member_attrs, set_time_units

log = logging.getLogger(__name__)

KIND = "spe"
_POINT = re.compile(r"^(.*?)(\d+)_(\d+)\.spe$", re.IGNORECASE)


def _looks_like_spe(p: Path) -> bool:
    with open(p, "rb") as fh:
        head = fh.read(8192).decode("latin-1")
    return head.lstrip().startswith("$") and "$DATA:" in head


def sniff(path: str | Path) -> bool:
    """True for a ``$SECTION:`` file with ``$DATA:``, or a folder of such ``.spe`` files."""
    try:
        p = Path(path)
        if p.is_dir():
            first = next(iter(sorted(p.glob("*.spe")) + sorted(p.glob("*.SPE"))), None)
            return first is not None and _looks_like_spe(first)
        return p.is_file() and _looks_like_spe(p)
    except Exception:
        return False


def parse_spe(path: str | Path) -> dict[str, Any]:
    """Parse one ``.spe`` file.

    Returns
    -------
    dict
        ``sections`` (upper-case name without ``$``/``:`` -> list of value lines) and ``counts``
        (ndarray, shape (nbins,), float64).

    Raises
    ------
    InputError
        No ``$DATA:`` section, non-numeric counts, or fewer counts than the channel range says.
    """
    path = Path(path)
    try:
        lines = path.read_text(encoding="latin-1").splitlines()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", path=path) from None
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in lines:
        s = line.strip()
        if s.startswith("$"):
            name = s[1:].split(":", 1)[0].strip().upper()
            current = sections.setdefault(name, [])
            continue
        if current is not None and s:
            current.append(s)
    if "DATA" not in sections or not sections["DATA"]:
        raise InputError("no '$DATA:' section: not a .spe spectrum file", path=path)
    data = sections["DATA"]
    try:
        first, last = (int(v) for v in data[0].split()[:2])
    except ValueError:
        raise InputError(f"$DATA: first line must be 'first last' channel numbers, found {data[0]!r}",
                         path=path) from None
    try:
        counts = np.array([float(v) for row in data[1:] for v in row.split()], dtype=np.float64)
    except ValueError as exc:
        raise InputError(f"$DATA: non-numeric count ({exc})", path=path) from None
    n = last - first + 1
    if n <= 0 or counts.size < n:
        raise InputError(f"$DATA: channels {first}..{last} announced, {counts.size} counts found", path=path)
    if counts.size > n:
        log.warning("%s: %d counts after $DATA: for channels %d..%d; extra values ignored",
                    path, counts.size, first, last)
    return {"sections": sections, "counts": counts[:n]}


def _numbers(sections: dict[str, list[str]], prefix: str, path: Path) -> tuple[list[float], str] | None:
    key = next((k for k in sections if k.startswith(prefix)), None)
    if key is None or not sections[key]:
        return None
    vals, unit = [], ""
    for tok in " ".join(sections[key]).split():
        try:
            vals.append(float(tok))
        except ValueError:
            unit = tok
    if not vals:
        raise InputError(f"${key}: no numbers found in {sections[key]!r}", path=path)
    return vals, unit


def _point(path: Path) -> dict[str, Any]:
    p = parse_spe(path)
    sec = p["sections"]
    out: dict[str, Any] = {"counts": p["counts"]}
    t = _numbers(sec, "MEAS_TIM", path)
    out["live"], out["real"] = (t[0][0], t[0][1] if len(t[0]) > 1 else t[0][0]) if t else (None, None)
    r = _numbers(sec, "ICR", path)
    if r is not None and len(r[0]) < 2:
        raise InputError("$ICR_&_OCR: expected 'icr ocr'", path=path)
    out["icr"], out["ocr"] = (r[0][0], r[0][1]) if r else (None, None)
    cal = _numbers(sec, "MCA_CAL", path)
    if cal is not None:
        vals, unit = cal
        coef = vals[1:] if len(vals) > 1 and float(vals[0]).is_integer() and int(vals[0]) == len(vals) - 1 else vals
        coef = (list(coef) + [0.0, 0.0, 0.0])[:3]
        scale = 1e-3 if unit.lower() == "ev" else 1.0
        out["cal"] = tuple(float(c) * scale for c in coef)
    else:
        out["cal"] = None
    xyz = _numbers(sec, "XYZ", path)
    out["xyz"] = xyz[0] if xyz else None
    return out


def _files(source: str | Path | Sequence[str | Path]) -> list[Path]:
    if isinstance(source, (list, tuple)):
        return [Path(s) for s in source]
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() == ".spe" and f.is_file())
        if not files:
            raise InputError("no .spe files in this folder", path=p)
        return files
    if p.exists():
        return [p]
    if any(ch in str(source) for ch in "*?["):
        files = sorted(Path(f) for f in _glob.glob(str(source)))
        if not files:
            raise InputError("no file matches this pattern", path=str(source))
        return files
    raise InputError("file not found", path=p)


def read(source: str | Path | Sequence[str | Path], **_ignored: Any) -> RawMap:
    """Read one ``.spe`` file (1 x 1 map) or a set of ``<prefix>Y_X.spe`` point files (a map).

    Parameters
    ----------
    source : path, folder, glob pattern or list of paths
    """
    files = _files(source)
    if len(files) == 1:
        grid_index = {files[0]: (0, 0)}
        shape = (1, 1)
    else:
        idx: dict[Path, tuple[int, int]] = {}
        prefixes = set()
        for f in files:
            m = _POINT.match(f.name)
            if m is None:
                raise InputError("a map of .spe files needs names '<prefix>Y_X.spe'", path=f)
            prefixes.add(m.group(1))
            idx[f] = (int(m.group(2)), int(m.group(3)))
        if len(prefixes) > 1:
            raise InputError(f"several scans in one selection (prefixes {sorted(prefixes)}); "
                             "give a glob pattern of one scan", path=files[0].parent)
        ys = sorted({v[0] for v in idx.values()})
        xs = sorted({v[1] for v in idx.values()})
        shape = (len(ys), len(xs))
        if len(idx) != shape[0] * shape[1] or len(set(idx.values())) != len(idx):
            have = set(idx.values())
            missing = [(y, x) for y in ys for x in xs if (y, x) not in have][:5]
            raise InputError(f"incomplete map: {len(have)} point files for a {shape[0]} x {shape[1]} grid "
                             f"(missing e.g. {missing})", path=files[0].parent)
        ymap = {y: i for i, y in enumerate(ys)}
        xmap = {x: i for i, x in enumerate(xs)}
        grid_index = {f: (ymap[v[0]], xmap[v[1]]) for f, v in idx.items()}
    points = {f: _point(f) for f in files}
    nbins = {p["counts"].size for p in points.values()}
    if len(nbins) > 1:
        raise InputError(f"the point files have different channel counts {sorted(nbins)}", path=files[0].parent)
    nb = nbins.pop()
    spectra = np.zeros(shape + (nb,), dtype=np.float64)
    icr, ocr, atime = np.ones(shape), np.ones(shape), np.ones(shape)
    mot1 = np.broadcast_to(np.arange(shape[0], dtype=float)[:, None], shape).copy()
    mot2 = np.broadcast_to(np.arange(shape[1], dtype=float), shape).copy()
    have_xyz = all(p["xyz"] is not None and len(p["xyz"]) >= 2 for p in points.values())
    no_time = []
    for f, p in points.items():
        r, c = grid_index[f]
        spectra[r, c] = p["counts"]
        total = float(p["counts"].sum())
        if p["real"] is not None:
            atime[r, c] = p["real"]
        else:
            no_time.append(f)
        if p["icr"] is not None:
            icr[r, c], ocr[r, c] = p["icr"], p["ocr"]
        elif p["live"] and p["real"]:
            icr[r, c], ocr[r, c] = total / p["live"], total / p["real"]
        if have_xyz:
            mot2[r, c], mot1[r, c] = p["xyz"][0], p["xyz"][1]
    if no_time:
        log.warning("%s: no $MEAS_TIM in %d file(s); acquisition time 1 s", files[0], len(no_time))
    if np.isfinite(spectra).all() and np.all(np.abs(spectra) < 2.0**53) and np.all(np.mod(spectra, 1) == 0):
        spectra = spectra.astype(np.int64)
    cal = next(iter(points.values()))["cal"]
    raw = RawMap(channels={"channel00": RawChannel(spectra, icr, ocr, cal)}, I0=np.ones(shape),
                 acquisition_time=atime, mot1=mot1, mot2=mot2,
                 cmd=f"spe {files[0].name}" + (f" ... ({len(files)} points)" if len(files) > 1 else ""),
                 mot1_name="y" if have_xyz else "row", mot2_name="x" if have_xyz else "column",
                 sources=[str(f) for f in files], attrs={"source_format": "spe"})
    set_calibration_source(raw, f"spe $MCA_CAL: of {files[0].name}")
    set_member_attrs(raw, "I0", units="1", source="none: .spe files record no beam monitor (1)")
    set_time_units(raw)
    raw.validate(str(files[0]))
    return raw
