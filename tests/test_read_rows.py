"""The threaded gzip reader (``store.filters.read_rows``) returns exactly what h5py reads."""
from __future__ import annotations

import h5py
import numpy as np
import pytest

from xrfproc import store
from xrfproc.errors import InputError
from xrfproc.store.filters import read_rows


@pytest.mark.parametrize("dtype", [np.int32, np.uint16, np.float32, np.float64])
@pytest.mark.parametrize("shuffle", [True, False])
def test_equals_h5py_for_any_row_range(tmp_path, dtype, shuffle):
    rng = np.random.default_rng(1)
    data = rng.poisson(3.0, (13, 21, 64)).astype(dtype)
    if np.dtype(dtype).kind == "f":
        data[2, 3] = np.nan
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = f.create_dataset("s", data=data, chunks=(2, 8, 64), compression="gzip", compression_opts=4,
                              shuffle=shuffle)
        for start, stop in [(0, 13), (1, 2), (3, 11), (12, 13), (5, 5)]:
            got = read_rows(ds, start, stop, threads=3)
            assert got.dtype == data.dtype
            np.testing.assert_array_equal(got, ds[start:stop])


def test_unwritten_chunks_and_other_filters_fall_back(tmp_path):
    with h5py.File(tmp_path / "a.h5", "w") as f:
        ds = f.create_dataset("s", shape=(6, 4, 16), dtype=np.int32, chunks=(1, 4, 16), compression="gzip",
                              fillvalue=7)
        ds[0] = 1  # rows 1.. never written: fill value
        np.testing.assert_array_equal(read_rows(ds, 0, 6, threads=2), ds[:])
        plain = f.create_dataset("p", data=np.arange(96).reshape(6, 16), chunks=(2, 16), fletcher32=True)
        np.testing.assert_array_equal(read_rows(plain, 1, 5, threads=2), plain[1:5])


def test_corrupt_chunk_is_an_input_error_naming_the_dataset(tmp_path):
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        ds = f.create_dataset("s", data=np.ones((4, 8, 32), np.int32), chunks=(1, 8, 32), compression="gzip")
        ds.id.write_direct_chunk((2, 0, 0), b"this is not deflate data")
    with h5py.File(path, "r") as f:
        with pytest.raises(InputError, match="s.*corrupt|corrupt.*s"):
            store.read_dataset(f["s"], path, "s", slice(0, 4))
        np.testing.assert_array_equal(store.read_dataset(f["s"], path, "s", slice(0, 2)), 1)


def test_reader_works_in_a_forked_child(tmp_path):
    """The thread pool is made again after fork (a child inheriting it would wait forever)."""
    import multiprocessing

    with h5py.File(tmp_path / "a.h5", "w") as f:
        f.create_dataset("s", data=np.arange(4 * 8 * 32, dtype=np.int32).reshape(4, 8, 32), chunks=(1, 8, 32),
                         compression="gzip")
    with h5py.File(tmp_path / "a.h5", "r") as f:
        expected = read_rows(f["s"], 0, 4, threads=2)  # the parent's pool exists now
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(1) as pool:
        got = pool.apply_async(_read_in_child, (str(tmp_path / "a.h5"),)).get(timeout=60)
    np.testing.assert_array_equal(got, expected)


def _read_in_child(path):
    with h5py.File(path, "r") as f:
        return read_rows(f["s"], 0, 4, threads=2)
