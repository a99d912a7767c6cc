"""Batched non-negative least squares on normal equations (numba, parallel over problems).

Each problem k is ``min_x  x^T G_k x / 2 - b_k^T x`` subject to ``x_j >= 0`` for the constrained
columns, i.e. ``min ||A x - y||^2`` with ``G = A^T W A`` and ``b = A^T W y`` precomputed (by BLAS)
for a whole block of pixels. Solved by the Lawson-Hanson active-set method, started from the
set of columns the unconstrained solution keeps positive (most pixels then need one Cholesky
solve), and exact: at return the KKT conditions hold to ``tol``.

The inverse of ``G`` restricted to the final passive set gives the covariance of the areas;
:func:`nnls_gram` returns its diagonal (variances; 0 for columns held at zero).
"""
from __future__ import annotations

import numpy as np

from xrfproc.jit import numba  # numba configured by xrfproc (cache folder, compile message)

__all__ = ["nnls_gram"]


@numba.njit(cache=True)
def _chol_solve_subset(G, b, idx, nidx, L, z, var, want_var):
    """Solve G[idx,idx] z = b[idx] by Cholesky (L workspace); False if not positive definite.

    Column-oriented (one division per column, rows of ``L`` read contiguously).
    """
    for c in range(nidx):
        ic = idx[c]
        Lc = L[c]
        s = G[ic, ic]
        for k in range(c):
            s -= Lc[k] * Lc[k]
        if s <= 0.0:
            return False
        dc = np.sqrt(s)
        Lc[c] = dc
        inv = 1.0 / dc
        for r in range(c + 1, nidx):
            Lr = L[r]
            s = G[idx[r], ic]
            for k in range(c):
                s -= Lr[k] * Lc[k]
            Lr[c] = s * inv
    # forward / back substitution
    for r in range(nidx):
        Lr = L[r]
        s = b[idx[r]]
        for k in range(r):
            s -= Lr[k] * z[k]
        z[r] = s / Lr[r]
    for r in range(nidx - 1, -1, -1):
        s = z[r]
        for k in range(r + 1, nidx):
            s -= L[k, r] * z[k]
        z[r] = s / L[r, r]
    if want_var:
        _var_from_chol(L, nidx, var)
    return True


@numba.njit(cache=True)
def _var_from_chol(L, nidx, var):
    """Diagonal of inv(L L^T) from the Cholesky factor: var_c = sum_r (L^-1)_rc^2."""
    e = np.empty(nidx)
    inv = np.empty(nidx)
    for c in range(nidx):
        inv[c] = 1.0 / L[c, c]
    for c in range(nidx):
        # column c of L^-1: solve L e = unit c  (e_r = 0 for r < c)
        e[c] = inv[c]
        acc = e[c] * e[c]
        for r in range(c + 1, nidx):
            Lr = L[r]
            s = 0.0
            for k in range(c, r):
                s -= Lr[k] * e[k]
            e[r] = s * inv[r]
            acc += e[r] * e[r]
        var[c] = acc


@numba.njit(cache=True)
def _nnls_one(G, b, nonneg, x, var, tol, maxiter):
    """Lawson-Hanson NNLS on normal equations for one problem; returns iterations used (-1: fail)."""
    n = b.size
    return nnls_ws(G, b, nonneg, x, var, tol, maxiter, np.zeros(n, dtype=np.bool_), np.empty(n, dtype=np.int64),
                   np.empty((n, n)), np.empty(n), np.empty(n), np.empty(n))


@numba.njit(cache=True)
def nnls_ws(G, b, nonneg, x, var, tol, maxiter, passive, idx, L, z, zfull, vtmp):
    """:func:`_nnls_one` with caller-provided workspaces (``passive`` bool (n,), ``idx`` int (n,),
    ``L`` (n, n), ``z``, ``zfull``, ``vtmp`` (n,)): no allocation, for use inside kernels."""
    n = b.size
    # warm start: unconstrained solution on all columns
    for j in range(n):
        idx[j] = j
        x[j] = 0.0
    if _chol_solve_subset(G, b, idx, n, L, z, var, False):
        feasible = True
        for j in range(n):
            passive[j] = (not nonneg[j]) or z[j] > 0.0
            feasible = feasible and passive[j]
        if feasible:  # the unconstrained optimum is feasible: done, L factors the final set
            for j in range(n):
                x[j] = z[j]
            _var_from_chol(L, n, var)
            return 1
    else:
        for j in range(n):
            passive[j] = not nonneg[j]
    it = 0
    while True:
        # inner loop: solve on the passive set, step back while infeasible
        while True:
            it += 1
            if it > maxiter:
                return -1
            m = 0
            for j in range(n):
                if passive[j]:
                    idx[m] = j
                    m += 1
            if m == 0:
                for j in range(n):
                    zfull[j] = 0.0
                break
            if not _chol_solve_subset(G, b, idx, m, L, z, var, False):
                return -1
            for j in range(n):
                zfull[j] = 0.0
            feasible = True
            for r in range(m):
                zfull[idx[r]] = z[r]
                if nonneg[idx[r]] and z[r] <= 0.0:
                    feasible = False
            if feasible:
                break
            alpha = 2.0
            for r in range(m):
                j = idx[r]
                if nonneg[j] and z[r] <= 0.0:
                    den = x[j] - z[r]
                    a = x[j] / den if den > 0.0 else 0.0
                    if a < alpha:
                        alpha = a
            for j in range(n):
                x[j] += alpha * (zfull[j] - x[j])
                if passive[j] and nonneg[j] and x[j] <= tol * 1e-3:
                    passive[j] = False
                    x[j] = 0.0
        for j in range(n):
            x[j] = zfull[j]
        # outer: KKT check on the active (zero) columns
        best = -1
        wbest = tol
        for j in range(n):
            if not passive[j]:
                w = b[j]
                for k in range(n):
                    w -= G[j, k] * x[k]
                if w > wbest:
                    wbest = w
                    best = j
        if best < 0:
            break
        passive[best] = True
    # variances on the final passive set
    m = 0
    for j in range(n):
        if passive[j]:
            idx[m] = j
            m += 1
        var[j] = 0.0
    if m > 0:
        if _chol_solve_subset(G, b, idx, m, L, z, vtmp, True):
            for r in range(m):
                var[idx[r]] = vtmp[r]
    return it


@numba.njit(cache=True, parallel=True)
def _nnls_batch(G, B, nonneg, X, V, rtol, maxiter, status):
    npb, n = B.shape
    shared = G.shape[0] == 1
    # shared Gram matrix: factor it once; pixels whose unconstrained solution is feasible
    # (the usual case) then cost two triangular solves
    idx = np.arange(n)
    L = np.empty((n, n))
    zz = np.empty(n)
    var_full = np.empty(n)
    have_full = False
    if shared:
        have_full = _chol_solve_subset(G[0], np.zeros(n), idx, n, L, zz, var_full, True)
    for k in numba.prange(npb):
        g = G[0] if shared else G[k]
        b = B[k]
        if have_full:
            z = X[k]
            for r in range(n):
                s = b[r]
                for q in range(r):
                    s -= L[r, q] * z[q]
                z[r] = s / L[r, r]
            for r in range(n - 1, -1, -1):
                s = z[r]
                for q in range(r + 1, n):
                    s -= L[q, r] * z[q]
                z[r] = s / L[r, r]
            ok = True
            for j in range(n):
                if nonneg[j] and z[j] <= 0.0:
                    ok = False
                    break
            if ok:
                for j in range(n):
                    V[k, j] = var_full[j]
                status[k] = 1
                continue
        bmax = 0.0
        for j in range(n):
            a = abs(b[j])
            if a > bmax:
                bmax = a
        tol = rtol * bmax if bmax > 0.0 else rtol
        status[k] = _nnls_one(g, b, nonneg, X[k], V[k], tol, maxiter)


def nnls_gram(G: np.ndarray, B: np.ndarray, nonneg: np.ndarray | None = None, *, rtol: float = 1e-12,
              maxiter: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Solve many NNLS problems given their normal equations.

    Parameters
    ----------
    G : ndarray, shape (n, n) or (npix, n, n)
        Gram matrices ``A^T W A`` (one shared, or one per problem); symmetric positive definite.
    B : ndarray, shape (npix, n)
        Right-hand sides ``A^T W y``.
    nonneg : ndarray of bool, shape (n,), optional
        Columns constrained to be >= 0 (default all).
    rtol : float
        KKT tolerance relative to ``max |b|``.
    maxiter : int, optional
        Cap on inner iterations per problem (default ``10 * n + 10``).

    Returns
    -------
    x : ndarray, shape (npix, n)
        Solutions.
    var : ndarray, shape (npix, n)
        Diagonal of ``inv(G)`` restricted to the final passive set (0 for columns at zero).
    status : ndarray of int, shape (npix,)
        Iterations used; -1 where the problem failed (singular ``G``): ``x`` is then NaN.
    """
    B = np.ascontiguousarray(B, dtype=np.float64)
    if B.ndim == 1:
        B = B[None, :]
    G = np.ascontiguousarray(G, dtype=np.float64)
    if G.ndim == 2:
        G = G[None]
    n = B.shape[1]
    if nonneg is None:
        nonneg = np.ones(n, dtype=np.bool_)
    nonneg = np.ascontiguousarray(nonneg, dtype=np.bool_)
    X = np.zeros_like(B)
    V = np.zeros_like(B)
    status = np.zeros(B.shape[0], dtype=np.int64)
    _nnls_batch(G, B, nonneg, X, V, float(rtol), int(maxiter or 10 * n + 10), status)
    bad = status < 0
    if bad.any():
        X[bad] = np.nan
        V[bad] = np.nan
    return X, V, status
