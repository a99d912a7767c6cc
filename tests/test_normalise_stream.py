"""Out-of-core, resumable normalisation: one line image at a time, equal to the all-lines computation.

The reference is the straightforward computation the step did before it streamed: every line of a
channel read at once, normalised, and regridded with ``scipy.interpolate.griddata`` on all lines
together (:func:`reference_regrid`, the former ``xrfproc.core.regrid.regrid`` body).
"""
from __future__ import annotations

import hashlib
import json
import sys
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest
from scipy.interpolate import griddata

from xrfproc import cli, store
from xrfproc.core import normalise as cn
from xrfproc.core import regrid as cr
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.steps.normalise import normalise
from xrfproc.store import blocks, h5store

from _shared import sigkill_after_partials


# --------------------------------------------------------------------------- the reference
def reference_regrid(values, mot1, mot2, slow, fast, method):
    """All lines at once through griddata (one triangulation per call): what the step did before."""
    nlines = values.shape[0]
    pts_vals = np.asarray(values, dtype=np.float64).reshape(nlines, -1).T
    y = np.asarray(mot1, dtype=np.float64).reshape(-1)
    x = np.asarray(mot2, dtype=np.float64).reshape(-1)
    keep = np.isfinite(y) & np.isfinite(x) & np.all(np.isfinite(pts_vals), axis=1)
    dy = (abs(slow[1] - slow[0]) if len(slow) > 1 else 1.0) or 1.0
    dx = (abs(fast[1] - fast[0]) if len(fast) > 1 else 1.0) or 1.0
    gy, gx = np.meshgrid(slow / dy, fast / dx, indexing="ij")
    coords = np.column_stack([y[keep] / dy, x[keep] / dx])
    res = griddata(coords, pts_vals[keep], (gy, gx), method=method)
    if method != "nearest":
        holes = ~np.all(np.isfinite(res), axis=-1)
        if holes.any():
            res[holes] = griddata(coords, pts_vals[keep], (gy[holes], gx[holes]), method="nearest")
    return np.moveaxis(res, -1, 0)


def reference_normalise(path, I0norm=None, snake=False, sort=False, tmnorm=False, halfpixshift=True,
                        method="linear", timetriggered=None):
    """norm/ images of every channel computed in memory, all lines at once."""
    with h5py.File(path, "r") as f:
        I0 = f["raw/I0"][()]
        t = f["raw/acquisition_time"][()]
        mot1, mot2 = f["mot1"][()], f["mot2"][()]
        cmd = f["cmd"][()].decode() if "cmd" in f else ""
        data = {c: (f[f"fit/{c}/ims"][()], f[f"fit/{c}/stddev"][()] if "stddev" in f[f"fit/{c}"] else None)
                for c in store.channels(f, "fit")}
    factors = cn.norm_factors(I0, I0norm, t, tmnorm)
    scan = cr.grid_from_command(cmd) if cmd else None
    tt = cr.is_time_triggered(I0.shape, scan) if timetriggered is None else timetriggered
    out = {}
    for c, (ims, std) in data.items():
        v, e = cn.normalise_images(ims, factors, std)
        if snake or tt:
            target = scan.shape if tt else I0.shape
            m2 = mot2
            if snake and halfpixshift:
                m2 = cr.half_pixel_shift(mot2, np.nanmedian(np.abs(np.diff(mot2, axis=1))))
            slow, fast = cr.regular_axes(mot1, m2, target)
            v = reference_regrid(v, mot1, m2, slow, fast, method)
            e = reference_regrid(e, mot1, m2, slow, fast, method)
        elif sort:
            r, k = cr.sort_order(mot1, mot2)
            v, e = v[:, r, k], e[:, r, k]
        out[c] = (v, e)
    return out


# --------------------------------------------------------------------------- test maps
def write_map(path: Path, rows: int = 9, cols: int = 11, nlines: int = 5, kind: str = "raster", seed: int = 0,
              chunked: bool = True, scale: float = 1.0) -> Path:
    """A layout file with raw/ (I0 with a masked point, motor positions, command) and fit/ (two
    channels; channel01 without stddev; one NaN in one line of channel00), written as the fit step does."""
    rng = np.random.default_rng(seed)
    npts = cols
    if kind == "timetriggered":
        npts = 3 * cols + 1
        mot2 = np.array([np.linspace(-0.4, cols - 0.6, npts) + rng.normal(0, 0.02, npts) for _ in range(rows)])
        mot2[1::2] = mot2[1::2, ::-1]
        mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], npts, axis=1) + rng.normal(0, 0.01, (rows, npts))
    else:
        mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], cols, axis=1) + rng.normal(0, 0.005, (rows, cols))
        mot2 = np.tile(np.arange(cols, dtype=float), (rows, 1)) + rng.normal(0, 0.005, (rows, cols))
        if kind == "snake":
            mot2[1::2] = mot2[1::2, ::-1] + 0.5
            mot2[0::2] -= 0.5
        if kind == "shuffled":
            mot2 = mot2[:, rng.permutation(cols)]
            mot1 = mot1[rng.permutation(rows)]
    grid = (rows, npts)
    I0 = rng.uniform(0.9e5, 1.1e5, grid)
    I0[0, 1] = 0.0
    raw = RawMap({"channel00": RawChannel(np.zeros(grid + (16,), np.uint32), np.ones(grid), np.ones(grid))},
                 I0=I0, acquisition_time=rng.uniform(0.09, 0.11, grid), mot1=mot1, mot2=mot2,
                 cmd=f"dmesh hrz 0 {cols - 1} {cols - 1} hry 0 {rows - 1} {rows - 1} 0.1")
    path = store.write_raw(path, raw)
    write_fit(path, rng, nlines, grid, chunked, scale)
    return path


def write_fit(path: Path, rng, nlines: int, grid, chunked: bool = True, scale: float = 1.0) -> None:
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        for c in ("channel00", "channel01"):
            g = tx.group(f"fit/{c}")
            ims = rng.gamma(2.0, 300.0, (nlines,) + grid) * scale
            if c == "channel00":
                ims[2, 3, 4] = np.nan
            names = [f"L{i} K" for i in range(nlines)]
            if chunked:
                maps = blocks.create_maps(g, nlines, grid, 2)
                maps["ims"][...] = ims
                if c == "channel00":
                    maps["stddev"][...] = np.sqrt(ims) * 1.1
                else:
                    del g["stddev"]
            else:
                store.write_array(g, "ims", ims)
                if c == "channel00":
                    store.write_array(g, "stddev", np.sqrt(ims) * 1.1)
            store.write_array(g, "names", names)
            store.write_array(g, "cfg", "x.cfg")
            store.write_array(g, "sum/int", np.nansum(ims.reshape(nlines, -1), axis=1))
            store.write_array(g, "sum/bkg", np.full(nlines, 10.0))
        tx.file["fit"].attrs["deadtime_corrected"] = 1


def norm_maps(path: Path) -> dict[str, np.ndarray]:
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            if isinstance(obj, h5py.Dataset):
                out[name] = obj[()]
        f["norm"].visititems(visit)
    return out


def assert_same_norm(a: Path, b: Path) -> None:
    ma, mb = norm_maps(a), norm_maps(b)
    assert ma.keys() == mb.keys()
    for k in ma:
        np.testing.assert_array_equal(ma[k], mb[k], err_msg=k)


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# --------------------------------------------------------------------------- equal to the reference
CASES = {
    "plain": ("raster", {}),
    "tmnorm": ("raster", {"tmnorm": True, "I0norm": 1e6}),
    "sort": ("shuffled", {"sort": True}),
    "snake-linear": ("snake", {"snake": True}),
    "snake-nearest": ("snake", {"snake": True, "method": "nearest"}),
    "snake-cubic": ("snake", {"snake": True, "method": "cubic"}),
    "snake-noshift": ("snake", {"snake": True, "halfpixshift": False}),
    "timetriggered": ("timetriggered", {}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_streamed_equals_all_lines_in_memory(tmp_path, case):
    kind, opts = CASES[case]
    path = write_map(tmp_path / "m.h5", kind=kind, seed=len(case))
    ref = reference_normalise(path, **opts)
    s = normalise(path, **opts)
    assert s["images"] == 10 and s["images_resumed"] == 0
    assert s["time_triggered"] == (kind == "timetriggered")
    with h5py.File(path, "r") as f:
        for c, (v, e) in ref.items():
            got_v, got_e = f[f"norm/{c}/ims"], f[f"norm/{c}/stddev"]
            assert got_v.dtype == np.float32 and got_v.shape == v.shape and got_v.chunks[0] == 1
            assert got_v.compression == "gzip"
            np.testing.assert_allclose(got_v[()], v.astype(np.float32), rtol=1e-6, atol=0, equal_nan=True)
            np.testing.assert_allclose(got_e[()], e.astype(np.float32), rtol=1e-6, atol=0, equal_nan=True)
            assert np.array_equal(np.isnan(got_v[()]), np.isnan(v))
            for i, name in enumerate(s["channels"][c]["names"]):
                lo, med, hi = s["channels"][c]["stats"][name]
                assert lo == pytest.approx(np.nanmin(v[i]), rel=1e-12)
                assert med == pytest.approx(np.nanmedian(v[i]), rel=1e-12)
                assert hi == pytest.approx(np.nanmax(v[i]), rel=1e-12)
    assert blocks.list_partials(path) == []


def test_regridder_equals_griddata_on_every_line(tmp_path):
    """The regridding geometry computed once equals griddata per call, to float rounding."""
    rng = np.random.default_rng(3)
    rows, cols = 25, 30
    mot1 = np.repeat(np.arange(rows, dtype=float)[:, None], cols, axis=1) + rng.normal(0, 0.02, (rows, cols))
    mot2 = np.tile(np.arange(cols, dtype=float), (rows, 1)) + rng.normal(0, 0.02, (rows, cols))
    mot2[1::2] = mot2[1::2, ::-1]
    mot2 = cr.half_pixel_shift(mot2, 1.0)
    slow, fast = cr.regular_axes(mot1, mot2, (rows, cols))
    vals = rng.normal(100, 20, (6, rows, cols))
    vals[:, 5:8, 10:14] = np.nan  # a masked hole: triangles span it
    for method in ("nearest", "linear", "cubic"):
        ref = reference_regrid(vals, mot1, mot2, slow, fast, method)
        np.testing.assert_allclose(cr.regrid(vals, mot1, mot2, slow, fast, method), ref, rtol=1e-12, atol=1e-9)
    # positions exactly on the grid (commanded positions): no triangulation needed, the same values
    exact1 = np.repeat(np.arange(rows, dtype=float)[:, None], cols, axis=1)
    exact2 = np.tile(np.arange(cols, dtype=float) * 0.3, (rows, 1))
    exact2[1::2] = exact2[1::2, ::-1] + 0.15
    exact2[0::2] -= 0.15
    exact2 = cr.half_pixel_shift(exact2, 0.3)
    slow, fast = cr.regular_axes(exact1, exact2, (rows, cols))
    full = rng.normal(100, 20, (3, rows, cols))
    for method in ("linear", "cubic"):
        rg = cr.Regridder(exact1, exact2, slow, fast, method)
        assert rg.method == "nearest"  # the fast path was taken
        ref = reference_regrid(full, exact1, exact2, slow, fast, method)
        np.testing.assert_allclose(cr.regrid(full, exact1, exact2, slow, fast, method), ref, rtol=1e-12)
    # the walk finds scipy's simplices (a point on a shared edge may get the other one: same value)
    from scipy.spatial import Delaunay, cKDTree
    pts = rng.uniform(0, 10, (400, 2))
    tri = Delaunay(pts)
    targets = rng.uniform(-1, 11, (3000, 2))
    tree = cKDTree(pts)
    got = cr.find_simplices(tri, targets, tree.query(targets)[1], tree)
    np.testing.assert_array_equal(got, tri.find_simplex(targets))
    np.testing.assert_allclose(cr.barycentric_transforms(tri), tri.transform, rtol=1e-9, atol=1e-12)


# --------------------------------------------------------------------------- interrupted runs
class Interrupt(Exception):
    pass


def _interrupt_after(path: Path, n: int, **opts) -> None:
    def stop(done, total, message=""):
        if done >= n:
            raise Interrupt
    with pytest.raises(Interrupt):
        normalise(path, progress=stop, **opts)


def test_progress_is_reported_per_image(tmp_path):
    path = write_map(tmp_path / "m.h5", nlines=4)
    calls = []
    normalise(path, progress=lambda d, t, m="": calls.append((d, t, m)))
    assert [c[0] for c in calls] == list(range(1, 9)) and {c[1] for c in calls} == {8}
    assert calls[0][2] == "channel00: L0 K" and calls[-1][2] == "channel01: L3 K"


def test_interrupted_run_keeps_the_old_norm_and_resumes_to_the_same_result(tmp_path):
    ref = write_map(tmp_path / "ref.h5", kind="snake")
    normalise(ref, snake=True)
    work = write_map(tmp_path / "work.h5", kind="snake")
    normalise(work, I0norm=5.0)  # an older norm/, to be kept intact
    before = digest(work)
    _interrupt_after(work, 3, snake=True)
    assert digest(work) == before
    assert len(list(blocks.list_partials(work)[0].glob("*.npz"))) == 3
    calls = []
    s = normalise(work, snake=True, resume=True, progress=lambda d, t, m="": calls.append(d))
    assert s["images_resumed"] == 3 and calls[0] == 3 and calls[-1] == 10
    assert_same_norm(work, ref)
    assert blocks.list_partials(work) == []
    # without resume the saved images are discarded and everything is normalised again
    _interrupt_after(work, 4, snake=True)
    s = normalise(work, snake=True)
    assert s["images_resumed"] == 0 and blocks.list_partials(work) == []
    assert_same_norm(work, ref)


def test_saved_images_are_not_reused_after_the_fit_or_the_options_change(tmp_path):
    path = write_map(tmp_path / "m.h5", kind="snake")
    _interrupt_after(path, 5, snake=True)
    # other options: another computation, the saved images are not seen
    s = normalise(path, snake=True, method="nearest", resume=True)
    assert s["images_resumed"] == 0
    _interrupt_after(path, 5, snake=True)
    # the fit is redone (same shapes, chunks and names, other values): the saved images are stale
    write_fit(path, np.random.default_rng(99), 5, (9, 11), scale=2.0)
    s = normalise(path, snake=True, resume=True)
    assert s["images_resumed"] == 0
    fresh = write_map(tmp_path / "fresh.h5", kind="snake")
    write_fit(fresh, np.random.default_rng(99), 5, (9, 11), scale=2.0)
    normalise(fresh, snake=True)
    assert_same_norm(path, fresh)
    # a damaged saved image is normalised again
    _interrupt_after(path, 2, snake=True)
    # (the folder of the first interrupted run, stale, is still there: pick the one just written)
    folder = max(blocks.list_partials(path), key=lambda p: (p / "meta.json").stat().st_mtime_ns)
    assert len(list(folder.glob("*.npz"))) == 2
    first = sorted(folder.glob("*.npz"))[0]
    first.write_bytes(first.read_bytes()[:100])
    s = normalise(path, snake=True, resume=True)
    assert s["images_resumed"] == 1
    assert_same_norm(path, fresh)


CHILD = """
import sys, time
from xrfproc.store import blocks
save = blocks.PartialResults.save
def slow(self, *args, **kwargs):
    save(self, *args, **kwargs)
    time.sleep(0.15)
blocks.PartialResults.save = slow
from xrfproc.steps.normalise import normalise
normalise(sys.argv[1], snake=True)
"""


def test_sigkilled_run_resumes_to_the_same_result(tmp_path):
    ref = write_map(tmp_path / "ref.h5", kind="snake", nlines=6)
    normalise(ref, snake=True)
    work = write_map(tmp_path / "work.h5", kind="snake", nlines=6)
    normalise(work)  # an older norm/ (not regridded)
    before = digest(work)
    n_kill = int(np.random.default_rng().integers(1, 11))  # a random point among the 12 images
    sigkill_after_partials([sys.executable, "-c", CHILD, str(work)], work, n_kill)
    assert digest(work) == before  # the old norm/ is intact
    saved = len(list(blocks.list_partials(work)[0].glob("*.npz")))
    assert n_kill <= saved < 12
    s = normalise(work, snake=True, resume=True)
    assert s["images_resumed"] == saved
    assert_same_norm(work, ref)
    assert blocks.list_partials(work) == []


def test_cli_and_recipe_runner_pass_resume(tmp_path, capsys):
    path = write_map(tmp_path / "m.h5")
    _interrupt_after(path, 3, I0norm=1e5)
    assert cli.main(["normalise", str(path), "--I0norm", "1e5", "--method", "linear", "--resume", "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out)["images_resumed"] == 3
    from xrfproc.dsl.signatures import step_specs
    assert step_specs()["normalise"].accepts_resume


# --------------------------------------------------------------------------- memory and layout
def test_peak_memory_is_bounded_by_a_few_images(tmp_path, monkeypatch):
    nlines, rows, cols = 80, 40, 50
    path = write_map(tmp_path / "big.h5", rows=rows, cols=cols, nlines=nlines, kind="snake")
    monkeypatch.setattr(h5store, "IN_MEMORY_MAX_BYTES", 0)  # rebuild the file on disk, as for big files
    all_lines = 2 * nlines * rows * cols * 8  # ims + stddev of one channel as float64
    normalise(path, inline_limit=0)  # imports and caches outside the measurement
    # plain: a few images; snake: the triangulation of the positions (some 600 bytes a point) on top
    for opts, bound in (({}, all_lines / 5), ({"snake": True}, all_lines / 1.6)):
        tracemalloc.start()
        try:
            normalise(path, inline_limit=0, **opts)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < bound, (opts, peak, all_lines)
    with h5py.File(path, "r") as f:  # the maps went to a linked bulk file
        link = f["norm/channel00"].get("ims", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename.startswith("big.h5.d/norm-")
        assert f["norm/channel00/ims"].shape == (nlines, rows, cols)
    ref = reference_normalise(path, snake=True)
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["norm/channel01/ims"][()], ref["channel01"][0].astype(np.float32), rtol=1e-6)


def test_unchunked_fit_results_of_other_programs(tmp_path):
    path = write_map(tmp_path / "m.h5", kind="snake", chunked=False)
    ref = reference_normalise(path, snake=True)
    normalise(path, snake=True)
    with h5py.File(path, "r") as f:
        np.testing.assert_allclose(f["norm/channel00/ims"][()], ref["channel00"][0].astype(np.float32), rtol=1e-6)
