"""The normalisation step: ``fit/`` -> ``norm/`` (I0, time, sorting, snake and time-triggered regridding)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..core import normalise as core_norm
from ..core import regrid as core_regrid
from ..errors import InputError, LayoutError
from ..progress import ProgressCallback, report

log = logging.getLogger(__name__)


def _positions(f: Any) -> tuple[np.ndarray | None, np.ndarray | None]:
    out = []
    for key in ("mot1", "mot2"):
        ds = f[key] if key in f else f["raw"][key] if key in f["raw"] else None
        out.append(None if ds is None else np.asarray(ds[()], dtype=np.float64))
    return out[0], out[1]


def normalise(h5file: str | Path, I0norm: float | None = None, snake: bool = False, sort: bool = False,
              timetriggered: bool | None = None, tmnorm: bool = False, halfpixshift: bool = True,
              method: str = "linear", dims: tuple[int, int] | None = None, datadir: str = "fit",
              progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Normalise the fitted intensities of every channel and write ``norm/``.

    Parameters
    ----------
    h5file : path
        A layout file with ``fit/`` (or ``datadir``) and ``raw/I0``.
    I0norm : float, optional
        Monitor value each point is scaled to; default ``max(raw/I0)``.
    snake : bool
        Regrid onto the regular motor grid (snake scans, every other row driven backwards).
    sort : bool
        Put the points in motor order (for maps not sorted at conversion).
    timetriggered : bool, optional
        Time-triggered readout (more points than the grid). None detects it from the scan command.
    tmnorm : bool
        Also divide by ``raw/acquisition_time`` (counts per second).
    halfpixshift : bool
        With ``snake``: move each recorded position half a point along its row's motion (recorded
        positions mark the start of each point's integration).
    method : {"linear", "nearest", "cubic"}
        Interpolation for regridding. ``linear`` (default) puts the half-pixel shifted points of
        a snake scan's forward and backward rows back on the grid between them; ``nearest`` (the
        original tool's choice) keeps measured values but cannot resolve half-pixel shifts.
    dims : (rows, cols), optional
        The target grid of a time-triggered scan when the scan command does not give it.

    Returns
    -------
    dict
        Summary: channels, names, shape, masked points, warnings, min/median/max per line.
    """
    path = Path(h5file)
    with store.open_read(path) as f:
        src = store.require(f, datadir, "group (run the fit step first)")
        chans = store.channels(f, datadir)
        if not chans:
            raise LayoutError(f"no channelXX in {datadir}/ (run the fit step first)", path=path, dataset=datadir)
        if "deadtime_corrected" not in src.attrs:
            log.info("%s/ has no dead-time flag: assuming the fit step corrected dead time, as xrf_proc did", datadir)
        I0 = np.asarray(store.read_dataset(store.require(f, "raw/I0"), path, "raw/I0"), dtype=np.float64)
        t = f["raw/acquisition_time"][()] if "raw/acquisition_time" in f else None
        cmd = f["cmd"][()] if "cmd" in f else b""
        cmd = cmd.decode("utf8", "replace") if isinstance(cmd, bytes) else str(cmd)
        mot1, mot2 = _positions(f)
        data = {}
        for c in chans:
            g = src[c]
            ims = np.asarray(store.read_dataset(store.require(g, "ims"), path, f"{datadir}/{c}/ims"), dtype=np.float64)
            std = (np.asarray(store.read_dataset(g["stddev"], path, f"{datadir}/{c}/stddev"), dtype=np.float64)
                   if "stddev" in g else None)
            names = store.decode_names(store.require(g, "names")[()])
            sums = (np.asarray(g["sum/int"][()]), np.asarray(g["sum/bkg"][()])) if "sum/int" in g and "sum/bkg" in g else None
            data[c] = (ims, std, names, sums)

    grid = I0.shape
    factors = core_norm.norm_factors(I0, I0norm, t, tmnorm)
    warnings = list(factors.warnings)
    scan = core_regrid.grid_from_command(cmd) if cmd else None
    tt = core_regrid.is_time_triggered(grid, scan) if timetriggered is None else bool(timetriggered)
    if tt and timetriggered is None:
        warnings.append(f"time-triggered scan detected: {grid} points for a {scan.rows}x{scan.cols} grid")
    regridding = snake or tt
    if (regridding or sort) and (mot1 is None or mot2 is None):
        raise LayoutError("snake/sort/time-triggered processing needs motor positions mot1 and mot2", path=path)
    if regridding or sort:
        if mot1.shape != grid or mot2.shape != grid:
            raise LayoutError(f"motor positions of shape {mot1.shape}/{mot2.shape} do not match the grid {grid}",
                              path=path, dataset="mot1")

    target = grid
    slow = fast = None
    if regridding:
        if tt:
            if dims is not None:
                target = tuple(int(d) for d in dims)
            elif scan is not None:
                target = scan.shape
            else:
                raise InputError("time-triggered scan without a mesh command: give dims=(rows, cols)", path=path,
                                 dataset="cmd")
        elif len(grid) != 2:
            target = (1, grid[0]) if len(grid) == 1 else grid
        m1 = mot1 if mot1.ndim == 2 else mot1.reshape(1, -1)
        m2 = mot2 if mot2.ndim == 2 else mot2.reshape(1, -1)
        if halfpixshift and snake:
            spacing = np.nanmedian(np.abs(np.diff(m2, axis=1))) if m2.shape[1] > 1 else 0.0
            m2 = core_regrid.half_pixel_shift(m2, spacing)
        slow, fast = core_regrid.regular_axes(m1, m2, target)
    elif sort and len(grid) == 2:
        rows_idx, cols_idx = core_regrid.sort_order(mot1, mot2)

    results = {}
    summary: dict[str, Any] = {"file": str(path), "I0norm": factors.I0norm, "masked_points": factors.masked,
                               "time_triggered": tt, "channels": {}}
    for i, (c, (ims, std, names, sums)) in enumerate(data.items()):
        if ims.shape[1:] != grid:
            raise LayoutError(f"{datadir}/{c}/ims grid {ims.shape[1:]} differs from raw/I0 {grid}", path=path)
        ims_n, std_n = core_norm.normalise_images(ims, factors, std)
        if regridding:
            shaped = lambda a: a.reshape(a.shape[0], *m1.shape)  # noqa: E731
            ims_n = core_regrid.regrid(shaped(ims_n), m1, m2, slow, fast, method)
            std_n = core_regrid.regrid(shaped(std_n), m1, m2, slow, fast, method)
        elif sort and len(grid) == 2:
            ims_n = ims_n[:, rows_idx, cols_idx]
            std_n = std_n[:, rows_idx, cols_idx]
        sum_out = core_norm.normalise_sums(*sums, factors) if sums is not None else None
        if sums is None:
            warnings.append(f"{datadir}/{c} has no sum/int, sum/bkg: norm sums left out")
        results[c] = (ims_n, std_n, names, sum_out)
        summary["channels"][c] = {
            "names": names, "shape": list(ims_n.shape),
            "stats": {n: [float(np.nanmin(im)), float(np.nanmedian(im)), float(np.nanmax(im))]
                      if np.isfinite(im).any() else [None] * 3 for n, im in zip(names, ims_n)},
        }
        report(progress, i + 1, len(data), c)

    params = {"I0norm": factors.I0norm, "snake": snake, "sort": sort, "timetriggered": tt, "tmnorm": tmnorm,
              "halfpixshift": halfpixshift, "method": method, "dims": dims, "datadir": datadir}
    with store.transaction(path, "normalise", replace=["norm"], params=params,
                           inputs=[f"{datadir}/{c}/ims" for c in results] + ["raw/I0"]) as tx:
        g = tx.group("norm")
        store.write_array(g, "I0", factors.I0norm)
        g.attrs["unit"] = "counts per I0norm" + (" per s" if tmnorm else "")
        g.attrs["deadtime"] = "corrected once, in the fit step"
        if slow is not None:
            m1g, m2g = np.meshgrid(slow, fast, indexing="ij")
            store.write_array(g, "mot1", m1g)
            store.write_array(g, "mot2", m2g)
        for c, (ims_n, std_n, names, sum_out) in results.items():
            cg = g.create_group(c)
            store.write_array(cg, "ims", ims_n.astype(np.float32))
            store.write_array(cg, "stddev", std_n.astype(np.float32))
            store.write_array(cg, "names", names)
            cg["stddev"].attrs["meaning"] = "absolute one-sigma error"
            if sum_out is not None:
                for key, value in sum_out.items():
                    store.write_array(cg, f"sum/{key}", value)
    summary["warnings"] = warnings
    return summary
