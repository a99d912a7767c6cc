"""The MCP server front-end (see the MCP issue)."""
