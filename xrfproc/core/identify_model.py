"""Model columns of :mod:`xrfproc.core.identify`: line templates, scatter, pile-up, and the weighted
design whose normal equations every NNLS fit of the selection is solved on.

All templates are unit-area line patterns (counts per channel) on the window's energy axis; a line
contributes only within +-6 sigma of its energy, so a template costs the channels it covers.
Templates of an element family are cached per (element, family, calibration, resolution, window).
"""
from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d

from ..errors import InputError
from . import xraydata
from .suggest import _fwhm_sigma, _with_escape, checked_spectrum

log = logging.getLogger(__name__)

_SQRT2PI = float(np.sqrt(2.0 * np.pi))
_LINE_CACHE: dict[tuple, tuple] = {}
_TEMPLATE_CACHE: "OrderedDict[tuple, np.ndarray | None]" = OrderedDict()
_TEMPLATE_CACHE_SIZE = 4096


def lines(sym: str, family: str, energy_keV: float, emin_keV: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Excited lines of a family above ``emin_keV`` (keV): names, energies (keV), weights summing to 1."""
    key = (sym, family, round(energy_keV, 4), round(emin_keV, 4))
    if key not in _LINE_CACHE:
        g = xraydata.line_group(sym, family)
        keep = (g.energies >= emin_keV) & (g.energies < energy_keV)
        names = [ln for ln, k in zip(g.lines, keep) if k]
        en = g.energies[keep]
        w = xraydata.fluorescence_cs(sym, names, energy_keV) if names else np.zeros(0)
        ok = w > 1e-3 * w.max() if w.size and w.max() > 0 else np.zeros(w.size, bool)
        names, en, w = [n for n, k in zip(names, ok) if k], en[ok], w[ok]
        _LINE_CACHE[key] = (names, en, w / w.sum() if w.size else w)
    return _LINE_CACHE[key]


@dataclass
class Ctx:
    """The fit window and detector resolution of one identification pass.

    Attributes
    ----------
    e : ndarray
        Energy of each window channel (keV).
    energy_keV, emin : float
        Excitation energy and low-energy cut (keV).
    noise, fano : float
        Electronic noise (keV FWHM) and Fano factor.
    scatter_lo : float
        Start of the scatter region (keV): the 180 deg Compton energy minus 6 % of the excitation.
    sl : slice
        The window's channels in the spectrum.
    cal : tuple of float
        (zero, gain, quadratic) of the spectrum (keV, keV/channel, keV/channel^2).
    """

    e: np.ndarray
    energy_keV: float
    emin: float
    noise: float
    fano: float
    scatter_lo: float
    sl: slice = field(default_factory=lambda: slice(0, 0))
    cal: tuple[float, float, float] = (0.0, 1.0, 0.0)
    de: np.ndarray = field(default_factory=lambda: np.zeros(0))

    def key(self) -> tuple:
        return (round(self.cal[0], 7), round(self.cal[1], 9), round(self.cal[2], 12), round(self.noise, 6),
                round(self.fano, 6), round(self.energy_keV, 5), round(self.emin, 5), self.sl.start, self.sl.stop)


def context(n: int, cal: Sequence[float], energy_keV: float, emin: float, noise: float, fano: float) -> Ctx:
    """The window from ``emin`` (keV) to 4 sigma above the excitation energy, on ``n`` channels."""
    ch = np.arange(n)
    e_all = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    s0 = float(_fwhm_sigma(energy_keV, noise, fano))
    idx = np.flatnonzero((e_all >= emin) & (e_all <= energy_keV + 4 * s0))
    sl = slice(int(idx[0]), int(idx[-1]) + 1)
    lo = xraydata.compton_energy(energy_keV, np.pi) - 0.06 * energy_keV
    e = e_all[sl]
    return Ctx(e, energy_keV, emin, noise, fano, lo, sl, (float(cal[0]), float(cal[1]), float(cal[2])),
               np.abs(np.gradient(e)))


def escaped_lines(sym: str, family: str, energy_keV: float, emin_keV: float) -> tuple[np.ndarray, np.ndarray]:
    """:func:`lines` of a family with their Si K escape peaks: energies (keV) and weights (cached)."""
    key = (sym, family, round(energy_keV, 4), round(emin_keV, 4), "esc")
    if key not in _LINE_CACHE:
        _, en, w = lines(sym, family, energy_keV, emin_keV)
        _LINE_CACHE[key] = _with_escape(en, w) if en.size else (en, w)
    return _LINE_CACHE[key]


def template(energies: np.ndarray, weights: np.ndarray, ctx: Ctx, broaden: float = 1.0,
             escape: bool = True) -> np.ndarray:
    """Gaussians (keV FWHM from ``ctx``'s noise and Fano, times ``broaden``) of ``weights`` at
    ``energies`` (keV), with their Si K escape peaks, as counts per window channel."""
    en = np.asarray(energies, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if escape:
        en, w = _with_escape(en, w)
    sig = _fwhm_sigma(en, ctx.noise, ctx.fano) * broaden
    e = ctx.e
    lo = np.searchsorted(e, en - 6.0 * sig)
    hi = np.searchsorted(e, en + 6.0 * sig)
    out = np.zeros(e.size)
    for E, s, wi, a, b in zip(en, sig, w, lo, hi):
        if b > a:
            out[a:b] += (wi / (_SQRT2PI * s)) * np.exp(-0.5 * ((e[a:b] - E) / s) ** 2) * ctx.de[a:b]
    return out


def family_columns(sym: str, ctx: Ctx, cache: bool = True) -> dict[str, np.ndarray]:
    """Unit-weight templates of ``sym``'s excited families that show outside the scatter region
    (cached per element, family, calibration, resolution and window unless ``cache`` is False)."""
    out = {}
    ck = ctx.key()
    for fam in ("K", "L", "M"):
        key = (sym, fam) + ck
        t = _TEMPLATE_CACHE.get(key, False) if cache else False
        if t is False:
            names, en, w = lines(sym, fam, ctx.energy_keV, ctx.emin)
            t = None
            if names and en.max() >= ctx.e[0] and en.min() <= ctx.e[-1]:
                t = template(*escaped_lines(sym, fam, ctx.energy_keV, ctx.emin), ctx, escape=False)
                # evidence outside the scatter region is needed: a family living there is not identifiable
                if not (t.sum() > 0.3 and t[ctx.e < ctx.scatter_lo].sum() > 0.25):
                    t = None
            if cache:
                _TEMPLATE_CACHE[key] = t
                if len(_TEMPLATE_CACHE) > _TEMPLATE_CACHE_SIZE:
                    _TEMPLATE_CACHE.popitem(last=False)
        if t is not None:
            out[fam] = t
    return out


def scatter_columns(ctx: Ctx) -> np.ndarray:
    """Rayleigh peak, Compton blend, two low-energy tails and broad continuum bumps (unit sums)."""
    e0, e = ctx.energy_keV, ctx.e
    s0 = float(_fwhm_sigma(e0, ctx.noise, ctx.fano))
    cols = [template(np.array([e0]), np.array([1.0]), ctx)]
    for c in np.arange(ctx.scatter_lo + s0, e0 - 0.5 * s0, 1.5 * s0):
        cols.append(template(np.array([c]), np.array([1.0]), ctx, broaden=1.5))
    for beta in (0.3, 1.0):  # incomplete charge collection / multiple scattering below the scatter peaks
        tail = np.where(e < e0, np.exp(np.clip((e - e0) / beta, -50, 0)), 0.0)
        tail = gaussian_filter1d(tail, 2.0)
        cols.append(np.where(tail > 1e-9 * tail.max(), tail, 0.0))
    # what SNIP leaves of the continuum: broad bumps (4x the resolution, >= 0.2 keV sigma), not lines
    c = float(e[0])
    while c < ctx.scatter_lo:
        sb = max(0.2, 4.0 * float(_fwhm_sigma(c, ctx.noise, ctx.fano)))
        x = (e - c) / sb
        cols.append(np.where(np.abs(x) < 6.0, np.exp(-0.5 * x * x), 0.0))  # 6 sigma: columns stay local
        c += 1.5 * sb
    return np.array([c / c.sum() for c in cols if c.max() > 0])


def self_convolution(net: np.ndarray, first: int) -> np.ndarray:
    """Self-convolution of the clipped net spectrum from channel ``first`` on (below the window the
    noise peak is no photon: convolved, it would copy the whole spectrum as 'pile-up')."""
    p = np.clip(net, 0, None)
    p[:first] = 0.0
    nfft = 1 << int(np.ceil(np.log2(2 * p.size)))
    f = np.fft.rfft(p, nfft)
    return np.clip(np.fft.irfft(f * f, nfft)[: 2 * p.size], 0, None)


def pileup_column(conv: np.ndarray, ctx: Ctx) -> np.ndarray:
    """Pile-up at the summed energies, on the window channels: channel ``i + j`` of the
    self-convolution holds ``2 zero + gain (i + j)``, so it is shifted by ``zero / gain`` channels."""
    k = np.arange(ctx.sl.start, ctx.sl.stop) - ctx.cal[0] / ctx.cal[1]
    col = np.interp(k, np.arange(conv.size), conv, left=0, right=0)
    return col / col.sum() if col.sum() > 0 else col


# --------------------------------------------------------------------------- input checks
def prepare(spectrum: np.ndarray, calibration: Sequence[float], energy_keV: float,
            emin_keV: float) -> tuple[np.ndarray, list[float]]:
    """Checked counts (float64) and (zero, gain, quadratic); :class:`InputError` for bad input."""
    y, cal = checked_spectrum(spectrum, calibration)
    if not np.isfinite(energy_keV) or energy_keV <= 0:
        raise InputError(f"excitation energy {energy_keV} keV must be positive")
    ch = np.arange(y.size)
    e = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    n_in = int(((e >= emin_keV) & (e <= energy_keV + 0.5)).sum())
    if n_in < 16:
        raise InputError(f"only {n_in} channels between {emin_keV} keV and the excitation energy: "
                         "check the calibration and the energy")
    return y, cal


def auto_emin(y: np.ndarray, cal: Sequence[float], energy_keV: float, emin: float) -> float:
    """Raise ``emin`` (keV) above an *empty* low-energy part (a filter or a thick absorber): to where
    the smoothed counts first reach 2 % of their median in the window, plus 0.3 keV of rising edge.

    A filter's transmission falls by orders of magnitude below its edge; a continuum that is merely
    low (a quarter of the median, as under the Si K peak of a glass excited at 18 keV) is no filter,
    and a cut there would hide the lines on it.
    """
    ch = np.arange(y.size)
    e = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    win = (e >= emin) & (e <= energy_keV)
    sm = gaussian_filter1d(y, 5.0)
    med = float(np.median(sm[win]))
    idx = np.flatnonzero(win & (sm >= 0.02 * med))
    if idx.size and e[idx[0]] > emin + 0.2:
        log.info("identify: no counts below %.2f keV: lines below %.2f keV ignored", e[idx[0]], e[idx[0]] + 0.3)
        return float(e[idx[0]] + 0.3)
    return emin


# --------------------------------------------------------------------------- NNLS on normal equations
def nnls_gram(G: np.ndarray, h: np.ndarray, passive: np.ndarray | None = None, free: np.ndarray | None = None,
              tol: float = 1e-10, maxiter: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``min x^T G x - 2 h^T x`` with ``x >= 0`` (except the ``free`` columns): Lawson-Hanson on the
    normal equations, warm-started from the ``passive`` set (columns expected > 0).

    The problem is solved in the unit-diagonal scaling of ``G`` (a tiny ridge keeps near-collinear
    columns solvable); columns with a zero diagonal stay at 0.

    Returns
    -------
    x : ndarray
        The solution.
    passive : ndarray of bool
        Columns left free of their bound (the warm start of a next, similar problem).
    """
    n = h.size
    d = np.sqrt(np.clip(np.diag(G), 0, None))
    live = d > 0
    ds = np.where(live, d, 1.0)
    Gs = G / ds[:, None] / ds[None, :]
    Gs[np.diag_indices(n)] += 1e-11
    hs = np.where(live, h / ds, 0.0)
    nonneg = np.ones(n, bool) if free is None else ~free
    P = (np.zeros(n, bool) if passive is None else passive.copy()) & live
    P |= ~nonneg & live
    tol = tol * max(1.0, float(np.abs(hs).max()) if n else 1.0)
    x = np.zeros(n)

    def solve(mask: np.ndarray) -> np.ndarray:
        z = np.zeros(n)
        if mask.any():
            ix = np.flatnonzero(mask)
            z[ix] = np.linalg.solve(Gs[np.ix_(ix, ix)], hs[ix])
        return z

    # warm start: drop the non-positive columns of the passive set until its solution is feasible
    while P.any():
        z = solve(P)
        bad = P & nonneg & (z <= 0)
        if not bad.any():
            x = z
            break
        P &= ~bad
    it, cap = 0, maxiter or 3 * n + 30
    while it < cap:
        g = hs - Gs @ x
        g[P | ~live] = -np.inf
        j = int(np.argmax(g)) if n else 0
        if n == 0 or g[j] <= tol:
            break
        P[j] = True
        while it < cap:
            it += 1
            z = solve(P)
            neg = P & nonneg & (z <= 0)
            if not neg.any():
                x = z
                break
            alpha = np.min(x[neg] / (x[neg] - z[neg]))
            x = x + alpha * (z - x)
            P &= ~(nonneg & (x <= 1e-14 * max(1.0, float(np.abs(x).max()))))
            x[~P] = 0.0
    return x / ds, P
