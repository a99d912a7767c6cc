"""Fit configurations from a layout file, without a GUI: suggest the elements, write the ``.cfg``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import store
from ..core import fitconfig, suggest, xraydata
from ..errors import InputError

log = logging.getLogger(__name__)


def _sum_and_calibration(h5file: str | Path, channel: str | int | None) -> tuple[str, np.ndarray, tuple | None, float | None]:
    path = Path(h5file)
    with store.open_read(path) as f:
        chans = store.channels(f, "raw")
        if not chans:
            raise InputError("no detector channel raw/channelXX", path=path, dataset="raw")
        if channel is None:
            c = chans[0]
        else:
            c = f"channel{int(channel):02d}" if str(channel).isdigit() else str(channel)
        if c not in chans:
            raise InputError(f"no detector channel '{c}' (the file has {', '.join(chans)})", path=path,
                             dataset=f"raw/{c}")
        g = f[f"raw/{c}"]
        if "sumspec" in g:
            y = np.asarray(g["sumspec"][()], dtype=np.float64)
        else:
            y = np.zeros(g["spectra"].shape[-1])
            for _, block in store.iter_spectra_blocks(path, c):
                y += np.nansum(np.asarray(block, dtype=np.float64).reshape(-1, y.size), axis=0)
        cal = g.attrs.get("calibration_keV")
        energy = f["raw"].attrs.get("energy_keV")
    return c, y, (None if cal is None else tuple(float(v) for v in cal)), (None if energy is None else float(energy))


def suggest_elements(h5file: str | Path, energy_keV: float | None = None, channel: str | int | None = None,
                     **options: Any) -> list[str]:
    """Elements present in the sum spectrum of ``raw/channelXX`` (see
    :func:`xrfproc.core.suggest.suggest_elements_spectrum` for the method and the threshold options).

    The energy calibration is ``raw/channelXX`` attribute ``calibration_keV`` (or ``calibration=``).
    """
    c, y, cal, e_file = _sum_and_calibration(h5file, channel)
    energy = energy_keV if energy_keV is not None else e_file
    if energy is None:
        raise InputError("no excitation energy: give energy_keV (the file has no raw@energy_keV)", path=h5file)
    cal = options.pop("calibration", None) or cal
    if cal is None:
        raise InputError(f"raw/{c} has no energy calibration (attribute calibration_keV): give calibration=(zero, gain)",
                         path=h5file)
    return suggest.suggest_elements_spectrum(y, cal, float(energy), **options)


def make_config(h5file: str | Path, elements: Sequence[str] | dict, energy_keV: float | None = None, *,
                out: str | Path | None = None, channel: str | int | None = None,
                calibration: tuple[float, float] | None = None, **options: Any) -> Path:
    """Write a PyMca ``.cfg`` for the spectra of a layout file (see :func:`xrfproc.core.fitconfig.make_config`).

    The energy calibration is, in order: ``calibration=``, the channel's ``calibration_keV``
    attribute, or an estimate from the sum spectrum (the strongest line of each element and the
    Rayleigh peak placed on the spectrum's peaks). The number of channels comes from the spectra.

    Returns
    -------
    Path
        The ``.cfg`` written (default ``<file stem>_<channel>.cfg`` next to the file).
    """
    path = Path(h5file)
    c, y, cal, e_file = _sum_and_calibration(path, channel)
    energy = energy_keV if energy_keV is not None else e_file
    if energy is None:
        raise InputError("no excitation energy: give energy_keV (the file has no raw@energy_keV)", path=path)
    if calibration is None:
        calibration = cal[:2] if cal is not None else None
    if calibration is None:
        lines, weights = [float(energy)], [1.0]
        for el in (elements if not isinstance(elements, dict) else list(elements)):
            for fam in fitconfig.excited_families(el, float(energy)):
                g = xraydata.line_group(el, fam)
                lines.append(float(g.energies[int(np.argmax(g.rates))]))
                weights.append(2.0)
                break
        calibration = fitconfig.estimate_calibration(y, lines, weights)
        log.info("%s: energy calibration estimated from the sum spectrum: zero %.4f keV, gain %.6f keV/channel",
                 c, *calibration)
    if out is None:
        out = path.with_name(f"{path.stem}_{c}.cfg")
    return fitconfig.make_config(out, elements, float(energy), nbins=int(y.size), zero=float(calibration[0]),
                                 gain=float(calibration[1]), **options)
