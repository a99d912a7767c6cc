"""xrfproc: synchrotron XRF maps from beamline files to quantified element images.

The public API is :mod:`xrfproc.api`, re-exported here.
"""
import logging

from typing import Any

from ._version import __version__
from .api import __all__ as _api_all
from .errors import ConfigError, FileBusyError, InputError, LayoutError, RecipeError, WriteError, XrfError

logging.getLogger(__name__).addHandler(logging.NullHandler())


def __getattr__(name: str) -> Any:
    """The functions of :mod:`xrfproc.api`, imported on first use (``import xrfproc`` stays light)."""
    if name in _api_all:
        from . import api

        value = getattr(api, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_api_all))

__all__ = ["__version__", "XrfError", "InputError", "LayoutError", "ConfigError", "FileBusyError",
           "WriteError", "RecipeError", *_api_all]
