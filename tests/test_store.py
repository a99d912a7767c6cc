"""The store: layout, atomic replacement, locking, provenance, original-layout files."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import store
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import FileBusyError, InputError, LayoutError, WriteError

CHECK_LAYOUT = Path(__file__).resolve().parents[1] / "xrfproc" / "testing" / "check_layout.py"


def small_map(rows: int = 6, cols: int = 5, nbins: int = 256, nchan: int = 2, seed: int = 0) -> RawMap:
    rng = np.random.default_rng(seed)
    channels = {}
    for c in range(nchan):
        spectra = rng.poisson(20.0, size=(rows, cols, nbins)).astype(np.uint32)
        channels[f"channel{c:02d}"] = RawChannel(spectra, np.full((rows, cols), 1000.0 + c),
                                                 np.full((rows, cols), 900.0), (0.0, 0.01, 0.0))
    mot1, mot2 = np.meshgrid(np.arange(rows) * 0.1, np.arange(cols) * 0.2, indexing="ij")
    return RawMap(channels=channels, I0=rng.uniform(9e5, 1e6, (rows, cols)),
                  acquisition_time=np.full((rows, cols), 0.1), mot1=mot1, mot2=mot2,
                  I1=np.ones((rows, cols)), cmd="dmesh hry 0 0.5 5 hrz 0 0.8 4 0.1", energy_keV=20.0,
                  sources=["test"])


def digest(path: Path, key: str) -> str:
    with h5py.File(path, "r") as f:
        return hashlib.sha256(f[key][()].tobytes()).hexdigest()


def run_check_layout(path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(CHECK_LAYOUT), str(path)], capture_output=True, text=True)


def test_write_raw_layout(tmp_path):
    raw = small_map()
    path = store.write_raw(tmp_path / "scan.h5", raw)
    res = run_check_layout(path)
    assert res.returncode == 0, res.stdout
    with h5py.File(path, "r") as f:
        sp = f["raw/channel01/spectra"]
        assert sp.shape == (6, 5, 256) and sp.dtype == np.uint32
        assert sp.compression == "gzip" and sp.compression_opts == 4
        np.testing.assert_array_equal(sp[()], raw.channels["channel01"].spectra)
        np.testing.assert_array_equal(f["raw/channel01/sumspec"][()],
                                      raw.channels["channel01"].spectra.sum(axis=(0, 1)))
        np.testing.assert_array_equal(f["raw/channel00/maxspec"][()],
                                      raw.channels["channel00"].spectra.max(axis=(0, 1)))
        assert f["cmd"][()].decode() == raw.cmd
        assert f.attrs["xrfproc_schema_version"] == store.SCHEMA_VERSION
        prov = store.read_provenance(f["raw"])
        assert prov["step"] == "convert" and prov["inputs"] == ["test"]
        # the spectra are in the bulk file, linked by a relative external link
        link = f["raw/channel00"].get("spectra", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and not os.path.isabs(link.filename)
    # the pair (file + folder) can be moved together and still reads
    moved = tmp_path / "elsewhere"
    moved.mkdir()
    os.rename(path, moved / "scan.h5")
    os.rename(store.bulk_dir(path), store.bulk_dir(moved / "scan.h5"))
    cwd = os.getcwd()
    try:
        os.chdir("/")
        assert store.read_raw(moved / "scan.h5").channels["channel00"].spectra.shape == (6, 5, 256)
    finally:
        os.chdir(cwd)


def test_transaction_replaces_only_its_group(tmp_path):
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    before = digest(path, "raw/channel00/spectra")
    bulk_before = sorted(p.name for p in store.bulk_dir(path).glob("*.h5"))
    with store.transaction(path, "fit", replace=["fit"], params={"mode": "fast"}, inputs=["raw"]) as tx:
        g = tx.group("fit/channel00")
        store.write_array(g, "ims", np.ones((3, 6, 5)))
        store.write_array(g, "names", ["Fe K", "Rayl", "Compt"])
    with store.transaction(path, "norm", replace=["norm"]) as tx:
        store.write_array(tx.group("norm"), "I0", 1e6)
    with h5py.File(path, "r") as f:
        assert "fit/channel00/ims" in f and "norm/I0" in f
        assert store.decode_names(f["fit/channel00/names"][()]) == ["Fe K", "Rayl", "Compt"]
        prov = store.read_provenance(f["fit"])
        assert prov["step"] == "fit" and prov["parameters"] == {"mode": "fast"}
    assert digest(path, "raw/channel00/spectra") == before
    assert sorted(p.name for p in store.bulk_dir(path).glob("*.h5")) == bulk_before


def test_failed_step_leaves_file_unchanged(tmp_path):
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        store.write_array(tx.group("fit"), "x", np.arange(5))
    stat_before = path.read_bytes()
    with pytest.raises(RuntimeError):
        with store.transaction(path, "fit", replace=["fit"]) as tx:
            store.write_array(tx.group("fit"), "x", np.arange(7))
            raise RuntimeError("interrupted")
    assert path.read_bytes() == stat_before
    assert not list(tmp_path.glob(".scan.h5.tmp-*"))


def test_subgroup_replacement_keeps_siblings(tmp_path):
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    for name, value in (("nist613", 1.0), ("nist1155", 2.0), ("nist613", 3.0)):
        with store.transaction(path, "detlim", replace=[f"detlim/{name}"]) as tx:
            store.write_array(tx.group(f"detlim/{name}"), "v", value)
    with h5py.File(path, "r") as f:
        assert f["detlim/nist613/v"][()] == 3.0 and f["detlim/nist1155/v"][()] == 2.0


def test_second_writer_is_refused(tmp_path):
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    code = textwrap.dedent(f"""
        import time, sys
        from xrfproc import store
        with store.transaction({str(path)!r}, "fit", replace=["fit"]) as tx:
            print("locked", flush=True)
            time.sleep(30)
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(FileBusyError) as err:
            with store.transaction(path, "norm", replace=["norm"]):
                pass
        assert f"pid {proc.pid}" in str(err.value) and "step fit" in str(err.value)
        assert str(path) in str(err.value)
    finally:
        proc.kill()
        proc.wait()
    # the lock dies with its process: the next writer gets in
    with store.transaction(path, "norm", replace=["norm"]) as tx:
        store.write_array(tx.group("norm"), "I0", 1.0)


WRITER = """
import sys, numpy as np
from xrfproc import store
path = sys.argv[1]
i = 0
while True:
    i += 1
    data = np.full((40, 60, 60), float(i), dtype=np.float64)
    with store.transaction(path, "fit", replace=["fit"], params={"i": i}) as tx:
        g = tx.group("fit/channel00")
        store.write_array(g, "ims", data)
        store.write_array(g, "names", ["line%d" % k for k in range(40)])
        store.write_array(g, "cfg", "test.cfg")
        store.write_array(g, "sum/int", np.full(40, float(i)))
        store.write_array(g, "sum/bkg", np.full(40, float(i)))
        g.attrs["i"] = i
    print(i, flush=True)
"""


def test_kill_mid_write_never_corrupts(tmp_path):
    """SIGKILL a writer at many points: the file always opens, raw is intact, fit is old-or-new whole."""
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    raw_digest = digest(path, "raw/channel00/spectra")
    rng = np.random.default_rng(1)
    seen = set()
    for trial in range(12):
        proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)
        # wait for the first completed write (the import time varies with the machine's load), then
        # kill at a random point of the following writes
        assert proc.stdout.readline(), "the writer died before its first write"
        time.sleep(rng.uniform(0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        with h5py.File(path, "r") as f:
            assert digest(path, "raw/channel00/spectra") == raw_digest
            if "fit" in f:
                g = f["fit/channel00"]
                i = int(g.attrs["i"])
                ims = g["ims"][()]
                assert ims.shape == (40, 60, 60) and np.all(ims == i)
                assert len(g["names"]) == 40
                assert store.read_provenance(f["fit"])["parameters"] == {"i": i}
                seen.add(i)
    assert seen, "the writer never completed a transaction"
    # a later step succeeds and cleans the temporary files the killed writers left
    with store.transaction(path, "norm", replace=["norm"]) as tx:
        store.write_array(tx.group("norm"), "I0", 1.0)
    assert not list(tmp_path.glob(".scan.h5.tmp-*"))
    assert run_check_layout(path).returncode == 0


def test_original_layout_file_reads_and_accepts_steps(tmp_path):
    """A file of the original tool: spectra inline, float32, no provenance, no schema attribute."""
    path = tmp_path / "legacy.h5"
    rng = np.random.default_rng(3)
    spectra = rng.poisson(5, (4, 3, 128)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f.create_dataset("cmd", data=b"dmesh hry 0 1 3 hrz 0 1 2 0.1")
        f.create_dataset("raw/channel00/spectra", data=spectra, compression="gzip", compression_opts=4)
        for k in ("icr", "ocr"):
            f.create_dataset(f"raw/channel00/{k}", data=np.ones((4, 3)))
        f.create_dataset("raw/channel00/sumspec", data=spectra.sum(axis=(0, 1)))
        f.create_dataset("raw/channel00/maxspec", data=spectra.max(axis=(0, 1)))
        f.create_dataset("raw/I0", data=np.ones((4, 3)))
        f.create_dataset("raw/acquisition_time", data=np.ones((4, 3)))
        f.create_dataset("mot1", data=np.zeros((4, 3)))
        f.create_dataset("mot2", data=np.zeros((4, 3)))
    raw = store.read_raw(path)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, spectra)
    from xrfproc.store.inspect import summarise
    summary = summarise(path)
    assert summary["schema_version"] is None and summary["grid"] == [4, 3]
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        store.write_array(tx.group("fit"), "x", 1)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(f["raw/channel00/spectra"][()], spectra)
        assert "fit/x" in f


def test_errors_name_file_and_dataset(tmp_path):
    with pytest.raises(InputError, match="not found"):
        store.read_raw(tmp_path / "missing.h5")
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"this is not hdf5")
    with pytest.raises(InputError, match="not a readable HDF5 file") as err:
        store.read_raw(bad)
    assert str(bad) in str(err.value)
    empty = tmp_path / "empty.h5"
    with h5py.File(empty, "w") as f:
        f.create_group("raw")
    with pytest.raises(LayoutError, match="raw/channelXX"):
        store.read_raw(empty)


def test_mismatched_shapes_are_refused(tmp_path):
    raw = small_map()
    raw.I0 = raw.I0[:-1]
    with pytest.raises(InputError, match=r"I0 has shape \(5, 5\), expected the spectra grid \(6, 5\)"):
        store.write_raw(tmp_path / "x.h5", raw)
    assert not (tmp_path / "x.h5").exists()


def test_read_only_folder_gives_write_error(tmp_path, monkeypatch):
    """A folder we may not write to (simulated: tests run as root, who ignores permissions)."""
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    before = path.read_bytes()
    from xrfproc.store import h5store

    real_file = h5py.File

    def refuse_writing(name, mode="r", *args, **kwargs):
        if mode != "r":
            raise PermissionError(13, "Permission denied")
        return real_file(name, mode, *args, **kwargs)

    monkeypatch.setattr(h5store.h5py, "File", refuse_writing)
    with pytest.raises(WriteError, match="cannot write next to the file") as err:
        with store.transaction(path, "fit", replace=["fit"]):
            pass
    assert str(path) in str(err.value)
    monkeypatch.undo()
    assert path.read_bytes() == before


def test_disk_full_leaves_old_file(tmp_path, monkeypatch):
    path = store.write_raw(tmp_path / "scan.h5", small_map())
    before = path.read_bytes()
    import errno as _errno

    real_replace = os.replace

    def full_disk(src, dst):
        raise OSError(_errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", full_disk)
    with pytest.raises(WriteError, match="No space left"):
        with store.transaction(path, "fit", replace=["fit"]) as tx:
            store.write_array(tx.group("fit"), "x", np.arange(10))
    monkeypatch.setattr(os, "replace", real_replace)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob(".scan.h5.tmp-*"))
