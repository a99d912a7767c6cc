"""Suite-wide settings: the engine's model cache goes to a temporary folder, never to ~/.cache.

The compiled numba kernels are the exception: they stay in the user's cache (``make install``
compiles them there), so the suite does not compile them again in every run, nor in every
subprocess. Importing :mod:`xrfproc.jit` here, before the fixture below moves
``XRFPROC_CACHE_DIR``, fixes ``NUMBA_CACHE_DIR`` for this process and every child it starts.
"""
from __future__ import annotations

import os

import pytest

import xrfproc.jit  # noqa: F401  (sets NUMBA_CACHE_DIR from the user's environment)


@pytest.fixture(scope="session", autouse=True)
def _model_cache_dir(tmp_path_factory):
    old = os.environ.get("XRFPROC_CACHE_DIR")
    os.environ["XRFPROC_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if old is None:
        os.environ.pop("XRFPROC_CACHE_DIR", None)
    else:
        os.environ["XRFPROC_CACHE_DIR"] = old
