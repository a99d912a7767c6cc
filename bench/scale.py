"""Scale benchmark of the fit: peak memory and time per pixel over map sizes, throughput with 1 and 2 workers.

Not a test. Usage::

    .venv/bin/python bench/scale.py                       # quick: 0.05 and 0.2 GB of raw spectra
    .venv/bin/python bench/scale.py --sizes 0.5,2,8       # the issue's sizes (needs ~10 GB of disk, long)
    .venv/bin/python bench/scale.py --workers-size 0.1    # size used for the 1 vs 2 worker comparison

Maps are simulated *streaming*: a block of 16 rows of Poisson spectra (PyMca's Steel.spe scaled by a
gradient phantom, 2048 channels, int32) is simulated once and rows are produced on demand, shifted
and rescaled per row, through an array-like object that ``store.write_raw`` slices block by block,
so generating an 8 GB map needs no more memory than a small one. The raw size is counted as
``pixels * 2048 * 4`` bytes (int32, uncompressed).

Every measurement runs in a child process, which reports its own peak resident memory (ru_maxrss).
Time per pixel is measured after a warm-up fit of a tiny map (JIT compilation and imports excluded):
``us/pixel`` is the whole fit (sum-spectrum fit and model set-up included, a fixed cost of a few
seconds), ``steady us/px`` the rate between the first and the last completed block.
Worker throughput uses single-threaded workers (NUMBA/OpenBLAS/OMP threads = 1) in local processes,
timed from the first to the last completed block (start-up excluded).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

NBINS = 2048
COLS = 256
ROW_BYTES = COLS * NBINS * 4


class StreamedMap:
    """Array-like ``(rows, COLS, NBINS)`` int32 spectra made on demand, one slice at a time."""

    def __init__(self, rows: int, seed: int = 0):
        from xrfproc.core import pymca_bridge

        self.shape = (rows, COLS, NBINS)
        self.dtype = np.dtype(np.int32)
        steel = pymca_bridge.read_spectrum_file(pymca_bridge.PYMCA_DATA_DIR / "Steel.spe")
        rng = np.random.default_rng(seed)
        phantom = np.linspace(0.004, 0.012, 16 * COLS).reshape(16, COLS)
        self.base = rng.poisson(phantom[..., None] * steel).astype(np.int32)  # (16, COLS, NBINS)

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(self.shape[0])
        out = np.empty((stop - start, COLS, NBINS), np.int32)
        for r in range(start, stop):
            out[r - start] = np.roll(self.base[r % 16], r // 16 % COLS, axis=0)
        return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child_generate(path: str, rows: int) -> dict:
    from xrfproc import store
    from xrfproc.core.rawmap import RawChannel, RawMap

    t0 = time.perf_counter()
    grid = (rows, COLS)
    lazy = StreamedMap(rows)
    raw = RawMap(channels={"channel00": RawChannel(lazy, np.full(grid, 1.25e4), np.full(grid, 1.0e4),
                                                   (-0.0061, 0.01193, 0.0))},
                 I0=np.ones(grid), acquisition_time=np.ones(grid), mot1=np.zeros(grid), mot2=np.zeros(grid),
                 energy_keV=16.0)
    store.write_raw(path, raw)
    return {"seconds": time.perf_counter() - t0, "peak_rss_mb": _rss_mb()}


def _config(folder: Path) -> Path:
    from xrfproc.core import pymca_bridge

    cfg = pymca_bridge.read_config(pymca_bridge.PYMCA_DATA_DIR / "Steel.cfg")
    cfg["fit"]["stripalgorithm"] = 1
    return pymca_bridge.write_config(cfg, folder / "steel_snip.cfg")


def _mode() -> str:
    try:
        from xrfproc.core import fit_engine  # noqa: F401
        return "engine" if hasattr(fit_engine, "fit_block") else "fast"
    except ImportError:
        return "fast"


def child_fit(path: str, cfg: str, mode: str, scheduler: str | None, workers: int | None, warm: str | None,
              block: int | None = None) -> dict:
    from xrfproc.steps.fit import fit

    if warm:
        fit(warm, cfg, mode=mode, scheduler="sync")
    stamps: list[tuple[float, float]] = []
    t0 = time.perf_counter()
    s = fit(path, cfg, mode=mode, scheduler=scheduler, n_workers=workers, block_spectra=block,
            progress=lambda d, t, m="": stamps.append((time.perf_counter(), d)))
    seconds = time.perf_counter() - t0
    blocks = [x for x in stamps[:-1]]  # the last report is "fit written"
    steady = None
    skip = min(max(1, workers or 1), len(blocks) - 2)  # each worker's first block carries its start-up
    if skip >= 1 and len(blocks) >= 3:
        (ta, da), (tb, db) = blocks[skip - 1], blocks[-1]
        steady = (db - da) / (tb - ta) if tb > ta else None
    npix = int(np.prod(s["channels"]["channel00"]["shape"][1:]))
    return {"seconds": seconds, "pixels": npix, "us_per_pixel": 1e6 * seconds / npix,
            "steady_pixels_per_s": steady, "peak_rss_mb": _rss_mb(), "ran_on": s["ran_on"]}


def _run_child(args: list[str], env: dict | None = None) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", *args], capture_output=True, text=True,
                         env={**os.environ, **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-3000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="0.05,0.2", help="raw sizes in GB, comma separated (default 0.05,0.2)")
    ap.add_argument("--workers-size", type=float, default=0.2, help="GB for the 1 vs 2 worker comparison")
    ap.add_argument("--mode", default=None, help="fit mode (default engine, else fast)")
    ap.add_argument("--dir", default=None, help="working folder (default a temporary one, removed)")
    ap.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    ns = ap.parse_args()
    if ns.child is not None:
        kind, *rest = ns.child
        if kind == "generate":
            res = child_generate(rest[0], int(rest[1]))
        else:
            path, cfg, mode, sched, workers, warm, block = rest
            res = child_fit(path, cfg, mode, None if sched == "-" else sched,
                            None if workers == "-" else int(workers), None if warm == "-" else warm,
                            None if block == "-" else int(block))
        print(json.dumps(res))
        return
    mode = ns.mode or _mode()
    with tempfile.TemporaryDirectory(dir=ns.dir) as tmp:
        folder = Path(tmp)
        cfg = _config(folder)
        warm = folder / "warm.h5"
        _run_child(["generate", str(warm), "2"])
        print(f"mode {mode}; map {COLS} columns x {NBINS} channels int32; peak RSS per child process")
        print(f"{'raw GB':>7} {'pixels':>9} {'gen s':>7} {'gen RSS MB':>10} {'fit s':>8} {'us/pixel':>9} "
              f"{'fit RSS MB':>10} {'steady us/px':>12}")
        for size in [float(x) for x in ns.sizes.split(",") if x]:
            rows = max(2, int(round(size * 1e9 / ROW_BYTES)))
            path = folder / f"map_{size:g}.h5"
            gen = _run_child(["generate", str(path), str(rows)])
            res = _run_child(["fit", str(path), str(cfg), mode, "-", "-", str(warm), "-"])
            print(f"{rows * ROW_BYTES / 1e9:7.2f} {res['pixels']:9d} {gen['seconds']:7.1f} {gen['peak_rss_mb']:10.0f} "
                  f"{res['seconds']:8.1f} {res['us_per_pixel']:9.1f} {res['peak_rss_mb']:10.0f} "
                  f"{1e6 / res['steady_pixels_per_s'] if res['steady_pixels_per_s'] else float('nan'):12.1f}",
                  flush=True)
            path.unlink()
            for extra in folder.glob(f"{path.name}.d"):
                import shutil
                shutil.rmtree(extra, ignore_errors=True)
        rows = max(2, int(round(ns.workers_size * 1e9 / ROW_BYTES)))
        path = folder / "workers.h5"
        _run_child(["generate", str(path), str(rows)])
        single = {"NUMBA_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        rates = {}
        for n in (1, 2):
            r = _run_child(["fit", str(path), str(cfg), mode, "processes", str(n), "-", str(4 * COLS)],
                           env=single)
            rates[n] = r["steady_pixels_per_s"] or r["pixels"] / r["seconds"]
            print(f"{n} worker(s), single-threaded, local processes: {rates[n]:9.0f} pixels/s "
                  f"({r['seconds']:.1f} s for {r['pixels']} pixels incl. start-up)", flush=True)
        print(f"speed-up 2 vs 1 worker: {rates[2] / rates[1]:.2f}x")


if __name__ == "__main__":
    main()
