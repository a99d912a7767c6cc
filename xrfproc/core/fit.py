"""Fitting XRF spectra with PyMca: fast linear fits of maps, precise per-pixel fits, the sum spectrum.

Plain functions over numpy arrays; the HDF5 side is in :mod:`xrfproc.steps.fit`.

Conventions
-----------
- Spectra blocks are ``(nspectra, nbins)`` arrays of counts; results per block are
  ``(nlines, nspectra)``.
- Line names are PyMca's group names (``"Fe K"``, ``"Pb L"``) with the scatter groups renamed
  ``Rayl`` and ``Compt`` (:func:`xrfproc.core.pymca_bridge.rename_group`).
- Map areas (``ims``) are the fitted area *parameters* of the linear model in every mode (what
  PyMca's fast fit returns); the sum-spectrum areas (``sum/int``) are PyMca's ``fitarea``. Both are
  the same number unless the configuration switches on the hypermet short tail, in which case
  ``fitarea = parameter * (1 + ST AreaR)``.
- ``sum/bkg`` is PyMca's ``statistics`` minus ``fitarea``: the counts that are not the group's peaks
  within +-3 sigma of each of its lines, i.e. the background under the lines.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from ..errors import InputError
from . import pymca_bridge

log = logging.getLogger(__name__)


@dataclass
class BlockResult:
    """Fit results for a block of spectra.

    Attributes
    ----------
    names : list of str
        Line names (scatter renamed ``Rayl``/``Compt``).
    areas, sigma : ndarray, shape (nlines, nspectra)
        Fitted areas (counts) and 1-sigma uncertainties; NaN for failed or invalid spectra.
    chi2 : ndarray, shape (nspectra,)
        Reduced chi-square per spectrum (NaN where not available).
    failed : ndarray of bool, shape (nspectra,)
        Spectra whose fit failed (precise mode) or that held NaN counts.
    """

    names: list[str]
    areas: np.ndarray
    sigma: np.ndarray
    chi2: np.ndarray
    failed: np.ndarray


@dataclass
class SumFit:
    """The full fit of a sum spectrum.

    Attributes
    ----------
    names : list of str
        Line names as in :class:`BlockResult`.
    int, bkg, sigma : ndarray, shape (nlines,)
        PyMca's ``fitarea``, the background under each group's lines (``statistics - fitarea``)
        and the 1-sigma uncertainty of ``int`` (counts).
    chisq : float
        PyMca's reduced chi-square of the fit.
    calibration : tuple of float
        Fitted energy zero (keV) and gain (keV/channel).
    """

    names: list[str]
    int: np.ndarray
    bkg: np.ndarray
    sigma: np.ndarray
    chisq: float
    calibration: tuple[float, float]


# --------------------------------------------------------------------------- input checks
def check_spectra(block: np.ndarray, where: str = "spectra", *, native: bool = False,
                  net: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Return the block as float64 with NaN spectra zeroed, and the mask of those spectra.

    Parameters
    ----------
    block : ndarray, shape (nspectra, nbins)
        Counts.
    where : str
        Dataset named in error messages.
    native : bool
        Keep integer, float32 and float64 blocks in their own dtype (no copy when nothing has to
        be zeroed): the fit engine reads them directly, and converting a block of 2048-channel
        int32 spectra to float64 costs as much as fitting it.
    net : bool
        Counts less a continuum: negative values are expected.

    Raises
    ------
    InputError
        For negative counts (counts cannot be negative; dead-time corrected or background
        subtracted data are not raw spectra) or a block that is not 2-D.
    """
    arr = np.asarray(block)
    if arr.ndim != 2:
        raise InputError(f"expected spectra of shape (nspectra, nbins), got {arr.shape}", dataset=where)
    keep = native and (arr.dtype.kind in "ui" or arr.dtype in (np.float32, np.float64))
    if not keep:
        arr = arr.astype(np.float64, copy=True)
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr).all(axis=1)
        if bad.any():
            arr = arr.copy() if keep else arr
            arr[bad] = 0.0
    else:
        bad = np.zeros(arr.shape[0], dtype=bool)
    if not net and arr.size and arr.dtype.kind != "u" and arr.min() < 0:
        rows = np.nonzero((arr < 0).any(axis=1))[0]
        raise InputError(f"negative counts in {rows.size} spectra (first at flat index {rows[0]}); raw spectra "
                         "must be counts >= 0", dataset=where)
    return arr, bad


def sum_deadtime_factor(icr: np.ndarray, ocr: np.ndarray) -> float:
    """``sum(icr) / sum(ocr)`` over the pixels with valid rates (1.0 when none), never below 1.

    The per-pixel factor is :func:`xrfproc.core.normalise.deadtime_factor` (missing OCR -> NaN).
    """
    icr = np.asarray(icr, dtype=np.float64)
    ocr = np.asarray(ocr, dtype=np.float64)
    ok = np.isfinite(icr) & np.isfinite(ocr) & (ocr > 0) & (icr > 0)
    return max(1.0, float(icr[ok].sum() / ocr[ok].sum())) if ok.any() else 1.0


# --------------------------------------------------------------------------- sum spectrum
def fit_sum_spectrum(sumspec: np.ndarray, config: Mapping[str, Any], where: str = "sumspec") -> SumFit:
    """Full PyMca fit of a sum spectrum: fitted areas and the background under each line group.

    Raises
    ------
    InputError
        When the spectrum has no counts, or PyMca cannot fit it (the message names PyMca's reason).
    """
    y = np.asarray(sumspec, dtype=np.float64)
    if y.ndim != 1:
        raise InputError(f"the sum spectrum must be 1-D, got shape {y.shape}", dataset=where)
    if not np.isfinite(y).all():
        raise InputError("the sum spectrum holds NaN or infinite counts", dataset=where)
    if y.sum() <= 0:
        raise InputError("the sum spectrum has no counts: an empty map cannot be fitted", dataset=where)
    try:
        res = pymca_bridge.full_fit(y, config)
    except Exception as exc:  # PyMca raises LinAlgError, ValueError, ZeroDivisionError...
        raise InputError(f"PyMca could not fit the sum spectrum ({type(exc).__name__}: {exc}); check the "
                         "peaks and the fit window of the configuration", dataset=where) from None
    stats = res.statistics if res.statistics is not None else np.full(len(res.names), np.nan)
    return SumFit(names=[pymca_bridge.rename_group(n) for n in res.names], int=res.fitarea,
                  bkg=stats - res.fitarea, sigma=res.sigmaarea, chisq=res.chisq, calibration=res.calibration)


# --------------------------------------------------------------------------- fast
def fast_fit_block(spectra: np.ndarray, config: Mapping[str, Any], ysum: np.ndarray, *, weight: int | None = None,
                   refit: bool = True, with_chi2: bool = True, where: str = "spectra",
                   background: np.ndarray | None = None) -> BlockResult:
    """PyMca's fast linear fit (``FastXRFLinearFit``) of a block of spectra.

    Parameters
    ----------
    spectra : ndarray, shape (nspectra, nbins)
        Counts; spectra with NaN are fitted as zeros and reported NaN and ``failed``.
    config : mapping
        PyMca configuration with a SNIP background (see :func:`xrfproc.core.fitconfig.check_config`).
    ysum : ndarray, shape (nbins,)
        The sum spectrum of the whole map: PyMca builds the linear model (and the average weights
        with ``weight=1``) from it, so every block of one map uses the same model.
    weight, refit
        PyMca's options (see :func:`xrfproc.core.pymca_bridge.fast_fit`). Note that PyMca decides per
        call whether a refit of spectra with negative areas is worth it (0.25 % of the spectra), so a
        map fitted in blocks can differ from one fitted in one call for those few spectra.
    background : ndarray, shape (nspectra, nbins), optional
        A background subtracted before PyMca fits (the configuration must then not strip one);
        ``ysum`` must be the sum spectrum less the summed background. The chi-square keeps the raw
        counts' Poisson variances.
    """
    data, bad = check_spectra(spectra, where)
    variance = None
    if background is not None:
        variance = data
        data = data - background
    res = pymca_bridge.fast_fit(data, config, ysum, weight=weight, refit=refit, with_chi2=with_chi2,
                                variance=variance)
    areas, sigma = res.areas, res.sigma
    chi2 = res.chi2 if res.chi2 is not None else np.full(data.shape[0], np.nan)
    if bad.any():
        areas[:, bad] = np.nan
        sigma[:, bad] = np.nan
        chi2[bad] = np.nan
    return BlockResult([pymca_bridge.rename_group(n) for n in res.names], areas, sigma, chi2, bad)


# --------------------------------------------------------------------------- precise
def _precise_chunk(config_text: str, spectra: np.ndarray, background: np.ndarray | None = None,
                   variance: np.ndarray | None = None) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray,
                                                                np.ndarray, list[str]]:
    """Fit each spectrum of a chunk with a full PyMca fit (runs in a worker process).

    With ``background`` (nspectra, nbins) it is subtracted first and ``variance`` (same shape)
    gives PyMca's uncertainties (``sigmay = sqrt(variance)``) instead of the counts' own.
    Returns names, areas (nlines, n), sigma, chi2 (n,), failed (n,), and failure messages.
    """
    fitter = pymca_bridge.SpectrumFitter(pymca_bridge.config_from_text(config_text))
    spectra = np.asarray(spectra, dtype=np.float64)
    empty = ~(spectra.sum(axis=1) > 0)  # no counts: nothing to fit, areas 0
    if background is not None:
        spectra = spectra - background
    names = list(fitter.names)
    n = spectra.shape[0]
    areas = np.zeros((len(names), n))
    sigma = np.zeros((len(names), n))
    chi2 = np.full(n, np.nan)
    failed = np.zeros(n, dtype=bool)
    messages: list[str] = []
    for i in range(n):
        y = spectra[i]
        if not np.isfinite(y).all():
            areas[:, i] = sigma[:, i] = np.nan
            failed[i] = True
            continue
        if empty[i]:
            continue
        try:
            sig = None if variance is None else np.sqrt(np.maximum(variance[i], 1.0))
            r = fitter.fit(y, sigmay=sig)
            if r.names != names or not (np.isfinite(r.parameters).all() and np.isfinite(r.sigmaarea).all()):
                raise FloatingPointError("non-finite fit result")
            areas[:, i] = r.parameters
            sigma[:, i] = r.sigmaarea
            chi2[i] = r.chisq
        except Exception as exc:  # a failed pixel is recorded, never silently 0
            areas[:, i] = sigma[:, i] = np.nan
            failed[i] = True
            if len(messages) < 5:
                messages.append(f"{type(exc).__name__}: {exc}")
    return names, areas, sigma, chi2, failed, messages


def precise_fit_block(spectra: np.ndarray, config_text: str, *, n_workers: int | None = None,
                      scheduler: str = "processes", chunk_size: int | None = None,
                      progress: Callable[[int, int], None] | None = None, where: str = "spectra",
                      background: np.ndarray | None = None, variance: np.ndarray | None = None) -> BlockResult:
    """Full nonlinear PyMca fit (``ClassMcaTheory``) of every spectrum, spread over cores with Dask.

    Parameters
    ----------
    spectra : ndarray, shape (nspectra, nbins)
        Counts. Spectra with no counts are skipped (areas 0, chi2 NaN); spectra with NaN and
        spectra whose fit fails get NaN areas and are flagged in ``failed``.
    config_text : str
        The ``.cfg`` text (each worker builds its own PyMca fitter from it).
    n_workers : int, optional
        Worker processes (default: all cores).
    scheduler : {"processes", "threads", "sync"}
        Dask scheduler; ``"sync"`` runs in this process (tests, debugging).
    chunk_size : int, optional
        Spectra per task (default: about 4 tasks per worker, at most 256 spectra).
    progress : callable(done, total), optional
        Called as chunks complete (spectra done, spectra total).
    """
    arr = np.asarray(spectra)
    if arr.ndim != 2:
        raise InputError(f"expected spectra of shape (nspectra, nbins), got {arr.shape}", dataset=where)
    data = arr
    if data.size and np.nanmin(data) < 0:
        raise InputError("negative counts in the spectra; raw spectra must be counts >= 0", dataset=where)
    n = data.shape[0]
    workers = max(1, int(n_workers or os.cpu_count() or 1))
    if chunk_size is None:
        chunk_size = int(min(256, max(1, np.ceil(n / (4 * workers)))))
    bounds = [(s, min(n, s + chunk_size)) for s in range(0, n, chunk_size)]
    outputs: list[Any] = []
    def part(a: np.ndarray | None, s: int, e: int) -> np.ndarray | None:
        return None if a is None else a[s:e]

    if scheduler == "sync" or workers == 1 or len(bounds) == 1:
        done = 0
        for s, e in bounds:
            outputs.append(_precise_chunk(config_text, data[s:e], part(background, s, e), part(variance, s, e)))
            done += e - s
            if progress is not None:
                progress(done, n)
    else:
        import dask
        from dask import delayed

        from ..scheduler import start_method

        tasks = [delayed(_precise_chunk)(config_text, data[s:e], part(background, s, e), part(variance, s, e))
                 for s, e in bounds]
        # compute in waves so that progress can be reported
        wave = max(1, workers * 2)
        done = 0
        for start in range(0, len(tasks), wave):
            part = tasks[start:start + wave]
            with dask.config.set({"multiprocessing.context": start_method()}):
                outputs.extend(dask.compute(*part, scheduler=scheduler, num_workers=workers))
            done = bounds[min(start + wave, len(bounds)) - 1][1]
            if progress is not None:
                progress(done, n)
    names = outputs[0][0]
    areas = np.concatenate([o[1] for o in outputs], axis=1)
    sigma = np.concatenate([o[2] for o in outputs], axis=1)
    chi2 = np.concatenate([o[3] for o in outputs])
    failed = np.concatenate([o[4] for o in outputs])
    messages = [m for o in outputs for m in o[5]]
    if failed.any():
        log.warning("%s: %d of %d spectra could not be fitted and are NaN (%s)", where, int(failed.sum()), n,
                    "; ".join(messages[:3]) or "NaN counts")
    return BlockResult([pymca_bridge.rename_group(x) for x in names], areas, sigma, chi2, failed)


def line_stats(ims: np.ndarray, names: Sequence[str]) -> dict[str, dict[str, float]]:
    """Min, median and max per line of an image stack ``(nlines, *grid)``, ignoring NaN."""
    out: dict[str, dict[str, float]] = {}
    flat = np.asarray(ims, dtype=np.float64).reshape(len(names), -1)
    for name, row in zip(names, flat):
        good = row[np.isfinite(row)]
        if good.size:
            out[name] = {"min": float(good.min()), "median": float(np.median(good)), "max": float(good.max())}
        else:
            out[name] = {"min": float("nan"), "median": float("nan"), "max": float("nan")}
    return out


@dataclass
class ChannelFit:
    """Everything the fit step writes for one detector channel (maps shaped ``(nlines, *grid)``)."""

    names: list[str]
    ims: np.ndarray
    stddev: np.ndarray
    chi2: np.ndarray
    sum: SumFit
    failed: int = 0
    invalid: int = 0
    deadtime_missing: int = 0
    warnings: list[str] = field(default_factory=list)
