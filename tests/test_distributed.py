"""The fit on a real Dask cluster: a scheduler and two workers started as separate processes on loopback.

Checks that the result equals the local run exactly, that progress arrives as blocks complete,
that provenance records where it ran, and that a worker killed mid-run is survived.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import scheduler as xsched
from xrfproc import store
from xrfproc.errors import InputError
from xrfproc.steps.fit import fit

distributed = pytest.importorskip("distributed")

from test_fit_pymca import make_map, snip_cfg  # noqa: E402

BIN = Path(sys.executable).parent
ROWS, COLS = 24, 40
BLOCK = 2 * COLS  # 12 blocks of 2 rows


def _mode() -> str:
    """The engine when it can be imported, else PyMca's fast fit."""
    try:
        from xrfproc.core import fit_engine, fit_model  # noqa: F401
        return "engine" if hasattr(fit_engine, "fit_block") else "fast"
    except ImportError:
        return "fast"


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


class Cluster:
    """``dask scheduler`` and ``dask worker`` processes on 127.0.0.1 (no nanny: a kill is a kill)."""

    def __init__(self, tmp: Path):
        self.tmp = tmp
        self.procs: list[subprocess.Popen] = []
        self.workers: list[subprocess.Popen] = []
        self.address = ""

    def _spawn(self, args: list[str], log: str) -> subprocess.Popen:
        # the same thread settings as the local run (BLAS and numba): bitwise equal results
        env = dict(os.environ, DASK_DISTRIBUTED__WORKER__DAEMON="False")
        fh = open(self.tmp / log, "wb")
        p = subprocess.Popen(args, stdout=fh, stderr=subprocess.STDOUT, env=env, cwd=self.tmp,
                             start_new_session=True)
        fh.close()
        self.procs.append(p)
        return p

    def start(self, nworkers: int = 2) -> None:
        sfile = self.tmp / "scheduler.json"
        self._spawn([str(BIN / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(sfile)], "scheduler.log")
        _wait_for(lambda: sfile.exists() and sfile.stat().st_size > 0, 60, "the scheduler file")
        time.sleep(0.2)
        self.address = json.loads(sfile.read_text())["address"]
        for i in range(nworkers):
            self.add_worker(i)

    def add_worker(self, i: int) -> subprocess.Popen:
        w = self._spawn([str(BIN / "dask"), "worker", self.address, "--no-nanny", "--nthreads", "1",
                         "--name", f"w{i}", "--local-directory", str(self.tmp / f"w{i}"), "--death-timeout", "60",
                         "--no-dashboard"], f"worker{i}.log")
        self.workers.append(w)
        return w

    def wait_workers(self, client, n: int) -> None:
        client.wait_for_workers(n, timeout=60)

    def stop(self) -> None:
        for p in reversed(self.procs):  # workers first, the scheduler last
            if p.poll() is None:
                p.terminate()
            try:
                p.wait(timeout=3)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(timeout=10)

    def logs(self) -> str:
        return "\n".join(f"--- {f.name}\n{f.read_text(errors='replace')[-2000:]}" for f in self.tmp.glob("*.log"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("cluster"))
    try:
        c.start(2)
        yield c
    finally:
        c.stop()


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A simulated 24 x 40 map fitted locally (the reference)."""
    tmp = tmp_path_factory.mktemp("dist")
    cfg = snip_cfg(tmp)
    h5 = make_map(tmp / "map.h5", rows=ROWS, cols=COLS, seed=11)
    mode = _mode()
    fit(h5, cfg, mode=mode, block_spectra=BLOCK, scheduler="sync")
    with h5py.File(h5, "r") as f:
        ref = {k: f[f"fit/channel00/{k}"][()] for k in ("ims", "stddev", "chi2", "sum/int")}
    return tmp, h5, cfg, mode, ref


def _read(h5: Path) -> dict[str, np.ndarray]:
    with h5py.File(h5, "r") as f:
        return {k: f[f"fit/channel00/{k}"][()] for k in ("ims", "stddev", "chi2", "sum/int")}


def test_cluster_fit_equals_local_run_exactly(cluster, local):
    tmp, h5, cfg, mode, ref = local
    client = distributed.Client(cluster.address, timeout=30, set_as_default=False)
    try:
        cluster.wait_workers(client, 2)
        client.run(lambda: __import__("xrfproc.steps.fit"))  # warm both workers up at once
        calls = []
        s = fit(h5, cfg, mode=mode, block_spectra=BLOCK, scheduler=cluster.address,
                progress=lambda d, t, m="": calls.append((d, t)))
        got = _read(h5)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        assert np.isfinite(got["ims"]).all() and got["ims"].max() > 100
        # progress as blocks completed: 12 block reports + the final one, increasing to the total
        done = [d for d, _ in calls]
        assert len(calls) >= 12 and done == sorted(done) and calls[-1] == (ROWS * COLS, ROWS * COLS)
        assert s["ran_on"] == {"scheduler": cluster.address, "workers": 2}
        with h5py.File(h5, "r") as f:
            g = f["fit/channel00"]
            assert g.attrs["scheduler"] == cluster.address and g.attrs["workers"] == 2
            prov = store.read_provenance(f["fit"])
            assert prov["parameters"]["ran_on"] == {"scheduler": cluster.address, "workers": 2}
        # both workers took part: every task ran on one of them (the scheduler records who)
        assert len(client.scheduler_info()["workers"]) == 2
        # the environment variable names the scheduler when the argument does not
        os.environ[xsched.ENV_VAR] = cluster.address
        try:
            assert xsched.resolve(None) == cluster.address and xsched.resolve("threads") == "threads"
        finally:
            del os.environ[xsched.ENV_VAR]
        assert xsched.resolve(None, default="processes") == "processes"
    finally:
        client.close()


def test_worker_killed_mid_run_is_survived(cluster, local):
    tmp, h5, cfg, mode, ref = local
    client = distributed.Client(cluster.address, timeout=30, set_as_default=False)
    try:
        cluster.wait_workers(client, 2)
        victim = cluster.workers[0]
        killed = []

        def progress(done, total, message=""):
            # kill one worker after the third block: the others are queued or running on both
            if not killed and done >= 3 * BLOCK and done < total:
                os.kill(victim.pid, signal.SIGKILL)
                killed.append(done)

        s = fit(h5, cfg, mode=mode, block_spectra=BLOCK, scheduler=client, progress=progress, block_delay=0.3)
        assert killed and killed[0] < ROWS * COLS, "the kill must happen mid-run"
        assert victim.wait(timeout=10) == -signal.SIGKILL
        got = _read(h5)
        for k in ref:
            np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
        assert s["blocks"] == 12 and s["ran_on"]["scheduler"] == cluster.address
        _wait_for(lambda: len(client.scheduler_info()["workers"]) == 1, 30, "the scheduler to drop the dead worker")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        client.close()


def test_unreachable_scheduler_is_a_clear_error(local):
    tmp, h5, cfg, mode, ref = local
    with pytest.raises(InputError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        xsched.get_runner("tcp://127.0.0.1:9", timeout=2)
    with pytest.raises(InputError, match="scheduler 'gpu'"):
        fit(h5, cfg, mode=mode, scheduler="gpu")
