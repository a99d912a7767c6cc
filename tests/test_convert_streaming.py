"""Out-of-core conversion (spectra read and written block by block) and the compression options."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import api, cli
from xrfproc.core.convert import lazy, read_any
from xrfproc.core.convert.lazy import LazySpectra
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import InputError
from xrfproc.store import filters, raw as raw_store
from xrfproc.store import iter_spectra_blocks, read_raw, write_raw
from xrfproc.testing.beamline_fixtures import make_id15_file, make_p06_scan
from _shared import CHECK_LAYOUT


def check_layout(path: Path) -> str:
    res = subprocess.run([sys.executable, str(CHECK_LAYOUT), str(path)], capture_output=True, text=True)
    return res.stdout + res.stderr


@pytest.fixture
def reads(monkeypatch):
    """Record the number of points of every read from a beamline file; small blocks (many of them)."""
    sizes: list[int] = []
    original = lazy.H5Points.read

    def spy(self, idx):
        sizes.append(int(idx.size))
        return original(self, idx)

    monkeypatch.setattr(lazy.H5Points, "read", spy)
    monkeypatch.setattr(raw_store, "CHUNK_VALUES", 512)  # chunks of 2 spectra of 256 bins, blocks of 32
    return sizes


def spectra_of(path: Path, channel: str = "channel00") -> np.ndarray:
    with h5py.File(path, "r") as f:
        return f[f"raw/{channel}/spectra"][()]


# ------------------------------------------------------------------------------ streaming readers
def test_id15_streams_in_blocks(tmp_path, reads):
    shape = (12, 10)
    truth = make_id15_file(tmp_path / "s.h5", shape=shape, nscans=2, snake=True)
    summed = [["falconx_det0", "falconx2_det0"]]
    raw = read_any([tmp_path / "s.h5"], kind="id15", scan=["1.1", "2.1"], detectors=summed)
    ch = raw.channels["channel00"]
    assert isinstance(ch.spectra, LazySpectra) and not reads  # nothing read yet
    out = api.convert(tmp_path / "s.h5", tmp_path / "out.h5", kind="id15", scan=["1.1", "2.1"], detectors=summed)
    npts = 2 * shape[0] * shape[1]
    assert reads and max(reads) <= 3 * shape[1] and sum(reads) == 2 * npts  # two detectors, each point once
    # ground truth: both scans stacked, snake rows put back in motor order
    both = np.concatenate([t["spectra"]["falconx_det0"] + t["spectra"]["falconx2_det0"]
                           for t in (truth["1.1"], truth["2.1"])]).reshape(2 * shape[0], shape[1], -1)
    both[1::2] = both[1::2, ::-1]
    got = spectra_of(out)
    np.testing.assert_array_equal(got, both)
    with h5py.File(out, "r") as f:
        np.testing.assert_array_equal(f["raw/channel00/sumspec"][()], both.reshape(-1, both.shape[-1]).sum(axis=0))
        np.testing.assert_array_equal(f["raw/channel00/maxspec"][()], both.reshape(-1, both.shape[-1]).max(axis=0))
    assert "OK" in check_layout(out)


def test_p06_streams_split_files_and_cut_short(tmp_path, reads):
    t = make_p06_scan(tmp_path, shape=(6, 8), split=3, cut_short=5, elements=("channel00",))
    out = api.convert(t["dir"], tmp_path / "p06.h5", kind="p06")
    assert reads and max(reads) <= 4 * 8 and sum(reads) == 6 * 8 - 5
    got = spectra_of(out)
    assert got.dtype == np.float32 and got.shape[:2] == (6, 8)
    flat = got.reshape(-1, got.shape[-1])
    np.testing.assert_array_equal(flat[:43], t["spectra"]["channel00"])
    assert np.isnan(flat[43:]).all()
    assert "OK" in check_layout(out)


def test_lazy_spectra_indexing_matches_numpy(tmp_path):
    truth = make_id15_file(tmp_path / "s.h5", shape=(4, 5), snake=True)
    sp = read_any(tmp_path / "s.h5", kind="id15", detectors=[["falconx_det0", "falconx2_det0"]]
                  ).channels["channel00"].spectra
    full = np.asarray(sp)
    for key in [(), 1, slice(1, 3), (2, 3), (slice(None), 4), (1, slice(0, 2), slice(5, 9)), (Ellipsis, 3),
                np.array([3, 0])]:
        np.testing.assert_array_equal(sp[key], full[key])
    assert sp.shape == full.shape and sp.dtype == full.dtype and len(sp) == 4
    t = truth["1.1"]
    np.testing.assert_array_equal(full[0], (t["spectra"]["falconx_det0"] + t["spectra"]["falconx2_det0"])[:5])


def test_peak_memory_stays_below_the_map(tmp_path, monkeypatch):
    make_id15_file(tmp_path / "big.h5", shape=(64, 64), nbins=2048, detectors=("falconx_det0",),
                   correction_counter=None)  # 4096 x 2048 int32 = 32 MiB of spectra
    monkeypatch.setattr(raw_store, "CHUNK_VALUES", 1 << 15)  # blocks of 4 rows (2 MiB)
    tracemalloc.start()
    try:
        api.convert(tmp_path / "big.h5", tmp_path / "out.h5", kind="id15")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 32 * 2**20 / 4, f"peak {peak / 2**20:.1f} MiB for a 32 MiB map"
    assert spectra_of(tmp_path / "out.h5").shape == (64, 64, 2048)


def test_read_error_names_the_file(tmp_path):
    make_id15_file(tmp_path / "s.h5")
    raw = read_any(tmp_path / "s.h5", kind="id15")
    shutil.copy(tmp_path / "s.h5", tmp_path / "keep.h5")
    with open(tmp_path / "s.h5", "r+b") as fh:  # the file changes between reading and writing
        fh.truncate(2048)
    with pytest.raises(InputError, match=r"s\.h5.*falconx_det0"):
        write_raw(tmp_path / "out.h5", raw)
    assert not (tmp_path / "out.h5").exists()


def test_string_spectra_refused_up_front(tmp_path):
    make_id15_file(tmp_path / "s.h5", detectors=("falconx_det0",))
    with h5py.File(tmp_path / "s.h5", "r+") as f:
        del f["1.1/measurement/falconx_det0"]
        f["1.1/measurement/falconx_det0"] = np.array([[b"a", b"b"]] * 20)
    with pytest.raises(InputError, match=r"s\.h5:.*falconx_det0.*numbers"):
        read_any(tmp_path / "s.h5", kind="id15")


# ------------------------------------------------------------------------------ compression
def small_map(dtype=np.int32, nan=False) -> RawMap:
    rng = np.random.default_rng(3)
    grid = (7, 9)
    sp = rng.poisson(30.0, grid + (300,)).astype(dtype)
    if nan:
        sp[-1, -2:] = np.nan
    ones = np.ones(grid)
    return RawMap(channels={"channel00": RawChannel(sp, ones, ones)}, I0=ones, acquisition_time=ones,
                  mot1=np.repeat(np.arange(7.0), 9).reshape(grid), mot2=np.tile(np.arange(9.0), 7).reshape(grid))


@pytest.mark.parametrize("compression", filters.COMPRESSIONS)
@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32])
def test_compression_round_trip(tmp_path, monkeypatch, compression, dtype):
    monkeypatch.setattr(raw_store, "CHUNK_VALUES", 600)  # edge chunks: 2 spectra per chunk, 9 columns
    m = small_map(dtype, nan=dtype == np.float32)
    out = write_raw(tmp_path / "c.h5", m, compression=compression)
    want = m.channels["channel00"].spectra
    got = np.concatenate([b for _, b in iter_spectra_blocks(out, "channel00", rows_per_block=2)])
    np.testing.assert_array_equal(got, want)
    assert got.dtype == raw_store.storage_dtype(dtype)
    np.testing.assert_array_equal(read_raw(out).channels["channel00"].spectra, want)
    with h5py.File(out, "r") as f:
        ds = f["raw/channel00/spectra"]
        assert (ds.compression == "gzip") == (compression == "gzip")
    report = check_layout(out)
    if compression == "gzip":
        assert "c.h5: OK" in report
    else:  # the checker asks for gzip on spectra; nothing else differs
        problems = [ln for ln in report.splitlines() if not ln.endswith("problem(s)")]
        assert len(problems) == 1 and "channel00/spectra" in problems[0], report
        assert "not gzip-compressed" in problems[0], report


def test_bad_compression_names_the_choices(tmp_path):
    make_id15_file(tmp_path / "s.h5")
    for call in (lambda: api.convert(tmp_path / "s.h5", tmp_path / "o.h5", compression="zip"),
                 lambda: write_raw(tmp_path / "o.h5", small_map(), compression="zstd")):
        with pytest.raises(InputError, match="gzip, lz4, blosc, none"):
            call()
    assert not (tmp_path / "o.h5").exists()


def test_cli_compression(tmp_path):
    make_id15_file(tmp_path / "s.h5")
    assert cli.main(["convert", str(tmp_path / "s.h5"), "-o", str(tmp_path / "o.h5"), "--compression", "lz4"]) == 0
    with h5py.File(tmp_path / "o.h5", "r") as f:
        assert f["raw/channel00/spectra"].id.get_create_plist().get_filter(0)[0] == 32004  # LZ4
        assert '"compression": "lz4"' in f["raw"].attrs["parameters"]


@pytest.mark.parametrize("shape,chunks", [((37, 300), (8, 300)), ((5, 11, 64), (1, 4, 64)),
                                          ((3, 4, 50), (1, 4, 50))])
@pytest.mark.parametrize("dtype", [np.int32, np.float32, np.uint8])
def test_parallel_gzip_writer_equals_h5py(tmp_path, shape, chunks, dtype):
    rng = np.random.default_rng(0)
    data = rng.poisson(5.0, shape).astype(dtype)
    opts = filters.dataset_options("gzip")
    with h5py.File(tmp_path / "w.h5", "w") as f:
        ref = f.create_dataset("ref", shape=shape, dtype=dtype, chunks=chunks, **opts)
        ref[...] = data
        ds = f.create_dataset("par", shape=shape, dtype=dtype, chunks=chunks, **opts)
        rows = 2 * chunks[0]
        with filters.ChunkWriter(ds, "gzip", threads=2) as w:
            assert w.direct
            for start in range(0, shape[0], rows):
                w.write(start, data[start:start + rows])
    with h5py.File(tmp_path / "w.h5", "r") as f:
        for key in ("ref", "par"):
            assert (f[key].compression, f[key].compression_opts, f[key].shuffle) == ("gzip", 4, filters.SHUFFLE)
        np.testing.assert_array_equal(f["par"][()], data)
        np.testing.assert_array_equal(f["par"][()], f["ref"][()])
        # every chunk stored, each one a zlib stream of the (shuffled) chunk
        assert f["par"].id.get_num_chunks() == f["ref"].id.get_num_chunks()


def test_chunk_writer_refuses_a_misaligned_block(tmp_path):
    with h5py.File(tmp_path / "w.h5", "w") as f:
        ds = f.create_dataset("x", shape=(10, 8), dtype=np.int32, chunks=(4, 8), **filters.dataset_options("gzip"))
        with pytest.raises(ValueError, match="chunk boundary"):
            with filters.ChunkWriter(ds, "gzip") as w:
                w.write(2, np.zeros((4, 8), np.int32))


def test_absurd_declared_spectra_refused_before_streaming(tmp_path, monkeypatch):
    make_id15_file(tmp_path / "s.h5", shape=(2, 2), detectors=("falconx_det0",))
    monkeypatch.setenv("XRFPROC_MAX_STREAM_BYTES", "1000")
    with pytest.raises(InputError, match=r"s\.h5.*falconx_det0"):
        read_any(tmp_path / "s.h5", kind="id15")
