"""Where the tests find their data and the layout checker: inside the repository, so that a clone runs
every test on its own (``tests/data/real/``: real beamline files, see its README; the bundled
concentration files ``xrfproc/data/cnc/``; the layout checker ``xrfproc/testing/check_layout.py``)."""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"
#: the real measured files (``DATA / "real"``)
REAL = DATA / "real"
#: the reference-material concentration files (the bundled ones)
CNC_DIR = ROOT / "xrfproc" / "data" / "cnc"
CHECK_LAYOUT = ROOT / "xrfproc" / "testing" / "check_layout.py"
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
