"""``xrfrun --export FILE.h5``: the recipe that reproduces a processed file, from its provenance.

Every group xrfproc writes carries ``step``, ``parameters`` (JSON), ``inputs`` (JSON) and
``timestamp`` attributes (:func:`xrfproc.store.read_provenance`). The steps found are written in
the order they ran, with the recorded parameters under the API's names (parameters equal to the
API default are left out). Simulated data cannot be re-made from provenance: it is noted as a
comment.
"""
from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from .. import store
from .._version import __version__
from ..errors import InputError
from . import signatures as S

#: the order of steps that share a timestamp (seconds resolution)
STEP_ORDER = ["convert", "simulate", "fit", "normalise", "detlim", "quantify", "tomo", "kmeans", "pca",
              "overview_images"]
#: recorded parameter name -> API name, per step
RENAMES = {"detlim": {"cnc": "cncfile"}, "fit": {"channels": "channel"}, "quantify": {"reference": "ref"}}


def collect_provenance(h5file: str | Path) -> list[dict[str, Any]]:
    """Every distinct provenance record in the file, in the order the steps ran."""
    path = Path(h5file)
    records: dict[tuple, dict[str, Any]] = {}
    with store.open_read(path) as f:
        raw_channels = store.channels(f, "raw") if "raw" in f else []

        def visit(group: Any, depth: int) -> None:
            for key in group:
                try:
                    obj = group[key]
                except (KeyError, OSError):  # a dangling external link
                    continue
                prov = store.read_provenance(obj)
                if prov is not None:
                    rec = {**prov, "group": obj.name}
                    k = (prov.get("step"), json.dumps(prov.get("parameters"), sort_keys=True), prov.get("timestamp"))
                    records.setdefault(k, rec)
                if depth < 3 and hasattr(obj, "keys") and not isinstance(obj, type(None)):
                    if prov is None or depth < 2:
                        visit(obj, depth + 1)

        visit(f, 0)
    out = sorted(records.values(), key=lambda r: (r.get("timestamp", ""),
                                                  STEP_ORDER.index(r["step"]) if r.get("step") in STEP_ORDER else 99))
    for r in out:
        r["raw_channels"] = raw_channels
    return out


def literal(value: Any, base: Path | None = None, path: bool = False) -> str:
    """A recipe literal for a JSON value (strings quoted and escaped)."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else "none"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(literal(v, base, path) for v in value) + "]"
    text = str(value)
    if path and base is not None and os.path.isabs(text):
        rel = os.path.relpath(text, base)
        if not rel.startswith(".."):
            text = rel
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n") + '"'


def _statement(rec: dict[str, Any], h5: str, specs: dict[str, S.StepSpec], base: Path) -> list[str]:
    step = rec.get("step", "?")
    params = dict(rec.get("parameters") or {})
    when = rec.get("timestamp", "")
    lines = [f"# {step} at {when} (from {rec.get('group')})"]
    if step == "simulate":
        lines.append(f"# simulated data (energy_keV={params.get('energy_keV')}): not reproducible from provenance; "
                     "make it again with simulate, simulate_reference or demo_dataset")
        return lines
    spec = specs.get(step)
    if spec is None:
        lines.append(f"# step '{step}' is not an xrfproc.api step; parameters: {json.dumps(params)}")
        return lines
    for old, new in RENAMES.get(step, {}).items():
        if old in params:
            params[new] = params.pop(old)
    args: list[str] = []
    if step == "convert":
        src = params.pop("source", rec.get("inputs") or [])
        src = src[0] if isinstance(src, list) and len(src) == 1 else src
        args.append(literal(src, base, path=True))
    else:
        args.append(literal(h5, base, path=True))
    if step == "fit":
        cfg = params.pop("config", None)
        chans = params.get("channel") or []
        if chans and sorted(chans) == sorted(rec.get("raw_channels") or []):
            params.pop("channel")
        if isinstance(cfg, dict):
            values = list(cfg.values())
            cfg = values[0] if len(set(values)) == 1 else [cfg[c] for c in sorted(cfg)]
        if cfg is not None:
            args.append("config=" + literal(cfg, base, path=True))
    skipped = []
    for name, value in params.items():
        p = spec.params.get(name)
        if p is None or name in ("h5file", "out"):
            if not spec.open_options or name in ("h5file", "out"):
                skipped.append(name)
                continue
        elif not p.required and _same(p.default, value):
            continue
        if isinstance(value, dict):
            skipped.append(name)
            continue
        is_path = p.is_path if p is not None else False
        args.append(f"{name}={literal(value, base, path=is_path)}")
    stmt = f"{step} " + " ".join(args)
    if step == "convert":
        stmt += " -> " + literal(h5, base, path=True)
    if skipped:
        lines.append(f"# recorded but not step arguments: {', '.join(sorted(skipped))}")
    lines.append(stmt)
    return lines


def _same(default: Any, value: Any) -> bool:
    if isinstance(default, tuple):
        default = list(default)
    try:
        return bool(default == value) and type(default) is type(value) or (default is None and value is None)
    except Exception:  # noqa: BLE001 - odd defaults compare unequal
        return False


def export_recipe(h5file: str | Path, out: str | Path | None = None) -> str:
    """The recipe text reproducing ``h5file``; written to ``out`` when given.

    Paths are written relative to the recipe's folder (``out``'s folder, else the current folder)
    when they lie inside it.
    """
    path = Path(h5file)
    if not path.is_file():
        raise InputError("file not found", path=path)
    base = (Path(out).resolve().parent if out is not None else Path.cwd().resolve())
    records = collect_provenance(path)
    if not records:
        raise InputError("no xrfproc provenance in this file (no group has a 'step' attribute)", path=path)
    specs = S.step_specs()
    h5 = str(path.resolve())
    lines = [f"# Recipe reproducing {path.name}, exported from its provenance by xrfproc {__version__}.",
             "# Paths are relative to this recipe's folder.", ""]
    for rec in records:
        lines.extend(_statement(rec, h5, specs, base))
        lines.append("")
    text = "\n".join(lines).rstrip("\n") + "\n"
    if out is not None:
        Path(out).write_text(text, encoding="utf-8")
    return text
