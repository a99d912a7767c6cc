"""Physics-based simulation of raw XRF maps: ground truth for converters, fits and quantification.

Model (per scan point p, per line l of element i, per detector channel)::

    N_l = photons_p * (Omega / 4 pi) * eff(E_l) * w_ip * sigma_F(i, l, E0) * A_p(E_l) / sin(psi_in)
    A_p(E) = (1 - exp(-chi * rho * d)) / chi,   chi = mu_p(E0) / sin(psi_in) + mu_p(E) / sin(psi_out)

with ``sigma_F`` the Kissel cascade fluorescence production cross section (cm2/g), ``mu_p`` the
mass attenuation of the point's own composition (matrix scaled by ``1 - sum(traces)``, plus the
traces), ``rho`` (g/cm3) and ``d`` (cm) the density and thickness, ``eff`` the detector efficiency
(Be window transmission times Si photo-absorption). Rayleigh and Compton scatter use the
unpolarised differential cross sections times the solid angle, with the same absorption factor.
Counts are spread over channels with unit-area Gaussians (PyMca's width model
``sigma^2 = (noise / 2.3548)^2 + 0.00385 * fano * E``), the Compton peak broadened, a smooth
continuum added, optionally Si escape peaks. Dead time is paralysable: ``OCR = ICR exp(-ICR tau)``,
the recorded counts are ``Poisson(expected * OCR / ICR)``.

All units: keV, um for thicknesses, g/cm3, s, ppm for trace concentrations, mass fractions for the
matrix. Reproducible: the same ``seed`` gives the same I0, positions and (with ``noise=True``) counts;
I0 and positions do not depend on ``noise``.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import InputError
from . import xraydata as xd
from .rawmap import RawChannel, RawMap
from .scanpattern import ScanPattern, ScanPositions, sample_phantom, scan_positions
from .simphysics import Beam, Detector, Geometry, continuum, line_table, response

log = logging.getLogger(__name__)

_BLOCK = 4096  # pixels per block of the spectrum product


@dataclass
class GroundTruth:
    """Everything the simulation knows, for tests of later steps.

    Attributes
    ----------
    phantom : dict of str to ndarray, shape (prows, pcols)
        Trace concentrations (ppm) on the phantom grid, as given.
    pixel_um : float
        Phantom pixel size.
    matrix : dict of str to float
        Matrix mass fractions, as given.
    concentrations : dict of str to ndarray, shape ``grid``
        Trace concentrations (ppm) at the true position of every recorded point.
    names : list of str
        Line groups (``"Fe K"``, ``"Pb L"``, ``"Au M"``, by Z then K, L, M), then ``"Rayl"``, ``"Compt"``.
    lines : dict of str to dict of str to float
        Per group, the simulated lines and their energies (keV); ``"Rayl"``/``"Compt"`` have one.
    counts : dict of str to dict of str to ndarray, shape ``grid``
        Per channel and group, the expected detected counts before dead time (escape peaks included).
    counts_recorded : dict of str to dict of str to ndarray
        The same after dead time (``counts * ocr / icr``).
    background : dict of str to ndarray
        Per channel, expected continuum counts before dead time.
    icr, ocr, live_time : dict of str to ndarray, shape ``grid``
        Per channel, count rates (counts/s) and live time (s) (``acquisition_time * ocr / icr``).
    photons, flux, I0, acquisition_time : ndarray, shape ``grid``
        Incident photons, flux (photons/s), monitor counts and real time of every point.
    positions : ScanPositions
        Recorded and true positions, the regular grid and the command.
    grid_shape : (int, int)
        The regular grid (rows, cols) the command describes.
    energy_keV, thickness_um, density : float or ndarray
        Excitation energy and sample parameters (phantom grid when arrays).
    detectors : dict of str to Detector
    geometry : Geometry
    beam : Beam
    pattern : ScanPattern
    """

    phantom: dict[str, np.ndarray]
    pixel_um: float
    matrix: dict[str, float]
    concentrations: dict[str, np.ndarray]
    names: list[str]
    lines: dict[str, dict[str, float]]
    counts: dict[str, dict[str, np.ndarray]]
    counts_recorded: dict[str, dict[str, np.ndarray]]
    background: dict[str, np.ndarray]
    icr: dict[str, np.ndarray]
    ocr: dict[str, np.ndarray]
    live_time: dict[str, np.ndarray]
    photons: np.ndarray
    flux: np.ndarray
    I0: np.ndarray
    acquisition_time: np.ndarray
    positions: ScanPositions
    grid_shape: tuple[int, int]
    energy_keV: float
    thickness_um: Any
    density: Any
    detectors: dict[str, Detector]
    geometry: Geometry
    beam: Beam
    pattern: ScanPattern
    extra: dict[str, Any] = field(default_factory=dict)


def _as_map(value: Any, shape: tuple[int, ...], what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if arr.shape != shape:
        raise InputError(f"{what} has shape {arr.shape}, expected a scalar or the phantom shape {shape}")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        raise InputError(f"{what} must be finite and positive")
    return arr


def _check_phantom(concentrations: Mapping[str, Any]) -> tuple[dict[str, np.ndarray], tuple[int, int]]:
    if not concentrations:
        raise InputError("no concentration map given (dict symbol -> 2-D array in ppm)")
    maps: dict[str, np.ndarray] = {}
    shape = None
    for key, value in concentrations.items():
        sym = xd.symbol(key)
        arr = np.asarray(value, dtype=np.float64)
        if arr.ndim != 2:
            raise InputError(f"concentration map of {key!r} must be 2-D (rows, cols), got shape {arr.shape}")
        if shape is not None and arr.shape != shape:
            raise InputError(f"concentration map of {key!r} has shape {arr.shape}, the others {shape}")
        if not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise InputError(f"concentration map of {key!r} has negative or non-finite values (ppm expected)")
        shape = arr.shape
        maps[sym] = maps.get(sym, 0.0) + arr
    return maps, shape  # type: ignore[return-value]


def _fractions(conc: dict[str, np.ndarray], matrix: Mapping[str, float]) -> tuple[np.ndarray, np.ndarray]:
    """Mass fractions of every point: (atomic numbers (nel,), fractions (npix, nel))."""
    mz, mw = xd.composition_arrays(matrix) if matrix else (np.zeros(0, np.int64), np.zeros(0))
    if mw.size and abs(mw.sum() - 1.0) > 1e-6:
        log.info("matrix mass fractions sum to %.6g; renormalised to 1", mw.sum())
        mw = mw / mw.sum()
    trace = {xd.atomic_number(k): v.ravel() * 1e-6 for k, v in conc.items()}
    zs = np.array(sorted(set(mz.tolist()) | set(trace)), dtype=np.int64)
    npix = next(iter(trace.values())).size
    total = np.sum(list(trace.values()), axis=0)
    if np.any(total > 1.0 + 1e-2):
        raise InputError(f"trace concentrations add up to {total.max() * 1e6:.6g} ppm in some point (> 1e6)")
    w = np.zeros((npix, zs.size))
    scale = np.clip(1.0 - total, 0.0, None)
    for z, f in zip(mz, mw):
        w[:, np.searchsorted(zs, z)] += f * scale
    for z, v in trace.items():
        w[:, np.searchsorted(zs, z)] += v
    return zs, w


def simulate_map(concentrations: Mapping[str, Any], matrix: Mapping[str, float], *,
                 thickness_um: float | np.ndarray = 10.0, density: float | np.ndarray = 2.5,
                 energy_keV: float = 18.0, pixel_um: float = 1.0,
                 detectors: Detector | Sequence[Detector] | None = None, geometry: Geometry | None = None,
                 beam: Beam | None = None, pattern: ScanPattern | None = None, noise: bool = True,
                 seed: int | np.random.Generator | None = 0, min_line_keV: float = 1.0,
                 line_threshold: float = 1e-3) -> tuple[RawMap, GroundTruth]:
    """Simulate a raw XRF map of a phantom.

    Parameters
    ----------
    concentrations : dict of str to array, shape (prows, pcols)
        Trace element concentrations in ppm on the phantom grid (symbol or Z as key).
    matrix : dict of str to float
        Matrix mass fractions (renormalised to 1); scaled by ``1 - sum(traces)`` in every point.
    thickness_um, density : float or array of the phantom shape
        Sample thickness (um) and density (g/cm3).
    energy_keV : float
        Excitation energy.
    pixel_um : float
        Phantom pixel size (um).
    detectors : Detector or list of Detector
        One per channel (``channel00``, ``channel01``, ...), each with independent noise.
    geometry, beam, pattern
        Angles, beam/monitor and motor pattern (defaults: 45/45 deg, :class:`Beam`, raster over the
        phantom grid).
    noise : bool
        ``False``: the spectra are the expected (float) counts after dead time.
    seed : int or Generator
        Random seed.
    min_line_keV : float
        Lines below this energy are not simulated.
    line_threshold : float
        Lines weaker than this fraction of their group's strongest line are left out.

    Returns
    -------
    (RawMap, GroundTruth)
        The raw map (spectra ``(rows, points, nbins)``, int32 counts or float64 expected counts) and
        the ground truth.

    Raises
    ------
    InputError
        Unknown element, negative or non-finite concentration, inconsistent shapes, bad parameters.
    """
    if not (np.isfinite(energy_keV) and 1.0 < energy_keV < 200.0):
        raise InputError(f"energy_keV must be within 1..200 keV, got {energy_keV}")
    dets = [Detector()] if detectors is None else ([detectors] if isinstance(detectors, Detector) else list(detectors))
    if not dets:
        raise InputError("at least one detector is needed")
    for d in dets:
        if (d.nbins < 2 or d.gain <= 0 or d.noise <= 0 or d.solid_angle_sr <= 0 or d.dead_time_s < 0
                or not d.air_path_cm >= 0):
            raise InputError(f"invalid detector parameters: {d}")
    geometry, beam, pattern = geometry or Geometry(), beam or Beam(), pattern or ScanPattern()
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    phantom, pshape = _check_phantom(concentrations)
    thick_map = _as_map(thickness_um, pshape, "thickness_um")
    dens_map = _as_map(density, pshape, "density")

    # --- where the beam is, how many photons arrive
    pos = scan_positions(pattern, pshape, pixel_um, rng)
    grid = pos.shape
    npix = int(np.prod(grid))
    sample = {k: sample_phantom(v, pos.true_mot1, pos.true_mot2, pixel_um, pattern.motor_unit_um) for k, v in phantom.items()}
    rho = sample_phantom(dens_map, pos.true_mot1, pos.true_mot2, pixel_um, pattern.motor_unit_um).ravel()
    d_cm = sample_phantom(thick_map, pos.true_mot1, pos.true_mot2, pixel_um, pattern.motor_unit_um).ravel() * 1e-4
    progress = np.linspace(0.0, 1.0, npix).reshape(grid)
    flux = beam.flux * (1.0 - beam.i0_drift * progress) * np.clip(1.0 + beam.i0_noise * rng.standard_normal(grid), 0.05, None)
    photons = flux * pos.acquisition_time
    i0 = photons * beam.i0_gain

    # --- composition, lines, attenuation (vectorised over points)
    zs, w = _fractions(sample, matrix)
    table = line_table(zs, energy_keV, min_line_keV, line_threshold)
    theta = geometry.scatter_rad
    e_c = xd.compton_energy(energy_keV, theta)
    energies = np.concatenate([[energy_keV, e_c], table.energy])
    mu = w @ xd.mass_attenuation(zs, energies)  # (npix, 2 + nlines)
    s_in, s_out = math.sin(math.radians(geometry.incidence_deg)), math.sin(math.radians(geometry.exit_deg))
    if s_in <= 0 or s_out <= 0:
        raise InputError("incidence and exit angles must be within 0..180 degrees")
    chi = mu[:, :1] / s_in + mu / s_out
    absorb = -np.expm1(-chi * (rho * d_cm)[:, None]) / chi  # g/cm2, (npix, 2 + nlines)
    base = photons.ravel()[:, None] / s_in
    fluo = base * w[:, table.elem_of] * table.sigma_f[None, :] * absorb[:, 2:] / (4.0 * math.pi)
    rayl = base[:, 0] * (w @ xd.rayleigh_dcs(zs, energy_keV, theta)) * absorb[:, 0]
    compt = base[:, 0] * (w @ xd.compton_dcs(zs, energy_keV, theta)) * absorb[:, 1]

    names = table.groups + ["Rayl", "Compt"]
    onehot = np.zeros((table.energy.size, len(table.groups)))
    onehot[np.arange(table.energy.size), table.group_of] = 1.0
    lines = {g: {} for g in names}
    for gi, ln, e in zip(table.group_of, table.names, table.energy):
        lines[table.groups[gi]][ln] = float(e)
    lines["Rayl"], lines["Compt"] = {"Rayl": float(energy_keV)}, {"Compt": float(e_c)}

    channels: dict[str, RawChannel] = {}
    truth_counts, truth_rec, truth_bkg, icrs, ocrs, lives, det_map = {}, {}, {}, {}, {}, {}, {}
    for ci, det in enumerate(dets):
        cname = f"channel{ci:02d}"
        eff = det.efficiency(energies)
        amp = np.empty((npix, table.energy.size + 3))
        amp[:, :-3] = fluo * (det.solid_angle_sr * eff[2:])
        amp[:, -3] = rayl * det.solid_angle_sr * eff[0]
        amp[:, -2] = compt * det.solid_angle_sr * eff[1]
        amp[:, -1] = det.background * (amp[:, -3] + amp[:, -2])
        shapes = np.vstack([response(det, np.concatenate([table.energy, [energy_keV, e_c]]), table.energy.size + 1),
                            continuum(det, energy_keV, e_c)[None, :]])
        total = amp.sum(axis=1)
        t = pos.acquisition_time.ravel()
        icr = total / t
        ocr = icr * np.exp(-icr * det.dead_time_s)
        live = np.divide(ocr, icr, out=np.ones_like(icr), where=icr > 0)
        if np.any(live < 0.05):
            log.warning("%s: dead time above 95 %% in some points (ICR up to %.3g cps)", cname, icr.max())
        spectra = np.empty((npix, det.nbins), dtype=np.float64 if not noise else np.int32)
        ch_rng = np.random.default_rng(rng.integers(0, 2**63))
        for start in range(0, npix, _BLOCK):
            sl = slice(start, min(npix, start + _BLOCK))
            expected = (amp[sl] * live[sl, None]) @ shapes
            np.clip(expected, 0.0, None, out=expected)
            spectra[sl] = ch_rng.poisson(expected) if noise else expected
        group_counts = amp[:, :-3] @ onehot
        truth_counts[cname] = {g: group_counts[:, i].reshape(grid) for i, g in enumerate(table.groups)}
        truth_counts[cname]["Rayl"] = amp[:, -3].reshape(grid)
        truth_counts[cname]["Compt"] = amp[:, -2].reshape(grid)
        truth_rec[cname] = {g: v * live.reshape(grid) for g, v in truth_counts[cname].items()}
        truth_bkg[cname] = amp[:, -1].reshape(grid)
        icrs[cname], ocrs[cname] = icr.reshape(grid), ocr.reshape(grid)
        lives[cname] = (t * live).reshape(grid)
        det_map[cname] = det
        channels[cname] = RawChannel(spectra.reshape(*grid, det.nbins), icrs[cname], ocrs[cname], det.calibration)

    raw = RawMap(channels=channels, I0=i0, acquisition_time=pos.acquisition_time.copy(), mot1=pos.mot1.copy(),
                 mot2=pos.mot2.copy(), cmd=pos.cmd, mot1_name=pattern.slow_motor, mot2_name=pattern.fast_motor,
                 energy_keV=float(energy_keV), sources=[], attrs={"simulated": True})
    truth = GroundTruth(
        phantom=phantom, pixel_um=float(pixel_um), matrix=dict(matrix), concentrations=sample, names=names,
        lines=lines, counts=truth_counts, counts_recorded=truth_rec, background=truth_bkg, icr=icrs, ocr=ocrs,
        live_time=lives, photons=photons, flux=flux, I0=i0, acquisition_time=pos.acquisition_time.copy(),
        positions=pos, grid_shape=(pos.grid_mot1.size, pos.grid_mot2.size), energy_keV=float(energy_keV),
        thickness_um=thickness_um, density=density, detectors=det_map, geometry=geometry, beam=beam, pattern=pattern)
    log.info("simulated %s map, %d lines in %d groups, %d channel(s)", "x".join(map(str, grid)),
             table.energy.size, len(table.groups), len(dets))
    return raw, truth


# --------------------------------------------------------------------------- reference materials
def _read_cnc(path: str | Path) -> dict[str, Any]:
    """A ppm ``.cnc`` file (:func:`xrfproc.core.cnc.read_cnc`) as the simulator's dict.

    Returns
    -------
    dict
        ``name``, ``density`` (g/cm3), ``mass_mg``, ``thickness_um``, ``z`` (int array),
        ``conc`` and ``err`` (ppm arrays).
    """
    from .cnc import read_cnc

    cnc = read_cnc(path)
    if cnc.areal:
        raise InputError(f"concentrations are in {cnc.unit}, the simulator needs ppm", path=path)
    return {"name": cnc.name, "density": cnc.density / 1000.0, "mass_mg": cnc.mass, "thickness_um": cnc.thickness,
            "z": cnc.z.astype(np.int64), "conc": cnc.conc, "err": cnc.err}


def simulate_reference(cnc_path: str | Path, shape: tuple[int, int] = (5, 5), *,
                       matrix: Mapping[str, float] | None = None, **kwargs: Any) -> tuple[RawMap, GroundTruth]:
    """Simulate a small homogeneous map of a reference material described by a ppm ``.cnc`` file.

    The density and thickness come from the file unless given in ``kwargs``; ``matrix`` fills what
    the listed elements leave below 1e6 ppm (default: nothing). Other ``kwargs`` go to
    :func:`simulate_map`.
    """
    cnc = _read_cnc(cnc_path)
    kwargs.setdefault("density", cnc["density"])
    kwargs.setdefault("thickness_um", cnc["thickness_um"])
    if np.any(np.asarray(kwargs["density"]) <= 0) or np.any(np.asarray(kwargs["thickness_um"]) <= 0):
        raise InputError("the file gives no density or thickness; pass density= and thickness_um=", path=cnc_path)
    if cnc["conc"].sum() > 1.01e6:
        raise InputError(f"concentrations add up to {cnc['conc'].sum():.6g} ppm (> 1e6)", path=cnc_path)
    conc = {int(z): np.full(shape, c) for z, c in zip(cnc["z"], cnc["conc"]) if c > 0}
    raw, truth = simulate_map(conc, matrix or {}, **kwargs)
    raw.sources = [str(cnc_path)]
    raw.attrs = {**raw.attrs, "reference": cnc["name"]}
    truth.extra["cnc"] = cnc
    return raw, truth


def write_simulated(path: str | Path, concentrations: Mapping[str, Any] | None = None,
                    matrix: Mapping[str, float] | None = None, *, cnc: str | Path | None = None,
                    **kwargs: Any) -> Path:
    """Simulate a map (or, with ``cnc=``, a reference material map) and write it as a layout file.

    ``kwargs`` go to :func:`simulate_map` / :func:`simulate_reference`. The ground truth is not kept:
    call :func:`simulate_map` and ``xrfproc.store.write_raw`` yourself when you need it (the same
    ``seed`` gives the same data).

    Returns
    -------
    Path
        ``path``.
    """
    from ..store import write_raw  # the store imports core: keep the dependency one-way at import time

    if cnc is not None:
        raw, truth = simulate_reference(cnc, matrix=matrix, **kwargs)
    else:
        if concentrations is None:
            raise InputError("give concentration maps or a cnc file")
        raw, truth = simulate_map(concentrations, matrix or {}, **kwargs)
    params = {"simulated": True, "energy_keV": truth.energy_keV, "cmd": raw.cmd, "names": truth.names,
              "cnc": None if cnc is None else str(cnc),
              **kwargs}
    return write_raw(path, raw, step="simulate", params=params)


#: the demo sample's matrix (a silicate) and its trace elements (ppm)
DEMO_MATRIX = {"O": 0.49, "Si": 0.33, "Al": 0.08, "Ca": 0.05, "K": 0.03, "Na": 0.02}
DEMO_THICKNESS_UM = 30.0
DEMO_DENSITY = 2.6


def demo_phantom(rows: int = 30, cols: int = 40) -> dict[str, np.ndarray]:
    """Trace maps (ppm) with distinct patterns: Fe gradient, Cu disc, Zn stripes, Sr blob, Pb square."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    return {
        "Fe": 200.0 + 800.0 * x / (cols - 1),
        "Cu": 20.0 + 480.0 * (((x - 0.3 * cols) ** 2 + (y - 0.5 * rows) ** 2) < (0.2 * rows) ** 2),
        "Zn": 50.0 + 250.0 * ((y // 5) % 2 == 0),
        "Sr": 30.0 + 400.0 * np.exp(-((x - 0.7 * cols) ** 2 + (y - 0.4 * rows) ** 2) / (2 * (0.12 * cols) ** 2)),
        "Pb": 5.0 + 300.0 * ((np.abs(x - 0.75 * cols) < 0.1 * cols) & (np.abs(y - 0.75 * rows) < 0.1 * rows)),
    }


def demo_detectors() -> list[Detector]:
    """The two detector channels of the demo (slightly different resolution and solid angle)."""
    return [Detector(), Detector(zero=-0.02, noise=0.12, solid_angle_sr=0.04)]


def _default_cnc(name: str) -> Path:
    """A reference ``.cnc`` file shipped with xrfproc (or from ``$XRFPROC_CNC_DIR``)."""
    from .cnc import bundled_cnc

    return bundled_cnc(name)


def demo_dataset(folder: str | Path, seed: int = 0, snake: bool = False,
                 cnc: str | Path | None = None) -> tuple[Path, Path]:
    """Write a demo sample map (30 x 40 points, 0.1 s, 2 channels, 2048 bins) and a NIST SRM 613 map (5 x 5, 2 s).

    Parameters
    ----------
    folder : path
        Where to write (created if needed).
    seed : int
        Random seed (the reference uses ``seed + 1``).
    snake : bool
        Scan the sample as a snake with the half-pixel lag (``lag=0.5``).
    cnc : path, optional
        The NIST 613 concentration file; default ``nist613.cnc`` from ``$XRFPROC_CNC_DIR`` or the
        shared reference folder.

    Returns
    -------
    (Path, Path)
        ``<folder>/demo_sample.h5`` and ``<folder>/demo_nist613.h5``.
    """
    folder = Path(folder)
    cnc = Path(cnc) if cnc is not None else _default_cnc("nist613.cnc")
    common = {"energy_keV": 18.0, "detectors": demo_detectors(), "seed": seed}
    pattern = ScanPattern(kind="snake" if snake else "raster", lag=0.5 if snake else 0.0, dwell_s=0.1)
    sample = write_simulated(folder / "demo_sample.h5", demo_phantom(), DEMO_MATRIX, thickness_um=DEMO_THICKNESS_UM,
                             density=DEMO_DENSITY, pixel_um=2.0, pattern=pattern, **common)
    # an attenuated beam on the thick glass keeps its dead time moderate (about 20 %); 2 s per point
    # (50 s in all) give its 40 ppm lines a few thousand counts each (Fe K: about 3 % statistics)
    ref = write_simulated(folder / "demo_nist613.h5", cnc=cnc, pixel_um=10.0, beam=Beam(flux=2e10),
                          pattern=ScanPattern(dwell_s=2.0), **{**common, "seed": seed + 1})
    return sample, ref


__all__ = ["Detector", "Geometry", "Beam", "GroundTruth", "ScanPattern", "ScanPositions", "simulate_map",
           "simulate_reference", "write_simulated", "demo_dataset", "demo_phantom", "demo_detectors", "DEMO_MATRIX"]
