"""Out-of-core fits: block-wise results, bulk result files, resumable interrupted runs, lazy raw writing."""
from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import store
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.steps.fit import fit
from xrfproc.steps.normalise import normalise
from xrfproc.store import blocks

from _shared import sigkill_after_partials  # noqa: E402
from test_fit_pymca import CHECK, make_map, snip_cfg, steel  # noqa: E402

ROWS, COLS = 12, 20
BLOCK = COLS  # one row per block: 12 blocks


def _mode() -> str:
    """The engine when it can be imported (fast per block once warm), else PyMca's fast fit."""
    try:
        from xrfproc.core import fit_engine, fit_model  # noqa: F401
        return "engine" if hasattr(fit_engine, "fit_block") else "fast"
    except ImportError:
        return "fast"


def _maps(h5: Path) -> dict[str, np.ndarray]:
    with h5py.File(h5, "r") as f:
        return {k: f[f"fit/channel00/{k}"][()] for k in ("ims", "stddev", "chi2", "sum/int")}


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("scale")
    cfg = snip_cfg(tmp)
    h5 = make_map(tmp / "ref.h5", rows=ROWS, cols=COLS, seed=7)
    s = fit(h5, cfg, mode=_mode(), block_spectra=BLOCK)
    return tmp, cfg, h5, _maps(h5), s


def test_blockwise_equals_one_block_and_partials_are_removed(ref):
    tmp, cfg, h5, maps, s = ref
    assert s["blocks"] == 12 and s["blocks_resumed"] == 0
    assert blocks.list_partials(h5) == []
    # the results do not depend on the blocks
    one = make_map(tmp / "one.h5", rows=ROWS, cols=COLS, seed=7)
    s1 = fit(one, cfg, mode=_mode())
    assert s1["blocks"] == 1
    for k, v in _maps(one).items():
        np.testing.assert_allclose(v, maps[k], rtol=1e-10, atol=1e-9, err_msg=k)
    # summary statistics computed block by block = the same statistics over the whole map
    ims = maps["ims"]
    for i, name in enumerate(s["channels"]["channel00"]["names"]):
        st = s["channels"]["channel00"]["lines"][name]
        assert st["min"] == pytest.approx(ims[i].min(), rel=1e-9) and st["max"] == pytest.approx(ims[i].max(), rel=1e-9)
        assert st["median"] == pytest.approx(np.median(ims[i]), rel=1e-9)
    # the maps are chunked by rows of the block size
    with h5py.File(h5, "r") as f:
        assert f["fit/channel00/ims"].chunks == (1, 1, COLS)
        assert f["fit/channel00/ims"].compression == "gzip"


def test_threads_scheduler_gives_the_same_result(ref):
    tmp, cfg, h5, maps, s = ref
    other = make_map(tmp / "thr.h5", rows=ROWS, cols=COLS, seed=7)
    s2 = fit(other, cfg, mode=_mode(), block_spectra=BLOCK, scheduler="threads", n_workers=2)
    assert s2["ran_on"] == {"scheduler": "threads", "workers": 2}
    got = _maps(other)
    for k in maps:
        np.testing.assert_array_equal(got[k], maps[k], err_msg=k)


def test_large_results_go_to_a_linked_bulk_file(ref):
    tmp, cfg, h5, maps, s = ref
    big = make_map(tmp / "big.h5", rows=ROWS, cols=COLS, seed=7)
    fit(big, cfg, mode=_mode(), block_spectra=BLOCK, inline_limit=0)
    with h5py.File(big, "r") as f:
        link = f["fit/channel00"].get("ims", getlink=True)
        assert isinstance(link, h5py.ExternalLink) and link.filename.startswith("big.h5.d/fit-")
        assert f["fit/channel00/ims"].chunks == (1, 1, COLS)
    first_bulk = big.parent / link.filename
    assert first_bulk.is_file()
    got = _maps(big)
    for k in maps:
        np.testing.assert_array_equal(got[k], maps[k], err_msg=k)
    res = subprocess.run(CHECK + [str(big)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    # later steps read through the link; their transaction keeps the linked results
    normalise(big, I0norm=1.0)
    with h5py.File(big, "r") as f:
        assert f["norm/channel00/ims"].shape == maps["ims"].shape
        np.testing.assert_allclose(f["fit/channel00/ims"][()], maps["ims"])
    # a refit replaces the results: the old bulk file is collected
    fit(big, cfg, mode=_mode(), block_spectra=BLOCK, inline_limit=0)
    assert not first_bulk.exists()


def _run_killed(h5: Path, cfg: Path, min_blocks: int, timeout: float = 60.0) -> None:
    """Fit in a child process (slowed down per block) and SIGKILL it after ``min_blocks`` blocks."""
    code = ("import sys; from xrfproc.steps.fit import fit; "
            f"fit(sys.argv[1], sys.argv[2], mode={_mode()!r}, block_spectra={BLOCK}, block_delay=0.2)")
    sigkill_after_partials([sys.executable, "-c", code, str(h5), str(cfg)], h5, min_blocks, timeout=timeout, poll=0.05)


def test_killed_fit_leaves_the_old_result_and_resumes_to_the_same_result(ref):
    tmp, cfg, h5, maps, s = ref
    work = make_map(tmp / "kill.h5", rows=ROWS, cols=COLS, seed=7)
    fit(work, cfg, mode="fast", chi2=False, block_spectra=8 * BLOCK)  # an older result, to be kept intact
    before = _digest(work)
    _run_killed(work, cfg, min_blocks=3)
    assert _digest(work) == before  # the old fit/ is untouched
    with h5py.File(work, "r") as f:
        assert f["fit/channel00"].attrs["mode"] == "fast"
    parts = blocks.list_partials(work)
    assert len(parts) == 1
    n_saved = len(list(parts[0].glob("*.npz")))
    assert 3 <= n_saved < 12
    calls = []
    s2 = fit(work, cfg, mode=_mode(), block_spectra=BLOCK, resume=True,
             progress=lambda d, t, m="": calls.append(d))
    assert s2["blocks_resumed"] >= n_saved and s2["blocks"] == 12
    assert calls[0] == s2["blocks_resumed"] * COLS  # progress starts where the killed run stopped
    got = _maps(work)
    for k in maps:
        # the killed run's blocks came from another process, whose BLAS may sum in another order
        # under load: equal to the last bits of float64, not necessarily bit for bit
        np.testing.assert_allclose(got[k], maps[k], rtol=1e-12, atol=1e-9, err_msg=k)
    assert blocks.list_partials(work) == []


class Interrupt(Exception):
    pass


def _interrupted(work: Path, cfg: Path, after: int, **kw) -> None:
    """A fit interrupted (Ctrl-C-like) in this process after ``after`` blocks."""
    def stop(done, total, message=""):
        if done >= after * COLS:
            raise Interrupt
    with pytest.raises(Interrupt):
        fit(work, cfg, mode=_mode(), block_spectra=BLOCK, progress=stop, **kw)


def test_without_resume_saved_blocks_are_not_reused(ref):
    tmp, cfg, h5, maps, s = ref
    work = make_map(tmp / "fresh.h5", rows=ROWS, cols=COLS, seed=7)
    _interrupted(work, cfg, after=4)
    assert len(list(blocks.list_partials(work)[0].glob("*.npz"))) == 4
    s2 = fit(work, cfg, mode=_mode(), block_spectra=BLOCK)
    assert s2["blocks_resumed"] == 0 and blocks.list_partials(work) == []
    np.testing.assert_array_equal(_maps(work)["ims"], maps["ims"])
    # the same computation resumed in this process: the 4 blocks are reused, the same maps
    _interrupted(work, cfg, after=4)
    s3 = fit(work, cfg, mode=_mode(), block_spectra=BLOCK, resume=True)
    assert s3["blocks_resumed"] == 4
    np.testing.assert_array_equal(_maps(work)["ims"], maps["ims"])


def test_keys_change_with_the_inputs(tmp_path):
    a = make_map(tmp_path / "a.h5", rows=2, cols=3, seed=1)
    ida = blocks.raw_identity(a, "raw/channel00/spectra")
    b = make_map(tmp_path / "a.h5", rows=2, cols=3, seed=1)  # the same data converted again
    idb = blocks.raw_identity(b, "raw/channel00/spectra")
    assert ida["shape"] == [2, 3, 2048] and ida["sumspec"] == idb["sumspec"]
    assert ida["link"] != idb["link"]  # a new bulk file: never mistaken for the old one
    assert blocks.result_key({"x": 1, "y": [1, 2]}) == blocks.result_key({"y": [1, 2], "x": 1})
    assert blocks.result_key({"x": 1}) != blocks.result_key({"x": 2})


def test_line_stats_sample_for_large_maps(monkeypatch):
    monkeypatch.setattr(blocks, "SAMPLE_VALUES", 1000)
    rng = np.random.default_rng(0)
    values = rng.normal(100.0, 10.0, size=(2, 10000))
    values[1, 5] = np.nan
    st = blocks.LineStats(["a", "b"], 10000)
    for s in range(0, 10000, 700):
        st.add(s, values[:, s:s + 700], values[0, s:s + 700])
    lines = st.lines()
    assert lines["a"]["min"] == values[0].min() and lines["a"]["max"] == values[0].max()
    assert lines["b"]["max"] == np.nanmax(values[1])
    # a regular sample of every 10th pixel
    assert lines["a"]["median"] == np.median(values[0, ::10])
    assert abs(lines["a"]["median"] - np.median(values[0])) < 1.5
    assert st.chi2_median() == np.median(values[0, ::10])


class LazySpectra:
    """Spectra simulated on demand, one block of rows per slice (never the whole map)."""

    def __init__(self, rows: int, cols: int, seed: int = 0):
        self.shape = (rows, cols, 2048)
        self.dtype = np.dtype(np.int32)
        self.seed = seed
        self.largest = 0
        self.base = 0.01 * steel()

    def __getitem__(self, sl: slice) -> np.ndarray:
        start, stop, _ = sl.indices(self.shape[0])
        self.largest = max(self.largest, stop - start)
        out = np.empty((stop - start,) + self.shape[1:], self.dtype)
        for r in range(start, stop):
            out[r - start] = np.random.default_rng([self.seed, r]).poisson(self.base, size=self.shape[1:])
        return out


def test_write_raw_streams_a_lazy_array(tmp_path, monkeypatch):
    from xrfproc.store import raw as raw_mod

    monkeypatch.setattr(raw_mod, "CHUNK_VALUES", 2048 * 8)  # blocks of 16 * 8 spectra = 6 rows of 20
    lazy = LazySpectra(30, 20)
    grid = (30, 20)
    rm = RawMap(channels={"channel00": RawChannel(lazy, np.ones(grid), np.ones(grid))}, I0=np.ones(grid),
                acquisition_time=np.ones(grid), mot1=np.zeros(grid), mot2=np.zeros(grid))
    path = store.write_raw(tmp_path / "lazy.h5", rm)
    assert lazy.largest == 6  # written block by block
    with h5py.File(path, "r") as f:
        ds = f["raw/channel00/spectra"]
        assert ds.shape == (30, 20, 2048) and ds.chunks[-1] == 2048
        np.testing.assert_array_equal(ds[7], lazy[7:8][0])
        np.testing.assert_array_equal(f["raw/channel00/sumspec"][()],
                                      sum(lazy[r:r + 1].reshape(-1, 2048).sum(axis=0) for r in range(30)))
