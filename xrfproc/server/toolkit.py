"""What every MCP tool module shares: argument types, the ``@tool`` collector, path helpers over
the data roots, and :func:`run_step`, which runs a tool's body in a worker thread with progress
notifications, cancellation and our errors as ``isError`` results.

The tools themselves are in :mod:`.tools` (finding one's way, data), :mod:`.tools_analysis`
(processing steps) and :mod:`.tools_recipes` (``.xrf`` recipes). Adding a tool for a new api
function is a few lines::

    @tool(read_only=False)
    async def quantify(ctx: Context, h5file: H5File, ...) -> m.SomeResult:
        \"\"\"What it does, for the model.\"\"\"
        def work(progress):
            p = h5(ctx, h5file)
            return results.some_result(api.quantify(p, ..., progress=progress), roots(ctx))
        return await run_step(ctx, work)
"""
import json
import logging
import math
import threading
import time
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, TypeVar

import anyio
import anyio.from_thread
import anyio.to_thread
from mcp.server.mcpserver import Context
from mcp.server.mcpserver.exceptions import ToolError
from mcp_types import CallToolResult, ImageContent, TextContent, ToolAnnotations
from pydantic import Field

from .. import api, store
from ..errors import InputError, XrfError
from .paths import DataRoots

log = logging.getLogger(__name__)

T = TypeVar("T")

# --------------------------------------------------------------------------- argument types
H5File = Annotated[str, Field(min_length=1, max_length=4096,
                              description="Layout file (.h5): relative to the server's data root, or absolute "
                                          "inside a data root")]
OutFile = Annotated[str, Field(min_length=1, max_length=4096,
                               description="File to write, inside a data root (relative to the first root)")]
OptOut = Annotated[str | None, Field(None, min_length=1, max_length=4096,
                                     description="File to write inside a data root; default next to the input")]
CncFile = Annotated[str, Field(min_length=1, max_length=4096,
                               description="Concentration file (.cnc) of a reference material, inside a data root")]
Channel = Annotated[str | None, Field(None, pattern=r"^channel\d{2}$",
                                      description="Detector channel ('channel00', 'channel01', ...); default: all "
                                                  "channels (fit/normalise) or the first one")]
Energy = Annotated[float | None, Field(None, gt=1.0, le=150.0,
                                       description="Excitation energy in keV; default the one recorded in the file")]
Rows = Annotated[int, Field(ge=1, le=4096, description="Rows of the scan grid")]
Cols = Annotated[int, Field(ge=1, le=4096, description="Columns of the scan grid")]
Seed = Annotated[int, Field(0, ge=0, le=2**31 - 1, description="Random seed (same seed, same data)")]
Dims = Annotated[tuple[int, int] | None, Field(None, description="Grid (rows, cols) to impose on the points")]
ConverterKind = Literal[tuple(["auto", *api.converter_kinds()])]  # type: ignore[misc]

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True,
                            open_world_hint=False)
#: writes or replaces its own output (a processing group, a new file, a picture); never raw/
WRITES = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=True, open_world_hint=False)
#: only writes a picture next to the data
PICTURE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=True,
                          open_world_hint=False)

#: every tool of this module, registered on a server by :func:`register`: (function, annotations,
#: api functions of which at least one must exist for the tool to be offered)
TOOLS: list[tuple[Callable[..., Any], ToolAnnotations, tuple[str, ...]]] = []


def tool(read_only: bool = False, picture: bool = False,
         requires: tuple[str, ...] = ()) -> Callable[[Callable[..., T]], Callable[..., T]]:
    """Collect a tool function with its annotations (see :func:`register`).

    ``requires``: names of :mod:`xrfproc.api` functions the tool calls; it is offered only when one
    of them exists (so tools for steps being added appear as soon as the api has them).
    """
    def deco(fn: Callable[..., T]) -> Callable[..., T]:
        TOOLS.append((fn, READ_ONLY if read_only else PICTURE if picture else WRITES, requires))
        return fn
    return deco



# --------------------------------------------------------------------------- helpers
def roots(ctx: Context) -> DataRoots:
    return ctx.mcp_server.options.roots


def h5(ctx: Context, value: str, what: str = "h5file") -> Path:
    """An existing HDF5 input inside the roots, whose links stay inside them, within the pixel limit."""
    r = roots(ctx)
    p = r.resolve(value, what=what, must_exist=True)
    r.check_hdf5(p, what=what)
    check_pixels(ctx, p)
    return p


def infile(ctx: Context, value: str, what: str) -> Path:
    return roots(ctx).resolve(value, what=what, must_exist=True)


def outfile(ctx: Context, value: str | None, what: str = "out") -> Path | None:
    return None if value is None else roots(ctx).resolve(value, what=what)


def check_pixels(ctx: Context, path: Path) -> None:
    """Refuse a map with more points than ``--max-pixels`` (from the declared shapes; nothing is read)."""
    limit = ctx.mcp_server.options.max_pixels
    with store.open_read(path) as f:
        if "raw" not in f:
            return
        for c in store.channels(f, "raw"):
            key = f"raw/{c}/spectra"
            try:
                shape = f[key].shape if key in f else None
            except (KeyError, OSError):
                shape = None
            npix = int(math.prod(shape[:-1])) if shape else 0
            if npix > limit:
                raise InputError(f"{key} holds {npix} points, more than this server's limit of {limit} "
                                 "points per call (--max-pixels)", path=path, dataset=key)


class StepCancelled(XrfError):
    """The client cancelled the call (raised inside the step, so nothing is written)."""


async def run_step(ctx: Context, work: Callable[[Any], T]) -> T:
    """Run ``work(progress)`` in a worker thread; errors become ``isError`` results.

    ``progress(done, total, message)`` sends MCP progress notifications and raises
    :class:`StepCancelled` once the client has cancelled the call (or the server's time budget is
    spent), so the step stops before it writes: the store writes a step's groups in one atomic
    transaction at its end. A cancelled call waits for the worker to stop before it returns, so
    no step keeps running unseen.
    """
    opts = ctx.mcp_server.options
    stop = threading.Event()
    finished = threading.Event()
    t0 = time.monotonic()

    def check() -> None:
        if stop.is_set():
            raise StepCancelled("cancelled by the client; the file was left as it was")
        if opts.time_limit_s is not None and time.monotonic() - t0 > opts.time_limit_s:
            raise InputError(f"the call took longer than this server's limit of {opts.time_limit_s:g} s "
                             "(--time-limit); stopped, nothing was written")

    def progress(done: float, total: float, message: str = "") -> None:
        check()
        try:
            anyio.from_thread.run(ctx.report_progress, float(done), float(total), message or None)
        except Exception as exc:  # noqa: BLE001 (a lost notification must not fail the step)
            log.debug("progress notification not sent: %s", exc)
        check()

    def body() -> T:
        try:
            return work(progress)
        finally:
            finished.set()

    try:
        return await anyio.to_thread.run_sync(body, abandon_on_cancel=True)
    except anyio.get_cancelled_exc_class():
        stop.set()
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(finished.wait)
        raise
    except ToolError:
        raise
    except XrfError as exc:
        raise ToolError(str(exc)) from exc
    except Exception as exc:
        log.exception("unexpected error in an MCP tool")
        raise ToolError(f"unexpected error ({type(exc).__name__}: {exc}); this is a bug in xrfproc, "
                        "please report it") from exc


def with_image(model: Any, png: bytes) -> CallToolResult:
    import base64

    data = model.model_dump(mode="json")
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(data)),
                                   ImageContent(type="image", data=base64.b64encode(png).decode(),
                                                mime_type="image/png")],
                          structured_content=data)


def cncfile(ctx: Context, value: str, what: str = "cnc") -> Path:
    """A concentration file inside the roots, or a reference material of the library by its bare
    name (``"nist613"``, ``"nist613.cnc"``) when no such file is in the first root."""
    p = Path(value)
    if len(p.parts) == 1 and not p.is_absolute() and not (roots(ctx).roots[0] / p).exists():
        from ..core.cnc import bundled_cnc

        try:
            return bundled_cnc(value)
        except XrfError:
            pass
    return infile(ctx, value, what)


def cnc_library_dirs() -> list[Path]:
    """Folders of the reference-material library (read-only for tools and recipes)."""
    import os

    from ..core.cnc import BUNDLED_DIR

    env = os.environ.get("XRFPROC_CNC_DIR")
    return [Path(BUNDLED_DIR)] + ([Path(env)] if env and Path(env).is_dir() else [])


ElementList = Annotated[list[str] | None, Field(None, max_length=100, description="Lines ('Fe K') or element symbols "
                                                                               "('Fe') to use; default all")]
DataDir = Annotated[str, Field("norm", max_length=128, pattern=r"^[A-Za-z0-9_/]+$",
                               description="Image group: 'norm', 'quant', 'fit', 'tomo', or one channel of it "
                                           "('norm/channel00')")]
