"""The HTML report: its sections, tables equal to the file's numbers, embedded images, and a real
headless browser rendering it (skipped only where no chromium binary exists; CI installs it)."""
from __future__ import annotations

import base64
import html
import io
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from xrfproc import api, store
from xrfproc.core import xraydata
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.core.report_html import IMG_PREFIX
from xrfproc.core.simulate import demo_detectors
from xrfproc.dsl.export import export_recipe
from xrfproc.errors import InputError
from xrfproc.steps.report import line_markers, report

CHROMIUM = next((p for p in (shutil.which("chromium"), shutil.which("chromium-browser"), shutil.which("google-chrome"))
                 if p), None)
ELEMENTS = ["K", "Ca", "Fe", "Cu", "Zn", "Sr", "Pb"]


@pytest.fixture(scope="module")
def processed(tmp_path_factory):
    """A sample map with fit, norm and quant, and a NIST 613 reference with fit, norm and detlim (one channel)."""
    d = tmp_path_factory.mktemp("report")
    det = [demo_detectors()[0]]
    sample = api.simulate(d / "sample.h5", rows=8, cols=10, detectors=det)
    ref = api.simulate_reference(d / "ref.h5", "nist613", rows=3, cols=3, detectors=det)
    for path in (sample, ref):
        api.fit(path, api.make_config(path, ELEMENTS, 18.0), mode="fast")
        api.normalise(path)
    api.detlim(ref, "nist613")
    api.quantify(sample, ref)
    return {"sample": sample, "ref": ref, "sample_html": report(sample), "ref_html": report(ref, out=d / "r.html")}


class _Page(HTMLParser):
    """Ids of sections, tables with their rows of (header, [data-value...]), img sources, hrefs."""

    def __init__(self):
        super().__init__()
        self.sections, self.imgs, self.links, self.tables = [], [], [], {}
        self._table = None
        self._row = None

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "section":
            self.sections.append(a.get("id"))
        elif tag == "img":
            self.imgs.append(a.get("src", ""))
        elif tag in ("a", "link", "script", "iframe") and ("href" in a or "src" in a):
            self.links.append(a.get("href") or a.get("src"))
        elif tag == "table":
            self._table = self.tables.setdefault(a.get("id"), [])
        elif tag == "tr" and self._table is not None:
            self._row = [None, []]
        elif tag == "td" and self._row is not None and "data-value" in a:
            self._row[1].append(float(a["data-value"]))

    def handle_endtag(self, tag):
        if tag == "tr" and self._row is not None:
            if self._row[1]:
                self._table.append(tuple(self._row))
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data):
        if self._row is not None and self._row[0] is None and data.strip():
            self._row[0] = data.strip()


def _colours(rgb: np.ndarray) -> np.ndarray:
    """The distinct colours of an RGB image, packed as 0xRRGGBB integers."""
    c = rgb.astype(np.int32)
    return np.unique((c[..., 0] << 16) | (c[..., 1] << 8) | c[..., 2])


def _parse(path: Path) -> tuple[str, _Page]:
    text = path.read_text(encoding="utf-8")
    page = _Page()
    page.feed(text)
    return text, page


def _png(src: str) -> np.ndarray:
    from PIL import Image

    assert src.startswith("data:image/png;base64,")
    raw = base64.b64decode(src.split(",", 1)[1], validate=True)
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def _self_contained(text: str, page: _Page) -> None:
    assert all(src.startswith("data:image/png;base64,") for src in page.imgs)
    assert all(link.startswith("#") for link in page.links), page.links
    assert not re.search(r"url\(|@import|https?://", text)


def test_sample_report_sections_tables_and_images(processed):
    text, page = _parse(processed["sample_html"])
    assert processed["sample_html"] == processed["sample"].with_name("sample_report.html")
    assert page.sections == ["summary", "maps", "spectra", "quant", "provenance"]
    assert "<title>XRF report: sample.h5</title>" in text and "Contents" in text
    for sid in page.sections:  # the table of contents links every section
        assert f'href="#{sid}"' in text
    assert "Not in this file:</b> detection limits (no detlim/ group" in text
    # one overview per channel of quant/ and norm/, and one sum spectrum
    assert text.count(IMG_PREFIX) == len(page.imgs) == 3
    assert text.count("<figcaption>") == 3 and "Figure 3." in text
    _self_contained(text, page)
    with store.open_read(processed["sample"]) as f:
        ims = f["quant/channel00/ims"][()].astype(np.float64)
        names = store.decode_names(f["quant/channel00/names"][()])
        unit = f["quant/channel00/ims"].attrs["unit"]
        fit_names = store.decode_names(f["fit/channel00/names"][()])
        fit_int = f["fit/channel00/sum/int"][()]
        fit_sd = f["fit/channel00/sum/stddev"][()]
    rows = page.tables["quant-channel00"]
    assert [r[0] for r in rows] == names
    for (name, values), im in zip(rows, ims):
        v = im[np.isfinite(im)]
        assert values == [v.min(), np.median(v), v.mean(), v.max()]
    assert f"<td>{html.escape(unit)}</td>" in text
    sums = page.tables["sumfit-channel00"]
    assert [r[0] for r in sums] == fit_names
    np.testing.assert_array_equal([r[1][0] for r in sums], fit_int)
    np.testing.assert_array_equal([r[1][1] for r in sums], fit_sd)
    # the quant overview is a real, wide, colourful image
    over = _png(page.imgs[0])
    assert over.shape[1] > 1000 and _colours(over).size > 200


def test_sample_report_provenance_and_recipe(processed, tmp_path):
    text, page = _parse(processed["sample_html"])
    rows = re.findall(r"<tr><td>([a-z_]+)</td><td><code>(/[A-Za-z0-9_]+)</code></td><td>([0-9T:+-]+)</td>", text)
    steps = [r[0] for r in rows]
    assert steps[:1] == ["simulate"] and {"fit", "normalise", "quantify"} <= set(steps)
    assert [r[2] for r in rows] == sorted(r[2] for r in rows)  # in the order they ran
    with store.open_read(processed["sample"]) as f:
        assert f["fit"].attrs["timestamp"] in [r[2] for r in rows]
    recipe = html.unescape(re.search(r'<pre id="recipe">(.*?)</pre>', text, re.S).group(1))
    expected = export_recipe(processed["sample"], out=processed["sample"].parent / "x.xrf")
    (processed["sample"].parent / "x.xrf").unlink()
    assert recipe == expected and 'fit "sample.h5"' in recipe
    assert not list(processed["sample"].parent.glob(".xrfproc-recipe-*"))  # no leftovers


def test_reference_report_detection_limits(processed):
    text, page = _parse(processed["ref_html"])
    assert page.sections == ["summary", "maps", "spectra", "detlim", "provenance"]
    assert "Not in this file:</b> quantification (no quant/ group" in text
    assert text.count(IMG_PREFIX) == 3  # norm overview, sum spectrum, detection-limit plot
    _self_contained(text, page)
    with store.open_read(processed["ref"]) as f:
        g = f["detlim/nist613/channel00"]
        names = store.decode_names(g["names"][()])
        dl1, dl1000 = g["1s/data"][()], g["1000s/data"][()]
        sd1 = g["1s/stddev"][()]
    rows = page.tables["detlim-nist613-channel00"]
    assert [r[0] for r in rows] == names
    np.testing.assert_array_equal([r[1][0] for r in rows], dl1)
    np.testing.assert_array_equal([r[1][1] for r in rows], dl1000)
    np.testing.assert_array_equal([r[1][2] for r in rows], sd1)
    np.testing.assert_allclose(dl1000, dl1 / np.sqrt(1000))  # what the plot shows, checked against the formula


def test_sum_model_follows_the_spectrum(processed):
    """The rebuilt model sits on the data at the strong fitted peaks, and the markers are the right lines."""
    from xrfproc.core import fit as core_fit
    from xrfproc.steps.report import sum_model

    with store.open_read(processed["sample"]) as f:
        raw = f["raw/channel00"]
        y = raw["sumspec"][()].astype(np.float64)
        cal = raw.attrs["calibration_keV"]
        g = f["fit/channel00"]
        names = store.decode_names(g["names"][()])
        factor = core_fit.sum_deadtime_factor(raw["icr"][()], raw["ocr"][()])
        model, cont, engine = sum_model(y, g["cfg_text"][()].decode(), names, g["sum/int"][()] / factor,
                                        g["sum"].attrs["calibration_keV"])
    energy = cal[0] + cal[1] * np.arange(y.size)
    for line in ("Fe K", "Zn K", "Sr K"):
        z, fam = xraydata.parse_group(line)
        k = int(np.argmin(np.abs(energy - xraydata.line_energy(z, "KL3"))))
        top = slice(k - 3, k + 4)
        assert np.nanmax(model[top]) == pytest.approx(y[top].max(), rel=0.25), line
        assert np.nanmax(cont[top]) < 0.3 * y[top].max()
    # with every area zero the model is the continuum alone, far below the peaks
    bare, cont0, _ = sum_model(y, g_text(processed["sample"]), names, np.zeros(len(names)))
    np.testing.assert_allclose(bare[np.isfinite(bare)], cont0[np.isfinite(cont0)])
    marks = line_markers(names, 18.0, engine)
    assert marks["Fe K"] == pytest.approx(xraydata.line_energy(26, "KL3"), abs=0.01)
    assert marks["Pb L"] == pytest.approx(xraydata.line_energy(82, "L3M5"), abs=0.01)
    plain = line_markers(["Fe K", "Rayl", "Compt", "Pb M"], 18.0)
    assert plain["Fe K"] == pytest.approx(6.4039, abs=1e-3) and plain["Rayl"] == 18.0
    assert plain["Compt"] == pytest.approx(18.0 / (1 + 18.0 / 510.999), rel=1e-4)  # 90 degrees
    assert plain["Pb M"] == pytest.approx(xraydata.line_energy(82, "M5N7"))


def g_text(path: Path) -> str:
    with store.open_read(path) as f:
        return f["fit/channel00/cfg_text"][()].decode()


def test_raw_only_file_and_errors(tmp_path):
    grid = (3, 4)
    spectra = np.random.default_rng(1).poisson(5.0, grid + (64,)).astype(np.uint32)
    raw = RawMap({"channel00": RawChannel(spectra, np.ones(grid), np.ones(grid))}, I0=np.full(grid, 1e5),
                 acquisition_time=np.full(grid, 0.5), mot1=np.zeros(grid), mot2=np.zeros(grid), energy_keV=20.0)
    path = store.write_raw(tmp_path / "raw <&> only.h5", raw)
    out = report(path)
    text, page = _parse(out)
    assert page.sections == ["summary", "spectra", "provenance"]
    assert "raw &lt;&amp;&gt; only.h5" in text and "raw <&> only.h5" not in text  # escaped
    for what in ("element maps", "detection limits", "quantification"):
        assert what in text.split("Not in this file:")[1].split("</p>")[0]
    assert "No fit/ results for this channel" in text and len(page.imgs) == 1
    with pytest.raises(InputError, match="not found"):
        report(tmp_path / "missing.h5")
    with pytest.raises(InputError, match=".html"):
        report(path, out=tmp_path / "page.pdf")


def _viridis_hits(rgb: np.ndarray) -> int:
    """How many of viridis's 256 colours occur (within 3 levels per channel) in an RGB screenshot."""
    from matplotlib import colormaps

    lut = np.round(colormaps["viridis"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.int16)
    packed = _colours(rgb)
    colours = np.stack([packed >> 16, (packed >> 8) & 255, packed & 255], axis=1).astype(np.int16)
    hit = 0
    for c in lut:
        hit += bool((np.abs(colours - c).max(axis=1) <= 3).any())
    return hit


def _screenshot(html_path: Path, tmp_path: Path, name: str) -> np.ndarray:
    from PIL import Image

    shot = tmp_path / f"{name}.png"
    cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / ('profile-' + name)}", f"--screenshot={shot}", "--window-size=1280,2400",
           html_path.resolve().as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert proc.returncode == 0 and shot.is_file(), proc.stderr[-2000:]
    return np.asarray(Image.open(shot).convert("RGB"))


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary (CI installs Debian's chromium)")
def test_report_renders_in_headless_chromium(processed, tmp_path):
    shot = _screenshot(processed["sample_html"], tmp_path, "report")
    assert shot.shape == (2400, 1280, 3)
    assert _colours(shot).size > 4000  # not blank: text, plots and maps (text alone gives ~2000)
    assert (np.abs(shot.astype(int) - (0x1F, 0x3B, 0x4D)).max(axis=2) == 0).sum() > 20000  # the header's colour
    assert _viridis_hits(shot) > 100  # the embedded maps were decoded and drawn
    # the same page with its images emptied shows no map colours: the check above can fail
    text = processed["sample_html"].read_text(encoding="utf-8")
    stripped = tmp_path / "noimages.html"
    stripped.write_text(re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', text), encoding="utf-8")
    assert _viridis_hits(_screenshot(stripped, tmp_path, "noimages")) < 20
