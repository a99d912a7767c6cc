"""The sum-spectrum fit done by the engine, and the per-pixel model that agrees with it.

A map's sum spectrum is fitted once (:func:`fit_sum`): the group areas together with the
configuration's free detector parameters (energy zero and gain, noise, Fano; and PyMca's pile-up
coefficient when configured), by the batched Levenberg-Marquardt of :mod:`xrfproc.core.fit_refine`
on one spectrum. On PyMca's ``Steel.spe`` it reproduces PyMca's full fit (``ClassMcaTheory``) of
the same spectrum to a few 1e-4 in milliseconds, where PyMca needs 1-4 s.

The per-pixel fits then use the *same* linear model (:func:`pixel_model`):

- the group shapes at the calibration and resolution the sum fit found (a calibration that is
  off moves every peak of every pixel otherwise);
- a continuum that adds up over the pixels (the *sum rule*: the per-pixel areas add up to the
  areas of the sum-spectrum fit): ``background="sum"`` gives each pixel the shape ``B`` of the
  sum spectrum's SNIP background, scaled by ``b0 + b1 x`` (``x`` from -1 to 1 over the window),
  with ``(b0, b1)`` the weighted least-squares fit of the pixel's counts in the channels where the
  sum spectrum holds (almost) no peak (:class:`Continuum`). The estimate is linear in the counts,
  so the pixels' continua add up to the sum's, and the shape is fixed, so the peaks cannot trade
  counts with it. A SNIP background taken per pixel clips the Poisson noise of spectra with a few
  counts per channel: it sits below the true continuum and the areas come out 2-35 % high on a
  real fly scan (a few thousand counts per spectrum). ``background="snip"`` keeps PyMca's
  per-pixel SNIP (what its fast fit does);
- weights that do not depend on the pixel's own counts (``weights="sum"``:
  ``1 / (ybar_c + eps)`` with ``ybar`` the mean spectrum): a weight taken from the pixel's own
  counts (PyMca's policy 2) correlates with the noise and biases every area low at low counts.

Honest uncertainties for fixed weights (:func:`stddev_scale`): the covariance of a weighted
least-squares estimate with weights ``W`` and Poisson variances ``V = diag(mu_p)`` is
``G^-1 A^T W V W A G^-1`` with ``G = A^T W A``. With ``mu_p ~ ybar * s_p``, ``s_p`` the pixel's
counts in the window over the mean's, the one-sigma uncertainty of pixel ``p`` is
``sqrt(diag(M) * s_p)``, with ``M`` computed once per map.

Axis orders: spectra ``(npix, nbins)``; model columns ``(nchan, ncols)`` over the fit window.
Units: areas in counts, energies in keV, gain in keV/channel, noise in keV FWHM.
"""
from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass, field
from typing import Literal, Sequence

import numpy as np

from ..errors import InputError
from .fit_model import NONLINEAR, EngineModel, group_shapes

log = logging.getLogger(__name__)

__all__ = ["SumResult", "Continuum", "continuum", "fit_sum", "pixel_model", "window_model", "stddev_scale",
           "line_shift_eV", "fwhm_keV", "BACKGROUNDS", "WEIGHTS"]

BACKGROUNDS = ("sum", "snip")
WEIGHTS = ("sum", "config", "none", "pixel")
#: 2.3548^2 * 0.00385 keV (the Fano term of the FWHM^2 of a Si detector)
_K_FANO = 0.00385 * 2.3548 * 2.3548
#: bounds of the nonlinear parameters in a calibration fit (keV, relative, keV, -)
WIDE_DELTA = {"zero": 0.25, "gain": 0.03, "noise": 0.25, "fano": 0.3}


def fwhm_keV(energy_keV: float | np.ndarray, noise: float, fano: float) -> np.ndarray:
    """Detector FWHM (keV) at ``energy_keV``: ``sqrt(noise^2 + 2.3548^2 0.00385 fano E)``."""
    return np.sqrt(noise ** 2 + _K_FANO * fano * np.asarray(energy_keV, dtype=np.float64))


def line_shift_eV(energy_keV: float, theta_from: Sequence[float], theta_to: Sequence[float]) -> float:
    """How far (eV) calibration ``theta_from`` puts a line that ``theta_to`` places at ``energy_keV``.

    The line sits at channel ``(E - zero_to) / gain_to``; ``theta_from`` calls that channel
    ``zero_from + gain_from * channel``. Positive: ``theta_from`` reads the line too high.
    """
    ch = (energy_keV - theta_to[0]) / theta_to[1]
    return 1000.0 * (theta_from[0] + theta_from[1] * ch - energy_keV)


@dataclass
class SumResult:
    """The engine's fit of a sum spectrum.

    Attributes
    ----------
    names : list of str
        Line groups (continuum columns excluded), as the map results name them.
    areas, sigma : ndarray, shape (ngroups,)
        Fitted area parameters (counts) and their 1-sigma uncertainties.
    fitarea : ndarray, shape (ngroups,)
        PyMca's ``fitarea`` (``areas * (1 + ST AreaR)`` with the hypermet short tail, else ``areas``).
    bkg : ndarray, shape (ngroups,)
        PyMca's ``statistics - fitarea``: for each line of the group within +-3 sigma, the counts
        that are not the group's own, weighted by the line's rate (the background under the lines).
    chisq : float
        Reduced chi-square (Poisson variances ``max(y, 1)``).
    theta : ndarray, shape (4,)
        Fitted (zero keV, gain keV/channel, noise keV FWHM, Fano).
    theta_start : ndarray, shape (4,)
        The configuration's values the fit started from.
    at_bound : list of str
        Nonlinear parameters that ended on a bound of their allowed range.
    model : EngineModel
        The linear model at ``theta``.
    continuum : Continuum or None
        The per-pixel continuum model (``background="sum"``).
    yfit, background : ndarray, shape (nchan,)
        Fitted curve and background over the fit window (counts).
    pileup : float
        Fitted pile-up coefficient (0 without pile-up).
    """

    names: list[str]
    areas: np.ndarray
    sigma: np.ndarray
    fitarea: np.ndarray
    bkg: np.ndarray
    chisq: float
    theta: np.ndarray
    theta_start: np.ndarray
    at_bound: list[str]
    model: EngineModel
    yfit: np.ndarray
    background: np.ndarray
    pileup: float = 0.0
    continuum: Continuum | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def calibration(self) -> tuple[float, float]:
        """(zero keV, gain keV/channel)."""
        return float(self.theta[0]), float(self.theta[1])


def _with_theta(model: EngineModel, theta: np.ndarray, **changes: object) -> EngineModel:
    """A copy of ``model`` whose group shapes are evaluated at ``theta``."""
    shapes, _ = group_shapes(model, theta)
    extra = {k: v for k, v in model.extra.items() if k != "_sparse"}
    return dataclasses.replace(model, shapes=np.ascontiguousarray(shapes), theta=np.asarray(theta, float).copy(),
                               extra=extra, **changes)  # type: ignore[arg-type]


@dataclass
class Continuum:
    """The continuum of every pixel: the sum spectrum's background shape, scaled per pixel.

    Attributes
    ----------
    basis : ndarray, shape (nchan, 2)
        ``B(c)`` and ``B(c) x(c)`` over the fit window (``B``: the sum spectrum's SNIP background,
        counts; ``x`` from -1 to 1).
    channels : ndarray of int
        Window channels (0 = first of the window) where the sum spectrum holds no peak to speak of.
    estimator : ndarray, shape (2, nchannels)
        Weighted least squares ``(D^T W D)^-1 D^T W`` on those channels (``W = 1 / B``): the
        coefficients of a spectrum are ``estimator @ y[channels]``.
    coefficients : ndarray, shape (2,)
        Those of the sum spectrum itself (close to (1, 0)).
    total : float
        Counts of the sum spectrum in ``channels``.

    Each pixel's coefficients are the estimate less ``(coefficients - (1, 0))`` times its share of
    the counts in ``channels``: still linear in its counts, and the pixels' continua add up to
    ``B`` exactly, the background of the sum fit (PyMca's full-fit semantics).
    """

    basis: np.ndarray
    channels: np.ndarray
    estimator: np.ndarray
    coefficients: np.ndarray
    total: float

    def of(self, window_counts: np.ndarray) -> np.ndarray:
        """Continuum ``(npix, nchan)`` of spectra given over the window ``(npix, nchan)``."""
        y = np.asarray(window_counts)[:, self.channels].astype(np.float64, copy=False)
        b = y @ self.estimator.T
        share = y.sum(axis=1) / self.total if self.total > 0 else np.zeros(y.shape[0])
        b -= share[:, None] * (self.coefficients - np.array([1.0, 0.0]))[None, :]
        return b @ self.basis.T

    @property
    def curve(self) -> np.ndarray:
        """The sum spectrum's continuum (nchan,): the background of the sum fit."""
        return self.basis[:, 0].copy()


def continuum(background: np.ndarray, peaks: np.ndarray, ysum_window: np.ndarray, *,
              share: float = 0.05) -> Continuum:
    """The per-pixel continuum model from the sum spectrum's background and peak model.

    Parameters
    ----------
    background, peaks : ndarray, shape (nchan,)
        The sum fit's background (SNIP) and fitted peaks over the window.
    ysum_window : ndarray, shape (nchan,)
        The sum spectrum over the window.
    share : float
        Channels whose peaks are below ``share`` of the background count as peak-free (at least
        a tenth of the window is kept: the channels with the smallest peak share).

    Channels the sum fit does not explain (a residual beyond 2 Poisson sigma and 2 %: peaks of
    elements the configuration leaves out, scatter shapes) are not used: the continuum must not
    take them up.
    """
    B = np.clip(np.asarray(background, dtype=np.float64), 0.0, None)
    P = np.clip(np.asarray(peaks, dtype=np.float64), 0.0, None)
    ys = np.asarray(ysum_window, dtype=np.float64)
    n = B.size
    x = np.linspace(-1.0, 1.0, n)
    basis = np.column_stack([B, B * x])
    ratio = np.where(B > 0, P / np.where(B > 0, B, 1.0), np.inf)
    misfit = np.abs(ys - B - P) > 2.0 * np.sqrt(np.maximum(ys, 1.0)) + 0.02 * ys
    ratio[misfit] = np.inf
    free = np.nonzero(ratio <= share)[0]
    if free.size < max(8, n // 10):
        free = np.argsort(ratio)[:max(8, n // 10)]
        free = np.sort(free[np.isfinite(ratio[free])])
    D = basis[free]
    w = 1.0 / np.maximum(B[free], 1e-12)
    G = D.T @ (D * w[:, None])
    try:
        est = np.linalg.solve(G, (D * w[:, None]).T)
    except np.linalg.LinAlgError:  # a flat basis: the scale alone
        est = np.zeros((2, free.size))
        est[0] = 1.0 / max(float(B[free].sum()), 1e-12)
    coef = est @ ys[free]
    return Continuum(basis=basis, channels=free, estimator=est, coefficients=coef, total=float(ys[free].sum()))


def _sum_weights(model: EngineModel, ysum: np.ndarray, npix: int) -> EngineModel:
    """Weights ``1 / (ybar + eps)`` from the mean spectrum (engine policy 1 with ``sigma_avg``)."""
    ybar = np.asarray(ysum, dtype=np.float64)[model.i0:model.i1] / max(int(npix), 1)
    eps = 0.01 * float(ybar.mean()) if ybar.size and ybar.mean() > 0 else 1.0
    return dataclasses.replace(model, weight_policy=1, sigma_avg=np.sqrt(np.clip(ybar, 0, None) + eps))


def pixel_model(model: EngineModel, ysum: np.ndarray, npix: int, *, theta: np.ndarray | None = None,
                weights: str = "sum") -> EngineModel:
    """The linear model every pixel of a map is fitted with (see the module docstring).

    Parameters
    ----------
    model : EngineModel
        From :func:`xrfproc.core.fit_model.build_model` (the configuration's calibration).
    ysum : ndarray, shape (nbins,)
        Sum spectrum of the map (counts).
    npix : int
        Number of spectra summed in ``ysum``.
    theta : ndarray, shape (4,), optional
        Calibration and resolution of the shapes (default the model's).
    weights : {"sum", "config", "none", "pixel"}
        ``"sum"``: fixed weights from the mean spectrum; ``"config"``: as the model has them;
        ``"none"``: unweighted; ``"pixel"``: each pixel's own counts (PyMca's policy 2).
    """
    if weights not in WEIGHTS:
        raise InputError(f"weights {weights!r} must be one of {', '.join(WEIGHTS)}")
    m = model if theta is None else _with_theta(model, np.asarray(theta, dtype=np.float64))
    if weights == "sum":
        m = _sum_weights(m, ysum, npix)
    elif weights == "none":
        m = dataclasses.replace(m, weight_policy=0, sigma_avg=None)
    elif weights == "pixel":
        m = dataclasses.replace(m, weight_policy=2, sigma_avg=None)
    return m


def window_model(model: EngineModel) -> EngineModel:
    """``model`` for spectra given over its window only, with the continuum already subtracted
    (no SNIP, channels ``[0, nchan)``)."""
    extra = {k: v for k, v in model.extra.items() if k != "_sparse"}
    return dataclasses.replace(model, i0=0, i1=model.nchan, nbins=model.nchan, snip=False,
                               anchors=np.asarray([0, model.nchan - 1], dtype=np.int64), extra=extra)


def stddev_scale(model: EngineModel, ysum: np.ndarray, npix: int) -> np.ndarray:
    """``diag(M)`` of the module docstring: per-column variance for a pixel with the mean counts.

    Valid for fixed weights (policies 0 and 1); multiply by the pixel's counts in the window over
    the mean spectrum's and take the square root for the pixel's one-sigma uncertainty.

    Returns
    -------
    ndarray, shape (ncols,)
        Variances (counts^2); NaN when the normal equations are singular.
    """
    A = model.shapes
    ybar = np.clip(np.asarray(ysum, dtype=np.float64)[model.i0:model.i1] / max(int(npix), 1), 0, None)
    if model.weight_policy == 1 and model.sigma_avg is not None:
        w = 1.0 / model.sigma_avg ** 2
    else:
        w = np.ones(model.nchan)
    Aw = A * w[:, None]
    G = A.T @ Aw
    try:
        Gi = np.linalg.inv(G)
    except np.linalg.LinAlgError:
        return np.full(A.shape[1], np.nan)
    H = Aw.T @ (Aw * ybar[:, None])
    return np.clip(np.einsum("ij,jk,ki->i", Gi, H, Gi), 0, None)


def _statistics(model: EngineModel, theta: np.ndarray, y: np.ndarray, areas: np.ndarray,
                yfit: np.ndarray) -> np.ndarray:
    """PyMca's ``statistics - fitarea`` per group (see :class:`SumResult`)."""
    zero, gain, noise, fano = (float(t) for t in theta)
    energy = zero + gain * model.channels()
    yw = y[model.i0:model.i1]
    ng = model.ncols - model.nbkg
    out = np.zeros(ng)
    stat_ratio = np.asarray(model.extra.get("line_stat_ratio", np.zeros(0)), dtype=np.float64)
    for g in range(ng):
        col = model.nbkg + g
        contrib = model.shapes[:, col] * areas[col]
        rows = np.nonzero(model.line_group == col)[0]
        index: set[int] = set()
        stat = 0.0
        for k in rows:
            e = model.line_energy[k]
            ratio = float(stat_ratio[k]) if model.line_escape[k] and stat_ratio.size == model.line_rate.size \
                else float(model.line_rate[k])
            sig = float(fwhm_keV(e, noise, fano)) / 2.3548
            idx = np.nonzero((energy > e - 3 * sig) & (energy < e + 3 * sig))[0]
            if not model.line_escape[k]:  # PyMca's area window: the group's own lines, not their escapes
                index.update(int(i) for i in idx)
            if idx.size and areas[col] > 0:
                stat += ratio * abs(float(yw[idx].sum()) - float(contrib[idx].sum()))
        ix = np.array(sorted(index), dtype=np.int64)
        pmca = float((yw[ix] - (yfit[ix] - contrib[ix])).sum()) if ix.size else 0.0
        out[g] = max(pmca, areas[col]) + stat - areas[col]
    return out


def fit_sum(model: EngineModel, ysum: np.ndarray, npix: int = 1, *, background: Literal["sum", "snip"] = "snip",
            free: Sequence[str] | None = None, delta: dict[str, float] | None = None,
            max_iter: int = 60, where: str = "sumspec") -> SumResult:
    """Fit a sum spectrum with the engine: areas and the free detector parameters.

    Parameters
    ----------
    model : EngineModel
        From :func:`xrfproc.core.fit_model.build_model`.
    ysum : ndarray, shape (nbins,)
        Sum spectrum (counts).
    npix : int
        Spectra summed.
    background : {"snip", "sum"}
        ``"snip"``: the spectrum's SNIP background, fixed (PyMca's full fit); ``"sum"``: the same
        fit, plus the continuum model the pixels are given (:func:`continuum`, in
        ``result.continuum``), whose pixel continua add up to this background.
    free : sequence of {"zero", "gain", "noise", "fano"}, optional
        Parameters to fit (default: those the configuration leaves free).
    delta : dict, optional
        Allowed excursion per parameter (keV; gain: keV/channel; default the configuration's).
    max_iter : int
        Levenberg-Marquardt evaluations.

    Raises
    ------
    InputError
        A spectrum that is not 1-D, holds NaN or negative counts, or no counts in the window.
    """
    from .fit_engine import fit_block

    y = np.asarray(ysum, dtype=np.float64).ravel()
    if y.size != model.nbins:
        raise InputError(f"the sum spectrum has {y.size} channels, the model {model.nbins}", dataset=where)
    if not np.isfinite(y).all() or (y.size and y.min() < 0):
        raise InputError("the sum spectrum holds NaN, infinite or negative counts", dataset=where)
    if y[model.i0:model.i1].sum() <= 0:
        raise InputError("the sum spectrum has no counts in the fit window: an empty map cannot be fitted",
                         dataset=where)
    fixed = model.theta_fixed.copy()
    dl = model.theta_delta.copy()
    if free is not None:
        fixed = np.array([k not in free for k in NONLINEAR])
    if delta:
        for k, v in delta.items():
            dl[NONLINEAR.index(k)] = abs(float(v))
    m = dataclasses.replace(model, theta_fixed=fixed, theta_delta=dl)
    res = fit_block(m, y[None], refine=True, with_background=True, max_iter=max_iter)
    bkg = res.background[0]
    cont = None
    if background == "sum" and m.snip and not (res.failed is not None and bool(res.failed[0])):
        at0 = _with_theta(m, np.asarray(res.theta[0], dtype=np.float64))
        cont = continuum(bkg, at0.shapes @ res.areas[0], y[m.i0:m.i1])
    if res.failed is not None and bool(res.failed[0]):
        raise InputError("the engine could not fit the sum spectrum (singular normal equations); check the "
                         "peaks and the fit window of the configuration", dataset=where)
    theta = np.asarray(res.theta[0], dtype=np.float64)
    at = _with_theta(m, theta)
    areas = np.asarray(res.areas[0], dtype=np.float64)
    peaks = at.shapes @ areas
    pile = float(res.pileup[0]) if res.pileup is not None else 0.0
    if pile and at.extra.get("pileup") is not None:
        from .fit_refine import pileup
        peaks = peaks + pile * pileup(peaks, at.i0, float(theta[0]), float(theta[1]))
    yfit = peaks + bkg
    nb = at.nbkg
    short_tail = 1.0 + (at.tails[0] if at.hypermet & 2 else 0.0)
    lo, hi = model.theta - dl, model.theta + dl
    at_bound = [k for i, k in enumerate(NONLINEAR)
                if not fixed[i] and dl[i] > 0 and (theta[i] <= lo[i] + 1e-9 * abs(lo[i]) or theta[i] >= hi[i] - 1e-9 * abs(hi[i]))]
    names = list(at.names[nb:])
    stats = _statistics(at, theta, y, areas, yfit)
    out = SumResult(names=names, areas=areas[nb:], sigma=np.asarray(res.stddev[0], float)[nb:],
                    fitarea=areas[nb:] * short_tail, bkg=stats, chisq=float(res.chi2_red[0]), theta=theta,
                    theta_start=model.theta.copy(), at_bound=at_bound, model=at, yfit=yfit,
                    background=np.asarray(bkg, dtype=np.float64), pileup=pile, continuum=cont)
    if at_bound:
        out.warnings.append(f"{where}: the sum-spectrum fit ended on the bound of {', '.join(at_bound)} "
                            f"(start {_fmt_theta(model.theta)}, end {_fmt_theta(theta)}): the configuration's "
                            "calibration or resolution is far from the spectrum's; run calibrate()")
    return out


def _fmt_theta(theta: np.ndarray) -> str:
    return (f"zero {theta[0] * 1000:.1f} eV, gain {theta[1] * 1000:.4f} eV/ch, noise {theta[2] * 1000:.0f} eV, "
            f"Fano {theta[3]:.3f}")


def strongest_line(result: SumResult) -> tuple[str, float]:
    """The strongest fluorescence line (not scatter) of a sum fit: (group name, energy keV)."""
    m = result.model
    best, name, energy = -1.0, "", math.nan
    for g, n in enumerate(result.names):
        if n in ("Rayl", "Compt") or n.startswith(("Scatter", "Compton", "Rayleigh")):
            continue
        col = m.nbkg + g
        rows = np.nonzero(m.line_group == col)[0]
        if not rows.size:
            continue
        k = rows[np.argmax(m.line_rate[rows])]
        a = float(result.areas[g]) * float(m.line_rate[k])
        if a > best:
            best, name, energy = a, n, float(m.line_energy[k])
    return name, energy
