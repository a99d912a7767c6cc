"""Benchmark of the normalisation step against the fit: pixels per second on the same map.

A ``side x side`` map made from PyMca's ``Steel.spe`` (``bench/fit.py``'s :func:`resampled_map`,
Steel.cfg with the SNIP background: 13 element groups + Rayleigh + Compton) is written with
snake-scan motor positions (every other row driven backwards, positions lagging half a step, a
``dmesh`` command; encoder readings scattered by ``--jitter`` steps, default 0.01, so the regridding
triangulates; ``--jitter 0`` puts every shifted point on the grid, where no triangulation is needed)
and an I0 that fluctuates by 5 %. Then, each timed once after a warm-up on a
small map (imports and JIT compilation excluded):

- ``fit``: :func:`xrfproc.api.fit` in ``engine`` mode (default; ``--mode fast`` for PyMca's fast fit);
- ``normalise plain``: I0 normalisation, no regridding;
- ``normalise snake``: I0 normalisation and regridding onto the regular grid (``method``
  linear, the default), half-pixel shift.

Both steps end with their atomic write of the file (``fit/``, ``norm/``). Printed: seconds,
pixels/s, and each normalisation's speed relative to the fit (the issue asks for at least 1x).

Usage::

    .venv/bin/python bench/normalise.py [--side 300] [--mode engine] [--method linear] [--jitter 0.01] [--dir /tmp]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fit import resampled_map, steel  # noqa: E402  (bench/fit.py)
from scale import _config  # noqa: E402  (bench/scale.py: Steel.cfg with the SNIP background)

from xrfproc import api, store  # noqa: E402
from xrfproc.core.rawmap import RawChannel, RawMap  # noqa: E402


def snake_map(path: Path, side: int, y: np.ndarray, seed: int = 0, jitter: float = 0.01) -> Path:
    """Write a ``side x side`` snake scan of Steel.spe spectra (uint16) with half-step lagging positions
    scattered by ``jitter`` steps (encoder readings)."""
    grid = (side, side)
    spectra = resampled_map(y, side, seed=seed).reshape(side, side, -1)
    rng = np.random.default_rng(seed)
    step = 1.0
    centres = np.arange(side) * step
    mot2 = np.empty(grid)
    for r in range(side):
        forward = r % 2 == 0
        mot2[r] = (centres - step / 2) if forward else (centres[::-1] + step / 2)
    mot1 = np.repeat(np.arange(side, dtype=np.float64)[:, None], side, axis=1)
    if jitter:
        mot1 = mot1 + rng.normal(0, jitter * step, grid)
        mot2 = mot2 + rng.normal(0, jitter * step, grid)
    raw = RawMap({"channel00": RawChannel(spectra, np.full(grid, 1.25e4), np.full(grid, 1.0e4),
                                          (-0.0061, 0.01193, 0.0))},
                 I0=1e5 * rng.uniform(0.95, 1.05, grid), acquisition_time=np.full(grid, 0.1), mot1=mot1, mot2=mot2,
                 cmd=f"dmesh hrz 0 {side - 1} {side - 1} hry 0 {side - 1} {side - 1} 0.1", energy_keV=16.0)
    return store.write_raw(path, raw)


def timed(func, *args, **kwargs) -> tuple[float, dict]:
    t0 = time.perf_counter()
    out = func(*args, **kwargs)
    return time.perf_counter() - t0, out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--side", type=int, default=300, help="map side in pixels (default 300)")
    ap.add_argument("--mode", default="engine", choices=["engine", "fast"], help="fit mode (default engine)")
    ap.add_argument("--method", default="linear", choices=["nearest", "linear", "cubic"],
                    help="regridding interpolation of the snake normalisation (default linear)")
    ap.add_argument("--jitter", type=float, default=0.01, help="scatter of the positions in steps (default 0.01)")
    ap.add_argument("--dir", default=None, help="working folder (default a temporary one, removed)")
    args = ap.parse_args(argv)
    _, y = steel()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp)
        cfg = _config(folder)
        warm = snake_map(folder / "warm.h5", 8, y, jitter=args.jitter)
        api.fit(warm, cfg, mode=args.mode)
        api.normalise(warm, snake=True, method=args.method)
        path = snake_map(folder / "map.h5", args.side, y, jitter=args.jitter)
        npix = args.side * args.side
        t_fit, s = timed(api.fit, path, cfg, mode=args.mode)
        nlines = len(s["channels"]["channel00"]["names"])
        t_plain, _ = timed(api.normalise, path)
        t_snake, _ = timed(api.normalise, path, snake=True, method=args.method)
    rate = {"fit": npix / t_fit, "plain": npix / t_plain, "snake": npix / t_snake}
    print(f"{args.side}x{args.side} pixels, {nlines} lines, 1 channel; fit mode {args.mode}, "
          f"snake regridding {args.method}, positions scattered by {args.jitter:g} steps")
    print(f"{'step':<22} {'seconds':>8} {'pixels/s':>10} {'vs fit':>7}")
    for name, key, sec in (("fit (" + args.mode + ")", "fit", t_fit), ("normalise plain", "plain", t_plain),
                           ("normalise snake", "snake", t_snake)):
        print(f"{name:<22} {sec:8.2f} {rate[key]:10.0f} {rate[key] / rate['fit']:6.1f}x")


if __name__ == "__main__":
    main()
