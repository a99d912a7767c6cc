"""Names of the files that belong to a layout file."""
from __future__ import annotations

from pathlib import Path

#: ``scan.h5`` keeps its bulk data (raw spectra, large results) and its lock in ``scan.h5.d/``
BULK_SUFFIX = ".d"


def bulk_dir(path: str | Path) -> Path:
    """The folder holding the bulk (spectra) files of ``path``."""
    path = Path(path)
    return path.with_name(path.name + BULK_SUFFIX)
