"""Validate a parsed recipe and turn it into a plan: a flat list of concrete step calls.

Everything that can be known before running is checked here, and every problem is reported as
``file:line:col: message`` with the source line and a caret: unknown steps and argument names
(with "did you mean"), argument types, units, element symbols, choices such as ``mode``, input
files that neither exist nor are written by an earlier step, fit configurations and ``.cnc`` files
that do not load. Loops are expanded, pipelines inlined, variables substituted and units converted
(:mod:`xrfproc.dsl.units`); step results bound with ``let x = step ...`` stay placeholders
(:class:`Pending`) filled in by the runner.

Paths in a recipe are relative to the folder of the recipe given to ``xrfrun`` (the main recipe,
also for statements in included files). A ``.cnc`` file name without a folder that is not found
there is looked up in the reference-material library (``$XRFPROC_CNC_DIR``).
"""
from __future__ import annotations

import difflib
import fnmatch
import glob as _glob
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import RecipeError, XrfError
from . import parser as P
from . import signatures as S
from . import units

MAX_PIPELINE_DEPTH = 20
MAX_STEPS = 100_000


@dataclass(frozen=True)
class Pending:
    """The result of an earlier step (``let x = step ...``), known only when it has run."""

    number: int
    step: str

    def __str__(self) -> str:
        return f"<result of step {self.number} ({self.step})>"


@dataclass
class PlannedStep:
    """One call of an api function, with its arguments checked and converted."""

    number: int
    name: str
    spec: S.StepSpec
    kwargs: dict[str, Any]
    pos: P.Pos
    result_var: str | None = None
    produces: list[Path] = field(default_factory=list)
    context: str = ""
    arg_pos: dict[str, P.Pos] = field(default_factory=dict)

    def describe(self, base: Path | None = None) -> str:
        """``fit data/x.h5 config=data/x.cfg mode=fast`` (paths shown relative to ``base``)."""
        return f"{self.name} " + " ".join(f"{k}={_show(v, base)}" for k, v in self.kwargs.items())

    @property
    def target(self) -> str:
        """The file the step works on (its first argument), for summaries."""
        for v in self.kwargs.values():
            return str(v)
        return ""


@dataclass
class Plan:
    """A checked recipe: the steps in order and the folder paths are relative to."""

    path: str
    base: Path
    steps: list[PlannedStep]
    sources: P.Sources
    variables: dict[str, Any] = field(default_factory=dict)


def _show(v: Any, base: Path | None) -> str:
    if isinstance(v, list):
        return "[" + ", ".join(_show(i, base) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_show(i, base)}" for k, i in v.items()) + "}"
    if isinstance(v, str):
        if base is not None and os.path.isabs(v):
            try:
                v = os.path.relpath(v, base)
            except ValueError:
                pass
        return f'"{v}"'
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "none"
    return str(v)


class _Err(Exception):
    def __init__(self, message: str, pos: P.Pos):
        super().__init__(message)
        self.message, self.pos = message, pos


def suggest(word: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not near:
        low = {c.lower(): c for c in candidates}
        near = [low[word.lower()]] if word.lower() in low else []
    return f" (did you mean '{near[0]}'?)" if near else ""


def _cnc_library(name: str) -> Path | None:
    try:
        from ..core.cnc import bundled_cnc
        return bundled_cnc(name)
    except (XrfError, ImportError):
        return None


def _choices() -> dict[tuple[str, str], tuple[str, ...]]:
    from .. import api
    from ..steps.fit import MODES

    out: dict[tuple[str, str], tuple[str, ...]] = {
        ("fit", "mode"): tuple(MODES), ("normalise", "method"): ("nearest", "linear", "cubic"),
        ("simulate", "scan"): ("raster", "snake", "timetriggered"),
    }
    try:
        out[("convert", "kind")] = ("auto", *api.converter_kinds())
    except Exception:  # noqa: BLE001 - a broken converter registry must not break checking
        pass
    return out


class Checker:
    """Walks the statements with an environment of variables and builds the plan."""

    def __init__(self, program: P.Program, base: Path, overrides: dict[str, P.Node] | None = None,
                 specs: dict[str, S.StepSpec] | None = None, check_files: bool = True):
        self.program, self.base = program, base
        self.sources = program.sources
        self.overrides = dict(overrides or {})
        self.used_overrides: set[str] = set()
        self.specs = specs if specs is not None else S.step_specs()
        self.check_files = check_files
        self.errors: list[RecipeError] = []
        self._seen: set[tuple[str, P.Pos]] = set()
        self.steps: list[PlannedStep] = []
        self.produced: set[str] = set()
        self.pipelines: dict[str, P.Pipeline] = {}
        self.choices = _choices()
        self.detlim_done: set[str] = set()
        self.groups_done: set[tuple[str, str]] = set()
        self.missing_reported: set[str] = set()
        self._where: dict[str, P.Pos] = {}

    # ------------------------------------------------------------------ errors
    def error(self, message: str, pos: P.Pos, context: str = "") -> None:
        key = (message, pos)
        if key in self._seen:
            return
        self._seen.add(key)
        self.errors.append(P.recipe_error(message + context, pos, self.sources))

    # ------------------------------------------------------------------ statements
    def run(self) -> Plan:
        env: dict[str, Any] = {}
        for st in self.program.statements:
            if isinstance(st, P.Pipeline):
                self.define_pipeline(st)
        for name, node in self.overrides.items():
            if not any(isinstance(s, P.Let) and s.name == name for s in self.program.statements):
                try:  # a variable the recipe uses but does not define with let
                    env[name] = self.evaluate(node, {})
                except _Err as exc:
                    self.error(exc.message, exc.pos)
        self.block(self.program.statements, env, top=True)
        unused = sorted(set(self.overrides) - self.used_overrides)
        for name in unused:
            defined = sorted({s.name for s in self.program.statements if isinstance(s, P.Let)})
            self.errors.append(RecipeError(f"--set {name}: the recipe uses no variable '{name}'"
                                           f"{suggest(name, defined)}"))
        if self.errors:
            err = RecipeError("\n".join(str(e) for e in self.errors))
            err.errors = self.errors  # type: ignore[attr-defined]
            raise err
        return Plan(self.program.path, self.base, self.steps, self.sources, env)

    def define_pipeline(self, st: P.Pipeline) -> None:
        if st.name in self.specs:
            self.error(f"pipeline '{st.name}' has the name of a step; choose another name", st.pos)
        elif st.name in self.pipelines:
            self.error(f"pipeline '{st.name}' is defined twice", st.pos)
        names = [p.name for p in st.params]
        for p in st.params:
            if names.count(p.name) > 1:
                self.error(f"parameter '{p.name}' appears twice", p.pos)
        self.pipelines.setdefault(st.name, st)

    def block(self, stmts: list[P.Node], env: dict[str, Any], top: bool = False, context: str = "",
              depth: int = 0) -> None:
        for st in stmts:
            try:
                self.statement(st, env, top, context, depth)
            except _Err as exc:
                self.error(exc.message, exc.pos, context)

    def statement(self, st: P.Node, env: dict[str, Any], top: bool, context: str, depth: int) -> None:
        if len(self.steps) > MAX_STEPS:
            raise _Err(f"the recipe expands to more than {MAX_STEPS} steps", st.pos)
        if isinstance(st, P.Let):
            v = st.value
            if isinstance(v, P.Call) and not v.args and v.out is None and v.step not in self.specs \
                    and v.step not in self.pipelines:
                st.value = P.Word(v.pos, v.step)  # `let mode = fast`: a word, not a step
            if isinstance(st.value, P.Call):
                if top and st.name in self.overrides:
                    self.used_overrides.add(st.name)
                    env[st.name] = self.evaluate(self.overrides[st.name], env)
                    return
                env[st.name] = self.call(st.value, env, context, depth, result_var=st.name)
            elif top and st.name in self.overrides:
                self.used_overrides.add(st.name)
                env[st.name] = self.evaluate(self.overrides[st.name], env)
            else:
                env[st.name] = self.evaluate(st.value, env)
        elif isinstance(st, P.Call):
            self.call(st, env, context, depth)
        elif isinstance(st, P.For):
            items = self.iterate(st.iterable, env)
            for item in items:
                inner = dict(env)
                inner[st.var] = item
                self.block(st.body, inner, False, context, depth)
        elif isinstance(st, P.Pipeline):
            if not top:
                raise _Err("a pipeline is defined at the top level of a recipe, not inside a block", st.pos)
        else:  # pragma: no cover - the parser makes nothing else
            raise _Err(f"unexpected statement {type(st).__name__}", st.pos)

    def iterate(self, node: P.Node, env: dict[str, Any]) -> list[Any]:
        value = self.evaluate(node, env)
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            if not any(ch in value for ch in "*?["):
                return [value]
            root = str(self.base)
            found = set(_glob.glob(value, root_dir=root) if not os.path.isabs(value) else _glob.glob(value))
            pattern = value if os.path.isabs(value) else os.path.normpath(os.path.join(root, value))
            for p in self.produced:
                if fnmatch.fnmatch(p, pattern):
                    found.add(p if os.path.isabs(value) else os.path.relpath(p, root))
            if not found:
                raise _Err(f"no file matches '{value}' (paths are relative to {self.base})", node.pos)
            return sorted(found)
        if isinstance(value, Pending):
            raise _Err("a loop cannot run over the result of a step (it is known only when the recipe runs)",
                       node.pos)
        raise _Err(f"'for' runs over a list or a file pattern like \"scans/*.h5\", got {_kind(value)}", node.pos)

    # ------------------------------------------------------------------ values
    def evaluate(self, node: P.Node, env: dict[str, Any]) -> Any:
        if isinstance(node, P.Str):
            out = []
            for part in node.parts:
                if isinstance(part, str):
                    out.append(part)
                    continue
                v = self.lookup(part, env)
                if isinstance(v, (list, dict, Pending)) or v is None:
                    raise _Err(f"${{{part.name}}} is {_kind(v)} and cannot be put into a string", part.pos)
                out.append(_show(v, None).strip('"') if not isinstance(v, str) else v)
            return "".join(out)
        if isinstance(node, P.Num):
            return node.value
        if isinstance(node, P.Qty):
            try:
                units.check_unit(node.unit)
            except units.UnitError as exc:
                raise _Err(str(exc), node.pos) from None
            return units.Quantity(node.value, node.unit)
        if isinstance(node, P.Dims):
            return [node.rows, node.cols]
        if isinstance(node, P.Word):
            return node.text
        if isinstance(node, P.Const):
            return node.value
        if isinstance(node, P.Var):
            return self.lookup(node, env)
        if isinstance(node, P.ListExpr):
            return [self.evaluate(i, env) for i in node.items]
        if isinstance(node, P.DictExpr):
            out_d: dict[str, Any] = {}
            for key, item in node.items:
                if key in out_d:
                    raise _Err(f"key '{key}' appears twice", item.pos)
                out_d[key] = self.evaluate(item, env)
            return out_d
        if isinstance(node, P.Call):
            raise _Err("a step call is not a value here; bind its result first with 'let name = step ...'", node.pos)
        raise _Err(f"unexpected {type(node).__name__}", node.pos)

    def lookup(self, var: P.Var, env: dict[str, Any]) -> Any:
        if var.name in env:
            return env[var.name]
        hint = suggest(var.name, list(env))
        if not hint:
            hint = f" (define it with 'let {var.name} = ...' or --set {var.name}=...)"
        raise _Err(f"undefined variable '${var.name}'{hint}", var.pos)

    # ------------------------------------------------------------------ calls
    def call(self, call: P.Call, env: dict[str, Any], context: str, depth: int,
             result_var: str | None = None) -> Any:
        if call.step in self.pipelines:
            if result_var is not None:
                raise _Err(f"pipeline '{call.step}' has no result to bind with let", call.pos)
            self.expand_pipeline(call, env, context, depth)
            return None
        spec = self.specs.get(call.step)
        if spec is None:
            names = sorted(set(self.specs) | set(self.pipelines))
            raise _Err(f"unknown step '{call.step}'{suggest(call.step, names)}", call.pos)
        kwargs = self.bind(spec, call, env)
        number = len(self.steps) + 1
        planned = PlannedStep(number, spec.name, spec, kwargs, call.pos, result_var, context=context,
                              arg_pos=dict(self._where))
        from .validate import validate_step

        for message, pos in validate_step(self, planned, call):
            self.error(message, pos, context)
        self.steps.append(planned)
        return Pending(number, spec.name) if result_var is not None else None

    def bind(self, spec: S.StepSpec, call: P.Call, env: dict[str, Any]) -> dict[str, Any]:
        """Positional and keyword arguments -> ``{api name: checked value}``."""
        out: dict[str, Any] = {}
        where: dict[str, P.Pos] = {}
        positional = spec.positional_names()
        seen_keyword = False
        for arg in call.args:
            if arg.name is None:
                if seen_keyword:
                    raise _Err("a value without a name must come before the name=value arguments", arg.pos)
                free = [n for n in positional if n not in out]
                if not free:
                    raise _Err(f"too many values without a name for '{spec.name}' (it takes "
                               f"{len(positional)}: {', '.join(positional)})", arg.pos)
                name = free[0]
            else:
                seen_keyword = True
                name = spec.resolve_name(arg.name)
                if name is None:
                    if spec.open_options:
                        name = arg.name
                    else:
                        raise _Err(f"'{spec.name}' has no argument '{arg.name}'"
                                   f"{suggest(arg.name, spec.known_names())}", arg.pos)
            if name in out:
                raise _Err(f"argument '{name}' given twice", arg.pos)
            out[name] = self.coerce(spec, name, self.evaluate(arg.value, env), arg.value.pos)
            where[name] = arg.value.pos
        if call.out is not None:
            target = spec.resolve_name("out")
            if target is None:
                raise _Err(f"'{spec.name}' writes no output file, '->' does not apply", call.out.pos)
            if target in out:
                raise _Err(f"output given twice ('->' and '{target}=')", call.out.pos)
            out[target] = self.coerce(spec, target, self.evaluate(call.out, env), call.out.pos)
            where[target] = call.out.pos
        missing = [p.name for p in spec.params.values() if p.required and p.name not in out]
        if missing:
            raise _Err(f"'{spec.name}' needs {', '.join(repr(m) for m in missing)}", call.pos)
        # keep the signature's order for display and the runner
        order = list(spec.params)
        ordered = {k: out[k] for k in sorted(out, key=lambda k: order.index(k) if k in order else len(order))}
        self._where = where
        return ordered

    def coerce(self, spec: S.StepSpec, name: str, value: Any, pos: P.Pos) -> Any:
        """Check a value against the parameter's kinds, convert units and resolve paths."""
        p = spec.params.get(name)
        if p is None:  # an open **option
            return self._plain(value, name, pos)
        if isinstance(value, Pending):
            return value
        if isinstance(value, units.Quantity):
            try:
                value = units.for_parameter(name, value)
            except units.UnitError as exc:
                raise _Err(str(exc), pos) from None
        kinds = p.kinds
        if "any" in kinds:
            ok = True
        elif value is None:
            ok = "none" in kinds
        elif isinstance(value, bool):
            ok = "bool" in kinds
        elif isinstance(value, int):
            ok = bool(kinds & {"int", "float"})
        elif isinstance(value, float):
            ok = "float" in kinds or ("int" in kinds and value.is_integer())
            if ok and "float" not in kinds:
                value = int(value)
        elif isinstance(value, str):
            ok = bool(kinds & {"str", "path"})
        elif isinstance(value, (list, dict)):
            ok = bool(kinds & {"list", "dict"})
        else:
            ok = False
        if not ok:
            raise _Err(f"'{name}' of '{spec.name}' expects {_kinds_words(kinds)}, got {_kind(value)}", pos)
        if isinstance(value, list):
            value = [self._plain(v, name, pos) for v in value]
        if p.is_path:
            value = self.resolve_path(value)
        elif isinstance(value, list):  # file names inside lists (absorb=[[Fe], "matrix.cnc"])
            value = self._resolve_files(value)
        return value

    def _resolve_files(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self._resolve_files(v) for v in value]
        if isinstance(value, str) and value.endswith((".cnc", ".cfg", ".h5")):
            return self.resolve_path(value)
        return value

    def _plain(self, value: Any, name: str, pos: P.Pos) -> Any:
        if isinstance(value, units.Quantity):
            try:
                return units.for_parameter(name, value)
            except units.UnitError as exc:
                raise _Err(str(exc), pos) from None
        if isinstance(value, list):
            return [self._plain(v, name, pos) for v in value]
        return value

    def resolve_path(self, value: Any) -> Any:
        if isinstance(value, list):
            return [self.resolve_path(v) for v in value]
        if isinstance(value, str) and value:
            p = Path(os.path.expanduser(value))
            if not p.is_absolute():
                cand = self.base / p
                if value.endswith(".cnc") and len(p.parts) == 1 and not cand.exists() \
                        and str(cand) not in self.produced:
                    lib = _cnc_library(value)
                    if lib is not None:
                        return str(lib)
                p = cand
            return os.path.normpath(str(p))
        return value

    def expand_pipeline(self, call: P.Call, env: dict[str, Any], context: str, depth: int) -> None:
        pl = self.pipelines[call.step]
        if depth >= MAX_PIPELINE_DEPTH:
            raise _Err(f"pipeline '{pl.name}' calls itself too deeply", call.pos)
        names = [p.name for p in pl.params]
        bound: dict[str, Any] = {}
        seen_keyword = False
        for arg in call.args:
            if arg.name is None:
                if seen_keyword:
                    raise _Err("a value without a name must come before the name=value arguments", arg.pos)
                free = [n for n in names if n not in bound]
                if not free:
                    raise _Err(f"too many values for pipeline '{pl.name}' ({', '.join(names) or 'no parameters'})",
                               arg.pos)
                key = free[0]
            else:
                seen_keyword = True
                key = arg.name
                if key not in names:
                    raise _Err(f"pipeline '{pl.name}' has no parameter '{key}'{suggest(key, names)}", arg.pos)
            if key in bound:
                raise _Err(f"argument '{key}' given twice", arg.pos)
            bound[key] = self.evaluate(arg.value, env)
        if call.out is not None:
            raise _Err(f"pipeline '{pl.name}' takes no '->' output", call.out.pos)
        inner = dict(env)
        for p in pl.params:
            if p.name in bound:
                inner[p.name] = bound[p.name]
            elif p.default is not None:
                inner[p.name] = self.evaluate(p.default, env)
            else:
                raise _Err(f"pipeline '{pl.name}' needs '{p.name}'", call.pos)
        note = f" (in pipeline '{pl.name}' called at {call.pos.file}:{call.pos.line})"
        self.block(pl.body, inner, False, context or note, depth + 1)


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (int, float)):
        return f"the number {_show(value, None)}"
    if isinstance(value, units.Quantity):
        return f"the quantity {value}"
    if isinstance(value, str):
        return f"the text \"{value}\""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping {...}"
    if isinstance(value, Pending):
        return str(value)
    return type(value).__name__


def _kinds_words(kinds: frozenset[str]) -> str:
    words = {"str": "text", "path": "a file path", "float": "a number", "int": "a whole number",
             "bool": "true/false", "none": "none", "list": "a list", "dict": "a list"}
    ws = []
    if "float" in kinds:
        kinds = kinds - {"int"}
    for k in ("path", "str", "float", "int", "bool", "list", "dict", "none"):
        if k in kinds and words[k] not in ws:
            if k == "str" and "path" in kinds:
                continue
            ws.append(words[k])
    return " or ".join(ws) if ws else "another value"


def check(program: P.Program, base: str | Path | None = None, overrides: dict[str, P.Node] | None = None,
          check_files: bool = True) -> Plan:
    """Validate ``program`` and return its plan; raises :class:`RecipeError` listing every problem
    (``err.errors`` holds them one by one)."""
    base = Path(base) if base is not None else program.folder
    return Checker(program, base.resolve(), overrides, check_files=check_files).run()
