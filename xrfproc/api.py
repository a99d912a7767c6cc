"""The one façade of xrfproc: a function per processing step.

The command line, the MCP server and the recipe language call exactly these functions; they do the
argument checking, read and write the layout through :mod:`xrfproc.store` and leave the science to
:mod:`xrfproc.core`.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

from . import store
from .core import convert as _convert
from .errors import InputError

log = logging.getLogger(__name__)

__all__ = ["convert", "inspect"]


def convert(source: str | Path | Sequence[str | Path], out: str | Path | None = None, kind: str = "auto",
            **options: Any) -> Path:
    """Convert beamline file(s) into a file of the uniform layout.

    Parameters
    ----------
    source : path or list of paths
        A beamline file or scan directory; a list is merged into one map.
    out : path, optional
        The file to write; default ``<first source stem>_merge.h5`` next to the source.
    kind : str
        ``"auto"`` (detect from the content) or one of :func:`xrfproc.core.convert.kinds`.
    **options
        Passed to the reader (e.g. ``scan="1.1"``, ``dims=(10, 10)``, ``sort=True``).

    Returns
    -------
    Path
        The file written.
    """
    first = Path(source[0] if isinstance(source, (list, tuple)) and source else source)  # type: ignore[index]
    raw = _convert.read_any(source, kind=kind, **options)
    if out is None:
        out = first.with_name(first.stem + "_merge.h5") if first.suffix else first.with_name(first.name + "_merge.h5")
    params = {"kind": kind, **{k: v for k, v in options.items()}}
    return store.write_raw(out, raw, params=params)


def inspect(h5file: str | Path) -> dict[str, Any]:
    """Summarise a layout file: its groups with shapes, the steps that ran and their provenance."""
    from .store.inspect import summarise

    return summarise(h5file)
