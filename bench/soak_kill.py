"""Long SIGKILL soak: kill convert / fit / normalise / detlim at many points and check the file each time.

Not part of the test suite (it takes minutes). It runs the harness of
``tests/test_reliability_kill.py`` (a pre-imported "zygote" process forks one child per step run and
SIGKILLs it: half the kill points spread over the whole step, half inside its write transaction) with
many more kill points and several seeds, and prints a table of outcomes::

    python bench/soak_kill.py                 # 200 kill points per step
    python bench/soak_kill.py --kills 1000 --steps fit normalise --seeds 3

After every kill the file must open, ``raw/`` must hash as before, every group must be the old or the
new complete one, ``check_layout.py`` must pass; after each campaign a rerun must succeed and leave no
temporary or orphaned bulk file. Any violation stops the soak with the assertion message (exit 1).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_reliability_kill as harness  # noqa: E402

STEPS = ["convert", "convert-fresh", "fit", "normalise", "detlim"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=200, help="kill points per step and seed")
    parser.add_argument("--seeds", type=int, default=1, help="campaigns per step (different kill times)")
    parser.add_argument("--steps", nargs="+", default=STEPS, choices=STEPS)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="xrfproc-soak-") as tmp:
        base = Path(tmp)
        (base / "templates").mkdir()
        templates = harness.build_templates(base / "templates")
        zygote = harness.Zygote()
        total = {"kill_points": 0, "killed": 0, "old": 0, "new": 0}
        t0 = time.perf_counter()
        try:
            print(f"{'step':14s} {'seed':>4s} {'points':>6s} {'killed':>6s} {'old':>5s} {'new':>5s} {'step s':>7s}")
            for step in args.steps:
                template, job = templates[step]
                for seed in range(args.seeds):
                    work = base / f"work-{step}-{seed}"
                    work.mkdir()
                    out = harness.kill_campaign(zygote, template, job, work, args.kills, seed=1000 + seed)
                    for key in total:
                        total[key] += out[key]
                    print(f"{step:14s} {seed:4d} {out['kill_points']:6d} {out['killed']:6d} {out['old']:5d} "
                          f"{out['new']:5d} {out['seconds']:7.3f}", flush=True)
        except AssertionError as exc:
            print(f"FAILED: {exc}", file=sys.stderr)
            return 1
        finally:
            zygote.close()
        print(f"all {total['kill_points']} kill points survived ({total['killed']} processes killed mid-step; "
              f"{total['old']} left the old file, {total['new']} the new one) in {time.perf_counter() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
