"""Shared by the readers' ``sniff`` functions: the first bytes of a file, never raising."""
from __future__ import annotations

from pathlib import Path


def head_bytes(path: str | Path, n: int) -> bytes:
    """Up to ``n`` first bytes of ``path``; empty for anything that is not a readable file."""
    try:
        p = Path(path)
        if not p.is_file():
            return b""
        with open(p, "rb") as fh:
            return fh.read(n)
    except OSError:
        return b""
