"""ESRF ID15 (Bliss HDF5) conversion: fixture -> convert -> layout file, compared with what was written."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import api
from xrfproc.core.convert import detect_kind, id15, read_any
from xrfproc.errors import InputError
from xrfproc.testing.beamline_fixtures import make_id15_file
from _shared import CHECK_LAYOUT

CHECK = str(CHECK_LAYOUT)
SHAPE = (4, 5)


@pytest.fixture(scope="module")
def bliss(tmp_path_factory):
    path = tmp_path_factory.mktemp("id15") / "sample_0001.h5"
    truth = make_id15_file(path, shape=SHAPE, nscans=2, nbins=128)
    return path, truth


def grid(a):
    a = np.asarray(a)
    return a.reshape(SHAPE + a.shape[1:])


def run_check(path: Path) -> None:
    res = subprocess.run([sys.executable, CHECK, str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_detect_kind(bliss, tmp_path):
    path, _ = bliss
    assert detect_kind(path) == "id15"
    assert id15.sniff(path)
    assert not id15.sniff(tmp_path)  # a directory
    junk = tmp_path / "x.h5"
    junk.write_text("not hdf5")
    assert not id15.sniff(junk)


def test_round_trip_exact(bliss, tmp_path):
    path, truth = bliss
    t = truth["1.1"]
    out = api.convert(path, tmp_path / "out.h5", scan="1.1", sort=False)
    run_check(out)
    with h5py.File(out, "r") as f:
        for ch, det in (("channel00", "falconx_det0"), ("channel01", "falconx2_det0")):
            np.testing.assert_array_equal(f[f"raw/{ch}/spectra"][()], grid(t["spectra"][det]))
            np.testing.assert_array_equal(f[f"raw/{ch}/icr"][()], grid(t["icr"][det]))
            np.testing.assert_array_equal(f[f"raw/{ch}/ocr"][()], grid(t["ocr"][det]))
            np.testing.assert_array_equal(f[f"raw/{ch}/sumspec"][()], t["spectra"][det].sum(axis=0))
            np.testing.assert_array_equal(f[f"raw/{ch}/maxspec"][()], t["spectra"][det].max(axis=0))
        np.testing.assert_array_equal(f["raw/I0"][()], grid(t["fpico2"] / t["current"]))
        np.testing.assert_array_equal(f["raw/I1"][()], grid(t["fpico3"]))
        np.testing.assert_array_equal(f["raw/acquisition_time"][()], grid(t["time"]["falconx_det0"]))
        # title "dmesh hry ... hrz ...": hry is the fast motor (mot2), hrz the slow one (mot1)
        np.testing.assert_array_equal(f["mot1"][()], grid(t["hrz"]))
        np.testing.assert_array_equal(f["mot2"][()], grid(t["hry"]))
        assert f["raw"].attrs["mot1_name"] == "hrz" and f["raw"].attrs["mot2_name"] == "hry"
        assert f["raw"].attrs["energy_keV"] == 21.0
        assert f["cmd"][()].decode() == t["title"]


def test_i0_correction_and_current(bliss):
    path, truth = bliss
    t = truth["1.1"]
    raw = read_any(path, scan="1.1", i0_correction="fpico6", sort=False)
    per_ma = t["fpico2"] / t["current"]
    expected = per_ma / per_ma.mean() * t["correction"].mean()
    np.testing.assert_allclose(raw.I0, grid(expected), rtol=1e-12)
    assert raw.I0.mean() == pytest.approx(t["correction"].mean(), rel=1e-12)
    raw = read_any(path, scan="1.1", divide_by_current=False, sort=False, i1_correction="fpico6")
    np.testing.assert_array_equal(raw.I0, grid(t["fpico2"]))
    np.testing.assert_allclose(raw.I1, grid(t["fpico3"] / t["fpico3"].mean() * t["correction"].mean()), rtol=1e-12)


def test_summed_detectors_and_positioner_motor(bliss):
    path, truth = bliss
    t = truth["1.1"]
    raw = read_any(path, scan="1.1", detectors=[["falconx_det0", "falconx2_det0"]], mot1="hrrz", mot2="hry",
                   sort=False)
    assert list(raw.channels) == ["channel00"]
    ch = raw.channels["channel00"]
    np.testing.assert_array_equal(ch.spectra, grid(t["spectra"]["falconx_det0"] + t["spectra"]["falconx2_det0"]))
    np.testing.assert_array_equal(ch.icr, grid(t["icr"]["falconx_det0"] + t["icr"]["falconx2_det0"]))
    np.testing.assert_array_equal(ch.ocr, grid(t["ocr"]["falconx_det0"] + t["ocr"]["falconx2_det0"]))
    np.testing.assert_array_equal(raw.mot1, np.full(SHAPE, 12.5))  # from instrument/positioners


def test_parse_title_intervals():
    assert id15.parse_title("dmesh hry 0 1 10 hrz 0 1 10 0.1")["dims"] == (11, 11)
    p = id15.parse_title("amesh hry 0 1 10 hrz 0 1 4 0.1")
    assert p["dims"] == (5, 11) and p["fast"] == "hry" and p["slow"] == "hrz" and p["count_time"] == 0.1
    assert id15.parse_title("ascan hry 0 1 20 0.5")["dims"] == (21,)
    assert id15.parse_title("loopscan 7 0.2")["dims"] == (7,)
    assert id15.parse_title("something else") == {}


def test_explicit_dims(bliss):
    path, truth = bliss
    raw = read_any(path, scan="1.1", dims=(2, 10), sort=False)
    assert raw.grid_shape == (2, 10)
    np.testing.assert_array_equal(raw.I1, truth["1.1"]["fpico3"].reshape(2, 10))


def test_two_scans_stitched(bliss):
    path, truth = bliss
    raw = read_any(path, scan=["1.1", "2.1"])
    assert raw.grid_shape == (8, 5)
    both = np.concatenate([grid(truth[s]["spectra"]["falconx_det0"]) for s in ("1.1", "2.1")])
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, both)
    np.testing.assert_array_equal(raw.mot1[:, 0], np.concatenate([truth[s]["hrz"][::5] for s in ("1.1", "2.1")]))
    assert raw.attrs["stitched_axis"] == 0


def test_snake_scan_sorted(tmp_path):
    path = tmp_path / "snake.h5"
    t = make_id15_file(path, shape=SHAPE, snake=True, detectors=("falconx_det0",), nbins=64)["1.1"]
    raw = read_any(path, scan="1.1")  # sort=True by default
    assert np.all(np.diff(raw.mot2, axis=1) > 0)
    assert np.all(np.diff(raw.mot1[:, 0]) > 0)
    # every point keeps its own spectrum: look the point up by its positions
    for r in range(SHAPE[0]):
        for c in range(SHAPE[1]):
            k = np.flatnonzero((t["hrz"] == raw.mot1[r, c]) & (t["hry"] == raw.mot2[r, c]))
            assert k.size == 1
            np.testing.assert_array_equal(raw.channels["channel00"].spectra[r, c], t["spectra"]["falconx_det0"][k[0]])
            assert raw.I1[r, c] == t["fpico3"][k[0]]
    unsorted = read_any(path, scan="1.1", sort=False)
    np.testing.assert_array_equal(unsorted.mot2[1], t["hry"][5:10])
    assert np.all(np.diff(unsorted.mot2[1]) < 0)


# ---------------------------------------------------------------------------------- bad input
def test_wrong_scan_id_lists_available(bliss):
    path, _ = bliss
    with pytest.raises(InputError) as e:
        read_any(path, scan="7.1")
    msg = str(e.value)
    assert str(path) in msg and "7.1" in msg and "1.1" in msg and "2.1" in msg


def test_missing_detector_lists_present(bliss):
    path, _ = bliss
    with pytest.raises(InputError) as e:
        read_any(path, scan="1.1", detectors=["xmap_det3"])
    msg = str(e.value)
    assert "xmap_det3" in msg and "falconx_det0" in msg and "1.1/measurement/xmap_det3" in msg


def test_missing_counter_names_dataset(bliss):
    path, _ = bliss
    with pytest.raises(InputError) as e:
        read_any(path, scan="1.1", i0="fpico9")
    assert e.value.dataset == "1.1/measurement/fpico9" and e.value.path == str(path)
    assert "fpico2" in str(e.value)  # lists what is there


def test_missing_motor(bliss):
    path, _ = bliss
    with pytest.raises(InputError, match="motor 'samx'.*hrrz"):
        read_any(path, scan="1.1", mot1="samx")


def test_dims_not_matching(bliss):
    path, _ = bliss
    with pytest.raises(InputError) as e:
        read_any(path, scan="1.1", dims=(3, 3))
    assert "(3, 3)" in str(e.value) and "9 points" in str(e.value) and "20 points" in str(e.value)


def test_aborted_scan_wrong_shape(tmp_path):
    path = tmp_path / "aborted.h5"
    make_id15_file(path, shape=SHAPE, drop_points=3, detectors=("falconx_det0",), nbins=32)
    with pytest.raises(InputError, match=r"grid \(4, 5\) of 20 points, but the scan has 17"):
        read_any(path, scan="1.1")
    assert read_any(path, scan="1.1", dims=(17,)).grid_shape == (17,)


def test_title_without_dims(tmp_path):
    path = tmp_path / "custom.h5"
    make_id15_file(path, shape=SHAPE, title="my_macro 3", detectors=("falconx_det0",), nbins=32)
    with pytest.raises(InputError, match="dims=") as e:
        read_any(path, scan="1.1")
    assert e.value.dataset == "1.1/title"
    assert read_any(path, scan="1.1", dims=SHAPE, mot1="hrz", mot2="hry").grid_shape == SHAPE


def test_empty_scan(tmp_path):
    path = tmp_path / "empty.h5"
    with h5py.File(path, "w") as f:
        m = f.create_group("1.1/measurement")
        f["1.1/title"] = "dmesh hry 0 1 10 hrz 0 1 10 0.1"
        m.create_dataset("falconx_det0", shape=(0, 256), dtype="i4")
    assert detect_kind(path) == "id15"
    with pytest.raises(InputError, match="empty scan") as e:
        read_any(path, scan="1.1")
    assert e.value.dataset == "1.1/measurement/falconx_det0"


def test_correction_needs_dot2_scan(tmp_path):
    path = tmp_path / "no2.h5"
    make_id15_file(path, shape=SHAPE, correction_counter=None, detectors=("falconx_det0",), nbins=32)
    with pytest.raises(InputError, match=r"needs scan 1\.2"):
        read_any(path, scan="1.1", i0_correction="fpico6")


def test_list_of_files_and_cross_sniffing(tmp_path):
    a, b = tmp_path / "a.h5", tmp_path / "b.h5"
    ta = make_id15_file(a, shape=SHAPE, detectors=("falconx_det0",), nbins=32, seed=1)["1.1"]
    tb = make_id15_file(b, shape=SHAPE, detectors=("falconx_det0",), nbins=32, seed=2,
                        start=(1.0 + SHAPE[0] * 0.01, -0.5))["1.1"]
    raw = id15.read([a, b], scan=["1.1", "1.1"], sort=False)
    assert raw.grid_shape == (8, 5)
    np.testing.assert_array_equal(raw.acquisition_time.ravel(),
                                  np.concatenate([ta["time"]["falconx_det0"], tb["time"]["falconx_det0"]]))
    with pytest.raises(InputError, match="2 files but 3 scan ids"):
        id15.read([a, b], scan=["1.1", "1.1", "2.1"])
    out = api.convert(a, tmp_path / "a_merge.h5", scan="1.1")
    assert not id15.sniff(out)  # our own layout file is not a Bliss file
    from xrfproc.core.convert import p06
    assert not p06.sniff(a) and not id15.sniff(tmp_path)
