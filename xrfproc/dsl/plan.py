"""What the checker makes of a recipe: a :class:`Plan` of :class:`PlannedStep` calls, and how its
values are shown in messages and listings."""
from __future__ import annotations

import difflib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from . import nodes as P
from . import signatures as S
from . import units

#: ``check(path, what=..., output=...)``: called for every file a recipe names (absolute, normalised)
#: before anything runs; raises an :class:`xrfproc.errors.XrfError` to refuse it (the MCP server's
#: data roots). ``output`` is true for files a step writes.
PathCheck = Callable[..., None]


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
        return f"{self.name} " + " ".join(f"{k}={show(v, base)}" for k, v in self.kwargs.items())

    @property
    def target(self) -> str:
        """The file the step works on (its first argument), for summaries."""
        for v in self.kwargs.values():
            return str(v)
        return ""


@dataclass
class Plan:
    """A checked recipe: the steps in order and the folder paths are relative to.

    ``path_check`` (when the recipe was checked with one) is applied again by the runner to the
    paths only known when a step has run (results of ``let x = step ...`` used as files).
    """

    path: str
    base: Path
    steps: list[PlannedStep]
    sources: P.Sources
    variables: dict[str, Any] = field(default_factory=dict)
    path_check: PathCheck | None = None


def show(v: Any, base: Path | None) -> str:
    """A value as a recipe would write it (paths relative to ``base``)."""
    if isinstance(v, list):
        return "[" + ", ".join(show(i, base) for i in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {show(i, base)}" for k, i in v.items()) + "}"
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


def suggest(word: str, candidates: list[str]) -> str:
    """`` (did you mean 'x'?)`` or an empty string."""
    near = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    if not near:
        low = {c.lower(): c for c in candidates}
        near = [low[word.lower()]] if word.lower() in low else []
    return f" (did you mean '{near[0]}'?)" if near else ""



def kind(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "none"
    if isinstance(value, (int, float)):
        return f"the number {show(value, None)}"
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


def kinds_words(kinds: frozenset[str]) -> str:
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

