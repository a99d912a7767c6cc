"""Recipes and the MCP server agree: the same steps run by xrfrun, by the MCP tools one by one and
by the MCP tool run_recipe give identical files; run_recipe refuses every path outside the roots
before anything runs; list_recipes finds the examples and the recipes in the roots."""
from __future__ import annotations

import base64
import os
import shutil
from pathlib import Path
from typing import Any

import anyio
import h5py
import numpy as np
import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402

from xrfproc import api  # noqa: E402
from xrfproc.dsl import cli  # noqa: E402
from xrfproc.server import build_server  # noqa: E402

ROWS, COLS = 6, 8
ELEMENTS = ["K", "Ca", "Fe", "Cu", "Zn", "Sr"]

RECIPE = """# the chain of the MCP comparison
let sample = "s.h5"
let ref = "ref.h5"
make_config $sample elements=[K, Ca, Fe, Cu, Zn, Sr] energy=18keV -> "c.cfg"
for $f in [$sample, $ref]:
    fit $f config="c.cfg" mode=fast
    normalise $f I0=1e6
detlim $ref cnc="nist613.cnc"
quantify $sample ref=$ref norm=Rayl matrix="CI_chondrite.cnc"
div_by_cnc $sample cnc="CI_chondrite.cnc"
kmeans $sample nclusters=3 elements=[Fe, Zn, Sr]
"""


def frontend_data(factory: pytest.TempPathFactory) -> Path:
    """A small simulated sample and NIST SRM 613 reference, made once per session (shared by the
    front-end test modules through the session's base temporary folder)."""
    d = factory.getbasetemp() / "frontend-data"
    if not (d / "done").exists():
        d.mkdir(exist_ok=True)
        api.simulate(d / "s.h5", rows=ROWS, cols=COLS, seed=3)
        api.simulate_reference(d / "ref.h5", "nist613", rows=3, cols=3, seed=4)
        (d / "done").write_text("")
    return d


def copy_data(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for p in src.iterdir():
        if p.name != "done":
            (shutil.copytree if p.is_dir() else shutil.copy2)(p, dst / p.name)
    return dst


def datasets(path: Path) -> dict[str, Any]:
    """Every dataset of a layout file except raw/ (which the steps only read), by HDF5 path; texts
    with the file's folder written as <dir> (steps record the paths of their inputs)."""
    out: dict[str, Any] = {}
    folder = str(path.parent)
    with h5py.File(path, "r") as f:
        def visit(name: str, obj: Any) -> None:
            if isinstance(obj, h5py.Dataset) and not name.startswith("raw"):
                value = obj[()]
                if obj.dtype.kind in "SO":
                    value = np.array([v.decode() if isinstance(v, bytes) else str(v)
                                      for v in np.atleast_1d(value)]).astype(str)
                    value = np.char.replace(value, folder, "<dir>")
                out[name] = value
        f.visititems(visit)
    return out


def assert_same_files(a: Path, b: Path) -> None:
    for name in ("s.h5", "ref.h5"):
        da, db = datasets(a / name), datasets(b / name)
        assert sorted(da) == sorted(db), name
        for key in da:
            np.testing.assert_array_equal(da[key], db[key], err_msg=f"{name}:{key}")


@pytest.fixture(scope="module")
def by_xrfrun(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = copy_data(frontend_data(tmp_path_factory), tmp_path_factory.mktemp("xrfrun"))
    (d / "r.xrf").write_text(RECIPE)
    assert cli.main([str(d / "r.xrf"), "--no-progress"]) == 0
    return d


def test_recipe_and_mcp_tools_give_identical_files(by_xrfrun, tmp_path_factory):
    d = copy_data(frontend_data(tmp_path_factory), tmp_path_factory.mktemp("mcp"))
    server = build_server([d])

    async def go() -> list[Any]:
        async with Client(server) as c:
            calls = [("make_config", {"h5file": "s.h5", "elements": ELEMENTS, "energy_keV": 18.0, "out": "c.cfg"})]
            for f in ("s.h5", "ref.h5"):
                calls += [("fit", {"h5file": f, "config": "c.cfg", "mode": "fast"}),
                          ("normalise", {"h5file": f, "I0norm": 1e6})]
            calls += [("detlim", {"h5file": "ref.h5", "cnc": "nist613.cnc"}),
                      ("quantify", {"h5file": "s.h5", "references": ["ref.h5"], "norm": "Rayl",
                                    "matrix": "CI_chondrite"}),
                      ("div_by_cnc", {"h5file": "s.h5", "cnc": "CI_chondrite"}),
                      ("cluster", {"h5file": "s.h5", "method": "kmeans", "n": 3, "elements": ["Fe", "Zn", "Sr"]}),
                      ("correlation_plot", {"h5file": "s.h5", "elements": ["Fe", "Sr"]})]
            return [await c.call_tool(name, args) for name, args in calls]
    results = anyio.run(go)
    for res in results:
        assert not res.is_error, res.content[0].text
    groups = set(h5py.File(d / "s.h5", "r"))
    assert {"fit", "norm", "quant", "rel_dif", "kmeans"} <= groups
    q = results[-4].structured_content["summary"]
    assert q["unit"] == "ppm" and q["channels"]["channel00"]["mean"]["Fe K"] > 0
    plot = results[-1]
    png = base64.b64decode([c for c in plot.content if c.type == "image"][0].data)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and (d / plot.structured_content["png"]).read_bytes() == png
    assert plot.structured_content["png"] == "s_norm_channel00_correlation.png"
    assert {"detlim", "elyield"} <= set(h5py.File(d / "ref.h5", "r"))
    assert_same_files(by_xrfrun, d)
    assert (by_xrfrun / "c.cfg").read_text() == (d / "c.cfg").read_text()


def test_run_recipe_gives_identical_files_with_progress(by_xrfrun, tmp_path_factory):
    d = copy_data(frontend_data(tmp_path_factory), tmp_path_factory.mktemp("run_recipe"))
    (d / "recipes").mkdir()
    (d / "recipes" / "chain.xrf").write_text(RECIPE.replace('"s.h5"', '"../s.h5"').replace('"ref.h5"', '"../ref.h5"')
                                             .replace('"c.cfg"', '"../c.cfg"'))
    server = build_server([d])
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def go(check_only: bool) -> Any:
        async with Client(server) as c:
            return await c.call_tool("run_recipe", {"path": "recipes/chain.xrf", "check_only": check_only},
                                     progress_callback=on_progress)
    checked = anyio.run(go, True)
    assert not checked.is_error, checked.content[0].text
    plan = checked.structured_content
    assert plan["checked_only"] and [s["status"] for s in plan["steps"]] == ["planned"] * 9
    assert not (d / "c.cfg").exists() and not progress      # check_only ran nothing
    ran = anyio.run(go, False)
    assert not ran.is_error, ran.content[0].text
    res = ran.structured_content
    assert [s["step"] for s in res["steps"]] == ["make_config", "fit", "normalise", "fit", "normalise", "detlim",
                                                 "quantify", "div_by_cnc", "kmeans"]
    assert res["done"] == 9 and all(s["status"] == "done" for s in res["steps"])
    assert res["steps"][1]["line"] == "recipes/chain.xrf:6" and res["files"] == ["c.cfg"]
    assert_same_files(by_xrfrun, d)
    # progress: counts steps, only increases, ends at the number of steps; fit reports inside its step
    dones = [p[0] for p in progress]
    assert dones == sorted(set(dones)) and progress[-1][:2] == (9, 9)
    assert [p[0] for p in progress if p[2] and p[2].endswith(": done")] == [1, 2, 3, 4, 5, 6, 7, 8, 9]
    assert any(1 < p[0] < 2 and "channel00" in p[2] for p in progress)


def test_run_recipe_refuses_paths_outside_the_roots(tmp_path):
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "scans").mkdir(parents=True)
    outside.mkdir()
    (outside / "x.h5").write_bytes(b"")
    (outside / "lib.xrf").write_text("let a = 1\n")
    (root / "scans" / "a.h5").write_bytes(b"")
    os.symlink(outside / "x.h5", root / "scans" / "b.h5")     # a pattern match that leaves the roots
    os.symlink(outside, root / "out")
    (outside / "r.xrf").write_text('simulate "s.h5" rows=2 cols=2\n')
    server = build_server([root])
    cases = [
        ('fit "../outside/x.h5" config="c.cfg"\n', "1:5: ", "h5file is outside the server's data roots"),
        (f'inspect "{outside / "x.h5"}"\n', "1:9: ", "outside the server's data roots"),
        ('include "../outside/lib.xrf"\n', "1:9: include '../outside/lib.xrf' refused", "through '..'"),
        ('for $f in "../outside/*.h5":\n    inspect $f\n', "1:11: ", "the folder of the 'for' pattern is outside"),
        ('for $f in "scans/*.h5":\n    inspect $f\n', "1:11: ", "a match of the 'for' pattern is outside"),
        ('simulate "out/new.h5" rows=2 cols=2\n', "1:10: ", "through a symbolic link"),
        ('simulate "new.h5" rows=2 cols=2\nmake_config "new.h5" elements=[Fe] energy=18keV -> "../outside/c.cfg"\n',
         "2:52: ", "out is outside"),
        ('convert "scans/a.h5" kind=generic spectra="../outside/x.h5"\n', "1:43: ", "spectra is outside"),
        ('simulate "big.h5" rows=4000 cols=4000\n', "", "--max-pixels"),
    ]

    async def go() -> list[Any]:
        async with Client(server) as c:
            out = [await c.call_tool("run_recipe", {"recipe": text}) for text, _, _ in cases]
            out.append(await c.call_tool("run_recipe", {"path": str(outside / "r.xrf")}))
            out.append(await c.call_tool("run_recipe", {"recipe": 'simulate "s.h5"\n', "folder": "../outside"}))
            out.append(await c.call_tool("run_recipe", {"recipe": 'simulate "s.h5"\n', "path": "r.xrf"}))
            return out
    results = anyio.run(go)
    for (text, where, what), res in zip(cases, results):
        msg = res.content[0].text
        assert res.is_error and f"<recipe>:{where}" in msg and what in msg, (text, msg)
    assert results[-3].is_error and "path is outside the server's data roots" in results[-3].content[0].text
    assert results[-2].is_error and "folder is outside" in results[-2].content[0].text
    assert results[-1].is_error and "exactly one of recipe" in results[-1].content[0].text
    assert sorted(p.name for p in outside.iterdir()) == ["lib.xrf", "r.xrf", "x.h5"]  # nothing written outside
    assert sorted(p.name for p in root.iterdir()) == ["out", "scans"]                  # nor inside: nothing ran


def test_list_recipes(tmp_path):
    (tmp_path / "work" / ".hidden").mkdir(parents=True)
    (tmp_path / "work" / "mine.xrf").write_text("# my batch: fit all scans\n# second line\nlet a = 1\n")
    (tmp_path / "work" / ".hidden" / "no.xrf").write_text("# hidden\n")
    (tmp_path / "plain.xrf").write_text("let a = 1\n")
    server = build_server([tmp_path])

    async def go() -> Any:
        async with Client(server) as c:
            return (await c.call_tool("list_recipes", {}),
                    await c.call_tool("list_recipes", {"folder": "work", "include_examples": False}))
    res, only = anyio.run(go)
    assert [r["path"] for r in only.structured_content["recipes"]] == ["work/mine.xrf"]
    assert not res.is_error
    found = {(r["kind"], r["path"]): r["description"] for r in res.structured_content["recipes"]}
    examples = {p for k, p in found if k == "example"}
    assert {"demo.xrf", "fast.xrf", "precise.xrf", "detlim.xrf", "quantify.xrf", "tomo.xrf", "clustering.xrf"} \
        <= examples
    assert found[("example", "demo.xrf")].startswith("The xrfproc demo: simulate a sample map and a NIST SRM 613")
    assert found[("data root", "work/mine.xrf")] == "my batch: fit all scans second line"
    assert found[("data root", "plain.xrf")] == ""
    assert not any("no.xrf" in p for _, p in found)
