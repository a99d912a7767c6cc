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

from ..core.limits import check_grid, check_size
from ..errors import InputError, LayoutError
from .filters import register_plugins


def _inside(folder: Path, target: str) -> bool:
    """True when ``target`` (absolute, or relative to ``folder``) resolves into ``folder``."""
    root = folder.resolve()
    resolved = (root / target).resolve() if not os.path.isabs(target) else Path(target).resolve()
    return resolved == root or root in resolved.parents


def _object_key(obj: Any) -> tuple[int, int]:
    """Where an object lives (file number, header address): the same for every hard link to it.

    (``obj.id`` is no key: the root group reached through a link is a FileID, which is not hashable.)
    """
    info = h5py.h5o.get_info(obj.id)
    return int(info.fileno), int(info.addr)


def _check_links(f: h5py.File, path: Path) -> list[str]:
    """The link targets of ``f`` (refusing the ones outside ``path``'s folder); see :func:`check_links`."""
    folder = path.resolve().parent
    seen: list[str] = []
    visited: set[Any] = set()

    def visit(group: h5py.Group) -> None:
        key = _object_key(group)
        if key in visited:
            return
        visited.add(key)
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
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
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

    Spectra (read block by block) may reach :func:`xrfproc.core.limits.max_stream_bytes`, and their
    grid (one float64 per spectrum, which the steps allocate) :func:`xrfproc.core.limits.max_map_bytes`;
    every other array of ``raw/`` and ``mot1``/``mot2`` (maps of the grid, read whole) the smaller of
    :func:`~xrfproc.core.limits.max_array_bytes` and ``max_map_bytes``. Only declared shapes are
    looked at, never the data. Datasets behind broken links are left to the reader, which names them.
    :func:`xrfproc.store.h5store.open_read` calls this on every file it opens.

    Raises
    ------
    InputError
        One line naming the file, the dataset and its declared size.
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
                spectra = name == "spectra"
                check_size(obj.shape, obj.dtype if obj.dtype.kind != "O" else np.dtype("O"), where, path=path,
                           dataset=where, stream=spectra, maps=not spectra)
                if spectra and len(obj.shape) > 1:
                    check_grid(obj.shape[:-1], path=path, dataset=where)

    if "raw" in f and isinstance(f.get("raw"), h5py.Group):
        visit(f["raw"], "raw")
    for key in ("mot1", "mot2"):
        if key in f and isinstance(f.get(key), h5py.Dataset):
            check_size(f[key].shape, f[key].dtype, key, path=path, dataset=key, maps=True)


def check_objects(f: h5py.File, path: str | Path) -> int:
    """Read the metadata of every object of ``f`` (links, attributes, dataset layouts), not the data.

    Run before copying a file object by object (:func:`xrfproc.store.h5store.transaction`): HDF5
    copying an object with damaged metadata can fail deep inside the library (once seen: a double
    free), while reading the same metadata here fails cleanly. External and soft links are not
    followed (they are recreated, not copied).

    Returns
    -------
    int
        The number of objects checked.

    Raises
    ------
    InputError
        One line naming the file and the first damaged object.
    """
    count = 0
    seen: set[Any] = set()
    end = f.id.get_filesize()

    def _check_storage(ds: h5py.Dataset, where: str) -> None:
        """The data of ``ds`` lies inside the file (a chunk address past the end made HDF5's copy
        free memory twice; reading it fails cleanly)."""
        extents: list[tuple[int, int]] = []
        if ds.chunks is not None:
            ds.id.chunk_iter(lambda info: extents.append((info.byte_offset, info.size)))
        else:
            offset = ds.id.get_offset()
            if offset is not None:
                extents.append((offset, ds.id.get_storage_size()))
        for offset, size in extents:
            if offset is not None and (offset < 0 or size < 0 or offset + size > end):
                raise InputError(f"corrupt HDF5 object (data at bytes {offset}..{offset + size} of a file of "
                                 f"{end} bytes)", path=path, dataset=where)

    def attrs_of(obj: Any, where: str) -> None:
        for key in obj.attrs:
            obj.attrs[key]  # the value: its datatype and data must decode

    def visit(group: h5py.Group, prefix: str) -> None:
        nonlocal count
        for name in group:
            where = f"{prefix}/{name}" if prefix else name
            try:
                link = group.get(name, getlink=True)
                if isinstance(link, (h5py.ExternalLink, h5py.SoftLink)):
                    continue
                obj = group[name]
                key = _object_key(obj)
                if key in seen:
                    continue
                seen.add(key)
                count += 1
                attrs_of(obj, where)
                if isinstance(obj, h5py.Group):
                    visit(obj, where)
                elif isinstance(obj, h5py.Dataset):
                    obj.shape, obj.dtype, obj.chunks, obj.compression, obj.fillvalue  # noqa: B018
                    obj.id.get_create_plist().get_nfilters()
                    _check_storage(obj, where)
                elif isinstance(obj, h5py.Datatype):
                    obj.dtype  # noqa: B018
            except InputError:
                raise
            except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
                raise InputError(f"corrupt HDF5 object ({exc})", path=path, dataset=where) from None

    try:
        attrs_of(f, "/")
        visit(f, "")
    except InputError:
        raise
    except (OSError, RuntimeError, KeyError, ValueError, TypeError) as exc:
        raise InputError(f"corrupt HDF5 file ({exc})", path=path) from None
    return count
