"""``python -m xrfproc.server``: the MCP server (see :mod:`xrfproc.server.app`)."""
import sys

from .app import main

sys.exit(main())
