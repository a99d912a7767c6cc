"""Fit configurations: reading and checking PyMca .cfg files, writing them without a GUI."""
from __future__ import annotations

import numpy as np
import pytest

from xrfproc.core import fitconfig, pymca_bridge, xraydata
from xrfproc.core import fit as core_fit
from xrfproc.errors import ConfigError, InputError

from PyMca5.PyMcaIO import ConfigDict

DATA = pymca_bridge.PYMCA_DATA_DIR
STEEL_CAL = (-0.00612446976449, 0.0119281593146)


def test_read_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        fitconfig.read_config(tmp_path / "missing.cfg")
    bad = tmp_path / "bad.cfg"
    bad.write_text("this is not an ini file\n")
    with pytest.raises(ConfigError, match="bad.cfg"):
        fitconfig.read_config(bad)
    nosect = tmp_path / "nosect.cfg"
    nosect.write_text("[fit]\nxmin = 10\nxmax = 100\n")
    with pytest.raises(ConfigError, match=r"missing section\(s\) \[detector\], \[peaks\]"):
        fitconfig.read_config(nosect)


def test_non_snip_is_refused_for_fast_and_engine_but_fine_for_precise():
    for mode in ("fast", "engine"):
        with pytest.raises(ConfigError) as err:
            fitconfig.read_config(DATA / "Steel.cfg", mode=mode)
        assert "Steel.cfg" in str(err.value) and fitconfig.SNIP_FIX in str(err.value)
        assert "stripalgorithm = 0 (Strip)" in str(err.value)
    cfg = fitconfig.read_config(DATA / "Steel.cfg", mode="precise", nbins=2048)
    assert cfg.config["peaks"]["Fe"] == ["Ka", "Kb"] and "[peaks]" in cfg.text


def test_fit_window_against_channel_count():
    with pytest.raises(ConfigError, match="1024 channels"):
        fitconfig.read_config(DATA / "Steel.cfg", mode="precise", nbins=1024)  # xmax 1432
    with pytest.raises(ConfigError, match="100 channels"):
        fitconfig.read_config(DATA / "Steel.cfg", mode="precise", nbins=100)


def test_excited_families_from_edges():
    # K edge of Mo (20.0 keV) above 16 keV: only its L lines; Pb: L and M; Fe: K (Fe L at 0.7 keV is below 1 keV)
    assert fitconfig.excited_families("Mo", 16.0) == ["L"]
    assert fitconfig.excited_families("Mo", 25.0) == ["K", "L"]
    assert fitconfig.excited_families("Pb", 16.0) == ["L", "M"]
    assert fitconfig.excited_families("Fe", 16.0) == ["K"]
    assert fitconfig.excited_families("Fe", 7.0) == []  # below the K edge 7.112 keV
    # Pb L3 edge 13.04 keV: at 12 keV only M lines remain
    assert xraydata.edge_energy("Pb", "L3") == pytest.approx(13.035, abs=0.01)
    assert fitconfig.excited_families("Pb", 12.0) == ["M"]


def test_estimate_calibration_recovers_steel_calibration():
    y = pymca_bridge.read_spectrum_file(DATA / "Steel.spe")
    zero, gain = fitconfig.estimate_calibration(y, [6.4039, 5.4147, 7.4781], [3, 2, 2])
    assert gain == pytest.approx(STEEL_CAL[1], rel=0.01)
    # the Fe Ka channel lands within 2 channels of where PyMca's calibration puts it
    ch_ours = (6.4039 - zero) / gain
    ch_pymca = (6.4039 - STEEL_CAL[0]) / STEEL_CAL[1]
    assert abs(ch_ours - ch_pymca) < 2


def make_steel_cfg(path):
    return fitconfig.make_config(
        path, ["Fe", "Cr", "Ni", "Mn", "Cu", "V", "As", "W", "Pb"], 16.0, nbins=2048, zero=STEEL_CAL[0],
        gain=STEEL_CAL[1], noise=0.127, fano=0.101, detector=("Si1", 2.33, 0.035), window=("Be1", 1.848, 0.002),
        attenuators={"atmosphere": ("Air", 0.0012048, 5.0), "BeamFilter0": ("Al1", 2.72, 0.11)},
        matrix={"composition": {"Cr": 0.1837, "Fe": 0.654, "Ni": 0.1235, "Mo": 0.0226, "Mn": 0.01619},
                "name": "SRM_1155", "density": 1.0, "thickness": 1.0})


def test_make_config_is_read_by_pymca_and_fits_steel_like_steel_cfg(tmp_path):
    path = make_steel_cfg(tmp_path / "made.cfg")
    c = ConfigDict.ConfigDict()
    c.read(str(path))
    assert c["fit"]["stripalgorithm"] == 1 and c["fit"]["stripflag"] == 1
    assert c["fit"]["scatterflag"] == 1 and fitconfig.excitation_energy(c) == 16.0
    assert c["peaks"]["Fe"] == "K" and c["peaks"]["Pb"] == ["L", "M"] and c["peaks"]["As"] == ["K", "L"]
    assert c["attenuators"]["Matrix"][1] == "SRM_1155" and c["materials"]["SRM_1155"]["CompoundList"][0] == "Cr"
    assert c["detector"]["gain"] == pytest.approx(STEEL_CAL[1])
    # fast mode accepts it, and the fit of Steel.spe recovers the areas of PyMca's own Steel.cfg
    fitconfig.read_config(path, mode="fast", nbins=2048)
    y = pymca_bridge.read_spectrum_file(DATA / "Steel.spe")
    ours = core_fit.fit_sum_spectrum(y, c)
    ref = ConfigDict.ConfigDict()
    ref.read(str(DATA / "Steel.cfg"))
    ref["fit"]["stripalgorithm"] = 1
    theirs = core_fit.fit_sum_spectrum(y, ref)
    a, b = dict(zip(ours.names, ours.int)), dict(zip(theirs.names, theirs.int))
    for line in ("Cr K", "Mn K", "Ni K", "Cu K"):
        assert a[line] == pytest.approx(b[line], rel=0.01), line
    assert a["Fe K"] == pytest.approx(b["Fe Ka"] + b["Fe Kb"], rel=0.005)


def test_make_config_bad_input(tmp_path):
    with pytest.raises(InputError, match="unknown element"):
        fitconfig.make_config(tmp_path / "x.cfg", ["Xx"], 16.0)
    with pytest.raises(InputError, match="no K, L or M line"):
        fitconfig.make_config(tmp_path / "x.cfg", ["H"], 16.0)
    with pytest.raises(InputError, match="energy"):
        fitconfig.make_config(tmp_path / "x.cfg", ["Fe"], -1.0)
    with pytest.raises(InputError, match="gain"):
        fitconfig.make_config(tmp_path / "x.cfg", ["Fe"], 16.0, gain=0.0)
    assert not (tmp_path / "x.cfg").exists()
