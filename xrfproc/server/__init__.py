"""The MCP server front-end: every processing step of :mod:`xrfproc.api` as a typed MCP tool.

Start it with ``xrfproc-mcp`` (or ``python -m xrfproc.server``); build one in-process with
:func:`build_server`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_server", "main"]


def build_server(*args: Any, **kwargs: Any) -> Any:
    """See :func:`xrfproc.server.app.build_server` (imported lazily: ``mcp`` is an optional dependency)."""
    from .app import build_server as _build

    return _build(*args, **kwargs)


def main(argv: Any = None) -> int:
    """Console entry point ``xrfproc-mcp``."""
    from .app import main as _main

    return _main(argv)
