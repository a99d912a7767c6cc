"""The normalisation step: ``fit/`` -> ``norm/`` (I0, time, sorting, snake and time-triggered regridding).

Out of core and resumable
-------------------------
The unit of work is one image: one line of one channel with its uncertainties. Each is read from
``fit/channelXX/ims`` (and ``stddev``), normalised, put in motor order or regridded, and saved as it
is written (float32) in ``<file>.d/partial-normalise-<key>/`` (:mod:`xrfproc.store.blocks`; ``key``
hashes the options and the identity of every input, the fit results included, so a rerun on a
refitted map never reuses them). One transaction then streams the saved images into chunked
``norm/`` datasets: the old ``norm/`` stays intact until the new one is complete, a killed run
continues from its saved images with ``resume=True``, and memory is bounded by a few line images
(plus, when regridding, 36 bytes per grid point of geometry), never all lines of a map.

Regridding geometry (triangulation, barycentric weights, nearest points) depends on the positions
and on which points are usable only, so it is computed once per map (:class:`~xrfproc.core.regrid.Regridder`)
and applied to every image; ``nearest`` and ``linear`` triangulate one band of grid rows at a time
(:mod:`xrfproc.core.triangulation`), so their working memory is bounded by the band, not the map.
Points are usable where the normalised values of every line are finite, as the all-lines
regridding did; that mask comes from a first pass over the images (each fit image is therefore
read twice when regridding: the mask must be known before the first image is regridded, and
holding the stack instead would give up the memory bound).
"""
from __future__ import annotations

import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from .. import store
from ..core import normalise as core_norm
from ..core import regrid as core_regrid
from ..errors import InputError, LayoutError, XrfError
from ..progress import ProgressCallback, report
from ..store import blocks as blocks_store

log = logging.getLogger(__name__)

#: result maps (ims + stddev) of a channel above this many bytes go to a linked bulk file
INLINE_BYTES = 64 << 20


def _positions(f: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    out = []
    for key in ("mot1", "mot2"):
        ds = f[key] if key in f else f["raw"][key] if key in f["raw"] else None
        out.append(None if ds is None else np.asarray(ds[()], dtype=np.float64))
    return out[0], out[1]


@dataclass
class _Channel:
    """What the step knows of one fitted channel before reading its images."""

    name: str
    names: list[str]
    has_std: bool
    sums: tuple[np.ndarray, np.ndarray] | None


@dataclass
class _Geometry:
    """Where the normalised points go: unchanged, in motor order (``sort_index``), or regridded
    (positions ``m1``, ``m2`` onto the axes ``slow`` x ``fast``)."""

    target: tuple[int, ...]
    sort_index: tuple[np.ndarray, np.ndarray] | None = None
    m1: np.ndarray | None = None
    m2: np.ndarray | None = None
    slow: np.ndarray | None = None
    fast: np.ndarray | None = None

    @property
    def regridding(self) -> bool:
        return self.slow is not None


def _digest(*arrays: Any) -> str:
    h = hashlib.sha256()
    for a in arrays:
        arr = np.ascontiguousarray(a if a is not None else np.empty(0))
        h.update(f"{arr.shape}{arr.dtype}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()[:24]


def _geometry(path: Path, grid: tuple[int, ...], mot1: np.ndarray | None, mot2: np.ndarray | None,
              scan: core_regrid.ScanGrid | None, tt: bool, snake: bool, sort: bool, halfpixshift: bool,
              dims: tuple[int, int] | None) -> _Geometry:
    regridding = snake or tt
    if (regridding or sort) and (mot1 is None or mot2 is None):
        raise LayoutError("snake/sort/time-triggered processing needs motor positions mot1 and mot2", path=path)
    if (regridding or sort) and (mot1.shape != grid or mot2.shape != grid):
        raise LayoutError(f"motor positions of shape {mot1.shape}/{mot2.shape} do not match the grid {grid}",
                          path=path, dataset="mot1")
    if not regridding:
        if sort and len(grid) == 2:
            return _Geometry(grid, sort_index=core_regrid.sort_order(mot1, mot2))
        return _Geometry(grid)
    target: tuple[int, ...] = grid
    if tt:
        if dims is not None:
            target = tuple(int(d) for d in dims)
        elif scan is not None:
            target = scan.shape
        else:
            raise InputError("time-triggered scan without a mesh command: give dims=(rows, cols)", path=path,
                             dataset="cmd")
    elif len(grid) != 2:
        target = (1, grid[0]) if len(grid) == 1 else grid
    m1 = mot1 if mot1.ndim == 2 else mot1.reshape(1, -1)
    m2 = mot2 if mot2.ndim == 2 else mot2.reshape(1, -1)
    if halfpixshift and snake:
        spacing = np.nanmedian(np.abs(np.diff(m2, axis=1))) if m2.shape[1] > 1 else 0.0
        m2 = core_regrid.half_pixel_shift(m2, spacing)
    slow, fast = core_regrid.regular_axes(m1, m2, target)
    return _Geometry(target, m1=m1, m2=m2, slow=slow, fast=fast)


def _read_image(ims: h5py.Dataset, std: h5py.Dataset | None, i: int,
                factors: core_norm.NormFactors) -> tuple[np.ndarray, np.ndarray]:
    """Line image ``i`` and its uncertainties, normalised (shape grid, float64)."""
    v = np.asarray(ims[i], dtype=np.float64)[None]
    e = None if std is None else np.asarray(std[i], dtype=np.float64)[None]
    with np.errstate(invalid="ignore", over="ignore"):
        v, e = core_norm.normalise_images(v, factors, e)
    return v[0], e[0]


def _usable_points(ims: h5py.Dataset, std: h5py.Dataset | None,
                   factors: core_norm.NormFactors) -> tuple[np.ndarray, np.ndarray]:
    """Points whose normalised value (and uncertainty) is finite in every line, read one image at a time.

    Returns two boolean arrays of shape grid: for the images and for the uncertainties.
    """
    keep_v = np.ones(factors.scale.shape, dtype=bool)
    keep_e = np.ones(factors.scale.shape, dtype=bool)
    for i in range(ims.shape[0]):
        v, e = _read_image(ims, std, i, factors)
        keep_v &= np.isfinite(v)
        keep_e &= np.isfinite(e)
    return keep_v, keep_e


class _Regridders:
    """Regridders by mask of usable points: built once, reused for every line and channel with that mask."""

    def __init__(self, geo: _Geometry, method: str):
        self.geo, self.method = geo, method
        self.cache: dict[str, core_regrid.Regridder] = {}

    def get(self, keep: np.ndarray) -> core_regrid.Regridder:
        key = hashlib.sha256(np.packbits(keep.reshape(-1)).tobytes()).hexdigest()
        if key not in self.cache:
            if len(self.cache) >= 2:
                self.cache.pop(next(iter(self.cache)))
            g = self.geo
            self.cache[key] = core_regrid.Regridder(g.m1, g.m2, g.slow, g.fast, self.method,
                                                    keep=keep.reshape(g.m1.shape))
        return self.cache[key]


def _stats(im: np.ndarray) -> np.ndarray:
    """(min, median, max) over the finite values; NaN where there is none."""
    if not np.isfinite(im).any():
        return np.full(3, np.nan)
    return np.array([np.nanmin(im), np.nanmedian(im), np.nanmax(im)], dtype=np.float64)


def _saved_images(partial: blocks_store.PartialResults, channel: str, nlines: int,
                  shape: tuple[int, ...]) -> set[int]:
    """Indices of the images of ``channel`` an interrupted run saved complete (damaged ones are dropped)."""
    out = set()
    for i in sorted(partial.completed(channel)):
        if i >= nlines:
            continue
        try:
            res = partial.load(channel, i)
            ok = all(res[k].shape == tuple(shape) for k in ("ims", "stddev")) and res["stats"].shape == (3,)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            ok = False
        if ok:
            out.add(i)
        else:
            log.warning("%s: saved image %d of %s is damaged: normalising it again", partial.path, i, channel)
            partial.drop(channel, i)
    return out


def normalise(h5file: str | Path, I0norm: float | None = None, snake: bool = False, sort: bool = False,
              timetriggered: bool | None = None, tmnorm: bool = False, halfpixshift: bool = True,
              method: str = "linear", dims: tuple[int, int] | None = None, datadir: str = "fit",
              progress: ProgressCallback | None = None, resume: bool = False,
              inline_limit: int = INLINE_BYTES) -> dict[str, Any]:
    """Normalise the fitted intensities of every channel and write ``norm/``.

    Works one line image at a time (memory bounded by a few images, not the map), keeping each
    completed image in ``<file>.d/partial-normalise-<key>/`` until ``norm/`` is written.

    Parameters
    ----------
    h5file : path
        A layout file with ``fit/`` (or ``datadir``) and ``raw/I0``.
    I0norm : float, optional
        Monitor value each point is scaled to; default ``max(raw/I0)``.
    snake : bool
        Regrid onto the regular motor grid (snake scans, every other row driven backwards).
    sort : bool
        Put the points in motor order (for maps not sorted at conversion).
    timetriggered : bool, optional
        Time-triggered readout (more points than the grid). None detects it from the scan command.
    tmnorm : bool
        Also divide by ``raw/acquisition_time`` (counts per second).
    halfpixshift : bool
        With ``snake``: move each recorded position half a point along its row's motion (recorded
        positions mark the start of each point's integration).
    method : {"linear", "nearest", "cubic"}
        Interpolation for regridding. ``linear`` (default) puts the half-pixel shifted points of
        a snake scan's forward and backward rows back on the grid between them; ``nearest`` (the
        original tool's choice) keeps measured values but cannot resolve half-pixel shifts.
    dims : (rows, cols), optional
        The target grid of a time-triggered scan when the scan command does not give it.
    progress : callable(done, total, message), optional
        Progress in line images (channels x lines) done.
    resume : bool
        Continue an interrupted run from its saved images (same file, fit results and options);
        the result equals that of an uninterrupted run. Without it saved images are discarded.
    inline_limit : int
        A channel's maps (ims + stddev, float32) above this many bytes go to a bulk file
        ``<file>.d/norm-*.h5`` linked from ``norm/channelXX/{ims,stddev}``.

    Returns
    -------
    dict
        Summary: channels, names, shape, masked points, warnings, min/median/max per line,
        ``images`` (line images written) and ``images_resumed`` (taken from an interrupted run).
    """
    path = Path(h5file)
    with store.open_read(path) as f:
        src = store.require(f, datadir, "group (run the fit step first)")
        chans = store.channels(f, datadir)
        if not chans:
            raise LayoutError(f"no channelXX in {datadir}/ (run the fit step first)", path=path, dataset=datadir)
        if "deadtime_corrected" not in src.attrs:
            log.info("%s/ has no dead-time flag: assuming the fit step corrected dead time, as xrf_proc did", datadir)
        I0 = np.asarray(store.read_dataset(store.require(f, "raw/I0"), path, "raw/I0"), dtype=np.float64)
        i0_units = f["raw/I0"].attrs.get("units", "unknown")
        i0_units = i0_units.decode() if isinstance(i0_units, bytes) else str(i0_units)
        dwell_s = f["raw"].attrs.get("dwell_s") if "dwell_s" in f["raw"].attrs else None
        t = f["raw/acquisition_time"][()] if "raw/acquisition_time" in f else None
        cmd = f["cmd"][()] if "cmd" in f else b""
        cmd = cmd.decode("utf8", "replace") if isinstance(cmd, bytes) else str(cmd)
        mot1, mot2 = _positions(f)
        grid = I0.shape
        info: dict[str, _Channel] = {}
        for c in chans:
            g = src[c]
            ims = store.require(g, "ims")
            if tuple(ims.shape[1:]) != grid:
                raise LayoutError(f"{datadir}/{c}/ims grid {tuple(ims.shape[1:])} differs from raw/I0 {grid}",
                                  path=path, dataset=f"{datadir}/{c}/ims")
            if "stddev" in g and g["stddev"].shape != ims.shape:
                raise InputError(f"stddev shape {g['stddev'].shape} differs from ims shape {ims.shape}", path=path,
                                 dataset=f"{datadir}/{c}/stddev")
            names = store.decode_names(store.require(g, "names")[()])
            if len(names) != ims.shape[0]:
                raise LayoutError(f"{len(names)} names for {ims.shape[0]} images", path=path,
                                  dataset=f"{datadir}/{c}/names")
            has_sums = "sum/int" in g and "sum/bkg" in g
            sums = (np.asarray(g["sum/int"][()]), np.asarray(g["sum/bkg"][()])) if has_sums else None
            info[c] = _Channel(c, names, "stddev" in g, sums)

    factors = core_norm.norm_factors(I0, I0norm, t, tmnorm)
    if dwell_s is None and t is not None:
        tt_ = np.asarray(t, dtype=np.float64)
        dwell_s = float(np.nanmedian(tt_)) if tt_.size and np.isfinite(tt_).any() else None
    # what norm/ is per (read by quantify: xrfproc.steps.normbasis)
    basis = {"I0_units": i0_units, "tmnorm": bool(tmnorm), "dwell_s": float(dwell_s) if dwell_s else float("nan")}
    warnings = list(factors.warnings)
    scan = core_regrid.grid_from_command(cmd) if cmd else None
    tt = core_regrid.is_time_triggered(grid, scan) if timetriggered is None else bool(timetriggered)
    if tt and timetriggered is None:
        warnings.append(f"time-triggered scan detected: {grid} points for a {scan.rows}x{scan.cols} grid")
    geo = _geometry(path, grid, mot1, mot2, scan, tt, snake, sort, halfpixshift, dims)
    if geo.regridding and method not in ("nearest", "linear", "cubic"):
        raise InputError(f"regridding method must be 'nearest', 'linear' or 'cubic', got {method!r}", path=path)

    params = {"I0norm": factors.I0norm, "snake": snake, "sort": sort, "timetriggered": tt, "tmnorm": tmnorm,
              "halfpixshift": halfpixshift, "method": method, "dims": dims, "datadir": datadir}
    key_doc = {"format": 1, "params": params,
               "inputs": _digest(I0, t if tmnorm else None, mot1, mot2, np.frombuffer(cmd.encode(), np.uint8)),
               "channels": {c: {"names": ch.names,
                                "ims": blocks_store.dataset_identity(path, f"{datadir}/{c}/ims"),
                                "stddev": (blocks_store.dataset_identity(path, f"{datadir}/{c}/stddev")
                                           if ch.has_std else None)} for c, ch in info.items()}}
    partial = blocks_store.PartialResults(path, "normalise", blocks_store.result_key(key_doc),
                                          meta={"file": path.name, "params": params}, resume=resume,
                                          fsync=False)  # resumed images are checked (_saved_images)
    total = sum(len(ch.names) for ch in info.values())
    saved = {c: _saved_images(partial, c, len(ch.names), geo.target) if resume else set() for c, ch in info.items()}
    resumed = sum(len(v) for v in saved.values())
    if resumed:
        log.info("%s: resuming the normalisation: %d of %d images done before", path, resumed, total)
        report(progress, resumed, total, f"resumed {resumed} images")
    try:
        _normalise_images(path, datadir, info, saved, geo, factors, partial, method,
                          lambda done, msg: report(progress, resumed + done, total, msg))
    except XrfError:
        partial.discard()  # bad data: deterministic, nothing to resume
        raise
    summary: dict[str, Any] = {"file": str(path), "I0norm": factors.I0norm, "masked_points": factors.masked,
                               "time_triggered": tt, "channels": {}}
    try:
        _write(path, info, geo, factors, partial, params, summary, warnings, inline_limit, basis)
    except XrfError:
        partial.discard()  # a full disk, a read-only folder: the saved images would only hold on to space
        raise
    partial.discard()
    summary["warnings"] = warnings
    summary["images"] = total
    summary["images_resumed"] = resumed
    return summary


def _normalise_images(path: Path, datadir: str, info: dict[str, _Channel], saved: dict[str, set[int]],
                      geo: _Geometry, factors: core_norm.NormFactors, partial: blocks_store.PartialResults,
                      method: str, tick: Any) -> None:
    """Normalise (and sort or regrid) every image not saved yet, one at a time, and save it.

    ``tick(done, message)`` is called after each image.
    """
    regridders = _Regridders(geo, method) if geo.regridding else None
    done = 0
    with store.open_read(path) as f:
        for c, ch in info.items():
            todo = [i for i in range(len(ch.names)) if i not in saved[c]]
            if not todo:
                continue
            g = f[datadir][c]
            ds_v, ds_e = g["ims"], g["stddev"] if ch.has_std else None
            rg_v = rg_e = None
            if regridders is not None:
                keep_v, keep_e = _usable_points(ds_v, ds_e, factors)
                rg_v, rg_e = regridders.get(keep_v), regridders.get(keep_e)
            for i in todo:
                v, e = _read_image(ds_v, ds_e, i, factors)
                if rg_v is not None:
                    v, e = rg_v.apply(v), rg_e.apply(e)
                elif geo.sort_index is not None:
                    v, e = v[geo.sort_index], e[geo.sort_index]
                partial.save(c, i, {"ims": v.astype(np.float32), "stddev": e.astype(np.float32), "stats": _stats(v)})
                done += 1
                tick(done, f"{c}: {ch.names[i]}")


def _write(path: Path, info: dict[str, _Channel], geo: _Geometry, factors: core_norm.NormFactors,
           partial: blocks_store.PartialResults, params: dict[str, Any], summary: dict[str, Any],
           warnings: list[str], inline_limit: int, basis: dict[str, Any] | None = None) -> None:
    """Write ``norm/`` in one transaction, streaming the saved images into chunked datasets.

    ``basis`` (``I0_units``, ``tmnorm``, ``dwell_s``) is written as attributes of ``norm``: what the
    normalised intensities are per (see :mod:`xrfproc.steps.normbasis`).
    """
    datadir = params["datadir"]
    with store.transaction(path, "normalise", replace=["norm"], params=params,
                           inputs=[f"{datadir}/{c}/ims" for c in info] + ["raw/I0"]) as tx:
        g = tx.group("norm")
        store.write_array(g, "I0", factors.I0norm)
        g.attrs["unit"] = "counts per I0norm" + (" per s" if params["tmnorm"] else "")
        g.attrs["deadtime"] = "corrected once, in the fit step"
        for k, v in (basis or {}).items():
            g.attrs[k] = v
        if geo.slow is not None:
            m1g, m2g = np.meshgrid(geo.slow, geo.fast, indexing="ij")
            store.write_array(g, "mot1", m1g)
            store.write_array(g, "mot2", m2g)
        with tx.maps("norm", inline_limit) as maps:
            for c, ch in info.items():
                cg = g.create_group(c)
                nbytes = 2 * len(ch.names) * int(np.prod(geo.target)) * 4
                summary["channels"][c] = maps.place(cg, c, nbytes, ("ims", "stddev"),
                                                    lambda out, ch=ch: _write_channel(ch, geo.target, partial, out))
                store.write_array(cg, "names", ch.names)
                if ch.sums is not None:
                    for key, value in core_norm.normalise_sums(*ch.sums, factors).items():
                        store.write_array(cg, f"sum/{key}", value)
                else:
                    warnings.append(f"{datadir}/{c} has no sum/int, sum/bkg: norm sums left out")


def _write_channel(ch: _Channel, target_grid: tuple[int, ...], partial: blocks_store.PartialResults,
                   group: h5py.Group) -> dict[str, Any]:
    """Stream one channel's saved images into chunked float32 maps; return its summary."""
    nlines = len(ch.names)
    maps = blocks_store.create_maps(group, nlines, target_grid, rows_per_block=target_grid[0] if target_grid else 1,
                                    dtype=np.float32, chi2=False)
    maps["stddev"].attrs["meaning"] = "absolute one-sigma error"
    stats = {}
    for i, name in enumerate(ch.names):
        res = partial.load(ch.name, i)  # shapes checked: resumed ones by _saved_images, the others made here
        maps["ims"][i] = res["ims"]
        maps["stddev"][i] = res["stddev"]
        st = res["stats"]
        stats[name] = [None] * 3 if np.isnan(st).all() else [float(x) for x in st]
    return {"names": ch.names, "shape": [nlines, *target_grid], "stats": stats}
