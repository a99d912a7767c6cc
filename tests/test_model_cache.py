"""The engine's model cache (``xrfproc.core.model_cache``): keyed by the configuration only, safe on damage.

Ground truth: PyMca's own fast-fit model built afresh (cache off) from unrelated spectra.
"""
from __future__ import annotations

import copy

import numpy as np
import pytest

from xrfproc.core import model_cache
from xrfproc.core import pymca_bridge as pb
from xrfproc.core.fit_model import build_model


@pytest.fixture(scope="module")
def steel():
    cfg = pb.read_config(pb.PYMCA_DATA_DIR / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1
    return cfg, pb.read_spectrum_file(pb.PYMCA_DATA_DIR / "Steel.spe")


def _same(a, b):
    assert a.names == b.names and (a.i0, a.i1, a.nbkg, a.weight_policy) == (b.i0, b.i1, b.nbkg, b.weight_policy)
    for key in ("shapes", "anchors", "theta", "theta_fixed", "theta_delta", "tails", "line_group", "line_rate",
                "line_energy", "line_escape"):
        assert np.array_equal(getattr(a, key), getattr(b, key)), key


@pytest.mark.parametrize("hypermet", [1, 15])
def test_pymca_model_does_not_depend_on_the_spectra(steel, monkeypatch, hypermet):
    """What makes a configuration-keyed cache valid: two unrelated sum spectra give the same model."""
    monkeypatch.setenv("XRFPROC_CACHE_DIR", "off")
    model_cache.clear_memory()
    cfg, y = copy.deepcopy(steel[0]), steel[1]
    cfg["fit"]["hypermetflag"] = hypermet
    rng = np.random.default_rng(3)
    other = rng.poisson(y[::-1] * 0.01 + 3).astype(float)  # reversed, scaled, noisy: nothing alike
    a = build_model(cfg, y)
    model_cache.clear_memory()
    _same(a, build_model(cfg, other))


def test_cache_hit_equals_fresh_build_and_sees_config_changes(steel, tmp_path, monkeypatch):
    monkeypatch.setenv("XRFPROC_CACHE_DIR", str(tmp_path))
    model_cache.clear_memory()
    cfg, y = steel
    calls = []
    real = pb.engine_model_inputs
    monkeypatch.setattr(pb, "engine_model_inputs", lambda *a, **k: calls.append(1) or real(*a, **k))
    fresh = build_model(cfg, y)
    assert len(calls) == 1 and len(list(tmp_path.glob("*.npz"))) == 1
    _same(fresh, build_model(cfg, y))  # memory
    model_cache.clear_memory()
    from_disk = build_model(cfg, y)  # disk
    assert len(calls) == 1
    _same(fresh, from_disk)
    # the pile-up settings refine fits (Steel.cfg fits pile-up) travel with every model
    assert from_disk.extra["pileup"] == fresh.extra["pileup"] == {
        "value": float(cfg["detector"]["sum"]), "fixed": bool(cfg["detector"]["fixedsum"]),
        "delta": abs(float(cfg["detector"]["deltasum"]))}
    # another calibration is another model
    cfg2 = copy.deepcopy(cfg)
    cfg2["detector"]["gain"] *= 1.001
    shifted = build_model(cfg2, y)
    assert len(calls) == 2 and not np.array_equal(shifted.shapes, fresh.shapes)
    # another weight policy and another channel count are other keys too
    build_model(cfg, y, weight=0)
    build_model(cfg, np.concatenate([y, y[:8]]))
    assert len(calls) == 4 and len(list(tmp_path.glob("*.npz"))) == 4


def test_damaged_cache_file_is_rebuilt(steel, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("XRFPROC_CACHE_DIR", str(tmp_path))
    model_cache.clear_memory()
    cfg, y = steel
    fresh = build_model(cfg, y)
    (path,) = tmp_path.glob("*.npz")
    path.write_bytes(b"not a zip file at all")
    model_cache.clear_memory()
    _same(fresh, build_model(cfg, y))
    assert "damaged model cache" in caplog.text
    model_cache.clear_memory()
    _same(fresh, build_model(cfg, y))  # rewritten, now loads cleanly


def test_cache_off_and_unwritable_folder(steel, tmp_path, monkeypatch):
    cfg, y = steel
    monkeypatch.setenv("XRFPROC_CACHE_DIR", "off")
    assert model_cache.cache_dir() is None
    blocker = tmp_path / "file"
    blocker.write_text("a file where the folder should be")
    monkeypatch.setenv("XRFPROC_CACHE_DIR", str(blocker / "models"))
    model_cache.clear_memory()
    assert build_model(cfg, y).names  # no error: the cache is only an optimisation
    assert not (blocker / "models").exists()


def test_key_covers_whole_arrays():
    """numpy's repr elides long arrays; the key must not."""
    a = {"fit": {"list": np.zeros(5000)}}
    b = copy.deepcopy(a)
    b["fit"]["list"][2500] = 1.0
    assert model_cache.model_key(a, 2048, None, "v") != model_cache.model_key(b, 2048, None, "v")
    assert model_cache.model_key(a, 2048, None, "v") != model_cache.model_key(a, 2048, None, "w")
