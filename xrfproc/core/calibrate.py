"""Energy calibration and resolution from a measured spectrum: find the peaks, assign them, fit.

A spectroscopist calibrates an unknown spectrum from its peaks: the elastic scatter at the
excitation energy, the Ka lines of the common elements, their Kb partners. :func:`peak_calibration`
does the same without a guess of the calibration:

1. **Peaks.** The SNIP background is removed, the net spectrum smoothed, and local maxima at
   least ``min_sigma`` Poisson standard deviations above the background kept (position by the
   centroid of the net counts within one FWHM, width at half height, net area).
2. **Consensus.** Every pair of the strongest peaks is given every pair of candidate lines
   (:data:`CANDIDATES`: Ka and Kb of the common elements, a few L lines, the elastic peak when
   the excitation energy is known); each pair fixes a zero and a gain, and the hypothesis is scored
   by all peaks at once: a peak that falls within its width of a candidate line adds the line's
   prior times the log of the peak's significance, a Ka line matched without its Kb at the expected
   place when the Ka is strong costs. The best hypothesis wins; nothing rests on one guess.
3. **Fit.** The matched peaks give zero and gain by weighted least squares (a quadratic term when
   at least five lines spread over the spectrum ask for it, by an F-test), and their widths noise
   and Fano (``FWHM^2 = noise^2 + 2.3548^2 * 0.00385 keV * Fano * E``).

The result is refined by fitting the sum spectrum (:func:`xrfproc.core.sumfit.fit_sum`), which the
step :func:`xrfproc.steps.calibrate.calibrate` does once the elements are known.

Units: energies keV, gain keV/channel, quadratic keV/channel^2, noise keV FWHM.
"""
from __future__ import annotations

import dataclasses
import logging
import warnings
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy.signal import find_peaks

from ..errors import InputError
from . import xraydata
from .snip import snip1d

log = logging.getLogger(__name__)

__all__ = ["Peak", "PeakCalibration", "find_spectrum_peaks", "peak_calibration", "CANDIDATES"]

#: common elements whose K lines anchor a calibration, with a prior (how often they are seen)
_K_PRIOR = {"Si": 0.5, "P": 0.3, "S": 0.6, "Cl": 0.5, "Ar": 0.9, "K": 0.7, "Ca": 1.0, "Ti": 0.8, "V": 0.4,
            "Cr": 0.8, "Mn": 0.8, "Fe": 1.0, "Co": 0.5, "Ni": 0.8, "Cu": 1.0, "Zn": 1.0, "Ga": 0.2, "As": 0.4,
            "Se": 0.3, "Br": 0.4, "Rb": 0.3, "Sr": 0.6, "Zr": 0.5, "Mo": 0.5}
#: heavy elements whose L lines are commonly seen
_L_PRIOR = {"Pb": 0.6, "W": 0.3, "Au": 0.3, "Ba": 0.3, "La": 0.2, "Hg": 0.2}


@dataclass(frozen=True)
class Line:
    """A candidate line: label (``"Fe Ka"``), energy keV, prior, and the partner it implies."""

    label: str
    energy: float
    prior: float
    partner: float | None = None  # energy of the Kb (for a Ka), keV
    partner_ratio: float = 0.0


def _candidates(energy_keV: float | None, emin_keV: float) -> list[Line]:
    out: list[Line] = []
    emax = energy_keV if energy_keV else 40.0
    for el, prior in _K_PRIOR.items():
        if energy_keV and xraydata.edge_energy(el, "K") >= energy_keV:
            continue
        ka, kb = xraydata.line_energy(el, "KL3"), xraydata.line_energy(el, "KM3")
        ratio = xraydata.radiative_rate(el, "KM3") / max(xraydata.radiative_rate(el, "KL3"), 1e-12)
        if emin_keV <= ka < emax:
            out.append(Line(f"{el} Ka", ka, prior, kb if kb < emax else None, ratio))
        if emin_keV <= kb < emax and kb - ka > 0.05:
            out.append(Line(f"{el} Kb", kb, 0.5 * prior))
    for el, prior in _L_PRIOR.items():
        if energy_keV and xraydata.edge_energy(el, "L3") >= energy_keV:
            continue
        for name, line, p in (("La", "L3M5", prior), ("Lb", "L2M4", 0.6 * prior)):
            e = xraydata.line_energy(el, line)
            if emin_keV <= e < emax and (not energy_keV or xraydata.edge_energy(el, "L2") < energy_keV or name == "La"):
                out.append(Line(f"{el} {name}", e, p))
    if energy_keV:
        e0 = float(energy_keV)
        # no fluorescence line is looked for among the scatter peaks (Compton at 60-180 degrees .. E0)
        lo = xraydata.compton_energy(e0, np.pi) - 0.05
        out = [c for c in out if not lo <= c.energy <= e0 + 0.1]
        out.append(Line("elastic", e0, 1.0))
        out.append(Line("compton", xraydata.compton_energy(e0, np.pi / 2), 0.5))
    return out


#: the candidate lines for an excitation energy (None: unknown)
CANDIDATES = _candidates


@dataclass
class Peak:
    """A peak of a spectrum: centroid channel, FWHM (channels), net counts, significance (sigma)."""

    channel: float
    fwhm: float
    net: float
    significance: float
    label: str = ""
    energy: float = float("nan")


@dataclass
class PeakCalibration:
    """Result of :func:`peak_calibration`.

    Attributes
    ----------
    zero, gain, quadratic : float
        ``E = zero + gain * ch + quadratic * ch^2`` (keV).
    noise, fano : float
        Detector resolution from the peak widths (keV FWHM, Fano factor).
    peaks : list of Peak
        Every peak found; those used carry their ``label`` and line ``energy``.
    residual_eV : float
        RMS of (line energy - calibrated centroid) over the matched peaks.
    score : float
        Consensus score of the winning hypothesis.
    """

    zero: float
    gain: float
    quadratic: float
    noise: float
    fano: float
    peaks: list[Peak] = field(default_factory=list)
    residual_eV: float = float("nan")
    score: float = 0.0

    @property
    def matched(self) -> list[Peak]:
        """Peaks assigned to a line."""
        return [p for p in self.peaks if p.label]

    def energy(self, channel: float | np.ndarray) -> np.ndarray:
        """Energy (keV) of a channel."""
        c = np.asarray(channel, dtype=np.float64)
        return self.zero + self.gain * c + self.quadratic * c * c


def find_spectrum_peaks(y: np.ndarray, *, snipwidth: int = 30, min_sigma: float = 5.0,
                        max_peaks: int = 40) -> list[Peak]:
    """Significant peaks of a spectrum, strongest (net counts) first.

    Parameters
    ----------
    y : ndarray, shape (nbins,)
        Counts.
    snipwidth : int
        SNIP width (channels) of the background.
    min_sigma : float
        Minimum ``net / sqrt(net + background)`` within the peak's FWHM.
    """
    y = np.asarray(y, dtype=np.float64)
    bkg = snip1d(y, snipwidth)
    net = np.clip(y - bkg, 0, None)
    smooth = np.convolve(net, np.ones(5) / 5, mode="same")
    with warnings.catch_warnings():  # flat-topped noise maxima have no width: they are dropped below
        warnings.simplefilter("ignore")
        idx, props = find_peaks(smooth, prominence=0.0, width=1.5, rel_height=0.5)
    peaks: list[Peak] = []
    ch = np.arange(y.size, dtype=np.float64)
    for i, w in zip(idx, props["widths"]):
        half = max(2, int(round(w)))
        lo, hi = max(0, i - half), min(y.size, i + half + 1)
        seg = net[lo:hi]
        area = float(seg.sum())
        if area <= 0:
            continue
        sig = area / np.sqrt(area + max(float(bkg[lo:hi].sum()), 1.0))
        if sig < min_sigma:
            continue
        centre = float((ch[lo:hi] * seg).sum() / area)
        peaks.append(Peak(centre, float(w), area, float(sig)))
    peaks.sort(key=lambda p: -p.net)
    return peaks[:max_peaks]


def _score(zero: np.ndarray, gain: np.ndarray, chans: np.ndarray, widths: np.ndarray, weights: np.ndarray,
           lines: np.ndarray, priors: np.ndarray, tol_keV: float) -> np.ndarray:
    """Consensus score of each (zero, gain) hypothesis (vectorised over hypotheses)."""
    e = zero[:, None] + gain[:, None] * chans[None, :]                    # (H, P) peak energies
    tol = np.maximum(tol_keV, 0.6 * gain[:, None] * widths[None, :])      # (H, P)
    d = np.abs(e[:, :, None] - lines[None, None, :])                       # (H, P, L)
    ok = d <= tol[:, :, None]
    best = np.where(ok, priors[None, None, :] * (1.0 - 0.5 * d / tol[:, :, None]), 0.0).max(axis=2)
    return (best * weights[None, :]).sum(axis=1)


def peak_calibration(y: np.ndarray, energy_keV: float | None = None, *, stored: Sequence[float] | None = None,
                     emin_keV: float = 1.0, gain_range: tuple[float, float] = (0.002, 0.05),
                     zero_range: tuple[float, float] = (-0.6, 0.6), snipwidth: int = 30,
                     anchors: int = 10) -> PeakCalibration:
    """Calibrate a spectrum from its peaks (see the module docstring).

    Parameters
    ----------
    y : ndarray, shape (nbins,)
        Counts (a sum spectrum).
    energy_keV : float, optional
        Excitation energy: adds the elastic peak to the candidates and drops lines above it.
    stored : (zero, gain[, quadratic]), optional
        A calibration recorded with the data: only a weak prior (it may be hundreds of eV off).
    emin_keV : float
        Lines below this energy are not candidates.
    gain_range, zero_range : (float, float)
        Plausible gains (keV/channel) and zeros (keV).
    anchors : int
        How many of the strongest peaks anchor hypotheses.

    Raises
    ------
    InputError
        Fewer than two significant peaks, or no assignment that puts two peaks on candidate lines.
    """
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.size < 64 or not np.isfinite(y).all() or y.min() < 0 or y.sum() <= 0:
        raise InputError(f"cannot calibrate: need a spectrum of at least 64 channels with finite counts >= 0 "
                         f"(got {y.size} channels, {float(np.nansum(y)):.0f} counts)")
    peaks = find_spectrum_peaks(y, snipwidth=snipwidth)
    if len(peaks) < 2:
        raise InputError(f"cannot calibrate: {len(peaks)} significant peak(s) in the spectrum; give the "
                         "calibration (zero, gain) explicitly")
    cands = _candidates(energy_keV, emin_keV)
    lines = np.array([c.energy for c in cands])
    priors = np.array([c.prior for c in cands])
    chans = np.array([p.channel for p in peaks])
    widths = np.array([p.fwhm for p in peaks])
    weights = np.log1p(np.array([p.significance for p in peaks]))
    top = min(anchors, len(peaks))
    hz, hg = [], []
    for i in range(top):
        for j in range(i + 1, top):
            ci, cj = chans[i], chans[j]
            if abs(cj - ci) < 5:
                continue
            ea = lines[:, None]
            eb = lines[None, :]
            g = (eb - ea) / (cj - ci)
            z = ea - g * ci
            ok = (g >= gain_range[0]) & (g <= gain_range[1]) & (z >= zero_range[0]) & (z <= zero_range[1])
            hz.append(z[ok])
            hg.append(g[ok])
    if not hz or not sum(a.size for a in hz):
        raise InputError("cannot calibrate: no pair of peaks fits a pair of known lines within the gain range "
                         f"{gain_range} keV/channel; give the calibration (zero, gain) explicitly")
    Z, G = np.concatenate(hz), np.concatenate(hg)
    score = np.concatenate([_score(Z[s:s + 4096], G[s:s + 4096], chans, widths, weights, lines, priors, 0.02)
                            for s in range(0, Z.size, 4096)])
    # weak priors: a small zero, and the stored calibration when there is one
    score -= 0.5 * np.abs(Z) / 0.1 * weights.mean() * 0.1
    if stored is not None and len(stored) >= 2 and stored[1] > 0:
        mid = y.size / 2
        shift = np.abs((Z + G * mid) - (stored[0] + stored[1] * mid))
        score += 0.3 * weights.mean() * np.exp(-shift / 0.3)
    # the strongest hypotheses, re-scored in detail: line patterns, scatter (see _detailed_score)
    order = np.argsort(-score)
    seen: set[tuple[int, int]] = set()
    best_score, result = -np.inf, None
    for h in order[:2000]:
        key = (int(round(Z[h] / 0.005)), int(round(G[h] / (G[h] * 0.002))))
        if key in seen:
            continue
        seen.add(key)
        try:
            trial = _fit_matched(peaks, cands, float(Z[h]), float(G[h]), y.size)
        except InputError:
            continue
        total = _detailed_score(trial, cands, energy_keV) + float(score[h] - _score(
            Z[h:h + 1], G[h:h + 1], chans, widths, weights, lines, priors, 0.02)[0])
        if total > best_score:
            best_score, result = total, trial
        if len(seen) >= 60:
            break
    if result is None:
        raise InputError("cannot calibrate: fewer than two peaks match known lines; give the calibration "
                         "(zero, gain) explicitly")
    result.score = float(best_score)
    log.info("calibration from %d of %d peaks: zero %.1f eV, gain %.4f eV/channel, residual %.1f eV",
             len(result.matched), len(peaks), result.zero * 1e3, result.gain * 1e3, result.residual_eV)
    return result


def _detailed_score(cal: PeakCalibration, cands: list[Line], energy_keV: float | None) -> float:
    """Score of an assignment: matched peaks by prior and significance, line patterns enforced.

    A Kb counts only with its Ka; a strong Ka (significance > 30) whose Kb falls on no peak costs;
    the elastic line must be the highest-energy strong peak; the residual of the fit costs.
    """
    by_label = {p.label: p for p in cal.peaks if p.label}
    prior = {c.label: c for c in cands}
    total = 0.0
    for label, p in by_label.items():
        c = prior[label]
        credit = c.prior * float(np.log1p(p.significance))
        if label.endswith("Kb") and label.replace("Kb", "Ka") not in by_label:
            credit = -0.5 * credit
        if label.endswith("Lb") and label.replace("Lb", "La") not in by_label:
            credit = -0.5 * credit
        if label == "elastic":
            strong = [q for q in cal.peaks if q.significance > 0.3 * p.significance]
            if any(q.channel > p.channel + 2 * q.fwhm for q in strong):
                credit = -credit
        total += credit
        if label.endswith("Ka") and c.partner is not None and p.significance > 30:
            kb_ch = _channel_of(cal, c.partner)
            near = [q for q in cal.peaks if abs(q.channel - kb_ch) < max(q.fwhm, p.fwhm)]
            if not near and c.partner_ratio * p.significance > 5:
                total -= 0.5 * c.prior * float(np.log1p(p.significance))
    total -= 0.05 * cal.residual_eV
    # detectors are set up with a zero near 0 (a few tens of eV); hundreds of eV need strong evidence
    total -= 1.0 * (cal.zero / 0.3) ** 2
    return total


def _channel_of(cal: PeakCalibration, energy: float) -> float:
    """Channel of an energy (linear inverse, quadratic term by one Newton step)."""
    ch = (energy - cal.zero) / cal.gain
    if cal.quadratic:
        ch -= (cal.zero + cal.gain * ch + cal.quadratic * ch * ch - energy) / (cal.gain + 2 * cal.quadratic * ch)
    return float(ch)


def _fit_matched(peaks: list[Peak], cands: list[Line], zero: float, gain: float, nbins: int) -> PeakCalibration:
    """Assign peaks to lines at (zero, gain), then least squares (linear or quadratic) and resolution."""
    peaks = [dataclasses.replace(p) for p in peaks]  # each trial labels its own copies
    lines = np.array([c.energy for c in cands])
    is_compton = np.array([c.label == "compton" for c in cands])
    for p in peaks:
        p.label, p.energy = "", float("nan")
    quad = 0.0
    for _ in range(3):
        used: set[int] = set()
        matched: list[Peak] = []
        for p in sorted(peaks, key=lambda q: -q.significance):
            e = zero + gain * p.channel + quad * p.channel ** 2
            tol = max(0.02, 0.6 * gain * p.fwhm)
            d = np.abs(lines - e)
            d[is_compton] = np.where(d[is_compton] <= max(0.25, 2 * tol), 0.0, np.inf)
            k = int(np.argmin(d))
            if d[k] <= tol and k not in used:
                used.add(k)
                p.label, p.energy = cands[k].label, float(lines[k])
                matched.append(p)
            else:
                p.label, p.energy = "", float("nan")
        matched = [p for p in matched if p.label != "compton"]  # its angle, hence energy, is uncertain
        if len(matched) < 2:
            break
        c = np.array([p.channel for p in matched])
        e = np.array([p.energy for p in matched])
        w = np.sqrt(np.array([p.significance for p in matched]))
        lin = np.polyfit(c, e, 1, w=w)
        res1 = float(np.sum((w * (np.polyval(lin, c) - e)) ** 2))
        coef = np.array([0.0, *lin])
        if len(matched) >= 5 and np.ptp(c) > 0.3 * nbins:
            q = np.polyfit(c, e, 2, w=w)
            res2 = float(np.sum((w * (np.polyval(q, c) - e)) ** 2))
            dof = len(matched) - 3
            # F-test for one extra parameter; a real non-linearity is small (< 50 eV across the spectrum)
            if res2 > 0 and (res1 - res2) / (res2 / dof) > 10.0 and abs(q[0]) * nbins ** 2 < 0.05:
                coef = q
        quad, gain, zero = (float(v) for v in coef)
    matched = [p for p in peaks if p.label and p.label != "compton"]
    if len(matched) < 2:
        raise InputError("cannot calibrate: fewer than two peaks match known lines; give the calibration "
                         "(zero, gain) explicitly")
    c = np.array([p.channel for p in matched])
    e = np.array([p.energy for p in matched])
    resid = float(np.sqrt(np.mean((zero + gain * c + quad * c * c - e) ** 2))) * 1e3
    noise, fano = _resolution([p for p in matched if p.label != "elastic"], gain)
    return PeakCalibration(zero, gain, quad, noise, fano, peaks, resid)


def _resolution(peaks: list[Peak], gain: float) -> tuple[float, float]:
    """Noise (keV FWHM) and Fano factor from the FWHM of matched peaks (clipped to plausible values)."""
    if not peaks:
        return 0.1, 0.114
    e = np.array([p.energy for p in peaks])
    f2 = (np.array([p.fwhm for p in peaks]) * gain) ** 2
    w = np.array([p.significance for p in peaks])
    k = 2.3548 ** 2 * 0.00385
    if len(peaks) >= 3 and np.ptp(e) > 2.0:
        A = np.column_stack([np.ones_like(e), k * e]) * w[:, None]
        sol, *_ = np.linalg.lstsq(A, f2 * w, rcond=None)
        n2, fano = float(sol[0]), float(sol[1])
        if n2 > 0 and 0.05 <= fano <= 0.3:
            return float(np.clip(np.sqrt(n2), 0.03, 0.4)), fano
    fano = 0.114
    n2 = float(np.average(f2 - k * fano * e, weights=w))
    return float(np.clip(np.sqrt(max(n2, 0.03 ** 2)), 0.03, 0.4)), fano
