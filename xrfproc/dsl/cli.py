"""``xrfrun``: run a ``.xrf`` recipe.

    xrfrun RECIPE.xrf [--set NAME=VALUE ...] [--check | --dry-run] [--from STEP] [--resume]
    xrfrun --export FILE.h5 [-o RECIPE.xrf]

``--check`` parses and validates everything that can be known before running and runs nothing;
``--dry-run`` prints the plan; ``--from STEP`` (a step number, a step name or ``line:N``) restarts a
failed recipe there; ``--set`` overrides a ``let`` variable (the value is written as in a recipe:
``--set energy=20keV``, ``--set sample=data/x.h5``). ``--export`` writes the recipe that reproduces
a processed file from its provenance. Recipe mistakes and failing steps print
``recipe.xrf:LINE:COL: message``, the source line and a caret, and exit with status 2.
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Sequence

from .._version import __version__
from ..errors import RecipeError, XrfError
from . import checker, parser, runner


def parse_overrides(pairs: Sequence[str]) -> dict[str, parser.Node]:
    """``--set NAME=VALUE`` pairs -> ``{name: value node}``; a value that is not a recipe value is text."""
    out: dict[str, parser.Node] = {}
    for pair in pairs:
        name, eq, text = pair.partition("=")
        name = name.strip().lstrip("$")
        if not eq or not name.isidentifier():
            raise RecipeError(f"--set {pair!r}: expected NAME=VALUE")
        try:
            out[name] = parser.parse_value(text, where=f"--set {name}")
        except RecipeError:
            # anything that is not a recipe value is text (a path such as data/x.h5)
            out[name] = parser.Str(parser.Pos(f"--set {name}", 1, 1), [text])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xrfrun", description="Run an .xrf processing recipe.",
                                epilog="Paths in a recipe are relative to the recipe file's folder.")
    p.add_argument("recipe", nargs="?", help="the .xrf recipe")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="NAME=VALUE",
                   help="override a variable of the recipe (repeatable)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="validate everything, run nothing")
    mode.add_argument("--dry-run", action="store_true", help="print the steps that would run")
    mode.add_argument("--export", metavar="FILE.h5", help="write the recipe that reproduces FILE.h5")
    p.add_argument("--from", dest="start", metavar="STEP", help="start at this step (number, name or line:N)")
    p.add_argument("--resume", action="store_true", help="let steps that can resume continue their work")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="Dask scheduler for the fit steps (tcp://host:8786, threads, processes; "
                        "default $XRFPROC_SCHEDULER or local)")
    p.add_argument("-o", "--output", help="with --export: the recipe file to write (default stdout)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("-v", "--verbose", action="store_true", help="log details to stderr")
    p.add_argument("--version", action="version", version=f"xrfrun {__version__}")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``xrfrun`` console script; returns the exit status."""
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.scheduler:
        os.environ["XRFPROC_SCHEDULER"] = args.scheduler  # read by xrfproc.scheduler.resolve
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        if args.export:
            from .export import export_recipe

            text = export_recipe(args.export, out=args.output)
            if args.output:
                print(args.output)
            else:
                sys.stdout.write(text)
            return 0
        if not args.recipe:
            ap.error("a recipe file is needed (or --export FILE.h5)")
        program = parser.parse(args.recipe)
        plan = checker.check(program, overrides=parse_overrides(args.sets))
        start = runner.find_start(plan, args.start) if args.start else 1
        if args.check:
            print(f"{args.recipe}: OK ({len(plan.steps)} steps)")
            return 0
        if args.dry_run:
            print(runner.plan_text(plan, start=start))
            return 0
        try:
            outcomes = runner.run_plan(plan, start=start, resume=args.resume,
                                       bar=not args.no_progress and sys.stderr.isatty())
        except RecipeError as exc:
            done = getattr(exc, "outcomes", None)
            if done:
                print(runner.summary_text(done, plan))
            print(str(exc), file=sys.stderr)
            step = getattr(exc, "step", None)
            if step:
                print(f"xrfrun: fix the problem and continue with: xrfrun {args.recipe} --from {step}",
                      file=sys.stderr)
            return 2
        print(runner.summary_text(outcomes, plan))
        return 0
    except XrfError as exc:
        print(str(exc) if isinstance(exc, RecipeError) else f"xrfrun: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("xrfrun: interrupted; the file being written is unchanged", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
