"""``xrfproc report FILE.h5``: one self-contained HTML page of a processed layout file.

The page shows, for the groups the file holds: the overview maps per detector channel, the sum
spectrum with the fitted model and line markers, the detection limits (plot and table), the
quantified statistics per element, and the provenance with the recipe that reproduces the file.
Sections of groups the file lacks are left out with a short note. Images are embedded as PNG
``data:`` URIs, so the page is one file with no external reference.
"""
from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .. import store
from .._version import __version__
from ..core import report_html as H
from ..core.spectrum_model import line_markers, sum_model
from ..errors import InputError, WriteError, XrfError

logger = logging.getLogger(__name__)

__all__ = ["report", "sum_model", "line_markers", "quant_statistics", "read_detlim"]

#: the image groups shown as overview maps, in this order (fit only when norm is missing)
MAP_GROUPS = ("quant", "norm", "fit", "tomo", "kmeans", "PCA")
MAP_TITLES = {"quant": "quantified concentrations", "norm": "normalised intensities", "fit": "fitted peak areas",
              "tomo": "tomographic reconstructions", "kmeans": "K-means clusters", "PCA": "principal components"}
SCATTER = ("Rayl", "Compt")


# --------------------------------------------------------------------------- reading helpers
def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.ndarray) and value.shape == ():
        return _text(value[()])
    return str(value)


def _channels(f: Any, top: str) -> list[str]:
    return sorted(k for k in f[top] if k.startswith("channel")) if top in f else []


def _unit(*holders: Any) -> str | None:
    for h in holders:
        if h is not None and "unit" in h.attrs:
            return _text(h.attrs["unit"])
    return None


def quant_statistics(ims: np.ndarray, names: Sequence[str]) -> list[dict[str, Any]]:
    """Per-line statistics of a quantified image stack over its finite pixels.

    Parameters
    ----------
    ims : ndarray, shape (nlines, rows, cols)
    names : sequence of str, one per line

    Returns
    -------
    list of dict
        ``{"name", "n", "min", "median", "mean", "max"}`` per line (NaN when no pixel is finite).
    """
    stack = np.asarray(ims, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    out = []
    for name, im in zip(names, stack):
        v = im[np.isfinite(im)]
        if v.size:
            out.append({"name": name, "n": int(v.size), "min": float(v.min()), "median": float(np.median(v)),
                        "mean": float(v.mean()), "max": float(v.max())})
        else:
            out.append({"name": name, "n": 0, "min": np.nan, "median": np.nan, "mean": np.nan, "max": np.nan})
    return out


def read_detlim(f: Any) -> dict[str, dict[str, dict[str, Any]]]:
    """``{cnc: {channel: {"names", "times" (s, ascending), "dl" (ntimes, nlines), "err", "unit"}}}``."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    if "detlim" not in f:
        return out
    top = f["detlim"]
    for cnc in sorted(top):
        g = top[cnc]
        if not hasattr(g, "keys"):
            continue
        unit = _unit(g, top) or "ppm"
        for ch in sorted(k for k in g if k.startswith("channel")):
            cg = g[ch]
            names = store.decode_names(cg["names"][()]) if "names" in cg else []
            times = []
            for key in cg:
                m = re.fullmatch(r"([0-9.eE+-]+)s", key)
                if m and "data" in cg[key]:
                    times.append((float(m.group(1)), key))
            times.sort()
            if not times or not names:
                continue
            dl = np.array([np.asarray(cg[k]["data"][()], dtype=np.float64) for _, k in times])
            err = np.array([np.asarray(cg[k]["stddev"][()], dtype=np.float64) if "stddev" in cg[k]
                            else np.full(len(names), np.nan) for _, k in times])
            out.setdefault(cnc, {})[ch] = {"names": names, "times": [t for t, _ in times], "dl": dl, "err": err,
                                           "unit": unit}
    return out


# --------------------------------------------------------------------------- sum spectrum model
class _Builder:
    def __init__(self, path: Path, pix_size_um: float | None):
        self.path = path
        self.pix_size_um = pix_size_um
        self.figures = 0
        self.sections: list[H.Section] = []
        self.absent: list[str] = []

    def figure(self, png: bytes, caption: str, alt: str, max_width_px: int | None = None) -> str:
        self.figures += 1
        return H.figure(png, caption, alt, self.figures, fig_id=f"figure-{self.figures}", max_width_px=max_width_px)


def _pixel_size(f: Any) -> tuple[float, str]:
    """Pixel size (µm) along the image columns from the motor positions (assumed in mm)."""
    steps = []
    for key in ("mot1", "mot2"):
        if key in f and getattr(f[key], "ndim", 0) == 2 and f[key].shape[1] > 1:
            m = np.asarray(f[key][()], dtype=np.float64)
            d = np.abs(np.diff(m, axis=1))
            d = d[np.isfinite(d)]
            if d.size:
                steps.append(float(np.median(d)))
    step = max(steps) if steps else 0.0
    if step > 0:
        return step * 1000.0, (f"pixel size {step * 1000:.3g} µm, the median motor step along the image "
                               "columns, read as mm (pass pix_size_um when the motors are in other units)")
    return 1.0, "pixel size unknown (no motor positions): the scale bar assumes 1 µm pixels"


def _maps(b: _Builder, f: Any, tmp: Path) -> None:
    from .imaging import overview_images

    groups = [g for g in MAP_GROUPS if g in f and _channels(f, g) and (g != "fit" or "norm" not in f)]
    if not groups:
        b.absent.append("element maps (no quant/, norm/ or fit/ image group)")
        return
    if b.pix_size_um is not None:
        pix, how = float(b.pix_size_um), f"pixel size {b.pix_size_um:g} µm (given)"
    else:
        pix, how = _pixel_size(f)
    sec = H.Section("maps", "Element maps")
    sec.add(f'<p class="muted">One collated figure per detector channel; each panel has its own colour scale '
            f'and a scale bar ({H.esc(how)}). Masked or missing pixels are light grey.</p>')
    for top in groups:
        sec.add(f"<h3>{H.esc(top)}/ — {H.esc(MAP_TITLES.get(top, top))}</h3>")
        unit = _unit(f[top])
        for ch in _channels(f, top):
            g = f[f"{top}/{ch}"]
            if "ims" not in g:
                continue
            unit = _unit(g["ims"], g, f[top]) or unit
            try:
                pngs = overview_images(b.path, top, ncols=5, pix_size_um=pix, channel=ch, out=tmp)
            except XrfError as exc:
                sec.add(H.note(f"{top}/{ch}: no overview ({exc})"))
                continue
            nlines = g["ims"].shape[0] if g["ims"].ndim == 3 else 1
            cap = (f"{top}/{ch}: {nlines} image{'s' if nlines != 1 else ''} of {g['ims'].shape[-2]} x "
                   f"{g['ims'].shape[-1]} pixels" + (f", in {unit}" if unit else "") + ".")
            sec.add(b.figure(pngs[0].read_bytes(), cap, f"overview maps of {top}/{ch}"))
    b.sections.append(sec)


def _spectra(b: _Builder, f: Any) -> None:
    from ..core import fit as core_fit
    from ..core.plots import plot_sumspec

    chans = [c for c in _channels(f, "raw") if "sumspec" in f[f"raw/{c}"]]
    if not chans:
        b.absent.append("sum spectra (no raw/channelXX/sumspec)")
        return
    sec = H.Section("spectra", "Sum spectra and fit")
    e0 = float(f["raw"].attrs["energy_keV"]) if "energy_keV" in f["raw"].attrs else None
    for ch in chans:
        raw = f[f"raw/{ch}"]
        y = np.asarray(raw["sumspec"][()], dtype=np.float64)
        cal = np.asarray(raw.attrs.get("calibration_keV", [0.0, 1.0, 0.0]), dtype=np.float64)
        cal = np.concatenate([cal, np.zeros(3)])[:3]
        chan = np.arange(y.size, dtype=np.float64)
        energy = cal[0] + cal[1] * chan + cal[2] * chan**2
        fg = f.get(f"fit/{ch}") if "fit" in f else None
        model = background = None
        engine = None
        names: list[str] = []
        areas = np.zeros(0)
        said = []
        rows = []
        if fg is not None and "sum" in fg and "int" in fg["sum"] and "names" in fg:
            names = store.decode_names(fg["names"][()])
            areas = np.asarray(fg["sum/int"][()], dtype=np.float64)
            sigma = np.asarray(fg["sum/stddev"][()], dtype=np.float64) if "stddev" in fg["sum"] else None
            factor = 1.0
            if int(fg.attrs.get("deadtime_corrected", 0)) and "icr" in raw and "ocr" in raw:
                factor = core_fit.sum_deadtime_factor(raw["icr"][()], raw["ocr"][()])
            try:
                if "cfg_text" not in fg:
                    raise InputError("the fit configuration text (fit/.../cfg_text) is not stored")
                calib = fg["sum"].attrs.get("calibration_keV")
                model, background, engine = sum_model(y, _text(fg["cfg_text"][()]), names, areas / factor,
                                                      None if calib is None else np.asarray(calib))
                said.append("The model curve is rebuilt from the stored configuration, calibration and sum-fit "
                            "areas (the full model curve itself is not stored); the continuum is the SNIP "
                            "background of the configuration.")
            except Exception as exc:  # noqa: BLE001 - a missing model curve must not stop the report
                logger.info("%s: no model curve for %s (%s: %s)", b.path, ch, type(exc).__name__, exc)
                said.append(f"The full model curve is not stored and could not be rebuilt ({exc}): "
                            "the spectrum is shown with the line markers only.")
            for i, n in enumerate(names):
                rows.append([f"<th>{H.esc(n)}</th>", H.num_cell(areas[i] if i < areas.size else np.nan),
                             H.num_cell(sigma[i] if sigma is not None and i < sigma.size else np.nan)])
        else:
            said.append("No fit/ results for this channel: the spectrum is shown without a model.")
        marks = line_markers(names, e0, engine)
        fig = plot_sumspec(energy, y, model=model, background=background, lines=marks,
                           title=f"{b.path.name}: raw/{ch}/sumspec")
        legend = fig.axes[0].get_legend()
        if legend is not None:  # keep the markers near the top right (scatter peaks) readable
            legend.set_loc("lower center")
            legend.set_ncols(3)
        sec.add(f"<h3>{H.esc(ch)}</h3>")
        cap = (f"Sum spectrum of {ch} (black, counts per channel, log scale) against energy from the channel's "
               f"calibration; vertical lines mark the strongest line of each fitted group. " + " ".join(said))
        if model is not None:
            cap += " Red: model; green dashed: continuum; below: residual in units of sqrt(model)."
        sec.add(b.figure(H.figure_png(fig), cap, f"sum spectrum of {ch} with fit"))
        if rows:
            dt = " (dead-time corrected)" if int(fg.attrs.get("deadtime_corrected", 0)) else ""
            sec.add(H.table(["line", "area (counts)", "1σ (counts)"], rows,
                            caption=f"Fitted areas of the sum spectrum, fit/{ch}/sum/int{dt}.",
                            table_id=f"sumfit-{ch}"))
    b.sections.append(sec)


def _detlim(b: _Builder, f: Any) -> None:
    from ..core.plots import plot_detlim

    data = read_detlim(f)
    if not data:
        b.absent.append("detection limits (no detlim/ group: run detlim on a reference measurement)")
        return
    sec = H.Section("detlim", "Detection limits")
    sec.add('<p class="muted">DL = 3 √I<sub>b</sub> / I<sub>p</sub> · c for each line of the reference material, '
            "at the measuring times stored; error bars and ± are 1σ in the table, 3σ in the plot.</p>")
    for cnc, per_ch in data.items():
        for ch, d in per_ch.items():
            sec.add(f"<h3>{H.esc(cnc)} — {H.esc(ch)}</h3>")
            err = d["err"] if np.isfinite(d["err"]).any() else None
            fig = plot_detlim(d["dl"], d["names"], tm=d["times"], dl_err=err, unit=d["unit"])
            sec.add(b.figure(H.figure_png(fig),
                             f"Detection limits of {ch} from reference {cnc} ({d['unit']}, log scale) for "
                             + ", ".join(f"{t:g} s" for t in d["times"]) + ".",
                             f"detection limits {cnc} {ch}", max_width_px=900))
            header = ["line"] + [f"DL {t:g} s ({d['unit']})" for t in d["times"]] + \
                     [f"1σ {t:g} s ({d['unit']})" for t in d["times"]]
            rows = []
            for i, n in enumerate(d["names"]):
                rows.append([f"<th>{H.esc(n)}</th>"] + [H.num_cell(d["dl"][k, i]) for k in range(len(d["times"]))]
                            + [H.num_cell(d["err"][k, i]) for k in range(len(d["times"]))])
            sec.add(H.table(header, rows, caption=f"detlim/{cnc}/{ch}", table_id=f"detlim-{H.slug(cnc)}-{ch}"))
    b.sections.append(sec)


def _quant(b: _Builder, f: Any) -> None:
    chans = [c for c in _channels(f, "quant") if "ims" in f[f"quant/{c}"]]
    if not chans:
        b.absent.append("quantification (no quant/ group: run quantify against a reference)")
        return
    sec = H.Section("quant", "Quantified statistics")
    sec.add('<p class="muted">Statistics over the finite pixels of each quantified image '
            "(masked pixels left out).</p>")
    for ch in chans:
        g = f[f"quant/{ch}"]
        ims = np.asarray(g["ims"][()], dtype=np.float64)
        names = store.decode_names(g["names"][()]) if "names" in g else [f"line{i}" for i in range(len(ims))]
        unit = _unit(g["ims"], g, f["quant"]) or "?"
        rows = []
        for st in quant_statistics(ims, names):
            rows.append([f"<th>{H.esc(st['name'])}</th>", f'<td class="num">{st["n"]}</td>']
                        + [H.num_cell(st[k]) for k in ("min", "median", "mean", "max")]
                        + [f"<td>{H.esc(unit)}</td>"])
        sec.add(f"<h3>{H.esc(ch)}</h3>")
        refs = store.decode_names(g["refs"][()]) if "refs" in g else []
        cap = f"quant/{ch}/ims" + (f"; yields from {', '.join(refs)}" if refs else "")
        sec.add(H.table(["element line", "pixels", "min", "median", "mean", "max", "unit"], rows, caption=cap,
                        table_id=f"quant-{ch}"))
    b.sections.append(sec)


def _params_html(params: Any) -> str:
    if not params:
        return '<span class="muted">none</span>'
    text = json.dumps(params, indent=1, sort_keys=True, default=str)
    n = len(params) if isinstance(params, dict) else 1
    opened = " open" if len(text) < 500 else ""
    return (f"<details{opened}><summary>{n} parameter{'s' if n != 1 else ''}</summary>"
            f"<pre>{H.esc(text)}</pre></details>")


def _provenance(b: _Builder, out: Path) -> None:
    from ..dsl.export import collect_provenance, export_recipe

    sec = H.Section("provenance", "Provenance and recipe")
    records = collect_provenance(b.path)
    if not records:
        b.absent.append("provenance (no group carries a 'step' attribute)")
        return
    rows = []
    for r in records:
        rows.append([f"<td>{H.esc(r.get('step', '?'))}</td>", f"<td><code>{H.esc(r.get('group', ''))}</code></td>",
                     f"<td>{H.esc(r.get('timestamp', ''))}</td>", f"<td>{H.esc(r.get('xrfproc_version', ''))}</td>",
                     f"<td>{_params_html(r.get('parameters'))}</td>"])
    sec.add(H.table(["step", "group", "timestamp (UTC)", "xrfproc", "parameters"], rows,
                    caption="Every processing step recorded in the file, in the order it ran.",
                    table_id="provenance"))
    # the recipe with paths relative to the report's folder (export_recipe takes them from its out file)
    fd, tmp = tempfile.mkstemp(prefix=".xrfproc-recipe-", suffix=".xrf", dir=out.parent)
    os.close(fd)
    try:
        recipe = export_recipe(b.path, out=tmp)
    except XrfError as exc:
        recipe = None
        sec.add(H.note(f"no recipe: {exc}"))
    finally:
        Path(tmp).unlink(missing_ok=True)
    if recipe is not None:
        sec.add("<h3>Recipe</h3>", '<p class="muted">Run with <code>xrfrun RECIPE.xrf</code>; paths are relative '
                "to the folder of this report.</p>", f'<pre id="recipe">{H.esc(recipe)}</pre>')
    b.sections.append(sec)


def _summary(b: _Builder, f: Any) -> H.Section:
    sec = H.Section("summary", "File summary")
    items = [("file", str(b.path.resolve()))]
    try:
        items.append(("size", f"{b.path.stat().st_size / 1e6:.2f} MB (without the bulk spectra)"))
    except OSError:
        pass
    chans = _channels(f, "raw")
    if chans and "spectra" in f[f"raw/{chans[0]}"]:
        try:
            shape = f[f"raw/{chans[0]}/spectra"].shape
            items.append(("grid", f"{' x '.join(map(str, shape[:-1]))} points, {shape[-1]} channels per spectrum"))
        except (KeyError, OSError):
            pass
    items.append(("detector channels", ", ".join(chans) or "none"))
    if "raw" in f and "energy_keV" in f["raw"].attrs:
        items.append(("excitation energy", f"{float(f['raw'].attrs['energy_keV']):g} keV"))
    if "cmd" in f:
        items.append(("scan command", _text(f["cmd"][()])))
    items.append(("groups", ", ".join(k for k in f if hasattr(f[k], "keys")) or "none"))
    sec.add('<dl class="meta">' + "".join(f"<dt>{H.esc(k)}</dt><dd>{H.esc(v)}</dd>" for k, v in items) + "</dl>")
    return sec


# --------------------------------------------------------------------------- the step
def report(h5file: str | Path, out: str | Path | None = None, pix_size_um: float | None = None) -> Path:
    """Write a self-contained HTML report of a processed layout file.

    Parameters
    ----------
    h5file : path
        A layout file (after convert/simulate; the more steps ran, the more the page shows).
    out : path, optional
        The HTML file to write; default ``<file stem>_report.html`` next to the file.
    pix_size_um : float, optional
        Pixel size (µm) for the scale bars; default the motor step along the image columns, read
        as mm.

    Returns
    -------
    Path
        The page written.

    Raises
    ------
    InputError
        The file does not exist or is not a layout file.
    WriteError
        The page cannot be written.
    """
    path = Path(h5file)
    if not path.is_file():
        raise InputError("file not found", path=path)
    target = Path(out) if out is not None else path.with_name(f"{path.stem}_report.html")
    if target.suffix.lower() not in (".html", ".htm"):
        raise InputError("the report is an HTML page: give an out path ending in .html", path=target)
    if not target.parent.is_dir():
        raise InputError("the folder for the report does not exist", path=target.parent)
    b = _Builder(path, pix_size_um)
    with tempfile.TemporaryDirectory(prefix="xrfproc-report-") as tmp:
        with store.open_read(path) as f:  # overview_images opens it read-only once more: h5py allows that
            summary = _summary(b, f)
            b.sections.append(summary)
            _maps(b, f, Path(tmp))
            _spectra(b, f)
            _detlim(b, f)
            _quant(b, f)
        _provenance(b, target)
    if b.absent:
        summary.add('<p class="note"><b>Not in this file:</b> ' + "; ".join(H.esc(a) for a in b.absent) + ".</p>")
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    page = H.render_page(f"XRF report: {path.name}",
                         [str(path.resolve()), f"made {now} by xrfproc {__version__}"],
                         b.sections, f"xrfproc {__version__} · {path.name} · self-contained page, no external "
                                     "resources")
    tmp_target = target.with_name(f".{target.name}.part")
    try:
        tmp_target.write_text(page, encoding="utf-8")
        os.replace(tmp_target, target)
    except OSError as exc:
        tmp_target.unlink(missing_ok=True)
        raise WriteError(f"cannot write the report ({exc.strerror})", path=target) from None
    logger.info("wrote %s (%d figures, %d sections)", target, b.figures, len(b.sections))
    return target
