"""A readable summary of a layout file: groups, shapes, units, provenance, which steps ran."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .h5store import bulk_dir, open_read, read_provenance

#: processing groups of the layout, in the order the steps usually run
STEP_GROUPS = ("fit", "norm", "detlim", "elyield", "quant", "rel_dif", "kmeans", "PCA", "tomo")


def summarise(path: str | Path, max_depth: int = 4) -> dict[str, Any]:
    """Describe ``path``.

    Returns
    -------
    dict
        ``file``, ``schema_version`` (None for files of the original tool), ``grid`` (scan shape),
        ``channels``, ``steps`` (group -> provenance or None), ``tree`` (list of
        ``{"path", "kind", "shape", "dtype", "attrs"}``) and ``bulk_files``.
    """
    path = Path(path)
    with open_read(path) as f:
        tree: list[dict[str, Any]] = []

        def visit(group: h5py.Group, depth: int, where: str = "") -> None:
            for name in group:
                full = f"{where}/{name}"
                obj = group.get(name)
                if obj is None:
                    tree.append({"path": full, "kind": "broken link"})
                    continue
                entry: dict[str, Any] = {"path": full}
                link = group.get(name, getlink=True)
                if isinstance(link, h5py.ExternalLink):
                    entry["link"] = f"{link.filename}:{link.path}"
                if isinstance(obj, h5py.Dataset):
                    entry.update(kind="dataset", shape=list(obj.shape), dtype=str(obj.dtype))
                    if obj.dtype.kind in "SO" and obj.size <= 64:
                        entry["value"] = [v.decode("utf8", "replace")[:80] if isinstance(v, bytes) else str(v)[:80]
                                          for v in np.atleast_1d(obj[()])]
                    elif obj.shape == () and obj.dtype.kind in "fiu":
                        entry["value"] = [f"{obj[()]:.6g}"]
                else:
                    entry["kind"] = "group"
                units = obj.attrs.get("unit", obj.attrs.get("units"))
                if units is not None:
                    entry["unit"] = units.decode() if isinstance(units, bytes) else str(units)
                tree.append(entry)
                if isinstance(obj, h5py.Group) and depth < max_depth:
                    visit(obj, depth + 1, full)

        visit(f, 1)
        chans = sorted(k for k in f.get("raw", {}) if k.startswith("channel")) if "raw" in f else []
        grid = None
        if chans and "spectra" in f["raw"][chans[0]]:
            grid = list(f["raw"][chans[0]]["spectra"].shape[:-1])
        steps = {g: read_provenance(f[g]) for g in STEP_GROUPS if g in f}
        version = f.attrs.get("xrfproc_schema_version")
        return {
            "file": str(path),
            "schema_version": None if version is None else int(version),
            "grid": grid,
            "channels": chans,
            "steps": steps,
            "tree": tree,
            "bulk_files": sorted(p.name for p in bulk_dir(path).glob("*.h5")) if bulk_dir(path).is_dir() else [],
        }


def format_summary(summary: dict[str, Any]) -> str:
    """The summary as indented text for the terminal."""
    lines = [f"{summary['file']}  (schema {summary['schema_version'] or 'original xrf_proc'})",
             f"grid {summary['grid']}, channels {', '.join(summary['channels']) or '-'}"]
    for entry in summary["tree"]:
        depth = entry["path"].count("/") - 1
        desc = entry["kind"]
        if entry["kind"] == "dataset":
            desc = f"{entry['dtype']} {tuple(entry['shape'])}"
            if "value" in entry:
                shown = ", ".join(entry["value"][:8])
                desc += f" [{shown}{', ...' if len(entry['value']) > 8 else ''}]"
        if "unit" in entry:
            desc += f" ({entry['unit']})"
        if "link" in entry:
            desc += f" -> {entry['link']}"
        lines.append(f"{'  ' * depth}{entry['path'].rsplit('/', 1)[-1]}: {desc}")
    ran = [f"{g} ({p['timestamp']})" if p else f"{g} (no provenance)" for g, p in summary["steps"].items()]
    lines.append("steps: " + (", ".join(ran) if ran else "none yet"))
    return "\n".join(lines)
