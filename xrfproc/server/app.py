"""Construction and command line of the xrfproc MCP server (``xrfproc-mcp``, ``python -m xrfproc.server``).

stdio by default; ``--http PORT`` serves streamable HTTP on 127.0.0.1 (another ``--host`` needs a
bearer token: ``--token`` or the environment variable ``XRFPROC_MCP_TOKEN``). Only protocol goes to
stdout; logging goes to stderr.
"""
from __future__ import annotations

import argparse
import hmac
import ipaddress
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from mcp.server.mcpserver import MCPServer

from .._version import __version__
from . import tools
from .paths import DataRoots

log = logging.getLogger(__name__)

DEFAULT_MAX_PIXELS = 4_000_000
TOKEN_ENV = "XRFPROC_MCP_TOKEN"

INSTRUCTIONS = """\
xrfproc turns synchrotron X-ray fluorescence maps into element images. Files are HDF5 layout files
inside the server's data roots (paths relative to the first root). A typical chain: convert (or
simulate / demo_dataset) -> inspect -> suggest_elements -> make_config -> fit -> normalise ->
image; detlim on a reference-material map. Look at maps with `image` and spectra with
`sum_spectrum`. Steps write their group atomically: a failed or cancelled step changes nothing."""


@dataclass
class ServerOptions:
    """What a server instance may do.

    Attributes
    ----------
    roots : DataRoots
        Folders the tools may read and write.
    max_pixels : int
        Largest map (points) one call may process.
    time_limit_s : float or None
        Seconds a long step (fit, normalise) may run before it is stopped (checked at its
        progress reports); None: no limit.
    """

    roots: DataRoots
    max_pixels: int = DEFAULT_MAX_PIXELS
    time_limit_s: float | None = None


class XrfServer(MCPServer):
    """The MCP server with every xrfproc tool; ``options`` is what the tools read."""

    def __init__(self, options: ServerOptions, log_level: str = "WARNING"):
        super().__init__(name="xrfproc", title="xrfproc XRF mapping", version=__version__,
                         instructions=INSTRUCTIONS, log_level=log_level)  # type: ignore[arg-type]
        self.options = options
        tools.register(self)


def build_server(roots: Sequence[str | Path] | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 time_limit_s: float | None = None, log_level: str = "WARNING") -> XrfServer:
    """A server restricted to ``roots`` (default: the working directory)."""
    if max_pixels < 1:
        raise ValueError("max_pixels must be at least 1")
    opts = ServerOptions(DataRoots(list(roots) if roots else [Path.cwd()]), int(max_pixels), time_limit_s)
    return XrfServer(opts, log_level=log_level)


# --------------------------------------------------------------------------- HTTP
def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class BearerTokenMiddleware:
    """ASGI middleware: every HTTP request needs ``Authorization: Bearer <token>`` (constant-time check)."""

    def __init__(self, app: Any, token: str):
        self.app = app
        self.expected = f"Bearer {token}".encode()

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            got = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(got, self.expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"text/plain"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b"missing or wrong bearer token\n"})
                return
        await self.app(scope, receive, send)


def http_app(server: XrfServer, host: str = "127.0.0.1", token: str | None = None) -> Any:
    """The streamable-HTTP ASGI app (path ``/mcp``), behind a bearer-token check when ``token`` is given.

    Raises
    ------
    ValueError
        A non-loopback ``host`` without a token.
    """
    if not is_loopback(host) and not token:
        raise ValueError(f"binding to {host} (not the loopback interface) requires a token: "
                         f"--token or the environment variable {TOKEN_ENV}")
    app = server.streamable_http_app(host=host)
    return BearerTokenMiddleware(app, token) if token else app


# --------------------------------------------------------------------------- command line
def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xrfproc-mcp", description="MCP server exposing the xrfproc processing steps "
                                "as tools (stdio by default).")
    p.add_argument("--root", action="append", metavar="DIR",
                   help="data folder the tools may read and write (repeatable; default the working directory)")
    p.add_argument("--max-pixels", type=int, default=DEFAULT_MAX_PIXELS,
                   help=f"largest map one call may process (default {DEFAULT_MAX_PIXELS})")
    p.add_argument("--scheduler", metavar="ADDR",
                   help="Dask scheduler for fit steps (tcp://host:8786; default $XRFPROC_SCHEDULER or local)")
    p.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                   help="stop long steps after this many seconds (default: no limit)")
    p.add_argument("--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT instead of stdio")
    p.add_argument("--host", default="127.0.0.1", help="HTTP bind address (default 127.0.0.1; another address "
                   f"needs a token)")
    p.add_argument("--token", default=None, help=f"bearer token for HTTP (default: ${TOKEN_ENV})")
    p.add_argument("--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.scheduler:
        os.environ["XRFPROC_SCHEDULER"] = args.scheduler  # read by xrfproc.scheduler.resolve
    logging.basicConfig(stream=sys.stderr, level=args.log_level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server = build_server(args.root, args.max_pixels, args.time_limit, args.log_level)
    except Exception as exc:  # noqa: BLE001 (a bad root: one line, no traceback)
        print(f"xrfproc-mcp: {exc}", file=sys.stderr)
        return 2
    log.info("xrfproc MCP server, data roots %s", server.options.roots)
    if args.http is None:
        server.run("stdio")
        return 0
    token = args.token or os.environ.get(TOKEN_ENV) or None
    try:
        app = http_app(server, args.host, token)
    except ValueError as exc:
        print(f"xrfproc-mcp: {exc}", file=sys.stderr)
        return 2
    import uvicorn

    uvicorn.run(app, host=args.host, port=args.http, log_level=args.log_level.lower())
    return 0
