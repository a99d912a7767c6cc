"""Fit configurations from a layout file, without a GUI: suggest the elements, write the ``.cfg``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from ..core import fitconfig, sumfit, xraydata
from . import calibrate as calibrate_step
from ..errors import InputError

log = logging.getLogger(__name__)


def spectrum_calibration(h5file: str | Path, channel: str | int | None = None,
                         energy_keV: float | None = None) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Sum spectrum of a channel with the calibration a fit should use and the excitation energy.

    The calibration is, in order: ``calib/channelXX`` (written by :func:`xrfproc.steps.calibrate.calibrate`),
    else one computed from the spectrum now (not written). The converter's stored calibration is
    only a prior (an APS MDA header's is 90-185 eV off the spectrum's own). The energy is
    ``energy_keV``, else ``raw@energy_keV``.

    Returns
    -------
    (channel name, sum spectrum, info) with info keys ``zero_keV``, ``gain_keV``, ``noise_keV``,
    ``fano``, ``energy_keV`` (None when unknown) and ``elements`` (those the calibration saw).
    """
    path = Path(h5file)
    c, y, info = calibrate_step.read_channel(path, channel)
    energy = energy_keV if energy_keV is not None else info["energy_keV"]
    calib = info["calib"]
    if calib is not None:
        cal = {k: float(calib[k]) for k in ("zero_keV", "gain_keV", "noise_keV", "fano")}
        cal["elements"] = [e for e in str(calib.get("elements", "")).split(",") if e]
        cal["scatter_ok"] = bool(calib.get("scatter_ok", 1))
    else:
        r = calibrate_step.calibrate_spectrum(y, energy, stored=info["stored"], npix=info["npix"],
                                              where=f"{path.name}: raw/{c}/sumspec")
        cal = {k: r[k] for k in ("zero_keV", "gain_keV", "noise_keV", "fano", "elements", "scatter_ok")}
        stored = info["stored"]
        shift, line = calibrate_step._stored_shift(r, stored)
        if stored is not None and shift is not None:
            tol = 250.0 * float(sumfit.fwhm_keV(line, r["noise_keV"], r["fano"]))  # a quarter of the FWHM, eV
            if abs(shift) <= tol:
                # the peaks confirm the recorded calibration: keep it (and the default resolution)
                cal.update(zero_keV=float(stored[0]), gain_keV=float(stored[1]), confirmed=True)
            else:
                log.warning("%s: %s: the recorded calibration reads %.3f keV %+.0f eV off; the spectrum's own "
                            "calibration is used (run calibrate to store it)", path.name, c, line, shift)
        log.info("%s: calibration from the sum spectrum (%s): zero %.1f eV, gain %.4f eV/channel", c, r["method"],
                 1e3 * r["zero_keV"], 1e3 * r["gain_keV"])
    cal["energy_keV"] = energy
    return c, y, cal


def _energy(energy: float | None, path: Path) -> float:
    if energy is None:
        raise InputError("no excitation energy: give energy_keV (the file records none in raw@energy_keV)",
                         path=path)
    return float(energy)


def suggest_elements(h5file: str | Path, energy_keV: float | None = None, channel: str | int | None = None,
                     evidence: bool = False, **options: Any) -> Any:
    """Elements present in the sum spectrum of ``raw/channelXX``, with evidence on request.

    The calibration and resolution are those of :func:`spectrum_calibration` (``calibration=``
    overrides the calibration); the energy is ``energy_keV`` or the file's. See
    :func:`xrfproc.core.identify.identify_elements` for the method.

    Returns
    -------
    list of str, or :class:`xrfproc.core.identify.Identification` when ``evidence``.
    """
    from ..core import identify

    path = Path(h5file)
    c, y, cal = spectrum_calibration(path, channel, energy_keV)
    energy = _energy(cal["energy_keV"], path)
    calibration = options.pop("calibration", None) or (cal["zero_keV"], cal["gain_keV"])
    options.setdefault("noise", cal["noise_keV"])
    options.setdefault("fano", cal["fano"])
    result = identify.identify_elements(y, calibration, energy, **options)
    return result if evidence else result.names


def make_config(h5file: str | Path, elements: Sequence[str] | dict, energy_keV: float | None = None, *,
                out: str | Path | None = None, channel: str | int | None = None,
                calibration: tuple[float, float] | None = None, **options: Any) -> Path:
    """Write a PyMca ``.cfg`` for the spectra of a layout file (see :func:`xrfproc.core.fitconfig.make_config`).

    The energy calibration and resolution are, in order: ``calibration=`` (and ``noise=``/``fano=``),
    ``calib/channelXX`` (:func:`xrfproc.steps.calibrate.calibrate`), or a calibration of the sum
    spectrum made now (its peaks, then the engine's fit). The energy is ``energy_keV`` or the file's
    ``raw@energy_keV``. The number of channels comes from the spectra.

    Returns
    -------
    Path
        The ``.cfg`` written (default ``<file stem>_<channel>.cfg`` next to the file).
    """
    path = Path(h5file)
    c, y, cal = spectrum_calibration(path, channel, energy_keV)
    energy = _energy(cal["energy_keV"], path)
    if calibration is None:
        calibration = (cal["zero_keV"], cal["gain_keV"])
        # measured on the fluorescence lines (calib/, or a recorded calibration the peaks confirm): the
        # fits keep it (a free calibration follows the misfit of a Compton peak PyMca cannot model)
        options.setdefault("refine", ())
        if not cal.get("confirmed"):
            options.setdefault("noise", cal["noise_keV"])
            options.setdefault("fano", cal["fano"])
    if "emax_keV" not in options and not cal.get("scatter_ok", True):
        # no clean scatter peak to model: end the window below the Compton peaks when the lines allow
        emax = xraydata.compton_energy(energy, np.pi) - 2.5 * float(sumfit.fwhm_keV(energy, cal["noise_keV"], cal["fano"]))
        strongest = [fitconfig.strongest_line_keV(el, energy) for el in
                     (elements if not isinstance(elements, dict) else list(elements))]
        if all(e < emax - 0.2 for e in strongest if e == e):
            options["emax_keV"] = emax
            log.info("%s: no clean elastic peak: fit window ends at %.2f keV, below the scatter peaks", c, emax)
    if out is None:
        out = path.with_name(f"{path.stem}_{c}.cfg")
    return fitconfig.make_config(out, elements, energy, nbins=int(y.size), zero=float(calibration[0]),
                                 gain=float(calibration[1]), **options)
