"""Reliability bounds (issue 20): exact stored counts, one writer per file including its partial
results, bounded ``.cnc`` reading, no writes through symbolic links, bounded declared sizes, and
corrupt HDF5 files turned into our errors.

Each test reproduces one finding of the issue: it failed before the fix.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import api, store
from xrfproc.core.cnc import bundled_cnc
from xrfproc.errors import FileBusyError, InputError, WriteError, XrfError
from xrfproc.store import blocks, h5store

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small simulated reference map, its configuration, fitted (kept pristine: copy it)."""
    base = tmp_path_factory.mktemp("bounds")
    (base / "ref").mkdir()
    path = api.simulate_reference(base / "ref" / "map.h5", bundled_cnc("nist613"), rows=6, cols=8, energy_keV=18.0)
    cfg = api.make_config(path, {"Fe": "K", "Zn": "K"}, 18.0, escape=False, out=base / "lean.cfg")
    api.fit(path, cfg, mode="fast")
    return {"dir": base / "ref", "file": path, "cfg": cfg}


def copy_pair(src: Path, dst_dir: Path) -> Path:
    """Copy a layout file and its bulk folder into ``dst_dir`` (same name: the links stay valid)."""
    import shutil

    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst_dir / src.name)
    shutil.copytree(store.bulk_dir(src), store.bulk_dir(dst_dir / src.name), ignore=shutil.ignore_patterns(".lock"))
    return dst_dir / src.name


# --------------------------------------------------------------------------- 2. one writer, partial results included
def test_second_normalise_in_another_thread_is_refused_at_once(fitted, tmp_path):
    """The first run holds the lock from its partial results on: the second fails at once, the first finishes."""
    path = copy_pair(fitted["file"], tmp_path / "in")
    started, go_on = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def slow(done, total, message):
        started.set()
        go_on.wait(60)

    def first() -> None:
        try:
            outcome["summary"] = api.normalise(path, I0norm=1e6, progress=slow)
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            outcome["error"] = exc

    t = threading.Thread(target=first)
    t.start()
    try:
        assert started.wait(60), outcome
        t0 = time.monotonic()
        with pytest.raises(FileBusyError, match=r"map\.h5.*normalise"):
            api.normalise(path, I0norm=1e6)
        assert time.monotonic() - t0 < 10
        partials = blocks.list_partials(path)
        assert len(partials) == 1 and any(partials[0].glob("*.npz")), "the first run's saved images were removed"
    finally:
        go_on.set()
        t.join(120)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["summary"]["images"] > 0
    assert not blocks.list_partials(path)
    api.normalise(path, I0norm=1e6)  # the lock was given back


def test_second_normalise_in_another_process_is_refused(fitted, tmp_path):
    """The issue's reproducer: two processes normalise one file; the second gets FileBusyError, no traceback."""
    path = copy_pair(fitted["file"], tmp_path / "in")
    marker = tmp_path / "started"
    script = textwrap.dedent(f"""
        import pathlib, time
        from xrfproc import api
        def slow(done, total, message):
            pathlib.Path({str(marker)!r}).touch()
            time.sleep(0.5)
        api.normalise({str(path)!r}, I0norm=1e6, progress=slow)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=ROOT)
    try:
        deadline = time.monotonic() + 120
        while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), proc.communicate()
        with pytest.raises(FileBusyError, match=r"pid \d+ \(step normalise"):
            api.normalise(path, I0norm=1e6)
    finally:
        out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    with h5py.File(path, "r") as f:
        assert "norm/channel00/ims" in f


def test_partial_results_hold_the_lock(tmp_path):
    path = tmp_path / "scan.h5"
    path.write_bytes(b"")
    partial = blocks.PartialResults(path, "fit", "k1")
    with h5store.file_lock(path, "fit"):  # re-entrant in the thread that holds it
        pass
    errors: list[BaseException] = []

    def other() -> None:
        try:
            blocks.PartialResults(path, "fit", "k1")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1 and isinstance(errors[0], FileBusyError), errors
    assert partial.folder.is_dir()
    partial.discard()
    assert not partial.folder.exists()
    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert len(errors) == 1  # free again


# --------------------------------------------------------------------------- 4. symbolic links
def test_writes_through_a_symlinked_name_are_refused(fitted, tmp_path):
    path = copy_pair(fitted["file"], tmp_path / "in")
    link = tmp_path / "in" / "alias.h5"
    link.symlink_to(path.name)
    before = path.read_bytes()
    with pytest.raises(WriteError, match=r"alias\.h5.*symbolic link"):
        api.normalise(link, I0norm=1e6)
    assert link.is_symlink() and path.read_bytes() == before
    assert not store.bulk_dir(link).exists() or not blocks.list_partials(link)
    with pytest.raises(WriteError, match=r"symbolic link"):
        with h5store.transaction(link, "test", replace=["x"]):
            pass
    assert link.is_symlink()
    dangling = tmp_path / "in" / "new.h5"
    dangling.symlink_to(tmp_path / "elsewhere.h5")
    with pytest.raises(WriteError, match=r"new\.h5.*symbolic link"):
        store.write_raw(dangling, store.read_raw(path))
    assert dangling.is_symlink() and not (tmp_path / "elsewhere.h5").exists()


# --------------------------------------------------------------------------- 1. stored counts exact
def _spe(path: Path, counts: list) -> Path:
    body = "\n".join(" ".join(str(c) for c in counts[i:i + 8]) for i in range(0, len(counts), 8))
    path.write_text(f"$SPEC_ID:\ntest\n$MEAS_TIM:\n1 1\n$DATA:\n0 {len(counts) - 1}\n{body}\n", encoding="latin-1")
    return path


def _stored(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        return f["raw/channel00/spectra"][()], f["raw/channel00/sumspec"][()]


@pytest.mark.parametrize("big, dtype", [
    ("4294967296", np.uint64),        # 2^32: was stored as 0 (int32)
    ("2147483648", np.uint32),        # 2^31: was -2147483648
    ("1099511627776", np.uint64),     # 2^40: was 0
    ("65536", np.uint32),
    ("1e300", np.float64),            # was inf (float32)
    ("9007199254740993", np.uint64),  # 2^53 + 1 written as text: float64 reading rounds it, stored as read
    ("0.1", np.float64),              # not a whole number, not exact in float32
    ("0.5", np.float32),              # exact in float32
])
def test_spe_counts_are_stored_exactly(big, dtype, tmp_path):
    counts = [3, 0, 7, 1] * 8
    counts[5] = big
    src = _spe(tmp_path / "big.spe", counts)
    out = api.convert(src, out=tmp_path / "big.h5", kind="spe")
    spectra, sumspec = _stored(out)
    assert spectra.dtype == dtype
    expected = np.array([float(c) for c in counts])
    np.testing.assert_array_equal(spectra.reshape(-1).astype(np.float64), expected)
    np.testing.assert_array_equal(sumspec, spectra.reshape(-1, spectra.shape[-1]).sum(axis=0, dtype=np.float64))
    assert np.isfinite(spectra.astype(np.float64)).all()


def test_wide_integer_maps_stored_small_and_exact(tmp_path):
    """int64 counts within uint16 are stored as uint16; uint64 beyond 2^63 as uint64; the fit engine reads them."""
    from xrfproc.core import fit_engine
    from xrfproc.core.rawmap import RawChannel, RawMap
    from xrfproc.store import raw as raw_store

    grid = (3, 4)
    for values, dtype in ((np.full(grid + (16,), 65535, np.int64), np.uint16),
                          (np.full(grid + (16,), 2**63 + 5, np.uint64), np.uint64)):
        m = RawMap({"channel00": RawChannel(values, np.ones(grid), np.ones(grid))}, I0=np.ones(grid),
                   acquisition_time=np.ones(grid), mot1=np.zeros(grid), mot2=np.zeros(grid))
        out = store.write_raw(tmp_path / f"{dtype.__name__}.h5", m)
        spectra, sumspec = _stored(out)
        assert spectra.dtype == dtype
        np.testing.assert_array_equal(spectra, values.astype(dtype))
        np.testing.assert_array_equal(sumspec, spectra.reshape(-1, 16).sum(axis=0, dtype=np.float64))
    assert np.dtype(np.uint16) in fit_engine._NATIVE  # uint64 is not: the engine reads it as float64
    with pytest.raises(ValueError):
        raw_store.storage_dtype(np.int64)


@pytest.mark.parametrize("mode", ["engine", "fast"])
def test_fit_reads_uint64_spectra(mode, fitted, tmp_path):
    """A map with one count of 2^32 is stored as uint64 and the engine fit reads it (converted to float64)."""
    raw = store.read_raw(fitted["file"])
    sp = np.asarray(raw.channels["channel00"].spectra).astype(np.int64)
    sp[0, 0, -1] += 2**32
    raw.channels["channel00"].spectra = sp
    out = store.write_raw(tmp_path / "wide.h5", raw)
    spectra, _ = _stored(out)
    assert spectra.dtype == np.uint64 and int(spectra[0, 0, -1]) >= 2**32
    summary = api.fit(out, fitted["cfg"], mode=mode)
    with h5py.File(out, "r") as f:
        ims = f["fit/channel00/ims"][()]
    assert np.isfinite(ims[:, 1:, :]).all(), summary


# --------------------------------------------------------------------------- 3. .cnc files: linear, bounded, regular
def _cnc_rows(path: Path, nrows: int) -> Path:
    head = bundled_cnc("nist613").read_text(encoding="latin-1").splitlines()[:7]
    head[5] = str(nrows)
    rows = [f"{(i % 98) + 1}\t1.0\t0" for i in range(nrows)]
    path.write_text("\n".join(head + rows) + "\n", encoding="latin-1")
    return path


def test_cnc_with_many_rows_is_read_in_linear_time(tmp_path):
    """100k rows (every Z repeated): was 9 s (a count per row), now well under a second or two."""
    from xrfproc.core.cnc import read_cnc
    from xrfproc.errors import ConfigError

    path = _cnc_rows(tmp_path / "many.cnc", 100_000)
    t0 = time.perf_counter()
    with pytest.raises(ConfigError, match=r"many\.cnc.*listed twice") as info:
        read_cnc(path)
    assert time.perf_counter() - t0 < 4.0
    assert len(str(info.value)) < 300 and "\n" not in str(info.value)


def test_cnc_that_is_not_a_regular_file_is_refused(tmp_path):
    from xrfproc.core.cnc import read_cnc

    zero = tmp_path / "zero.cnc"
    zero.symlink_to("/dev/zero")
    with pytest.raises(InputError, match=r"zero\.cnc.*not a regular file"):
        read_cnc(zero)
    with pytest.raises(InputError, match=r"zero\.cnc"):
        api.read_cnc(zero)
    fifo = tmp_path / "fifo.cnc"
    os.mkfifo(fifo)
    with pytest.raises(InputError, match=r"fifo\.cnc.*not a regular file"):
        read_cnc(fifo)
    with pytest.raises(InputError, match=r"cnc_dir.*not a regular file"):
        read_cnc((tmp_path / "cnc_dir").mkdir() or tmp_path / "cnc_dir")


def test_cnc_larger_than_the_limit_is_refused(tmp_path, monkeypatch):
    from xrfproc.core.cnc import read_cnc

    big = tmp_path / "big.cnc"
    with open(big, "wb") as fh:
        fh.truncate(11 * 1024 * 1024)  # sparse: 11 MiB declared, nothing written
    with pytest.raises(InputError, match=r"big\.cnc.*too large"):
        read_cnc(big)
    small = _cnc_rows(tmp_path / "small.cnc", 120)
    monkeypatch.setenv("XRFPROC_MAX_CNC_BYTES", "100")
    with pytest.raises(InputError, match=r"small\.cnc.*too large"):
        read_cnc(small)
    monkeypatch.delenv("XRFPROC_MAX_CNC_BYTES")
    with pytest.raises(InputError, match=r"small\.cnc.*listed twice"):
        read_cnc(small)


# --------------------------------------------------------------------------- 5. declared sizes bounded
def test_layout_declaring_an_8gb_I0_is_refused_before_reading(fitted, tmp_path, monkeypatch):
    """raw/I0 declaring 8 GiB (a few bytes on disk): normalise refuses it at open, whatever the memory."""
    monkeypatch.setenv("XRFPROC_MAX_ARRAY_BYTES", str(64 << 30))  # as on a large machine
    path = copy_pair(fitted["file"], tmp_path / "in")
    with h5py.File(path, "a") as f:
        del f["raw/I0"]
        f.create_dataset("raw/I0", shape=(32768, 32768), dtype=np.float64, chunks=(1, 4096))
    assert path.stat().st_size < 10 << 20
    with pytest.raises(InputError, match=r"map\.h5:raw/I0: .*too large") as info:
        api.normalise(path, I0norm=1e6)
    assert "\n" not in str(info.value)


def test_spectra_declaring_huge_grids_are_refused_before_fitting(fitted, tmp_path, monkeypatch):
    """3 * 10^8 spectra of 2048 uint8 channels (614 GB declared, under the 1 TiB streaming limit): the fit
    allocated a float64 map of the grid (2.4 GB); the grid itself is refused now."""
    monkeypatch.setenv("XRFPROC_MAX_ARRAY_BYTES", str(64 << 30))
    huge = tmp_path / "huge.h5"
    with h5py.File(huge, "w") as f:
        f.create_dataset("raw/channel00/spectra", shape=(17321, 17321, 2048), dtype=np.uint8, chunks=(1, 64, 2048))
    assert huge.stat().st_size < 1 << 20
    with pytest.raises(InputError, match=r"huge\.h5:raw/channel00/spectra: grid \(17321, 17321\).*too large"):
        api.fit(huge, fitted["cfg"], mode="fast")
    monkeypatch.setenv("XRFPROC_MAX_MAP_BYTES", str(4 << 30))  # the limit is configurable
    with h5py.File(huge, "r") as f:
        from xrfproc.store.checks import check_declared_sizes

        check_declared_sizes(f, huge)


# --------------------------------------------------------------------------- 6. corrupt HDF5: our errors only
def _corrupt_attribute(path: Path, obj: str, how: str) -> None:
    """Give ``obj`` an attribute, then damage its stored metadata in place (deterministic corruption)."""
    with h5py.File(path, "a") as f:
        f[obj].attrs["zzcorruptme"] = np.int32(7)
    data = bytearray(path.read_bytes())
    i = data.find(b"zzcorruptme")
    assert i > 0
    if how == "version":  # the datatype message follows the name, padded to 8 bytes
        data[i + 16] = 0xFF
    elif how == "size":
        data[i + 20:i + 24] = (262145).to_bytes(4, "little")
    else:  # a name length running off the message
        data[i - 6:i - 4] = (60000).to_bytes(2, "little")
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["version", "size", "namelen"])
@pytest.mark.parametrize("obj", ["fit/channel00/ims", "fit/channel00"])
def test_corrupt_metadata_gives_our_error(obj, how, fitted, tmp_path):
    """HDF5's RuntimeError (copying the old file in a transaction, or identifying the fit results) was
    escaping; now an InputError naming the file and the damaged object, and nothing is written."""
    path = copy_pair(fitted["file"], tmp_path / "in")
    _corrupt_attribute(path, obj, how)
    before = path.read_bytes()
    with pytest.raises(InputError, match=r"map\.h5:fit/channel00(/ims)?: corrupt HDF5") as info:
        api.normalise(path, I0norm=1e6)
    assert "\n" not in str(info.value)
    assert path.read_bytes() == before and not blocks.list_partials(path)


def test_transaction_checks_every_object_before_copying(fitted, tmp_path):
    path = copy_pair(fitted["file"], tmp_path / "in")
    with h5py.File(path, "r") as f:
        assert h5store.check_objects(f, path) > 10
    _corrupt_attribute(path, "fit/channel00/ims", "version")
    with pytest.raises(InputError, match=r"map\.h5:fit/channel00/ims: corrupt HDF5 object"):
        with h5store.transaction(path, "test", replace=["other"]):
            pass
    with pytest.raises(InputError, match=r"map\.h5:fit/channel00/ims: corrupt HDF5 object"):
        api.detlim(path, bundled_cnc("nist613"))


def test_flipped_bytes_through_writing_steps(fitted, tmp_path):
    """Random bytes flipped in the layout file (12 seeds): normalise, fit and detlim end in success or an
    XrfError, never another exception, never a crash inside HDF5 (run in a child process)."""
    script = textwrap.dedent(f"""
        import faulthandler, shutil, sys, traceback
        from pathlib import Path
        import numpy as np
        from xrfproc import api, store
        from xrfproc.core.cnc import bundled_cnc
        from xrfproc.errors import XrfError
        src, base = Path({str(fitted["file"])!r}), Path({str(tmp_path)!r})
        for seed in range(12):
            work = base / f"s{{seed}}"
            work.mkdir()
            path = work / src.name
            shutil.copy(src, path)
            shutil.copytree(store.bulk_dir(src), store.bulk_dir(path), ignore=shutil.ignore_patterns(".lock"))
            rng = np.random.default_rng(1000 + seed)
            data = bytearray(path.read_bytes())
            for pos in rng.integers(0, len(data), 40):
                data[pos] ^= 1 << int(rng.integers(0, 8))
            path.write_bytes(bytes(data))
            for name, run in (("normalise", lambda: api.normalise(path, I0norm=1e6)),
                              ("fit", lambda: api.fit(path, {str(fitted["cfg"])!r}, mode="fast")),
                              ("detlim", lambda: api.detlim(path, bundled_cnc("nist613")))):
                print("RUN", seed, name, flush=True)
                faulthandler.dump_traceback_later(60, exit=True)  # a hang: end the child, with its stack
                try:
                    run()
                except XrfError as exc:
                    assert "\\n" not in str(exc)
                except BaseException:
                    print("FOREIGN", seed, name, flush=True)
                    traceback.print_exc()
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert "FOREIGN" not in proc.stdout, proc.stdout[-500:] + proc.stderr[-3000:]
    if "Timeout (" in proc.stderr and "h5py" in proc.stderr:
        # the flipped bytes land on different structures from run to run (provenance holds paths and
        # times); some damaged global heaps make HDF5 itself loop while reading a string attribute
        pytest.xfail("KNOWN GAP (issue 20): HDF5 loops on a damaged global heap; reading a suspicious file's "
                     "metadata must move to a child process with a time limit. " + proc.stdout[-200:])
    assert proc.returncode == 0, proc.stdout[-500:] + proc.stderr[-3000:]


def _chunk_past_the_end(path: Path, dataset: str) -> None:
    """Point the first stored chunk of ``dataset`` 512 MiB past the end of the file (its index entry rewritten)."""
    with h5py.File(path, "r") as f:
        found: list[int] = []
        f[dataset].id.chunk_iter(lambda info: found.append(info.byte_offset))
    data = bytearray(path.read_bytes())
    needle = found[0].to_bytes(8, "little")
    assert data.count(needle) == 1
    i = data.find(needle)
    data[i:i + 8] = (found[0] + (512 << 20)).to_bytes(8, "little")
    path.write_bytes(bytes(data))


def test_chunk_address_past_the_end_is_refused_before_copying(fitted, tmp_path):
    """HDF5 copying a dataset whose chunk lies past the end of the file freed memory twice (the process
    aborted); the transaction now checks every dataset's storage first. Run in a child process."""
    path = copy_pair(fitted["file"], tmp_path / "in")
    _chunk_past_the_end(path, "fit/channel00/ims")
    script = textwrap.dedent(f"""
        from xrfproc import api
        from xrfproc.core.cnc import bundled_cnc
        from xrfproc.errors import InputError
        try:
            api.detlim({str(path)!r}, bundled_cnc("nist613"))
        except InputError as exc:
            print("REFUSED", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "REFUSED" in proc.stdout and "fit/channel00/ims: corrupt HDF5 object" in proc.stdout, proc.stdout
