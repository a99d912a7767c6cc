"""The one façade of xrfproc: a function per processing step.

The command line, the MCP server and the recipe language call exactly these functions. Each takes
the path of a layout file (plus its options), reads and writes it through :mod:`xrfproc.store`
(atomically: a failed step leaves the file as it was) and leaves the science to :mod:`xrfproc.core`.
Long steps take ``progress=callable(done, total, message)``.
"""
from __future__ import annotations

import importlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from .core.cnc import Cnc, read_cnc, write_cnc

if TYPE_CHECKING:  # imported on first use (module __getattr__): `import xrfproc` stays light
    from .steps.detlim import detlim
    from .steps.imaging import correlation_plot, overview_images
    from .steps.normalise import normalise
    from .steps.quant import div_by_cnc, quantify
    from .steps.report import report
    from .steps.stats import kmeans, pca
    from .steps.tomo import tomo

log = logging.getLogger(__name__)

#: steps re-exported as they are, imported when first used
_LAZY = {"detlim": ".steps.detlim", "correlation_plot": ".steps.imaging", "overview_images": ".steps.imaging",
         "normalise": ".steps.normalise", "div_by_cnc": ".steps.quant", "quantify": ".steps.quant",
         "report": ".steps.report", "kmeans": ".steps.stats", "pca": ".steps.stats", "tomo": ".steps.tomo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name], __package__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))

__all__ = ["convert", "inspect", "simulate", "simulate_reference", "demo_dataset", "fit", "normalise", "detlim",
           "read_cnc", "write_cnc", "Cnc", "make_config", "suggest_elements", "calibrate", "converter_kinds",
           "kmeans", "pca", "overview_images", "tomo", "quantify", "div_by_cnc", "correlation_plot", "report"]


def converter_kinds() -> list[str]:
    """The format names :func:`convert` accepts as ``kind``."""
    from .core import convert as _convert

    return _convert.kinds()


def convert(source: str | Path | Sequence[str | Path], out: str | Path | None = None, kind: str = "auto",
            compression: str = "gzip", **options: Any) -> Path:
    """Convert beamline file(s) into a file of the uniform layout.

    Parameters
    ----------
    source : path or list of paths
        A beamline file or scan directory; a list is merged into one map.
    out : path, optional
        The file to write; default ``<source stem>.h5`` next to the source, ``<first source
        stem>_merge.h5`` when several scans are stitched (see :func:`xrfproc.core.convert.default_output`).
    kind : str
        ``"auto"`` (detect from the content) or one of :func:`converter_kinds`.
    compression : str
        Of the raw spectra: ``"gzip"`` (level 4, readable everywhere; default), ``"lz4"`` or
        ``"blosc"`` (faster; reading needs the ``hdf5plugin`` filters) or ``"none"``.
    **options
        Passed to the reader (e.g. ``scan="1.1"``, ``dims=(10, 10)``, ``sort=True``).
        ``energy_keV=`` (keV) records the excitation energy; it wins over the file's, and a difference
        of more than 1 eV is logged as a warning naming both.

    Returns
    -------
    Path
        The file written. The spectra are copied block by block: memory does not grow with the map.
    """
    from .store.filters import check_compression

    compression = check_compression(compression)
    from . import store
    from .core import convert as _convert

    raw = _convert.read_any(source, kind=kind, **options)
    if out is None:
        out = _convert.default_output(source, options)
    sources = [str(s) for s in source] if isinstance(source, (list, tuple)) else [str(source)]
    return store.write_raw(out, raw, params={"kind": kind, "source": sources, "compression": compression, **options},
                           compression=compression)


def inspect(h5file: str | Path) -> dict[str, Any]:
    """Summarise a layout file: its groups with shapes and units, the steps that ran and their provenance."""
    from .store.inspect import summarise

    return summarise(h5file)


def simulate(out: str | Path, rows: int = 20, cols: int = 30, energy_keV: float = 18.0, scan: str = "raster",
             seed: int = 0, **options: Any) -> Path:
    """Simulate the demo phantom (Fe, Cu, Zn, Sr, Pb in a silicate) on a ``rows x cols`` grid and write it.

    ``scan`` is ``"raster"``, ``"snake"`` or ``"timetriggered"``; other options go to
    :func:`xrfproc.core.simulate.simulate_map`.
    """
    from .core import simulate as sim
    from .core.scanpattern import ScanPattern

    if scan not in ("raster", "snake", "timetriggered"):
        from .errors import InputError
        raise InputError(f"scan must be 'raster', 'snake' or 'timetriggered', got {scan!r}")
    pattern = ScanPattern(kind=scan, lag=0.5 if scan == "snake" else 0.0)
    options.setdefault("detectors", sim.demo_detectors())
    return sim.write_simulated(out, sim.demo_phantom(rows, cols), sim.DEMO_MATRIX, energy_keV=energy_keV,
                               pattern=pattern, seed=seed, **options)


def simulate_reference(out: str | Path, cncfile: str | Path, rows: int = 5, cols: int = 5, energy_keV: float = 18.0,
                       seed: int = 0, **options: Any) -> Path:
    """Simulate a homogeneous reference-material map of the composition in ``cncfile`` and write it."""
    from .core import simulate as sim

    options.setdefault("detectors", sim.demo_detectors())
    return sim.write_simulated(out, cnc=cncfile, shape=(rows, cols), energy_keV=energy_keV, seed=seed, **options)


def demo_dataset(folder: str | Path, seed: int = 0, snake: bool = False) -> tuple[Path, Path]:
    """Write the demo sample map and its NIST SRM 613 reference map into ``folder``."""
    from .core.simulate import demo_dataset as _demo

    return _demo(folder, seed=seed, snake=snake)


def fit(h5file: str | Path, config: Any, channel: Any = None, mode: str = "fast", **options: Any) -> dict[str, Any]:
    """Fit every pixel's spectrum and write ``fit/`` (see :func:`xrfproc.steps.fit.fit`)."""
    from .steps.fit import fit as _fit

    return _fit(h5file, config, channel=channel, mode=mode, **options)


def make_config(h5file: str | Path, elements: Sequence[str], energy_keV: float | None = None, **options: Any) -> Path:
    """Write a PyMca ``.cfg`` for ``elements`` without a GUI, calibrated from the spectrum; returns its path.

    The energy defaults to the one the file records (``raw@energy_keV``).
    """
    from .steps.configure import make_config as _make

    return _make(h5file, elements, energy_keV, **options)


def suggest_elements(h5file: str | Path, energy_keV: float | None = None, channel: str | None = None,
                     evidence: bool = False, **options: Any) -> Any:
    """Elements whose line patterns are found in the sum spectrum of ``h5file`` (symbols, or the
    :class:`~xrfproc.core.identify.Identification` with evidence when ``evidence=True``)."""
    from .steps.configure import suggest_elements as _suggest

    return _suggest(h5file, energy_keV, channel=channel, evidence=evidence, **options)


def calibrate(h5file: str | Path, energy_keV: float | None = None, channel: str | None = None,
              **options: Any) -> dict[str, Any]:
    """Energy calibration and resolution of each channel from its own sum spectrum; writes ``calib/``
    (see :func:`xrfproc.steps.calibrate.calibrate`)."""
    from .steps.calibrate import calibrate as _calibrate

    return _calibrate(h5file, energy_keV, channel, **options)
