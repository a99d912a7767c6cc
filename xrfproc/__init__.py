"""xrfproc: synchrotron XRF maps from beamline files to quantified element images.

The public API is :mod:`xrfproc.api`, re-exported here.
"""
import logging

from ._version import __version__
from .api import *  # noqa: F401,F403
from .api import __all__ as _api_all
from .errors import ConfigError, FileBusyError, InputError, LayoutError, RecipeError, WriteError, XrfError

logging.getLogger(__name__).addHandler(logging.NullHandler())

__all__ = ["__version__", "XrfError", "InputError", "LayoutError", "ConfigError", "FileBusyError",
           "WriteError", "RecipeError", *_api_all]
