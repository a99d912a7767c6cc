"""Generic array converter (.npy / HDF5 dataset / ndarray) and reading an existing xrf_proc layout file."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc.core.convert import detect_kind, generic, layout, read_any
from xrfproc.errors import InputError
from xrfproc.store.raw import read_raw, write_raw
from _shared import CHECK_LAYOUT, PYTHON

CHECK = CHECK_LAYOUT
PY = Path(PYTHON)


def check_layout(path: Path) -> None:
    exe = str(PY) if PY.exists() else sys.executable
    res = subprocess.run([exe, str(CHECK), str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.fixture
def cube():
    return np.random.default_rng(0).poisson(5, (3, 4, 64)).astype(np.int32)


def test_npy_map_with_motor_files(tmp_path, cube):
    p = tmp_path / "spectra.npy"
    np.save(p, cube)
    y, x = np.meshgrid(np.linspace(0, 1, 3), np.linspace(10, 13, 4), indexing="ij")
    np.save(tmp_path / "y.npy", y)
    i0 = np.arange(12.0) + 100  # flat: reshaped to the grid
    assert detect_kind(p) == "npy"
    raw = read_any(p, mot1=tmp_path / "y.npy", mot2=x, I0=i0, acquisition_time=0.5, calibration=(0.0, 0.01))
    assert raw.grid_shape == (3, 4)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, cube)
    np.testing.assert_array_equal(raw.mot1, y)
    np.testing.assert_array_equal(raw.mot2, x)
    np.testing.assert_array_equal(raw.I0, i0.reshape(3, 4))
    np.testing.assert_array_equal(raw.acquisition_time, np.full((3, 4), 0.5))
    assert raw.channels["channel00"].calibration == (0.0, 0.01, 0.0)
    out = write_raw(tmp_path / "out.h5", raw)
    check_layout(out)
    back = read_raw(out)
    np.testing.assert_array_equal(back.channels["channel00"].spectra, cube)


def test_line_dims_single_and_hdf5(tmp_path, cube):
    flat = cube.reshape(12, 64)
    raw = generic.read(flat)
    assert raw.grid_shape == (1, 12)
    raw = generic.read(flat, dims=(3, 4))
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, cube)
    one = generic.read(cube[0, 0])
    assert one.grid_shape == (1, 1)
    h5 = tmp_path / "data.h5"
    with h5py.File(h5, "w") as f:
        f["entry/data"] = cube
        f["entry/i0"] = np.full((3, 4), 7.0)
        f["entry/icr"] = np.full((3, 4), 110.0)
        f["entry/ocr"] = np.full((3, 4), 100.0)
    raw = generic.read(h5, dataset="entry/data", I0="h5:entry/i0", icr="h5:entry/icr", ocr="h5:entry/ocr")
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, cube)
    np.testing.assert_allclose(raw.I0, 7.0)
    np.testing.assert_allclose(raw.channels["channel00"].icr / raw.channels["channel00"].ocr, 1.1)
    assert not generic.sniff(h5)  # an HDF5 file needs kind="npy" and dataset=


def test_generic_errors(tmp_path, cube):
    p = tmp_path / "s.npy"
    np.save(p, cube)
    with pytest.raises(InputError, match=r"I0 has shape \(5,\) \(5 values\) but the spectra grid \(3, 4\)") as exc:
        generic.read(p, I0=np.ones(5))
    assert str(p) in str(exc.value)
    with pytest.raises(InputError, match=r"dims=\(5, 5\) needs 25 spectra, found 12"):
        generic.read(cube.reshape(12, 64), dims=(5, 5))
    with pytest.raises(InputError, match="found shape"):
        generic.read(np.zeros((2, 2, 2, 8)))
    with pytest.raises(InputError, match="must be numeric"):
        generic.read(np.array([["a", "b"]]))
    with pytest.raises(InputError, match="mot1: file not found"):
        generic.read(p, mot1=tmp_path / "nope.npy")
    with pytest.raises(InputError, match="unknown option"):
        generic.read(p, IO=np.ones(12))
    h5 = tmp_path / "d.h5"
    with h5py.File(h5, "w") as f:
        f["x"] = cube
    with pytest.raises(InputError, match="needs dataset="):
        generic.read(h5)
    with pytest.raises(InputError, match="no such dataset"):
        generic.read(h5, dataset="entry/missing")
    txt = tmp_path / "t.txt"
    txt.write_text("1 2 3\n")
    with pytest.raises(InputError, match="neither a .npy nor an HDF5 file"):
        generic.read(txt)
    with pytest.raises(InputError, match="file not found"):
        generic.read(tmp_path / "missing.npy")


# --------------------------------------------------------------------------- existing layout files
def _original_layout(path: Path, cube: np.ndarray, with_rates: bool = True) -> None:
    """A file as the original xrf_proc writes it: spectra inline, no provenance attributes."""
    rows, cols, _ = cube.shape
    with h5py.File(path, "w") as f:
        f.create_dataset("cmd", data="dmesh hry 0 1 3 hrz 0 1 2 0.1".encode("utf8"))
        g = f.create_group("raw")
        c = g.create_group("channel00")
        c.create_dataset("spectra", data=cube, compression="gzip", compression_opts=4)
        if with_rates:
            c.create_dataset("icr", data=np.full((rows, cols), 120.0), compression="gzip", compression_opts=4)
            c.create_dataset("ocr", data=np.full((rows, cols), 100.0), compression="gzip", compression_opts=4)
        c.create_dataset("sumspec", data=cube.reshape(-1, cube.shape[-1]).sum(0), compression="gzip", compression_opts=4)
        c.create_dataset("maxspec", data=cube.reshape(-1, cube.shape[-1]).max(0), compression="gzip", compression_opts=4)
        g.create_dataset("I0", data=np.arange(rows * cols, dtype=float).reshape(rows, cols) + 1, compression="gzip", compression_opts=4)
        g.create_dataset("acquisition_time", data=np.full((rows, cols), 0.1), compression="gzip", compression_opts=4)
        f.create_dataset("mot1", data=np.repeat(np.arange(rows, dtype=float)[:, None], cols, 1), compression="gzip", compression_opts=4)
        f.create_dataset("mot2", data=np.repeat(np.arange(cols, dtype=float)[None], rows, 0), compression="gzip", compression_opts=4)


def test_layout_file_migrates(tmp_path, cube):
    src = tmp_path / "old_merge.h5"
    _original_layout(src, cube)
    assert layout.sniff(src) and detect_kind(src) == "layout"
    raw = layout.read(src)
    assert raw.grid_shape == (3, 4)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, cube)
    np.testing.assert_allclose(raw.channels["channel00"].icr, 120.0)
    np.testing.assert_array_equal(raw.I0, np.arange(12.0).reshape(3, 4) + 1)
    np.testing.assert_allclose(raw.acquisition_time, 0.1)
    np.testing.assert_array_equal(raw.mot2[0], np.arange(4.0))
    assert raw.cmd == "dmesh hry 0 1 3 hrz 0 1 2 0.1"
    out = write_raw(tmp_path / "new.h5", raw)
    check_layout(out)
    with h5py.File(out, "r") as f:
        assert f["raw/channel00"].get("spectra", getlink=True).__class__.__name__ == "ExternalLink"
        np.testing.assert_array_equal(f["raw/channel00/spectra"][()], cube)
    # our own files are layout files too
    assert detect_kind(out) == "layout"


def test_layout_defaults_and_errors(tmp_path, cube, caplog):
    src = tmp_path / "norates.h5"
    _original_layout(src, cube, with_rates=False)
    raw = layout.read(src)
    np.testing.assert_array_equal(raw.channels["channel00"].icr, np.ones((3, 4)))
    assert "raw/channel00/icr" in caplog.text
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["raw/channel00/spectra"] = cube
        f["raw/I0"] = np.ones(5)
    with pytest.raises(InputError, match=r"I0 has shape \(5,\)"):
        layout.read(bad)
    nolayout = tmp_path / "other.h5"
    with h5py.File(nolayout, "w") as f:
        f["entry/data"] = cube
    assert not layout.sniff(nolayout)
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    assert not layout.sniff(notes)
    with pytest.raises(InputError, match="not a readable HDF5 file"):
        layout.read(notes)
