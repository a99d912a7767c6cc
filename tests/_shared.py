"""Where the tests find the project's shared reference files (``../shared`` beside the repository)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XRFPROC_SHARED", ROOT.parent / "shared"))
CHECK_LAYOUT = SHARED / "tools" / "check_layout.py"
PYTHON = sys.executable
