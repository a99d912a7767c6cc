"""The tomography step: sinograms of a rotation/translation map -> ``tomo/channelXX`` and ``tomo/I1``."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Sequence

import h5py
import numpy as np

from .. import store
from ..core import tomo as core_tomo
from ..errors import InputError, LayoutError
from ..progress import ProgressCallback, report
from .stats import resolve_stacks, select_elements, stack_names

log = logging.getLogger(__name__)

SCATTER = ("Rayl", "Compt")


def _motor(f: h5py.File, top: str, name: str) -> np.ndarray:
    for where in (f"{top}/{name}", name, f"raw/{name}"):
        if where in f:
            return np.asarray(f[where][()], dtype=np.float64)
    raise LayoutError(f"no motor positions '{name}' (looked in {top}/, / and raw/)", path=f.filename, dataset=name)


def rotation_axis(rot: np.ndarray, grid: tuple[int, ...]) -> tuple[np.ndarray, int]:
    """Rotation angles (degrees) and the image axis (0: rows, 1: columns) along which they change."""
    if rot.shape != tuple(grid):
        raise LayoutError(f"rotation motor of shape {rot.shape} does not match the image grid {grid}")
    if rot.ndim != 2:
        raise LayoutError(f"tomography needs a 2-D map (angles x translation), got grid {grid}")
    spread0 = np.nanmedian(np.nanstd(rot, axis=0))  # variation down the rows
    spread1 = np.nanmedian(np.nanstd(rot, axis=1))  # variation along the columns
    axis = 0 if spread0 >= spread1 else 1
    angles = np.nanmean(rot, axis=1 - axis)
    if np.ptp(angles) <= 0:
        raise LayoutError("the rotation motor does not move")
    return angles, axis


def tomo(h5file: str | Path, datadir: str = "norm", channel: str | None = None, rot_mot: str = "mot2",
         signal: str | None = None, rot_centre: float | None = None, algorithm: str = "fbp",
         lines: Sequence[Any] | None = None, iterations: int = 10, transmission: bool = True,
         progress: ProgressCallback | None = None) -> dict[str, Any]:
    """Reconstruct every line of a rotation/translation map into ``tomo/channelXX/{ims, names, rotation_center}``.

    One motor of the map is the rotation (degrees), the other the translation; each line's image is a
    sinogram (angles x translation) reconstructed into a slice of translation x translation pixels.
    The transmission signal ``-ln(I1/I0)`` (when ``raw/I1`` exists on the same grid) goes to ``tomo/I1``.

    Parameters
    ----------
    h5file : path
        A layout file.
    datadir : str
        Image group (``"norm"``, ``"quant"``, ``"fit"``), or one channel of it.
    channel : str, optional
        Only this channel; default all.
    rot_mot : {"mot1", "mot2"}
        The rotation motor.
    signal : str, optional
        Line used to find the centre of rotation (``"Fe K"`` or ``"I1"`` for the transmission);
        default the non-scatter line with the most signal.
    rot_centre : float, optional
        Centre of rotation in translation pixels (0-based); default found from ``signal``.
    algorithm : {"fbp", "sirt", "gridrec"}
        See :func:`xrfproc.core.tomo.reconstruct`.
    lines : list, optional
        Lines to reconstruct (names, symbols or indices); default all.
    iterations : int
        SART iterations for ``"sirt"``.
    transmission : bool
        Also reconstruct ``tomo/I1`` when ``raw/I1`` exists.
    progress : callable(done, total, message), optional
        Called after each reconstructed line.

    Returns
    -------
    dict
        ``rotation_center`` (and whether it was found or given), lines per channel, warnings.
    """
    path = Path(h5file)
    if rot_mot not in ("mot1", "mot2"):
        raise InputError(f"rot_mot must be 'mot1' or 'mot2', got {rot_mot!r}")
    top = datadir.strip("/").split("/")[0]
    warnings: list[str] = []
    with store.open_read(path) as f:
        stacks = resolve_stacks(f, datadir, channel)
        data = {}
        for c, ims_path in stacks:
            ims = np.asarray(f[ims_path][()], dtype=np.float64)
            if ims.ndim != 3:
                raise LayoutError(f"expected (lines, rows, cols) images, got shape {ims.shape}", path=path,
                                  dataset=ims_path)
            data[c] = (ims, stack_names(f, ims_path, ims.shape[0]))
        grid = next(iter(data.values()))[0].shape[1:]
        angles, axis = rotation_axis(_motor(f, top, rot_mot), grid)
        i1 = None
        if transmission and "raw/I1" in f and "raw/I0" in f:
            I1, I0 = f["raw/I1"][()], f["raw/I0"][()]
            if I1.shape == tuple(grid):
                i1 = core_tomo.transmission_sinogram(I1, I0)
            else:
                warnings.append(f"raw/I1 grid {I1.shape} differs from the image grid {grid}: no tomo/I1")
    if axis == 1:
        data = {c: (np.swapaxes(ims, 1, 2), n) for c, (ims, n) in data.items()}
        i1 = None if i1 is None else i1.T
    order = np.argsort(angles, kind="stable")
    angles = angles[order]
    data = {c: (ims[:, order, :], n) for c, (ims, n) in data.items()}
    i1 = None if i1 is None else i1[order]

    found = rot_centre is None
    if found:
        if signal is not None and signal.upper() == "I1":
            if i1 is None:
                raise InputError("signal='I1' but the file has no usable raw/I1", path=path, dataset="raw/I1")
            sino, used = i1, "I1"
        else:
            c0, (ims0, names0) = next(iter(data.items()))
            if signal is not None:
                idx = select_elements(names0, [signal], f"{top}/{c0}")[0]
            else:
                totals = [np.nansum(np.clip(im, 0, None)) if n not in SCATTER else -1.0 for n, im in zip(names0, ims0)]
                idx = int(np.argmax(totals))
            sino, used = ims0[idx], f"{c0} {names0[idx]}"
        rot_centre = core_tomo.find_center(sino, angles)
        log.info("%s: centre of rotation %.2f px (from %s)", path.name, rot_centre, used)
    else:
        used = "given"
    rot_centre = float(rot_centre)

    jobs = [(c, ims, names, select_elements(names, lines, f"{top}/{c}")) for c, (ims, names) in data.items()]
    total = sum(len(ids) for *_, ids in jobs) + (1 if i1 is not None else 0)
    done = 0
    results = {}
    for c, ims, names, ids in jobs:
        recs = []
        for j in ids:
            recs.append(core_tomo.reconstruct(ims[j], angles, rot_centre, algorithm, iterations=iterations))
            done += 1
            report(progress, done, total, f"{c} {names[j]}")
        results[c] = (np.stack(recs), [names[j] for j in ids])
    if i1 is not None:
        results["I1"] = (core_tomo.reconstruct(i1, angles, rot_centre, algorithm, iterations=iterations)[None],
                         ["transmission"])
        done += 1
        report(progress, done, total, "I1")

    params = {"datadir": datadir, "channel": channel, "rot_mot": rot_mot, "signal": signal,
              "rot_centre": rot_centre, "centre_found": found, "algorithm": algorithm, "lines": lines,
              "iterations": iterations}
    with store.transaction(path, "tomo", replace=[f"tomo/{c}" for c in results], params=params,
                           inputs=[p for _, p in stacks] + (["raw/I1"] if "I1" in results else [])) as tx:
        for c, (recs, names) in results.items():
            g = tx.group(f"tomo/{c}")
            store.write_array(g, "ims", recs.astype(np.float32))
            store.write_array(g, "names", names)
            store.write_array(g, "rotation_center", rot_centre)
            g["rotation_center"].attrs["unit"] = "pixels from the first translation position"
            g.attrs["algorithm"] = algorithm
            g.attrs["angles_deg"] = angles
    return {"file": str(path), "rotation_center": rot_centre, "centre_from": used, "angles": int(angles.size),
            "channels": {c: names for c, (_, names) in results.items()}, "warnings": warnings}


__all__ = ["tomo", "rotation_axis"]
