"""What a layout file records about its measurement: excitation energy and energy calibration.

One place decides where each comes from, in order, so every step and front-end agrees:

- energy (keV): ``raw@energy_keV`` (the converter's, from the beamline file or given), else the
  ``[fit] energy`` of a fit configuration stored in ``fit/channelXX/cfg_text``;
- calibration ``(zero keV, gain keV/channel)``: ``calib/channelXX`` (the spectrum's own, from
  :func:`xrfproc.steps.calibrate.calibrate`), else the sum-spectrum fit's
  (``fit/channelXX/sum@calibration_keV``), else the converter's ``raw/channelXX@calibration_keV``.
"""
from __future__ import annotations

import re

import h5py

__all__ = ["recorded_energy", "recorded_calibration"]

_ENERGY = re.compile(r"^\s*energy\s*=\s*([0-9.eE+-]+)", re.MULTILINE)


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf8", "replace")
    return str(value)


def recorded_energy(f: h5py.File) -> tuple[float | None, str]:
    """Excitation energy (keV) the file records and where it comes from (``None, ""`` when none)."""
    if "raw" in f and "energy_keV" in f["raw"].attrs:
        # (raw@energy_source, a string, is not read: a damaged string heap can hang HDF5 itself)
        return float(f["raw"].attrs["energy_keV"]), "raw@energy_keV"
    if "fit" in f:
        for c in sorted(f["fit"]):
            g = f["fit"][c]
            if isinstance(g, h5py.Group) and "cfg_text" in g:
                text = _text(g["cfg_text"][()])
                section = text.split("[fit]", 1)[-1] if "[fit]" in text else ""
                m = _ENERGY.search(section)
                if m:
                    try:
                        value = float(m.group(1))
                    except ValueError:
                        continue
                    if value > 0:
                        return value, f"fit/{c}/cfg_text [fit] energy"
    return None, ""


def recorded_calibration(f: h5py.File, channel: str) -> tuple[tuple[float, float] | None, str]:
    """Energy calibration ``(zero keV, gain keV/channel)`` of a channel and where it comes from."""
    key = f"calib/{channel}"
    if key in f and "zero_keV" in f[key].attrs and "gain_keV" in f[key].attrs:
        a = f[key].attrs
        return (float(a["zero_keV"]), float(a["gain_keV"])), key
    key = f"fit/{channel}/sum"
    if key in f and "calibration_keV" in f[key].attrs:
        cal = f[key].attrs["calibration_keV"]
        return (float(cal[0]), float(cal[1])), f"{key}@calibration_keV"
    key = f"raw/{channel}"
    if key in f and "calibration_keV" in f[key].attrs:
        cal = f[key].attrs["calibration_keV"]
        return (float(cal[0]), float(cal[1])), f"{key}@calibration_keV"
    return None, ""
