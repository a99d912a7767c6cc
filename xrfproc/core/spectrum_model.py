"""The fitted model of a sum spectrum, rebuilt from what the fit step stored, and line markers.

The fit step stores the configuration text, the calibration and the fitted areas, not the model
curve; :func:`sum_model` rebuilds the curve from them with the fit engine's group shapes, so a
report or a plot can draw data, model and residual.
"""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

logger = logging.getLogger(__name__)


def sum_model(sumspec: np.ndarray, cfg_text: str, names: Sequence[str], areas: np.ndarray,
              calibration: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray, Any]:
    """The fitted model of a sum spectrum rebuilt from the stored fit results.

    The peak shapes are PyMca's (via :func:`xrfproc.core.fit_model.build_model`) for the stored
    configuration, at the sum fit's calibration and peak widths (zero and gain as stored; noise
    and Fano, which are not stored, from the engine's refine of the sum spectrum, which reproduces
    PyMca's full fit; hypermet shapes only), scaled by the stored areas. The continuum is SNIP of
    the sum spectrum as PyMca's full fit computes it plus, when the configuration fits a
    polynomial continuum, that polynomial fitted by least squares to what the peaks leave.

    Parameters
    ----------
    sumspec : ndarray, shape (nbins,)
        The sum spectrum (counts per channel).
    cfg_text : str
        The ``.cfg`` text of the fit (``fit/channelXX/cfg_text``).
    names, areas : the sum-fit line names and areas (counts, not dead-time corrected)
    calibration : (zero keV, gain keV/channel), optional
        The sum fit's calibration (``fit/channelXX/sum`` attribute ``calibration_keV``).

    Returns
    -------
    model, continuum : ndarray, shape (nbins,)
        NaN outside the fit window.
    engine_model : EngineModel
        For its line table (energies of the line markers).
    """
    from . import fit_engine, fit_model, fitconfig
    from .snip import snip_background

    y = np.asarray(sumspec, dtype=np.float64)
    cfg = fitconfig.config_from_text(cfg_text, where="fit cfg_text")
    m = fit_model.build_model(cfg.config, y)
    shapes = m.shapes
    win = y[m.i0:m.i1]
    cont = None
    if m.hypermet:
        # the sum fit refines zero, gain, noise and Fano; only zero and gain are stored, so the
        # engine's refine (which reproduces PyMca's full fit) gives the peak widths back
        theta = m.theta.copy()
        try:
            res = fit_engine.fit_block(m, y[None], refine=True, with_background=True)
            if res.theta is not None and np.isfinite(res.theta[0]).all():
                theta = np.asarray(res.theta[0], dtype=np.float64)
            if res.background is not None:
                cont = np.asarray(res.background[0], dtype=np.float64)
        except XrfError as exc:
            logger.info("sum model: refine failed (%s); using the configuration's peak widths", exc)
        if calibration is not None:
            theta[:2] = np.asarray(calibration, dtype=np.float64)[:2]
        shapes, _ = fit_model.group_shapes(m, theta)
    lookup = dict(zip(names, np.asarray(areas, dtype=np.float64)))
    coef = np.array([lookup.get(n, 0.0) if k >= m.nbkg else 0.0 for k, n in enumerate(m.names)])
    peaks = shapes @ np.nan_to_num(coef)
    if cont is None:
        cont = np.zeros(m.nchan)
        if m.snip:
            cont = snip_background(y[None], m.snipwidth, window=(m.i0, m.i1), filter_width=m.filter_points,
                                   anchors=[int(a) for a in m.anchors], full_fit=True)[0]
    if m.nbkg:
        poly, *_ = np.linalg.lstsq(shapes[:, :m.nbkg], win - cont - peaks, rcond=None)
        cont = cont + shapes[:, :m.nbkg] @ poly
    model = np.full(y.size, np.nan)
    background = np.full(y.size, np.nan)
    model[m.i0:m.i1] = cont + peaks
    background[m.i0:m.i1] = cont
    return model, background, m


_MAIN_LINE = {"K": "KL3", "L": "L3M5", "M": "M5N7"}


def line_markers(names: Sequence[str], energy_keV: float | None, engine_model: Any = None) -> dict[str, float]:
    """Marker energy (keV) of each line group: its strongest line.

    From the fit model's line table when given (the lines PyMca fitted, with their rates), else
    from xraylib (Kα1, Lα1, Mα1); ``Rayl`` at the excitation energy, ``Compt`` at 90 degrees.
    """
    out: dict[str, float] = {}
    if engine_model is not None:
        m = engine_model
        for k, name in enumerate(m.names):
            sel = (m.line_group == k) & ~m.line_escape
            if name in names and sel.any():
                i = np.flatnonzero(sel)[np.argmax(m.line_rate[sel])]
                out[name] = float(m.line_energy[i])
    from . import xraydata

    for name in names:
        if name in out:
            continue
        if name == "Rayl" and energy_keV:
            out[name] = float(energy_keV)
        elif name == "Compt" and energy_keV:
            out[name] = xraydata.compton_energy(float(energy_keV), np.pi / 2)
        else:
            try:
                z, fam = xraydata.parse_group(name)
            except XrfError:
                continue
            e = xraydata.line_energy(z, _MAIN_LINE[fam])
            if e <= 0:
                grp = xraydata.line_group(z, fam)
                e = float(grp.energies[np.argmax(grp.rates)]) if grp.energies.size else 0.0
            if e > 0:
                out[name] = e
    return out


# --------------------------------------------------------------------------- sections
