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
    """
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


def merge(maps: Sequence[RawMap], atol: float = 1e-4) -> RawMap:
    """Stitch several scans into one map; see :func:`xrfproc.core.convert.stitch.merge`."""
    from .stitch import merge as _merge

    return _merge(maps, atol=atol)
