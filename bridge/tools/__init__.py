"""Tools over MCP: the tool loop of a reply (`loop`), its live progress (`progress`) and the
`[mcp]` section of the configuration (`settings`). The servers themselves are `adapters/mcp`."""
