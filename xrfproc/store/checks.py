"""Checks on files before they are trusted: links that leave the file's folder, declared sizes.

An HDF5 file can point elsewhere (external links, virtual datasets) and can declare datasets far
larger than any real scan; readers of the layout call these before touching the data.
"""
from __future__ import annotations

import os
from typing import Any
from pathlib import Path

import h5py
import numpy as np

from ..core.limits import check_size
from ..errors import InputError, LayoutError
from .filters import register_plugins


def _inside(folder: Path, target: str) -> bool:
    """True when ``target`` (absolute, or relative to ``folder``) resolves into ``folder``."""
    root = folder.resolve()
    resolved = (root / target).resolve() if not os.path.isabs(target) else Path(target).resolve()
    return resolved == root or root in resolved.parents


def _check_links(f: h5py.File, path: Path) -> list[str]:
    """The link targets of ``f`` (refusing the ones outside ``path``'s folder); see :func:`check_links`."""
    folder = path.resolve().parent
    seen: list[str] = []
    visited: set[Any] = set()

    def visit(group: h5py.Group) -> None:
        if group.id in visited:
            return
        visited.add(group.id)
        for name in group:
            link = group.get(name, getlink=True)
            where = f"{group.name.rstrip('/')}/{name}"
            if isinstance(link, h5py.ExternalLink):
                seen.append(link.filename)
                if not _inside(folder, link.filename):
                    raise InputError(f"external link to {link.filename!r} points outside the file's folder "
                                     f"{str(folder)!r}; refused", path=path, dataset=where)
                continue  # never follow: the target is a bulk file, checked when it is read
            if isinstance(link, h5py.SoftLink):
                continue
            obj = group.get(name)
            if isinstance(obj, h5py.Group):
                visit(obj)
            elif isinstance(obj, h5py.Dataset) and obj.is_virtual:
                for source in obj.virtual_sources():
                    seen.append(source.file_name)
                    if source.file_name != "." and not _inside(folder, source.file_name):
                        raise InputError(f"virtual dataset reads {source.file_name!r}, outside the file's folder "
                                         f"{str(folder)!r}; refused", path=path, dataset=where)

    visit(f)
    return seen


def check_links(file: str | Path) -> list[str]:
    """Refuse HDF5 external links and virtual datasets that point outside the file's own folder.

    Our own links point into ``<file>.d/`` and are allowed; links are never followed by the check.

    Returns
    -------
    list of str
        The link targets found (all inside the folder).

    Raises
    ------
    InputError
        Naming the file, the link and its target.
    """
    path = Path(file)
    f = open_hdf5(path)
    with f:
        try:
            return _check_links(f, path)
        except (OSError, RuntimeError, KeyError, ValueError) as exc:
            raise InputError(f"corrupt HDF5 file ({exc})", path=path) from None


def open_hdf5(path: Path) -> h5py.File:
    """``path`` opened read-only, or an InputError saying it is missing or not readable HDF5."""
    if not path.exists():
        raise InputError("file not found", path=path)
    register_plugins()  # spectra may be LZ4/Blosc compressed
    try:
        return h5py.File(path, "r")
    except (OSError, RuntimeError, ValueError) as exc:
        raise InputError(f"not a readable HDF5 file ({exc})", path=path) from None


def check_declared_sizes(f: h5py.File, path: str | Path) -> None:
    """Refuse a file whose ``raw/`` arrays declare absurd sizes (read before anything is allocated).

    Spectra (read block by block) may reach :func:`xrfproc.core.limits.max_stream_bytes`, every
    other array :func:`xrfproc.core.limits.max_array_bytes`. Datasets behind broken links are left
    to the reader, which names them.
    """
    def visit(group: h5py.Group, prefix: str) -> None:
        for name in group:
            try:
                obj = group.get(name)
            except (KeyError, OSError, RuntimeError):
                continue
            where = f"{prefix}/{name}"
            if isinstance(obj, h5py.Group):
                visit(obj, where)
            elif isinstance(obj, h5py.Dataset) and obj.shape is not None:
                check_size(obj.shape, obj.dtype if obj.dtype.kind != "O" else np.dtype("O"), where, path=path,
                           dataset=where, stream=name == "spectra")

    if "raw" in f and isinstance(f.get("raw"), h5py.Group):
        visit(f["raw"], "raw")
    for key in ("mot1", "mot2"):
        if key in f and isinstance(f.get(key), h5py.Dataset):
            check_size(f[key].shape, f[key].dtype, key, path=path, dataset=key)
