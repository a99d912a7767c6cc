"""Where the tests find the project's shared reference files (``../shared`` beside the repository)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("XRFPROC_SHARED", ROOT.parent / "shared"))
CHECK_LAYOUT = SHARED / "tools" / "check_layout.py"
PYTHON = sys.executable


def sigkill_after_partials(args: list[str], h5: Path, count: int, timeout: float = 120.0, poll: float = 0.02) -> None:
    """Run ``args`` (a step on ``h5`` in a child process) and SIGKILL it once ``count`` partial result
    files (``<h5>.d/partial-*/*.npz``) exist; fails if the child ends first or nothing comes in time."""
    import signal
    import subprocess
    import time

    from xrfproc.store import blocks

    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            parts = blocks.list_partials(h5)
            if parts and len(list(parts[0].glob("*.npz"))) >= count:
                break
            if proc.poll() is not None:
                raise AssertionError(f"the step ended before it could be killed: {proc.stderr.read().decode()}")
            time.sleep(poll)
        else:
            raise TimeoutError(f"fewer than {count} partial results after {timeout} s")
        os.kill(proc.pid, signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        proc.stderr.close()
