"""A file already in the (original) xrf_proc layout -> RawMap, so ``convert`` can migrate it.

Files written by the original xrf_proc keep the spectra inline in ``raw/channelXX/spectra`` and
carry no provenance; converting one writes a new file of our layout (spectra in the bulk file,
provenance stamped) with the same raw data. Reading goes through :func:`xrfproc.store.raw.read_raw`,
the one place that knows the layout. Missing optional datasets get the defaults of ``read_raw``
(icr/ocr/I0/acquisition_time 1, motors 0) with a warning.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ._sniff import head_bytes
from ...errors import InputError
from ..rawmap import RawMap
from .provenance import set_energy, set_member_attrs

log = logging.getLogger(__name__)

KIND = "layout"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def sniff(path: str | Path) -> bool:
    """True for an HDF5 file with a dataset ``raw/channel00/spectra``."""
    if head_bytes(path, 8) != _HDF5_MAGIC:
        return False
    try:
        import h5py

        with h5py.File(Path(path), "r") as f:
            if "raw/channel00/spectra" in f and isinstance(f.get("raw/channel00/spectra"), h5py.Dataset):
                return True
            # spectra behind an external link whose bulk file is missing or broken: still our layout
            # (reading it then names the broken link)
            g = f.get("raw/channel00")
            return isinstance(g, h5py.Group) and isinstance(g.get("spectra", getlink=True), h5py.ExternalLink)
    except Exception:
        return False


def read(source: str | Path, **_ignored: Any) -> RawMap:
    """Read ``raw/`` (and ``mot1``, ``mot2``, ``cmd``) of a layout file.

    Raises
    ------
    InputError
        (a :class:`~xrfproc.errors.LayoutError`) when ``raw/`` or its spectra are missing, or arrays do
        not fit the spectra grid.
    """
    from ...store.raw import read_raw

    path = Path(source)
    import h5py

    from ...store import open_read

    try:
        with open_read(path) as f:
            missing = [k for k in ("raw/I0", "raw/acquisition_time", "mot1", "mot2") if k not in f]
            raw_group = f.get("raw")
            for c in (k for k in (raw_group if isinstance(raw_group, h5py.Group) else {}) if k.startswith("channel")):
                missing += [f"raw/{c}/{k}" for k in ("icr", "ocr") if k not in f["raw"][c]]
    except (OSError, RuntimeError, KeyError, ValueError) as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path=path) from None
    if missing:
        log.warning("%s: %s missing; using defaults (1 for rates/I0/time, 0 for motors)", path, ", ".join(missing))
    raw = read_raw(path)
    raw.attrs = dict(raw.attrs, source_format="xrf_proc layout")
    _carry_origins(raw, path)
    raw.validate(str(path))
    return raw


#: attributes of members of raw/ that say where a number came from, carried to the new file
_CARRIED = {"I0": ("units", "source"), "I1": ("units", "source"), "acquisition_time": ("units",)}


def _carry_origins(raw: RawMap, path: Path) -> None:
    """Keep what the old file says about its numbers' origin (energy, calibration, I0 units)."""
    import h5py

    from ...store import open_read

    with open_read(path) as f:
        g = f["raw"]
        if raw.energy_keV is not None:
            src = g.attrs.get("energy_source")
            set_energy(raw, raw.energy_keV, str(src) if src is not None else f"layout file {path.name} raw@energy_keV")
        if "dwell_s" in g.attrs:
            raw.attrs["dwell_s"] = float(g.attrs["dwell_s"])
        for name, ch in raw.channels.items():
            if ch.calibration is not None:
                src = g[name].attrs.get("calibration_source")
                set_member_attrs(raw, name, calibration_source=str(src) if src is not None
                                 else f"layout file {path.name} raw/{name}@calibration_keV")
        for member, keys in _CARRIED.items():
            obj = g.get(member)
            if isinstance(obj, h5py.Dataset):
                set_member_attrs(raw, member, **{k: str(obj.attrs[k]) for k in keys if k in obj.attrs})
