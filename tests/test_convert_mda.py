"""APS MDA reader: the real 2-ID-E fly scan + its flyXRF HDF5 spectra, synthetic rank 1-3 files, bad files."""
from __future__ import annotations

import logging
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from xrfproc.core.convert import detect_kind, mda
from xrfproc.core.mdafile import level_arrays, read_mda
from xrfproc.errors import InputError
from xrfproc.store.raw import write_raw
from xrfproc.testing.mda_fixture import ScanSpec, write_mda, write_xfm_map
from _shared import CHECK_LAYOUT, PYTHON

REAL = Path(__file__).resolve().parent / "data" / "real"  # copied into the repository
MDA = REAL / "2xfm_0011.mda"
H5 = REAL / "2xfm_0011_2xfm3__0.h5"
CHECK = CHECK_LAYOUT
PY = Path(PYTHON)
needs_real = pytest.mark.skipif(not (MDA.exists() and H5.exists()), reason="real APS data not available")


def check_layout(path: Path) -> None:
    exe = str(PY) if PY.exists() else sys.executable
    res = subprocess.run([exe, str(CHECK), str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def _hand_row_block(row: int) -> tuple[np.ndarray, np.ndarray]:
    """Row ``row`` of the fly scan, read by hand: positions (11 f64) and detector values (52 x 11 f32).

    Independent of the reader: the outer offset table sits at byte 28 + 12 (rank 2 header of 28 bytes,
    then rank/npts/cpt); records are contiguous, so a row's planar data block is the last
    ``11*(8*1 + 4*52)`` bytes before the next row record (the last row ends at the extra-PV offset).
    """
    buf = MDA.read_bytes()
    extra_off = struct.unpack_from(">i", buf, 24)[0]
    offsets = struct.unpack_from(">11i", buf, 28 + 12)
    end = offsets[row + 1] if row < 10 else extra_off
    npts, nd = 11, 52
    start = end - npts * (8 + 4 * nd)
    assert struct.unpack_from(">3i", buf, offsets[row]) == (1, 11, 11)  # rank 1, npts, cpt
    pos = np.frombuffer(buf, ">f8", npts, start)
    det = np.frombuffer(buf, ">f4", npts * nd, start + 8 * npts).reshape(nd, npts)
    return pos, det


# --------------------------------------------------------------------------- real data
@needs_real
def test_real_mda_parse_matches_hand_parsed_bytes():
    m = read_mda(MDA)
    assert m.rank == 2 and m.dims == [11, 11] and round(100 * m.version) == 130
    assert len(m.extra) == 843
    det, items = level_arrays(m, 1)
    assert len(items) == 52
    assert [d.number for d in items][35:37] == [35, 50]  # the gap in detector slots is kept
    pos, _ = level_arrays(m, 1, "positioners")
    for row in (0, 4, 10):
        hpos, hdet = _hand_row_block(row)
        np.testing.assert_array_equal(pos[0][row], hpos)
        for k, it in enumerate(items):
            np.testing.assert_array_equal(det[it.number][row], hdet[k])
    assert m.extra_dict()["dxpXMAP2xfm3:mca1.CALS"] == pytest.approx(0.0094, abs=1e-12)
    assert m.extra_dict()["2xfm:scaler1.NM2"] == "US Ion Cham. A1"


@needs_real
def test_real_fly_scan_converts(caplog, tmp_path):
    with caplog.at_level(logging.WARNING):
        raw = mda.read(MDA)
    assert "cropping both to the common 11 x 9 grid" in caplog.text
    assert "hold only zeros" in caplog.text
    assert raw.grid_shape == (11, 9)
    with h5py.File(H5, "r") as f:
        g = f["MAPS_RAW"]
        data = np.stack([np.moveaxis(g[f"data_{c}"][()], 0, -1).astype(np.int64) for c in "abcd"])
        rt, ic, oc = g["realtime"][()].astype(float), g["inputcounts"][()].astype(float), g["ouputcounts"][()].astype(float)
    ch = raw.channels["channel00"]
    assert ch.spectra.shape == (11, 9, 2048)
    np.testing.assert_array_equal(ch.spectra, data.sum(axis=0))
    np.testing.assert_allclose(ch.icr, (ic / rt).sum(axis=0))
    np.testing.assert_allclose(ch.ocr, (oc / rt).sum(axis=0))
    np.testing.assert_allclose(raw.acquisition_time, rt.mean(axis=0))
    # what is stored is the MDA header's MCA calibration (mca1.CALO/CALS/CALQ), 90-185 eV off the
    # spectrum's own peaks: kept, and marked as the header's for a later calibration step
    header_calibration = (0.05, 0.0094, 0.0)
    assert ch.calibration == pytest.approx(header_calibration)
    assert raw.attrs["member_attrs"]["channel00"]["calibration_source"] == (
        "MDA header PVs dxpXMAP2xfm3:mca1.CALO/CALS/CALQ")
    # I0 = upstream ion chamber = MCS channel 2 (detector index 1), hand-parsed at a few pixels
    assert raw.attrs["I0_source"] == "2xfm:mcs:mca2.VAL"
    for row in (0, 5, 10):
        hpos, hdet = _hand_row_block(row)
        np.testing.assert_array_equal(raw.I0[row], hdet[1][:9])
        np.testing.assert_array_equal(raw.mot2[row], hpos[:9])
    assert raw.I0[0, 1] == 87591.0
    np.testing.assert_allclose(raw.mot1[:, 0], 3.25 + 0.05 * np.arange(11), atol=1e-9)
    assert raw.mot1_name == "Sample Y"
    # the MCS clock (25 MHz) agrees with the XMAP real time pixel by pixel (after the first pixel)
    _, hdet = _hand_row_block(3)
    np.testing.assert_allclose(hdet[0][1:9] / 25e6, rt[:, 3, 1:9].mean(axis=0), rtol=2e-3)
    out = write_raw(tmp_path / "fly.h5", raw)
    check_layout(out)
    assert detect_kind(MDA) == "mda"


@needs_real
def test_real_fly_scan_options(tmp_path):
    sep = mda.read(MDA, elements="separate", i0="DS_IC")
    assert sorted(sep.channels) == ["channel00", "channel01", "channel02", "channel03"]
    with h5py.File(H5, "r") as f:
        b = np.moveaxis(f["MAPS_RAW/data_b"][()], 0, -1)
    np.testing.assert_array_equal(sep.channels["channel01"].spectra, b)
    header_calibration_b = (0.0501, 0.0094, 0.0)  # the MDA header's mca2.CALO/CALS/CALQ
    assert sep.channels["channel01"].calibration == pytest.approx(header_calibration_b)
    assert sep.attrs["member_attrs"]["channel01"]["calibration_source"] == (
        "MDA header PVs dxpXMAP2xfm3:mca2.CALO/CALS/CALQ")
    _, hdet = _hand_row_block(2)
    np.testing.assert_array_equal(sep.I0[2], hdet[2][:9])  # DS_IC = MCS channel 3
    by_pv = mda.read(MDA, i0="2xfm:mcs:mca3.VAL")
    np.testing.assert_array_equal(by_pv.I0, sep.I0)
    with pytest.raises(InputError, match="no I0 detector 'nonsense'"):
        mda.read(MDA, i0="nonsense")
    with pytest.raises(InputError, match="11 x 11 points but the spectra file"):
        mda.read(MDA, strict=True)
    with pytest.raises(InputError, match="'sum' or 'separate'"):
        mda.read(MDA, elements="all")


@needs_real
def test_real_fly_scan_spectra_file_lookup(tmp_path):
    alone = tmp_path / "alone" / MDA.name
    alone.parent.mkdir()
    shutil.copy(MDA, alone)
    with pytest.raises(InputError, match="no spectra file was found") as exc:
        mda.read(alone)
    assert str(alone) in str(exc.value)
    # the XRF-Maps folder layout: mda/ and flyXRF.h5/ side by side
    (tmp_path / "ws" / "mda").mkdir(parents=True)
    (tmp_path / "ws" / "flyXRF.h5").mkdir()
    shutil.copy(MDA, tmp_path / "ws" / "mda" / MDA.name)
    shutil.copy(H5, tmp_path / "ws" / "flyXRF.h5" / H5.name)
    raw = mda.read(tmp_path / "ws" / "mda" / MDA.name)
    assert raw.grid_shape == (11, 9) and len(raw.sources) == 2
    # explicit spectra= from elsewhere; a missing one is an InputError naming it
    raw2 = mda.read(alone, spectra=H5)
    np.testing.assert_array_equal(raw2.channels["channel00"].spectra, raw.channels["channel00"].spectra)
    with pytest.raises(InputError, match="spectra file not found"):
        mda.read(alone, spectra=tmp_path / "nope.h5")
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["other"] = np.zeros(3)
    with pytest.raises(InputError, match="MAPS_RAW"):
        mda.read(alone, spectra=bad)


# --------------------------------------------------------------------------- synthetic rank 3
def _synthetic(tmp_path: Path, name: str = "map.mda", **kw):
    rng = np.random.default_rng(7)
    rows, cols, nel, nch = 3, 4, 4, 300
    spectra = rng.poisson(4, (rows, cols, nel, nch)).astype(float)
    sc: dict[str, np.ndarray] = {}
    for e in range(1, nel + 1):
        icr = rng.uniform(1000, 2000, (rows, cols))
        sc[f"dxpXMAP2xfm3:dxp{e}:InputCountRate"] = icr
        sc[f"dxpXMAP2xfm3:dxp{e}:OutputCountRate"] = 0.8 * icr
        sc[f"dxpXMAP2xfm3:mca{e}.ERTM"] = np.full((rows, cols), 0.25 + 0.01 * e)
        sc[f"dxpXMAP2xfm3:mca{e}.ELTM"] = np.full((rows, cols), 0.2)
    sc["2xfm:scaler3_cts1.B"] = np.round(rng.uniform(1e5, 2e5, (rows, cols)))
    sc["2xfm:scaler3_cts1.C"] = np.round(rng.uniform(1e4, 2e4, (rows, cols)))
    x, y = np.linspace(-1, 1, cols), np.linspace(5, 6, rows)
    path = write_xfm_map(tmp_path / name, spectra, x, y, sc, **kw)
    return path, spectra, sc, x, y


def test_synthetic_rank3_map(tmp_path):
    path, spectra, sc, x, y = _synthetic(tmp_path)
    assert detect_kind(path) == "mda"
    raw = mda.read(path)
    ch = raw.channels["channel00"]
    assert raw.grid_shape == (3, 4) and ch.spectra.shape == (3, 4, 300)
    np.testing.assert_array_equal(ch.spectra, spectra.sum(axis=2))
    icr = sum(sc[f"dxpXMAP2xfm3:dxp{e}:InputCountRate"].astype(np.float32).astype(float) for e in range(1, 5))
    np.testing.assert_allclose(ch.icr, icr, rtol=1e-6)
    np.testing.assert_allclose(ch.ocr / ch.icr, 0.8, rtol=1e-5)
    np.testing.assert_allclose(raw.acquisition_time, np.mean([0.26, 0.27, 0.28, 0.29]), rtol=1e-6)
    np.testing.assert_array_equal(raw.I0, sc["2xfm:scaler3_cts1.B"])
    np.testing.assert_allclose(raw.mot1, np.broadcast_to(y[:, None], (3, 4)))
    np.testing.assert_allclose(raw.mot2, np.broadcast_to(x, (3, 4)))
    assert ch.calibration == pytest.approx((0.05, 0.0094, 0.0), abs=1e-12)  # the header's, as written
    assert raw.attrs["member_attrs"]["channel00"]["calibration_source"].startswith("MDA header PVs ")
    assert raw.attrs["member_attrs"]["I0"]["units"] == "counts/s"  # step-scan scalers are rates
    sep = mda.read(path, elements="separate", i0="DS_IC")
    np.testing.assert_array_equal(sep.channels["channel02"].spectra, spectra[:, :, 2])
    np.testing.assert_array_equal(sep.I0, sc["2xfm:scaler3_cts1.C"])
    out = write_raw(tmp_path / "map.h5", raw)
    check_layout(out)


def test_synthetic_detector_gaps_and_versions(tmp_path):
    path, spectra, sc, *_ = _synthetic(tmp_path, detector_numbers=[3 * i + 5 for i in range(18)])
    raw = mda.read(path)
    np.testing.assert_array_equal(raw.I0, sc["2xfm:scaler3_cts1.B"])
    _, items = level_arrays(read_mda(path), 2)
    assert [it.number for it in items][:3] == [5, 8, 11]
    for ver in (1.2, 1.4):
        buf = bytearray(path.read_bytes())
        buf[0:4] = struct.pack(">f", ver)
        p = tmp_path / f"v{ver}.mda"
        p.write_bytes(bytes(buf))
        assert detect_kind(p) == "mda"
        np.testing.assert_array_equal(mda.read(p).channels["channel00"].spectra, spectra.sum(axis=2))


def test_synthetic_incomplete_scans(tmp_path, caplog):
    path, spectra, *_ = _synthetic(tmp_path, "aborted.mda", rows_done=2, last_row_cpt=2)
    with caplog.at_level(logging.WARNING):
        raw = mda.read(path)
    assert raw.grid_shape == (2, 4) and "incomplete scan" in caplog.text
    np.testing.assert_array_equal(raw.channels["channel00"].spectra, spectra[:2].sum(axis=2))
    with pytest.raises(InputError, match="incomplete scan"):
        mda.read(path, strict=True)
    path, spectra, *_ = _synthetic(tmp_path, "firstrow.mda", rows_done=0, last_row_cpt=3)
    raw = mda.read(path)
    assert raw.grid_shape == (1, 3)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra[0], spectra[0, :3].sum(axis=1))


def test_synthetic_rank2_line_and_rank1_spectrum(tmp_path):
    rng = np.random.default_rng(3)
    sp = rng.poisson(5, (5, 2, 512)).astype(float)
    pixels = [ScanSpec(1, 512, 512, "t:scanH", detectors=[(e, f"t:mca{e + 1}.VAL", "", "", sp[i, e]) for e in range(2)])
              for i in range(5)]
    line = ScanSpec(2, 5, 5, "t:scan1", positioners=[(0, "t:m1.VAL", "", "mm", np.arange(5) * 0.1)],
                    detectors=[(0, "t:dxp1:InputCountRate", "", "", np.full(5, 100.0)),
                               (1, "t:dxp1:OutputCountRate", "", "", np.full(5, 50.0)),
                               (2, "t:dxp2:InputCountRate", "", "", np.full(5, 100.0)),
                               (3, "t:dxp2:OutputCountRate", "", "", np.full(5, 50.0))],
                    children=pixels)
    p = write_mda(tmp_path / "line.mda", line)
    raw = mda.read(p)
    assert raw.grid_shape == (1, 5)
    np.testing.assert_array_equal(raw.channels["channel00"].spectra[0], sp.sum(axis=1))
    np.testing.assert_allclose(raw.channels["channel00"].icr / raw.channels["channel00"].ocr, 2.0)
    np.testing.assert_allclose(raw.mot2[0], np.arange(5) * 0.1)
    one = write_mda(tmp_path / "one.mda", pixels[0])
    r1 = mda.read(one)
    assert r1.grid_shape == (1, 1)
    np.testing.assert_array_equal(r1.channels["channel00"].spectra[0, 0], sp[0].sum(axis=0))


# --------------------------------------------------------------------------- bad files
def test_truncated_and_corrupt_files(tmp_path):
    path, *_ = _synthetic(tmp_path)
    buf = path.read_bytes()
    for cut in (0, 5, 11, 30, 200, len(buf) // 2, len(buf) - 3):
        p = tmp_path / f"cut{cut}.mda"
        p.write_bytes(buf[:cut])
        with pytest.raises(InputError) as exc:
            mda.read(p)
        assert str(p) in str(exc.value)
    wrong = tmp_path / "wrong.mda"
    wrong.write_bytes(struct.pack(">f", 2.0) + buf[4:])
    assert not mda.sniff(wrong)
    with pytest.raises(InputError, match="version field"):
        mda.read(wrong)
    badrank = tmp_path / "rank.mda"
    badrank.write_bytes(buf[:8] + struct.pack(">i", 99) + buf[12:])
    with pytest.raises(InputError, match="rank"):
        mda.read(badrank)
    # an absurd string length inside the outer record (the scan name length at byte 32+12+4*3)
    b = bytearray(buf)
    name_at = 32 + 12 + 4 * 3
    assert struct.unpack_from(">i", b, name_at)[0] == len("2xfm:scan2")
    struct.pack_into(">i", b, name_at, 1 << 30)
    p = tmp_path / "strlen.mda"
    p.write_bytes(bytes(b))
    with pytest.raises(InputError, match="impossible length"):
        mda.read(p)
    # an unknown extra-PV type code
    extra_off = struct.unpack_from(">i", buf, 28)[0]
    b = bytearray(buf)
    code_at = extra_off + 4 + 4 + 4 + ((len("2xfm:scaler1.TP") + 3) & ~3) + 4  # count, name, empty desc
    assert struct.unpack_from(">i", b, code_at)[0] == 34
    struct.pack_into(">i", b, code_at, 31)
    p = tmp_path / "code.mda"
    p.write_bytes(bytes(b))
    with pytest.raises(InputError, match="unknown type code 31"):
        mda.read(p)
    empty = tmp_path / "empty.mda"
    empty.write_bytes(b"")
    with pytest.raises(InputError, match="only 0 bytes"):
        mda.read(empty)
    assert not mda.sniff(empty) and not mda.sniff(tmp_path / "missing.mda")
    with pytest.raises(InputError, match="cannot open"):
        mda.read(tmp_path / "missing.mda")
