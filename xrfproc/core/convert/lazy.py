"""Spectra that stay on disk until a block of rows is asked for.

Converters of large formats (ID15 Bliss HDF5, P06 NeXus) return a :class:`LazySpectra` as a
channel's ``spectra``: an array-like of shape ``(*grid, nbins)`` whose slicing along the rows
opens the source file(s), reads only the points of those rows and closes them again. The writer
(:func:`xrfproc.store.raw.write_raw`) copies it block by block, so the memory needed does not grow
with the map.

Composition, all without reading spectra:

- a *point source* is a flat list of ``npts`` spectra: :class:`H5Points` (one dataset, or one
  dataset split over several files, concatenated in order), :class:`SumPoints` (several sources
  summed point by point: detector elements) or :class:`ArrayPoints` (an array in memory);
- :class:`LazySpectra` maps every grid point to a point of its sources through an integer index
  array of the grid's shape (8 bytes per point: the per-point arrays of a RawMap are in memory
  anyway). Reshaping to a grid, padding a scan cut short (index -1: NaN), stitching scans
  (:meth:`LazySpectra.concat`) and sorting points (:meth:`LazySpectra.reorder`) only rewrite that
  index.

Every source is validated when it is built (shape, dtype, matching sizes, a declared size below
:func:`~xrfproc.core.limits.max_stream_bytes`), and a read that fails
later (file gone, truncated, corrupt) is an :class:`~xrfproc.errors.InputError` naming the file and
the dataset.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ...errors import InputError
from ..limits import check_size

#: contiguous runs of wanted points closer than this are read in one go (points read and dropped)
MAX_GAP = 64


def _runs(idx: np.ndarray, max_gap: int = MAX_GAP) -> list[tuple[int, int]]:
    """Split sorted unique indices into ``[start, stop)`` runs, merging gaps up to ``max_gap``."""
    if idx.size == 0:
        return []
    cuts = np.nonzero(np.diff(idx) > max_gap + 1)[0]
    starts = np.concatenate([[0], cuts + 1])
    stops = np.concatenate([cuts, [idx.size - 1]])
    return [(int(idx[a]), int(idx[b]) + 1) for a, b in zip(starts, stops)]


@dataclass(frozen=True)
class _Part:
    path: Path
    key: str
    npts: int
    flat: bool  # a 1-D dataset holding one spectrum


class H5Points:
    """Spectra ``(npts, nbins)`` of an HDF5 dataset, possibly split over several files.

    Parameters
    ----------
    parts : sequence of (path, dataset key, shape, dtype)
        The pieces in point order, with the shape and dtype the dataset declares (checked here):
        rank 2 ``(points, bins)`` (or rank 1: one spectrum), numbers, the same number of bins.
    """

    def __init__(self, parts: Sequence[tuple[Path, str, tuple[int, ...], Any]]):
        if not parts:
            raise InputError("no spectra dataset")
        self.parts: list[_Part] = []
        nbins = dtype = None
        for path, key, shape, dt in parts:
            shape = tuple(shape or ())
            if len(shape) not in (1, 2):
                raise InputError(f"spectra must be (points, bins), found shape {shape}", path=path, dataset=key)
            if np.dtype(dt).kind not in "uif":
                raise InputError(f"spectra must be numbers, found dtype {dt}", path=path, dataset=key)
            check_size(shape, dt, f"spectra {key}", path=path, dataset=key, stream=True)
            if nbins is not None and shape[-1] != nbins:
                raise InputError(f"{shape[-1]} bins, the first file has {nbins}", path=path, dataset=key)
            nbins = shape[-1]
            dtype = np.dtype(dt) if dtype is None else np.result_type(dtype, dt)
            self.parts.append(_Part(Path(path), key, 1 if len(shape) == 1 else shape[0], len(shape) == 1))
        self.nbins = int(nbins)  # type: ignore[arg-type]
        self.dtype = np.dtype(dtype)
        self.npts = sum(p.npts for p in self.parts)

    def read(self, idx: np.ndarray) -> np.ndarray:
        """Spectra of the points ``idx`` (sorted, unique), shape ``(len(idx), nbins)``."""
        import h5py

        out = np.empty((idx.size, self.nbins), dtype=self.dtype)
        offset = 0
        for part in self.parts:
            lo, hi = np.searchsorted(idx, [offset, offset + part.npts])
            if hi > lo:
                local = idx[lo:hi] - offset
                try:
                    with h5py.File(part.path, "r") as f:
                        ds = f[part.key]
                        for a, b in _runs(local):
                            s0, s1 = (int(i) for i in np.searchsorted(local, [a, b]))
                            if part.flat:
                                out[lo + s0] = ds[()]
                            elif s1 - s0 == b - a:  # every point of the run: straight into place
                                ds.read_direct(out, np.s_[a:b], np.s_[lo + s0:lo + s1])
                            else:
                                out[lo + s0:lo + s1] = ds[a:b][local[s0:s1] - a]
                except InputError:
                    raise
                except (OSError, RuntimeError, ValueError, KeyError, IndexError) as exc:
                    raise InputError(f"cannot read the spectra (file changed, truncated or corrupt: {exc})",
                                     path=part.path, dataset=part.key) from None
            offset += part.npts
        return out


class ArrayPoints:
    """Spectra ``(npts, nbins)`` already in memory (a scan read by a reader that is not lazy)."""

    def __init__(self, array: Any):
        arr = np.asarray(array)
        self.array = arr.reshape(-1, arr.shape[-1])
        self.npts, self.nbins = self.array.shape
        self.dtype = self.array.dtype

    def read(self, idx: np.ndarray) -> np.ndarray:
        return self.array[idx]


class SumPoints:
    """Point-by-point sum of several sources of the same size (detector elements summed)."""

    def __init__(self, sources: Sequence[Any], where: Any = None, dataset: str | None = None):
        first = sources[0]
        for s in sources[1:]:
            if (s.npts, s.nbins) != (first.npts, first.nbins):
                raise InputError(f"shape {(s.npts, s.nbins)} differs from the other summed elements' "
                                 f"{(first.npts, first.nbins)}", path=where, dataset=dataset)
        self.sources = list(sources)
        self.npts, self.nbins = first.npts, first.nbins
        self.dtype = np.result_type(*[s.dtype for s in sources])

    def read(self, idx: np.ndarray) -> np.ndarray:
        total = self.sources[0].read(idx).astype(self.dtype, copy=False)
        for s in self.sources[1:]:
            total += s.read(idx)
        return total


class LazySpectra:
    """Array-like spectra ``(*grid, nbins)`` read from point sources on demand.

    Parameters
    ----------
    sources : list of point sources
        Objects with ``npts``, ``nbins``, ``dtype`` and ``read(sorted unique indices)``.
    index : ndarray of int, shape grid
        For every grid point, its number in the concatenation of the sources; -1 for a point
        never acquired (read as NaN: ``dtype`` must then be a float type).
    dtype : numpy dtype, optional
        Of the blocks returned (default: the sources' common type).
    """

    def __init__(self, sources: Sequence[Any], index: np.ndarray, dtype: Any = None):
        self.sources = list(sources)
        self.index = np.asarray(index, dtype=np.int64)
        nbins = {s.nbins for s in self.sources}
        if len(nbins) != 1:
            raise InputError(f"sources with different numbers of bins {sorted(nbins)}")
        self.nbins = nbins.pop()
        self.dtype = np.dtype(dtype) if dtype is not None else np.result_type(*[s.dtype for s in self.sources])
        self.offsets = np.cumsum([0] + [s.npts for s in self.sources])
        if self.index.size and (self.index.max() >= self.offsets[-1] or self.index.min() < -1):
            raise ValueError("index refers to points outside the sources")
        if (self.index < 0).any() and self.dtype.kind != "f":
            raise ValueError("missing points need a float dtype")

    # ------------------------------------------------------------------ construction
    @classmethod
    def grid(cls, source: Any, grid: Sequence[int], missing: int = 0) -> "LazySpectra":
        """The points of ``source`` in order on ``grid``, followed by ``missing`` NaN points."""
        index = np.concatenate([np.arange(source.npts), np.full(missing, -1)])
        dtype = np.float32 if missing else None
        return cls([source], index.reshape(tuple(grid)), dtype)

    @classmethod
    def wrap(cls, spectra: Any) -> "LazySpectra":
        """``spectra`` as a LazySpectra (an array in memory is wrapped, not copied)."""
        if isinstance(spectra, LazySpectra):
            return spectra
        arr = np.asarray(spectra)
        return cls([ArrayPoints(arr)], np.arange(int(np.prod(arr.shape[:-1]))).reshape(arr.shape[:-1]))

    @classmethod
    def concat(cls, parts: Sequence[Any], axis: int) -> "LazySpectra":
        """Join spectra along grid ``axis`` (stitching) without reading them."""
        lazy = [cls.wrap(p) for p in parts]
        sources: list[Any] = []
        indices = []
        shift = 0
        for p in lazy:
            sources.extend(p.sources)
            indices.append(np.where(p.index >= 0, p.index + shift, -1))
            shift += int(p.offsets[-1])
        return cls(sources, np.concatenate(indices, axis=axis), np.result_type(*[p.dtype for p in lazy]))

    def reorder(self, order: np.ndarray) -> "LazySpectra":
        """Points rearranged by flat indices ``order`` (shape grid), as :func:`~.sorting.apply_order`."""
        return LazySpectra(self.sources, self.index.ravel()[np.asarray(order).ravel()].reshape(order.shape),
                           self.dtype)

    # ------------------------------------------------------------------ array protocol
    @property
    def shape(self) -> tuple[int, ...]:
        return self.index.shape + (self.nbins,)

    @property
    def ndim(self) -> int:
        return self.index.ndim + 1

    @property
    def size(self) -> int:
        return int(self.index.size) * self.nbins

    @property
    def nbytes(self) -> int:
        return self.size * self.dtype.itemsize

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"<LazySpectra shape={self.shape} dtype={self.dtype} sources={len(self.sources)}>"

    def read_points(self, points: np.ndarray) -> np.ndarray:
        """Spectra of grid points given by their source numbers ``points`` (1-D), ``(n, nbins)``."""
        points = np.asarray(points, dtype=np.int64).ravel()
        if points.size and points[0] >= 0 and (points.size == 1 or np.all(np.diff(points) > 0)):
            k = int(np.searchsorted(self.offsets, points[0], side="right")) - 1
            if points[-1] < self.offsets[k + 1]:  # in order, from one source: no reshuffling
                return self.sources[k].read(points - self.offsets[k]).astype(self.dtype, copy=False)
        out = np.empty((points.size, self.nbins), dtype=self.dtype)
        missing = points < 0
        if missing.any():
            out[missing] = np.nan
        for k, src in enumerate(self.sources):
            lo, hi = self.offsets[k], self.offsets[k + 1]
            sel = (points >= lo) & (points < hi)
            if not sel.any():
                continue
            wanted, inverse = np.unique(points[sel] - lo, return_inverse=True)
            data = src.read(wanted)
            out[sel] = data[inverse]
        return out

    def __getitem__(self, key: Any) -> np.ndarray:
        if not isinstance(key, tuple):
            key = (key,)
        g = self.index.ndim
        if any(k is Ellipsis or k is None for k in key) or len(key) > g + 1:
            return self[()][key]
        sub = self.index[key[:g]]
        data = self.read_points(sub).reshape(np.shape(sub) + (self.nbins,))
        return data[(Ellipsis,) + key[g:]] if len(key) > g else data

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        arr = self[()]
        return arr if dtype is None else arr.astype(dtype, copy=False)


def is_lazy(spectra: Any) -> bool:
    return isinstance(spectra, LazySpectra)


__all__ = ["LazySpectra", "H5Points", "SumPoints", "ArrayPoints", "is_lazy"]
