"""Plots people look at first: correlation matrix, detection limits, sum spectrum with its fit.

All functions return a :class:`matplotlib.figure.Figure` (Agg canvas, no pyplot, never shown) and
save it when ``save`` is given.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
from scipy import stats as sps

from ..errors import InputError
from .imaging import new_figure

log = logging.getLogger(__name__)


@dataclass
class CorrelStats:
    """Least-squares line ``y = slope x + intercept`` with R2, and Pearson's r with its p value."""

    slope: float
    intercept: float
    r2: float
    pearson_r: float
    p_value: float
    n: int

    @property
    def stars(self) -> str:
        """``***`` p < 0.001, ``**`` p < 0.01, ``*`` p < 0.05, else empty."""
        return "***" if self.p_value < 1e-3 else "**" if self.p_value < 1e-2 else "*" if self.p_value < 0.05 else ""


def correl_stats(x: np.ndarray, y: np.ndarray) -> CorrelStats:
    """Linear least squares of ``y`` on ``x`` and Pearson's correlation over the finite pairs."""
    x = np.asarray(x, dtype=np.float64).ravel()
    y = np.asarray(y, dtype=np.float64).ravel()
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return CorrelStats(np.nan, np.nan, np.nan, np.nan, np.nan, int(x.size))
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    r2 = 1.0 - np.sum(resid**2) / np.sum((y - y.mean()) ** 2)
    r, p = sps.pearsonr(x, y)
    return CorrelStats(float(slope), float(intercept), float(r2), float(r), float(p), int(x.size))


def _confidence_band(x: np.ndarray, y: np.ndarray, st: CorrelStats, grid: np.ndarray) -> np.ndarray:
    """Half width of the 95 % confidence band of the fitted line at ``grid``."""
    n = x.size
    resid = y - (st.slope * x + st.intercept)
    s = np.sqrt(np.sum(resid**2) / max(n - 2, 1))
    sxx = np.sum((x - x.mean()) ** 2)
    return sps.t.ppf(0.975, max(n - 2, 1)) * s * np.sqrt(1.0 / n + (grid - x.mean()) ** 2 / sxx)


def plot_correl(data: np.ndarray, names: Sequence[str], elements: Sequence[int] | None = None,
                save: str | Path | None = None, max_points: int = 5000, seed: int = 0):
    """Correlation matrix plot of element images.

    Above the diagonal: scatter plots with the least-squares line, its 95 % confidence band and R2;
    on the diagonal: histograms; below: kernel density estimates with Pearson's r and significance
    stars (``***`` p < 0.001, ``**`` < 0.01, ``*`` < 0.05).

    Parameters
    ----------
    data : ndarray, shape (..., n_elements)
        Values per point, the element axis last (e.g. ``np.moveaxis(ims, 0, -1)``).
    names : sequence of str
        One per element.
    elements : sequence of int, optional
        Indices to include; default all.
    save : path, optional
        Write the figure there (PNG, PDF, SVG by extension).
    max_points : int
        Points drawn per scatter plot (a seeded random subset; statistics use all points).

    Returns
    -------
    (Figure, dict)
        The figure and ``{(x name, y name): CorrelStats}`` for every scatter panel above the
        diagonal (row i is y, column j > i is x; the line regresses y on x).
    """
    arr = np.asarray(data, dtype=np.float64)
    names = list(names)
    if arr.shape[-1] != len(names):
        raise InputError(f"{len(names)} names for {arr.shape[-1]} elements (element axis last)")
    ids = list(range(len(names))) if elements is None else [int(i) for i in elements]
    if len(ids) < 2:
        raise InputError("a correlation plot needs at least two elements")
    table = arr.reshape(-1, arr.shape[-1])[:, ids]
    labels = [names[i] for i in ids]
    k = len(ids)
    size = min(1.8 * k, 16.0)
    fig = new_figure(size, size)
    axes = fig.subplots(k, k, squeeze=False)
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.08, top=0.97, wspace=0.08, hspace=0.08)
    rng = np.random.default_rng(seed)
    results: dict[tuple[str, str], CorrelStats] = {}
    for i in range(k):
        for j in range(k):
            ax = axes[i, j]
            x, y = table[:, j], table[:, i]
            ok = np.isfinite(x) & np.isfinite(y)
            if i == j:
                ax.hist(x[np.isfinite(x)], bins=30, color="0.4")
                ax.set_yticks([])
            elif i < j:  # upper: scatter with fit
                st = correl_stats(x, y)
                results[(labels[j], labels[i])] = st
                sel = np.flatnonzero(ok)
                if sel.size > max_points:
                    sel = rng.choice(sel, max_points, replace=False)
                ax.scatter(x[sel], y[sel], s=2, alpha=0.4, color="tab:blue", edgecolors="none")
                if np.isfinite(st.slope):
                    grid = np.linspace(x[ok].min(), x[ok].max(), 50)
                    fit = st.slope * grid + st.intercept
                    band = _confidence_band(x[ok], y[ok], st, grid)
                    ax.fill_between(grid, fit - band, fit + band, color="0.6", alpha=0.5, lw=0)
                    ax.plot(grid, fit, "k--", lw=1)
                    ax.text(0.04, 0.92, f"R² = {st.r2:.2f}", transform=ax.transAxes, fontsize=7, va="top")
            else:  # lower: density and Pearson r
                st = correl_stats(x, y)
                _kde(ax, x[ok], y[ok])
                if np.isfinite(st.pearson_r):
                    ax.text(0.5, 0.5, f"r = {st.pearson_r:.2f}{st.stars}", transform=ax.transAxes, fontsize=8,
                            ha="center", va="center", bbox={"facecolor": "white", "alpha": 0.7, "lw": 0})
            ax.tick_params(labelsize=6, length=2)
            if i < k - 1:
                ax.set_xticklabels([])
            else:
                ax.set_xlabel(labels[j], fontsize=8)
            if j > 0 and i != j:
                ax.set_yticklabels([])
            elif j == 0:
                ax.set_ylabel(labels[i], fontsize=8)
    if save is not None:
        fig.savefig(save, dpi=150, facecolor="white")
    return fig, results


def _kde(ax, x: np.ndarray, y: np.ndarray, n: int = 40) -> None:
    if x.size < 5 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return
    sub = x.size > 3000
    idx = np.random.default_rng(0).choice(x.size, 3000, replace=False) if sub else slice(None)
    try:
        kde = sps.gaussian_kde(np.vstack([x[idx], y[idx]]))
    except (np.linalg.LinAlgError, ValueError):
        return
    gx, gy = np.meshgrid(np.linspace(x.min(), x.max(), n), np.linspace(y.min(), y.max(), n))
    ax.contourf(gx, gy, kde(np.vstack([gx.ravel(), gy.ravel()])).reshape(gx.shape), levels=8, cmap="Blues")


def plot_detlim(dl: np.ndarray, el_names: Sequence[str], tm: Sequence[float] | None = None,
                ref: Sequence[str] | None = None, dl_err: np.ndarray | None = None, bar: bool = False,
                save: str | Path | None = None, unit: str = "ppm"):
    """Detection limits per line, log scale, with 3-sigma error bars.

    Parameters
    ----------
    dl : ndarray, shape ([n_ref, ][n_tm, ]n_lines)
        Detection limits.
    el_names : sequence of str
        Line names (``"Fe K"``), one per value along the last axis; ordered by Z on the x axis.
    tm : sequence of float, optional
        Measuring times (s) along the ``n_tm`` axis.
    ref : sequence of str, optional
        Reference material names along the ``n_ref`` axis.
    dl_err : ndarray, optional
        1-sigma absolute errors, the shape of ``dl`` (drawn as 3 sigma).
    bar : bool
        Bars instead of markers.
    """
    d = np.asarray(dl, dtype=np.float64)
    names = list(el_names)
    if d.shape[-1] != len(names):
        raise InputError(f"{len(names)} names for {d.shape[-1]} detection limits")
    err = None if dl_err is None else np.asarray(dl_err, dtype=np.float64)
    if err is not None and err.shape != d.shape:
        raise InputError(f"dl_err shape {err.shape} differs from dl shape {d.shape}")
    nref = d.shape[0] if d.ndim == 3 else (len(ref) if ref is not None and d.ndim == 2 and tm is None else 1)
    d3 = d.reshape(nref, -1, d.shape[-1]) if d.ndim > 1 else d[None, None]
    e3 = None if err is None else err.reshape(d3.shape)
    ntm = d3.shape[1]
    refs = list(ref) if ref is not None else [""] * nref
    tms = list(tm) if tm is not None else [None] * ntm
    x = np.arange(len(names))
    fig = new_figure(max(5.0, 0.45 * len(names) + 2.0), 4.0)
    ax = fig.add_axes((0.12, 0.2, 0.84, 0.72))
    nser = nref * ntm
    width = 0.8 / nser
    markers = "osD^v<>p"
    s = 0
    for r in range(nref):
        for t in range(ntm):
            label = " ".join(p for p in (refs[r] if r < len(refs) else "", f"{tms[t]:g} s" if tms[t] is not None else "") if p)
            y = d3[r, t]
            yerr = None if e3 is None else 3 * e3[r, t]
            if bar:
                ax.bar(x - 0.4 + width * (s + 0.5), y, width, yerr=yerr, label=label or None, capsize=2)
            else:
                ax.errorbar(x + (s - (nser - 1) / 2) * 0.08, y, yerr=yerr, fmt=markers[s % len(markers)], ms=5,
                            capsize=2, label=label or None, lw=1)
            s += 1
    ax.set_yscale("log")
    ax.set_xticks(x, names, rotation=60, fontsize=8)
    ax.set_ylabel(f"Detection limit ({unit})")
    ax.grid(axis="y", which="both", alpha=0.3)
    if any(h.get_label() and not h.get_label().startswith("_") for h in ax.get_legend_handles_labels()[0]):
        ax.legend(fontsize=7)
    if save is not None:
        fig.savefig(save, dpi=150, facecolor="white")
    return fig


def plot_sumspec(energy_keV: np.ndarray, spectrum: np.ndarray, model: np.ndarray | None = None,
                 background: np.ndarray | None = None, lines: Mapping[str, float] | None = None,
                 title: str | None = None, log: bool = True, save: str | Path | None = None):
    """Sum spectrum with the fitted model, the residual below it and line markers.

    Parameters
    ----------
    energy_keV : ndarray, shape (nbins,)
    spectrum : ndarray, shape (nbins,)
        Measured sum spectrum (counts).
    model, background : ndarray, optional
        Fitted model and continuum, same shape.
    lines : dict of str to float, optional
        Line labels and energies (keV) to mark.
    """
    e = np.asarray(energy_keV, dtype=np.float64)
    y = np.asarray(spectrum, dtype=np.float64)
    if e.shape != y.shape:
        raise InputError(f"energy axis {e.shape} and spectrum {y.shape} differ")
    fig = new_figure(9.0, 5.0)
    has_res = model is not None
    ax = fig.add_axes((0.09, 0.32 if has_res else 0.1, 0.88, 0.6 if has_res else 0.82))
    ax.plot(e, y, color="k", lw=0.8, label="data")
    if model is not None:
        ax.plot(e, model, color="tab:red", lw=1.0, label="fit")
    if background is not None:
        ax.plot(e, background, color="tab:green", lw=0.8, ls="--", label="continuum")
    if log:
        ax.set_yscale("log")
        pos = y[y > 0]
        ax.set_ylim(max(pos.min() if pos.size else 1.0, 0.5), (pos.max() if pos.size else 10.0) * 3)
    ax.set_xlim(e.min(), e.max())
    ax.set_ylabel("Counts")
    ax.legend(fontsize=8, loc="upper right")
    if title:
        ax.set_title(title, fontsize=10)
    if lines:
        top = ax.get_ylim()[1]
        for k, (name, en) in enumerate(sorted(lines.items(), key=lambda kv: kv[1])):
            if e.min() <= en <= e.max():
                ax.axvline(en, color="tab:blue", lw=0.5, alpha=0.5)
                ax.text(en, top / (1.6 if k % 2 else 3.5) if log else top * (0.95 if k % 2 else 0.88), name,
                        rotation=90, fontsize=7, ha="center", va="top", color="tab:blue",
                        bbox={"facecolor": "white", "alpha": 0.8, "lw": 0, "pad": 1})
    if has_res:
        ax.tick_params(labelbottom=False)
        rax = fig.add_axes((0.09, 0.1, 0.88, 0.2), sharex=ax)
        with np.errstate(divide="ignore", invalid="ignore"):
            res = (y - np.asarray(model)) / np.sqrt(np.clip(np.asarray(model), 1.0, None))
        rax.plot(e, res, color="0.3", lw=0.6)
        rax.axhline(0, color="tab:red", lw=0.8)
        rax.set_ylabel("(data-fit)/σ", fontsize=8)
        rax.set_xlabel("Energy (keV)")
    else:
        ax.set_xlabel("Energy (keV)")
    if save is not None:
        fig.savefig(save, dpi=150, facecolor="white")
    return fig


__all__ = ["CorrelStats", "correl_stats", "plot_correl", "plot_detlim", "plot_sumspec"]
