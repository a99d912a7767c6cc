"""xrfproc's own fit engine: PyMca's fast-fit model, solved for blocks of thousands of pixels at once.

For one map, :func:`build_model` (from :mod:`xrfproc.core.fit_model`) asks PyMca once for the
model of its fast fit (unit-area shape of every line group over the fit window, at the
calibration and FWHM of the configuration). Then :func:`fit_block`, for a block of spectra:

1. SNIP background of every spectrum over the window (numba, parallel, PyMca's semantics:
   Savitzky-Golay pre-smoothing, width, anchors) - :mod:`xrfproc.core.snip`;
2. normal equations for the whole block by BLAS: ``B = (W * (y - bkg)) @ A`` and the Gram
   matrices ``G = A^T W A`` - one for all pixels (weight policies 0 and 1) or one per pixel
   (policy 2, Poisson weights, as ``W @ K`` with ``K[c, (i, j)] = A[c, i] A[c, j]`` over the
   column pairs that overlap: a single matrix product);
3. batched non-negative least squares (Lawson-Hanson, numba, parallel over pixels) -
   :mod:`xrfproc.core.nnls`; stddev from the inverse Gram matrix on the final passive set;
4. reduced chi-square per pixel with Poisson variances ``max(y, 1)`` of the raw counts.

With ``refine=True`` the nonlinear parameters vary per pixel (:mod:`xrfproc.core.fit_refine`).

Axis orders: spectra ``(npix, nbins)``; areas/stddev ``(npix, ncols)`` in ``model.names`` order.
Units: areas in counts (the integral of the group over all its lines, escape peaks included, as
PyMca's fast fit reports it); ``chi2_red`` dimensionless.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numba
import numpy as np

from xrfproc.core.fit_model import EngineModel, build_model, group_shapes
from xrfproc.core.nnls import nnls_gram
from xrfproc.core.snip import snip_block_kernel
from xrfproc.errors import InputError

__all__ = ["EngineModel", "EngineResult", "build_model", "fit_block", "fit_map", "group_shapes"]

log = logging.getLogger(__name__)
_HALF64 = np.full(1, 0.5)  # SNIP in float64 (PyMca's precision)
#: spectra dtypes the kernels read directly (others are converted to float64)
_NATIVE = tuple(np.dtype(t) for t in (np.float64, np.float32, np.uint16, np.int32, np.uint32, np.int64))


@dataclass
class EngineResult:
    """Result of :func:`fit_block`.

    Attributes
    ----------
    names : list of str
        Column names (``model.names``).
    areas : ndarray, shape (npix, ncols), float64
        Fitted areas (counts); >= 0 for the peak columns. NaN where the fit failed.
    stddev : ndarray, shape (npix, ncols), float64
        1-sigma uncertainty of each area from the inverse Gram matrix on the pixel's final set of
        free columns (weights as the policy says; 0 for areas held at 0).
    chi2_red : ndarray, shape (npix,), float64
        Reduced chi-square over the window, Poisson variances ``max(y, 1)``.
    background : ndarray, shape (npix, nchan) or None
        SNIP background over the window (counts), when requested.
    theta : ndarray, shape (npix, 4) or None
        Per-pixel (zero, gain, noise, fano) when refined.
    failed : ndarray of bool, shape (npix,)
        Pixels whose fit failed (areas NaN).
    """

    names: list[str]
    areas: np.ndarray
    stddev: np.ndarray
    chi2_red: np.ndarray
    background: np.ndarray | None = None
    theta: np.ndarray | None = None
    failed: np.ndarray | None = None


# ----------------------------------------------------------------------------- numba helpers
@numba.njit(cache=True, parallel=True)
def _count_bad(spectra, i0, i1):
    """(non-finite, negative) counts inside the window."""
    npix = spectra.shape[0]
    bad = np.zeros(npix, dtype=np.int64)
    neg = np.zeros(npix, dtype=np.int64)
    for k in numba.prange(npix):
        for c in range(i0, i1):
            v = spectra[k, c]
            if not np.isfinite(v):
                bad[k] += 1
            elif v < 0:
                neg[k] += 1
    return bad.sum(), neg.sum()


@numba.njit(cache=True, parallel=True)
def _poisson_weights(ysub, wt):
    """PyMca's per-spectrum weights: sigma = sqrt|y - bkg| (1 where 0); wt = 1 / sigma^2."""
    npix, n = ysub.shape
    for k in numba.prange(npix):
        for c in range(n):
            a = abs(ysub[k, c])
            wt[k, c] = 1.0 / a if a > 0.0 else 1.0


@numba.njit(cache=True, parallel=True)
def _chi2(spectra, i0, ysub, fitted, dof, out):
    """sum_c (ysub - fitted)^2 / max(y, 1) / dof per pixel."""
    npix, n = ysub.shape
    for k in numba.prange(npix):
        s = 0.0
        for c in range(n):
            r = ysub[k, c] - fitted[k, c]
            y = spectra[k, i0 + c]
            s += r * r / (y if y > 1.0 else 1.0)
        out[k] = s / dof[k] if dof[k] > 0 else np.nan


def _pair_matrix(A: np.ndarray, rtol: float = 1e-15) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """K[c, p] = A[c, i_p] A[c, j_p] for the column pairs i_p <= j_p that overlap.

    Pairs whose overlap ``sum_c |A_ci A_cj|`` is below ``rtol * |A_i| |A_j|`` (far-apart peaks
    touching only through Gaussian tails of 1e-100) are left out: their Gram entries are 0 to
    rounding for any non-negative weights up to ``1 / rtol`` times the typical one.
    """
    n = A.shape[1]
    absA = np.abs(A)
    norms = np.sqrt((A * A).sum(axis=0))
    ii, jj = [], []
    for i in range(n):
        for j in range(i, n):
            if i == j or float(absA[:, i] @ absA[:, j]) > rtol * norms[i] * norms[j]:
                ii.append(i)
                jj.append(j)
    ii = np.asarray(ii, dtype=np.int64)
    jj = np.asarray(jj, dtype=np.int64)
    return np.ascontiguousarray(A[:, ii] * A[:, jj]), ii, jj


def _check_block(model: EngineModel, spectra: np.ndarray) -> np.ndarray:
    spectra = np.asarray(spectra)
    if spectra.ndim == 1:
        spectra = spectra[None, :]
    if spectra.ndim != 2:
        raise InputError(f"spectra must be a 2-D array (npixels, nbins), got shape {spectra.shape}")
    if spectra.shape[1] != model.nbins:
        raise InputError(f"spectra have {spectra.shape[1]} channels but the model was built for {model.nbins}")
    if not np.issubdtype(spectra.dtype, np.number) or np.issubdtype(spectra.dtype, np.complexfloating):
        raise InputError(f"spectra must be real numbers, got dtype {spectra.dtype}")
    if spectra.dtype not in _NATIVE:
        spectra = spectra.astype(np.float64)
    spectra = np.ascontiguousarray(spectra)
    nbad, nneg = _count_bad(spectra, model.i0, model.i1)
    if nbad:
        raise InputError(f"spectra contain {nbad} NaN or infinite counts inside the fit window")
    if nneg:
        raise InputError(f"spectra contain {nneg} negative counts inside the fit window")
    return spectra


def fit_block(model: EngineModel, spectra: np.ndarray, *, refine: bool = False, with_background: bool = False,
              max_iter: int = 8) -> EngineResult:
    """Fit a block of spectra with the engine.

    Parameters
    ----------
    model : EngineModel
        From :func:`build_model` (built once per map).
    spectra : ndarray, shape (npix, nbins)
        Counts (any real dtype; float32/float64 used as they are, others converted). Not modified.
        Must be finite and >= 0 inside the fit window.
    refine : bool
        Let zero, gain, noise and Fano vary per pixel (batched Levenberg-Marquardt, analytic
        derivatives; :func:`xrfproc.core.fit_refine.refine_block`). Areas then come from the
        refined model with Poisson weights ``1/max(y,1)``, and the SNIP input is smoothed as
        PyMca's full fit does it (Savitzky-Golay then [1/4, 1/2, 1/4]).
    with_background : bool
        Return the SNIP background too.
    max_iter : int
        Levenberg-Marquardt iterations when refining.

    Returns
    -------
    EngineResult

    Raises
    ------
    InputError
        Wrong shape or channel count, NaN or negative counts.
    """
    spectra = _check_block(model, spectra)
    npix = spectra.shape[0]
    n, ncol = model.nchan, model.ncols
    A = model.shapes
    ysub = np.empty((npix, n), dtype=np.float64)
    bkg = np.empty((npix, n), dtype=np.float64) if (with_background or refine) else ysub
    if model.snip:
        snip_block_kernel(spectra, model.i0, model.i1, model.snipwidth, model.filter_points, model.anchors,
                          bkg, ysub, with_background or refine, True, _HALF64, refine)
    else:
        ysub[:] = spectra[:, model.i0:model.i1]
        if with_background or refine:
            bkg[:] = 0.0
    nonneg = np.arange(ncol) >= model.nbkg
    policy = model.weight_policy
    if policy == 2:
        wt = np.empty_like(ysub)
        _poisson_weights(ysub, wt)
        K, ii, jj = _pair_matrix(A)
        gp = wt @ K                                           # (npix, npairs)
        G = np.zeros((npix, ncol, ncol))
        G[:, ii, jj] = gp
        G[:, jj, ii] = gp
        wt *= ysub
        B = wt @ A                                            # (npix, ncol)
        del wt, gp
    else:
        if policy == 1:
            Aw = A / model.sigma_avg[:, None]
            G = Aw.T @ Aw
            B = ysub @ (A / (model.sigma_avg ** 2)[:, None])
        else:
            G = A.T @ A
            B = ysub @ A
    X, V, status = nnls_gram(G, B, nonneg)
    failed = status < 0
    if failed.any():
        log.warning("engine: %d of %d pixels could not be fitted (singular normal equations)", int(failed.sum()), npix)
    stddev = np.sqrt(V)
    theta = None
    if refine:
        from xrfproc.core.fit_refine import refine_block
        X, stddev, theta, chi2, failed2 = refine_block(model, spectra, bkg, X, max_iter=max_iter)
        failed = failed | failed2
    else:
        fitted = np.nan_to_num(X) @ A.T
        nfree = (X > 0).sum(axis=1) + (~nonneg).sum()
        dof = n - nfree
        chi2 = np.empty(npix)
        _chi2(spectra, model.i0, ysub, fitted, dof.astype(np.int64), chi2)
    return EngineResult(names=list(model.names), areas=X, stddev=stddev, chi2_red=chi2,
                        background=bkg if with_background else None, theta=theta, failed=failed)


def fit_map(model: EngineModel, spectra: np.ndarray, *, block: int = 4096, refine: bool = False,
            max_iter: int = 8) -> EngineResult:
    """Fit a whole stack ``(..., nbins)`` block by block; results keep the leading shape.

    Returns an :class:`EngineResult` whose arrays have shape ``(*spectra.shape[:-1], ncols)``
    (areas, stddev), ``spectra.shape[:-1]`` (chi2_red, failed) and ``(..., 4)`` (theta).
    """
    spectra = np.asarray(spectra)
    lead = spectra.shape[:-1]
    flat = spectra.reshape(-1, spectra.shape[-1])
    npix = flat.shape[0]
    if npix == 0:
        raise InputError("the map has no spectra")
    areas = np.empty((npix, model.ncols))
    stddev = np.empty((npix, model.ncols))
    chi2 = np.empty(npix)
    failed = np.zeros(npix, dtype=bool)
    theta = np.empty((npix, 4)) if refine else None
    for s in range(0, npix, block):
        r = fit_block(model, flat[s:s + block], refine=refine, max_iter=max_iter)
        areas[s:s + block] = r.areas
        stddev[s:s + block] = r.stddev
        chi2[s:s + block] = r.chi2_red
        failed[s:s + block] = r.failed
        if refine:
            theta[s:s + block] = r.theta
    return EngineResult(names=list(model.names), areas=areas.reshape(lead + (-1,)),
                        stddev=stddev.reshape(lead + (-1,)), chi2_red=chi2.reshape(lead),
                        theta=None if theta is None else theta.reshape(lead + (4,)), failed=failed.reshape(lead))
