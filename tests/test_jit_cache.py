"""The numba kernels are cached in the user's cache folder, compile once, and say so when they do.

The slow test runs fresh interpreters with ``XRFPROC_CACHE_DIR`` pointing to an empty folder (and no
``NUMBA_CACHE_DIR``, which the suite's conftest exports to every child), so they start cold.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import xrfproc
from xrfproc import jit

PACKAGE = Path(xrfproc.__file__).parent
COMPILING = "compiling the fit engine's numba kernels"

# a small engine fit on PyMca's Steel example (2048 channels), as a user's first fit would be;
# with "all", every spectra dtype the engine reads natively, with refine, and the other kernels
_FIT = textwrap.dedent("""
    import logging, sys
    import numpy as np
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("xrfproc.jit").setLevel(logging.INFO)  # name every kernel that compiles
    from xrfproc.core import fit_model, pymca_bridge as pb
    from xrfproc.core.fit_engine import build_model, fit_block
    from xrfproc.core.snip import snip1d, snip_background, savitzky_golay
    cfg = pb.read_config(pb.PYMCA_DATA_DIR / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1
    y = pb.read_spectrum_file(pb.PYMCA_DATA_DIR / "Steel.spe")
    spectra = np.random.default_rng(0).poisson(np.outer([0.01, 0.02, 0.05, 0.1, 0.2] * 2, y))
    model = build_model(cfg, spectra.sum(axis=0), weight=0)
    if sys.argv[1] == "one":
        res = fit_block(model, spectra.astype(np.float64))
        assert np.isfinite(res.areas).all()
    else:
        for dtype in ("float64", "float32", "uint16", "int32", "uint32", "int64"):
            res = fit_block(model, spectra.astype(dtype), refine=True, with_background=True, max_iter=3)
            assert np.isfinite(res.areas).all(), dtype
        fit_model.group_shapes(model, derivatives=True)
        # as xrfproc.core.spectrum_model calls it (float64)
        snip_background(y[None], 30, window=(model.i0, model.i1), filter_width=5, full_fit=True)
        snip1d(y, 30)
        savitzky_golay(y, 5)
    print("done")
""")


def _env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env["XRFPROC_CACHE_DIR"] = str(folder)
    return env


def _run(args: list[str], folder: Path) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, *args], env=_env(folder), capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def _cache_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.suffix in (".nbi", ".nbc")}


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("NUMBA_CACHE_DIR", raising=False)
    monkeypatch.setenv("XRFPROC_CACHE_DIR", str(tmp_path))
    assert jit.default_cache_dir() == tmp_path / "numba" == jit.cache_dir()
    monkeypatch.setenv("XRFPROC_CACHE_DIR", "off")  # switches off the model cache only
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert jit.default_cache_dir() == tmp_path / "xdg" / "xrfproc" / "numba"
    monkeypatch.delenv("XRFPROC_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert jit.default_cache_dir() == Path.home() / ".cache" / "xrfproc" / "numba"
    monkeypatch.setenv("NUMBA_CACHE_DIR", str(tmp_path / "mine"))  # the user's own setting wins
    assert jit.cache_dir() == tmp_path / "mine"


def test_user_numba_cache_dir_is_kept(tmp_path):
    code = "import xrfproc.core.snip, numba; print(numba.config.CACHE_DIR)"
    env = {**_env(tmp_path / "x"), "NUMBA_CACHE_DIR": str(tmp_path / "mine")}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(tmp_path / "mine")
    # numba imported before xrfproc: the kernels still go to xrfproc's folder
    code = "import numba, xrfproc.core.snip; print(numba.config.CACHE_DIR)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path / "x"), capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == str(tmp_path / "x" / "numba")


def test_numba_is_imported_only_through_xrfproc_jit():
    offenders = []
    for path in PACKAGE.rglob("*.py"):
        if path.name == "jit.py" and path.parent == PACKAGE:
            continue
        text = path.read_text(encoding="utf8")
        if re.search(r"^\s*(import numba\b|from numba\b)", text, re.M):
            offenders.append(str(path.relative_to(PACKAGE)))
    assert not offenders, f"import numba through xrfproc.jit in {offenders}"


def test_import_xrfproc_does_not_import_numba():
    code = "import sys, xrfproc; print(sorted({'numba', 'xrfproc.jit'} & set(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_kernels_compile_once_into_the_user_cache_and_say_so(tmp_path):
    folder = tmp_path / "cache"
    numba_dir = folder / "numba"
    in_tree = _cache_files(PACKAGE)
    # 1. cold: a small engine fit compiles, says so on stderr, and writes the cache in the user's folder
    first = _run(["-c", _FIT, "one"], folder)
    assert first.stdout.strip() == "done"
    assert COMPILING in first.stderr and str(numba_dir) in first.stderr, first.stderr
    written = _cache_files(numba_dir)
    assert any(p.name.startswith("fit_kernel.fit_chunks") for p in written), sorted(p.name for p in written)
    assert _cache_files(PACKAGE) <= in_tree, "numba wrote cache files next to the sources"
    # 2. warm: the same fit in a new process loads every kernel, silently
    second = _run(["-c", _FIT, "one"], folder)
    assert second.stdout.strip() == "done" and COMPILING not in second.stderr, second.stderr
    # 3. after the warm-up (in the user's cache, which `make install` warms: compiling everything into
    #    an empty folder again would cost minutes), a real model's fits of every native dtype (with
    #    refine) and the other kernels compile nothing: the warm-up covers their signatures
    env = dict(os.environ)  # the suite's NUMBA_CACHE_DIR: the user's cache (tests/conftest.py)
    for args in (["-m", "xrfproc.jit"], ["-m", "xrfproc.jit"]):
        again = subprocess.run([sys.executable, *args], env=env, capture_output=True, text=True, timeout=1200)
        assert again.returncode == 0, again.stderr[-3000:]
    assert "all kernels already compiled" in again.stdout and COMPILING not in again.stderr, again.stderr
    every = subprocess.run([sys.executable, "-c", _FIT, "all"], env=env, capture_output=True, text=True, timeout=1200)
    assert every.stdout.strip() == "done" and COMPILING not in every.stderr, every.stderr
    assert _cache_files(PACKAGE) <= in_tree
