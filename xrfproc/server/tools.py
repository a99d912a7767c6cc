"""The MCP tools: one thin call into :mod:`xrfproc.api` per processing step.

Every tool has flat, named arguments described with pydantic ``Field`` (ranges, ``Literal``
choices) and returns a typed summary (:mod:`.models`). Its body is a plain function run by
:func:`run_step` in a worker thread, so the event loop keeps answering (progress, cancellation,
other calls). Paths go through the data roots (:mod:`.paths`) inside that function, so a refused
path, like every :class:`xrfproc.errors.XrfError`, reaches the client as ``isError`` with our
message.

Adding a tool for a new api function is a few lines::

    @tool(read_only=False)
    async def quantify(ctx: Context, h5file: H5File, ...) -> m.SomeResult:
        \"\"\"What it does, for the model.\"\"\"
        def work(progress):
            p = h5(ctx, h5file)
            return results.some_result(api.quantify(p, ..., progress=progress), roots(ctx))
        return await run_step(ctx, work)
"""
import inspect as inspect_module
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
from . import models as m
from . import results
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


def register(server: Any) -> None:
    """Add every collected tool whose api functions exist to an MCP server (an :class:`.app.XrfServer`)."""
    for fn, ann, requires in TOOLS:
        if requires and not any(hasattr(api, r) for r in requires):
            log.info("tool %s not offered: xrfproc.api has no %s", fn.__name__, " or ".join(requires))
            continue
        server.add_tool(fn, description=inspect_module.cleandoc(fn.__doc__ or ""), annotations=ann)


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


def _with_image(model: Any, png: bytes) -> CallToolResult:
    import base64

    data = model.model_dump(mode="json")
    return CallToolResult(content=[TextContent(type="text", text=json.dumps(data)),
                                   ImageContent(type="image", data=base64.b64encode(png).decode(),
                                                mime_type="image/png")],
                          structured_content=data)


# --------------------------------------------------------------------------- finding one's way
@tool(read_only=True)
async def inspect(ctx: Context, h5file: H5File) -> m.InspectResult:
    """Describe a layout file: scan grid, detector channels, the group tree with shapes and units,
    and which processing steps have run (with their parameters and time). Start here."""
    def work(progress: Any) -> m.InspectResult:
        return results.inspect_result(api.inspect(h5(ctx, h5file)), roots(ctx))
    return await run_step(ctx, work)


@tool(picture=True)
async def sum_spectrum(
    ctx: Context, h5file: H5File, channel: Channel = None,
    max_points: Annotated[int, Field(256, ge=16, le=4096, description="Points returned (channels are summed in "
                                                                     "bins to stay under it)")] = 256,
    out: OptOut = None,
) -> Annotated[CallToolResult, m.SumSpectrumResult]:
    """The sum spectrum of a detector channel with the element lines found in it and, when the file
    has been fitted, the fitted line areas: as (binned) data and as a PNG picture (log scale), which
    is written next to the file (default <stem>_<channel>_sum.png) and returned as an image."""
    def work(progress: Any) -> CallToolResult:
        p = h5(ctx, h5file)
        res, png = results.sum_spectrum(p, channel, max_points)
        target = outfile(ctx, out) or p.with_name(f"{p.stem}_{res.channel}_sum.png")
        target.write_bytes(png)
        res.file, res.png = roots(ctx).display(p), roots(ctx).display(target)
        return _with_image(res, png)
    return await run_step(ctx, work)


@tool(picture=True)
async def image(
    ctx: Context, h5file: H5File,
    dataset: Annotated[str, Field("auto", max_length=256, pattern=r"^[A-Za-z0-9_./ -]+$",
                                  description="HDF5 image stack to draw, e.g. 'norm/channel00/ims', "
                                              "'quant/channel00/ims', 'kmeans/ims'; 'auto': the most processed "
                                              "of quant/, norm/, fit/")] = "auto",
    channel: Channel = None,
    lines: Annotated[list[str] | None, Field(None, max_length=64,
                                             description="Lines to draw (e.g. ['Fe K', 'Zn K']); default all")] = None,
    scale: Annotated[Literal["linear", "sqrt", "log"], Field("linear", description="Colour scale")] = "linear",
    clip_percent: Annotated[float, Field(1.0, ge=0.0, le=20.0, description="Colour range from this percentile "
                                                                           "to 100 minus it")] = 1.0,
    out: OptOut = None,
) -> Annotated[CallToolResult, m.ImageResult]:
    """Draw element maps as a grid of panels (one per line, each with its colour bar) and return the
    PNG as an image, plus min/median/max per map; the PNG is written next to the file (default
    <stem>_<group>_<channel>[_<lines>].png)."""
    def work(progress: Any) -> CallToolResult:
        p = h5(ctx, h5file)
        limit = ctx.mcp_server.options.max_pixels
        key, data, names = results.read_image_stack(p, dataset, channel, lines, limit)
        tag = key.removesuffix("/ims").replace("/", "_")
        if lines:
            tag += "_" + "_".join("".join(ch for ch in ln if ch.isalnum()) for ln in names)[:80]
        target = outfile(ctx, out) or p.with_name(f"{p.stem}_{tag}.png")
        overview = getattr(api, "overview_images", None)
        parts = key.split("/")
        if overview is not None and not lines and len(parts) == 3 and parts[2] == "ims":
            # the imaging step's collated figure (scale bar, discrete K-means colours), moved to target
            pngs = [q for q in overview(p, datadir=parts[0], channel=parts[1], log=scale == "log",
                                        sqrt=scale == "sqrt", out=target.parent) if str(q).endswith(".png")]
            png = Path(pngs[0]).read_bytes()
            if Path(pngs[0]).resolve() != target:
                Path(pngs[0]).replace(target)
        else:
            png = results.draw_maps(data, names, title=f"{p.name}: {key}", scale=scale, clip_percent=clip_percent)
            target.write_bytes(png)
        res = m.ImageResult(file=roots(ctx).display(p), png=roots(ctx).display(target), dataset=key,
                            shape=list(data.shape), lines={n: results.stats(d) for n, d in zip(names, data)})
        return _with_image(res, png)
    return await run_step(ctx, work)


@tool(read_only=True)
async def suggest_elements(ctx: Context, h5file: H5File, energy_keV: Energy = None,
                           channel: Channel = None) -> m.ElementsResult:
    """Elements whose lines are present in the sum spectrum of a channel (symbols, strongest
    first): the starting point for make_config."""
    def work(progress: Any) -> m.ElementsResult:
        p = h5(ctx, h5file)
        els = api.suggest_elements(p, energy_keV, channel=channel)
        return m.ElementsResult(file=roots(ctx).display(p), channel=channel, energy_keV=energy_keV, elements=list(els))
    return await run_step(ctx, work)


@tool(read_only=True)
async def read_cnc(ctx: Context, cnc: CncFile) -> m.CncResult:
    """Read a concentration file (.cnc): the certified composition of a reference material."""
    def work(progress: Any) -> m.CncResult:
        p = infile(ctx, cnc, "cnc")
        return results.cnc_result(api.read_cnc(p), p, roots(ctx))
    return await run_step(ctx, work)


# --------------------------------------------------------------------------- data
@tool()
async def simulate(ctx: Context, out: OutFile, rows: Rows = 20, cols: Cols = 30,
                   energy_keV: Annotated[float, Field(18.0, gt=1.0, le=150.0, description="Excitation energy (keV)")]
                   = 18.0,
                   scan: Annotated[Literal["raster", "snake", "timetriggered"], Field("raster")] = "raster",
                   seed: Seed = 0) -> m.FileResult:
    """Simulate the demo phantom (Fe, Cu, Zn, Sr, Pb in a silicate; 2 detector channels) on a
    rows x cols grid and write it as a layout file: test data for the other tools."""
    def work(progress: Any) -> m.FileResult:
        limit = ctx.mcp_server.options.max_pixels
        if rows * cols > limit:
            raise InputError(f"{rows} x {cols} points are more than this server's limit of {limit} (--max-pixels)")
        p = api.simulate(outfile(ctx, out), rows=rows, cols=cols, energy_keV=energy_keV, scan=scan, seed=seed)
        return results.file_result(p, roots(ctx))
    return await run_step(ctx, work)


@tool()
async def simulate_reference(ctx: Context, out: OutFile, cnc: CncFile, rows: Rows = 5, cols: Cols = 5,
                             energy_keV: Annotated[float, Field(18.0, gt=1.0, le=150.0)] = 18.0,
                             seed: Seed = 0) -> m.FileResult:
    """Simulate a homogeneous reference-material map of the composition in a .cnc file and write it."""
    def work(progress: Any) -> m.FileResult:
        limit = ctx.mcp_server.options.max_pixels
        if rows * cols > limit:
            raise InputError(f"{rows} x {cols} points are more than this server's limit of {limit} (--max-pixels)")
        p = api.simulate_reference(outfile(ctx, out), infile(ctx, cnc, "cnc"), rows=rows, cols=cols,
                                   energy_keV=energy_keV, seed=seed)
        return results.file_result(p, roots(ctx))
    return await run_step(ctx, work)


@tool()
async def demo_dataset(ctx: Context,
                       folder: Annotated[str, Field(min_length=1, max_length=4096,
                                                    description="Folder inside a data root (created if needed)")],
                       seed: Seed = 0, snake: Annotated[bool, Field(False, description="Scan the sample as a snake")]
                       = False) -> m.DemoResult:
    """Write the demo data: a sample map (30 x 40 points) and its NIST SRM 613 reference map."""
    def work(progress: Any) -> m.DemoResult:
        d = roots(ctx).resolve(folder, what="folder", directory=True)
        sample, ref = api.demo_dataset(d, seed=seed, snake=snake)
        cncs = sorted(Path(d).glob("*.cnc"))
        return m.DemoResult(sample=results.file_result(sample, roots(ctx)),
                            reference=results.file_result(ref, roots(ctx)),
                            cnc=roots(ctx).display(cncs[0]) if cncs else None)
    return await run_step(ctx, work)


@tool()
async def convert(
    ctx: Context,
    source: Annotated[list[str], Field(min_length=1, max_length=256,
                                       description="Beamline file(s) or scan folder(s), inside a data root; "
                                                   "several are merged into one map")],
    out: OptOut = None,
    kind: Annotated[ConverterKind, Field("auto", description="Format; 'auto' detects it from the content")] = "auto",
    scan: Annotated[str | None, Field(None, max_length=64, description="Scan to read (e.g. '1.1') when the file "
                                                                       "holds several")] = None,
    dims: Dims = None,
    spectra: Annotated[str | None, Field(None, max_length=4096,
                                         description="Separate spectra file (APS .mda maps), inside a data root")]
    = None,
) -> m.FileResult:
    """Convert beamline data into a file of the uniform layout (raw spectra, I0, motors, ...);
    default output <first source stem>_merge.h5 next to the source."""
    def work(progress: Any) -> m.FileResult:
        srcs = [infile(ctx, s, "source") for s in source]
        for s in srcs:
            if s.is_file():
                roots(ctx).check_hdf5(s, what="source")
        opts: dict[str, Any] = {}
        if scan is not None:
            opts["scan"] = scan
        if dims is not None:
            opts["dims"] = tuple(dims)
        if spectra is not None:
            opts["spectra"] = infile(ctx, spectra, "spectra")
        p = api.convert(srcs if len(srcs) > 1 else srcs[0], out=outfile(ctx, out), kind=kind, **opts)
        return results.file_result(p, roots(ctx))
    return await run_step(ctx, work)


# --------------------------------------------------------------------------- processing
@tool()
async def make_config(
    ctx: Context, h5file: H5File,
    elements: Annotated[list[str], Field(min_length=1, max_length=100,
                                         description="Element symbols to fit, e.g. ['Fe', 'Cu', 'Zn'] "
                                                     "(see suggest_elements)")],
    energy_keV: Energy = None, channel: Channel = None, out: OptOut = None,
) -> m.ConfigResult:
    """Write a PyMca fit configuration (.cfg) for the spectra of a layout file, without a GUI
    (default <stem>_<channel>.cfg next to the file)."""
    def work(progress: Any) -> m.ConfigResult:
        for el in elements:
            if not (1 <= len(el) <= 2 and el[0].isupper() and el.isalpha()):
                raise InputError(f"element {el!r} is not a chemical symbol such as 'Fe'")
        opts: dict[str, Any] = {"channel": channel}
        o = outfile(ctx, out)
        if o is not None:
            opts["out"] = o
        cfg = api.make_config(h5(ctx, h5file), list(elements), energy_keV, **opts)
        return m.ConfigResult(config=roots(ctx).display(cfg), elements=list(elements), energy_keV=energy_keV)
    return await run_step(ctx, work)


@tool()
async def fit(
    ctx: Context, h5file: H5File,
    config: Annotated[str | list[str], Field(description="PyMca .cfg file inside a data root, one for all channels, "
                                                         "or a list with one per channel")],
    channel: Channel = None,
    mode: Annotated[Literal["fast", "precise", "engine"],
                    Field("fast", description="'fast': PyMca's linear fast fit (needs the SNIP background); "
                                              "'precise': a full PyMca fit of every pixel (slow); 'engine': "
                                              "xrfproc's own fit engine")] = "fast",
    weight: Annotated[Literal[0, 1, 2] | None, Field(None, description="Fast mode weighting (None: as the "
                                                                       "configuration says)")] = None,
    refit: Annotated[bool, Field(True, description="Fast mode: refit without lines with negative areas")] = True,
    deadtime: Annotated[bool, Field(True, description="Correct areas by ICR/OCR per pixel")] = True,
    chi2: Annotated[bool, Field(True, description="Compute the reduced chi-square map")] = True,
) -> m.FitResult:
    """Fit every pixel's spectrum and write fit/ (peak-area maps per line, uncertainties, chi2, the
    sum-spectrum fit). Sends progress notifications; cancelling leaves the file as it was."""
    def work(progress: Any) -> m.FitResult:
        p = h5(ctx, h5file)
        cfg: Any = ([infile(ctx, c, "config") for c in config] if isinstance(config, list)
                    else infile(ctx, config, "config"))
        s = api.fit(p, cfg, channel=channel, mode=mode, progress=progress, weight=weight, refit=refit,
                    deadtime=deadtime, chi2=chi2)
        return results.fit_result(s, roots(ctx))
    return await run_step(ctx, work)


@tool()
async def normalise(
    ctx: Context, h5file: H5File,
    I0norm: Annotated[float | None, Field(None, gt=0, description="Monitor value each point is scaled to; "
                                                                  "default max(I0)")] = None,
    snake: Annotated[bool, Field(False, description="Regrid a snake scan onto the regular motor grid")] = False,
    sort: Annotated[bool, Field(False, description="Put the points in motor order")] = False,
    timetriggered: Annotated[bool | None, Field(None, description="Time-triggered readout; None detects it")] = None,
    tmnorm: Annotated[bool, Field(False, description="Also divide by the acquisition time (counts/s)")] = False,
    halfpixshift: Annotated[bool, Field(True, description="With snake: shift positions half a point")] = True,
    method: Annotated[Literal["nearest", "linear", "cubic"], Field("nearest", description="Regrid interpolation")]
    = "nearest",
    dims: Dims = None,
) -> m.NormaliseResult:
    """Normalise the fitted maps by the monitor (I0) and optionally the time, regridding snake and
    time-triggered scans; writes norm/."""
    def work(progress: Any) -> m.NormaliseResult:
        s = api.normalise(h5(ctx, h5file), I0norm=I0norm, snake=snake, sort=sort, timetriggered=timetriggered,
                          tmnorm=tmnorm, halfpixshift=halfpixshift, method=method,
                          dims=tuple(dims) if dims else None, progress=progress)
        return results.normalise_result(s, roots(ctx))
    return await run_step(ctx, work)


@tool()
async def detlim(
    ctx: Context, h5file: H5File, cnc: CncFile, channel: Channel = None, energy_keV: Energy = None,
    incidence_deg: Annotated[float, Field(45.0, gt=0, le=90, description="Beam angle to the surface (deg)")] = 45.0,
    exit_deg: Annotated[float, Field(45.0, gt=0, le=90, description="Detector angle to the surface (deg)")] = 45.0,
) -> m.DetlimResult:
    """Detection limits (ppm, 1 s and 1000 s) and elemental yields of a fitted (and normalised)
    reference-material measurement; writes detlim/ and elyield/."""
    def work(progress: Any) -> m.DetlimResult:
        s = api.detlim(h5(ctx, h5file), infile(ctx, cnc, "cnc"), channel=channel, energy_keV=energy_keV,
                       incidence_deg=incidence_deg, exit_deg=exit_deg)
        return results.detlim_result(s, roots(ctx))
    return await run_step(ctx, work)


# --------------------------------------------------------------------------- steps offered once the api has them
ElementList = Annotated[list[str] | None, Field(None, max_length=100, description="Lines ('Fe K') or element symbols "
                                                                               "('Fe') to use; default all")]
DataDir = Annotated[str, Field("norm", max_length=128, pattern=r"^[A-Za-z0-9_/]+$",
                               description="Image group: 'norm', 'quant', 'fit', 'tomo', or one channel of it "
                                           "('norm/channel00')")]


@tool(requires=("quantify",))
async def quantify(
    ctx: Context, h5file: H5File,
    references: Annotated[list[str], Field(min_length=1, max_length=32,
                                           description="Reference measurements (layout files with elyield/, see "
                                                       "detlim), inside a data root")],
    channel: Channel = None,
    norm: Annotated[str | None, Field(None, max_length=32, description="Divide by this signal ('Compt', 'Rayl' "
                                                                       "or a line)")] = None,
    matrix: Annotated[str | None, Field(None, max_length=4096, description="Matrix composition (.cnc) to turn "
                                                                           "areal concentrations into ppm")] = None,
    incidence_deg: Annotated[float, Field(45.0, gt=0, le=90)] = 45.0,
    exit_deg: Annotated[float, Field(45.0, gt=0, le=90)] = 45.0,
    energy_keV: Energy = None,
) -> m.StepResult:
    """Quantify the normalised maps of a sample with the elemental yields of reference
    measurements; writes quant/ (ppm or ug/cm^2)."""
    def work(progress: Any) -> m.StepResult:
        p = h5(ctx, h5file)
        refs = [h5(ctx, r, "references") for r in references]
        opts: dict[str, Any] = {}
        if matrix is not None:
            opts["matrix"] = infile(ctx, matrix, "matrix")
        s = api.quantify(p, refs, channel=channel, norm=norm, incidence_deg=incidence_deg, exit_deg=exit_deg,
                         energy_keV=energy_keV, **opts)
        return results.step_result("quantify", p, s, roots(ctx))
    return await run_step(ctx, work)


@tool(requires=("kmeans", "pca", "cluster"))
async def cluster(
    ctx: Context, h5file: H5File,
    method: Annotated[Literal["kmeans", "pca"], Field("kmeans", description="K-means clustering or principal "
                                                                            "component analysis")] = "kmeans",
    datadir: DataDir = "norm",
    n: Annotated[int, Field(5, ge=2, le=50, description="Clusters (kmeans) or components (pca)")] = 5,
    elements: ElementList = None, channel: Channel = None, seed: Seed = 0,
) -> m.StepResult:
    """Cluster the pixels of an image group (K-means, writes kmeans/) or reduce it to principal
    components (PCA, writes PCA/)."""
    def work(progress: Any) -> m.StepResult:
        p = h5(ctx, h5file)
        if method == "kmeans":
            s = api.kmeans(p, datadir=datadir, nclusters=n, elements=elements, channel=channel, seed=seed,
                           progress=progress)
        else:
            s = api.pca(p, datadir=datadir, ncomponents=n, elements=elements, channel=channel, seed=seed,
                        progress=progress)
        return results.step_result(method, p, s, roots(ctx))
    return await run_step(ctx, work)


@tool(requires=("tomo",))
async def tomo(
    ctx: Context, h5file: H5File, datadir: DataDir = "norm", channel: Channel = None,
    rot_mot: Annotated[Literal["mot1", "mot2"], Field("mot2", description="The rotation motor")] = "mot2",
    rot_centre: Annotated[float | None, Field(None, description="Rotation centre (pixels); default found")] = None,
    algorithm: Annotated[str, Field("fbp", max_length=32, pattern=r"^[a-z_]+$",
                                    description="Reconstruction algorithm ('fbp', ...)")] = "fbp",
    lines: ElementList = None,
    iterations: Annotated[int, Field(10, ge=1, le=500, description="Iterations of iterative algorithms")] = 10,
) -> m.StepResult:
    """Reconstruct the sinograms of a rotation/translation map into tomo/ (one slice per line).
    Sends progress notifications; cancelling leaves the file as it was."""
    def work(progress: Any) -> m.StepResult:
        p = h5(ctx, h5file)
        s = api.tomo(p, datadir=datadir, channel=channel, rot_mot=rot_mot, rot_centre=rot_centre,
                     algorithm=algorithm, lines=lines, iterations=iterations, progress=progress)
        return results.step_result("tomo", p, s, roots(ctx))
    return await run_step(ctx, work)
