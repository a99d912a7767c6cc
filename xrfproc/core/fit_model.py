"""The linear model of the fit engine: group shapes built once per map, as PyMca builds them.

:class:`EngineModel` holds, for one fit configuration and one sum spectrum, the matrix of the
unit-area shapes of every line group over the fit window (exactly PyMca's fast-fit matrix, asked
from PyMca itself through :func:`xrfproc.core.pymca_bridge.engine_model_inputs`), the background
settings (SNIP), the weighting policy, and the line table (rates, energies, escape flags) with
the nonlinear parameters (energy zero and gain, noise, Fano factor, hypermet tails) that
:mod:`xrfproc.core.fit_refine` needs to recompute the shapes at another calibration.

:func:`group_shapes` evaluates the same shapes in numba (PyMca's ``ahypermet``: Gaussian, short
and long tails, step) together with their analytic derivatives with respect to zero, gain, noise
and Fano; at the configuration's parameters it reproduces PyMca's matrix to rounding.

Units: energies in keV, gain in keV/channel, ``noise`` is the electronic FWHM in keV (PyMca's
``detector.noise``), ``fano`` the Fano factor; FWHM(E)^2 = noise^2 + 0.00385 * 2.3548^2 * fano * E.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from xrfproc.errors import ConfigError
from xrfproc.jit import numba  # numba configured by xrfproc (cache folder, compile message)

__all__ = ["EngineModel", "build_model", "group_shapes", "NONLINEAR"]

#: names of the nonlinear parameters refine may vary, in the order used everywhere
NONLINEAR = ("zero", "gain", "noise", "fano")
_K_FANO = 0.00385 * 2.3548 * 2.3548
_TOSIGMA = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
_SQRT2PI = math.sqrt(2.0 * math.pi)
_SQRTPI = math.sqrt(math.pi)


@dataclass
class EngineModel:
    """The fit engine's model of one map (build with :func:`build_model`, reuse for every block).

    Attributes
    ----------
    names : list of str
        Names of the fitted columns in order: PyMca's group names (``Fe K``, ``Pb L``, ...),
        scatter peaks renamed ``Rayl``/``Compt``, continuum parameters (``Constant`` ...) first
        when the configuration fits a continuum.
    nbkg : int
        How many leading columns are continuum parameters (not constrained to be >= 0).
    i0, i1 : int
        Fit window: channels ``[i0, i1)`` of the spectra.
    shapes : ndarray, shape (i1-i0, ncols), float64
        Column k is the model for unit area of group k, in counts per channel over the window.
    nbins : int
        Channels per spectrum the model was built for.
    snip : bool
        Whether a SNIP background is subtracted (PyMca's ``stripflag``).
    snipwidth : int
        SNIP width (channels).
    filter_points : int
        Savitzky-Golay points applied before SNIP (1: none).
    anchors : ndarray of int
        SNIP anchors relative to ``i0``.
    weight_policy : int
        0: unweighted, 1: one weight per channel from the sum spectrum, 2: Poisson weight per
        pixel and channel (PyMca's fast-fit policies).
    sigma_avg : ndarray, shape (i1-i0,) or None
        Per-channel sigma of policy 1 (``1 + sqrt(sum) / nspectra``), set by :func:`build_model`.
    theta : ndarray, shape (4,)
        Nonlinear parameters (zero keV, gain keV/channel, noise keV FWHM, Fano).
    theta_fixed : ndarray of bool, shape (4,)
        Parameters the configuration fixes (refine keeps them).
    theta_delta : ndarray, shape (4,)
        Allowed excursion of each nonlinear parameter around ``theta`` during refine.
    hypermet : int
        PyMca's hypermet bit flags (1 Gaussian, 2 short tail, 4 long tail, 8 step); 0 when the
        configuration uses the pseudo-Voigt (refine not supported then).
    tails : ndarray, shape (5,)
        ST area ratio, ST slope (keV), LT area ratio, LT slope (keV), step height ratio.
    line_group, line_rate, line_energy, line_escape : ndarray, shape (nlines,)
        The line table: column index, rate (fraction of the group area), energy (keV), escape
        flag (no tails on escape peaks).
    """

    names: list[str]
    nbkg: int
    i0: int
    i1: int
    shapes: np.ndarray
    nbins: int
    snip: bool
    snipwidth: int
    filter_points: int
    anchors: np.ndarray
    weight_policy: int
    sigma_avg: np.ndarray | None
    theta: np.ndarray
    theta_fixed: np.ndarray
    theta_delta: np.ndarray
    hypermet: int
    tails: np.ndarray
    line_group: np.ndarray
    line_rate: np.ndarray
    line_energy: np.ndarray
    line_escape: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def nchan(self) -> int:
        """Channels in the fit window."""
        return self.i1 - self.i0

    @property
    def ncols(self) -> int:
        """Fitted columns (continuum parameters + groups)."""
        return self.shapes.shape[1]

    def channels(self) -> np.ndarray:
        """Channel numbers of the fit window, float64, shape (nchan,)."""
        return np.arange(self.i0, self.i1, dtype=np.float64)


def build_model(config: Mapping[str, Any], sum_spectrum: np.ndarray, nbins: int | None = None, *,
                nspectra: int = 1, weight: int | None = None) -> EngineModel:
    """Build the engine model of a map from its PyMca configuration and sum spectrum.

    Parameters
    ----------
    config : mapping
        PyMca fit configuration (as read by :func:`xrfproc.core.pymca_bridge.read_config`).
    sum_spectrum : ndarray, shape (nbins,)
        Sum spectrum of the map (counts); PyMca's fast fit builds its model from it.
    nbins : int, optional
        Channels of the spectra to be fitted (checked against ``sum_spectrum``).
    nspectra : int
        Number of spectra in the map (only used by weight policy 1, as PyMca does).
    weight : {None, 0, 1, 2}
        PyMca's weight policy; None follows the configuration (``fitweight`` -> 2, else 0).

    Raises
    ------
    ConfigError
        The configuration strips the background with another algorithm than SNIP, or has no
        peak in the fit window.
    """
    from xrfproc.core import pymca_bridge  # the only module that imports PyMca
    from xrfproc.core.fit_refine import pileup_settings  # refine fits PyMca's pile-up when configured

    ysum = np.asarray(sum_spectrum, dtype=np.float64).ravel()
    if nbins is not None and ysum.size != nbins:
        raise ConfigError(f"sum spectrum has {ysum.size} channels but the spectra have {nbins}")
    fit = config.get("fit", {}) if hasattr(config, "get") else {}
    if fit.get("stripflag", 0) and int(fit.get("stripalgorithm", 0)) != 1:
        raise ConfigError("the fit engine (like PyMca's fast fit) needs the SNIP background: set "
                          "[fit] stripalgorithm = 1 in the configuration (0 is the slow 'strip' algorithm)")
    if int(fit.get("strategyflag", 0)):
        raise ConfigError("the fit engine does not support fit strategies: set [fit] strategyflag = 0")
    from xrfproc.core import model_cache

    key = model_cache.model_key(config, ysum.size, weight, pymca_bridge.PYMCA_VERSION)
    try:
        # the inputs do not depend on the spectra (see model_cache): one build per configuration
        d = model_cache.cached(key, lambda: pymca_bridge.engine_model_inputs(config, ysum, weight=weight))
    except (ValueError, ZeroDivisionError) as exc:
        raise ConfigError(f"PyMca could not build the fit model: {exc}") from None
    i0, i1 = d["i0"], d["i1"]
    shapes = np.ascontiguousarray(d["derivatives"], dtype=np.float64)
    if shapes.shape[0] != i1 - i0:
        raise ConfigError(f"model has {shapes.shape[0]} channels, window is [{i0}, {i1})")
    policy = int(d["weight_policy"])
    sigma_avg = None
    if policy == 1:
        sigma_avg = 1.0 + np.sqrt(np.abs(ysum[i0:i1])) / max(int(nspectra), 1)
    grp, rate, ene, esc = [], [], [], []
    for k, rows in enumerate(d["lines"]):
        for r, e, is_esc in rows:
            grp.append(k)
            rate.append(r)
            ene.append(e)
            esc.append(is_esc)
    b = d["bounds"]
    theta = np.array([d[k] for k in NONLINEAR], dtype=np.float64)
    return EngineModel(
        names=[pymca_bridge.rename_group(n) for n in d["names"]], nbkg=int(d["nbkg"]), i0=i0, i1=i1,
        shapes=shapes, nbins=int(ysum.size), snip=bool(d["stripflag"]), snipwidth=int(d["snipwidth"]),
        filter_points=_filter_points(d["filterwidth"]),
        anchors=np.asarray(sorted(d["anchors"] or [0, i1 - i0 - 1]), dtype=np.int64),
        weight_policy=policy, sigma_avg=sigma_avg, theta=theta,
        theta_fixed=np.array([b[k][0] for k in NONLINEAR], dtype=bool),
        theta_delta=np.array([abs(b[k][1]) for k in NONLINEAR], dtype=np.float64),
        hypermet=int(d["hypermet"]), tails=np.asarray(d["tails"], dtype=np.float64),
        line_group=np.asarray(grp, dtype=np.int64), line_rate=np.asarray(rate, dtype=np.float64),
        line_energy=np.asarray(ene, dtype=np.float64), line_escape=np.asarray(esc, dtype=np.bool_),
        extra={"pymca_names": list(d["names"]), "pileup": pileup_settings(config),
               # PyMca's statistics weight escape peaks by their fraction of the parent line
               "line_stat_ratio": np.asarray([f for rows in d.get("escape_fractions", []) for f in rows], dtype=np.float64)},
    )


def _filter_points(filter_width: float) -> int:
    from xrfproc.core.snip import filter_points
    return filter_points(filter_width)


# ----------------------------------------------------------------------------- shapes in numba
@numba.njit(cache=True, fastmath=False)
def _peak_into(x, zero, gain, noise, fano, amp, e0, esc, flags, tails, cutoff, col, out, dout, dcol, dscale, want_d):
    """Add one hypermet peak (PyMca's ahypermet) of area ``amp`` to out[:, col]; with ``want_d`` add
    ``dscale`` times its derivatives with respect to (zero, gain, noise, fano) to dout[:, dcol, :]."""
    n = x.size
    ef = e0 if (not esc or e0 > 0.0) else 0.0
    fw2 = noise * noise + _K_FANO * fano * ef
    fwhm = math.sqrt(fw2)
    sig = fwhm * _TOSIGMA
    area = amp * gain
    # d sigma / d noise, d sigma / d fano
    dsn = _TOSIGMA * noise / fwhm
    dsf = _TOSIGMA * 0.5 * _K_FANO * ef / fwhm
    z1 = sig * math.sqrt(2.0)
    g_on = (flags & 1) != 0
    st_on = (flags & 2) != 0 and not esc and tails[0] != 0.0 and tails[1] != 0.0
    lt_on = (flags & 4) != 0 and not esc and tails[2] != 0.0 and tails[3] != 0.0
    step_on = (flags & 8) != 0 and not esc and tails[4] != 0.0
    # channel range: Gaussian only -> +-cutoff sigma; tails/step -> everywhere
    if st_on or lt_on or step_on:
        c0 = 0
        c1 = n
    else:
        ec = (e0 - zero) / gain
        half = cutoff * sig / gain
        c0 = max(0, int(math.floor(ec - half - x[0])))
        c1 = min(n, int(math.ceil(ec + half - x[0])) + 1)
    norm = area / (sig * _SQRT2PI)
    if c1 <= c0:
        return
    # Gaussian by recurrence over the (unit-spaced) channels: g(c+1) = g(c) r, r(c+1) = r(c) q
    inv2s2 = 0.5 / (sig * sig)
    zs = zero + gain * x[c0] - e0
    z2s = zs * zs * inv2s2
    gexp = math.exp(-z2s) if z2s < 700.0 else 0.0
    rr = math.exp(-(2.0 * zs * gain + gain * gain) * inv2s2)
    qq = math.exp(-2.0 * gain * gain * inv2s2)
    restart = gexp == 0.0
    if g_on and not (st_on or lt_on or step_on) and not restart and cutoff * cutoff < 1224.0:
        # fast path: Gaussian only, whole range inside PyMca's z2 < 612
        is2 = 1.0 / (sig * sig)
        is3 = is2 / sig
        ms = -1.0 / sig
        for c in range(c0, c1):
            z0 = zs + gain * (c - c0)
            g = gexp * norm
            gexp *= rr
            rr *= qq
            out[c, col] += g
            if want_d:
                fz = -g * z0 * is2
                fs = g * (ms + z0 * z0 * is3)
                dout[c, dcol, 0] += dscale * fz
                dout[c, dcol, 1] += dscale * (g / gain + fz * x[c])
                dout[c, dcol, 2] += dscale * (fs * dsn)
                dout[c, dcol, 3] += dscale * (fs * dsf)
        return
    for c in range(c0, c1):
        z0 = zero + gain * x[c] - e0
        f = 0.0
        fz = 0.0  # d f / d z0
        fs = 0.0  # d f / d sigma
        if g_on:
            z2 = z0 * z0 * inv2s2
            if restart:  # far out (underflow) or unit spacing broken: direct evaluation
                ge = math.exp(-z2) if z2 < 700.0 else 0.0
            else:
                ge = gexp
                gexp *= rr
                rr *= qq
            if z2 < 612.0:
                g = ge * norm
                f += g
                fz += -g * z0 / (sig * sig)
                fs += g * (-1.0 / sig + z0 * z0 / (sig * sig * sig))
        for t in range(2):
            on = st_on if t == 0 else lt_on
            if not on:
                continue
            ar = tails[0] if t == 0 else tails[2]
            s = tails[1] if t == 0 else tails[3]
            u = z0 / z1 + 0.5 * z1 / s
            dh = ar * 0.5 * math.erfc(u)
            if dh != 0.0 and abs(z0 / s) <= 612.0:
                ev = math.exp(0.5 * (sig / s) * (sig / s) + z0 / s)
                tt = area * dh / s * ev
                f += tt
                de = -ar / _SQRTPI * math.exp(-u * u) * area / s * ev  # d/du of (area*dh/s) * ev
                fz += de / z1 + tt / s
                dudsig = -z0 / (z1 * sig) + 0.5 * math.sqrt(2.0) / s
                fs += de * dudsig + tt * sig / (s * s)
        if step_on:
            h = tails[4] * norm
            q = z0 / z1
            st = h * 0.5 * math.erfc(q)
            f += st
            dq = -h / _SQRTPI * math.exp(-q * q)  # d st / d q
            fz += dq / z1
            fs += -st / sig + dq * (-q / sig)
        out[c, col] += f
        if want_d:
            dout[c, dcol, 0] += dscale * fz
            dout[c, dcol, 1] += dscale * (f / gain + fz * x[c])
            dout[c, dcol, 2] += dscale * (fs * dsn)
            dout[c, dcol, 3] += dscale * (fs * dsf)


@numba.njit(cache=True)
def shapes_kernel(x, theta, line_group, line_rate, line_energy, line_escape, flags, tails, cutoff,
                  out, dout, want_d, dscale, collapse):
    """Add the group shapes at theta to out (nchan, ncols) [and derivatives to dout].

    Without ``collapse``: dout (nchan, ncols, 4) gets d shape_g / d theta. With ``collapse``:
    dout (nchan, 1, 4) gets sum_g dscale[g] d shape_g / d theta (the derivative of the model
    with areas ``dscale``). ``out``/``dout`` must be zeroed by the caller for the peak columns.
    """
    zero = theta[0]
    gain = theta[1]
    noise = theta[2]
    fano = theta[3]
    for k in range(line_group.size):
        g = line_group[k]
        _peak_into(x, zero, gain, noise, fano, line_rate[k], line_energy[k], line_escape[k], flags, tails,
                   cutoff, g, out, dout, 0 if collapse else g, dscale[g] if collapse else 1.0, want_d)


def group_shapes(model: EngineModel, theta: np.ndarray | None = None, *, derivatives: bool = False,
                 cutoff: float = 40.0) -> tuple[np.ndarray, np.ndarray | None]:
    """Group shapes over the fit window at nonlinear parameters ``theta``.

    Parameters
    ----------
    model : EngineModel
    theta : ndarray, shape (4,), optional
        (zero keV, gain keV/channel, noise keV, Fano); default the model's.
    derivatives : bool
        Also return d shape / d theta.
    cutoff : float
        Gaussian-only peaks are evaluated within +-cutoff sigma (PyMca stops at ~35 sigma).

    Returns
    -------
    shapes : ndarray, shape (nchan, ncols)
        Continuum columns (the first ``nbkg``) are copied from ``model.shapes``.
    dshapes : ndarray, shape (nchan, ncols, 4) or None
    """
    if model.hypermet == 0:
        raise ConfigError("recomputing the peak shapes (refine) needs the hypermet peak shape "
                          "([fit] fitfunction = 0); this configuration uses the pseudo-Voigt")
    th = model.theta if theta is None else np.asarray(theta, dtype=np.float64)
    out = np.zeros(model.shapes.shape, dtype=np.float64)
    dout = np.zeros(model.shapes.shape + (4,), dtype=np.float64) if derivatives else np.zeros((1, 1, 4))
    shapes_kernel(model.channels(), th, model.line_group, model.line_rate, model.line_energy,
                  model.line_escape, int(model.hypermet), model.tails, float(cutoff), out, dout, derivatives,
                  np.ones(model.ncols), False)
    if model.nbkg:
        out[:, :model.nbkg] = model.shapes[:, :model.nbkg]
    return out, (dout if derivatives else None)
