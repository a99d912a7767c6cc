"""Local worker processes after an engine fit in the same process.

numba's parallel kernels run on GNU OpenMP here; a child forked from a process whose OpenMP
threads exist is terminated ("fork() called from a process already using GNU OpenMP"). The
scheduler then starts its workers with ``forkserver``: the same results, no crash.
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from test_fit_pymca import make_map, snip_cfg

SCRIPT = textwrap.dedent('''
    import json, sys
    import h5py, numpy as np
    from xrfproc import scheduler
    from xrfproc.steps.fit import fit

    def main():
        a, b, cfg = sys.argv[1:4]
        before = scheduler.start_method()
        fit(a, cfg, mode="engine", scheduler="sync", block_spectra=20)      # OpenMP threads start here
        after = scheduler.start_method()
        s = fit(b, cfg, mode="engine", scheduler="processes", n_workers=2, block_spectra=20)
        with h5py.File(a) as fa, h5py.File(b) as fb:
            same = bool(np.array_equal(fa["fit/channel00/ims"][()], fb["fit/channel00/ims"][()], equal_nan=True))
        import numba
        print(json.dumps({"before": before, "after": after, "layer": numba.threading_layer(), "same": same,
                          "ran_on": s["ran_on"]}))

    if __name__ == "__main__":
        main()
''')


def test_processes_after_an_engine_fit_in_the_same_process(tmp_path):
    cfg = snip_cfg(tmp_path)
    a, b = make_map(tmp_path / "a.h5", rows=6, cols=10), make_map(tmp_path / "b.h5", rows=6, cols=10)
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(script), str(a), str(b), str(cfg)], capture_output=True, text=True,
                         timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["same"], res
    assert res["before"] == "fork"
    assert res["after"] == ("forkserver" if res["layer"] == "omp" else "fork")
    assert res["ran_on"]["scheduler"] == "processes" and res["ran_on"]["workers"] == 2
