"""Element images: collated overview figures with colour and scale bars, RGB overlays.

Figures are built on matplotlib's object API with the non-interactive Agg canvas (never
``pyplot``), so nothing opens a window and nothing touches global figure state; save them with
``fig.savefig(...)``. Image arrays are (rows, cols) with row 0 at the top, as ``imshow`` draws them.
"""
from __future__ import annotations

import logging
import math
from typing import Sequence

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from ..errors import InputError

log = logging.getLogger(__name__)

SCALEBAR_GID = "scalebar"


def new_figure(width_in: float, height_in: float, dpi: int = 150) -> Figure:
    """A figure with an Agg canvas attached (savefig and draw work without pyplot)."""
    fig = Figure(figsize=(width_in, height_in), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def prepare_image(image: np.ndarray, log_scale: bool = False, sqrt: bool = False, rotate: int = 0,
                  fliph: bool = False) -> np.ndarray:
    """Orient and scale one image for display.

    Parameters
    ----------
    image : ndarray, shape (rows, cols)
    log_scale : bool
        log10 of the values; values <= 0 become NaN (drawn as masked).
    sqrt : bool
        Square root of the values (negative values clipped to 0).
    rotate : int
        Degrees counter-clockwise, rounded to the nearest multiple of 90 (as ``numpy.rot90``).
    fliph : bool
        Mirror left-right, after the rotation.
    """
    im = np.asarray(image, dtype=np.float64)
    if im.ndim == 1:
        im = im[None, :]
    if im.ndim != 2:
        raise InputError(f"an image must be 2-D (rows, cols), got shape {im.shape}")
    if log_scale and sqrt:
        raise InputError("choose either log or sqrt scaling, not both")
    if log_scale:
        with np.errstate(divide="ignore", invalid="ignore"):
            im = np.where(im > 0, np.log10(np.where(im > 0, im, 1.0)), np.nan)
    elif sqrt:
        im = np.sqrt(np.clip(im, 0.0, None))
    k = int(round(rotate / 90.0)) % 4
    if k:
        im = np.rot90(im, k)
    if fliph:
        im = im[:, ::-1]
    return im


def color_limits(image: np.ndarray, clim: Sequence[float] | None) -> tuple[float | None, float | None]:
    """Display limits: ``min + clim[0] * (max - min)`` .. ``min + clim[1] * (max - min)`` (None: full range)."""
    finite = image[np.isfinite(image)]
    if finite.size == 0:
        return None, None
    lo, hi = float(finite.min()), float(finite.max())
    if clim is None:
        return lo, hi
    if len(clim) != 2 or not 0.0 <= clim[0] < clim[1] <= 1.0:
        raise InputError(f"clim must be two fractions 0 <= low < high <= 1, got {clim}")
    return lo + clim[0] * (hi - lo), lo + clim[1] * (hi - lo)


def nice_length(target: float) -> float:
    """The 1-2-5 series value closest below ``target`` (for default scale bar lengths)."""
    if not np.isfinite(target) or target <= 0:
        return 1.0
    exp = math.floor(math.log10(target))
    for m in (5.0, 2.0, 1.0):
        if m * 10**exp <= target:
            return m * 10**exp
    return 10**exp


def scale_bar_pixels(scale_bar_um: float, pix_size_um: float) -> float:
    """Length of a scale bar in image pixels."""
    if pix_size_um <= 0 or scale_bar_um <= 0:
        raise InputError(f"pixel size and scale bar length must be positive, got {pix_size_um}, {scale_bar_um} um")
    return scale_bar_um / pix_size_um


def _format_um(um: float) -> str:
    if um >= 1000:
        return f"{um / 1000:g} mm"
    return f"{um:g} µm"


def add_scale_bar(ax, shape: tuple[int, int], scale_bar_um: float, pix_size_um: float, color: str = "white") -> Rectangle:
    """Draw a scale bar in the lower left corner of an image axis (data coordinates = pixels)."""
    rows, cols = shape
    length = scale_bar_pixels(scale_bar_um, pix_size_um)
    height = max(rows * 0.025, 0.35)
    x0, y0 = cols * 0.05 - 0.5, rows * 0.93 - 0.5
    bar = Rectangle((x0, y0 - height), length, height, facecolor=color, edgecolor="black", linewidth=0.4,
                    gid=SCALEBAR_GID, zorder=5)
    ax.add_patch(bar)
    ax.text(x0 + length / 2, y0 - height * 1.6, _format_um(scale_bar_um), color=color, ha="center", va="bottom",
            fontsize=7, fontweight="bold", zorder=6,
            path_effects=_outline())
    return bar


def _outline():
    from matplotlib import patheffects

    return [patheffects.withStroke(linewidth=1.5, foreground="black")]


def overview_figure(images: np.ndarray, names: Sequence[str], ncols: int = 4, pix_size_um: float = 1.0,
                    scale_bar_um: float | None = None, log: bool = False, sqrt: bool = False, rotate: int = 0,
                    fliph: bool = False, clim: Sequence[float] | None = None, cmap: str = "viridis",
                    title: str | None = None, unit: str | None = None, discrete: bool = False,
                    panel_in: float = 2.6) -> Figure:
    """All images of a stack on one collated figure, each with its title, colour bar and scale bar.

    Parameters
    ----------
    images : ndarray, shape (n, rows, cols) or (rows, cols)
        The images (e.g. ``norm/channel00/ims``); NaN pixels are drawn light grey.
    names : sequence of str
        One title per image.
    ncols : int
        Panels per row of the figure.
    pix_size_um : float
        Pixel size along the image's horizontal axis (µm).
    scale_bar_um : float, optional
        Scale bar length (µm); default a 1-2-5 value near a fifth of the image width.
    log, sqrt, rotate, fliph
        See :func:`prepare_image`.
    clim : (low, high), optional
        Fractions of each image's range shown by the colour scale.
    cmap : str
        A matplotlib colour map name.
    title : str, optional
        Figure title.
    unit : str, optional
        Colour bar label.
    discrete : bool
        Integer class images (K-means labels): a qualitative colour map with one tick per class,
        negative labels masked.

    Returns
    -------
    matplotlib.figure.Figure
        With one image axis per panel (``fig.panel_axes``) in the order of ``names``.
    """
    from mpl_toolkits.axes_grid1 import make_axes_locatable

    stack = np.asarray(images, dtype=np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    if stack.ndim != 3:
        raise InputError(f"an image stack must be (n, rows, cols), got shape {stack.shape}")
    names = list(names)
    if len(names) != stack.shape[0]:
        raise InputError(f"{len(names)} names for {stack.shape[0]} images")
    try:
        base_cmap = colormaps[cmap]
    except KeyError:
        raise InputError(f"unknown colour map {cmap!r}") from None
    n = stack.shape[0]
    ncols = max(1, min(int(ncols), n))
    nrows = math.ceil(n / ncols)
    prepared = [prepare_image(im, log and not discrete, sqrt and not discrete, rotate, fliph) for im in stack]
    rows, cols = prepared[0].shape
    aspect = rows / max(cols, 1)
    panel_w = panel_in
    panel_h = panel_in * min(max(aspect, 0.15), 4.0)
    cell_w, cell_h = panel_w * 1.32, panel_h + 0.45
    head = 0.45 if title else 0.1
    fig = new_figure(cell_w * ncols + 0.2, cell_h * nrows + head)
    if scale_bar_um is None:
        scale_bar_um = nice_length(cols * pix_size_um / 5.0)
    fig.panel_axes = []  # type: ignore[attr-defined]
    W, H = fig.get_size_inches()
    for i, (im, name) in enumerate(zip(prepared, names)):
        r, c = divmod(i, ncols)
        left = (0.1 + c * cell_w) / W
        bottom = (H - head - (r + 1) * cell_h + 0.1) / H
        ax = fig.add_axes((left, bottom, panel_w / W, panel_h / H))
        if discrete:
            finite = im[np.isfinite(im)]
            k = int(finite.max()) + 1 if finite.size else 1
            qual = colormaps["tab10" if k <= 10 else "tab20"]
            cm = ListedColormap([qual(j % qual.N) for j in range(k)]).with_extremes(bad="lightgrey")
            shown = np.where(im >= 0, im, np.nan)
            art = ax.imshow(shown, cmap=cm, norm=BoundaryNorm(np.arange(-0.5, k + 0.5), k), interpolation="nearest")
        else:
            cm = base_cmap.with_extremes(bad="lightgrey")
            vmin, vmax = color_limits(im, clim)
            art = ax.imshow(im, cmap=cm, vmin=vmin, vmax=vmax, interpolation="nearest")
        ax.set_title(name + (" (log)" if log and not discrete else " (sqrt)" if sqrt and not discrete else ""),
                     fontsize=9, pad=3)
        ax.set_xticks([])
        ax.set_yticks([])
        add_scale_bar(ax, im.shape, scale_bar_um, pix_size_um)
        cax = make_axes_locatable(ax).append_axes("right", size="5%", pad=0.04)
        cb = fig.colorbar(art, cax=cax)
        if discrete:
            cb.set_ticks(np.arange(int(np.nanmax(np.where(im >= 0, im, np.nan)) if np.isfinite(im).any() else 0) + 1))
        cb.ax.tick_params(labelsize=6, length=2)
        cb.formatter.set_powerlimits((-2, 3))
        cb.ax.yaxis.get_offset_text().set_fontsize(6)
        if unit:
            cb.set_label(unit, fontsize=6)
        fig.panel_axes.append(ax)  # type: ignore[attr-defined]
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.12 / H, va="top")
    return fig


def rgb_image(red: np.ndarray, green: np.ndarray, blue: np.ndarray, percentiles: tuple[float, float] = (1.0, 99.0)
              ) -> np.ndarray:
    """Three element images combined into one RGB image.

    Each channel is scaled linearly from its ``percentiles[0]`` to its ``percentiles[1]``
    percentile onto 0..1 (clipped); NaN pixels become 0 (black).

    Returns
    -------
    ndarray, shape (rows, cols, 3), float in 0..1
    """
    chans = [np.asarray(c, dtype=np.float64) for c in (red, green, blue)]
    if any(c.shape != chans[0].shape or c.ndim != 2 for c in chans):
        raise InputError(f"the three images must be 2-D and of the same shape, got {[c.shape for c in chans]}")
    out = np.zeros(chans[0].shape + (3,))
    for k, c in enumerate(chans):
        finite = c[np.isfinite(c)]
        if finite.size == 0:
            continue
        lo, hi = np.percentile(finite, percentiles)
        if hi <= lo:
            hi = lo + 1.0 if hi == 0 else lo + abs(hi)
        out[..., k] = np.clip((np.nan_to_num(c, nan=lo) - lo) / (hi - lo), 0.0, 1.0)
    return out


def plot_rgb(red: np.ndarray, green: np.ndarray, blue: np.ndarray, names: Sequence[str], pix_size_um: float = 1.0,
             scale_bar_um: float | None = None, percentiles: tuple[float, float] = (1.0, 99.0),
             title: str | None = None) -> Figure:
    """An RGB overlay of three element images with a colour legend and a scale bar."""
    rgb = rgb_image(red, green, blue, percentiles)
    rows, cols = rgb.shape[:2]
    fig = new_figure(4.5, 4.5 * min(max(rows / cols, 0.2), 3.0) + 0.6)
    ax = fig.add_axes((0.04, 0.1, 0.92, 0.8))
    ax.imshow(rgb, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    add_scale_bar(ax, (rows, cols), scale_bar_um or nice_length(cols * pix_size_um / 5.0), pix_size_um)
    for k, (name, col) in enumerate(zip(names, ("red", "lime", "deepskyblue"))):
        fig.text(0.2 + 0.3 * k, 0.03, name, color=col, ha="center", fontsize=10, fontweight="bold",
                 path_effects=_outline())
    if title:
        ax.set_title(title, fontsize=10)
    return fig


__all__ = ["new_figure", "prepare_image", "color_limits", "nice_length", "scale_bar_pixels", "add_scale_bar",
           "overview_figure", "rgb_image", "plot_rgb", "SCALEBAR_GID"]
