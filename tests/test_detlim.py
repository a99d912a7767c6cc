"""Detection limits and yields: the formula by hand, error propagation, the written groups."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from xrfproc import store
from xrfproc.core import absorption, detlim as cd
from xrfproc.core.cnc import read_cnc
from xrfproc.core.rawmap import RawChannel, RawMap
from xrfproc.steps.detlim import detlim

CNC = Path(__file__).resolve().parents[1] / "xrfproc" / "data" / "cnc"  # the bundled files


def test_detection_limit_formula_by_hand():
    cnc = read_cnc(CNC / "nist613.cnc")
    names = ["Fe K", "Rayl", "Zn K", "Xx K"][:3]
    ip = np.array([4.0e4, 1e6, 2.5e4])
    ib = np.array([1.0e4, 5e3, 3.6e3])
    t = 100.0
    res = cd.detection_limits(names, ip, ib, t, cnc)
    assert res.names == ["Fe K", "Zn K"] and res.skipped == ["Rayl"]
    c_fe, e_fe = 51.0, 2.0
    dl_fe = 3 * np.sqrt(1.0e4 / t) / (4.0e4 / t) * c_fe
    assert res.dl[1.0][0] == pytest.approx(dl_fe)
    assert res.dl[1000.0][0] == pytest.approx(dl_fe / np.sqrt(1000))
    rel = np.sqrt((np.sqrt(4.0e4 + 2e4) / 4.0e4) ** 2 + (0.5 * np.sqrt(1e4) / 1e4) ** 2 + (e_fe / c_fe) ** 2)
    assert res.dl_err[1.0][0] == pytest.approx(dl_fe * rel)
    # more peak counts -> lower DL; more background -> higher DL
    assert cd.detection_limits(["Fe K"], ip[:1] * 2, ib[:1], t, cnc).dl[1.0][0] < dl_fe
    assert cd.detection_limits(["Fe K"], ip[:1], ib[:1] * 2, t, cnc).dl[1.0][0] > dl_fe


def test_effective_thickness_limits():
    comp = {"Si": 0.35, "O": 0.47, "Na": 0.1, "Ca": 0.08}
    chi = absorption.chi(comp, 20.0, np.array([6.4, 15.0]))
    thin = absorption.effective_thickness(chi, 2.5, 1e-6)
    thick = absorption.effective_thickness(chi, 2.5, np.inf)
    np.testing.assert_allclose(thin, 1e-6, rtol=1e-3)
    np.testing.assert_allclose(thick, 1 / (chi * 2.5))
    # low-energy lines see a shallower depth
    assert thick[0] < thick[1]


def test_detlim_step_writes_layout(tmp_path):
    grid = (3, 4)
    raw = RawMap({"channel00": RawChannel(np.ones(grid + (16,), np.uint32), np.ones(grid), np.ones(grid))},
                 I0=np.full(grid, 1e5), acquisition_time=np.full(grid, 0.5), mot1=np.zeros(grid),
                 mot2=np.zeros(grid), energy_keV=20.0)
    path = store.write_raw(tmp_path / "srm.h5", raw)
    names = ["Fe K", "Zn K", "Compt"]
    ip = np.array([4e4, 2e4, 1e6])
    ib = np.array([1e4, 4e3, 1e3])
    with store.transaction(path, "fit", replace=["fit"]) as tx:
        g = tx.group("fit/channel00")
        store.write_array(g, "names", names)
        store.write_array(g, "ims", np.ones((3,) + grid))
        store.write_array(g, "sum/int", ip)
        store.write_array(g, "sum/bkg", ib)
    from xrfproc.steps.normalise import normalise
    normalise(path, I0norm=1e5)
    summary = detlim(path, CNC / "nist613.cnc")
    with store.open_read(path) as f:
        g = f["detlim/nist613/channel00"]
        assert store.decode_names(g["names"][()]) == ["Fe K", "Zn K"]
        assert f["detlim"].attrs["unit"] == "ppm"
        dl = g["1s"]["data"][()]
        assert dl[0] == pytest.approx(3 * np.sqrt(1e4 * 6.0) / 4e4 * 51.0)  # t = 12 points x 0.5 s
        np.testing.assert_allclose(g["1000s"]["data"][()], dl / np.sqrt(1000))
        y = f["elyield/nist613/channel00"]
        assert y["yield"].attrs["unit"] == cd.YIELD_UNIT
        assert store.decode_names(y["names"][()]) == ["Fe K", "Zn K"]
        assert np.all(y["yield"][()] > 0) and np.all(y["stddev"][()] > 0)
    assert summary["channels"]["channel00"]["skipped"] == ["Compt"]
