"""Physics-based (fundamental-parameter) yields of lines the references did not measure.

The elemental yield of a line group ``i`` (:mod:`xrfproc.core.detlim`: counts per I0 count per probed
ug/cm^2) is, from first principles::

    Y_i = K * S_i,      S_i = sum_l sigma_F,l(E0) * detection(E_l) / (4 pi sin(a_in))

with ``sigma_F,l`` the fluorescence production cross section of line ``l`` of the group (photo-
ionisation at the excitation energy ``E0`` x fluorescence yield x line fraction, Kissel cross sections
with the full cascade, xraylib through :mod:`xrfproc.core.xraydata`), ``detection`` the air path,
window transmission and crystal efficiency of the :class:`~xrfproc.core.geometry.Geometry`, and ``K``
an instrument constant (monitor counts per incident photon, solid angle) common to every line of a
detector channel. The matrix absorption in both directions is the probed-areal convention of the yields
(``c rho d_eff``, :mod:`xrfproc.core.absorption`): it is applied to the reference when its yields are
made and to the sample when its maps are converted, never here.

For every measured line ``j`` the references give ``r_j = Y_j / S_j`` (should be ``K``). A line the
references lack gets ``Y_i = r(E_i) S_i`` with ``r`` interpolated linearly in line energy between the
two measured lines of the same family (K, L, M) that bracket ``E_i`` (``"physics-scaled"``), or the
``r`` of the nearest measured line of that family outside their range (``"physics-extrapolated"``);
a family nobody measured borrows the ratio of the nearest line of any family (extrapolated, flagged
far). The stated error adds to the measured lines' errors (through the same weights) a model term:

    model = hypot(MODEL_REL, spread(r), EXTRAP_REL_PER_KEV * distance)       (relative)

``spread(r)`` the relative standard deviation of the ``r_j`` used (how well the physics describes
this instrument), ``distance`` the energy (keV) outside the measured range. Lines farther than
``far_keV`` from any measured line, or of a family nobody measured, are *far*: at least
``FAR_REL`` relative error and a warning.

A reference measured in another geometry than the sample (air path, window, angles) has its yields
moved to the sample's geometry by ``S_i(sample) / S_i(reference)`` (:func:`to_geometry`); the
solid angle (detector distance) is not part of the geometry and must be the same.
"""
from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import xraydata as xd
from .geometry import Geometry
from ..errors import InputError

log = logging.getLogger(__name__)

#: relative model error of a physics-scaled yield inside the measured range
MODEL_REL = 0.02
#: extra relative error per keV outside the measured range
EXTRAP_REL_PER_KEV = 0.03
#: lines farther than this from every measured line are "far"
FAR_KEV = 3.0
#: minimum relative error of a far line
FAR_REL = 0.15


def _split(name: str) -> tuple[int, str] | None:
    parts = str(name).split()
    if len(parts) != 2 or parts[1] not in xd.FAMILIES:
        return None
    try:
        return xd.atomic_number(parts[0]), parts[1]
    except InputError:
        return None


@functools.lru_cache(maxsize=4096)
def _sensitivity(z: int, family: str, energy_keV: float, geo: Geometry) -> tuple[float, float]:
    group = xd.line_group(z, family)
    if not group.lines:
        return 0.0, 0.0
    cs = xd.fluorescence_cs(z, group.lines, energy_keV)
    ok = (cs > 0) & (group.energies < energy_keV)
    if not ok.any():
        return 0.0, 0.0
    w = cs[ok] * geo.detection(group.energies[ok])
    s = float(w.sum()) / (4.0 * math.pi * math.sin(math.radians(geo.incidence_deg)))
    e = float(np.sum(w * group.energies[ok]) / w.sum()) if w.sum() > 0 else float(group.energies[ok].mean())
    return s, e


def sensitivity(name: str, energy_keV: float, geometry: Geometry) -> float:
    """``S_i`` of a line group (cm2/g/sr): see the module docstring; 0 when not excited or absent."""
    zf = _split(name)
    if zf is None:
        raise InputError(f"{name!r} is not a line group of an element ('Fe K', 'Pb L')")
    return _sensitivity(zf[0], zf[1], float(energy_keV), geometry)[0]


def detected_energy(name: str, energy_keV: float, geometry: Geometry) -> float:
    """Mean energy (keV) of a group as detected (lines weighted by ``sigma_F x detection``)."""
    zf = _split(name)
    if zf is None:
        raise InputError(f"{name!r} is not a line group of an element ('Fe K', 'Pb L')")
    return _sensitivity(zf[0], zf[1], float(energy_keV), geometry)[1]


def to_geometry(names: Sequence[str], values: np.ndarray, stddev: np.ndarray, energy_keV: float, ref: Geometry,
                target: Geometry) -> tuple[np.ndarray, np.ndarray]:
    """Yields measured in geometry ``ref`` moved to ``target`` (``x S(target) / S(ref)``); others unchanged."""
    values = np.asarray(values, dtype=np.float64).copy()
    stddev = np.asarray(stddev, dtype=np.float64).copy()
    if ref.same_detection(target):
        return values, stddev
    for k, n in enumerate(names):
        if _split(n) is None:
            continue
        a, b = sensitivity(n, energy_keV, ref), sensitivity(n, energy_keV, target)
        if a > 0 and b > 0:
            values[k] *= b / a
            stddev[k] *= b / a
    return values, stddev


@dataclass
class Scaled:
    """Physics-scaled yields: what :func:`scale_yields` found for each wanted line."""

    names: list[str]
    values: np.ndarray
    stddev: np.ndarray
    origin: list[str]
    sources: list[list[str]]
    far: list[bool]
    model_rel: np.ndarray
    missing: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def scale_yields(measured: Sequence[str], values: np.ndarray, stddev: np.ndarray, wanted: Sequence[str],
                 energy_keV: float, geometry: Geometry, far_keV: float = FAR_KEV) -> Scaled:
    """Yields of the ``wanted`` lines from the measured ones (module docstring).

    Parameters
    ----------
    measured, values, stddev
        The references' lines and yields (already in ``geometry``), shape (n,).
    wanted : sequence of str
        Lines to give a yield; names that are not element groups (scatter) and lines not excited
        at ``energy_keV`` are listed in ``missing``.
    """
    values = np.asarray(values, dtype=np.float64)
    stddev = np.asarray(stddev, dtype=np.float64)
    pts: dict[str, list[tuple[float, float, float, str]]] = {}
    for n, v, s in zip(measured, values, stddev):
        zf = _split(n)
        if zf is None or not (np.isfinite(v) and v > 0):
            continue
        sens, e = _sensitivity(zf[0], zf[1], float(energy_keV), geometry)
        if sens <= 0:
            continue
        pts.setdefault(zf[1], []).append((e, v / sens, (s if np.isfinite(s) else 0.0) / sens, n))
    for fam in pts:
        pts[fam].sort()
    allpts = sorted(p for fam in pts.values() for p in fam)
    out = Scaled([], np.zeros(0), np.zeros(0), [], [], [], np.zeros(0))
    vals, errs, model = [], [], []
    idx = {n: k for k, n in enumerate(measured)}
    for w in wanted:
        zf = _split(w)
        if zf is None:
            out.missing.append(w)
            continue
        if w in idx and np.isfinite(values[idx[w]]) and values[idx[w]] > 0:
            out.names.append(w), vals.append(values[idx[w]]), errs.append(stddev[idx[w]]), model.append(0.0)
            out.origin.append("measured"), out.sources.append([w]), out.far.append(False)
            continue
        sens, e = _sensitivity(zf[0], zf[1], float(energy_keV), geometry)
        if sens <= 0 or not allpts:
            out.missing.append(w)
            continue
        fam_pts = pts.get(zf[1], [])
        other_family = not fam_pts
        use = fam_pts or allpts
        es = np.array([p[0] for p in use])
        rs = np.array([p[1] for p in use])
        spread = float(rs.std(ddof=1) / rs.mean()) if rs.size > 1 else 0.0
        nearest = float(np.min(np.abs(np.array([p[0] for p in allpts]) - e)))
        if len(use) > 1 and es[0] <= e <= es[-1]:
            k = int(np.clip(np.searchsorted(es, e), 1, len(use) - 1))
            a, b = use[k - 1], use[k]
            t = 0.0 if b[0] == a[0] else (e - a[0]) / (b[0] - a[0])
            r = (1 - t) * a[1] + t * b[1]
            r_s = float(np.hypot((1 - t) * a[2], t * b[2]))
            how, src, outside = "physics-scaled", [a[3], b[3]], 0.0
        else:
            j = int(np.argmin(np.abs(es - e)))
            r, r_s = use[j][1], use[j][2]
            how, src, outside = "physics-extrapolated", [use[j][3]], float(abs(e - es[j]))
        rel = math.sqrt(MODEL_REL ** 2 + spread ** 2 + (EXTRAP_REL_PER_KEV * outside) ** 2)
        far = other_family or nearest > far_keV
        if far:
            rel = max(rel, FAR_REL)
            msg = (f"{w} ({e:.3g} keV): yield {how} from {', '.join(src)}"
                   f"{' (no ' + zf[1] + ' line measured)' if other_family else ''}, {nearest:.3g} keV from the "
                   f"nearest measured line; stated uncertainty raised to {100 * rel:.0f} %")
            out.warnings.append(msg)
            log.warning(msg)
        y = r * sens
        out.names.append(w), vals.append(y), errs.append(math.hypot(r_s * sens, rel * y)), model.append(rel)
        out.origin.append(how), out.sources.append(src), out.far.append(far)
    out.values, out.stddev, out.model_rel = np.array(vals, float), np.array(errs, float), np.array(model, float)
    return out


__all__ = ["MODEL_REL", "EXTRAP_REL_PER_KEV", "FAR_KEV", "FAR_REL", "sensitivity", "detected_energy",
           "to_geometry", "Scaled", "scale_yields"]
