"""The imaging step: collated overview PNGs (and optional TIFFs) of any image group of a layout file."""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import store
from ..core import imaging
from ..errors import InputError, LayoutError

logger = logging.getLogger(__name__)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-") or "line"


def _panels(f, top: str, ch: str) -> tuple[np.ndarray, list[str], bool, str | None]:
    """Images, titles, whether they are class labels, and the colour-bar unit of ``top/ch``."""
    g = store.require(f, f"{top}/{ch}", "group")
    ims = np.asarray(store.require(g, "ims")[()])
    discrete = top.lower() == "kmeans"
    if discrete:
        labels = ims if ims.ndim >= 2 else ims[None]
        stack = labels.astype(np.float64)[None] if labels.ndim == 2 else labels.astype(np.float64)
        n = int(g["nclusters"][()]) if "nclusters" in g else int(labels.max()) + 1
        src = store.decode_names(g["data_dir_clustered"][()])[0] if "data_dir_clustered" in g else top
        return stack, [f"K-means, {n} clusters"] * stack.shape[0], True, f"cluster of {src}"
    stack = ims.astype(np.float64)
    if stack.ndim == 2:
        stack = stack[None]
    names = store.decode_names(g["names"][()]) if "names" in g else [f"line{i}" for i in range(stack.shape[0])]
    if len(names) != stack.shape[0]:
        logger.warning("%s/%s: %d names for %d images; numbering them", top, ch, len(names), stack.shape[0])
        names = [f"line{i}" for i in range(stack.shape[0])]
    if top == "PCA" and "RVE" in g:
        rve = np.asarray(g["RVE"][()])
        names = [f"{n} ({100 * r:.1f} %)" for n, r in zip(names, rve)]
    unit = None
    for holder in (g.get("ims"), g, f[top]):
        if holder is not None and "unit" in holder.attrs:
            u = holder.attrs["unit"]
            unit = u.decode() if isinstance(u, bytes) else str(u)
            break
    return stack, names, False, unit


def overview_images(h5file: str | Path, datadir: str = "norm", ncols: int = 4, pix_size_um: float = 1.0,
                    scale_bar_um: float | None = None, log: bool = False, sqrt: bool = False, rotate: int = 0,
                    fliph: bool = False, clim: Sequence[float] | None = None, cmap: str = "viridis",
                    channel: str | None = None, out: str | Path | None = None, tiff: bool = False) -> list[Path]:
    """Write one collated overview PNG per detector channel of ``datadir`` (and optional TIFFs).

    Parameters
    ----------
    h5file : path
        A layout file.
    datadir : str
        The image group: ``"norm"``, ``"quant"``, ``"fit"``, ``"tomo"``, ``"kmeans"``, ``"PCA"``,
        ``"rel_dif"`` (or one channel of it, ``"norm/channel01"``).
    ncols : int
        Panels per row.
    pix_size_um : float
        Pixel size along the horizontal image axis (µm).
    scale_bar_um : float, optional
        Scale bar length (µm); default a 1-2-5 value near a fifth of the image width.
    log, sqrt : bool
        Show log10 or square-root intensities (not for K-means labels).
    rotate, fliph
        Rotation (degrees, multiple of 90) and horizontal mirror, as ``numpy.rot90`` / ``fliplr``.
    clim : (low, high), optional
        Colour scale limits as fractions of each image's range.
    cmap : str
        Colour map name (K-means labels always use a qualitative map).
    channel : str, optional
        Only this channel (``"channel00"``, or ``"I1"`` for ``tomo``).
    out : path, optional
        Folder for the images; default next to ``h5file``.
    tiff : bool
        Also write one float32 TIFF per image with the real values (oriented as the PNG, unscaled).

    Returns
    -------
    list of Path
        The PNG files (one per channel), then the TIFF files.
    """
    path = Path(h5file)
    key = datadir.strip("/")
    if key.endswith("/ims"):
        key = key[:-4]
    top, _, sub = key.partition("/")
    if sub:
        channel = sub
    folder = Path(out) if out is not None else path.parent
    folder.mkdir(parents=True, exist_ok=True)
    pngs: list[Path] = []
    tiffs: list[Path] = []
    scaling = "_log" if log else "_sqrt" if sqrt else ""
    with store.open_read(path) as f:
        g = store.require(f, top, "group")
        chans = [channel] if channel else sorted(k for k in g if k.startswith("channel") or k == "I1")
        if not chans:
            raise LayoutError(f"no channelXX group in {top}/", path=path, dataset=top)
        for ch in chans:
            stack, names, discrete, unit = _panels(f, top, ch)
            fig = imaging.overview_figure(stack, names, ncols=ncols, pix_size_um=pix_size_um,
                                          scale_bar_um=scale_bar_um, log=log, sqrt=sqrt, rotate=rotate, fliph=fliph,
                                          clim=clim, cmap=cmap, title=f"{path.name}: {top}/{ch}",
                                          unit=None if log or sqrt else unit, discrete=discrete)
            png = folder / f"{path.stem}_{top}_{ch}{scaling}_overview.png"
            try:
                fig.savefig(png, dpi=150, facecolor="white")
            except OSError as exc:
                raise InputError(f"cannot write {png} ({exc.strerror})", path=png) from None
            pngs.append(png)
            logger.info("wrote %s (%d panels)", png, stack.shape[0])
            if tiff:
                tiffs.extend(_write_tiffs(folder, f"{path.stem}_{top}_{ch}", stack, names, rotate, fliph))
    return pngs + tiffs


def _write_tiffs(folder: Path, prefix: str, stack: np.ndarray, names: Sequence[str], rotate: int,
                 fliph: bool) -> list[Path]:
    import tifffile

    written = []
    for i, (im, name) in enumerate(zip(stack, names)):
        arr = imaging.prepare_image(im, rotate=rotate, fliph=fliph).astype(np.float32)
        target = folder / f"{prefix}_{i:02d}_{_safe(name.split(' (')[0])}.tif"
        tifffile.imwrite(target, arr, metadata={"name": name})
        written.append(target)
    return written


__all__ = ["overview_images"]


def correlation_plot(h5file: str | Path, datadir: str = "norm", channel: str | None = None,
                     elements: Sequence[str] | None = None, out: str | Path | None = None) -> Path:
    """Correlation matrix plot (:func:`xrfproc.core.plots.plot_correl`) of the lines of one channel.

    Parameters
    ----------
    datadir : str
        Group holding ``channelXX/{ims, names}`` (``norm``, ``quant``, ``fit``, ``tomo``).
    channel : str, optional
        Default the first channel of ``datadir``.
    elements : list of str, optional
        Line names (``"Fe K"``) or element symbols (``"Fe"``: all its lines); default every line
        except the scatter peaks.
    out : path, optional
        PNG to write; default ``<file stem>_<datadir>_<channel>_correlation.png`` next to the file.

    Returns
    -------
    Path
        The PNG written.
    """
    from ..core.plots import plot_correl

    path = Path(h5file)
    with store.open_read(path) as f:
        ch = channel or (store.channels(f, datadir) or [None])[0]
        if ch is None:
            raise LayoutError(f"no channelXX in {datadir}/", path=path, dataset=datadir)
        stack, names, discrete, _ = _panels(f, datadir, ch)
    if discrete:
        raise InputError(f"{datadir} holds cluster labels, not intensities: nothing to correlate", path=path)
    if elements:
        wanted = [i for i, n in enumerate(names) if n in elements or n.split()[0] in elements]
        missing = [e for e in elements if not any(n == e or n.split()[0] == e for n in names)]
        if missing:
            raise InputError(f"{', '.join(missing)} not among the lines of {datadir}/{ch}: {', '.join(names)}",
                             path=path)
    else:  # every line that varies, scatter peaks left out
        wanted = [i for i, n in enumerate(names)
                  if n not in ("Rayl", "Compt") and np.isfinite(stack[i]).any() and np.nanstd(stack[i]) > 0]
    if len(wanted) < 2:
        raise InputError(f"a correlation plot needs at least two lines, {datadir}/{ch} gives {len(wanted)}", path=path)
    out = Path(out) if out is not None else path.with_name(f"{path.stem}_{_safe(datadir)}_{ch}_correlation.png")
    data = np.moveaxis(stack[wanted], 0, -1)
    plot_correl(data, [names[i] for i in wanted], save=out)
    return out
