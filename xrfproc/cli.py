"""The ``xrfproc`` command: one-off steps and utilities.

    xrfproc inspect FILE.h5
    xrfproc convert SOURCE [SOURCE ...] [-o OUT] [--kind KIND] [--option key=value ...]
    xrfproc simulate OUT.h5 [--rows R --cols C ...]
    xrfproc demo [FOLDER]

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
    out = api.convert(sources, out=args.output, kind=args.kind, **_options(args.option))
    print(out)
    return 0


def cmd_simulate(args: argparse.Namespace) -> int:
    out = api.simulate(args.output, rows=args.rows, cols=args.cols, energy_keV=args.energy, scan=args.scan,
                       seed=args.seed)
    print(out)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo
    from .progress import terminal_bar

    print(run_demo(Path(args.folder), mode=args.mode, progress_factory=terminal_bar))
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
    p.add_argument("-o", "--output", help="file to write (default <source>_merge.h5)")
    p.add_argument("--kind", default="auto", help="format (default: detect)")
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

    p = sub.add_parser("demo", help="simulate the demo data and process it")
    p.add_argument("folder", nargs="?", default="demo_output")
    p.add_argument("--mode", choices=["fast", "precise", "engine"], default="fast", help="fit mode of the sample map")
    p.set_defaults(func=cmd_demo)
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


if __name__ == "__main__":
    sys.exit(main())
