"""Faults: SIGKILL mid-step, a full disk, a read-only file, two writers at once.

The kill tests run each step (convert, fit fast, normalise, detlim) in a child process forked from a
"zygote" (a helper process that imported xrfproc, h5py and PyMca once, and holds no HDF5 file open),
and SIGKILL the child at points spread over the time the step takes, measured once: half of them
over the whole step, half inside its write transaction (the child reports when it enters it). After
each kill the file must open, ``raw/`` must hash as before (every raw dataset), every top-level group
must be either the old complete one or the new complete one (content hash, provenance included,
timestamp excluded), the file must pass ``check_layout.py``, and after the last kill a rerun must
succeed and leave no temporary or orphaned bulk file behind.

``bench/soak_kill.py`` runs the same harness with many more kill points.
"""
from __future__ import annotations

import errno
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any, Iterator

import h5py
import numpy as np
import pytest

from xrfproc import api, store
from xrfproc.core.cnc import bundled_cnc
from xrfproc.errors import FileBusyError, WriteError

ROOT = Path(__file__).resolve().parents[1]
CHECK_LAYOUT = ROOT / "xrfproc" / "testing" / "check_layout.py"
#: kill points per step in the suite (4 steps: 56 in all); bench/soak_kill.py runs more
KILLS_PER_STEP = 14

# --------------------------------------------------------------------------- the zygote
ZYGOTE = r"""
import contextlib, json, os, select, signal, sys, time, traceback
from xrfproc import api, store
from xrfproc.store import h5store, raw as store_raw
import xrfproc.steps.fit, xrfproc.steps.normalise, xrfproc.steps.detlim  # noqa: F401  (warm imports)
import xrfproc.core.convert as conv
conv.kinds()
try:
    import PyMca5.PyMcaPhysics.xrf.FastXRFLinearFit  # noqa: F401
    import PyMca5.PyMcaPhysics.xrf.ClassMcaTheory  # noqa: F401
except ImportError:
    pass


def run_step(job):
    step, opts = job["step"], job.get("options", {})
    if step == "convert":
        api.convert(job["source"], out=job["file"], **opts)
    elif step == "fit":
        api.fit(job["file"], job["config"], mode="fast", **opts)
    elif step == "normalise":
        api.normalise(job["file"], **opts)
    elif step == "detlim":
        api.detlim(job["file"], job["cnc"], **opts)
    else:
        raise ValueError(step)


def child(job, w):
    real = h5store.transaction

    @contextlib.contextmanager
    def marked(*args, **kwargs):
        os.write(w, b"T")
        with real(*args, **kwargs) as tx:
            yield tx
        os.write(w, b"E")

    h5store.transaction = store.transaction = store_raw.transaction = marked
    try:
        run_step(job)
    except BaseException:
        traceback.print_exc()
        os._exit(1)
    os._exit(0)


for line in sys.stdin:
    job = json.loads(line)
    r, w = os.pipe()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        child(job, w)
    os.close(w)
    kill = job.get("kill")
    marks = {}
    deadline = None
    if kill is not None and kill["phase"] == "start":
        deadline = t0 + kill["delay"]
    killed_at = None
    while True:
        timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _, _ = select.select([r], [], [], timeout)
        if ready:
            data = os.read(r, 16)
            if not data:
                break  # the child exited
            now = time.monotonic() - t0
            for ch in data.decode():
                marks.setdefault(ch, now)
            if kill is not None and kill["phase"] == "tx" and "T" in marks and deadline is None:
                deadline = t0 + marks["T"] + kill["delay"]
        if deadline is not None and time.monotonic() >= deadline and killed_at is None:
            os.kill(pid, signal.SIGKILL)
            killed_at = time.monotonic() - t0
            deadline = None
            kill = None
    os.close(r)
    _, status = os.waitpid(pid, 0)
    out = {"signalled": os.WIFSIGNALED(status), "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
           "elapsed": time.monotonic() - t0, "tx_start": marks.get("T"), "tx_end": marks.get("E"),
           "killed_at": killed_at}
    print(json.dumps(out), flush=True)
"""


class Zygote:
    """A pre-imported helper process that forks one child per job and SIGKILLs it on request."""

    def __init__(self) -> None:
        env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1",
                   NUMBA_NUM_THREADS="1")
        self.proc = subprocess.Popen([sys.executable, "-c", ZYGOTE], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, env=env, cwd=str(ROOT))

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(job) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            err = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"zygote died: {err[-3000:]}")
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


# --------------------------------------------------------------------------- digests and checks
def _attr_bytes(value: Any) -> bytes:
    arr = np.asarray(value)
    return arr.tobytes() if arr.dtype.kind not in "OU" else repr(value).encode()


def tree_digest(obj: h5py.Group | h5py.Dataset) -> str:
    """Hash of a group's complete content: datasets (shape, dtype, values, links followed) and attributes.

    The provenance ``timestamp`` attribute is left out (it is the only thing a rerun changes).
    """
    h = hashlib.sha256()

    def add(o: Any, name: str) -> None:
        h.update(name.encode())
        for key in sorted(o.attrs):
            if key == "timestamp":
                continue
            h.update(key.encode() + _attr_bytes(o.attrs[key]))
        if isinstance(o, h5py.Dataset):
            h.update(f"{o.shape}{o.dtype}".encode())
            h.update(_attr_bytes(o[()]))
        else:
            for key in sorted(o):
                add(o[key], f"{name}/{key}")

    add(obj, obj.name)
    return h.hexdigest()


def raw_digests(f: h5py.File) -> dict[str, str]:
    """sha256 of every dataset under ``raw/`` (spectra through their external link), keyed by path."""
    out: dict[str, str] = {}

    def walk(g: h5py.Group) -> None:
        for key in sorted(g):
            o = g[key]
            if isinstance(o, h5py.Dataset):
                out[o.name] = hashlib.sha256(f"{o.shape}{o.dtype}".encode() + _attr_bytes(o[()])).hexdigest()
            else:
                walk(o)

    walk(f["raw"])
    return out


def state(path: Path) -> dict[str, Any] | None:
    """What a file holds: the raw digests and a digest per top-level item; None when there is no file."""
    if not path.exists():
        return None
    with h5py.File(path, "r") as f:  # "the file always opens"
        return {"raw": raw_digests(f), "groups": {k: tree_digest(f[k]) for k in sorted(f) if k != "raw"}}


def _load_check_layout() -> Any:
    spec = importlib.util.spec_from_file_location("check_layout", CHECK_LAYOUT)
    mod = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    spec.loader.exec_module(mod)  # type: ignore[union-attr]
    return mod


def layout_problems(path: Path) -> list[str]:
    mod = _load_check_layout()
    mod.problems.clear()
    mod.check(str(path))
    return list(mod.problems)


def assert_old_or_new(after: dict[str, Any] | None, old: dict[str, Any] | None, new: dict[str, Any],
                      what: str) -> str:
    """The file is entirely the old state or entirely the new one; returns which."""
    if after is None:
        assert old is None, f"{what}: the file disappeared"
        return "old"
    if after == new:
        return "new"
    assert old is not None, f"{what}: a partial new file {after} appeared where there was none"
    assert after["raw"] == old["raw"], f"{what}: raw/ changed"
    for key in set(after["groups"]) | set(old["groups"]) | set(new["groups"]):
        assert after["groups"].get(key) in (old["groups"].get(key), new["groups"].get(key)), \
            f"{what}: group {key} is neither the old nor the new one"
    assert after == old, f"{what}: a mix of old and new groups"
    return "old"


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def zygote() -> Iterator[Zygote]:
    z = Zygote()
    yield z
    z.close()


@pytest.fixture(scope="module")
def templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return build_templates(tmp_path_factory.mktemp("kill-templates"))


def build_templates(base: Path) -> dict[str, Any]:
    """For each step: a folder (in ``base``) holding the file in its 'old' state, and the step's job."""
    cnc = bundled_cnc("nist613")
    (base / "sim").mkdir()
    ref = api.simulate_reference(base / "sim" / "map.h5", cnc, rows=4, cols=5, energy_keV=18.0, seed=1)
    cfg = api.make_config(ref, {"Fe": "K", "Zn": "K", "Sr": "K"}, 18.0, escape=False, out=base / "lean.cfg")
    rng = np.random.default_rng(5)
    src_old = base / "old.npy"
    src_new = base / "new.npy"
    np.save(src_old, rng.poisson(3.0, (12, 16, 1024)).astype(np.int32))
    np.save(src_new, rng.poisson(5.0, (12, 16, 1024)).astype(np.int32))

    def folder(name: str) -> Path:
        d = base / name
        d.mkdir()
        return d

    out: dict[str, Any] = {}
    # convert: over an earlier conversion of another source (old), or into a fresh path (no file)
    d = folder("convert")
    api.convert(src_old, out=d / "map.h5")
    out["convert"] = (d, {"step": "convert", "source": str(src_new)})
    out["convert-fresh"] = (folder("convert-fresh"), {"step": "convert", "source": str(src_new)})
    # fit: the old fit without dead-time correction, the new one with
    d = folder("fit")
    shutil.copy(ref, d / "map.h5")
    shutil.copytree(store.bulk_dir(ref), store.bulk_dir(d / "map.h5"))
    api.fit(d / "map.h5", cfg, mode="fast", deadtime=False)
    out["fit"] = (d, {"step": "fit", "config": str(cfg)})
    # normalise: old norm with another I0norm
    d = folder("normalise")
    shutil.copy(ref, d / "map.h5")
    shutil.copytree(store.bulk_dir(ref), store.bulk_dir(d / "map.h5"))
    api.fit(d / "map.h5", cfg, mode="fast")
    api.normalise(d / "map.h5", I0norm=1e5)
    out["normalise"] = (d, {"step": "normalise", "options": {"I0norm": 1e6}})
    # detlim: old detlim/elyield with other angles
    d = folder("detlim")
    shutil.copytree(base / "normalise", d, dirs_exist_ok=True)
    api.detlim(d / "map.h5", cnc, incidence_deg=45.0)
    out["detlim"] = (d, {"step": "detlim", "cnc": str(cnc), "options": {"incidence_deg": 30.0}})
    return out


def restore(template: Path, work: Path) -> Path:
    if work.exists():
        shutil.rmtree(work)
    shutil.copytree(template, work)
    return work / "map.h5"


def kill_plan(n: int, total: float, tx_len: float, rng: np.random.Generator) -> list[dict[str, Any]]:
    """``n`` kill points: half stratified over the whole step, half inside its write transaction."""
    n_start = n // 2
    plan = [{"phase": "start", "delay": float(total * 1.05 * (i + rng.uniform()) / n_start)} for i in range(n_start)]
    n_tx = n - n_start
    plan += [{"phase": "tx", "delay": float(max(tx_len, 1e-3) * 1.2 * (i + rng.uniform()) / n_tx)}
             for i in range(n_tx)]
    return plan


def kill_campaign(zygote: Zygote, template: Path, job: dict[str, Any], work_root: Path, n: int,
                  seed: int = 0) -> dict[str, Any]:
    """Measure the step once, then kill it at ``n`` points; check every outcome. Returns counts."""
    work = work_root / "work"
    path = restore(template, work)
    old = state(path)
    job = dict(job, file=str(path))
    res = zygote.run(job)
    assert res["exit"] == 0 and not res["signalled"], f"the step fails without a kill: {res}"
    new = state(path)
    assert new is not None and new != old
    problems = layout_problems(path)
    assert not problems, problems
    total = res["elapsed"]
    tx_len = (res["tx_end"] or total) - (res["tx_start"] or 0.0)
    rng = np.random.default_rng(seed)
    outcome = {"old": 0, "new": 0, "killed": 0, "finished": 0, "kill_points": 0, "seconds": total}
    for i, kill in enumerate(kill_plan(n, total, tx_len, rng)):
        path = restore(template, work)
        res = zygote.run(dict(job, kill=kill))
        outcome["killed" if res["signalled"] else "finished"] += 1
        outcome["kill_points"] += 1
        if not res["signalled"]:
            assert res["exit"] == 0, f"kill point {kill}: the step failed on its own: {res}"
        after = state(path)
        which = assert_old_or_new(after, old, new, f"{job['step']} kill {i} at {kill}")
        outcome[which] += 1
        if after is not None:
            problems = layout_problems(path)
            assert not problems, f"kill {i} at {kill}: {problems}"
    # the last kill left its traces (lock, temporary file, orphaned bulk file): a rerun succeeds and cleans up
    res = zygote.run(dict(job, kill={"phase": "tx", "delay": tx_len * 0.5}))
    rerun = zygote.run(job)
    assert rerun["exit"] == 0 and not rerun["signalled"], rerun
    assert state(path) == new
    assert not list(path.parent.glob(f".{path.name}.tmp-*")), "temporary files left after a rerun"
    with h5py.File(path, "r") as f:
        used = {Path(f[f"raw/{c}"].get("spectra", getlink=True).filename).name for c in store.channels(f)}
    assert {p.name for p in store.bulk_dir(path).glob("*.h5")} == used, "orphaned bulk files after a rerun"
    return outcome


@pytest.mark.parametrize("step", ["convert", "convert-fresh", "fit", "normalise", "detlim"])
def test_sigkill_mid_step_keeps_file_whole(step, zygote, templates, tmp_path):
    template, job = templates[step]
    n = KILLS_PER_STEP if step != "convert-fresh" else 6
    outcome = kill_campaign(zygote, template, job, tmp_path, n, seed=sum(map(ord, step)))
    assert outcome["kill_points"] == n
    # the plan really interrupts the step (most points land before it finishes)
    assert outcome["killed"] >= n // 2, outcome
    print(f"{step}: {outcome}")


# --------------------------------------------------------------------------- full disk, read-only
def _simple_file(tmp_path: Path) -> Path:
    grid = (3, 4)
    rng = np.random.default_rng(0)
    from xrfproc.core.rawmap import RawChannel, RawMap

    raw = RawMap({"channel00": RawChannel(rng.poisson(4, grid + (64,)).astype(np.uint32), np.ones(grid),
                                          np.ones(grid))},
                 I0=np.full(grid, 1e5), acquisition_time=np.full(grid, 0.5), mot1=np.zeros(grid),
                 mot2=np.zeros(grid), energy_keV=20.0)
    path = store.write_raw(tmp_path / "map.h5", raw)
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        g = tx.group("fit/channel00")
        store.write_array(g, "cfg", "test.cfg")
        store.write_array(g, "names", ["Fe K", "Zn K"])
        store.write_array(g, "ims", np.ones((2,) + grid))
        store.write_array(g, "sum/int", np.array([4e4, 2e4]))
        store.write_array(g, "sum/bkg", np.array([1e4, 4e3]))
    return path


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".lock"}


def test_disk_full_during_dataset_write_is_write_error(tmp_path, monkeypatch):
    """ENOSPC raised by HDF5 while the new file's datasets are written (not only at the rename)."""
    path = _simple_file(tmp_path)
    before = _snapshot(tmp_path)
    real_write_array = store.write_array

    def full(group, name, data, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    from xrfproc.steps import normalise as norm_step
    monkeypatch.setattr(norm_step.store, "write_array", full)
    with pytest.raises(WriteError, match="No space left on device") as err:
        api.normalise(path, I0norm=1e5)
    assert str(path) in str(err.value)
    monkeypatch.setattr(norm_step.store, "write_array", real_write_array)
    assert _snapshot(tmp_path) == before
    api.normalise(path, I0norm=1e5)  # and once there is room again it works
    with h5py.File(path, "r") as f:
        assert "norm/channel00/ims" in f


def _tiny_tmpfs(target: Path, size_kib: int) -> bool:
    target.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_kib}k", "tmpfs", str(target)],
                         capture_output=True)
    return res.returncode == 0


def test_really_full_filesystem(tmp_path):
    """A tiny tmpfs (when we may mount one): convert a map bigger than the room, then a step."""
    mnt = tmp_path / "tiny"
    if not _tiny_tmpfs(mnt, 256):
        pytest.skip("cannot mount a tmpfs here (the ENOSPC injection tests cover this)")
    try:
        rng = np.random.default_rng(0)
        small = tmp_path / "small.npy"
        big = tmp_path / "big.npy"
        np.save(small, rng.poisson(2, (3, 4, 64)).astype(np.int32))
        np.save(big, rng.integers(0, 2**30, (40, 40, 512), dtype=np.int32))  # incompressible, ~3 MB
        out = mnt / "map.h5"
        api.convert(small, out=out)
        before = _snapshot(mnt)
        with pytest.raises(WriteError) as err:
            api.convert(big, out=out)
        assert str(out) in str(err.value)
        assert _snapshot(mnt) == before, "a failed conversion changed or left files"
        # fill the disk, then a processing step: refused cleanly, file unchanged
        filler = mnt / "filler"
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
        try:
            with pytest.raises(OSError):
                while True:
                    os.write(fd, b"\0" * 4096)
        finally:
            os.close(fd)
        before = _snapshot(mnt)
        with pytest.raises(WriteError, match="No space left"):
            with store.transaction(out, "fit", replace=["fit"]) as tx:
                store.write_array(tx.group("fit"), "x", rng.integers(0, 2**30, 200000))
        assert _snapshot(mnt) == before
        filler.unlink()
        with store.transaction(out, "fit", replace=["fit"]) as tx:
            store.write_array(tx.group("fit"), "x", np.arange(10))
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_read_only_folder_and_file(tmp_path):
    """chmod'ed read-only folder: a WriteError, nothing changed (skipped as root, who may write anyway)."""
    path = _simple_file(tmp_path)
    if os.geteuid() == 0:
        pytest.skip("root ignores file permissions (test_store covers this with an injected EACCES)")
    before = _snapshot(tmp_path)
    os.chmod(path, 0o444)
    os.chmod(tmp_path, 0o555)
    try:
        with pytest.raises(WriteError):
            api.normalise(path, I0norm=1e5)
    finally:
        os.chmod(tmp_path, 0o755)
        os.chmod(path, 0o644)
    assert _snapshot(tmp_path) == before


def test_read_only_mount(tmp_path):
    """A read-only file system (a bind mount remounted ro, when we may mount): a WriteError, nothing changed."""
    (tmp_path / "data").mkdir()
    _simple_file(tmp_path / "data")
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(tmp_path / "data"), str(ro)],
                                           capture_output=True).returncode != 0:
        pytest.skip("cannot bind-mount here")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode != 0:
            pytest.skip("cannot remount read-only here")
        before = _snapshot(ro)
        with pytest.raises(WriteError) as err:
            api.normalise(ro / "map.h5", I0norm=1e5)
        assert str(ro / "map.h5") in str(err.value)
        assert _snapshot(ro) == before
        assert api.inspect(ro / "map.h5")["grid"] == [3, 4]  # reading still works
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


# --------------------------------------------------------------------------- two writers
def test_two_processes_running_steps_at_once(tmp_path):
    """Two processes normalise the same file at once: one is refused with FileBusyError naming the holder."""
    path = _simple_file(tmp_path)
    code = textwrap.dedent(f"""
        import contextlib, sys
        from xrfproc import api, store
        from xrfproc.errors import FileBusyError
        real = store.transaction
        @contextlib.contextmanager
        def held(*a, **k):
            with real(*a, **k) as tx:
                print("locked", flush=True)
                if sys.argv[1] == "hold":
                    sys.stdin.readline()  # keep the lock until the test says so
                yield tx
        store.transaction = held
        try:
            api.normalise({str(path)!r}, I0norm=float(sys.argv[2]))
            print("done", flush=True)
        except FileBusyError as exc:
            print("busy", exc, flush=True)
    """)
    first = subprocess.Popen([sys.executable, "-c", code, "hold", "1e5"], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert first.stdout.readline().strip() == "locked"  # type: ignore[union-attr]
        second = subprocess.run([sys.executable, "-c", code, "go", "2e5"], capture_output=True, text=True,
                                timeout=120)
        assert second.stdout.startswith("busy"), second.stdout + second.stderr
        assert f"pid {first.pid}" in second.stdout and "step normalise" in second.stdout
        assert str(path) in second.stdout
        # an in-process attempt meets the same FileBusyError
        with pytest.raises(FileBusyError, match=f"pid {first.pid}"):
            api.normalise(path, I0norm=3e5)
        first.stdin.write("\n")  # type: ignore[union-attr]
        first.stdin.flush()  # type: ignore[union-attr]
        assert first.stdout.readline().strip() == "done"  # type: ignore[union-attr]
    finally:
        first.kill()
        first.wait()
    with h5py.File(path, "r") as f:
        assert float(f["norm/I0"][()]) == 1e5  # the winner's result, whole
    assert not layout_problems(path)
