"""The default chain on a real APS fly scan: calibration, elements, the sum rule per fit mode, and a figure.

Runs, in a temporary folder, on ``tests/data/real/2xfm_0011.mda`` (APS 2-ID-E, 10.2975 keV, 11 x 9 pixels,
about 2,600 counts per spectrum)::

    convert -> calibrate -> suggest_elements -> make_config -> fit (engine, fast, precise)

and prints the calibration against the MDA header, the elements with their evidence, and for each mode the
sum rule (per-pixel areas summed / sum-spectrum area) of every line holding >= 2 % of the fluorescence and
the median reduced chi-square. With ``--figure PNG`` it draws the sum spectrum with the engine's fit, its
residual and the identified lines (the README's figure is ``docs/real_2xfm_sum_fit.png``).

Usage::

    python bench/real_data.py [--figure docs/real_2xfm_sum_fit.png]
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import numpy as np

import xrfproc
from xrfproc.core import fit_model, fitconfig, sumfit, xraydata

REAL = Path(__file__).resolve().parent.parent / "tests" / "data" / "real"


def figure(h5: Path, cfg: Path, ident, out: Path) -> None:
    """Sum spectrum, the engine's sum fit and residual, identified lines marked."""
    import h5py
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with h5py.File(h5) as f:
        y = f["raw/channel00/sumspec"][()].astype(np.float64)
        npix = int(np.prod(f["raw/channel00/spectra"].shape[:-1]))
    conf = fitconfig.read_config(cfg, mode="engine", nbins=y.size)
    model = fit_model.build_model(conf.config, y, y.size, nspectra=npix)
    res = sumfit.fit_sum(model, y, npix, background="sum")
    zero, gain = res.theta[:2]
    ch = res.model.channels()
    e = zero + gain * ch
    yw = y[res.model.i0:res.model.i1]
    fig, (ax, axr) = plt.subplots(2, 1, figsize=(10, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.semilogy(zero + gain * np.arange(y.size), np.clip(y, 0.5, None), color="0.6", lw=0.8, label="sum spectrum")
    ax.semilogy(e, np.clip(res.yfit, 0.5, None), color="C3", lw=1.2, label=f"engine fit (chi2 {res.chisq:.2f})")
    ax.semilogy(e, np.clip(res.background, 0.5, None), color="C0", lw=0.8, ls="--", label="continuum")
    top = float(y.max())
    for k, ev in enumerate(ident.elements):
        fam = ev.reading
        for line, energy, _ in sorted(ev.lines.get(fam, []), key=lambda t: -t[2])[:2]:
            ax.axvline(energy, color=f"C{(k % 8) + 1}", lw=0.6, alpha=0.7)
        strongest = max(ev.lines.get(fam, [("", float("nan"), 0.0)]), key=lambda t: t[2])[1]
        ax.text(strongest, top * 1.5, f"{ev.element} {fam}", rotation=90, fontsize=8, ha="center", va="bottom")
    ax.set_ylim(0.5, top * 20)
    ax.set_ylabel("counts / channel")
    ax.legend(loc="upper right", fontsize=8)
    resid = (yw - res.yfit) / np.sqrt(np.maximum(yw, 1.0))
    axr.plot(e, resid, color="k", lw=0.6)
    axr.axhline(0, color="C3", lw=0.8)
    axr.set_ylabel("(y - fit) / sqrt(y)")
    axr.set_xlabel("energy (keV)")
    axr.set_xlim(max(0.5, float(e[0]) - 0.3), xraydata.compton_energy(10.2975, np.pi) + 0.5)
    fig.suptitle("APS 2-ID-E fly scan 2xfm_0011 (99 spectra summed): calibrate + suggest + make_config, engine sum fit",
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--figure", type=Path, help="write the sum-spectrum figure (PNG) here")
    ap.add_argument("--modes", nargs="+", default=["engine", "fast", "precise"])
    args = ap.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("2xfm_0011.mda", "2xfm_0011_2xfm3__0.h5"):
            shutil.copy(REAL / name, Path(tmp) / name)
        h5 = xrfproc.convert(Path(tmp) / "2xfm_0011.mda")
        cal = xrfproc.calibrate(h5)["channels"]["channel00"]
        print(f"calibration: zero {1e3 * cal['zero_keV']:.1f} eV, gain {1e3 * cal['gain_keV']:.4f} eV/channel, "
              f"noise {1e3 * cal['noise_keV']:.0f} eV, Fano {cal['fano']:.3f}; the MDA header reads "
              f"{cal['line_keV']:.3f} keV {cal['shift_eV']:+.0f} eV off")
        ident = xrfproc.suggest_elements(h5, evidence=True)
        print("elements: " + ", ".join(f"{e.element} ({e.kind}, {e.reading}, {e.significance:.0f} sigma)"
                                       for e in ident.elements))
        cfg = xrfproc.make_config(h5, ident.names)
        rows = []
        for mode in args.modes:
            s = xrfproc.fit(h5, cfg, mode=mode, scheduler="sync")
            ch = s["channels"]["channel00"]
            rows.append((mode, ch["sum_rule"], ch["chi2_median"], s["seconds"]))
        lines = list(rows[0][1])
        print("\n| mode | " + " | ".join(lines) + " | median chi2 | seconds |")
        print("|---|" + "---|" * (len(lines) + 2))
        for mode, rule, chi2, sec in rows:
            print(f"| {mode} | " + " | ".join(f"{rule.get(n, float('nan')):.3f}" for n in lines)
                  + f" | {chi2:.2f} | {sec:.2f} |")
        if args.figure:
            figure(Path(h5), Path(cfg), ident, args.figure)
            print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
