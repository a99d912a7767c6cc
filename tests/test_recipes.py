"""Every recipe in recipes/ on simulated data: parsed and checked always; run fully when all its
steps exist in xrfproc.api (recipes waiting for a step are listed and skipped after the check).

The data are small maps made once per session (a 6 x 8 sample of the demo phantom and a 3 x 3 NIST
SRM 613 map, under the demo's file names) and copied for each test; the demo recipe's
demo_dataset step writes these small maps too (the full-size demo is tested in test_simulate)."""
from __future__ import annotations

import functools
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import api
from xrfproc.dsl import checker, cli, parser, signatures
from xrfproc.errors import RecipeError

RECIPE_DIR = Path(__file__).resolve().parents[1] / "xrfproc" / "recipes"  # recipes/ links here
RECIPES = sorted(RECIPE_DIR.glob("*.xrf"))
#: overrides that keep the runs small and fast (the precise fit of every pixel takes minutes; a
#: correlation plot of 3 elements draws 9 panels instead of 25)
FAST = {"precise.xrf": ["--set", "mode=fast"], "clustering.xrf": ["--set", "elements=[Fe, Zn, Sr]"]}
#: image steps (matplotlib, seconds each): each distinct call runs once per session
IMAGE_STEPS = ("overview_images", "correlation_plot")
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipe-data") / "data"
    folder.mkdir()
    api.simulate(folder / "demo_sample.h5", rows=6, cols=8, seed=3)
    api.simulate_reference(folder / "demo_nist613.h5", "nist613", rows=3, cols=3, seed=4)
    return folder


@pytest.fixture(scope="module")
def images_seen():
    return {}


@pytest.fixture()
def images_once(images_seen, monkeypatch):
    """Image steps drawn for real once per distinct call (options other than the file and the
    output): their PNGs are checked; a repeated call (the same figure of another recipe's file)
    checks that the group to draw exists and returns the first call's files."""
    def once(fn):
        @functools.wraps(fn)
        def wrapper(h5file, *args, **kwargs):
            key = (fn.__name__, args, tuple(sorted((k, repr(v)) for k, v in kwargs.items() if k != "out")))
            if key in images_seen:
                with h5py.File(h5file, "r") as f:
                    assert kwargs.get("datadir", "norm").split("/")[0] in f
                return images_seen[key]
            out = fn(h5file, *args, **kwargs)
            for png in (out if isinstance(out, list) else [out]):
                assert Path(png).read_bytes()[:8] == PNG, png
            images_seen[key] = out
            return out
        return wrapper
    for name in IMAGE_STEPS:
        monkeypatch.setattr(api, name, once(getattr(api, name)))


@pytest.fixture()
def small_demo(demo_data, monkeypatch):
    """``api.demo_dataset`` writing the small maps (same signature, so recipes check and run as usual)."""
    real = api.demo_dataset

    def demo_dataset(folder, seed: int = 0, snake: bool = False):
        folder = Path(folder)
        shutil.copytree(demo_data, folder, dirs_exist_ok=True)
        return folder / "demo_sample.h5", folder / "demo_nist613.h5"
    demo_dataset.__doc__ = real.__doc__
    demo_dataset.__annotations__ = dict(real.__annotations__)
    monkeypatch.setattr(api, "demo_dataset", demo_dataset)


def _called_steps(stmts) -> set[str]:
    out = set()
    for st in stmts:
        if isinstance(st, parser.Call):
            out.add(st.step)
        elif isinstance(st, parser.Let) and isinstance(st.value, parser.Call):
            out.add(st.value.step)
        elif isinstance(st, (parser.For, parser.Pipeline)):
            out |= _called_steps(st.body)
    return out


def test_there_are_recipes():
    assert {"demo.xrf", "fast.xrf", "precise.xrf", "detlim.xrf", "quantify.xrf", "tomo.xrf",
            "clustering.xrf"} <= {p.name for p in RECIPES}


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe(recipe, demo_data, small_demo, images_once, tmp_path):
    shutil.copytree(RECIPE_DIR, tmp_path / "recipes")
    shutil.copytree(demo_data, tmp_path / "recipes" / "data")
    path = tmp_path / "recipes" / recipe.name
    program = parser.parse(path)                       # every recipe parses
    try:
        checker.check(program)
    except RecipeError as exc:
        msgs = [getattr(e, "short", str(e)) for e in exc.errors]
        assert all("unknown step" in m for m in msgs), msgs  # nothing wrong but steps still missing
        missing = sorted({m.split("unknown step '")[1].split("'")[0] for m in msgs})
        assert set(missing) <= _called_steps(program.statements) - set(signatures.step_specs())
        pytest.skip(f"{recipe.name} waits for xrfproc.api steps: {', '.join(missing)}")
    argv = [str(path), "--no-progress", *FAST.get(recipe.name, [])]
    assert cli.main(argv + ["--check"]) == 0
    assert cli.main(argv) == 0
    ref = path.parent / "data" / "demo_nist613.h5"
    sample = path.parent / "data" / "demo_sample.h5"
    expect = {"demo.xrf": [(path.parent / "demo_output" / "demo_sample.h5", ["fit", "norm"]),
                           (path.parent / "demo_output" / "demo_nist613.h5", ["fit", "norm", "detlim/nist613"])],
              "detlim.xrf": [(ref, ["fit", "norm", "detlim/nist613", "elyield/nist613"])]}
    for h5, groups in expect.get(recipe.name, [(sample, ["fit", "norm"])]):
        with h5py.File(h5, "r") as f:
            assert [g for g in groups if g not in f] == [], h5


def test_run_export_and_rerun_gives_same_numbers(demo_data, tmp_path, capsys):
    shutil.copytree(demo_data, tmp_path / "data")
    (tmp_path / "r.xrf").write_text(
        'let s = "data/demo_sample.h5"\n'
        'make_config $s elements=[K, Ca, Fe, Cu, Zn, Sr] energy=18keV -> "data/s.cfg"\n'
        'fit $s config="data/s.cfg"\nnormalise $s I0=1e6 sort\n')
    assert cli.main([str(tmp_path / "r.xrf"), "--no-progress"]) == 0
    assert "3 of 3 steps done" in capsys.readouterr().out
    with h5py.File(tmp_path / "data" / "demo_sample.h5", "r") as f:
        first = f["norm/channel00/ims"][()]
    assert cli.main(["--export", str(tmp_path / "data" / "demo_sample.h5"), "-o", str(tmp_path / "again.xrf")]) == 0
    text = (tmp_path / "again.xrf").read_text()
    assert 'fit "data/demo_sample.h5" config="data/s.cfg"' in text
    assert 'normalise "data/demo_sample.h5" I0norm=1000000.0 sort=true' in text
    # run the exported recipe from --from 1 and compare the numbers
    assert cli.main([str(tmp_path / "again.xrf"), "--no-progress"]) == 0
    with h5py.File(tmp_path / "data" / "demo_sample.h5", "r") as f:
        again = f["norm/channel00/ims"][()]
    np.testing.assert_array_equal(first, again)


def test_from_and_dry_run(demo_data, tmp_path, capsys):
    shutil.copytree(demo_data, tmp_path / "data")
    (tmp_path / "r.xrf").write_text('let s = "data/demo_sample.h5"\nlet els = suggest_elements $s energy=18keV\n'
                                    'make_config $s elements=$els energy=18keV -> "data/s.cfg"\n'
                                    'fit $s config="data/s.cfg"\nnormalise $s I0=1e6\n')
    assert cli.main([str(tmp_path / "r.xrf"), "--dry-run", "--from", "fit"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("-  1  let els = suggest_elements") and out[2].startswith("   3  fit ")
    assert cli.main([str(tmp_path / "r.xrf"), "--no-progress"]) == 0
    capsys.readouterr()
    assert cli.main([str(tmp_path / "r.xrf"), "--no-progress", "--from", "normalise"]) == 0
    out = capsys.readouterr().out
    assert out.count("skipped (--from)") == 3 and "1 of 4 steps done" in out


def test_exported_recipe_checks_from_any_folder(tmp_path, monkeypatch, capsys):
    """Steps run with paths relative to the working folder (as `xrfproc ... demo_output/x.h5` records them);
    the export, written anywhere, names them relative to its own folder: --check passes from anywhere."""
    from xrfproc.cli import main as xrfproc_main

    work = tmp_path / "work"
    (work / "sub").mkdir(parents=True)
    monkeypatch.chdir(work)
    assert xrfproc_main(["simulate", "sub/m.h5", "--rows", "3", "--cols", "4", "--energy", "18"]) == 0
    assert xrfproc_main(["config", "sub/m.h5", "Fe", "Zn", "Sr", "--energy", "18", "-O", "out=sub/m.cfg"]) == 0
    assert xrfproc_main(["fit", "sub/m.h5", "sub/m.cfg"]) == 0
    assert xrfproc_main(["normalise", "sub/m.h5"]) == 0
    capsys.readouterr()
    for out in (work / "sub" / "here.xrf", tmp_path / "elsewhere" / "there.xrf", work / "top.xrf"):
        out.parent.mkdir(exist_ok=True)
        monkeypatch.chdir(out.parent)
        assert cli.main(["--export", str(work / "sub" / "m.h5"), "-o", out.name]) == 0
        text = out.read_text()
        assert ('config="sub/m.cfg"' in text) == (out.parent == work), text
        assert str(tmp_path) not in text  # relative to the recipe's folder
        monkeypatch.chdir("/")
        assert cli.main(["--check", str(out)]) == 0, capsys.readouterr()
    assert 'config="m.cfg"' in (work / "sub" / "here.xrf").read_text()
    assert 'config="../work/sub/m.cfg"' in (tmp_path / "elsewhere" / "there.xrf").read_text()
    assert cli.main(["--export", str(work / "sub" / "m.h5"), "-o", str(tmp_path / "missing" / "x.xrf")]) == 2
    err = capsys.readouterr().err
    assert "cannot write the recipe" in err and "Traceback" not in err
