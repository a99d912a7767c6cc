"""Refinement of the energy calibration and the electronic noise for :mod:`xrfproc.core.identify`.

The line families of the elements selected are fitted (weighted NNLS, with the pile-up column)
below the scatter region while zero, gain and noise move; every evaluation builds all line
Gaussians at once (one vectorised pass over +-6 sigma channel windows), so a refinement of
~150 evaluations costs a few tens of milliseconds.
"""
from __future__ import annotations

import logging
from typing import Sequence

import numpy as np
from scipy.optimize import minimize

from . import xraydata
from .identify_model import context, escaped_lines, lines, nnls_gram, pileup_column
from .suggest import _fwhm_sigma

log = logging.getLogger(__name__)
_SQRT2PI = float(np.sqrt(2.0 * np.pi))


def _columns(en: np.ndarray, w: np.ndarray, col: np.ndarray, ncol: int, e: np.ndarray, noise: float,
             fano: float) -> np.ndarray:
    """Templates (ncol, len(e)): line ``k`` (keV ``en[k]``, weight ``w[k]``) added to column ``col[k]``."""
    n = e.size
    sig = _fwhm_sigma(en, noise, fano)
    de = np.abs(np.gradient(e))
    lo = np.searchsorted(e, en - 6.0 * sig)
    span = int(np.ceil(12.0 * float(sig.max()) / float(de.min()))) + 2
    ix = lo[:, None] + np.arange(span)[None, :]
    ok = ix < n
    ixc = np.minimum(ix, n - 1)
    x = (e[ixc] - en[:, None]) / sig[:, None]
    ok &= np.abs(x) < 6.0
    v = np.where(ok, (w / (_SQRT2PI * sig))[:, None] * np.exp(-0.5 * x * x) * de[ixc], 0.0)
    flat = (col[:, None] * n + ixc).ravel()
    return np.bincount(flat, weights=v.ravel(), minlength=ncol * n).reshape(ncol, n)


def refine_calibration(y: np.ndarray, net: np.ndarray, conv: np.ndarray, cal0: Sequence[float], energy_keV: float,
                       emin: float, noise: float, fano: float, families: dict[str, Sequence[str]],
                       w_full: np.ndarray, prior_keV: float = 0.05) -> tuple[list[float], float]:
    """Refine zero, gain and noise (keV, keV/channel, keV FWHM) on ``families`` (element -> K/L/M)
    below the scatter region, starting from ``cal0`` and ``noise``.

    The offset is scanned first (+-100 eV in 10 eV steps, a quarter of a low-energy line's sigma):
    a simplex started 20 eV off can settle on a neighbouring minimum where one element's Ka sits on
    another's Kb. The simplex then moves the shifts at two energies of the lines (a quarter and
    three quarters of their span, at least 2 keV apart) and the noise, nearly independent
    directions, unlike zero and gain. The shifts from ``cal0`` at the ends of the window (``emin``,
    the 180 deg Compton energy) pay a Gaussian prior of ``prior_keV`` and stay within +-120 eV, the
    gain within +-3 %: where few counts leave the chi-square flat (a weak spectrum with broad
    lines), the calibration stays near the one given.

    Parameters
    ----------
    y, net : ndarray
        Counts and SNIP-net counts per channel.
    conv : ndarray
        Self-convolution of the net spectrum (:func:`xrfproc.core.identify_model.self_convolution`).
    w_full : ndarray
        Channel weights (1 / sigma) of the selection, per spectrum channel.

    Returns
    -------
    (zero, gain, quadratic), noise
    """
    cal = [float(c) for c in cal0]
    if not families:
        return cal, noise
    n = y.size
    parts = [(escaped_lines(s, f, energy_keV, emin), k) for k, (s, f) in
             enumerate((s, f) for s, fams in families.items() for f in fams)]
    ncol = len(parts)
    en = np.concatenate([p[0][0] for p in parts])
    wl = np.concatenate([p[0][1] for p in parts])
    col = np.concatenate([np.full(p[0][0].size, p[1]) for p in parts])
    ens = np.concatenate([lines(s, f, energy_keV, emin)[1] for s, fams in families.items() for f in fams])
    e1, e2 = (float(np.quantile(ens, 0.25)), float(np.quantile(ens, 0.75))) if ens.size else (2.0, 8.0)
    if e2 - e1 < 2.0:
        e1, e2 = 0.5 * (e1 + e2) - 1.0, 0.5 * (e1 + e2) + 1.0
    ch1, ch2 = (e1 - cal[0]) / cal[1], (e2 - cal[0]) / cal[1]
    ends = [(E - cal[0]) / cal[1] for E in (max(emin, cal[0]), xraydata.compton_energy(energy_keV, np.pi))]

    def chi2(p: np.ndarray) -> float:
        d1, d2, nz = p
        dg = (d2 - d1) / (ch2 - ch1)
        dz = d1 - dg * ch1
        t1, t2 = (dz + dg * ch for ch in ends)
        if max(abs(t1), abs(t2)) > 0.12 or abs(dg) > 0.03 * cal[1] or not 0.04 <= nz <= 0.3:
            return 1e300
        ctx = context(n, [cal[0] + dz, cal[1] + dg, cal[2]], energy_keV, emin, nz, fano)
        m = ctx.e < ctx.scatter_lo
        e = ctx.e[m]
        cols = _columns(en, wl, col, ncol, e, nz, fano)
        A = np.vstack([cols, pileup_column(conv, ctx)[m][None, :]]) * w_full[ctx.sl][m]
        bw = net[ctx.sl][m] * w_full[ctx.sl][m]
        G, h = A @ A.T, A @ bw
        a, _ = nnls_gram(G, h, np.ones(len(A), bool))
        return float(bw @ bw - 2 * a @ h + a @ G @ a) + (t1 * t1 + t2 * t2) / prior_keV ** 2

    x0 = min((chi2(np.array([d, d, noise])), d) for d in np.arange(-0.1, 0.1001, 0.01))[1]
    p0 = np.array([x0, x0, noise])
    simplex = np.array([p0, p0 + [0.01, 0, 0], p0 + [0, 0.01, 0], p0 + [0, 0, 0.02]])
    res = minimize(chi2, p0, method="Nelder-Mead",
                   options={"initial_simplex": simplex, "maxfev": 120, "xatol": 2e-4, "fatol": 1e-3})
    d1, d2, nz = res.x if res.fun < chi2(np.array([0.0, 0.0, noise])) else (0.0, 0.0, noise)
    dg = (d2 - d1) / (ch2 - ch1)
    dz = d1 - dg * ch1
    log.info("identify: calibration refined by %+.1f eV at %.1f keV, %+.1f eV at %.1f keV, noise %.3f keV",
             1e3 * d1, e1, 1e3 * d2, e2, nz)
    return [cal[0] + dz, cal[1] + dg, cal[2]], float(nz)
