"""Normalisation of fitted line intensities: primary beam (I0), acquisition time, error propagation.

Axis order: image stacks are ``(lines, *grid)``; per-point arrays (I0, time, ICR, OCR) are ``grid``.

Where dead time is corrected
----------------------------
Exactly once, in the fit step (:func:`deadtime_factor` applied to every pixel's fitted areas, and to
the sum spectrum by ``sum(ICR)/sum(OCR)``). The fit group records ``deadtime_corrected = 1``;
normalisation never applies it again.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)


def deadtime_factor(icr: np.ndarray, ocr: np.ndarray) -> tuple[np.ndarray, int]:
    """Dead-time correction factor ``ICR / OCR`` per point, never below 1.

    Points whose OCR is 0, negative or not finite (a missing reading) get NaN, and are counted;
    they are not patched with a neighbour's value. Factors below 1 (OCR slightly above ICR from
    rate-meter noise) are set to 1: a dead-time correction never lowers counts.

    Returns
    -------
    factor : ndarray, shape of ``icr``
    n_missing : int
        Number of points with no valid OCR.
    """
    icr = np.asarray(icr, dtype=np.float64)
    ocr = np.asarray(ocr, dtype=np.float64)
    if icr.shape != ocr.shape:
        raise InputError(f"ICR shape {icr.shape} differs from OCR shape {ocr.shape}")
    bad = ~np.isfinite(ocr) | (ocr <= 0) | ~np.isfinite(icr) | (icr < 0)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        factor = np.where(bad, np.nan, icr / np.where(bad, 1.0, ocr))
    factor = np.where(bad, np.nan, np.maximum(factor, 1.0))
    # an all-zero ICR/OCR pair (no rate meter at all) means "no correction", not "missing"
    neither = (icr == 0) & (ocr == 0)
    factor[neither] = 1.0
    n_missing = int(np.count_nonzero(bad & ~neither))
    if n_missing:
        log.warning("%d point(s) have no valid OCR (0 or missing): their dead-time factor is NaN (masked)", n_missing)
    return factor, n_missing


@dataclass
class NormFactors:
    """Per-point scale ``I0norm / I0 [/ t]`` and what it masked.

    Attributes
    ----------
    scale : ndarray, shape grid
        Multiply counts by this; NaN where the point is masked.
    I0norm : float
        The monitor value every point is scaled to.
    sum_scale : float
        Scale for sum-spectrum intensities, defined so that a homogeneous map gives the same value
        as its pixels: ``I0norm / sum(I0) [/ mean(t)]`` over the unmasked points.
    masked : int
        Number of points masked (I0 <= 0 or not finite; time <= 0 with ``tmnorm``).
    """

    scale: np.ndarray
    I0norm: float
    sum_scale: float
    masked: int = 0
    warnings: list[str] = field(default_factory=list)


def norm_factors(I0: np.ndarray, I0norm: float | None = None, acquisition_time: np.ndarray | None = None,
                 tmnorm: bool = False) -> NormFactors:
    """Compute the per-point normalisation.

    Parameters
    ----------
    I0 : ndarray, shape grid
        Primary beam monitor per point (counts).
    I0norm : float, optional
        Target monitor value; default the largest valid I0.
    acquisition_time : ndarray, shape grid, optional
        Required when ``tmnorm``; seconds.
    tmnorm : bool
        Also divide by the acquisition time (intensities per second).
    """
    I0 = np.asarray(I0, dtype=np.float64)
    bad = ~np.isfinite(I0) | (I0 <= 0)
    warnings = []
    if tmnorm:
        if acquisition_time is None:
            raise InputError("tmnorm needs raw/acquisition_time, which this file does not have", dataset="raw/acquisition_time")
        t = np.asarray(acquisition_time, dtype=np.float64)
        if t.shape != I0.shape:
            raise InputError(f"acquisition_time shape {t.shape} differs from I0 shape {I0.shape}", dataset="raw/acquisition_time")
        bad_t = ~np.isfinite(t) | (t <= 0)
        if bad_t.any():
            warnings.append(f"{int(bad_t.sum())} point(s) with acquisition time <= 0 masked")
        bad = bad | bad_t
    if bad.all():
        raise InputError("no point has a valid I0 (all are 0, negative or missing)", dataset="raw/I0")
    if bad.any():
        msg = f"{int(bad.sum())} point(s) with I0 <= 0 or missing are masked (NaN)"
        warnings.append(msg)
        log.warning(msg)
    if I0norm is None:
        I0norm = float(np.max(I0[~bad]))
    if not np.isfinite(I0norm) or I0norm <= 0:
        raise InputError(f"I0norm must be a positive number, got {I0norm}")
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(bad, np.nan, I0norm / np.where(bad, 1.0, I0))
        sum_scale = I0norm / np.sum(I0[~bad])
        if tmnorm:
            scale = scale / np.where(bad, 1.0, t)
            sum_scale /= float(np.mean(t[~bad]))
    return NormFactors(scale=scale, I0norm=float(I0norm), sum_scale=float(sum_scale), masked=int(bad.sum()),
                       warnings=warnings)


def normalise_images(ims: np.ndarray, factors: NormFactors, stddev: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Scale an image stack and its absolute one-sigma errors.

    Parameters
    ----------
    ims : ndarray, shape (lines, *grid)
        Fitted (dead-time corrected) counts.
    stddev : ndarray, shape (lines, *grid), optional
        Absolute one-sigma errors of ``ims`` (from the fit). Without it, counting statistics
        ``sqrt(|ims|)`` are used.

    Returns
    -------
    ims_norm, stddev_norm : ndarray, shape (lines, *grid)
        Both absolute, in normalised counts.
    """
    ims = np.asarray(ims, dtype=np.float64)
    if ims.shape[1:] != factors.scale.shape:
        raise InputError(f"images of grid {ims.shape[1:]} do not match I0 of shape {factors.scale.shape}")
    err = np.sqrt(np.abs(ims)) if stddev is None else np.asarray(stddev, dtype=np.float64)
    if err.shape != ims.shape:
        raise InputError(f"stddev shape {err.shape} differs from ims shape {ims.shape}")
    return ims * factors.scale[None], err * factors.scale[None]


def normalise_sums(sum_int: np.ndarray, sum_bkg: np.ndarray, factors: NormFactors
                   ) -> dict[str, np.ndarray]:
    """Normalised sum-spectrum intensities with their absolute one-sigma errors.

    The net peak error is ``sqrt(int + 2 bkg)`` (peak and background counted, background
    subtracted), the background error ``sqrt(bkg)``, both in counts before scaling.
    """
    sum_int = np.asarray(sum_int, dtype=np.float64)
    sum_bkg = np.asarray(sum_bkg, dtype=np.float64)
    s = factors.sum_scale
    return {
        "int": sum_int * s,
        "bkg": sum_bkg * s,
        "int_stddev": np.sqrt(np.abs(sum_int) + 2 * np.abs(sum_bkg)) * s,
        "bkg_stddev": np.sqrt(np.abs(sum_bkg)) * s,
    }
