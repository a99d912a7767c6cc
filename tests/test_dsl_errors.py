"""Golden error messages: each bad recipe gives exactly this message (file:line:col, the line, a caret)."""
from __future__ import annotations

import pytest

from xrfproc.dsl import checker, cli, parser
from xrfproc.errors import RecipeError

CASES = {
    'unknown_step': ('let f = "x.h5"\nnormalize $f I0=1e6\n',
        "r.xrf:2:1: unknown step 'normalize' (did you mean 'normalise'?)\n    normalize $f I0=1e6\n    ^"),
    'unknown_arg': ('simulate "s.h5"\nnormalise "s.h5" snak\n',
        'r.xrf:2:18: \'normalise\' has no argument \'snak\' (did you mean \'snake\'?)\n    normalise "s.h5" snak\n                     ^'),
    'bad_type': ('simulate "s.h5" rows=[1, 2]\n',
        'r.xrf:1:22: \'rows\' of \'simulate\' expects a whole number, got a list\n    simulate "s.h5" rows=[1, 2]\n                         ^'),
    'bad_unit': ('simulate "s.h5" energy=15um\n',
        'r.xrf:1:24: \'energy_keV\' expects an energy (in keV), got a length (um)\n    simulate "s.h5" energy=15um\n                           ^'),
    'unknown_unit': ('simulate "s.h5" energy=15kev\n',
        'r.xrf:1:24: unknown unit \'kev\' (did you mean \'keV\'?)\n    simulate "s.h5" energy=15kev\n                           ^'),
    'unit_on_plain': ('simulate "s.h5"\nnormalise "s.h5" I0=3s\n',
        'r.xrf:2:21: \'I0norm\' takes a plain number, not a quantity in s\n    normalise "s.h5" I0=3s\n                        ^'),
    'missing_file': ('fit "nothere.h5" config="c.cfg"\n',
        'r.xrf:1:5: file not found: \'nothere.h5\' (paths are relative to the recipe\'s folder <dir>)\n    fit "nothere.h5" config="c.cfg"\n        ^\nr.xrf:1:25: file not found: \'c.cfg\' (paths are relative to the recipe\'s folder <dir>)\n    fit "nothere.h5" config="c.cfg"\n                            ^'),
    'unknown_element': ('simulate "s.h5"\nmake_config "s.h5" elements=[Fe, Cx] energy=18keV\n',
        'r.xrf:2:29: unknown element \'Cx\' (did you mean \'C\'?)\n    make_config "s.h5" elements=[Fe, Cx] energy=18keV\n                                ^'),
    'bad_choice': ('simulate "s.h5" scan=snak\n',
        'r.xrf:1:22: \'scan\' must be one of raster, snake, timetriggered, got \'snak\' (did you mean \'snake\'?)\n    simulate "s.h5" scan=snak\n                         ^'),
    'undefined_var': ('let sample = "s.h5"\nsimulate $sampel\n',
        "r.xrf:2:10: undefined variable '$sampel' (did you mean 'sample'?)\n    simulate $sampel\n             ^"),
    'missing_arg': ('simulate "s.h5"\ndetlim "s.h5"\n',
        'r.xrf:2:1: \'detlim\' needs \'cncfile\'\n    detlim "s.h5"\n    ^'),
    'twice': ('simulate "s.h5" rows=2 rows=3\n',
        'r.xrf:1:24: argument \'rows\' given twice\n    simulate "s.h5" rows=2 rows=3\n                           ^'),
    'positional_after_kw': ('simulate rows=2 "s.h5"\n',
        'r.xrf:1:17: a value without a name must come before the name=value arguments\n    simulate rows=2 "s.h5"\n                    ^'),
    'unterminated': ('simulate "s.h5\n',
        'r.xrf:1:10: unterminated string (a string ends with \'"\' on the same line)\n    simulate "s.h5\n             ^'),
    'bad_char': ('simulate "s.h5" rows=2 & 3\n',
        'r.xrf:1:24: unexpected character \'&\'\n    simulate "s.h5" rows=2 & 3\n                           ^'),
    'unexpected_indent': ('simulate "s.h5"\n    simulate "t.h5"\n',
        'r.xrf:2:5: unexpected indentation (only the body of \'for\' and \'pipeline\' is indented)\n        simulate "t.h5"\n        ^'),
    'missing_block': ('for $f in ["a.h5"]:\nsimulate $f\n',
        "r.xrf:2:1: expected an indented block after ':'\n    simulate $f\n    ^"),
    'bad_dedent': ('for $f in ["a.h5"]:\n        simulate $f\n    simulate $f\n',
        "r.xrf:3:5: this line's indentation matches no enclosing block (expected 0 spaces)\n        simulate $f\n        ^"),
    'missing_eq_let': ('let x 3\n',
        "r.xrf:1:7: unexpected number '3' (expected '=' or the end of the line)\n    let x 3\n          ^"),
    'arrow_no_out': ('simulate "s.h5"\nnormalise "s.h5" -> "t.h5"\n',
        'r.xrf:2:21: \'normalise\' writes no output file, \'->\' does not apply\n    normalise "s.h5" -> "t.h5"\n                        ^'),
    'empty_glob': ('for $f in "scans/*.h5":\n    simulate $f\n',
        'r.xrf:1:11: no file matches \'scans/*.h5\' (paths are relative to <dir>)\n    for $f in "scans/*.h5":\n              ^'),
    'pipeline_arg': ('pipeline p(file):\n    simulate $file\np "a.h5" fiel="b"\n',
        'r.xrf:3:10: pipeline \'p\' has no parameter \'fiel\' (did you mean \'file\'?)\n    p "a.h5" fiel="b"\n             ^'),
    'bad_escape': ('simulate "a\\q.h5"\n',
        'r.xrf:1:12: unknown escape \'\\q\' in string (use \\\\, \\", \\n, \\t or \\$)\n    simulate "a\\q.h5"\n               ^'),
    'unclosed_list': ('simulate "s.h5" rows=[1, 2\n',
        'r.xrf:1:27: unexpected end of the recipe (expected \',\' or \']\')\n    simulate "s.h5" rows=[1, 2\n                              ^'),
    'no_fit_yet': ('simulate "s.h5"\ndetlim "s.h5" cnc="nist613.cnc"\n',
        'r.xrf:2:8: \'s.h5\' has no fit/ group and no earlier step writes it: run \'fit\' on it first\n    detlim "s.h5" cnc="nist613.cnc"\n           ^'),
}


def _message(tmp_path, text: str) -> str:
    (tmp_path / "r.xrf").write_text(text)
    with pytest.raises(RecipeError) as info:
        checker.check(parser.parse(tmp_path / "r.xrf", display="r.xrf"))
    return str(info.value).replace(str(tmp_path), "<dir>")


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_message(tmp_path, name):
    text, expected = CASES[name]
    assert _message(tmp_path, text) == expected


def test_cli_exit_status_2_and_no_traceback(tmp_path, capsys):
    (tmp_path / "r.xrf").write_text(CASES["unknown_step"][0])
    assert cli.main([str(tmp_path / "r.xrf"), "--check"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{tmp_path / 'r.xrf'}:2:1: unknown step 'normalize' (did you mean 'normalise'?)\n")
    assert "Traceback" not in err and err.rstrip().endswith("^")


def test_set_unknown_variable_is_reported(tmp_path, capsys):
    (tmp_path / "r.xrf").write_text('let sample = "s.h5"\nsimulate $sample\n')
    assert cli.main([str(tmp_path / "r.xrf"), "--check", "--set", "sampel=t.h5"]) == 2
    assert "--set sampel: the recipe uses no variable 'sampel' (did you mean 'sample'?)" in capsys.readouterr().err
    assert cli.main([str(tmp_path / "r.xrf"), "--check", "--set", "sample=t.h5"]) == 0


def test_missing_recipe_file(tmp_path, capsys):
    assert cli.main([str(tmp_path / "none.xrf")]) == 2
    assert "cannot read the recipe" in capsys.readouterr().err
