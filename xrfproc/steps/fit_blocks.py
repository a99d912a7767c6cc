"""The fit step's worker side: read a block of rows, fit it, return plain arrays.

:func:`fit_rows` is the task every scheduler runs (this process, local threads or processes, a Dask
cluster); :func:`prefetched` runs the blocks in this process, reading the next block while one is
fitted. The configuration and model a task needs travel in its arguments (:mod:`xrfproc.steps.fit`
builds them from the sum-spectrum fit, :mod:`xrfproc.steps.fit_plan`).
"""
from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from .. import store
from ..core import fit as core_fit
from ..core import fitconfig
from ..errors import InputError

# --------------------------------------------------------------------------- engine hook
def _engine_block(spectra: np.ndarray, model: Any, *, state: dict[str, Any], **options: Any) -> core_fit.BlockResult:
    """Adapter to our own fit engine (:mod:`xrfproc.core.fit_engine`), imported lazily.

    ``model`` is the channel's per-pixel model (:func:`xrfproc.steps.fit_plan.sum_fit_plan`: the
    sum fit's calibration and weights); each block goes through
    ``fit_engine.fit_block(model, spectra, **options)`` (options such as ``refine=True``), whose
    result has ``names``, ``areas``/``stddev`` ``(npix, ncols)``, ``chi2_red`` and ``failed``.
    """
    try:
        from ..core import fit_engine  # lazy on purpose: the engine is optional
    except ImportError as exc:
        raise InputError(f"mode='engine' is not available: xrfproc.core.fit_engine cannot be imported ({exc}); "
                         "use mode='fast' or mode='precise'") from None
    if not hasattr(fit_engine, "fit_block"):
        raise InputError("mode='engine' is not available: xrfproc.core.fit_engine has no fit_block(); "
                         "use mode='fast' or mode='precise'")
    from ..core.pymca_bridge import rename_group

    data, bad = core_fit.check_spectra(spectra, native=True, net=bool(options.get("net")))
    out = fit_engine.fit_block(model, data, **options)
    names = [rename_group(str(n)) for n in out.names]
    areas = np.array(out.areas, dtype=np.float64).T
    sigma = np.array(out.stddev, dtype=np.float64).T
    chi2 = np.array(out.chi2_red, dtype=np.float64)
    failed = bad | (np.asarray(out.failed, dtype=bool) if out.failed is not None else np.zeros(bad.size, bool))
    # keep the line groups only (the engine may return background columns as well)
    keep = [i for i, n in enumerate(names) if n in state.setdefault("group_names", names)]
    areas, sigma = areas[keep], sigma[keep]
    names = [names[i] for i in keep]
    areas[:, failed] = np.nan
    sigma[:, failed] = np.nan
    chi2[failed] = np.nan
    return core_fit.BlockResult(names, areas, sigma, chi2, failed)


def _window_counts(flat: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Counts of each spectrum within ``[i0, i1)`` (float64; NaN counts as 0), without a float copy."""
    part = flat[:, window[0]:window[1]]
    if part.dtype.kind == "f":
        return np.nansum(part, axis=1, dtype=np.float64)
    return part.sum(axis=1, dtype=np.float64)


def _continuum(cont: Any, flat: np.ndarray, window: tuple[int, int]) -> np.ndarray:
    """Each spectrum's continuum (:class:`xrfproc.core.sumfit.Continuum`) over all channels (0 outside the window)."""
    full = np.zeros(flat.shape, dtype=np.float64)
    full[:, window[0]:window[1]] = cont.of(flat[:, window[0]:window[1]])
    return full


def _engine_net(flat: np.ndarray, cont: Any, window: tuple[int, int], model: Any, state: dict[str, Any],
                options: Mapping[str, Any]) -> core_fit.BlockResult:
    """Engine fit of the window's counts less each pixel's continuum; chi-square on the raw counts' variances."""
    raw = flat[:, window[0]:window[1]]
    net = cont.of(raw)
    np.subtract(raw, net, out=net)  # in place: the block's counts less their continuum
    res = _engine_block(net, model, state=state, **{**dict(options), "net": True})
    shapes = model.shapes[:, model.nbkg:]
    keep = [model.names[model.nbkg:].index(n) if n in model.names[model.nbkg:] else -1 for n in res.names]
    if all(k >= 0 for k in keep):
        cols = np.ascontiguousarray(shapes[:, keep].T)
        areas = np.nan_to_num(res.areas).T
        dof = max(raw.shape[1] - len(keep), 1)
        chi = np.empty(raw.shape[0])
        for s0 in range(0, raw.shape[0], 512):  # in slices that stay in the cache
            r = areas[s0:s0 + 512] @ cols
            np.subtract(net[s0:s0 + 512], r, out=r)
            r *= r
            r /= np.maximum(raw[s0:s0 + 512], 1.0)
            chi[s0:s0 + 512] = r.sum(axis=1) / dof
        chi[np.asarray(res.failed, dtype=bool)] = np.nan
        res.chi2 = chi
    return res


# --------------------------------------------------------------------------- worker side
_CACHE: "OrderedDict[tuple, dict[str, Any]]" = OrderedDict()
_CACHE_LOCK = threading.Lock()


def _worker_state(cfg_text: str, mode: str, nbins: int, sumspec: np.ndarray, npix: int,
                  weight: int | None, group_names: Sequence[str]) -> dict[str, Any]:
    """Parsed configuration and engine model, built once per process (or worker) and map."""
    key = (hashlib.sha256(cfg_text.encode()).hexdigest(), mode, nbins, hashlib.sha256(sumspec.tobytes()).hexdigest(),
           npix, weight, tuple(group_names))
    with _CACHE_LOCK:
        state = _CACHE.get(key)
        if state is None:
            cfg = fitconfig.config_from_text(cfg_text, mode=mode, nbins=nbins)
            state = {"config": cfg.config, "group_names": list(group_names)}
            _CACHE[key] = state
            while len(_CACHE) > 4:
                _CACHE.popitem(last=False)
        _CACHE.move_to_end(key)
    return state


def read_rows(path: str, channel: str, rows: tuple[int, int], io_threads: int = 0) -> np.ndarray:
    """The spectra of rows ``[rows[0], rows[1])`` of ``raw/<channel>/spectra`` (gzip chunks inflated on
    ``io_threads`` threads, 0: one per core); shape ``(rows, *grid[1:], nbins)``."""
    where = f"raw/{channel}/spectra"
    with store.open_read(path) as f:
        ds = store.require(f, where)
        if ds.ndim == 1:
            return np.asarray(store.read_dataset(ds, path, where))[None]
        return np.asarray(store.read_dataset(ds, path, where, slice(rows[0], rows[1]), threads=io_threads))


def prefetched(argsets: Sequence[tuple], io_threads: int) -> Iterator[tuple[int, dict[str, Any]]]:
    """Fit the blocks in this process, reading block k+1 in a thread while block k is fitted."""
    if not argsets:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="xrfproc-read") as pool:
        nxt = pool.submit(read_rows, argsets[0][0], argsets[0][1], argsets[0][2], io_threads)
        for k, a in enumerate(argsets):
            block = nxt.result()
            if k + 1 < len(argsets):
                b = argsets[k + 1]
                nxt = pool.submit(read_rows, b[0], b[1], b[2], io_threads)
            yield k, fit_rows(*a, block=block)


def fit_rows(path: str, channel: str, rows: tuple[int, int], mode: str, cfg_text: str, sumspec: np.ndarray,
             group_names: Sequence[str], npix: int, weight: int | None = None, refit: bool = True,
             chi2: bool = True, options: Mapping[str, Any] | None = None, delay: float = 0.0,
             io_threads: int = 0, model: Any = None, var_unit: np.ndarray | None = None,
             window: tuple[int, int] | None = None, mean_counts: float = 0.0, continuum: Any = None,
             ysum_net: np.ndarray | None = None, ybar: np.ndarray | None = None,
             block: np.ndarray | None = None) -> dict[str, Any]:
    """Fit the rows ``rows`` of ``raw/<channel>/spectra``: the task every scheduler runs.

    Reads its block from the file itself (workers only need the path on a shared file system),
    inflating gzip chunks on ``io_threads`` threads (0: one per core).
    Returns ``names`` (str array), ``areas``/``sigma`` ``(nlines, n)``, ``chi2``/``failed`` ``(n,)`` and
    ``invalid`` (spectra with non-finite counts), all without dead-time correction. With
    ``var_unit`` (per-line variance of a pixel with ``mean_counts`` counts in ``window``, fixed
    weights) the uncertainties are the Poisson ones of each pixel's counts. ``block`` (the spectra
    of ``rows``, already read: see :func:`read_rows`) skips the read.
    """
    where = f"raw/{channel}/spectra"
    if block is None:
        block = read_rows(path, channel, rows, io_threads)
    nbins = block.shape[-1]
    flat = np.asarray(block).reshape(-1, nbins)
    invalid = int((~np.isfinite(flat).all(axis=1)).sum()) if flat.dtype.kind == "f" else 0
    state = _worker_state(cfg_text, mode, nbins, sumspec, npix, weight, group_names)
    background = None
    if continuum is not None and window is not None and mode != "engine":
        background = _continuum(continuum, flat, window)
    if mode == "fast":
        res = core_fit.fast_fit_block(flat, state["config"], sumspec if ysum_net is None else ysum_net, weight=weight,
                                      refit=refit, with_chi2=chi2, where=where, background=background)
    elif mode == "engine" and continuum is not None and window is not None:
        res = _engine_net(flat, continuum, window, model, state, options or {})
    elif mode == "engine":
        res = _engine_block(flat, model, state=state, **dict(options or {}))
    else:
        variance = None
        if background is not None and ybar is not None and mean_counts > 0 and window is not None:
            share = _window_counts(flat, window) / mean_counts
            variance = share[:, None] * ybar[None, :]
        res = core_fit.precise_fit_block(flat, cfg_text, scheduler="sync", where=where, background=background,
                                         variance=variance)
    if var_unit is not None and window is not None and mean_counts > 0 and len(var_unit) == len(res.names):
        i0, i1 = window
        share = _window_counts(flat, window) / mean_counts
        sigma = np.sqrt(np.asarray(var_unit, dtype=np.float64)[:, None] * share[None, :])
        sigma[:, np.asarray(res.failed, dtype=bool)] = np.nan
        res.sigma = sigma
    if delay:
        time.sleep(delay)
    return {"names": np.array(res.names, dtype=str), "areas": np.asarray(res.areas, dtype=np.float64),
            "sigma": np.asarray(res.sigma, dtype=np.float64), "chi2": np.asarray(res.chi2, dtype=np.float64),
            "failed": np.asarray(res.failed, dtype=bool), "invalid": np.array(invalid)}


