"""Summaries and pictures for the MCP tools.

The api functions return plain dicts; here they become the typed models of :mod:`.models` (paths
relative to the data root, NaN as null). The pictures (a panel grid of maps, the sum spectrum) are
drawn with matplotlib's Agg canvas (no pyplot, no display, safe in worker threads) into PNG bytes.
"""
from __future__ import annotations

import io
import logging
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from .. import store
from ..errors import InputError, LayoutError
from . import models as m
from .paths import DataRoots

log = logging.getLogger(__name__)

#: groups searched, in order, when the image dataset is "auto"
IMAGE_GROUPS = ("quant", "norm", "fit")
#: entries of an inspect tree returned at most
MAX_TREE_ENTRIES = 400


# --------------------------------------------------------------------------- numbers
def num(x: Any) -> float | None:
    """A finite float, or None for NaN/inf/None."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def stats(arr: np.ndarray) -> m.Stats:
    good = np.asarray(arr, dtype=np.float64)
    good = good[np.isfinite(good)]
    if not good.size:
        return m.Stats()
    return m.Stats(min=float(good.min()), median=float(np.median(good)), max=float(good.max()))


def _stats_dict(d: Mapping[str, Any]) -> dict[str, m.Stats]:
    out = {}
    for name, v in d.items():
        if isinstance(v, Mapping):
            out[name] = m.Stats(min=num(v.get("min")), median=num(v.get("median")), max=num(v.get("max")))
        else:  # [min, median, max]
            out[name] = m.Stats(min=num(v[0]), median=num(v[1]), max=num(v[2]))
    return out


# --------------------------------------------------------------------------- api dicts -> models
def fit_result(s: Mapping[str, Any], roots: DataRoots) -> m.FitResult:
    chans = {}
    warnings: list[str] = []
    for c, d in s["channels"].items():
        chans[c] = m.FitChannel(names=list(d["names"]), shape=list(d["shape"]), lines=_stats_dict(d["lines"]),
                                failed=int(d["failed"]), invalid=int(d["invalid"]),
                                deadtime_missing=int(d["deadtime_missing"]), chi2_median=num(d["chi2_median"]),
                                sum_int={k: num(v) for k, v in d["sum_int"].items()},
                                sum_rule={k: round(float(v), 4) for k, v in d.get("sum_rule", {}).items()},
                                calibration={k: (round(v, 6) if isinstance(v, float) else v)
                                             for k, v in d.get("calibration", {}).items()},
                                warnings=list(d["warnings"]))
        warnings += list(d["warnings"])
    return m.FitResult(file=roots.display(s["file"]), mode=s["mode"], seconds=float(s["seconds"]), channels=chans,
                       warnings=warnings)


def normalise_result(s: Mapping[str, Any], roots: DataRoots) -> m.NormaliseResult:
    chans = {c: m.ChannelLines(names=list(d["names"]), shape=list(d["shape"]), lines=_stats_dict(d["stats"]))
             for c, d in s["channels"].items()}
    return m.NormaliseResult(file=roots.display(s["file"]), I0norm=num(s.get("I0norm")),
                             masked_points=int(s.get("masked_points") or 0),
                             time_triggered=bool(s.get("time_triggered")), channels=chans,
                             warnings=list(s.get("warnings", [])))


def inspect_result(s: Mapping[str, Any], roots: DataRoots, max_entries: int = MAX_TREE_ENTRIES) -> m.InspectResult:
    tree = [m.TreeEntry(**{k: v for k, v in e.items() if k in m.TreeEntry.model_fields})
            for e in s["tree"][:max_entries]]
    return m.InspectResult(file=roots.display(s["file"]), schema_version=s["schema_version"], grid=s["grid"],
                           channels=list(s["channels"]), steps=dict(s["steps"]), tree=tree,
                           tree_truncated=len(s["tree"]) > max_entries, bulk_files=list(s["bulk_files"]))


def file_result(path: str | Path, roots: DataRoots) -> m.FileResult:
    """Summary of a layout file just written (grid, channels, excitation energy)."""
    with store.open_read(path) as f:
        chans = store.channels(f, "raw") if "raw" in f else []
        grid = list(f[f"raw/{chans[0]}/spectra"].shape[:-1]) if chans and f"raw/{chans[0]}/spectra" in f else None
        energy = f["raw"].attrs.get("energy_keV") if "raw" in f else None
    return m.FileResult(file=roots.display(path), grid=grid, channels=chans, energy_keV=num(energy))


def detlim_result(s: Mapping[str, Any], roots: DataRoots) -> m.DetlimResult:
    chans = {c: m.DetlimChannel(detection_limits_ppm_1s={k: num(v) for k, v in d["detection_limits_ppm_1s"].items()},
                                yields={k: num(v) for k, v in d["yields"].items()}, skipped=list(d["skipped"]))
             for c, d in s["channels"].items()}
    return m.DetlimResult(file=roots.display(s["file"]), cnc=roots.display(s["cnc"]), channels=chans,
                          warnings=list(s.get("warnings", [])))


def cnc_result(cnc: Any, path: Path, roots: DataRoots) -> m.CncResult:
    from ..core import xraydata

    els = {xraydata.symbol(int(z)): m.Concentration(conc=float(c), err=float(e))
           for z, c, e in zip(cnc.z, cnc.conc, cnc.err)}
    return m.CncResult(file=roots.display(path), name=cnc.name, unit=cnc.unit, density_mg_cm3=float(cnc.density),
                       mass_mg=float(cnc.mass), thickness_um=float(cnc.thickness), elements=els)


def jsonable(value: Any, roots: DataRoots, max_items: int = 64) -> Any:
    """A JSON-safe copy of an api summary: numpy -> python, Path -> display, NaN -> None, lists cut."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, roots, max_items) for k, v in value.items()}
    if isinstance(value, Path):
        return roots.display(value)
    if isinstance(value, np.ndarray):
        value = value.ravel()[:max_items].tolist() if value.ndim else value.item()
    if isinstance(value, (list, tuple, set)):
        return [jsonable(v, roots, max_items) for v in list(value)[:max_items]]
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return num(value)
    if isinstance(value, str) and value.startswith("/") and roots.contains(Path(value).resolve()):
        return roots.display(value)
    if value is None or isinstance(value, str):
        return value
    return str(value)


def step_result(step: str, path: Path, summary: Any, roots: DataRoots) -> m.StepResult:
    data = jsonable(summary if isinstance(summary, Mapping) else {"result": summary}, roots)
    return m.StepResult(file=roots.display(path), step=step, summary=data)


# --------------------------------------------------------------------------- drawing
def _png(fig: Any) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def draw_maps(ims: np.ndarray, names: Sequence[str], title: str = "", scale: str = "linear",
              clip_percent: float = 1.0, max_width_px: int = 1400) -> bytes:
    """A panel grid of maps ``(n, rows, cols)`` with a colour bar each, as PNG bytes.

    ``scale`` is ``"linear"``, ``"sqrt"`` or ``"log"``; the colour range runs from the
    ``clip_percent`` to the ``100 - clip_percent`` percentile of each map's finite pixels.
    """
    from matplotlib.figure import Figure

    n = len(names)
    rows, cols = ims.shape[1], ims.shape[2]
    ncols = max(1, min(n, math.ceil(math.sqrt(n * max(rows, 1) / max(cols, 1)))))
    nrows = math.ceil(n / ncols)
    panel_w = 2.6
    panel_h = min(6.0, max(1.2, panel_w * rows / max(cols, 1))) + 0.35
    dpi = min(100, int(max_width_px / (panel_w * ncols)))
    fig = Figure(figsize=(panel_w * ncols, panel_h * nrows + (0.4 if title else 0)), dpi=max(dpi, 40),
                 layout="constrained")
    if title:
        fig.suptitle(title, fontsize=9)
    for i, (name, im) in enumerate(zip(names, ims)):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        data = np.asarray(im, dtype=np.float64)
        good = data[np.isfinite(data)]
        if scale == "log":
            data = np.log10(np.where(data > 0, data, np.nan))
            good = data[np.isfinite(data)]
        elif scale == "sqrt":
            data = np.sqrt(np.clip(data, 0, None))
            good = data[np.isfinite(data)]
        lo, hi = (np.percentile(good, [clip_percent, 100 - clip_percent]) if good.size else (0.0, 1.0))
        if not hi > lo:
            hi = lo + 1.0
        img = ax.imshow(data, vmin=lo, vmax=hi, cmap="viridis", interpolation="nearest", aspect="equal")
        ax.set_title(f"{name}" + ("" if scale == "linear" else f" ({scale})"), fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        cb = fig.colorbar(img, ax=ax, fraction=0.046, pad=0.02)
        cb.ax.tick_params(labelsize=6)
    return _png(fig)


def find_image_dataset(f: Any, dataset: str, channel: str | None) -> str:
    """The dataset to draw: ``dataset`` as given, or for ``"auto"`` the most processed ``<group>/<channel>/ims``."""
    if dataset != "auto":
        key = dataset.strip("/")
        if key not in f:
            raise LayoutError(f"no dataset '{key}'", path=f.filename, dataset=key)
        return key
    for group in IMAGE_GROUPS:
        if group in f:
            chans = store.channels(f, group)
            c = channel or (chans[0] if chans else None)
            if c and f"{group}/{c}/ims" in f:
                return f"{group}/{c}/ims"
    raise LayoutError("no image stack to draw (no quant/, norm/ or fit/ group with channelXX/ims): run the fit "
                      "step first", path=f.filename)


def read_image_stack(path: Path, dataset: str, channel: str | None, lines: Sequence[str] | None,
                     max_pixels: int) -> tuple[str, np.ndarray, list[str]]:
    """Read a ``(n, rows, cols)`` (or 2-D) stack and its line names, keeping only ``lines``."""
    with store.open_read(path) as f:
        key = find_image_dataset(f, dataset, channel)
        ds = f[key]
        if not hasattr(ds, "shape") or ds.ndim not in (2, 3):
            raise LayoutError(f"expected an image stack (lines, rows, cols) or one image, got shape "
                              f"{getattr(ds, 'shape', None)}", path=path, dataset=key)
        npix = int(np.prod(ds.shape[-2:]))
        if npix > max_pixels:
            raise InputError(f"the map has {npix} pixels, more than this server's limit of {max_pixels} "
                             "(--max-pixels)", path=path, dataset=key)
        data = np.asarray(ds[()], dtype=np.float64)
        parent = f[key.rsplit("/", 1)[0]] if "/" in key else f
        names: list[str] | None = None
        for nk in ("names", "el_id"):
            if nk in parent:
                names = store.decode_names(parent[nk][()])
                break
    if data.ndim == 2:
        data = data[None]
    if names is None or len(names) != data.shape[0]:
        names = [f"{key}[{i}]" for i in range(data.shape[0])] if data.shape[0] > 1 else [key]
    if lines:
        missing = [ln for ln in lines if ln not in names]
        if missing:
            raise InputError(f"no line {', '.join(map(repr, missing))} in {key} (it has {', '.join(names)})",
                             path=path, dataset=key)
        idx = [names.index(ln) for ln in lines]
        data, names = data[idx], [names[i] for i in idx]
    return key, data, names


# --------------------------------------------------------------------------- sum spectrum
def _group_energy(name: str, excitation: float | None) -> float | None:
    """Energy of the strongest line of a fitted group name ('Fe K', 'Pb L', 'Rayl', 'Compt')."""
    from ..core import xraydata

    try:
        if name == "Rayl":
            return excitation
        if name == "Compt":
            return None if excitation is None else float(xraydata.compton_energy(excitation, math.pi / 2))
        el, fam = name.split()[:2]
        g = xraydata.line_group(el, fam[0])
        return float(g.energies[int(np.argmax(g.rates))])
    except Exception:  # noqa: BLE001 (an unknown name only loses its marker)
        return None


def sum_spectrum(path: Path, channel: str | None, max_points: int, emin_keV: float = 1.0,
                 ) -> tuple[m.SumSpectrumResult, bytes]:
    """The sum spectrum of a channel, the line families found in it and, when fitted, the fit; plus its PNG.

    Returns the model (``png`` still empty) and the PNG bytes.
    """
    from matplotlib.figure import Figure

    from ..core import suggest
    from ..core.snip import snip1d

    with store.open_read(path) as f:
        chans = store.channels(f, "raw")
        if not chans:
            raise LayoutError("no detector channel raw/channelXX", path=path, dataset="raw")
        c = channel or chans[0]
        if c not in chans:
            raise InputError(f"no detector channel '{c}' (the file has {', '.join(chans)})", path=path,
                             dataset=f"raw/{c}")
        g = f[f"raw/{c}"]
        y = np.asarray(g["sumspec"][()], dtype=np.float64) if "sumspec" in g else None
        cal, _ = store.recorded_calibration(f, c)
        excitation = num(store.recorded_energy(f)[0])
        fitted = None
        chisq = None
        if f"fit/{c}/sum/int" in f:
            fg = f[f"fit/{c}"]
            fitted = (store.decode_names(fg["names"][()]), np.asarray(fg["sum/int"][()]),
                      np.asarray(fg["sum/bkg"][()]) if "sum/bkg" in fg else None,
                      np.asarray(fg["sum/stddev"][()]) if "sum/stddev" in fg else None)
            chisq = num(fg["sum"].attrs.get("chisq"))
    if y is None:
        nb = None
        for _, block in store.iter_spectra_blocks(path, c):
            b = np.asarray(block, dtype=np.float64)
            y = (np.zeros(b.shape[-1]) if y is None else y) + np.nansum(b.reshape(-1, b.shape[-1]), axis=0)
            nb = b.shape[-1]
        if y is None or nb is None:
            raise LayoutError("no spectra", path=path, dataset=f"raw/{c}/spectra")
    if cal is None:
        raise LayoutError(f"raw/{c} has no energy calibration (attribute calibration_keV): run calibrate first",
                          path=path, dataset=f"raw/{c}")
    zero, gain = float(cal[0]), float(cal[1])
    ch = np.arange(y.size)
    e = zero + gain * ch
    bkg = snip1d(y, 30)
    peaks: list[m.Peak] = []
    if excitation is not None and np.isfinite(y).all() and y.min() >= 0 and y.sum() > 0:
        try:
            for s in suggest.score_elements(y, (zero, gain), excitation, emin_keV=emin_keV):
                if s.fraction >= 0.005 and s.area >= 5 * s.sigma:
                    en = _group_energy(f"{s.element} {s.family}", excitation)
                    peaks.append(m.Peak(element=s.element, family=s.family, energy_keV=en or float("nan"),
                                        area=s.area, fraction=s.fraction))
        except InputError as exc:
            log.info("no peak search on %s %s: %s", path, c, exc)
    binning = max(1, math.ceil(y.size / max_points))
    nb = y.size // binning * binning if y.size >= binning else y.size
    yb = y[:nb].reshape(-1, binning).sum(axis=1)
    bb = bkg[:nb].reshape(-1, binning).sum(axis=1)
    eb = e[:nb].reshape(-1, binning).mean(axis=1)
    fitted_lines = None
    if fitted is not None:
        names, areas, bk, sd = fitted
        fitted_lines = [m.FittedLine(name=n, energy_keV=_group_energy(n, excitation), area=num(areas[i]),
                                     background=num(bk[i]) if bk is not None else None,
                                     sigma=num(sd[i]) if sd is not None else None) for i, n in enumerate(names)]
    result = m.SumSpectrumResult(file="", channel=c, png="", binning=binning, energy_keV=[float(v) for v in eb],
                                 counts=[float(v) for v in yb], background=[float(v) for v in bb],
                                 calibration=[zero, gain], excitation_keV=excitation, peaks=peaks,
                                 fitted=fitted_lines, chisq=chisq)

    fig = Figure(figsize=(9, 4.2), dpi=100, layout="constrained")
    ax = fig.add_subplot(1, 1, 1)
    ax.semilogy(e, np.clip(y, 0.5, None), lw=0.8, color="k", label="sum spectrum")
    ax.semilogy(e, np.clip(bkg, 0.5, None), lw=0.8, color="tab:blue", ls="--", label="SNIP background")
    top = float(np.nanmax(y)) if y.size else 1.0
    marks = ([(ln.name, ln.energy_keV, ln.area) for ln in fitted_lines] if fitted_lines
             else [(f"{p.element} {p.family}", p.energy_keV, p.area) for p in peaks])
    for label, en, area in marks:
        if en is None or not math.isfinite(en):
            continue
        ax.axvline(en, color="tab:red", lw=0.6, alpha=0.6)
        txt = label if area is None else f"{label} ({area:.3g})"
        ax.text(en, top * 1.3, txt, rotation=90, fontsize=6, ha="center", va="bottom", color="tab:red")
    ax.set_ylim(0.5, top * 30)
    ax.set_xlim(max(0.0, e[0]), (excitation or e[-1]) + 2.0 if excitation else e[-1])
    ax.set_xlabel("energy (keV)")
    ax.set_ylabel("counts (sum over pixels)")
    title = f"{path.name} {c}" + (" - fitted areas marked" if fitted_lines else " - lines found marked")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper right")
    return result, _png(fig)
