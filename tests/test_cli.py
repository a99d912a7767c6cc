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
