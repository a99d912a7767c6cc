"""Per-pixel refinement of the nonlinear parameters (energy zero and gain, noise, Fano).

For maps whose calibration or resolution drifts from pixel to pixel, the fixed shapes of the
linear engine misplace or mis-size the peaks. :func:`refine_block` fits, for every pixel of a
block (numba, parallel over pixels), the areas of all groups together with the nonlinear
parameters by a projected Levenberg-Marquardt:

- model: ``m_c = sum_g a_g S_g(c; theta)`` over the fit window, on top of the pixel's SNIP
  background (fixed, as in the linear fit); ``S_g`` the hypermet group shapes of
  :mod:`xrfproc.core.fit_model` (PyMca's line table, rates and escape peaks);
- Jacobian analytic: ``S_g`` for the areas, ``sum_g a_g dS_g/dtheta`` for theta;
- weights ``1 / max(y_c, 1)`` (Poisson, raw counts);
- constraints: peak areas >= 0 (projected), each theta within ``model.theta +- model.theta_delta``
  (the configuration's ``delta*`` values), parameters the configuration fixes stay fixed;
- start: the linear engine's areas at the configuration's theta.

Normal equations use the channel range where each group is non-zero (Gaussian peaks are
evaluated within +-12 sigma, where the neglected part is below 1e-30 of the peak).
"""
from __future__ import annotations

import numba
import numpy as np

from xrfproc.core.fit_model import EngineModel, shapes_kernel
from xrfproc.core.nnls import _chol_solve_subset
from xrfproc.errors import ConfigError

__all__ = ["refine_block"]

_CUTOFF = 12.0


@numba.njit(cache=True)
def _evaluate(xch, theta, lg, lr, le, lesc, flags, tails, base, nbkg, areas, ysub, w, S, dM, lo, hi, r):
    """Shapes S, model derivative dM, column ranges, residual r; returns chi2."""
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
        for g in range(ncol):
            if S[c, g] != 0.0:
                if c < lo[g]:
                    lo[g] = c
                hi[g] = c + 1
    chi2 = 0.0
    for c in range(n):
        m = 0.0
        for g in range(ncol):
            m += S[c, g] * areas[g]
        rc = ysub[c] - m
        r[c] = rc
        chi2 += w[c] * rc * rc
    return chi2


@numba.njit(cache=True)
def _normal(S, dM, lo, hi, w, r, JTJ, JTr):
    n, ncol = S.shape
    p = ncol + 4
    for i in range(p):
        JTr[i] = 0.0
        for j in range(p):
            JTJ[i, j] = 0.0
    for i in range(ncol):
        if hi[i] <= lo[i]:
            continue
        s = 0.0
        for c in range(lo[i], hi[i]):
            s += w[c] * S[c, i] * r[c]
        JTr[i] = s
        for j in range(i, ncol):
            a = max(lo[i], lo[j])
            b = min(hi[i], hi[j])
            s = 0.0
            for c in range(a, b):
                s += w[c] * S[c, i] * S[c, j]
            JTJ[i, j] = s
            JTJ[j, i] = s
        for t in range(4):
            s = 0.0
            for c in range(lo[i], hi[i]):
                s += w[c] * S[c, i] * dM[c, 0, t]
            JTJ[i, ncol + t] = s
            JTJ[ncol + t, i] = s
    for t in range(4):
        s = 0.0
        for c in range(n):
            s += w[c] * dM[c, 0, t] * r[c]
        JTr[ncol + t] = s
        for u in range(t, 4):
            s = 0.0
            for c in range(n):
                s += w[c] * dM[c, 0, t] * dM[c, 0, u]
            JTJ[ncol + t, ncol + u] = s
            JTJ[ncol + u, ncol + t] = s


@numba.njit(cache=True, parallel=True)
def _refine_kernel(xch, theta0, tlo, thi, tfree, lg, lr, le, lesc, flags, tails, base, nbkg, nonneg,
                   spectra, i0, bkg, X0, max_iter, rel_tol, X, SD, TH, CHI, FAIL):
    npix = X0.shape[0]
    n, ncol = base.shape
    p = ncol + 4
    for k in numba.prange(npix):
        ysub = np.empty(n)
        w = np.empty(n)
        for c in range(n):
            y = spectra[k, i0 + c]
            ysub[c] = y - bkg[k, c]
            w[c] = 1.0 / (y if y > 1.0 else 1.0)
        S = np.empty((n, ncol))
        dM = np.empty((n, 1, 4))
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
        th = theta0.copy()
        bad = False
        for g in range(ncol):
            v = X0[k, g]
            if not np.isfinite(v):
                bad = True
                v = 0.0
            areas[g] = v
        trial_a = np.empty(ncol)
        trial_t = np.empty(4)
        chi2 = _evaluate(xch, th, lg, lr, le, lesc, flags, tails, base, nbkg, areas, ysub, w, S, dM, lo, hi, r)
        _normal(S, dM, lo, hi, w, r, JTJ, JTr)
        lam = 1e-3
        it = 0
        rejected = 0
        while it < max_iter and not bad:
            # free set: areas not pinned at 0 with a gradient pushing down, free theta
            m = 0
            for i in range(p):
                if i < ncol:
                    if nonneg[i] and areas[i] <= 0.0 and JTr[i] <= 0.0:
                        continue
                    if JTJ[i, i] <= 0.0:
                        continue
                elif not tfree[i - ncol]:
                    continue
                idx[m] = i
                m += 1
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
            for t in range(4):
                trial_t[t] = th[t]
            for a in range(m):
                i = idx[a]
                if i < ncol:
                    v = areas[i] + z[a]
                    trial_a[i] = v if (v > 0.0 or not nonneg[i]) else 0.0
                else:
                    t = i - ncol
                    v = th[t] + z[a]
                    trial_t[t] = min(max(v, tlo[t]), thi[t])
            chi2_new = _evaluate(xch, trial_t, lg, lr, le, lesc, flags, tails, base, nbkg, trial_a, ysub, w, S,
                                 dM, lo, hi, r)
            it += 1
            if chi2_new < chi2:
                done = (chi2 - chi2_new) <= rel_tol * chi2
                chi2 = chi2_new
                for g in range(ncol):
                    areas[g] = trial_a[g]
                for t in range(4):
                    th[t] = trial_t[t]
                _normal(S, dM, lo, hi, w, r, JTJ, JTr)
                lam = max(lam * 0.3, 1e-7)
                if done:
                    break
                rejected = 0
            else:
                # JTJ/JTr still describe the accepted point: only raise the damping
                lam *= 8.0
                rejected += 1
                if rejected >= 2 or lam > 1e8:
                    break
        # uncertainties at the final point on the free set
        m = 0
        for i in range(p):
            if i < ncol:
                if (nonneg[i] and areas[i] <= 0.0) or JTJ[i, i] <= 0.0:
                    continue
            elif not tfree[i - ncol]:
                continue
            idx[m] = i
            m += 1
        for g in range(ncol):
            SD[k, g] = 0.0
        ok = _chol_solve_subset(JTJ, JTr, idx, m, L, z, var, True) if m > 0 else True
        if ok:
            for a in range(m):
                if idx[a] < ncol:
                    SD[k, idx[a]] = np.sqrt(var[a])
        nfree = 0
        for a in range(m):
            nfree += 1
        for g in range(ncol):
            X[k, g] = areas[g]
        for t in range(4):
            TH[k, t] = th[t]
        dof = n - nfree
        CHI[k] = chi2 / dof if dof > 0 else np.nan
        FAIL[k] = bad


def refine_block(model: EngineModel, spectra: np.ndarray, background: np.ndarray, areas0: np.ndarray, *,
                 max_iter: int = 8, rel_tol: float = 1e-3
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Refine areas and (zero, gain, noise, fano) per pixel.

    Parameters
    ----------
    model : EngineModel
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
    areas (npix, ncols), stddev (npix, ncols), theta (npix, 4), chi2_red (npix,), failed (npix,)
    """
    if model.hypermet == 0:
        raise ConfigError("refine needs the hypermet peak shape ([fit] fitfunction = 0)")
    npix = spectra.shape[0]
    ncol = model.ncols
    free = ~model.theta_fixed & (model.theta_delta > 0)
    tlo = model.theta - np.where(free, model.theta_delta, 0.0)
    thi = model.theta + np.where(free, model.theta_delta, 0.0)
    # noise and gain must stay positive, Fano non-negative
    tlo[1] = max(tlo[1], 0.5 * model.theta[1])
    tlo[2] = max(tlo[2], 1e-3)
    tlo[3] = max(tlo[3], 0.0)
    X = np.empty((npix, ncol))
    SD = np.empty((npix, ncol))
    TH = np.empty((npix, 4))
    CHI = np.empty(npix)
    FAIL = np.zeros(npix, dtype=np.bool_)
    nonneg = np.arange(ncol) >= model.nbkg
    _refine_kernel(model.channels(), model.theta.astype(np.float64), tlo, thi, free, model.line_group,
                   model.line_rate, model.line_energy, model.line_escape, int(model.hypermet), model.tails,
                   np.ascontiguousarray(model.shapes), int(model.nbkg), nonneg, spectra, int(model.i0),
                   np.ascontiguousarray(background), np.ascontiguousarray(areas0, dtype=np.float64), int(max_iter),
                   float(rel_tol), X, SD, TH, CHI, FAIL)
    X[FAIL] = np.nan
    SD[FAIL] = np.nan
    return X, SD, TH, CHI, FAIL
