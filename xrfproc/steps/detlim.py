"""The detection-limit step: ``fit/`` + ``norm/`` of a reference measurement -> ``detlim/``, ``elyield/``."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .. import store
from ..core import detlim as core_detlim
from ..core.cnc import read_cnc
from ..core.matrixcomp import matrix_composition
from ..errors import LayoutError
from .geometry import geometry_for

log = logging.getLogger(__name__)


def detlim(h5file: str | Path, cncfile: str | Path, channel: str | None = None, energy_keV: float | None = None,
           incidence_deg: float | None = None, exit_deg: float | None = None, geometry: Any = None,
           fractions: str = "normalise") -> dict[str, Any]:
    """Detection limits (1 s and 1000 s) and elemental yields of a reference-material measurement.

    Writes ``detlim/<cnc>/channelXX/{1s,1000s}/{data,stddev}, names`` (unit ppm) and, when the file
    has been normalised, ``elyield/<cnc>/channelXX/{yield,stddev,names}``.

    Parameters
    ----------
    h5file : path
        The reference measurement, fitted (and normalised for yields).
    cncfile : path
        Its certified composition.
    channel : str, optional
        One channel (``"channel00"``); default all fitted channels.
    energy_keV : float, optional
        Excitation energy; default the one the file records (``raw@energy_keV``, else the ``[fit] energy``
        of the stored fit configuration: :func:`xrfproc.store.recorded_energy`).
    incidence_deg, exit_deg : float, optional
        Beam and detector angles to the sample surface, for the information depth; default those of
        the geometry.
    geometry : str, dict or Geometry, optional
        The measurement geometry (:mod:`xrfproc.core.geometry`); default the file's ``geometry``
        group, else ``generic``. Recorded in ``elyield/<cnc>/channelXX@geometry`` (JSON) so that
        ``quantify`` can move the yields to a sample measured in another geometry.
    fractions : str
        How a composition that does not sum to 100 % is used for the matrix absorption
        (:mod:`xrfproc.core.matrixcomp`; the same rule as ``quantify``): ``"normalise"``,
        ``"as_given"`` or the formula of the missing part. The handling is recorded.
    """
    path = Path(h5file)
    cnc = read_cnc(cncfile)
    tag = Path(cncfile).stem
    with store.open_read(path) as f:
        chans = [channel] if channel else store.channels(f, "fit")
        if not chans:
            raise LayoutError("no fitted channel: run the fit step first", path=path, dataset="fit")
        t = f["raw/acquisition_time"][()] if "raw/acquisition_time" in f else None
        if t is None:
            raise LayoutError("detection limits need raw/acquisition_time (the measuring time)", path=path,
                              dataset="raw/acquisition_time")
        total_time = float(np.nansum(t))
        if energy_keV is None:
            energy_keV = store.recorded_energy(f)[0]
        geo = geometry_for(f, geometry, incidence_deg, exit_deg)
        has_norm = "norm" in f
        I0norm = float(f["norm/I0"][()]) if has_norm else None
        per_channel = {}
        for c in chans:
            g = store.require(f, f"fit/{c}", "group")
            names = store.decode_names(store.require(g, "names")[()])
            ip = np.asarray(store.read_dataset(store.require(g, "sum/int"), path, f"fit/{c}/sum/int"), dtype=np.float64)
            ib = np.asarray(store.read_dataset(store.require(g, "sum/bkg"), path, f"fit/{c}/sum/bkg"), dtype=np.float64)
            norm = None
            if has_norm and f"norm/{c}/sum/int" in f:
                norm = (np.asarray(f[f"norm/{c}/sum/int"][()]), np.asarray(f[f"norm/{c}/sum/int_stddev"][()]))
            per_channel[c] = (names, ip, ib, norm)
    results, summary = {}, {"file": str(path), "cnc": str(cncfile), "channels": {}, "warnings": [],
                            "geometry": geo.as_dict()}
    comp, matrix_record = None, None
    if not cnc.areal:
        comp, matrix_record, wmsg = matrix_composition(cnc, fractions)
        if wmsg:
            summary["warnings"].append(wmsg)
    summary["matrix"] = matrix_record
    for c, (names, ip, ib, norm) in per_channel.items():
        dls = core_detlim.detection_limits(names, ip, ib, total_time, cnc) if not cnc.areal else None
        ylds = None
        if norm is not None:
            ylds = core_detlim.elemental_yields(names, norm[0], norm[1], I0norm, cnc, energy_keV,
                                                geo.incidence_deg, geo.exit_deg, composition=comp,
                                                geometry=geo)
        else:
            summary["warnings"].append(f"{c}: no norm/ group, elemental yields not computed (run normalise)")
        results[c] = (dls, ylds)
        summary["channels"][c] = {
            "detection_limits_ppm_1s": dict(zip(dls.names, map(float, dls.dl[1.0]))) if dls else {},
            "yields": dict(zip(ylds.names, map(float, ylds.values))) if ylds else {},
            "skipped": dls.skipped if dls else [],
        }
    replace = [f"detlim/{tag}"] + ([f"elyield/{tag}"] if any(y for _, y in results.values()) else [])
    params = {"cnc": str(cncfile), "energy_keV": energy_keV, "incidence_deg": geo.incidence_deg,
              "exit_deg": geo.exit_deg, "total_time_s": total_time, "geometry": geo.as_dict(), "fractions": fractions,
              "matrix_fractions": matrix_record}
    with store.transaction(path, "detlim", replace=replace, params=params,
                           inputs=[f"fit/{c}/sum" for c in results] + [f"norm/{c}/sum" for c in results]) as tx:
        for c, (dls, ylds) in results.items():
            if dls is not None:
                g = tx.group(f"detlim/{tag}/{c}")
                store.write_array(g, "names", store.encode_names(dls.names))
                for t_s, label in ((1.0, "1s"), (1000.0, "1000s")):
                    store.write_array(g, f"{label}/data", dls.dl[t_s])
                    store.write_array(g, f"{label}/stddev", dls.dl_err[t_s])
                tx.file[f"detlim/{tag}"].attrs["unit"] = "ppm"
                tx.file["detlim"].attrs["unit"] = "ppm"
            if ylds is not None:
                g = tx.group(f"elyield/{tag}/{c}")
                store.write_array(g, "names", store.encode_names(ylds.names))
                store.write_array(g, "yield", ylds.values)
                store.write_array(g, "stddev", ylds.stddev)
                store.write_array(g, "d_eff_cm", ylds.d_eff_cm)
                g["yield"].attrs["unit"] = ylds.unit
                g.attrs["geometry"] = json.dumps(geo.as_dict())
                if matrix_record is not None:
                    g.attrs["matrix_fractions"] = json.dumps(matrix_record)
    return summary
