"""Friendly wording of lark's syntax errors for recipes (what was found, what was expected).

:func:`syntax_message` turns an :class:`lark.exceptions.UnexpectedInput` into a message with the
line and column it should be reported at.
"""
from __future__ import annotations

from lark import Token
from lark.exceptions import UnexpectedCharacters, UnexpectedEOF, UnexpectedInput, UnexpectedToken

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


def syntax_message(exc: UnexpectedInput, text: str) -> tuple[str, int, int]:
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
            line, col = end_pos(text)
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
        line, col = end_pos(text)
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


def end_pos(text: str) -> tuple[int, int]:
    lines = text.rstrip("\n").splitlines() or [""]
    return len(lines), len(lines[-1]) + 1
