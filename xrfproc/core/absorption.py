"""Matrix absorption: effective (information) thickness of a sample for a fluorescence line.

For a homogeneous layer of density ``rho`` (g/cm3) and thickness ``d`` (cm), excited at ``E0``
under incidence angle ``a_in`` and seen by the detector under exit angle ``a_out`` (both from the
surface), the fluorescence of a trace element is proportional to ``c * rho * d_eff`` with

    chi   = mu(E0) / sin(a_in) + mu(E_line) / sin(a_out)          (cm2/g)
    d_eff = (1 - exp(-chi * rho * d)) / (chi * rho)                 (cm)

``d_eff`` tends to ``d`` for thin layers and to ``1 / (chi rho)`` (the information depth) for thick
ones. The original tool used ``min(ln(100) / (rho mu(E_line)), d / sin(tilt))`` and ignored the
incoming beam; this is the exact integral.
"""
from __future__ import annotations

from typing import Mapping

import numpy as np

from . import xraydata
from ..errors import InputError


def group_energy(name: str, energy_keV: float) -> float:
    """Mean energy (keV) of a line group (``"Fe K"``), weighted by the lines' production cross sections."""
    z, family = xraydata.parse_group(name)
    group = xraydata.line_group(z, family)
    weights = xraydata.fluorescence_cs(z, group.lines, energy_keV)
    if weights.sum() <= 0:
        raise InputError(f"{name} is not excited at {energy_keV} keV")
    return float(np.sum(weights * group.energies) / weights.sum())


def group_effective_thickness(name: str, energy_keV: float, composition: Mapping[str | int, float],
                              density_g_cm3: float, thickness_cm: float, incidence_deg: float = 45.0,
                              exit_deg: float = 45.0, geometry=None) -> float:
    """``d_eff`` (cm) of a line group, averaged over its lines.

    Each line ``l`` gets its own ``d_eff(chi_l)``, weighted by its production cross section times its
    detection probability in ``geometry`` (:class:`xrfproc.core.geometry.Geometry`; None: 1): what
    the group's measured area is made of. For groups whose lines spread in energy (L lines, and K
    lines of a matrix with an edge between Ka and Kb) this differs from ``d_eff`` at the group's
    mean energy by up to a few per cent in thick samples.
    """
    c, w = group_line_chi(name, energy_keV, composition, incidence_deg, exit_deg, geometry)
    d = effective_thickness(c, density_g_cm3, thickness_cm)
    return float(np.sum(w * d) / np.sum(w))


def group_line_chi(name: str, energy_keV: float, composition: Mapping[str | int, float], incidence_deg: float = 45.0,
                   exit_deg: float = 45.0, geometry=None) -> tuple[np.ndarray, np.ndarray]:
    """``chi`` (cm2/g) of every line of a group and its weight (as :func:`group_effective_thickness`)."""
    z, family = xraydata.parse_group(name)
    group = xraydata.line_group(z, family)
    w = xraydata.fluorescence_cs(z, group.lines, energy_keV)
    ok = (w > 0) & (group.energies < energy_keV)
    if not ok.any():
        raise InputError(f"{name} is not excited at {energy_keV} keV")
    w, e = w[ok], group.energies[ok]
    if geometry is not None:
        w = w * geometry.detection(e)
    return chi(composition, energy_keV, e, incidence_deg, exit_deg), w


def chi(composition: Mapping[str | int, float], energy_keV: float, line_keV: np.ndarray | float,
        incidence_deg: float = 45.0, exit_deg: float = 45.0) -> np.ndarray:
    """Combined mass attenuation of incoming and outgoing beams, cm2/g, shape of ``line_keV``."""
    if not (0 < incidence_deg <= 90 and 0 < exit_deg <= 90):
        raise InputError(f"incidence and exit angles must be in (0, 90] degrees, got {incidence_deg}, {exit_deg}")
    line_keV = np.atleast_1d(np.asarray(line_keV, dtype=np.float64))
    mu0 = xraydata.compound_attenuation(composition, energy_keV)[0]
    mul = xraydata.compound_attenuation(composition, line_keV)
    return mu0 / np.sin(np.radians(incidence_deg)) + mul / np.sin(np.radians(exit_deg))


def effective_thickness(chi_cm2_g: np.ndarray, density_g_cm3: float, thickness_cm: float) -> np.ndarray:
    """``d_eff`` in cm (see module docstring); ``thickness_cm = inf`` gives the thick-sample limit."""
    chi_cm2_g = np.asarray(chi_cm2_g, dtype=np.float64)
    if density_g_cm3 <= 0:
        raise InputError(f"density must be positive, got {density_g_cm3} g/cm3")
    k = chi_cm2_g * density_g_cm3
    if np.isinf(thickness_cm):
        return 1.0 / k
    return -np.expm1(-k * thickness_cm) / k
