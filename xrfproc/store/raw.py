"""Writing and reading the ``raw/`` part of the layout (written once, by a converter)."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

import h5py
import numpy as np

from ..core.limits import check_size
from ..core.convert.provenance import MEMBER_ATTRS
from ..core.rawmap import RawChannel, RawMap
from ..errors import InputError, LayoutError
from .filters import THREADS, ChunkWriter, check_compression, dataset_options, read_rows
from .h5store import channels, decode_names, open_read, require, transaction, write_array

log = logging.getLogger(__name__)

#: target size of one chunk of the spectra dataset, in values
CHUNK_VALUES = 1 << 18


def spectra_chunks(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Chunk shape for a spectra array ``(*grid, nbins)``: whole spectra, part of one row."""
    nbins = shape[-1]
    if len(shape) == 1:
        return (nbins,)
    per_chunk = max(1, CHUNK_VALUES // max(nbins, 1))
    inner = min(shape[-2], per_chunk)
    return (1,) * (len(shape) - 2) + (inner, nbins)


def _exact_as_is(dtype: np.dtype) -> bool:
    """Whether every value of ``dtype`` is stored exactly without looking at the data."""
    return dtype.kind == "b" or (dtype.kind in "uif" and dtype.itemsize <= 4)


class CountsRange:
    """What decides the storage dtype of spectra whose dtype alone does not (int64, uint64, float64).

    Fed block by block with :meth:`add`: the largest finite value, whether every value is a whole
    number, whether there are NaN (missing points) and whether float32 holds every value exactly.
    """

    def __init__(self) -> None:
        self.top: int | float = 0
        self.integral = True
        self.nan = False
        self.float32_exact = True

    def add(self, block: np.ndarray) -> None:
        """Take the values of ``block`` (numbers, already checked: no negative or infinite counts)."""
        if not block.size:
            return
        if block.dtype.kind in "uib":  # counts checked: not negative
            top = int(block.max())
            self.top = max(self.top, top)
            self.float32_exact = self.float32_exact and top <= 1 << 24
            return
        values = block.astype(np.float64, copy=False)
        nan = np.isnan(values)
        if nan.any():
            self.nan = True
            values = values[~nan]
        if values.size:
            self.top = max(self.top, float(values.max()))
            self.integral = self.integral and bool(np.all(np.floor(values) == values))
            if self.float32_exact:
                with np.errstate(over="ignore"):
                    self.float32_exact = bool(np.array_equal(values.astype(np.float32).astype(np.float64), values))


def storage_dtype(dtype: np.dtype, counts: CountsRange | None = None) -> np.dtype:
    """The dtype spectra are stored with: every value exact, never a wrapping or rounding cast.

    Integers of up to 4 bytes stay as they are, float16/float32 and booleans become float32. Wider
    dtypes (int64, uint64, float64) need the range of the values, ``counts``: whole numbers become
    the smallest of uint16, uint32 and uint64 that holds the largest; other values float32 when it
    holds them all exactly, else float64 (values beyond 2^64 included).

    Raises
    ------
    ValueError
        ``counts`` is missing for a dtype that needs it.
    """
    dtype = np.dtype(dtype)
    if _exact_as_is(dtype):
        return dtype if dtype.kind in "ui" else np.dtype("float32")
    if counts is None:
        raise ValueError(f"the storage dtype of {dtype} spectra depends on their values: give their CountsRange")
    if counts.integral and not counts.nan and counts.top < 2.0 ** 64:
        for candidate in (np.uint16, np.uint32, np.uint64):
            if counts.top <= np.iinfo(candidate).max:
                return np.dtype(candidate)
    return np.dtype("float32") if counts.float32_exact else np.dtype("float64")


def iter_blocks(nrows: int, rows_per_block: int) -> Iterator[slice]:
    for start in range(0, nrows, rows_per_block):
        yield slice(start, min(nrows, start + rows_per_block))


def _check_counts(block: np.ndarray, name: str, where: str) -> None:
    """Spectra hold counts: numbers, not negative, not infinite (NaN marks a point that is missing)."""
    if block.dtype.kind not in "uifb":
        raise InputError(f"spectra must be numbers, found dtype {block.dtype}", dataset=name)
    if not block.size:
        return
    if block.dtype.kind == "i":
        if block.min() < 0:
            raise InputError(f"negative counts in spectra {where}", dataset=name)
    elif block.dtype.kind == "f":
        with np.errstate(invalid="ignore"):
            if np.any(block < 0):
                raise InputError(f"negative counts in spectra {where}", dataset=name)
        if np.isinf(block).any():
            raise InputError(f"infinite counts in spectra {where} (NaN marks a missing point; inf is not a count)",
                             dataset=name)


def block_rows(shape: tuple[int, ...], chunks: tuple[int, ...]) -> int:
    """Rows per block when copying spectra of ``shape``: about 16 chunks, a whole number of chunk rows."""
    per_row = int(np.prod(shape[1:]))
    rows = max(1, (16 * CHUNK_VALUES) // max(per_row, 1))
    return max(chunks[0], rows // chunks[0] * chunks[0])


def _choose_dtype(spectra: Any, name: str, shape: tuple[int, ...]) -> np.dtype:
    """:func:`storage_dtype` of ``spectra``, going through the values first when the dtype does not decide.

    An array in memory is scanned in place; a lazy reader (int64/float64 files, rare) is read once
    more, block by block.
    """
    dtype = np.dtype(spectra.dtype)
    if _exact_as_is(dtype) or dtype.kind not in "uif":
        return storage_dtype(dtype) if dtype.kind in "uifb" else np.dtype("float32")
    if not isinstance(spectra, np.ndarray):
        log.info("%s: %s spectra read once more to choose an exact storage dtype", name, dtype)
    counts = CountsRange()
    if len(shape) == 1:
        block = np.asarray(spectra[...])
        _check_counts(block, name, "the spectrum")
        counts.add(block)
    else:
        for sl in iter_blocks(shape[0], block_rows(shape, spectra_chunks(shape))):
            block = np.asarray(spectra[sl])
            _check_counts(block, name, f"rows {sl.start}..{sl.stop - 1}")
            counts.add(block)
    chosen = storage_dtype(dtype, counts)
    log.debug("%s: %s spectra (largest value %s) stored as %s", name, dtype, counts.top, chosen)
    return chosen


def _write_spectra(bulk: h5py.File, name: str, spectra: Any, compression: str = "gzip") -> tuple[np.ndarray, np.ndarray]:
    """Copy spectra block by block into ``bulk[name]``; return the sum and max spectrum.

    Each block of rows is read from ``spectra`` (a lazy reader opens its files for that block
    only), checked, and handed to a :class:`~.filters.ChunkWriter` that compresses its chunks in
    threads while the next block is read. Memory: about two blocks (16 chunks of 1 MiB each). The
    values are stored exactly (:func:`storage_dtype`; int64 and float64 spectra are looked at first).
    """
    shape = tuple(spectra.shape)
    dtype = _choose_dtype(spectra, name, shape)
    chunks = spectra_chunks(shape)
    ds = bulk.create_dataset(name, shape=shape, dtype=dtype, chunks=chunks, **dataset_options(compression))
    nbins = shape[-1]
    total = np.zeros(nbins, dtype=np.float64)
    peak = np.full(nbins, -np.inf)
    if len(shape) == 1:
        block = np.asarray(spectra[...])
        _check_counts(block, name, "the spectrum")
        ds[...] = block.astype(dtype, copy=False)
        return block.astype(np.float64), block.astype(np.float64)
    with ChunkWriter(ds, compression) as writer:
        for sl in iter_blocks(shape[0], block_rows(shape, chunks)):
            block = np.asarray(spectra[sl])
            _check_counts(block, name, f"rows {sl.start}..{sl.stop - 1}")
            writer.write(sl.start, block.astype(dtype, copy=False))
            flat = block.reshape(-1, nbins)
            if flat.dtype.kind in "uib":  # no NaN: reduce without a float64 copy of the block
                total += flat.sum(axis=0, dtype=np.float64)
                peak = np.fmax(peak, flat.max(axis=0))
            else:
                total += np.nansum(flat, axis=0, dtype=np.float64)
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN (missing) bin
                    peak = np.fmax(peak, np.nanmax(flat, axis=0))
    return total, peak


def _write_raw_attrs(g: h5py.Group, attrs: dict[str, Any], where: str) -> None:
    """``RawMap.attrs`` as attributes of ``raw/``, and its ``member_attrs`` table on the members of ``raw/``.

    ``attrs[MEMBER_ATTRS]`` is ``{member: {attribute: value}}`` (e.g. ``{"I0": {"units": "counts"},
    "channel00": {"calibration_source": "..."}}``, see :mod:`xrfproc.core.convert.provenance`); a
    member that was not written (an absent ``I1``) is skipped.
    """
    for key, value in attrs.items():
        if key != MEMBER_ATTRS:
            g.attrs[key] = value
    for member, table in (attrs.get(MEMBER_ATTRS) or {}).items():
        if member not in g:
            log.debug("%s: raw/%s not written; its attributes %s are dropped", where, member, sorted(table))
            continue
        for key, value in table.items():
            g[member].attrs[key] = value


def write_raw(path: str | Path, raw: RawMap, *, step: str = "convert", params: dict | None = None,
              progress: Callable[[float], None] | None = None, compression: str = "gzip") -> Path:
    """Write a converted scan as a new layout file (replacing any file at ``path`` atomically).

    The spectra go to a bulk file in ``<path>.d/`` linked from ``raw/channelXX/spectra``, copied
    block by block (memory bounded by the block size, whatever the map size); the sum and max
    spectra are computed on the way.

    Parameters
    ----------
    compression : str
        Of the spectra: ``"gzip"`` (level 4, the layout's; default), ``"lz4"``, ``"blosc"`` (need
        ``hdf5plugin`` to read) or ``"none"``; see :mod:`xrfproc.store.filters`.

    Returns
    -------
    Path
        ``path``.
    """
    path = Path(path)
    compression = check_compression(compression)
    raw.validate(str(raw.sources[0]) if raw.sources else str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    everything = ["raw", "cmd", "mot1", "mot2"]
    with transaction(path, step, replace=everything, params=params or {}, inputs=raw.sources,
                     create=True) as tx:
        # a new scan: drop every processed group of an old file at this path as well
        for key in list(tx.file):
            del tx.file[key]
        for key in list(tx.file.attrs):
            del tx.file.attrs[key]
        g = tx.group("raw")
        bulk, rel = tx.new_bulk_file("raw")
        with bulk:
            nchan = len(raw.channels)
            for i, (name, ch) in enumerate(sorted(raw.channels.items())):
                cg = g.create_group(name)
                total, peak = _write_spectra(bulk, f"{name}/spectra", ch.spectra, compression)
                cg["spectra"] = h5py.ExternalLink(rel, f"/{name}/spectra")
                write_array(cg, "icr", np.asarray(ch.icr, dtype=np.float64))
                write_array(cg, "ocr", np.asarray(ch.ocr, dtype=np.float64))
                write_array(cg, "sumspec", total)
                write_array(cg, "maxspec", peak)
                if ch.calibration is not None:
                    cg.attrs["calibration_keV"] = np.asarray(ch.calibration, dtype=np.float64)
                if progress is not None:
                    progress((i + 1) / nchan)
        write_array(g, "I0", np.asarray(raw.I0, dtype=np.float64))
        write_array(g, "acquisition_time", np.asarray(raw.acquisition_time, dtype=np.float64))
        if raw.I1 is not None:
            write_array(g, "I1", np.asarray(raw.I1, dtype=np.float64))
        if raw.energy_keV is not None:
            g.attrs["energy_keV"] = float(raw.energy_keV)
        g.attrs["mot1_name"] = raw.mot1_name
        g.attrs["mot2_name"] = raw.mot2_name
        _write_raw_attrs(g, raw.attrs, str(path))
        tx.file.create_dataset("cmd", data=raw.cmd.encode("utf8"))
        for key, mot, name in (("mot1", raw.mot1, raw.mot1_name), ("mot2", raw.mot2, raw.mot2_name)):
            ds = write_array(tx.file, key, np.asarray(mot, dtype=np.float64))
            ds.attrs["name"] = name
    log.info("wrote %s (%s, channels %s)", path, "x".join(map(str, raw.grid_shape)) or "1 point",
             ", ".join(sorted(raw.channels)))
    return path


def read_dataset(ds: Any, path: str | Path, key: str, sl: Any = (), threads: int = 0) -> np.ndarray:
    """``ds[sl]`` of a numeric dataset, or an InputError naming the file and dataset.

    A slice of rows of a gzip dataset is inflated on ``threads`` threads (0: one per core; see
    :func:`xrfproc.store.filters.read_rows`).

    Refuses non-numeric data (strings where numbers are expected), declared sizes too large to be
    real (before allocating: :func:`xrfproc.core.limits.check_size`) and unreadable (truncated,
    corrupt) data.
    """
    if ds.dtype.kind not in "uifb":
        raise InputError(f"expected numbers, found dtype {ds.dtype}", path=path, dataset=key)
    if sl == ():
        check_size(ds.shape, ds.dtype, key, path=path, dataset=key)
    try:
        if isinstance(sl, slice) and sl.step in (None, 1) and getattr(ds, "ndim", 0) >= 2:
            start, stop, _ = sl.indices(ds.shape[0])
            return read_rows(ds, start, max(start, stop), threads or THREADS)  # chunks inflated in parallel
        return ds[sl]
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"cannot read the data (truncated or corrupt file: {exc})", path=path, dataset=key) from None


def read_raw(path: str | Path, load_spectra: bool = True) -> RawMap:
    """Read ``raw/`` of a layout file (ours or the original tool's) into a :class:`RawMap`.

    With ``load_spectra=False`` the spectra stay on disk: each channel's ``spectra`` is then the
    *path* of the dataset and must be read with :func:`iter_spectra_blocks`.
    """
    path = Path(path)
    with open_read(path) as f:
        raw = require(f, "raw", "group")
        chans = channels(f, "raw")
        if not chans:
            raise LayoutError("no detector channel 'raw/channelXX'", path=path, dataset="raw")
        out: dict[str, RawChannel] = {}
        for c in chans:
            sp = require(f, f"raw/{c}/spectra")
            if not isinstance(sp, h5py.Dataset) or sp.ndim < 1:
                raise LayoutError("expected a dataset (*grid, nbins)", path=path, dataset=f"raw/{c}/spectra")
            spectra = read_dataset(sp, path, f"raw/{c}/spectra") if load_spectra else f"raw/{c}/spectra"
            grid = sp.shape[:-1]
            icr = read_dataset(raw[c]["icr"], path, f"raw/{c}/icr") if "icr" in raw[c] else np.ones(grid)
            ocr = read_dataset(raw[c]["ocr"], path, f"raw/{c}/ocr") if "ocr" in raw[c] else np.ones(grid)
            cal = raw[c].attrs.get("calibration_keV")
            out[c] = RawChannel(spectra, icr, ocr, None if cal is None else tuple(float(x) for x in cal))
        grid = require(f, f"raw/{chans[0]}/spectra").shape[:-1]

        def opt(key: str, default: Any) -> Any:
            for where in (f"raw/{key}", key):
                if where in f:
                    return read_dataset(f[where], path, where)
            return default

        cmd = f["cmd"][()] if "cmd" in f and isinstance(f["cmd"], h5py.Dataset) else b""
        return RawMap(
            channels=out,
            I0=np.asarray(opt("I0", np.ones(grid)), dtype=np.float64),
            acquisition_time=np.asarray(opt("acquisition_time", np.ones(grid)), dtype=np.float64),
            mot1=np.asarray(opt("mot1", np.zeros(grid)), dtype=np.float64),
            mot2=np.asarray(opt("mot2", np.zeros(grid)), dtype=np.float64),
            I1=None if "raw/I1" not in f else read_dataset(f["raw/I1"], path, "raw/I1"),
            cmd=cmd.decode("utf8", "replace") if isinstance(cmd, bytes) else str(cmd),
            mot1_name=str(raw.attrs.get("mot1_name", "mot1")),
            mot2_name=str(raw.attrs.get("mot2_name", "mot2")),
            energy_keV=float(raw.attrs["energy_keV"]) if "energy_keV" in raw.attrs else None,
            sources=[str(path)],
        )


def iter_spectra_blocks(path: str | Path, channel: str, rows_per_block: int = 0) -> Iterator[tuple[slice, np.ndarray]]:
    """Yield ``(row slice, spectra block)`` of ``raw/<channel>/spectra`` without loading the whole map."""
    key = f"raw/{channel}/spectra"
    with open_read(path) as f:
        ds = require(f, key)
        if ds.dtype.kind not in "uif":
            raise InputError(f"spectra must be numbers, found dtype {ds.dtype}", path=path, dataset=key)
        if ds.ndim == 1:
            yield slice(0, 1), read_dataset(ds, path, key)[None]
            return
        if rows_per_block <= 0:
            rows_per_block = block_rows(ds.shape, ds.chunks or (1,))
        check_size((rows_per_block,) + ds.shape[1:], ds.dtype, f"a block of {key}", path=path, dataset=key)
        for sl in iter_blocks(ds.shape[0], rows_per_block):
            yield sl, read_dataset(ds, path, key, sl)


__all__ = ["write_raw", "read_raw", "iter_spectra_blocks", "decode_names", "spectra_chunks"]
