"""The fused per-chunk kernel of the fit engine: SNIP, normal equations, NNLS and chi-square in one pass.

:func:`xrfproc.core.fit_engine.fit_block` calls :func:`fit_chunks` once per block. The block is cut
into chunks of :data:`CHUNK` spectra, handled by parallel tasks (numba ``prange``) of
``_PER_TASK`` chunks that allocate their work buffers once. Each chunk is read once and stays in
the core's cache while it is:

1. checked (NaN/negative counts), smoothed as PyMca does and SNIP-ed in a channel-major buffer
   (channel ``c`` of the chunk's spectrum ``j`` at ``c * CHUNK + j``: the innermost loop of every
   SNIP pass runs over the chunk's spectra and vectorises) - :mod:`xrfproc.core.snip`;
2. turned into ``y - bkg`` per spectrum and reduced to normal equations ``G = A^T W A``,
   ``b = A^T W (y - bkg)`` over the non-zero channel runs of the model only
   (:class:`SparseModel`: a line group is non-zero over a few hundred channels, so only the
   products that are non-zero are formed, four spectra per pass over the model values); the
   per-pixel Gram matrices only for Poisson weights (policy 2), else the shared one factorised
   once per block (policies 0 and 1: a pixel whose unconstrained solution is feasible then costs
   two triangular solves);
3. solved by Lawson-Hanson NNLS (:func:`xrfproc.core.nnls.nnls_ws`), variances from the inverse
   Gram matrix on the final passive set;
4. scored: reduced chi-square with Poisson variances ``max(y, 1)`` from the sparse model.

No block-sized temporary is created.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from xrfproc.core.nnls import nnls_ws
from xrfproc.core.snip import _sg_coeffs, load_chunk, snip_chunk
from xrfproc.jit import numba  # numba configured by xrfproc (cache folder, compile message)

__all__ = ["CHUNK", "SparseModel", "sparse_model", "fit_chunks"]

#: spectra per chunk (the SIMD width over spectra; 8 float64 = two AVX2 registers)
CHUNK = 8
#: model values below this fraction of their column's maximum are treated as 0 (a Gaussian is
#: below it beyond 9.6 sigma; PyMca itself cuts at ~35 sigma, where values are ~1e-266). The
#: areas change by less than ~1e-15 relative.
TINY = 1e-20
#: chunks per parallel task (work buffers are allocated once per task)
_PER_TASK = 16


@dataclass
class SparseModel:
    """Non-zero structure of the model matrix ``A`` (nchan, ncols) as runs of channels.

    Column ``i`` of ``A`` is non-zero only on the channel runs ``a_lo[r]:a_hi[r]`` for ``r`` in
    ``a_rptr[i]:a_rptr[i+1]``; its values there are ``a_val[a_off[r]:a_off[r] + a_hi[r] - a_lo[r]]``.
    The ``k_*`` arrays hold the same for the products ``A[:, i] * A[:, j]`` of the column pairs
    ``(pair_i[p], pair_j[p])``, ``i <= j``, that are non-zero somewhere. ``dense`` is ``A`` with the
    dropped values set to 0.
    """

    shapes: np.ndarray
    dense: np.ndarray
    a_rptr: np.ndarray
    a_lo: np.ndarray
    a_hi: np.ndarray
    a_off: np.ndarray
    a_val: np.ndarray
    k_rptr: np.ndarray
    k_lo: np.ndarray
    k_hi: np.ndarray
    k_off: np.ndarray
    k_val: np.ndarray
    pair_i: np.ndarray
    pair_j: np.ndarray


def _runs(M: np.ndarray, gap: int = 8) -> tuple[np.ndarray, ...]:
    """Runs of non-zero rows of every column of M (gaps shorter than ``gap`` are bridged)."""
    rptr, lo, hi, off, vals = [0], [], [], [], []
    pos = 0
    for i in range(M.shape[1]):
        nz = np.nonzero(M[:, i])[0]
        if nz.size:
            br = np.nonzero(np.diff(nz) > gap)[0]
            for s, e in zip(np.r_[nz[0], nz[br + 1]], np.r_[nz[br] + 1, nz[-1] + 1]):
                lo.append(s)
                hi.append(e)
                off.append(pos)
                vals.append(M[s:e, i])
                pos += e - s
        rptr.append(len(lo))
    as64 = lambda v: np.asarray(v, dtype=np.int64)  # noqa: E731
    return (as64(rptr), as64(lo), as64(hi), as64(off),
            np.ascontiguousarray(np.concatenate(vals) if vals else np.zeros(0)))


def sparse_model(shapes: np.ndarray, tiny: float = TINY) -> SparseModel:
    """Build the :class:`SparseModel` of ``shapes`` (nchan, ncols), dropping values below
    ``tiny`` times their column's maximum magnitude."""
    A = np.asarray(shapes, dtype=np.float64)
    n, ncol = A.shape
    cmax = np.abs(A).max(axis=0) if n else np.zeros(ncol)
    At = np.where(np.abs(A) > tiny * cmax[None, :], A, 0.0)
    iu, ju = np.triu_indices(ncol)
    K = At[:, iu] * At[:, ju]
    used = (K != 0).any(axis=0)
    a = _runs(At)
    k = _runs(K[:, used])
    return SparseModel(shapes, At, *a, *k, pair_i=iu[used].astype(np.int64), pair_j=ju[used].astype(np.int64))


_FM = {"reassoc", "contract"}  # vectorised reductions (only the summation order changes)


@numba.njit(cache=True, fastmath=_FM)
def _dot4(val, rlo, rhi, roff, r0, r1, x0, x1, x2, x3, out, j):
    """out[j:j+4] = sum over the runs r0..r1-1 of val(c) * (x0, x1, x2, x3)[c]: four spectra per pass
    over the model values (contiguous runs: numba's loop vectoriser handles the four reductions)."""
    s0 = s1 = s2 = s3 = 0.0
    for r in range(r0, r1):
        lo = rlo[r]
        hi = rhi[r]
        vr = val[roff[r]:roff[r] + hi - lo]
        a0 = x0[lo:hi]
        a1 = x1[lo:hi]
        a2 = x2[lo:hi]
        a3 = x3[lo:hi]
        for q in range(hi - lo):
            v = vr[q]
            s0 += v * a0[q]
            s1 += v * a1[q]
            s2 += v * a2[q]
            s3 += v * a3[q]
    out[j] = s0
    out[j + 1] = s1
    out[j + 2] = s2
    out[j + 3] = s3


@numba.njit(cache=True)
def _dots(val, rptr, rlo, rhi, roff, X, out):
    """out[p, j] = sum_c val_p(c) X[j, c] for every run set p and the 8 rows of X."""
    for p in range(rptr.size - 1):
        for h in range(0, CHUNK, 4):
            _dot4(val, rlo, rhi, roff, rptr[p], rptr[p + 1], X[h], X[h + 1], X[h + 2], X[h + 3], out[p], h)


@numba.njit(cache=True, fastmath=_FM)
def _chi_one(val, rptr, rlo, rhi, roff, x, ys, row, f):
    """sum_c (ys - A x)^2 / max(y, 1) for one spectrum (``row``: its raw counts over the window)."""
    n = ys.size
    for c in range(n):
        f[c] = ys[c]
    for i in range(rptr.size - 1):
        xi = x[i]
        if xi == 0.0:
            continue
        for r in range(rptr[i], rptr[i + 1]):
            lo = rlo[r]
            hi = rhi[r]
            vr = val[roff[r]:roff[r] + hi - lo]
            fr = f[lo:hi]
            for q in range(hi - lo):
                fr[q] -= xi * vr[q]
    s = 0.0
    for c in range(n):
        y = float(row[c])
        s += f[c] * f[c] / (y if y > 1.0 else 1.0)
    return s


@numba.njit(cache=True, parallel=True)
def fit_chunks(spectra, i0, i1, do_snip, width, npoints, anchors, smooth3,
               a_rptr, a_lo, a_hi, a_off, a_val, k_rptr, k_lo, k_hi, k_off, k_val, pair_i, pair_j,
               policy, wvec, Gs, Ls, var_s, have_s, nonneg, nbkg, rtol, maxiter,
               X, V, chi2, status, bkg_out, want_bkg, bad, allow_neg):
    """Fit all spectra of a block (see the module docstring).

    spectra (npix, nbins) any real dtype; window [i0, i1); SNIP settings (``do_snip``, ``width``,
    Savitzky-Golay ``npoints``, ``anchors`` relative to i0, ``smooth3``); the sparse model; weight
    ``policy`` with ``wvec`` (nchan,) the channel weights of policies 0/1 and ``Gs`` (ncol, ncol)
    their shared Gram matrix with its Cholesky factor ``Ls`` and inverse diagonal ``var_s``
    (``have_s``: factorisation succeeded); ``nonneg`` (ncol,) bool. Outputs X, V (npix, ncol),
    chi2, status (npix,), bkg_out (npix, nchan) if ``want_bkg``; ``bad`` (nchunks, 2): counts of
    non-finite and negative values per chunk (such a chunk is not fitted; negative values are
    fitted with ``allow_neg``: counts less a continuum, no SNIP, fixed weights).
    """
    npix = spectra.shape[0]
    ncol = X.shape[1]
    npair = pair_i.size
    coeff, den = _sg_coeffs(npoints)
    nchunks = (npix + CHUNK - 1) // CHUNK
    ntasks = (nchunks + _PER_TASK - 1) // _PER_TASK
    for task in numba.prange(ntasks):
        # work buffers, once per task of _PER_TASK chunks
        n = i1 - i0
        yr = np.empty(n * CHUNK)
        d = np.empty(n * CHUNK)
        w = np.empty(n * CHUNK)
        ys = np.empty((CHUNK, n))
        wt = np.empty((CHUNK, n))
        gacc = np.empty((max(npair, 1), CHUNK))
        bacc = np.empty((ncol, CHUNK))
        G = np.zeros((ncol, ncol))
        b = np.empty(ncol)
        passive = np.zeros(ncol, dtype=np.bool_)
        idx = np.empty(ncol, dtype=np.int64)
        L = np.empty((ncol, ncol))
        z = np.empty(ncol)
        zfull = np.empty(ncol)
        vtmp = np.empty(ncol)
        for ck in range(task * _PER_TASK, min(nchunks, (task + 1) * _PER_TASK)):
            _fit_chunk(ck, spectra, i0, i1, do_snip, width, npoints, anchors, smooth3, coeff, den,
                       a_rptr, a_lo, a_hi, a_off, a_val, k_rptr, k_lo, k_hi, k_off, k_val, pair_i, pair_j,
                       policy, wvec, Gs, Ls, var_s, have_s, nonneg, nbkg, rtol, maxiter,
                       X, V, chi2, status, bkg_out, want_bkg, bad, allow_neg,
                       yr, d, w, ys, wt, gacc, bacc, G, b, passive, idx, L, z, zfull, vtmp)


@numba.njit(cache=True)
def _fit_chunk(ck, spectra, i0, i1, do_snip, width, npoints, anchors, smooth3, coeff, den,
               a_rptr, a_lo, a_hi, a_off, a_val, k_rptr, k_lo, k_hi, k_off, k_val, pair_i, pair_j,
               policy, wvec, Gs, Ls, var_s, have_s, nonneg, nbkg, rtol, maxiter,
               X, V, chi2, status, bkg_out, want_bkg, bad, allow_neg,
               yr, d, w, ys, wt, gacc, bacc, G, b, passive, idx, L, z, zfull, vtmp):
    """Fit chunk ``ck`` (spectra ``8 ck .. 8 ck + 7``) of :func:`fit_chunks` with the given work buffers."""
    npix = spectra.shape[0]
    n = i1 - i0
    ncol = X.shape[1]
    npair = pair_i.size
    M = CHUNK
    s0 = ck * M
    cnt = min(npix, s0 + M) - s0
    nb, nn = load_chunk(spectra, s0, cnt, M, i0, n, npoints, coeff, den, smooth3, yr, d, w[:n], w[n:2 * n])
    bad[ck, 0] = nb
    bad[ck, 1] = 0 if allow_neg else nn
    if nb or (nn and not allow_neg):
        return
    # ---- background (channel-major d), then data minus background per spectrum (ys)
    if do_snip:
        snip_chunk(d, w, n, M, width, anchors, 0.5)
    else:
        d[:] = 0.0
    if want_bkg:
        for j in range(cnt):
            for c in range(n):
                bkg_out[s0 + j, c] = d[c * M + j]
    for c in range(n):
        for j in range(M):
            ys[j, c] = yr[c * M + j] - d[c * M + j]
    # ---- weights, Gram matrices (policy 2), weighted data (in wt), right-hand sides
    if policy == 2:
        for j in range(M):
            yj = ys[j]
            wj = wt[j]
            for c in range(n):
                a = abs(yj[c])
                wj[c] = 1.0 / a if a > 0.0 else 1.0
        _dots(k_val, k_rptr, k_lo, k_hi, k_off, wt, gacc)
        for j in range(M):
            yj = ys[j]
            wj = wt[j]
            for c in range(n):
                wj[c] *= yj[c]
    else:
        for j in range(M):
            yj = ys[j]
            wj = wt[j]
            for c in range(n):
                wj[c] = wvec[c] * yj[c]
    _dots(a_val, a_rptr, a_lo, a_hi, a_off, wt, bacc)
    # ---- NNLS, then reduced chi-square (variances max(y, 1) of the raw counts) per spectrum
    for j in range(cnt):
        k = s0 + j
        x = X[k]
        v = V[k]
        bmax = 0.0
        for i in range(ncol):
            b[i] = bacc[i, j]
            bmax = max(bmax, abs(b[i]))
        st = 0
        if policy == 2:
            for p in range(npair):
                G[pair_i[p], pair_j[p]] = gacc[p, j]
                G[pair_j[p], pair_i[p]] = gacc[p, j]
            st = nnls_ws(G, b, nonneg, x, v, rtol * bmax if bmax > 0.0 else rtol, maxiter,
                         passive, idx, L, z, zfull, vtmp)
        else:
            if have_s:  # unconstrained solution by the shared factor: usually feasible
                for r in range(ncol):
                    s = b[r]
                    for q in range(r):
                        s -= Ls[r, q] * x[q]
                    x[r] = s / Ls[r, r]
                for r in range(ncol - 1, -1, -1):
                    s = x[r]
                    for q in range(r + 1, ncol):
                        s -= Ls[q, r] * x[q]
                    x[r] = s / Ls[r, r]
                st = 1
                for i in range(ncol):
                    if nonneg[i] and x[i] <= 0.0:
                        st = 0
                        break
                if st == 1:
                    for i in range(ncol):
                        v[i] = var_s[i]
            if st == 0:
                st = nnls_ws(Gs, b, nonneg, x, v, rtol * bmax if bmax > 0.0 else rtol, maxiter,
                             passive, idx, L, z, zfull, vtmp)
        status[k] = st
        if st < 0:
            for i in range(ncol):
                x[i] = np.nan
                v[i] = np.nan
            for i in range(ncol):
                z[i] = 0.0
            chi = _chi_one(a_val, a_rptr, a_lo, a_hi, a_off, z, ys[j], spectra[k, i0:i1], w)
        else:
            chi = _chi_one(a_val, a_rptr, a_lo, a_hi, a_off, x, ys[j], spectra[k, i0:i1], w)
        nfree = nbkg
        for i in range(nbkg, ncol):
            if x[i] > 0.0:
                nfree += 1
        dof = n - nfree
        chi2[k] = chi / dof if dof > 0 else np.nan
