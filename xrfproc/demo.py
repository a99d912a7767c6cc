"""The demo: simulate a sample map and a NIST SRM 613 reference, then run the processing chain on them.

Used by ``xrfproc demo`` (and ``make demo``). Everything is written into one folder next to the demo
data; the report returned is a plain-text table for the terminal.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np

from . import api
from .core.cnc import bundled_cnc

log = logging.getLogger(__name__)

ENERGY_KEV = 18.0


def run_demo(folder: str | Path, mode: str = "fast", progress_factory: Callable[[str], Any] | None = None
             ) -> str:
    """Run the demo chain in ``folder``; return the report.

    Parameters
    ----------
    folder : path
        Output folder (created).
    mode : str
        Fit mode for the sample map.
    progress_factory : callable(description) -> context manager yielding a progress callback, optional
        How long steps show progress (the CLI passes a terminal bar).
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
    lines.append(f"demo data: {sample} (sample map), {reference} (NIST SRM 613 reference)")
    elements = api.suggest_elements(sample, ENERGY_KEV)
    lines.append(f"elements found in the sum spectrum: {', '.join(elements)}")
    cfg = api.make_config(sample, elements, ENERGY_KEV)
    lines.append(f"fit configuration written: {cfg}")
    fit_sample = step(f"fit {sample.name} ({mode})", api.fit, sample, cfg, mode=mode)
    step(f"fit {reference.name}", api.fit, reference, cfg, mode="fast")
    api.normalise(sample, I0norm=1e6)
    api.normalise(reference, I0norm=1e6)
    det = api.detlim(reference, cnc)
    written = [sample, reference, cfg]
    if hasattr(api, "quantify"):
        api.quantify(sample, reference, norm=None)
    if hasattr(api, "overview_images"):
        written += api.overview_images(sample, "norm", ncols=4, pix_size_um=2.0, scale_bar_um=20.0)
    summary = api.inspect(sample)
    lines.append(f"groups in {sample.name}: {', '.join(sorted({e['path'].split('/')[1] for e in summary['tree']}))}")
    lines.append("")
    lines.append(_table(sample, det))
    lines.append("")
    lines.append("files written:")
    lines += [f"  {p}" for p in written]
    if fit_sample.get("warnings") if isinstance(fit_sample, dict) else None:
        lines.append("warnings: " + "; ".join(fit_sample["warnings"]))
    return "\n".join(lines)


def _table(sample: Path, det: dict[str, Any]) -> str:
    """Per line of channel00: median normalised intensity, detection limit (1 s) and quantified median."""
    from . import store

    with store.open_read(sample) as f:
        names = store.decode_names(f["norm/channel00/names"][()])
        ims = f["norm/channel00/ims"][()]
        quant = None
        if "quant/channel00" in f:
            quant = dict(zip(store.decode_names(f["quant/channel00/names"][()]), f["quant/channel00/ims"][()]))
    dls = det["channels"].get("channel00", {}).get("detection_limits_ppm_1s", {})
    header = f"{'line':<8}{'median norm. counts':>20}{'DL 1 s (ppm)':>14}" + (f"{'median conc. (ppm)':>20}" if quant else "")
    rows = [header, "-" * len(header)]
    for name, im in zip(names, ims):
        dl = dls.get(name)
        row = f"{name:<8}{np.nanmedian(im):>20.4g}{(f'{dl:.3g}' if dl else '-'):>14}"
        if quant:
            q = quant.get(name)
            row += f"{(f'{np.nanmedian(q):.4g}' if q is not None else '-'):>20}"
        rows.append(row)
    return "\n".join(rows)
