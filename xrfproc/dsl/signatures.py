"""What the recipe language knows about the steps: the real :mod:`xrfproc.api` signatures.

Each public function of :mod:`xrfproc.api` is a step. Its parameters (names, defaults, the types
written in its annotations) come from :func:`inspect.signature`; annotations are read as text,
never evaluated. A façade function that passes ``**options`` on to a step implementation is looked
through to that implementation (:data:`DELEGATES`), so its options are checked as well.
"""
from __future__ import annotations

import importlib
import inspect as _inspect
from dataclasses import dataclass, field
from typing import Any, Callable

#: api function -> the implementation that receives its ``**options`` ("module:function")
DELEGATES = {
    "fit": "xrfproc.steps.fit:fit",
    "make_config": "xrfproc.steps.configure:make_config",
    "suggest_elements": "xrfproc.steps.configure:suggest_elements",
}

#: names a recipe may use for a parameter (alias -> API name), used when the step has the API name
ALIASES = {
    "I0": "I0norm", "i0": "I0norm", "cfg": "config", "cfgfile": "config", "energy": "energy_keV",
    "cnc": "cncfile", "file": "h5file", "channels": "channel", "output": "out", "reference": "references", "ref": "references",
    "pixel": "pix_size_um", "pixel_um": "pix_size_um", "scale": "scale_bar_um", "scale_um": "scale_bar_um", "ncol": "ncols", "cols_per_row": "ncols",
    "incidence": "incidence_deg", "exit": "exit_deg", "thickness": "thickness_um",
}

#: parameters holding paths (besides those annotated ``Path``)
PATH_NAMES = {"references", "h5file", "cncfile", "config", "source", "out", "folder", "ref", "matrix", "save", "reference",
              "cfgfile"}
#: path parameters a step writes (not checked for existence)
OUTPUT_NAMES = {"out", "folder", "save"}
#: parameters the runner supplies itself
RUNNER_NAMES = {"progress", "resume"}
#: parameters holding element symbols or line names (``Fe``, ``Fe-K``)
ELEMENT_NAMES = {"elements", "element", "absorb"}

_KIND_WORDS = {"str": "str", "Path": "path", "float": "float", "int": "int", "bool": "bool", "None": "none",
               "Sequence": "list", "list": "list", "tuple": "list", "dict": "dict", "Mapping": "dict",
               "Any": "any", "Element": "str", "np.ndarray": "list"}


@dataclass
class ParamSpec:
    """One parameter of a step as the checker sees it."""

    name: str
    kinds: frozenset[str]
    default: Any = _inspect.Parameter.empty
    positional: bool = True

    @property
    def required(self) -> bool:
        return self.default is _inspect.Parameter.empty

    @property
    def is_path(self) -> bool:
        return "path" in self.kinds or self.name in PATH_NAMES

    @property
    def is_output(self) -> bool:
        return self.name in OUTPUT_NAMES


@dataclass
class StepSpec:
    """A step: its callable and parameters (in order)."""

    name: str
    func: Callable[..., Any]
    params: dict[str, ParamSpec] = field(default_factory=dict)
    open_options: bool = False  # takes **options that nobody describes (accept any name)
    accepts_progress: bool = False
    accepts_resume: bool = False
    doc: str = ""

    def positional_names(self) -> list[str]:
        return [p.name for p in self.params.values() if p.positional]

    def resolve_name(self, name: str) -> str | None:
        """The API name of argument ``name`` (itself or through an alias), or None if unknown."""
        if name in self.params:
            return name
        alias = ALIASES.get(name)
        if alias is not None and alias in self.params:
            return alias
        return None

    def known_names(self) -> list[str]:
        return list(self.params) + [a for a, t in ALIASES.items() if t in self.params]


def annotation_kinds(annotation: Any, default: Any) -> frozenset[str]:
    """The value kinds an annotation allows ({"str", "path", "float", ...}; "any" when unsure).

    Annotations are strings here (``from __future__ import annotations``) and are read as text.
    """
    if annotation is _inspect.Parameter.empty or annotation is None:
        if default is _inspect.Parameter.empty or default is None:
            return frozenset({"any"})
        if isinstance(default, bool):
            return frozenset({"bool"})
        if isinstance(default, int):
            return frozenset({"int", "float"})
        if isinstance(default, float):
            return frozenset({"float"})
        if isinstance(default, str):
            return frozenset({"str"})
        return frozenset({"any"})
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == "|" and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    kinds = set()
    for part in parts:
        head = part.strip().split("[", 1)[0].strip().rsplit(".", 1)[-1] if "np." not in part else "np.ndarray"
        if head.startswith("Optional"):
            kinds.update({"none", "any"})
            continue
        kinds.add(_KIND_WORDS.get(head, "any"))
    if default is None:
        kinds.add("none")
    return frozenset(kinds)


def _params_of(func: Callable[..., Any]) -> tuple[list[_inspect.Parameter], bool]:
    sig = _inspect.signature(func)
    params = list(sig.parameters.values())
    var_kw = any(p.kind is p.VAR_KEYWORD for p in params)
    return [p for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)], var_kw


def _load(target: str) -> Callable[..., Any] | None:
    module, _, name = target.partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        return None


def build_spec(name: str, func: Callable[..., Any]) -> StepSpec:
    """The :class:`StepSpec` of an api function (looking through to its delegate for ``**options``)."""
    params, var_kw = _params_of(func)
    spec = StepSpec(name, func, doc=(_inspect.getdoc(func) or "").split("\n", 1)[0])
    for p in params:
        spec.params[p.name] = ParamSpec(p.name, annotation_kinds(p.annotation, p.default), p.default,
                                        p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD))
    if var_kw:
        delegate = _load(DELEGATES[name]) if name in DELEGATES else getattr(func, "__wrapped__", None)
        if delegate is None:
            spec.open_options = True
        else:
            dparams, dvar = _params_of(delegate)
            spec.open_options = dvar and name != "fit"  # fit's **options only reach the engine
            for p in dparams:
                if p.name not in spec.params:
                    spec.params[p.name] = ParamSpec(p.name, annotation_kinds(p.annotation, p.default), p.default,
                                                    positional=False)
    spec.accepts_progress = "progress" in spec.params
    spec.accepts_resume = "resume" in spec.params
    for hidden in RUNNER_NAMES:
        spec.params.pop(hidden, None)
    return spec


def step_specs() -> dict[str, StepSpec]:
    """Every step a recipe can call: the functions in ``xrfproc.api.__all__`` (read now, not cached,
    so steps added to the API are known at once)."""
    from .. import api

    out = {}
    for name in getattr(api, "__all__", []):
        obj = getattr(api, name, None)
        if obj is None or _inspect.isclass(obj) or not callable(obj) or name.startswith("_"):
            continue
        out[name] = build_spec(name, obj)
    return out
