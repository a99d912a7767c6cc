"""SNIP background of many spectra at once, with the semantics of PyMca's fast fit.

PyMca's ``FastXRFLinearFit`` computes the background of every spectrum, inside the fit window,
as follows (``_fitBkgSubtract``):

1. Savitzky-Golay smoothing of the window with ``stripfilterwidth`` points
   (``SpecfitFuns.SavitskyGolay``: quadratic, made odd, skipped below 3 points; a smoothed value
   that is not positive keeps the raw value; the ``m`` edge channels are kept);
2. SNIP (``SpecfitFuns.snip1d(y, snipwidth, 0)``) on each segment between consecutive anchors
   (by default ``[0, n-1]``: the whole window but the last channel, which keeps its smoothed value).
   For ``p = width .. 1``: ``y[i] = min(y[i], (y[i-p] + y[i+p]) / 2)`` for ``p <= i < n-p``,
   all ``i`` updated from the previous ``p`` pass (Jacobi).

:func:`snip_background` does exactly this for a block of spectra, parallel over spectra
(numba), in float64, and returns the background; the result equals PyMca's to rounding.
"""
from __future__ import annotations

import numpy as np

from xrfproc.jit import numba  # numba configured by xrfproc (cache folder, compile message)

__all__ = ["snip_background", "snip1d", "savitzky_golay"]


@numba.njit(cache=True, fastmath=False)
def _sg_coeffs(npoints: int) -> tuple[np.ndarray, float]:
    m = npoints // 2
    coeff = np.empty(2 * m + 1)
    den = float((2 * m - 1) * (2 * m + 1) * (2 * m + 3))
    for i in range(m + 1):
        c = float(3 * (3 * m * m + 3 * m - 1 - 5 * i * i))
        coeff[m + i] = c
        coeff[m - i] = c
    return coeff, den


@numba.njit(cache=True)
def _smooth_into(y: np.ndarray, out: np.ndarray, coeff: np.ndarray, den: float) -> None:
    n = y.size
    m = (coeff.size - 1) // 2
    if coeff.size < 3 or n < coeff.size:
        for i in range(n):
            out[i] = y[i]
        return
    for i in range(m):
        out[i] = y[i]
        out[n - 1 - i] = y[n - 1 - i]
    for i in range(m, n - m):
        s = 0.0
        for j in range(-m, m + 1):
            s += coeff[m + j] * y[i + j]
        out[i] = s / den if s > 0.0 else y[i]


@numba.njit(cache=True)
def _snip_segment(d: np.ndarray, lo: int, hi: int, width: int, w: np.ndarray) -> None:
    """SNIP in place on d[lo:hi] (PyMca's snip1d_multiple for one spectrum)."""
    n = hi - lo
    for p in range(width, 0, -1):
        if p >= n - p:
            continue
        for i in range(lo + p, hi - p):
            a = 0.5 * (d[i - p] + d[i + p])
            v = d[i]
            w[i] = a if a < v else v
        for i in range(lo + p, hi - p):
            d[i] = w[i]


_CHUNK = 8  # spectra processed together, channels outer and spectra inner (SIMD over spectra)


@numba.njit(cache=True, fastmath=True, inline="always")
def _snip_pass(src, dst, a0, a1, off, half) -> None:
    """One Jacobi SNIP pass on flat channel-major buffers: dst[k] = min(src[k], (src[k-off] + src[k+off]) / 2)
    for k in [a0, a1). Written over slices so that every index is provably non-negative (numba then emits
    no wrap-around code and LLVM vectorises the loop)."""
    lo = src[a0 - off:a1 - off]
    hi = src[a0 + off:a1 + off]
    mid = src[a0:a1]
    out = dst[a0:a1]
    for k in range(a1 - a0):
        a = (lo[k] + hi[k]) * half
        v = mid[k]
        out[k] = a if a < v else v


@numba.njit(cache=True)
def _snip_segment_T(d, w, lo, hi, width, m, half) -> None:
    """SNIP in place on channels [lo, hi) of the flat channel-major buffer d (channel c of spectrum j
    at ``c * m + j``), Jacobi passes by swapping buffers.

    ``w`` must hold the same values as ``d`` on entry; on return ``d`` holds the result.
    Swapping is exact: pass ``p`` writes ``[lo+p, hi-p)``, a range that grows as ``p`` falls, so
    every stale value of the other buffer is overwritten before it is read.
    """
    n = hi - lo
    swapped = False
    for p in range(width, 0, -1):
        if p >= n - p:
            continue
        if swapped:
            _snip_pass(w, d, (lo + p) * m, (hi - p) * m, p * m, half)
        else:
            _snip_pass(d, w, (lo + p) * m, (hi - p) * m, p * m, half)
        swapped = not swapped
    if swapped:  # result is in w: copy the written range back
        for k in range(lo * m, hi * m):
            d[k] = w[k]


@numba.njit(cache=True)
def load_chunk(spectra, s0, cnt, m, i0, n, npoints, coeff, den, smooth3, yr, d, y, ys):
    """Read spectra[s0:s0+cnt, i0:i0+n] into the flat channel-major buffers ``yr`` (raw counts,
    float64) and ``d`` (the SNIP input: Savitzky-Golay smoothed, plus [1/4, 1/2, 1/4] with
    ``smooth3``); lanes ``cnt..m-1`` are zero. ``y``, ``ys``: work rows (n,). Returns the number
    of (non-finite, negative) values read."""
    nbad = 0
    nneg = 0
    if npoints < 3 and not smooth3:  # no smoothing: transpose directly, reading cnt rows side by side
        for c in range(n):
            for j in range(cnt):
                v = float(spectra[s0 + j, i0 + c])
                if not np.isfinite(v):
                    nbad += 1
                elif v < 0.0:
                    nneg += 1
                yr[c * m + j] = v
                d[c * m + j] = v
            for j in range(cnt, m):
                yr[c * m + j] = 0.0
                d[c * m + j] = 0.0
        return nbad, nneg
    for j in range(m):
        if j >= cnt:
            for c in range(n):
                yr[c * m + j] = 0.0
                d[c * m + j] = 0.0
            continue
        row = spectra[s0 + j]
        for c in range(n):
            v = float(row[i0 + c])
            y[c] = v
            if not np.isfinite(v):
                nbad += 1
            elif v < 0.0:
                nneg += 1
        for c in range(n):
            yr[c * m + j] = y[c]
        if npoints < 3 and not smooth3:
            for c in range(n):
                d[c * m + j] = y[c]
            continue
        if npoints >= 3:
            _smooth_into(y, ys, coeff, den)
        else:
            for c in range(n):
                ys[c] = y[c]
        if smooth3 and n > 1:
            for c in range(1, n - 1):
                y[c] = 0.25 * ys[c - 1] + 0.5 * ys[c] + 0.25 * ys[c + 1]
            y[0] = 0.5 * (ys[0] + y[1]) if n > 2 else 0.5 * (ys[0] + ys[1])
            y[n - 1] = 0.5 * (ys[n - 1] + y[n - 2]) if n > 2 else 0.5 * (ys[n - 1] + ys[n - 2])
            for c in range(n):
                d[c * m + j] = y[c]
        else:
            for c in range(n):
                d[c * m + j] = ys[c]
    return nbad, nneg


@numba.njit(cache=True)
def snip_chunk(d, w, n, m, width, anchors, half) -> None:
    """SNIP (PyMca's segments between anchors) of the flat channel-major chunk d (n channels x m
    spectra), in place; ``w`` is scratch of the same size."""
    for k in range(n * m):
        w[k] = d[k]
    last = 0
    for a in anchors:
        if a > last and a < n:
            _snip_segment_T(d, w, last, a, width, m, half)
            last = a
    if last < n:
        _snip_segment_T(d, w, last, n, width, m, half)


@numba.njit(cache=True, parallel=True)
def snip_block_kernel(spectra, i0, i1, width, npoints, anchors, bkg_out, ysub_out, want_bkg, want_ysub, proto,
                      smooth3=False):
    """Background (and/or data minus background) of a block over the window [i0, i1).

    spectra (nspec, nbins) any real dtype; bkg_out, ysub_out (nspec, i1-i0) float64 (written when
    the matching flag is set); ``proto``: the array ``[0.5]`` in the dtype is the working precision
    of the SNIP passes (float64 reproduces PyMca to rounding). ``smooth3``: also apply the
    [1/4, 1/2, 1/4] smoothing ``ClassMcaTheory`` (PyMca's full fit) applies after Savitzky-Golay.
    """
    nspec = spectra.shape[0]
    n = i1 - i0
    m = _CHUNK
    coeff, den = _sg_coeffs(npoints)
    nchunks = (nspec + m - 1) // m
    for ck in numba.prange(nchunks):
        s0 = ck * m
        cnt = min(nspec, s0 + m) - s0
        half = proto[0]
        yr = np.empty(n * m)
        d64 = np.empty(n * m)
        load_chunk(spectra, s0, cnt, m, i0, n, npoints, coeff, den, smooth3, yr, d64, np.empty(n), np.empty(n))
        d = d64.astype(proto.dtype)
        snip_chunk(d, np.empty(n * m, dtype=proto.dtype), n, m, width, anchors, half)
        for j in range(cnt):
            if want_bkg:
                for c in range(n):
                    bkg_out[s0 + j, c] = d[c * m + j]
            if want_ysub:
                for c in range(n):
                    ysub_out[s0 + j, c] = yr[c * m + j] - d[c * m + j]


def filter_points(filter_width: float) -> int:
    """PyMca's Savitzky-Golay point count for ``stripfilterwidth`` (odd; 1 means no smoothing)."""
    npoints = int(filter_width)
    if npoints % 2 == 0:
        npoints += 1
    return npoints if npoints >= 3 else 1


def default_anchors(n: int, anchors: list[int] | None) -> np.ndarray:
    """Sorted anchors as PyMca uses them (``[0, n-1]`` when none are configured)."""
    if anchors is None or len(anchors) == 0:
        anchors = [0, n - 1]
    return np.asarray(sorted(int(a) for a in anchors), dtype=np.int64)


def snip_background(spectra: np.ndarray, width: int, *, window: tuple[int, int] | None = None,
                    filter_width: float = 0, anchors: list[int] | None = None,
                    out: np.ndarray | None = None, full_fit: bool = False) -> np.ndarray:
    """SNIP background of a block of spectra, as PyMca's fast fit computes it.

    Parameters
    ----------
    spectra : ndarray, shape (nspectra, nbins)
        Counts, any real dtype (read as float64). Not modified.
    width : int
        SNIP width in channels (PyMca's ``snipwidth``).
    window : (i0, i1), optional
        Channel window ``[i0, i1)`` the background is computed over (PyMca's fit window);
        default all channels.
    filter_width : float
        Savitzky-Golay smoothing width in points (``stripfilterwidth``; < 3 means no smoothing).
    anchors : list of int, optional
        Anchor indices relative to the window start (PyMca's anchors list); default
        ``[0, n-1]`` as PyMca uses when no anchors are configured.
    out : ndarray, shape (nspectra, i1-i0), float64, optional
        Where to write the result.
    full_fit : bool
        Smooth as PyMca's full fit (``ClassMcaTheory``) does before SNIP: Savitzky-Golay, then
        [1/4, 1/2, 1/4] (the fast fit only applies Savitzky-Golay).

    Returns
    -------
    ndarray, shape (nspectra, i1-i0), float64
        Background in counts per channel over the window.
    """
    spectra = np.asarray(spectra)
    if spectra.ndim == 1:
        spectra = spectra[None, :]
    if spectra.ndim != 2:
        raise ValueError(f"spectra must be 2-D (nspectra, nbins), got shape {spectra.shape}")
    i0, i1 = (0, spectra.shape[1]) if window is None else (int(window[0]), int(window[1]))
    n = i1 - i0
    if out is None:
        out = np.empty((spectra.shape[0], n), dtype=np.float64)
    snip_block_kernel(spectra, i0, i1, int(width), filter_points(filter_width), default_anchors(n, anchors),
                      out, out, True, False, np.full(1, 0.5), full_fit)
    return out


def snip1d(y: np.ndarray, width: int) -> np.ndarray:
    """SNIP of one spectrum without smoothing or anchors (equals ``SpecfitFuns.snip1d(y, width, 0)``)."""
    y = np.array(y, dtype=np.float64).ravel()
    w = np.empty_like(y)
    _snip_segment(y, 0, y.size, int(width), w)
    return y


def savitzky_golay(y: np.ndarray, npoints: float) -> np.ndarray:
    """PyMca's ``SpecfitFuns.SavitskyGolay(y, npoints)`` (quadratic smoothing, made odd)."""
    y = np.asarray(y, dtype=np.float64).ravel()
    n = int(npoints)
    if n % 2 == 0:
        n += 1
    out = np.empty_like(y)
    if n < 3 or y.size < n:
        out[:] = y
        return out
    coeff, den = _sg_coeffs(n)
    _smooth_into(y, out, coeff, den)
    return out
