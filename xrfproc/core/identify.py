"""Element identification as a spectroscopist does it: line patterns, overlaps, parsimony.

Method
------
1. The background is removed by SNIP; the fit window runs from ``emin_keV`` to the excitation
   energy (or the end of the spectrum).
2. Every candidate element has one column per excited line family (K, L, M): Gaussians at all its
   lines with the *fixed* ratios of their fluorescence production cross sections, with their Si K
   escape peaks, so a family only fits where its whole pattern (Ka with Kb, La with Lb and Lg) is.
   The scatter is modelled by a Rayleigh peak, a flexible Compton blend (Gaussians between the
   180 deg Compton energy minus 6 % and the excitation) and two low-energy tails; pile-up by the
   self-convolution of the net spectrum. None of these is an element.
3. Model selection on a weighted chi-square, the variance of a channel being ``counts + (f model)^2``
   (``f = systematic``: line shapes and ratios are not exact, so a 10^5-count peak does not buy
   an element for its 1 % shape error): forward selection, first among the K readings of common
   elements, then among all, each element paying a penalty ``k^2`` in chi-square that grows from
   a common element's K lines (``k = min_significance``) to L lines, rare elements and M lines;
   then backward elimination with the same penalties, so an L or M reading of peaks that K lines
   of the elements retained explain is dropped.
4. The energy calibration (zero, gain) and the electronic noise are refined on the first
   selection (+-60 eV, +-2 %), and the selection is repeated with them.
5. Each element retained must show its pattern: where a sub-group of a family (Kb, the L2 or L1
   lines) is expected at >= 3 sigma, its free fit must reach ``0.25`` of the expected area; an L or
   M reading of an element not in :data:`COMMON_L` / :data:`COMMON_M` must have such a testable
   sub-group. An element must also hold half of the line model at one of its main lines.
6. Significant residual peaks (outside the scatter region) are reported as unexplained.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.optimize import minimize, nnls
from scipy.signal import find_peaks

from ..errors import InputError
from . import xraydata
from .snip import snip1d
from .suggest import DEFAULT_CANDIDATES, _fwhm_sigma, _subgroups, _template

log = logging.getLogger(__name__)

#: elements whose K lines are commonly seen (rock, soil, biology, alloys, air); other K readings pay more
COMMON_K = frozenset("Na Mg Al Si P S Cl Ar K Ca Ti V Cr Mn Fe Co Ni Cu Zn As Se Br Rb Sr Y Zr Nb Mo".split())
#: elements whose L lines are commonly seen
COMMON_L = frozenset("Mo Ru Rh Pd Ag Cd Sn Sb Te I Cs Ba La Ce Nd W Re Os Ir Pt Au Hg Tl Pb Bi Th U".split())
#: elements whose M lines are commonly seen
COMMON_M = frozenset("W Pt Au Hg Pb Bi Th U".split())
#: air: reported with kind "air"
AIR = ("Ar",)


@dataclass
class Peak:
    """A peak of the net spectrum.

    Attributes
    ----------
    energy_keV : float
        Position (keV, refined calibration).
    net_counts : float
        Net counts within +-1 FWHM.
    significance : float
        ``net / sqrt(variance)`` over the same channels (Poisson plus the systematic model term).
    explained_by : tuple of str
        Elements (or ``"scatter"``, ``"pile-up"``) holding >= 20 % of the model there.
    """

    energy_keV: float
    net_counts: float
    significance: float
    explained_by: tuple[str, ...] = ()


@dataclass
class ElementEvidence:
    """Why an element was identified.

    Attributes
    ----------
    element : str
    families : tuple of str
        Families fitted (``"K"``, ``"L"``, ``"M"``); ``reading`` is the one carrying the evidence.
    lines : dict family -> list of (line, energy keV, expected net counts)
        The family area shared by the lines' fixed ratios (lines under 1 % of the family omitted).
    area, sigma : dict family -> float
        Net counts of each family (escape peaks included) and their standard deviation.
    significance : float
        ``sqrt(chi2 increase)`` when the element is removed from the final model.
    peaks : list of Peak
        Observed peaks the element explains (>= 20 % of the model there).
    kind : str
        ``"sample"``, ``"air"`` (Ar) or ``"instrument"`` (given in ``instrument=``).
    pattern : dict str -> float
        Fitted / expected area of each testable sub-group (``"Kb"``, ``"L2"`` ...).
    """

    element: str
    families: tuple[str, ...]
    reading: str
    lines: dict[str, list[tuple[str, float, float]]]
    area: dict[str, float]
    sigma: dict[str, float]
    significance: float
    peaks: list[Peak] = field(default_factory=list)
    kind: str = "sample"
    pattern: dict[str, float] = field(default_factory=dict)


@dataclass
class Identification:
    """Result of :func:`identify_elements`.

    Attributes
    ----------
    elements : list of ElementEvidence
        Strongest (total net counts) first.
    unexplained : list of Peak
        Significant peaks of the residual outside the scatter region.
    calibration : tuple of float
        The refined (zero keV, gain keV/channel, quadratic keV/channel^2).
    noise : float
        The refined electronic noise (keV FWHM).
    chi2_reduced : float
        Of the final model (systematic term included).
    """

    elements: list[ElementEvidence]
    unexplained: list[Peak]
    calibration: tuple[float, float, float]
    noise: float
    chi2_reduced: float

    @property
    def names(self) -> list[str]:
        """Element symbols, strongest first (air and instrument elements included: they are fitted)."""
        return [e.element for e in self.elements]

    @property
    def sample_names(self) -> list[str]:
        """Only the elements of kind ``"sample"``."""
        return [e.element for e in self.elements if e.kind == "sample"]


# --------------------------------------------------------------------------- model columns
_LINE_CACHE: dict[tuple[str, str, float, float], tuple[list[str], np.ndarray, np.ndarray]] = {}


def _lines(sym: str, family: str, energy_keV: float, emin_keV: float) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Excited lines of a family above ``emin_keV``: names, energies keV, weights summing to 1."""
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
class _Ctx:
    e: np.ndarray            # energy axis of the window (keV)
    energy_keV: float
    emin: float
    noise: float
    fano: float
    scatter_lo: float        # start of the scatter region (keV)


def _family_columns(sym: str, ctx: _Ctx) -> dict[str, np.ndarray]:
    out = {}
    for fam in ("K", "L", "M"):
        names, en, w = _lines(sym, fam, ctx.energy_keV, ctx.emin)
        if not names or en.max() < ctx.e[0] or en.min() > ctx.e[-1]:
            continue
        t = _template(en, w, ctx.e, ctx.noise, ctx.fano, escape=True)
        # evidence outside the scatter region is needed: a family living there is not identifiable
        if t.sum() > 0.3 and t[ctx.e < ctx.scatter_lo].sum() > 0.25:
            out[fam] = t
    return out


def _scatter_columns(ctx: _Ctx) -> np.ndarray:
    e0, e = ctx.energy_keV, ctx.e
    s0 = float(_fwhm_sigma(e0, ctx.noise, ctx.fano))
    cols = [_template(np.array([e0]), np.array([1.0]), e, ctx.noise, ctx.fano, escape=True)]
    for c in np.arange(ctx.scatter_lo + s0, e0 - 0.5 * s0, 1.5 * s0):
        cols.append(_template(np.array([c]), np.array([1.0]), e, ctx.noise, ctx.fano, broaden=1.5, escape=True))
    for beta in (0.3, 1.0):  # incomplete charge collection / multiple scattering below the scatter peaks
        tail = np.where(e < e0, np.exp(np.clip((e - e0) / beta, -50, 0)), 0.0)
        cols.append(gaussian_filter1d(tail, 2.0))
    # what SNIP leaves of the continuum: broad bumps (4x the resolution, >= 0.2 keV sigma), not lines
    c = float(e[0])
    while c < ctx.scatter_lo:
        sb = max(0.2, 4.0 * float(_fwhm_sigma(c, ctx.noise, ctx.fano)))
        cols.append(np.exp(-0.5 * ((e - c) / sb) ** 2))
        c += 1.5 * sb
    return np.array([c / c.sum() for c in cols if c.max() > 0])


def _pileup_column(net: np.ndarray, cal: Sequence[float], first: int, n: int) -> np.ndarray:
    """Self-convolution of the (clipped) net spectrum placed at the summed energies, window channels."""
    p = np.clip(net, 0, None)
    conv = np.convolve(p, p)[: net.size + first + n]
    # channel i + j holds zero_i + zero_j = 2 zero + gain (i + j): shift by zero / gain channels
    k = np.arange(first, first + n) - cal[0] / cal[1]
    col = np.interp(k, np.arange(conv.size), conv, left=0, right=0)
    return col / col.sum() if col.sum() > 0 else col


# --------------------------------------------------------------------------- fitting helpers
def _fit(cols: np.ndarray, b: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, float]:
    """Weighted NNLS; ``cols`` (ncols, nchan). Returns areas and chi-square."""
    if cols.shape[0] == 0:
        return np.zeros(0), float(((b * w) ** 2).sum())
    a, rn = nnls((cols * w).T, b * w, maxiter=50 * cols.shape[0] + 200)
    return a, float(rn * rn)


def _penalty(sym: str, reading: str, k_min: float, k_excited: bool = True) -> float:
    """Chi-square penalty of an element read by its ``reading`` family; an L reading of an element whose
    K lines are not excited (or out of the window) is its natural one and pays as a K reading does."""
    if reading == "L" and not k_excited and sym in COMMON_L:
        return k_min * k_min
    if reading == "K":
        k = k_min if sym in COMMON_K else k_min + 1.5
    elif reading == "L":
        k = k_min + 1.0 if sym in COMMON_L else k_min + 6.0
    else:
        k = k_min + 3.0 if sym in COMMON_M else k_min + 6.0
    return k * k


class _Selector:
    """Penalised forward / backward selection of element column groups over fixed columns."""

    def __init__(self, ctx: _Ctx, fixed: np.ndarray, groups: dict[str, dict[str, np.ndarray]], b: np.ndarray,
                 y: np.ndarray, systematic: float, k_min: float):
        self.ctx, self.fixed, self.groups, self.b, self.y = ctx, fixed, groups, b, y
        self.var0 = np.maximum(y, 1.0)
        self.f, self.k_min = systematic, k_min
        self.w = 1.0 / np.sqrt(self.var0)

    def columns(self, members: Sequence[str]) -> tuple[np.ndarray, list[tuple[str, str]]]:
        cols, labels = [self.fixed], [("", "")] * len(self.fixed)
        for s in members:
            for fam, c in self.groups[s].items():
                cols.append(c[None, :])
                labels.append((s, fam))
        return np.concatenate(cols), labels

    def fit(self, members: Sequence[str]) -> tuple[np.ndarray, float, np.ndarray, list[tuple[str, str]]]:
        cols, labels = self.columns(members)
        a, chi2 = _fit(cols, self.b, self.w)
        return a, chi2, cols, labels

    def reweight(self, members: Sequence[str]) -> None:
        a, _, cols, _ = self.fit(members)
        self.w = 1.0 / np.sqrt(self.var0 + (self.f * (a @ cols)) ** 2)

    def reading(self, sym: str, a: np.ndarray, cols: np.ndarray, labels: list[tuple[str, str]]) -> str:
        best, fam_best = -1.0, "K"
        for i, (s, fam) in enumerate(labels):
            if s == sym:
                v = float(((a[i] * cols[i] * self.w) ** 2).sum())
                if v > best:
                    best, fam_best = v, fam
        return fam_best

    def local_scale(self, sym: str, a: np.ndarray, cols: np.ndarray) -> float:
        """Reduced chi-square of the model around ``sym``'s lines (weights: its templates), >= 1: a
        chi-square gain where the model misfits a strong neighbour counts for less."""
        u = sum(self.groups[sym].values())
        u = u / u.max()
        r2 = ((self.b - a @ cols) * self.w) ** 2
        return max(1.0, float(u @ r2 / u.sum()))

    def dominant(self, sym: str, a: np.ndarray, cols: np.ndarray, labels: list[tuple[str, str]]) -> bool:
        """Does ``sym`` hold >= half of the line and pile-up model at one of its main lines (>= 10 % of
        a family)? A reading hidden under another element's peak is no evidence."""
        nf = len(self.fixed)
        lines_model = a[nf - 1:] @ cols[nf - 1:]
        own = sum(a[i] * cols[i] for i, (m, _) in enumerate(labels) if m == sym)
        if not np.ndim(own):
            return False
        for fam in self.groups[sym]:
            _, en, w = _lines(sym, fam, self.ctx.energy_keV, self.ctx.emin)
            for E in en[w >= 0.1]:
                i = int(np.argmin(np.abs(self.ctx.e - E)))
                if lines_model[i] > 0 and own[i] >= 0.5 * lines_model[i]:
                    return True
        return False

    def score(self, sym: str, members: Sequence[str], chi2_without: float) -> float:
        """Penalised, locally scaled chi-square gain of ``sym`` within ``members`` (which hold it)."""
        a, chi2, cols, labels = self.fit(list(members))
        if not self.dominant(sym, a, cols, labels):
            return -np.inf
        gain = (chi2_without - chi2) / self.local_scale(sym, a, cols)
        return gain - _penalty(sym, self.reading(sym, a, cols, labels), self.k_min, "K" in self.groups[sym])

    def forward(self, members: list[str], candidates: Sequence[str], n_exact: int = 6) -> list[str]:
        rejected: set[str] = set()
        while True:
            self.reweight(members)
            a, chi2, cols, _ = self.fit(members)
            r = (self.b - a @ cols) * self.w
            scores = []
            for s in candidates:
                if s in members or s in rejected:
                    continue
                gains = {}
                for fam, c in self.groups[s].items():
                    cw = c * self.w
                    p = float(cw @ r)
                    gains[fam] = p * p / float(cw @ cw) if p > 0 else 0.0
                reading = max(gains, key=gains.get)
                pen = _penalty(s, reading, self.k_min, "K" in self.groups[s])
                scores.append((sum(gains.values()) - pen, pen, s))
            scores.sort(reverse=True)
            best, best_s = 0.0, None
            for sc, pen, s in scores[:n_exact]:
                if sc <= -0.5 * pen:  # the projection is only an estimate of the gain: look a little further
                    break
                gain = self.score(s, members + [s], chi2)
                if gain > best:
                    best, best_s = gain, s
                elif gain <= 0:
                    rejected.add(s)
            if best_s is None:
                return members
            log.debug("forward: + %s (penalised chi2 gain %.1f)", best_s, best)
            members = members + [best_s]

    def backward(self, members: list[str]) -> list[str]:
        while members:
            self.reweight(members)
            worst, worst_s = 0.0, None
            for s in members:
                _, chi2_wo, _, _ = self.fit([m for m in members if m != s])
                score = self.score(s, members, chi2_wo)
                if score < worst:
                    worst, worst_s = score, s
            if worst_s is None:
                return members
            log.debug("backward: - %s (penalised chi2 loss %.1f)", worst_s, worst)
            members = [m for m in members if m != worst_s]
        return members

    def swap(self, members: list[str], candidates: Sequence[str], max_score: float = 400.0) -> list[str]:
        """Replace a weakly needed member by a non-member reading the same peaks if that scores better
        (S K against Mo L at 2.3 keV: the forward order must not decide)."""
        for s in list(members):
            if s not in members:
                continue
            self.reweight(members)
            rest = [m for m in members if m != s]
            _, chi2_wo, _, _ = self.fit(rest)
            own = self.score(s, members, chi2_wo)
            if own > max_score:
                continue
            us = sum(self.groups[s].values())
            best, best_c = own, None
            for c in candidates:
                if c in members:
                    continue
                uc = sum(self.groups[c].values())
                if float(us @ uc) < 0.3 * np.sqrt(float(us @ us) * float(uc @ uc)):
                    continue
                sc = self.score(c, rest + [c], chi2_wo)
                if sc > best:
                    best, best_c = sc, c
            if best_c is not None:
                log.debug("swap: %s -> %s (%.1f -> %.1f)", s, best_c, own, best)
                members = rest + [best_c]
        return members

    def select(self, candidates: Sequence[str]) -> list[str]:
        # first the elements read at the lowest penalty: K lines of common elements, L lines of common
        # heavy elements whose K lines are not excited
        tier1 = [s for s in candidates if (s in COMMON_K and "K" in self.groups[s])
                 or (s in COMMON_L and "K" not in self.groups[s] and "L" in self.groups[s])]
        members = self.forward([], tier1)
        members = self.forward(members, list(candidates))
        return self.backward(self.swap(self.backward(members), candidates))


# --------------------------------------------------------------------------- the steps
def _prepare(spectrum: np.ndarray, calibration: Sequence[float], energy_keV: float,
             emin_keV: float) -> tuple[np.ndarray, list[float]]:
    y = np.asarray(spectrum, dtype=np.float64)
    if y.ndim != 1 or y.size < 16:
        raise InputError(f"need a 1-D spectrum of at least 16 channels, got shape {y.shape}")
    if not np.isfinite(y).all() or y.min() < 0:
        raise InputError("the spectrum holds NaN, infinite or negative counts")
    if y.sum() <= 0:
        raise InputError("the spectrum has no counts")
    cal = [float(c) for c in calibration] + [0.0] * (3 - len(calibration))
    if len(cal) != 3:
        raise InputError(f"calibration must be (zero, gain) or (zero, gain, quadratic), got {tuple(calibration)}")
    if cal[1] <= 0:
        raise InputError(f"calibration gain {cal[1]} keV/channel must be positive")
    if not np.isfinite(energy_keV) or energy_keV <= 0:
        raise InputError(f"excitation energy {energy_keV} keV must be positive")
    ch = np.arange(y.size)
    e = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    n_in = int(((e >= emin_keV) & (e <= energy_keV + 0.5)).sum())
    if n_in < 16:
        raise InputError(f"only {n_in} channels between {emin_keV} keV and the excitation energy: "
                         "check the calibration and the energy")
    return y, cal


def _auto_emin(y: np.ndarray, cal: Sequence[float], energy_keV: float, emin: float) -> float:
    """Raise ``emin`` above an empty low-energy part (a filter or a thick absorber): to where the
    smoothed counts first reach a quarter of their median in the window, plus 0.3 keV of rising edge."""
    ch = np.arange(y.size)
    e = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    win = (e >= emin) & (e <= energy_keV)
    sm = gaussian_filter1d(y, 5.0)
    med = float(np.median(sm[win]))
    idx = np.flatnonzero(win & (sm >= 0.25 * med))
    if idx.size and e[idx[0]] > emin + 0.2:
        log.info("identify: no counts below %.2f keV: lines below %.2f keV ignored", e[idx[0]], e[idx[0]] + 0.3)
        return float(e[idx[0]] + 0.3)
    return emin


def _context(y: np.ndarray, cal: Sequence[float], energy_keV: float, emin: float, noise: float,
             fano: float) -> tuple[_Ctx, slice]:
    ch = np.arange(y.size)
    e_all = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    s0 = float(_fwhm_sigma(energy_keV, noise, fano))
    idx = np.flatnonzero((e_all >= emin) & (e_all <= energy_keV + 4 * s0))
    sl = slice(int(idx[0]), int(idx[-1]) + 1)
    lo = xraydata.compton_energy(energy_keV, np.pi) - 0.06 * energy_keV
    return _Ctx(e_all[sl], energy_keV, emin, noise, fano, lo), sl


def _build(y: np.ndarray, net: np.ndarray, cal: Sequence[float], energy_keV: float, emin: float, noise: float,
           fano: float, candidates: Sequence[str]) -> tuple[_Ctx, slice, np.ndarray, dict[str, dict[str, np.ndarray]]]:
    ctx, sl = _context(y, cal, energy_keV, emin, noise, fano)
    fixed = np.concatenate([_scatter_columns(ctx), _pileup_column(net, cal, sl.start, sl.stop - sl.start)[None, :]])
    groups = {}
    for s in candidates:
        cols = _family_columns(s, ctx)
        if cols:
            groups[s] = cols
    return ctx, sl, fixed, groups


def _refine(y: np.ndarray, net: np.ndarray, cal: list[float], energy_keV: float, emin: float, noise: float,
            fano: float, members: Sequence[str], w_full: np.ndarray) -> tuple[list[float], float]:
    """Refine zero, gain and noise on the element families of ``members`` below the scatter region."""
    if not members:
        return cal, noise

    def chi2(p: np.ndarray) -> float:
        dz, dg, nz = p
        if abs(dz) > 0.1 or abs(dg) > 0.03 or not 0.04 <= nz <= 0.3:
            return 1e300
        c = [cal[0] + dz, cal[1] * (1 + dg), cal[2]]
        ctx, sl = _context(y, c, energy_keV, emin, nz, fano)
        cols = [col for s in members for col in _family_columns(s, ctx).values()]
        cols.append(_pileup_column(net, c, sl.start, sl.stop - sl.start))
        m = ctx.e < ctx.scatter_lo
        _, x2 = _fit(np.array(cols)[:, m], net[sl][m], w_full[sl][m])
        return x2

    p0 = np.array([0.0, 0.0, noise])
    simplex = np.array([p0, p0 + [0.015, 0, 0], p0 + [0, 0.004, 0], p0 + [0, 0, 0.02]])
    res = minimize(chi2, p0, method="Nelder-Mead",
                   options={"initial_simplex": simplex, "maxfev": 90, "xatol": 1e-4, "fatol": 1e-3})
    dz, dg, nz = res.x if res.fun < chi2(p0) else p0
    log.info("identify: calibration refined by %+.1f eV, gain x %.4f, noise %.3f keV", 1e3 * dz, 1 + dg, nz)
    return [cal[0] + dz, cal[1] * (1 + dg), cal[2]], float(nz)


def _pattern(sel: _Selector, members: list[str], ctx: _Ctx, sym: str) -> dict[str, float]:
    """Fitted / expected area of the testable sub-groups of ``sym`` (its other sub-groups and the
    other elements' families fixed in ratio)."""
    out = {}
    others = [m for m in members if m != sym]
    base, _ = sel.columns(others)
    for fam in sel.groups[sym]:
        names, en, w = _lines(sym, fam, ctx.energy_keV, ctx.emin)
        subs = _subgroups(fam, names)
        if len(subs) < 2:
            continue
        keys = list(subs)
        share = np.array([w[subs[k]].sum() for k in keys])
        cols = np.array([_template(en[subs[k]], w[subs[k]], ctx.e, ctx.noise, ctx.fano, escape=True) for k in keys])
        allc = np.concatenate([base, cols])
        a, _ = _fit(allc, sel.b, sel.w)
        act = a > 0
        aw = allc[act] * sel.w
        cov = np.linalg.pinv(aw @ aw.T)
        sig = np.full(a.size, np.inf)
        sig[act] = np.sqrt(np.clip(np.diag(cov), 0, None))
        sub_a, sub_s = a[len(base):], sig[len(base):]
        ref = int(np.argmax(share))
        if sub_a[ref] <= 0:
            continue
        for i, k in enumerate(keys):  # the columns' coefficients are family areas: equal if the ratios hold
            if i != ref and share[i] >= 0.05 * share.sum() and sub_a[ref] >= 3 * sub_s[i]:
                out[k] = float(sub_a[i] / sub_a[ref])
    return out


def _peaks(signal: np.ndarray, var: np.ndarray, e: np.ndarray, ctx: _Ctx, min_sig: float) -> list[Peak]:
    gain = float(np.mean(np.diff(e)))
    out = []
    sm = gaussian_filter1d(signal, max(1.0, 0.5 * float(_fwhm_sigma(5.0, ctx.noise, ctx.fano)) / gain))
    idx, _ = find_peaks(sm, prominence=2.0 * np.sqrt(var.mean() / max(1, signal.size)) + 1e-12)
    for i in idx:
        half = max(1, int(round(2.3548 * float(_fwhm_sigma(e[i], ctx.noise, ctx.fano)) / gain)))
        win = slice(max(0, i - half), i + half + 1)
        s = float(signal[win].sum())
        sig = s / np.sqrt(float(var[win].sum()))
        if sig >= min_sig:
            out.append(Peak(float(e[i]), s, float(sig)))
    return out


def identify_elements(spectrum: np.ndarray, calibration: Sequence[float], energy_keV: float, *,
                      noise: float = 0.1, fano: float = 0.114, candidates: Sequence[str] | None = None,
                      emin_keV: float = 1.0, snipwidth: int = 30, min_significance: float = 5.0,
                      systematic: float = 0.03, refine: bool = True, unexplained_sigma: float = 5.0,
                      instrument: Sequence[str] = (), min_fraction: float | None = None,
                      trace_fraction: float | None = None, trace_sigma: float | None = None,
                      min_local: float | None = None, escape: bool = True) -> Identification:
    """Identify the elements of a spectrum from their line patterns (see the module docstring).

    Parameters
    ----------
    spectrum : ndarray, shape (nbins,)
        Counts per channel (a sum spectrum is best).
    calibration : (zero, gain) or (zero, gain, quadratic)
        Energy of channel ``k``: ``zero + gain k + quadratic k^2`` in keV; +-50 eV off is refined.
    energy_keV : float
        Excitation energy (keV).
    noise, fano : float
        Detector resolution: electronic noise (keV FWHM; refined) and Fano factor.
    candidates : sequence of str, optional
        Elements to consider (default Na..U without noble gases but Ar, Tc, Pm, Po..Pa).
    emin_keV : float
        Lines and channels below this energy are ignored (keV).
    snipwidth : int
        SNIP width of the background (channels).
    min_significance : float
        ``k`` of a common element's K reading: it must lower the chi-square by ``k^2``; L, rare and
        M readings pay ``(k + 1 .. k + 6)^2``.
    systematic : float
        Relative model error ``f`` added to the variance as ``(f model)^2``.
    refine : bool
        Refine zero, gain and noise on the first selection.
    unexplained_sigma : float
        Residual peaks at least this significant are reported in ``unexplained``.
    instrument : sequence of str
        Elements of the detector or beamline (collimator, window, contacts): reported with kind
        ``"instrument"``.

    min_fraction, trace_fraction, trace_sigma, min_local, escape
        Options of the former NNLS-share method (:func:`xrfproc.core.suggest.score_elements`),
        accepted so callers of ``suggest_elements_spectrum`` keep working; not used (escape peaks are
        always modelled).

    Returns
    -------
    Identification

    Raises
    ------
    InputError
        For a spectrum that is not 1-D, has negative or no counts, a non-positive gain or energy,
        or fewer than 16 channels between ``emin_keV`` and the excitation energy.
    """
    y, cal = _prepare(spectrum, calibration, energy_keV, emin_keV)
    emin_keV = _auto_emin(y, cal, energy_keV, emin_keV)
    cands = [xraydata.symbol(c) for c in (candidates or DEFAULT_CANDIDATES)]
    instr = {xraydata.symbol(c) for c in instrument}
    net = y - snip1d(y, snipwidth)
    ctx, sl, fixed, groups = _build(y, net, cal, energy_keV, emin_keV, noise, fano, cands)
    sel = _Selector(ctx, fixed, groups, net[sl], y[sl], systematic, min_significance)
    members = sel.select([c for c in cands if c in groups])
    if refine:
        a, _, cols, labels = sel.fit(members)
        strength = {s: float(sum(((a[i] * cols[i] * sel.w) ** 2).sum() for i, (m, _) in enumerate(labels) if m == s))
                    for s in members}
        top = sorted(members, key=lambda s: -strength[s])[:8]
        w_full = np.zeros(y.size)
        w_full[sl] = sel.w
        cal, noise = _refine(y, net, cal, energy_keV, emin_keV, noise, fano, top, w_full)
        ctx, sl, fixed, groups = _build(y, net, cal, energy_keV, emin_keV, noise, fano, cands)
        sel = _Selector(ctx, fixed, groups, net[sl], y[sl], systematic, min_significance)
        members = sel.select([c for c in cands if c in groups])
    # pattern: each sub-group expected at >= 3 sigma must be there
    while True:
        sel.reweight(members)
        a, _, cols, labels = sel.fit(members)
        failed = []
        for s in members:
            pat = _pattern(sel, members, ctx, s)
            reading = sel.reading(s, a, cols, labels)
            rare = (reading == "L" and s not in COMMON_L) or (reading == "M" and s not in COMMON_M)
            if any(v < 0.25 for v in pat.values()) or (rare and not pat):  # a rare reading must show its pattern
                failed.append(s)
        if not failed:
            break
        log.info("identify: %s dropped: line pattern incomplete", ", ".join(failed))
        members = sel.backward([m for m in members if m not in failed])
    return _evidence(sel, members, ctx, sl, y, net, cal, noise, instr, unexplained_sigma)


def _evidence(sel: _Selector, members: list[str], ctx: _Ctx, sl: slice, y: np.ndarray, net: np.ndarray,
              cal: Sequence[float], noise: float, instr: set[str], unexplained_sigma: float) -> Identification:
    sel.reweight(members)
    a, chi2, cols, labels = sel.fit(members)
    act = a > 0
    aw = cols[act] * sel.w
    sig = np.full(a.size, np.inf)
    sig[act] = np.sqrt(np.clip(np.diag(np.linalg.pinv(aw @ aw.T)), 0, None))
    model = a @ cols
    var = sel.var0 + (sel.f * model) ** 2
    nf = len(sel.fixed)
    parts = {"scatter": a[:nf - 1] @ cols[:nf - 1], "pile-up": a[nf - 1] * cols[nf - 1]}
    for s in members:
        parts[s] = sum(a[i] * cols[i] for i, (m, _) in enumerate(labels) if m == s)
    observed = _peaks(net[sl], var, ctx.e, ctx, 3.0)
    for p in observed:
        i = int(np.argmin(np.abs(ctx.e - p.energy_keV)))
        win = slice(max(0, i - 2), i + 3)
        tot = float(model[win].sum())
        if tot > 0:
            p.explained_by = tuple(k for k, v in parts.items() if np.ndim(v) and float(v[win].sum()) >= 0.2 * tot)
    elements = []
    for s in members:
        _, chi2_wo, _, _ = sel.fit([m for m in members if m != s])
        fams = [(i, fam) for i, (m, fam) in enumerate(labels) if m == s]
        lines = {}
        for i, fam in fams:
            names, en, w = _lines(s, fam, ctx.energy_keV, ctx.emin)
            lines[fam] = [(n, float(E), float(a[i] * wi)) for n, E, wi in zip(names, en, w) if wi >= 0.01]
        kind = "instrument" if s in instr else "air" if s in AIR else "sample"
        elements.append(ElementEvidence(
            element=s, families=tuple(f for _, f in fams), reading=sel.reading(s, a, cols, labels), lines=lines,
            area={f: float(a[i]) for i, f in fams}, sigma={f: float(sig[i]) for i, f in fams},
            significance=float(np.sqrt(max(chi2_wo - chi2, 0.0))),
            peaks=[p for p in observed if s in p.explained_by], kind=kind,
            pattern=_pattern(sel, members, ctx, s)))
    elements.sort(key=lambda ev: -sum(ev.area.values()))
    resid = net[sl] - model
    unexplained = [p for p in _peaks(resid, var, ctx.e, ctx, unexplained_sigma) if p.energy_keV < ctx.scatter_lo]
    dof = max(1, resid.size - int(act.sum()))
    log.info("identify: %s; unexplained peaks at %s keV", ", ".join(f"{e.element} ({e.significance:.0f})" for e in elements),
             ", ".join(f"{p.energy_keV:.2f}" for p in unexplained) or "none")
    return Identification(elements, unexplained, (float(cal[0]), float(cal[1]), float(cal[2])), float(noise),
                          float(chi2 / dof))


__all__ = ["identify_elements", "Identification", "ElementEvidence", "Peak", "COMMON_K", "COMMON_L", "COMMON_M"]
