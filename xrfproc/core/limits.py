"""Size guards: refuse arrays a file *declares* too large before anything is allocated.

A corrupt or hostile file can declare a dataset of 10^12 values in a few bytes (an HDF5 dataset
created with ``shape=`` and no data, an ``.npy`` header, an MDA record's point count). Readers call
:func:`check_size` with the declared shape before reading, so such a file is an
:class:`~xrfproc.errors.InputError` instead of an out-of-memory crash.

Limits (bytes) can be changed with the environment variables ``XRFPROC_MAX_ARRAY_BYTES`` (one
array read into memory; default half the physical memory), ``XRFPROC_MAX_STREAM_BYTES`` (spectra
read block by block; default 1 TiB) and ``XRFPROC_MAX_MAP_BYTES`` (one map of the scan grid: a
per-point array such as ``raw/I0``, or one float64 value per point of the spectra's grid, which the
steps allocate; default 2 GiB, 2^28 points).
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np

from ..errors import InputError


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 8 << 30


def max_array_bytes() -> int:
    """Largest array (bytes) a reader loads into memory at once."""
    env = os.environ.get("XRFPROC_MAX_ARRAY_BYTES")
    return int(env) if env and env.isdigit() else _physical_memory() // 2


def max_stream_bytes() -> int:
    """Largest dataset (bytes) a reader goes through block by block."""
    env = os.environ.get("XRFPROC_MAX_STREAM_BYTES")
    return int(env) if env and env.isdigit() else 1 << 40


#: default of :func:`max_map_bytes`: 2 GiB, a float64 map of 2^28 points (16384 x 16384)
MAX_MAP_BYTES = 2 << 30


def max_map_bytes() -> int:
    """Largest map of the scan grid (bytes): a per-point array, or a float64 value per spectrum."""
    env = os.environ.get("XRFPROC_MAX_MAP_BYTES")
    return int(env) if env and env.isdigit() else MAX_MAP_BYTES


def nbytes(shape: Sequence[int], dtype: np.dtype | str | type) -> int:
    """Bytes of an array of ``shape`` and ``dtype`` (Python integers: no overflow)."""
    n = 1
    for s in shape:
        n *= max(int(s), 0)
    return n * np.dtype(dtype).itemsize


def check_size(shape: Sequence[int], dtype: np.dtype | str | type, what: str, path: str | Path | None = None,
               dataset: str | None = None, stream: bool = False, maps: bool = False) -> None:
    """Raise an InputError when an array of ``shape``/``dtype`` is larger than the limit.

    Parameters
    ----------
    what : str
        What the array is, for the message.
    stream : bool
        The array is read block by block (the larger limit applies).
    maps : bool
        The array is a map of the scan grid (``raw/I0``, ``icr``): :func:`max_map_bytes` applies too.
    """
    size = nbytes(shape, dtype)
    limit = max_stream_bytes() if stream else max_array_bytes()
    if maps:
        limit = min(limit, max_map_bytes())
    if size > limit:
        raise InputError(f"{what} of shape {tuple(int(s) for s in shape)} ({size / 2**30:.4g} GiB) is too large "
                         f"(limit {limit / 2**30:.4g} GiB); the file is corrupt or not what it seems",
                         path=path, dataset=dataset)


def check_grid(grid: Sequence[int], path: str | Path | None = None, dataset: str | None = None) -> None:
    """Raise an InputError when a float64 map of the scan grid ``grid`` exceeds :func:`max_map_bytes`.

    Call it with the grid of the spectra (their shape without the last axis) before allocating
    anything per point (``np.ones(grid)``, result maps): a few bytes of a file can declare 10^9 points.
    """
    size = nbytes(grid, np.float64)
    limit = max_map_bytes()
    if size > limit:
        npts = size // 8
        raise InputError(f"grid {tuple(int(s) for s in grid)} of {npts} points: a map of it takes "
                         f"{size / 2**30:.4g} GiB, too large (limit {limit / 2**30:.4g} GiB, XRFPROC_MAX_MAP_BYTES); "
                         "the file is corrupt or not what it seems", path=path, dataset=dataset)
