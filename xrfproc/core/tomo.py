"""Tomographic reconstruction of XRF sinograms (parallel-beam, one slice per line).

A sinogram here is an array of shape ``(n_angles, n_det)``: one row per rotation angle, one column
per translation position (detector pixel), as a map whose slow motor rotates and fast motor
translates records it. The centre of rotation ``center`` is a position along the translation axis,
in pixels from the first column (0-based; ``(n_det - 1) / 2`` is the middle of the row, tomopy's
convention). Reconstructions are ``(n_det, n_det)`` images on the translation pixel grid.

Algorithms: filtered back-projection (``"fbp"``, :func:`skimage.transform.iradon`) and SART
iterations (``"sirt"``, :func:`skimage.transform.iradon_sart`), both from scikit-image; tomopy's
gridrec is used for ``"gridrec"`` when tomopy is importable (it is not required).
"""
from __future__ import annotations

import logging

import numpy as np
from scipy import ndimage

from ..errors import InputError

log = logging.getLogger(__name__)

ALGORITHMS = ("fbp", "sirt", "gridrec")


def _check(sinogram: np.ndarray, theta_deg: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sino = np.asarray(sinogram, dtype=np.float64)
    theta = np.asarray(theta_deg, dtype=np.float64).ravel()
    if sino.ndim != 2:
        raise InputError(f"a sinogram must be 2-D (angles, translation), got shape {sino.shape}")
    if theta.size != sino.shape[0]:
        raise InputError(f"{theta.size} angles for a sinogram of {sino.shape[0]} rows")
    if not np.all(np.isfinite(theta)):
        raise InputError("rotation angles must be finite (degrees)")
    if sino.shape[1] < 3 or sino.shape[0] < 2:
        raise InputError(f"sinogram too small to reconstruct: {sino.shape}")
    return sino, theta


def clean(sinogram: np.ndarray) -> np.ndarray:
    """NaN and infinite values set to 0, negative values clipped to 0 (as tomopy's remove_nan/remove_neg)."""
    s = np.nan_to_num(np.asarray(sinogram, dtype=np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    return np.clip(s, 0.0, None)


def find_center(sinogram: np.ndarray, theta_deg: np.ndarray) -> float:
    """Centre of rotation from the centre of mass of every projection.

    For a parallel beam, the centre of mass of the projection at angle theta is
    ``c + a cos(theta) + b sin(theta)`` (the object's centre of mass turning around the axis), so a
    linear least-squares fit of that sinusoid to the projections' centres of mass gives ``c``.
    Exact for noise-free data of an object that stays inside the field of view; it needs angles
    spanning well over 90 degrees.

    Parameters
    ----------
    sinogram : ndarray, shape (n_angles, n_det)
    theta_deg : ndarray, shape (n_angles,)
        Rotation angles in degrees.

    Returns
    -------
    float
        The centre, in pixels from the first translation position.
    """
    sino, theta = _check(sinogram, theta_deg)
    sino = clean(sino)
    total = sino.sum(axis=1)
    ok = total > 0
    if ok.sum() < 3:
        raise InputError("fewer than 3 projections with signal: cannot find the centre of rotation")
    x = np.arange(sino.shape[1], dtype=np.float64)
    com = (sino[ok] @ x) / total[ok]
    t = np.radians(theta[ok])
    design = np.column_stack([np.ones_like(t), np.cos(t), np.sin(t)])
    if np.linalg.matrix_rank(design) < 3:
        raise InputError("the angles do not span enough of a turn to find the centre of rotation")
    coef, *_ = np.linalg.lstsq(design, com, rcond=None)
    return float(coef[0])


def shift_to_middle(sinogram: np.ndarray, center: float) -> np.ndarray:
    """Shift every projection so that ``center`` falls on column ``n_det // 2`` (scikit-image's axis)."""
    sino = np.asarray(sinogram, dtype=np.float64)
    d = sino.shape[1] // 2 - float(center)
    if abs(d) < 1e-9:
        return sino.copy()
    return ndimage.shift(sino, (0.0, d), order=1, mode="constant", cval=0.0)


def reconstruct(sinogram: np.ndarray, theta_deg: np.ndarray, center: float | None = None, algorithm: str = "fbp",
                filter_name: str = "ramp", iterations: int = 10, nonneg: bool = True) -> np.ndarray:
    """Reconstruct one slice.

    Parameters
    ----------
    sinogram : ndarray, shape (n_angles, n_det)
        Projections (NaN and negative values are set to 0 first).
    theta_deg : ndarray, shape (n_angles,)
        Rotation angles (degrees).
    center : float, optional
        Centre of rotation in pixels (default: the middle, ``(n_det - 1) / 2``; see :func:`find_center`).
    algorithm : {"fbp", "sirt", "gridrec"}
        Filtered back-projection, SART iterations, or tomopy's gridrec (only when tomopy is installed).
    filter_name : str
        FBP filter (``"ramp"``, ``"shepp-logan"``, ``"cosine"``, ``"hamming"``, ``"hann"``).
    iterations : int
        SART iterations (``"sirt"``).
    nonneg : bool
        Clip negative reconstructed values to 0.

    Returns
    -------
    ndarray, shape (n_det, n_det)
        The slice; pixels outside the reconstruction circle are 0.
    """
    from skimage.transform import iradon, iradon_sart

    sino, theta = _check(sinogram, theta_deg)
    sino = clean(sino)
    n = sino.shape[1]
    center = (n - 1) / 2.0 if center is None else float(center)
    if algorithm not in ALGORITHMS:
        raise InputError(f"algorithm must be one of {ALGORITHMS}, got {algorithm!r}")
    if algorithm == "gridrec":
        try:
            import tomopy  # type: ignore[import-not-found]
        except ImportError:
            raise InputError("algorithm 'gridrec' needs tomopy, which is not installed; use 'fbp' or 'sirt'") from None
        rec = tomopy.recon(sino[:, None, :], np.radians(theta), center=center, algorithm="gridrec",
                           sinogram_order=False)[0]
    else:
        radon_image = shift_to_middle(sino, center).T  # scikit-image: (n_det, n_angles)
        if algorithm == "fbp":
            rec = iradon(radon_image, theta=theta, output_size=n, filter_name=filter_name, circle=True)
        else:
            rec = None
            for _ in range(max(1, int(iterations))):
                rec = iradon_sart(radon_image, theta=theta, image=rec, clip=(0.0, np.inf) if nonneg else None)
    rec = np.nan_to_num(np.asarray(rec, dtype=np.float64))
    return np.clip(rec, 0.0, None) if nonneg else rec


def transmission_sinogram(I1: np.ndarray, I0: np.ndarray, flat: float | None = None) -> np.ndarray:
    """``-ln(T / T_flat)`` of the transmission ``T = I1 / I0``, the line integral of the attenuation.

    ``T_flat`` (the transmission without sample) defaults to the 99th percentile of ``T``; values
    above it give 0, non-positive values the largest finite attenuation.
    """
    i1 = np.asarray(I1, dtype=np.float64)
    i0 = np.asarray(I0, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        t = np.where(i0 > 0, i1 / i0, np.nan)
    finite = t[np.isfinite(t) & (t > 0)]
    if finite.size == 0:
        raise InputError("no positive I1/I0 value: cannot compute a transmission sinogram")
    flat = float(np.percentile(finite, 99)) if flat is None else float(flat)
    with np.errstate(divide="ignore", invalid="ignore"):
        att = -np.log(np.clip(t / flat, 1e-12, 1.0))
    att[~np.isfinite(att)] = 0.0
    return att


__all__ = ["ALGORITHMS", "clean", "find_center", "shift_to_middle", "reconstruct", "transmission_sinogram"]
