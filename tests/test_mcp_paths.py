"""The MCP server's data-root checks (xrfproc.server.paths), without a server."""
from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc import api
from xrfproc.errors import InputError
from xrfproc.server.paths import DataRoots, PathError


@pytest.fixture()
def dirs(tmp_path: Path) -> tuple[Path, Path]:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.h5").write_bytes(b"x")
    (root / "sub" / "a.txt").write_text("a")
    return root, outside


def test_inside_paths_resolve(dirs):
    root, _ = dirs
    r = DataRoots([root])
    assert r.resolve("sub/a.txt", must_exist=True) == (root / "sub" / "a.txt").resolve()
    assert r.resolve(str(root / "sub" / "a.txt")) == (root / "sub" / "a.txt").resolve()
    # '..' that stays inside is fine
    assert r.resolve("sub/../sub/a.txt") == (root / "sub" / "a.txt").resolve()
    assert r.display(root / "sub" / "a.txt") == "sub/a.txt"
    # a new file in an existing folder
    assert r.resolve("sub/new.h5").name == "new.h5"


@pytest.mark.parametrize("value, how", [("../outside/secret.h5", "through '..'"),
                                        ("sub/../../outside/secret.h5", "through '..'")])
def test_dotdot_refused(dirs, value, how):
    root, _ = dirs
    with pytest.raises(PathError, match="outside the server's data roots") as exc:
        DataRoots([root]).resolve(value)
    assert how in str(exc.value)


def test_absolute_outside_refused(dirs):
    root, outside = dirs
    with pytest.raises(PathError, match="outside the server's data roots"):
        DataRoots([root]).resolve(str(outside / "secret.h5"))
    with pytest.raises(PathError):
        DataRoots([root]).resolve("/etc/passwd")


def test_symlink_escape_refused_and_inside_link_allowed(dirs):
    root, outside = dirs
    os.symlink(outside / "secret.h5", root / "link.h5")
    os.symlink(outside, root / "linkdir")
    os.symlink(root / "sub" / "a.txt", root / "ok.txt")
    r = DataRoots([root])
    with pytest.raises(PathError, match="through a symbolic link"):
        r.resolve("link.h5")
    with pytest.raises(PathError, match="through a symbolic link"):
        r.resolve("linkdir/new.h5")
    assert r.resolve("ok.txt", must_exist=True) == (root / "sub" / "a.txt").resolve()


def test_several_roots_and_missing(dirs):
    root, outside = dirs
    r = DataRoots([root, outside])
    assert r.resolve(str(outside / "secret.h5"), must_exist=True) == (outside / "secret.h5").resolve()
    with pytest.raises(InputError, match="file not found"):
        r.resolve("nothing.h5", must_exist=True)
    with pytest.raises(PathError, match="does not exist"):
        r.resolve("nofolder/x.h5")
    with pytest.raises(PathError, match="empty"):
        r.resolve("")
    with pytest.raises(PathError, match="not an existing folder"):
        DataRoots([root / "missing"])


def test_own_layout_file_with_bulk_link_is_allowed(dirs):
    root, _ = dirs
    p = api.simulate(root / "s.h5", rows=2, cols=3)
    with h5py.File(p, "r") as f:
        link = f["raw/channel00"].get("spectra", getlink=True)
    assert isinstance(link, h5py.ExternalLink) and link.filename.startswith("s.h5.d/")
    DataRoots([root]).check_hdf5(p)  # no error


def _external_link_file(path: Path, target: str) -> Path:
    with h5py.File(path, "w") as f:
        f["data"] = h5py.ExternalLink(target, "/x")
    return path


def test_external_link_outside_refused(dirs):
    root, outside = dirs
    with h5py.File(outside / "t.h5", "w") as f:
        f["x"] = np.arange(3)
    r = DataRoots([root])
    for target in (str(outside / "t.h5"), "../outside/t.h5"):
        p = _external_link_file(root / "e.h5", target)
        with pytest.raises(PathError, match="links to a file outside") as exc:
            r.check_hdf5(p)
        assert "data" in str(exc.value)


def test_chained_link_outside_refused(dirs):
    root, outside = dirs
    with h5py.File(outside / "t.h5", "w") as f:
        f["x"] = np.arange(3)
    _external_link_file(root / "b.h5", str(outside / "t.h5"))
    a = _external_link_file(root / "a.h5", "b.h5")
    with pytest.raises(PathError, match="outside"):
        DataRoots([root]).check_hdf5(a)
    # both inside: fine
    with h5py.File(root / "c.h5", "w") as f:
        f["x"] = np.arange(3)
    DataRoots([root]).check_hdf5(_external_link_file(root / "d.h5", "c.h5"))


def test_virtual_dataset_outside_refused(dirs):
    root, outside = dirs
    with h5py.File(outside / "src.h5", "w") as f:
        f["x"] = np.arange(4.0)
    layout = h5py.VirtualLayout(shape=(4,), dtype="f8")
    layout[:] = h5py.VirtualSource(str(outside / "src.h5"), "x", shape=(4,))
    with h5py.File(root / "v.h5", "w") as f:
        f.create_virtual_dataset("v", layout)
    with pytest.raises(PathError, match="outside") as exc:
        DataRoots([root]).check_hdf5(root / "v.h5")
    assert "src.h5" in str(exc.value)


def test_external_raw_storage_outside_refused(dirs):
    root, outside = dirs
    (outside / "raw.bin").write_bytes(np.arange(4, dtype="<f8").tobytes())
    with h5py.File(root / "x.h5", "w") as f:
        f.create_dataset("d", shape=(4,), dtype="<f8", external=[(str(outside / "raw.bin"), 0, 32)])
    with pytest.raises(PathError, match="outside"):
        DataRoots([root]).check_hdf5(root / "x.h5")
