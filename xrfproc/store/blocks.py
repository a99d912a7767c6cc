"""Block-wise results: chunked result datasets filled block by block, and resumable partial results.

Partial results
---------------
A long step saves the result of every completed unit of work (the fit: a block of pixels of a
channel; the normalisation: one line image of a channel) as one ``.npz``
file in ``<file>.d/partial-<step>-<key>/`` (written under a temporary name and ``os.replace``d, so a
kill at any moment leaves only complete block files). ``key`` is a hash of everything the results
depend on (configuration text, mode, options, the identity of the input data: :func:`raw_identity`,
:func:`dataset_identity`), so a rerun with
``resume=True`` and the same inputs reuses exactly the blocks that were finished, and a rerun with
other inputs never sees them. The folder is not an ``*.h5`` file, so the bulk-file garbage
collection of :mod:`xrfproc.store.h5store` leaves it alone; the step removes it on success.
No pickle anywhere: ``np.load(allow_pickle=False)``.

Result datasets
---------------
:func:`create_maps` creates ``(nlines, *grid)`` datasets chunked by rows (gzip 4), which
:func:`write_rows` fills one block of rows at a time; :class:`LineStats` keeps the summary
statistics (min, max, median of a bounded sample) on the way, so nothing ever holds all the
pixels' results.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import weakref
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from ..errors import InputError, WriteError
from .atomic_io import _write_failure
from .h5store import GZIP, bulk_dir, now_iso
from .locking import acquire_lock

log = logging.getLogger(__name__)

PARTIAL_FORMAT = 1
#: values per chunk of a result map (about 2 MB of float64)
CHUNK_VALUES = 1 << 18
#: values kept per line for the median of the summary (exact below this many pixels)
SAMPLE_VALUES = 1 << 17


# --------------------------------------------------------------------------- keys
@contextlib.contextmanager
def _open_identified(path: Path, dataset: str) -> Any:
    """``path`` opened read-only; HDF5's errors on a corrupt file become an InputError naming file and dataset."""
    try:
        f = h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path=path) from None
    try:
        with f:
            yield f
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"corrupt HDF5 data or metadata ({exc})", path=path, dataset=dataset) from None


def result_key(description: Mapping[str, Any]) -> str:
    """A short stable hash (hex) of a JSON-able description of a computation."""
    text = json.dumps(description, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf8")).hexdigest()[:20]


def raw_identity(path: str | Path, dataset: str) -> dict[str, Any]:
    """What identifies the raw data of ``dataset`` in ``path``: shape, dtype, link target, sums.

    The bulk file behind an external link is named with a random token when it is written, so a
    reconverted scan never matches; its size and modification time are included as well.

    Raises
    ------
    InputError
        The file is not readable HDF5, or corrupt where it is read (naming the file and dataset).
    """
    path = Path(path)
    out: dict[str, Any] = {}
    with _open_identified(path, dataset) as f:
        ds = f[dataset]
        out["shape"] = list(ds.shape)
        out["dtype"] = str(ds.dtype)
        parent, name = dataset.rsplit("/", 1) if "/" in dataset else ("/", dataset)
        link = f[parent].get(name, getlink=True)
        if isinstance(link, h5py.ExternalLink):
            target = path.parent / link.filename
            out["link"] = [link.filename, link.path]
            with contextlib.suppress(OSError):
                st = target.stat()
                out["bulk"] = [st.st_size, st.st_mtime_ns]
        else:
            out["inline"] = [int(ds.id.get_offset() or 0) if ds.chunks is None else -1, ds.chunks]
        for key in ("sumspec", "maxspec"):
            sib = f"{parent}/{key}"
            if sib in f:
                out[key] = hashlib.sha256(np.ascontiguousarray(f[sib][()]).tobytes()).hexdigest()[:16]
    return out


#: stored chunks hashed by :func:`dataset_identity` (evenly spread beyond this many)
HASHED_CHUNKS = 1 << 16


def dataset_identity(path: str | Path, dataset: str) -> dict[str, Any]:
    """What identifies the content of a dataset a step wrote (``fit/channel00/ims``): :func:`raw_identity`,
    a hash of its stored (compressed) bytes and the provenance of the groups above it.

    Results are rewritten in place of the old ones (an inline dataset of the same shape and chunks
    may sit at the same place), so the content itself is hashed: the stored chunks as they are on
    disk (no decompression; at most :data:`HASHED_CHUNKS` of them, evenly spread, for maps with more),
    or the values of a contiguous dataset read in slabs.
    """
    path = Path(path)
    out = raw_identity(path, dataset)
    h = hashlib.sha256()
    with _open_identified(path, dataset) as f:
        ds = f[dataset]
        if ds.chunks is not None:
            found: list[tuple[tuple[int, ...], int]] = []
            ds.id.chunk_iter(lambda info: found.append((info.chunk_offset, info.size)))  # one pass, in file order
            out["chunks_stored"] = len(found)
            for offset, size in found[::max(1, -(-len(found) // HASHED_CHUNKS))]:
                mask, data = ds.id.read_direct_chunk(offset)
                h.update(repr((offset, size, mask)).encode())
                h.update(data)
        elif ds.shape:
            step = max(1, CHUNK_VALUES // max(1, int(np.prod(ds.shape[1:]))))
            for i in range(0, ds.shape[0], step):
                h.update(np.ascontiguousarray(ds[i:i + step]).tobytes())
        else:
            h.update(np.asarray(ds[()]).tobytes())
        out["content"] = h.hexdigest()[:24]
        prov = []
        parts = dataset.strip("/").split("/")[:-1]
        for k in range(1, len(parts) + 1):
            attrs = f["/".join(parts[:k])].attrs
            prov.append({key: str(attrs[key]) for key in ("step", "timestamp", "parameters") if key in attrs})
        out["provenance"] = prov
    return out


# --------------------------------------------------------------------------- partial results
class PartialResults:
    """The completed blocks of one computation, kept on disk until the step succeeds.

    Parameters
    ----------
    path : str or Path
        The layout file the step works on.
    step : str
        Step name (``"fit"``, ``"normalise"``).
    key : str
        From :func:`result_key`.
    meta : mapping
        JSON-able description stored with the blocks (for people looking at the folder).
    resume : bool
        Keep the blocks already there; otherwise they are discarded first.
    fsync : bool
        Flush every block file to disk before it takes its name (a block survives a power cut, not
        only a killed process). A step that checks each block it resumes from (and redoes damaged
        ones) can do without: many small blocks then cost no disk round trip each.

    Notes
    -----
    The object holds the file's write lock (:func:`xrfproc.store.locking.acquire_lock`) from its
    creation until :meth:`discard` (or :meth:`release`, or its garbage collection): a second run
    of a step on the same file is refused at once with a :class:`~xrfproc.errors.FileBusyError`,
    before it touches the folder or computes anything, and the step's own transaction (same thread)
    takes the lock again without waiting.

    Raises
    ------
    FileBusyError
        Another process (or thread) writes the file or keeps partial results of it.
    WriteError
        The folder cannot be created, or ``path`` is a symbolic link.
    """

    def __init__(self, path: str | Path, step: str, key: str, meta: Mapping[str, Any] | None = None,
                 resume: bool = False, fsync: bool = True):
        self.path = Path(path)
        self.fsync = fsync
        self.folder = bulk_dir(self.path) / f"partial-{step}-{key}"
        self.key = key
        # the lock first: another run's folder is never touched, and nothing is computed twice
        self._lock = acquire_lock(self.path, step)
        self._finalizer = weakref.finalize(self, self._lock.release)  # a step that died of a bug
        try:
            if self.folder.exists() and not resume:
                shutil.rmtree(self.folder, ignore_errors=True)
            self.resumed = self.folder.is_dir() and any(self.folder.glob("*.npz"))
            info = self.folder / "meta.json"
            try:
                self.folder.mkdir(parents=True, exist_ok=True)
                if not info.exists():
                    tmp = self.folder / f".meta-{secrets.token_hex(3)}.tmp"
                    tmp.write_text(json.dumps({"format": PARTIAL_FORMAT, "step": step, "key": key,
                                               "created": now_iso(), "meta": dict(meta or {})},
                                              sort_keys=True, default=str, indent=1))
                    os.replace(tmp, info)
            except OSError as exc:
                raise self._write_error(exc) from None
        except BaseException:
            self.release()
            raise

    def release(self) -> None:
        """Give the file's write lock back, keeping the blocks (an interrupted run; idempotent)."""
        self._finalizer()

    def __enter__(self) -> "PartialResults":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def _write_error(self, exc: OSError) -> WriteError:
        with contextlib.suppress(OSError):
            if not any(self.folder.iterdir()):
                self.folder.rmdir()
        reason = _write_failure(exc) or exc.strerror or str(exc)
        return WriteError(f"cannot keep the partial results in {self.folder.name}/ ({reason}); the file is unchanged",
                          path=self.path)

    def _name(self, channel: str, block: int) -> Path:
        return self.folder / f"{channel}-b{block:07d}.npz"

    def has(self, channel: str, block: int) -> bool:
        """Whether the block was completed (and saved) before."""
        return self._name(channel, block).is_file()

    def completed(self, channel: str) -> set[int]:
        """Indices of the completed blocks of ``channel``."""
        out = set()
        for item in self.folder.glob(f"{channel}-b*.npz"):
            with contextlib.suppress(ValueError):
                out.add(int(item.stem.rsplit("-b", 1)[1]))
        return out

    def save(self, channel: str, block: int, arrays: Mapping[str, np.ndarray]) -> None:
        """Save one block's arrays atomically (temporary name, fsync unless disabled, ``os.replace``)."""
        final = self._name(channel, block)
        tmp = self.folder / f".{final.stem}-{secrets.token_hex(3)}.tmp"
        try:
            with open(tmp, "wb") as fh:
                np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})
                if self.fsync:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, final)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink()
            if _write_failure(exc) is None:
                raise
            raise self._write_error(exc) from None

    def load(self, channel: str, block: int) -> dict[str, np.ndarray]:
        """The arrays of a completed block.

        Raises
        ------
        OSError, ValueError
            For a damaged block file (the caller refits the block).
        """
        with np.load(self._name(channel, block), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}

    def drop(self, channel: str, block: int) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._name(channel, block).unlink()

    def discard(self) -> None:
        """Remove the folder (after success, or after an error nothing can be resumed from), then
        give the file's write lock back."""
        try:
            shutil.rmtree(self.folder, ignore_errors=True)
        finally:
            self.release()


def list_partials(path: str | Path) -> list[Path]:
    """Folders of partial results of ``path`` (interrupted runs not resumed yet)."""
    folder = bulk_dir(path)
    return sorted(p for p in folder.glob("partial-*") if p.is_dir()) if folder.is_dir() else []


# --------------------------------------------------------------------------- result maps
def map_chunks(shape: tuple[int, ...], rows_per_block: int) -> tuple[int, ...]:
    """Chunks of a ``(nlines, *grid)`` or ``grid`` map: one line, whole rows, about CHUNK_VALUES values."""
    lead = (1,) if len(shape) > 1 else ()
    grid = shape[len(lead):]
    if len(grid) <= 1:
        return lead + (max(1, min(grid[0] if grid else 1, CHUNK_VALUES)),)
    per_row = int(np.prod(grid[1:]))
    rows = max(1, min(grid[0], rows_per_block, CHUNK_VALUES // max(per_row, 1)))
    return lead + (rows,) + tuple(grid[1:])


def create_maps(group: h5py.Group, nlines: int, grid: tuple[int, ...], rows_per_block: int,
                names: Sequence[str] = ("ims", "stddev"), dtype: Any = np.float64,
                chi2: bool = True) -> dict[str, h5py.Dataset]:
    """Create empty (NaN) chunked datasets ``(nlines, *grid)`` for ``names`` and, with ``chi2``, ``chi2`` ``grid``.

    Each chunk holds one line and whole rows (:func:`map_chunks`), so a map can be filled one block
    of rows of all lines at a time (:func:`write_rows`) or one line image at a time.
    """
    out = {}
    for name in names:
        shape = (nlines,) + tuple(grid)
        out[name] = group.create_dataset(name, shape=shape, dtype=dtype,
                                         chunks=map_chunks(shape, rows_per_block), fillvalue=np.nan, **GZIP)
    if chi2:
        out["chi2"] = group.create_dataset("chi2", shape=tuple(grid), dtype=dtype,
                                           chunks=map_chunks(tuple(grid), rows_per_block), fillvalue=np.nan, **GZIP)
    return out


def write_rows(ds: h5py.Dataset, rows: slice, values: np.ndarray, lines: bool = True) -> None:
    """Write a block ``(nlines, npix)`` (or ``(npix,)``) into the rows ``rows`` of a map dataset."""
    if lines:
        block_shape = (ds.shape[0], rows.stop - rows.start) + tuple(ds.shape[2:])
        ds[:, rows] = np.asarray(values).reshape(block_shape)
    else:
        block_shape = (rows.stop - rows.start,) + tuple(ds.shape[1:])
        ds[rows] = np.asarray(values).reshape(block_shape)


class LineStats:
    """Min, max and median per line over all pixels, fed block by block in bounded memory.

    The median is exact for maps of at most :data:`SAMPLE_VALUES` pixels, otherwise the median of
    a regular sample of that many pixels (every k-th pixel in file order).
    """

    def __init__(self, names: Sequence[str], npix: int):
        self.names = list(names)
        self.stride = max(1, -(-npix // SAMPLE_VALUES))
        self.lo = np.full(len(self.names), np.inf)
        self.hi = np.full(len(self.names), -np.inf)
        self.samples: list[list[np.ndarray]] = [[] for _ in self.names]
        self.chi2: list[np.ndarray] = []

    def add(self, start: int, areas: np.ndarray, chi2: np.ndarray) -> None:
        """Feed a block: flat pixel index of its first pixel, areas ``(nlines, n)``, chi2 ``(n,)``."""
        n = areas.shape[1]
        first = (-start) % self.stride
        take = np.arange(first, n, self.stride)
        for i in range(len(self.names)):
            row = areas[i]
            good = row[np.isfinite(row)]
            if good.size:
                self.lo[i] = min(self.lo[i], good.min())
                self.hi[i] = max(self.hi[i], good.max())
            s = row[take]
            self.samples[i].append(s[np.isfinite(s)])
        c = np.asarray(chi2)[take]
        self.chi2.append(c[np.isfinite(c)])

    def lines(self) -> dict[str, dict[str, float]]:
        out = {}
        for i, name in enumerate(self.names):
            s = np.concatenate(self.samples[i]) if self.samples[i] else np.empty(0)
            if s.size and np.isfinite(self.lo[i]):
                out[name] = {"min": float(self.lo[i]), "median": float(np.median(s)), "max": float(self.hi[i])}
            else:
                out[name] = {"min": float("nan"), "median": float("nan"), "max": float("nan")}
        return out

    def chi2_median(self) -> float:
        c = np.concatenate(self.chi2) if self.chi2 else np.empty(0)
        return float(np.median(c)) if c.size else float("nan")


__all__ = ["PartialResults", "LineStats", "create_maps", "write_rows", "map_chunks", "result_key", "raw_identity",
           "dataset_identity", "list_partials"]
