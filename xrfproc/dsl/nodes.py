"""The recipe tree: positions, the source text kept for messages, and the node dataclasses.

:mod:`xrfproc.dsl.parser` builds these from recipe text; the checker walks them. A
:class:`RecipeError` made by :func:`recipe_error` says ``file:line:col: message`` followed by the
source line and a caret under the column.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Union

from ..errors import RecipeError

__all__ = ["Pos", "Sources", "recipe_error", "Node", "Str", "Num", "Qty", "Dims", "Word", "Var", "Const", "ListExpr",
           "DictExpr", "Arg", "Call", "Let", "For", "Param", "Pipeline", "Program"]


# --------------------------------------------------------------------------- positions and errors
@dataclass(frozen=True)
class Pos:
    """Where something is in a recipe: the file as the user named it, 1-based line and column."""

    file: str
    line: int
    col: int


class Sources:
    """The text of every recipe file read, to quote the offending line in messages."""

    def __init__(self) -> None:
        self.text: dict[str, str] = {}

    def line(self, file: str, line: int) -> str | None:
        text = self.text.get(file)
        if text is None:
            return None
        lines = text.splitlines()
        return lines[line - 1] if 1 <= line <= len(lines) else None


def recipe_error(message: str, pos: Pos | None, sources: Sources | None = None) -> RecipeError:
    """A :class:`RecipeError` saying ``file:line:col: message``, the source line and a caret."""
    if pos is None:
        return RecipeError(message)
    src = sources.line(pos.file, pos.line) if sources is not None else None
    body = message
    if src is not None:
        shown = src.replace("\t", " ")
        col = max(1, min(pos.col, len(shown) + 1))
        body += f"\n    {shown}\n    {' ' * (col - 1)}^"
    err = RecipeError(body, path=pos.file, dataset=f"{pos.line}:{pos.col}")
    err.short = f"{pos.file}:{pos.line}:{pos.col}: {message}"  # type: ignore[attr-defined]
    err.pos = pos  # type: ignore[attr-defined]
    return err


# --------------------------------------------------------------------------- the tree
@dataclass
class Node:
    pos: Pos


@dataclass
class Str(Node):
    """A string; ``parts`` alternates text and :class:`Var` references from ``${name}``."""

    parts: list[Union[str, "Var"]]


@dataclass
class Num(Node):
    value: int | float


@dataclass
class Qty(Node):
    """A number with a unit (``15um``, ``18 keV``); converted where it meets a parameter."""

    value: float
    unit: str


@dataclass
class Dims(Node):
    rows: int
    cols: int


@dataclass
class Word(Node):
    """A bare word in argument position: text (``mode=fast``, ``[Fe, Cu]``)."""

    text: str


@dataclass
class Var(Node):
    name: str


@dataclass
class Const(Node):
    value: bool | None


@dataclass
class ListExpr(Node):
    items: list[Node]


@dataclass
class DictExpr(Node):
    """``{Fe: [Ka, Kb], "Pb": L}``: keys are names or strings."""

    items: list[tuple[str, Node]]


@dataclass
class Arg(Node):
    """``name=value``, a bare flag (``value`` is true) or a positional value (``name`` None)."""

    name: str | None
    value: Node


@dataclass
class Call(Node):
    step: str
    args: list[Arg]
    out: Node | None = None


@dataclass
class Let(Node):
    name: str
    value: Node  # an expression or a Call


@dataclass
class For(Node):
    var: str
    iterable: Node
    body: list[Node]


@dataclass
class Param(Node):
    name: str
    default: Node | None


@dataclass
class Pipeline(Node):
    name: str
    params: list[Param]
    body: list[Node]


@dataclass
class Program:
    """A parsed recipe with its includes spliced in, and the text of every file read."""

    path: str
    statements: list[Node]
    sources: Sources = field(default_factory=Sources)
    folder: Path = field(default_factory=Path)  # the folder relative paths in the recipe start from
