"""The ``xrfproc`` command: one-off steps and utilities.

    xrfproc inspect FILE.h5
    xrfproc convert SOURCE [SOURCE ...] [-o OUT] [--kind KIND] [--energy KEV]
                    [--compression gzip|lz4|blosc|none] [--option key=value ...]
    xrfproc simulate OUT.h5 [--rows R --cols C ...]
    xrfproc suggest FILE.h5 --energy 18 / xrfproc config FILE.h5 Fe Cu Zn --energy 18
    xrfproc fit FILE.h5 CFG [--mode fast|precise|engine] [--json] [-O KEY=VALUE ...]
    xrfproc normalise FILE.h5 [--I0norm 1e6 --snake ...]
    xrfproc detlim REF.h5 nist613 / xrfproc quantify FILE.h5 REF.h5 [--matrix M.cnc]
    xrfproc image FILE.h5 [norm|quant|...] [--pixel-um 2 --scale-um 20]
    xrfproc report FILE.h5 [-o OUT.html]
    xrfproc demo [FOLDER]
    xrfproc warmup

``-O KEY=VALUE`` options are checked against the parameters of the API function the subcommand calls
(:mod:`xrfproc.cli_options`); ``xrfproc <step> --help`` lists them. ``fit``, ``normalise``, ``detlim`` and
``quantify`` print one summary table (``--json``: the full summary); library warnings raised during a
step are listed once after it (:mod:`xrfproc.cli_output`; ``-v``: as they come).

User mistakes print one line (``xrfproc: error: <file>:<dataset>: <what was expected>``) and exit with
status 2, without a traceback. Results go to stdout; logging and progress bars to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

from . import api
from ._version import __version__
from .errors import XrfError

log = logging.getLogger("xrfproc")


def _options(pairs: Sequence[str], options: Callable[[], Any] | None = None) -> dict[str, Any]:
    """The ``-O KEY=VALUE`` pairs as a dict, checked against ``options()`` (an
    :class:`~xrfproc.cli_options.OptionSet`) when given: an unknown key is an :class:`InputError`."""
    from .cli_options import parse_pairs

    out = parse_pairs(pairs)
    if out and options is not None:
        options().check(out)
    return out


class StepParser(argparse.ArgumentParser):
    """A subcommand's parser whose ``--help`` ends with the ``-O`` keys it accepts (computed when asked:
    listing them imports the step's modules)."""

    def format_help(self) -> str:
        text = super().format_help()
        command = self.prog.split()[-1]
        from .cli_options import help_for

        import textwrap

        extra = "\n".join(textwrap.fill(line, width=100, subsequent_indent="    ", break_on_hyphens=False)
                          for line in help_for(command).splitlines())
        return text + ("\n" + extra + "\n" if extra else "")


def cmd_inspect(args: argparse.Namespace) -> int:
    from .store.inspect import format_summary

    summary = api.inspect(args.file)
    print(json.dumps(summary, indent=1, default=str) if args.json else format_summary(summary))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    sources = args.source if len(args.source) > 1 else args.source[0]
    from .cli_options import convert_options

    options = _options(args.option, lambda: convert_options(args.kind, args.source))
    if args.energy is not None:
        options["energy_keV"] = args.energy  # --energy wins over -O energy_keV=
    out = api.convert(sources, out=args.output, kind=args.kind, compression=args.compression, **options)
    print(out)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    out = api.simulate(args.output, rows=args.rows, cols=args.cols, energy_keV=args.energy, scan=args.scan,
                       seed=args.seed)
    print(out)
    return 0


def _print_summary(args: argparse.Namespace, step: str, summary: Any, gathered: Any = None) -> None:
    """A step's result: the full JSON with ``--json``, else one compact table; then the warnings the
    libraries raised during the step (to stderr)."""
    from .cli_output import FORMATTERS

    if getattr(args, "json", False):
        print(json.dumps(summary, indent=1, default=str))
    else:
        print(FORMATTERS[step](summary))
    if gathered is not None:
        for line in gathered.lines():
            print(line, file=sys.stderr)


def _run_step(args: argparse.Namespace, description: str | None, func: Callable[..., Any], *fargs: Any,
              **kwargs: Any) -> tuple[Any, Any]:
    """Run a step with a progress bar (when ``description``), library warnings held back unless
    ``-v``; returns ``(result, gathered warnings)``."""
    from .cli_output import gather_warnings
    from .progress import terminal_bar

    with gather_warnings(verbose=bool(getattr(args, "verbose", False))) as gathered:
        if description is None:
            return func(*fargs, **kwargs), gathered
        with terminal_bar(description) as bar:
            result = func(*fargs, progress=bar, **kwargs)
    return result, gathered


def _weight(text: str | None) -> int | str | None:
    if text is None or text == "none":
        return None
    return int(text) if text.isdigit() else text


def cmd_fit(args: argparse.Namespace) -> int:
    from .cli_options import fit_options

    configs = args.config if len(args.config) > 1 else args.config[0]
    options = _options(args.option, lambda: fit_options(args.mode))
    summary, gathered = _run_step(args, f"fit ({args.mode})", api.fit, args.file, configs, channel=args.channel,
                                  mode=args.mode, weight=_weight(args.weight), background=args.background,
                                  calibration=args.calibration, resume=args.resume, **options)
    _print_summary(args, "fit", summary, gathered)
    return 0


def cmd_normalise(args: argparse.Namespace) -> int:
    from .cli_options import normalise_options

    options = _options(args.option, normalise_options)
    summary, gathered = _run_step(args, None, api.normalise, args.file, I0norm=args.I0norm, snake=args.snake,
                                  sort=args.sort, tmnorm=args.tmnorm, timetriggered=args.timetriggered,
                                  halfpixshift=not args.no_halfpixshift, method=args.method, resume=args.resume,
                                  **options)
    _print_summary(args, "normalise", summary, gathered)
    return 0


def cmd_detlim(args: argparse.Namespace) -> int:
    from .cli_options import detlim_options

    options = _options(args.option, detlim_options)
    summary, gathered = _run_step(args, None, api.detlim, args.file, args.cnc, **options)
    _print_summary(args, "detlim", summary, gathered)
    return 0


def cmd_quantify(args: argparse.Namespace) -> int:
    from .cli_options import quantify_options

    absorb = (args.absorb.split(","), args.absorb_matrix) if args.absorb else None
    options = _options(args.option, quantify_options)
    summary, gathered = _run_step(args, None, api.quantify, args.file, args.references, channel=args.channel,
                                  norm=args.norm, absorb=absorb, matrix=args.matrix, **options)
    _print_summary(args, "quantify", summary, gathered)
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    from .cli_options import image_options

    for path in api.overview_images(args.file, args.datadir, ncols=args.cols, pix_size_um=args.pixel_um,
                                    scale_bar_um=args.scale_um, log=args.log, channel=args.channel,
                                    **_options(args.option, image_options)):
        print(path)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    from .cli_options import suggest_options

    options = _options(args.option, suggest_options)
    if not args.evidence:
        print(" ".join(api.suggest_elements(args.file, args.energy, channel=args.channel, **options)))
        return 0
    ident = api.suggest_elements(args.file, args.energy, channel=args.channel, evidence=True, **options)
    print(f"{'element':8s} {'kind':10s} {'reading':7s} {'net counts':>11s} {'sigma':>7s}  peaks explained (keV)")
    for e in ident.elements:
        area = e.area.get(e.reading, float("nan"))
        peaks = ", ".join(f"{p.energy_keV:.2f}" for p in e.peaks)
        print(f"{e.element:8s} {e.kind:10s} {e.reading:7s} {area:11.0f} {e.significance:7.1f}  {peaks}")
    for p in ident.unexplained:
        print(f"unexplained peak at {p.energy_keV:.3f} keV: {p.net_counts:.0f} counts ({p.significance:.1f} sigma)")
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    res = api.calibrate(args.file, args.energy, channel=args.channel)
    print(f"{'channel':10s} {'zero eV':>9s} {'gain eV/ch':>11s} {'noise eV':>9s} {'Fano':>6s} {'stored off':>11s}  method")
    for c, r in res["channels"].items():
        off = "" if r["shift_eV"] is None else f"{r['shift_eV']:+.0f} eV"
        print(f"{c:10s} {1e3 * r['zero_keV']:9.1f} {1e3 * r['gain_keV']:11.4f} {1e3 * r['noise_keV']:9.0f} "
              f"{r['fano']:6.3f} {off:>11s}  {r['method']}")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from .cli_options import config_options

    print(api.make_config(args.file, args.elements, args.energy, **_options(args.option, config_options)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(api.report(args.file, out=args.output, pix_size_um=args.pixel_um))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .progress import terminal_bar

    from .cli_output import gather_warnings

    with gather_warnings(verbose=bool(args.verbose)) as gathered:
        text = run_demo(Path(args.folder), mode=args.mode, progress_factory=terminal_bar, all_lines=args.all_lines)
    print(text)
    for line in gathered.lines():
        print(line, file=sys.stderr)
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from .jit import summary, warmup

    print(summary(warmup()))
    return 0


_OPTION_HELP = ("option of the step as KEY=VALUE (repeatable; values are JSON: 2, true, [10, 10], else text); "
                "the accepted keys are listed at the end of this help; an unknown key is an error")
_JSON_HELP = "print the step's full summary as JSON (for scripts) instead of the table"


def _option_arg(p: argparse.ArgumentParser, help_text: str = _OPTION_HELP) -> None:
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE", help=help_text)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrfproc", description="Synchrotron XRF map processing.")
    parser.add_argument("--version", action="version", version=f"xrfproc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log details to stderr, and library warnings as they come (else gathered after each step)")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=StepParser)

    p = sub.add_parser("inspect", help="show the groups, shapes and provenance of a file")
    p.add_argument("file", help="layout file (.h5)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="convert beamline files to the uniform layout")
    p.add_argument("source", nargs="+", help="file(s) or scan folder(s); several are merged")
    p.add_argument("-o", "--output", help="file to write (default <source stem>.h5 next to the source; "
                                          "<first source stem>_merge.h5 when several scans are stitched)")
    p.add_argument("--kind", default="auto", help="format: id15, p06, mda, gse, spe, layout, npy, pymca "
                                                  "(default auto: detected from the content)")
    p.add_argument("--energy", type=float, metavar="KEV",
                   help="excitation energy (keV) to record; default the one the file records (APS MDA extra PVs, "
                        "GSE ENVIRONMENT mono energy, ID15/P06 energy datasets). Given, it wins; a difference "
                        "of more than 1 eV from the file's is logged as a warning")
    p.add_argument("--compression", default="gzip", choices=["gzip", "lz4", "blosc", "none"],
                   help="of the raw spectra: gzip (level 4, readable everywhere; default), lz4 or blosc "
                        "(faster; reading needs the hdf5plugin filters), none")
    _option_arg(p, "reader option as KEY=VALUE, e.g. scan=1.1 or dims=[10,10] (repeatable); the keys of each "
                   "format are listed at the end of this help; an unknown key is an error")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("simulate", help="simulate a map with the physics-based simulator")
    p.add_argument("output", help="layout file to write (.h5)")
    p.add_argument("--rows", type=int, default=20, help="rows of the map (default 20)")
    p.add_argument("--cols", type=int, default=30, help="columns of the map (default 30)")
    p.add_argument("--energy", type=float, default=20.0, help="excitation energy (keV; default 20)")
    p.add_argument("--scan", choices=["raster", "snake", "timetriggered"], default="raster",
                   help="scan pattern (default raster)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the counting noise (default 0)")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("calibrate", help="energy calibration and resolution from each channel's sum spectrum "
                                         "(writes calib/)")
    p.add_argument("file", help="layout file (.h5)")
    p.add_argument("--energy", type=float, help="excitation energy (keV; default: the one the file records)")
    p.add_argument("--channel", help="one detector channel (default all)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("suggest", help="elements found in the sum spectrum")
    p.add_argument("file", help="layout file (.h5)")
    p.add_argument("--energy", type=float, help="excitation energy (keV; default: the one the file records)")
    p.add_argument("--channel", help="detector channel (default the first)")
    p.add_argument("--evidence", action="store_true", help="print the evidence per element and the unexplained peaks")
    _option_arg(p)
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("config", help="write a PyMca fit configuration for the given elements")
    p.add_argument("file", help="layout file (.h5) whose spectra set the calibration and channel count")
    p.add_argument("elements", nargs="+", help="element symbols")
    p.add_argument("--energy", type=float, help="excitation energy (keV; default: the one the file records)")
    _option_arg(p)
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("fit", help="fit every pixel's spectrum")
    p.add_argument("file", help="layout file (.h5)")
    p.add_argument("config", nargs="+", help="PyMca .cfg (one for all channels, or one per channel)")
    p.add_argument("--mode", choices=["fast", "precise", "engine"], default="fast",
                   help="fast: PyMca's linear fast fit (SNIP background); precise: PyMca's full fit of every "
                        "pixel; engine: xrfproc's own fit (default fast)")
    p.add_argument("--channel", help="fit only this detector channel (channel00 or 0; default all)")
    p.add_argument("--weight", choices=["none", "sum", "0", "1", "2"], default=None,
                   help="weights of the per-pixel fits: none (default: weights independent of each pixel's counts), "
                        "sum, or PyMca's policy 0, 1, 2 (2: the pixel's own counts, biased low at low counts)")
    p.add_argument("--background", choices=["sum", "snip"], default="sum",
                   help="per-pixel continuum: sum (the sum spectrum's SNIP background scaled per pixel; default) "
                        "or snip (each pixel's own SNIP, as PyMca)")
    p.add_argument("--calibration", choices=["sum", "config"], default="sum",
                   help="calibration and resolution of the pixel fits: sum (found by the sum-spectrum fit; "
                        "default) or config (the configuration's as written)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted fit from its completed blocks")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    _option_arg(p)
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("normalise", help="normalise fitted intensities (I0, time, regridding)")
    p.add_argument("file", help="layout file (.h5) with fit/")
    p.add_argument("--I0norm", type=float, metavar="COUNTS",
                   help="scale the maps to this I0 (intensity / I0 * I0norm; default: divide by I0 only)")
    p.add_argument("--snake", action="store_true", help="the scan was a snake (alternating directions): regrid")
    p.add_argument("--sort", action="store_true", help="sort the points by motor positions before regridding")
    p.add_argument("--tmnorm", action="store_true", help="also divide by each point's acquisition time")
    p.add_argument("--timetriggered", action="store_const", const=True, default=None,
                   help="a time-triggered scan: grid from the scan command (default: from the file)")
    p.add_argument("--no-halfpixshift", action="store_true",
                   help="do not shift snake positions by half a point along each row's motion")
    p.add_argument("--method", choices=["nearest", "linear", "cubic"], default="nearest",
                   help="interpolation of the regridding (default nearest)")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted normalisation from the images it completed")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    _option_arg(p)
    p.set_defaults(func=cmd_normalise)

    p = sub.add_parser("detlim", help="detection limits and elemental yields of a reference measurement")
    p.add_argument("file", help="layout file (.h5) of the reference, normalised")
    p.add_argument("cnc", help="concentration file (or the name of a bundled one, e.g. nist613)")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    _option_arg(p)
    p.set_defaults(func=cmd_detlim)

    p = sub.add_parser("quantify", help="quantify against reference measurements")
    p.add_argument("file", help="layout file (.h5) of the sample, normalised")
    p.add_argument("references", nargs="+", help="reference layout file(s) with detlim/ and elyield/")
    p.add_argument("--channel", help="quantify only this detector channel (default all)")
    p.add_argument("--norm", help="normalise yields and maps by this signal (Compt, Rayl, 'Fe K')")
    p.add_argument("--matrix", help="the sample's matrix composition (.cnc): results in ppm")
    p.add_argument("--absorb", help="element(s) for self-absorption correction, e.g. Fe")
    p.add_argument("--absorb-matrix", help="matrix .cnc for the self-absorption correction")
    p.add_argument("--json", action="store_true", help=_JSON_HELP)
    _option_arg(p)
    p.set_defaults(func=cmd_quantify)

    p = sub.add_parser("image", help="overview images of a group (norm, quant, fit, kmeans, PCA, tomo)")
    p.add_argument("file", help="layout file (.h5)")
    p.add_argument("datadir", nargs="?", default="norm", help="group to draw (default norm)")
    p.add_argument("--cols", type=int, default=4, help="images per row of the overview (default 4)")
    p.add_argument("--pixel-um", type=float, default=1.0, help="pixel size in um, for the scale bar (default 1)")
    p.add_argument("--scale-um", type=float, help="length of the scale bar in um (default: chosen from the map)")
    p.add_argument("--log", action="store_true", help="logarithmic colour scale")
    p.add_argument("--channel", help="draw only this detector channel (default all)")
    _option_arg(p)
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("report", help="write a self-contained HTML report (maps, spectra, detection limits, "
                                      "quantification, provenance)")
    p.add_argument("file", help="layout file (.h5)")
    p.add_argument("-o", "--output", help="HTML file to write (default <file>_report.html)")
    p.add_argument("--pixel-um", type=float, help="pixel size for the scale bars (default: motor step, read as mm)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="simulate the demo data and process it")
    p.add_argument("folder", nargs="?", default="demo_output", help="output folder (default demo_output)")
    p.add_argument("--mode", choices=["fast", "precise", "engine"], default="fast", help="fit mode of the sample map")
    p.add_argument("--all-lines", action="store_true",
                   help="show every fitted line in the final table (default: the demo's Fe, Cu, Zn, Sr, Pb)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("warmup", help="compile the fit engine's numba kernels into the user's cache "
                                      "(~/.cache/xrfproc/numba; `make install` runs it)")
    p.set_defaults(func=cmd_warmup)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except XrfError as exc:
        print(f"xrfproc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xrfproc: interrupted; files are unchanged", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
