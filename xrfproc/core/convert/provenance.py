"""What a beamline file says about its own numbers, carried from a reader to the ``raw/`` group.

A reader records, besides the arrays of a :class:`~xrfproc.core.rawmap.RawMap`:

* the excitation energy and where it was read (``raw@energy_keV``, ``raw@energy_source``), see
  :func:`set_energy`; an energy given by the user wins over the file's (:func:`apply_given_energy`);
* attributes of members of ``raw/`` (``raw/channelXX@calibration_source``, ``raw/I0@units``, ...),
  kept in ``RawMap.attrs[MEMBER_ATTRS]`` as ``{member: {attribute: value}}`` and written on those
  members by :func:`xrfproc.store.raw.write_raw` (see :func:`set_member_attrs`).

Attribute names written
-----------------------
``raw@energy_keV`` (float, keV), ``raw@energy_source`` (str)
    The excitation energy and its origin, e.g. ``"MDA extra PV ID02ds:Energy.VAL"``.
``raw@energy_recorded_keV``, ``raw@energy_recorded_source``
    Only when the user gave ``energy_keV=`` and the file records one too: the file's value.
``raw/channelXX@calibration_source`` (str)
    Origin of ``raw/channelXX@calibration_keV``, e.g. ``"MDA header PVs dxpXMAP2xfm3:mca1.CALO/CALS/CALQ"``.
``raw/I0@units``, ``raw/I1@units`` (str)
    ``"counts"`` (per point), ``"counts/s"`` (a rate), ``"counts/mA"`` (counts divided by the ring
    current) or ``"1"`` (no monitor in the file: I0 is 1 everywhere); ``raw/I0@source`` names the counter.
``raw/acquisition_time@units`` = ``"s"``, ``raw@dwell_s`` (float, s)
    The nominal time per point where the file states one, else the median of the acquisition time.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np

from ..rawmap import RawMap

log = logging.getLogger(__name__)

#: key of ``RawMap.attrs`` holding ``{member of raw/: {attribute: value}}``
MEMBER_ATTRS = "member_attrs"
#: a given energy and the file's differing by more than this (keV) are reported
ENERGY_TOLERANCE_KEV = 1e-3
#: excitation energies outside this range (keV) are not taken for one
ENERGY_RANGE_KEV = (1.0, 200.0)


def set_member_attrs(raw: RawMap, member: str, **attrs: Any) -> None:
    """Record attributes to write on ``raw/<member>`` (a dataset such as ``I0`` or a ``channelXX`` group).

    ``None`` values are skipped.
    """
    if not attrs:
        return
    table = raw.attrs.setdefault(MEMBER_ATTRS, {})
    table.setdefault(member, {}).update({k: v for k, v in attrs.items() if v is not None})


def member_attrs(raw: RawMap, member: str) -> dict[str, Any]:
    """The attributes recorded for ``raw/<member>`` (empty if none)."""
    return dict(raw.attrs.get(MEMBER_ATTRS, {}).get(member, {}))


def set_calibration_source(raw: RawMap, source: str) -> None:
    """Mark the origin of every channel's ``calibration_keV`` (channels without one are skipped)."""
    for name, ch in raw.channels.items():
        if ch.calibration is not None:
            set_member_attrs(raw, name, calibration_source=source)


def set_time_units(raw: RawMap, dwell_s: float | None = None) -> None:
    """``raw/acquisition_time@units = "s"`` and ``raw@dwell_s`` (the nominal time per point, s).

    Parameters
    ----------
    dwell_s : float, optional
        The dwell the file states; default the median of ``raw.acquisition_time``.
    """
    set_member_attrs(raw, "acquisition_time", units="s")
    if dwell_s is None:
        t = np.asarray(raw.acquisition_time, dtype=np.float64)
        dwell_s = float(np.nanmedian(t)) if t.size and np.isfinite(t).any() else None
    if dwell_s is not None and np.isfinite(dwell_s) and dwell_s > 0:
        raw.attrs["dwell_s"] = float(dwell_s)


def to_keV(value: float, unit: str = "") -> float:
    """An energy in keV from a value in ``unit`` (``"keV"``, ``"eV"``; unknown: eV above 200, else keV)."""
    u = unit.strip().lower()
    if u == "kev":
        return float(value)
    if u == "ev":
        return float(value) / 1000.0
    return float(value) / 1000.0 if value > 200 else float(value)


def plausible_keV(value: float) -> bool:
    """True for a finite energy inside :data:`ENERGY_RANGE_KEV`."""
    return bool(np.isfinite(value)) and ENERGY_RANGE_KEV[0] <= value <= ENERGY_RANGE_KEV[1]


def set_energy(raw: RawMap, energy_keV: float | None, source: str) -> None:
    """Record the excitation energy the file gives (keV) and where it was read; ``None``: nothing."""
    if energy_keV is None:
        return
    raw.energy_keV = float(energy_keV)
    raw.attrs["energy_source"] = source


def apply_given_energy(raw: RawMap, energy_keV: float | None, where: str = "") -> str | None:
    """Let an energy given by the user win over the file's.

    The file's value, when there is one, is kept as ``energy_recorded_keV`` / ``energy_recorded_source``.

    Parameters
    ----------
    energy_keV : float, optional
        The excitation energy given (keV); ``None`` leaves ``raw`` as it is.
    where : str
        The source, for the message.

    Returns
    -------
    str or None
        The warning logged when the two differ by more than :data:`ENERGY_TOLERANCE_KEV`, else None.
    """
    if energy_keV is None:
        return None
    given = float(energy_keV)
    recorded, source = raw.energy_keV, raw.attrs.get("energy_source")
    raw.energy_keV = given
    raw.attrs["energy_source"] = "given (energy_keV)"
    if recorded is None:
        return None
    raw.attrs["energy_recorded_keV"] = float(recorded)
    raw.attrs["energy_recorded_source"] = str(source or "the file")
    if abs(given - float(recorded)) <= ENERGY_TOLERANCE_KEV:
        return None
    msg = (f"{where + ': ' if where else ''}the energy given, {given:g} keV, differs from the "
           f"{float(recorded):g} keV recorded in the file ({source or 'the file'}) by "
           f"{abs(given - float(recorded)) * 1000:.4g} eV; using {given:g} keV")
    log.warning(msg)
    return msg


__all__ = ["MEMBER_ATTRS", "ENERGY_TOLERANCE_KEV", "set_member_attrs", "member_attrs", "set_calibration_source",
           "set_time_units", "to_keV", "plausible_keV", "set_energy", "apply_given_energy"]
