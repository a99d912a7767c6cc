"""Typed results of the MCP tools (pydantic models -> each tool's ``outputSchema``).

Results are summaries: shapes, line names, min/median/max per line, warnings and the paths
written, never the arrays themselves. Paths are shown relative to the first data root. Numbers
that are not finite (NaN, inf) are given as ``null``.
"""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class Stats(BaseModel):
    """Distribution of one line's map (finite pixels only; null when none)."""

    min: float | None = None
    median: float | None = None
    max: float | None = None


class ChannelLines(BaseModel):
    names: list[str] = Field(description="Line names in the order of the image stack (e.g. 'Fe K', 'Compt')")
    shape: list[int] = Field(description="Shape of the image stack: (lines, rows, cols)")
    lines: dict[str, Stats] = Field(description="min/median/max of each line's map")


class FitChannel(ChannelLines):
    failed: int = Field(description="Pixels whose fit failed (NaN in the maps)")
    invalid: int = Field(description="Spectra holding NaN counts")
    deadtime_missing: int = Field(description="Pixels without valid ICR/OCR (NaN)")
    chi2_median: float | None = Field(None, description="Median reduced chi-square over the pixels")
    sum_int: dict[str, float | None] = Field(description="Fitted area of each line in the sum spectrum (counts)")
    sum_rule: dict[str, float] = Field(default_factory=dict, description="Per line holding >= 2 % of the "
                                       "fluorescence: per-pixel areas summed / sum-spectrum area (1 +- 0.05 expected)")
    calibration: dict[str, float | str] = Field(default_factory=dict, description="Calibration and resolution the "
                                                "fits used (zero_keV, gain_keV, noise_keV, fano), the configuration's "
                                                "and its shift in eV at the strongest line")
    warnings: list[str] = []


class FitResult(BaseModel):
    file: str
    mode: str
    seconds: float
    channels: dict[str, FitChannel]
    warnings: list[str] = []


class NormaliseResult(BaseModel):
    file: str
    I0norm: float | None = Field(description="Monitor value every point was scaled to")
    masked_points: int = Field(description="Points with an unusable monitor (NaN)")
    time_triggered: bool
    channels: dict[str, ChannelLines]
    warnings: list[str] = []


class TreeEntry(BaseModel):
    path: str
    kind: str = Field(description="'group', 'dataset' or 'broken link'")
    shape: list[int] | None = None
    dtype: str | None = None
    unit: str | None = None
    link: str | None = Field(None, description="'file:path' of an external link")
    value: list[str] | None = Field(None, description="Short string datasets (names) in full")


class InspectResult(BaseModel):
    file: str
    schema_version: int | None = Field(description="xrfproc layout version; null for files of the original xrf_proc")
    grid: list[int] | None = Field(description="Scan grid (rows, cols) of the raw spectra")
    channels: list[str]
    steps: dict[str, dict[str, Any] | None] = Field(description="Processing groups present -> their provenance "
                                                                "(step, timestamp, parameters, inputs)")
    tree: list[TreeEntry]
    tree_truncated: bool = Field(False, description="True when the tree was cut at the entry limit")
    bulk_files: list[str]


class FileResult(BaseModel):
    file: str = Field(description="The layout file written")
    grid: list[int] | None = None
    channels: list[str] = []
    energy_keV: float | None = None


class DemoResult(BaseModel):
    sample: FileResult
    reference: FileResult
    cnc: str | None = Field(None, description="Composition file of the reference, when one was written")


class ElementsResult(BaseModel):
    file: str
    channel: str | None
    energy_keV: float | None
    elements: list[str] = Field(description="Element symbols found, strongest first")
    evidence: list[dict] = Field(default_factory=list, description="Per element: kind (sample/air/instrument), "
                                 "family read, net counts, significance (sigma), peaks explained (keV)")
    unexplained: list[dict] = Field(default_factory=list, description="Significant peaks no element explains")


class CalibrationResult(BaseModel):
    file: str
    channels: dict[str, dict] = Field(description="Per channel: zero_keV, gain_keV, noise_keV, fano, energy_keV, "
                                      "stored_keV (what the file recorded), shift_eV (how far that reads the "
                                      "strongest line), elements, method, warnings")


class ConfigResult(BaseModel):
    config: str = Field(description="The PyMca .cfg written")
    elements: list[str]
    energy_keV: float | None


class Concentration(BaseModel):
    conc: float
    err: float


class CncResult(BaseModel):
    file: str
    name: str
    unit: str = Field(description="'ppm' or an areal unit (ng/mm^2, ug/cm^2)")
    density_mg_cm3: float
    mass_mg: float
    thickness_um: float
    elements: dict[str, Concentration] = Field(description="Element symbol -> certified concentration")


class DetlimChannel(BaseModel):
    detection_limits_ppm_1s: dict[str, float | None]
    yields: dict[str, float | None]
    skipped: list[str] = []


class DetlimResult(BaseModel):
    file: str
    cnc: str
    channels: dict[str, DetlimChannel]
    warnings: list[str] = []


class ImageResult(BaseModel):
    file: str
    png: str = Field(description="The PNG written")
    dataset: str = Field(description="The HDF5 dataset drawn")
    shape: list[int]
    lines: dict[str, Stats] = Field(description="min/median/max of each map drawn")


class Peak(BaseModel):
    element: str
    family: str = Field(description="'K', 'L', 'M' ('' for scatter)")
    energy_keV: float
    area: float = Field(description="Net counts attributed to this family in the sum spectrum")
    fraction: float = Field(description="Share of all fitted fluorescence counts")


class FittedLine(BaseModel):
    name: str
    energy_keV: float | None = Field(description="Energy of the group's strongest line")
    area: float | None
    background: float | None
    sigma: float | None


class SumSpectrumResult(BaseModel):
    file: str
    channel: str
    png: str = Field(description="The PNG written")
    binning: int = Field(description="Channels summed into each returned point")
    energy_keV: list[float] = Field(description="Energy of each returned point (bin centre)")
    counts: list[float] = Field(description="Sum spectrum, summed over the pixels and the binned channels")
    background: list[float] = Field(description="SNIP background, binned like counts")
    calibration: list[float] = Field(description="(zero keV, gain keV/channel) used")
    excitation_keV: float | None
    peaks: list[Peak] = Field(description="Element line families found in the spectrum")
    fitted: list[FittedLine] | None = Field(None, description="The fit of the sum spectrum (fit step), if any")
    chisq: float | None = None


class StepResult(BaseModel):
    """Summary of a step whose result has no model of its own yet (the api's dict, made JSON-safe:
    paths relative to the data root, NaN as null, long lists cut to their first items)."""

    file: str
    step: str
    summary: dict[str, Any]


class PlotResult(BaseModel):
    file: str
    png: str = Field(description="The PNG written")
    datadir: str
    channel: str | None = None
    elements: list[str] | None = None


class RecipeStep(BaseModel):
    number: int
    step: str
    line: str = Field(description="Where the step is in the recipe (file:line)")
    call: str = Field(description="The call with its checked arguments (paths relative to the recipe's folder)")
    status: str = Field(description="'planned' (check only), 'done', 'skipped' (before start) or 'failed'")
    seconds: float = 0.0
    result: str = Field("", description="A short summary of what the step returned")


class RecipeResult(BaseModel):
    recipe: str = Field(description="The recipe run (a file, an example name or '<recipe>' for text)")
    folder: str = Field(description="The folder relative paths in the recipe start from")
    checked_only: bool
    steps: list[RecipeStep]
    done: int = Field(description="Steps that ran")
    seconds: float
    files: list[str] = Field(description="Files and folders the steps write (as far as known before running)")


class RecipeInfo(BaseModel):
    name: str
    path: str = Field(description="For run_recipe: path= for a recipe in a data root, example= for an example")
    kind: str = Field(description="'example' (shipped with xrfproc) or 'data root'")
    description: str = Field(description="The recipe's first comment line")


class RecipeList(BaseModel):
    recipes: list[RecipeInfo]
    truncated: bool = False
