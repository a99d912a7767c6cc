"""The in-memory form of one converted scan: what every converter returns and the store writes.

Axis order everywhere: the scan grid first (``rows, cols`` for a 2-D map, ``points`` for a line,
nothing for a single spectrum), then the detector channels (energy bins) for spectra.
``mot1`` is the slow (least moving) motor, ``mot2`` the fast one, as in the original layout.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InputError


@dataclass
class RawChannel:
    """One fluorescence detector channel (possibly the sum of several detector elements).

    Attributes
    ----------
    spectra : array-like, shape (*grid, nbins)
        Counts per energy bin. Any object with ``shape``, ``dtype`` and slicing along the first axis
        works (numpy array, h5py dataset, :class:`~xrfproc.core.convert.lazy.LazySpectra` of the
        HDF5 readers), so large maps need not be in memory: the store copies them block by block.
    icr, ocr : ndarray, shape grid
        Input and output count rates (counts/s). ``icr / ocr`` is the dead-time factor.
    calibration : tuple of float, optional
        Energy calibration ``(zero, gain, quadratic)`` in keV, keV/bin, keV/bin^2.
    """

    spectra: Any
    icr: np.ndarray
    ocr: np.ndarray
    calibration: tuple[float, float, float] | None = None


@dataclass
class RawMap:
    """A scan in the uniform layout, before any processing.

    Attributes
    ----------
    channels : dict of str to RawChannel
        Keyed ``channel00``, ``channel01``, ...
    I0, acquisition_time : ndarray, shape grid
        Primary beam monitor (counts) and live/real acquisition time per point (s).
    mot1, mot2 : ndarray, shape grid
        Motor positions per point (slow, fast), in the units of the beamline (usually mm or um).
    I1 : ndarray, optional
        Transmission monitor.
    cmd : str
        The scan command.
    """

    channels: dict[str, RawChannel]
    I0: np.ndarray
    acquisition_time: np.ndarray
    mot1: np.ndarray
    mot2: np.ndarray
    I1: np.ndarray | None = None
    cmd: str = ""
    mot1_name: str = "mot1"
    mot2_name: str = "mot2"
    energy_keV: float | None = None
    sources: list[str] = field(default_factory=list)
    attrs: dict[str, Any] = field(default_factory=dict)

    @property
    def grid_shape(self) -> tuple[int, ...]:
        """Shape of the scan grid (spectra shape without the energy axis)."""
        first = next(iter(self.channels.values()))
        return tuple(first.spectra.shape[:-1])

    def validate(self, where: str = "scan") -> None:
        """Check that every per-point array matches the spectra grid.

        Raises
        ------
        InputError
            Naming the array whose shape does not fit, and the shape expected.
        """
        if not self.channels:
            raise InputError("no detector channel (spectra) found", path=where)
        grid = self.grid_shape
        if int(np.prod(grid)) == 0 or self.channels[next(iter(self.channels))].spectra.shape[-1] == 0:
            raise InputError(f"empty scan: spectra shape {self.channels[next(iter(self.channels))].spectra.shape}", path=where)
        for name, ch in self.channels.items():
            if tuple(ch.spectra.shape[:-1]) != grid:
                raise InputError(f"{name}/spectra has grid {tuple(ch.spectra.shape[:-1])}, expected {grid}", path=where)
            for key in ("icr", "ocr"):
                arr = getattr(ch, key)
                if np.shape(arr) != grid:
                    raise InputError(f"{name}/{key} has shape {np.shape(arr)}, expected the spectra grid {grid}", path=where)
        for key in ("I0", "acquisition_time", "mot1", "mot2", "I1"):
            arr = getattr(self, key)
            if arr is None and key == "I1":
                continue
            if np.shape(arr) != grid:
                raise InputError(f"{key} has shape {np.shape(arr)}, expected the spectra grid {grid}", path=where)
