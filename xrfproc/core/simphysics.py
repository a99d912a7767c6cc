"""Detector response and line tables of the simulator (see :mod:`xrfproc.core.simulate`).

Units: keV, um for window thicknesses, mm for the Si crystal, sr, s.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from . import xraydata as xd

_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.3548
_EPAIR = 0.00385  # keV per electron-hole pair in Si
_RHO_BE, _RHO_SI = 1.848, 2.33


@dataclass
class Detector:
    """One detector channel: calibration, response, efficiency, dead time.

    Attributes
    ----------
    zero, gain, quadratic : float
        Energy of channel ``k`` is ``zero + gain k + quadratic k^2`` (keV).
    nbins : int
        Number of channels.
    noise : float
        Electronic noise, FWHM in keV. ``fano``: Fano factor.
    fano : float
    solid_angle_sr : float
        Solid angle of the detector (sr).
    be_window_um : float
        Be window thickness (um); 0 for none.
    air_path_cm : float
        Air between the sample and the window (cm; dry air, :data:`xrfproc.core.geometry.AIR`); 0 for none.
    si_thickness_mm : float
        Si crystal thickness (mm); 0 for an ideal absorber.
    dead_time_s : float
        Paralysable dead time tau (s).
    escape : bool
        Add Si K escape peaks (Si Ka and Si Kb escapes, as PyMca models them); on by default, as
        every Si detector shows them.
    background : float
        Smooth continuum, total counts as a fraction of the scatter (Rayl + Compt) counts.
    compton_width : float
        Extra Gaussian sigma of the Compton peak (Doppler broadening) relative to its energy.
    """

    zero: float = 0.0
    gain: float = 0.01
    quadratic: float = 0.0
    nbins: int = 2048
    noise: float = 0.10
    fano: float = 0.114
    solid_angle_sr: float = 0.05
    be_window_um: float = 8.0
    air_path_cm: float = 0.0
    si_thickness_mm: float = 0.45
    dead_time_s: float = 2.0e-7
    escape: bool = True
    background: float = 0.2
    compton_width: float = 0.012

    def geometry(self, geometry: "Geometry | None" = None):
        """The :class:`xrfproc.core.geometry.Geometry` this detector (and the simulator's angles) stand for."""
        from .geometry import Geometry as QGeometry
        g = geometry or Geometry()
        return QGeometry(incidence_deg=g.incidence_deg, exit_deg=g.exit_deg, air_path_cm=self.air_path_cm,
                         window="Be", window_um=self.be_window_um, crystal="Si", crystal_mm=self.si_thickness_mm,
                         name="simulated")

    @property
    def calibration(self) -> tuple[float, float, float]:
        return (float(self.zero), float(self.gain), float(self.quadratic))

    def energies(self, channels: np.ndarray) -> np.ndarray:
        """Energy (keV) of (fractional) channel numbers."""
        c = np.asarray(channels, dtype=np.float64)
        return self.zero + self.gain * c + self.quadratic * c * c

    def sigma(self, energy_keV: np.ndarray | float) -> np.ndarray:
        """Gaussian sigma (keV) of a peak at ``energy_keV`` (PyMca's model)."""
        e = np.maximum(np.asarray(energy_keV, dtype=np.float64), 0.0)
        return np.sqrt((self.noise / _FWHM) ** 2 + _EPAIR * self.fano * e)

    def efficiency(self, energy_keV: np.ndarray | float) -> np.ndarray:
        """Fraction of photons of ``energy_keV`` leaving the sample towards the detector that are absorbed in
        the crystal (air path and Be window included)."""
        e = np.atleast_1d(np.asarray(energy_keV, dtype=np.float64))
        eff = np.ones_like(e)
        if self.air_path_cm > 0:
            from .geometry import AIR, AIR_DENSITY
            eff *= np.exp(-xd.compound_attenuation(AIR, e) * AIR_DENSITY * self.air_path_cm)
        if self.be_window_um > 0:
            eff *= np.exp(-xd.mass_attenuation("Be", e)[0] * _RHO_BE * self.be_window_um * 1e-4)
        if self.si_thickness_mm > 0:
            eff *= -np.expm1(-xd.photo_absorption("Si", e)[0] * _RHO_SI * self.si_thickness_mm * 0.1)
        return eff


@dataclass
class Geometry:
    """Beam and detector angles, in degrees to the sample surface (scatter angle default in + out)."""

    incidence_deg: float = 45.0
    exit_deg: float = 45.0
    scatter_deg: float | None = None

    @property
    def scatter_rad(self) -> float:
        deg = self.scatter_deg if self.scatter_deg is not None else self.incidence_deg + self.exit_deg
        return math.radians(deg)


@dataclass
class Beam:
    """Incident beam and monitor.

    Attributes
    ----------
    flux : float
        Mean incident photons per second.
    i0_gain : float
        Monitor counts per incident photon (``I0 = photons * i0_gain``).
    i0_noise : float
        Relative standard deviation of the point-to-point flux fluctuations.
    i0_drift : float
        Relative flux loss from the first to the last point (linear, e.g. ring current decay).
    """

    flux: float = 1.0e11
    i0_gain: float = 1.0e-4
    i0_noise: float = 0.02
    i0_drift: float = 0.0


@dataclass
class LineTable:
    """Flattened line table of every simulated group."""

    groups: list[str]
    group_of: np.ndarray  # (nlines,) index into groups
    elem_of: np.ndarray  # (nlines,) index into the element list
    energy: np.ndarray  # (nlines,)
    sigma_f: np.ndarray  # (nlines,) cm2/g
    names: list[str]


def line_table(zs: np.ndarray, energy_keV: float, min_line_keV: float, threshold: float) -> LineTable:
    groups, group_of, elem_of, energy, sigma_f, names = [], [], [], [], [], []
    for k, z in enumerate(zs):
        for family in xd.FAMILIES:
            g = xd.line_group(int(z), family)
            if not g.lines:
                continue
            cs = xd.fluorescence_cs(int(z), g.lines, energy_keV)
            if cs.max(initial=0.0) <= 0:
                continue
            keep = (cs >= threshold * cs.max()) & (g.energies >= min_line_keV) & (g.energies < energy_keV)
            if not keep.any():
                continue
            gi = len(groups)
            groups.append(g.name)
            for idx in np.flatnonzero(keep):
                group_of.append(gi)
                elem_of.append(k)
                energy.append(g.energies[idx])
                sigma_f.append(cs[idx])
                names.append(g.lines[idx])
    return LineTable(groups, np.array(group_of, dtype=np.int64), np.array(elem_of, dtype=np.int64),
                  np.array(energy, dtype=np.float64), np.array(sigma_f, dtype=np.float64), names)


def peak_shapes(det: Detector, centres_keV: np.ndarray, sigmas_keV: np.ndarray) -> np.ndarray:
    """Unit-area Gaussians integrated over the channels of ``det``.

    Returns
    -------
    ndarray, shape (npeaks, nbins)
        Fraction of each peak's counts falling in each channel (rows sum to 1 for peaks well inside
        the calibrated range).
    """
    edges = det.energies(np.arange(det.nbins + 1) - 0.5)
    c = np.asarray(centres_keV, dtype=np.float64)[:, None]
    s = np.asarray(sigmas_keV, dtype=np.float64)[:, None]
    cdf = 0.5 * erf((edges[None, :] - c) / (math.sqrt(2.0) * s))
    return np.diff(cdf, axis=1)


def escape_fraction(energy_keV: np.ndarray) -> np.ndarray:
    """Probability that a photon absorbed in Si loses a Si K photon (Reed and Ware, normal incidence)."""
    e = np.atleast_1d(np.asarray(energy_keV, dtype=np.float64))
    out = np.zeros_like(e)
    above = e > xd.edge_energy("Si", "K")
    if not above.any():
        return out
    e_ka = xd.line_energy("Si", "KL3")
    mu_ka = xd.mass_attenuation("Si", e_ka)[0, 0]
    mu = xd.photo_absorption("Si", e[above])[0]
    omega, jump = xd.fluorescence_yield("Si", "K"), xd.jump_factor("Si", "K")
    r = mu_ka / mu
    out[above] = 0.5 * omega * (1.0 - 1.0 / jump) * (1.0 - r * np.log1p(1.0 / r))
    return out


def _si_k_escape_lines() -> tuple[np.ndarray, np.ndarray]:
    """Energies (keV) of the Si K alpha and K beta lines and their shares of the K emission."""
    ka = [xd.radiative_rate("Si", ln) for ln in ("KL2", "KL3")]
    kb = [xd.radiative_rate("Si", ln) for ln in ("KM2", "KM3")]
    e = np.array([xd.line_energy("Si", "KL3"), xd.line_energy("Si", "KM3")])
    share = np.array([sum(ka), sum(kb)])
    return e, share / share.sum()


def response(det: Detector, energies: np.ndarray, compton: int | None) -> np.ndarray:
    """Channel response of peaks at ``energies`` (row ``compton`` broadened), with escape peaks.

    A fraction ``p`` (:func:`escape_fraction`) of the photons absorbed loses a Si K photon: it
    appears at ``E - E(Si Ka)`` or ``E - E(Si Kb)`` (shared as the Si K lines' radiative rates, as
    PyMca's escape model does); ``1 - p`` stays in the main peak, so the row sums to 1.
    """
    sig = det.sigma(energies)
    if compton is not None:
        sig[compton] = math.hypot(sig[compton], det.compton_width * energies[compton])
    shapes = peak_shapes(det, energies, sig)
    if det.escape:
        p = escape_fraction(energies)
        e_si, share = _si_k_escape_lines()
        main = shapes.copy()
        for e_line, frac in zip(e_si, share):
            e_esc = energies - e_line
            ok = (p > 0) & (e_esc > 0)
            if ok.any():
                esc = peak_shapes(det, e_esc[ok], det.sigma(e_esc[ok]))
                shapes[ok] += p[ok, None] * frac * (esc - main[ok])
    return shapes


def continuum(det: Detector, energy_keV: float, compton_keV: float) -> np.ndarray:
    """Unit-sum smooth continuum: rising towards the scatter peaks, cut off below ~1 keV."""
    e = det.energies(np.arange(det.nbins))
    width = max(det.compton_width * compton_keV, float(det.sigma(compton_keV)))
    shape = (0.3 + np.clip(e, 0, None) / energy_keV) * 0.5 * (1 - erf((e - compton_keV) / (math.sqrt(2) * width)))
    shape *= -np.expm1(-np.clip(e, 0, None) / 1.0)
    total = shape.sum()
    return shape / total if total > 0 else shape



__all__ = ["Detector", "Geometry", "Beam", "LineTable", "line_table", "peak_shapes", "escape_fraction",
           "response", "continuum"]
