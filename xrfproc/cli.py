"""The ``xrfproc`` command: one-off steps and utilities.

    xrfproc inspect FILE.h5
    xrfproc convert SOURCE [SOURCE ...] [-o OUT] [--kind KIND] [--energy KEV]
                    [--compression gzip|lz4|blosc|none] [--option key=value ...]
    xrfproc simulate OUT.h5 [--rows R --cols C ...]
    xrfproc suggest FILE.h5 --energy 18 / xrfproc config FILE.h5 Fe Cu Zn --energy 18
    xrfproc fit FILE.h5 CFG [--mode fast|precise|engine]
    xrfproc normalise FILE.h5 [--I0norm 1e6 --snake ...]
    xrfproc detlim REF.h5 nist613 / xrfproc quantify FILE.h5 REF.h5 [--matrix M.cnc]
    xrfproc image FILE.h5 [norm|quant|...] [--pixel-um 2 --scale-um 20]
    xrfproc report FILE.h5 [-o OUT.html]
    xrfproc demo [FOLDER]
    xrfproc warmup

User mistakes print one line (``xrfproc: error: <file>:<dataset>: <what was expected>``) and exit with
status 2, without a traceback. Results go to stdout; logging and progress bars to stderr.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any, Sequence

from . import api
from ._version import __version__
from .errors import XrfError

log = logging.getLogger("xrfproc")


def _parse_value(text: str) -> Any:
    """``key=value`` option values: JSON numbers, booleans, lists (``[10, 10]``), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _options(pairs: Sequence[str]) -> dict[str, Any]:
    out = {}
    for pair in pairs:
        if "=" not in pair:
            raise XrfError(f"option {pair!r} must be key=value")
        key, value = pair.split("=", 1)
        out[key.strip()] = _parse_value(value.strip())
    return out


def cmd_inspect(args: argparse.Namespace) -> int:
    from .store.inspect import format_summary

    summary = api.inspect(args.file)
    print(json.dumps(summary, indent=1, default=str) if args.json else format_summary(summary))
    return 0


def cmd_convert(args: argparse.Namespace) -> int:
    sources = args.source if len(args.source) > 1 else args.source[0]
    options = _options(args.option)
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


def _print_summary(summary: object) -> None:
    print(json.dumps(summary, indent=1, default=str))


def _with_bar(description: str, func, *args, **kwargs):  # type: ignore[no-untyped-def]
    from .progress import terminal_bar

    with terminal_bar(description) as bar:
        return func(*args, progress=bar, **kwargs)


def cmd_fit(args: argparse.Namespace) -> int:
    configs = args.config if len(args.config) > 1 else args.config[0]
    _print_summary(_with_bar(f"fit ({args.mode})", api.fit, args.file, configs, channel=args.channel, mode=args.mode,
                             **_options(args.option)))
    return 0


def cmd_normalise(args: argparse.Namespace) -> int:
    _print_summary(api.normalise(args.file, I0norm=args.I0norm, snake=args.snake, sort=args.sort, tmnorm=args.tmnorm,
                                 timetriggered=args.timetriggered, halfpixshift=not args.no_halfpixshift,
                                 method=args.method, resume=args.resume, **_options(args.option)))
    return 0


def cmd_detlim(args: argparse.Namespace) -> int:
    _print_summary(api.detlim(args.file, args.cnc, **_options(args.option)))
    return 0


def cmd_quantify(args: argparse.Namespace) -> int:
    absorb = (args.absorb.split(","), args.absorb_matrix) if args.absorb else None
    _print_summary(api.quantify(args.file, args.references, channel=args.channel, norm=args.norm, absorb=absorb,
                                matrix=args.matrix, **_options(args.option)))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    for path in api.overview_images(args.file, args.datadir, ncols=args.cols, pix_size_um=args.pixel_um,
                                    scale_bar_um=args.scale_um, log=args.log, channel=args.channel,
                                    **_options(args.option)):
        print(path)
    return 0


def cmd_suggest(args: argparse.Namespace) -> int:
    if not args.evidence:
        print(" ".join(api.suggest_elements(args.file, args.energy, channel=args.channel)))
        return 0
    ident = api.suggest_elements(args.file, args.energy, channel=args.channel, evidence=True)
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
    print(api.make_config(args.file, args.elements, args.energy, **_options(args.option)))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    print(api.report(args.file, out=args.output, pix_size_um=args.pixel_um))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .progress import terminal_bar

    print(run_demo(Path(args.folder), mode=args.mode, progress_factory=terminal_bar))
    return 0


def cmd_warmup(args: argparse.Namespace) -> int:
    from .jit import summary, warmup

    print(summary(warmup()))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="xrfproc", description="Synchrotron XRF map processing.")
    parser.add_argument("--version", action="version", version=f"xrfproc {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("inspect", help="show the groups, shapes and provenance of a file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    p = sub.add_parser("convert", help="convert beamline files to the uniform layout")
    p.add_argument("source", nargs="+", help="file(s) or scan folder(s); several are merged")
    p.add_argument("-o", "--output", help="file to write (default <source stem>.h5 next to the source; "
                                          "<first source stem>_merge.h5 when several scans are stitched)")
    p.add_argument("--kind", default="auto", help="format (default: detect)")
    p.add_argument("--energy", type=float, metavar="KEV",
                   help="excitation energy (keV) to record; default the one the file records (APS MDA extra PVs, "
                        "GSE ENVIRONMENT mono energy, ID15/P06 energy datasets). Given, it wins; a difference "
                        "of more than 1 eV from the file's is logged as a warning")
    p.add_argument("--compression", default="gzip", choices=["gzip", "lz4", "blosc", "none"],
                   help="of the raw spectra: gzip (level 4, readable everywhere; default), lz4 or blosc "
                        "(faster; reading needs the hdf5plugin filters), none")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, e.g. scan=1.1 or dims=[10,10] (repeatable)")
    p.set_defaults(func=cmd_convert)

    p = sub.add_parser("simulate", help="simulate a map with the physics-based simulator")
    p.add_argument("output")
    p.add_argument("--rows", type=int, default=20)
    p.add_argument("--cols", type=int, default=30)
    p.add_argument("--energy", type=float, default=20.0, help="excitation energy (keV)")
    p.add_argument("--scan", choices=["raster", "snake", "timetriggered"], default="raster")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("calibrate", help="energy calibration and resolution from each channel's sum spectrum "
                                         "(writes calib/)")
    p.add_argument("file")
    p.add_argument("--energy", type=float, help="excitation energy (keV; default: the one the file records)")
    p.add_argument("--channel", help="one detector channel (default all)")
    p.set_defaults(func=cmd_calibrate)

    p = sub.add_parser("suggest", help="elements found in the sum spectrum")
    p.add_argument("file")
    p.add_argument("--energy", type=float, help="excitation energy (keV; default: the one the file records)")
    p.add_argument("--channel", help="detector channel (default the first)")
    p.add_argument("--evidence", action="store_true", help="print the evidence per element and the unexplained peaks")
    p.set_defaults(func=cmd_suggest)

    p = sub.add_parser("config", help="write a PyMca fit configuration for the given elements")
    p.add_argument("file")
    p.add_argument("elements", nargs="+", help="element symbols")
    p.add_argument("--energy", type=float, help="excitation energy (keV; default: the one the file records)")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_config)

    p = sub.add_parser("fit", help="fit every pixel's spectrum")
    p.add_argument("file")
    p.add_argument("config", nargs="+", help="PyMca .cfg (one for all channels, or one per channel)")
    p.add_argument("--mode", choices=["fast", "precise", "engine"], default="fast")
    p.add_argument("--channel")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("normalise", help="normalise fitted intensities (I0, time, regridding)")
    p.add_argument("file")
    p.add_argument("--I0norm", type=float)
    p.add_argument("--snake", action="store_true")
    p.add_argument("--sort", action="store_true")
    p.add_argument("--tmnorm", action="store_true")
    p.add_argument("--timetriggered", action="store_const", const=True, default=None)
    p.add_argument("--no-halfpixshift", action="store_true")
    p.add_argument("--method", choices=["nearest", "linear", "cubic"], default="nearest")
    p.add_argument("--resume", action="store_true",
                   help="continue an interrupted normalisation from the images it completed")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_normalise)

    p = sub.add_parser("detlim", help="detection limits and elemental yields of a reference measurement")
    p.add_argument("file")
    p.add_argument("cnc", help="concentration file (or the name of a bundled one, e.g. nist613)")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_detlim)

    p = sub.add_parser("quantify", help="quantify against reference measurements")
    p.add_argument("file")
    p.add_argument("references", nargs="+")
    p.add_argument("--channel")
    p.add_argument("--norm", help="normalise yields and maps by this signal (Compt, Rayl, 'Fe K')")
    p.add_argument("--matrix", help="the sample's matrix composition (.cnc): results in ppm")
    p.add_argument("--absorb", help="element(s) for self-absorption correction, e.g. Fe")
    p.add_argument("--absorb-matrix", help="matrix .cnc for the self-absorption correction")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_quantify)

    p = sub.add_parser("image", help="overview images of a group (norm, quant, fit, kmeans, PCA, tomo)")
    p.add_argument("file")
    p.add_argument("datadir", nargs="?", default="norm")
    p.add_argument("--cols", type=int, default=4)
    p.add_argument("--pixel-um", type=float, default=1.0)
    p.add_argument("--scale-um", type=float)
    p.add_argument("--log", action="store_true")
    p.add_argument("--channel")
    p.add_argument("--option", "-O", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=cmd_image)

    p = sub.add_parser("report", help="write a self-contained HTML report (maps, spectra, detection limits, "
                                      "quantification, provenance)")
    p.add_argument("file")
    p.add_argument("-o", "--output", help="HTML file to write (default <file>_report.html)")
    p.add_argument("--pixel-um", type=float, help="pixel size for the scale bars (default: motor step, read as mm)")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("demo", help="simulate the demo data and process it")
    p.add_argument("folder", nargs="?", default="demo_output")
    p.add_argument("--mode", choices=["fast", "precise", "engine"], default="fast", help="fit mode of the sample map")
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
