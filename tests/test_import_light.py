"""`import xrfproc` stays light: the front-ends' and the heavy science libraries load on first use."""
from __future__ import annotations

import json
import subprocess
import sys


def test_import_xrfproc_loads_no_heavy_library():
    code = ("import json, sys, xrfproc; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'matplotlib', 'sklearn', 'dask', 'distributed', 'mcp', 'numba', 'PyMca5', 'scipy', 'h5py'})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_api_functions_resolve_on_first_use():
    code = "import sys, xrfproc; f = xrfproc.normalise; print(f.__module__, 'xrfproc.steps.normalise' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["xrfproc.steps.normalise", "True"]
