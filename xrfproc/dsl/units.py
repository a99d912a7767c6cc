"""Numbers with units in recipes, converted once, here, to the unit a parameter takes.

A parameter's unit is read from its name, as the API spells it: ``energy_keV`` takes keV,
``pixel_um`` micrometres, ``dwell_s`` seconds, ``incidence_deg`` degrees. A plain number given to
such a parameter is taken in that unit; a number with a unit is converted (``18000 eV`` -> 18.0
for ``energy_keV``; ``0.015 mm`` -> 15.0 for ``pixel_um``). A number with a unit given to a
parameter without one is an error.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

#: unit -> (dimension, factor to the dimension's base unit). Bases: keV, um, s, deg.
UNITS: dict[str, tuple[str, float]] = {
    "eV": ("energy", 1e-3), "keV": ("energy", 1.0), "MeV": ("energy", 1e3),
    "nm": ("length", 1e-3), "um": ("length", 1.0), "\xb5m": ("length", 1.0), "mm": ("length", 1e3),
    "cm": ("length", 1e4), "m": ("length", 1e6),
    "us": ("time", 1e-6), "ms": ("time", 1e-3), "s": ("time", 1.0), "min": ("time", 60.0), "h": ("time", 3600.0),
    "deg": ("angle", 1.0), "rad": ("angle", 180.0 / math.pi), "mrad": ("angle", 0.180 / math.pi),
}

#: what each dimension is called in messages
DIMENSION_WORDS = {"energy": "an energy", "length": "a length", "time": "a time", "angle": "an angle"}

#: parameter-name suffixes that carry a unit (``energy_keV``); longest first when matching
_SUFFIXES = sorted((u for u in UNITS if u != "\xb5m"), key=len, reverse=True)

#: parameters whose unit is not in their name
PARAMETER_UNITS: dict[str, str] = {"dwell": "s", "exposure": "s"}


@dataclass(frozen=True)
class Quantity:
    """A number with a unit as written in a recipe (``15 um``)."""

    value: float
    unit: str

    def __str__(self) -> str:
        v = int(self.value) if float(self.value).is_integer() and abs(self.value) < 1e15 else self.value
        return f"{v}{self.unit}"


class UnitError(ValueError):
    """A unit that is unknown or does not fit the parameter (the message says which)."""


def check_unit(unit: str) -> None:
    """Raise :class:`UnitError` for a unit the language does not know."""
    if unit not in UNITS:
        import difflib

        near = difflib.get_close_matches(unit, list(UNITS), n=1)
        hint = f" (did you mean '{near[0]}'?)" if near else f" (known: {', '.join(UNITS)})"
        raise UnitError(f"unknown unit '{unit}'{hint}")


def parameter_unit(name: str) -> str | None:
    """The unit a parameter takes, from its name (``energy_keV`` -> ``"keV"``), or None."""
    if name in PARAMETER_UNITS:
        return PARAMETER_UNITS[name]
    if "_" in name:
        suffix = name.rsplit("_", 1)[1]
        if suffix in UNITS:
            return suffix
    return None


def convert(value: float, unit: str, to_unit: str) -> float:
    """``value`` in ``unit`` expressed in ``to_unit`` (same dimension, else :class:`UnitError`)."""
    check_unit(unit)
    check_unit(to_unit)
    dim, f = UNITS[unit]
    dim2, f2 = UNITS[to_unit]
    if dim != dim2:
        raise UnitError(f"expected {DIMENSION_WORDS[dim2]} (in {to_unit}), got {DIMENSION_WORDS[dim]} ({unit})")
    return value * f / f2


def for_parameter(name: str, q: Quantity) -> float:
    """Convert a quantity given to parameter ``name`` into the unit the parameter takes.

    Raises
    ------
    UnitError
        Unknown unit, a unit of another dimension, or a parameter that takes a plain number.
    """
    check_unit(q.unit)
    target = parameter_unit(name)
    if target is None:
        raise UnitError(f"'{name}' takes a plain number, not a quantity in {q.unit}")
    try:
        return convert(q.value, q.unit, target)
    except UnitError as exc:
        raise UnitError(f"'{name}' expects{str(exc)[len('expected'):]}") from None
