"""ASCII spectrum readers: GSE/EPICS .mca, .spe ($DATA:, XMI MicroXRF maps), PyMca's SPEC/column/EDF files."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from xrfproc.core import pymca_bridge
from xrfproc.core.convert import detect_kind, gse_mca, pymca_formats, spe
from xrfproc.errors import InputError
from xrfproc.store.raw import write_raw
from _shared import REAL, CHECK_LAYOUT, PYTHON

GSE = REAL / "xrf_spectra.mca"
STEEL = pymca_bridge.PYMCA_DATA_DIR / "Steel.spe"
XRFSPEC = pymca_bridge.PYMCA_DATA_DIR / "XRFSpectrum.mca"
CHECK = CHECK_LAYOUT
PY = Path(PYTHON)


def check_layout(path: Path) -> None:
    exe = str(PY) if PY.exists() else sys.executable
    res = subprocess.run([exe, str(CHECK), str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


# --------------------------------------------------------------------------- GSE .mca
@pytest.mark.skipif(not GSE.exists(), reason="real GSE file not available")
def test_gse_real_file(tmp_path):
    assert detect_kind(GSE) == "gse"
    raw = gse_mca.read(GSE)
    ch = raw.channels["channel00"]
    assert raw.grid_shape == (1, 1) and ch.spectra.shape == (1, 1, 2048)
    # independent route: the DATA column read with numpy, the header numbers as printed in the file
    lines = GSE.read_text().splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("DATA:")) + 1
    counts = np.loadtxt(lines[start:])
    np.testing.assert_array_equal(ch.spectra[0, 0], counts)
    assert ch.calibration == (2.2052931e-002, 1.3900329e-002, 0.0)
    assert raw.acquisition_time[0, 0] == 2.0005023
    assert raw.attrs["live_time"] == 1.7931432
    assert ch.icr[0, 0] / ch.ocr[0, 0] == pytest.approx(2.0005023 / 1.7931432)
    assert ch.ocr[0, 0] == pytest.approx(counts.sum() / 2.0005023)
    assert raw.energy_keV == pytest.approx(11.80005313)  # "Mono Energy readback" in eV
    check_layout(write_raw(tmp_path / "gse.h5", raw))


def _gse_text(data: np.ndarray, extra_header: str = "") -> str:
    nel = data.shape[1]
    head = [f"VERSION:    3.1", f"ELEMENTS:  {nel}", "DATE:       Jan 01, 2024 00:00:00",
            f"CHANNELS:  {data.shape[0]}", "REAL_TIME: " + " ".join(["2.0"] * nel),
            "LIVE_TIME: " + " ".join(f"{1.0 + 0.5 * e}" for e in range(nel)),
            "CAL_OFFSET: " + " ".join(f"{0.01 * e}" for e in range(nel)),
            "CAL_SLOPE: " + " ".join(["0.01"] * nel), "CAL_QUAD: " + " ".join(["0.0"] * nel),
            'ENVIRONMENT: 13IDA:E:Energy.VAL="18000.0" (Mono Energy request)']
    if extra_header:
        head.append(extra_header)
    head.append("DATA: ")
    return "\n".join(head + [" ".join(str(int(v)) for v in row) for row in data]) + "\n"


def test_gse_multi_element_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    data = rng.poisson(20, (64, 3))
    p = tmp_path / "three.mca"
    p.write_text(_gse_text(data))
    assert detect_kind(p) == "gse"
    raw = gse_mca.read(p)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra[0, 0], data.sum(axis=1))
    assert raw.energy_keV == pytest.approx(18.0)
    assert raw.acquisition_time[0, 0] == pytest.approx(2.0)
    sep = gse_mca.read(p, elements="separate")
    assert sorted(sep.channels) == ["channel00", "channel01", "channel02"]
    np.testing.assert_array_equal(sep.channels["channel02"].spectra[0, 0], data[:, 2])
    assert sep.channels["channel02"].calibration == pytest.approx((0.02, 0.01, 0.0))
    assert sep.channels["channel02"].icr[0, 0] / sep.channels["channel02"].ocr[0, 0] == pytest.approx(2.0 / 2.0)
    assert sep.channels["channel01"].icr[0, 0] / sep.channels["channel01"].ocr[0, 0] == pytest.approx(2.0 / 1.5)

    text = _gse_text(data)
    cases = {
        "nonnum.mca": (text.replace("DATA: \n", "DATA: \n1 2 x\n", 1), "non-numeric data row"),
        "nodata.mca": (text.split("DATA:")[0], "no 'DATA:' line"),
        "ragged.mca": (text.rstrip("\n") + "\n1 2\n", "has 2 columns"),
        "chan.mca": (text.replace("CHANNELS:  64", "CHANNELS:  65"), "CHANNELS says 65"),
        "elem.mca": (text.replace("ELEMENTS:  3", "ELEMENTS:  2"), "ELEMENTS says 2"),
        "time.mca": (text.replace("REAL_TIME: 2.0 2.0 2.0", "REAL_TIME: 2.0 2.0"), "REAL_TIME: 2 values for 3"),
        "badnum.mca": (text.replace("CAL_SLOPE: 0.01", "CAL_SLOPE: abc"), "CAL_SLOPE: expected 3 numbers"),
    }
    for name, (body, msg) in cases.items():
        q = tmp_path / name
        q.write_text(body)
        with pytest.raises(InputError, match=msg) as exc:
            gse_mca.read(q)
        assert str(q) in str(exc.value)


# --------------------------------------------------------------------------- .spe
def test_steel_spe_equals_pymca(tmp_path):
    assert detect_kind(STEEL) == "spe"
    raw = spe.read(STEEL)
    ch = raw.channels["channel00"]
    assert raw.grid_shape == (1, 1) and ch.spectra.shape == (1, 1, 2048)
    ref = pymca_bridge.read_spectrum_file(STEEL)
    np.testing.assert_array_equal(ch.spectra[0, 0], ref)
    assert int(ch.spectra.sum()) == 5607017
    check_layout(write_raw(tmp_path / "steel.h5", raw))


def _xmi_spe(path: Path, counts: np.ndarray, live: float, real: float, icr: float, ocr: float,
             xyz: tuple[float, float, float]) -> None:
    lines = ["$SPEC_ID:", "XMI MicroXRF test", "$MEAS_TIM:", f"{live} {real}",
             "$ICR_&_OCR (normalised to 1s):", f"{icr} {ocr}", "$XYZT:", f"{xyz[0]} {xyz[1]} {xyz[2]} 0",
             "$MCA_CAL:", "3", "10.0 20.0 0.0 eV", "$DATA:", f"0 {counts.size - 1}"]
    lines += [" ".join(str(int(v)) for v in counts[i:i + 8]) for i in range(0, counts.size, 8)]
    path.write_text("\n".join(lines) + "\n")


def test_xmi_microxrf_map(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "scan"
    folder.mkdir()
    truth = rng.poisson(9, (2, 3, 100))
    for y in range(2):
        for x in range(3):
            _xmi_spe(folder / f"sample_{y + 1}_{x + 1}.spe", truth[y, x], 9.0, 10.0, 1000 + x, 900 + y,
                     (0.1 * x, 5 + 0.2 * y, 1.0))
    assert detect_kind(folder) == "spe"
    raw = spe.read(folder)
    ch = raw.channels["channel00"]
    assert raw.grid_shape == (2, 3)
    np.testing.assert_array_equal(ch.spectra, truth)
    np.testing.assert_allclose(ch.icr, np.broadcast_to(1000 + np.arange(3.0), (2, 3)))
    np.testing.assert_allclose(ch.ocr, np.broadcast_to((900 + np.arange(2.0))[:, None], (2, 3)))
    np.testing.assert_allclose(raw.acquisition_time, 10.0)
    np.testing.assert_allclose(raw.mot2[1], [0.0, 0.1, 0.2])
    np.testing.assert_allclose(raw.mot1[:, 0], [5.0, 5.2])
    assert ch.calibration == pytest.approx((0.01, 0.02, 0.0))  # eV -> keV
    glob_raw = spe.read(str(folder / "sample_*.spe"))
    np.testing.assert_array_equal(glob_raw.channels["channel00"].spectra, truth)
    check_layout(write_raw(tmp_path / "xmi.h5", raw))
    (folder / "sample_2_3.spe").unlink()
    with pytest.raises(InputError, match="incomplete map"):
        spe.read(folder)
    (folder / "other_1_1.spe").write_text((folder / "sample_1_1.spe").read_text())
    with pytest.raises(InputError, match="several scans"):
        spe.read(folder)


def test_spe_errors(tmp_path):
    bad = tmp_path / "bad.spe"
    bad.write_text("$SPEC_ID:\n\n$DATA:\n0 3\n1 2 three 4\n")
    with pytest.raises(InputError, match="non-numeric count") as exc:
        spe.read(bad)
    assert str(bad) in str(exc.value)
    short = tmp_path / "short.spe"
    short.write_text("$DATA:\n0 9\n1 2 3\n")
    with pytest.raises(InputError, match="channels 0..9 announced, 3 counts"):
        spe.read(short)
    nodata = tmp_path / "nodata.spe"
    nodata.write_text("$SPEC_ID:\nhello\n")
    assert not spe.sniff(nodata)
    with pytest.raises(InputError, match="no '\\$DATA:' section"):
        spe.read(nodata)
    (tmp_path / "empty_dir").mkdir()
    with pytest.raises(InputError, match="no .spe files"):
        spe.read(tmp_path / "empty_dir")
    with pytest.raises(InputError, match="no file matches"):
        spe.read(str(tmp_path / "nothing_*.spe"))


# --------------------------------------------------------------------------- PyMca formats
def test_xrfspectrum_mca_routes_to_pymca():
    assert not gse_mca.sniff(XRFSPEC) and not spe.sniff(XRFSPEC)
    assert detect_kind(XRFSPEC) == "pymca"
    raw = pymca_formats.read(XRFSPEC)
    assert raw.grid_shape == (1, 1)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra[0, 0], pymca_bridge.read_spectrum_file(XRFSPEC))
    numbers = [float(ln) for ln in XRFSPEC.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    np.testing.assert_array_equal(raw.channels["channel00"].spectra[0, 0], numbers)


def _spec_file(path: Path, spectra: np.ndarray) -> None:
    """A SPEC mesh scan: 2 rows x 3 points, 2 detectors (two @A lines per point)."""
    lines = ["#F test.spec", "#E 1700000000", "", "#S 1  mesh samx 0 1 2 samy 0 0.5 1 0.1", "#N 5",
             "#L samx  samy  I0  Seconds  icr", "#@MCA 16C", "#@CHANN 32 0 31 1", "#@CALIB 0.1 0.01 0"]
    k = 0
    for j in range(2):
        for i in range(3):
            lines.append(f"{0.5 * i} {0.5 * j} {1000 + i + 10 * j} 0.1 {500 + i}")
            for d in range(2):
                sp = spectra[k, d]
                lines.append("@A " + " ".join(map(str, sp[:16])) + "\\\n" + " ".join(map(str, sp[16:])))
            k += 1
    lines += ["", "#S 2  ascan samx 0 1 2 0.1", "#N 2", "#L samx  I0", "0 1", "0.5 2", "1 3"]
    path.write_text("\n".join(lines) + "\n")


def test_spec_mesh_scan(tmp_path):
    rng = np.random.default_rng(5)
    truth = rng.poisson(10, (6, 2, 32))
    p = tmp_path / "test.spec"
    _spec_file(p, truth)
    assert detect_kind(p) == "pymca"
    raw = pymca_formats.read(p)
    ch = raw.channels["channel00"]
    assert raw.grid_shape == (2, 3)
    np.testing.assert_array_equal(ch.spectra, truth.sum(axis=1).reshape(2, 3, 32))
    np.testing.assert_array_equal(raw.I0, [[1000, 1001, 1002], [1010, 1011, 1012]])
    np.testing.assert_allclose(raw.mot1, [[0, 0, 0], [0.5, 0.5, 0.5]])
    np.testing.assert_allclose(raw.mot2, [[0, 0.5, 1], [0, 0.5, 1]])
    assert (raw.mot1_name, raw.mot2_name) == ("samy", "samx")
    np.testing.assert_allclose(ch.icr, [[500, 501, 502]] * 2)
    np.testing.assert_allclose(raw.acquisition_time, 0.1)
    assert ch.calibration == (0.1, 0.01, 0.0)
    sep = pymca_formats.read(p, elements="separate", scan="1.1")
    np.testing.assert_array_equal(sep.channels["channel01"].spectra, truth[:, 1].reshape(2, 3, 32))
    check_layout(write_raw(tmp_path / "spec.h5", raw))
    with pytest.raises(InputError, match="no scan 7.1; scans: 1.1, 2.1"):
        pymca_formats.read(p, scan=7)
    with pytest.raises(InputError, match="no MCA spectra"):
        pymca_formats.read(p, scan=2)
    with pytest.raises(InputError, match="no column 'fpico'"):
        pymca_formats.read(p, i0="fpico")
    with pytest.raises(InputError, match="dims=\\(4, 4\\) needs 16 points"):
        pymca_formats.read(p, dims=(4, 4))


def test_edf_rows_of_spectra(tmp_path):
    rng = np.random.default_rng(6)
    rows = [rng.poisson(7, (4, 50)).astype(np.int32) for _ in range(3)]
    p = pymca_bridge.write_edf(tmp_path / "stack.edf", rows, [{"row": str(i)} for i in range(3)])
    assert detect_kind(p) == "pymca"
    raw = pymca_formats.read(p)
    assert raw.grid_shape == (3, 4)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, np.stack(rows))
    check_layout(write_raw(tmp_path / "edf.h5", raw))
    junk = tmp_path / "junk.bin"
    junk.write_bytes(bytes(range(256)) * 4)
    assert not pymca_formats.sniff(junk)
    with pytest.raises(InputError, match="not a SPEC, column or EDF file"):
        pymca_formats.read(junk)
