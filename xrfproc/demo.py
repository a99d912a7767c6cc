"""The demo: simulate a sample map and a NIST SRM 613 reference, then run the processing chain on them.

Used by ``xrfproc demo`` (and ``make demo``). Everything is written into one folder next to the demo
data: the maps, the fit configurations, overview images of the normalised and quantified maps and an
HTML report (:func:`xrfproc.api.report`). The text returned for the terminal ends with a table of the
lines the demo is about (:data:`DEMO_LINES`; ``all_lines=True``: every fitted line) and where the
images and the report are.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from . import api
from .core.cnc import bundled_cnc
from .core.simulate import demo_detectors

log = logging.getLogger(__name__)

ENERGY_KEV = 18.0
CHANNELS = ("channel00", "channel01")
#: the trace lines the demo phantom is about, shown in the final table (the others with ``all_lines``)
DEMO_LINES = ("Fe K", "Cu K", "Zn K", "Sr K", "Pb L")
#: pixel size of the demo maps for the scale bars (um) and the bar's length
PIXEL_UM = 2.0
SCALE_BAR_UM = 20.0


def config_options(energy_keV: float, matrix: Any, detector: Any, angles_deg: tuple[float, float] = (45.0, 45.0),
                   compton_margin_keV: float = 1.0, order: int = 5) -> dict[str, Any]:
    """Options of :func:`xrfproc.api.make_config` for an accurate fit of a sample of known matrix.

    - the matrix (a :class:`~xrfproc.core.cnc.Cnc` in ppm with density and thickness) sets the line
      ratios within each group (Ka/Kb of Fe in a 30 um silicate differ by 10 % from the thin-film ones);
    - the detector resolution and calibration are those of the detector (``noise``, ``fano``) and
      are not refined by the sum-spectrum fit (``refine=()``): PyMca gives the Compton peak the
      detector resolution only, so its Doppler broadening would widen every peak of that fit;
    - the fit window ends ``compton_margin_keV`` below the Compton peak (which PyMca cannot model,
      see above) and the continuum is a polynomial of ``order`` fitted with the peaks: SNIP, applied
      per pixel in the fast fit, clips the Poisson noise of spectra with a few counts per channel
      (the continuum comes out 50-100 % too low and the trace lines too high) and, in a reference
      glass with 60 trace elements, climbs into the forest of lines.
    """
    from .core import xraydata

    fractions = matrix.mass_fractions()
    comp = {xraydata.symbol(int(z)): float(w) for z, w in fractions.items()}
    thickness_cm = matrix.thickness * 1e-4 if matrix.thickness > 0 else 1.0
    e_compton = xraydata.compton_energy(energy_keV, np.radians(sum(angles_deg)))
    return {"matrix": {"composition": comp, "density": matrix.density / 1000.0, "thickness": thickness_cm,
                       "name": "SampleMatrix"},
            "noise": float(detector.noise), "fano": float(detector.fano), "refine": (),
            "polynomial": int(order), "emax_keV": float(e_compton - compton_margin_keV),
            "angles_deg": angles_deg}


def run_demo(folder: str | Path, mode: str = "fast", progress_factory: Callable[[str], Any] | None = None,
             all_lines: bool = False, report: bool = True) -> str:
    """Run the demo chain in ``folder``; return the text for the terminal.

    Parameters
    ----------
    folder : path
        Output folder (created).
    mode : str
        Fit mode for the sample map.
    progress_factory : callable(description) -> context manager yielding a progress callback, optional
        How long steps show progress (the CLI passes a terminal bar).
    all_lines : bool
        Show every fitted line in the final table, not only :data:`DEMO_LINES`.
    report : bool
        Write the HTML report of the sample (``demo_sample_report.html``).

    Returns
    -------
    str
        What was found (elements, the table against the simulated truth) and where the overview
        images and the report are, in under 30 lines.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lines: list[str] = []

    def step(description: str, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if progress_factory is not None and "progress" not in kwargs:
            with progress_factory(description) as bar:
                return func(*args, progress=bar, **kwargs)
        return func(*args, **kwargs)

    sample, reference = api.demo_dataset(folder)
    cnc = bundled_cnc("nist613")
    lines.append(f"demo data: {sample.name} (sample map), {reference.name} (NIST SRM 613 reference) in {folder}")
    elements = api.suggest_elements(sample, ENERGY_KEV)
    lines.append(f"elements found in the sum spectrum: {', '.join(elements)}")
    matrix = _write_demo_matrix(folder / "demo_matrix.cnc")
    cfgs = [api.make_config(sample, elements, ENERGY_KEV, channel=c, out=folder / f"demo_sample_{c}.cfg",
                            **config_options(ENERGY_KEV, api.read_cnc(matrix), det))
            for c, det in zip(CHANNELS, demo_detectors())]
    log.info("fit configurations written: %s", ", ".join(map(str, cfgs)))
    fit_sample = step(f"fit {sample.name} ({mode})", api.fit, sample, cfgs, mode=mode)
    # the reference is fitted with every certified element it holds, so that its minor elements do not
    # end up in the areas of the lines the sample shares with it
    ref_cfgs = [api.make_config(reference, reference_elements(cnc, ENERGY_KEV), ENERGY_KEV, channel=c,
                                out=folder / f"demo_nist613_{c}.cfg",
                                **config_options(ENERGY_KEV, api.read_cnc(cnc), det))
                for c, det in zip(CHANNELS, demo_detectors())]
    log.info("reference fit configurations written: %s", ", ".join(map(str, ref_cfgs)))
    step(f"fit {reference.name}", api.fit, reference, ref_cfgs, mode="fast")
    api.normalise(sample, I0norm=1e6)
    api.normalise(reference, I0norm=1e6)
    det = api.detlim(reference, cnc)
    api.quantify(sample, reference, matrix=matrix)
    images = []
    for datadir in ("norm", "quant"):
        images += api.overview_images(sample, datadir, ncols=4, pix_size_um=PIXEL_UM, scale_bar_um=SCALE_BAR_UM,
                                      channel="channel00")
    page = api.report(sample, out=folder / f"{sample.stem}_report.html", pix_size_um=PIXEL_UM) if report else None
    lines.append("")
    table, hidden = _table(sample, det, None if all_lines else DEMO_LINES)
    lines.append(table)
    lines.append("(true ppm: the simulated phantom's mean; quantified with the NIST 613 yields and the sample's "
                 "matrix)")
    if hidden:
        lines.append(f"{len(hidden)} more fitted lines (matrix and minor lines: {', '.join(hidden)}): "
                     "xrfproc demo --all-lines shows them")
    lines.append("")
    lines.append(f"files in {folder}: {sample.name}, {reference.name} (+ .h5.d/), {len(cfgs) + len(ref_cfgs)} fit "
                 f"configurations (.cfg), {matrix.name}")
    lines.append("overview images:")
    lines += [f"  {p}" for p in images]
    if page is not None:
        lines.append(f"HTML report (open it in a browser): {page}")
    if isinstance(fit_sample, dict) and fit_sample.get("warnings"):
        lines.append("warnings: " + "; ".join(fit_sample["warnings"]))
    return "\n".join(lines)


def reference_elements(cnc_path: Path, energy_keV: float, min_ppm: float = 1.0, min_line_keV: float = 1.2) -> list[str]:
    """Elements of a certificate with a line family excited at ``energy_keV`` above ``min_line_keV``."""
    from .core import xraydata

    cnc = api.read_cnc(cnc_path)
    out = []
    for z, c in zip(cnc.z, cnc.conc):
        if c < min_ppm:
            continue
        for family in ("K", "L", "M"):
            group = xraydata.line_group(int(z), family)
            excited = xraydata.fluorescence_cs(int(z), group.lines, energy_keV).sum() > 0
            if excited and group.energies.size and group.energies.max() >= min_line_keV:
                out.append(xraydata.symbol(int(z)))
                break
    return out


def _write_demo_matrix(path: Path) -> Path:
    """The demo sample's matrix (what a user would know of their sample) as a concentration file."""
    from .core import xraydata
    from .core.simulate import DEMO_MATRIX, DEMO_THICKNESS_UM, DEMO_DENSITY

    total = sum(DEMO_MATRIX.values())
    zs = [xraydata.atomic_number(el) for el in DEMO_MATRIX]
    conc = [DEMO_MATRIX[el] / total * 1e6 for el in DEMO_MATRIX]
    cnc = api.Cnc(name="demo silicate matrix", z=np.array(zs), conc=np.array(conc), err=np.zeros(len(zs)),
                  density=DEMO_DENSITY * 1000.0, mass=0.0, thickness=DEMO_THICKNESS_UM)
    return api.write_cnc(path, cnc)


def _table(sample: Path, det: dict[str, Any], only: Sequence[str] | None = DEMO_LINES) -> tuple[str, list[str]]:
    """Per line of channel00: median normalised intensity, detection limit (1 s), quantified and true mean.

    Returns the table of the lines in ``only`` (every line when None) and the names of the lines left out.
    """
    from . import store

    with store.open_read(sample) as f:
        names = store.decode_names(f["norm/channel00/names"][()])
        ims = f["norm/channel00/ims"][()]
        quant = None
        if "quant/channel00" in f:
            quant = dict(zip(store.decode_names(f["quant/channel00/names"][()]), f["quant/channel00/ims"][()]))
    from .core.simulate import demo_phantom

    truth = {f"{el} K" if el != "Pb" else "Pb L": float(np.mean(v)) for el, v in demo_phantom().items()}
    dls = det["channels"].get("channel00", {}).get("detection_limits_ppm_1s", {})
    header = (f"{'line':<8}{'median norm. counts':>20}{'DL 1 s (ppm)':>14}{'mean conc. (ppm)':>20}"
              f"{'true (ppm)':>12}")
    rows = [header, "-" * len(header)]
    hidden = []
    for name, im in zip(names, ims):
        if only is not None and name not in only:
            hidden.append(name)
            continue
        dl = dls.get(name)
        q = quant.get(name) if quant else None
        true = truth.get(name)
        rows.append(f"{name:<8}{np.nanmedian(im):>20.4g}{(f'{dl:.3g}' if dl else '-'):>14}"
                    f"{(f'{np.nanmean(q):.4g}' if q is not None else '-'):>20}{(f'{true:.4g}' if true else '-'):>12}")
    return "\n".join(rows), hidden
