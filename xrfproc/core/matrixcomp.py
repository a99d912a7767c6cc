"""The matrix composition of a ``.cnc`` file, handled the same way by every step (detlim, quantify).

Many certificates list only some elements (biological materials without C, H, O, N; glasses without
O), so their mass fractions sum well below 1, and a few sum above it. The absorption of the matrix
needs a whole composition; :func:`matrix_composition` makes one, by one of three rules:

``"normalise"`` (default)
    every fraction divided by the sum (the listed elements keep their proportions);
``"as_given"``
    the fractions as listed (the unlisted part absorbs nothing);
a formula or element (``"C6H10O5"``, ``"SiO2"``, ``"O"``)
    the missing part ``1 - sum`` is that compound (a sum above 1 is normalised instead).

A sum further than ``tolerance`` (5 %) from 1 gives a warning that names the file, the sum and the rule
applied; the record returned (``file``, ``sum``, ``handling``, ``balance``) goes into the provenance.
"""
from __future__ import annotations

import logging
from typing import Any

from . import xraydata as xd
from .cnc import Cnc
from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

#: a composition summing further than this from 1 is reported
TOLERANCE = 0.05


def matrix_composition(cnc: Cnc, handling: str | None = "normalise", tolerance: float = TOLERANCE
                       ) -> tuple[dict[int, float], dict[str, Any], str | None]:
    """Mass fractions ``{Z: w}`` of a bulk ``.cnc`` by ``handling``, the record of what was done, and a warning.

    Raises
    ------
    ConfigError
        An areal file, no positive concentration, or an unknown handling.
    """
    if cnc.areal:
        raise ConfigError(f"{cnc.name}: an areal composition ({cnc.unit}) is not a matrix", path=cnc.path)
    comp = {int(z): float(w) for z, w in cnc.mass_fractions().items() if w > 0}
    total = float(sum(comp.values()))
    if total <= 0:
        raise ConfigError(f"{cnc.name}: the composition has no positive concentration", path=cnc.path)
    rule = (handling or "normalise").strip()
    record: dict[str, Any] = {"file": str(cnc.path or cnc.name), "sum": total, "handling": rule}
    if rule == "normalise":
        out = {z: w / total for z, w in comp.items()}
        did = "fractions divided by their sum"
    elif rule == "as_given":
        out = dict(comp)
        did = "fractions used as given"
    else:
        try:
            bal = {xd.atomic_number(rule): 1.0}
        except InputError:
            try:
                bal = xd.formula_mass_fractions(rule)
            except InputError:
                raise ConfigError(f"matrix fractions handling {rule!r}: give 'normalise', 'as_given' or the formula "
                                  f"of the missing part (e.g. 'C6H10O5', 'SiO2')", path=cnc.path) from None
        if total < 1.0:
            out = dict(comp)
            for z, w in bal.items():
                out[z] = out.get(z, 0.0) + w * (1.0 - total)
            did = f"the missing {100 * (1 - total):.1f} % filled with {rule}"
            record["balance"] = rule
        else:
            out = {z: w / total for z, w in comp.items()}
            did = f"fractions divided by their sum (nothing to fill with {rule})"
    record["applied"] = did
    warning = None
    if abs(total - 1.0) > tolerance:
        warning = (f"{cnc.path or cnc.name}: the composition sums to {100 * total:.1f} % (not 100 %); {did} "
                   f"(fractions={rule!r}; 'normalise', 'as_given' or the formula of the missing part)")
        log.warning(warning)
    return out, record, warning


__all__ = ["TOLERANCE", "matrix_composition"]
