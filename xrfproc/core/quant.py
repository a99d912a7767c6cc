"""Reference-based quantification: elemental yields of references, interpolation, normalisation.

A reference measurement gives, per line group ``i``, the elemental yield (see
:mod:`xrfproc.core.detlim`)::

    Y_i = (I_norm,i / I0norm) / (c_i * rho * d_eff,i)      [counts / (I0 count) / (ug/cm2)]

i.e. counts per monitor count per *probed* areal concentration. It does not depend on the matrix,
so a sample measured in the same geometry and detector channel gives, per pixel, the probed areal
concentration ``A_i = (I_i / I0norm) / Y_i`` (ug/cm2). Bulk concentrations follow from the matrix
absorption (:mod:`xrfproc.core.quant_maps`).

This module holds the steps that only concern yields and line lists:

- :func:`average_yields`: several references, averaged per line with the standard error of the mean;
- :func:`complete_yields`: yields of lines no reference has, interpolated linearly in Z within the
  same family (K, L, M), extrapolated from the two nearest at the ends, reused when only one exists;
  lines that still have none are reported and left out (never written as -1);
- :func:`merge_ka_kb`: ``"Fe Ka"`` + ``"Fe Kb"`` (a fit that split the K group, needed for the
  self-absorption ratio) summed into ``"Fe K"``;
- :func:`normalise_by_signal`: division by a scatter peak or line (a copy, never in place).

Units: yields in ``counts/(I0 count)/(ug/cm^2)`` (``detlim.YIELD_UNIT``); image stacks ``(lines, *grid)``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import xraydata
from ..errors import InputError

log = logging.getLogger(__name__)

#: names of the scatter peaks, never quantified
SCATTER = ("Rayl", "Compt")


def split_name(name: str) -> tuple[int, str] | None:
    """``"Fe K"`` -> ``(26, "K")``, ``"Fe Ka"`` -> ``(26, "Ka")``; None for scatter and unknown names."""
    parts = str(name).split()
    if len(parts) != 2 or parts[1] not in ("K", "Ka", "Kb", "L", "M"):
        return None
    try:
        return xraydata.atomic_number(parts[0]), parts[1]
    except InputError:
        return None


@dataclass
class YieldTable:
    """Yields per line group.

    Attributes
    ----------
    names : list of str
        Line groups (``"Fe K"``).
    values, stddev : ndarray, shape (n,)
        Yields and absolute one-sigma errors (``counts/(I0 count)/(ug/cm^2)``).
    n_refs : ndarray of int, shape (n,)
        How many references measured the line (0: interpolated / extrapolated / reused).
    origin : list of str
        ``"measured"``, ``"interpolated"``, ``"extrapolated"`` or ``"reused"`` per line.
    missing : list of str
        Lines asked for that have no yield at all (left out).
    sources : list of list of str
        Per line, the measured lines its yield comes from (physics-based yields; empty otherwise).
    far : list of bool
        Per line, True when it is far from every measured line (larger stated uncertainty, warned).
    warnings : list of str
    """

    names: list[str]
    values: np.ndarray
    stddev: np.ndarray
    n_refs: np.ndarray
    origin: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    sources: list[list[str]] = field(default_factory=list)
    far: list[bool] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def get(self, name: str) -> tuple[float, float]:
        i = self.names.index(name)
        return float(self.values[i]), float(self.stddev[i])


def average_yields(tables: Sequence[tuple[Sequence[str], np.ndarray, np.ndarray]]) -> YieldTable:
    """Average the yields of several references per line.

    Parameters
    ----------
    tables : sequence of (names, yields, stddev)
        One per reference; ``yields`` and ``stddev`` of shape (len(names),).

    Returns
    -------
    YieldTable
        The mean over the references that have the line. Its error is the standard error of the
        mean ``std(ddof=1) / sqrt(n)``, but never less than the propagated individual errors
        ``sqrt(sum sigma_k^2) / n`` (two references that agree by chance do not make a yield exact);
        a single reference keeps its own error. Non-finite or non-positive yields are ignored.
    """
    if not tables:
        raise InputError("no reference yields given")
    acc: dict[str, list[tuple[float, float]]] = {}
    order: list[str] = []
    for names, values, stddev in tables:
        values = np.asarray(values, dtype=np.float64)
        stddev = np.asarray(stddev, dtype=np.float64)
        if values.shape != (len(names),) or stddev.shape != (len(names),):
            raise InputError(f"yield table of {len(names)} names has values {values.shape}, stddev {stddev.shape}")
        for n, v, s in zip(names, values, stddev):
            if not (np.isfinite(v) and v > 0):
                log.warning("reference yield of %s is %r: ignored", n, v)
                continue
            if n not in acc:
                acc[n] = []
                order.append(n)
            acc[n].append((float(v), float(s) if np.isfinite(s) else 0.0))
    vals, errs, counts = [], [], []
    for n in order:
        v = np.array([a for a, _ in acc[n]])
        s = np.array([b for _, b in acc[n]])
        k = v.size
        mean = float(v.mean())
        prop = float(np.sqrt(np.sum(s ** 2)) / k)
        sem = float(v.std(ddof=1) / np.sqrt(k)) if k > 1 else 0.0
        vals.append(mean), errs.append(max(sem, prop)), counts.append(k)
    return YieldTable(names=order, values=np.array(vals), stddev=np.array(errs), n_refs=np.array(counts, dtype=int),
                      origin=["measured"] * len(order))


def complete_yields(table: YieldTable, wanted: Sequence[str]) -> YieldTable:
    """Yields of the ``wanted`` line groups, filling the ones no reference measured.

    For a group of family F (K, L or M) with atomic number Z: linear interpolation in Z between the
    nearest measured groups of family F below and above Z; at the ends, linear extrapolation from
    the two nearest; the single measured yield when only one of family F exists. Errors are
    propagated through the same linear weights. An extrapolation that gives a yield <= 0, a group
    whose family has no measured yield, and names that are not element groups (``Rayl``,
    ``Compt``) are listed in ``missing`` and left out.

    Returns
    -------
    YieldTable
        In the order of ``wanted`` (missing ones left out).
    """
    known: dict[str, list[tuple[int, float, float]]] = {}
    for n, v, s in zip(table.names, table.values, table.stddev):
        zf = split_name(n)
        if zf is not None and zf[1] in ("K", "L", "M"):
            known.setdefault(zf[1], []).append((zf[0], float(v), float(s)))
    for fam in known:
        known[fam].sort()
    names, vals, errs, nref, origin, missing = [], [], [], [], [], []
    for w in wanted:
        if w in table.names:
            i = table.names.index(w)
            names.append(w), vals.append(table.values[i]), errs.append(table.stddev[i])
            nref.append(int(table.n_refs[i])), origin.append(table.origin[i] if table.origin else "measured")
            continue
        zf = split_name(w)
        pts = known.get(zf[1], []) if zf is not None else []
        if not pts:
            missing.append(w)
            continue
        z = zf[0]
        zs = np.array([p[0] for p in pts])
        if len(pts) == 1:
            y, e, how = pts[0][1], pts[0][2], "reused"
        else:
            if z < zs[0]:
                a, b, how = pts[0], pts[1], "extrapolated"
            elif z > zs[-1]:
                a, b, how = pts[-2], pts[-1], "extrapolated"
            else:
                k = int(np.searchsorted(zs, z))
                a, b, how = pts[k - 1], pts[k], "interpolated"
            t = (z - a[0]) / (b[0] - a[0])
            y = (1.0 - t) * a[1] + t * b[1]
            e = float(np.hypot((1.0 - t) * a[2], t * b[2]))
        if not (np.isfinite(y) and y > 0):
            log.warning("%s: %s yield %.3g is not positive; the line is left out", w, how, y)
            missing.append(w)
            continue
        log.info("%s: yield %s from the %s lines of the references", w, how, zf[1])
        names.append(w), vals.append(y), errs.append(e), nref.append(0), origin.append(how)
    return YieldTable(names=names, values=np.array(vals, dtype=np.float64), stddev=np.array(errs, dtype=np.float64),
                      n_refs=np.array(nref, dtype=int), origin=origin, missing=missing)


def physics_yields(table: YieldTable, wanted: Sequence[str], energy_keV: float, geometry) -> YieldTable:
    """Yields of the ``wanted`` lines: measured ones kept, the others from first principles scaled to the
    measured ones (:func:`xrfproc.core.fpyields.scale_yields`; ``geometry`` a
    :class:`~xrfproc.core.geometry.Geometry`, the yields already in it)."""
    from . import fpyields

    sc = fpyields.scale_yields(table.names, table.values, table.stddev, wanted, energy_keV, geometry)
    nref = {n: int(k) for n, k in zip(table.names, table.n_refs)}
    return YieldTable(names=sc.names, values=sc.values, stddev=sc.stddev,
                      n_refs=np.array([nref.get(n, 0) if o == "measured" else 0 for n, o in zip(sc.names, sc.origin)],
                                      dtype=int),
                      origin=sc.origin, missing=sc.missing, sources=sc.sources, far=sc.far, warnings=sc.warnings)


def merge_ka_kb(names: Sequence[str], ims: np.ndarray, stddev: np.ndarray) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Sum ``"X Ka"`` and ``"X Kb"`` rows into one ``"X K"`` row (errors in quadrature).

    Applies only where both sub-groups exist and ``"X K"`` does not; the merged row takes the
    place of ``"X Ka"``. Works for maps ``(lines, *grid)`` and sums ``(lines,)``.
    """
    names = list(names)
    ims = np.asarray(ims, dtype=np.float64)
    stddev = np.asarray(stddev, dtype=np.float64)
    out_n, out_i, out_s = [], [], []
    skip = set()
    for k, n in enumerate(names):
        if k in skip:
            continue
        zf = split_name(n)
        if zf is not None and zf[1] == "Ka":
            sym = n.split()[0]
            kb = f"{sym} Kb"
            if kb in names and f"{sym} K" not in names:
                j = names.index(kb)
                skip.add(j)
                out_n.append(f"{sym} K"), out_i.append(ims[k] + ims[j]), out_s.append(np.hypot(stddev[k], stddev[j]))
                continue
        sym = n.split()[0]
        if zf is not None and zf[1] == "Kb" and f"{sym} Ka" in names and f"{sym} K" not in names:
            continue
        out_n.append(n), out_i.append(ims[k]), out_s.append(stddev[k])
    return out_n, np.array(out_i), np.array(out_s)


def find_signal(names: Sequence[str], signal: str, where: str = "") -> int:
    """Index of a normalising signal (``"Compt"``, ``"Rayl"`` or a line name) in ``names``."""
    names = list(names)
    if signal in names:
        return names.index(signal)
    raise InputError(f"normalising signal {signal!r} not found{' in ' + where if where else ''}; "
                     f"available: {', '.join(names)}")


def normalise_by_signal(ims: np.ndarray, stddev: np.ndarray, signal: np.ndarray, signal_std: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray]:
    """Divide a stack (or sums) by a normalising signal, relative errors added in quadrature.

    ``signal`` is used as a separate copy, so passing a row of ``ims`` itself is safe: the result is
    a new array and no row is divided by an already divided one. Points where the signal is not
    positive become NaN.

    Parameters
    ----------
    ims, stddev : ndarray, shape (lines, *grid) or (lines,)
    signal, signal_std : ndarray, shape grid or scalar
    """
    ims = np.asarray(ims, dtype=np.float64)
    stddev = np.asarray(stddev, dtype=np.float64)
    sig = np.array(signal, dtype=np.float64, copy=True)
    sig_s = np.array(signal_std, dtype=np.float64, copy=True)
    bad = ~np.isfinite(sig) | (sig <= 0)
    if np.all(bad):
        raise InputError("the normalising signal is zero or missing everywhere")
    safe = np.where(bad, np.nan, sig)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = ims / safe
        rel = np.sqrt((stddev / ims) ** 2 + (sig_s / safe) ** 2)
        err = np.where(ims != 0, np.abs(out) * rel, stddev / safe)
    return out, err


def theoretical_ka_kb(element: str | int, energy_keV: float, geometry=None) -> float:
    """Ka/Kb intensity ratio of ``element`` excited at ``energy_keV`` as detected, without sample absorption.

    Ka = the KL lines, Kb = all other K lines (KM, KN, KO...), as PyMca's ``Ka``/``Kb`` groups;
    ratio of the (cascade) fluorescence production cross sections (xraylib) times the detection
    probability of each line in ``geometry`` (:class:`xrfproc.core.geometry.Geometry`: air path,
    window, crystal): 2 cm of air lower Fe Ka/Kb by 1.2 %, as much as 3 um of an Fe-rich layer.
    ``None``: no detection path (the ratio of the cross sections alone).
    """
    group = xraydata.line_group(element, "K")
    cs = xraydata.fluorescence_cs(element, group.lines, energy_keV)
    if geometry is not None:
        cs = cs * geometry.detection(group.energies)
    ka = np.array([ln.startswith("KL") for ln in group.lines])
    a, b = float(cs[ka].sum()), float(cs[~ka].sum())
    if a <= 0 or b <= 0:
        raise InputError(f"{xraydata.symbol(element)} K alpha / K beta are not excited at {energy_keV} keV")
    return a / b


def line_energy(name: str, energy_keV: float) -> float:
    """Mean energy (keV) of a group ``"Fe K"``, or of a sub-group ``"Fe Ka"``/``"Fe Kb"``, weighted by
    the lines' production cross sections at ``energy_keV``."""
    zf = split_name(name)
    if zf is None:
        raise InputError(f"{name!r} is not a line group of an element")
    z, fam = zf
    group = xraydata.line_group(z, "K" if fam in ("Ka", "Kb") else fam)
    sel = np.ones(len(group.lines), dtype=bool)
    if fam in ("Ka", "Kb"):
        is_a = np.array([ln.startswith("KL") for ln in group.lines])
        sel = is_a if fam == "Ka" else ~is_a
    w = xraydata.fluorescence_cs(z, [ln for ln, s in zip(group.lines, sel) if s], energy_keV)
    if w.sum() <= 0:
        raise InputError(f"{name} is not excited at {energy_keV} keV")
    return float(np.sum(w * group.energies[sel]) / w.sum())


__all__ = ["SCATTER", "YieldTable", "split_name", "average_yields", "complete_yields", "physics_yields", "merge_ka_kb",
           "find_signal", "normalise_by_signal", "theoretical_ka_kb", "line_energy"]
