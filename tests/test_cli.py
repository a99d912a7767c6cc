"""The xrfproc command: results on stdout, user mistakes as one line on stderr with exit status 2."""
from __future__ import annotations

import json

import h5py
import numpy as np

from xrfproc.cli import main


def test_simulate_inspect_normalise_chain(tmp_path, capsys):
    out = tmp_path / "sim.h5"
    assert main(["simulate", str(out), "--rows", "4", "--cols", "5", "--seed", "3"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    assert main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["grid"] == [4, 5] and summary["channels"] == ["channel00", "channel01"]
    assert main(["suggest", str(out), "--energy", "18"]) == 0
    found = capsys.readouterr().out.split()
    assert "Fe" in found and "Zn" in found
    with h5py.File(out, "r") as f:
        assert f["raw/channel00/spectra"].shape == (4, 5, 2048)
        assert np.all(f["raw/channel00/sumspec"][()] >= 0)


def test_user_mistakes_exit_2_without_traceback(tmp_path, capsys):
    assert main(["inspect", str(tmp_path / "missing.h5")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xrfproc: error: ") and "missing.h5: file not found" in err and "Traceback" not in err
    bad = tmp_path / "bad.cnc"
    bad.write_text("not a cnc")
    assert main(["simulate", str(tmp_path / "x.h5"), "--scan", "snake", "--rows", "2", "--cols", "2"]) == 0
    capsys.readouterr()
    assert main(["detlim", str(tmp_path / "x.h5"), str(bad)]) == 2
    err = capsys.readouterr().err
    assert "bad.cnc" in err and "Traceback" not in err
    assert main(["convert", str(tmp_path / "bad.cnc")]) == 2
    assert "unrecognised file format" in capsys.readouterr().err


def test_xrfrun_scheduler_option_reaches_the_fit(tmp_path, monkeypatch):
    from xrfproc import store
    from xrfproc.dsl.cli import main as xrfrun

    monkeypatch.delenv("XRFPROC_SCHEDULER", raising=False)
    recipe = tmp_path / "r.xrf"
    recipe.write_text('simulate "m.h5" rows=3 cols=4\n'
                      'make_config "m.h5" elements=[Fe, Zn, Sr] energy=18keV -> "m.cfg"\n'
                      'fit "m.h5" config="m.cfg" mode=fast\n')
    assert xrfrun([str(recipe), "--scheduler", "threads", "--no-progress"]) == 0
    with store.open_read(tmp_path / "m.h5") as f:
        prov = store.read_provenance(f["fit"])
    assert prov["parameters"]["ran_on"]["scheduler"] == "threads"


# --- issue 19: -O validated, help texts, human output ------------------------------------------------

import argparse  # noqa: E402
import logging  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from xrfproc.cli import build_parser  # noqa: E402

REAL = Path(__file__).resolve().parent / "data" / "real"


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("xrfproc: error: ") and "Traceback" not in err, err
    return lines[0]


def test_unknown_option_keys_are_one_line_errors_naming_the_valid_ones(tmp_path, capsys):
    h5 = tmp_path / "s.h5"
    assert main(["simulate", str(h5), "--rows", "2", "--cols", "3"]) == 0
    capsys.readouterr()
    assert main(["config", str(h5), "Fe", "--energy", "18", "-O", "foo=1"]) == 2  # was a TypeError traceback
    line = _one_error_line(capsys.readouterr().err)
    assert "unknown option -O foo" in line and "snipwidth" in line and "emax_keV" in line
    out = tmp_path / "c.h5"
    assert main(["convert", str(REAL / "xrf_spectra.mca"), "-o", str(out), "-O", "energy_kev=10"]) == 2  # was ignored
    line = _one_error_line(capsys.readouterr().err)
    assert "did you mean energy_keV?" in line and "elements" in line
    assert not out.exists()
    assert main(["image", str(h5), "raw", "-O", "colormap=gray"]) == 2
    assert "cmap" in _one_error_line(capsys.readouterr().err)
    assert main(["normalise", str(h5), "-O", "snake=true"]) == 2
    assert "--snake" in _one_error_line(capsys.readouterr().err)
    assert main(["fit", str(h5), "x.cfg", "-O", "refine=true"]) == 2
    assert "--mode engine" in _one_error_line(capsys.readouterr().err)
    for cmd in (["detlim", str(h5), "nist613"], ["quantify", str(h5), str(h5)], ["suggest", str(h5)]):
        assert main([*cmd, "-O", "nonsense=1"]) == 2
        assert "unknown option -O nonsense" in _one_error_line(capsys.readouterr().err)
    assert main(["config", str(h5), "Fe", "-O", "novalue"]) == 2
    assert "KEY=VALUE" in _one_error_line(capsys.readouterr().err)


def test_accepted_keys_follow_the_api_signatures():
    import inspect

    from xrfproc import cli_options
    from xrfproc.core.convert import mda
    from xrfproc.steps import imaging

    keys = cli_options.convert_options("mda").accepted
    assert {"spectra", "elements", "i0", "energy_keV"} <= set(keys) and "_ignored" not in keys
    assert set(cli_options.image_options().accepted) == set(inspect.signature(imaging.overview_images).parameters) \
        - {"h5file", "datadir", "ncols", "pix_size_um", "scale_bar_um", "log", "channel"}
    assert "refine" in cli_options.fit_options("engine").accepted and "refine" not in cli_options.fit_options("fast").accepted
    assert set(inspect.signature(mda.read).parameters) - {"source", "_ignored"} <= set(keys)


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def test_every_option_has_a_help_text_and_help_lists_the_keys(capsys):
    parser = build_parser()
    for name, sub in _subparsers(parser).items():
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"xrfproc {name} {action.dest} has no help text"
    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = capsys.readouterr().out
    for flag in ("--weight", "--background", "--calibration", "--json", "accepted -O keys", "sum_fit", "refine"):
        assert flag in text
    with pytest.raises(SystemExit):
        main(["convert", "--help"])
    text = capsys.readouterr().out
    assert "mda: " in text and "id15: " in text and "scan=" in text


def test_fit_and_normalise_print_a_table_and_json_on_request(tmp_path, capsys):
    h5 = tmp_path / "m.h5"
    assert main(["simulate", str(h5), "--rows", "3", "--cols", "4", "--energy", "18"]) == 0
    assert main(["config", str(h5), "Fe", "Zn", "Sr", "--energy", "18", "-O", f"out={tmp_path / 'm.cfg'}"]) == 0
    capsys.readouterr()
    assert main(["fit", str(h5), str(tmp_path / "m.cfg"), "--weight", "1", "--background", "snip"]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert lines[0].startswith("fit (fast) of ") and "m.h5" in lines[0] and "grid 3 x 4" in lines[0] and len(lines) < 30
    assert any(ln.startswith("Fe K") for ln in lines) and not out.lstrip().startswith("{")
    assert main(["normalise", str(h5), "--I0norm", "1e6", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert "channel00" in summary["channels"]
    assert main(["normalise", str(h5), "--I0norm", "1e6"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("normalised ") and "m.h5" in lines[0] and len(lines) < 30


def test_library_warnings_are_gathered_and_counted(capsys):
    from xrfproc.cli_output import gather_warnings

    pymca = logging.getLogger("PyMca5.PyMcaPhysics.xrf.FastXRFLinearFit")
    with gather_warnings() as gathered:
        for i in range(40):
            pymca.warning("%d pixels of parameter %s forced to zero", i, f"L{i} K")
        print("WARNING: Needed 10 iterations")
        print("WARNING: Needed 10 iterations")
    assert capsys.readouterr().out == ""  # nothing interleaved with the progress bar
    text = "\n".join(gathered.lines())
    assert gathered.total == 42 and len(gathered.lines()) == 3
    assert "forced to zero (and 39 similar)" in text and "Needed 10 iterations (x2)" in text
    with gather_warnings(verbose=True) as gathered:
        pymca.warning("shown as it comes")
    assert gathered.total == 0


def test_detlim_table_stays_short():
    from xrfproc.cli_output import format_detlim

    names = [f"E{i} K" for i in range(75)]
    summary = {"file": "ref.h5", "cnc": "/x/nist613.cnc",
               "channels": {c: {"detection_limits_ppm_1s": {n: 1.0 + i for i, n in enumerate(names)},
                                "skipped": ["Al K"]} for c in ("channel00", "channel01")}}
    lines = format_detlim(summary).splitlines()
    assert len(lines) < 30 and "E74 K" in "\n".join(lines)
