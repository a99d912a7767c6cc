"""The fit step with PyMca5: layout written, equality with PyMca's own fits, modes, bad input."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import store
from xrfproc.core import fit as core_fit
from xrfproc.core import fitconfig, pymca_bridge
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import ConfigError, InputError
from xrfproc.steps.fit import fit

from PyMca5.PyMcaIO import ConfigDict
from PyMca5.PyMcaPhysics.xrf import ClassMcaTheory, FastXRFLinearFit
from _shared import CHECK_LAYOUT, PYTHON

DATA = pymca_bridge.PYMCA_DATA_DIR
CHECK = [PYTHON, str(CHECK_LAYOUT)]


def steel() -> np.ndarray:
    return pymca_bridge.read_spectrum_file(DATA / "Steel.spe")


def snip_cfg(tmp: Path) -> Path:
    cfg = pymca_bridge.read_config(DATA / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1
    return pymca_bridge.write_config(cfg, tmp / "steel_snip.cfg")


def make_map(path: Path, rows: int = 6, cols: int = 8, seed: int = 0, dtype=np.int32, icr=None, ocr=None,
             spectra=None) -> Path:
    rng = np.random.default_rng(seed)
    if spectra is None:
        scale = np.linspace(0.005, 0.015, rows * cols).reshape(rows, cols)
        spectra = rng.poisson(scale[..., None] * steel()).astype(dtype)
    grid = spectra.shape[:-1]
    icr = np.full(grid, 1.25e4) if icr is None else icr
    ocr = np.full(grid, 1.0e4) if ocr is None else ocr
    raw = RawMap(channels={"channel00": RawChannel(spectra, icr, ocr, (-0.0061, 0.01193, 0.0))},
                 I0=np.ones(grid), acquisition_time=np.ones(grid), mot1=np.zeros(grid), mot2=np.zeros(grid),
                 energy_keV=16.0)
    return store.write_raw(path, raw)


def digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fast")
    cfg = snip_cfg(tmp)
    h5 = make_map(tmp / "map.h5")
    calls = []
    summary = fit(h5, cfg, progress=lambda d, t, m="": calls.append((d, t)))
    return tmp, h5, cfg, summary, calls


def test_fast_fit_writes_the_layout(fitted):
    tmp, h5, cfg, summary, calls = fitted
    with h5py.File(h5, "r") as f:
        g = f["fit/channel00"]
        for key in ("cfg", "ims", "names", "sum/int", "sum/bkg", "stddev", "chi2"):
            assert key in g, key
        names = store.decode_names(g["names"][()])
        assert names[-2:] == ["Rayl", "Compt"] and not any(n.startswith("Scatter") for n in names)
        assert "Fe Ka" in names and "Cr K" in names
        assert g["ims"].shape == (len(names), 6, 8)
        assert g["stddev"].shape == g["ims"].shape and g["chi2"].shape == (6, 8)
        assert g["sum/int"].shape == g["sum/bkg"].shape == (len(names),)
        assert g["cfg"][()].decode() == str(cfg)
        assert g.attrs["deadtime_corrected"] == 1
        assert np.all(g["sum/bkg"][()] >= 0)
        # Poisson data fitted with the right model: reduced chi-square near 1
        assert 0.3 < np.median(g["chi2"][()]) < 2.0
    res = subprocess.run(CHECK + [str(h5)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    ch = summary["channels"]["channel00"]
    assert ch["names"] == names and ch["shape"] == [len(names), 6, 8] and ch["failed"] == 0
    assert ch["lines"]["Fe Ka"]["min"] < ch["lines"]["Fe Ka"]["median"] < ch["lines"]["Fe Ka"]["max"]
    assert calls and calls[-1][0] == calls[-1][1] == 48


def test_fast_maps_equal_pymca_direct(tmp_path):
    cfg = snip_cfg(tmp_path)
    h5 = make_map(tmp_path / "m.h5", rows=5, cols=7, seed=3)
    # PyMca's own behaviour: the configuration's calibration and weights (Steel.cfg: fitweight -> policy 2)
    fit(h5, cfg, deadtime=False, calibration="config", weight=2, background="snip")
    with h5py.File(h5, "r") as f:
        spectra = f["raw/channel00/spectra"][()].reshape(-1, 2048).astype(np.float64)
        ysum = f["raw/channel00/sumspec"][()]
        ims = f["fit/channel00/ims"][()]
        std = f["fit/channel00/stddev"][()]
        names = store.decode_names(f["fit/channel00/names"][()])
    c = ConfigDict.ConfigDict()
    c.read(str(cfg))
    out = FastXRFLinearFit.FastXRFLinearFit().fitMultipleSpectra(y=spectra, ysum=ysum, configuration=c,
                                                                  refit=True, save=False)
    labels = list(out.labels("parameters"))
    assert [pymca_bridge.rename_group(x) for x in labels] == names
    np.testing.assert_allclose(ims.reshape(len(names), -1), out["parameters"], rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(std.reshape(len(names), -1), out["uncertainties"], rtol=1e-12, atol=1e-9)


def test_deadtime_by_icr_over_ocr_and_ocr_zero_is_missing(tmp_path):
    cfg = snip_cfg(tmp_path)
    icr = np.full((3, 4), 1.5e4)
    ocr = np.full((3, 4), 1.0e4)
    ocr[1, 2] = 0.0
    h5 = make_map(tmp_path / "d.h5", rows=3, cols=4, icr=icr, ocr=ocr)
    s = fit(h5, cfg, deadtime=False)
    with h5py.File(h5, "r") as f:
        plain = f["fit/channel00/ims"][()]
        plain_sum = f["fit/channel00/sum/int"][()]
    s = fit(h5, cfg)
    with h5py.File(h5, "r") as f:
        corr = f["fit/channel00/ims"][()]
        corr_sum = f["fit/channel00/sum/int"][()]
    assert np.isnan(corr[:, 1, 2]).all()
    ok = np.ones((3, 4), bool)
    ok[1, 2] = False
    np.testing.assert_allclose(corr[:, ok], 1.5 * plain[:, ok], rtol=1e-12)
    # sums by sum(icr)/sum(ocr) over the valid pixels
    np.testing.assert_allclose(corr_sum, 1.5 * plain_sum, rtol=1e-12)
    assert s["channels"]["channel00"]["deadtime_missing"] == 1


@pytest.mark.parametrize("spec,cfgname", [("Steel.spe", "Steel.cfg")])
def test_sum_spectrum_equals_pymca_own_fit(spec, cfgname):
    y = pymca_bridge.read_spectrum_file(DATA / spec)
    c = ConfigDict.ConfigDict()
    c.read(str(DATA / cfgname))
    ours = core_fit.fit_sum_spectrum(y, c)
    th = ClassMcaTheory.ClassMcaTheory()
    conf = th.configure(c)
    th.setData(np.arange(y.size, dtype=float), y, xmin=conf["fit"]["xmin"], xmax=conf["fit"]["xmax"])
    th.estimate()
    _, res = th.startFit(digest=1)
    assert ours.names == [pymca_bridge.rename_group(g) for g in res["groups"]]
    np.testing.assert_allclose(ours.int, [res[g]["fitarea"] for g in res["groups"]], rtol=1e-10)
    np.testing.assert_allclose(ours.bkg, [res[g]["statistics"] - res[g]["fitarea"] for g in res["groups"]],
                               rtol=1e-10)
    assert ours.chisq == pytest.approx(res["chisq"], rel=1e-12)


def test_sum_spectrum_xrfspectrum_with_mcatheory_cfg(tmp_path):
    y = pymca_bridge.read_spectrum_file(DATA / "XRFSpectrum.mca")
    shipped = pymca_bridge.read_config(DATA / "McaTheory.cfg")
    # McaTheory.cfg as shipped lists no peaks and no energy: a clear error, not a singular-matrix trace
    with pytest.raises(ConfigError, match="nothing to fit|no excitation energy"):
        fitconfig.check_config(shipped, mode="precise", nbins=y.size)
    # with the lines and calibration of PyMca's own training test of this spectrum
    from PyMca5.tests import XrfTest
    train = pymca_bridge.config_from_text(XrfTest.cfg)
    shipped["peaks"] = train["peaks"]
    shipped["fit"]["energy"] = [17.5]
    for key in ("zero", "gain", "noise", "fano"):
        shipped["detector"][key] = train["detector"][key]
    shipped["fit"].update(xmin=train["fit"]["xmin"], xmax=train["fit"]["xmax"], stripflag=1, stripalgorithm=1)
    path = pymca_bridge.write_config(shipped, tmp_path / "mcatheory_peaks.cfg")
    cfg = fitconfig.read_config(path, mode="fast", nbins=y.size)
    ours = core_fit.fit_sum_spectrum(y, cfg.config)
    c = ConfigDict.ConfigDict()
    c.read(str(path))
    th = ClassMcaTheory.ClassMcaTheory()
    conf = th.configure(c)
    th.setData(np.arange(y.size, dtype=float), y, xmin=conf["fit"]["xmin"], xmax=conf["fit"]["xmax"])
    th.estimate()
    _, res = th.startFit(digest=1)
    np.testing.assert_allclose(ours.int, [res[g]["fitarea"] for g in res["groups"]], rtol=1e-10)
    np.testing.assert_allclose(ours.bkg, [res[g]["statistics"] - res[g]["fitarea"] for g in res["groups"]],
                               rtol=1e-10)
    assert "Co K" in ours.names and ours.int[ours.names.index("Co K")] > 1e4


def test_non_snip_config_in_fast_mode_is_refused_and_file_unchanged(tmp_path):
    h5 = make_map(tmp_path / "n.h5", rows=2, cols=3)
    before = digest(h5)
    with pytest.raises(ConfigError) as err:
        fit(h5, DATA / "Steel.cfg", mode="fast")
    msg = str(err.value)
    assert "Steel.cfg" in msg and "set [fit] stripalgorithm = 1 (SNIP)" in msg
    assert digest(h5) == before
    with h5py.File(h5, "r") as f:
        assert "fit" not in f and f["raw/channel00/spectra"].shape == (2, 3, 2048)


def test_precise_agrees_with_fast_and_uses_processes(tmp_path):
    cfg = snip_cfg(tmp_path)
    h5 = make_map(tmp_path / "p.h5", rows=2, cols=2, seed=5)
    fit(h5, cfg, mode="fast")
    with h5py.File(h5, "r") as f:
        fast = f["fit/channel00/ims"][()]
        names = store.decode_names(f["fit/channel00/names"][()])
    s = fit(h5, cfg, mode="precise", n_workers=2, scheduler="processes")
    with h5py.File(h5, "r") as f:
        precise = f["fit/channel00/ims"][()]
        assert f["fit/channel00"].attrs["mode"] == "precise"
        assert store.decode_names(f["fit/channel00/names"][()]) == names
    assert s["channels"]["channel00"]["failed"] == 0
    with h5py.File(h5, "r") as f:
        sigma = f["fit/channel00/stddev"][()]
    big = fast > 1000
    assert big.sum() >= 4 * 4
    # every line above 1000 counts: within 3 % or, for lines under a stronger neighbour (Mn K under
    # Cr Kb), within 3 sigma of their fit uncertainty
    diff = np.abs(precise - fast)
    assert np.all((diff[big] < 0.03 * fast[big]) | (diff[big] < 3 * sigma[big])), (diff / fast)[big].max()
    for line in ("Cr K", "Fe Ka", "Ni K"):
        i = names.index(line)
        np.testing.assert_allclose(precise[i], fast[i], rtol=0.02)


def test_precise_failed_pixel_is_nan_and_counted(tmp_path, monkeypatch):
    cfg = snip_cfg(tmp_path)
    rng = np.random.default_rng(2)
    spectra = rng.poisson(0.01 * steel(), size=(1, 3, 2048)).astype(np.int32)
    spectra[0, 2] = 0  # no counts: skipped, areas 0
    h5 = make_map(tmp_path / "f.h5", spectra=spectra)
    original = pymca_bridge.SpectrumFitter.fit
    target = spectra[0, 1].astype(np.float64)

    def flaky(self, y, digest=False, sigmay=None):
        if np.array_equal(y, target):
            raise np.linalg.LinAlgError("Singular matrix")
        return original(self, y, digest, sigmay)

    monkeypatch.setattr(pymca_bridge.SpectrumFitter, "fit", flaky)
    s = fit(h5, cfg, mode="precise", scheduler="sync", background="snip")  # PyMca sees the raw spectra
    with h5py.File(h5, "r") as f:
        ims = f["fit/channel00/ims"][()]
    assert np.isnan(ims[:, 0, 1]).all()
    assert np.isfinite(ims[:, 0, 0]).all() and ims[:, 0, 0].max() > 100
    assert (ims[:, 0, 2] == 0).all()
    assert s["channels"]["channel00"]["failed"] == 1
    assert any("could not be fitted" in w for w in s["channels"]["channel00"]["warnings"])


# --------------------------------------------------------------------------- bad input
def test_missing_cfg_and_wrong_cfg_count(tmp_path):
    h5 = make_map(tmp_path / "b.h5", rows=2, cols=2)
    with pytest.raises(ConfigError, match="not found"):
        fit(h5, tmp_path / "nope.cfg")
    cfg = snip_cfg(tmp_path)
    with pytest.raises(ConfigError, match="2 fit configurations for 1 detector channels"):
        fit(h5, [cfg, cfg])
    with pytest.raises(InputError, match="channel03"):
        fit(h5, cfg, channel=3)
    with pytest.raises(InputError, match="mode"):
        fit(h5, cfg, mode="turbo")


def test_cfg_for_another_channel_count(tmp_path):
    h5 = make_map(tmp_path / "c.h5", rows=1, cols=2,
                  spectra=np.random.default_rng(0).poisson(5.0, size=(1, 2, 512)).astype(np.int32))
    before = digest(h5)
    with pytest.raises(ConfigError, match="512 channels"):
        fit(h5, snip_cfg(tmp_path))
    assert digest(h5) == before


def test_empty_map_is_an_error_and_file_unchanged(tmp_path):
    h5 = make_map(tmp_path / "e.h5", spectra=np.zeros((2, 2, 2048), np.int32))
    before = digest(h5)
    with pytest.raises(InputError, match="no counts"):
        fit(h5, snip_cfg(tmp_path))
    assert digest(h5) == before


def test_one_pixel_map(tmp_path):
    h5 = make_map(tmp_path / "one.h5", rows=1, cols=1)
    s = fit(h5, snip_cfg(tmp_path))
    with h5py.File(h5, "r") as f:
        ims = f["fit/channel00/ims"][()]
        sums = f["fit/channel00/sum/int"][()]
    names = s["channels"]["channel00"]["names"]
    assert ims.shape == (len(names), 1, 1)
    i = names.index("Fe Ka")
    # one pixel: its fast fit and the full fit of the (same) sum spectrum agree closely (x1.25 dead time)
    assert ims[i, 0, 0] == pytest.approx(sums[i], rel=0.02)


def test_nan_counts_give_nan_pixels_and_negative_counts_an_error(tmp_path):
    rng = np.random.default_rng(4)
    spectra = rng.poisson(0.01 * steel(), size=(2, 2, 2048)).astype(np.float32)
    spectra[1, 1, 100] = np.nan
    h5 = make_map(tmp_path / "nan.h5", spectra=spectra)
    s = fit(h5, snip_cfg(tmp_path))
    with h5py.File(h5, "r") as f:
        ims = f["fit/channel00/ims"][()]
    assert np.isnan(ims[:, 1, 1]).all() and np.isfinite(ims[:, :1]).all()
    assert s["channels"]["channel00"]["invalid"] == 1
    spectra = rng.poisson(0.01 * steel(), size=(2, 2, 2048)).astype(np.float32)
    # converters refuse negative counts (store.write_raw); a file written by another program may hold them
    bad = spectra.copy()
    bad[0, 1, 300] = -5
    with pytest.raises(InputError, match="negative counts"):
        make_map(tmp_path / "refused.h5", spectra=bad)
    h5 = make_map(tmp_path / "neg.h5", spectra=spectra)
    with h5py.File(h5, "r") as f:
        link = f["raw/channel00"].get("spectra", getlink=True)
    with h5py.File(h5.parent / link.filename, "r+") as bulk:
        bulk[link.path][0, 1, 300] = -5
    before = digest(h5)
    with pytest.raises(InputError, match="negative counts"):
        fit(h5, snip_cfg(tmp_path))
    assert digest(h5) == before


def test_refitting_one_channel_keeps_the_file_valid(tmp_path):
    cfg = snip_cfg(tmp_path)
    h5 = make_map(tmp_path / "r.h5", rows=2, cols=2)
    fit(h5, cfg)
    s = fit(h5, cfg, channel="channel00")
    assert list(s["channels"]) == ["channel00"]
    assert subprocess.run(CHECK + [str(h5)], capture_output=True).returncode == 0


def test_engine_mode_goes_through_the_hook(tmp_path):
    import importlib.util

    cfg = snip_cfg(tmp_path)
    h5 = make_map(tmp_path / "g.h5", rows=2, cols=3)
    if importlib.util.find_spec("xrfproc.core.fit_engine") is None:
        with pytest.raises(InputError, match="engine"):
            fit(h5, cfg, mode="engine")
        return
    # the same fit both ways: PyMca's per-pixel SNIP and its average weights (policy 1)
    fit(h5, cfg, mode="fast", weight=1, calibration="config", background="snip")
    with h5py.File(h5, "r") as f:
        fast = f["fit/channel00/ims"][()]
    s = fit(h5, cfg, mode="engine", weight=1, background="snip", calibration="config")
    with h5py.File(h5, "r") as f:
        eng = f["fit/channel00/ims"][()]
        assert store.decode_names(f["fit/channel00/names"][()])[-2:] == ["Rayl", "Compt"]
    assert s["channels"]["channel00"]["failed"] == 0
    np.testing.assert_allclose(eng, fast, rtol=1e-6, atol=1e-6)
