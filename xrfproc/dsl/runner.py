"""Run a checked plan: each step calls its :mod:`xrfproc.api` function, with a progress bar.

Steps run in order. ``start`` (``xrfrun --from``) skips the steps before it, except those whose
result a later step uses (``let x = step ...``), which run again (they only read). A step that fails
stops the recipe with a :class:`RecipeError` at the step's line that says how to continue.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterator

from ..errors import RecipeError, XrfError
from ..progress import terminal_bar
from . import parser as P
from .checker import Pending, Plan, PlannedStep, suggest

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What happened to one step."""

    number: int
    name: str
    target: str
    status: str  # "done", "skipped", "failed"
    seconds: float = 0.0
    result: Any = None
    note: str = ""


def find_start(plan: Plan, text: str) -> int:
    """The step number ``--from`` names: a number, a step name (its first use) or ``line:N``."""
    text = text.strip()
    n = len(plan.steps)
    if text.isdigit():
        k = int(text)
        if not 1 <= k <= n:
            raise RecipeError(f"--from {text}: the recipe has steps 1 to {n}")
        return k
    if text.startswith("line:") and text[5:].isdigit():
        line = int(text[5:])
        for st in plan.steps:
            if st.pos.line >= line and st.pos.file == plan.path:
                return st.number
        raise RecipeError(f"--from {text}: no step at or after line {line}")
    for st in plan.steps:
        if st.name == text:
            return st.number
    raise RecipeError(f"--from {text}: no step '{text}' in the recipe{suggest(text, [s.name for s in plan.steps])}")


def _substitute(value: Any, results: dict[int, Any]) -> Any:
    if isinstance(value, Pending):
        return results[value.number]
    if isinstance(value, list):
        return [_substitute(v, results) for v in value]
    return value


def _uses(value: Any) -> set[int]:
    if isinstance(value, Pending):
        return {value.number}
    if isinstance(value, list):
        return set().union(*(_uses(v) for v in value)) if value else set()
    return set()


def format_result(result: Any, base: Path) -> str:
    """A short text for the summary."""
    def show(p: Any) -> str:
        s = str(p)
        if os.path.isabs(s):
            with contextlib.suppress(ValueError):
                s = os.path.relpath(s, base)
        return s

    if result is None:
        return "ok"
    if isinstance(result, (str, Path)):
        return show(result)
    if isinstance(result, (list, tuple)):
        text = ", ".join(show(r) for r in result)
        return text if len(text) <= 60 else text[:57] + "..."
    if isinstance(result, dict):
        warnings = result.get("warnings") or []
        for ch in (result.get("channels") or {}).values() if isinstance(result.get("channels"), dict) else []:
            if isinstance(ch, dict):
                warnings = list(warnings) + list(ch.get("warnings") or [])
        return f"ok, {len(warnings)} warning(s)" if warnings else "ok"
    return type(result).__name__


@contextlib.contextmanager
def _no_bar(description: str) -> Iterator[Callable[..., None]]:
    yield lambda done, total, message="": None


#: ``progress_for(step, total_steps)`` -> a context manager yielding the step's ``progress(done, total, message)``
ProgressFactory = Callable[[PlannedStep, int], ContextManager[Callable[..., None]]]


def _check_late_paths(plan: Plan, st: PlannedStep, kwargs: dict[str, Any]) -> None:
    """Apply the plan's path check to file arguments that were step results (known only now)."""
    if plan.path_check is None:
        return
    for name, value in st.kwargs.items():
        p = st.spec.params.get(name)
        if p is None or not p.is_path or not _uses(value):
            continue
        got = kwargs[name]
        for v in (got if isinstance(got, (list, tuple)) else [got]):
            if isinstance(v, (str, os.PathLike)):
                full = os.path.normpath(os.path.join(plan.base, os.fspath(v)))
                plan.path_check(full, what=name, output=p.is_output)


def run_plan(plan: Plan, start: int = 1, resume: bool = False, bar: bool = True,
             on_outcome: Callable[[Outcome], None] | None = None,
             progress_for: ProgressFactory | None = None) -> list[Outcome]:
    """Run the steps of ``plan`` from step ``start``; returns what happened to each.

    Each step gets a progress bar on the terminal (``bar``) or, with ``progress_for``, whatever
    progress reporter it makes (the MCP server's notifications). ``on_outcome`` is told about
    every step as it ends.

    Raises
    ------
    RecipeError
        A step failed (an :class:`XrfError` of the step); the message names the recipe line, the
        step and what to do next. The steps before it are done (``err.outcomes``).
    """
    results: dict[int, Any] = {}
    needed: set[int] = set()
    for st in plan.steps:
        if st.number >= start:
            for v in st.kwargs.values():
                needed |= _uses(v)
    outcomes: list[Outcome] = []
    total = len(plan.steps)
    for st in plan.steps:
        if st.number < start and st.number not in needed:
            outcomes.append(Outcome(st.number, st.name, st.target, "skipped"))
            continue
        kwargs = {k: _substitute(v, results) for k, v in st.kwargs.items()}
        if st.spec.accepts_resume and resume:
            kwargs["resume"] = True
        if progress_for is not None:
            bar_cm = progress_for(st, total)
        else:
            bar_cm = terminal_bar(f"[{st.number}/{total}] {st.name}") if bar else _no_bar("")
        t0 = time.perf_counter()
        log.info("step %d/%d: %s", st.number, total, st.describe(plan.base))
        try:
            _check_late_paths(plan, st, kwargs)
            with bar_cm as progress:
                if st.spec.accepts_progress:
                    kwargs["progress"] = progress
                result = st.spec.func(**kwargs)
        except XrfError as exc:
            out = Outcome(st.number, st.name, st.target, "failed", time.perf_counter() - t0, note=str(exc))
            outcomes.append(out)
            if on_outcome:
                on_outcome(out)
            err = P.recipe_error(f"step {st.number} ({st.name}) failed: {exc}", st.pos, plan.sources)
            err.outcomes = outcomes  # type: ignore[attr-defined]
            err.step = st.number  # type: ignore[attr-defined]
            raise err from None
        results[st.number] = result
        out = Outcome(st.number, st.name, st.target, "done", time.perf_counter() - t0, result)
        outcomes.append(out)
        if on_outcome:
            on_outcome(out)
    return outcomes


def summary_text(outcomes: list[Outcome], plan: Plan) -> str:
    """One line per step: number, step, file, seconds, result; then the totals."""
    def rel(s: str) -> str:
        if os.path.isabs(s):
            with contextlib.suppress(ValueError):
                return os.path.relpath(s, plan.base)
        return s

    width = max([len(o.name) for o in outcomes] + [4])
    fwidth = min(40, max([len(rel(o.target)) for o in outcomes] + [4]))
    lines = []
    for o in outcomes:
        if o.status == "done":
            what = format_result(o.result, plan.base)
            t = f"{o.seconds:7.1f} s"
        elif o.status == "skipped":
            what, t = "skipped (--from)", " " * 9
        else:
            what, t = "FAILED", f"{o.seconds:7.1f} s"
        lines.append(f"{o.number:3d}  {o.name:<{width}}  {rel(o.target):<{fwidth}}  {t}  {what}")
    done = sum(o.status == "done" for o in outcomes)
    secs = sum(o.seconds for o in outcomes)
    lines.append(f"{done} of {len(plan.steps)} steps done in {secs:.1f} s")
    return "\n".join(lines)


def plan_text(plan: Plan, start: int = 1) -> str:
    """The ``--dry-run`` listing: every step as it will be called, with its recipe line."""
    lines = []
    for st in plan.steps:
        mark = " " if st.number >= start else "-"
        bind = f"let {st.result_var} = " if st.result_var else ""
        lines.append(f"{mark}{st.number:3d}  {bind}{st.describe(plan.base)}    # {st.pos.file}:{st.pos.line}")
    return "\n".join(lines)
