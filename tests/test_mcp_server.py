"""The MCP server driven by the SDK's own client (in-process, and once over stdio)."""
from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import anyio
import h5py
import numpy as np
import pytest

pytest.importorskip("mcp")

from mcp import Client  # noqa: E402
from mcp.client.stdio import StdioServerParameters  # noqa: E402

from xrfproc import api  # noqa: E402
from xrfproc.server import build_server  # noqa: E402
from xrfproc.server.app import BearerTokenMiddleware, http_app, parser  # noqa: E402

ROWS, COLS = 10, 12
EXPECTED_TOOLS = {"inspect", "sum_spectrum", "image", "suggest_elements", "calibrate", "read_cnc", "simulate", "simulate_reference",
                  "demo_dataset", "convert", "make_config", "fit", "normalise", "detlim", "quantify", "div_by_cnc",
                  "cluster", "correlation_plot", "tomo", "run_recipe", "list_recipes"}
READ_ONLY = {"inspect", "suggest_elements", "read_cnc", "list_recipes"}


def call(server: Any, name: str, args: dict, **kw: Any) -> Any:
    async def go() -> Any:
        async with Client(server) as c:
            return await c.call_tool(name, args, **kw)
    return anyio.run(go)


def text(res: Any) -> str:
    return " ".join(getattr(c, "text", "") for c in res.content)


def copy_layout(src: Path, dst: Path) -> Path:
    """Copy a layout file with its bulk folder (same file name: the external link names ``<name>.d/``)."""
    assert src.name == dst.name
    shutil.copy2(src, dst)
    shutil.copytree(src.with_name(src.name + ".d"), dst.with_name(dst.name + ".d"))
    return dst


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("mcp_master")
    return api.simulate(d / "map.h5", rows=ROWS, cols=COLS, seed=3)


@pytest.fixture()
def root(tmp_path: Path, master: Path) -> Path:
    r = tmp_path / "data"
    r.mkdir()
    copy_layout(master, r / "map.h5")
    return r


def test_tools_list_schemas_and_annotations(tmp_path):
    server = build_server([tmp_path])

    async def go() -> Any:
        async with Client(server) as c:
            return (await c.list_tools()).tools
    tools = {t.name: t for t in anyio.run(go)}
    assert EXPECTED_TOOLS <= set(tools)
    for name, t in tools.items():
        assert t.description and len(t.description) > 30, name
        assert t.output_schema is not None, name
        props = t.input_schema["properties"]
        assert props, name
        assert t.annotations.read_only_hint == (name in READ_ONLY), name
        assert t.annotations.open_world_hint is False
    fit = tools["fit"].input_schema
    assert fit["required"] == ["h5file", "config"]
    assert fit["properties"]["mode"]["enum"] == ["fast", "precise", "engine"]
    assert "description" in fit["properties"]["mode"]
    sim = tools["simulate"].input_schema["properties"]
    assert sim["rows"]["minimum"] == 1 and sim["rows"]["maximum"] == 4096
    assert set(api.converter_kinds()) < set(tools["convert"].input_schema["properties"]["kind"]["enum"])
    assert "fitted" in tools["sum_spectrum"].output_schema["properties"]


def test_full_chain_over_stdio(tmp_path):
    """The whole chain through a server subprocess and the SDK's stdio client: simulate, inspect,
    suggest_elements, make_config, fit, normalise, detlim, quantify, cluster, image, sum_spectrum.
    The numbers are checked against the files and by hand (the MCP tools and the recipe runner are
    compared array by array in test_mcp_recipes)."""
    root = tmp_path / "data"
    root.mkdir()
    params = StdioServerParameters(command=sys.executable, args=["-m", "xrfproc.server", "--root", str(root)],
                                   cwd=str(root))
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(done: float, total: float | None, message: str | None) -> None:
        progress.append((done, total, message))

    async def go() -> tuple[set[str], dict[str, Any]]:
        out: dict[str, Any] = {}
        async with Client(params) as c:
            names = {t.name for t in (await c.list_tools()).tools}
            out["sim"] = await c.call_tool("simulate", {"out": "s.h5", "rows": ROWS, "cols": COLS, "seed": 5})
            out["ref"] = await c.call_tool("simulate_reference", {"out": "ref.h5", "cnc": "nist613", "rows": 3,
                                                                  "cols": 3, "seed": 4})
            out["els"] = await c.call_tool("suggest_elements", {"h5file": "s.h5", "energy_keV": 18.0})
            els = out["els"].structured_content["elements"]
            out["cfg"] = await c.call_tool("make_config", {"h5file": "s.h5", "elements": els, "energy_keV": 18.0,
                                                           "out": "c.cfg"})
            out["fit"] = await c.call_tool("fit", {"h5file": "s.h5", "config": "c.cfg", "mode": "fast"},
                                           progress_callback=on_progress)
            out["fit_ref"] = await c.call_tool("fit", {"h5file": "ref.h5", "config": "c.cfg"})
            out["norm"] = await c.call_tool("normalise", {"h5file": "s.h5"})
            out["norm_ref"] = await c.call_tool("normalise", {"h5file": "ref.h5"})
            out["detlim"] = await c.call_tool("detlim", {"h5file": "ref.h5", "cnc": "nist613.cnc"})
            out["quant"] = await c.call_tool("quantify", {"h5file": "s.h5", "references": ["ref.h5"]})
            out["cluster"] = await c.call_tool("cluster", {"h5file": "s.h5", "method": "kmeans", "n": 3})
            out["image"] = await c.call_tool("image", {"h5file": "s.h5", "dataset": "norm/channel00/ims",
                                                       "lines": ["Fe K", "Sr K"]})
            out["overview"] = await c.call_tool("image", {"h5file": "s.h5", "scale": "sqrt"})
            out["sum"] = await c.call_tool("sum_spectrum", {"h5file": "s.h5", "channel": "channel01",
                                                            "max_points": 128})
            out["inspect"] = await c.call_tool("inspect", {"h5file": "s.h5"})
        return names, out
    names, r = anyio.run(go)
    assert EXPECTED_TOOLS <= names
    for k, v in r.items():
        assert not v.is_error, (k, text(v))
    assert r["sim"].structured_content["grid"] == [ROWS, COLS]
    assert json.loads(r["sim"].content[0].text)["channels"] == ["channel00", "channel01"]
    els = r["els"].structured_content["elements"]
    assert {"Fe", "Cu", "Zn", "Sr"} <= set(els)
    assert r["cfg"].structured_content["config"] == "c.cfg" and "Fe" in (root / "c.cfg").read_text()

    f = h5py.File(root / "s.h5", "r")
    # fit: the summary describes the maps written; progress in spectra fitted, up to both channels
    got_fit = r["fit"].structured_content
    assert got_fit["mode"] == "fast" and set(got_fit["channels"]) == {"channel00", "channel01"}
    for c, ch in got_fit["channels"].items():
        ims, names_c = f[f"fit/{c}/ims"][()], list(f[f"fit/{c}/names"].asstr()[()])
        assert ch["names"] == names_c and ch["shape"] == [len(names_c), ROWS, COLS] == list(ims.shape)
        for i, line in enumerate(names_c):
            good = ims[i][np.isfinite(ims[i])]
            assert [ch["lines"][line][k] for k in ("min", "median", "max")] == pytest.approx(
                [good.min(), np.median(good), good.max()], rel=1e-6), (c, line)
        assert ch["sum_int"] == pytest.approx(dict(zip(names_c, f[f"fit/{c}/sum/int"][()].tolist())), rel=1e-6)
    dones = [p[0] for p in progress]
    assert len(progress) >= 2 and dones == sorted(dones) and progress[-1][0] == progress[-1][1] == 2 * ROWS * COLS

    # normalise: every map scaled by I0norm / I0 point by point
    i0norm = r["norm"].structured_content["I0norm"]
    i0 = f["raw/I0"][()]
    fe = list(f["norm/channel00/names"].asstr()[()]).index("Fe K")
    fe_map = f["norm/channel00/ims"][fe]
    np.testing.assert_allclose(fe_map, f["fit/channel00/ims"][fe] * i0norm / i0, rtol=1e-5)

    # detlim on the reference: yields and detection limits for the elements of NIST SRM 613
    dl = r["detlim"].structured_content["channels"]["channel00"]
    assert dl["yields"]["Fe K"] > 0 and dl["yields"]["Sr K"] > 0
    assert 0 < dl["detection_limits_ppm_1s"]["Fe K"] < 1000 and 0 < dl["detection_limits_ppm_1s"]["Sr K"] < 1000

    # quantify: each normalised map divided by the reference's yield of its line (one unit factor)
    q = r["quant"].structured_content["summary"]
    qnames = list(f["quant/channel00/names"].asstr()[()])
    assert q["unit"] == f["quant/channel00/ims"].attrs["unit"] == "ug/cm^2" and {"Fe K", "Sr K"} <= set(qnames)
    with h5py.File(root / "ref.h5", "r") as ref:
        ynames = list(ref["elyield/nist613/channel00/names"].asstr()[()])
        ref_yield = dict(zip(ynames, ref["elyield/nist613/channel00/yield"][()]))
    qy = f["quant/channel00/yield"][()]
    nnames = list(f["norm/channel00/names"].asstr()[()])
    factors = []
    for i, line in enumerate(qnames):
        assert qy[i] == pytest.approx(ref_yield[line], rel=1e-12), line
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = f["quant/channel00/ims"][i] * qy[i] / f["norm/channel00/ims"][nnames.index(line)]
        factors.append(ratio[np.isfinite(ratio)])
        assert q["channels"]["channel00"]["mean"][line] == pytest.approx(
            float(np.nanmean(f["quant/channel00/ims"][i])), rel=1e-5)
    allf = np.concatenate(factors)
    assert allf.size > 0 and np.ptp(allf) <= 1e-5 * abs(allf.mean())

    # cluster: K-means labels 0..2 on the grid
    labels = f["kmeans/channel00/ims"][()] if "kmeans/channel00/ims" in f else f["kmeans/ims"][()]
    assert labels.shape[-2:] == (ROWS, COLS) and set(np.unique(labels[np.isfinite(labels)]).astype(int)) <= {0, 1, 2}

    # image: image content that decodes as PNG, the file written, the stats of the drawn map
    img = r["image"]
    blocks = [c for c in img.content if c.type == "image"]
    assert len(blocks) == 1 and blocks[0].mime_type == "image/png"
    png = base64.b64decode(blocks[0].data)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image as mpimg
    pix = mpimg.imread(io.BytesIO(png), format="png")
    assert pix.ndim == 3 and pix.shape[0] > 100 and pix.shape[1] > 100
    sc = img.structured_content
    assert sc["dataset"] == "norm/channel00/ims" and sc["shape"] == [2, ROWS, COLS]
    assert (root / sc["png"]).read_bytes() == png
    assert sc["lines"]["Fe K"]["max"] == pytest.approx(float(np.nanmax(fe_map)), rel=1e-6)
    assert sc["lines"]["Fe K"]["median"] == pytest.approx(float(np.nanmedian(fe_map)), rel=1e-6)

    # all lines of the most processed group (quant/): the imaging step's overview figure
    ov = r["overview"]
    ov_png = base64.b64decode([c for c in ov.content if c.type == "image"][0].data)
    assert ov_png[:8] == b"\x89PNG\r\n\x1a\n" and (root / ov.structured_content["png"]).read_bytes() == ov_png
    assert ov.structured_content["dataset"] == "quant/channel00/ims"
    assert ov.structured_content["shape"] == [len(qnames), ROWS, COLS]

    # sum spectrum: binned data that adds up to the raw sum, the fit, the peaks found, a PNG
    s = r["sum"].structured_content
    raw_sum = f["raw/channel01/spectra"][()].reshape(-1, f["raw/channel01/spectra"].shape[-1]).sum(axis=0)
    assert len(s["counts"]) <= 128 and s["binning"] * len(s["counts"]) <= raw_sum.size
    assert sum(s["counts"]) == pytest.approx(raw_sum[: s["binning"] * len(s["counts"])].sum())
    assert {x["name"] for x in s["fitted"]} == set(got_fit["channels"]["channel01"]["names"])
    fitted = {x["name"]: x for x in s["fitted"]}
    assert fitted["Fe K"]["area"] == pytest.approx(got_fit["channels"]["channel01"]["sum_int"]["Fe K"], rel=1e-9)
    assert fitted["Fe K"]["energy_keV"] == pytest.approx(6.40, abs=0.01)
    assert {"Fe", "Sr"} <= {p["element"] for p in s["peaks"]}
    assert any(c.type == "image" for c in r["sum"].content) and (root / s["png"]).is_file()

    insp = r["inspect"].structured_content
    assert insp["grid"] == [ROWS, COLS] and insp["channels"] == ["channel00", "channel01"]
    assert {"fit", "norm", "quant", "kmeans"} <= set(insp["steps"])
    assert insp["steps"]["fit"]["parameters"]["mode"] == "fast"
    f.close()


def test_path_escapes_refused(root, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    copy_layout(root / "map.h5", outside / "map.h5")
    os.symlink(outside / "map.h5", root / "link.h5")
    with h5py.File(root / "ext.h5", "w") as f:
        f["raw"] = h5py.ExternalLink(str(outside / "map.h5"), "/raw")
    server = build_server([root])
    cases = [("inspect", {"h5file": "../outside/map.h5"}, "through '..'"),
             ("inspect", {"h5file": str(outside / "map.h5")}, "outside the server's data roots"),
             ("inspect", {"h5file": "link.h5"}, "through a symbolic link"),
             ("inspect", {"h5file": "ext.h5"}, "links to a file outside"),
             ("simulate", {"out": "../outside/new.h5", "rows": 2, "cols": 2}, "outside"),
             ("fit", {"h5file": "map.h5", "config": str(outside / "x.cfg")}, "outside"),
             ("read_cnc", {"cnc": "/etc/passwd"}, "outside")]
    for name, args, msg in cases:
        res = call(server, name, args)
        assert res.is_error, (name, args)
        assert msg in text(res), (name, text(res))
    assert not (outside / "new.h5").exists()


def test_bad_arguments_are_validation_errors(root):
    server = build_server([root])
    for name, args, field in [("fit", {"h5file": "map.h5", "config": "c.cfg", "mode": "turbo"}, "mode"),
                              ("simulate", {"out": "x.h5", "rows": 0, "cols": 3}, "rows"),
                              ("inspect", {}, "h5file"),
                              ("suggest_elements", {"h5file": "map.h5", "channel": "chan0"}, "channel"),
                              ("image", {"h5file": "map.h5", "scale": "cubic"}, "scale")]:
        res = call(server, name, args)
        assert res.is_error and field in text(res) and "validation error" in text(res), (name, text(res))
    assert not (root / "x.h5").exists()


def test_xrf_errors_reach_the_client(root):
    (root / "notes.h5").write_text("not hdf5")
    server = build_server([root])
    res = call(server, "inspect", {"h5file": "notes.h5"})
    assert res.is_error and "notes.h5: not a readable HDF5 file" in text(res)
    res = call(server, "inspect", {"h5file": "missing.h5"})
    assert res.is_error and "missing.h5: h5file: file not found" in text(res)
    before = sha(root / "map.h5")
    (root / "bad.cfg").write_text("[fit]\nnothing = 1\n")
    res = call(server, "fit", {"h5file": "map.h5", "config": "bad.cfg"})
    assert res.is_error and "bad.cfg" in text(res) and "Error executing tool fit" in text(res)
    res = call(server, "image", {"h5file": "map.h5"})
    assert res.is_error and "run the fit step first" in text(res)
    assert sha(root / "map.h5") == before


def test_resource_limit(root):
    server = build_server([root], max_pixels=ROWS * COLS - 1)
    res = call(server, "inspect", {"h5file": "map.h5"})
    assert res.is_error and "--max-pixels" in text(res) and f"{ROWS * COLS} points" in text(res)
    res = call(server, "simulate", {"out": "big.h5", "rows": 100, "cols": 100})
    assert res.is_error and "--max-pixels" in text(res) and not (root / "big.h5").exists()
    ok = call(build_server([root], max_pixels=ROWS * COLS), "inspect", {"h5file": "map.h5"})
    assert not ok.is_error


def test_cancelled_fit_leaves_file_unchanged(root):
    els = api.suggest_elements(root / "map.h5", 18.0)
    cfg = api.make_config(root / "map.h5", els, 18.0)
    before = sha(root / "map.h5")
    server = build_server([root])
    seen: list[float] = []

    async def go() -> tuple[bool, Any]:
        async with Client(server) as c:
            with anyio.CancelScope() as scope:
                async def on_progress(done: float, total: float | None, message: str | None) -> None:
                    seen.append(done)
                    scope.cancel()  # cancel at the first notification (one channel of two fitted)
                await c.call_tool("fit", {"h5file": "map.h5", "config": cfg.name}, progress_callback=on_progress)
            after = await c.call_tool("inspect", {"h5file": "map.h5"})  # the server still answers
        return scope.cancelled_caught, after
    cancelled, after = anyio.run(go)
    assert cancelled and seen == [ROWS * COLS]
    assert sha(root / "map.h5") == before
    assert not after.is_error and "fit" not in after.structured_content["steps"]
    with h5py.File(root / "map.h5") as f:
        assert "fit" not in f


def test_http_binding_rules(tmp_path):
    server = build_server([tmp_path])
    with pytest.raises(ValueError, match="requires a token"):
        http_app(server, host="0.0.0.0")
    assert http_app(server, host="127.0.0.1") is not None
    assert isinstance(http_app(server, host="0.0.0.0", token="s3cret"), BearerTokenMiddleware)
    args = parser().parse_args(["--http", "8123", "--root", str(tmp_path), "--root", "/tmp"])
    assert args.host == "127.0.0.1" and args.http == 8123 and args.root == [str(tmp_path), "/tmp"]

    reached: list[dict] = []

    async def app(scope: dict, receive: Any, send: Any) -> None:
        reached.append(scope)

    async def request(headers: list) -> int:
        sent: list[dict] = []

        async def send(msg: dict) -> None:
            sent.append(msg)
        await BearerTokenMiddleware(app, "s3cret")({"type": "http", "headers": headers}, None, send)
        return sent[0]["status"] if sent else 200
    assert anyio.run(request, []) == 401
    assert anyio.run(request, [(b"authorization", b"Bearer wrong")]) == 401
    assert anyio.run(request, [(b"authorization", b"Bearer s3cret")]) == 200 and len(reached) == 1


def test_tools_for_new_api_functions_appear_when_the_api_has_them(root, monkeypatch):
    calls: list[tuple[str, tuple, dict]] = []

    def fake(name: str) -> Any:
        def f(*args: Any, **kwargs: Any) -> dict:
            calls.append((name, args, kwargs))
            return {"file": args[0], "channels": {"channel00": {"counts": np.array([3, 4]), "x": float("nan")}}}
        return f
    gone = ("kmeans", "pca", "quantify", "tomo")
    # the api resolves its steps on first use: an api without them has neither the name nor the lazy entry
    monkeypatch.setattr(api, "_LAZY", {k: v for k, v in api._LAZY.items() if k not in gone})
    for name in gone:
        monkeypatch.delattr(api, name, raising=False)
    absent = build_server([root])

    async def names(server: Any) -> set[str]:
        async with Client(server) as c:
            return {t.name for t in (await c.list_tools()).tools}
    assert not {"cluster", "quantify", "tomo"} & anyio.run(names, absent)
    for name in ("kmeans", "pca", "quantify", "tomo"):
        monkeypatch.setattr(api, name, fake(name), raising=False)
    server = build_server([root])
    assert {"cluster", "quantify", "tomo"} <= anyio.run(names, server)
    res = call(server, "cluster", {"h5file": "map.h5", "method": "pca", "n": 3, "elements": ["Fe"]})
    assert not res.is_error, text(res)
    assert calls[-1][0] == "pca" and calls[-1][2]["ncomponents"] == 3 and calls[-1][2]["elements"] == ["Fe"]
    assert calls[-1][1][0] == (root / "map.h5").resolve()
    sc = res.structured_content
    assert sc["file"] == "map.h5" and sc["step"] == "pca"
    assert sc["summary"]["file"] == "map.h5" and sc["summary"]["channels"]["channel00"] == {"counts": [3, 4], "x": None}
    res = call(server, "quantify", {"h5file": "map.h5", "references": ["../ref.h5"]})
    assert res.is_error and "outside" in text(res)
