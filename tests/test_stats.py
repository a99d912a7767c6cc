"""K-means and PCA: phase recovery on simulated phases, PCA against numpy's SVD, the file steps."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from xrfproc import api, store
from xrfproc.core import simulate as sim
from xrfproc.core import stats
from xrfproc.errors import InputError
from xrfproc.steps import stats as steps
from _shared import CHECK_LAYOUT

CHECK = str(CHECK_LAYOUT)


@pytest.fixture(scope="module")
def phases():
    """A 20 x 24 map of three phases of known composition; images are the simulator's true counts."""
    rows, cols = 20, 24
    y, x = np.mgrid[0:rows, 0:cols]
    phase = np.zeros((rows, cols), dtype=int)
    phase[(x - 7) ** 2 + (y - 10) ** 2 < 30] = 1
    phase[(x > 14) & (y > 4) & (y < 16)] = 2
    comp = {"Fe": [3000.0, 300.0, 800.0], "Cu": [100.0, 2000.0, 150.0], "Zn": [200.0, 150.0, 2500.0]}
    conc = {el: np.choose(phase, v) for el, v in comp.items()}
    raw, truth = sim.simulate_map(conc, sim.DEMO_MATRIX, detectors=sim.Detector(nbins=256, gain=0.08),
                                  noise=False, seed=3)
    names = [n for n in truth.names]
    ims = np.stack([truth.counts["channel00"][n] for n in names])
    noisy = np.random.default_rng(1).poisson(ims).astype(float)
    return phase, noisy, names


def test_kmeans_recovers_phase_map(phases):
    phase, ims, names = phases
    # the trace-element lines (the matrix and scatter lines carry only noise and the I0 fluctuation)
    traces = [i for i, n in enumerate(names) if n.split()[0] in ("Fe", "Cu", "Zn")]
    res = stats.kmeans(ims, 3, el_id=traces, seed=0)
    ari = adjusted_rand_score(phase.ravel(), res.labels.ravel())
    assert ari > 0.95
    assert res.labels.shape == phase.shape
    # largest cluster first, pixel counts add up, centres in data units
    assert list(res.npixels) == sorted(res.npixels, reverse=True)
    assert res.npixels.sum() == phase.size
    fe = names.index("Fe K")
    matrix = np.bincount(phase.ravel())  # phase 0 is the largest
    assert res.npixels[0] == pytest.approx(matrix.max(), abs=2)
    np.testing.assert_allclose(res.centers[0, traces.index(fe)], ims[fe][phase == 0].mean(), rtol=0.05)


def test_kmeans_is_seeded_and_masks_nan(phases):
    phase, ims, names = phases
    traces = [i for i, n in enumerate(names) if n.split()[0] in ("Fe", "Cu", "Zn")]
    ims = ims.copy()
    ims[traces[1], 0:3, 0:5] = np.nan
    ims[0, 5, 5] = np.nan  # a NaN in a line not clustered on does not mask the pixel
    a = stats.kmeans(ims, 3, el_id=traces, seed=7)
    b = stats.kmeans(ims, 3, el_id=traces, seed=7)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert np.all(a.labels[0:3, 0:5] == stats.MASKED)
    assert (a.labels == stats.MASKED).sum() == 15
    keep = a.labels >= 0
    assert adjusted_rand_score(phase[keep], a.labels[keep]) > 0.95


def test_kmeans_errors():
    with pytest.raises(InputError, match="clusters"):
        stats.kmeans(np.full((2, 3, 3), np.nan), 2)
    with pytest.raises(InputError, match="out of range"):
        stats.kmeans(np.ones((2, 3, 3)), 2, el_id=[5])


def test_pca_matches_numpy_svd():
    rng = np.random.default_rng(0)
    latent = rng.normal(size=(500, 2))
    mix = np.array([[3.0, 1.0, 0.5, 0.0, 2.0], [0.0, 1.0, -2.0, 1.5, 0.3]])
    table = latent @ mix + 0.2 * rng.normal(size=(500, 5)) + np.array([10, 50, 3, 0, 100])
    ims = table.T.reshape(5, 20, 25)
    res = stats.pca(ims, 3)
    z = (table - table.mean(0)) / table.std(0)
    _, s, vt = np.linalg.svd(z, full_matrices=False)
    np.testing.assert_allclose(res.rve, (s**2 / np.sum(s**2))[:3], rtol=1e-10)
    for k in range(3):
        sign = np.sign(vt[k] @ res.loadings[k])
        np.testing.assert_allclose(res.loadings[k], sign * vt[k], atol=1e-10)
        np.testing.assert_allclose(res.scores[k].ravel(), sign * z @ vt[k], atol=1e-8)
    np.testing.assert_allclose(res.eigenvalues, s[:3] ** 2 / (len(z) - 1), rtol=1e-10)
    assert res.names == ["PC0", "PC1", "PC2"]
    # sign convention: the largest loading of each component is positive
    assert np.all(res.loadings[np.arange(3), np.argmax(np.abs(res.loadings), 1)] > 0)


def test_pca_nan_pixels_and_component_cap():
    rng = np.random.default_rng(1)
    ims = rng.normal(size=(3, 10, 10))
    ims[1, 4, 4] = np.nan
    res = stats.pca(ims, 5)
    assert res.ncomponents == 3
    assert np.all(np.isnan(res.scores[:, 4, 4]))
    assert np.isfinite(res.scores).sum() == 3 * 99
    np.testing.assert_allclose(res.rve.sum(), 1.0)


@pytest.fixture(scope="module")
def normfile(tmp_path_factory):
    """A simulated file (raw spectra) with a norm/ group written from the simulator's truth."""
    path = tmp_path_factory.mktemp("stats") / "map.h5"
    api.simulate(path, 8, 10)
    _, truth = sim.simulate_map(sim.demo_phantom(8, 10), sim.DEMO_MATRIX, detectors=sim.demo_detectors(),
                                noise=False, seed=0)
    with store.transaction(path, "normalise", replace=["norm"]) as tx:
        g = tx.group("norm")
        store.write_array(g, "I0", 1.0)
        for i, c in enumerate(sorted(truth.counts)):
            names = truth.names if i == 0 else ["Fe K", "Cu K", "Sr K"]
            ims = np.stack([truth.counts[c][n] for n in names])
            cg = g.create_group(c)
            store.write_array(cg, "ims", ims)
            store.write_array(cg, "names", names)
            store.write_array(cg, "stddev", np.sqrt(ims))
    return path


def test_kmeans_step_writes_cluster_sum_spectra(normfile):
    summary = steps.kmeans(normfile, "norm", nclusters=3, elements=["Fe", "Cu K", "Sr K"])
    assert summary["channels"]["channel00"]["elements"] == ["Fe K", "Cu K", "Sr K"]
    raw = store.read_raw(normfile)
    with h5py.File(normfile) as f:
        for c in ("channel00", "channel01"):
            g = f[f"kmeans/{c}"]
            labels = g["ims"][()]
            assert labels.shape == (8, 10)
            assert int(g["nclusters"][()]) == 3
            assert g["data_dir_clustered"][()].decode() == f"norm/{c}/ims"
            spectra = np.asarray(raw.channels[c].spectra, dtype=float)
            for k in range(3):
                want = spectra[labels == k].sum(axis=0)
                np.testing.assert_allclose(g[f"sumspec_{k}"][()], want)
                assert g[f"sumspec_{k}"].attrs["npixels"] == (labels == k).sum() == g["npixels"][k]
    out = subprocess.run([sys.executable, CHECK, str(normfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_pca_step_with_kmeans(normfile):
    steps.pca(normfile, "norm/channel00/ims", ncomponents=4, kmeans=True)
    with h5py.File(normfile) as f:
        g = f["PCA/channel00"]
        assert g["ims"].shape == (4, 8, 10)
        assert store.decode_names(g["names"][()]) == ["PC0", "PC1", "PC2", "PC3"]
        assert g["loadings"].shape == (4, 16)
        assert len(store.decode_names(g["el_id"][()])) == 16
        assert np.all(np.diff(g["RVE"][()]) <= 0) and g["RVE"][()].sum() <= 1 + 1e-9
        assert int(g["nclusters"][()]) == 4
        km = f["kmeans/channel00"]
        assert km["data_dir_clustered"][()].decode() == "PCA/channel00/ims"
        assert int(km["nclusters"][()]) == 4 and "sumspec_3" in km
        assert "PCA/channel01" not in f
    out = subprocess.run([sys.executable, CHECK, str(normfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_step_rejects_unknown_line(normfile):
    with pytest.raises(InputError, match="Au"):
        steps.kmeans(normfile, "norm", elements=["Au"], channel="channel01")
