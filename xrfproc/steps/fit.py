"""The fit step: ``raw/channelXX/spectra`` -> ``fit/channelXX/{cfg, ims, names, sum/int, sum/bkg, stddev, chi2}``.

Everything is checked (configurations, channels) before any work. The map is split into blocks of
whole rows; each block is a task (:func:`fit_rows`) that reads its spectra from the file itself and
runs wherever the scheduler says (this process, local threads/processes, a Dask cluster:
:mod:`xrfproc.scheduler`). The calling process alone saves each completed block in a partial-results
folder (:mod:`xrfproc.store.blocks`, which makes ``resume=True`` possible after a kill) and finally
streams them, dead-time corrected, into chunked datasets in one transaction: the old ``fit/``
stays intact until the new one is complete, and memory is bounded by the block size.
"""
from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Sequence

import h5py
import numpy as np

from .. import store
from ..core import fit as core_fit
from ..core import fitconfig
from ..core.normalise import deadtime_factor
from ..errors import ConfigError, InputError, LayoutError, XrfError
from ..progress import ProgressCallback, report
from ..scheduler import get_runner
from ..store import blocks as blocks_store
from . import fit_blocks, fit_plan

log = logging.getLogger(__name__)

MODES = ("fast", "precise", "engine")
#: spectra per block read from the file in fast / engine mode
BLOCK_SPECTRA = 8192
#: spectra per block in precise mode (a full fit per spectrum: small tasks spread better)
PRECISE_BLOCK_SPECTRA = 256
#: result maps (ims + stddev + chi2) above this many bytes go to a linked bulk file
INLINE_BYTES = 64 << 20


# --------------------------------------------------------------------------- argument handling
def _select_channels(all_channels: list[str], channel: Any, path: Path) -> list[str]:
    if channel is None:
        return list(all_channels)
    wanted = [channel] if isinstance(channel, (str, int, np.integer)) else list(channel)
    out = []
    for c in wanted:
        name = f"channel{int(c):02d}" if isinstance(c, (int, np.integer)) or str(c).isdigit() else str(c)
        if name not in all_channels:
            raise InputError(f"no detector channel '{name}' in raw/ (the file has {', '.join(all_channels)})",
                             path=path, dataset=f"raw/{name}")
        out.append(name)
    return out


def _configs_per_channel(config: Any, all_channels: list[str], chans: list[str], path: Path) -> dict[str, Path]:
    """One .cfg path per fitted channel from a path, a list (one per channel) or a dict."""
    if isinstance(config, (str, Path)):
        return {c: Path(config) for c in chans}
    if isinstance(config, Mapping):
        missing = [c for c in chans if c not in config]
        if missing:
            raise ConfigError(f"no fit configuration given for {', '.join(missing)} (the dict has "
                              f"{', '.join(map(str, config)) or 'nothing'})", path=path)
        return {c: Path(config[c]) for c in chans}
    if isinstance(config, Sequence):
        cfgs = list(config)
        if len(cfgs) == len(all_channels):
            return {c: Path(cfgs[all_channels.index(c)]) for c in chans}
        if len(cfgs) == len(chans):
            return {c: Path(p) for c, p in zip(chans, cfgs)}
        raise ConfigError(f"{len(cfgs)} fit configurations for {len(all_channels)} detector channels "
                          f"({', '.join(all_channels)}); give one per channel or a single one for all", path=path)
    raise ConfigError(f"config must be a .cfg path, a list or a dict of them, got {type(config).__name__}", path=path)


# --------------------------------------------------------------------------- the step
@dataclass
class _Plan:
    """One channel's work: sum spectrum, sum fit and the blocks of rows."""

    channel: str
    grid: tuple[int, ...]
    nbins: int
    npix: int
    per_row: int
    rows_per_block: int
    blocks: list[tuple[int, int]]
    sumspec: np.ndarray
    sumfit: core_fit.SumFit
    icr: np.ndarray
    ocr: np.ndarray
    sp: fit_plan.SumPlan


def _plan_channel(path: Path, c: str, shape: tuple[int, ...], cfg: fitconfig.FitConfig, per_block: int, *,
                  mode: str, weight: Any, background: str, sum_fit: str, calibration: str) -> _Plan:
    grid, nbins = tuple(shape[:-1]), int(shape[-1])
    npix = int(np.prod(grid))
    with store.open_read(path) as f:
        g = f[f"raw/{c}"]
        icr = np.asarray(g["icr"][()], dtype=np.float64) if "icr" in g else np.ones(grid)
        ocr = np.asarray(g["ocr"][()], dtype=np.float64) if "ocr" in g else np.ones(grid)
        sumspec = np.asarray(g["sumspec"][()], dtype=np.float64) if "sumspec" in g else None
    if sumspec is None or sumspec.shape != (nbins,):
        sumspec = np.zeros(nbins)
        for _, block in store.iter_spectra_blocks(path, c):
            sumspec += np.nansum(np.asarray(block, dtype=np.float64).reshape(-1, nbins), axis=0)
    sp = fit_plan.sum_fit_plan(sumspec, cfg, mode=mode, npix=npix, channel=c, weight=weight, background=background,
                               sum_fit=sum_fit, calibration=calibration)
    nrows = grid[0] if grid else 1
    per_row = int(np.prod(grid[1:])) if len(grid) > 1 else 1
    rpb = max(1, per_block // per_row)
    blocks = [(s, min(nrows, s + rpb)) for s in range(0, nrows, rpb)]
    return _Plan(c, grid, nbins, npix, per_row, rpb, blocks, sumspec, sp.sumfit, icr.reshape(grid or (1,)),
                 ocr.reshape(grid or (1,)), sp)


def fit(h5file: str | Path, config: Any, channel: Any = None, mode: str = "fast", *,
        progress: ProgressCallback | None = None, weight: int | str | None = None, refit: bool = True,
        background: str = "sum", sum_fit: str = "engine", calibration: str = "sum",
        deadtime: bool = True, chi2: bool = True, n_workers: int | None = None, scheduler: Any = None,
        block_spectra: int | None = None, resume: bool = False, inline_limit: int = INLINE_BYTES,
        block_delay: float = 0.0, **options: Any) -> dict[str, Any]:
    """Fit the spectra of every (or the chosen) detector channel and write ``fit/``.

    The spectra are read in blocks of rows by the workers themselves, each block's results are
    kept in ``<file>.d/partial-fit-<key>/`` as it completes, and the results are written block by
    block into chunked datasets: memory is bounded by the block size, not the map size.

    Parameters
    ----------
    h5file : str or Path
        A layout file with ``raw/channelXX/spectra``.
    config : path, list of paths or dict channel -> path
        PyMca ``.cfg`` file(s): one for all channels, one per channel in channel order, or keyed
        ``{"channel00": ...}``.
    channel : str, int or list, optional
        Channels to fit (``"channel00"`` or 0); default all. Only the fitted channels'
        ``fit/channelXX`` groups are replaced; fitting all replaces ``fit/`` as a whole.
    mode : {"fast", "precise", "engine"}
        ``fast``: PyMca's FastXRFLinearFit (SNIP background required); ``precise``: a full PyMca
        fit of every pixel; ``engine``: xrfproc's own fit engine.
    progress : callable(done, total, message), optional
        Progress in spectra fitted over all channels (as blocks complete, on any scheduler).
    weight : {None, "sum", 0, 1, 2}
        Weights of the per-pixel fits. None (default): weights that do not depend on the pixel's own
        counts, so that areas are unbiased at any count rate: ``1 / mean spectrum`` in engine mode,
        PyMca's average weights (policy 1) in fast mode, unweighted in precise mode; the one-sigma
        maps are then each pixel's Poisson uncertainty. 0, 1, 2: PyMca's policies (2: each
        channel weighted by the pixel's own counts, biased low at a few thousand counts per spectrum).
    refit
        Fast mode: PyMca's refit of negative areas.
    background : {"sum", "snip"}
        For configurations with a SNIP background: ``"sum"`` (default) gives each pixel the shape
        of the sum spectrum's SNIP background, scaled by ``b0 + b1 x`` fitted on the channels where
        the sum spectrum has no peak (linear in the counts), subtracted before the peaks are fitted
        (PyMca's fast and precise fits then run with their stripping off; precise with the
        expected Poisson uncertainties): the per-pixel areas add up to the sum-spectrum fit at any
        count rate;
        ``"snip"``: each pixel's own SNIP background, as PyMca does it (biased high where a
        spectrum has a few counts per channel).
    sum_fit : {"engine", "pymca"}
        Who fits the sum spectrum (areas, background under the lines, calibration and resolution
        that every pixel then uses): the engine (milliseconds) or PyMca's full fit (seconds).
    calibration : {"sum", "config"}
        Calibration and resolution of the per-pixel fits: those the sum-spectrum fit found
        (default) or the configuration's as written (PyMca's own behaviour; the shift is still
        measured and warned about past a quarter of the FWHM).
    deadtime : bool
        Multiply areas and uncertainties by ICR/OCR per pixel (sums by sum(ICR)/sum(OCR));
        pixels with OCR 0 are missing (NaN) and counted.
    chi2 : bool
        Fast mode: compute the reduced chi-square map (builds PyMca's model; a little slower).
    n_workers : int, optional
        Local threads/processes (default all cores).
    scheduler : None, "sync", "threads", "processes", "tcp://host:port" or distributed.Client
        Where the blocks are fitted (:mod:`xrfproc.scheduler`); None: ``$XRFPROC_SCHEDULER``, else
        this process for fast/engine (their kernels use every core) and local processes for precise.
    block_spectra : int, optional
        Spectra per block (whole rows; default 8192, 256 in precise mode). Part of the resume key.
    resume : bool
        Continue an interrupted run from its completed blocks (same file, configuration, mode,
        options and block size); the result equals that of an uninterrupted run.
    inline_limit : int
        Result maps above this many bytes go to a bulk file ``<file>.d/fit-*.h5`` linked from
        ``fit/channelXX/{ims,stddev,chi2}`` (external links, read like any dataset).
    block_delay : float
        Seconds of sleep per block (tests of interrupted and distributed runs only).
    **options
        Passed to the engine (``mode="engine"``).

    Returns
    -------
    dict
        ``{"file", "mode", "channels": {name: {"names", "shape", "lines": {line: {min, median, max}},
        "failed", "invalid", "deadtime_missing", "chi2_median", "sum_int", "warnings"}}, "seconds",
        "blocks", "blocks_resumed", "ran_on"}``. Medians are exact up to 131072 pixels, else of a
        regular sample of that many.

    Raises
    ------
    ConfigError
        Missing/unreadable configuration, missing sections, a non-SNIP background in fast mode,
        a configuration for another channel count; nothing is written.
    InputError
        Unknown channel, empty map, negative counts, spectra of the wrong shape, an unreachable
        scheduler; nothing is written.
    """
    t0 = time.perf_counter()
    path = Path(h5file)
    if mode == "engine" and options.get("refine") and background == "sum":
        # per-pixel refinement fits each pixel's calibration on top of its own SNIP background
        log.info("%s: refine=True: each pixel's own SNIP background (background='snip')", path)
        background = "snip"
    if mode not in MODES:
        raise InputError(f"fit mode {mode!r} must be one of {', '.join(MODES)}", path=path)
    with store.open_read(path) as f:
        store.require(f, "raw", "group")
        all_channels = store.channels(f, "raw")
        if not all_channels:
            raise LayoutError("no detector channel raw/channelXX", path=path, dataset="raw")
        chans = _select_channels(all_channels, channel, path)
        shapes = {}
        for c in chans:
            ds = store.require(f, f"raw/{c}/spectra")
            if ds.ndim < 1 or ds.shape[-1] < 16 or ds.size == 0:
                raise InputError(f"spectra of shape {ds.shape}: expected (*grid, nbins) with at least 16 channels "
                                 "and one point", path=path, dataset=f"raw/{c}/spectra")
            shapes[c] = tuple(ds.shape)
    cfg_paths = _configs_per_channel(config, all_channels, chans, path)
    cfgs = {c: fitconfig.read_config(cfg_paths[c], mode=mode, nbins=shapes[c][-1]) for c in chans}
    per_block = int(block_spectra or (PRECISE_BLOCK_SPECTRA if mode == "precise" else BLOCK_SPECTRA))
    if per_block < 1:
        raise InputError(f"block_spectra must be >= 1, got {block_spectra}", path=path)
    plans = {c: _plan_channel(path, c, shapes[c], cfgs[c], per_block, mode=mode, weight=weight, background=background,
                              sum_fit=sum_fit, calibration=calibration) for c in chans}

    key_doc = {"format": 2, "mode": mode, "weight": weight, "refit": refit, "chi2": bool(chi2),
               "background": background, "sum_fit": sum_fit, "calibration": calibration,
               "options": options if mode == "engine" else {}, "block_spectra": per_block,
               "channels": {c: {"cfg": hashlib.sha256(cfgs[c].text.encode()).hexdigest(),
                                "raw": blocks_store.raw_identity(path, f"raw/{c}/spectra")} for c in chans}}
    key = blocks_store.result_key(key_doc)
    partial = blocks_store.PartialResults(path, "fit", key, meta={"file": path.name, **key_doc}, resume=resume)
    with partial:  # the file's lock is held from here until the results are written or given up
        total = sum(p.npix for p in plans.values())
        todo: list[tuple[str, int]] = []
        done_pix = 0
        resumed = 0
        for c, p in plans.items():
            have = partial.completed(c) if resume else set()
            for b, (r0, r1) in enumerate(p.blocks):
                if b in have:
                    resumed += 1
                    done_pix += min(p.npix, (r1 - r0) * p.per_row)
                else:
                    todo.append((c, b))
        if resumed:
            log.info("%s: resuming the fit: %d of %d blocks done before", path, resumed, resumed + len(todo))
            report(progress, done_pix, total, f"resumed {resumed} blocks")

        runner = get_runner(scheduler, n_workers, default="processes" if mode == "precise" else "sync")
        # blocks in this process inflate their gzip chunks on every core; parallel workers one each
        io_threads = 0 if runner.kind == "sync" else 1

        def args(item: tuple[str, int]) -> tuple:
            c, b = item
            p = plans[c]
            sp = p.sp
            return (str(path.resolve()), c, p.blocks[b], mode, sp.cfg_text, p.sumspec, p.sumfit.names, p.npix, sp.weight,
                    refit, chi2, options if mode == "engine" else {}, block_delay, io_threads, sp.model, sp.var_unit,
                    sp.window, sp.mean_counts, sp.continuum, sp.ysum_net, sp.ybar)

        try:
            with runner:
                results = (fit_blocks.prefetched([args(t) for t in todo], io_threads) if runner.kind == "sync" and mode != "precise"
                           else runner.map_unordered(fit_blocks.fit_rows, (args(t) for t in todo)))
                for i, res in results:
                    c, b = todo[i]
                    partial.save(c, b, res)
                    done_pix += int(res["chi2"].size)
                    report(progress, done_pix, total, f"{c}: {mode} fit")
        except XrfError:
            partial.discard()  # bad data or configuration: deterministic, nothing to resume
            raise
        ran_on = runner.describe()
        summary = _write(path, plans, cfgs, cfg_paths, chans, all_channels, partial, mode=mode, weight=weight,
                         refit=refit, deadtime=deadtime, options=options, ran_on=ran_on, inline_limit=inline_limit)
        partial.discard()
        summary.update(seconds=time.perf_counter() - t0, blocks=resumed + len(todo), blocks_resumed=resumed,
                       ran_on=ran_on)
        report(progress, total, total, "fit written")
        return summary


def _write(path: Path, plans: dict[str, _Plan], cfgs: dict[str, fitconfig.FitConfig], cfg_paths: dict[str, Path],
           chans: list[str], all_channels: list[str], partial: blocks_store.PartialResults, *, mode: str,
           weight: int | None, refit: bool, deadtime: bool, options: Mapping[str, Any], ran_on: dict[str, Any],
           inline_limit: int) -> dict[str, Any]:
    """Write ``fit/`` in one transaction, streaming the saved blocks into chunked datasets."""
    replace = ["fit"] if set(chans) == set(all_channels) else [f"fit/{c}" for c in chans]
    params = {"mode": mode, "config": {c: str(cfg_paths[c]) for c in chans}, "channels": chans, "weight": weight,
              "refit": refit, "deadtime": deadtime, "ran_on": ran_on, **{k: v for k, v in options.items()}}
    inputs = [str(cfg_paths[c]) for c in chans] + [f"raw/{c}/spectra" for c in chans]
    summary: dict[str, Any] = {"file": str(path), "mode": mode, "channels": {}}
    with store.transaction(path, "fit", replace=replace, params=params, inputs=inputs) as tx:
        with tx.maps("fit", inline_limit) as maps:
            for c in chans:
                p = plans[c]
                first = partial.load(c, 0)
                names = [str(n) for n in first["names"]]
                g = tx.group(f"fit/{c}")
                nbytes = (2 * len(names) + 1) * p.npix * 8
                summary["channels"][c] = maps.place(
                    g, c, nbytes, ("ims", "stddev", "chi2"),
                    lambda target, p=p, names=names: _write_channel(p, names, partial, target, deadtime))
                store.write_array(g, "cfg", str(cfg_paths[c]))
                store.write_array(g, "cfg_text", cfgs[c].text)
                store.write_array(g, "names", names)
                sf = p.sumfit
                factor = core_fit.sum_deadtime_factor(p.icr, p.ocr) if deadtime else 1.0
                sg = g.create_group("sum")
                store.write_array(sg, "int", sf.int * factor)
                store.write_array(sg, "bkg", sf.bkg * factor)
                store.write_array(sg, "stddev", sf.sigma * factor)
                sg.attrs["chisq"] = sf.chisq
                sg.attrs["calibration_keV"] = np.asarray(sf.calibration)
                sp = p.sp
                sg.attrs["theta"] = sp.theta
                sg.attrs["theta_config"] = sp.theta_config
                sg.attrs["theta_names"] = "zero keV, gain keV/channel, noise keV FWHM, Fano"
                sg.attrs["calibration_shift_eV"] = sp.shift_eV
                sg.attrs["calibration_shift_line"] = sp.line
                ch = summary["channels"][c]
                ratios, off = fit_plan.sum_rule(sp.params, np.asarray(ch.pop("pixel_sum")), names)
                store.write_array(g, "sum_rule", np.array([ratios.get(n, np.nan) for n in names]))
                g["sum_rule"].attrs["meaning"] = ("per-pixel areas summed / sum-spectrum area, for lines holding "
                                                  ">= 2 % of the fluorescence (NaN: below)")
                g.attrs["mode"] = mode
                g.attrs["deadtime_corrected"] = int(bool(deadtime))
                g.attrs["failed_pixels"] = summary["channels"][c]["failed"]
                g.attrs["units"] = "counts (fitted peak areas)"
                g.attrs["scheduler"] = str(ran_on["scheduler"])
                g.attrs["workers"] = int(ran_on["workers"])
                ch["warnings"] = list(cfgs[c].warnings) + list(sp.warnings) + ch["warnings"]
                ch["sum_rule"] = ratios
                ch["calibration"] = {"zero_keV": float(sp.theta[0]), "gain_keV": float(sp.theta[1]),
                                     "noise_keV": float(sp.theta[2]), "fano": float(sp.theta[3]),
                                     "config_zero_keV": float(sp.theta_config[0]),
                                     "config_gain_keV": float(sp.theta_config[1]),
                                     "shift_eV": float(sp.shift_eV), "line": sp.line}
                if off:
                    ch["warnings"].append(f"{c}: sum rule broken: per-pixel areas summed / sum-spectrum area = "
                                          + ", ".join(f"{n} {ratios[n]:.3f}" for n in off)
                                          + " (expected 1 +- 0.05): the per-pixel fits are biased")
                if sf.names != names:
                    ch["warnings"].append(f"{c}: sum-spectrum groups {sf.names} differ from the map groups {names}")
                ch["sum_int"] = dict(zip(names, map(float, sf.int * factor)))
        if "fit" in tx.file:
            tx.file["fit"].attrs["deadtime_corrected"] = int(bool(deadtime))
    return summary


def _write_channel(p: _Plan, names: list[str], partial: blocks_store.PartialResults, target: h5py.Group,
                   deadtime: bool) -> dict[str, Any]:
    """Stream one channel's saved blocks (dead-time corrected) into chunked maps; return its summary."""
    c = p.channel
    ims_grid = p.grid or (1,)
    maps = blocks_store.create_maps(target, len(names), ims_grid, p.rows_per_block)
    stats = blocks_store.LineStats(names, p.npix)
    failed = invalid = missing = 0
    pixel_sum = np.zeros(len(names))
    for b, (r0, r1) in enumerate(p.blocks):
        res = partial.load(c, b)
        if [str(n) for n in res["names"]] != names:
            raise InputError(f"block {b} of {c} was fitted with the groups {list(res['names'])}, block 0 with {names}; "
                             "rerun without resume", path=partial.path)
        areas, sigma, chi = res["areas"], res["sigma"], res["chi2"]
        pixel_sum += np.nansum(areas, axis=1)
        if deadtime:
            factor, miss = deadtime_factor(p.icr[r0:r1].reshape(-1), p.ocr[r0:r1].reshape(-1))
            areas = areas * factor[None]
            sigma = sigma * factor[None]
            missing += miss
        rows = slice(r0, r1)
        blocks_store.write_rows(maps["ims"], rows, areas)
        blocks_store.write_rows(maps["stddev"], rows, sigma)
        blocks_store.write_rows(maps["chi2"], rows, chi, lines=False)
        stats.add(r0 * p.per_row, areas, chi)
        failed += int(res["failed"].sum())
        invalid += int(res["invalid"])
    failed -= invalid  # failed: fits that did not succeed; invalid: spectra with NaN counts
    warnings = []
    if invalid:
        warnings.append(f"{c}: {invalid} spectra hold NaN counts; their results are NaN")
    if failed:
        warnings.append(f"{c}: {failed} pixels could not be fitted; they are NaN")
    if missing:
        warnings.append(f"{c}: {missing} pixels have OCR 0 or no valid ICR/OCR: treated as missing (NaN)")
    return {"names": names, "shape": [len(names), *ims_grid], "lines": stats.lines(), "failed": failed,
            "invalid": invalid, "deadtime_missing": missing, "chi2_median": stats.chi2_median(), "warnings": warnings,
            "pixel_sum": pixel_sum.tolist()}
