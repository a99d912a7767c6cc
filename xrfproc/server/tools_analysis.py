"""The MCP tools of the processing steps: make_config, fit, normalise, detlim, quantify, div_by_cnc,
cluster (K-means, PCA), correlation_plot, tomo. Each is a thin call into :mod:`xrfproc.api`; tools
whose api function is missing are not offered (``requires``).
"""
from pathlib import Path
from typing import Annotated, Any, Literal

from mcp.server.mcpserver import Context
from mcp_types import CallToolResult
from pydantic import Field

from .. import api
from ..errors import InputError
from . import models as m
from . import results
from .toolkit import (Channel, CncFile, DataDir, Dims, ElementList, Energy, H5File, OptOut, Seed, cncfile, h5, infile,
                      outfile, roots, run_step, tool, with_image)


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
    weight: Annotated[Literal[0, 1, 2] | None, Field(None, description="Per-pixel weights. None (default): "
                                                     "weights that do not depend on the pixel's own counts (unbiased "
                                                     "at any count rate; stddev = each pixel's Poisson sigma); 0 "
                                                     "unweighted, 1 PyMca's average weights, 2 PyMca's per-pixel "
                                                     "weights (biased low at a few thousand counts per spectrum)")
                      ] = None,
    background: Annotated[Literal["sum", "snip"], Field("sum", description="'sum': each pixel's continuum is the "
                                                        "sum spectrum's background scaled linearly (the per-pixel "
                                                        "areas add up to the sum-spectrum fit); 'snip': a SNIP "
                                                        "background per pixel, as PyMca does")] = "sum",
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
                    deadtime=deadtime, chi2=chi2, background=background)
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
    method: Annotated[Literal["nearest", "linear", "cubic"], Field("linear", description="Regrid interpolation")]
    = "linear",
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
        s = api.detlim(h5(ctx, h5file), cncfile(ctx, cnc), channel=channel, energy_keV=energy_keV,
                       incidence_deg=incidence_deg, exit_deg=exit_deg)
        return results.detlim_result(s, roots(ctx))
    return await run_step(ctx, work)


@tool(requires=("quantify",))
async def quantify(
    ctx: Context, h5file: H5File,
    references: Annotated[list[str], Field(min_length=1, max_length=32,
                                           description="Reference measurements (layout files with elyield/, see "
                                                       "detlim), inside a data root")],
    channel: Channel = None,
    norm: Annotated[str | None, Field(None, max_length=32, description="Divide by this signal ('Compt', 'Rayl' "
                                                                       "or a line)")] = None,
    matrix: Annotated[str | None, Field(None, max_length=4096, description="Homogeneous matrix composition (.cnc "
                                                                           "inside a data root, or a library name "
                                                                           "such as 'CI_chondrite') to turn areal "
                                                                           "concentrations into ppm")] = None,
    absorb_elements: Annotated[list[str] | None, Field(None, max_length=8, description="Self-absorption "
                                                       "correction from the Ka/Kb ratio of the first of these "
                                                       "elements that the fit split into 'X Ka'/'X Kb' (e.g. "
                                                       "['Fe']); needs absorb_cnc")] = None,
    absorb_cnc: Annotated[str | None, Field(None, max_length=4096, description="Matrix composition (.cnc) for the "
                                                                               "self-absorption correction")] = None,
    incidence_deg: Annotated[float, Field(45.0, gt=0, le=90)] = 45.0,
    exit_deg: Annotated[float, Field(45.0, gt=0, le=90)] = 45.0,
    energy_keV: Energy = None,
) -> m.StepResult:
    """Quantify the normalised maps of a sample with the elemental yields of reference
    measurements (run detlim on them first); writes quant/ (ppm with a matrix or self-absorption
    correction, else ug/cm^2). The summary gives the mean concentration of every line."""
    def work(progress: Any) -> m.StepResult:
        p = h5(ctx, h5file)
        refs = [h5(ctx, r, "references") for r in references]
        opts: dict[str, Any] = {}
        if matrix is not None:
            opts["matrix"] = cncfile(ctx, matrix, "matrix")
        if (absorb_elements is None) != (absorb_cnc is None):
            raise InputError("absorb_elements and absorb_cnc go together (the elements whose Ka/Kb ratio gives "
                             "the self-absorption, and the matrix composition)")
        if absorb_elements is not None and absorb_cnc is not None:
            opts["absorb"] = (list(absorb_elements), cncfile(ctx, absorb_cnc, "absorb_cnc"))
        s = api.quantify(p, refs, channel=channel, norm=norm, incidence_deg=incidence_deg, exit_deg=exit_deg,
                         energy_keV=energy_keV, **opts)
        return results.step_result("quantify", p, s, roots(ctx))
    return await run_step(ctx, work)


@tool(requires=("div_by_cnc",))
async def div_by_cnc(ctx: Context, h5file: H5File, cnc: CncFile, channel: Channel = None) -> m.StepResult:
    """Divide the quantified maps (quant/) by a matrix composition (e.g. 'CI_chondrite'), line by
    line, into rel_dif/ (enrichment relative to the matrix; units must agree)."""
    def work(progress: Any) -> m.StepResult:
        p = h5(ctx, h5file)
        s = api.div_by_cnc(p, cncfile(ctx, cnc), channel=channel)
        return results.step_result("div_by_cnc", p, s, roots(ctx))
    return await run_step(ctx, work)


@tool(picture=True, requires=("correlation_plot",))
async def correlation_plot(ctx: Context, h5file: H5File, datadir: DataDir = "norm", channel: Channel = None,
                           elements: ElementList = None, out: OptOut = None,
                           ) -> Annotated[CallToolResult, m.PlotResult]:
    """Correlation plot of the maps of one channel (pairwise scatter plots and correlation
    coefficients of the lines); returns the PNG as an image and writes it (default
    <stem>_<datadir>_<channel>_correlation.png next to the file)."""
    def work(progress: Any) -> CallToolResult:
        p = h5(ctx, h5file)
        png_path = api.correlation_plot(p, datadir=datadir, channel=channel, elements=elements,
                                        out=outfile(ctx, out))
        png = Path(png_path).read_bytes()
        res = m.PlotResult(file=roots(ctx).display(p), png=roots(ctx).display(png_path), datadir=datadir,
                           channel=channel, elements=elements)
        return with_image(res, png)
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
