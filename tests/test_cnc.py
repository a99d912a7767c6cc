"""Concentration files: every shipped reference reads, units are recognised, errors name the line."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from xrfproc.core.cnc import Cnc, read_cnc, write_cnc
from xrfproc.errors import ConfigError, XrfError

CNC_DIR = Path(__file__).resolve().parents[1] / "xrfproc" / "data" / "cnc"  # the bundled files


@pytest.mark.parametrize("path", sorted(CNC_DIR.glob("*.cnc")), ids=lambda p: p.name)
def test_every_shipped_file_reads(path):
    cnc = read_cnc(path)
    assert len(cnc.z) > 0 and np.all((cnc.z >= 1) & (cnc.z <= 98)) and np.all(cnc.conc >= 0)


def test_nist613_values():
    cnc = read_cnc(CNC_DIR / "nist613.cnc")
    assert cnc.name == "NIST 613" and cnc.unit == "ppm" and len(cnc.z) == 70
    assert cnc.density == pytest.approx(2490.945) and cnc.thickness == 960
    i = list(cnc.z).index(26)
    assert cnc.conc[i] == 51 and cnc.err[i] == 2
    # areal: ppm * rho * d -> ug/cm2
    assert cnc.areal_ug_cm2()[i] == pytest.approx(51e-6 * 2.490945 * 0.096 * 1e6)


def test_areal_units_recognised_not_misread():
    cnc = read_cnc(CNC_DIR / "axo.cnc")
    assert cnc.unit == "ng/mm^2" and cnc.areal
    assert cnc.areal_ug_cm2()[list(cnc.z).index(26)] == pytest.approx(0.504)  # 5.04 ng/mm2 = 0.504 ug/cm2
    with pytest.raises(ConfigError, match="areal"):
        cnc.mass_fractions()


def test_round_trip(tmp_path):
    cnc = Cnc(name="test glass", z=np.array([14, 26]), conc=np.array([4e5, 6e5]), err=np.array([1.0, 2.0]),
              density=2500, mass=10, thickness=100, notes=["made up"])
    back = read_cnc(write_cnc(tmp_path / "t.cnc", cnc))
    assert back.name == "test glass" and list(back.z) == [14, 26] and back.notes == ["made up"]
    np.testing.assert_allclose(back.conc, cnc.conc)


def template(rows, count=None, header="Z\tCert conc(ppm)\tStandard_error(ppm)"):
    count = len(rows) if count is None else count
    return "\n".join(["Standard_Name", "X", "Density(mg/cm^3)\tMass(mg)\tSample_thickness(micron)", "1000\t1\t10",
                      "Number of elements", str(count), header] + rows) + "\n"


@pytest.mark.parametrize("text,message", [
    (template(["26\t1e6\t0"], count=2), "announces 2 elements but only 1 rows"),
    (template(["99\t1e6\t0"]), "line 8: Z must be a whole number in 1..98"),
    (template(["26\t-5\t0"]), "line 8: concentration and error must not be negative"),
    (template(["26\tabc\t0"]), "line 8: the concentration must be a number"),
    (template(["26\t1e6\t0"], header="Z\tCert conc(furlongs)\tx"), "unknown concentration unit 'furlongs'"),
    ("Standard_Name\n", "at least 7 header lines"),
])
def test_bad_files_name_the_line(tmp_path, text, message):
    path = tmp_path / "bad.cnc"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message) as err:
        read_cnc(path)
    assert str(path) in str(err.value)


def test_more_rows_than_announced_are_read_with_a_warning(caplog):
    cnc = read_cnc(CNC_DIR / "sarm69.cnc")  # announces 26, lists 27 (the oxygen filler)
    assert len(cnc.z) == 27 and cnc.z[-1] == 8
    assert cnc.conc.sum() == pytest.approx(1e6, rel=0.01)
    assert "announces 26 elements but 27 rows follow" in caplog.text


def test_sum_far_from_a_million_warns(tmp_path, caplog):
    path = tmp_path / "low.cnc"
    path.write_text(template(["26\t1000\t0"]))
    read_cnc(path)
    assert "far from 1e6" in caplog.text


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_fuzz_only_our_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fz") / "f.cnc"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    try:
        read_cnc(path)
    except XrfError:
        pass
