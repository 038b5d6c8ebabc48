"""``florence2 mcp``: the tools through the MCP SDK's client, and the inputs (addresses, paths, cache)."""
