"""Compression of the stored spectra: the only module that knows HDF5 filters (and ``hdf5plugin``).

Choices for ``raw/channelXX/spectra`` (every other array stays gzip 4, :data:`GZIP`):

``"gzip"`` (default)
    deflate level 4, as the original layout, after HDF5's byte shuffle (:data:`SHUFFLE`): counts
    compress 1.5 times smaller and faster that way, and any HDF5 installation reads it (both
    filters are built into the library). Chunks are compressed in parallel threads (``zlib``
    releases the GIL) and written with ``write_direct_chunk``: the file is an ordinary
    gzip-filtered dataset, the same as h5py's ``compression="gzip", shuffle=SHUFFLE`` writes.
``"lz4"``
    the LZ4 filter (id 32004) of ``hdf5plugin``: several times faster to write and read, larger.
``"blosc"``
    Blosc (id 32001) with LZ4 and byte shuffle: as fast as LZ4, about as small as gzip.
``"none"``
    no compression (chunked all the same).

LZ4 and Blosc files need the filter plugin to be read: :func:`register_plugins` (called by the
store before it opens a file) imports ``hdf5plugin`` once, when present. Tools without it (h5py
alone, the layout checker) still read the file's structure, shapes and every gzip array.
"""
from __future__ import annotations

import logging
import os
import zlib
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

#: deflate level of the layout
GZIP_LEVEL = 4
#: compression of every array, as in the original layout (readable by any HDF5 installation)
GZIP = {"compression": "gzip", "compression_opts": GZIP_LEVEL}
#: byte-shuffle the spectra before deflating them ("gzip"): smaller and faster for counts
SHUFFLE = True
#: the names :func:`check_compression` accepts, default first
COMPRESSIONS = ("gzip", "lz4", "blosc", "none")
#: threads compressing gzip chunks (the writer's own thread reads and writes meanwhile)
THREADS = max(1, min(8, os.cpu_count() or 1))

_plugins: bool | None = None


def register_plugins() -> bool:
    """Make the ``hdf5plugin`` filters (LZ4, Blosc, ...) available to h5py; True when they are.

    Imports ``hdf5plugin`` the first time only (about 20 ms); without the package, files using
    those filters cannot be read, everything else can.
    """
    global _plugins
    if _plugins is None:
        try:
            import hdf5plugin  # noqa: F401 (registers the filters with HDF5)
            _plugins = True
        except ImportError:
            log.debug("hdf5plugin not installed: LZ4/Blosc compressed spectra cannot be read")
            _plugins = False
    return _plugins


def check_compression(name: Any) -> str:
    """``name`` if it is one of :data:`COMPRESSIONS` (letter case ignored), else an InputError."""
    key = str(name).strip().lower() if name is not None else "gzip"
    if key not in COMPRESSIONS:
        raise InputError(f"unknown compression {name!r}; expected one of {', '.join(COMPRESSIONS)}")
    return key


def dataset_options(name: str) -> dict[str, Any]:
    """Keyword arguments of ``h5py.Group.create_dataset`` for compression ``name``."""
    key = check_compression(name)
    if key == "gzip":
        return dict(GZIP, shuffle=SHUFFLE)
    if key == "none":
        return {}
    if not register_plugins():
        raise InputError(f"compression {key!r} needs the hdf5plugin package (pip install hdf5plugin); "
                         "use compression='gzip'")
    import hdf5plugin

    if key == "lz4":
        return dict(hdf5plugin.LZ4())
    return dict(hdf5plugin.Blosc(cname="lz4", clevel=5, shuffle=hdf5plugin.Blosc.SHUFFLE))


def _deflate(piece: np.ndarray, chunk: tuple[int, ...], shuffle: bool) -> bytes:
    """One chunk as HDF5's (shuffle and) deflate filters store it, padded to the chunk shape."""
    if piece.shape != chunk:  # an edge chunk is stored whole
        full = np.zeros(chunk, dtype=piece.dtype)
        full[tuple(slice(0, n) for n in piece.shape)] = piece
        piece = full
    piece = np.ascontiguousarray(piece)
    size = piece.dtype.itemsize
    if shuffle and size > 1:  # byte j of every value, for j = 0 .. size-1 (H5Z shuffle)
        piece = np.ascontiguousarray(piece.reshape(-1).view(np.uint8).reshape(-1, size).T)
    return zlib.compress(memoryview(piece).cast("B"), GZIP_LEVEL)


class ChunkWriter:
    """Writes blocks of whole rows of a chunked dataset; gzip chunks are compressed in threads.

    Parameters
    ----------
    ds : h5py.Dataset
        Created with :func:`dataset_options` of ``compression`` and chunked; blocks given to
        :meth:`write` must start on a chunk boundary along the first axis.
    compression : str
        One of :data:`COMPRESSIONS`. For ``"gzip"`` (and ``threads >= 1``) the chunks are deflated
        by a pool of threads and stored with ``write_direct_chunk`` while the caller reads the next
        block; otherwise HDF5 compresses them as usual.

    Use as a context manager, or call :meth:`close`: the last block is written there.
    """

    def __init__(self, ds: Any, compression: str, threads: int = THREADS):
        self.ds = ds
        self.chunks = tuple(ds.chunks)
        self.direct = check_compression(compression) == "gzip" and threads >= 1 and ds.ndim >= 2
        self.shuffle = bool(ds.shuffle)
        self.pool = ThreadPoolExecutor(threads, thread_name_prefix="deflate") if self.direct else None
        self.pending: list[tuple[tuple[int, ...], Future]] = []

    def write(self, start: int, block: np.ndarray) -> None:
        """Store ``block`` (the storage dtype) as rows ``start:start + len(block)``."""
        if not self.direct:
            self.ds[start:start + block.shape[0]] = block
            return
        if start % self.chunks[0]:
            raise ValueError(f"block start {start} is not on a chunk boundary ({self.chunks[0]} rows)")
        block = np.ascontiguousarray(block, dtype=self.ds.dtype)
        grid = [range(0, n, c) for n, c in zip(block.shape, self.chunks)]
        jobs = []
        for corner in np.ndindex(*[len(g) for g in grid]):
            lo = tuple(g[i] for g, i in zip(grid, corner))
            piece = block[tuple(slice(a, a + c) for a, c in zip(lo, self.chunks))]
            assert self.pool is not None
            jobs.append(((start + lo[0],) + lo[1:], self.pool.submit(_deflate, piece, self.chunks, self.shuffle)))
        self._flush()  # the previous block, while this one is being compressed
        self.pending = jobs

    def _flush(self) -> None:
        for offset, job in self.pending:
            self.ds.id.write_direct_chunk(offset, job.result())
        self.pending = []

    def close(self) -> None:
        try:
            self._flush()
        finally:
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)
                self.pool = None

    def __enter__(self) -> "ChunkWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is not None:  # failing: don't write more, just stop the threads
            self.pending = []
        self.close()


# --------------------------------------------------------------------------- parallel reading
#: HDF5 filter ids the threaded reader decodes itself (deflate, shuffle)
_DEFLATE, _SHUFFLE = 1, 2
#: inflating thread pools by size, made on first use
_read_pools: dict[int, ThreadPoolExecutor] = {}


def _forget_read_pool() -> None:
    """In a forked child the pools' threads do not exist: new pools are made on first use."""
    _read_pools.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_read_pool)


def _inflate(payload: bytes, mask: int, shape: tuple[int, ...], dtype: np.dtype, shuffle: bool) -> np.ndarray:
    """One stored chunk back to values (the inverse of :func:`_deflate`)."""
    try:
        nbytes = int(np.prod(shape)) * dtype.itemsize
        data = zlib.decompress(payload, bufsize=nbytes) if not mask & 1 else payload  # bit 0: deflate skipped
    except zlib.error as exc:
        raise ValueError(f"corrupt gzip chunk ({exc})") from None
    if len(data) != int(np.prod(shape)) * dtype.itemsize:
        raise ValueError(f"a chunk holds {len(data)} bytes, expected {int(np.prod(shape)) * dtype.itemsize}")
    size = dtype.itemsize
    buf = np.frombuffer(data, dtype=np.uint8)
    if shuffle and size > 1 and not mask & 2:  # byte planes back into values (a strided copy per plane)
        planes = buf.reshape(size, -1)
        values = np.empty((planes.shape[1], size), dtype=np.uint8)
        for j in range(size):
            values[:, j] = planes[j]
        buf = values.reshape(-1)
    return buf.view(dtype).reshape(shape)


def _deflate_only(ds: Any) -> bool | None:
    """For a dataset whose filters are (shuffle and) deflate only: whether it is shuffled; else None."""
    try:
        plist = ds.id.get_create_plist()
        ids = [plist.get_filter(i)[0] for i in range(plist.get_nfilters())]
    except Exception:  # not chunked, virtual, or an h5py without these calls
        return None
    if ids == [_DEFLATE]:
        return False
    if ids == [_SHUFFLE, _DEFLATE]:
        return True
    return None


def read_rows(ds: Any, start: int, stop: int, threads: int = THREADS) -> np.ndarray:
    """``ds[start:stop]``, with gzip chunks inflated by a pool of threads.

    HDF5 inflates chunks one at a time under h5py's global lock; here the compressed chunks are
    read as they are stored (``read_direct_chunk``, no decompression) and inflated in parallel
    (``zlib`` releases the GIL), which makes reading gzip spectra about ``threads`` times faster.
    Datasets with other filters (LZ4, Blosc, none), chunks that were never written and a single
    thread fall back to h5py's own reading. Same values as ``ds[start:stop]``.
    """
    shuffle = _deflate_only(ds) if threads > 1 and ds.chunks is not None and ds.ndim >= 2 else None
    if shuffle is None:
        return ds[start:stop]
    shape = (stop - start,) + tuple(ds.shape[1:])
    out = np.empty(shape, dtype=ds.dtype)
    chunks = tuple(ds.chunks)
    first = start - start % chunks[0]
    corners = [range(first, stop, chunks[0])] + [range(0, n, c) for n, c in zip(ds.shape[1:], chunks[1:])]
    pool = _read_pools.get(threads)
    if pool is None:
        pool = _read_pools[threads] = ThreadPoolExecutor(threads, thread_name_prefix="inflate")
    jobs = []
    try:
        for corner in np.ndindex(*[len(c) for c in corners]):
            offset = tuple(c[i] for c, i in zip(corners, corner))
            mask, payload = ds.id.read_direct_chunk(offset)
            jobs.append(pool.submit(_inflate_into, out, start, stop, offset, payload, mask, chunks, ds.dtype,
                                          shuffle))
    except (KeyError, OSError, RuntimeError, ValueError):  # a chunk never written (fill value): h5py knows
        for job in jobs:
            job.cancel()
        for job in jobs:
            if not job.cancelled():
                job.exception()  # wait: no thread may still write into ``out``
        return ds[start:stop]
    for job in jobs:
        job.result()
    return out


def _inflate_into(out: np.ndarray, start: int, stop: int, offset: tuple[int, ...], payload: bytes, mask: int,
                  chunks: tuple[int, ...], dtype: np.dtype, shuffle: bool) -> None:
    """Inflate one chunk and copy its part inside rows ``[start, stop)`` into ``out`` (a thread's job)."""
    piece = _inflate(payload, mask, chunks, dtype, shuffle)
    src, dst = [], []
    for axis, (lo, c, n) in enumerate(zip(offset, chunks, out.shape)):
        a = max(lo, start) if axis == 0 else lo
        b = min(lo + c, stop) if axis == 0 else min(lo + c, n)
        src.append(slice(a - lo, b - lo))
        dst.append(slice(a - start, b - start) if axis == 0 else slice(a, b))
    out[tuple(dst)] = piece[tuple(src)]


__all__ = ["GZIP", "COMPRESSIONS", "ChunkWriter", "check_compression", "dataset_options", "read_rows",
           "register_plugins"]
