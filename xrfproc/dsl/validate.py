"""Step-level checks made before running: choices, element symbols, input files, configurations,
``.cnc`` files, references with yields; and the files each step will write (so that later steps
may use them although they do not exist yet)."""
from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

from ..errors import XrfError
from . import parser as P
from . import signatures as S

if TYPE_CHECKING:  # pragma: no cover
    from .checker import Checker, PlannedStep

#: names that are lines or signals rather than elements (``norm=Rayl``)
#: step -> (group it reads, step that writes that group)
REQUIRES = {"normalise": ("fit", "fit"), "detlim": ("fit", "fit"), "quantify": ("norm", "normalise")}
#: step -> group it writes
WRITES = {"fit": "fit", "normalise": "norm", "detlim": "detlim"}
SIGNALS = {"Rayl", "Compt", "Rayleigh", "Compton", "Scatter", "Sum"}


@functools.lru_cache(maxsize=1)
def element_symbols() -> tuple[str, ...]:
    from ..core import xraydata

    return tuple(xraydata.symbol(z) for z in range(1, 104))


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, dict):  # {element: families}: the keys
        yield from value


def is_known(ck: "Checker", path: str) -> bool:
    """``path`` exists or an earlier step of the recipe writes it (or writes inside it)."""
    if os.path.exists(path) or path in ck.produced:
        return True
    prefix = path.rstrip(os.sep) + os.sep
    return any(p.startswith(prefix) for p in ck.produced)


def outputs(st: "PlannedStep") -> list[str]:
    """The files a step writes, as far as can be known before it runs."""
    kw = st.kwargs
    out = [v for name, v in kw.items() if name in S.OUTPUT_NAMES for v in _strings(v)]
    if st.name == "demo_dataset" and isinstance(kw.get("folder"), str):
        out += [os.path.join(kw["folder"], "demo_sample.h5"), os.path.join(kw["folder"], "demo_nist613.h5")]
    if st.name == "convert" and "out" not in kw:
        sources = list(_strings(kw.get("source")))
        if sources:
            from ..core.convert import default_output

            out.append(str(default_output(sources if len(sources) > 1 else sources[0], kw)))
    if st.name == "make_config" and "out" not in kw and isinstance(kw.get("h5file"), str):
        ch = kw.get("channel", 0)
        ch = f"channel{int(ch):02d}" if isinstance(ch, int) or str(ch).isdigit() else str(ch or "channel00")
        p = Path(kw["h5file"])
        out.append(str(p.with_name(f"{p.stem}_{ch}.cfg")))
    return [os.path.normpath(o) for o in out]


def validate_step(ck: "Checker", st: "PlannedStep", call: P.Call) -> list[tuple[str, P.Pos]]:
    """Problems with one planned step, each with the position of the argument concerned."""
    from .checker import Pending, suggest

    problems: list[tuple[str, P.Pos]] = []
    kw = st.kwargs

    def at(name: str) -> P.Pos:
        return st.arg_pos.get(name, st.pos)

    for (step, pname), options in ck.choices.items():
        v = kw.get(pname)
        if st.name == step and isinstance(v, str) and v not in options:
            problems.append((f"'{pname}' must be one of {', '.join(options)}, got '{v}'{suggest(v, list(options))}",
                             at(pname)))
    for pname in S.ELEMENT_NAMES & set(kw):
        for item in _strings(kw[pname]):
            sym = item.split("-", 1)[0].strip()
            if sym in SIGNALS or sym.isdigit() or "." in sym or "/" in sym:
                continue
            if sym not in element_symbols():
                problems.append((f"unknown element '{sym}'{suggest(sym, list(element_symbols()))}", at(pname)))
    if not ck.check_files:
        return problems
    for pname, value in kw.items():
        p = st.spec.params.get(pname)
        if p is None or not p.is_path or p.is_output or isinstance(value, Pending):
            continue
        for path in _strings(value):
            if not is_known(ck, path):
                if path in ck.missing_reported:
                    continue
                ck.missing_reported.add(path)
                shown = os.path.relpath(path, ck.base) if os.path.isabs(path) else path
                problems.append((f"file not found: '{shown}' (paths are relative to the recipe's folder {ck.base})",
                                 at(pname)))
            elif os.path.isfile(path):
                problem = _load_problem(st, pname, path)
                if problem:
                    problems.append((problem, at(pname)))
    h5 = kw.get("h5file")
    need = REQUIRES.get(st.name)
    if need and isinstance(h5, str) and is_known(ck, h5) and (h5, need[0]) not in ck.groups_done \
            and not _has_group(h5, need[0]):
        problems.append((f"'{os.path.basename(h5)}' has no {need[0]}/ group and no earlier step writes it: run "
                         f"'{need[1]}' on it first", at("h5file")))
    if isinstance(h5, str) and st.name in WRITES:
        ck.groups_done.add((h5, WRITES[st.name]))
    for ref in _strings(kw.get("references") if st.name == "quantify" else None):
        if is_known(ck, ref) and ref not in ck.detlim_done and not _has_group(ref, "elyield"):
            problems.append((f"reference '{os.path.basename(ref)}' has no elemental yields (elyield/): run "
                             "'detlim' on it first", at("references")))
    if st.name == "detlim" and isinstance(kw.get("h5file"), str):
        ck.detlim_done.add(kw["h5file"])
    problems.sort(key=lambda m: (m[1].line, m[1].col))
    ck.produced.update(outputs(st))
    st.produces = [Path(p) for p in outputs(st)]
    return problems


def _load_problem(st: "PlannedStep", pname: str, path: str) -> str | None:
    """Load ``.cnc`` and fit ``.cfg`` inputs the way the step will; None when they load."""
    try:
        if path.endswith(".cnc"):
            from ..core.cnc import read_cnc

            read_cnc(path)
        elif path.endswith(".cfg") and st.name == "fit" and pname == "config":
            from ..core import fitconfig

            mode = st.kwargs.get("mode", "fast")
            fitconfig.read_config(path, mode=mode if isinstance(mode, str) else "fast")
    except XrfError as exc:
        return str(exc)
    except (OSError, ValueError) as exc:
        return f"cannot read '{os.path.basename(path)}' ({exc})"
    return None


def _has_group(path: str, group: str) -> bool:
    try:
        import h5py

        with h5py.File(path, "r") as f:
            return group in f
    except OSError:
        return False
