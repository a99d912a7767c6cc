"""K-means clustering and principal component analysis of image stacks (plain arrays).

Both work on an image stack of shape ``(n_features, *spatial)`` (the layout's ``ims``: lines first,
then rows and columns) or on a table of shape ``(n_points, n_features)`` with ``features_last=True``.
Every feature is standardised (z-score: minus its mean, divided by its standard deviation) before
clustering or decomposition, so that lines of very different intensity weigh the same. Pixels where
any selected feature is NaN or infinite (masked pixels) are left out of the computation and get the
label ``-1`` (K-means) or NaN scores (PCA). Results are reproducible: the same input and ``seed``
give the same labels, centres and components.

K-means clusters are numbered by decreasing pixel count (cluster 0 is the largest), so the numbering
does not depend on the initialisation. PCA components follow the sign convention that the loading of
largest magnitude is positive.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..errors import InputError

log = logging.getLogger(__name__)

#: label of pixels left out of the clustering (NaN in a selected feature)
MASKED = -1


@dataclass
class KMeansResult:
    """Outcome of :func:`kmeans`.

    Attributes
    ----------
    labels : ndarray of int, shape ``spatial``
        Cluster of every pixel (0 .. nclusters-1), ``-1`` for masked pixels.
    centers : ndarray, shape (nclusters, n_features)
        Cluster centres in the units of the input data.
    npixels : ndarray of int, shape (nclusters,)
        Pixels per cluster (decreasing).
    el_id : list of int
        Indices of the features used.
    inertia : float
        Sum of squared distances to the centres, in standardised units.
    """

    labels: np.ndarray
    centers: np.ndarray
    npixels: np.ndarray
    el_id: list[int]
    inertia: float

    @property
    def nclusters(self) -> int:
        return int(self.centers.shape[0])


@dataclass
class PCAResult:
    """Outcome of :func:`pca`.

    Attributes
    ----------
    scores : ndarray, shape (ncomponents, *spatial)
        Principal component scores of every pixel (NaN for masked pixels).
    loadings : ndarray, shape (ncomponents, n_features)
        Unit eigenvectors of the correlation matrix (rows), the loading of largest magnitude positive.
    rve : ndarray, shape (ncomponents,)
        Relative variance explained: eigenvalue / sum of all eigenvalues.
    eigenvalues : ndarray, shape (ncomponents,)
        Variances of the scores (ddof = 1).
    mean, scale : ndarray, shape (n_features,)
        Mean and standard deviation used to standardise the selected features.
    el_id : list of int
        Indices of the features used.
    """

    scores: np.ndarray
    loadings: np.ndarray
    rve: np.ndarray
    eigenvalues: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    el_id: list[int]

    @property
    def ncomponents(self) -> int:
        return int(self.loadings.shape[0])

    @property
    def names(self) -> list[str]:
        return [f"PC{i}" for i in range(self.ncomponents)]


def _table(data: np.ndarray, el_id: Sequence[int] | None, features_last: bool
           ) -> tuple[np.ndarray, tuple[int, ...], np.ndarray, list[int]]:
    """(points, features) table of the selected features, the spatial shape and the valid-pixel mask."""
    arr = np.asarray(data, dtype=np.float64)
    if features_last:
        if arr.ndim != 2:
            raise InputError(f"with features_last the data must be (points, features), got shape {arr.shape}")
        arr = arr.T
    if arr.ndim < 2:
        raise InputError(f"expected an image stack (features, rows, cols) or (features, points), got shape {arr.shape}")
    nfeat = arr.shape[0]
    ids = list(range(nfeat)) if el_id is None else [int(i) for i in el_id]
    if not ids:
        raise InputError("no feature selected (el_id is empty)")
    bad = [i for i in ids if not -nfeat <= i < nfeat]
    if bad:
        raise InputError(f"feature indices {bad} out of range for {nfeat} features")
    ids = [i % nfeat for i in ids]
    spatial = arr.shape[1:]
    table = arr[ids].reshape(len(ids), -1).T  # (points, features)
    valid = np.all(np.isfinite(table), axis=1)
    return table, spatial, valid, ids


def standardise(table: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Z-score the columns of a (points, features) table.

    Returns the standardised table, the means and the standard deviations (ddof = 0). Constant
    features get a standard deviation of 1 (they stay zero after centring).
    """
    mean = table.mean(axis=0)
    scale = table.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    return (table - mean) / scale, mean, scale


def kmeans(data: np.ndarray, nclusters: int = 5, el_id: Sequence[int] | None = None, seed: int = 0,
           features_last: bool = False, n_init: int = 10) -> KMeansResult:
    """K-means clustering of the pixels of an image stack on its standardised features.

    Parameters
    ----------
    data : ndarray, shape (n_features, *spatial) or (n_points, n_features)
        The images (e.g. ``norm/channel00/ims``); the second form with ``features_last=True``.
    nclusters : int
        Number of clusters (at least 1, at most the number of valid pixels).
    el_id : sequence of int, optional
        Features to cluster on; default all.
    seed : int
        Random seed of the k-means++ initialisation.
    n_init : int
        Initialisations tried; the one of lowest inertia is kept.

    Returns
    -------
    KMeansResult

    Raises
    ------
    InputError
        Bad shape, feature index or cluster count, or fewer valid pixels than clusters.
    """
    from sklearn.cluster import KMeans

    table, spatial, valid, ids = _table(data, el_id, features_last)
    nclusters = int(nclusters)
    nvalid = int(valid.sum())
    if nclusters < 1:
        raise InputError(f"nclusters must be at least 1, got {nclusters}")
    if nvalid < nclusters:
        raise InputError(f"{nvalid} valid (non-NaN) pixels cannot form {nclusters} clusters")
    z, mean, scale = standardise(table[valid])
    model = KMeans(n_clusters=nclusters, n_init=n_init, random_state=seed).fit(z)
    raw_labels = model.labels_
    counts = np.bincount(raw_labels, minlength=nclusters)
    # renumber: largest cluster first; ties broken by the centre's first coordinate
    order = np.lexsort((model.cluster_centers_[:, 0], -counts))
    rank = np.empty(nclusters, dtype=np.int64)
    rank[order] = np.arange(nclusters)
    labels = np.full(table.shape[0], MASKED, dtype=np.int16 if nclusters < 32000 else np.int32)
    labels[valid] = rank[raw_labels]
    centers = model.cluster_centers_[order] * scale + mean
    if nvalid < table.shape[0]:
        log.info("k-means: %d of %d pixels masked (NaN) and left out", table.shape[0] - nvalid, table.shape[0])
    return KMeansResult(labels=labels.reshape(spatial), centers=centers, npixels=counts[order].astype(np.int64),
                        el_id=ids, inertia=float(model.inertia_))


def pca(data: np.ndarray, ncomponents: int = 5, el_id: Sequence[int] | None = None, seed: int = 0,
        features_last: bool = False) -> PCAResult:
    """Principal component analysis of the standardised features of an image stack.

    The features are z-scored over the valid pixels and decomposed with scikit-learn's PCA (an SVD
    of the standardised table, i.e. the eigen-decomposition of the correlation matrix).

    Parameters
    ----------
    data : ndarray, shape (n_features, *spatial) or (n_points, n_features)
        The images; the second form with ``features_last=True``.
    ncomponents : int
        Components kept (reduced to the number of features when larger).
    el_id : sequence of int, optional
        Features used; default all.
    seed : int
        Random seed (only used by randomised solvers; the result is deterministic).

    Returns
    -------
    PCAResult
    """
    from sklearn.decomposition import PCA

    table, spatial, valid, ids = _table(data, el_id, features_last)
    nvalid = int(valid.sum())
    nmax = min(len(ids), nvalid)
    ncomponents = int(ncomponents)
    if ncomponents < 1:
        raise InputError(f"ncomponents must be at least 1, got {ncomponents}")
    if nvalid < 2:
        raise InputError(f"PCA needs at least 2 valid (non-NaN) pixels, got {nvalid}")
    if ncomponents > nmax:
        log.warning("PCA: %d components asked for %d features / %d pixels; keeping %d", ncomponents, len(ids),
                    nvalid, nmax)
        ncomponents = nmax
    z, mean, scale = standardise(table[valid])
    model = PCA(n_components=ncomponents, svd_solver="full", random_state=seed).fit(z)
    comps = model.components_.copy()
    signs = np.sign(comps[np.arange(ncomponents), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    comps *= signs[:, None]
    scores = np.full((ncomponents, table.shape[0]), np.nan)
    scores[:, valid] = (z @ comps.T).T
    return PCAResult(scores=scores.reshape(ncomponents, *spatial), loadings=comps,
                     rve=np.asarray(model.explained_variance_ratio_, dtype=np.float64),
                     eigenvalues=np.asarray(model.explained_variance_, dtype=np.float64),
                     mean=mean, scale=scale, el_id=ids)


def cluster_sums(labels: np.ndarray, nclusters: int, blocks) -> tuple[np.ndarray, np.ndarray]:
    """Sum spectra and pixel counts per cluster from spectra read block-wise.

    Parameters
    ----------
    labels : ndarray of int, shape ``grid``
        Cluster of every point (``-1``: left out).
    nclusters : int
    blocks : iterable of (slice, ndarray)
        ``(row slice, spectra of shape (rows, ..., nbins))`` as from
        :func:`xrfproc.store.iter_spectra_blocks`.

    Returns
    -------
    (sums, counts)
        ``sums`` of shape (nclusters, nbins) (counts, float64); ``counts`` of shape (nclusters,).
    """
    labels = np.asarray(labels)
    sums = None
    for sl, block in blocks:
        block = np.asarray(block, dtype=np.float64)
        lab = labels[sl].reshape(-1) if labels.ndim else labels.reshape(-1)
        flat = block.reshape(-1, block.shape[-1])
        if flat.shape[0] != lab.size:
            raise InputError(f"spectra block of {flat.shape[0]} points for {lab.size} labels")
        if sums is None:
            sums = np.zeros((nclusters, flat.shape[1]))
        for k in range(nclusters):
            sel = lab == k
            if sel.any():
                sums[k] += np.nansum(flat[sel], axis=0)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=nclusters)[:nclusters]
    if sums is None:
        sums = np.zeros((nclusters, 0))
    return sums, counts


__all__ = ["MASKED", "KMeansResult", "PCAResult", "standardise", "kmeans", "pca", "cluster_sums"]
