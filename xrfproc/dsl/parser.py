"""Parse ``.xrf`` recipe text into a small tree of dataclasses (positions kept for error messages).

The grammar is ``grammar.lark`` (package data), parsed by lark's LALR parser with a postlexer that
turns indentation into block tokens. Every problem is raised as :class:`xrfproc.errors.RecipeError`
formatted as ``file:line:col: message`` followed by the source line and a caret under the column.
Nothing in a recipe is ever evaluated as Python.
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Union

import lark
from lark.indenter import Indenter
from lark import Lark, Token, Transformer, v_args
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken, VisitError

from ..errors import RecipeError

MAX_INCLUDE_DEPTH = 16


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


# --------------------------------------------------------------------------- friendly syntax errors
_TOKEN_WORDS = {
    "NAME": "a name", "VAR": "a $variable", "STRING": "a string", "NUMBER": "a number", "QUANTITY": "a number with a unit",
    "DIMS": "dimensions like 10x20", "_NL": "the end of the line", "_INDENT": "an indented block",
    "_DEDENT": "the end of the block", "EQUAL": "'='", "LSQB": "'['", "RSQB": "']'", "LPAR": "'('", "RPAR": "')'",
    "LBRACE": "'{'", "RBRACE": "'}'", "COMMA": "','", "COLON": "':'", "__ANON_0": "'->'", "$END": "the end of the recipe", "LET": "'let'",
    "FOR": "'for'", "IN": "'in'", "PIPELINE": "'pipeline'", "INCLUDE": "'include'", "TRUE": "'true'",
    "FALSE": "'false'", "NONE": "'none'", "MORETHAN": "'->'",
}


def _describe_token(tok: Token) -> str:
    t = tok.type
    if t == "_NL":
        return "end of line"
    if t == "$END":
        return "end of the recipe"
    if t == "_INDENT":
        return "indentation"
    if t == "_DEDENT":
        return "end of the indented block"
    if t == "STRING":
        return f"string {tok}"
    if t == "NAME":
        return f"name '{tok}'"
    if t in ("NUMBER", "QUANTITY", "DIMS"):
        return f"number '{tok}'"
    if t == "VAR":
        return f"variable '{tok}'"
    return f"'{tok}'"


def _expected(expected: set[str]) -> str:
    values = {"STRING", "NUMBER", "QUANTITY", "DIMS", "VAR", "LSQB", "TRUE", "FALSE", "NONE"}
    words: list[str] = []
    exp = set(expected)
    if values <= exp:
        words.append("a value")
        exp -= values
    for t in sorted(exp, key=lambda t: (t.startswith("_"), t)):
        w = _TOKEN_WORDS.get(t)
        if w is None:
            w = f"'{t.lower()}'" if t.isalpha() else t
        if w not in words:
            words.append(w)
    if not words:
        return ""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " or " + words[-1]


def _syntax_message(exc: UnexpectedInput, text: str) -> tuple[str, int, int]:
    line, col = getattr(exc, "line", 1) or 1, getattr(exc, "column", 1) or 1
    if isinstance(exc, UnexpectedCharacters):
        ch = text[exc.pos_in_stream] if 0 <= exc.pos_in_stream < len(text) else ""
        if ch == '"':
            return "unterminated string (a string ends with '\"' on the same line)", line, col
        if ch == "$":
            return "a variable is '$' followed by a name", line, col
        if ch == "\t" or ch == " ":
            return "unexpected whitespace", line, col
        shown = ch if ch.isprintable() else repr(ch)
        return f"unexpected character '{shown}'", line, col
    if isinstance(exc, UnexpectedToken):
        tok = exc.token
        if tok.type == "$END":
            line, col = _end_pos(text)
        if tok.type == "_INDENT":
            return "unexpected indentation (only the body of 'for' and 'pipeline' is indented)", line, col
        exp = _expected(set(exc.expected) if exc.expected else set())
        if _after_colon(text, line) and tok.type != "_INDENT":
            return "expected an indented block after ':'", line, col
        if tok.type == "_DEDENT" and "_INDENT" in (exc.expected or ()):
            return "expected an indented block after ':'", line, col
        msg = f"unexpected {_describe_token(tok)}"
        if exp:
            msg += f" (expected {exp})"
        if tok.type in ("STRING", "VAR", "NUMBER", "QUANTITY", "DIMS", "LSQB") and "NAME" in (exc.expected or ()) \
                and "_NL" not in (exc.expected or ()):
            msg = f"unexpected {_describe_token(tok)}: a statement starts with a step name or 'let', 'for', " \
                  "'pipeline', 'include'"
        return msg, line, col
    if isinstance(exc, UnexpectedEOF):
        line, col = _end_pos(text)
        return "unexpected end of the recipe", line, col
    return str(exc).splitlines()[0], line, col


def _after_colon(text: str, line: int) -> bool:
    """The last code line before ``line`` ends with ':' and ``line`` is not indented deeper."""
    lines = text.splitlines()
    if not 1 <= line <= len(lines):
        return False
    here = lines[line - 1]
    for prev in reversed(lines[: line - 1]):
        code = prev.split("#", 1)[0].rstrip() if '"' not in prev else prev.rstrip()
        if not code.strip():
            continue
        indent = len(here) - len(here.lstrip())
        return code.endswith(":") and indent <= len(prev) - len(prev.lstrip())
    return False


def _end_pos(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").splitlines() or [""]
    return len(lines), len(lines[-1]) + 1


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
        msg, line, col = _syntax_message(exc, src)
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


def parse(path: str | Path, display: str | None = None) -> Program:
    """Parse a recipe file and the files it includes.

    ``include "x.xrf"`` paths are relative to the folder of the file that includes them; an
    included file's statements take the place of the include statement.
    """
    path = Path(path)
    name = display if display is not None else str(path)
    sources = Sources()
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise RecipeError(f"cannot read the recipe ({getattr(exc, 'strerror', None) or exc})", path=name) from None
    stmts = _resolve_includes(parse_text(text, name, sources), path, name, sources, [path.resolve()])
    return Program(name, stmts, sources, path.resolve().parent)


def parse_string(text: str, file: str = "<recipe>", folder: str | Path = ".") -> Program:
    """Parse recipe text held in memory (includes relative to ``folder``)."""
    sources = Sources()
    stmts = _resolve_includes(parse_text(text, file, sources), Path(folder) / file, file, sources,
                              [(Path(folder) / file).resolve()])
    return Program(file, stmts, sources, Path(folder).resolve())


def _resolve_includes(stmts: list[Node], path: Path, name: str, sources: Sources, stack: list[Path]) -> list[Node]:
    out: list[Node] = []
    for st in stmts:
        if isinstance(st, _Include):
            if len(st.target.parts) != 1 or not isinstance(st.target.parts[0], str):
                raise recipe_error("an include path cannot contain ${variables}", st.target.pos, sources)
            rel = st.target.parts[0]
            target = path.parent / rel
            tname = str(Path(name).parent / rel) if Path(rel).is_absolute() is False else rel
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
            out.extend(_resolve_includes(inner, target, tname, sources, stack + [target.resolve()]))
        elif isinstance(st, For):
            st.body = _resolve_includes(st.body, path, name, sources, stack)
            out.append(st)
        elif isinstance(st, Pipeline):
            st.body = _resolve_includes(st.body, path, name, sources, stack)
            out.append(st)
        else:
            out.append(st)
    return out
