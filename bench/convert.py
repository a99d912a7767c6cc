"""Benchmark of the conversion: pixels/s and MB/s per compression, against the engine fit's pixels/s.

Not a test. Usage::

    .venv/bin/python bench/convert.py                      # 40000 pixels (256 columns x 2048 channels)
    .venv/bin/python bench/convert.py --pixels 200000 --compressions gzip,lz4

A Bliss (ID15-style) file is simulated first, streaming: one detector ``falconx_det0`` with int32
spectra ``(pixels, 2048)`` made by ``bench/scale.py``'s :class:`StreamedMap` (PyMca's Steel.spe
Poisson-resampled, about 5e4 counts per spectrum), count rates, monitors and motors, uncompressed
(``--source-compression gzip`` to read a gzip source). Then, in this process:

- ``xrfproc.api.convert`` of that file with each compression: seconds, pixels/s, MB/s of raw
  int32 spectra (``pixels * 2048 * 4`` bytes), CPU seconds of the process (all threads), the size
  on disk and the rise of the peak resident memory during the conversion (``/proc/self/status``
  VmHWM, reset before each run);
- ``xrfproc.api.fit(..., mode="engine")`` of the gzip file (and of the others with ``--fit-all``)
  after a warm-up fit of a tiny map (JIT excluded), with ``bench/scale.py``'s Steel config;
- the ratio fit time / conversion time per pixel (> 1: the conversion is faster than the fit).
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import COLS, NBINS, StreamedMap, _config  # noqa: E402 (bench helpers)


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _reset_peak() -> int:
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    return _status_kb("VmRSS")


def make_bliss(path: Path, rows: int, source_compression: str = "none") -> None:
    """A Bliss scan ``1.1`` of ``rows x COLS`` points, written a block of rows at a time."""
    npts = rows * COLS
    gen = StreamedMap(rows)
    kw = {"compression": "gzip", "compression_opts": 4} if source_compression == "gzip" else {}
    rng = np.random.default_rng(1)
    with h5py.File(path, "w") as f:
        g = f.create_group("1.1")
        g["title"] = f"dmesh hrz 0 2.55 {COLS - 1} hry 0 {0.01 * (rows - 1):g} {rows - 1} 0.1"
        m = g.create_group("measurement")
        ds = m.create_dataset("falconx_det0", shape=(npts, NBINS), dtype=np.int32, chunks=(64, NBINS), **kw)
        total = np.empty(npts)
        for r0 in range(0, rows, 16):
            block = gen[r0:min(rows, r0 + 16)].reshape(-1, NBINS)
            ds[r0 * COLS:r0 * COLS + len(block)] = block
            total[r0 * COLS:r0 * COLS + len(block)] = block.sum(axis=1)
        ocr = total / 0.1
        m["falconx_det0_event_count_rate"] = ocr
        m["falconx_det0_trigger_count_rate"] = ocr * rng.uniform(1.02, 1.2, npts)
        m["falconx_det0_elapsed_time"] = np.full(npts, 0.1)
        m["fpico2"] = rng.uniform(9e4, 1.1e5, npts)
        m["fpico3"] = rng.uniform(2e4, 3e4, npts)
        m["hrz"] = np.tile(0.01 * np.arange(COLS), rows)
        m["hry"] = np.repeat(0.01 * np.arange(rows), COLS)
        pos = g.create_group("instrument/positioners")
        pos["energy"] = 16.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--pixels", type=int, default=40000, help="map size (rounded to whole rows of 256)")
    ap.add_argument("--compressions", default="gzip,lz4,blosc,none")
    ap.add_argument("--source-compression", default="none", choices=["none", "gzip"])
    ap.add_argument("--fit-all", action="store_true", help="fit every converted file, not only the gzip one")
    ap.add_argument("--dir", default=None, help="working folder (default a temporary one, removed)")
    ns = ap.parse_args()

    from xrfproc import api

    rows = max(2, ns.pixels // COLS)
    npix = rows * COLS
    mb = npix * NBINS * 4 / 1e6
    with tempfile.TemporaryDirectory(dir=ns.dir) as tmp:
        folder = Path(tmp)
        src = folder / "bliss.h5"
        t0 = time.perf_counter()
        make_bliss(src, rows, ns.source_compression)
        print(f"source: {rows} x {COLS} pixels x {NBINS} channels int32 = {mb:.0f} MB raw "
              f"({src.stat().st_size / 1e6:.0f} MB on disk, {ns.source_compression}), made in "
              f"{time.perf_counter() - t0:.1f} s", flush=True)
        cfg = _config(folder)
        warm = folder / "warm.h5"
        make_bliss(folder / "warm_src.h5", 2)
        api.convert(folder / "warm_src.h5", warm, kind="id15")
        api.fit(warm, cfg, mode="engine")
        print(f"{'compression':>11} {'seconds':>8} {'cpu s':>7} {'pixels/s':>9} {'MB/s':>7} {'disk MB':>8} "
              f"{'ratio':>6} {'peak +MB':>8}", flush=True)
        outs = {}
        for comp in [c for c in ns.compressions.split(",") if c]:
            out = folder / f"conv_{comp}.h5"
            rss0 = _reset_peak()
            t0, c0 = time.perf_counter(), time.process_time()
            api.convert(src, out, kind="id15", compression=comp)
            dt, cpu = time.perf_counter() - t0, time.process_time() - c0
            peak = (_status_kb("VmHWM") - rss0) / 1024
            disk = sum(p.stat().st_size for p in Path(f"{out}.d").rglob("*") if p.is_file()) / 1e6
            outs[comp] = (out, dt)
            print(f"{comp:>11} {dt:8.2f} {cpu:7.2f} {npix / dt:9.0f} {mb / dt:7.0f} {disk:8.0f} {mb / disk:6.2f} "
                  f"{peak:8.0f}", flush=True)
        fit_on = list(outs) if ns.fit_all else [c for c in outs if c == "gzip"] or list(outs)[:1]
        for comp in fit_on:
            out, conv_s = outs[comp]
            t0, c0 = time.perf_counter(), time.process_time()
            api.fit(out, cfg, mode="engine")
            fit_s, cpu = time.perf_counter() - t0, time.process_time() - c0
            print(f"engine fit of the {comp} file: {fit_s:.2f} s ({cpu:.2f} s cpu), {npix / fit_s:.0f} pixels/s; "
                  f"fit/convert time per pixel: {fit_s / conv_s:.2f} (>1: conversion faster)", flush=True)
        for comp, (out, conv_s) in outs.items():
            if comp not in fit_on:
                print(f"{comp}: convert {npix / conv_s:.0f} pixels/s")
        shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
