"""File names in a recipe: made absolute against the recipe's folder, looked up in the
reference-material library, expanded from ``for`` patterns, and shown to an optional
:data:`~xrfproc.dsl.plan.PathCheck` (the MCP server's data roots) before anything runs.

Relative paths start at the recipe's folder. A ``.cnc`` name without a folder that is not found
there is looked up in the reference-material library (``$XRFPROC_CNC_DIR``, then the bundled files).
"""
from __future__ import annotations

import fnmatch
import glob as _glob
import os
import re
from pathlib import Path
from typing import Any

from ..errors import XrfError
from .plan import PathCheck

#: suffixes that make a text in a step's free ``**options`` a file name (checked by a PathCheck)
DATA_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".mda", ".cnc", ".cfg", ".xrf", ".txt", ".dat", ".csv", ".png",
                 ".tif", ".tiff", ".mca", ".spe", ".edf", ".fio", ".npy", ".json")
_WILDCARD = re.compile(r"[*?\[]")


def cnc_library(name: str) -> Path | None:
    """The reference-material file called ``name``, or None."""
    try:
        from ..core.cnc import bundled_cnc
        return bundled_cnc(name)
    except (XrfError, ImportError):
        return None


class RecipePaths:
    """Resolves and checks the paths of one recipe.

    Parameters
    ----------
    base : Path
        The folder relative paths start from (absolute).
    produced : set of str
        Files earlier steps of the recipe write (shared with the checker, which fills it).
    check : PathCheck, optional
        Called for every path (absolute, normalised) before it is accepted.
    """

    def __init__(self, base: Path, produced: set[str], check: PathCheck | None = None):
        self.base, self.produced, self.check = base, produced, check

    def verify(self, path: str, what: str, output: bool = False) -> None:
        """Apply the :class:`PathCheck` (if any) to an absolute path; raises :class:`XrfError`."""
        if self.check is not None:
            self.check(path, what=what, output=output)

    def resolve(self, value: Any, what: str = "path", output: bool = False) -> Any:
        """A path (or a list of them) made absolute and checked; other values unchanged."""
        if isinstance(value, list):
            return [self.resolve(v, what, output) for v in value]
        if not isinstance(value, str) or not value:
            return value
        p = Path(os.path.expanduser(value))
        if not p.is_absolute():
            cand = self.base / p
            if not output and value.endswith(".cnc") and len(p.parts) == 1 and not cand.exists() \
                    and str(cand) not in self.produced:
                lib = cnc_library(value)
                if lib is not None:
                    self.verify(str(lib), what, output)
                    return str(lib)
            p = cand
        out = os.path.normpath(str(p))
        self.verify(out, what, output)
        return out

    def resolve_files(self, value: Any, what: str) -> Any:
        """File names inside lists (``absorb=[[Fe], "matrix.cnc"]``) resolved as inputs."""
        if isinstance(value, list):
            return [self.resolve_files(v, what) for v in value]
        if isinstance(value, str) and value.endswith((".cnc", ".cfg", ".h5")):
            return self.resolve(value, what)
        return value

    def option(self, value: Any, what: str) -> Any:
        """A value of a step's free ``**options``: texts that name files (a folder in them, or a data
        file suffix such as ``.h5``, ``.mda``) are resolved and checked like other paths."""
        if isinstance(value, list):
            return [self.option(v, what) for v in value]
        if isinstance(value, dict):
            return {k: self.option(v, what) for k, v in value.items()}
        if isinstance(value, str) and value and (
                "/" in value or os.sep in value or value.startswith("~")
                or value.lower().endswith(DATA_SUFFIXES)):
            return self.resolve(value, what)
        return value

    def glob(self, pattern: str) -> list[str]:
        """Files matching a ``for`` pattern, existing or written by earlier steps (sorted; as written:
        relative to the recipe's folder unless the pattern is absolute).

        With a PathCheck, the folder the pattern searches is checked before it is listed and every
        match after.
        """
        root = str(self.base)
        absolute = os.path.isabs(pattern)
        full = pattern if absolute else os.path.normpath(os.path.join(root, pattern))
        if self.check is not None:
            fixed = _WILDCARD.split(full, 1)[0]
            folder = fixed if fixed.endswith(os.sep) else os.path.dirname(fixed)
            self.verify(os.path.normpath(folder or os.sep), "the folder of the 'for' pattern")
        found = set(_glob.glob(pattern, root_dir=root) if not absolute else _glob.glob(pattern))
        for p in self.produced:
            if fnmatch.fnmatch(p, full):
                found.add(p if absolute else os.path.relpath(p, root))
        if self.check is not None:
            for f in found:
                self.verify(os.path.normpath(f if absolute else os.path.join(root, f)), "a match of the 'for' pattern")
        return sorted(found)

