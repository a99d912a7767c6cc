"""The one module that imports PyMca5: everything xrfproc asks of PyMca goes through here.

Sections (other engineers append their own, clearly separated, below the existing ones):

1. Configuration files (``ConfigDict``): read, write, PyMca's default configuration.
2. Spectra shipped with PyMca (``Steel.spe``, ``XRFSpectrum.mca``).
3. Fits: the fast linear fit of many spectra (``FastXRFLinearFit``) and the full nonlinear fit of one
   spectrum (``ClassMcaTheory``), with results as plain numpy arrays and lists of PyMca group names.

PyMca's GUI packages are never imported. PyMca prints a few warnings with ``print``; the fit
functions here route them to :mod:`logging` so that stdout stays clean.
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

import PyMca5 as _PyMca5
from PyMca5 import PyMcaDataDir
from PyMca5.PyMcaIO import ConfigDict as _ConfigDict
from PyMca5.PyMcaIO import specfilewrapper as _specfile

log = logging.getLogger(__name__)


class _LazyModule:
    """A PyMca module imported on first use: its fit theory loads PyMca's element database (0.6 s),
    which a process whose engine model comes from the cache never needs."""

    def __init__(self, name: str):
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        return getattr(importlib.import_module(self._name), attr)


_ClassMcaTheory = _LazyModule("PyMca5.PyMcaPhysics.xrf.ClassMcaTheory")
_FastXRFLinearFit = _LazyModule("PyMca5.PyMcaPhysics.xrf.FastXRFLinearFit")
_BatchFitOutput = _LazyModule("PyMca5.PyMcaPhysics.xrf.XRFBatchFitOutput")

#: PyMca's version (part of the engine model cache key)
PYMCA_VERSION = str(getattr(_PyMca5, "version", lambda: "unknown")()) if callable(getattr(_PyMca5, "version", None)) \
    else str(getattr(_PyMca5, "__version__", "unknown"))
#: folder of the data PyMca ships (Steel.spe, Steel.cfg, XRFSpectrum.mca, McaTheory.cfg)
PYMCA_DATA_DIR = Path(PyMcaDataDir.PYMCA_DATA_DIR)


@contextlib.contextmanager
def _stdout_to_log() -> Iterator[None]:
    """Capture PyMca's ``print`` output and log it as warnings."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        yield
    text = buf.getvalue().strip()
    if text:
        for line in text.splitlines():
            log.warning("PyMca: %s", line)


# =========================================================================== 1. configuration files
def read_config(path: str | Path) -> dict[str, Any]:
    """Read a PyMca ``.cfg`` file with PyMca's own ``ConfigDict``.

    Raises
    ------
    OSError
        When the file does not exist or cannot be parsed (callers turn it into ConfigError).
    ValueError
        When the file is not in the ``.ini`` format PyMca writes.
    """
    cfg = _ConfigDict.ConfigDict()
    try:
        cfg.read(str(path))
    except Exception as exc:  # configparser errors are many; PyMca re-raises some as IOError
        raise OSError(f"{type(exc).__name__}: {exc}") from None
    return cfg


def config_from_text(text: str) -> dict[str, Any]:
    """Parse the text of a ``.cfg`` file (as stored in ``fit/channelXX/cfg``) into a configuration."""
    cfg = _ConfigDict.ConfigDict()
    cfg.readfp(io.StringIO(text))
    return cfg


def config_to_text(config: Mapping[str, Any]) -> str:
    """The ``.cfg`` text PyMca would write for ``config``."""
    cfg = _ConfigDict.ConfigDict()
    cfg.update(copy.deepcopy(dict(config)))
    return cfg.tostring()


def write_config(config: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``config`` as a PyMca ``.cfg`` file (the format the PyMca GUI reads)."""
    path = Path(path)
    path.write_text(config_to_text(config))
    return path


def default_config() -> dict[str, Any]:
    """PyMca's complete default fit configuration (``McaTheory.cfg`` as PyMca completes it)."""
    with _stdout_to_log():
        return dict(_ClassMcaTheory.McaTheory().getConfiguration())


# =========================================================================== 2. shipped spectra
def read_spectrum_file(path: str | Path) -> np.ndarray:
    """Counts of the last MCA in a SPEC/``.mca``/``.spe`` file, as PyMca's specfile wrapper reads it.

    Returns
    -------
    ndarray, shape (nbins,), float64
    """
    sf = _specfile.Specfile(str(path))
    for i in range(len(sf) - 1, -1, -1):
        if sf[i].nbmca() > 0:
            return np.asarray(sf[i].mca(1), dtype=np.float64)
    raise OSError(f"no MCA spectrum in {path}")


# =========================================================================== 3. fits
#: PyMca's names of the scatter groups and the names the layout uses for them
def rename_group(name: str) -> str:
    """``Scatter Peak000`` -> ``Rayl``, ``Scatter Compton000`` -> ``Compt`` (``Rayl1`` ... for
    further excitation energies); element groups keep PyMca's name (``Fe K``, ``Pb L3``)."""
    for prefix, new in (("Scatter Peak", "Rayl"), ("Scatter Compton", "Compt")):
        if name.startswith(prefix):
            idx = int(name[len(prefix):] or 0)
            return new if idx == 0 else f"{new}{idx}"
    return name


@dataclass
class FastFitResult:
    """Result of :func:`fast_fit` for a stack of spectra.

    Attributes
    ----------
    names : list of str
        PyMca's group names (background parameters dropped), in PyMca's order.
    areas, sigma : ndarray, shape (ngroups, nspectra), float64
        Fitted areas (counts) and their 1-sigma uncertainties from the linear least squares.
    chi2 : ndarray, shape (nspectra,) or None
        Reduced chi-square per spectrum over the fit window (Poisson weights ``max(y, 1)``),
        when the model was requested.
    raw_parameters : ndarray
        PyMca's ``parameters`` buffer exactly as returned (all free parameters, its dtype).
    raw_names : list of str
        Labels of ``raw_parameters``.
    """

    names: list[str]
    areas: np.ndarray
    sigma: np.ndarray
    chi2: np.ndarray | None
    raw_parameters: np.ndarray
    raw_names: list[str]


def fast_fit(spectra: np.ndarray, config: Mapping[str, Any], ysum: np.ndarray, *, weight: int | None = None,
             refit: bool = True, with_chi2: bool = True, variance: np.ndarray | None = None) -> FastFitResult:
    """PyMca's ``FastXRFLinearFit.fitMultipleSpectra`` on a stack of spectra.

    Parameters
    ----------
    spectra : ndarray, shape (nspectra, nbins)
        Counts. Passed to PyMca unchanged (so the result equals a direct call on the same array).
    config : mapping
        A PyMca fit configuration with a SNIP background (checked by the caller).
    ysum : ndarray, shape (nbins,)
        The sum spectrum the model (and the average weights) are built from.
    weight : {None, 0, 1, 2}
        PyMca's weight policy: None as the configuration says, 0 none, 1 average from ``ysum``,
        2 per spectrum.
    refit : bool
        Refit spectra with negative areas without the offending groups (PyMca's ``refit``).
    with_chi2 : bool
        Also build the fitted model (background + peaks, as PyMca computes it) to return the
        reduced chi-square per spectrum; costs one extra array the size of ``spectra``.
    variance : ndarray, shape (nspectra, nbins), optional
        Poisson variances of the chi-square (default ``max(spectra, 1)``; give the raw counts when
        ``spectra`` had a background subtracted).
    """
    spectra = np.asarray(spectra)
    fitter = _FastXRFLinearFit.FastXRFLinearFit()
    outbuffer = _BatchFitOutput.OutputBuffer(nosave=True, saveFit=bool(with_chi2))
    with _stdout_to_log():
        out = fitter.fitMultipleSpectra(y=spectra, ysum=np.asarray(ysum, dtype=np.float64),
                                        configuration=copy.deepcopy(dict(config)), weight=weight,
                                        refit=refit, outbuffer=outbuffer, save=False)
    theory = fitter._mcaTheory
    raw_names = list(out.labels("parameters"))
    params = np.asarray(out["parameters"])
    uncert = np.asarray(out["uncertainties"])
    background = set(theory.PARAMETERS[:theory.NGLOBAL])
    keep = [i for i, n in enumerate(raw_names) if n not in background]
    names = [raw_names[i] for i in keep]
    chi2 = None
    if with_chi2:
        model = np.asarray(out["model"], dtype=np.float64)
        ok = np.isfinite(model[0]) if model.ndim == 2 else np.isfinite(model)
        y = spectra[:, ok].astype(np.float64)
        m = model[:, ok]
        var = np.maximum(y if variance is None else np.asarray(variance, dtype=np.float64)[:, ok], 1.0)
        nfree = len(raw_names)
        dof = max(int(ok.sum()) - nfree, 1)
        chi2 = ((y - m) ** 2 / var).sum(axis=1) / dof
    return FastFitResult(names=names, areas=params[keep].astype(np.float64), sigma=uncert[keep].astype(np.float64),
                         chi2=chi2, raw_parameters=params, raw_names=raw_names)


@dataclass
class SpectrumFitResult:
    """Result of a full PyMca fit of one spectrum (see :func:`full_fit`).

    Attributes
    ----------
    names : list of str
        PyMca's group names in PyMca's order.
    fitarea, sigmaarea : ndarray, shape (ngroups,)
        PyMca's ``fitarea`` (includes the short-tail area when hypermet tails are on) and its sigma.
    parameters : ndarray, shape (ngroups,)
        The fitted area parameters themselves (what the fast fit reports; equal to ``fitarea``
        when the short tail is off).
    statistics : ndarray, shape (ngroups,) or None
        PyMca's ``statistics`` (counts within +-3 sigma of each group's lines); None without digest.
    chisq : float
        PyMca's reduced chi-square.
    calibration : tuple of float
        Fitted ``(zero, gain)`` in keV and keV/channel.
    """

    names: list[str]
    fitarea: np.ndarray
    sigmaarea: np.ndarray
    parameters: np.ndarray
    statistics: np.ndarray | None
    chisq: float
    calibration: tuple[float, float]
    resolution: tuple[float, float] = (float("nan"), float("nan"))


class SpectrumFitter:
    """A configured ``ClassMcaTheory`` that fits one spectrum at a time (full nonlinear fit).

    Configuring costs about 0.1 s, so one fitter is built per worker and reused for many spectra.

    Parameters
    ----------
    config : mapping
        PyMca fit configuration (used as is: background, weights, linear flag, strategy).
    """

    def __init__(self, config: Mapping[str, Any]):
        with _stdout_to_log():
            self._theory = _ClassMcaTheory.ClassMcaTheory()
            self.config = self._theory.configure(copy.deepcopy(dict(config)))
        self.names: list[str] = list(self._theory.PARAMETERS[self._theory.NGLOBAL:])

    def fit(self, y: np.ndarray, digest: bool = False, sigmay: np.ndarray | None = None) -> SpectrumFitResult:
        """Fit one spectrum (counts per channel, channel numbers 0..nbins-1).

        ``sigmay`` (per channel, same length as ``y``) replaces PyMca's ``sqrt(y)`` uncertainties.
        Raises whatever PyMca raises when the fit fails (singular matrix, no peaks in the window).
        """
        y = np.asarray(y, dtype=np.float64)
        x = np.arange(y.size, dtype=np.float64)
        th = self._theory
        with _stdout_to_log():
            if sigmay is None:
                th.setData(x, y, xmin=self.config["fit"]["xmin"], xmax=self.config["fit"]["xmax"])
            else:
                th.setData(x, y, sigmay=np.asarray(sigmay, dtype=np.float64), xmin=self.config["fit"]["xmin"],
                           xmax=self.config["fit"]["xmax"])
            th.estimate()
            if digest:
                _, res = th.startfit(digest=1)
            else:
                th.startfit(digest=0)
                res = th.imagingDigestResult()
        n = th.NGLOBAL
        names = list(res["groups"])
        fitarea = np.array([res[g]["fitarea"] for g in names], dtype=np.float64)
        sigma = np.array([res[g]["sigmaarea"] for g in names], dtype=np.float64)
        params = np.asarray(th.fittedpar[n:n + len(names)], dtype=np.float64)
        stats = np.array([res[g]["statistics"] for g in names], dtype=np.float64) if digest else None
        return SpectrumFitResult(names=names, fitarea=fitarea, sigmaarea=sigma, parameters=params,
                                 statistics=stats, chisq=float(th.chisq),
                                 calibration=(float(th.fittedpar[0]), float(th.fittedpar[1])),
                                 resolution=(float(th.fittedpar[2]), float(th.fittedpar[3])))


def full_fit(y: np.ndarray, config: Mapping[str, Any]) -> SpectrumFitResult:
    """A full PyMca fit of one spectrum with the digested result (``startfit(digest=1)``)."""
    return SpectrumFitter(config).fit(y, digest=True)


# ---- readers (convert)
# SPEC and EDF files read with PyMca's own readers, returned as plain numpy arrays and dicts.
@dataclass
class SpecScan:
    """One scan of a SPEC file as PyMca reads it.

    Attributes
    ----------
    key : str
        ``"<number>.<order>"`` (``"1.1"``).
    command : str
        The ``#S`` command (``"mesh samx 0 1 2 samy 0 0.5 1 0.1"``).
    labels : list of str
        Counter/motor column names (``#L``).
    data : ndarray, shape (ncolumns, npoints)
        The counter columns.
    mca : ndarray, shape (nmca, nbins)
        All MCA spectra of the scan in file order (point by point, detector by detector); empty
        ``(0, 0)`` when the scan has none.
    calibration : tuple of float or None
        ``#@CALIB a b c`` (energy = a + b*ch + c*ch^2, in the units of the file, usually keV).
    """

    key: str
    command: str
    labels: list[str]
    data: np.ndarray
    mca: np.ndarray
    calibration: tuple[float, float, float] | None


def read_spec_scans(path: str | Path) -> list[SpecScan]:
    """All scans of a SPEC (or plain column / ``.mca``) file through PyMca's specfile wrapper.

    Raises
    ------
    OSError, ValueError
        When PyMca cannot read the file (the caller turns them into InputError).
    """
    with _stdout_to_log():
        sf = _specfile.Specfile(str(path))
        out = []
        for i in range(len(sf)):
            sc = sf[i]
            try:
                labels = [str(x) for x in sc.alllabels()]
            except Exception:  # plain column files may have no #L
                labels = []
            data = np.atleast_2d(np.asarray(sc.data(), dtype=np.float64))
            n = int(sc.nbmca())
            mca = np.array([np.asarray(sc.mca(j + 1), dtype=np.float64) for j in range(n)]) if n else np.zeros((0, 0))
            cal = None
            for line in sc.header("@CALIB") or []:
                vals = line.split()[1:]
                try:
                    nums = [float(v) for v in vals][:3]
                except ValueError:
                    continue
                if len(nums) >= 2:
                    cal = (nums[0], nums[1], nums[2] if len(nums) > 2 else 0.0)
                    break
            try:
                command = str(sc.command())
            except Exception:
                command = ""
            out.append(SpecScan(f"{sc.number()}.{sc.order()}", command, labels, data, mca, cal))
    return out


def read_edf(path: str | Path) -> list[tuple[dict[str, str], np.ndarray]]:
    """The images of an EDF file with their headers, through PyMca's ``EdfFile``."""
    from PyMca5.PyMcaIO import EdfFile as _EdfFile

    with _stdout_to_log():
        edf = _EdfFile.EdfFile(str(path), access="rb")
        out = []
        for i in range(edf.GetNumImages()):
            header = {str(k): str(v) for k, v in edf.GetHeader(i).items()}
            out.append((header, np.asarray(edf.GetData(i))))
    return out


def write_edf(path: str | Path, images: list[np.ndarray], headers: list[Mapping[str, Any]] | None = None) -> Path:
    """Write images into a new EDF file with PyMca's ``EdfFile`` (used to make test files)."""
    from PyMca5.PyMcaIO import EdfFile as _EdfFile

    path = Path(path)
    if path.exists():
        path.unlink()
    edf = _EdfFile.EdfFile(str(path), access="ab")
    for i, img in enumerate(images):
        edf.WriteImage(dict(headers[i]) if headers else {}, np.asarray(img), Append=1)
    return path


# ---- engine model (fit_engine)
# PyMca-facing side of xrfproc.core.fit_engine: the linear model of PyMca's fast fit, computed by
# PyMca itself (FastXRFLinearFit's own set-up steps), plus the line tables and nonlinear parameters
# the engine needs to re-evaluate the group shapes at other calibrations (refine).
def engine_model_inputs(config: Mapping[str, Any], sum_spectrum: np.ndarray, *,
                        weight: int | None = None) -> dict[str, Any]:
    """Everything :func:`xrfproc.core.fit_model.build_model` needs, as plain python/numpy.

    Runs exactly the set-up steps of ``FastXRFLinearFit.fitMultipleSpectra`` (configure with the
    linear flag on, ``setData`` with the sum spectrum over ``xmin..xmax``, ``estimate``, the
    derivative matrix with respect to every free parameter, the SNIP anchors and the trim window).

    Parameters
    ----------
    config : mapping
        PyMca fit configuration (not modified). Must use the SNIP background when stripping.
    sum_spectrum : ndarray, shape (nbins,)
        The sum spectrum (counts per channel, channels 0..nbins-1).
    weight : {None, 0, 1, 2}
        PyMca's weight policy (None: 2 when the configuration has ``fitweight``, else 0).

    Returns
    -------
    dict with keys
        ``names`` (PyMca names of the free parameters, in order), ``nbkg`` (how many of them are
        background/continuum parameters, first), ``i0``, ``i1`` (channel window ``[i0, i1)``),
        ``derivatives`` (ndarray (i1-i0, nfree), float64: the model columns), ``anchors`` (SNIP
        anchor indices within the window or None when stripping is off), ``stripflag``,
        ``stripalgorithm``, ``snipwidth``, ``filterwidth``, ``weight_policy``, ``weight``,
        ``zero``, ``gain``, ``noise``, ``fano`` (keV, keV/channel, keV FWHM, Fano factor),
        ``hypermet`` (PyMca's bit flags, 0: pseudo-Voigt), ``tails`` (ST AreaR, ST SlopeR,
        LT AreaR, LT SlopeR, STEP HeightR), ``escape`` (bool), ``lines`` (per free column: list of
        (rate, energy keV, is_escape); empty for continuum columns), ``bounds`` (per nonlinear
        parameter: (fixed flag, delta) from the ``detector`` section).
    """
    cfg = copy.deepcopy(dict(config))
    y = np.asarray(sum_spectrum, dtype=np.float64).ravel()
    # FastXRFLinearFit._fitConfigure's adjustments (no concentrations), applied before one single
    # configure: PyMca configures up to three times, and configuring is most of the set-up cost
    fit = cfg.setdefault("fit", {})
    if weight is None:
        policy, weight2 = (2, 1) if fit.get("fitweight", 0) else (0, 0)
    elif weight == 1:
        policy, weight2 = 1, 1
    elif weight == 2:
        policy, weight2 = 2, 1
    else:
        policy, weight2 = 0, 0
    fit["fitweight"] = 1 if policy else 0
    fit["linearfitflag"] = 1
    if "concentrations" in cfg and cfg["concentrations"].get("useautotime", 0):
        cfg["concentrations"]["useautotime"] = 0
    if fit.get("strategyflag", 0):
        raise ValueError("Strategies are incompatible with fast fit")
    if fit.get("stripflag", 0) and fit.get("stripalgorithm", 0) != 1:
        raise ValueError("Please use the faster SNIP background")
    fitter = _FastXRFLinearFit.FastXRFLinearFit()
    with _stdout_to_log():
        th = fitter._mcaTheory
        th.setConfiguration(cfg)
        config2 = th.getConfiguration()
        th.enableOptimizedLinearFit()
        x = np.arange(y.size, dtype=np.float64)
        th.setData(x=x, y=y, xmin=config2["fit"]["xmin"], xmax=config2["fit"]["xmax"])
        derivatives, free_names, nfree, nfree_bkg = fitter._fitCreateModel(dtype=np.float64)
        anchors = fitter._fitBkgAnchorList(config=config2)
        i0, i1 = fitter._fitMcaTrimInfo(x=x)
    par = np.asarray(th.parameters, dtype=np.float64)
    names_all = list(th.PARAMETERS)
    ng = th.NGLOBAL
    free_idx = [i for i in range(len(names_all)) if th.codes[0][i] != _ClassMcaTheory.Gefit.CFIXED]
    hyp = int(config2["fit"]["hypermetflag"]) if int(config2["fit"].get("fitfunction", 0)) == 0 else 0
    tails = [float(par[names_all.index(k)]) if k in names_all else 0.0
             for k in ("ST AreaR", "ST SlopeR", "LT AreaR", "LT SlopeR", "STEP HeightR")]
    escape = bool(th.ESCAPE)
    lines: list[list[tuple[float, float, bool]]] = []
    escape_fractions: list[list[float]] = []  # per line: 1, or the escape peak's fraction of its parent
    for i in free_idx:
        if i < ng:
            lines.append([])
            escape_fractions.append([])
            continue
        g = i - ng
        peaks = np.asarray(th.PEAKS0[g], dtype=np.float64)
        rows: list[tuple[float, float, bool]] = [(float(r), float(e), False) for r, e in peaks[:, :2]]
        fractions = [1.0] * len(rows)
        if escape:
            for k, esc_group in enumerate(th.PEAKS0ESCAPE[g]):
                for esc in esc_group:
                    rows.append((float(peaks[k, 0] * esc[1]), float(esc[0]), True))
                    fractions.append(float(esc[1]))
        lines.append(rows)
        escape_fractions.append(fractions)
    det = config2["detector"]
    bounds = {k: (bool(det.get("fixed" + k, 0)), float(det.get("delta" + k, 0.0)))
              for k in ("zero", "gain", "noise", "fano")}
    return {
        "names": list(free_names), "nbkg": int(nfree_bkg), "i0": int(i0), "i1": int(i1),
        "derivatives": np.ascontiguousarray(derivatives, dtype=np.float64),
        "anchors": None if anchors is None else [int(a) for a in anchors],
        "stripflag": bool(config2["fit"]["stripflag"]),
        "stripalgorithm": int(config2["fit"]["stripalgorithm"]),
        "snipwidth": int(config2["fit"]["snipwidth"]),
        "filterwidth": float(config2["fit"]["stripfilterwidth"]),
        "weight_policy": int(policy), "weight": int(weight2),
        "zero": float(par[0]), "gain": float(par[1]), "noise": float(par[2]), "fano": float(par[3]),
        "hypermet": hyp, "tails": tails, "escape": escape, "lines": lines, "bounds": bounds,
        "escape_fractions": escape_fractions,
    }
