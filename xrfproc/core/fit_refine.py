"""Per-pixel refinement of the nonlinear parameters (energy zero and gain, noise, Fano, pile-up).

For maps whose calibration or resolution drifts from pixel to pixel, the fixed shapes of the
linear engine misplace or mis-size the peaks. :func:`refine_block` fits, for every pixel of a
block (numba, parallel over pixels), the areas of all groups together with the nonlinear
parameters by a projected Levenberg-Marquardt, with PyMca's full-fit model (``ClassMcaTheory``):

- model: ``m = P + s * pileup(P)`` over the fit window, on top of the pixel's SNIP background
  (fixed, as in PyMca's full fit), with ``P = sum_g a_g S_g(theta)`` the hypermet group shapes of
  :mod:`xrfproc.core.fit_model` (PyMca's line table, rates and escape peaks) and ``pileup`` PyMca's
  ``SpecfitFuns.pileup`` (the self-convolution of ``P``, shifted by the window start and
  ``int(zero / gain)`` channels) when the configuration has ``[fit] sumflag = 1``; ``s`` is
  PyMca's ``Sum`` parameter (``[detector] sum``, free within ``+- deltasum`` unless ``fixedsum``);
- weights ``1 / max(y_c, 1)`` (Poisson, raw counts: PyMca's ``sigmay = sqrt(y)``, 1 where y = 0);
- derivatives analytic: the gradient ``J^T W r`` is exact (the pile-up's own dependence on the
  areas and theta included, by its adjoint); the Gauss-Newton matrix ``J^T W J`` leaves out the
  pile-up's share of the area and theta columns (a relative ``s * sum(P)``, ~1e-3), which only
  changes the steps, not the point the iteration converges to;
- constraints: peak areas >= 0 (projected), each nonlinear parameter within its configured
  ``+- delta`` (fixed ones stay fixed);
- start: the linear engine's areas at the configuration's theta;
- stop: an accepted step that lowers chi-square by less than ``rel_tol`` of it, four rejected
  steps in a row, or ``max_iter`` evaluations.

Normal equations use the channel range where each group is non-zero (Gaussian peaks are
evaluated within +-8 sigma, where the neglected part is below 1.3e-14 of the peak height; PyMca goes
to ~35 sigma, a difference far below rounding of the counts).

The pile-up settings travel in ``model.extra["pileup"]`` (see :func:`pileup_settings`;
:func:`xrfproc.core.fit_model.build_model` puts them there); without them there is no pile-up.
"""
from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from xrfproc.core.fit_model import EngineModel, shapes_kernel
from xrfproc.core.nnls import _chol_solve_subset
from xrfproc.errors import ConfigError
from xrfproc.jit import numba  # numba configured by xrfproc (cache folder, compile message)

__all__ = ["refine_block", "pileup_settings", "pileup"]

_CUTOFF = 8.0
#: number of nonlinear parameters: zero, gain, noise, fano, pile-up coefficient
_NL = 5


def pileup_settings(config: Mapping[str, Any]) -> dict[str, float | bool] | None:
    """PyMca's pile-up (``Sum``) parameter of a fit configuration, or None when it is off.

    Parameters
    ----------
    config : mapping
        PyMca fit configuration (``[fit] sumflag``, ``[detector] sum, fixedsum, deltasum``).

    Returns
    -------
    dict or None
        ``{"value": s0, "fixed": bool, "delta": float}`` (``s`` in 1/counts: the pile-up
        contribution is ``s * pileup(P)``); None when ``sumflag`` is 0 (PyMca then fixes Sum at 0).
    """
    fit = config.get("fit", {}) or {}
    if not int(fit.get("sumflag", 0) or 0):
        return None
    det = config.get("detector", {}) or {}
    return {"value": float(det.get("sum", 0.0) or 0.0), "fixed": bool(int(det.get("fixedsum", 0) or 0)),
            "delta": abs(float(det.get("deltasum", 0.0) or 0.0))}


@numba.njit(cache=True, fastmath=True)
def _pileup_into(P, xmin, k, out):
    """out = PyMca's ``SpecfitFuns.pileup(P, xmin, zero, gain)`` with ``k = int(zero / gain)``:
    ``out[a + xmin + k + j] += P[a] P[j]`` for ``0 <= a < n - xmin`` and ``a + xmin + k >= 0``.

    (fastmath: the loops vectorise; only the order of the additions changes.)"""
    n = P.size
    shift = xmin + k
    for c in range(n):
        out[c] = 0.0
    for a in range(max(0, -shift), min(n - xmin, n - shift)):
        base = a + shift
        pa = P[a]
        if pa == 0.0:
            continue
        o = out[base:]
        for j in range(n - base):
            o[j] += pa * P[j]


@numba.njit(cache=True, fastmath=True)
def _pileup_adjoint(P, xmin, k, v, out):
    """out += L^T v, L the derivative of :func:`_pileup_into` at P (``L q = pile(q, P) + pile(P, q)``).

    Both halves are the correlation ``corr[c] = sum_j P[j] v[c + xmin + k + j]``, over slightly
    different ranges of j: it is computed once per c and the few differing terms are subtracted.
    """
    n = P.size
    shift = xmin + k
    alo = max(0, -shift)
    ahi = min(n - xmin, n - shift)
    if ahi <= alo:  # no pile-up at all
        return
    for c in range(n):
        top = min(n, n - shift - c)  # j < top keeps j and c + shift + j < n
        if top <= 0:
            break
        jlo = max(0, -(c + shift))
        if jlo >= top:
            continue
        pj = P[jlo:top]
        vj = v[c + shift + jlo:c + shift + top]
        corr = 0.0
        for j in range(top - jlo):
            corr += pj[j] * vj[j]
        # q at the second position (index c): sum over first positions a in [alo, ahi)
        second = corr
        for j in range(jlo, min(alo, top)):
            second -= P[j] * v[c + shift + j]
        for j in range(max(ahi, jlo), top):
            second -= P[j] * v[c + shift + j]
        out[c] += second
        # q at the first position (index c, when c is a valid first position): all j
        if alo <= c < ahi:
            out[c] += corr


def pileup(P: np.ndarray, xmin: int, zero: float, gain: float) -> np.ndarray:
    """PyMca's pile-up spectrum of a model ``P`` over a window starting at channel ``xmin``.

    Parameters
    ----------
    P : ndarray, shape (nchan,)
        Peak model over the window (counts per channel).
    xmin : int
        First channel of the window.
    zero, gain : float
        Energy calibration (keV, keV/channel).

    Returns
    -------
    ndarray, shape (nchan,)
        ``SpecfitFuns.pileup(P, xmin, zero, gain)``: counts of the pairs of channels whose energies
        add up to each channel's energy (to the channel), unscaled.
    """
    P = np.ascontiguousarray(P, dtype=np.float64)
    out = np.empty_like(P)
    _pileup_into(P, int(xmin), int(zero / gain), out)
    return out


@numba.njit(cache=True)
def _evaluate(xch, theta, s, use_pile, xmin, lg, lr, le, lesc, flags, tails, base, nbkg, areas, ysub, w,
              S, dM, P, pile, lo, hi, r):
    """Shapes S, d P / d theta (dM), column ranges, peak model P, pile-up, residual r; returns chi2."""
    n, ncol = S.shape
    for c in range(n):
        for g in range(ncol):
            S[c, g] = base[c, g] if g < nbkg else 0.0
        for t in range(4):
            dM[c, 0, t] = 0.0
    shapes_kernel(xch, theta, lg, lr, le, lesc, flags, tails, _CUTOFF, S, dM, True, areas, True)
    for g in range(ncol):
        lo[g] = n
        hi[g] = 0
    for c in range(n):
        m = 0.0
        for g in range(ncol):
            v = S[c, g]
            if v != 0.0:
                if c < lo[g]:
                    lo[g] = c
                hi[g] = c + 1
                m += v * areas[g]
        P[c] = m
    if use_pile:
        _pileup_into(P, xmin, int(theta[0] / theta[1]), pile)
    chi2 = 0.0
    for c in range(n):
        m = P[c] + s * pile[c] if use_pile else P[c]
        rc = ysub[c] - m
        r[c] = rc
        chi2 += w[c] * rc * rc
    return chi2


@numba.njit(cache=True)
def _normal(S, dM, P, pile, use_pile, s, xmin, k, lo, hi, w, r, v, u, JTJ, JTr):
    """Gauss-Newton matrix JTJ (pile-up share of the area/theta columns left out) and exact gradient JTr."""
    n, ncol = S.shape
    p = ncol + _NL
    for i in range(p):
        JTr[i] = 0.0
        for j in range(p):
            JTJ[i, j] = 0.0
    for c in range(n):
        v[c] = w[c] * r[c]
        u[c] = 0.0
    if use_pile and s != 0.0:
        _pileup_adjoint(P, xmin, k, v, u)
    for c in range(n):
        u[c] = v[c] + s * u[c]
    for i in range(ncol):
        if hi[i] <= lo[i]:
            continue
        acc = 0.0
        for c in range(lo[i], hi[i]):
            acc += S[c, i] * u[c]
        JTr[i] = acc
        for j in range(i, ncol):
            a = max(lo[i], lo[j])
            b = min(hi[i], hi[j])
            acc = 0.0
            for c in range(a, b):
                acc += w[c] * S[c, i] * S[c, j]
            JTJ[i, j] = acc
            JTJ[j, i] = acc
        for t in range(4):
            acc = 0.0
            for c in range(lo[i], hi[i]):
                acc += w[c] * S[c, i] * dM[c, 0, t]
            JTJ[i, ncol + t] = acc
            JTJ[ncol + t, i] = acc
        if use_pile:
            acc = 0.0
            for c in range(lo[i], hi[i]):
                acc += w[c] * S[c, i] * pile[c]
            JTJ[i, ncol + 4] = acc
            JTJ[ncol + 4, i] = acc
    nt = _NL if use_pile else 4
    for t in range(nt):
        acc = 0.0
        for c in range(n):
            acc += (dM[c, 0, t] if t < 4 else pile[c]) * (u[c] if t < 4 else v[c])
        JTr[ncol + t] = acc
        for q in range(t, nt):
            acc = 0.0
            for c in range(n):
                acc += w[c] * (dM[c, 0, t] if t < 4 else pile[c]) * (dM[c, 0, q] if q < 4 else pile[c])
            JTJ[ncol + t, ncol + q] = acc
            JTJ[ncol + q, ncol + t] = acc


@numba.njit(cache=True)
def _free_set(JTJ, JTr, areas, nonneg, tfree, ncol, idx, with_gradient):
    """Indices of the free parameters: areas not held at 0 (with a gradient pushing down), free theta."""
    m = 0
    for i in range(ncol + _NL):
        if i < ncol:
            if nonneg[i] and areas[i] <= 0.0 and (not with_gradient or JTr[i] <= 0.0):
                continue
            if JTJ[i, i] <= 0.0:
                continue
        elif not tfree[i - ncol] or JTJ[i, i] <= 0.0:
            continue
        idx[m] = i
        m += 1
    return m


@numba.njit(cache=True, parallel=True)
def _refine_kernel(xch, theta0, tlo, thi, tfree, use_pile, xmin, lg, lr, le, lesc, flags, tails, base, nbkg, nonneg,
                   spectra, i0, bkg, X0, max_iter, rel_tol, X, SD, TH, CHI, FAIL):
    npix = X0.shape[0]
    n, ncol = base.shape
    p = ncol + _NL
    for k in numba.prange(npix):
        ysub = np.empty(n)
        w = np.empty(n)
        for c in range(n):
            y = spectra[k, i0 + c]
            ysub[c] = y - bkg[k, c]
            w[c] = 1.0 / (y if y > 1.0 else 1.0)
        S = np.empty((n, ncol))
        dM = np.empty((n, 1, 4))
        P = np.empty(n)
        pile = np.zeros(n)
        v = np.empty(n)
        u = np.empty(n)
        lo = np.empty(ncol, dtype=np.int64)
        hi = np.empty(ncol, dtype=np.int64)
        r = np.empty(n)
        JTJ = np.empty((p, p))
        JTr = np.empty(p)
        A = np.empty((p, p))
        L = np.empty((p, p))
        z = np.empty(p)
        var = np.empty(p)
        idx = np.empty(p, dtype=np.int64)
        areas = np.empty(ncol)
        th = theta0.copy()  # zero, gain, noise, fano, pile-up coefficient
        bad = False
        for g in range(ncol):
            val = X0[k, g]
            if not np.isfinite(val):
                bad = True
                val = 0.0
            areas[g] = val
        trial_a = np.empty(ncol)
        trial_t = np.empty(_NL)
        chi2 = _evaluate(xch, th[:4], th[4], use_pile, xmin, lg, lr, le, lesc, flags, tails, base, nbkg, areas,
                         ysub, w, S, dM, P, pile, lo, hi, r)
        _normal(S, dM, P, pile, use_pile, th[4], xmin, int(th[0] / th[1]), lo, hi, w, r, v, u, JTJ, JTr)
        lam = 1e-3
        it = 0
        rejected = 0
        while it < max_iter and not bad:
            m = _free_set(JTJ, JTr, areas, nonneg, tfree, ncol, idx, True)
            for a in range(m):
                for b in range(m):
                    A[idx[a], idx[b]] = JTJ[idx[a], idx[b]]
                A[idx[a], idx[a]] = JTJ[idx[a], idx[a]] * (1.0 + lam)
            if not _chol_solve_subset(A, JTr, idx, m, L, z, var, False):
                lam *= 10.0
                it += 1
                continue
            for g in range(ncol):
                trial_a[g] = areas[g]
            for t in range(_NL):
                trial_t[t] = th[t]
            for a in range(m):
                i = idx[a]
                if i < ncol:
                    val = areas[i] + z[a]
                    trial_a[i] = val if (val > 0.0 or not nonneg[i]) else 0.0
                else:
                    t = i - ncol
                    val = th[t] + z[a]
                    trial_t[t] = min(max(val, tlo[t]), thi[t])
            chi2_new = _evaluate(xch, trial_t[:4], trial_t[4], use_pile, xmin, lg, lr, le, lesc, flags, tails, base,
                                 nbkg, trial_a, ysub, w, S, dM, P, pile, lo, hi, r)
            it += 1
            if chi2_new < chi2:
                done = (chi2 - chi2_new) <= rel_tol * chi2
                chi2 = chi2_new
                for g in range(ncol):
                    areas[g] = trial_a[g]
                for t in range(_NL):
                    th[t] = trial_t[t]
                _normal(S, dM, P, pile, use_pile, th[4], xmin, int(th[0] / th[1]), lo, hi, w, r, v, u, JTJ, JTr)
                lam = max(lam * 0.3, 1e-7)
                if done:
                    break
                rejected = 0
            else:
                # JTJ/JTr still describe the accepted point: only raise the damping. Several tries:
                # a step across a jump of PyMca's model (the pile-up moves by whole channels,
                # int(zero / gain)) is rejected although a shorter one is accepted
                lam *= 8.0
                rejected += 1
                if rejected >= 4 or lam > 1e8:
                    break
        # uncertainties at the final point on the free set
        m = _free_set(JTJ, JTr, areas, nonneg, tfree, ncol, idx, False)
        for g in range(ncol):
            SD[k, g] = 0.0
        ok = _chol_solve_subset(JTJ, JTr, idx, m, L, z, var, True) if m > 0 else True
        if ok:
            for a in range(m):
                if idx[a] < ncol:
                    SD[k, idx[a]] = np.sqrt(var[a])
        for g in range(ncol):
            X[k, g] = areas[g]
        for t in range(_NL):
            TH[k, t] = th[t]
        dof = n - m
        CHI[k] = chi2 / dof if dof > 0 else np.nan
        FAIL[k] = bad


def refine_block(model: EngineModel, spectra: np.ndarray, background: np.ndarray, areas0: np.ndarray, *,
                 max_iter: int = 8, rel_tol: float = 1e-3
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Refine areas, (zero, gain, noise, fano) and the pile-up coefficient per pixel.

    Parameters
    ----------
    model : EngineModel
        Pile-up settings, if any, in ``model.extra["pileup"]`` (:func:`pileup_settings`).
    spectra : ndarray, shape (npix, nbins)
        Counts (float32/float64/integer), C-contiguous.
    background : ndarray, shape (npix, nchan), float64
        SNIP background over the fit window.
    areas0 : ndarray, shape (npix, ncols)
        Starting areas (the linear engine's solution).
    max_iter : int
        Levenberg-Marquardt evaluations per pixel.
    rel_tol : float
        Stop when an accepted step lowers chi-square by less than this fraction.

    Returns
    -------
    areas (npix, ncols), stddev (npix, ncols), theta (npix, 4), chi2_red (npix,), failed (npix,),
    pileup coefficient (npix,) (0 without pile-up).
    ``chi2_red`` divides by the channels of the window less the free parameters at the solution
    (areas held at 0 and nonlinear parameters fixed by the configuration not counted).
    """
    if model.hypermet == 0:
        raise ConfigError("refine needs the hypermet peak shape ([fit] fitfunction = 0)")
    npix = spectra.shape[0]
    ncol = model.ncols
    pile = model.extra.get("pileup")
    free = np.zeros(_NL, dtype=np.bool_)
    free[:4] = ~model.theta_fixed & (model.theta_delta > 0)
    theta0 = np.zeros(_NL)
    theta0[:4] = model.theta
    delta = np.zeros(_NL)
    delta[:4] = model.theta_delta
    if pile is not None:
        theta0[4] = float(pile["value"])
        delta[4] = float(pile["delta"])
        free[4] = (not pile["fixed"]) and delta[4] > 0
    tlo = theta0 - np.where(free, delta, 0.0)
    thi = theta0 + np.where(free, delta, 0.0)
    # noise and gain must stay positive, Fano non-negative
    tlo[1] = max(tlo[1], 0.5 * model.theta[1])
    tlo[2] = max(tlo[2], 1e-3)
    tlo[3] = max(tlo[3], 0.0)
    X = np.empty((npix, ncol))
    SD = np.empty((npix, ncol))
    TH = np.empty((npix, _NL))
    CHI = np.empty(npix)
    FAIL = np.zeros(npix, dtype=np.bool_)
    nonneg = np.arange(ncol) >= model.nbkg
    _refine_kernel(model.channels(), theta0, tlo, thi, free, pile is not None, int(model.i0), model.line_group,
                   model.line_rate, model.line_energy, model.line_escape, int(model.hypermet), model.tails,
                   np.ascontiguousarray(model.shapes), int(model.nbkg), nonneg, spectra, int(model.i0),
                   np.ascontiguousarray(background), np.ascontiguousarray(areas0, dtype=np.float64), int(max_iter),
                   float(rel_tol), X, SD, TH, CHI, FAIL)
    X[FAIL] = np.nan
    SD[FAIL] = np.nan
    return X, SD, TH[:, :4].copy(), CHI, FAIL, TH[:, 4].copy()
