"""Property test: any text either parses or raises RecipeError (never another exception)."""
from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xrfproc.dsl import parser
from xrfproc.errors import RecipeError

RECIPES = sorted((Path(__file__).resolve().parents[1] / "xrfproc" / "recipes").rglob("*.xrf"))
SEEDS = [p.read_text() for p in RECIPES] + [
    'let e = 18 keV\nfor $f in "s/*.h5":\n    fit $f config="${f}.cfg" mode=fast\n    normalise $f I0=1e6 snake\n',
    'pipeline p(file, I0=1e6):\n    normalise $file I0=$I0 dims=10x20 els=[Fe, "Cu", Sr-K]\np "a.h5"\n',
]
PIECES = ["\n", "    ", "\t", ":", "=", "->", "[", "]", "(", ")", ",", '"', "$", "${x}", "#", "\\", "let", "for",
          "in", "pipeline", "include", "true", "none", "1e6", "15um", "15 um", "10x20", "fit", "$f", "-", ".", "\r\n",
          "\x00", "é", "µm", "\\\n"]


def _parses_or_recipe_error(text: str) -> None:
    try:
        parser.parse_string(text, file="fuzz.xrf", folder="/nonexistent-folder")
    except RecipeError as exc:
        assert str(exc).startswith("fuzz.xrf") or "include" in str(exc) or str(exc)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(PIECES) | st.characters(codec="utf-8"), max_size=40))
def test_random_text(pieces):
    _parses_or_recipe_error("".join(pieces))


@st.composite
def mutated(draw):
    text = draw(st.sampled_from(SEEDS))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        piece = draw(st.sampled_from(PIECES))
        j = min(len(text), i + draw(st.integers(1, 6)))
        if op == "insert":
            text = text[:i] + piece + text[i:]
        elif op == "delete":
            text = text[:i] + text[j:]
        else:
            text = text[:i] + piece + text[j:]
    return text


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated())
def test_mutated_recipes(text):
    _parses_or_recipe_error(text)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=30))
def test_set_values(text):
    try:
        parser.parse_value(text)
    except RecipeError:
        pass
