"""The fit step's sum-spectrum fit and the per-pixel set-up that agrees with it.

For each detector channel (:func:`sum_fit_plan`): the sum spectrum is fitted (by the engine,
:func:`xrfproc.core.sumfit.fit_sum`, or by PyMca's full fit with ``sum_fit="pymca"``) with the
configuration's free detector parameters; the calibration it finds is compared with the
configuration's (a warning names the shift in eV at the strongest line when it exceeds a quarter
of the FWHM there) and every per-pixel fit uses it:

- engine: the linear model at the sum fit's calibration and weights from the mean spectrum
  (``weight="sum"``);
- with ``background="sum"`` (every mode) each pixel's continuum is the sum spectrum's background
  shape scaled from the pixel's peak-free channels (:func:`xrfproc.core.sumfit.continuum`),
  subtracted before the peaks are fitted: the per-pixel areas add up to the sum fit's;
- fast (PyMca's ``FastXRFLinearFit``): the configuration with the fitted zero, gain, noise and Fano
  written into it; PyMca's average weights (policy 1) unless a policy is given;
- precise (PyMca's full fit per pixel): the same, calibration fixed, weights as configured.

With fixed weights the one-sigma uncertainties of the maps are recomputed from the Poisson
variance of each pixel (:func:`xrfproc.core.sumfit.stddev_scale`), honest at any count rate.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..core import fit as core_fit
from ..core import fit_model, fitconfig, pymca_bridge, sumfit
from ..errors import ConfigError, InputError

log = logging.getLogger(__name__)

SUM_FITS = ("engine", "pymca")
WEIGHT_CHOICES = (None, "sum", 0, 1, 2)


@dataclass
class SumPlan:
    """What one channel's per-pixel fits need from its sum-spectrum fit.

    Attributes
    ----------
    sumfit : core_fit.SumFit
        Areas, background, uncertainties, chi-square and calibration of the sum spectrum.
    params : ndarray, shape (ngroups,)
        The sum fit's area *parameters* (what the per-pixel maps hold; the sum rule's reference).
    cfg_text : str
        The configuration the per-pixel fits use (calibration of the sum fit written into it).
    model : EngineModel or None
        The engine's per-pixel model (engine mode).
    var_unit : ndarray, shape (ngroups,) or None
        Per-group variance of a pixel with the mean spectrum's counts (fixed weights), else None.
    window : (int, int)
        Fit window ``[i0, i1)`` (channels) the pixel counts are taken over for ``var_unit``.
    mean_counts : float
        Counts of the mean spectrum in the window.
    weight : int or None
        PyMca's weight policy for fast mode.
    theta, theta_config : ndarray, shape (4,)
        (zero keV, gain keV/channel, noise keV, Fano) of the sum fit and of the configuration.
    shift_eV : float
        Calibration shift of the configuration at ``line`` (energy ``line_keV``).
    """

    sumfit: core_fit.SumFit
    params: np.ndarray
    cfg_text: str
    model: Any
    var_unit: np.ndarray | None
    window: tuple[int, int]
    mean_counts: float
    weight: int | None
    theta: np.ndarray
    theta_config: np.ndarray
    continuum: Any = None
    ysum_net: np.ndarray | None = None
    ybar: np.ndarray | None = None
    shift_eV: float = 0.0
    line: str = ""
    line_keV: float = float("nan")
    fwhm_eV: float = float("nan")
    warnings: list[str] = field(default_factory=list)


def with_detector(config: dict[str, Any], theta: np.ndarray, *, fix: bool = False,
                  fitweight: int | None = None) -> dict[str, Any]:
    """A copy of a PyMca configuration with (zero, gain, noise, fano) = ``theta``."""
    cfg = copy.deepcopy(config)
    det = cfg.setdefault("detector", {})
    for k, v in zip(fit_model.NONLINEAR, theta):
        det[k] = float(v)
        if fix:
            det["fixed" + k] = 1
    if fitweight is not None:
        cfg.setdefault("fit", {})["fitweight"] = int(fitweight)
    return cfg


CALIBRATIONS = ("sum", "config")


def sum_fit_plan(sumspec: np.ndarray, cfg: fitconfig.FitConfig, *, mode: str, npix: int, channel: str,
                 weight: int | str | None = None, background: str = "sum", sum_fit: str = "engine",
                 calibration: str = "sum") -> SumPlan:
    """Fit the sum spectrum of one channel and set up its per-pixel fits (see the module docstring).

    Raises
    ------
    InputError
        An empty or invalid sum spectrum, an unknown option.
    ConfigError
        A configuration the chosen fitter cannot use.
    """
    where = f"raw/{channel}/sumspec"
    if sum_fit not in SUM_FITS:
        raise InputError(f"sum_fit {sum_fit!r} must be one of {', '.join(SUM_FITS)}")
    if weight not in WEIGHT_CHOICES:
        raise InputError(f"weight {weight!r} must be one of None, 'sum', 0, 1, 2")
    if calibration not in CALIBRATIONS:
        raise InputError(f"calibration {calibration!r} must be one of {', '.join(CALIBRATIONS)}")
    if background not in sumfit.BACKGROUNDS:
        raise InputError(f"background {background!r} must be one of {', '.join(sumfit.BACKGROUNDS)}")
    y = np.asarray(sumspec, dtype=np.float64)
    config = cfg.config
    snip_ok = not config["fit"].get("stripflag", 0) or int(config["fit"].get("stripalgorithm", 0)) == 1
    engine_ok = snip_ok and not int(config["fit"].get("strategyflag", 0))
    warnings: list[str] = []
    if sum_fit == "engine" and not engine_ok:
        warnings.append(f"{channel}: the configuration uses the 'strip' background or a strategy, which the engine "
                        "does not model: the sum spectrum is fitted by PyMca")
        sum_fit = "pymca"
    model = None
    if engine_ok:
        pix_weight = None if weight in (None, "sum") else int(weight)  # type: ignore[arg-type]
        model = fit_model.build_model(config, y, y.size, nspectra=npix, weight=pix_weight)
    theta_cfg = np.array([float(config["detector"].get(k, 0.0)) for k in fit_model.NONLINEAR])
    engine_bkg = "sum" if background == "sum" else "snip"
    if background == "sum" and sum_fit == "pymca" and engine_ok:
        sum_fit = "engine"  # the continuum the pixels get comes from the engine's sum fit
    measured = None
    if sum_fit == "engine":
        assert model is not None
        sr = sumfit.fit_sum(model, y, npix, background=engine_bkg, where=where)  # type: ignore[arg-type]
        warnings += sr.warnings
        theta = sr.theta
        measured = sr.theta
        if model.theta_fixed[0] and model.theta_fixed[1]:
            # the configuration fixes the calibration: measure the spectrum's (zero, gain) all the same
            measured = sumfit.fit_sum(model, y, npix, background="snip", free=("zero", "gain"), where=where).theta
        stats = core_fit.SumFit(names=sr.names, int=sr.fitarea, bkg=sr.bkg, sigma=sr.sigma, chisq=sr.chisq,
                                calibration=sr.calibration)
        params = sr.areas
    else:
        res = _pymca_sum(y, config, where)
        theta = np.array([res.calibration[0], res.calibration[1], *res.resolution])
        stats = core_fit.SumFit(names=[pymca_bridge.rename_group(n) for n in res.names], int=res.fitarea,
                                bkg=(res.statistics if res.statistics is not None else np.nan) - res.fitarea,
                                sigma=res.sigmaarea, chisq=res.chisq, calibration=res.calibration)
        params = res.parameters
        sr = None
    plan = SumPlan(sumfit=stats, params=np.asarray(params, dtype=np.float64), cfg_text=cfg.text, model=None,
                   var_unit=None, window=(0, y.size), mean_counts=float(y.sum()) / max(npix, 1),
                   weight=None, theta=np.asarray(theta, dtype=np.float64), theta_config=theta_cfg, warnings=warnings)
    _check_shift(plan, sr, channel, measured)
    _pixel_setup(plan, model, sr, y, npix, mode=mode, weight=weight, background=background,
                 theta=plan.theta if calibration == "sum" else theta_cfg)
    return plan


def _pymca_sum(y: np.ndarray, config: dict[str, Any], where: str) -> pymca_bridge.SpectrumFitResult:
    if y.sum() <= 0:
        raise InputError("the sum spectrum has no counts: an empty map cannot be fitted", dataset=where)
    try:
        return pymca_bridge.full_fit(y, config)
    except Exception as exc:  # PyMca raises LinAlgError, ValueError, ZeroDivisionError...
        raise InputError(f"PyMca could not fit the sum spectrum ({type(exc).__name__}: {exc}); check the "
                         "peaks and the fit window of the configuration", dataset=where) from None


def _check_shift(plan: SumPlan, sr: sumfit.SumResult | None, channel: str, measured: np.ndarray | None) -> None:
    """How far the configuration's calibration is from the spectrum's (``measured``), at the strongest line."""
    if sr is not None and measured is not None:
        line, e = sumfit.strongest_line(sr)
    else:
        line, e = "", float("nan")
    if not np.isfinite(e):
        return
    shift = sumfit.line_shift_eV(e, plan.theta_config, measured)
    fwhm = 1000.0 * float(sumfit.fwhm_keV(e, plan.theta[2], plan.theta[3]))
    plan.shift_eV, plan.line, plan.line_keV, plan.fwhm_eV = shift, line, e, fwhm
    if abs(shift) > fwhm / 4:
        plan.warnings.append(f"{channel}: the configuration's calibration is {shift:+.0f} eV off the spectrum at "
                             f"{line} ({e:.3f} keV; FWHM {fwhm:.0f} eV); write a new configuration "
                             "(calibrate, then make_config)")


def _pixel_setup(plan: SumPlan, model: Any, sr: sumfit.SumResult | None, y: np.ndarray, npix: int, *, mode: str,
                 weight: int | str | None, background: str, theta: np.ndarray) -> None:
    """The per-pixel configuration/model at calibration ``theta``, the continuum and the unit variances."""
    cont = sr.continuum if (sr is not None and background == "sum") else None
    if mode == "engine":
        if model is None:
            raise ConfigError("mode='engine' needs the SNIP background and no fit strategy in the configuration")
        w = "sum" if weight in (None, "sum") else {0: "none", 1: "config", 2: "pixel"}[int(weight)]  # type: ignore[index]
        if cont is not None and w == "pixel":
            raise InputError("weight=2 (each pixel's own counts) needs background='snip': with the sum spectrum's "
                             "continuum subtracted, a pixel's counts are no longer its variances")
        # the shapes PyMca built when the calibration is the configuration's, else recomputed at theta
        if sr is not None and np.array_equal(theta, sr.theta):
            base, at = sr.model, None
        elif np.array_equal(theta, model.theta):
            base, at = model, None
        else:
            base, at = model, theta
        pm = sumfit.pixel_model(base, y, npix, theta=at, weights=w)
        if pm.weight_policy != 2:
            plan.var_unit = sumfit.stddev_scale(pm, y, npix)[pm.nbkg:]
        plan.window = (pm.i0, pm.i1)
        plan.model = sumfit.window_model(pm) if cont is not None else pm
    elif mode == "fast":
        policy = 1 if weight in (None, "sum") else int(weight)  # type: ignore[arg-type]
        if cont is not None and policy == 2:
            raise InputError("weight=2 (each pixel's own counts) needs background='snip': with the sum spectrum's "
                             "continuum subtracted, a pixel's counts are no longer its variances")
        plan.weight = policy
        plan.cfg_text = pymca_bridge.config_to_text(with_detector(fitconfig.config_from_text(plan.cfg_text).config,
                                                                  theta))
        if model is not None and policy != 2:
            m1 = fit_model.build_model(fitconfig.config_from_text(plan.cfg_text).config, y, y.size, nspectra=npix,
                                       weight=policy)
            plan.var_unit = sumfit.stddev_scale(m1, y, npix)[m1.nbkg:]
            plan.window = (m1.i0, m1.i1)
    else:  # precise: calibration of the sum fit, fixed; PyMca's weights unless 0 (unweighted) is asked
        # (unweighted, PyMca's chi-square is not a reduced chi-square of counts: kept opt-in)
        fw = 0 if weight == 0 else None
        plan.cfg_text = pymca_bridge.config_to_text(with_detector(fitconfig.config_from_text(plan.cfg_text).config,
                                                                  theta, fix=True, fitweight=fw))
        if model is not None and fw == 0:
            m0 = sumfit.pixel_model(model, y, npix, theta=theta, weights="none")
            plan.var_unit = sumfit.stddev_scale(m0, y, npix)[m0.nbkg:]
            plan.window = (m0.i0, m0.i1)
    if cont is not None:
        plan.continuum = cont
        plan.window = (model.i0, model.i1)
        if mode != "engine":  # PyMca fits the peaks of spectra less their continuum, its stripping off
            net = y.astype(np.float64).copy()
            net[model.i0:model.i1] -= cont.curve
            plan.ysum_net = np.clip(net, 0.0, None)
            plan.ybar = y.astype(np.float64) / max(npix, 1)
            cfg = fitconfig.config_from_text(plan.cfg_text).config
            cfg["fit"]["stripflag"] = 0
            plan.cfg_text = pymca_bridge.config_to_text(cfg)
    i0, i1 = plan.window
    plan.mean_counts = float(y[i0:i1].sum()) / max(npix, 1)


def sum_rule(params: np.ndarray, pixel_sum: np.ndarray, names: list[str], *, min_share: float = 0.02,
             tolerance: float = 0.05) -> tuple[dict[str, float], list[str]]:
    """Ratios (per-pixel areas summed) / (sum-spectrum area) for lines holding >= ``min_share``.

    Returns the ratios per line and the lines outside ``1 +- tolerance``.
    """
    params = np.asarray(params, dtype=np.float64)
    fluo = [i for i, n in enumerate(names) if n not in ("Rayl", "Compt")]
    total = float(np.clip(params[fluo], 0, None).sum()) if fluo else 0.0
    ratios: dict[str, float] = {}
    bad: list[str] = []
    for i in fluo:
        if total > 0 and params[i] >= min_share * total:
            r = float(pixel_sum[i] / params[i])
            ratios[names[i]] = r
            if abs(r - 1.0) > tolerance:
                bad.append(names[i])
    return ratios, bad
