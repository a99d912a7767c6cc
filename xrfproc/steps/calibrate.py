"""The calibration step: energy calibration and resolution of each channel from its own sum spectrum.

``calibrate(h5file)`` -> ``calib/channelXX`` (attributes ``zero_keV``, ``gain_keV``,
``quadratic_keV``, ``noise_keV``, ``fano``, ``stored_keV`` (what the converter recorded, e.g. an
MDA header), ``shift_eV`` (how far the stored calibration reads the strongest line), ``elements``,
``chisq``; datasets ``peak_channel``, ``peak_energy``, ``peak_label``).

Method: the peaks are assigned by :func:`xrfproc.core.calibrate.peak_calibration` (no guess
needed, a stored calibration is only a weak prior), then zero, gain, noise and Fano are refined by
the engine's fit of the sum spectrum (:func:`xrfproc.core.sumfit.fit_sum`) with the elements the
assigned peaks name. ``raw/`` is never modified; later steps (``suggest_elements``,
``make_config``) read ``calib/`` first.
"""
from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import store
from ..core import calibrate as core_cal
from ..core import fit_model, fitconfig, sumfit, xraydata
from ..errors import InputError, XrfError

log = logging.getLogger(__name__)

_SCATTER = ("elastic", "compton")


def read_channel(path: Path, channel: str | int | None) -> tuple[str, np.ndarray, dict[str, Any]]:
    """Sum spectrum and recorded facts of one channel: ``(name, sumspec, info)``.

    ``info`` holds ``stored`` (calibration the converter recorded, or None), ``energy_keV``
    (``raw@energy_keV`` or None), ``npix`` and ``calib`` (the ``calib/`` attributes, or None).
    """
    with store.open_read(path) as f:
        chans = store.channels(f, "raw")
        if not chans:
            raise InputError("no detector channel raw/channelXX", path=path, dataset="raw")
        c = chans[0] if channel is None else (f"channel{int(channel):02d}" if str(channel).isdigit() else str(channel))
        if c not in chans:
            raise InputError(f"no detector channel '{c}' (the file has {', '.join(chans)})", path=path,
                             dataset=f"raw/{c}")
        g = f[f"raw/{c}"]
        shape = g["spectra"].shape
        if "sumspec" in g:
            y = np.asarray(g["sumspec"][()], dtype=np.float64)
        else:
            y = np.zeros(shape[-1])
            for _, block in store.iter_spectra_blocks(path, c):
                y += np.nansum(np.asarray(block, dtype=np.float64).reshape(-1, y.size), axis=0)
        cal = g.attrs.get("calibration_keV")
        energy = store.recorded_energy(f)[0]
        calib = dict(f[f"calib/{c}"].attrs) if f"calib/{c}" in f else None
    info = {"stored": None if cal is None else tuple(float(v) for v in cal),
            "energy_keV": None if energy is None else float(energy), "npix": int(np.prod(shape[:-1])) or 1,
            "calib": calib}
    return c, y, info


def _elements(cal: core_cal.PeakCalibration) -> list[str]:
    """Elements the assigned peaks name: Ka lines, and L families seen with both La and Lb."""
    labels = {p.label for p in cal.matched}
    out: list[str] = []
    for lab in sorted(labels, key=lambda s: s):
        if lab in _SCATTER:
            continue
        el, line = lab.split()
        if line == "Ka" or (line == "La" and f"{el} Lb" in labels):
            if el not in out:
                out.append(el)
    return out


def calibrate_spectrum(y: np.ndarray, energy_keV: float | None, *, stored: Sequence[float] | None = None,
                       npix: int = 1, elements: Sequence[str] | None = None, where: str = "sumspec") -> dict[str, Any]:
    """Calibrate one sum spectrum: peak assignment, then the engine's fit (see the module docstring).

    Returns
    -------
    dict
        ``zero_keV``, ``gain_keV``, ``quadratic_keV``, ``noise_keV``, ``fano``, ``energy_keV``,
        ``elements``, ``peaks`` (list of (label, channel, line energy keV)), ``chisq`` (of the sum
        fit, NaN when it could not run), ``method``, ``warnings``.
    """
    pc = core_cal.peak_calibration(y, energy_keV, stored=stored)
    els = list(elements) if elements else _elements(pc)
    energy = energy_keV
    warnings: list[str] = []
    if energy is None:
        top = max((p for p in pc.peaks if p.significance > 10), key=lambda p: p.channel, default=pc.peaks[0])
        energy = float(pc.energy(top.channel)) + 0.3
        warnings.append(f"{where}: no excitation energy known; the fit assumes {energy:.2f} keV (just above the "
                        "highest peak); give energy_keV for a better calibration")
    # a clean elastic peak (about the detector's width) lets a fit model the scatter; without one (cut,
    # blended by several detector elements, lost in Compton) the fit window should end below it
    elastic = [p for p in pc.matched if p.label == "elastic"]
    scatter_ok = bool(elastic) and energy is not None and elastic[0].fwhm * pc.gain <= 1.6 * float(
        sumfit.fwhm_keV(energy, pc.noise, pc.fano))
    out = {"scatter_ok": scatter_ok, "zero_keV": pc.zero, "gain_keV": pc.gain, "quadratic_keV": pc.quadratic, "noise_keV": pc.noise,
           "fano": pc.fano, "energy_keV": energy, "elements": els, "chisq": float("nan"), "method": "peaks",
           "peaks": [(p.label, p.channel, p.energy) for p in pc.matched], "warnings": warnings,
           "residual_eV": pc.residual_eV}
    if not els:
        return out
    try:
        with tempfile.TemporaryDirectory(prefix="xrfproc-calib-") as tmp:
            # the fluorescence lines below the scatter peaks calibrate: a Compton peak's shape and place
            # depend on the angles the detector sees (and several detector elements summed blur it)
            emax = float(xraydata.compton_energy(energy, np.pi)) - 2.5 * float(sumfit.fwhm_keV(energy, pc.noise, pc.fano))
            lines_below = [p for p in pc.matched if p.label not in _SCATTER and p.energy < emax]
            cfg_path = fitconfig.make_config(Path(tmp) / "calib.cfg", els, energy, nbins=y.size, zero=pc.zero,
                                             gain=pc.gain, noise=pc.noise, fano=pc.fano,
                                             emin_keV=max(1.0, float(pc.energy(0)) + 0.2),
                                             emax_keV=emax if len(lines_below) >= 2 else None)
            cfg = fitconfig.read_config(cfg_path, mode="engine", nbins=y.size)
        model = fit_model.build_model(cfg.config, y, y.size, nspectra=npix)
        res = sumfit.fit_sum(model, y, npix, background="snip", free=fit_model.NONLINEAR,
                             delta={"zero": 0.1, "gain": 0.05 * pc.gain, "noise": 0.1, "fano": 0.15}, where=where)
    except XrfError as exc:
        warnings.append(f"{where}: the sum-spectrum fit could not refine the calibration ({exc}); the peak "
                        "calibration is kept")
        return out
    zero, gain, noise, fano = (float(v) for v in res.theta)
    out.update(zero_keV=zero, gain_keV=gain, quadratic_keV=0.0, noise_keV=noise, fano=fano, chisq=res.chisq,
               method="peaks + sum-spectrum fit")
    warnings += res.warnings
    return out


def calibrate(h5file: str | Path, energy_keV: float | None = None, channel: str | int | None = None, *,
              elements: Sequence[str] | None = None, write: bool = True) -> dict[str, Any]:
    """Energy calibration and resolution of every (or one) detector channel from its sum spectrum.

    Parameters
    ----------
    h5file : str or Path
        A layout file with ``raw/channelXX``.
    energy_keV : float, optional
        Excitation energy (default ``raw@energy_keV``; without either, calibration from the
        fluorescence lines alone).
    channel : str or int, optional
        One channel (default all).
    elements : sequence of str, optional
        Elements of the sum fit (default those the assigned peaks name).
    write : bool
        Write ``calib/channelXX`` (default); False only returns the result.

    Returns
    -------
    dict
        ``{"file", "channels": {name: {zero_keV, gain_keV, quadratic_keV, noise_keV, fano,
        energy_keV, elements, peaks, chisq, method, stored_keV, shift_eV, line_keV, warnings}}}``.
    """
    path = Path(h5file)
    with store.open_read(path) as f:
        all_chans = store.channels(f, "raw")
    chans = all_chans if channel is None else [read_channel(path, channel)[0]]
    results: dict[str, dict[str, Any]] = {}
    for c in chans:
        name, y, info = read_channel(path, c)
        energy = energy_keV if energy_keV is not None else info["energy_keV"]
        r = calibrate_spectrum(y, energy, stored=info["stored"], npix=info["npix"], elements=elements,
                               where=f"{path.name}: raw/{name}/sumspec")
        r["stored_keV"] = info["stored"]
        r["shift_eV"], r["line_keV"] = _stored_shift(r, info["stored"])
        if r["shift_eV"] is not None and abs(r["shift_eV"]) > 20:
            r["warnings"].append(f"{name}: the calibration the file records reads {r['line_keV']:.3f} keV "
                                 f"{r['shift_eV']:+.0f} eV off; calib/{name} holds the spectrum's own")
        results[name] = r
        for w in r["warnings"]:
            log.warning("%s", w)
    if write:
        _write(path, results, energy_keV, channel)
    return {"file": str(path), "channels": results}


def _stored_shift(r: dict[str, Any], stored: Sequence[float] | None) -> tuple[float | None, float | None]:
    """Largest shift (eV) of the stored calibration over the assigned fluorescence lines, and that line (keV)."""
    fluo = [p for p in r["peaks"] if p[0] not in _SCATTER]
    if stored is None or not fluo:
        return None, None
    quad = stored[2] if len(stored) > 2 else 0.0
    shifts = []
    for _label, _ch, energy in fluo:
        ch_fit = (energy - r["zero_keV"]) / r["gain_keV"]
        shifts.append((1000.0 * (stored[0] + stored[1] * ch_fit + quad * ch_fit ** 2 - energy), float(energy)))
    return max(shifts, key=lambda t: abs(t[0]))


def _write(path: Path, results: dict[str, dict[str, Any]], energy_keV: float | None, channel: Any) -> None:
    replace = [f"calib/{c}" for c in results] if channel is not None else ["calib"]
    params = {"energy_keV": energy_keV, "channel": channel}
    with store.transaction(path, "calibrate", replace=replace, params=params,
                           inputs=[f"raw/{c}/sumspec" for c in results]) as tx:
        for c, r in results.items():
            g = tx.group(f"calib/{c}")
            for k in ("zero_keV", "gain_keV", "quadratic_keV", "noise_keV", "fano", "energy_keV", "chisq",
                      "residual_eV"):
                g.attrs[k] = float(r[k])
            g.attrs["method"] = r["method"]
            g.attrs["scatter_ok"] = int(bool(r["scatter_ok"]))
            g.attrs["elements"] = ",".join(r["elements"])
            if r["stored_keV"] is not None:
                g.attrs["stored_keV"] = np.asarray(r["stored_keV"], dtype=np.float64)
            if r["shift_eV"] is not None:
                g.attrs["shift_eV"] = float(r["shift_eV"])
            peaks = r["peaks"]
            store.write_array(g, "peak_label", [p[0] for p in peaks] or [""])
            store.write_array(g, "peak_channel", np.array([p[1] for p in peaks] or [np.nan]))
            store.write_array(g, "peak_energy", np.array([p[2] for p in peaks] or [np.nan]))
