"""The statistics steps: K-means clustering and PCA of an image stack of a layout file.

``kmeans`` writes ``kmeans/channelXX/{ims, nclusters, data_dir_clustered, el_id, centers, npixels,
sumspec_0..N}``; ``pca`` writes ``PCA/channelXX/{ims, names, RVE, loadings, el_id, nclusters}``
(and, with ``kmeans=True``, the K-means clusters of the PC scores in ``kmeans/channelXX``).
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from .. import store
from ..core import stats as core_stats
from ..errors import InputError, LayoutError
from ..progress import ProgressCallback, report

log = logging.getLogger(__name__)


def resolve_stacks(f: h5py.File, datadir: str, channel: str | None = None) -> list[tuple[str, str]]:
    """The image stacks a step works on: ``[(channel, "group/channelXX/ims"), ...]``.

    ``datadir`` is a group of the layout (``"norm"``, ``"quant"``, ``"tomo"``), one channel of it
    (``"norm/channel02"``) or its image dataset (``"norm/channel02/ims"``, as the original took).
    """
    key = datadir.strip("/")
    if key.endswith("/ims"):
        key = key[: -len("/ims")]
    parts = key.split("/")
    if parts[-1].startswith("channel") or parts[-1] == "I1":
        if channel is not None and channel != parts[-1]:
            raise InputError(f"datadir {datadir!r} names {parts[-1]} but channel={channel!r}", path=f.filename)
        store.require(f, f"{key}/ims")
        return [(parts[-1], f"{key}/ims")]
    chans = [channel] if channel else store.channels(f, key)
    if not chans:
        raise LayoutError(f"no channelXX group in {key}/", path=f.filename, dataset=key)
    for c in chans:
        store.require(f, f"{key}/{c}/ims")
    return [(c, f"{key}/{c}/ims") for c in chans]


def stack_names(f: h5py.File, ims_path: str, n: int) -> list[str]:
    """Line names of an image stack (``names`` next to ``ims``), or ``line0 ..`` when it has none."""
    parent = ims_path.rsplit("/", 1)[0]
    if f"{parent}/names" in f:
        names = store.decode_names(f[f"{parent}/names"][()])
        if len(names) == n:
            return names
        log.warning("%s/names has %d entries for %d images; numbering them instead", parent, len(names), n)
    return [f"line{i}" for i in range(n)]


def select_elements(names: Sequence[str], elements: Sequence[Any] | None, where: str = "") -> list[int]:
    """Indices of ``elements`` in ``names``.

    Each element is an index, an exact line name (``"Fe K"``) or an element symbol (``"Fe"``: every
    line of that element). None selects everything.
    """
    if elements is None:
        return list(range(len(names)))
    if isinstance(elements, (str, int, np.integer)):
        elements = [elements]
    out: list[int] = []
    for e in elements:
        if isinstance(e, (int, np.integer)):
            if not -len(names) <= int(e) < len(names):
                raise InputError(f"element index {e} out of range for {len(names)} lines", dataset=where or None)
            hits = [int(e) % len(names)]
        elif e in names:
            hits = [names.index(e)]
        else:
            hits = [i for i, n in enumerate(names) if n.split()[0] == str(e) or n.replace("-", " ").split()[0] == str(e)]
        if not hits:
            raise InputError(f"no line {e!r} among {names}", dataset=where or None)
        out.extend(h for h in hits if h not in out)
    return out


def _read_stack(path: Path, ims_path: str) -> tuple[np.ndarray, list[str]]:
    with store.open_read(path) as f:
        ims = np.asarray(f[ims_path][()], dtype=np.float64)
        if ims.ndim == 2 and ims_path.startswith("kmeans"):
            ims = ims[None]
        names = stack_names(f, ims_path, ims.shape[0])
    return ims, names


def _raw_labels(path: Path, labels: np.ndarray, datadir: str, channel: str) -> tuple[np.ndarray | None, str]:
    """Labels on the raw spectra grid: the same array, or mapped through regridded motor positions."""
    with store.open_read(path) as f:
        if f"raw/{channel}/spectra" not in f:
            return None, f"no raw/{channel}/spectra"
        grid = f[f"raw/{channel}/spectra"].shape[:-1]
        if tuple(labels.shape) == tuple(grid):
            return labels, ""
        top = datadir.strip("/").split("/")[0]
        if f"{top}/mot1" in f and f"{top}/mot2" in f and "mot1" in f and "mot2" in f:
            g1, g2 = f[f"{top}/mot1"][()], f[f"{top}/mot2"][()]
            m1, m2 = f["mot1"][()], f["mot2"][()]
            if g1.shape == labels.shape and m1.shape == tuple(grid) and g1.ndim == 2:
                ax1, ax2 = g1[:, 0], g2[0, :]
                i = _nearest(ax1, m1)
                j = _nearest(ax2, m2)
                return labels[i, j], ""
    return None, f"{datadir} grid {labels.shape} does not match the raw grid {grid} (no sum spectra)"


def _nearest(axis: np.ndarray, values: np.ndarray) -> np.ndarray:
    order = np.argsort(axis)
    sa = axis[order]
    idx = np.clip(np.searchsorted(sa, values), 1, len(sa) - 1) if len(sa) > 1 else np.zeros(values.shape, int)
    if len(sa) > 1:
        left = sa[idx - 1]
        idx = np.where(np.abs(values - left) <= np.abs(sa[idx] - values), idx - 1, idx)
    return order[idx]


def _selected_stacks(path: Path, datadir: str, channel: str | None, elements: Sequence[Any] | None
                     ) -> list[tuple[str, str, np.ndarray, list[str], list[int]]]:
    """Per channel of ``datadir``: ``(channel, ims path, images, line names, selected line indices)``."""
    with store.open_read(path) as f:
        stacks = resolve_stacks(f, datadir, channel)
    out = []
    for c, ims_path in stacks:
        ims, names = _read_stack(path, ims_path)
        out.append((c, ims_path, ims, names, select_elements(names, elements, ims_path)))
    return out


def _write_kmeans(tx: Any, path: Path, channel: str, res: core_stats.KMeansResult, data_dir: str,
                  el_names: list[str], summary: dict[str, Any]) -> None:
    g = tx.group(f"kmeans/{channel}")
    store.write_array(g, "ims", res.labels)
    g["ims"].attrs["masked_value"] = core_stats.MASKED
    store.write_array(g, "nclusters", res.nclusters)
    store.write_array(g, "data_dir_clustered", data_dir)
    store.write_array(g, "el_id", el_names)
    store.write_array(g, "centers", res.centers)
    store.write_array(g, "npixels", res.npixels)
    raw_labels, why = _raw_labels(path, res.labels, data_dir, channel)
    if raw_labels is not None:
        sums, counts = core_stats.cluster_sums(raw_labels, res.nclusters, store.iter_spectra_blocks(path, channel))
    else:
        summary.setdefault("warnings", []).append(f"{channel}: {why}")
        with store.open_read(path) as f:
            nb = f[f"raw/{channel}/spectra"].shape[-1] if f"raw/{channel}/spectra" in f else 1
        sums, counts = np.full((res.nclusters, nb), np.nan), np.zeros(res.nclusters, dtype=np.int64)
    for k in range(res.nclusters):
        ds = store.write_array(g, f"sumspec_{k}", sums[k])
        ds.attrs["npixels"] = int(counts[k])
        ds.attrs["available"] = raw_labels is not None


def kmeans(h5file: str | Path, datadir: str = "norm", nclusters: int = 5, elements: Sequence[Any] | None = None,
           channel: str | None = None, seed: int = 0, progress: ProgressCallback | None = None) -> dict[str, Any]:
    """K-means clustering of the images of ``datadir`` and the sum spectrum of every cluster.

    Parameters
    ----------
    h5file : path
        A layout file.
    datadir : str
        ``"norm"`` (every channel), ``"norm/channel00"`` or ``"norm/channel00/ims"``; any image group
        (``quant``, ``fit``, ``tomo``, ``PCA``) works.
    nclusters : int
        Number of clusters.
    elements : list of str or int, optional
        Lines to cluster on (names ``"Fe K"``, symbols ``"Fe"`` or indices); default all.
    channel : str, optional
        Only this channel.
    seed : int
        Random seed (the same input and seed give the same clusters).

    Returns
    -------
    dict
        Per channel: the lines used, pixels per cluster, cluster centres.
    """
    path = Path(h5file)
    stacks = _selected_stacks(path, datadir, channel, elements)
    results = []
    summary: dict[str, Any] = {"file": str(path), "channels": {}, "warnings": []}
    for i, (c, ims_path, ims, names, ids) in enumerate(stacks):
        res = core_stats.kmeans(ims, nclusters, ids, seed=seed)
        el_names = [names[j] for j in ids]
        results.append((c, ims_path, res, el_names))
        summary["channels"][c] = {"elements": el_names, "npixels": res.npixels.tolist(),
                                  "centers": {n: res.centers[:, j].tolist() for j, n in enumerate(el_names)}}
        report(progress, i + 1, len(stacks), c)
    params = {"datadir": datadir, "nclusters": nclusters, "elements": elements, "channel": channel, "seed": seed}
    with store.transaction(path, "kmeans", replace=[f"kmeans/{c}" for c, *_ in results], params=params,
                           inputs=[p for _, p, *_ in results]) as tx:
        for c, ims_path, res, el_names in results:
            _write_kmeans(tx, path, c, res, ims_path, el_names, summary)
    return summary


def pca(h5file: str | Path, datadir: str = "norm", ncomponents: int = 5, elements: Sequence[Any] | None = None,
        kmeans: bool = False, channel: str | None = None, seed: int = 0,
        progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Principal component analysis of the images of ``datadir``.

    Writes ``PCA/channelXX/{ims (PC scores, (ncomponents, rows, cols)), names ("PC0"..), RVE,
    loadings ((ncomponents, n_elements)), el_id, nclusters}``. With ``kmeans=True`` the PC scores
    are also clustered into ``ncomponents`` clusters, written to ``kmeans/channelXX``.

    Parameters are those of :func:`kmeans`; ``ncomponents`` is the number of components kept.

    Returns
    -------
    dict
        Per channel: the lines used, relative variance explained, loadings.
    """
    path = Path(h5file)
    stacks = _selected_stacks(path, datadir, channel, elements)
    results = []
    summary: dict[str, Any] = {"file": str(path), "channels": {}, "warnings": []}
    for i, (c, ims_path, ims, names, ids) in enumerate(stacks):
        res = core_stats.pca(ims, ncomponents, ids, seed=seed)
        km = core_stats.kmeans(res.scores, res.ncomponents, seed=seed) if kmeans else None
        el_names = [names[j] for j in ids]
        results.append((c, ims_path, res, km, el_names))
        summary["channels"][c] = {"elements": el_names, "RVE": res.rve.tolist(),
                                  "loadings": {f"PC{k}": dict(zip(el_names, map(float, res.loadings[k])))
                                               for k in range(res.ncomponents)}}
        if km is not None:
            summary["channels"][c]["kmeans_npixels"] = km.npixels.tolist()
        report(progress, i + 1, len(stacks), c)
    replace = [f"PCA/{c}" for c, *_ in results] + ([f"kmeans/{c}" for c, *_ in results] if kmeans else [])
    params = {"datadir": datadir, "ncomponents": ncomponents, "elements": elements, "kmeans": kmeans,
              "channel": channel, "seed": seed}
    with store.transaction(path, "pca", replace=replace, params=params,
                           inputs=[p for _, p, *_ in results]) as tx:
        for c, ims_path, res, km, el_names in results:
            g = tx.group(f"PCA/{c}")
            store.write_array(g, "ims", res.scores.astype(np.float32))
            store.write_array(g, "names", res.names)
            store.write_array(g, "RVE", res.rve)
            store.write_array(g, "loadings", res.loadings)
            store.write_array(g, "el_id", el_names)
            store.write_array(g, "nclusters", res.ncomponents)
            store.write_array(g, "mean", res.mean)
            store.write_array(g, "scale", res.scale)
            g.attrs["data_dir"] = ims_path
            g.attrs["standardisation"] = "z-score over valid pixels (ddof=0)"
            if km is not None:
                _write_kmeans(tx, path, c, km, f"PCA/{c}/ims", res.names, summary)
    return summary


__all__ = ["kmeans", "pca", "resolve_stacks", "select_elements", "stack_names"]
