"""Detection limits and elemental yields from a reference-material measurement.

Detection limit of line *i* for a measuring time of 1 s::

    DL_i(1 s) = 3 * sqrt(Ib_i / t) / (Ip_i / t) * c_i         [ppm]
    DL_i(T)   = DL_i(1 s) / sqrt(T)

with ``Ip`` the net peak counts and ``Ib`` the background counts under the peak (both totals of the
sum spectrum, dead-time corrected) and ``t`` the total (live-equivalent) time. Its relative 1-sigma
error adds in quadrature the net peak's ``sqrt(Ip + 2 Ib) / Ip``, **half** the background's
``1 / sqrt(Ib)`` (it sits under a square root) and the certificate's ``err_c / c``.
(The original README printed the formula with Ip and Ib swapped, and did not halve the term.)

Elemental yield of line *i*: the normalised intensity per unit of primary beam monitor (I0 count)
per areal concentration actually probed::

    Y_i = (I_norm,i / I0norm) / (c_i * rho * d_eff,i)          [counts / I0 / (ug/cm2)]

with ``d_eff`` from :mod:`xrfproc.core.absorption` (thin films: the areal concentration itself).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from . import absorption, xraydata
from .cnc import Cnc
from ..errors import InputError

log = logging.getLogger(__name__)

YIELD_UNIT = "counts/(I0 count)/(ug/cm^2)"


@dataclass
class DetectionLimits:
    """Detection limits of the lines found in both the fit and the certificate.

    Attributes
    ----------
    names : list of str
        Line groups (``"Fe K"``).
    dl, dl_err : dict of float to ndarray
        Measuring time (s) -> detection limits and absolute 1-sigma errors, ppm, shape (n,).
    skipped : list of str
        Fitted lines without a certified concentration (or with no counts).
    """

    names: list[str]
    dl: dict[float, np.ndarray]
    dl_err: dict[float, np.ndarray]
    unit: str = "ppm"
    skipped: list[str] = field(default_factory=list)


def _cert(cnc: Cnc, name: str) -> tuple[float, float] | None:
    try:
        z, _ = xraydata.parse_group(name)
    except InputError:
        return None  # scatter peaks and other non-element groups
    hit = np.flatnonzero(cnc.z == z)
    if hit.size == 0:
        return None
    return float(cnc.conc[hit[0]]), float(cnc.err[hit[0]])


def detection_limits(names: list[str], peak: np.ndarray, background: np.ndarray, time_s: float, cnc: Cnc,
                     times: tuple[float, ...] = (1.0, 1000.0)) -> DetectionLimits:
    """Detection limits (ppm) from sum-spectrum counts; see the module docstring.

    Parameters
    ----------
    names : list of str, shape (n,)
    peak, background : ndarray, shape (n,)
        Net peak and background counts (totals).
    time_s : float
        Total measuring time the counts were collected in (s).
    cnc : Cnc
        Certified composition (ppm).
    """
    if cnc.areal:
        raise InputError(f"detection limits in ppm need a bulk certificate; {cnc.name} is areal ({cnc.unit})",
                         path=cnc.path)
    if not time_s > 0:
        raise InputError(f"total measuring time must be positive, got {time_s} s")
    keep, c, ec, skipped = [], [], [], []
    for i, name in enumerate(names):
        cert = _cert(cnc, name)
        if cert is None or not peak[i] > 0 or not background[i] > 0:
            skipped.append(name)
            continue
        keep.append(i), c.append(cert[0]), ec.append(cert[1])
    ip = np.asarray(peak, dtype=np.float64)[keep]
    ib = np.asarray(background, dtype=np.float64)[keep]
    c = np.asarray(c)
    dl1 = 3.0 * np.sqrt(ib / time_s) / (ip / time_s) * c
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_c = np.where(c > 0, np.asarray(ec) / c, 0.0)
    rel = np.sqrt((np.sqrt(ip + 2 * ib) / ip) ** 2 + (0.5 / np.sqrt(ib)) ** 2 + rel_c ** 2)
    dl = {float(t): dl1 / np.sqrt(t) for t in times}
    return DetectionLimits(names=[names[i] for i in keep], dl=dl, dl_err={t: v * rel for t, v in dl.items()},
                           skipped=skipped)


@dataclass
class Yields:
    """Elemental yields of the lines found in both the fit and the certificate."""

    names: list[str]
    values: np.ndarray
    stddev: np.ndarray
    d_eff_cm: np.ndarray
    unit: str = YIELD_UNIT
    skipped: list[str] = field(default_factory=list)


def elemental_yields(names: list[str], norm_int: np.ndarray, norm_err: np.ndarray, I0norm: float, cnc: Cnc,
                     energy_keV: float | None, incidence_deg: float = 45.0, exit_deg: float = 45.0,
                     composition: dict[int, float] | None = None, geometry=None) -> Yields:
    """Yields per line (see module docstring).

    Parameters
    ----------
    norm_int, norm_err : ndarray, shape (n,)
        Normalised sum intensities (counts per I0norm) and absolute errors.
    I0norm : float
        The monitor value they are normalised to.
    energy_keV : float
        Excitation energy (needed for the matrix absorption of bulk references).
    composition : dict of int to float, optional
        The matrix mass fractions to use (:func:`xrfproc.core.matrixcomp.matrix_composition`);
        default the file's fractions as given.
    geometry : Geometry, optional
        Weights the lines of a group by their detection probability in the line-averaged ``d_eff``
        (:func:`xrfproc.core.absorption.group_effective_thickness`).
    """
    keep, skipped = [], []
    for i, name in enumerate(names):
        if _cert(cnc, name) is None or not norm_int[i] > 0:
            skipped.append(name)
        else:
            keep.append(i)
    sel = [names[i] for i in keep]
    conc = np.array([_cert(cnc, n)[0] for n in sel])
    cerr = np.array([_cert(cnc, n)[1] for n in sel])
    if cnc.areal:
        factor = {"ng/mm^2": 0.1, "ng/mm2": 0.1}.get(cnc.unit, 1.0)
        areal = conc * factor
        d_eff = np.full(len(sel), np.nan)
    else:
        if energy_keV is None:
            raise InputError("the excitation energy is needed for the matrix absorption of a bulk reference "
                             "(give energy_keV)")
        rho = cnc.density / 1000.0
        if rho <= 0:
            raise InputError(f"{cnc.name}: density must be positive for a bulk reference", path=cnc.path)
        thickness = cnc.thickness * 1e-4 if cnc.thickness > 0 else np.inf
        comp = composition if composition is not None else {int(z): w for z, w in cnc.mass_fractions().items()}
        d_eff = np.array([absorption.group_effective_thickness(n, energy_keV, comp, rho, thickness, incidence_deg,
                                                               exit_deg, geometry) for n in sel])
        areal = conc * 1e-6 * rho * d_eff * 1e6  # ug/cm2
    values = np.asarray(norm_int, dtype=np.float64)[keep] / I0norm / areal
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.sqrt((np.asarray(norm_err, dtype=np.float64)[keep] / np.asarray(norm_int)[keep]) ** 2
                      + np.where(conc > 0, cerr / conc, 0.0) ** 2)
    return Yields(names=sel, values=values, stddev=values * rel, d_eff_cm=d_eff, skipped=skipped)
