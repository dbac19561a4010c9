"""A test MCP server written with the official SDK (mcp 2.x `MCPServer`).

    python toolbox.py                 stdio (the default)
    python toolbox.py http PORT       streamable HTTP on 127.0.0.1:PORT

Tools: `sleep` (records how many calls overlap, so tests observe parallelism and caps at the
server), `stats` (those counts), `words` (structured output: a list to batch over), `shout`
(plain text), `as_json` (a dict: JSON text content), `fail` (a ToolError), `crash` (the
process dies mid-call, as a crashing server does), `crash_once` (dies on the first call only),
`pid` (the server's process id).
"""

from __future__ import annotations

import asyncio
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel

server = MCPServer("fanflow-test-toolbox")

_state = {"in_flight": 0, "max_in_flight": 0, "calls": 0, "cancelled": 0}


class Words(BaseModel):
    words: list[str]
    count: int


@server.tool()
async def sleep(seconds: float = 0.5, tag: str = "") -> str:
    """Sleep for `seconds`; returns the tag. Counts overlapping calls."""
    _state["in_flight"] += 1
    _state["calls"] += 1
    _state["max_in_flight"] = max(_state["max_in_flight"], _state["in_flight"])
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:  # the client cancelled the request (or went away)
        _state["cancelled"] += 1
        raise
    finally:
        _state["in_flight"] -= 1
    return tag or "slept"


@server.tool()
def stats(reset: bool = False) -> dict[str, int]:
    """Calls so far and the most that were in flight at once."""
    out = dict(_state)
    if reset:
        _state.update(in_flight=0, max_in_flight=0, calls=0, cancelled=0)
    return out


@server.tool()
def words(text: str) -> Words:
    """Split text into words (structured output)."""
    parts = text.split()
    return Words(words=parts, count=len(parts))


@server.tool()
def shout(text: str) -> str:
    """Upper-case the text (plain text output)."""
    return text.upper()


@server.tool(structured_output=False)
def as_json(key: str, value: int) -> dict[str, int]:
    """A dict returned without an output schema: arrives as JSON text."""
    return {key: value}


@server.tool()
def fail(message: str = "no luck") -> str:
    """Always fails with a ToolError."""
    raise ToolError(message)


@server.tool()
async def crash(after: float = 0.0) -> str:
    """The server process dies (mid-call)."""
    await asyncio.sleep(after)
    os._exit(3)


@server.tool()
def crash_once(marker: str) -> str:
    """Dies the first time (creating `marker`), answers on the next session."""
    if not os.path.exists(marker):
        with open(marker, "w") as f:
            f.write(str(os.getpid()))
        os._exit(4)
    return "recovered"


@server.tool()
def pid() -> int:
    """The server's process id (tests see whether a session was reused)."""
    return os.getpid()


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "http":
        server.settings.log_level = "WARNING"
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run("stdio")
