"""Motor patterns of simulated scans: raster, snake and time-triggered, with their scan commands.

The phantom (concentration maps) lies on a regular grid whose pixel ``[0, 0]`` sits at motor
position (0, 0); pixel ``[i, j]`` at slow position ``i * pixel_um`` and fast position
``j * pixel_um`` (converted to motor units with ``motor_unit_um``). A scan visits *true* positions
and records positions (``mot1`` slow, ``mot2`` fast) in acquisition order: for a snake scan the odd
rows of the recorded arrays run backwards, and for a time-triggered scan each row holds more points
than the grid has columns.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..errors import InputError

KINDS = ("raster", "snake", "timetriggered")


@dataclass
class ScanPattern:
    """How the motors move.

    Attributes
    ----------
    kind : str
        ``"raster"`` (every row forwards), ``"snake"`` (odd rows driven backwards) or
        ``"timetriggered"`` (continuous rows read out at a fixed time interval).
    rows, cols : int, optional
        Points of the regular grid along the slow and fast motor; default: the phantom shape.
    slow_range, fast_range : (float, float), optional
        First and last grid position (motor units); default: the phantom extent, from 0.
    dwell_s : float
        Count time per grid point (s); written as the last token of the command.
    lag : float
        True position minus recorded position, as a fraction of the fast step, in the direction
        of motion (0.5 models the half-pixel shift of snake and continuous scans).
    oversample : float
        Time-triggered: recorded points per grid column (``round(cols * oversample)`` per row).
    jitter : float
        Time-triggered: standard deviation of the irregularity of the true positions, as a fraction
        of the fast step (the encoder records them exactly).
    snake : bool
        Time-triggered: drive odd rows backwards as well.
    slow_motor, fast_motor : str
        Motor names (``mot1_name``, ``mot2_name``).
    motor_unit_um : float
        Length of one motor unit in micrometre (1000: positions in mm).
    command : str, optional
        Scan command name; default ``"dmesh"``, ``"cdmesh"`` for time-triggered scans.
    """

    kind: str = "raster"
    rows: int | None = None
    cols: int | None = None
    slow_range: tuple[float, float] | None = None
    fast_range: tuple[float, float] | None = None
    dwell_s: float = 0.1
    lag: float = 0.0
    oversample: float = 1.5
    jitter: float = 0.05
    snake: bool = False
    slow_motor: str = "hrz"
    fast_motor: str = "hry"
    motor_unit_um: float = 1000.0
    command: str | None = None


@dataclass
class ScanPositions:
    """The motor positions of one simulated scan.

    Attributes
    ----------
    shape : tuple of int
        Shape of the recorded data grid, ``(rows, points per row)``.
    mot1, mot2 : ndarray, shape ``shape``
        Recorded slow and fast positions (motor units), acquisition order.
    true_mot1, true_mot2 : ndarray, shape ``shape``
        Where the sample really was when each point was measured.
    grid_mot1 : ndarray, shape (rows,)
        The regular grid's slow positions. ``grid_mot2``, shape (cols,): its fast positions.
    grid_mot2 : ndarray, shape (cols,)
    acquisition_time : ndarray, shape ``shape``
        Real time of each point (s).
    cmd : str
        The scan command, ESRF style: ``"dmesh <fast> start stop intervals <slow> start stop
        intervals time"``; for time-triggered ``"cdmesh"`` with the number of *columns* as 5th token
        (slow intervals as 9th).
    """

    shape: tuple[int, int]
    mot1: np.ndarray
    mot2: np.ndarray
    true_mot1: np.ndarray
    true_mot2: np.ndarray
    grid_mot1: np.ndarray
    grid_mot2: np.ndarray
    acquisition_time: np.ndarray
    cmd: str


def _fmt(v: float) -> str:
    return f"{float(v):.6g}"


def scan_positions(pattern: ScanPattern, phantom_shape: tuple[int, int], pixel_um: float,
                   rng: np.random.Generator) -> ScanPositions:
    """Recorded and true positions of a scan over a phantom of ``phantom_shape`` pixels.

    Raises
    ------
    InputError
        For an unknown kind, fewer than 2 points along an axis or a non-positive dwell time.
    """
    if pattern.kind not in KINDS:
        raise InputError(f"scan pattern kind {pattern.kind!r} must be one of {KINDS}")
    if pixel_um <= 0 or pattern.motor_unit_um <= 0:
        raise InputError("pixel_um and motor_unit_um must be positive")
    if pattern.dwell_s <= 0:
        raise InputError(f"dwell_s must be positive, got {pattern.dwell_s}")
    rows = int(pattern.rows if pattern.rows is not None else phantom_shape[0])
    cols = int(pattern.cols if pattern.cols is not None else phantom_shape[1])
    if rows < 2 or cols < 2:
        raise InputError(f"a map scan needs at least 2 x 2 points, got {rows} x {cols}")
    unit = pixel_um / pattern.motor_unit_um
    slow = pattern.slow_range or (0.0, (phantom_shape[0] - 1) * unit)
    fast = pattern.fast_range or (0.0, (phantom_shape[1] - 1) * unit)
    grid1 = np.linspace(slow[0], slow[1], rows)
    grid2 = np.linspace(fast[0], fast[1], cols)
    step = (fast[1] - fast[0]) / (cols - 1)
    if pattern.kind == "timetriggered":
        npts = max(2, int(round(cols * pattern.oversample)))
        # the row sweeps the grid's full width (cols steps) at constant nominal speed
        u = (np.arange(npts) + 0.5) / npts
        nominal = fast[0] - step / 2 + u * cols * step
        rec2 = np.empty((rows, npts))
        for r in range(rows):
            pos = nominal + rng.normal(0.0, abs(pattern.jitter * step), npts) if pattern.jitter else nominal
            rec2[r] = pos[::-1] if (pattern.snake and r % 2) else pos
        direction = np.ones((rows, 1))
        if pattern.snake:
            direction[1::2] = -1
        rec1 = np.repeat(grid1[:, None], npts, axis=1)
        time = np.full((rows, npts), pattern.dwell_s * cols / npts)
        name = pattern.command or "cdmesh"
        cmd = (f"{name} {pattern.fast_motor} {_fmt(fast[0])} {_fmt(fast[1])} {cols} "
               f"{pattern.slow_motor} {_fmt(slow[0])} {_fmt(slow[1])} {rows - 1} {_fmt(pattern.dwell_s)}")
    else:
        rec2 = np.repeat(grid2[None, :], rows, axis=0)
        direction = np.ones((rows, 1))
        if pattern.kind == "snake":
            rec2[1::2] = rec2[1::2, ::-1]
            direction[1::2] = -1
        rec1 = np.repeat(grid1[:, None], cols, axis=1)
        time = np.full((rows, cols), float(pattern.dwell_s))
        name = pattern.command or "dmesh"
        cmd = (f"{name} {pattern.fast_motor} {_fmt(fast[0])} {_fmt(fast[1])} {cols - 1} "
               f"{pattern.slow_motor} {_fmt(slow[0])} {_fmt(slow[1])} {rows - 1} {_fmt(pattern.dwell_s)}")
    true2 = rec2 + pattern.lag * step * direction
    return ScanPositions(rec1.shape, rec1, rec2, rec1.copy(), true2, grid1, grid2, time, cmd)


def sample_phantom(image: np.ndarray, true_mot1: np.ndarray, true_mot2: np.ndarray, pixel_um: float,
                   motor_unit_um: float) -> np.ndarray:
    """Values of a phantom image at true motor positions (bilinear, edge values held beyond the edge).

    Positions exactly on the phantom grid return the pixel values unchanged.
    """
    scale = motor_unit_um / pixel_um
    coords = np.stack([np.ravel(true_mot1) * scale, np.ravel(true_mot2) * scale])
    # snap positions within 1e-9 pixel of the grid to it (exact values for grid-aligned scans)
    snapped = np.round(coords)
    coords = np.where(np.abs(coords - snapped) < 1e-9, snapped, coords)
    out = ndimage.map_coordinates(np.asarray(image, dtype=np.float64), coords, order=1, mode="nearest")
    return out.reshape(np.shape(true_mot1))


__all__ = ["KINDS", "ScanPattern", "ScanPositions", "scan_positions", "sample_phantom"]
