"""Which elements are in a spectrum? Peak positions and line ratios against xraylib's line tables.

:func:`suggest_elements_spectrum` delegates to :func:`xrfproc.core.identify.identify_elements`;
the NNLS-share scoring below (:func:`score_elements`) remains for the per-family scores of reports.

Method
------
1. The background is removed by SNIP (:func:`xrfproc.core.snip.snip1d`).
2. Every candidate element contributes one template per excited line family (K, L, M): Gaussians at
   its line energies (xraylib, through :mod:`xrfproc.core.xraydata`), weighted by the fluorescence
   production cross sections at the excitation energy (so the template has the element's line
   *ratios*), with the detector resolution ``sigma^2 = (noise/2.3548)^2 + 0.00385 fano E``. The
   Rayleigh and Compton peaks get templates too, so they are not mistaken for elements.
3. A Poisson-weighted non-negative least-squares fit of all templates to the net spectrum gives an
   area per family; an element is proposed when one of its families holds at least ``min_fraction``
   of the total fitted fluorescence counts *and* is ``min_sigma`` standard deviations above zero.
   Because the templates carry the line ratios, a peak explained by one element's line pattern is
   not also credited to an element whose single line happens to sit nearby.
"""
from __future__ import annotations

import functools
import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy.optimize import nnls

from ..errors import InputError
from . import xraydata
from .snip import snip1d

log = logging.getLogger(__name__)

#: candidates by default: Na .. U without the noble gases except Ar (air) and without Tc, Pm, Po..Ac
DEFAULT_CANDIDATES = tuple(
    s for z in range(11, 93)
    for s in [xraydata.symbol(z)]
    if s not in ("Ne", "Kr", "Xe", "Rn", "Tc", "Pm", "Po", "At", "Fr", "Ra", "Ac", "Pa")
)


@dataclass
class FamilyScore:
    """Fitted area and significance of one element's line family (for reports and tests)."""

    element: str
    family: str
    area: float
    sigma: float
    fraction: float
    local: float = 1.0


def _fwhm_sigma(energy_keV: np.ndarray, noise: float, fano: float) -> np.ndarray:
    return np.sqrt((noise / 2.3548) ** 2 + 0.00385 * fano * np.asarray(energy_keV))


@functools.lru_cache(maxsize=1)
def _escape_grid() -> tuple[np.ndarray, np.ndarray]:
    from .simphysics import escape_fraction

    e = np.geomspace(1.5, 120.0, 2000)
    return e, escape_fraction(e)


def _escape_fraction(energies: np.ndarray) -> np.ndarray:
    """Si K escape probability of photons of ``energies`` (keV), interpolated on a cached grid (the
    xraylib calls behind :func:`xrfproc.core.simphysics.escape_fraction` take ~10 ms each)."""
    e, p = _escape_grid()
    out = np.interp(energies, e, p)
    out[np.asarray(energies) <= xraydata.edge_energy("Si", "K")] = 0.0
    return out


def _with_escape(energies: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Lines plus their Si K escape peaks (Si detector): ``p`` of each line moves ``E(Si Ka)`` lower
    (:func:`xrfproc.core.simphysics.escape_fraction`, the model PyMca's escape peaks follow too)."""
    p = _escape_fraction(energies)
    e_esc = energies - xraydata.line_energy("Si", "KL3")
    ok = (p > 0) & (e_esc > 0)
    return (np.concatenate([energies, e_esc[ok]]),
            np.concatenate([weights * (1.0 - np.where(ok, p, 0.0)), weights[ok] * p[ok]]))


def _template(energies: np.ndarray, weights: np.ndarray, e_axis: np.ndarray, noise: float, fano: float,
              broaden: float = 1.0, escape: bool = False) -> np.ndarray:
    if escape:
        energies, weights = _with_escape(np.asarray(energies, dtype=np.float64), np.asarray(weights, dtype=np.float64))
    sig = _fwhm_sigma(energies, noise, fano) * broaden
    de = np.abs(np.gradient(e_axis))
    g = np.exp(-0.5 * ((e_axis[None, :] - energies[:, None]) / sig[:, None]) ** 2) / (np.sqrt(2 * np.pi) * sig[:, None])
    return (weights[:, None] * g * de[None, :]).sum(axis=0)


def _subgroups(family: str, lines: Sequence[str]) -> dict[str, list[int]]:
    """Split a family's lines into sub-groups fitted with free relative areas (Ka/Kb, L1/L2/L3,
    M): self-absorption in thick samples changes these ratios, the ratios within a sub-group hold."""
    subs: dict[str, list[int]] = {}
    for i, ln in enumerate(lines):
        if family == "K":
            key = "Ka" if ln.startswith("KL") else "Kb"
        elif family == "L":
            key = ln[:2]
        else:
            key = "M"
        subs.setdefault(key, []).append(i)
    return subs


def family_templates(element: str, energy_keV: float, e_axis: np.ndarray, emin_keV: float, noise: float,
                     fano: float, escape: bool = True) -> dict[str, dict[str, np.ndarray]]:
    """Unit-area templates (counts per channel) of the excited K/L/M families of ``element``,
    per family a dict sub-group (``Ka``, ``Kb``, ``L3``...) -> template; with ``escape`` the Si K
    escape peaks of the lines are part of the templates (else Ca K's escape at 1.95 keV passes for
    Mo L, Fe Ka's at 4.66 keV for Cs L)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    emax = float(e_axis.max())
    for family in ("K", "L", "M"):
        group = xraydata.line_group(element, family)
        if not group.energies.size:
            continue
        keep = (group.energies >= emin_keV) & (group.energies < min(energy_keV, emax))
        if not keep.any():
            continue
        lines = [ln for ln, k in zip(group.lines, keep) if k]
        energies = group.energies[keep]
        weights = xraydata.fluorescence_cs(element, lines, energy_keV)
        if weights.sum() <= 0:
            continue
        subs = {}
        for key, idx in _subgroups(family, lines).items():
            wsub = weights[idx]
            if wsub.sum() <= 0.02 * weights.sum():
                continue  # too weak to carry evidence on its own
            t = _template(energies[idx], wsub / wsub.sum(), e_axis, noise, fano, escape=escape)
            if t.sum() > 0.5:  # most of it inside the spectrum
                subs[key] = t / t.sum()
        if subs:
            out[family] = subs
    return out


def checked_spectrum(spectrum: np.ndarray, calibration: Sequence[float]) -> tuple[np.ndarray, list[float]]:
    """Counts as float64 and ``[zero, gain, quadratic]``; :class:`InputError` for a spectrum that is not
    1-D with >= 16 channels, holds NaN or negative counts or none, or a gain that is not positive."""
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
    return y, cal


def score_elements(spectrum: np.ndarray, calibration: Sequence[float], energy_keV: float, *,
                   candidates: Sequence[str] | None = None, emin_keV: float = 1.0, noise: float = 0.1,
                   fano: float = 0.114, snipwidth: int = 30, escape: bool = True) -> list[FamilyScore]:
    """Fit element-family templates to a spectrum; see the module docstring.

    Parameters
    ----------
    spectrum : ndarray, shape (nbins,)
        Counts (a sum spectrum is best).
    calibration : (zero, gain) or (zero, gain, quadratic)
        Energy calibration in keV, keV/channel, keV/channel^2.
    energy_keV : float
        Excitation energy.
    candidates : sequence of str, optional
        Elements to consider (default :data:`DEFAULT_CANDIDATES`).
    emin_keV : float
        Lines below this energy are ignored (detector window, air).
    noise, fano : float
        Detector resolution (keV FWHM electronic noise, Fano factor).
    snipwidth : int
        SNIP width (channels) of the background.
    escape : bool
        Include the Si K escape peaks in the templates (a Si detector).

    Returns
    -------
    list of FamilyScore
        One per candidate family, largest area first.
    """
    y, cal = checked_spectrum(spectrum, calibration)
    ch = np.arange(y.size, dtype=np.float64)
    e_axis = cal[0] + cal[1] * ch + cal[2] * ch ** 2
    window = (e_axis >= emin_keV) & (e_axis <= energy_keV + 1.5)
    if window.sum() < 16:
        raise InputError(f"only {int(window.sum())} channels between {emin_keV} keV and the excitation energy: "
                         "check the calibration and the energy")
    net = y - snip1d(y, snipwidth)
    cols, labels = [], []
    for el in (candidates or DEFAULT_CANDIDATES):
        sym = xraydata.symbol(el)
        for fam, subs in family_templates(sym, energy_keV, e_axis, emin_keV, noise, fano, escape).items():
            for t in subs.values():
                cols.append(t)
                labels.append((sym, fam))
    # scatter: Rayleigh at E0 and a broad Compton below it (45-135 deg range of angles)
    cols.append(_template(np.array([energy_keV]), np.array([1.0]), e_axis, noise, fano))
    labels.append(("Rayl", ""))
    ecomp = xraydata.compton_energy(energy_keV, np.pi / 2)
    cols.append(_template(np.array([ecomp]), np.array([1.0]), e_axis, noise, fano, broaden=3.0))
    labels.append(("Compt", ""))
    A = np.array(cols).T[window]
    b = net[window]
    w = 1.0 / np.sqrt(np.maximum(y[window], 1.0))
    area, _ = nnls(A * w[:, None], b * w, maxiter=50 * A.shape[1])
    active = area > 0
    sig = np.full(area.size, np.inf)
    if active.any():
        Aw = A[:, active] * w[:, None]
        cov = np.linalg.pinv(Aw.T @ Aw)
        sig[active] = np.sqrt(np.clip(np.diag(cov), 0, None))
    fluo = [i for i, (el, _) in enumerate(labels) if el not in ("Rayl", "Compt")]
    total = float(area[fluo].sum()) or 1.0
    # per family: the area of its strongest sub-group (the evidence) and that sub-group's sigma
    best: dict[tuple[str, str], int] = {}
    for i in fluo:
        key = labels[i]
        if key not in best or area[i] > area[best[key]]:
            best[key] = i
    # local share: of the fitted counts in the channels of the family's template (weighted by it),
    # the fraction the family itself explains; near 1 for an isolated line, small for a family that
    # only picks up the tail of a strong neighbour
    fitted = A * area[None, :]
    model = fitted.sum(axis=1)
    scores = []
    for key, i in best.items():
        t = A[:, i]
        tt = float(t @ t)
        local = float(fitted[:, i] @ t / (model @ t)) if area[i] > 0 and tt > 0 and model @ t > 0 else 0.0
        scores.append(FamilyScore(key[0], key[1], float(area[i]), float(sig[i]), float(area[i]) / total, local))
    return sorted(scores, key=lambda s: -s.area)


def suggest_elements_spectrum(spectrum: np.ndarray, calibration: Sequence[float], energy_keV: float, *,
                              candidates: Sequence[str] | None = None, min_fraction: float = 0.005,
                              min_sigma: float = 5.0, emin_keV: float = 1.0, noise: float = 0.1, fano: float = 0.114,
                              snipwidth: int = 30, trace_fraction: float = 0.002, trace_sigma: float = 5.0,
                              min_local: float = 0.5,
                              escape: bool = True) -> list[str]:
    """Propose the elements present in a spectrum (a pure function): the names found by
    :func:`xrfproc.core.identify.identify_elements` (line patterns, overlaps, parsimony).

    Parameters
    ----------
    spectrum : ndarray, shape (nbins,)
        Counts per channel (a sum spectrum is best).
    calibration : (zero, gain) or (zero, gain, quadratic)
        Energy calibration (keV, keV/channel, keV/channel^2); refined within the identification.
    energy_keV : float
        Excitation energy (keV).
    candidates : sequence of str, optional
        Elements to consider (default :data:`DEFAULT_CANDIDATES`).
    min_sigma : float
        ``min_significance`` of the identification: a common element's K lines must lower the
        chi-square by ``min_sigma^2``.
    emin_keV : float
        Lines below this energy (keV) are ignored.
    noise, fano : float
        Detector resolution (keV FWHM electronic noise, Fano factor).
    snipwidth : int
        SNIP width (channels) of the background.
    min_fraction, trace_fraction, trace_sigma, min_local, escape
        Options of the former NNLS-share method (:func:`score_elements`), accepted so callers keep
        working; not used.

    Returns
    -------
    list of str
        Element symbols, strongest first (Ar, air, included: it is fitted).

    Raises
    ------
    InputError
        For a spectrum that is not 1-D, has negative or no counts, a non-positive gain or energy,
        or too few channels between ``emin_keV`` and the excitation energy.
    """
    from .identify import identify_elements

    return identify_elements(spectrum, calibration, energy_keV, candidates=candidates, emin_keV=emin_keV,
                             noise=noise, fano=fano, snipwidth=snipwidth, min_significance=min_sigma).names
