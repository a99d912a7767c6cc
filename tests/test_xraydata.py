"""xraydata: the thin layer over xraylib, checked against xraylib's own numbers."""
import math

import numpy as np
import pytest
import xraylib

from xrfproc.core import xraydata as xd
from xrfproc.errors import InputError


def test_symbols_and_numbers():
    assert xd.atomic_number("Fe") == 26
    assert xd.atomic_number(82) == 82
    assert xd.atomic_number(" Pb ") == 82
    assert xd.symbol(82) == "Pb"
    assert xd.symbol("Au") == "Au"
    assert xd.atomic_weight("Fe") == pytest.approx(55.845, abs=0.01)
    assert xd.parse_group("Fe K") == (26, "K")
    assert xd.parse_group("Pb L") == (82, "L")


@pytest.mark.parametrize("bad", ["Xx", "fe2", "", 0, 150])
def test_bad_element_raises(bad):
    with pytest.raises(InputError):
        xd.atomic_number(bad)


@pytest.mark.parametrize("bad", ["Fe", "Fe Q", "Xx K", "Fe K L"])
def test_bad_group_name_raises(bad):
    with pytest.raises(InputError):
        xd.parse_group(bad)


def test_k_group_matches_xraylib():
    g = xd.line_group("Fe", "K")
    assert g.name == "Fe K" and g.z == 26 and g.family == "K"
    assert set(g.lines) == {"KL2", "KL3", "KM2", "KM3"}
    for line, e, r in zip(g.lines, g.energies, g.rates):
        macro = getattr(xraylib, line + "_LINE")
        assert e == pytest.approx(xraylib.LineEnergy(26, macro), abs=1e-9)
        assert r == pytest.approx(xraylib.RadRate(26, macro), abs=1e-12)
    assert xd.line_energy("Fe", "KL3") == pytest.approx(6.4039, abs=1e-4)


def test_l_and_m_groups_hold_all_subshells():
    g = xd.line_group("Pb", "L")
    assert g.name == "Pb L"
    assert {"L3M5", "L2M4", "L1M3"} <= set(g.lines)
    assert not any(n.startswith("K") or n.startswith("M") for n in g.lines)
    # no composite macros (L1N67, L3P45 ...) that would count lines twice
    assert all(len(n) == 4 for n in g.lines)
    i = g.lines.index("L3M5")
    assert g.energies[i] == pytest.approx(xraylib.LineEnergy(82, xraylib.L3M5_LINE))
    m = xd.line_group("Au", "M")
    assert "M5N7" in m.lines and all(n[0] == "M" for n in m.lines)
    assert xd.line_group("O", "L").lines == () or all(e < 0.1 for e in xd.line_group("O", "L").energies)


def test_unknown_line_raises():
    with pytest.raises(InputError):
        xd.line_macro("KA9")
    with pytest.raises(InputError):
        xd.line_group("Fe", "N")
    assert xd.line_energy("Fe", "KN3") == 0.0  # exists as a macro, not for iron


def test_fluorescence_cross_sections():
    lines = ("KL3", "KL2", "KM3")
    cs = xd.fluorescence_cs("Fe", lines, 18.0)
    for c, line in zip(cs, lines):
        assert c == pytest.approx(xraylib.CS_FluorLine_Kissel_Cascade(26, getattr(xraylib, line + "_LINE"), 18.0))
    assert np.all(xd.fluorescence_cs("Fe", lines, 5.0) == 0)  # below the K edge (7.11 keV)
    assert xd.fluorescence_cs("Fe", ("KN3",), 18.0)[0] == 0.0


def test_attenuation_elements_and_compounds():
    mu = xd.mass_attenuation(["Si", 8], [1.0, 6.4, 18.0])
    assert mu.shape == (2, 3)
    for i, z in enumerate((14, 8)):
        for j, e in enumerate((1.0, 6.4, 18.0)):
            assert mu[i, j] == pytest.approx(xraylib.CS_Total(z, e), rel=1e-12)
    w_si = 28.0855 / (28.0855 + 2 * 15.999)
    mix = xd.compound_attenuation({"Si": w_si, "O": 1 - w_si}, [6.4, 18.0])
    hand = [w_si * xraylib.CS_Total(14, e) + (1 - w_si) * xraylib.CS_Total(8, e) for e in (6.4, 18.0)]
    assert mix == pytest.approx(hand, rel=1e-12)
    assert mix[0] == pytest.approx(xraylib.CS_Total_CP("SiO2", 6.4), rel=2e-3)
    ph = xd.photo_absorption("Si", 10.0)
    assert ph[0, 0] == pytest.approx(xraylib.CS_Photo(14, 10.0))
    zs, ws = xd.composition_arrays({"Fe": 0.2, 26: 0.1, "O": 0.7})
    assert zs.tolist() == [8, 26] and ws == pytest.approx([0.7, 0.3])


@pytest.mark.parametrize("bad", [{"Fe": -0.1}, {"Fe": float("nan")}, {"Qq": 0.5}])
def test_bad_composition_raises(bad):
    with pytest.raises(InputError):
        xd.compound_attenuation(bad, 10.0)


def test_bad_energy_raises():
    with pytest.raises(InputError):
        xd.mass_attenuation("Fe", [-1.0])


def test_scattering():
    th = math.radians(90)
    r = xd.rayleigh_dcs(["Fe", "O"], 18.0, th)
    c = xd.compton_dcs(["Fe", "O"], 18.0, th)
    assert r == pytest.approx([xraylib.DCS_Rayl(26, 18.0, th), xraylib.DCS_Rayl(8, 18.0, th)])
    assert c == pytest.approx([xraylib.DCS_Compt(26, 18.0, th), xraylib.DCS_Compt(8, 18.0, th)])
    assert xd.compton_energy(18.0, th) == pytest.approx(18.0 / (1 + 18.0 / 510.99895), rel=1e-5)


def test_edges_and_yields():
    assert xd.edge_energy("Pb", "L3") == pytest.approx(xraylib.EdgeEnergy(82, xraylib.L3_SHELL))
    assert xd.edge_energy("Fe", "K") == pytest.approx(7.112, abs=2e-3)
    assert xd.fluorescence_yield("Si", "K") == pytest.approx(xraylib.FluorYield(14, xraylib.K_SHELL))
    assert xd.jump_factor("Si", "K") == pytest.approx(xraylib.JumpFactor(14, xraylib.K_SHELL))
    with pytest.raises(InputError):
        xd.edge_energy("Fe", "Z9")
