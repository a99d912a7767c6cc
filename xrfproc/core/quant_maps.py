"""Concentration maps from probed areal concentrations: matrix absorption and self-absorption.

A line ``i`` of a trace element of mass fraction ``c`` in a layer of mass thickness ``rho t``
(g/cm2), excited under incidence ``a_in`` and seen under exit ``a_out`` (angles to the surface),
gives the probed areal concentration (what intensity / yield measures, see :mod:`xrfproc.core.quant`)::

    A_i = c * M_i(rho t),     M_i(x) = (1 - exp(-chi_i x)) / chi_i          [g/cm2]
    chi_i = mu(E0) / sin(a_in) + mu(E_i) / sin(a_out)                        [cm2/g]

(``mu`` the matrix mass attenuation). ``M_i`` tends to ``rho t`` for thin layers and to ``1/chi_i``
for thick ones, so ``c = A_i / M_i`` is defined in both limits (``A`` in ug/cm2 and ``M`` in g/cm2 give ppm).

Self-absorption from the Ka/Kb ratio of one element (per pixel, from background-subtracted fitted
areas of the separate ``"X Ka"``/``"X Kb"`` groups)::

    R_exp / R_th = M_a(x) / M_b(x) = (chi_b / chi_a) (1 - exp(-chi_a x)) / (1 - exp(-chi_b x))

is monotonic in ``x = rho t`` from 1 (thin) to ``chi_b / chi_a`` (infinitely thick); it is solved
per pixel by bisection. Pixels are never silently left uncorrected; each gets a flag (bits):

- :data:`FLAG_NO_ABSORPTION` (1): the ratio shows no absorption (on the thin side of ``R_th``):
  ``rho t`` cannot be measured, the nominal ``density * thickness`` of the matrix file is used;
- :data:`FLAG_THICK` (2): the ratio is at or beyond the thick limit: corrected as infinitely
  thick (``M_i = 1/chi_i``; ``rhot`` = inf);
- :data:`FLAG_NO_RATIO` (4): Ka or Kb is missing or not positive: the nominal ``rho t`` is used;
- :data:`FLAG_FACTOR` (8): some line's correction factor ``rho t / M_i`` exceeds ``max_factor``
  (the line sees less than 1/max_factor of the layer): the value is corrected but uncertain.

The original xrf_proc used ``exp(-mu (rho t))`` with the exit path only, clamped strong absorbers
back to "no correction" and reset factors above 1000 to 1; none of that is done here.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

FLAG_NO_ABSORPTION = 1
FLAG_THICK = 2
FLAG_NO_RATIO = 4
FLAG_FACTOR = 8
FLAG_MEANING = ("1: ratio shows no absorption, nominal rho*t used; 2: ratio at the thick limit, infinitely thick "
                "correction; 4: no Ka/Kb ratio (missing signal), nominal rho*t used; 8: a correction factor above "
                "max_factor")


def probed_areal(intensity: np.ndarray, intensity_std: np.ndarray, I0norm: float, yld: np.ndarray,
                 yld_std: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probed areal concentrations ``A = (I / I0norm) / Y`` (ug/cm2) and absolute errors.

    Parameters
    ----------
    intensity, intensity_std : ndarray, shape (lines, *grid) or (lines,)
        Normalised intensities (counts per I0norm) and errors.
    yld, yld_std : ndarray, shape (lines,)
        Yields in counts/(I0 count)/(ug/cm2).
    """
    I = np.asarray(intensity, dtype=np.float64)
    s = np.asarray(intensity_std, dtype=np.float64)
    y = np.asarray(yld, dtype=np.float64).reshape((-1,) + (1,) * (I.ndim - 1))
    ys = np.asarray(yld_std, dtype=np.float64).reshape(y.shape)
    A = I / I0norm / y
    with np.errstate(divide="ignore", invalid="ignore"):
        rel_i = np.where(I != 0, s / np.abs(I), 0.0)
    err = np.sqrt((np.abs(A) * np.sqrt(rel_i ** 2 + (ys / y) ** 2)) ** 2 + np.where(I == 0, s / I0norm / y, 0.0) ** 2)
    return A, err


def absorbed_mass(chi: np.ndarray, rhot: np.ndarray) -> np.ndarray:
    """``M(x) = (1 - exp(-chi x)) / chi`` in g/cm2; ``x = inf`` gives ``1/chi``. Broadcasts."""
    chi = np.asarray(chi, dtype=np.float64)
    x = np.asarray(rhot, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        out = -np.expm1(-chi * np.where(np.isinf(x), 0.0, x)) / chi
    return np.where(np.isinf(x), 1.0 / chi, out)


def ratio_model(rhot: np.ndarray, chi_a: float, chi_b: float) -> np.ndarray:
    """``R(rho t) / R_th`` for the Ka and Kb lines of combined attenuations ``chi_a``, ``chi_b``."""
    x = np.asarray(rhot, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        r = absorbed_mass(chi_a, x) / absorbed_mass(chi_b, x)
    return np.where(x == 0, 1.0, r)


def rhot_from_ratio(ratio: np.ndarray, ratio_th: float, chi_a: float, chi_b: float, nominal: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """Mass thickness ``rho t`` (g/cm2) per pixel from the measured Ka/Kb ratio.

    Parameters
    ----------
    ratio : ndarray, shape grid
        Measured Ka/Kb ratio (NaN where unknown).
    ratio_th : float
        Unabsorbed ratio.
    chi_a, chi_b : float
        Combined attenuation (cm2/g) of the matrix for the Ka and Kb energies (incoming beam included).
    nominal : float
        ``rho t`` used where the ratio cannot give one (flags 1 and 4); NaN is allowed.

    Returns
    -------
    rhot : ndarray, shape grid
        g/cm2; ``inf`` for pixels at or beyond the thick limit.
    flags : ndarray of uint8, shape grid
        See the module docstring.
    """
    if not (chi_a > 0 and chi_b > 0 and ratio_th > 0):
        raise InputError(f"attenuations {chi_a}, {chi_b} cm2/g and theoretical ratio {ratio_th} must be positive")
    if np.isclose(chi_a, chi_b, rtol=1e-6):
        raise InputError("the matrix attenuates Ka and Kb equally: their ratio carries no thickness information")
    q = np.asarray(ratio, dtype=np.float64) / ratio_th
    limit = chi_b / chi_a
    sign = 1.0 if limit < 1.0 else -1.0  # q decreases from 1 to limit when chi_a > chi_b
    flags = np.zeros(q.shape, dtype=np.uint8)
    invalid = ~np.isfinite(q) | (q <= 0)
    thin = ~invalid & (sign * (q - 1.0) >= 0)
    thick = ~invalid & ~thin & (sign * (q - limit) <= 0)
    inside = ~invalid & ~thin & ~thick
    flags[invalid] |= FLAG_NO_RATIO
    flags[thin] |= FLAG_NO_ABSORPTION
    flags[thick] |= FLAG_THICK
    rhot = np.full(q.shape, float(nominal))
    rhot[thick] = np.inf
    if inside.any():
        target = q[inside]
        lo = np.zeros(target.shape)
        hi = np.full(target.shape, 60.0 / min(chi_a, chi_b))
        for _ in range(80):
            mid = 0.5 * (lo + hi)
            above = sign * (ratio_model(mid, chi_a, chi_b) - target) > 0  # mid too thin
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        rhot[inside] = 0.5 * (lo + hi)
    return rhot, flags


@dataclass
class SelfAbsorption:
    """Per-pixel self-absorption from one element's Ka/Kb ratio.

    Attributes
    ----------
    element : str
    ratio_exp : ndarray, shape grid
        Measured Ka/Kb ratio.
    ratio_th : float
        Unabsorbed ratio (xraylib).
    rhot, rhot_low, rhot_high : ndarray, shape grid
        Mass thickness (g/cm2) and its values at ratio -/+ one sigma (inf: thick).
    flags : ndarray of uint8, shape grid
    chi_a, chi_b : float
        cm2/g.
    nominal : float
        Nominal rho*t of the matrix file (g/cm2) used for flags 1 and 4.
    """

    element: str
    ratio_exp: np.ndarray
    ratio_th: float
    rhot: np.ndarray
    rhot_low: np.ndarray
    rhot_high: np.ndarray
    flags: np.ndarray
    chi_a: float
    chi_b: float
    nominal: float


def self_absorption(element: str, ka: np.ndarray, ka_std: np.ndarray, kb: np.ndarray, kb_std: np.ndarray,
                    ratio_th: float, chi_a: float, chi_b: float, nominal: float) -> SelfAbsorption:
    """Measured ratio, ``rho t`` and flags from the fitted Ka and Kb areas (maps or sums).

    The bounds ``rhot_low``/``rhot_high`` come from the ratio plus/minus its counting error
    ``R sqrt((s_a/I_a)^2 + (s_b/I_b)^2)``.
    """
    ka = np.asarray(ka, dtype=np.float64)
    kb = np.asarray(kb, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = (ka > 0) & (kb > 0)
        ratio = np.where(ok, ka / np.where(ok, kb, 1.0), np.nan)
        rel = np.sqrt((np.asarray(ka_std) / ka) ** 2 + (np.asarray(kb_std) / kb) ** 2)
    sr = np.where(ok, ratio * rel, np.nan)
    rhot, flags = rhot_from_ratio(ratio, ratio_th, chi_a, chi_b, nominal)
    r1, _ = rhot_from_ratio(ratio - sr, ratio_th, chi_a, chi_b, np.nan)
    r2, _ = rhot_from_ratio(ratio + sr, ratio_th, chi_a, chi_b, np.nan)
    # a bound on the thin side of R_th means "no measurable absorption": rho t down to 0
    r1 = np.where(np.isnan(r1) & ok, 0.0, r1)
    r2 = np.where(np.isnan(r2) & ok, 0.0, r2)
    low, high = np.fmin(r1, r2), np.fmax(r1, r2)
    nominal_used = (flags & (FLAG_NO_ABSORPTION | FLAG_NO_RATIO)) != 0
    low = np.where(nominal_used, rhot, low)
    high = np.where(nominal_used, rhot, high)
    n = {name: int(np.count_nonzero(flags & bit)) for name, bit in
         (("no absorption", FLAG_NO_ABSORPTION), ("thick", FLAG_THICK), ("no ratio", FLAG_NO_RATIO))}
    if any(n.values()):
        log.warning("%s Ka/Kb self-absorption: %s pixel(s) flagged", element,
                    ", ".join(f"{v} {k}" for k, v in n.items() if v))
    return SelfAbsorption(element, ratio, float(ratio_th), rhot, low, high, flags, float(chi_a), float(chi_b),
                          float(nominal))


def _group_mass(chi: np.ndarray, rhot: np.ndarray, lines: list | None) -> np.ndarray:
    """``M_i(rhot)`` of every line group, shape ``(lines, *grid)``: at ``chi_i``, or averaged over the lines of
    each group (``lines[i] = (chi of its lines, weights)``)."""
    if lines is None:
        return absorbed_mass(chi, rhot[None])
    out = []
    for chis, w in lines:
        w = np.asarray(w, dtype=np.float64)
        m = sum(wk * absorbed_mass(ck, rhot) for ck, wk in zip(np.asarray(chis, dtype=np.float64), w)) / w.sum()
        out.append(m)
    return np.array(out)


def correct_concentrations(areal: np.ndarray, areal_std: np.ndarray, chi: np.ndarray, sa: SelfAbsorption,
                           max_factor: float = 100.0, lines: list | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mass fractions (ppm) from probed areal concentrations with the per-pixel ``rho t``.

    Parameters
    ----------
    areal, areal_std : ndarray, shape (lines, *grid) or (lines,)
        ug/cm2 (:func:`probed_areal`).
    chi : ndarray, shape (lines,)
        Combined attenuation of each line (cm2/g).
    sa : SelfAbsorption
        Grid matching ``areal``'s trailing axes.
    max_factor : float
        Correction factors ``rho t / M_i`` above this set :data:`FLAG_FACTOR`.
    lines : list of (ndarray, ndarray), optional
        Per group, the combined attenuation of each of its lines and their weights (production cross
        section x detection): ``M_i`` is then the weighted mean over the lines, as the references'
        yields are made (:func:`xrfproc.core.absorption.group_effective_thickness`).

    Returns
    -------
    ppm, ppm_std : ndarray, shape of ``areal``
        The error adds the counting/yield error and half the spread of the values at
        ``rhot_low``/``rhot_high`` (inf when the ratio is compatible with no absorption).
    factor : ndarray, shape of ``areal``
        ``rho t / M_i``: thin-film areal -> true areal; inf for thick pixels.
    flags : ndarray of uint8, shape grid
        ``sa.flags`` plus :data:`FLAG_FACTOR`.
    """
    A = np.asarray(areal, dtype=np.float64)
    As = np.asarray(areal_std, dtype=np.float64)
    c = np.asarray(chi, dtype=np.float64).reshape((-1,) + (1,) * (A.ndim - 1))
    M = _group_mass(c, sa.rhot, lines)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ppm = A / M
        p_lo = A / _group_mass(c, sa.rhot_low, lines)
        p_hi = A / _group_mass(c, sa.rhot_high, lines)
        spread = 0.5 * np.abs(p_lo - p_hi)
        spread = np.where(np.isnan(spread), 0.0, spread)
        err = np.sqrt((As / M) ** 2 + spread ** 2)
        factor = np.where(np.isinf(sa.rhot)[None], np.inf, sa.rhot[None] / M)
    flags = sa.flags.copy()
    big = np.any(np.isfinite(factor) & (factor > max_factor), axis=0)
    flags[big] |= FLAG_FACTOR
    if big.any():
        log.warning("self-absorption correction factor above %g in %d pixel(s) (flagged)", max_factor, int(big.sum()))
    return ppm, err, factor, flags


def bulk_concentrations(areal: np.ndarray, areal_std: np.ndarray, density_g_cm3: float, d_eff_cm: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Mass fractions (ppm) of a homogeneous matrix: ``c = A / (rho d_eff_i)``.

    ``d_eff_cm`` (shape (lines,)) from :func:`xrfproc.core.absorption.effective_thickness`.
    """
    A = np.asarray(areal, dtype=np.float64)
    m = (density_g_cm3 * np.asarray(d_eff_cm, dtype=np.float64)).reshape((-1,) + (1,) * (A.ndim - 1))
    return A / m, np.asarray(areal_std, dtype=np.float64) / m


__all__ = ["FLAG_NO_ABSORPTION", "FLAG_THICK", "FLAG_NO_RATIO", "FLAG_FACTOR", "FLAG_MEANING", "probed_areal",
           "absorbed_mass", "ratio_model", "rhot_from_ratio", "SelfAbsorption", "self_absorption",
           "correct_concentrations", "bulk_concentrations"]
