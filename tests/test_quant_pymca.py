"""Fundamental-parameter sensitivities against PyMca's own concentration tool (issue 17).

PyMca's ``ConcentrationsTool`` (``usematrix=0``: flux, time and solid angle given) returns, for a fit
result, the area every group would have at mass fraction 1 in the matrix (``area``), computed by
PyMca's own physics (``Elements.getMultilayerFluorescence``: its shell constants, cross sections and
attenuation tables, matrix absorption line by line, the air path and window as attenuators). Ours:
``S_i x rho x d_eff,i`` (:mod:`xrfproc.core.fpyields`, :func:`xrfproc.core.absorption.group_effective_thickness`).
Both are compared relative to Fe K (the instrument constant cancels), for a thin film (2 um mylar) and a
thick matrix (5 mm SiO2), at 25 keV with 1 cm of air and 8 um of Be.

The detector crystal is left out of both: PyMca counts a photon as detected when it interacts in the
crystal at all (total attenuation), ours when it is photo-absorbed (the full-energy peak); at 20 keV in
0.45 mm of Si the two differ by 7 %, below 10 keV by less than 1 %.

Measured agreement: K lines 2-20 keV within 1.3 % (thin) and 4.4 % (S K at 2.3 keV, thick SiO2; all
others within 1.3 %); L lines from Yb L (8.1 keV) up within 5 %. L lines of Ba to Gd (4.8-6.6 keV)
differ by 6-12 %: the two databases' L-subshell data (fluorescence and Coster-Kronig yields) disagree
there; a test below records it (xfail) rather than hides it.
"""
from __future__ import annotations

import pytest

PyMca5 = pytest.importorskip("PyMca5")

from xrfproc.core import absorption, fpyields, geometry as cgeo, xraydata as xd  # noqa: E402

E0 = 25.0
GEO = cgeo.resolve("generic", air_path_cm=1.0, window_um=8.0, crystal_mm=0.0)
K_LINES = ["S K", "K K", "Ca K", "Ti K", "Cr K", "Fe K", "Ni K", "Zn K", "As K", "Br K", "Rb K", "Sr K", "Zr K",
           "Mo K", "Ru K"]
L_HIGH = ["Yb L", "W L", "Au L", "Pb L", "Bi L", "U L"]  # L lines above 8 keV
L_MID = ["Nd L", "Gd L"]  # L lines 5-8 keV
MATRICES = {"thin": ("C10H8O4", 1.39, 2e-4), "thick": ("Si1O2", 2.2, 0.5)}  # PyMca formula, g/cm3, cm


def _pymca_areas(groups, matrix):
    from PyMca5.PyMcaPhysics.xrf import ConcentrationsTool

    att = {"Matrix": [1, matrix[0], matrix[1], matrix[2], GEO.incidence_deg, GEO.exit_deg],
           "BeWindow": [1, "Be", 1.848, GEO.window_um * 1e-4, 1.0],
           "Air": [1, "Air", 0.0012048, GEO.air_path_cm, 1.0]}
    config = {"attenuators": att, "userattenuators": {}, "multilayer": {},
              "fit": {"energy": [E0], "energyflag": [1], "energyweight": [1.0]}}
    fitresult = {"result": {"config": config, "groups": list(groups)}}
    for g in groups:
        fitresult["result"][g] = {"fitarea": 1.0, "sigmaarea": 0.0}
    tool = ConcentrationsTool.ConcentrationsTool()
    conc = {"usematrix": 0, "useattenuators": 1, "usemultilayersecondary": 0, "usexrfmc": 0, "flux": 1e10,
            "time": 1.0, "area": 30.0, "distance": 10.0, "reference": "Auto", "mmolarflag": 0}
    out = tool.processFitResult(config=conc, fitresult=fitresult, elementsfrommatrix=False)
    out = out[0] if isinstance(out, tuple) else out
    return {g: float(out["area"][g]) for g in groups}


def _ours(groups, matrix):
    formula = {"C10H8O4": "C10H8O4", "Si1O2": "SiO2"}[matrix[0]]
    comp = xd.formula_mass_fractions(formula)
    rho, d = matrix[1], matrix[2]
    return {g: fpyields.sensitivity(g, E0, GEO) * rho * absorption.group_effective_thickness(
        g, E0, comp, rho, d, GEO.incidence_deg, GEO.exit_deg, GEO) for g in groups}


def _relative(groups, matrix):
    allg = list(dict.fromkeys(groups + ["Fe K"]))
    p, o = _pymca_areas(allg, matrix), _ours(allg, matrix)
    ref = p["Fe K"] / o["Fe K"]
    return {g: p[g] / o[g] / ref for g in groups}


@pytest.mark.parametrize("config", sorted(MATRICES))
def test_k_lines_2_to_20_keV_within_5_percent_of_pymca(config):
    rel = _relative(K_LINES, MATRICES[config])
    for g, r in rel.items():
        e = fpyields.detected_energy(g, E0, GEO)
        assert 2.0 <= e <= 20.0
        assert r == pytest.approx(1.0, abs=0.05), (config, g, r)
    # most agree far better: the same physics, different tables
    assert sorted(abs(r - 1) for r in rel.values())[len(rel) // 2] < 0.005


@pytest.mark.parametrize("config", sorted(MATRICES))
def test_l_lines_above_8_keV_within_5_percent_of_pymca(config):
    for g, r in _relative(L_HIGH, MATRICES[config]).items():
        assert fpyields.detected_energy(g, E0, GEO) > 8.0
        assert r == pytest.approx(1.0, abs=0.05), (config, g, r)


@pytest.mark.parametrize("config", sorted(MATRICES))
def test_l_lines_5_to_8_keV_databases_differ(config):
    """Nd L and Gd L: xraylib and PyMca's L-shell data differ by 6-12 %; within 13 %, not 5 %."""
    rel = _relative(L_MID, MATRICES[config])
    for g, r in rel.items():
        assert 5.0 < fpyields.detected_energy(g, E0, GEO) < 8.0
        assert r == pytest.approx(1.0, abs=0.13), (config, g, r)


@pytest.mark.xfail(strict=True, reason="xraylib and PyMca L-subshell data differ by 6-12 % for Nd..Gd L (5-8 keV)")
def test_l_lines_5_to_8_keV_within_5_percent_of_pymca():
    for g, r in _relative(L_MID, MATRICES["thin"]).items():
        assert r == pytest.approx(1.0, abs=0.05), (g, r)
