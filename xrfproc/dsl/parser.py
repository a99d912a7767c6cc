"""Parse ``.xrf`` recipe text into a small tree of dataclasses (positions kept for error messages).

The grammar is ``grammar.lark`` (package data), parsed by lark's LALR parser with a postlexer that
turns indentation into block tokens. The tree's classes live in :mod:`.nodes` (re-exported here)
and the wording of syntax errors in :mod:`.syntax_errors`. Every problem is raised as
:class:`xrfproc.errors.RecipeError` formatted as ``file:line:col: message`` followed by the source
line and a caret under the column. Nothing in a recipe is ever evaluated as Python.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import lark
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedInput, VisitError
from lark.indenter import Indenter

from ..errors import RecipeError, XrfError
from .nodes import (Arg, Call, Const, DictExpr, Dims, For, Let, ListExpr, Node, Num, Param, Pipeline, Pos, Program,
                    Qty, Sources, Str, Var, Word, recipe_error)
from .syntax_errors import syntax_message

__all__ = ["parse", "parse_string", "parse_text", "parse_value", "IncludeCheck", "Pos", "Sources", "recipe_error",
           "Node", "Str", "Num", "Qty", "Dims", "Word", "Var", "Const", "ListExpr", "DictExpr", "Arg", "Call", "Let",
           "For", "Param", "Pipeline", "Program"]

MAX_INCLUDE_DEPTH = 16

#: called with the path of an included recipe before it is read; raises :class:`XrfError` to refuse it
IncludeCheck = Callable[[Path], None]


# --------------------------------------------------------------------------- lark plumbing
class _Indenter(Indenter):
    """Indentation to ``_INDENT``/``_DEDENT`` tokens; bad dedents become positioned recipe errors."""

    NL_type = "_NL"
    OPEN_PAREN_types = ["LPAR", "LSQB", "LBRACE"]
    CLOSE_PAREN_types = ["RPAR", "RSQB", "RBRACE"]
    INDENT_type = "_INDENT"
    DEDENT_type = "_DEDENT"
    tab_len = 8

    def _process(self, stream: Iterator[Token]) -> Iterator[Token]:
        token = None
        for token in stream:
            if token.type == self.NL_type:
                if self.paren_level > 0:
                    continue
                yield token
                indent_str = token.rsplit("\n", 1)[1] if "\n" in token else ""
                indent = indent_str.count(" ") + indent_str.count("\t") * self.tab_len
                line = token.end_line if token.end_line is not None else token.line
                if "\n" not in token:  # a comment on the first line
                    continue
                if indent > self.indent_level[-1]:
                    self.indent_level.append(indent)
                    yield Token(self.INDENT_type, indent_str, 0, line, len(indent_str) + 1, line, len(indent_str) + 1, 0)
                else:
                    while indent < self.indent_level[-1]:
                        self.indent_level.pop()
                        yield Token(self.DEDENT_type, indent_str, 0, line, len(indent_str) + 1, line,
                                    len(indent_str) + 1, 0)
                    if indent != self.indent_level[-1]:
                        raise _DedentProblem(line, len(indent_str) + 1, self.indent_level[-1])
                continue
            yield token
            if token.type in self.OPEN_PAREN_types:
                self.paren_level += 1
            elif token.type in self.CLOSE_PAREN_types:
                self.paren_level = max(0, self.paren_level - 1)
        while len(self.indent_level) > 1:
            self.indent_level.pop()
            line = token.end_line if token is not None and token.end_line else 1
            yield Token(self.DEDENT_type, "", 0, line, 1, line, 1, 0)


class _DedentProblem(Exception):
    def __init__(self, line: int, col: int, expected: int):
        super().__init__(line, col, expected)
        self.line, self.col, self.expected = line, col, expected


@functools.lru_cache(maxsize=1)
def _lark() -> Lark:
    grammar = (Path(__file__).with_name("grammar.lark")).read_text()
    return Lark(grammar, parser="lalr", postlex=_Indenter(), propagate_positions=True,
                maybe_placeholders=False, start=["start", "value"])


_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "t": "\t", "$": "$"}
_INTERP = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class _Build(Transformer):
    """lark tree -> dataclasses. Errors raised here carry their own position."""

    def __init__(self, file: str):
        super().__init__()
        self.file = file

    def _pos(self, tok: Token | lark.Tree) -> Pos:
        if isinstance(tok, Token):
            return Pos(self.file, tok.line or 1, tok.column or 1)
        meta = tok.meta
        return Pos(self.file, getattr(meta, "line", 1), getattr(meta, "column", 1))

    # values
    def string(self, items: list[Token]) -> Str:
        tok = items[0]
        pos = self._pos(tok)
        raw = tok[1:-1]
        out: list[str | Var] = []
        buf: list[str] = []
        i = 0
        while i < len(raw):
            ch = raw[i]
            if ch == "\\":
                nxt = raw[i + 1] if i + 1 < len(raw) else ""
                if nxt not in _ESCAPES:
                    raise _Positioned(f"unknown escape '\\{nxt}' in string (use \\\\, \\\", \\n, \\t or \\$)",
                                      Pos(self.file, pos.line, pos.col + 1 + i))
                buf.append(_ESCAPES[nxt])
                i += 2
                continue
            if ch == "$" and raw.startswith("${", i):
                m = _INTERP.match(raw, i)
                if m is None:
                    raise _Positioned("'${' in a string must be followed by a variable name and '}' "
                                      "(write \\$ for a dollar sign)", Pos(self.file, pos.line, pos.col + 1 + i))
                if buf:
                    out.append("".join(buf))
                    buf = []
                out.append(Var(Pos(self.file, pos.line, pos.col + 1 + i), m.group(1)))
                i = m.end()
                continue
            buf.append(ch)
            i += 1
        if buf or not out:
            out.append("".join(buf))
        return Str(pos, out)

    def number(self, items: list[Token]) -> Num:
        text = str(items[0])
        try:
            value: int | float = int(text)
        except ValueError:
            value = float(text)
        return Num(self._pos(items[0]), value)

    def quantity(self, items: list[Token]) -> Qty:
        tok = items[0]
        m = re.match(r"([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)[ \t]*(.*)$", str(tok))
        assert m is not None
        return Qty(self._pos(tok), float(m.group(1)), m.group(2))

    def dims(self, items: list[Token]) -> Dims:
        r, c = re.split("[x\xd7]", str(items[0]))
        return Dims(self._pos(items[0]), int(r), int(c))

    def word(self, items: list[Token]) -> Word:
        return Word(self._pos(items[0]), str(items[0]))

    def var(self, items: list[Token]) -> Var:
        return Var(self._pos(items[0]), str(items[0])[1:])

    @v_args(meta=True)
    def true(self, meta, items):  # noqa: ANN001, ANN201
        return Const(Pos(self.file, meta.line, meta.column), True)

    @v_args(meta=True)
    def false(self, meta, items):  # noqa: ANN001, ANN201
        return Const(Pos(self.file, meta.line, meta.column), False)

    @v_args(meta=True)
    def none(self, meta, items):  # noqa: ANN001, ANN201
        return Const(Pos(self.file, meta.line, meta.column), None)

    @v_args(meta=True)
    def list(self, meta, items):  # noqa: ANN001, ANN201
        return ListExpr(Pos(self.file, meta.line, meta.column), [i for i in items if i is not None])

    def pair(self, items: list) -> tuple[str, Node]:
        key = str(items[0])
        return (key[1:-1] if items[0].type == "STRING" else key, items[1])

    @v_args(meta=True)
    def dict(self, meta, items):  # noqa: ANN001, ANN201
        return DictExpr(Pos(self.file, meta.line, meta.column), [i for i in items if i is not None])

    # arguments and statements
    def kwarg(self, items: list) -> Arg:
        return Arg(self._pos(items[0]), str(items[0]), items[1])

    def flag(self, items: list) -> Arg:
        pos = self._pos(items[0])
        return Arg(pos, str(items[0]), Const(pos, True))

    def positional(self, items: list) -> Arg:
        return Arg(items[0].pos, None, items[0])

    def arrow(self, items: list) -> Node:
        return items[0]

    def call(self, items: list) -> Call:
        name = items[0]
        args = [a for a in items[1:] if isinstance(a, Arg)]
        outs = [a for a in items[1:] if not isinstance(a, Arg)]
        return Call(self._pos(name), str(name), args, outs[0] if outs else None)

    def let_stmt(self, items: list) -> Let:
        return Let(self._pos(items[0]), str(items[0]), items[1])

    def include_stmt(self, items: list) -> "_Include":
        return _Include(self._pos(items[0]), self.string(items)) if isinstance(items[0], Token) else items[0]

    def block(self, items: list) -> list[Node]:
        return list(items)

    def for_stmt(self, items: list) -> For:
        return For(self._pos(items[0]), str(items[0])[1:], items[1], items[2])

    def param(self, items: list) -> Param:
        return Param(self._pos(items[0]), str(items[0]), items[1] if len(items) > 1 else None)

    def pipeline_stmt(self, items: list) -> Pipeline:
        name = items[0]
        params = [p for p in items[1:-1] if isinstance(p, Param)]
        return Pipeline(self._pos(name), str(name), params, items[-1])

    def start(self, items: list) -> list[Node]:
        return list(items)


@dataclass
class _Include(Node):
    target: Str


class _Positioned(Exception):
    def __init__(self, message: str, pos: Pos):
        super().__init__(message)
        self.message, self.pos = message, pos


# --------------------------------------------------------------------------- entry points
def parse_text(text: str, file: str = "<recipe>", sources: Sources | None = None) -> list[Node]:
    """Parse recipe text (includes are left as ``_Include`` nodes; :func:`parse` resolves them)."""
    sources = sources if sources is not None else Sources()
    sources.text[file] = text
    src = text if text.endswith("\n") else text + "\n"
    parser = _lark()
    try:
        tree = parser.parse(src, start="start")
        return _Build(file).transform(tree)
    except _DedentProblem as exc:
        raise recipe_error(f"this line's indentation matches no enclosing block (expected {exc.expected} spaces)",
                           Pos(file, exc.line, exc.col), sources) from None
    except UnexpectedInput as exc:
        msg, line, col = syntax_message(exc, src)
        raise recipe_error(msg, Pos(file, line, col), sources) from None
    except VisitError as exc:
        inner = exc.orig_exc
        if isinstance(inner, _Positioned):
            raise recipe_error(inner.message, inner.pos, sources) from None
        raise
    except LarkError as exc:  # anything else lark can say about the text
        raise recipe_error(f"cannot parse the recipe ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                           Pos(file, 1, 1), sources) from None
    except RecursionError:
        raise recipe_error("the recipe is nested too deeply", Pos(file, 1, 1), sources) from None


def parse_value(text: str, where: str = "--set") -> Node:
    """Parse one value (for ``--set name=value``); raises :class:`RecipeError`."""
    sources = Sources()
    sources.text[where] = text
    parser = _lark()
    try:
        tree = parser.parse(text.strip(), start="value")
        return _Build(where).transform(tree)
    except (LarkError, _DedentProblem, RecursionError) as exc:
        inner = getattr(exc, "orig_exc", None)
        if isinstance(inner, _Positioned):
            raise recipe_error(inner.message, inner.pos, sources) from None
        raise RecipeError(f"{where}: cannot read {text!r} as a value") from None


def parse(path: str | Path, display: str | None = None, check_include: IncludeCheck | None = None) -> Program:
    """Parse a recipe file and the files it includes.

    ``include "x.xrf"`` paths are relative to the folder of the file that includes them; an
    included file's statements take the place of the include statement. ``check_include`` (the
    MCP server's data roots) sees every included path before it is read and may refuse it.
    """
    path = Path(path)
    name = display if display is not None else str(path)
    sources = Sources()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe ({getattr(exc, 'strerror', None) or exc})", path=name) from None
    stmts = _resolve_includes(parse_text(text, name, sources), path, name, sources, [path.resolve()], check_include)
    return Program(name, stmts, sources, path.resolve().parent)


def parse_string(text: str, file: str = "<recipe>", folder: str | Path = ".",
                 check_include: IncludeCheck | None = None) -> Program:
    """Parse recipe text held in memory (includes relative to ``folder``; see :func:`parse`)."""
    sources = Sources()
    stmts = _resolve_includes(parse_text(text, file, sources), Path(folder) / file, file, sources,
                              [(Path(folder) / file).resolve()], check_include)
    return Program(file, stmts, sources, Path(folder).resolve())


def _resolve_includes(stmts: list[Node], path: Path, name: str, sources: Sources, stack: list[Path],
                      check: IncludeCheck | None = None) -> list[Node]:
    out: list[Node] = []
    for st in stmts:
        if isinstance(st, _Include):
            if len(st.target.parts) != 1 or not isinstance(st.target.parts[0], str):
                raise recipe_error("an include path cannot contain ${variables}", st.target.pos, sources)
            rel = st.target.parts[0]
            target = path.parent / rel
            tname = str(Path(name).parent / rel) if Path(rel).is_absolute() is False else rel
            if check is not None:
                try:
                    check(target)
                except XrfError as exc:
                    raise recipe_error(f"include '{rel}' refused: {exc}", st.target.pos, sources) from None
            if target.resolve() in stack:
                raise recipe_error(f"'{rel}' includes itself (through {len(stack)} file(s))", st.target.pos, sources)
            if len(stack) >= MAX_INCLUDE_DEPTH:
                raise recipe_error("includes nested too deeply", st.target.pos, sources)
            try:
                text = target.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                raise recipe_error(f"included recipe '{rel}' not found (paths are relative to this file's folder)",
                                   st.target.pos, sources) from None
            inner = parse_text(text, tname, sources)
            out.extend(_resolve_includes(inner, target, tname, sources, stack + [target.resolve()], check))
        elif isinstance(st, (For, Pipeline)):
            st.body = _resolve_includes(st.body, path, name, sources, stack, check)
            out.append(st)
        else:
            out.append(st)
    return out
