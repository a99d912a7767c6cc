"""xrfproc's own fit engine: PyMca's fast-fit model, solved for blocks of thousands of pixels at once.

For one map, :func:`build_model` (from :mod:`xrfproc.core.fit_model`) asks PyMca once for the
model of its fast fit (unit-area shape of every line group over the fit window, at the
calibration and FWHM of the configuration). Then :func:`fit_block` fits a block of spectra with
one fused kernel (:mod:`xrfproc.core.fit_kernel`, numba, parallel over chunks of 8 spectra that
stay in the core's cache from reading to chi-square):

1. SNIP background of every spectrum over the window (PyMca's semantics: Savitzky-Golay
   pre-smoothing, width, anchors; float64, equal to PyMca's to rounding) - :mod:`xrfproc.core.snip`;
2. normal equations ``G = A^T W A``, ``b = A^T W (y - bkg)`` over the non-zero channel runs of
   the model only (values below 1e-20 of a column's maximum count as 0): one Gram matrix per pixel
   for policy 2 (Poisson weights ``1/|y - bkg|``), one shared Gram matrix factorised once per
   block for policies 0 and 1;
3. non-negative least squares (Lawson-Hanson on the normal equations, started from the
   unconstrained solution) - :mod:`xrfproc.core.nnls`; stddev from the inverse Gram matrix on the
   final passive set;
4. reduced chi-square per pixel with Poisson variances ``max(y, 1)`` of the raw counts.

With ``refine=True`` the nonlinear parameters vary per pixel (:mod:`xrfproc.core.fit_refine`),
and so does PyMca's pile-up coefficient when the configuration fits pile-up (``sumflag``): this
:func:`build_model` keeps the configuration's pile-up settings in ``model.extra["pileup"]`` for that.

Axis orders: spectra ``(npix, nbins)``; areas/stddev ``(npix, ncols)`` in ``model.names`` order.
Units: areas in counts (the integral of the group over all its lines, escape peaks included, as
PyMca's fast fit reports it); ``chi2_red`` dimensionless.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from xrfproc.core.fit_model import EngineModel, build_model, group_shapes
from xrfproc.core.fit_kernel import CHUNK, SparseModel, fit_chunks, sparse_model
from xrfproc.errors import InputError

__all__ = ["EngineModel", "EngineResult", "build_model", "fit_block", "fit_map", "group_shapes"]

log = logging.getLogger(__name__)
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
    pileup : ndarray, shape (npix,) or None
        Per-pixel pile-up coefficient (PyMca's ``Sum``) when refined; 0 when the configuration
        has no pile-up.
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
    pileup: np.ndarray | None = None


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
    return np.ascontiguousarray(spectra)


def fit_block(model: EngineModel, spectra: np.ndarray, *, refine: bool = False, with_background: bool = False,
              max_iter: int = 8, net: bool = False) -> EngineResult:
    """Fit a block of spectra with the engine.

    Parameters
    ----------
    model : EngineModel
        From :func:`build_model` (built once per map).
    spectra : ndarray, shape (npix, nbins)
        Counts (any real dtype; float32/float64 used as they are, others converted). Not modified.
        Must be finite and >= 0 inside the fit window.
    refine : bool
        Let zero, gain, noise and Fano (and the pile-up coefficient, when the model has pile-up
        settings: see :func:`build_model`) vary per pixel (batched Levenberg-Marquardt, analytic
        derivatives; :func:`xrfproc.core.fit_refine.refine_block`). Areas then come from the
        refined model with Poisson weights ``1/max(y,1)``, and the SNIP input is smoothed as
        PyMca's full fit does it (Savitzky-Golay then [1/4, 1/2, 1/4]).
    with_background : bool
        Return the SNIP background too.
    max_iter : int
        Levenberg-Marquardt iterations when refining.
    net : bool
        The spectra are counts less a continuum (the model strips nothing, fixed weights): they may
        be negative.

    Returns
    -------
    EngineResult

    Raises
    ------
    InputError
        Wrong shape or channel count, NaN or negative counts.
    """
    spectra = _check_block(model, spectra)
    allow_neg = bool(net and not model.snip and model.weight_policy != 2 and not refine)
    npix = spectra.shape[0]
    n, ncol = model.nchan, model.ncols
    sp = _sparse(model)
    nonneg = np.arange(ncol) >= model.nbkg
    policy = model.weight_policy
    if policy == 2:
        wvec = np.ones(n)
        Gs = Ls = np.zeros((ncol, ncol))
        var_s = np.zeros(ncol)
        have_s = False
    else:
        wvec = 1.0 / model.sigma_avg ** 2 if policy == 1 else np.ones(n)
        Gs, Ls, var_s, have_s = _shared_gram(sp.dense, wvec)
    want_bkg = with_background or refine
    bkg = np.empty((npix, n)) if want_bkg else np.empty((0, 0))
    X = np.zeros((npix, ncol))
    V = np.zeros((npix, ncol))
    chi2 = np.empty(npix)
    status = np.zeros(npix, dtype=np.int64)
    bad = np.zeros(((npix + CHUNK - 1) // CHUNK, 2), dtype=np.int64)
    fit_chunks(spectra, model.i0, model.i1, bool(model.snip), int(model.snipwidth), int(model.filter_points),
               model.anchors, bool(refine), sp.a_rptr, sp.a_lo, sp.a_hi, sp.a_off, sp.a_val,
               sp.k_rptr, sp.k_lo, sp.k_hi, sp.k_off, sp.k_val, sp.pair_i, sp.pair_j, int(policy), wvec, Gs, Ls, var_s, have_s, nonneg, int(model.nbkg),
               1e-12, 10 * ncol + 10, X, V, chi2, status, bkg, want_bkg, bad, allow_neg)
    nbad, nneg = bad.sum(axis=0)
    if nbad:
        raise InputError(f"spectra contain {nbad} NaN or infinite counts inside the fit window")
    if nneg:
        raise InputError(f"spectra contain {nneg} negative counts inside the fit window")
    failed = status < 0
    if failed.any():
        log.warning("engine: %d of %d pixels could not be fitted (singular normal equations)", int(failed.sum()), npix)
    stddev = np.sqrt(V)
    theta = pile = None
    if refine:
        from xrfproc.core.fit_refine import refine_block
        X, stddev, theta, chi2, failed2, pile = refine_block(model, spectra, bkg, X, max_iter=max_iter)
        failed = failed | failed2
    return EngineResult(names=list(model.names), areas=X, stddev=stddev, chi2_red=chi2,
                        background=bkg if with_background else None, theta=theta, failed=failed, pileup=pile)


def _sparse(model: EngineModel) -> SparseModel:
    """The model's :class:`SparseModel`, built once and kept in ``model.extra``."""
    sp = model.extra.get("_sparse")
    if sp is None or sp.shapes is not model.shapes:
        sp = sparse_model(model.shapes)
        model.extra["_sparse"] = sp
    return sp


def _shared_gram(A: np.ndarray, wvec: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """``G = A^T diag(wvec) A``, its Cholesky factor and the diagonal of its inverse (policies 0/1)."""
    Aw = A * np.sqrt(wvec)[:, None]
    G = np.ascontiguousarray(Aw.T @ Aw)
    try:
        L = np.linalg.cholesky(G)
        Linv = np.linalg.inv(L)
        return G, np.ascontiguousarray(L), (Linv * Linv).sum(axis=0), bool(np.all(np.isfinite(L)))
    except np.linalg.LinAlgError:
        return G, np.zeros_like(G), np.zeros(G.shape[0]), False


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
    pile = np.empty(npix) if refine else None
    for s in range(0, npix, block):
        r = fit_block(model, flat[s:s + block], refine=refine, max_iter=max_iter)
        areas[s:s + block] = r.areas
        stddev[s:s + block] = r.stddev
        chi2[s:s + block] = r.chi2_red
        failed[s:s + block] = r.failed
        if refine:
            theta[s:s + block] = r.theta
            pile[s:s + block] = r.pileup
    return EngineResult(names=list(model.names), areas=areas.reshape(lead + (-1,)),
                        stddev=stddev.reshape(lead + (-1,)), chi2_red=chi2.reshape(lead),
                        theta=None if theta is None else theta.reshape(lead + (4,)), failed=failed.reshape(lead),
                        pileup=None if pile is None else pile.reshape(lead))
