"""The measurement geometry of a file: ``geometry`` group, written once, read by detlim and quantify.

``set_geometry(h5file, "aps-2ide", air_path_cm=1.5)`` writes ``geometry`` (attributes: the fields of
:class:`xrfproc.core.geometry.Geometry`, ``json``: all of them) in its own transaction, with the usual
provenance. ``detlim`` and ``quantify`` use, in this order: the ``geometry=`` they are given, the file's
``geometry`` group, the generic preset; single fields given (``incidence_deg=``) override it. The
geometry used is recorded in their provenance and in ``elyield/<cnc>/channelXX@geometry``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .. import store
from ..core import geometry as cg


def set_geometry(h5file: str | Path, geometry: Any = None, **fields: Any) -> dict[str, Any]:
    """Record the geometry of a measurement in ``h5file`` (a preset name, a dict or a Geometry, plus fields)."""
    path = Path(h5file)
    geo = cg.resolve(geometry, **fields)
    with store.transaction(path, "set_geometry", replace=["geometry"], params={"geometry": geo.as_dict()}) as tx:
        g = tx.group("geometry")
        for k, v in geo.as_dict().items():
            g.attrs[k] = v
        store.write_array(g, "json", json.dumps(geo.as_dict()))
    return {"file": str(path), "geometry": geo.as_dict(), "description": geo.describe()}


def file_geometry(f: Any) -> cg.Geometry | None:
    """The geometry recorded in an open layout file, or None."""
    if "geometry" not in f or "json" not in f["geometry"]:
        return None
    text = f["geometry/json"][()]
    text = text.decode() if isinstance(text, bytes) else str(text)
    return cg.resolve(json.loads(text))


def geometry_for(f: Any, geometry: Any = None, incidence_deg: float | None = None,
                 exit_deg: float | None = None) -> cg.Geometry:
    """The geometry a step uses for an open file: ``geometry``, else the file's, else generic; angles override."""
    base = geometry if geometry is not None else file_geometry(f)
    return cg.resolve(base, incidence_deg=incidence_deg, exit_deg=exit_deg)


__all__ = ["set_geometry", "file_geometry", "geometry_for"]
