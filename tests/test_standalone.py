"""A clone of the repository stands alone: the tests read their data, the layout checker and the example
recipes from inside it, and the README links nothing outside it (issue 19)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUTSIDE = re.compile(r"\.\./shared|parents\[2\]\s*/\s*\"shared\"|XRFPROC_SHARED|ROOT\.parent\s*/\s*\"shared\"")


def test_tests_read_nothing_beside_the_repository():
    offenders = [f"{p.name}:{i}" for p in sorted((ROOT / "tests").glob("*.py")) if p.name != Path(__file__).name
                 for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if OUTSIDE.search(line)]
    assert not offenders, offenders
    from _shared import CHECK_LAYOUT, CNC_DIR, REAL

    assert CHECK_LAYOUT.is_file() and (CNC_DIR / "nist613.cnc").is_file()
    assert {p.name for p in REAL.iterdir()} >= {"2xfm_0011.mda", "2xfm_0011_2xfm3__0.h5", "xrf_spectra.mca"}


def test_readme_links_stay_inside_the_repository():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert "../shared" not in text
    for target in re.findall(r"\]\(([^)#]+)\)", text):
        if "://" not in target:
            assert (ROOT / target).exists(), f"README links {target}, which the repository lacks"


def test_layout_checker_runs_as_a_module(tmp_path):
    import subprocess
    import sys

    from xrfproc import api

    h5 = api.simulate(tmp_path / "m.h5", rows=2, cols=3)
    res = subprocess.run([sys.executable, "-m", "xrfproc.testing.check_layout", str(h5)], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().endswith("OK"), res.stdout + res.stderr


def test_example_recipes_are_package_data():
    """Every example recipe matches a package-data pattern of pyproject.toml (so it is in the wheel), and the
    MCP server lists them from the package."""
    import fnmatch
    import tomllib

    from xrfproc.server import tools_recipes

    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["xrfproc"]
    pkg = ROOT / "xrfproc"
    recipes = sorted((pkg / "recipes").rglob("*.xrf"))
    assert len(recipes) >= 7
    for p in recipes:
        rel = p.relative_to(pkg).as_posix()
        assert any(fnmatch.fnmatchcase(rel, pat) for pat in patterns), rel
    assert tools_recipes.EXAMPLES_DIR == pkg / "recipes"
    assert {"demo.xrf", "fast.xrf"} <= set(tools_recipes.examples())
    assert (ROOT / "recipes" / "demo.xrf").resolve() == (pkg / "recipes" / "demo.xrf").resolve()
