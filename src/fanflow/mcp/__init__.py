"""MCP both ways (docs/mcp.md): `fanflow mcp serve` exposes fanflow as an MCP server
(fanflow.mcp.server), and the `mcp` node type calls MCP tools through one pooled session per
server per run (fanflow.mcp.pool, fanflow.mcp.config). The `mcp` SDK is an optional extra
(`fanflow[mcp]`): nothing here imports it until a session opens or the server starts."""
