"""Small files with the real structure of ESRF ID15 (Bliss HDF5) and PETRA III P06 (NeXus) scans.

Every generator returns the ground truth it wrote (plain numpy arrays, in acquisition order), so
tests can compare a conversion with exactly what is in the files. The spectra look like XRF: a
few Gaussian peaks on a smooth background, Poisson noise, intensities varying over the map.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

#: peak positions (fraction of the spectrum), widths (bins), relative heights
_PEAKS = ((0.32, 3.0, 1.0), (0.36, 3.2, 0.18), (0.64, 4.0, 0.45), (0.71, 4.2, 0.09), (0.9, 6.0, 0.3))


def xrf_spectra(npoints: int, nbins: int = 256, rng: np.random.Generator | None = None,
                scale: float = 200.0) -> np.ndarray:
    """Poisson-noisy XRF-like spectra, shape ``(npoints, nbins)``, dtype int32 (counts)."""
    rng = rng or np.random.default_rng(0)
    ch = np.arange(nbins, dtype=float)
    amp = rng.uniform(0.3, 1.0, size=(npoints, len(_PEAKS)))
    shape = np.stack([h * np.exp(-0.5 * ((ch - p * nbins) / w) ** 2) for p, w, h in _PEAKS])
    bkg = 0.05 * np.exp(-ch / (0.4 * nbins))
    mean = scale * (amp @ shape + bkg)
    return rng.poisson(mean).astype(np.int32)


def _grid_positions(rows: int, cols: int, start: tuple[float, float], step: tuple[float, float],
                    snake: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Slow and fast motor positions per point in acquisition order, each ``(rows*cols,)``."""
    slow = np.repeat(start[0] + step[0] * np.arange(rows), cols)
    fast_row = start[1] + step[1] * np.arange(cols)
    fast = np.concatenate([fast_row[::-1] if (snake and r % 2) else fast_row for r in range(rows)])
    return slow, fast


# --------------------------------------------------------------------------------------- ID15
def make_id15_file(path: str | Path, shape: tuple[int, int] = (4, 5), nscans: int = 1,
                   detectors: Sequence[str] = ("falconx_det0", "falconx2_det0"), nbins: int = 256,
                   motors: tuple[str, str] = ("hrz", "hry"), start: tuple[float, float] = (1.0, -0.5),
                   step: tuple[float, float] = (0.01, 0.02), count_time: float = 0.1,
                   ring_current: float | None = 195.5, correction_counter: str | None = "fpico6",
                   snake: bool = False, positioner_motors: Sequence[str] = ("hrrz",),
                   energy_keV: float | None = 21.0, title: str | None = None, seed: int = 0,
                   drop_points: int = 0) -> dict[str, dict[str, Any]]:
    """Write a Bliss HDF5 file with ``nscans`` 2-D mesh scans ``1.1``, ``2.1``, ... (+ ``<n>.2``).

    Parameters
    ----------
    shape : (rows, cols)
        Grid of each scan; the title counts intervals (``dmesh fast s e cols-1 slow s e rows-1 t``).
    motors : (slow, fast)
        Motor names; scan ``k`` continues scan ``k-1`` along the slow motor.
    ring_current : float or None
        Written to ``instrument/machine/current`` (mA) when not None.
    correction_counter : str or None
        A counter written to the ``<n>.2`` scan (8 slow readings).
    positioner_motors : list of str
        Motors that did not move: written to ``instrument/positioners/`` only (value 12.5).
    drop_points : int
        Points missing from the end of each scan (an aborted scan; the title keeps the full grid).

    Returns
    -------
    dict
        Per scan id: ``title``, ``spectra`` (det -> ``(npts, nbins)``), ``icr``, ``ocr``, ``time`` (det ->
        ``(npts,)``), ``fpico2``, ``fpico3``, ``<slow>``, ``<fast>``, ``current``, ``correction``
        (the ``.2`` counter values), all in acquisition order.
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    slow_name, fast_name = motors
    truth: dict[str, dict[str, Any]] = {}
    with h5py.File(path, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["creator"] = "Bliss"
        for k in range(nscans):
            sid = f"{k + 1}.1"
            s0 = (start[0] + k * rows * step[0], start[1])
            slow, fast = _grid_positions(rows, cols, s0, step, snake)
            npts = rows * cols - drop_points
            slow, fast = slow[:npts], fast[:npts]
            t = title or (f"dmesh {fast_name} {s0[1]:g} {s0[1] + step[1] * (cols - 1):g} {cols - 1} "
                          f"{slow_name} {s0[0]:g} {s0[0] + step[0] * (rows - 1):g} {rows - 1} {count_time:g}")
            g = f.create_group(sid)
            g.attrs["NX_class"] = "NXentry"
            g["title"] = t
            g["start_time"] = "2023-03-14T10:00:00+01:00"
            m = g.create_group("measurement")
            m.attrs["NX_class"] = "NXcollection"
            inst = g.create_group("instrument")
            pos = inst.create_group("positioners")
            rec: dict[str, Any] = {"title": t, "spectra": {}, "icr": {}, "ocr": {}, "time": {}}
            for det in detectors:
                sp = xrf_spectra(npts, nbins, rng)
                elapsed = count_time + rng.normal(0, 1e-4, npts)
                ocr = sp.sum(axis=1) / elapsed
                icr = ocr * rng.uniform(1.02, 1.2, npts)
                m.create_dataset(det, data=sp, compression="gzip")
                m[f"{det}_trigger_count_rate"] = icr
                m[f"{det}_event_count_rate"] = ocr
                m[f"{det}_elapsed_time"] = elapsed
                m[f"{det}_fractional_dead_time"] = 1 - ocr / icr
                rec["spectra"][det], rec["icr"][det], rec["ocr"][det], rec["time"][det] = sp, icr, ocr, elapsed
            for name in ("fpico2", "fpico3"):
                rec[name] = rng.uniform(9e4, 1.1e5, npts) * (1.0 if name == "fpico2" else 0.3)
                m[name] = rec[name]
            m["elapsed_time"] = count_time * np.arange(1, npts + 1)
            m[fast_name], m[slow_name] = fast, slow
            rec[fast_name], rec[slow_name] = fast, slow
            pos[fast_name], pos[slow_name] = fast[0], slow[0]
            for name in positioner_motors:
                pos[name] = 12.5
                rec[name] = np.full(npts, 12.5)
            if energy_keV is not None:
                pos["energy"] = energy_keV
            if ring_current is not None:
                mach = inst.create_group("machine")
                mach["current"] = ring_current - 0.3 * k
                rec["current"] = ring_current - 0.3 * k
            if correction_counter:
                g2 = f.create_group(f"{k + 1}.2")
                g2.attrs["NX_class"] = "NXentry"
                g2["title"] = t
                m2 = g2.create_group("measurement")
                rec["correction"] = rng.uniform(4.0e3, 4.4e3, 8)
                m2[correction_counter] = rec["correction"]
                m2["epoch"] = np.arange(8.0)
            truth[sid] = rec
    return truth


# --------------------------------------------------------------------------------------- P06
def _split(arr: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.array_split(arr, parts, axis=0)


def _nxs_name(scan: str, part: int, split: int) -> str:
    return f"{scan}_{part + 1:05d}.nxs" if split > 1 else f"{scan}_00000.nxs"


def make_p06_scan(folder: str | Path, number: int = 1, shape: tuple[int, int] = (4, 5),
                  elements: Sequence[str] = ("channel00", "channel01", "channel02"), nbins: int = 256,
                  motors: tuple[str, str] = ("samy", "samx"), start: tuple[float, float] = (2.0, -1.0),
                  step: tuple[float, float] = (0.005, 0.004), count_time: float = 0.05, snake: bool = False,
                  continuous: bool = False, time_triggered: bool = False, cut_short: int = 0, split: int = 1,
                  scalers: str = "allEvent", adc: str = "adc_01", capitalised: bool = False,
                  virtual: bool = False, context: str = "inside", energy_eV: float | None = 12000.0,
                  sample: str = "NIST SRM 1577c", seed: int = 0) -> dict[str, Any]:
    """Write a P06 scan directory ``folder/scan_<number:05d>/`` and return what it holds.

    Parameters
    ----------
    shape : (rows, cols)
        Grid; the command counts intervals (``mesh``) or, with ``continuous``, columns as points
        (``cmesh``).
    motors : (slow, fast)
        Encoder names; with ``virtual`` the command's fast motor is ``scanx``, defined in
        ``scan_logbook.txt`` as ``0.5*<fast> + 0.5*samz - 0.1`` with ``samz`` a second encoder.
    snake : bool
        Every other row runs backwards (the acquisition order of the points).
    time_triggered : bool
        Points are taken at fixed times while the fast motor sweeps: ``rows*cols + 3`` points whose
        positions do not sit on the command's grid.
    cut_short : int
        Points missing at the end (an aborted scan).
    split : int
        Number of files every device's data is split over (``_00001.nxs``, ``_00002.nxs``, ...).
    scalers : {"allEvent", "allevent", "ticks"}
        How ICR/OCR are recorded (``ticks``: ``deadtimeticks`` / ``totalticks``).
    adc : {"adc_01", "adc01"}
        Folder of the monitor counters; ``capitalised`` writes ``Value1``, ``Value2``, ``ExposureTime``.
    context : {"inside", "sibling"}
        Where the context file ``scan_NNNNN.nxs`` (scan command, energy, sample) goes.

    Returns
    -------
    dict
        ``dir``, ``cmd``, ``npts``, ``spectra`` (element -> ``(npts, nbins)``), ``icr`` / ``ocr``
        (element -> what the reader must give), ``i0``, ``i1``, ``time``, ``positions`` (motor ->
        ``(npts,)``, including a virtual motor), ``fast``, ``slow`` (the command's motor names).
    """
    rng = np.random.default_rng(seed)
    rows, cols = shape
    slow_name, fast_name = motors
    scan = f"scan_{number:05d}"
    d = Path(folder) / scan
    d.mkdir(parents=True, exist_ok=True)
    cmd_fast = "scanx" if virtual else fast_name
    fast_stop = start[1] + step[1] * (cols - 1)
    slow_stop = start[0] + step[0] * (rows - 1)
    if continuous or time_triggered:
        cmd = f"cmesh {cmd_fast} {start[1]:g} {fast_stop:g} {cols} {slow_name} {start[0]:g} {slow_stop:g} {rows - 1} {count_time:g}"
    else:
        cmd = f"mesh {cmd_fast} {start[1]:g} {fast_stop:g} {cols - 1} {slow_name} {start[0]:g} {slow_stop:g} {rows - 1} {count_time:g}"
    if time_triggered:
        npts = rows * cols + 3
        tfrac = np.arange(npts) / npts * rows
        slow = start[0] + step[0] * np.floor(tfrac)
        fast = start[1] + step[1] * (cols - 1) * (tfrac % 1.0) + rng.normal(0, 1e-4, npts)
    else:
        slow, fast = _grid_positions(rows, cols, start, step, snake)
        fast = fast + rng.normal(0, 2e-5, fast.size)  # encoder jitter, well within atol
        npts = rows * cols - cut_short
        slow, fast = slow[:npts], fast[:npts]
    samz = 7.0 + rng.normal(0, 1e-3, npts)
    truth: dict[str, Any] = {"dir": d, "cmd": cmd, "npts": npts, "spectra": {}, "icr": {}, "ocr": {},
                             "fast": cmd_fast, "slow": slow_name,
                             "positions": {fast_name: fast, slow_name: slow, "samz": samz}}
    if virtual:
        truth["positions"]["scanx"] = -0.1 + 0.5 * fast + 0.5 * samz
    names = [_nxs_name(scan, p, split) for p in range(split)]

    # detector
    (d / "xspress3_01").mkdir(exist_ok=True)
    data = {}
    for el in elements:
        sp = xrf_spectra(npts, nbins, rng)
        good = sp.sum(axis=1).astype(np.int64)
        if scalers == "ticks":
            total = np.full(npts, int(count_time * 80e6), dtype=np.int64)
            dead = (total * rng.uniform(0.02, 0.15, npts)).astype(np.int64)
            rec = {"totalticks": total, "deadtimeticks": dead}
            truth["icr"][el], truth["ocr"][el] = total.astype(float), (total - dead).astype(float)
        else:
            event = (good * rng.uniform(1.02, 1.2, npts)).astype(np.int64)
            ev_key, good_key = ("allEvent", "allGood") if scalers == "allEvent" else ("allevent", "allgood")
            rec = {ev_key: event, good_key: good, "resets": np.zeros(npts, np.int64)}
            truth["icr"][el], truth["ocr"][el] = event.astype(float), good.astype(float)
        truth["spectra"][el] = sp
        data[el] = (sp, rec)
    for p, name in enumerate(names):
        with h5py.File(d / "xspress3_01" / name, "w") as f:
            xsp = f.create_group("entry/instrument/xspress3")
            f["entry/instrument/detector/sequence_number"] = _split(np.arange(npts), split)[p]
            for el, (sp, rec) in data.items():
                g = xsp.create_group(el)
                g.create_dataset("histogram", data=_split(sp, split)[p], compression="gzip")
                sc = g.create_group("scaler")
                for key, arr in rec.items():
                    sc[key] = _split(arr, split)[p]

    # monitors
    truth["i0"] = rng.uniform(2.0e5, 2.4e5, npts)
    truth["i1"] = truth["i0"] * rng.uniform(0.3, 0.4, npts)
    truth["time"] = count_time + rng.normal(0, 1e-4, npts)
    (d / adc).mkdir(exist_ok=True)
    keys = ("Value1", "Value2", "ExposureTime") if capitalised else ("value1", "value2", "exposuretime")
    for p, name in enumerate(names):
        with h5py.File(d / adc / name, "w") as f:
            g = f.create_group("entry/data")
            for key, arr in zip(keys, (truth["i0"], truth["i1"], truth["time"])):
                g[key] = _split(arr, split)[p]

    # encoders: a leading entry before the first trigger (counter 0) and one repeated trigger
    def encoder_file(sub: str, values: dict[str, np.ndarray]) -> None:
        (d / sub).mkdir(exist_ok=True)
        counter = np.concatenate([[0], np.arange(1, npts + 1)])
        dup = min(2, npts)
        counter = np.insert(counter, dup + 1, dup)
        enc = {k: np.insert(np.concatenate([[999.0], v]), dup + 1, v[dup - 1] + 0.5) for k, v in values.items()}
        for p, name in enumerate(names):
            with h5py.File(d / sub / name, "w") as f:
                g = f.create_group("entry/data")
                g["counter"] = _split(counter, split)[p]
                for i, (label, arr) in enumerate(enc.items(), start=1):
                    ds = g.create_dataset(f"encoder_{i}", data=_split(arr, split)[p])
                    ds.attrs["Name"] = label
                g["position_trigger_start"] = start[1]
                g["position_trigger_stop"] = fast_stop
                g["position_trigger_step_size"] = step[1]
    encoder_file("pilctriggergenerator_01", {fast_name: fast, slow_name: slow})
    encoder_file("pilctriggergenerator_02", {"samz": samz})
    if virtual:
        (d / "scan_logbook.txt").write_text(
            f"# scan_logbook {scan}\n{scan}: {cmd}\nsamplename = {sample}\n"
            f"scanx = 0.5*{fast_name} + 0.5*samz - 0.1\n")

    ctx = d / f"{scan}.nxs" if context == "inside" else Path(folder) / f"{scan}.nxs"
    with h5py.File(ctx, "w") as f:
        prog = f.create_group("scan/program_name")
        prog.attrs["scan_command"] = cmd
        if energy_eV is not None:
            f["scan/data/energy"] = np.array([energy_eV])
        f["scan/sample/name"] = sample
        f["scan/instrument/name"] = "P06"
    return truth


__all__ = ["xrf_spectra", "make_id15_file", "make_p06_scan"]
