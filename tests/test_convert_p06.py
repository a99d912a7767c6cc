"""PETRA III P06 (NeXus) conversion: fixture -> convert -> layout file, compared with what was written."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import api
from xrfproc.core.convert import detect_kind, p06, read_any
from xrfproc.errors import InputError
from xrfproc.testing.beamline_fixtures import make_p06_scan
from _shared import CHECK_LAYOUT

CHECK = str(CHECK_LAYOUT)
SHAPE = (4, 5)


def grid(a, shape=SHAPE):
    a = np.asarray(a)
    return a.reshape(tuple(shape) + a.shape[1:])


def run_check(path: Path) -> None:
    res = subprocess.run([sys.executable, CHECK, str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    return make_p06_scan(tmp_path_factory.mktemp("p06"), shape=SHAPE, nbins=128)


def test_detect_kind(scan, tmp_path):
    assert detect_kind(scan["dir"]) == "p06"
    assert p06.sniff(scan["dir"])
    assert not p06.sniff(tmp_path) and not p06.sniff(tmp_path / "nothing")


def test_round_trip_exact(scan, tmp_path):
    t = scan
    out = api.convert(t["dir"], tmp_path / "out.h5", detectors=["channel00", "xspress3_01/channel01"], sort=False)
    run_check(out)
    with h5py.File(out, "r") as f:
        for ch, el in (("channel00", "channel00"), ("channel01", "channel01")):
            np.testing.assert_array_equal(f[f"raw/{ch}/spectra"][()], grid(t["spectra"][el]))
            np.testing.assert_array_equal(f[f"raw/{ch}/icr"][()], grid(t["icr"][el]))
            np.testing.assert_array_equal(f[f"raw/{ch}/ocr"][()], grid(t["ocr"][el]))
            np.testing.assert_array_equal(f[f"raw/{ch}/sumspec"][()], t["spectra"][el].sum(axis=0))
        assert "channel02" not in f["raw"]
        np.testing.assert_array_equal(f["raw/I0"][()], grid(t["i0"]))
        np.testing.assert_array_equal(f["raw/I1"][()], grid(t["i1"]))
        np.testing.assert_array_equal(f["raw/acquisition_time"][()], grid(t["time"]))
        # the encoders' valid entries only (counter > 0, first of a repeated trigger)
        np.testing.assert_array_equal(f["mot1"][()], grid(t["positions"]["samy"]))
        np.testing.assert_array_equal(f["mot2"][()], grid(t["positions"]["samx"]))
        assert f["raw"].attrs["energy_keV"] == 12.0
        assert f["raw"].attrs["sample"] == "NIST SRM 1577c"
        assert f["cmd"][()].decode() == t["cmd"]


def test_summed_elements(scan):
    t = scan
    raw = read_any(t["dir"], detectors=[["channel00", "channel02"]], sort=False)
    ch = raw.channels["channel00"]
    np.testing.assert_array_equal(ch.spectra, grid(t["spectra"]["channel00"] + t["spectra"]["channel02"]))
    np.testing.assert_array_equal(ch.icr, grid(t["icr"]["channel00"] + t["icr"]["channel02"]))
    np.testing.assert_array_equal(ch.ocr, grid(t["ocr"]["channel00"] + t["ocr"]["channel02"]))


def test_split_files_ticks_adc01_capitalised(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=64, split=3, scalers="ticks", adc="adc01", capitalised=True,
                      elements=("channel00",))
    assert sorted(p.name for p in (t["dir"] / "xspress3_01").iterdir()) == [
        "scan_00001_00001.nxs", "scan_00001_00002.nxs", "scan_00001_00003.nxs"]
    raw = read_any(t["dir"], sort=False)
    ch = raw.channels["channel00"]
    np.testing.assert_array_equal(ch.spectra, grid(t["spectra"]["channel00"]))
    with h5py.File(t["dir"] / "xspress3_01" / "scan_00001_00002.nxs", "r") as f:
        sc = f["entry/instrument/xspress3/channel00/scaler"]
        total, dead = sc["totalticks"][()], sc["deadtimeticks"][()]
    n1 = len(np.array_split(np.arange(20), 3)[0])
    np.testing.assert_array_equal(ch.icr.ravel()[n1:n1 + total.size], total)
    np.testing.assert_array_equal(ch.ocr.ravel()[n1:n1 + total.size], total - dead)
    np.testing.assert_array_equal(ch.icr, grid(t["icr"]["channel00"]))
    np.testing.assert_array_equal(raw.I0, grid(t["i0"]))
    np.testing.assert_array_equal(raw.acquisition_time, grid(t["time"]))
    np.testing.assert_array_equal(raw.mot2, grid(t["positions"]["samx"]))


def test_lower_case_scalers(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=64, scalers="allevent", elements=("channel00",))
    with h5py.File(t["dir"] / "xspress3_01" / "scan_00001_00000.nxs", "r") as f:
        assert "allevent" in f["entry/instrument/xspress3/channel00/scaler"]
    raw = read_any(t["dir"], sort=False)
    np.testing.assert_array_equal(raw.channels["channel00"].icr, grid(t["icr"]["channel00"]))
    np.testing.assert_array_equal(raw.channels["channel00"].ocr, grid(t["spectra"]["channel00"].sum(axis=1)))


def test_snake_scan_sorted(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=64, snake=True, elements=("channel00",))
    raw = read_any(t["dir"])  # sort=True by default
    assert np.all(np.diff(raw.mot2, axis=1) > 0)
    fast, slow = t["positions"]["samx"], t["positions"]["samy"]
    for r in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            k = np.flatnonzero((fast == raw.mot2[r, c]) & (slow == raw.mot1[r, c]))
            assert k.size == 1
            np.testing.assert_array_equal(raw.channels["channel00"].spectra[r, c], t["spectra"]["channel00"][k[0]])
            assert raw.I0[r, c] == t["i0"][k[0]]
    unsorted = read_any(t["dir"], sort=False)
    assert np.all(np.diff(unsorted.mot2[1]) < 0)  # the backward row as acquired


def test_continuous_virtual_motor_sibling_context(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=64, continuous=True, virtual=True, context="sibling",
                      elements=("channel00",))
    assert t["cmd"].split()[0] == "cmesh" and t["cmd"].split()[4] == str(SHAPE[1])  # columns as points
    assert (tmp_path / "scan_00001.nxs").is_file()
    raw = read_any(t["dir"], sort=False)
    assert raw.grid_shape == SHAPE and raw.mot2_name == "scanx"
    np.testing.assert_allclose(raw.mot2, grid(t["positions"]["scanx"]), rtol=0, atol=1e-12)
    assert "scanx: logbook" in raw.attrs["positions"]


def test_parse_command():
    assert p06.parse_command("mesh samx 0 1 10 samy 0 1 4 0.1")["dims"] == (5, 11)
    c = p06.parse_command("cmesh samx 0 1 10 samy 0 1 4 0.1")
    assert c["dims"] == (5, 10) and c["continuous"] and c["fast"] == "samx" and c["slow"] == "samy"
    assert p06.parse_command("ascan samx 0 1 10 0.1")["dims"] == (11,)
    assert p06.parse_command("cscan samx 0 1 10 0.1")["dims"] == (10,)
    assert p06.parse_command("") == {}


def test_parse_linear_never_evaluates(tmp_path):
    assert p06.parse_linear("0.5*samx + 0.5*samz - 0.1") == ({"samx": 0.5, "samz": 0.5}, -0.1)
    assert p06.parse_linear("samx*2 - samy + 1e-3") == ({"samx": 2.0, "samy": -1.0}, 1e-3)
    for bad in ("__import__('os').system('true')", "samx**2", "samx samy", "samx / 2", ""):
        with pytest.raises(ValueError):
            p06.parse_linear(bad)
    log = tmp_path / "scan_logbook.txt"
    marker = tmp_path / "pwned"
    log.write_text(f"scanx = __import__('os').system('touch {marker}')\n")
    with pytest.raises(InputError, match="line 1: virtual motor 'scanx'"):
        p06.virtual_motor(log, "scanx")
    assert not marker.exists()


def test_time_triggered(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=64, time_triggered=True, elements=("channel00",))
    n = t["npts"]
    assert n == 23
    with pytest.raises(InputError, match="time_triggered=True"):
        read_any(t["dir"])
    raw = read_any(t["dir"], time_triggered=True)  # not sorted by default
    assert raw.grid_shape == (n,)
    np.testing.assert_array_equal(raw.mot2, t["positions"]["samx"])
    np.testing.assert_array_equal(raw.mot1, t["positions"]["samy"])
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, t["spectra"]["channel00"])
    assert raw.attrs["time_triggered"] is True


def test_cut_short_padded(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=64, cut_short=3, elements=("channel00",))
    out = api.convert(t["dir"], tmp_path / "cut.h5", sort=False)
    run_check(out)
    with h5py.File(out, "r") as f:
        assert f["raw"].attrs["missing_points"] == 3
        sp = f["raw/channel00/spectra"][()].reshape(20, -1)
        np.testing.assert_array_equal(sp[:17], t["spectra"]["channel00"])
        assert np.isnan(sp[17:]).all()
        i0 = f["raw/I0"][()].ravel()
        np.testing.assert_array_equal(i0[:17], t["i0"])
        assert np.isnan(i0[17:]).all() and np.isnan(f["mot2"][()].ravel()[17:]).all()
        np.testing.assert_array_equal(f["raw/channel00/sumspec"][()], t["spectra"]["channel00"].sum(axis=0))


# ---------------------------------------------------------------------------------- bad input
def test_missing_element_lists_present(scan):
    with pytest.raises(InputError) as e:
        read_any(scan["dir"], detectors=["channel07"])
    msg = str(e.value)
    assert "channel07" in msg and "channel00, channel01, channel02" in msg and "scan_00001_00000.nxs" in msg
    assert e.value.dataset == "entry/instrument/xspress3/channel07"


def test_missing_detector_device(scan):
    with pytest.raises(InputError, match="xspress3_02.*adc_01"):
        read_any(scan["dir"], detectors=["xspress3_02/channel00"])


def test_missing_counter_names_file_and_dataset(scan):
    with pytest.raises(InputError) as e:
        read_any(scan["dir"], i0="value9")
    assert e.value.path.endswith("adc_01/scan_00001_00000.nxs") and e.value.dataset == "entry/data/value9"
    assert "value1" in str(e.value)


def test_missing_motor_lists_encoders(scan):
    with pytest.raises(InputError, match="motor 'hexz'.*samx, samy, samz"):
        read_any(scan["dir"], mot2="hexz")


def test_missing_adc_folder(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=32, elements=("channel00",))
    shutil.rmtree(t["dir"] / "adc_01")
    with pytest.raises(InputError, match="adc_01"):
        read_any(t["dir"])


def test_wrong_dims(scan):
    with pytest.raises(InputError, match=r"20 points recorded but the grid \(3, 3\) has 9"):
        read_any(scan["dir"], dims=(3, 3))


def test_empty_scan(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=32, elements=("channel00",))
    path = t["dir"] / "xspress3_01" / "scan_00001_00000.nxs"
    with h5py.File(path, "a") as f:
        g = f["entry/instrument/xspress3/channel00"]
        del g["histogram"]
        g.create_dataset("histogram", shape=(0, 32), dtype="i4")
        for k in list(g["scaler"]):
            del g["scaler"][k]
            g["scaler"].create_dataset(k, shape=(0,), dtype="i8")
    with pytest.raises(InputError, match="empty scan"):
        read_any(t["dir"])


def test_unreadable_command_needs_dims(tmp_path):
    t = make_p06_scan(tmp_path, shape=SHAPE, nbins=32, elements=("channel00",))
    with h5py.File(t["dir"] / "scan_00001.nxs", "a") as f:
        f["scan/program_name"].attrs["scan_command"] = "my_macro"
    with pytest.raises(InputError, match="dims=") as e:
        read_any(t["dir"])
    assert e.value.dataset == "scan/program_name@scan_command"
    raw = read_any(t["dir"], dims=SHAPE, mot1="samy", mot2="samx", sort=False)
    np.testing.assert_array_equal(raw.mot2, grid(t["positions"]["samx"]))
