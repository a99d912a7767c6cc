"""Tomographic reconstruction: a Shepp-Logan phantom from scikit-image's radon, centre of rotation, the step."""
from __future__ import annotations

import subprocess
import sys

import h5py
import numpy as np
import pytest
from scipy import ndimage
from skimage.data import shepp_logan_phantom
from skimage.transform import radon, resize

from xrfproc import store
from xrfproc.core import tomo
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import InputError
from xrfproc.steps.tomo import tomo as tomo_step
from _shared import CHECK_LAYOUT

CHECK = str(CHECK_LAYOUT)
N = 64


@pytest.fixture(scope="module")
def phantom():
    return np.pad(resize(shepp_logan_phantom(), (48, 48), anti_aliasing=True), 8)


def sinogram(ph, theta, shift=0.0):
    """(angles, translation) projections, the rotation axis ``shift`` pixels right of column N // 2."""
    sino = radon(ph, theta, circle=True).T
    return ndimage.shift(sino, (0, shift), order=3) if shift else sino


def corr(a, b):
    return np.corrcoef(a.ravel(), b.ravel())[0, 1]


@pytest.mark.parametrize("shift", [0.0, 4.3, -6.0])
def test_centre_of_rotation_found_within_one_pixel(phantom, shift):
    theta = np.linspace(0, 180, 90, endpoint=False)
    centre = tomo.find_center(sinogram(phantom, theta, shift), theta)
    assert abs(centre - (N // 2 + shift)) < 1.0


def test_centre_on_360_degree_scan(phantom):
    theta = np.linspace(0, 360, 100, endpoint=False)
    assert abs(tomo.find_center(sinogram(phantom, theta, 2.0), theta) - (N // 2 + 2.0)) < 1.0


@pytest.mark.parametrize("algorithm, minimum", [("fbp", 0.9), ("sirt", 0.95)])
def test_reconstruction_matches_phantom(phantom, algorithm, minimum):
    theta = np.linspace(0, 180, 90, endpoint=False)
    sino = sinogram(phantom, theta, -5.0)
    rec = tomo.reconstruct(sino, theta, tomo.find_center(sino, theta), algorithm=algorithm)
    assert rec.shape == (N, N)
    assert corr(rec, phantom) > minimum
    # with a centre 5 pixels off, the reconstruction is clearly worse
    assert corr(tomo.reconstruct(sino, theta, N // 2, algorithm=algorithm), phantom) < corr(rec, phantom) - 0.1


def test_gridrec_without_tomopy_is_an_input_error(phantom):
    try:
        import tomopy  # noqa: F401
        pytest.skip("tomopy installed")
    except ImportError:
        pass
    with pytest.raises(InputError, match="tomopy"):
        tomo.reconstruct(np.ones((10, 8)), np.linspace(0, 180, 10), algorithm="gridrec")


def test_transmission_sinogram():
    i0 = np.full((3, 4), 1000.0)
    i1 = i0 * np.exp(-np.array([[0.0, 0.5, 1.0, 0.0]] * 3)) * 0.8  # flat transmission 0.8
    att = tomo.transmission_sinogram(i1, i0)
    np.testing.assert_allclose(att, [[0.0, 0.5, 1.0, 0.0]] * 3, atol=1e-9)


@pytest.fixture()
def tomofile(tmp_path, phantom):
    """An XRF-CT scan: rows = translation (mot1), columns = rotation (mot2, the fast motor), two lines + I1."""
    theta = np.linspace(0, 180, 60, endpoint=False)
    shift = 3.0
    fe = sinogram(phantom, theta, shift)             # (angles, translation)
    zn = sinogram((phantom > 0.5).astype(float), theta, shift)
    ims = np.clip(np.stack([fe, zn]).transpose(0, 2, 1), 0, None) * 100  # (lines, translation, rotation)
    grid = ims.shape[1:]
    mot1, mot2 = np.meshgrid(np.arange(grid[0]) * 2.0, theta, indexing="ij")
    spectra = np.ones(grid + (8,), dtype=np.int32)
    I0 = np.full(grid, 1e4)
    I1 = I0 * 0.9 * np.exp(-fe.T / fe.max())
    raw = RawMap({"channel00": RawChannel(spectra, np.ones(grid), np.ones(grid))}, I0=I0,
                 acquisition_time=np.ones(grid), mot1=mot1, mot2=mot2, I1=I1)
    path = tmp_path / "ct.h5"
    store.write_raw(path, raw)
    with store.transaction(path, "normalise", replace=["norm"]) as tx:
        store.write_array(tx.group("norm"), "I0", 1e4)
        g = tx.file.create_group("norm/channel00")
        store.write_array(g, "ims", ims)
        store.write_array(g, "names", ["Fe K", "Zn K"])
        store.write_array(g, "stddev", np.sqrt(ims))
    return path, N // 2 + shift


def test_tomo_step(tomofile, phantom):
    path, true_centre = tomofile
    calls = []
    summary = tomo_step(path, "norm", rot_mot="mot2", progress=lambda d, t, m: calls.append((d, t, m)))
    assert abs(summary["rotation_center"] - true_centre) < 1.0
    assert [c[0] for c in calls] == [1, 2, 3] and all(c[1] == 3 for c in calls)
    with h5py.File(path) as f:
        rec = f["tomo/channel00/ims"][()]
        assert rec.shape == (2, N, N)
        assert store.decode_names(f["tomo/channel00/names"][()]) == ["Fe K", "Zn K"]
        assert float(f["tomo/channel00/rotation_center"][()]) == pytest.approx(summary["rotation_center"])
        assert corr(rec[0], phantom) > 0.9
        assert corr(rec[1], phantom > 0.5) > 0.9
        i1 = f["tomo/I1/ims"][()]
        assert store.decode_names(f["tomo/I1/names"][()]) == ["transmission"]
        assert corr(i1[0], phantom) > 0.9
    out = subprocess.run([sys.executable, CHECK, str(path)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_tomo_step_given_centre_and_lines(tomofile):
    path, true_centre = tomofile
    summary = tomo_step(path, "norm/channel00", rot_centre=true_centre, lines=["Zn"], transmission=False)
    assert summary["rotation_center"] == true_centre and summary["centre_from"] == "given"
    with h5py.File(path) as f:
        assert f["tomo/channel00/ims"].shape == (1, N, N)
        assert "tomo/I1" not in f


def test_tomo_step_needs_a_rotating_motor(tomofile):
    path, _ = tomofile
    with pytest.raises(InputError):
        tomo_step(path, "norm", rot_mot="mot3")
