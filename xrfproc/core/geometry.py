"""Measurement geometry: angles, air path, detector window and crystal, given once per file or recipe.

One :class:`Geometry` describes how a sample is seen::

    incidence_deg, exit_deg   beam and detector angles to the sample surface (degrees)
    air_path_cm               air between the sample and the detector window (cm)
    window, window_um         detector window material (element or formula) and thickness (um)
    crystal, crystal_mm       detector crystal material and thickness (mm)

It is used by the physics-based yields (:mod:`xrfproc.core.fpyields`) and by the theoretical Ka/Kb
ratio of the self-absorption correction (:func:`xrfproc.core.quant.theoretical_ka_kb`): a line of
energy ``E`` reaches the detector with probability ``detection(E) = T_air(E) T_window(E) eff(E)``::

    T_air(E)    = exp(-mu_air(E) rho_air air_path)           (total attenuation, dry air 1.205 mg/cm3)
    T_window(E) = exp(-mu_w(E) rho_w window_um 1e-4)          (total attenuation)
    eff(E)      = 1 - exp(-tau_c(E) rho_c crystal_mm 0.1)     (photo-absorption in the crystal)

the same model as the simulator's detector (:class:`xrfproc.core.simphysics.Detector`).

Presets (:data:`PRESETS`, by name): ``generic`` (45/45 degrees, no air, 8 um Be, 0.45 mm Si: the
simulator's defaults), ``aps-2ide`` and ``esrf-id15``. The beamline presets are nominal starting
points (typical SDD windows and crystals, a typical air gap), not surveyed values: check them against
the beamline's drawings and give the measured values where they differ. A geometry is recorded in a
file's ``geometry`` attributes by :func:`xrfproc.steps.geometry.set_geometry` and in the provenance
of every step that uses it.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Mapping

import numpy as np

from . import xraydata as xd
from ..errors import InputError

#: dry air near sea level: mass fractions and density (g/cm3, 20 C, 1013 hPa)
AIR = {"N": 0.755267, "O": 0.231781, "Ar": 0.012827, "C": 0.000124}
AIR_DENSITY = 1.205e-3
#: densities (g/cm3) of common window and crystal materials that are not elements
DENSITIES = {"Si3N4": 3.44, "CdTe": 5.85}


@dataclass(frozen=True)
class Geometry:
    """See the module docstring. Angles in degrees to the surface, air in cm, window in um, crystal in mm."""

    incidence_deg: float = 45.0
    exit_deg: float = 45.0
    air_path_cm: float = 0.0
    window: str = "Be"
    window_um: float = 8.0
    crystal: str = "Si"
    crystal_mm: float = 0.45
    name: str = "custom"

    def __post_init__(self) -> None:
        for key in ("incidence_deg", "exit_deg"):
            v = float(getattr(self, key))
            if not (np.isfinite(v) and 0 < v <= 90):
                raise InputError(f"geometry {key} must be in (0, 90] degrees, got {getattr(self, key)!r}")
        for key in ("air_path_cm", "window_um", "crystal_mm"):
            v = float(getattr(self, key))
            if not (np.isfinite(v) and v >= 0):
                raise InputError(f"geometry {key} must be finite and >= 0, got {getattr(self, key)!r}")
        for key in ("window", "crystal"):
            _material(getattr(self, key))  # raises for an unknown material

    # ------------------------------------------------------------------ physics
    def air_transmission(self, energy_keV: Any) -> np.ndarray:
        e = np.atleast_1d(np.asarray(energy_keV, dtype=np.float64))
        if self.air_path_cm <= 0:
            return np.ones_like(e)
        return np.exp(-xd.compound_attenuation(AIR, e) * AIR_DENSITY * self.air_path_cm)

    def window_transmission(self, energy_keV: Any) -> np.ndarray:
        e = np.atleast_1d(np.asarray(energy_keV, dtype=np.float64))
        if self.window_um <= 0:
            return np.ones_like(e)
        comp, rho = _material(self.window)
        return np.exp(-xd.compound_attenuation(comp, e) * rho * self.window_um * 1e-4)

    def crystal_efficiency(self, energy_keV: Any) -> np.ndarray:
        e = np.atleast_1d(np.asarray(energy_keV, dtype=np.float64))
        if self.crystal_mm <= 0:
            return np.ones_like(e)
        comp, rho = _material(self.crystal)
        zs, ws = xd.composition_arrays(comp)
        tau = ws @ xd.photo_absorption(zs, e)
        return -np.expm1(-tau * rho * self.crystal_mm * 0.1)

    def detection(self, energy_keV: Any) -> np.ndarray:
        """Probability that a photon of ``energy_keV`` leaving the sample towards the detector is counted."""
        return self.air_transmission(energy_keV) * self.window_transmission(energy_keV) * \
            self.crystal_efficiency(energy_keV)

    # ------------------------------------------------------------------ records
    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def same_detection(self, other: "Geometry", rtol: float = 1e-6) -> bool:
        """True when both see lines alike (angles, air, window and crystal equal)."""
        a, b = self.as_dict(), other.as_dict()
        a.pop("name"), b.pop("name")
        return all((a[k] == b[k]) if isinstance(a[k], str) else math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=1e-12)
                   for k in a)

    def describe(self) -> str:
        return (f"{self.name}: incidence {self.incidence_deg:g} deg, exit {self.exit_deg:g} deg, air "
                f"{self.air_path_cm:g} cm, window {self.window_um:g} um {self.window}, crystal {self.crystal_mm:g} mm "
                f"{self.crystal}")


def _material(name: str) -> tuple[dict[int, float], float]:
    """(mass fractions, density g/cm3) of an element symbol or a formula with a known density."""
    text = str(name).strip()
    try:
        z = xd.atomic_number(text)
    except InputError:
        z = None
    if z is not None:
        return {z: 1.0}, xd.element_density(z)
    if text not in DENSITIES:
        raise InputError(f"detector material {name!r}: give an element symbol or one of {', '.join(DENSITIES)}")
    return xd.formula_mass_fractions(text), DENSITIES[text]


#: nominal beamline geometries (see the module docstring: check them against the beamline)
PRESETS: dict[str, Geometry] = {
    "generic": Geometry(name="generic"),
    # 2-ID-E: sample surface turned 15 deg towards the detector at 90 deg to the beam; SDD, 12.5 um Be
    "aps-2ide": Geometry(incidence_deg=75.0, exit_deg=15.0, air_path_cm=1.0, window="Be", window_um=12.5,
                         crystal="Si", crystal_mm=0.35, name="aps-2ide"),
    # ID15A fluorescence: sample at 45 deg, detector at 90 deg to the beam, SDD
    "esrf-id15": Geometry(incidence_deg=45.0, exit_deg=45.0, air_path_cm=2.0, window="Be", window_um=25.0,
                          crystal="Si", crystal_mm=0.5, name="esrf-id15"),
}


def resolve(value: Any = None, **overrides: Any) -> Geometry:
    """A :class:`Geometry` from ``None`` (generic), a preset name, a dict (optionally with ``preset``) or a Geometry.

    ``overrides`` (``incidence_deg=60`` ...) replace single fields; ``None`` values are ignored.

    Raises
    ------
    InputError
        For an unknown preset or field.
    """
    if value is None:
        geo = PRESETS["generic"]
    elif isinstance(value, Geometry):
        geo = value
    elif isinstance(value, str):
        key = value.strip().lower()
        if key not in PRESETS:
            raise InputError(f"unknown geometry preset {value!r}; known: {', '.join(PRESETS)}")
        geo = PRESETS[key]
    elif isinstance(value, Mapping):
        d = dict(value)
        base = resolve(d.pop("preset", None))
        known = {f.name for f in fields(Geometry)}
        bad = sorted(set(d) - known)
        if bad:
            raise InputError(f"unknown geometry field(s) {', '.join(bad)}; known: {', '.join(sorted(known))}")
        geo = replace(base, **{**d, "name": d.get("name", base.name if not d else f"{base.name}+custom")})
    else:
        raise InputError(f"geometry must be a preset name, a dict or a Geometry, got {type(value).__name__}")
    over = {k: v for k, v in overrides.items() if v is not None}
    if over:
        known = {f.name for f in fields(Geometry)}
        bad = sorted(set(over) - known)
        if bad:
            raise InputError(f"unknown geometry field(s) {', '.join(bad)}")
        changed = {k: v for k, v in over.items() if getattr(geo, k) != v}
        if changed:
            geo = replace(geo, **changed, name=geo.name if geo.name.endswith("+custom") else f"{geo.name}+custom")
    return geo


__all__ = ["AIR", "AIR_DENSITY", "Geometry", "PRESETS", "resolve"]
