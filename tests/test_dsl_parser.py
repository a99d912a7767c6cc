"""The .xrf parser, values, units and the checker's plan (no step is run here)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest

from xrfproc.dsl import checker, parser, units
from xrfproc.dsl.checker import Pending
from xrfproc.errors import RecipeError


def test_statements_and_positions():
    prog = parser.parse_string('# c\nlet e = 18 keV\nfit "a.h5" config="a.cfg" mode=fast  # tail\n'
                               'normalise "a.h5" I0=1e6 snake sort=false dims=10x20 els=[Fe, "Cu", Sr-K]\n')
    let, fit, norm = prog.statements
    assert isinstance(let, parser.Let) and let.name == "e"
    assert let.value == parser.Qty(parser.Pos("<recipe>", 2, 9), 18.0, "keV")
    assert fit.step == "fit" and fit.pos == parser.Pos("<recipe>", 3, 1)
    assert [a.name for a in fit.args] == [None, "config", "mode"]
    assert fit.args[2].value.text == "fast" and fit.args[2].pos.col == 27
    names = {a.name: a.value for a in norm.args}
    assert names["I0"].value == 1e6                     # 1e6 is a number, not 1 'e6'
    assert names["snake"].value is True and names["sort"].value is False
    assert (names["dims"].rows, names["dims"].cols) == (10, 20)
    assert [getattr(i, "text", None) or i.parts[0] for i in names["els"].items] == ["Fe", "Cu", "Sr-K"]


def test_blocks_pipelines_interpolation_and_arrow():
    prog = parser.parse_string('for $f in "s/*.h5":\n    fit $f config="${f}.cfg"\n\n    # inside\n'
                               '    normalise $f\npipeline p(file, I0=1e6):\n    normalise $file I0=$I0\n'
                               'convert "raw.h5" kind=id15 -> "out.h5"\n')
    loop, pipe, conv = prog.statements
    assert loop.var == "f" and len(loop.body) == 2
    cfg = loop.body[0].args[1].value
    assert isinstance(cfg.parts[0], parser.Var) and cfg.parts[1] == ".cfg"
    assert pipe.name == "p" and [p.name for p in pipe.params] == ["file", "I0"] and pipe.params[1].default.value == 1e6
    assert conv.out.parts == ["out.h5"]


@pytest.mark.parametrize("text, value, unit", [("15um", 15.0, "um"), ("15 um", 15.0, "um"), ("2eV", 2.0, "eV"),
                                               ("0.5ms", 0.5, "ms"), ("-3.5e2 keV", -350.0, "keV")])
def test_quantities(text, value, unit):
    node = parser.parse_value(text)
    assert isinstance(node, parser.Qty) and math.isclose(node.value, value) and node.unit == unit


def test_unit_conversion_to_parameters():
    assert units.for_parameter("energy_keV", units.Quantity(18000, "eV")) == pytest.approx(18.0)
    assert units.for_parameter("pixel_um", units.Quantity(0.015, "mm")) == pytest.approx(15.0)
    assert units.for_parameter("dwell_s", units.Quantity(100, "ms")) == pytest.approx(0.1)
    assert units.for_parameter("incidence_deg", units.Quantity(math.pi / 4, "rad")) == pytest.approx(45.0)
    with pytest.raises(units.UnitError, match="expects an energy"):
        units.for_parameter("energy_keV", units.Quantity(1, "um"))
    with pytest.raises(units.UnitError, match="plain number"):
        units.for_parameter("I0norm", units.Quantity(1, "s"))
    with pytest.raises(units.UnitError, match="did you mean 'keV'"):
        units.check_unit("kev")


def test_escapes_and_sets():
    node = parser.parse_value(r'"a\"b\\c\$d"')
    assert node.parts == ['a"b\\c$d']


def _plan(tmp_path: Path, text: str, check_files: bool = True, **overrides) -> checker.Plan:
    (tmp_path / "r.xrf").write_text(text)
    prog = parser.parse(tmp_path / "r.xrf")
    return checker.check(prog, overrides={k: parser.parse_value(v) for k, v in overrides.items()},
                         check_files=check_files)


def test_plan_binds_api_names_units_paths_and_results(tmp_path):
    plan = _plan(tmp_path, 'let e = 18000 eV\ndemo_dataset "d"\nlet els = suggest_elements "d/demo_sample.h5" energy=$e\n'
                           'make_config "d/demo_sample.h5" elements=$els energy=$e -> "d/x.cfg"\n'
                           'fit "d/demo_sample.h5" cfg="d/x.cfg"\nnormalise "d/demo_sample.h5" I0=1e6 snake\n')
    names = [s.name for s in plan.steps]
    assert names == ["demo_dataset", "suggest_elements", "make_config", "fit", "normalise"]
    sug, mk, fit, norm = plan.steps[1:]
    assert sug.kwargs["energy_keV"] == pytest.approx(18.0)            # eV -> keV once, at the call
    assert mk.kwargs["elements"] == Pending(2, "suggest_elements") and sug.result_var == "els"
    assert mk.kwargs["out"] == str(tmp_path / "d" / "x.cfg")          # relative to the recipe folder
    assert fit.kwargs == {"h5file": str(tmp_path / "d" / "demo_sample.h5"), "config": str(tmp_path / "d" / "x.cfg")}
    assert norm.kwargs["I0norm"] == 1e6 and norm.kwargs["snake"] is True


def test_loops_pipelines_and_set(tmp_path):
    for n in ("b", "a"):
        (tmp_path / f"{n}.h5").write_bytes(b"")
    text = ('let I0 = 5\npipeline norm2(file, I0=2):\n    normalise $file I0=$I0 sort\n'
            'for $f in "*.h5":\n    norm2 $f\nnorm2 "a.h5" I0=$I0\n')
    plan = _plan(tmp_path, text, check_files=False, I0="7")
    assert [Path(s.kwargs["h5file"]).name for s in plan.steps] == ["a.h5", "b.h5", "a.h5"]
    assert [s.kwargs["I0norm"] for s in plan.steps] == [2, 2, 7]
    assert all(s.kwargs["sort"] is True for s in plan.steps)


def test_let_word_and_list_loop(tmp_path):
    plan = _plan(tmp_path, 'let m = precise\nfor $c in [channel00, channel01]:\n'
                           '    simulate "${c}.h5" scan=raster rows=2 cols=3 energy=20keV\n')
    assert [s.kwargs["out"] for s in plan.steps] == [str(tmp_path / "channel00.h5"), str(tmp_path / "channel01.h5")]
    assert plan.steps[0].kwargs["energy_keV"] == 20.0 and plan.variables["m"] == "precise"


def test_include_relative_to_including_file(tmp_path):
    (tmp_path / "lib").mkdir()
    (tmp_path / "lib" / "a.xrf").write_text('include "b.xrf"\nlet x = 1\n')
    (tmp_path / "lib" / "b.xrf").write_text("let y = 2\n")
    (tmp_path / "r.xrf").write_text('include "lib/a.xrf"\nlet z = 3\n')
    prog = parser.parse(tmp_path / "r.xrf")
    assert [s.name for s in prog.statements] == ["y", "x", "z"]
    (tmp_path / "lib" / "b.xrf").write_text('include "a.xrf"\n')
    with pytest.raises(RecipeError, match="includes itself"):
        parser.parse(tmp_path / "r.xrf")
