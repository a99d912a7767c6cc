"""The quantification step: ``norm/`` + reference ``elyield/`` -> ``quant/``; ``quant/`` + a matrix -> ``rel_dif/``.

References must already hold elemental yields: run :func:`xrfproc.steps.detlim.detlim` on each
reference measurement (fit, normalise, detlim) first. ``quantify`` never writes to the reference
files. Every ``elyield/<cnc>/channelXX`` group of a reference file counts as one reference.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import store
from ..core import absorption
from ..core import fpyields
from ..core import geometry as cgeo
from ..core import quant as cq
from ..core import quant_maps as qm
from ..core.cnc import AREAL_UNITS, Cnc, read_cnc
from ..core.matrixcomp import matrix_composition
from ..errors import ConfigError, InputError, LayoutError
from . import normbasis as nb
from .geometry import file_geometry, geometry_for

log = logging.getLogger(__name__)


def _channel_name(c: Any) -> str:
    return f"channel{int(c):02d}" if isinstance(c, (int, np.integer)) or str(c).isdigit() else str(c)


def _as_cnc(value: Any) -> Cnc:
    return value if isinstance(value, Cnc) else read_cnc(value)


def _reference_geometry(f: Any, g: Any, sample: cgeo.Geometry) -> tuple[cgeo.Geometry, str]:
    """The geometry a reference's yields were measured in: ``elyield/..@geometry`` (what detlim used), the
    file's ``geometry`` group, else the sample's (assumed)."""
    import json

    if "geometry" in g.attrs:
        text = g.attrs["geometry"]
        return cgeo.resolve(json.loads(text.decode() if isinstance(text, bytes) else str(text))), "recorded by detlim"
    geo = file_geometry(f)
    if geo is not None:
        return geo, "the file's geometry group"
    return sample, "not recorded: assumed the sample's"


def _reference_yields(references: Sequence[str | Path], chan: str, norm: str | None, energy: float | None,
                      geometry: cgeo.Geometry | None = None, basis: nb.NormBasis | None = None,
                      units: str | None = None, sample_path: Path | None = None, info: dict | None = None
                      ) -> tuple[list[tuple[list[str], np.ndarray, np.ndarray]], list[str]]:
    """Yield tables of every reference for one channel (per ``norm`` signal when given).

    With ``geometry`` (the sample's), each reference's yields are moved from the geometry they were
    measured in to it (:func:`xrfproc.core.fpyields.to_geometry`). With ``basis`` (the sample's
    normalisation, no ``norm`` signal), a reference normalised differently is refused unless
    ``units="convert"`` (both turned into counts per I0 count) or ``"ignore"``. ``info`` collects, per
    reference, its geometry and normalisation.
    """
    tables, labels = [], []
    info = {} if info is None else info
    for ref in references:
        ref = Path(ref)
        with store.open_read(ref) as f:
            if "elyield" not in f:
                raise LayoutError("no elyield/ group: run detlim on this reference (fit, normalise, detlim) first",
                                  path=ref, dataset="elyield")
            rbasis = nb.norm_basis(f, ref) if "norm" in f else None
            if basis is not None and norm is None and rbasis is not None and units != "ignore":
                diff = nb.compare(basis, rbasis)
                if diff and units != "convert":
                    raise InputError(
                        f"sample {sample_path} and reference {ref} are normalised differently: {'; '.join(diff)} "
                        f"(sample: {basis.describe()}; reference: {rbasis.describe()}). Give units='convert' to turn "
                        f"both into counts per I0 count with their dwell times, units='ignore' to use them as they "
                        f"are, or normalise by a scatter peak (norm='Compt')", path=ref, dataset="norm")
                if units == "convert" and not (basis.convertible and rbasis.convertible):
                    raise InputError(f"cannot convert the normalisation of {ref} ({rbasis.describe()}) or of the "
                                     f"sample {sample_path} ({basis.describe()}) into counts per I0 count", path=ref)
            info.setdefault(str(ref), {})["normalisation"] = rbasis.as_dict() if rbasis is not None else None
            e_ref = store.recorded_energy(f)[0]
            if energy and e_ref and abs(e_ref - energy) > 0.01 * energy:
                log.warning("%s was measured at %.4g keV, the sample at %.4g keV: yields do not transfer", ref,
                            e_ref, energy)
            for tag in f["elyield"]:
                g = f["elyield"][tag]
                if chan not in g:
                    continue
                names = store.decode_names(store.require(g[chan], "names")[()])
                y = np.asarray(store.require(g[chan], "yield")[()], dtype=np.float64)
                s = np.asarray(store.require(g[chan], "stddev")[()], dtype=np.float64)
                if norm is None and units == "convert" and rbasis is not None:
                    y, s = y * rbasis.to_counts_per_i0, s * rbasis.to_counts_per_i0
                if geometry is not None:
                    rgeo, how = _reference_geometry(f, g[chan], geometry)
                    info.setdefault(str(ref), {})["geometry"] = {**rgeo.as_dict(), "source": how}
                    if energy:
                        y, s = fpyields.to_geometry(names, y, s, energy, rgeo, geometry)
                if norm is not None:
                    ng = store.require(f, f"norm/{chan}", "group (the reference is not normalised)")
                    rnames = store.decode_names(ng["names"][()])
                    k = cq.find_signal(rnames, norm, f"{ref} norm/{chan}")
                    sig = float(store.require(ng, "sum/int")[()][k])
                    sig_s = float(ng["sum/int_stddev"][()][k]) if "sum/int_stddev" in ng else 0.0
                    if not sig > 0:
                        raise InputError(f"normalising signal {norm} of the reference sum is {sig}", path=ref,
                                         dataset=f"norm/{chan}/sum/int")
                    i0 = float(store.require(f, "norm/I0")[()])
                    # yield per unit of the signal: Y * I0norm_ref / S_ref
                    scale = i0 / sig
                    s = y * scale * np.sqrt((s / y) ** 2 + (sig_s / sig) ** 2)
                    y = y * scale
                tables.append((names, y, s))
                labels.append(f"{ref}::elyield/{tag}/{chan}")
    return tables, labels


def _read_mask(f: Any, mask: Any, grid: tuple[int, ...], path: Path) -> np.ndarray | None:
    if mask is None:
        return None
    if isinstance(mask, str):
        mask = store.require(f, mask)[()]
    m = np.asarray(mask, dtype=bool)
    if m.shape != grid:
        raise InputError(f"mask of shape {m.shape} does not match the map grid {grid}", path=path)
    return m


def _quantify_vectors(names: list[str], ims: np.ndarray, std: np.ndarray, I0norm: float, ytab: cq.YieldTable,
                      sig: tuple[np.ndarray, np.ndarray] | None, mode: dict[str, Any]) -> dict[str, Any]:
    """Quantify maps ``(lines, *grid)`` or sums ``(lines,)``; ``names`` already merged and selected."""
    if sig is not None:
        ims, std = cq.normalise_by_signal(ims, std, sig[0], sig[1])
        I0norm = 1.0
    idx = [names.index(n) for n in ytab.names]
    areal, areal_s = qm.probed_areal(ims[idx], std[idx], I0norm, ytab.values, ytab.stddev)
    out: dict[str, Any] = {"unit": "ug/cm^2"}
    if mode["kind"] == "areal":
        out.update(values=areal, stddev=areal_s)
    elif mode["kind"] == "matrix":
        v, s = qm.bulk_concentrations(areal, areal_s, mode["density"], mode["d_eff"])
        out.update(values=v, stddev=s, unit="ppm")
    else:
        ppm, err, factor, flags = qm.correct_concentrations(areal, areal_s, mode["chi"], mode["sa"],
                                                             mode["max_factor"], lines=mode.get("line_chi"))
        out.update(values=ppm, stddev=err, factor=factor, flags=flags, unit="ppm")
    return out


def quantify(h5file: str | Path, references: str | Path | Sequence[str | Path], channel: Any = None,
             norm: str | None = None, absorb: tuple[Sequence[str] | str, Any] | None = None, snake: bool = False,
             mask: Any = None, matrix: Any = None, incidence_deg: float | None = None, exit_deg: float | None = None,
             energy_keV: float | None = None, max_factor: float = 100.0, geometry: Any = None,
             yields: str = "physics", units: str | None = None, fractions: str = "normalise") -> dict[str, Any]:
    """Quantify the normalised maps of a sample with the elemental yields of reference measurements.

    Writes ``quant/channelXX/{ims, stddev, names, refs, sum/int, sum/int_stddev, yield, yield_stddev,
    yield_origin, yield_sources, dl, below_dl, sum/dl}`` and, with ``absorb``, ``ratio_exp``, ``ratio_th``,
    ``rhot``, ``absorb_flag``, ``factor``, all in one transaction (``ims@unit`` says ppm or ug/cm^2).

    Detection limits: ``dl`` (same shape and unit as ``ims``) is what three standard deviations of
    the pixel's net intensity (``norm/.../stddev``, counting statistics of the fit) quantify to;
    ``below_dl`` (uint8, 1 where ``ims < dl``) flags the pixels below it, and the summary gives per
    line the fraction flagged; ``sum/dl`` the same for the sums.

    Parameters
    ----------
    h5file : path
        The sample, normalised (``norm/``).
    references : path or list of paths
        Reference measurements holding ``elyield/`` (run ``detlim`` on them first). Yields of a
        line found in several are averaged (standard error of the mean); lines no reference has get
        yields from first principles scaled to the measured ones (``yields="physics"``, see
        :mod:`xrfproc.core.fpyields`) or interpolated linearly in Z within their family
        (``yields="z"``); lines with none are reported and left out.
    channel : str or int, optional
        One channel; default every normalised channel.
    norm : str, optional
        ``"Compt"``, ``"Rayl"`` or a line: yields and maps are divided by that signal (the
        normalising line itself is not quantified).
    absorb : (elements, cnc), optional
        Self-absorption from the Ka/Kb ratio of the first element of ``elements`` that the fit split
        into ``"X Ka"``/``"X Kb"`` groups (fit with peaks ``{"Fe": ["Ka", "Kb"]}``), in the matrix
        of the concentration file ``cnc`` (its density x thickness is the fallback ``rho t`` of
        flagged pixels). Results in ppm.
    snake : bool
        Accepted for compatibility with xrf_proc: the ratio is taken from ``norm/`` (already on
        the regular grid after a snake regridding), so nothing else needs regridding.
    mask : array of bool (grid) or str (dataset path), optional
        True where points are excluded (NaN in the maps; the sums are those of ``norm/``).
    matrix : path or Cnc, optional
        Without ``absorb``: a homogeneous matrix (composition, density, thickness in um; 0 =
        infinitely thick) to convert probed areal concentrations to ppm. Without both: the
        results are probed areal concentrations in ug/cm^2 (thin films).
    incidence_deg, exit_deg : float, optional
        Beam and detector angles to the sample surface; default those of the geometry.
    energy_keV : float, optional
        Excitation energy; default the one the file records (:func:`xrfproc.store.recorded_energy`).
    max_factor : float
        Self-absorption correction factors above this are flagged.
    geometry : str, dict or Geometry, optional
        The sample's measurement geometry (:mod:`xrfproc.core.geometry`: a preset such as
        ``"aps-2ide"``, or fields); default the file's ``geometry`` group, else ``generic``. Used by the
        physics-based yields, to move reference yields measured in another geometry, and for the
        theoretical Ka/Kb ratio (air path, window and crystal).
    yields : {"physics", "z"}
        How lines the references lack get a yield (see ``references``).
    units : {None, "convert", "ignore"}
        Sample and references normalised differently (I0 a rate in one, counts in the other;
        different time normalisation or dwell: :mod:`xrfproc.steps.normbasis`) are refused (None);
        ``"convert"`` turns both into counts per I0 count with their dwell times, ``"ignore"`` uses
        them as they are. Not checked with ``norm`` (a scatter signal cancels the monitor).
    fractions : str
        How a matrix composition that does not sum to 100 % is used (:mod:`xrfproc.core.matrixcomp`):
        ``"normalise"``, ``"as_given"`` or the formula of the missing part.

    Returns
    -------
    dict
        ``{"file", "unit", "geometry", "normalisation", "references", "matrix", "channels": {c: {"names",
        "missing", "yield_origin", "yield_sources", "refs", "normaliser", "flags", "mean", "below_dl"}},
        "warnings"}``.
    """
    path = Path(h5file)
    refs = [references] if isinstance(references, (str, Path)) else list(references)
    if not refs:
        raise InputError("no reference file given")
    if absorb is not None and matrix is not None:
        raise ConfigError("give either matrix= (homogeneous matrix) or absorb= (per-pixel self-absorption, "
                          "whose concentration file is the matrix), not both")
    if yields not in ("physics", "z"):
        raise ConfigError(f"yields must be 'physics' or 'z', got {yields!r}")
    if units not in (None, "check", "convert", "ignore"):
        raise ConfigError(f"units must be None, 'convert' or 'ignore', got {units!r}")
    units = None if units == "check" else units
    warnings: list[str] = []
    with store.open_read(path) as f:
        store.require(f, "norm", "group (run the normalise step first)")
        chans = [_channel_name(channel)] if channel is not None else store.channels(f, "norm")
        if not chans:
            raise LayoutError("no channel in norm/", path=path, dataset="norm")
        if energy_keV is None:
            energy_keV = store.recorded_energy(f)[0]
            if energy_keV is None:
                raise InputError("the excitation energy is unknown (no raw@energy_keV and no fit configuration): "
                                 "give energy_keV", path=path, dataset="raw@energy_keV")
        I0norm = float(store.require(f, "norm/I0")[()])
        geo = geometry_for(f, geometry, incidence_deg, exit_deg)
        basis = nb.norm_basis(f, path)
        data = {}
        for c in chans:
            g = store.require(f, f"norm/{c}", "group")
            names = store.decode_names(store.require(g, "names")[()])
            ims = np.asarray(store.require(g, "ims")[()], dtype=np.float64)
            std = np.asarray(g["stddev"][()], dtype=np.float64) if "stddev" in g else np.sqrt(np.abs(ims))
            sums = (np.asarray(store.require(g, "sum/int")[()], dtype=np.float64),
                    np.asarray(g["sum/int_stddev"][()], dtype=np.float64) if "sum/int_stddev" in g else None)
            if sums[1] is None:
                sums = (sums[0], np.sqrt(np.abs(sums[0])))
            data[c] = (names, ims, std, sums, _read_mask(f, mask, ims.shape[1:], path))
    if snake:
        log.info("snake=True: the Ka/Kb ratio comes from norm/, already regridded; nothing else to do")

    incidence_deg, exit_deg = geo.incidence_deg, geo.exit_deg
    if units == "convert" and norm is None:
        if not basis.convertible:
            raise InputError(f"cannot convert the normalisation of {path} ({basis.describe()}) into counts per I0 "
                             f"count", path=path, dataset="norm")
        I0norm = I0norm / basis.to_counts_per_i0  # norm / I0norm_eff = counts per I0 count
    matrix_record = None
    mode_base: dict[str, Any] = {"kind": "areal", "max_factor": max_factor}
    if matrix is not None:
        mcnc = _as_cnc(matrix)
        if mcnc.areal or mcnc.density <= 0:
            raise ConfigError(f"matrix {mcnc.name}: a bulk composition (ppm) with a density is needed", path=mcnc.path)
        comp, matrix_record, wmsg = matrix_composition(mcnc, fractions)
        if wmsg:
            warnings.append(wmsg)
        mode_base.update(kind="matrix", comp=comp, density=mcnc.density / 1000.0,
                         thickness_cm=mcnc.thickness * 1e-4 if mcnc.thickness > 0 else np.inf)
    if absorb is not None:
        elements, acnc = absorb
        elements = [elements] if isinstance(elements, str) else list(elements)
        acnc = _as_cnc(acnc)
        if acnc.areal:
            raise ConfigError(f"absorb matrix {acnc.name} must be a bulk composition (ppm)", path=acnc.path)
        nominal = acnc.density / 1000.0 * acnc.thickness * 1e-4 if acnc.density > 0 and acnc.thickness > 0 else np.nan
        comp, matrix_record, wmsg = matrix_composition(acnc, fractions)
        if wmsg:
            warnings.append(wmsg)
        mode_base.update(kind="absorb", comp=comp, elements=elements, nominal=nominal)

    ref_info: dict[str, Any] = {}
    results, summary = {}, {"file": str(path), "channels": {}, "warnings": warnings, "geometry": geo.as_dict(),
                            "normalisation": {"sample": basis.as_dict(), "units": units,
                                              "checked": norm is None and units != "ignore"},
                            "references": ref_info, "matrix": matrix_record, "yields": yields}
    for c, (names, ims, std, (sint, sstd), m) in data.items():
        tables, labels = _reference_yields(refs, c, norm, energy_keV, geo, basis, units, path, ref_info)
        if not tables:
            raise LayoutError(f"no reference has elemental yields for {c} (elyield/<cnc>/{c})", path=refs[0])
        mode = dict(mode_base)
        extra: dict[str, Any] = {}
        if mode["kind"] == "absorb":
            el = next((e for e in mode["elements"] if f"{e} Ka" in names and f"{e} Kb" in names), None)
            if el is None:
                raise InputError(f"self-absorption needs separate Ka and Kb groups of {'/'.join(mode['elements'])} "
                                 f"in norm/{c} (fit with peaks {{'{mode['elements'][0]}': ['Ka', 'Kb']}}); "
                                 f"found {', '.join(names)}", path=path, dataset=f"norm/{c}/names")
            ea, eb = cq.line_energy(f"{el} Ka", energy_keV), cq.line_energy(f"{el} Kb", energy_keV)
            chi_ab = absorption.chi(mode["comp"], energy_keV, np.array([ea, eb]), incidence_deg, exit_deg)
            r_th = cq.theoretical_ka_kb(el, energy_keV, geo)
            ia, ib = names.index(f"{el} Ka"), names.index(f"{el} Kb")
            sa_map = qm.self_absorption(el, ims[ia], std[ia], ims[ib], std[ib], r_th, chi_ab[0], chi_ab[1],
                                        mode["nominal"])
            sa_sum = qm.self_absorption(el, sint[ia], sstd[ia], sint[ib], sstd[ib], r_th, chi_ab[0], chi_ab[1],
                                        mode["nominal"])
            extra["element"] = el
        # lines: Ka + Kb merged, scatter and the normaliser left out
        mnames, mims, mstd = cq.merge_ka_kb(names, ims, std)
        _, msum, msum_s = cq.merge_ka_kb(names, sint, sstd)
        sig = sig_sum = None
        if norm is not None:
            k = cq.find_signal(mnames, norm, f"{path} norm/{c}")
            sig = (mims[k].copy(), mstd[k].copy())
            sig_sum = (np.array(msum[k]), np.array(msum_s[k]))
        wanted = [n for n in mnames if n not in cq.SCATTER and n != norm]
        if yields == "physics":
            ytab = cq.physics_yields(cq.average_yields(tables), wanted, energy_keV, geo)
            for wmsg in ytab.warnings:
                warnings.append(f"{c}: {wmsg}")
        else:
            ytab = cq.complete_yields(cq.average_yields(tables), wanted)
        if ytab.missing:
            msg = f"{c}: no yield for {', '.join(ytab.missing)} (left out)"
            warnings.append(msg)
            log.warning(msg)
        if not ytab.names:
            raise InputError(f"{c}: none of the lines {', '.join(wanted)} has a yield in the references", path=path)
        if mode["kind"] != "areal":
            energies = np.array([cq.line_energy(n, energy_keV) for n in ytab.names])
            chi = absorption.chi(mode["comp"], energy_keV, energies, incidence_deg, exit_deg)
            mode["chi"] = chi
            mode["line_chi"] = [absorption.group_line_chi(n, energy_keV, mode["comp"], incidence_deg, exit_deg, geo)
                                for n in ytab.names]
            if mode["kind"] == "matrix":
                mode["d_eff"] = np.array([absorption.group_effective_thickness(
                    n, energy_keV, mode["comp"], mode["density"], mode["thickness_cm"], incidence_deg, exit_deg, geo)
                    for n in ytab.names])
        res_map = _quantify_vectors(mnames, mims, mstd, I0norm, ytab, sig, {**mode, "sa": sa_map} if extra else mode)
        res_sum = _quantify_vectors(mnames, msum, msum_s, I0norm, ytab, sig_sum,
                                    {**mode, "sa": sa_sum} if extra else mode)
        vals, errs = res_map["values"], res_map["stddev"]
        # detection limits: three standard deviations of the net intensity, quantified alike (linear in I)
        zero_y = cq.YieldTable(ytab.names, ytab.values, np.zeros_like(ytab.stddev), ytab.n_refs)
        dl_sig = None if sig is None else (sig[0], np.zeros_like(sig[1]))
        dl_sig_sum = None if sig_sum is None else (sig_sum[0], np.zeros_like(sig_sum[1]))
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            dl_map = _quantify_vectors(mnames, 3.0 * np.abs(mstd), np.zeros_like(mstd), I0norm, zero_y, dl_sig,
                                       {**mode, "sa": sa_map} if extra else mode)["values"]
            dl_sum = _quantify_vectors(mnames, 3.0 * np.abs(msum_s), np.zeros_like(msum_s), I0norm, zero_y,
                                       dl_sig_sum, {**mode, "sa": sa_sum} if extra else mode)["values"]
        dl_map = np.abs(dl_map)
        if m is not None:
            vals = np.where(m[None], np.nan, vals)
            errs = np.where(m[None], np.nan, errs)
            dl_map = np.where(m[None], np.nan, dl_map)
        with np.errstate(invalid="ignore"):
            below = (np.isfinite(vals) & np.isfinite(dl_map) & (vals < dl_map)).astype(np.uint8)
        valid = np.isfinite(vals) & np.isfinite(dl_map)
        below_frac = {n: (float(below[i][valid[i]].mean()) if valid[i].any() else None)
                      for i, n in enumerate(ytab.names)}
        sum_below = {n: bool(res_sum["values"][i] < dl_sum[i]) for i, n in enumerate(ytab.names)}
        for n, fr in below_frac.items():
            if fr is not None and fr >= 0.5:
                msg = (f"{c}: {n}: {100 * fr:.0f} % of the pixels below the detection limit (flagged in "
                       f"quant/{c}/below_dl){'; the sum is below it too' if sum_below[n] else ''}")
                warnings.append(msg)
                log.warning(msg)
        if extra:
            extra.update(sa=sa_map, factor=res_map["factor"], flags=res_map["flags"])
            if m is not None:
                extra["flags"] = np.where(m, 0, extra["flags"]).astype(np.uint8)
        results[c] = (ytab, labels, vals, errs, res_sum, res_map["unit"], extra, m, dl_map, below, dl_sum)
        flag_counts = {}
        if extra:
            fl = extra["flags"]
            flag_counts = {k: int(np.count_nonzero(fl & b)) for k, b in (
                ("no_absorption", qm.FLAG_NO_ABSORPTION), ("thick", qm.FLAG_THICK), ("no_ratio", qm.FLAG_NO_RATIO),
                ("factor_out_of_range", qm.FLAG_FACTOR))}
            if any(flag_counts.values()):
                warnings.append(f"{c}: self-absorption flags {flag_counts}")
        summary["channels"][c] = {
            "names": ytab.names, "missing": ytab.missing, "unit": res_map["unit"],
            "yield_origin": dict(zip(ytab.names, ytab.origin)),
            "yield_sources": dict(zip(ytab.names, ytab.sources)) if ytab.sources else {},
            "yield_far": [n for n, fa in zip(ytab.names, ytab.far) if fa] if ytab.far else [],
            "yield_rel_stddev": {n: float(s / v) for n, v, s in zip(ytab.names, ytab.values, ytab.stddev)},
            "refs": labels, "normaliser": norm,
            "below_dl": below_frac, "sum_below_dl": [n for n, b in sum_below.items() if b],
            "dl_median": {n: float(np.nanmedian(d)) if np.isfinite(d).any() else None
                          for n, d in zip(ytab.names, dl_map)},
            "flags": flag_counts, "element": extra.get("element"),
            "mean": {n: float(np.nanmean(v)) if np.isfinite(v).any() else None for n, v in zip(ytab.names, vals)},
            "sum": dict(zip(ytab.names, map(float, res_sum["values"]))),
        }
    summary["unit"] = next(iter(summary["channels"].values()))["unit"]

    replace = ["quant"] if channel is None else [f"quant/{c}" for c in results]
    params = {"references": [str(r) for r in refs], "norm": norm, "snake": snake, "mask": mask is not None,
              "matrix": None if matrix is None else str(getattr(matrix, "path", matrix)),
              "absorb": None if absorb is None else [list(mode_base["elements"]), str(getattr(absorb[1], "path",
                                                                                               absorb[1]))],
              "incidence_deg": incidence_deg, "exit_deg": exit_deg, "energy_keV": energy_keV,
              "max_factor": max_factor, "geometry": geo.as_dict(), "yields": yields, "units": units,
              "normalisation": summary["normalisation"], "reference_info": ref_info, "fractions": fractions,
              "matrix_fractions": matrix_record}
    with store.transaction(path, "quantify", replace=replace, params=params,
                           inputs=[f"norm/{c}" for c in results]) as tx:
        for c, (ytab, labels, vals, errs, res_sum, unit, extra, m, dl_map, below, dl_sum) in results.items():
            g = tx.group(f"quant/{c}")
            store.write_array(g, "ims", vals.astype(np.float32))
            store.write_array(g, "stddev", errs.astype(np.float32))
            store.write_array(g, "names", ytab.names)
            store.write_array(g, "refs", labels)
            g["ims"].attrs["unit"] = unit
            g["stddev"].attrs["meaning"] = "absolute one-sigma error"
            store.write_array(g, "sum/int", np.asarray(res_sum["values"], dtype=np.float64))
            store.write_array(g, "sum/int_stddev", np.asarray(res_sum["stddev"], dtype=np.float64))
            g["sum"].attrs["unit"] = unit
            store.write_array(g, "yield", ytab.values)
            store.write_array(g, "yield_stddev", ytab.stddev)
            store.write_array(g, "yield_origin", ytab.origin)
            if ytab.sources:
                store.write_array(g, "yield_sources", [", ".join(x) for x in ytab.sources])
            store.write_array(g, "dl", np.asarray(dl_map, dtype=np.float32))
            g["dl"].attrs["unit"] = unit
            g["dl"].attrs["meaning"] = "detection limit: 3 standard deviations of the net intensity, quantified"
            store.write_array(g, "below_dl", below)
            g["below_dl"].attrs["meaning"] = "1 where ims < dl (below the detection limit)"
            store.write_array(g, "sum/dl", np.asarray(dl_sum, dtype=np.float64))
            g.attrs["geometry"] = geo.describe()
            if norm is not None:
                g.attrs["normaliser"] = norm
            if extra:
                sa = extra["sa"]
                rhot = np.where(m, np.nan, sa.rhot) if m is not None else sa.rhot
                ratio = np.where(m, np.nan, sa.ratio_exp) if m is not None else sa.ratio_exp
                store.write_array(g, "ratio_exp", ratio)
                store.write_array(g, "ratio_th", float(sa.ratio_th))
                store.write_array(g, "rhot", rhot)
                g["rhot"].attrs["unit"] = "g/cm^2 (inf: infinitely thick)"
                store.write_array(g, "absorb_flag", extra["flags"])
                g["absorb_flag"].attrs["meaning"] = qm.FLAG_MEANING
                store.write_array(g, "factor", np.asarray(extra["factor"], dtype=np.float32))
                g["factor"].attrs["meaning"] = "rho*t / M_i: thin-film areal to true areal (inf: thick)"
                g.attrs["absorb_element"] = extra["element"]
    return summary


def div_by_cnc(h5file: str | Path, cncfile: str | Path, channel: Any = None) -> dict[str, Any]:
    """Quantified maps divided by a matrix composition (e.g. CI chondrite) into ``rel_dif/``.

    ``rel_dif/channelXX/{cnc, ims, names, stddev}``: ``ims = quant / c_matrix`` per line, the
    relative errors of the map and of the composition added in quadrature once. Lines whose element
    the file does not list (or lists at 0) are left out and reported. Units must agree: ppm maps
    with a ppm file, ug/cm^2 maps with an areal file.
    """
    path = Path(h5file)
    cnc = read_cnc(cncfile)
    with store.open_read(path) as f:
        store.require(f, "quant", "group (run quantify first)")
        chans = [_channel_name(channel)] if channel is not None else store.channels(f, "quant")
        data = {}
        for c in chans:
            g = store.require(f, f"quant/{c}", "group")
            unit = g["ims"].attrs.get("unit", "ppm")
            unit = unit.decode() if isinstance(unit, bytes) else str(unit)
            data[c] = (store.decode_names(g["names"][()]), np.asarray(g["ims"][()], dtype=np.float64),
                       np.asarray(g["stddev"][()], dtype=np.float64), unit)
    if cnc.areal:
        conc, err, cunit = cnc.conc * AREAL_UNITS[cnc.unit], cnc.err * AREAL_UNITS[cnc.unit], "ug/cm^2"
    else:
        conc, err, cunit = cnc.conc, cnc.err, "ppm"
    results, summary = {}, {"file": str(path), "cnc": str(cncfile), "channels": {}}
    for c, (names, ims, std, unit) in data.items():
        if unit != cunit:
            raise InputError(f"quant/{c} is in {unit} but {cnc.name} in {cunit}: units must agree", path=path,
                             dataset=f"quant/{c}/ims")
        keep, cval, cerr, skipped = [], [], [], []
        for i, n in enumerate(names):
            zf = cq.split_name(n)
            hit = np.flatnonzero(cnc.z == zf[0]) if zf is not None else np.zeros(0, int)
            if hit.size == 0 or not conc[hit[0]] > 0:
                skipped.append(n)
                continue
            keep.append(i), cval.append(conc[hit[0]]), cerr.append(err[hit[0]])
        cv = np.array(cval).reshape((-1,) + (1,) * (ims.ndim - 1))
        ce = np.array(cerr).reshape(cv.shape)
        q, qs = ims[keep], std[keep]
        out = q / cv
        with np.errstate(divide="ignore", invalid="ignore"):
            rel = np.sqrt((qs / q) ** 2 + (ce / cv) ** 2)
            out_s = np.where(q != 0, np.abs(out) * rel, qs / cv)
        if skipped:
            log.warning("%s: %s not in %s (left out)", c, ", ".join(skipped), cnc.name)
        results[c] = ([names[i] for i in keep], out, out_s)
        summary["channels"][c] = {"names": results[c][0], "skipped": skipped}
    replace = ["rel_dif"] if channel is None else [f"rel_dif/{c}" for c in results]
    with store.transaction(path, "div_by_cnc", replace=replace, params={"cnc": str(cncfile)},
                           inputs=[f"quant/{c}" for c in results]) as tx:
        for c, (names, out, out_s) in results.items():
            g = tx.group(f"rel_dif/{c}")
            store.write_array(g, "cnc", str(cncfile))
            store.write_array(g, "ims", out.astype(np.float32))
            store.write_array(g, "stddev", out_s.astype(np.float32))
            store.write_array(g, "names", names)
            g["ims"].attrs["unit"] = "relative to the matrix composition"
    return summary
