"""PyMca fit configurations: reading and checking ``.cfg`` files, and writing new ones without a GUI.

A configuration is the dictionary PyMca's ``ConfigDict`` reads (sections ``fit``, ``detector``,
``peaks``, ``attenuators``, ``materials``, ...). Reading and writing go through
:mod:`xrfproc.core.pymca_bridge`; this module holds the rules (what a fit mode needs, which line
families an excitation energy reaches) and turns every problem into a :class:`ConfigError` that says
what to change.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import ConfigError, InputError
from . import pymca_bridge, xraydata

log = logging.getLogger(__name__)

#: sections a configuration must have for a fit
REQUIRED_SECTIONS = ("fit", "detector", "peaks")
#: the fix for a non-SNIP background in fast / engine mode
SNIP_FIX = "set [fit] stripalgorithm = 1 (SNIP)"
STRIP_ALGORITHMS = {0: "Strip", 1: "SNIP"}


@dataclass
class FitConfig:
    """A checked fit configuration.

    Attributes
    ----------
    config : dict
        PyMca's configuration dictionary.
    text : str
        The ``.cfg`` text (what ``fit/channelXX/cfg`` stores).
    source : str
        The file it came from (or ``"<text>"``).
    warnings : list of str
        Problems that do not stop a fit (e.g. a fit window clipped to the spectrum length).
    """

    config: dict[str, Any]
    text: str
    source: str
    warnings: list[str] = field(default_factory=list)


def read_config(source: str | Path, *, mode: str = "fast", nbins: int | None = None) -> FitConfig:
    """Read a PyMca ``.cfg`` file and check it for a fit.

    Parameters
    ----------
    source : str or Path
        Path of the ``.cfg`` file.
    mode : {"fast", "precise", "engine"}
        The fit mode it will serve; ``fast`` and ``engine`` need a SNIP background.
    nbins : int, optional
        Number of channels of the spectra it will fit (checks the fit window).

    Raises
    ------
    ConfigError
        Missing or unreadable file, missing sections, a configuration the mode cannot use; the
        message names the file and the setting to change.
    """
    path = Path(source)
    if not path.is_file():
        raise ConfigError("fit configuration file not found (expected a PyMca .cfg file)", path=path)
    try:
        config = pymca_bridge.read_config(path)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read the fit configuration as a PyMca .cfg file ({exc})", path=path) from None
    text = path.read_text(errors="replace")
    warnings = check_config(config, mode=mode, nbins=nbins, where=str(path))
    return FitConfig(dict(config), text, str(path), warnings)


def config_from_text(text: str, *, mode: str = "fast", nbins: int | None = None,
                     where: str = "<text>") -> FitConfig:
    """Like :func:`read_config` for the text of a ``.cfg`` file (e.g. read back from ``fit/.../cfg``)."""
    try:
        config = pymca_bridge.config_from_text(text)
    except Exception as exc:  # configparser raises many kinds
        raise ConfigError(f"cannot parse the fit configuration ({exc})", path=where) from None
    warnings = check_config(config, mode=mode, nbins=nbins, where=where)
    return FitConfig(dict(config), text, where, warnings)


def check_config(config: Mapping[str, Any], *, mode: str = "fast", nbins: int | None = None,
                 where: str = "<config>") -> list[str]:
    """Check that ``config`` can drive a fit of the given mode; return non-fatal warnings.

    Raises
    ------
    ConfigError
        With the setting to change.
    """
    if mode not in ("fast", "precise", "engine"):
        raise InputError(f"fit mode {mode!r} must be 'fast', 'precise' or 'engine'")
    missing = [s for s in REQUIRED_SECTIONS if s not in config or not isinstance(config[s], Mapping)]
    if missing:
        raise ConfigError(f"missing section(s) {', '.join('[' + s + ']' for s in missing)}; "
                          "a PyMca fit configuration needs [fit], [detector] and [peaks]", path=where)
    fit = config["fit"]
    for key in ("xmin", "xmax"):
        if key not in fit:
            raise ConfigError(f"[fit] has no '{key}' (the fit window in channels)", path=where)
    warnings: list[str] = []
    stripflag = _setting(fit, "stripflag", where)
    algorithm = _setting(fit, "stripalgorithm", where)
    if mode in ("fast", "engine"):
        if stripflag and algorithm != 1:
            name = STRIP_ALGORITHMS.get(algorithm, str(algorithm))
            raise ConfigError(f"the {mode} fit needs a SNIP background but the configuration uses "
                              f"stripalgorithm = {algorithm} ({name}); {SNIP_FIX}, or use mode='precise'",
                              path=where)
        if _setting(fit, "strategyflag", where):
            raise ConfigError(f"the {mode} fit cannot apply a fit strategy; set [fit] strategyflag = 0",
                              path=where)
    peaks = config.get("peaks") or {}
    scatter = bool(_setting(fit, "scatterflag", where)) and any(
        _is_number(e) and float(e) != 0 for e in _as_list(fit.get("energyscatter")))
    if not peaks and not scatter:
        raise ConfigError("the [peaks] section is empty and scatter peaks are off: nothing to fit; "
                          "add element line groups (e.g. 'Fe = K') or set [fit] scatterflag = 1", path=where)
    xmin, xmax = (_setting(fit, key, where, float) for key in ("xmin", "xmax"))
    if xmin >= xmax:
        raise ConfigError(f"fit window xmin = {xmin:g} is not below xmax = {xmax:g}", path=where)
    if nbins is not None:
        if xmin >= nbins - 1:
            raise ConfigError(f"fit window starts at channel {xmin:g} but the spectra have {nbins} channels: "
                              "the configuration was made for another detector; set [fit] xmin/xmax "
                              f"within 0..{nbins - 1}", path=where)
        if xmax > nbins - 1:
            raise ConfigError(f"fit window ends at channel {xmax:g} but the spectra have {nbins} channels "
                              f"(0..{nbins - 1}): the configuration was made for another channel count; "
                              f"set [fit] xmax <= {nbins - 1}", path=where)
    energies = [e for e in _as_list(fit.get("energy")) if _is_number(e) and float(e) > 0]
    if not energies:
        raise ConfigError("[fit] energy holds no excitation energy (keV)", path=where)
    return warnings


def _setting(section: Mapping[str, Any], key: str, where: str, cast: Any = int) -> Any:
    """A numeric setting of a ``[fit]``-like section (missing or empty: 0), or a ConfigError naming it."""
    value = section.get(key, 0)
    if isinstance(value, (list, tuple, np.ndarray)):
        value = list(value)[0] if len(value) == 1 else value
    if value is None or (isinstance(value, str) and not value.strip()) or (isinstance(value, list) and not value):
        value = 0
    try:
        number = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"[fit] {key} must be a number, found {value!r}", path=where) from None
    if not np.isfinite(number) or abs(number) > 1e12:
        raise ConfigError(f"[fit] {key} must be a finite number of sensible size, found {value!r}", path=where)
    return cast(number)


def _as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (list, tuple, np.ndarray)):
        return list(value)
    return [value]


def _is_number(value: Any) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return False
    return value is not None and str(value) != "None"


def excitation_energy(config: Mapping[str, Any]) -> float:
    """The first (main) excitation energy of a configuration, keV."""
    for e in _as_list(config["fit"].get("energy")):
        if _is_number(e) and float(e) > 0:
            return float(e)
    raise ConfigError("[fit] energy holds no excitation energy (keV)")


# --------------------------------------------------------------------------- line families
def excited_families(element: str, energy_keV: float, emin_keV: float = 1.0) -> list[str]:
    """The line families (``K``, ``L``, ``M``) of ``element`` a fit at ``energy_keV`` should model.

    A family is included when its edge (K; L3; M5) lies below the excitation energy and its
    strongest line falls between ``emin_keV`` (the low end of the fit window) and the excitation
    energy.
    """
    out = []
    for family, edge in (("K", "K"), ("L", "L3"), ("M", "M5")):
        e_edge = xraydata.edge_energy(element, edge)
        if e_edge <= 0 or e_edge >= energy_keV:
            continue
        group = xraydata.line_group(element, family)
        if not group.energies.size:
            continue
        strongest = float(group.energies[int(np.argmax(group.rates))])
        if emin_keV <= strongest < energy_keV:
            out.append(family)
    return out


def strongest_line_keV(element: str, energy_keV: float, emin_keV: float = 1.0) -> float:
    """Energy (keV) of the strongest line of the first family :func:`excited_families` fits (NaN if none)."""
    for fam in excited_families(element, energy_keV, emin_keV):
        group = xraydata.line_group(element, fam)
        return float(group.energies[int(np.argmax(group.rates))])
    return float("nan")


# --------------------------------------------------------------------------- calibration
def estimate_calibration(spectrum: np.ndarray, lines_keV: Sequence[float], weights: Sequence[float] | None = None,
                         gain_range: tuple[float, float] = (0.002, 0.05), zero_range: tuple[float, float] = (-0.5, 0.5),
                         ) -> tuple[float, float]:
    """Energy calibration ``(zero keV, gain keV/channel)`` that puts known lines on the spectrum's peaks.

    A coarse search over gain and zero maximises the (log) counts at the expected channels of
    ``lines_keV``; peaks found near the best positions are then fitted by a straight line.

    Parameters
    ----------
    spectrum : ndarray, shape (nbins,)
        Counts (usually the sum spectrum).
    lines_keV : sequence of float
        Energies of lines known to be present (e.g. the Ka of the main elements and the
        Rayleigh peak at the excitation energy); at least two distinct ones.
    weights : sequence of float, optional
        Relative importance of each line (default 1).
    """
    y = np.asarray(spectrum, dtype=np.float64)
    lines = np.asarray(lines_keV, dtype=np.float64)
    w = np.ones_like(lines) if weights is None else np.asarray(weights, dtype=np.float64)
    if y.ndim != 1 or y.size < 16:
        raise InputError(f"need a 1-D spectrum of at least 16 channels, got shape {y.shape}")
    if np.unique(np.round(lines, 3)).size < 2:
        raise InputError("need at least two distinct line energies to calibrate")
    kernel = np.ones(5) / 5
    smooth = np.log1p(np.convolve(np.clip(y, 0, None), kernel, mode="same"))
    n = y.size
    best = (-np.inf, 0.0, 0.01)
    for gain in np.geomspace(*gain_range, 400):
        zeros = np.linspace(zero_range[0], zero_range[1], 101)
        ch = np.rint((lines[None, :] - zeros[:, None]) / gain).astype(int)
        inside = (ch >= 0) & (ch < n)
        vals = np.where(inside, smooth[np.clip(ch, 0, n - 1)], 0.0)
        score = (vals * w[None, :]).sum(axis=1)
        i = int(np.argmax(score))
        if score[i] > best[0]:
            best = (float(score[i]), float(zeros[i]), float(gain))
    _, zero, gain = best
    # refine: centroid of the counts around each predicted position
    centres, energies = [], []
    for e in lines:
        c = (e - zero) / gain
        lo, hi = int(max(0, c - 6)), int(min(n, c + 7))
        if hi - lo < 3:
            continue
        seg = np.clip(y[lo:hi], 0, None)
        if seg.sum() <= 0:
            continue
        centres.append(float((np.arange(lo, hi) * seg).sum() / seg.sum()))
        energies.append(float(e))
    if len(set(np.round(energies, 3))) >= 2:
        gain, zero = np.polyfit(centres, energies, 1)
    return float(zero), float(gain)


# --------------------------------------------------------------------------- writing
def make_config(path: str | Path, elements: Sequence[str] | Mapping[str, Sequence[str] | str], energy_keV: float, *,
                nbins: int = 2048, zero: float = 0.0, gain: float = 0.01, noise: float = 0.1, fano: float = 0.114,
                emin_keV: float = 1.0, emax_keV: float | None = None, snipwidth: int = 30,
                snipfilter: int = 1, polynomial: int | None = None,
                refine: Sequence[str] = ("zero", "gain", "noise", "fano"),
                detector: tuple[str, float, float] = ("Si1", 2.33, 0.045),
                window: tuple[str, float, float] | None = ("Be1", 1.848, 0.0008),
                matrix: Mapping[str, Any] | None = None,
                attenuators: Mapping[str, tuple[str, float, float]] | None = None,
                matrix_min_fraction: float = 1e-3,
                scatter: bool = True, escape: bool = True, pileup: bool = False,
                angles_deg: tuple[float, float] = (45.0, 45.0)) -> Path:
    """Write a PyMca ``.cfg`` for a fit of XRF spectra, without a GUI.

    The configuration starts from PyMca's defaults and sets a SNIP background (so every fit mode
    accepts it), the requested line groups, Rayleigh and Compton peaks at the excitation energy,
    the detector and, optionally, a sample matrix and attenuators.

    Parameters
    ----------
    path : str or Path
        The ``.cfg`` file to write.
    elements : sequence of str, or mapping element -> families
        Elements (``["Fe", "Pb"]``: the families are chosen from the excitation energy and the edges,
        see :func:`excited_families`) or explicit groups (``{"Fe": "K", "Pb": ["L", "M"]}``).
    energy_keV : float
        Excitation energy (keV).
    nbins : int
        Number of channels of the spectra.
    zero, gain : float
        Energy calibration: ``E = zero + gain * channel`` (keV, keV/channel).
    noise, fano : float
        Detector electronic noise (keV FWHM) and Fano factor.
    emin_keV, emax_keV : float
        Fit window in keV (default: ``emin_keV`` .. excitation energy + 1 keV), clipped to the spectrum.
    snipwidth : int
        Width of the SNIP background filter, channels. On a noise-free spectrum about twice the FWHM
        (47 channels of 10 eV at 18 keV) follows the continuum best (30 climbs into clusters such as
        K Ka + Ca Ka + Ca Kb), but on spectra with few counts per channel a wider filter clips more
        noise (see ``polynomial``).
    snipfilter : int
        Savitzky-Golay smoothing width (channels, odd; 1 = none) applied before SNIP
        (PyMca's ``stripfilterwidth``).
    polynomial : int, optional
        Instead of SNIP, fit a continuum polynomial of this order (PyMca's "Linear Polynomial",
        linear parameters, so the fast fit accepts it) together with the peaks. Unbiased at any count
        rate (SNIP clips Poisson noise, so it under-estimates the continuum of spectra with few counts
        per channel, and climbs into dense clusters of overlapping lines), but it needs a smooth
        continuum over the window: end the window below the scatter peaks (``emax_keV``).
    refine : sequence of {"zero", "gain", "noise", "fano"}
        Detector parameters a full (nonlinear) fit may refine; the others are fixed at the given
        values. The fast fit never refines them. Give ``()`` when the calibration and resolution are
        known (e.g. simulated data): with a Doppler-broadened Compton peak, which PyMca models with
        the detector resolution alone, a free noise/Fano makes every peak of the sum-spectrum fit
        too narrow or too wide.
    detector : (material, density g/cm3, thickness cm)
        Detector crystal.
    window : (material, density, thickness cm) or None
        Detector window (default 8 um of Be, as a typical silicon drift detector and the simulator's
        :class:`~xrfproc.core.simphysics.Detector`).
    matrix : mapping, optional
        ``{"composition": {"Fe": 0.7, "Cr": 0.2, ...} (mass fractions), "density": g/cm3,
        "thickness": cm, "name": str}``; without it no matrix (thin sample) is assumed. The matrix
        sets the line ratios within each group (Ka/Kb, L3/L2/L1 absorbed differently on their way
        out): a thick or dense sample needs it.
    matrix_min_fraction : float
        Matrix components below this mass fraction are left out (the rest renormalised to 1): they
        hardly change the absorption, but PyMca's set-up time grows with the number of components
        (30 s per configuration for the 60 elements of NIST SRM 613, 4 s for its 6 majors).
    attenuators : mapping name -> (material, density g/cm3, thickness cm), optional
        Filters in the fluorescence path (``atmosphere``, ``absorber``, ``Filter 6`` ...) or in the
        beam (``BeamFilter0``, ``BeamFilter1``). Materials are PyMca formulas (``"Al1"``) or
        names defined in ``materials``.
    scatter, escape, pileup : bool
        Model the scatter peaks, the detector escape peaks and pile-up.
    angles_deg : (float, float)
        Incidence and take-off angles in degrees (sample surface).

    Raises
    ------
    InputError
        Unknown element, an element with no line in the window, a bad energy or calibration.
    """
    energy = float(energy_keV)
    if not np.isfinite(energy) or energy <= 0.5:
        raise InputError(f"excitation energy {energy_keV!r} keV must be a positive number above 0.5 keV")
    if not (np.isfinite(gain) and gain > 0):
        raise InputError(f"calibration gain {gain!r} keV/channel must be positive")
    if nbins < 16:
        raise InputError(f"nbins = {nbins}: spectra need at least 16 channels")
    groups: dict[str, list[str]] = {}
    if isinstance(elements, Mapping):
        for el, fams in elements.items():
            groups[xraydata.symbol(el)] = [fams] if isinstance(fams, str) else list(fams)
    else:
        for el in elements:
            sym = xraydata.symbol(el)
            fams = excited_families(sym, energy, emin_keV)
            if not fams:
                raise InputError(f"{sym}: no K, L or M line between {emin_keV:g} keV and the excitation energy "
                                 f"{energy:g} keV; remove it or give its line groups explicitly")
            groups[sym] = fams
    bad = set(refine) - {"zero", "gain", "noise", "fano"}
    if bad:
        raise InputError(f"refine: unknown detector parameter(s) {sorted(bad)}; use zero, gain, noise, fano")
    if polynomial is not None and not 0 <= int(polynomial) <= 10:
        raise InputError(f"polynomial order {polynomial} must be within 0..10")
    if int(snipfilter) < 1:
        raise InputError(f"snipfilter = {snipfilter}: the smoothing width must be >= 1 channel (1 = none)")
    emax = energy + 1.0 if emax_keV is None else float(emax_keV)
    xmin = int(max(0, np.floor((emin_keV - zero) / gain)))
    xmax = int(min(nbins - 1, np.ceil((emax - zero) / gain)))
    if xmax - xmin < 16:
        raise InputError(f"fit window {emin_keV:g}..{emax:g} keV covers only channels {xmin}..{xmax} "
                         f"with zero={zero:g}, gain={gain:g}: check the calibration")

    if scatter and emax_keV is not None:
        e_compton = xraydata.compton_energy(energy, np.radians(sum(angles_deg)))
        if emax < e_compton:
            log.info("fit window ends at %.3g keV, below the Compton peak (%.3g keV): scatter peaks not fitted",
                     emax, e_compton)
            scatter = False
    cfg = copy.deepcopy(pymca_bridge.default_config())
    fit = cfg["fit"]
    fit.update({
        "energy": [energy], "energyweight": [1.0], "energyflag": [1], "energyscatter": [1 if scatter else 0],
        "scatterflag": 1 if scatter else 0, "stripflag": 1, "stripalgorithm": 1, "snipwidth": int(snipwidth),
        "stripfilterwidth": int(snipfilter), "stripanchorsflag": 0, "stripanchorslist": [0, 0, 0, 0], "xmin": xmin, "xmax": xmax,
        "use_limit": 1, "linearfitflag": 0, "fitweight": 1, "escapeflag": 1 if escape else 0,
        "sumflag": 1 if pileup else 0, "hypermetflag": 1, "continuum": 0, "strategyflag": 0, "maxiter": 10,
    })
    if polynomial is not None:
        fit.update({"stripflag": 0, "continuum": 4, "linpolorder": int(polynomial)})
    det = cfg["detector"]
    det.update({"zero": float(zero), "gain": float(gain), "noise": float(noise), "fano": float(fano),
                **{f"fixed{k}": int(k not in refine) for k in ("zero", "gain", "noise", "fano")}, "fixedsum": 0,
                "detele": _first_element(detector[0]), "ignoreinputcalibration": 0})
    cfg["peaks"] = {el: (fams[0] if len(fams) == 1 else list(fams)) for el, fams in groups.items()}

    att = cfg["attenuators"]
    att["Detector"] = [1, detector[0], float(detector[1]), float(detector[2]), 1.0]
    att["window"] = [1, window[0], float(window[1]), float(window[2]), 1.0] if window else [0, "-", 0.0, 0.0, 1.0]
    for key in list(att):
        if key not in ("Detector", "window", "Matrix") and len(att[key]) == 4:
            att[key] = list(att[key]) + [1.0]
    for name, (material, density, thickness) in (attenuators or {}).items():
        att[name] = [1, material, float(density), float(thickness), 1.0]
    a_in, a_out = (float(a) for a in angles_deg)
    if matrix:
        comp = {xraydata.symbol(k): float(v) for k, v in dict(matrix["composition"]).items()}
        total = sum(comp.values())
        if total <= 0:
            raise InputError("matrix composition must have positive mass fractions")
        comp = {k: v for k, v in comp.items() if v / total >= matrix_min_fraction} or comp
        total = sum(comp.values())
        name = str(matrix.get("name", "SampleMatrix"))
        density = float(matrix.get("density", 1.0))
        thickness = float(matrix.get("thickness", 0.1))
        cfg.setdefault("materials", {})[name] = {
            "Comment": "written by xrfproc make_config", "Density": density, "Thickness": thickness,
            "CompoundList": list(comp), "CompoundFraction": [v / total for v in comp.values()]}
        att["Matrix"] = [1, name, density, thickness, a_in, a_out, 0, a_in + a_out]
    else:
        att["Matrix"] = [0, "MULTILAYER", 0.0, 0.0, a_in, a_out, 0, a_in + a_out]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pymca_bridge.write_config(cfg, path)
    # read back as any user would: the file must be one PyMca accepts
    read_config(path, mode="fast", nbins=nbins)
    log.info("wrote fit configuration %s (%s; %.3g keV; channels %d..%d)", path,
             ", ".join(f"{e} {'/'.join(f)}" for e, f in groups.items()), energy, xmin, xmax)
    return path


def _first_element(formula: str) -> str:
    import re

    m = re.match(r"([A-Z][a-z]?)", formula)
    return m.group(1) if m else "Si"
