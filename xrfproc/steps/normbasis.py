"""What the normalised intensities of a file (``norm/``) are per: the normalisation basis.

``norm/`` holds ``counts x I0norm / I0 [/ t]``. What that means depends on what ``raw/I0`` is (the
converters record ``raw/I0@units``: ``"counts"`` per point, ``"counts/s"`` a rate, ``"counts/mA"``,
``"1"`` no monitor) and on whether ``normalise`` divided by the acquisition time (``tmnorm``)::

    norm / I0norm = (counts per I0 count) x t ** k,    k = [I0 is a rate] - [tmnorm]

with ``t`` the time per point. Two files can share yields only when their ``k`` agree and, for
``k != 0``, their dwell times too; :func:`compare` says what differs, :attr:`NormBasis.to_counts_per_i0`
the factor that turns ``norm / I0norm`` into counts per I0 count (``t ** -k``, with the file's dwell).

Read from (first found): ``norm@I0_units``, ``norm@tmnorm``, ``norm@dwell_s`` (written by ``normalise``
since it records them); ``raw/I0@units``, ``norm@unit`` ("... per s" means tmnorm), ``raw@dwell_s``,
the median of ``raw/acquisition_time``. A file that records no I0 unit is taken as counts
(``i0_units_known`` False).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

#: I0 units whose basis can be converted into counts per I0 count
CONVERTIBLE = ("counts", "counts/s")


def _text(v: Any) -> str:
    if isinstance(v, bytes):
        return v.decode("utf8", "replace")
    if isinstance(v, np.ndarray) and v.shape == ():
        return _text(v[()])
    return str(v)


@dataclass
class NormBasis:
    file: str
    i0_units: str
    i0_units_known: bool
    tmnorm: bool
    dwell_s: float | None

    @property
    def time_power(self) -> int:
        return (1 if self.i0_units == "counts/s" else 0) - (1 if self.tmnorm else 0)

    @property
    def convertible(self) -> bool:
        return self.i0_units in CONVERTIBLE and (self.time_power == 0 or bool(self.dwell_s and self.dwell_s > 0))

    @property
    def to_counts_per_i0(self) -> float:
        """Factor turning ``norm / I0norm`` into counts per I0 count (``dwell ** -k``)."""
        k = self.time_power
        if k == 0:
            return 1.0
        if not (self.dwell_s and self.dwell_s > 0):
            raise ValueError(f"{self.file}: no dwell time to convert the normalisation")
        return float(self.dwell_s) ** (-k)

    def describe(self) -> str:
        i0 = self.i0_units + ("" if self.i0_units_known else " (assumed: no raw/I0@units)")
        dwell = f"{self.dwell_s:g} s" if self.dwell_s else "unknown"
        what = {0: "counts per I0 count", 1: "counts per I0 count x dwell (I0 a rate)",
                -1: "counts per I0 count per second"}.get(self.time_power, f"counts per I0 count x t^{self.time_power}")
        return f"I0 in {i0}, tmnorm={self.tmnorm}, dwell {dwell}: {what}"

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "time_power": self.time_power, "description": self.describe()}


def norm_basis(f: Any, path: Any = "") -> NormBasis:
    """The normalisation basis of an open layout file (see the module docstring)."""
    norm = f["norm"] if "norm" in f else None
    units, known = None, False
    if norm is not None and "I0_units" in norm.attrs:
        units = _text(norm.attrs["I0_units"])
    elif "raw/I0" in f and "units" in f["raw/I0"].attrs:
        units = _text(f["raw/I0"].attrs["units"])
    if units and units != "unknown":
        known = True
    else:
        units = "counts"
    if norm is not None and "tmnorm" in norm.attrs:
        tm = bool(norm.attrs["tmnorm"])
    else:
        tm = norm is not None and _text(norm.attrs.get("unit", "")).strip().endswith("per s")
    dwell = None
    if norm is not None and "dwell_s" in norm.attrs:
        dwell = float(norm.attrs["dwell_s"])
    elif "raw" in f and "dwell_s" in f["raw"].attrs:
        dwell = float(f["raw"].attrs["dwell_s"])
    elif "raw/acquisition_time" in f:
        t = np.asarray(f["raw/acquisition_time"][()], dtype=np.float64)
        dwell = float(np.nanmedian(t)) if t.size and np.isfinite(t).any() else None
    if dwell is not None and not (np.isfinite(dwell) and dwell > 0):
        dwell = None
    return NormBasis(str(path), units, known, tm, dwell)


def compare(a: NormBasis, b: NormBasis, rtol: float = 0.01) -> list[str]:
    """What differs between two bases so that their intensities are not per the same quantity (empty: alike)."""
    out = []
    if a.i0_units not in CONVERTIBLE or b.i0_units not in CONVERTIBLE:
        if a.i0_units != b.i0_units:
            out.append(f"I0 in {a.i0_units} vs {b.i0_units}")
        return out
    if a.time_power != b.time_power:
        if a.i0_units != b.i0_units:
            out.append(f"I0 in {a.i0_units} vs {b.i0_units}")
        if a.tmnorm != b.tmnorm:
            out.append(f"time normalisation tmnorm={a.tmnorm} vs tmnorm={b.tmnorm}")
        if not out:
            out.append(f"normalisation t^{a.time_power} vs t^{b.time_power}")
    elif a.time_power != 0:
        if not (a.dwell_s and b.dwell_s) or abs(a.dwell_s - b.dwell_s) > rtol * max(a.dwell_s, b.dwell_s):
            what = "a rate I0" if a.time_power > 0 else "time-normalised (tmnorm)"
            out.append(f"both {what} but dwell {a.dwell_s} s vs {b.dwell_s} s")
    return out


__all__ = ["CONVERTIBLE", "NormBasis", "norm_basis", "compare"]
