"""Element identification as a spectroscopist does it: line patterns, overlaps, parsimony.

Method
------
1. The background is removed by SNIP; the fit window runs from ``emin_keV`` (raised above an
   empty part, a filter's) to the excitation energy (or the end of the spectrum).
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
   selection (+-100 eV, +-3 %; a scan of the offset first, then a simplex in the shifts at two
   energies), and the selection is repeated with them.
5. Each element retained must show its pattern: where a sub-group of a family (Kb, the L2 or L1
   lines) is expected at >= 3 sigma, its free fit must reach ``0.25`` of the expected area; an L or
   M reading of an element not in :data:`COMMON_L` / :data:`COMMON_M` must have such a testable
   sub-group. An element must also hold half of the line model at one of its main lines.
6. Each element retained must stay significant when the sub-group ratios (Kb/Ka, L2/L3, L1/L3)
   of the other elements may deviate from the tabulated ones by about ``ratio_freedom`` (a
   Gaussian prior): self-absorption and the cross-section tables change these ratios, and a weak
   element whose only evidence is such a deviation (As Ka under Pb La) is not identified.
7. Significant residual peaks (outside the scatter region) are reported as unexplained.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.signal import find_peaks

from . import xraydata
from .identify_model import (Ctx, auto_emin, context, family_columns, lines, pileup_column, prepare,
                             scatter_columns, self_convolution, template)
from .identify_refine import refine_calibration
from .identify_select import COMMON_K, COMMON_L, COMMON_M, Fit, Selector, penalty
from .snip import snip1d
from .suggest import DEFAULT_CANDIDATES, _fwhm_sigma, _subgroups

log = logging.getLogger(__name__)

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



# --------------------------------------------------------------------------- the steps
def _build(y: np.ndarray, conv: np.ndarray, cal: Sequence[float], energy_keV: float, emin: float, noise: float,
           fano: float, candidates: Sequence[str]) -> tuple[Ctx, np.ndarray, dict[str, dict[str, np.ndarray]]]:
    """Window, fixed columns (scatter, bumps, pile-up last) and candidate families of one pass."""
    ctx = context(y.size, cal, energy_keV, emin, noise, fano)
    fixed = np.concatenate([scatter_columns(ctx), pileup_column(conv, ctx)[None, :]])
    groups = {}
    for s in candidates:
        cols = family_columns(s, ctx)
        if cols:
            groups[s] = cols
    return ctx, fixed, groups


def _subgroup_columns(sel: Selector, sym: str, fam: str) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sub-groups of a family (``Ka``, ``Kb``, ``L3`` ...), their share of the family's weight and
    their templates (each of its share: a coefficient is a family area, equal for all sub-groups
    when the tabulated ratios hold)."""
    ctx = sel.ctx
    names, en, w = lines(sym, fam, ctx.energy_keV, ctx.emin)
    subs = _subgroups(fam, names)
    keys = list(subs)
    share = np.array([w[subs[k]].sum() for k in keys])
    cols = np.array([template(en[subs[k]], w[subs[k]], ctx) for k in keys]) if keys else \
        np.zeros((0, ctx.e.size))
    return keys, share, cols


def _sigmas(a: np.ndarray, G: np.ndarray) -> np.ndarray:
    """Standard deviations of NNLS areas: from the inverse normal matrix on the active columns."""
    act = a > 0
    sig = np.full(a.size, np.inf)
    if act.any():
        sig[act] = np.sqrt(np.clip(np.diag(np.linalg.pinv(G[np.ix_(act, act)])), 0, None))
    return sig


def _ratio_columns(sel: Selector, fit: Fit, members: Sequence[str],
                   freedom: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Columns that let the sub-group ratios of ``members`` deviate from the tabulated ones: one per
    non-reference sub-group, its coefficient a family area added to the sub-group, free in sign,
    with a Gaussian prior of ``freedom`` times the family's area in ``fit``.

    Returns
    -------
    columns (n, nchan), prior ``1 / sigma^2`` (n,), owner element (n,)
    """
    extra, ridge, owner = [], [], []
    for s in members:
        for fam, area in fit.areas(s).items():
            keys, share, cols = _subgroup_columns(sel, s, fam)
            if len(keys) < 2 or area <= 0 or freedom <= 0:
                continue
            ref = int(np.argmax(share))
            for i in range(len(keys)):
                if i != ref and share[i] >= 0.02 * share.sum():
                    extra.append(cols[i])
                    ridge.append(1.0 / (freedom * area) ** 2)
                    owner.append(s)
    n = sel.ctx.e.size
    return (np.array(extra) if extra else np.zeros((0, n))), np.array(ridge), np.array(owner, dtype=object)


def _pattern(sel: Selector, members: list[str], sym: str, freedom: float = 0.0) -> dict[str, float]:
    """Fitted / expected area of the testable sub-groups of ``sym``: its other sub-groups and the
    other elements' families fixed in ratio, up to ``freedom`` (their sub-group ratios may deviate so
    much; 0 in use: with it, Pb L3 under As Ka in PyMca's XRFSpectrum.mca leaves Pb's L1/L3 at 0.06).
    A sub-group in the scatter region, where the Compton blend is free, is not testable."""
    out = {}
    others = [m for m in members if m != sym]
    base = sel.columns(others)
    dev, ridge, _ = _ratio_columns(sel, sel.fit(members), others, freedom)
    for fam in sel.groups[sym]:
        keys, share, cols = _subgroup_columns(sel, sym, fam)
        if len(keys) < 2:
            continue
        names, en, w = lines(sym, fam, sel.ctx.energy_keV, sel.ctx.emin)
        subs = _subgroups(fam, names)
        e_mean = [float(en[subs[k]] @ w[subs[k]] / w[subs[k]].sum()) for k in keys]
        a, _, G = sel.fit_extra(base, np.concatenate([dev, cols]), free=np.r_[np.ones(len(dev), bool),
                                                                               np.zeros(len(cols), bool)],
                                ridge=np.r_[ridge, np.zeros(len(cols))])
        sig = _sigmas(a, G)
        sub_a, sub_s = a[len(base) + len(dev):], sig[len(base) + len(dev):]
        ref = int(np.argmax(share))
        if sub_a[ref] <= 0:
            continue
        for i, k in enumerate(keys):  # the columns' coefficients are family areas: equal if the ratios hold
            if (i != ref and share[i] >= 0.05 * share.sum() and sub_a[ref] >= 3 * sub_s[i]
                    and e_mean[i] < sel.ctx.scatter_lo):
                out[k] = float(sub_a[i] / sub_a[ref])
    return out


def _ratio_check(sel: Selector, members: list[str], freedom: float) -> list[str]:
    """Drop, weakest first, the members that do not pay their penalty once the sub-group ratios of
    all members may deviate by ``freedom`` (relative, Gaussian prior) from the tabulated ones."""
    if freedom <= 0:
        return members
    while members:
        sel.reweight(members)
        fit = sel.fit(members)
        extra_a, ridge_a, owner_a = _ratio_columns(sel, fit, members, freedom)
        if not len(extra_a):
            return members
        _, chi2_all, _ = sel.fit_extra(sel.columns(members), extra_a, free=True, ridge=ridge_a)
        worst, worst_s = 0.0, None
        for s in members:
            keep = owner_a != s
            rest = [m for m in members if m != s]
            _, chi2_wo, _ = sel.fit_extra(sel.columns(rest), extra_a[keep], free=True, ridge=ridge_a[keep])
            gain = (chi2_wo - chi2_all) / sel.local_scale(s, fit)
            score = gain - penalty(s, sel.reading(s, fit), sel.k_min, "K" in sel.groups[s])
            if score < worst:
                worst, worst_s = score, s
        if worst_s is None:
            return members
        log.info("identify: %s dropped: its evidence is a deviation of other elements' line ratios", worst_s)
        members = [m for m in members if m != worst_s]
    return members


def _peaks(signal: np.ndarray, var: np.ndarray, ctx: Ctx, min_sig: float) -> list[Peak]:
    e = ctx.e
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


def _evidence(sel: Selector, members: list[str], net: np.ndarray, noise: float, instr: set[str],
              unexplained_sigma: float, freedom: float) -> Identification:
    ctx = sel.ctx
    sel.reweight(members)
    fit = sel.fit(members)
    labels = [sel.d.labels[j] for j in fit.idx]
    sig = _sigmas(fit.a, sel.d.G[np.ix_(fit.idx, fit.idx)])
    C = sel.d.C[fit.idx]
    model = fit.model
    var = sel.var0 + (sel.f * model) ** 2
    nf = sel.nf
    parts = {"scatter": fit.a[:nf - 1] @ C[:nf - 1], "pile-up": fit.a[nf - 1] * C[nf - 1]}
    for s in members:
        mine = [i for i, (m, _) in enumerate(labels) if m == s]
        parts[s] = fit.a[mine] @ C[mine]
    b = net[ctx.sl]
    observed = _peaks(b, var, ctx, 3.0)
    for p in observed:
        i = int(np.argmin(np.abs(ctx.e - p.energy_keV)))
        win = slice(max(0, i - 2), i + 3)
        tot = float(model[win].sum())
        if tot > 0:
            p.explained_by = tuple(k for k, v in parts.items() if float(v[win].sum()) >= 0.2 * tot)
    elements = []
    for s in members:
        chi2_wo = sel.fit([m for m in members if m != s]).chi2
        fams = [(i, fam) for i, (m, fam) in enumerate(labels) if m == s]
        lines_ = {}
        for i, fam in fams:
            names, en, w = lines(s, fam, ctx.energy_keV, ctx.emin)
            lines_[fam] = [(n, float(E), float(fit.a[i] * wi)) for n, E, wi in zip(names, en, w) if wi >= 0.01]
        kind = "instrument" if s in instr else "air" if s in AIR else "sample"
        elements.append(ElementEvidence(
            element=s, families=tuple(f for _, f in fams), reading=sel.reading(s, fit), lines=lines_,
            area={f: float(fit.a[i]) for i, f in fams}, sigma={f: float(sig[i]) for i, f in fams},
            significance=float(np.sqrt(max(chi2_wo - fit.chi2, 0.0))),
            peaks=[p for p in observed if s in p.explained_by], kind=kind,
            pattern=_pattern(sel, members, s, 0.0)))
    elements.sort(key=lambda ev: -sum(ev.area.values()))
    resid = b - model
    unexplained = [p for p in _peaks(resid, var, ctx, unexplained_sigma) if p.energy_keV < ctx.scatter_lo]
    dof = max(1, resid.size - int((fit.a > 0).sum()))
    log.info("identify: %s; unexplained peaks at %s keV", ", ".join(f"{e.element} ({e.significance:.0f})" for e in elements),
             ", ".join(f"{p.energy_keV:.2f}" for p in unexplained) or "none")
    cal = ctx.cal
    return Identification(elements, unexplained, (float(cal[0]), float(cal[1]), float(cal[2])), float(noise),
                          float(fit.chi2 / dof))


def identify_elements(spectrum: np.ndarray, calibration: Sequence[float], energy_keV: float, *,
                      noise: float = 0.1, fano: float = 0.114, candidates: Sequence[str] | None = None,
                      emin_keV: float = 1.0, snipwidth: int = 30, min_significance: float = 5.0,
                      systematic: float = 0.03, refine: bool = True, unexplained_sigma: float = 5.0,
                      instrument: Sequence[str] = (), min_fraction: float | None = None,
                      trace_fraction: float | None = None, trace_sigma: float | None = None,
                      min_local: float | None = None, escape: bool = True,
                      ratio_freedom: float = 0.2) -> Identification:
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
    ratio_freedom : float
        Relative deviation of the sub-group ratios (Kb/Ka, L2/L3 ...) an element's evidence must
        survive (0: no such test).

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
    y, cal = prepare(spectrum, calibration, energy_keV, emin_keV)
    emin_keV = auto_emin(y, cal, energy_keV, emin_keV)
    cands = [xraydata.symbol(c) for c in (candidates or DEFAULT_CANDIDATES)]
    instr = {xraydata.symbol(c) for c in instrument}
    net = y - snip1d(y, snipwidth)

    def select(cal: Sequence[float], noise: float) -> tuple[Selector, list[str]]:
        first = int(np.searchsorted(cal[0] + cal[1] * np.arange(y.size) + cal[2] * np.arange(y.size) ** 2, emin_keV))
        ctx, fixed, groups = _build(y, self_convolution(net, first), cal, energy_keV, emin_keV, noise, fano, cands)
        sel = Selector(ctx, fixed, groups, net[ctx.sl], y[ctx.sl], systematic, min_significance)
        return sel, sel.select([c for c in cands if c in groups])

    sel, members = select(cal, noise)
    cal0, noise0 = list(cal), noise
    refined_on: list[frozenset[str]] = []
    for _ in range(3 if refine else 0):
        # refine (from the given calibration) on the strongest 8 of the selection and select again, until
        # these are ones the calibration was refined on: a selection made 20 eV off can hold wrong
        # elements that pull the first refinement
        fit = sel.fit(members)
        strength = {s: sum(a * a * sel.d.gdiag[j] for j, a in zip(fit.idx, fit.a) if sel.d.labels[j][0] == s)
                    for s in members}
        top = sorted(members, key=lambda s: -strength[s])[:8]
        if frozenset(top) in refined_on:
            break
        refined_on.append(frozenset(top))
        log.info("identify: selection %s; calibration refined on %s", ", ".join(members), ", ".join(top))
        w_full = np.zeros(y.size)
        w_full[sel.ctx.sl] = sel.w
        cal, noise = refine_calibration(y, net, self_convolution(net, int(sel.ctx.sl.start)), cal0, energy_keV,
                                        emin_keV, noise0, fano, {s: list(sel.groups[s]) for s in top}, w_full)
        sel, members = select(cal, noise)
    # pattern: each sub-group expected at >= 3 sigma must be there
    while True:
        sel.reweight(members)
        fit = sel.fit(members)
        failed = []
        for s in members:
            pat = _pattern(sel, members, s, 0.0)
            reading = sel.reading(s, fit)
            rare = (reading == "L" and s not in COMMON_L) or (reading == "M" and s not in COMMON_M)
            if any(v < 0.25 for v in pat.values()) or (rare and not pat):  # a rare reading must show its pattern
                failed.append(s)
        if not failed:
            break
        log.info("identify: %s dropped: line pattern incomplete", ", ".join(failed))
        members = sel.backward([m for m in members if m not in failed])
    members = _ratio_check(sel, members, ratio_freedom)
    return _evidence(sel, members, net, noise, instr, unexplained_sigma, ratio_freedom)


__all__ = ["identify_elements", "Identification", "ElementEvidence", "Peak", "COMMON_K", "COMMON_L", "COMMON_M",
           "AIR"]
