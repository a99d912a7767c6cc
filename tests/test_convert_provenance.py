"""What the beamline files record, kept by the converters: excitation energy and its source, the origin of
the stored calibration, I0 units and dwell; an energy given wins (with a warning); re-converting in the
same folder; default output names. Real files of ``tests/data/real`` (APS 2-ID-E fly scan, GSE ``.mca``)."""
from __future__ import annotations

import logging
import shutil
from pathlib import Path

import anyio
import h5py
import numpy as np
import pytest

from xrfproc import api
from xrfproc.cli import main
from xrfproc.core.convert import default_output, gse_mca, mda, read_any, stitches
from xrfproc.core.convert.mda import is_layout_file
from xrfproc.errors import InputError
from xrfproc.testing.beamline_fixtures import make_id15_file, make_p06_scan

REAL = Path(__file__).resolve().parent / "data" / "real"
MDA = REAL / "2xfm_0011.mda"
FLY = REAL / "2xfm_0011_2xfm3__0.h5"
GSE = REAL / "xrf_spectra.mca"


def _fly_folder(tmp_path: Path) -> Path:
    """The fly scan and its spectra file copied into a fresh folder; returns the MDA path there."""
    d = tmp_path / "scan"
    d.mkdir()
    shutil.copy(MDA, d / MDA.name)
    shutil.copy(FLY, d / FLY.name)
    return d / MDA.name


def _raw_attrs(path: Path) -> tuple[dict, dict, dict]:
    with h5py.File(path, "r") as f:
        return dict(f["raw"].attrs), dict(f["raw/I0"].attrs), dict(f["raw/channel00"].attrs)


# --------------------------------------------------------------------------- energy from the files
def test_mda_energy_from_extra_pv():
    raw = mda.read(MDA)
    assert raw.energy_keV == pytest.approx(10.2975, abs=1e-4)
    assert raw.attrs["energy_source"] == "MDA extra PV ID02ds:Energy.VAL"
    found = mda.file_energy(mda.read_mda(MDA))
    assert found is not None and found[0] == pytest.approx(10.2975378, abs=1e-6)


def test_gse_energy_from_environment():
    raw = gse_mca.read(GSE)
    assert raw.energy_keV == pytest.approx(11.80005313, abs=1e-8)  # the readback, eV -> keV
    assert raw.attrs["energy_source"] == "GSE ENVIRONMENT 13IDA:E:E_RBV (Mono Energy readback)"
    assert gse_mca.mono_energy_keV(gse_mca.parse(GSE)["environment"]) == pytest.approx(11.80005313)


def test_energy_stored_as_raw_attributes(tmp_path):
    out = api.convert(_fly_folder(tmp_path))
    attrs, _, _ = _raw_attrs(out)
    assert attrs["energy_keV"] == pytest.approx(10.2975, abs=1e-4)
    assert attrs["energy_source"] == "MDA extra PV ID02ds:Energy.VAL"
    assert "energy_recorded_keV" not in attrs
    gse = api.convert(GSE, tmp_path / "gse.h5")
    attrs, i0, _ = _raw_attrs(gse)
    assert attrs["energy_keV"] == pytest.approx(11.80005, abs=1e-5)
    assert attrs["energy_source"].startswith("GSE ENVIRONMENT 13IDA:E:E_RBV")
    assert i0["units"] == "1"  # a GSE file records no beam monitor


def test_energy_given_wins_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        out = api.convert(_fly_folder(tmp_path), energy_keV=12.0)
    warned = [r.getMessage() for r in caplog.records if "energy given" in r.getMessage()]
    assert len(warned) == 1 and "12 keV" in warned[0] and "10.2975 keV" in warned[0]
    assert "ID02ds:Energy.VAL" in warned[0]
    attrs, _, _ = _raw_attrs(out)
    assert attrs["energy_keV"] == 12.0 and attrs["energy_source"] == "given (energy_keV)"
    assert attrs["energy_recorded_keV"] == pytest.approx(10.2975, abs=1e-4)
    assert attrs["energy_recorded_source"] == "MDA extra PV ID02ds:Energy.VAL"
    # within 1 eV of the file's: taken, no warning
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        raw = read_any(GSE, energy_keV=11.8005)
    assert raw.energy_keV == 11.8005 and "energy given" not in caplog.text
    # the reader called directly honours energy_keV too
    with caplog.at_level(logging.WARNING):
        assert gse_mca.read(GSE, energy_keV=9.0).energy_keV == 9.0
    assert "differs from the 11.8001 keV" in caplog.text


def test_energy_given_where_the_file_has_none(tmp_path, caplog):
    spectra = np.random.default_rng(0).poisson(3, (2, 3, 64))
    np.save(tmp_path / "s.npy", spectra)
    with caplog.at_level(logging.WARNING):
        out = api.convert(tmp_path / "s.npy", energy_keV=17.5, calibration=(0.0, 0.01))
    assert "energy given" not in caplog.text
    attrs, _, ch = _raw_attrs(out)
    assert attrs["energy_keV"] == 17.5 and attrs["energy_source"] == "given (energy_keV)"
    assert ch["calibration_source"] == "given (calibration=)"


def test_id15_and_p06_energy_sources(tmp_path):
    make_id15_file(tmp_path / "bliss.h5", energy_keV=21.0)
    raw = read_any(tmp_path / "bliss.h5", scan="1.1")
    assert raw.energy_keV == pytest.approx(21.0)
    assert raw.attrs["energy_source"] == "ID15 1.1/instrument/positioners/energy"
    assert raw.attrs["member_attrs"]["I0"]["units"] == "counts/mA"  # divided by the ring current
    assert raw.attrs["dwell_s"] == pytest.approx(0.1)
    raw = read_any(tmp_path / "bliss.h5", scan="1.1", divide_by_current=False, energy_keV=21.0005)
    assert raw.energy_keV == 21.0005 and raw.attrs["member_attrs"]["I0"]["units"] == "counts"
    make_p06_scan(tmp_path / "p06", energy_eV=12000.0)
    raw = read_any(tmp_path / "p06" / "scan_00001")
    assert raw.energy_keV == pytest.approx(12.0)
    assert raw.attrs["energy_source"].startswith("P06 ") and raw.attrs["energy_source"].endswith("scan/data/energy")
    assert raw.attrs["member_attrs"]["I0"]["units"] == "counts"


# --------------------------------------------------------------------------- calibration origin, I0 units
def test_calibration_source_and_i0_units_mda(tmp_path):
    out = api.convert(_fly_folder(tmp_path))
    attrs, i0, ch = _raw_attrs(out)
    # the MDA header's MCA calibration (0.05 keV + 0.0094 keV/channel) is stored, marked as the header's
    assert tuple(ch["calibration_keV"]) == pytest.approx((0.05, 0.0094, 0.0))
    assert ch["calibration_source"] == "MDA header PVs dxpXMAP2xfm3:mca1.CALO/CALS/CALQ"
    assert i0["units"] == "counts" and i0["source"] == "2xfm:mcs:mca2.VAL"  # fly scan: MCS counts per pixel
    with h5py.File(out, "r") as f:
        assert f["raw/acquisition_time"].attrs["units"] == "s"
        assert attrs["dwell_s"] == pytest.approx(np.median(f["raw/acquisition_time"][()]))
    assert 0.4 < attrs["dwell_s"] < 0.6
    sep = mda.read(MDA, elements="separate")
    assert sep.attrs["member_attrs"]["channel01"]["calibration_source"] == (
        "MDA header PVs dxpXMAP2xfm3:mca2.CALO/CALS/CALQ")


def test_step_scan_i0_is_a_rate(tmp_path):
    from xrfproc.testing.mda_fixture import write_xfm_map

    rng = np.random.default_rng(1)
    spectra = rng.poisson(3, (2, 3, 1, 300)).astype(float)
    sc = {"2xfm:scaler3_cts1.B": rng.uniform(1e5, 2e5, (2, 3)),
          "dxpXMAP2xfm3:dxp1:InputCountRate": np.full((2, 3), 1000.0),
          "dxpXMAP2xfm3:dxp1:OutputCountRate": np.full((2, 3), 900.0)}
    path = write_xfm_map(tmp_path / "step.mda", spectra, np.arange(3.0), np.arange(2.0), sc)
    raw = mda.read(path)
    assert raw.attrs["member_attrs"]["I0"] == {"units": "counts/s", "source": "2xfm:scaler3_cts1.B"}


def test_gse_calibration_source():
    raw = gse_mca.read(GSE)
    assert raw.attrs["member_attrs"]["channel00"]["calibration_source"] == (
        "GSE header CAL_OFFSET/CAL_SLOPE/CAL_QUAD of element 1")


# --------------------------------------------------------------------------- re-running, output names
def test_convert_twice_in_one_folder(tmp_path):
    src = _fly_folder(tmp_path)
    first = api.convert(src)
    assert first == src.with_name("2xfm_0011.h5")
    with h5py.File(first, "r") as f:
        spectra1, i01 = f["raw/channel00/spectra"][()], f["raw/I0"][()]
    # an output of the older naming beside it is a layout file, never a spectra file
    shutil.copy(first, src.with_name("2xfm_0011_merge.h5"))
    assert is_layout_file(src.with_name("2xfm_0011_merge.h5")) and not is_layout_file(src.with_name(FLY.name))
    assert mda.find_spectra_file(src) == src.with_name(FLY.name)
    second = api.convert(src)
    assert second == first
    with h5py.File(second, "r") as f:
        np.testing.assert_array_equal(f["raw/channel00/spectra"][()], spectra1)
        np.testing.assert_array_equal(f["raw/I0"][()], i01)
        assert f["raw"].attrs["energy_keV"] == pytest.approx(10.2975, abs=1e-4)
    # the command line, twice, in the same folder
    assert main(["convert", str(src)]) == 0
    assert main(["convert", str(src), "--energy", "10.2975"]) == 0
    with h5py.File(first, "r") as f:
        np.testing.assert_array_equal(f["raw/channel00/spectra"][()], spectra1)
        assert f["raw"].attrs["energy_source"] == "given (energy_keV)"


def test_a_real_second_spectra_file_is_still_ambiguous(tmp_path):
    src = _fly_folder(tmp_path)
    shutil.copy(FLY, src.with_name("2xfm_0011_2xfm3__1.h5"))
    with pytest.raises(InputError, match="several spectra files match"):
        mda.read(src)


def test_default_output_names(tmp_path):
    assert default_output(Path("d/2xfm_0011.mda")) == Path("d/2xfm_0011.h5")
    assert default_output(Path("d/scan_00012")) == Path("d/scan_00012.h5")
    assert default_output([Path("d/a.mca")]) == Path("d/a.h5")
    assert default_output([Path("d/a.mca"), Path("d/b.mca")]) == Path("d/a_merge.h5")
    assert stitches("d/bliss.h5", {"scan": ["1.1", "2.1"]}) and not stitches("d/bliss.h5", {"scan": ["1.1"]})
    assert default_output(Path("d/bliss.h5"), {"scan": ["1.1", "2.1"]}) == Path("d/bliss_merge.h5")
    # an HDF5 beamline file must not be overwritten by its own conversion
    assert default_output(tmp_path / "bliss.h5", {"scan": "1.1"}) == tmp_path / "bliss_merge.h5"
    make_id15_file(tmp_path / "bliss.h5")
    assert api.convert(tmp_path / "bliss.h5", scan="1.1") == tmp_path / "bliss_merge.h5"
    assert api.convert(GSE.parent / GSE.name, tmp_path / "x.h5").name == "x.h5"


def test_cli_energy_option_and_mcp_argument(tmp_path):
    from xrfproc.cli import build_parser

    args = build_parser().parse_args(["convert", "a.mda", "--energy", "10.5"])
    assert args.energy == 10.5
    pytest.importorskip("mcp")
    from mcp import Client

    from xrfproc.server import build_server

    async def go():
        async with Client(build_server([tmp_path])) as c:
            return {t.name: t for t in (await c.list_tools()).tools}
    prop = anyio.run(go)["convert"].input_schema["properties"]["energy_keV"]
    assert "keV" in prop["description"]
