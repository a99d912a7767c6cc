"""Beamline file readers: each turns one beamline's files into a :class:`~xrfproc.core.rawmap.RawMap`.

Every reader module in this package provides

``KIND``
    the short name users give (``"id15"``, ``"p06"``, ``"mda"``, ``"gse"``, ``"spe"``, ``"npy"``, ...);
``sniff(path) -> bool``
    True when ``path`` (a file or a scan directory) is in this format; cheap and never raising;
``read(source, **options) -> RawMap``
    the conversion itself, raising :class:`~xrfproc.errors.InputError` naming the file and the path
    inside it for bad input.

:func:`read_any` picks the reader (by ``kind`` or by sniffing) and :func:`merge` stitches several
scans into one map.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import Any, Sequence

from ...errors import InputError
from ..rawmap import RawMap
from .provenance import apply_given_energy

log = logging.getLogger(__name__)

#: reader modules, in the order they are sniffed (most specific first)
READER_MODULES = ("id15", "p06", "mda", "gse_mca", "spe", "layout", "generic", "pymca_formats")


def _modules() -> list[Any]:
    mods = []
    for name in READER_MODULES:
        try:
            mods.append(importlib.import_module(f"{__name__}.{name}"))
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.endswith(f"convert.{name}"):
                continue  # reader not written yet
            raise
    return mods


def kinds() -> list[str]:
    """The format names :func:`read_any` accepts."""
    return [m.KIND for m in _modules()]


def detect_kind(source: str | Path) -> str:
    """The format of ``source``, by sniffing its content.

    Raises
    ------
    InputError
        When no reader recognises it.
    """
    path = Path(source)
    if not path.exists():
        raise InputError("file not found", path=path)
    for mod in _modules():
        try:
            if mod.sniff(path):
                return mod.KIND
        except Exception:  # a sniffer must never decide the outcome by crashing
            log.debug("sniffer %s failed on %s", mod.KIND, path, exc_info=True)
    raise InputError(f"unrecognised file format; give kind= one of {', '.join(kinds())}", path=path)


def reader(kind: str) -> Any:
    for mod in _modules():
        if mod.KIND == kind:
            return mod
    raise InputError(f"unknown format kind {kind!r}; expected one of {', '.join(kinds())}")


def read_any(source: str | Path | Sequence[str | Path], kind: str = "auto", **options: Any) -> RawMap:
    """Read one scan (or several, merged) with the right reader.

    Parameters
    ----------
    source : path or list of paths
        File(s) or scan directory(ies). A list is read scan by scan and stitched by :func:`merge`
        (readers that take several scans of one file, like ID15's ``scan=["1.1", "2.1"]``, do that
        themselves).
    kind : str
        Reader name, or ``"auto"`` to detect it from the first file.
    energy_keV : float, optional (in ``options``)
        Excitation energy (keV). It wins over the one the file records; a difference of more than
        1 eV is logged as a warning naming both (see :func:`.provenance.apply_given_energy`).
    """
    energy_keV = options.pop("energy_keV", None)
    raw = _read(source, kind, **options)
    where = str(source[0] if isinstance(source, (list, tuple)) else source)
    apply_given_energy(raw, None if energy_keV is None else float(energy_keV), where)
    return raw


def _read(source: str | Path | Sequence[str | Path], kind: str, **options: Any) -> RawMap:
    if isinstance(source, (list, tuple)):
        if not source:
            raise InputError("empty list of files to convert")
        mod = reader(detect_kind(source[0]) if kind == "auto" else kind)
        if getattr(mod, "READS_LISTS", False):
            return mod.read(list(source), **options)  # the reader stitches (and sorts) itself
        maps = [mod.read(s, **options) for s in source]
        return merge(maps, atol=options.get("atol", 1e-4)) if len(maps) > 1 else maps[0]
    if kind == "auto":
        kind = detect_kind(source)
    return reader(kind).read(source, **options)


def stitches(source: str | Path | Sequence[str | Path], options: dict[str, Any] | None = None) -> bool:
    """True when converting ``source`` with ``options`` stitches several scans into one map.

    Several sources, or several scan ids (``scan=["1.1", "2.1"]``), are stitched; one file or folder
    with one scan is not.
    """
    if isinstance(source, (list, tuple)) and len(source) > 1:
        return True
    scan = (options or {}).get("scan")
    return isinstance(scan, (list, tuple)) and len(scan) > 1


def default_output(source: str | Path | Sequence[str | Path], options: dict[str, Any] | None = None) -> Path:
    """The file :func:`xrfproc.api.convert` writes when no ``out`` is given.

    ``<stem>.h5`` next to the (first) source, named after the scan (``2xfm_0011.mda`` ->
    ``2xfm_0011.h5``, scan folder ``scan_00012`` -> ``scan_00012.h5``). ``<stem>_merge.h5`` (the
    original xrf_proc's name) when several scans are stitched together (:func:`stitches`), and when
    ``<stem>.h5`` would be a source itself (an HDF5 beamline file such as ID15's ``sample_0001.h5``).
    """
    items = list(source) if isinstance(source, (list, tuple)) else [source]
    if not items:
        raise InputError("empty list of files to convert")
    first = Path(items[0])
    stem = first.stem if first.suffix else first.name
    plain = first.with_name(stem + ".h5")
    if stitches(source, options) or any(_same_path(plain, Path(s)) for s in items):
        return first.with_name(stem + "_merge.h5")
    return plain


def _same_path(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve()
    except OSError:
        return a.absolute() == b.absolute()


def merge(maps: Sequence[RawMap], atol: float = 1e-4) -> RawMap:
    """Stitch several scans into one map; see :func:`xrfproc.core.convert.stitch.merge`."""
    from .stitch import merge as _merge

    return _merge(maps, atol=atol)
