"""Tests of xrfproc's own fit engine (issue 3, ``mode="engine"``).

Ground truth is PyMca itself (SNIP, the fast fit's model matrix and results), scipy's NNLS,
finite differences for the analytic derivatives, and spectra synthesised with a known per-pixel
calibration drift for ``refine``.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest
from PyMca5.PyMcaMath.fitting import SpecfitFuns
from scipy.optimize import nnls

from xrfproc.core import pymca_bridge as pb
from xrfproc.core.fit_engine import EngineResult, build_model, fit_block, fit_map
from xrfproc.core.fit_model import group_shapes
from xrfproc.core.fit_refine import _pileup_adjoint, pileup
from xrfproc.core.nnls import nnls_gram
from xrfproc.core.snip import savitzky_golay, snip1d, snip_background
from xrfproc.errors import ConfigError, InputError


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def steel():
    cfg = pb.read_config(pb.PYMCA_DATA_DIR / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1  # SNIP (Steel.cfg ships the slow strip background)
    y = pb.read_spectrum_file(pb.PYMCA_DATA_DIR / "Steel.spe")
    return cfg, y


@pytest.fixture(scope="module")
def steel_map(steel):
    """20 x 20 pixels: Steel.spe scaled per pixel (0.002 .. 0.2) and Poisson-resampled."""
    cfg, y = steel
    rng = np.random.default_rng(42)
    scale = np.exp(rng.uniform(np.log(0.002), np.log(0.2), 400))
    data = rng.poisson(np.outer(scale, y)).astype(np.float64)
    return data


# ----------------------------------------------------------------------------- SNIP
@pytest.mark.parametrize("width", [1, 7, 30, 64])
def test_snip1d_equals_pymca(width):
    rng = np.random.default_rng(width)
    x = np.arange(700)
    y = rng.poisson(200 * np.exp(-x / 300) + 500 * np.exp(-0.5 * ((x - 300) / 6) ** 2) + 5).astype(float)
    assert np.abs(snip1d(y, width) - SpecfitFuns.snip1d(y, width, 0)).max() <= 1e-12 * y.max()


@pytest.mark.parametrize("points", [0, 1, 3, 4, 5])
def test_savitzky_golay_equals_pymca(points):
    y = np.random.default_rng(points).poisson(30, 300).astype(float)
    assert np.allclose(savitzky_golay(y, points), SpecfitFuns.SavitskyGolay(y, points), rtol=1e-13, atol=0)


@pytest.mark.parametrize("filter_width,anchors", [(1, None), (5, None), (3, [0, 150, 420, 599])])
def test_snip_block_equals_pymca_fastfit_background(filter_width, anchors):
    """The block SNIP reproduces FastXRFLinearFit._fitBkgSubtract spectrum by spectrum."""
    rng = np.random.default_rng(7)
    spectra = rng.poisson(40, size=(70, 800)).astype(np.float32)   # 70: more than one chunk of 64
    i0, i1 = 100, 700
    got = snip_background(spectra, 25, window=(i0, i1), filter_width=filter_width, anchors=anchors)
    cfg = {"fit": {"stripfilterwidth": filter_width, "snipwidth": 25}}
    ref = spectra[:, i0:i1].T.astype(np.float64).copy()
    from PyMca5.PyMcaPhysics.xrf.FastXRFLinearFit import FastXRFLinearFit
    FastXRFLinearFit._fitBkgSubtract(ref, config=cfg, anchorslist=anchors or [0, i1 - i0 - 1], fitmodel=None)
    bkg_ref = spectra[:, i0:i1].astype(np.float64) - ref.T
    assert np.abs(got - bkg_ref).max() <= 1e-9


# ----------------------------------------------------------------------------- NNLS
def test_nnls_equals_scipy_on_random_problems():
    rng = np.random.default_rng(0)
    nactive = 0
    for _ in range(60):
        m, n = int(rng.integers(10, 50)), int(rng.integers(2, 12))
        A = rng.normal(size=(m, n))
        y = A @ rng.normal(size=n) + rng.normal(size=m)
        ref, _ = nnls(A, y)
        x, var, status = nnls_gram(A.T @ A, (A.T @ y)[None])
        assert status[0] > 0
        assert np.allclose(x[0], ref, atol=1e-9 * (1 + np.abs(ref).max()))
        nactive += int((ref == 0).sum())
        # variances: inverse Gram on the passive set
        p = ref > 0
        if p.any():
            cov = np.linalg.inv((A.T @ A)[np.ix_(p, p)])
            assert np.allclose(var[0][p], np.diag(cov), rtol=1e-8)
        assert np.all(var[0][~p] == 0)
    assert nactive > 20  # the problems did exercise the constraints


def test_nnls_batched_shared_and_per_problem_gram_agree():
    rng = np.random.default_rng(1)
    A = np.abs(rng.normal(size=(80, 6)))
    Y = rng.normal(size=(50, 80)) * 3 + 2
    G = A.T @ A
    B = Y @ A
    x1, v1, _ = nnls_gram(G, B)
    x2, v2, _ = nnls_gram(np.repeat(G[None], 50, axis=0), B)
    assert np.allclose(x1, x2, atol=1e-10) and np.allclose(v1, v2, rtol=1e-10)
    for k in range(50):
        assert np.allclose(x1[k], nnls(A, Y[k])[0], atol=1e-9)


def test_nnls_unconstrained_columns_may_be_negative():
    rng = np.random.default_rng(2)
    A = rng.normal(size=(40, 4))
    y = A @ np.array([-3.0, 2.0, -1.0, 1.0]) + 0.01 * rng.normal(size=40)
    x, _, _ = nnls_gram(A.T @ A, (A.T @ y)[None], nonneg=np.array([False, True, True, True]))
    assert x[0, 0] < -2.5 and x[0, 2] == 0.0


# ----------------------------------------------------------------------------- model
def test_group_shapes_reproduce_pymca_matrix(steel):
    cfg, y = steel
    model = build_model(cfg, y)
    assert model.names[-2:] == ["Rayl", "Compt"] and "Fe Ka" in model.names
    assert (model.i0, model.i1) == (200, 1433)
    S, _ = group_shapes(model)
    assert np.abs(S - model.shapes).max() <= 1e-11 * np.abs(model.shapes).max()
    # unit area: a group inside the window integrates to 1 plus its escape peaks (Si K escape)
    fe = model.names.index("Fe Ka")
    sel = model.line_group == fe
    assert model.line_rate[sel & ~model.line_escape].sum() == pytest.approx(1.0, rel=1e-12)
    assert model.shapes[:, fe].sum() == pytest.approx(model.line_rate[sel].sum(), rel=1e-6)


def test_group_shapes_with_hypermet_tails(steel):
    cfg, y = steel
    cfg2 = copy.deepcopy(cfg)
    cfg2["fit"]["hypermetflag"] = 15
    model = build_model(cfg2, y)
    assert model.tails[0] > 0 and model.tails[2] > 0
    S, dS = group_shapes(model, derivatives=True)
    assert np.abs(S - model.shapes).max() <= 1e-11 * np.abs(model.shapes).max()
    _check_derivatives(model, dS)


def test_shape_derivatives_match_finite_differences(steel):
    cfg, y = steel
    model = build_model(cfg, y)
    _, dS = group_shapes(model, derivatives=True)
    _check_derivatives(model, dS)


def _check_derivatives(model, dS):
    steps = np.array([1e-5, 1e-7, 1e-5, 1e-5])
    for k in range(4):
        tp, tm = model.theta.copy(), model.theta.copy()
        tp[k] += steps[k]
        tm[k] -= steps[k]
        num = (group_shapes(model, tp)[0] - group_shapes(model, tm)[0]) / (2 * steps[k])
        assert np.abs(num - dS[..., k]).max() <= 1e-4 * np.abs(dS[..., k]).max(), k


def test_config_without_snip_is_refused(steel):
    cfg, y = steel
    cfg2 = copy.deepcopy(cfg)
    cfg2["fit"]["stripalgorithm"] = 0
    with pytest.raises(ConfigError, match="stripalgorithm = 1"):
        build_model(cfg2, y)


# ----------------------------------------------------------------------------- engine vs PyMca
@pytest.mark.parametrize("weight", [None, 1])
def test_engine_matches_pymca_fast_fit(steel, steel_map, weight):
    cfg, _ = steel
    data = steel_map
    ysum = data.sum(axis=0)
    ref = pb.fast_fit(data, cfg, ysum, weight=weight, with_chi2=False)
    model = build_model(cfg, ysum, nspectra=data.shape[0], weight=weight)
    res = fit_block(model, data)
    assert [pb.rename_group(n) for n in ref.names] == res.names
    got = res.areas.T
    big = ref.areas > 1000
    assert big.sum() > 100 and (~big).sum() > 100
    assert np.all(np.abs(got[big] - ref.areas[big]) <= 0.01 * ref.areas[big])
    # Below 1000 counts: within 3 sigma, except in a few pixels where PyMca's refit heuristic
    # (refit without the groups negative in a common set of pixels, one set per iteration, then
    # force to 0 after its iteration limit) does not end at the constrained optimum.
    sigma = np.maximum(ref.sigma, res.stddev.T)
    off = np.abs(got - ref.areas) > 3 * sigma + 1e-6
    assert off.any(axis=0).sum() <= 0.02 * data.shape[0]
    # Pixels where a group ended at 0 (PyMca refitted them): the engine's exact NNLS must reach a
    # weighted residual no larger than PyMca's.
    refit = ((got <= 0) | (ref.areas <= 0)).any(axis=0)
    pix = np.nonzero(refit)[0]
    assert 0 < len(pix) < data.shape[0]
    bkg = snip_background(data[pix], model.snipwidth, window=(model.i0, model.i1), filter_width=1,
                          anchors=list(model.anchors))
    ysub = data[pix, model.i0:model.i1] - bkg
    if model.weight_policy == 2:
        w = 1.0 / np.where(np.abs(ysub) > 0, np.abs(ysub), 1.0)
    else:
        w = np.ones_like(ysub) / model.sigma_avg ** 2
    f_engine = np.sum(w * (ysub - got[:, pix].T @ model.shapes.T) ** 2, axis=1)
    f_pymca = np.sum(w * (ysub - ref.areas[:, pix].T @ model.shapes.T) ** 2, axis=1)
    assert np.all(f_engine <= f_pymca * (1 + 1e-9))
    # All other pixels: the same numbers (same model, background, weights), same uncertainties
    same = ~refit
    assert np.allclose(got[:, same], ref.areas[:, same], rtol=1e-7, atol=1e-3)
    assert np.allclose(res.stddev.T[:, same], ref.sigma[:, same], rtol=1e-6)
    assert np.all(res.areas >= 0) and np.isfinite(res.chi2_red).all()


def test_fit_map_keeps_leading_shape_and_one_pixel_works(steel, steel_map):
    cfg, _ = steel
    data = steel_map.reshape(20, 20, -1)
    model = build_model(cfg, data.sum(axis=(0, 1)), nspectra=400)
    res = fit_map(model, data, block=64)
    assert res.areas.shape == (20, 20, model.ncols) and res.chi2_red.shape == (20, 20)
    one = fit_block(model, data[3, 4])
    assert isinstance(one, EngineResult)
    assert np.allclose(one.areas[0], res.areas[3, 4], rtol=1e-10, atol=1e-8)
    # integer counts are read as they are
    res16 = fit_block(model, steel_map[:10].astype(np.uint16))
    assert np.allclose(res16.areas, res.areas.reshape(400, -1)[:10], rtol=1e-10, atol=1e-8)


def test_bad_spectra_give_clear_errors(steel, steel_map):
    cfg, _ = steel
    model = build_model(cfg, steel_map.sum(axis=0))
    bad = steel_map[:4].copy()
    bad[1, 500] = np.nan
    with pytest.raises(InputError, match="NaN"):
        fit_block(model, bad)
    bad[1, 500] = -3
    with pytest.raises(InputError, match="negative"):
        fit_block(model, bad)
    with pytest.raises(InputError, match="channels"):
        fit_block(model, steel_map[:4, :1000])
    with pytest.raises(InputError, match="no spectra"):
        fit_map(model, np.zeros((0, model.nbins)))
    # an empty (all-zero) pixel is a correct zero result, not an error
    zero = fit_block(model, np.zeros((2, model.nbins)))
    assert np.all(zero.areas == 0)


# ----------------------------------------------------------------------------- refine
def test_refine_recovers_calibration_drift(steel):
    cfg, y = steel
    base = build_model(cfg, y, weight=0)
    lin0 = fit_block(base, y[None], with_background=True)
    truth = lin0.areas[0] * 0.05
    bkg = lin0.background[0] * 0.05
    rng = np.random.default_rng(11)
    npx = 40
    dz = rng.uniform(-0.02, 0.02, npx)          # keV
    dg = rng.uniform(-1.5e-5, 1.5e-5, npx)      # keV/channel (0.13 %)
    spectra = np.zeros((npx, y.size))
    for k in range(npx):
        th = base.theta.copy()
        th[0] += dz[k]
        th[1] += dg[k]
        S, _ = group_shapes(base, th)
        mu = y * 0.05
        mu[base.i0:base.i1] = S @ truth + bkg
        spectra[k] = rng.poisson(mu)
    model = build_model(cfg, spectra.sum(axis=0), weight=0)
    lin = fit_block(model, spectra)
    ref = fit_block(model, spectra, refine=True)
    # the energy of the Fe K alpha channel (c ~ 540) is recovered to ~1 eV, the drift is +-20 eV
    c = 540.0
    e_true = (base.theta[0] + dz) + (base.theta[1] + dg) * c
    e_fit = ref.theta[:, 0] + ref.theta[:, 1] * c
    assert np.sqrt(np.mean((e_fit - e_true) ** 2)) < 0.002
    assert np.corrcoef(ref.theta[:, 1], dg)[0, 1] > 0.8
    # the fit is statistically good with refine and clearly worse without
    assert np.median(ref.chi2_red) < 1.5
    assert np.median(lin.chi2_red) > 2 * np.median(ref.chi2_red)
    assert np.all(ref.chi2_red <= lin.chi2_red * 1.001)
    # areas of the strong lines back to ~1 %
    strong = truth > 3000
    rel = np.abs(ref.areas[:, strong] / truth[strong] - 1)
    assert np.median(rel) < 0.01
    assert ref.theta.shape == (npx, 4) and np.all(ref.stddev[:, strong] > 0)


def test_full_fit_background_equals_pymca_precise_background(steel):
    """With ``full_fit`` the block SNIP equals ClassMcaTheory's own background (extra smoothing)."""
    cfg, y = steel
    spectra = np.random.default_rng(3).poisson(np.outer([0.01, 0.05], y)).astype(np.float64)
    fitter = pb.SpectrumFitter(cfg)
    model = build_model(cfg, y)
    got = snip_background(spectra, model.snipwidth, window=(model.i0, model.i1), filter_width=1,
                          anchors=list(model.anchors), full_fit=True)
    for k in range(2):
        fitter.fit(spectra[k])
        ref = np.ravel(fitter._theory.zz)
        assert np.abs(got[k] - ref).max() <= 1e-9 * ref.max()
    fast = snip_background(spectra, model.snipwidth, window=(model.i0, model.i1), filter_width=1)
    assert np.abs(fast - got).max() > 0.1  # the two PyMca fits do differ


def _drift_spectra(cfg, y, n, seed, scale=0.01):
    """Steel.spe's engine fit re-rendered at a drifted calibration per pixel (zero +-20 eV, gain
    +-0.13 %), plus its SNIP background, Poisson-resampled (~5e4 counts per spectrum)."""
    base = build_model(cfg, y, weight=0)
    lin0 = fit_block(base, y[None], with_background=True)
    rng = np.random.default_rng(seed)
    spectra = np.empty((n, y.size))
    for k in range(n):
        th = base.theta.copy()
        th[0] += rng.uniform(-0.02, 0.02)
        th[1] += rng.uniform(-1.5e-5, 1.5e-5)
        mu = y * scale
        mu[base.i0:base.i1] = (group_shapes(base, th)[0] @ lin0.areas[0] + lin0.background[0]) * scale
        spectra[k] = rng.poisson(mu)
    return spectra


def _chi2_pymca_definition(y, yfit, nfree):
    """PyMca's reduced chi-square (ClassMcaTheory.digestresult): weights 1/max(y, 1)."""
    return np.sum((y - yfit) ** 2 / np.maximum(y, 1.0)) / (y.size - nfree)


def test_pileup_equals_pymca():
    rng = np.random.default_rng(5)
    P = rng.random(300) * 100
    for xmin, zero, gain in [(0, 0.0, 0.01), (200, -0.006, 0.0119), (200, 0.013, 0.0119), (200, -0.026, 0.0119),
                             (10, -0.5, 0.01), (3, -2.0, 0.01)]:
        ref = SpecfitFuns.pileup(P, xmin, zero, gain)
        assert np.abs(pileup(P, xmin, zero, gain) - ref).max() <= 1e-12 * ref.max()


@pytest.mark.parametrize("xmin,k", [(20, 0), (20, -2), (20, 3), (0, -3), (2, -30), (45, 0)])
def test_pileup_adjoint_matches_finite_differences(xmin, k):
    """The exact gradient of refine uses the adjoint of the pile-up's derivative."""
    rng = np.random.default_rng([xmin, k + 50])
    n = 40
    P, v = rng.random(n), rng.random(n)
    got = np.zeros(n)
    _pileup_adjoint(P, xmin, k, v, got)
    eye = np.eye(n)
    num = np.array([(v @ pileup(P + 1e-6 * eye[c], xmin, k, 1.0) - v @ pileup(P - 1e-6 * eye[c], xmin, k, 1.0)) / 2e-6
                    for c in range(n)])
    assert np.abs(got - num).max() <= 1e-7 * max(np.abs(num).max(), 1.0)


def test_refine_chi2_as_good_as_pymca_precise(steel):
    """On drifting spectra, engine + refine fits as well as PyMca's full fit, pixel by pixel.

    Both reduced chi-squares are computed the same way (PyMca's definition, same degrees of
    freedom) from the two fitted curves; PyMca's model includes the pile-up term of Steel.cfg
    (``sumflag = 1``), which refine fits too. Only PyMca's tabulated exponential (its
    ``fastahypermet``, ~3e-5 relative) separates the two models, hence the small tolerance.
    """
    cfg, y = steel
    spectra = _drift_spectra(cfg, y, 4, seed=12)
    fitter = pb.SpectrumFitter(cfg)
    model = build_model(cfg, spectra.sum(axis=0), weight=0)
    assert model.extra["pileup"] == {"value": 1e-10, "fixed": False, "delta": 1e-8}
    res = fit_block(model, spectra, refine=True, with_background=True)
    assert np.all(np.abs(res.pileup - 1e-10) <= 1e-8 * (1 + 1e-12))
    for k in range(spectra.shape[0]):
        r = fitter.fit(spectra[k])
        th = fitter._theory
        x = np.ravel(th.xdata)
        yy = np.ravel(th.ydata)
        yfit_p = np.ravel(th.mcatheory(np.asarray(th.fittedpar), x)) + np.ravel(th.zz)
        nfree = int(np.sum(np.asarray(th.codes)[0] < 3))
        P = group_shapes(model, res.theta[k])[0] @ res.areas[k]
        yfit_e = P + res.pileup[k] * pileup(P, model.i0, res.theta[k, 0], res.theta[k, 1]) + res.background[k]
        chi_p = _chi2_pymca_definition(yy, yfit_p, nfree)
        chi_e = _chi2_pymca_definition(yy, yfit_e, nfree)
        assert chi_e <= chi_p * 1.0002, (k, chi_e, chi_p)
        assert res.chi2_red[k] <= r.chisq * 1.002
        # the same areas: within 1 % above 1000 counts, within 3 sigma (PyMca's) otherwise
        big = r.parameters > 1000
        assert np.all(np.abs(res.areas[k, big] / r.parameters[big] - 1) < 0.01), k
        assert np.all(np.abs(res.areas[k, ~big] - r.parameters[~big]) <= 3 * r.sigmaarea[~big] + 1e-9), k
        # the calibration as PyMca refines it (energy at Fe K alpha within 1 eV)
        e = lambda z, g: z + 540 * g  # noqa: E731
        assert abs(e(*res.theta[k, :2]) - e(*r.calibration)) < 0.001


def test_refine_without_pileup_in_the_configuration(steel):
    """sumflag = 0: no pile-up term, the coefficient reported as 0; the fit still beats the linear one."""
    cfg, y = steel
    cfg = copy.deepcopy(cfg)
    cfg["fit"]["sumflag"] = 0
    spectra = _drift_spectra(cfg, y, 3, seed=13)
    model = build_model(cfg, spectra.sum(axis=0), weight=0)
    assert model.extra["pileup"] is None
    res = fit_block(model, spectra, refine=True)
    lin = fit_block(model, spectra)
    assert np.all(res.pileup == 0) and np.all(res.chi2_red < lin.chi2_red)


def test_engine_recovers_simulated_map(tmp_path):
    """On a simulated map of known composition (expected counts, no noise), every element line
    group with more than 1000 counts is recovered within 3 %. (The scatter peaks are not checked:
    the simulator broadens Compton by the Doppler effect, which PyMca's single-Gaussian Compton
    does not model, and the broad Compton overlaps Rayleigh.)"""
    sim = pytest.importorskip("xrfproc.core.simulate")
    from xrfproc.core.fitconfig import make_config
    from xrfproc.core.simphysics import Detector

    conc = {"Fe": np.full((4, 5), 3000.0), "Cu": np.full((4, 5), 800.0), "Zn": np.full((4, 5), 500.0),
            "Sr": np.full((4, 5), 400.0), "Pb": np.linspace(300.0, 900.0, 20).reshape(4, 5)}
    det = Detector()
    raw, truth = sim.simulate_map(conc, sim.DEMO_MATRIX, thickness_um=10.0, density=2.6, energy_keV=18.0,
                                  detectors=det, seed=3, noise=False)
    ch = next(iter(raw.channels))
    spectra = np.asarray(raw.channels[ch].spectra)
    path = make_config(tmp_path / "sim.cfg", {"Fe": "K", "Cu": "K", "Zn": "K", "Sr": "K", "Pb": ["L", "M"]}, 18.0,
                       zero=det.zero, gain=det.gain, noise=det.noise, fano=det.fano,
                       detector=("Si1", 2.33, det.si_thickness_mm / 10), window=("Be1", 1.848, det.be_window_um * 1e-4),
                       matrix={"composition": sim.DEMO_MATRIX, "density": 2.6, "thickness": 10e-4, "name": "demo"})
    model = build_model(pb.read_config(path), spectra.sum(axis=(0, 1)), nspectra=20, weight=0)
    res = fit_map(model, spectra)
    checked = 0
    for k, name in enumerate(model.names):
        expected = truth.counts_recorded[ch].get(name)
        if expected is None or name in ("Rayl", "Compt") or expected.min() <= 1000:
            continue
        assert np.all(np.abs(res.areas[..., k] / expected - 1) < 0.03), name
        checked += 1
    assert checked >= 4


def test_chi2_and_stddev_by_hand_with_continuum(steel, steel_map):
    """chi2_red = sum((y - bkg - A x)^2 / max(y, 1)) / (nchan - free columns), stddev = sqrt(diag(G_P^-1))
    on the free columns P, recomputed from the returned areas and background (continuum columns
    count as free, peak columns only when > 0)."""
    cfg, _ = steel
    cfg2 = copy.deepcopy(cfg)
    cfg2["fit"]["continuum"] = 1  # a constant continuum column, not constrained
    data = steel_map[:21]
    model = build_model(cfg2, data.sum(axis=0), nspectra=21)
    assert model.nbkg == 1
    res = fit_block(model, data, with_background=True)
    A = model.shapes
    ysub = data[:, model.i0:model.i1] - res.background
    var = np.maximum(data[:, model.i0:model.i1], 1.0)
    free = (res.areas > 0) | (np.arange(model.ncols) < model.nbkg)
    chi2 = ((ysub - res.areas @ A.T) ** 2 / var).sum(axis=1) / (model.nchan - free.sum(axis=1))
    assert np.allclose(res.chi2_red, chi2, rtol=1e-10)
    for k in range(0, 21, 5):
        w = 1.0 / np.where(np.abs(ysub[k]) > 0, np.abs(ysub[k]), 1.0)   # policy 2 weights
        P = free[k]
        G = (A[:, P] * w[:, None]).T @ A[:, P]
        assert np.allclose(res.stddev[k, P], np.sqrt(np.diag(np.linalg.inv(G))), rtol=1e-8)
        assert np.all(res.stddev[k, ~P] == 0)
