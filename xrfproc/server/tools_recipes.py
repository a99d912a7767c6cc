"""The MCP tools for ``.xrf`` recipes: ``run_recipe`` and ``list_recipes``.

A recipe runs through the same parser, checker and runner as ``xrfrun`` (:mod:`xrfproc.dsl`). Before
anything runs, every file the recipe names (inputs, outputs, included recipes, the folders and
matches of ``for`` patterns) is checked against the server's data roots by the checker's
``path_check`` hook (:meth:`DataRoots.recipe_check`); a refused path is a recipe error at its line,
reported as ``isError``. Each step sends MCP progress notifications (``progress`` counts steps,
fractions within a step); cancelling stops the recipe at the running step, whose file is left as it
was.
"""
import contextlib
import logging
import os
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator

import h5py

from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import Field

from ..errors import InputError, RecipeError
from . import models as m
from .paths import DataRoots
from .toolkit import check_pixels, cnc_library_dirs, roots, run_step, tool

log = logging.getLogger(__name__)

#: the example recipes, installed with the package (``xrfproc/recipes/``; ``recipes/`` of a checkout links there)
EXAMPLES_DIR = Path(__file__).resolve().parents[1] / "recipes"
#: recipes listed at most, and how deep the roots are searched
MAX_LISTED = 200
MAX_DEPTH = 6
#: steps that make a map of rows x cols points
SIZED_STEPS = ("simulate", "simulate_reference")


def examples() -> dict[str, Path]:
    """The example recipes by name (``demo.xrf`` ...), empty when xrfproc was installed without them."""
    if not EXAMPLES_DIR.is_dir():
        return {}
    return {p.name: p for p in sorted(EXAMPLES_DIR.glob("*.xrf"))}


def description(path: Path) -> str:
    """The first sentence of a recipe's leading comment (without ``#``), or an empty string."""
    lines: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for _, line in zip(range(50), f):
                text = line.strip()
                if not text.startswith("#") or (lines and not text.lstrip("#").strip()):
                    break
                lines.append(text.lstrip("#").strip())
                if lines[-1].endswith((".", ":")):
                    break
    except OSError:
        return ""
    text = " ".join(x for x in lines if x)
    return text if len(text) <= 240 else text[:237] + "..."


def _recipes_in(root: Path) -> Iterator[Path]:
    """``.xrf`` files below ``root`` (hidden folders, bulk folders ``*.d`` and symlinks not followed)."""
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root):
        depth = len(Path(folder).parts) - base_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not d.endswith(".d") and depth < MAX_DEPTH
                         and not os.path.islink(os.path.join(folder, d)))
        for name in sorted(files):
            if name.endswith(".xrf") and not os.path.islink(os.path.join(folder, name)):
                yield Path(folder) / name


def _overrides(values: dict[str, str]) -> dict[str, Any]:
    from ..dsl.cli import parse_overrides

    return parse_overrides([f"{k}={v}" for k, v in values.items()])


def _rel(path: str, base: Path) -> str:
    with contextlib.suppress(ValueError):
        if os.path.isabs(path):
            return os.path.relpath(path, base)
    return path


@tool(read_only=True)
async def list_recipes(
    ctx: Context,
    folder: Annotated[str | None, Field(None, max_length=4096, description="Only recipes below this folder "
                                                                           "(inside a data root); default all roots")]
    = None,
    include_examples: Annotated[bool, Field(True, description="Also list the example recipes shipped with "
                                                              "xrfproc")] = True,
) -> m.RecipeList:
    """The .xrf recipes available: the examples shipped with xrfproc (run them with
    run_recipe(example=NAME, folder=...)) and every .xrf file inside the data roots
    (run_recipe(path=...)), each with its first comment line as description."""
    def work(progress: Any) -> m.RecipeList:
        r = roots(ctx)
        out = [m.RecipeInfo(name=name, path=name, kind="example", description=description(p))
               for name, p in examples().items()] if include_examples else []
        truncated = False
        tops = [r.resolve(folder, what="folder", must_exist=True, directory=True)] if folder else r.roots
        for root in tops:
            for p in _recipes_in(root):
                if len(out) >= MAX_LISTED:
                    truncated = True
                    break
                out.append(m.RecipeInfo(name=p.name, path=r.display(p), kind="data root", description=description(p)))
        return m.RecipeList(recipes=out, truncated=truncated)
    return await run_step(ctx, work)


@tool()
async def run_recipe(
    ctx: Context,
    recipe: Annotated[str | None, Field(None, max_length=200_000, description="Recipe text (.xrf language); "
                                                                              "give this, path or example")] = None,
    path: Annotated[str | None, Field(None, max_length=4096, description="A .xrf file inside a data root")] = None,
    example: Annotated[str | None, Field(None, max_length=64, pattern=r"^[A-Za-z0-9_.-]+\.xrf$",
                                         description="An example recipe by name (see list_recipes), run in folder")]
    = None,
    folder: Annotated[str | None, Field(None, max_length=4096, description="Folder inside a data root that the "
                                                                           "recipe's relative paths start from; "
                                                                           "default the recipe file's folder, or "
                                                                           "the first data root")] = None,
    overrides: Annotated[dict[str, str] | None, Field(None, max_length=64, description="Variables to set, as "
                                                      "xrfrun --set NAME=VALUE: {'sample': 'data/x.h5', "
                                                      "'energy': '20keV'}")] = None,
    check_only: Annotated[bool, Field(False, description="Only parse and validate (xrfrun --check): run "
                                                         "nothing, return the planned steps")] = False,
    start: Annotated[str | None, Field(None, max_length=64, description="Start at this step: its number, name or "
                                                                        "'line:N' (xrfrun --from)")] = None,
) -> m.RecipeResult:
    """Run a .xrf processing recipe (the language of xrfrun) with the same checks and steps as
    xrfrun: every file it names must lie inside the data roots, and everything that can be known
    is validated before any step runs (errors point at recipe lines). Sends a progress
    notification per step; cancelling stops at the running step and leaves its file as it was."""
    def work(progress: Callable[..., None]) -> m.RecipeResult:
        from ..dsl import checker, parser, runner

        r = roots(ctx)
        given = [x for x in (recipe, path, example) if x is not None]
        if len(given) != 1:
            raise InputError("give exactly one of recipe (the text), path (a .xrf file) or example (a name from "
                             "list_recipes)")
        base = r.resolve(folder, what="folder", must_exist=True, directory=True) if folder is not None else None
        if base is not None and not base.is_dir():
            raise InputError("folder: not a folder", path=folder)
        include_check = _include_check(r, example is not None)
        if path is not None:
            p = r.resolve(path, what="path", must_exist=True)
            program = parser.parse(p, display=r.display(p), check_include=include_check)
            name = r.display(p)
        elif example is not None:
            found = examples().get(example)
            if found is None:
                raise InputError(f"no example recipe {example!r}; there are: {', '.join(examples()) or 'none'}")
            program = parser.parse(found, display=example, check_include=include_check)
            base = base or r.roots[0]
            name = example
        else:
            base = base or r.roots[0]
            program = parser.parse_string(recipe or "", file="<recipe>", folder=base, check_include=include_check)
            name = "<recipe>"
        base = base or program.folder
        plan = checker.check(program, base=base, overrides=_overrides(overrides or {}),
                             path_check=r.recipe_check(cnc_library_dirs(), lambda q, what: _pixels(ctx, q)))
        _check_sizes(ctx, plan)
        files = sorted({r.display(f) for st in plan.steps for f in st.produces})
        rows = {st.number: m.RecipeStep(number=st.number, step=st.name, line=f"{st.pos.file}:{st.pos.line}",
                                        call=st.describe(plan.base), status="planned") for st in plan.steps}
        first = runner.find_start(plan, start) if start else 1
        if check_only:
            return m.RecipeResult(recipe=name, folder=r.display(plan.base), checked_only=True,
                                  steps=list(rows.values()), done=0, seconds=0.0, files=files)
        t0 = time.monotonic()

        def record(o: Any) -> None:
            rows[o.number] = rows[o.number].model_copy(update={
                "status": o.status, "seconds": round(o.seconds, 3),
                "result": o.note if o.status == "failed" else runner.format_result(o.result, plan.base)})

        try:
            outcomes = runner.run_plan(plan, start=first, bar=False, on_outcome=record,
                                       progress_for=_step_progress(progress, plan))
        except RecipeError as exc:
            done = [o for o in getattr(exc, "outcomes", []) if o.status == "done"]
            step = getattr(exc, "step", None)
            hint = f"\n{len(done)} step(s) done; fix the problem and continue with start='{step}'" if step else ""
            raise ToolError(f"{exc}{hint}") from None
        for o in outcomes:
            if o.status == "skipped":
                rows[o.number] = rows[o.number].model_copy(update={"status": "skipped"})
        return m.RecipeResult(recipe=name, folder=r.display(plan.base), checked_only=False, steps=list(rows.values()),
                              done=sum(o.status == "done" for o in outcomes), seconds=round(time.monotonic() - t0, 3),
                              files=files)
    return await run_step(ctx, work)


def _include_check(r: DataRoots, example: bool) -> Callable[[Path], None]:
    """Included recipes must lie inside the roots (or, for an example, in the examples folder)."""
    def check(target: Path) -> None:
        if example and target.resolve().is_relative_to(EXAMPLES_DIR):
            return
        r.resolve(target, what="include", must_exist=True)
    return check


def _pixels(ctx: Context, path: Path) -> None:
    """The pixel limit for an HDF5 input (other inputs, such as beamline text files, are left to the step)."""
    if h5py.is_hdf5(path):
        check_pixels(ctx, path)


def _check_sizes(ctx: Context, plan: Any) -> None:
    """Steps that make maps stay within the server's pixel limit."""
    limit = ctx.mcp_server.options.max_pixels
    for st in plan.steps:
        if st.name in SIZED_STEPS:
            spec = st.spec.params
            rows = st.kwargs.get("rows", spec["rows"].default if "rows" in spec else 1)
            cols = st.kwargs.get("cols", spec["cols"].default if "cols" in spec else 1)
            if isinstance(rows, int) and isinstance(cols, int) and rows * cols > limit:
                raise RecipeError(f"{st.pos.file}:{st.pos.line}: {st.name} of {rows} x {cols} points is more than "
                                  f"this server's limit of {limit} (--max-pixels)")


def _step_progress(progress: Callable[..., None], plan: Any) -> Callable[[Any, int], Any]:
    """Per step: a progress notification at its start and its end, and the step's own progress as
    a fraction of it (``progress`` counts steps and only increases)."""
    last = [-1.0]

    def send(value: float, total: int, message: str) -> None:
        if value > last[0]:
            last[0] = value
            progress(value, total, message)

    @contextlib.contextmanager
    def for_step(st: Any, total: int) -> Iterator[Callable[..., None]]:
        label = f"[{st.number}/{total}] {st.name} {_rel(st.target, plan.base)}".rstrip()
        k = st.number - 1
        send(k, total, label)

        def inner(done: float, sub_total: float, message: str = "") -> None:
            frac = min(max(float(done) / float(sub_total), 0.0), 1.0) if sub_total else 0.0
            send(k + 0.999 * frac, total, f"{label}: {message}" if message else label)
        yield inner
        send(st.number, total, f"{label}: done")
    return for_step
