"""``xrfproc demo`` (``make demo``): ends with the overview images and the HTML report it talks about, and a
table of the demo's lines (Fe, Cu, Zn, Sr, Pb; the others with --all-lines), in under 30 lines (issue 19)."""
from __future__ import annotations

from pathlib import Path

import pytest

from xrfproc import api
from xrfproc.cli import main


@pytest.fixture()
def small_demo(tmp_path_factory, monkeypatch):
    """``api.demo_dataset`` writing small maps (a 6 x 8 sample, a 3 x 3 reference), so the chain runs quickly."""
    def demo_dataset(folder, seed: int = 0, snake: bool = False):
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        return (api.simulate(folder / "demo_sample.h5", rows=6, cols=8, seed=3),
                api.simulate_reference(folder / "demo_nist613.h5", "nist613", rows=3, cols=3, seed=4))
    monkeypatch.setattr(api, "demo_dataset", demo_dataset)


@pytest.mark.slow
def test_demo_ends_with_report_images_and_the_demo_lines(small_demo, tmp_path, capsys):
    folder = tmp_path / "demo_output"
    assert main(["demo", str(folder)]) == 0
    out = capsys.readouterr().out
    lines = out.strip().splitlines()
    assert len(lines) < 30, out
    table = [ln.split()[0] + " " + ln.split()[1] for ln in lines if ln[:2] in ("Fe", "Cu", "Zn", "Sr", "Pb", "Al",
                                                                                "Si", "Ca")
             and len(ln.split()) > 3 and ln.split()[1] in ("K", "L", "M")]
    assert table == ["Fe K", "Cu K", "Zn K", "Sr K", "Pb L"], out
    assert "--all-lines" in out
    report = folder / "demo_sample_report.html"
    assert report.is_file() and report.read_text(encoding="utf-8").lstrip().lower().startswith("<!doctype html")
    assert f"HTML report (open it in a browser): {report}" in out
    pngs = sorted(folder.glob("*overview*.png"))
    assert {p.name for p in pngs} >= {"demo_sample_norm_channel00_overview.png", "demo_sample_quant_channel00_overview.png"}
    for p in pngs:
        assert str(p) in out and p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_demo_table_filters_the_lines(tmp_path):
    import h5py
    import numpy as np

    from xrfproc import demo

    h5 = tmp_path / "s.h5"
    names = ["Al K", "Fe K", "Zn L", "Pb L"]
    with h5py.File(h5, "w") as f:
        f["norm/channel00/names"] = np.array([n.encode() for n in names])
        f["norm/channel00/ims"] = np.ones((4, 2, 2))
    det = {"channels": {"channel00": {"detection_limits_ppm_1s": {"Fe K": 18.0}}}}
    text, hidden = demo._table(h5, det)
    assert hidden == ["Al K", "Zn L"] and "Fe K" in text and "Al K" not in text
    text, hidden = demo._table(h5, det, None)
    assert hidden == [] and "Al K" in text
