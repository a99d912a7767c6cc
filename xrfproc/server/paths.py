"""The data roots of the MCP server: every path a tool touches is checked here.

A client names files as strings; :meth:`DataRoots.resolve` turns each into an absolute path with
every symlink and ``..`` resolved and refuses it unless it lies inside one of the roots given at
start (``--root``). HDF5 files are opened by HDF5 itself, which follows *external links* and
*virtual datasets* (and raw external storage) to other files: :func:`check_hdf5_links` walks a
file's links before any step reads it and refuses the file when one of them points outside the
roots (our own files link to ``<file>.d/raw-*.h5`` beside them, which is inside).
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Iterable, Sequence

import h5py

from ..errors import InputError

log = logging.getLogger(__name__)

#: how deep chains of files linking to files are followed
MAX_LINK_DEPTH = 8


class PathError(InputError):
    """A path names a place outside the data roots (or cannot be used at all)."""


class DataRoots:
    """The folders the server may read and write.

    Parameters
    ----------
    roots : sequence of path
        Existing folders; relative client paths are taken relative to the first one.
    """

    def __init__(self, roots: Sequence[str | Path]):
        if not roots:
            raise PathError("at least one data root is needed")
        resolved = []
        for r in roots:
            p = Path(r).expanduser().resolve()
            if not p.is_dir():
                raise PathError("data root is not an existing folder", path=r)
            resolved.append(p)
        self.roots: list[Path] = resolved

    def __repr__(self) -> str:
        return f"DataRoots({[str(r) for r in self.roots]})"

    # ---------------------------------------------------------------- checks
    def contains(self, resolved: Path) -> bool:
        """Whether an already resolved absolute path lies inside one of the roots."""
        return any(resolved == r or resolved.is_relative_to(r) for r in self.roots)

    def resolve(self, value: str | os.PathLike[str], *, what: str = "path", must_exist: bool = False,
                directory: bool = False, parent_must_exist: bool = True) -> Path:
        """Resolve a client path and check that it stays inside the roots.

        Parameters
        ----------
        value : str
            Relative to the first root, or absolute.
        what : str
            The argument's name, for the messages.
        must_exist : bool
            Refuse a path that does not exist (for inputs).
        directory : bool
            The path must be a folder (when it exists).
        parent_must_exist : bool
            Refuse a new file whose folder does not exist (off for recipes, whose earlier steps
            may make the folder).

        Returns
        -------
        Path
            The absolute path with symlinks resolved.

        Raises
        ------
        PathError
            Outside the roots (directly, through ``..``, or through a symlink), empty or invalid.
        InputError
            ``must_exist`` and the file is missing.
        """
        text = os.fspath(value)
        if not text or not text.strip():
            raise PathError(f"{what}: an empty path was given")
        if "\x00" in text:
            raise PathError(f"{what}: the path contains a NUL character")
        p = Path(text)
        candidate = p if p.is_absolute() else self.roots[0] / p
        try:
            resolved = candidate.resolve(strict=False)
        except (OSError, RuntimeError) as exc:  # symlink loops
            raise PathError(f"{what}: cannot resolve the path ({exc})", path=text) from None
        if not self.contains(resolved):
            lexical = Path(os.path.normpath(candidate))
            how = ("through a symbolic link" if self.contains(lexical)
                   else "through '..'" if ".." in p.parts else "")
            raise PathError(f"{what} is outside the server's data roots {how}".rstrip() +
                            f" (it resolves to {resolved}; allowed: {', '.join(map(str, self.roots))})",
                            path=text)
        if must_exist and not resolved.exists():
            raise InputError(f"{what}: file not found", path=text)
        if directory and resolved.exists() and not resolved.is_dir():
            raise PathError(f"{what} must be a folder", path=text)
        if not must_exist and parent_must_exist and not resolved.parent.is_dir():
            raise PathError(f"{what}: the folder {self.display(resolved.parent)} does not exist", path=text)
        return resolved

    def display(self, path: str | Path) -> str:
        """A path as the client should see it: relative to the first root when inside it."""
        p = Path(path)
        try:
            rel = p.resolve().relative_to(self.roots[0])
            return rel.as_posix() or "."
        except ValueError:
            return str(p)

    def recipe_check(self, readable: Sequence[Path] = (),
                     inspect_input: Callable[[Path, str], None] | None = None) -> Callable[..., None]:
        """A :data:`xrfproc.dsl.plan.PathCheck` for recipes run by the server.

        Every path a recipe names must lie inside the roots; inputs that exist are also checked
        for HDF5 links leaving the roots and passed to ``inspect_input(path, what)`` (the pixel
        limit). Files inside the ``readable`` folders (the reference-material library) may be
        read, not written.
        """
        extra = [Path(d).resolve() for d in readable]

        def check(path: str | os.PathLike[str], *, what: str = "path", output: bool = False) -> None:
            if not output:
                real = Path(path).resolve()
                if real.is_file() and any(real.is_relative_to(d) for d in extra):
                    return
            resolved = self.resolve(path, what=what, parent_must_exist=False)
            if not output and resolved.is_file():
                self.check_hdf5(resolved, what=what)
                if inspect_input is not None:
                    inspect_input(resolved, what)
        return check

    # ---------------------------------------------------------------- HDF5
    def check_hdf5(self, path: Path, what: str = "h5file") -> None:
        """Refuse an HDF5 file whose external links, virtual datasets or external storage leave the roots."""
        check_hdf5_links(path, self, what=what)


def _link_target(holder: Path, filename: str) -> Path:
    """Where HDF5 finds ``filename`` named in ``holder``: absolute, or relative to the holder's folder."""
    target = Path(filename)
    return (target if target.is_absolute() else holder.parent / target).resolve(strict=False)


def _targets(f: h5py.File, path: Path) -> Iterable[tuple[str, str]]:
    """Yield ``(hdf5 path, file name)`` of every external reference in an open file."""
    found: list[tuple[str, str]] = []

    def visit(name: str, link: object) -> None:
        if isinstance(link, h5py.ExternalLink):
            found.append((name, link.filename))
            return
        if not isinstance(link, h5py.HardLink):
            return
        try:
            obj = f.get(name)
        except (KeyError, OSError):
            return
        if isinstance(obj, h5py.Dataset):
            if obj.is_virtual:
                for src in obj.virtual_sources():
                    if src.file_name != ".":
                        found.append((name, src.file_name))
            ext = obj.external
            if ext:
                for entry in ext:
                    raw = entry[0]
                    found.append((name, raw.decode() if isinstance(raw, bytes) else str(raw)))

    f.visititems_links(visit)
    return found


def check_hdf5_links(path: Path, roots: DataRoots, *, what: str = "h5file", _depth: int = 0,
                     _seen: set[Path] | None = None) -> None:
    """Refuse ``path`` when it (or a file it links to) references a file outside the roots.

    Files that are not readable HDF5 are left to the step, which reports them with its own error.

    Raises
    ------
    PathError
        Naming the dataset and the outside file.
    """
    seen = set() if _seen is None else _seen
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    if _depth > MAX_LINK_DEPTH:
        raise PathError(f"{what}: external links nested deeper than {MAX_LINK_DEPTH} files", path=path)
    try:
        f = h5py.File(path, "r")
    except OSError:
        return  # missing or not HDF5: the step itself reports it
    try:
        refs = list(_targets(f, path))
    finally:
        f.close()
    for dataset, filename in refs:
        target = _link_target(path, filename)
        if not target.exists() and not Path(filename).is_absolute():
            # HDF5 falls back to the working directory for a relative name not found beside the file
            fallback = (Path.cwd() / filename).resolve(strict=False)
            if fallback.exists():
                target = fallback
        if not roots.contains(target):
            raise PathError(f"{what} links to a file outside the server's data roots ({filename!r}, "
                            f"resolving to {target}); refused", path=path, dataset=dataset)
        if target.is_file() and target != path:
            check_hdf5_links(target, roots, what=what, _depth=_depth + 1, _seen=seen)
