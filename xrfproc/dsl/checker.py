"""Validate a parsed recipe and turn it into a plan: a flat list of concrete step calls.

Everything that can be known before running is checked here, and every problem is reported as
``file:line:col: message`` with the source line and a caret: unknown steps and argument names
(with "did you mean"), argument types, units, element symbols, choices such as ``mode``, input
files that neither exist nor are written by an earlier step, fit configurations and ``.cnc`` files
that do not load. Loops are expanded, pipelines inlined, variables substituted and units converted
(:mod:`xrfproc.dsl.units`); step results bound with ``let x = step ...`` stay placeholders
(:class:`Pending`) filled in by the runner.

Paths in a recipe are relative to the folder of the recipe given to ``xrfrun`` (the main recipe,
also for statements in included files); see :mod:`xrfproc.dsl.paths`. A ``path_check`` (the MCP
server's data roots) sees every file the recipe names, inputs, outputs and the folders and
matches of ``for`` patterns, before anything runs; a refused path is a recipe error at its line.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import RecipeError, XrfError
from . import parser as P
from . import signatures as S
from . import units
from .paths import RecipePaths
from .plan import PathCheck, Pending, Plan, PlannedStep, kind, kinds_words, show, suggest

__all__ = ["check", "Checker", "Pending", "Plan", "PlannedStep", "PathCheck", "suggest"]

MAX_PIPELINE_DEPTH = 20
MAX_STEPS = 100_000


class _Err(Exception):
    def __init__(self, message: str, pos: P.Pos):
        super().__init__(message)
        self.message, self.pos = message, pos


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
                 specs: dict[str, S.StepSpec] | None = None, check_files: bool = True,
                 path_check: PathCheck | None = None):
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
        self.path_check = path_check
        self.paths = RecipePaths(base, self.produced, path_check)

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
        return Plan(self.program.path, self.base, self.steps, self.sources, env, self.path_check)

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
            try:
                found = self.paths.glob(value)
            except XrfError as exc:
                raise _Err(str(exc), node.pos) from None
            if not found:
                raise _Err(f"no file matches '{value}' (paths are relative to {self.base})", node.pos)
            return found
        if isinstance(value, Pending):
            raise _Err("a loop cannot run over the result of a step (it is known only when the recipe runs)",
                       node.pos)
        raise _Err(f"'for' runs over a list or a file pattern like \"scans/*.h5\", got {kind(value)}", node.pos)

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
                    raise _Err(f"${{{part.name}}} is {kind(v)} and cannot be put into a string", part.pos)
                out.append(show(v, None).strip('"') if not isinstance(v, str) else v)
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
        for out in planned.produces:  # files a step writes without the recipe naming them
            try:
                self.paths.verify(str(out), "output", output=True)
            except XrfError as exc:
                self.error(str(exc), call.pos, context)
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
            try:
                return self.paths.option(self._plain(value, name, pos), name)
            except XrfError as exc:
                raise _Err(str(exc), pos) from None
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
            raise _Err(f"'{name}' of '{spec.name}' expects {kinds_words(kinds)}, got {kind(value)}", pos)
        if isinstance(value, list):
            value = [self._plain(v, name, pos) for v in value]
        try:
            if p.is_path:
                value = self.paths.resolve(value, name, output=p.is_output)
            elif isinstance(value, list):  # file names inside lists (absorb=[[Fe], "matrix.cnc"])
                value = self.paths.resolve_files(value, name)
        except XrfError as exc:
            raise _Err(str(exc), pos) from None
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
        """A path (or list) made absolute against the recipe's folder (and checked)."""
        return self.paths.resolve(value)

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


def check(program: P.Program, base: str | Path | None = None, overrides: dict[str, P.Node] | None = None,
          check_files: bool = True, path_check: PathCheck | None = None) -> Plan:
    """Validate ``program`` and return its plan; raises :class:`RecipeError` listing every problem
    (``err.errors`` holds them one by one).

    ``base`` is the folder relative paths start from (default the recipe's folder); ``path_check``
    sees every file the recipe names before anything runs (see :data:`PathCheck`).
    """
    base = Path(base) if base is not None else program.folder
    return Checker(program, base.resolve(), overrides, check_files=check_files, path_check=path_check).run()
