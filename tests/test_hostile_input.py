"""Hostile input: every bad file gives OUR error naming what is wrong, and no partial output.

Truncated and corrupted HDF5 files (layout and bulk), NaN/inf/negative spectra, shapes that do not
agree, empty datasets, absurd declared sizes (never allocated), wrong dtypes, non-UTF-8 names,
broken ``.cnc`` and PyMca configuration files, external links and virtual datasets pointing outside
the file's folder, and no ``eval``/``exec``/pickle anywhere in the package. Tested through
:mod:`xrfproc.api` and through the ``xrfproc`` command line (exit status 2, one line on stderr).
"""
from __future__ import annotations

import hashlib
import re
import shutil
import struct
from pathlib import Path
from typing import Any, Callable

import h5py
import numpy as np
import pytest

from xrfproc import api, cli, store
from xrfproc.core import fitconfig
from xrfproc.core.cnc import bundled_cnc
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.errors import ConfigError, InputError, LayoutError, XrfError
from xrfproc.store import h5store
from xrfproc.testing.mda_fixture import ScanSpec, write_mda

PACKAGE = Path(__file__).resolve().parents[1] / "xrfproc"
#: inputs rejected in this file (the README "Reliability" figure); counted by `rejected`
REJECTED: list[str] = []


def snapshot(folder: Path) -> dict[str, str]:
    """sha256 of every file under ``folder`` except lock files (what 'no partial output' compares)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".lock"}


def rejected(func: Callable[..., Any], *args: Any, match: str, error: type = XrfError, folder: Path | None = None,
             **kwargs: Any) -> XrfError:
    """``func(*args)`` raises ``error`` (an XrfError) whose message matches; ``folder`` is unchanged."""
    before = snapshot(folder) if folder is not None else None
    with pytest.raises(XrfError) as info:
        func(*args, **kwargs)
    assert isinstance(info.value, error), f"{type(info.value).__name__}: {info.value}"
    assert re.search(match, str(info.value)), f"{info.value!s} does not match {match!r}"
    if folder is not None:
        assert snapshot(folder) == before, "partial output left behind"
    REJECTED.append(f"{getattr(func, '__name__', func)}: {info.value}")
    return info.value


def cli_rejects(argv: list[str], capsys: pytest.CaptureFixture, match: str) -> str:
    """The command line exits with status 2 and prints exactly one ``xrfproc: error:`` line."""
    code = cli.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("xrfproc: error: "), err
    assert "Traceback" not in err
    assert re.search(match, lines[0]), lines[0]
    REJECTED.append(f"cli {' '.join(argv[:1])}: {lines[0]}")
    return lines[0]


def small_raw(grid: tuple[int, ...] = (3, 4), nbins: int = 64, seed: int = 0) -> RawMap:
    rng = np.random.default_rng(seed)
    ch = RawChannel(rng.poisson(5, grid + (nbins,)).astype(np.uint32), np.full(grid, 100.0), np.full(grid, 90.0),
                    (0.0, 0.1, 0.0))
    m1, m2 = np.meshgrid(np.arange(grid[0]) * 1.0, np.arange(grid[1]) * 1.0, indexing="ij")
    return RawMap({"channel00": ch}, I0=np.full(grid, 1e5), acquisition_time=np.full(grid, 0.5), mot1=m1, mot2=m2,
                  energy_keV=18.0, cmd="dmesh m1 0 2 2 m2 0 3 3 0.5")


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small simulated reference map, its configuration, fitted and normalised (kept pristine)."""
    base = tmp_path_factory.mktemp("hostile")
    (base / "ref").mkdir()
    path = api.simulate_reference(base / "ref" / "map.h5", bundled_cnc("nist613"), rows=3, cols=4, energy_keV=18.0)
    cfg = api.make_config(path, {"Fe": "K", "Zn": "K"}, 18.0, escape=False, out=base / "lean.cfg")
    api.fit(path, cfg, mode="fast")
    api.normalise(path, I0norm=1e6)
    return {"dir": base / "ref", "file": path, "cfg": cfg}


def copy_pair(src: Path, dst_dir: Path) -> Path:
    """Copy a layout file and its bulk folder into ``dst_dir`` (same name: the links stay valid)."""
    dst_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, dst_dir / src.name)
    shutil.copytree(store.bulk_dir(src), store.bulk_dir(dst_dir / src.name))
    return dst_dir / src.name


def bulk_file(path: Path) -> Path:
    return next(store.bulk_dir(path).glob("raw-*.h5"))


# --------------------------------------------------------------------------- truncated / corrupted HDF5
@pytest.mark.parametrize("fraction", [0.0, 0.001, 0.1, 0.5, 0.9, 0.999])
def test_truncated_layout_file(fraction, fitted, tmp_path, capsys):
    path = copy_pair(fitted["file"], tmp_path / "in")
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * fraction)])
    out = tmp_path / "out"
    out.mkdir()
    rejected(api.convert, path, out=out / "conv.h5", kind="layout", match="map.h5", error=InputError, folder=out)
    rejected(api.inspect, path, match="map.h5", error=InputError)
    before = snapshot(tmp_path / "in")
    rejected(api.fit, path, fitted["cfg"], match="map.h5", error=InputError, folder=tmp_path / "in")
    rejected(api.normalise, path, match="map.h5", error=InputError, folder=tmp_path / "in")
    rejected(api.detlim, path, bundled_cnc("nist613"), match="map.h5", error=InputError, folder=tmp_path / "in")
    assert snapshot(tmp_path / "in") == before
    cli_rejects(["convert", str(path), "-o", str(out / "cli.h5"), "--kind", "layout"], capsys, "map.h5")
    cli_rejects(["inspect", str(path)], capsys, "map.h5")
    assert not (out / "cli.h5").exists()


@pytest.mark.parametrize("fraction", [0.0, 0.05, 0.5, 0.95])
def test_truncated_bulk_file(fraction, fitted, tmp_path, capsys):
    """The spectra file behind raw/channel00/spectra cut short: reading spectra is a clear error."""
    path = copy_pair(fitted["file"], tmp_path / "in")
    bulk = bulk_file(path)
    data = bulk.read_bytes()
    bulk.write_bytes(data[:int(len(data) * fraction)])
    out = tmp_path / "out"
    out.mkdir()
    rejected(api.convert, path, out=out / "conv.h5", kind="layout", match=r"raw/channel00/spectra",
             error=InputError, folder=out)
    rejected(api.fit, path, fitted["cfg"], match=r"raw/channel00/spectra", error=InputError, folder=tmp_path / "in")
    cli_rejects(["convert", str(path), "-o", str(out / "cli.h5")], capsys, "spectra")
    assert not (out / "cli.h5").exists()


def test_missing_bulk_file(fitted, tmp_path):
    path = copy_pair(fitted["file"], tmp_path / "in")
    bulk_file(path).unlink()
    rejected(api.fit, path, fitted["cfg"], match=r"raw/channel00/spectra", error=InputError)


@pytest.mark.parametrize("seed", range(6))
def test_flipped_bytes(seed, fitted, tmp_path):
    """Random bytes flipped in the layout or the bulk file: our error, or a read that succeeds."""
    path = copy_pair(fitted["file"], tmp_path / "in")
    rng = np.random.default_rng(seed)
    target = path if seed % 2 == 0 else bulk_file(path)
    data = bytearray(target.read_bytes())
    for pos in rng.integers(0, len(data), 40):
        data[pos] ^= 1 << int(rng.integers(0, 8))
    target.write_bytes(bytes(data))
    out = tmp_path / "out"
    out.mkdir()
    for func, args in ((api.convert, (path,)), (api.inspect, (path,))):
        try:
            func(*args, **({"out": out / "c.h5", "kind": "layout"} if func is api.convert else {}))
        except XrfError:
            REJECTED.append(f"flipped bytes {seed}: {func.__name__}")
        # anything else propagates and fails the test


# --------------------------------------------------------------------------- spectra values and shapes
def test_nan_inf_negative_spectra(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    base = np.random.default_rng(0).poisson(5, (3, 4, 64)).astype(np.float64)
    for name, value in (("nan", np.nan), ("inf", np.inf), ("neg", -3.0)):
        sp = base.copy()
        sp[1, 2, 10] = value
        src = tmp_path / f"{name}.npy"
        np.save(src, sp)
        target = out / f"{name}.h5"
        if name == "nan":  # NaN marks a missing point: kept (the fit step reports it and leaves its results NaN)
            api.convert(src, out=target)
            with h5py.File(target, "r") as f:
                stored = f["raw/channel00/spectra"][()]
            assert np.isnan(stored[1, 2, 10]) and np.isfinite(np.delete(stored.ravel(), 2 * 64 + 10 + 4 * 64)).all()
            continue
        match = r"negative counts" if name == "neg" else r"infinite counts"
        rejected(api.convert, src, out=target, match=match, error=InputError, folder=out)
        assert not target.exists()
    # the same through the layout converter and a float layout file with -1 counts
    bad = tmp_path / "neg.h5"
    with h5py.File(bad, "w") as f:
        f["raw/channel00/spectra"] = -base
    rejected(api.convert, bad, out=out / "x.h5", kind="layout", match="negative", error=InputError, folder=out)


def test_mismatched_shapes(tmp_path, capsys):
    sp = np.random.default_rng(0).poisson(5, (3, 4, 64)).astype(np.int32)
    src = tmp_path / "sp.npy"
    np.save(src, sp)
    out = tmp_path / "out"
    out.mkdir()
    for key, arr in (("icr", np.ones((4, 4))), ("ocr", np.ones(5)), ("I0", np.ones((3, 5))), ("mot1", np.ones(7))):
        rejected(api.convert, src, out=out / "x.h5", match=key, error=InputError, folder=out, **{key: arr})
    cli_rejects(["convert", str(src), "-o", str(out / "x.h5"), "-O", "dims=[5,5]"], capsys, r"dims")
    # a layout file whose icr/ocr/I0/motors disagree with the spectra grid
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["raw/channel00/spectra"] = sp
        f["raw/channel00/icr"] = np.ones((3, 5))
        f["raw/channel00/ocr"] = np.ones((3, 4))
        f["raw/I0"] = np.ones((3, 4))
        f["mot1"] = np.ones((2, 2))
        f["mot2"] = np.ones((3, 4))
    rejected(api.convert, bad, out=out / "x.h5", match=r"icr has shape \(3, 5\)", error=InputError, folder=out)
    # two channels with different grids
    with h5py.File(bad, "a") as f:
        f["raw/channel00/icr"][...] = 1.0 if False else 1.0
        del f["raw/channel00/icr"]
        f["raw/channel00/icr"] = np.ones((3, 4))
        f["raw/channel01/spectra"] = sp[:2]
    rejected(api.convert, bad, out=out / "x.h5", match=r"channel01", error=InputError, folder=out)


def test_empty_datasets(tmp_path, fitted):
    out = tmp_path / "out"
    out.mkdir()
    for shape in ((0, 64), (3, 0, 64), (3, 4, 0)):
        src = tmp_path / "empty.npy"
        np.save(src, np.zeros(shape, np.int32))
        rejected(api.convert, src, out=out / "x.h5", match=r"empty", error=InputError, folder=out)
    bad = tmp_path / "empty.h5"
    with h5py.File(bad, "w") as f:
        f.create_dataset("raw/channel00/spectra", shape=(0, 64), dtype=np.int32)
        f["raw/I0"] = np.ones(0)
    rejected(api.convert, bad, out=out / "x.h5", match=r"empty", error=InputError, folder=out)
    rejected(api.fit, bad, fitted["cfg"], match=r"spectra", error=InputError, folder=tmp_path / "out")
    # an empty fit group: normalise says what is missing
    path = copy_pair(fitted["file"], tmp_path / "in")
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        tx.group("fit")
    rejected(api.normalise, path, match=r"fit", error=LayoutError, folder=tmp_path / "in")


def test_absurd_declared_sizes_are_not_allocated(tmp_path, fitted, capsys, monkeypatch):
    """A dataset declaring 10^12 values (chunked, nothing written): refused before any allocation."""
    out = tmp_path / "out"
    out.mkdir()
    huge = tmp_path / "huge.h5"
    with h5py.File(huge, "w") as f:
        f.create_dataset("raw/channel00/spectra", shape=(1_000_000, 1_000, 1_000), dtype=np.uint32,
                         chunks=(1, 1, 1000))
        f.create_dataset("raw/channel00/icr", shape=(1_000_000, 1_000), dtype=np.float64, chunks=(1, 1000))
        f.create_dataset("raw/channel00/ocr", shape=(1_000_000, 1_000), dtype=np.float64, chunks=(1, 1000))
        f.create_dataset("raw/I0", shape=(1_000_000, 1_000), dtype=np.float64, chunks=(1, 1000))
        f.create_dataset("spectra", shape=(10**6, 10**6), dtype=np.float32, chunks=(1, 1000))
    assert huge.stat().st_size < 100_000
    # make any large numpy allocation fail loudly instead of swapping: the readers must refuse first
    real_empty, real_zeros = np.empty, np.zeros

    rejected(api.convert, huge, out=out / "x.h5", kind="layout", match=r"(?i)too large|size", error=InputError,
             folder=out)
    rejected(api.convert, huge, out=out / "x.h5", kind="npy", dataset="spectra", match=r"(?i)too large|size",
             error=InputError, folder=out)
    rejected(api.fit, huge, fitted["cfg"], match=r"(?i)too large|size", error=InputError)
    cli_rejects(["convert", str(huge), "-o", str(out / "x.h5"), "--kind", "layout"], capsys, r"(?i)too large")
    assert np.empty is real_empty and np.zeros is real_zeros
    # an .npy header declaring 10^12 values with a few bytes of data
    npy = tmp_path / "huge.npy"
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000, 1000000), }"
    header += " " * (118 - len(header)) + "\n"
    npy.write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + b"\0" * 64)
    rejected(api.convert, npy, out=out / "x.h5", match=r"(?i)too large|size|npy", error=InputError, folder=out)


def test_mda_header_declaring_huge_point_counts(tmp_path):
    """An MDA file whose outer records claim 10^4 x 10^4 points of 10^4 values: refused, not allocated."""
    n = 10_000
    inner = ScanSpec(1, n, n, "t:scanH", detectors=[(0, "t:mca1.VAL", "", "", np.zeros(n))])
    middle = ScanSpec(2, n, 1, "t:scan2", positioners=[(0, "t:m2.VAL", "", "mm", np.zeros(n))],
                      children=[inner] + [None] * (n - 1))
    outer = ScanSpec(3, n, 1, "t:scan1", positioners=[(0, "t:m1.VAL", "", "mm", np.zeros(n))],
                     children=[middle] + [None] * (n - 1))
    path = write_mda(tmp_path / "huge.mda", outer)
    assert path.stat().st_size < 1_000_000
    out = tmp_path / "out"
    out.mkdir()
    rejected(api.convert, path, out=out / "x.h5", kind="mda", match=r"(?i)too large|points|incomplete|level",
             error=InputError, folder=out)
    from xrfproc.core.mdafile import level_arrays, read_mda
    rejected(lambda: level_arrays(read_mda(path), 1), match=r"(?i)too large", error=InputError)


def test_wrong_dtypes(tmp_path, fitted):
    out = tmp_path / "out"
    out.mkdir()
    bad = tmp_path / "strings.h5"
    with h5py.File(bad, "w") as f:
        f["raw/channel00/spectra"] = np.array([[[b"a" * 4] * 2048] * 4] * 3)
    rejected(api.convert, bad, out=out / "x.h5", kind="layout", match=r"(?i)numeric|dtype|number", error=InputError,
             folder=out)
    rejected(api.convert, bad, out=out / "x.h5", kind="npy", dataset="raw/channel00/spectra",
             match=r"(?i)numeric|dtype", error=InputError, folder=out)
    rejected(api.fit, bad, fitted["cfg"], match=r"(?i)numeric|dtype|number", error=InputError)
    with h5py.File(bad, "w") as f:
        f["raw/channel00/spectra"] = np.ones((3, 4, 64), np.int32)
        f["raw/I0"] = np.array([b"x"] * 12).reshape(3, 4)
    rejected(api.convert, bad, out=out / "x.h5", kind="layout", match=r"(?i)I0", error=InputError, folder=out)
    # a fit group whose images are strings: normalise says so
    path = copy_pair(fitted["file"], tmp_path / "in")
    with store.transaction(path, "fit", replace=["fit/channel00/ims"]) as tx:
        store.write_array(tx.file["fit/channel00"], "ims", ["a", "b"])
    rejected(api.normalise, path, match=r"ims", error=InputError, folder=tmp_path / "in")


def test_non_utf8_names(tmp_path, fitted):
    path = copy_pair(fitted["file"], tmp_path / "in")
    with store.transaction(path, "fit", replace=["fit/channel00/names"]) as tx:
        names = tx.file["fit/channel00/ims"].shape[0]
        tx.file["fit/channel00"].create_dataset("names", data=np.array([b"\xff\xfe K"] * names))
    rejected(api.normalise, path, match=r"names.*(?i:utf-8)", error=InputError, folder=tmp_path / "in")
    rejected(api.detlim, path, bundled_cnc("nist613"), match=r"names.*(?i:utf-8)", error=InputError,
             folder=tmp_path / "in")


# --------------------------------------------------------------------------- .cnc and PyMca configurations
CNC_OK = bundled_cnc("nist613").read_text(encoding="latin-1").splitlines()


@pytest.mark.parametrize("case, edit, match", [
    ("count too high", lambda L: L[:5] + ["999"] + L[6:], r"announces 999 elements"),
    ("count not a number", lambda L: L[:5] + ["many"] + L[6:], r"line 6"),
    ("count fractional", lambda L: L[:5] + ["3.5"] + L[6:], r"whole number"),
    ("unknown unit", lambda L: L[:6] + ["Z\tCert conc(furlongs)\tStandard_error(furlongs)"] + L[7:], r"unit"),
    ("no unit header", lambda L: L[:6] + ["Z conc error"] + L[7:], r"line 7"),
    ("negative concentration", lambda L: L[:7] + ["26\t-5\t1"] + L[8:], r"negative"),
    ("Z out of range", lambda L: L[:7] + ["120\t5\t1"] + L[8:], r"Z must be"),
    ("too short", lambda L: L[:3], r"header lines"),
])
def test_bad_cnc(case, edit, match, fitted, tmp_path, capsys):
    cnc = tmp_path / "bad.cnc"
    cnc.write_text("\n".join(edit(list(CNC_OK))), encoding="latin-1")
    path = copy_pair(fitted["file"], tmp_path / "in")
    rejected(api.detlim, path, cnc, match=match, error=ConfigError, folder=tmp_path / "in")
    rejected(api.read_cnc, cnc, match=str(cnc), error=ConfigError)


@pytest.mark.parametrize("section", ["fit", "detector", "peaks"])
def test_pymca_config_missing_section(section, fitted, tmp_path):
    text = fitted["cfg"].read_text().split("\n")
    starts = [i for i, ln in enumerate(text) if ln.startswith("[") and not ln.startswith("[[")]
    i = text.index(f"[{section}]")
    j = next((k for k in starts if k > i), len(text))
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("\n".join(text[:i] + text[j:]))
    path = copy_pair(fitted["file"], tmp_path / "in")
    rejected(api.fit, path, cfg, match=rf"\[{section}\]", error=ConfigError, folder=tmp_path / "in")


@pytest.mark.parametrize("key, value, match", [
    ("xmax", "lots", r"xmax"), ("xmin", "nan", r"xmin"), ("stripalgorithm", "[1, 2]", r"stripalgorithm"),
    ("energy", "None", r"energy"),
])
def test_pymca_config_bad_values(key, value, match, fitted, tmp_path):
    lines = fitted["cfg"].read_text().split("\n")
    start = lines.index("[fit]")
    for k in range(start + 1, len(lines)):
        if lines[k].split("=")[0].strip() == key:
            lines[k] = f"{key} = {value}"
            break
    cfg = tmp_path / "bad.cfg"
    cfg.write_text("\n".join(lines))
    path = copy_pair(fitted["file"], tmp_path / "in")
    rejected(api.fit, path, cfg, match=match, error=ConfigError, folder=tmp_path / "in")
    rejected(fitconfig.read_config, cfg, match=match, error=ConfigError)


def test_not_a_config_at_all(fitted, tmp_path):
    path = copy_pair(fitted["file"], tmp_path / "in")
    for content in (b"\x00\x01\x02binary", "[fit\nxmin = 1".encode(), b"\xff\xfe[fit]\n"):
        cfg = tmp_path / "bad.cfg"
        cfg.write_bytes(content)
        rejected(api.fit, path, cfg, match=str(cfg), error=ConfigError, folder=tmp_path / "in")


# --------------------------------------------------------------------------- links and code
def _linked_file(folder: Path, target: Path, virtual: bool = False) -> Path:
    path = folder / "linked.h5"
    sp = np.ones((3, 4, 64), np.int32)
    with h5py.File(target, "w") as f:
        f["spectra"] = sp
    with h5py.File(path, "w") as f:
        g = f.create_group("raw/channel00")
        if virtual:
            layout = h5py.VirtualLayout(shape=sp.shape, dtype=sp.dtype)
            layout[...] = h5py.VirtualSource(str(target), "spectra", shape=sp.shape)
            g.create_virtual_dataset("spectra", layout)
        else:
            g["spectra"] = h5py.ExternalLink(str(target), "/spectra")
        for k in ("icr", "ocr"):
            g[k] = np.ones((3, 4))
        f["raw/I0"] = np.ones((3, 4))
    return path


@pytest.mark.parametrize("virtual", [False, True])
def test_links_outside_the_folder_are_refused(virtual, tmp_path, capsys):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    inside = tmp_path / "data"
    inside.mkdir()
    path = _linked_file(inside, outside / "secret.h5", virtual=virtual)
    out = tmp_path / "out"
    out.mkdir()
    what = "virtual dataset" if virtual else "external link"
    rejected(h5store.check_links, path, match=rf"{what}.*outside", error=InputError)
    rejected(api.convert, path, out=out / "x.h5", kind="layout", match=rf"{what}.*outside", error=InputError,
             folder=out)
    rejected(api.inspect, path, match="outside", error=InputError)
    cli_rejects(["inspect", str(path)], capsys, "outside")
    # the same kind of link into the file's own folder is fine, and so are our own bulk links
    ok = _linked_file(inside, inside / "mine.h5", virtual=virtual)
    h5store.check_links(ok)


def test_relative_link_escaping_with_dotdot(tmp_path):
    inside = tmp_path / "data"
    inside.mkdir()
    with h5py.File(tmp_path / "secret.h5", "w") as f:
        f["x"] = np.ones(3)
    path = inside / "f.h5"
    with h5py.File(path, "w") as f:
        f["raw/x"] = h5py.ExternalLink("../secret.h5", "/x")
    rejected(h5store.check_links, path, match="outside", error=InputError)


def test_our_own_files_pass_the_link_check(fitted):
    targets = h5store.check_links(fitted["file"])  # our bulk links, inside <file>.d/
    assert targets and all(t.startswith("map.h5.d/raw-") for t in targets)
    assert api.inspect(fitted["file"])["grid"] == [3, 4]


def test_no_eval_exec_or_pickle_in_the_package():
    pattern = re.compile(r"^\s*(import|from)\s+(pickle|cPickle|dill|shelve|marshal)\b|\bpickle\.loads?\s*\(|"
                         r"allow_pickle\s*=\s*True|(?<![\w.])(eval|exec)\s*\(|__import__\s*\(|"
                         r"yaml\.load\s*\((?![^)]*SafeLoader)|\bmarshal\.loads?\s*\(")
    hits = []
    for py in PACKAGE.rglob("*.py"):
        for n, line in enumerate(py.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if pattern.search(code):
                hits.append(f"{py.relative_to(PACKAGE.parent)}:{n}: {line.strip()}")
    assert not hits, "\n".join(hits)


def test_rejected_figure():
    """Runs last: the number of hostile inputs rejected with our error (quoted in the README)."""
    if not REJECTED:
        pytest.skip("run with the rest of the file")
    print(f"hostile inputs rejected with an XrfError: {len(REJECTED)}")
    assert len(REJECTED) >= 50
