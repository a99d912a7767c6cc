"""The official MCP Inspector (command-line mode, Node 20) lists our tools and calls `inspect`.

`make test` installs the inspector (npm package @modelcontextprotocol/inspector@0.15) into
`.ci/node/`; on a machine without it the test is skipped, except in CI (CI=true), where it must run.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import xrfproc

ROOT = Path(__file__).resolve().parents[1]
INSPECTOR = ROOT / ".ci" / "node" / "node_modules" / ".bin" / "mcp-inspector"
SERVER = Path(sys.executable).with_name("xrfproc-mcp")

available = INSPECTOR.exists() and shutil.which("node") is not None and SERVER.exists()
pytestmark = pytest.mark.skipif(not available and os.environ.get("CI") != "true",
                                reason="MCP Inspector not installed (make test installs it into .ci/node)")


def inspector(*args: str, cwd: Path) -> dict:
    res = subprocess.run([str(INSPECTOR), "--cli", str(SERVER), "--root", str(cwd), *args], cwd=cwd,
                         capture_output=True, text=True, timeout=180)
    assert res.returncode == 0, res.stderr[-2000:]
    return json.loads(res.stdout)


def test_inspector_lists_tools_and_calls_inspect(tmp_path):
    assert available, "CI must install the MCP Inspector (make test does)"
    path = xrfproc.simulate(tmp_path / "demo.h5", rows=3, cols=4, seed=1)
    tools = {t["name"]: t for t in inspector("--method", "tools/list", cwd=tmp_path)["tools"]}
    for name in ("inspect", "fit", "normalise", "quantify", "image", "run_recipe"):
        assert name in tools and tools[name]["description"]
    assert tools["fit"]["inputSchema"]["properties"]["mode"]["enum"] == ["fast", "precise", "engine"]
    out = inspector("--method", "tools/call", "--tool-name", "inspect", "--tool-arg", f"h5file={path.name}",
                    cwd=tmp_path)
    assert not out.get("isError")
    result = out["structuredContent"]
    assert result["grid"] == [3, 4] and result["channels"] == ["channel00", "channel01"]
