"""The exceptions xrfproc raises for problems a user can fix.

Every message names what was being read or written (the file, the HDF5 dataset, the recipe line)
and what was expected, so front-ends can show it as it is, without a traceback.
"""
from __future__ import annotations

from pathlib import Path


class XrfError(Exception):
    """Base class of every error xrfproc raises on purpose.

    Parameters
    ----------
    message : str
        What went wrong and what was expected.
    path : str or Path, optional
        The file concerned; prefixed to the message.
    dataset : str, optional
        The HDF5 path (or other location inside the file) concerned.
    """

    def __init__(self, message: str, path: str | Path | None = None, dataset: str | None = None):
        self.message = message
        self.path = None if path is None else str(path)
        self.dataset = dataset
        super().__init__(self._format())

    def _format(self) -> str:
        where = ""
        if self.path is not None:
            where = self.path
            if self.dataset is not None:
                where += f":{self.dataset}"
            where += ": "
        elif self.dataset is not None:
            where = f"{self.dataset}: "
        return where + self.message


class InputError(XrfError):
    """An input file or array is missing, unreadable, of the wrong format or shape."""


class LayoutError(InputError):
    """An HDF5 file does not follow the uniform layout (missing group, wrong shape)."""


class ConfigError(InputError):
    """A fit configuration or concentration file is invalid."""


class FileBusyError(XrfError):
    """Another process is writing the same file."""


class WriteError(XrfError):
    """Results could not be written (disk full, read-only file); nothing was changed."""


class RecipeError(XrfError):
    """A recipe does not parse or does not validate."""
