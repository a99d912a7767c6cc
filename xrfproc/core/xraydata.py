"""Fundamental X-ray data: the one module of xrfproc that talks to xraylib.

A small typed layer over xraylib (and xraylib_np for the vectorised cross sections), so the rest
of the code never sees xraylib's integer macros or its exceptions.

Units: energies in keV, cross sections and mass attenuation coefficients in cm2/g, differential
cross sections in cm2/g/sr, angles in radians.

Line groups follow PyMca's naming: ``"Fe K"`` holds every K line of iron (KL2, KL3, KM2, ...),
``"Pb L"`` every line of the L1, L2 and L3 subshells, ``"Au M"`` every line of M1..M5. Individual
lines use the IUPAC (Siegbahn-free) names of xraylib without the ``_LINE`` suffix (``"KL3"``).
"""
from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Mapping, Sequence, Union

import numpy as np
import xraylib
import xraylib_np

from ..errors import InputError

Element = Union[str, int]

#: the line families (PyMca line groups) and the subshells whose lines they hold
FAMILIES: dict[str, tuple[str, ...]] = {
    "K": ("K",),
    "L": ("L1", "L2", "L3"),
    "M": ("M1", "M2", "M3", "M4", "M5"),
}
_SHELLS = {"K": xraylib.K_SHELL, "L1": xraylib.L1_SHELL, "L2": xraylib.L2_SHELL, "L3": xraylib.L3_SHELL,
           "M1": xraylib.M1_SHELL, "M2": xraylib.M2_SHELL, "M3": xraylib.M3_SHELL, "M4": xraylib.M4_SHELL,
           "M5": xraylib.M5_SHELL}
# single transitions only: composite macros such as L1N67 or L3P45 would count lines twice
_LINE_RE = re.compile(r"^(K|L[1-3]|M[1-5])([K-Q][1-7])_LINE$")
_LINES: dict[str, int] = {name[:-5]: getattr(xraylib, name) for name in dir(xraylib) if _LINE_RE.match(name)}


def _family_lines(family: str) -> list[str]:
    shells = FAMILIES[family]
    out = [name for name in _LINES if _LINE_RE.match(name + "_LINE").group(1) in shells]  # type: ignore[union-attr]
    return sorted(out, key=lambda n: -_LINES[n])


# --------------------------------------------------------------------------- elements
def atomic_number(element: Element) -> int:
    """Atomic number of an element given as symbol (``"Fe"``) or number (26).

    Raises
    ------
    InputError
        For an unknown symbol or a number outside 1..103.
    """
    if isinstance(element, (int, np.integer)):
        z = int(element)
        if not 1 <= z <= 103:
            raise InputError(f"atomic number {z} outside 1..103")
        return z
    text = str(element).strip()
    if text.isdigit():
        return atomic_number(int(text))
    try:
        return int(xraylib.SymbolToAtomicNumber(text))
    except ValueError:
        raise InputError(f"unknown element symbol {element!r} (expected e.g. 'Fe', 'Pb')") from None


def symbol(element: Element) -> str:
    """Chemical symbol of an element given by number or symbol."""
    return str(xraylib.AtomicNumberToSymbol(atomic_number(element)))


def atomic_weight(element: Element) -> float:
    """Atomic weight in g/mol."""
    return float(xraylib.AtomicWeight(atomic_number(element)))


def parse_group(name: str) -> tuple[int, str]:
    """Split a PyMca line group name: ``"Fe K"`` -> ``(26, "K")``.

    Raises
    ------
    InputError
        If the name is not ``"<symbol> <K|L|M>"``.
    """
    parts = str(name).split()
    if len(parts) != 2 or parts[1] not in FAMILIES:
        raise InputError(f"line group {name!r} is not of the form 'Fe K', 'Pb L' or 'Au M'")
    return atomic_number(parts[0]), parts[1]


# --------------------------------------------------------------------------- lines
@dataclass(frozen=True)
class LineGroup:
    """The individual lines of one PyMca line group.

    Attributes
    ----------
    name : str
        ``"Fe K"``.
    z : int
        Atomic number.
    family : str
        ``"K"``, ``"L"`` or ``"M"``.
    lines : tuple of str
        IUPAC line names (``"KL3"``), only lines xraylib knows for this element.
    energies : ndarray, shape (nlines,)
        Line energies in keV.
    rates : ndarray, shape (nlines,)
        Radiative rates: the fraction of the radiative decays of the line's initial subshell
        that go through this line (xraylib ``RadRate``).
    """

    name: str
    z: int
    family: str
    lines: tuple[str, ...]
    energies: np.ndarray
    rates: np.ndarray


def line_macro(line: str) -> int:
    """xraylib's macro of an IUPAC line name (``"KL3"`` -> ``KL3_LINE``)."""
    key = line[:-5] if line.endswith("_LINE") else line
    if key not in _LINES:
        raise InputError(f"unknown X-ray line {line!r} (expected an IUPAC name such as 'KL3', 'L3M5')")
    return _LINES[key]


def line_energy(element: Element, line: str) -> float:
    """Energy of one line in keV; 0.0 when the element does not have it."""
    try:
        return float(xraylib.LineEnergy(atomic_number(element), line_macro(line)))
    except ValueError:
        return 0.0


def radiative_rate(element: Element, line: str) -> float:
    """Radiative rate of one line (see :class:`LineGroup`); 0.0 when absent."""
    try:
        return float(xraylib.RadRate(atomic_number(element), line_macro(line)))
    except ValueError:
        return 0.0


@functools.lru_cache(maxsize=1024)
def _line_group(z: int, family: str) -> LineGroup:
    names, energies, rates = [], [], []
    for line in _family_lines(family):
        e = line_energy(z, line)
        r = radiative_rate(z, line)
        if e > 0 and r > 0:
            names.append(line)
            energies.append(e)
            rates.append(r)
    en = np.array(energies, dtype=np.float64)
    ra = np.array(rates, dtype=np.float64)
    en.setflags(write=False)
    ra.setflags(write=False)
    return LineGroup(f"{symbol(z)} {family}", z, family, tuple(names), en, ra)


def line_group(element: Element, family: str) -> LineGroup:
    """The lines of one element's K, L or M group (possibly empty for light elements)."""
    if family not in FAMILIES:
        raise InputError(f"line family {family!r} must be one of {sorted(FAMILIES)}")
    return _line_group(atomic_number(element), family)


def fluorescence_cs(element: Element, lines: Sequence[str], energy_keV: float) -> np.ndarray:
    """Fluorescence production cross sections of lines (Kissel photoionisation, full cascade).

    Returns
    -------
    ndarray, shape (len(lines),)
        cm2/g of the element, for an excitation energy ``energy_keV``; 0 for lines that are not
        excited or do not exist.
    """
    z = atomic_number(element)
    out = np.zeros(len(lines))
    for i, line in enumerate(lines):
        try:
            out[i] = xraylib.CS_FluorLine_Kissel_Cascade(z, line_macro(line), float(energy_keV))
        except ValueError:
            out[i] = 0.0
    return out


def edge_energy(element: Element, shell: str) -> float:
    """Absorption edge energy (keV) of a shell (``"K"``, ``"L3"``, ``"M5"`` ...)."""
    if shell not in _SHELLS:
        raise InputError(f"shell {shell!r} must be one of {sorted(_SHELLS)}")
    try:
        return float(xraylib.EdgeEnergy(atomic_number(element), _SHELLS[shell]))
    except ValueError:
        return 0.0


def fluorescence_yield(element: Element, shell: str) -> float:
    """Fluorescence yield of a shell (0 when undefined)."""
    try:
        return float(xraylib.FluorYield(atomic_number(element), _SHELLS[shell]))
    except (ValueError, KeyError):
        return 0.0


def jump_factor(element: Element, shell: str) -> float:
    """Absorption jump factor of a shell (0 when undefined)."""
    try:
        return float(xraylib.JumpFactor(atomic_number(element), _SHELLS[shell]))
    except (ValueError, KeyError):
        return 0.0


def element_density(element: Element) -> float:
    """Density of the pure element (g/cm3, xraylib ``ElementDensity``)."""
    try:
        return float(xraylib.ElementDensity(atomic_number(element)))
    except ValueError:
        raise InputError(f"no density known for {element!r}") from None


def formula_mass_fractions(formula: str) -> dict[int, float]:
    """Mass fractions ``{Z: w}`` of a chemical formula (``"SiO2"``, ``"C6H10O5"``; xraylib ``CompoundParser``).

    Raises
    ------
    InputError
        When xraylib cannot parse the formula.
    """
    try:
        cp = xraylib.CompoundParser(str(formula).strip())
    except (ValueError, TypeError):
        raise InputError(f"{formula!r} is not a chemical formula (expected e.g. 'SiO2', 'C6H10O5')") from None
    return {int(z): float(w) for z, w in zip(cp["Elements"], cp["massFractions"])}


# --------------------------------------------------------------------------- attenuation
def _zarray(elements: Element | Sequence[Element] | np.ndarray) -> np.ndarray:
    if isinstance(elements, (str, int, np.integer)):
        elements = [elements]
    return np.array([atomic_number(e) for e in elements], dtype=np.int64)


def _earray(energy_keV: float | Sequence[float] | np.ndarray) -> np.ndarray:
    e = np.atleast_1d(np.asarray(energy_keV, dtype=np.float64))
    if e.ndim != 1:
        raise InputError(f"energies must be a scalar or a 1-D array, got shape {e.shape}")
    if np.any(~np.isfinite(e)) or np.any(e <= 0):
        raise InputError("energies must be positive and finite (keV)")
    return e


def mass_attenuation(elements: Element | Sequence[Element], energy_keV: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Total mass attenuation coefficients (xraylib ``CS_Total``), cm2/g.

    Returns
    -------
    ndarray, shape (n_elements, n_energies)
        0 where xraylib has no data (energies below 0.1 keV).
    """
    return np.asarray(xraylib_np.CS_Total(_zarray(elements), _earray(energy_keV)), dtype=np.float64)


def photo_absorption(elements: Element | Sequence[Element], energy_keV: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Photoelectric mass absorption coefficients (xraylib ``CS_Photo``), cm2/g, shape (n_el, n_E)."""
    return np.asarray(xraylib_np.CS_Photo(_zarray(elements), _earray(energy_keV)), dtype=np.float64)


def composition_arrays(composition: Mapping[Element, float]) -> tuple[np.ndarray, np.ndarray]:
    """A composition ``{symbol or Z: mass fraction}`` as (atomic numbers, fractions) arrays.

    Repeated elements (``"Fe"`` and 26) are added up.

    Raises
    ------
    InputError
        For unknown symbols, negative or non-finite fractions.
    """
    acc: dict[int, float] = {}
    for key, value in composition.items():
        z = atomic_number(key)
        v = float(value)
        if not np.isfinite(v) or v < 0:
            raise InputError(f"mass fraction of {key!r} must be finite and >= 0, got {value!r}")
        acc[z] = acc.get(z, 0.0) + v
    zs = np.array(sorted(acc), dtype=np.int64)
    return zs, np.array([acc[z] for z in zs], dtype=np.float64)


def compound_attenuation(composition: Mapping[Element, float], energy_keV: float | Sequence[float] | np.ndarray) -> np.ndarray:
    """Mass attenuation coefficient of a mixture, ``sum_i w_i mu_i(E)``, cm2/g, shape (n_energies,).

    The fractions are used as given (not renormalised).
    """
    zs, ws = composition_arrays(composition)
    if zs.size == 0:
        raise InputError("empty composition")
    return ws @ mass_attenuation(zs, energy_keV)


# --------------------------------------------------------------------------- scattering
def rayleigh_dcs(elements: Element | Sequence[Element], energy_keV: float, theta_rad: float) -> np.ndarray:
    """Unpolarised Rayleigh differential cross sections, cm2/g/sr, shape (n_elements,)."""
    out = xraylib_np.DCS_Rayl(_zarray(elements), _earray(energy_keV), np.atleast_1d(float(theta_rad)))
    return np.asarray(out, dtype=np.float64)[:, 0, 0]


def compton_dcs(elements: Element | Sequence[Element], energy_keV: float, theta_rad: float) -> np.ndarray:
    """Unpolarised Compton differential cross sections, cm2/g/sr, shape (n_elements,)."""
    out = xraylib_np.DCS_Compt(_zarray(elements), _earray(energy_keV), np.atleast_1d(float(theta_rad)))
    return np.asarray(out, dtype=np.float64)[:, 0, 0]


def compton_energy(energy_keV: float, theta_rad: float) -> float:
    """Energy (keV) of a photon Compton-scattered by ``theta_rad``."""
    return float(xraylib.ComptonEnergy(float(energy_keV), float(theta_rad)))


__all__ = [
    "FAMILIES", "LineGroup", "atomic_number", "symbol", "atomic_weight", "parse_group", "line_macro",
    "line_energy", "radiative_rate", "line_group", "fluorescence_cs", "edge_energy", "fluorescence_yield",
    "jump_factor", "element_density", "formula_mass_fractions", "mass_attenuation", "photo_absorption", "composition_arrays", "compound_attenuation",
    "rayleigh_dcs", "compton_dcs", "compton_energy",
]
