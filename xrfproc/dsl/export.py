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


#: ``..`` steps a path written relative to the recipe may climb before it is written absolute instead
MAX_UP = 3


class PathWriter:
    """Writes the file names recorded in a file's provenance as the recipe needs them.

    Steps record paths as they were given: absolute, or relative to the working folder of the
    process that ran them, which the file does not record. A relative path is looked up against the
    folders it most likely started from: those that matched earlier paths, the file's own folder and
    its ancestors, then the current folder; the first where it exists wins (else the first candidate).
    The path is then written relative to the recipe's folder ``base`` (within :data:`MAX_UP` ``..``
    steps), else absolute, so the recipe runs from any working folder; bundled concentration files
    are written by name (the recipe finds them in the library).

    Parameters
    ----------
    base : Path
        The recipe's folder (absolute).
    h5file : Path
        The file whose provenance is exported (absolute).
    """

    def __init__(self, base: Path, h5file: Path):
        self.base = base
        self.origins: list[Path] = []
        self.candidates = [h5file.parent, *h5file.parent.parents, Path.cwd().resolve()]
        self.library = _library_dir()

    def absolute(self, text: str) -> str:
        """The recorded path ``text`` made absolute (see the class)."""
        p = Path(os.path.expanduser(text))
        if p.is_absolute():
            return os.path.normpath(str(p))
        tried = list(dict.fromkeys([*self.origins, *self.candidates]))
        for origin in tried:
            cand = origin / p
            if cand.exists():
                if origin not in self.origins:
                    self.origins.append(origin)
                return os.path.normpath(str(cand))
        return os.path.normpath(str(tried[0] / p))

    def write(self, text: str) -> str:
        """``text`` as the recipe writes it: relative to its folder where possible."""
        full = self.absolute(text)
        if self.library is not None and os.path.dirname(full) == str(self.library) and full.endswith(".cnc") \
                and not (self.base / os.path.basename(full)).exists():
            return os.path.basename(full)
        rel = os.path.relpath(full, self.base)
        if rel.split(os.sep)[:MAX_UP + 1].count("..") <= MAX_UP:
            return rel
        return full


def _library_dir() -> Path | None:
    try:
        from ..core.cnc import bundled_cnc

        return bundled_cnc("nist613").parent.resolve()
    except Exception:  # noqa: BLE001 - no library: cnc paths are written as other paths
        return None


def literal(value: Any, base: Path | PathWriter | None = None, path: bool = False) -> str:
    """A recipe literal for a JSON value (strings quoted and escaped); with ``path``, file names are
    written by ``base`` (a :class:`PathWriter`, or a folder: absolute names inside it made relative)."""
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
    if path and isinstance(base, PathWriter) and text:
        text = base.write(text)
    elif path and base is not None and os.path.isabs(text):
        rel = os.path.relpath(text, base)
        if not rel.startswith(".."):
            text = rel
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("\n", "\\n") + '"'


def _statement(rec: dict[str, Any], h5: str, specs: dict[str, S.StepSpec], base: PathWriter) -> list[str]:
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

    Paths are written relative to the recipe's folder (``out``'s folder, else the current folder), so
    that the recipe runs (and ``xrfrun --check`` passes) from any working folder; paths recorded
    relative to the folder the steps ran in are found first (see :class:`PathWriter`).
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
    writer = PathWriter(base, path.resolve())
    lines = [f"# Recipe reproducing {path.name}, exported from its provenance by xrfproc {__version__}.",
             "# Paths are relative to this recipe's folder.", ""]
    for rec in records:
        lines.extend(_statement(rec, h5, specs, writer))
        lines.append("")
    text = "\n".join(lines).rstrip("\n") + "\n"
    if out is not None:
        try:
            Path(out).write_text(text, encoding="utf-8")
        except OSError as exc:
            from ..errors import WriteError

            raise WriteError(f"cannot write the recipe: {exc.strerror or exc}", path=out) from None
    return text
