"""Suite-wide settings: the engine's model cache goes to a temporary folder, never to ~/.cache."""
from __future__ import annotations

import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def _model_cache_dir(tmp_path_factory):
    old = os.environ.get("XRFPROC_CACHE_DIR")
    os.environ["XRFPROC_CACHE_DIR"] = str(tmp_path_factory.mktemp("model-cache"))
    yield
    if old is None:
        os.environ.pop("XRFPROC_CACHE_DIR", None)
    else:
        os.environ["XRFPROC_CACHE_DIR"] = old
