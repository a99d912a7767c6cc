"""numba for xrfproc: the one place that configures it.

Every xrfproc module with numba kernels imports numba from here (``from xrfproc.jit import numba``),
so that before numba is imported, or at least before any xrfproc kernel is decorated:

- the compiled kernels are cached in the user's cache folder, not next to the sources (where a
  clean clone, a CI checkout or a read-only install compiles them again every time):
  ``$XRFPROC_CACHE_DIR/numba`` when that variable names a folder, else
  ``$XDG_CACHE_HOME/xrfproc/numba``, else ``~/.cache/xrfproc/numba``. A ``NUMBA_CACHE_DIR`` the
  user set is kept as it is. The folder is exported as ``NUMBA_CACHE_DIR``, so child processes
  (Dask workers, the test suite's subprocesses) share it;
- compiling announces itself: the first time a kernel is compiled rather than loaded from that
  cache, one WARNING line on the ``xrfproc.jit`` logger says so before the wait (numba's
  ``numba:compile`` event, which only fires on a cache miss); later compilations in the same
  process are logged at INFO, with their duration.

:func:`warmup` (``python -m xrfproc.jit`` or ``xrfproc warmup``; ``make install`` runs it) compiles
every kernel specialisation the engine uses, on a tiny synthetic model.

``import xrfproc`` does not import this module (it imports numba).
"""
from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["numba", "cache_dir", "default_cache_dir", "warmup", "summary"]

log = logging.getLogger(__name__)

_OFF = ("", "off", "0", "no", "none")


def default_cache_dir() -> Path:
    """xrfproc's numba cache folder from ``XRFPROC_CACHE_DIR`` / ``XDG_CACHE_HOME`` / the home folder.

    ``XRFPROC_CACHE_DIR=off`` (which switches off the disk cache of fit models) does not switch off
    the kernel cache: the default folder is used then.
    """
    env = os.environ.get("XRFPROC_CACHE_DIR")
    if env is not None and env.strip().lower() not in _OFF:
        return Path(env) / "numba"
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "xrfproc" / "numba"


def cache_dir() -> Path:
    """The folder numba caches xrfproc's kernels in (``NUMBA_CACHE_DIR``, as configured here)."""
    return Path(os.environ.get("NUMBA_CACHE_DIR") or default_cache_dir())


def _configure_cache() -> None:
    if not os.environ.get("NUMBA_CACHE_DIR"):
        os.environ["NUMBA_CACHE_DIR"] = str(default_cache_dir())
    mod = sys.modules.get("numba.core.config")
    if mod is not None:
        # numba was imported before xrfproc and read the variable then; the locator of each kernel
        # reads config.CACHE_DIR when the kernel is decorated (after this), so set it here too
        mod.CACHE_DIR = os.environ["NUMBA_CACHE_DIR"]


_configure_cache()

import numba  # noqa: E402  (after NUMBA_CACHE_DIR is set: numba reads it at import)
from numba.core import event as _event  # noqa: E402


def _shown(path: Path) -> str:
    home = os.path.expanduser("~")
    text = str(path)
    return "~" + text[len(home):] if home not in ("", "/") and text.startswith(home + os.sep) else text


class _CompileListener(_event.Listener):
    """Logs when an xrfproc kernel is compiled (numba fires ``numba:compile`` only on a cache miss).

    Compilation holds numba's global compiler lock, so events arrive one at a time; callees
    compiled while their caller compiles are nested events (only the outermost one is logged).
    """

    def __init__(self) -> None:
        self.depth = 0
        self.announced = False
        self.compiled = 0  # specialisations compiled in this process (callees included)
        self._t0 = 0.0

    @staticmethod
    def _name(event: Any) -> str | None:
        disp = event.data.get("dispatcher") if isinstance(event.data, dict) else None
        func = getattr(disp, "py_func", None)
        module = getattr(func, "__module__", "") or ""
        if not module.startswith("xrfproc."):
            return None
        return f"{module}.{func.__qualname__}"

    def on_start(self, event: Any) -> None:
        name = self._name(event)
        if name is None:
            return
        self.compiled += 1
        self.depth += 1
        if self.depth > 1:
            return
        self._t0 = time.perf_counter()
        if not self.announced:
            self.announced = True
            # times measured on the 2-core development machine: fit kernel 20-30 s, refine 11-23 s per
            # spectra dtype; `python -m xrfproc.jit` 3.5-5.5 min for all, depending on the load
            log.warning("compiling the fit engine's numba kernels (first use on this machine or after an update: "
                        "20-60 s per spectra dtype, once; cached in %s; `xrfproc warmup` compiles all of them "
                        "ahead, 4-5 min)", _shown(cache_dir()))
        log.info("compiling %s%s", name, tuple(event.data.get("args", ())))

    def on_end(self, event: Any) -> None:
        name = self._name(event)
        if name is None:
            return
        self.depth = max(self.depth - 1, 0)
        if self.depth == 0:
            log.info("compiled %s in %.1f s", name, time.perf_counter() - self._t0)


_listener = _CompileListener()
if __name__ != "__main__":  # run as ``python -m xrfproc.jit``, the kernels import the module xrfproc.jit
    _event.register("numba:compile", _listener)


# ----------------------------------------------------------------------------- warm-up
#: spectra dtypes the engine reads natively (xrfproc.core.fit_engine._NATIVE): one specialisation each
_DTYPES = ("float64", "float32", "uint16", "int32", "uint32", "int64")


def _tiny_model():
    """A 64-channel hypermet model with a constant continuum, two groups and pile-up settings.

    The same field types and layouts as :func:`xrfproc.core.fit_model.build_model` gives, so the
    kernels compile for the signatures of a real fit; no PyMca involved.
    """
    import numpy as np

    from xrfproc.core.fit_model import EngineModel, group_shapes

    i0, i1, nbins = 4, 60, 64
    n = i1 - i0
    line_energy = np.array([0.20, 0.22, 0.40, 0.40 - 0.1], dtype=np.float64)  # keV (the last: an escape peak)
    model = EngineModel(
        names=["Constant", "A K", "B K"], nbkg=1, i0=i0, i1=i1, shapes=np.zeros((n, 3)), nbins=nbins,
        snip=True, snipwidth=8, filter_points=3, anchors=np.array([0, n - 1], dtype=np.int64),
        weight_policy=2, sigma_avg=None, theta=np.array([0.0, 0.01, 0.02, 0.11], dtype=np.float64),
        theta_fixed=np.zeros(4, dtype=bool), theta_delta=np.array([0.005, 0.0002, 0.005, 0.02]),
        hypermet=1 | 2 | 4 | 8, tails=np.array([0.05, 0.9, 0.02, 5.0, 0.001], dtype=np.float64),
        line_group=np.array([1, 1, 2, 2], dtype=np.int64), line_rate=np.array([0.8, 0.2, 0.99, 0.01]),
        line_energy=line_energy, line_escape=np.array([False, False, False, True], dtype=np.bool_),
        extra={"pileup": {"value": 1e-6, "fixed": False, "delta": 1e-6}},
    )
    shapes, _ = group_shapes(model)
    shapes[:, 0] = 1.0
    model.shapes = np.ascontiguousarray(shapes)
    return model


def warmup() -> dict[str, Any]:
    """Compile (or load from the cache) every kernel specialisation xrfproc uses.

    The engine's fit and refine for each spectra dtype it reads natively, the block SNIP,
    ``snip1d``, Savitzky-Golay, the group shapes (with derivatives), pile-up and the batched NNLS,
    all on tiny inputs.

    Returns
    -------
    dict
        ``compiled``: specialisations compiled now (0 when the cache was warm), ``seconds``,
        ``cache_dir``.
    """
    import numpy as np

    from xrfproc.core import fit_engine, fit_model, fit_refine, nnls, snip

    t0 = time.perf_counter()
    before = _listener.compiled
    model = _tiny_model()
    rng = np.random.default_rng(0)
    clean = 5.0 + model.shapes @ np.array([0.0, 800.0, 400.0])
    y = np.zeros((16, model.nbins))  # 16 spectra: two chunks of the fused kernel
    y[:, model.i0:model.i1] = rng.poisson(np.broadcast_to(clean, (16, model.nchan)))
    for dtype in _DTYPES:
        fit_engine.fit_block(model, y.astype(dtype), refine=True, with_background=True, max_iter=2)
    snip.snip_background(y, 8, window=(model.i0, model.i1), filter_width=3, full_fit=True)
    snip.snip1d(y[0], 8)
    snip.savitzky_golay(y[0], 5)
    fit_model.group_shapes(model, derivatives=True)
    fit_refine.pileup(clean, model.i0, 0.0, 0.01)
    G = model.shapes.T @ model.shapes
    nnls.nnls_gram(G[None], (model.shapes.T @ clean)[None])
    return {"compiled": _listener.compiled - before, "seconds": time.perf_counter() - t0,
            "cache_dir": str(cache_dir())}


def main(argv: list[str] | None = None) -> int:
    """``python -m xrfproc.jit``: compile every kernel into the cache and say what it did."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m xrfproc.jit", description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    print(summary(warmup()))
    return 0


def summary(result: dict[str, Any]) -> str:
    """One line about a :func:`warmup` result."""
    where = _shown(Path(result["cache_dir"]))
    if result["compiled"]:
        return f"compiled {result['compiled']} kernel specialisations in {result['seconds']:.1f} s (cached in {where})"
    return f"all kernels already compiled (loaded from {where} in {result['seconds']:.1f} s)"


if __name__ == "__main__":
    from xrfproc import jit as _jit  # the module the kernels import (this copy runs as __main__)

    sys.exit(_jit.main())
