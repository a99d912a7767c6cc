"""The MCP tools to find one's way and to make data: inspect, sum_spectrum, image,
suggest_elements, read_cnc, simulate, simulate_reference, demo_dataset, convert; and
:func:`register`, which adds every tool (these, :mod:`.tools_analysis`, :mod:`.tools_recipes`) to a
server. Shared pieces (argument types, ``@tool``, :func:`run_step`) are in :mod:`.toolkit`.
"""
import inspect as inspect_module
import logging
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field

from .. import api
from ..errors import InputError
from . import models as m
from . import results
from .toolkit import (TOOLS, Channel, CncFile, Cols, ConverterKind, Dims, Energy, H5File, OptOut, OutFile, Rows, Seed,
                      cncfile, h5, infile, outfile, roots, run_step, tool, with_image)

log = logging.getLogger(__name__)


def register(server: Any) -> None:
    """Add every collected tool whose api functions exist to an MCP server (an :class:`.app.XrfServer`)."""
    from . import tools_analysis, tools_recipes  # noqa: F401 (their tools are collected on import)

    for fn, ann, requires in TOOLS:
        if requires and not any(hasattr(api, r) for r in requires):
            log.info("tool %s not offered: xrfproc.api has no %s", fn.__name__, " or ".join(requires))
            continue
        server.add_tool(fn, description=inspect_module.cleandoc(fn.__doc__ or ""), annotations=ann)


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
        return with_image(res, png)
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
        return with_image(res, png)
    return await run_step(ctx, work)


@tool(read_only=True)
async def suggest_elements(ctx: Context, h5file: H5File, energy_keV: Energy = None,
                           channel: Channel = None) -> m.ElementsResult:
    """Elements whose lines are present in the sum spectrum of a channel (symbols, strongest
    first): the starting point for make_config."""
    def work(progress: Any) -> m.ElementsResult:
        p = h5(ctx, h5file)
        ident = api.suggest_elements(p, energy_keV, channel=channel, evidence=True)
        evidence = [{"element": e.element, "kind": e.kind, "reading": e.reading,
                     "net_counts": round(float(e.area.get(e.reading, float("nan"))), 1),
                     "significance": round(float(e.significance), 1),
                     "peaks_keV": [round(float(q.energy_keV), 3) for q in e.peaks]} for e in ident.elements]
        unexplained = [{"energy_keV": round(float(q.energy_keV), 3), "net_counts": round(float(q.net_counts), 1),
                        "significance": round(float(q.significance), 1)} for q in ident.unexplained]
        return m.ElementsResult(file=roots(ctx).display(p), channel=channel, energy_keV=energy_keV,
                                elements=list(ident.names), evidence=evidence, unexplained=unexplained)
    return await run_step(ctx, work)


@tool()
async def calibrate(ctx: Context, h5file: H5File, energy_keV: Energy = None,
                    channel: Channel = None) -> m.CalibrationResult:
    """Energy calibration (zero, gain) and resolution (noise, Fano) of each detector channel from its own sum
    spectrum; writes calib/ which suggest_elements and make_config then use. Reports how far the calibration
    the file recorded is off."""
    def work(progress: Any) -> m.CalibrationResult:
        p = h5(ctx, h5file)
        res = api.calibrate(p, energy_keV, channel=channel)
        chans = {c: {k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items() if k != "peaks"}
                 for c, r in res["channels"].items()}
        return m.CalibrationResult(file=roots(ctx).display(p), channels=chans)
    return await run_step(ctx, work)


@tool(read_only=True)
async def read_cnc(ctx: Context, cnc: CncFile) -> m.CncResult:
    """Read a concentration file (.cnc): the certified composition of a reference material."""
    def work(progress: Any) -> m.CncResult:
        p = cncfile(ctx, cnc)
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
        p = api.simulate_reference(outfile(ctx, out), cncfile(ctx, cnc), rows=rows, cols=cols,
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
    compression: Annotated[Literal["gzip", "lz4", "blosc", "none"],
                           Field("gzip", description="Compression of the raw spectra: gzip (level 4, readable "
                                                     "everywhere), lz4 or blosc (faster; reading needs the "
                                                     "hdf5plugin filters), none")] = "gzip",
    energy_keV: Annotated[float | None,
                          Field(None, gt=1.0, le=150.0,
                                description="Excitation energy in keV to record. Default: the one the file "
                                            "records (APS MDA extra PVs, GSE mono energy, ID15/P06 energy "
                                            "datasets). Given, it wins over the file's; a difference of more "
                                            "than 1 eV is logged as a warning")] = None,
) -> m.FileResult:
    """Convert beamline data into a file of the uniform layout (raw spectra, I0, motors, excitation
    energy, ...); default output <source stem>.h5 next to the source (<first source stem>_merge.h5 when
    several scans are stitched)."""
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
        if energy_keV is not None:
            opts["energy_keV"] = energy_keV
        p = api.convert(srcs if len(srcs) > 1 else srcs[0], out=outfile(ctx, out), kind=kind,
                        compression=compression, **opts)
        return results.file_result(p, roots(ctx))
    return await run_step(ctx, work)

