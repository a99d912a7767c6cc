"""The fit step: ``raw/channelXX/spectra`` -> ``fit/channelXX/{cfg, ims, names, sum/int, sum/bkg, stddev, chi2}``.

Everything is checked (configurations, channels, spectra) and computed before the file is opened
for writing; the results of all channels are then written in one transaction, so a failure at any
point leaves the file as it was.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import store
from ..core import fit as core_fit
from ..core import fitconfig
from ..core.normalise import deadtime_factor
from ..errors import ConfigError, InputError, LayoutError
from ..progress import ProgressCallback, report

log = logging.getLogger(__name__)

MODES = ("fast", "precise", "engine")
#: spectra per block read from the file in fast / engine mode
BLOCK_SPECTRA = 8192


# --------------------------------------------------------------------------- engine hook
def _engine_block(spectra: np.ndarray, config: Mapping[str, Any], ysum: np.ndarray, *, state: dict[str, Any],
                  nspectra: int, weight: int | None = None, **options: Any) -> core_fit.BlockResult:
    """Adapter to our own fit engine (:mod:`xrfproc.core.fit_engine`), imported lazily.

    The engine model is built once per channel (``fit_model.build_model(config, ysum, nbins,
    nspectra=, weight=)``, kept in ``state``) and each block goes through
    ``fit_engine.fit_block(model, spectra, **options)`` (options such as ``refine=True``), whose
    result has ``names``, ``areas``/``stddev`` ``(npix, ncols)``, ``chi2_red`` and ``failed``.
    """
    try:
        from ..core import fit_engine, fit_model  # lazy on purpose: the engine is optional
    except ImportError as exc:
        raise InputError(f"mode='engine' is not available: xrfproc.core.fit_engine cannot be imported ({exc}); "
                         "use mode='fast' or mode='precise'") from None
    if not hasattr(fit_engine, "fit_block") or not hasattr(fit_model, "build_model"):
        raise InputError("mode='engine' is not available: xrfproc.core.fit_engine has no fit_block(); "
                         "use mode='fast' or mode='precise'")
    from ..core.pymca_bridge import rename_group

    data, bad = core_fit.check_spectra(spectra)
    if "model" not in state:
        state["model"] = fit_model.build_model(config, ysum, data.shape[1], nspectra=nspectra, weight=weight)
    out = fit_engine.fit_block(state["model"], data, **options)
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
def fit(h5file: str | Path, config: Any, channel: Any = None, mode: str = "fast", *,
        progress: ProgressCallback | None = None, weight: int | None = None, refit: bool = True,
        deadtime: bool = True, chi2: bool = True, n_workers: int | None = None, scheduler: str = "processes",
        block_spectra: int = BLOCK_SPECTRA, **options: Any) -> dict[str, Any]:
    """Fit the spectra of every (or the chosen) detector channel and write ``fit/``.

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
        fit of every pixel over all cores; ``engine``: xrfproc's own fit engine.
    progress : callable(done, total, message), optional
        Progress in spectra fitted over all channels.
    weight, refit
        Fast mode: PyMca's weight policy (None: as the configuration says) and refit of negative areas.
    deadtime : bool
        Multiply areas and uncertainties by ICR/OCR per pixel (sums by sum(ICR)/sum(OCR));
        pixels with OCR 0 are missing (NaN) and counted.
    chi2 : bool
        Fast mode: compute the reduced chi-square map (builds PyMca's model; a little slower).
    n_workers, scheduler
        Precise mode: worker processes (default all cores) and Dask scheduler.
    block_spectra : int
        Spectra read and fitted per block (fast / engine).
    **options
        Passed to the engine (``mode="engine"``).

    Returns
    -------
    dict
        ``{"file", "mode", "channels": {name: {"names", "shape", "lines": {line: {min, median, max}},
        "failed", "invalid", "deadtime_missing", "chi2_median", "sum_int", "warnings"}}, "seconds"}``.

    Raises
    ------
    ConfigError
        Missing/unreadable configuration, missing sections, a non-SNIP background in fast mode,
        a configuration for another channel count; nothing is written.
    InputError
        Unknown channel, empty map, negative counts, spectra of the wrong shape; nothing is written.
    """
    t0 = time.perf_counter()
    path = Path(h5file)
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

    total = sum(int(np.prod(shapes[c][:-1])) for c in chans)
    done_before = 0
    results: dict[str, core_fit.ChannelFit] = {}
    for c in chans:
        results[c] = _fit_channel(path, c, shapes[c], cfgs[c], mode, progress=progress, done_before=done_before,
                                  total=total, weight=weight, refit=refit, deadtime=deadtime, chi2=chi2,
                                  n_workers=n_workers, scheduler=scheduler, block_spectra=block_spectra,
                                  options=options)
        done_before += int(np.prod(shapes[c][:-1]))

    replace = ["fit"] if set(chans) == set(all_channels) else [f"fit/{c}" for c in chans]
    params = {"mode": mode, "config": {c: str(cfg_paths[c]) for c in chans}, "channels": chans, "weight": weight,
              "refit": refit, "deadtime": deadtime, **{k: v for k, v in options.items()}}
    inputs = [str(cfg_paths[c]) for c in chans] + [f"raw/{c}/spectra" for c in chans]
    with store.transaction(path, "fit", replace=replace, params=params, inputs=inputs) as tx:
        for c in chans:
            r = results[c]
            g = tx.group(f"fit/{c}")
            store.write_array(g, "cfg", str(cfg_paths[c]))
            store.write_array(g, "cfg_text", cfgs[c].text)
            store.write_array(g, "ims", r.ims)
            store.write_array(g, "names", r.names)
            store.write_array(g, "stddev", r.stddev)
            store.write_array(g, "chi2", r.chi2)
            sg = g.create_group("sum")
            store.write_array(sg, "int", r.sum.int)
            store.write_array(sg, "bkg", r.sum.bkg)
            store.write_array(sg, "stddev", r.sum.sigma)
            sg.attrs["chisq"] = r.sum.chisq
            sg.attrs["calibration_keV"] = np.asarray(r.sum.calibration)
            g.attrs["mode"] = mode
            g.attrs["deadtime_corrected"] = int(bool(deadtime))
            g.attrs["failed_pixels"] = r.failed
            g.attrs["units"] = "counts (fitted peak areas)"
        if replace == ["fit"]:
            tx.file["fit"].attrs["deadtime_corrected"] = int(bool(deadtime))
        elif "fit" in tx.file:
            tx.file["fit"].attrs["deadtime_corrected"] = int(bool(deadtime))
    summary = {"file": str(path), "mode": mode, "seconds": time.perf_counter() - t0, "channels": {}}
    for c in chans:
        r = results[c]
        finite_chi2 = r.chi2[np.isfinite(r.chi2)]
        summary["channels"][c] = {
            "names": r.names, "shape": list(r.ims.shape), "lines": core_fit.line_stats(r.ims, r.names),
            "failed": r.failed, "invalid": r.invalid, "deadtime_missing": r.deadtime_missing,
            "chi2_median": float(np.median(finite_chi2)) if finite_chi2.size else float("nan"),
            "sum_int": dict(zip(r.names, map(float, r.sum.int))), "warnings": list(r.warnings),
        }
    report(progress, total, total, "fit written")
    return summary


def _fit_channel(path: Path, c: str, shape: tuple[int, ...], cfg: fitconfig.FitConfig, mode: str, *,
                 progress: ProgressCallback | None, done_before: int, total: int, weight: int | None, refit: bool,
                 deadtime: bool, chi2: bool, n_workers: int | None, scheduler: str, block_spectra: int,
                 options: Mapping[str, Any]) -> core_fit.ChannelFit:
    """Fit one channel (reads the file, writes nothing)."""
    grid = shape[:-1]
    nbins = shape[-1]
    npix = int(np.prod(grid))
    where = f"raw/{c}/spectra"
    warnings = list(cfg.warnings)
    with store.open_read(path) as f:
        g = f[f"raw/{c}"]
        icr = np.asarray(g["icr"][()], dtype=np.float64) if "icr" in g else np.ones(grid)
        ocr = np.asarray(g["ocr"][()], dtype=np.float64) if "ocr" in g else np.ones(grid)
        sumspec = np.asarray(g["sumspec"][()], dtype=np.float64) if "sumspec" in g else None
    if sumspec is None or sumspec.shape != (nbins,):
        sumspec = np.zeros(nbins)
        for _, block in store.iter_spectra_blocks(path, c):
            sumspec += np.nansum(np.asarray(block, dtype=np.float64).reshape(-1, nbins), axis=0)
    sumfit = core_fit.fit_sum_spectrum(sumspec, cfg.config, where=f"raw/{c}/sumspec")

    ncols = int(np.prod(grid[1:])) if len(grid) > 1 else max(npix, 1)
    rows_per_block = max(1, block_spectra // max(ncols, 1))
    names: list[str] | None = None
    areas = sigma = chi = None
    failed_mask = np.zeros(npix, dtype=bool)
    invalid = 0
    start = 0
    engine_state: dict[str, Any] = {"group_names": sumfit.names}
    if mode == "precise":
        blocks = [np.asarray(b).reshape(-1, nbins) for _, b in store.iter_spectra_blocks(path, c, rows_per_block)]
        data = np.concatenate(blocks, axis=0)
        invalid = int((~np.isfinite(data).all(axis=1)).sum()) if data.dtype.kind == "f" else 0

        def prog(done: int, n: int) -> None:
            report(progress, done_before + done, total, f"{c}: precise fit")

        res = core_fit.precise_fit_block(data, cfg.text, n_workers=n_workers, scheduler=scheduler,
                                         progress=prog, where=where)
        names, areas, sigma, chi, failed_mask = res.names, res.areas, res.sigma, res.chi2, res.failed
    else:
        for _, block in store.iter_spectra_blocks(path, c, rows_per_block):
            flat = np.asarray(block).reshape(-1, nbins)
            n = flat.shape[0]
            if mode == "fast":
                res = core_fit.fast_fit_block(flat, cfg.config, sumspec, weight=weight, refit=refit,
                                              with_chi2=chi2, where=where)
            else:
                res = _engine_block(flat, cfg.config, sumspec, state=engine_state, nspectra=npix, weight=weight,
                                    **options)
            if names is None:
                names = res.names
                areas = np.empty((len(names), npix))
                sigma = np.empty((len(names), npix))
                chi = np.empty(npix)
            areas[:, start:start + n] = res.areas
            sigma[:, start:start + n] = res.sigma
            chi[start:start + n] = res.chi2
            failed_mask[start:start + n] = res.failed
            invalid += int(res.failed.sum())
            start += n
            report(progress, done_before + start, total, f"{c}: {mode} fit")
    assert names is not None and areas is not None and sigma is not None and chi is not None
    # failed: fits that did not succeed; invalid: spectra with NaN counts (both NaN in the maps)
    failed = int(failed_mask.sum()) - invalid
    if invalid:
        warnings.append(f"{c}: {invalid} spectra hold NaN counts; their results are NaN")
    if failed:
        warnings.append(f"{c}: {failed} pixels could not be fitted; they are NaN")
    if sumfit.names != names:
        warnings.append(f"{c}: sum-spectrum groups {sumfit.names} differ from the map groups {names}")

    ims_grid = grid if grid else (1,)
    ims = areas.reshape((len(names),) + ims_grid)
    std = sigma.reshape((len(names),) + ims_grid)
    chi_map = chi.reshape(ims_grid)
    missing = 0
    if deadtime:
        factor, missing = deadtime_factor(icr.reshape(ims_grid), ocr.reshape(ims_grid))
        ims = ims * factor[None]
        std = std * factor[None]
        sf = core_fit.sum_deadtime_factor(icr, ocr)
        sumfit.int = sumfit.int * sf
        sumfit.bkg = sumfit.bkg * sf
        sumfit.sigma = sumfit.sigma * sf
        if missing:
            warnings.append(f"{c}: {missing} pixels have OCR 0 or no valid ICR/OCR: treated as missing (NaN)")
    return core_fit.ChannelFit(names=names, ims=ims, stddev=std, chi2=chi_map, sum=sumfit, failed=failed,
                               invalid=invalid, deadtime_missing=missing, warnings=warnings)
