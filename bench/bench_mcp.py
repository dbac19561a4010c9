"""MCP tool calls from workflows: calls per second over one pooled stdio session (what fanflow
does) against one session per call (a server started per node: pflow's behaviour before its
connection pool), with the raw SDK over one session measured in the same run as the ideal.

    python bench/bench_mcp.py                 # 200 pooled calls, 10 session-per-call calls
    python bench/bench_mcp.py --calls 50 --fresh 5

Rows:
- raw SDK, one session, N concurrent calls (the ideal: no engine in the way)
- fanflow batch of N calls, parallel, one session (includes starting the server once)
- fanflow batch of N calls, sequential, one session
- one session per call (spawn server, handshake, call, close), sequential
- fan-out of 20 calls to a tool that sleeps 0.5 s: wall time against the ideal 0.5 s
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

import fanflow

TOOLBOX = str(Path(__file__).resolve().parents[1] / "tests" / "mcp_servers" / "toolbox.py")
STDIO = {"command": sys.executable, "args": [TOOLBOX]}


def _workflow(n: int, parallel: bool, tool: str = "shout", args: Any = None) -> dict[str, Any]:
    return {
        "ir_version": "0.1.0",
        "mcp_servers": {"tb": STDIO},
        "nodes": [{"id": "open", "type": "mcp", "params": {"server": "tb", "tool": "pid"}},
                  {"id": "c", "type": "mcp",
                   "params": {"server": "tb", "tool": tool,
                              "arguments": args or {"text": "x${item}"}},
                   "batch": {"items": list(range(n)), "parallel": parallel,
                             "max_concurrent": 1000}}],
        "edges": [{"from": "open", "to": "c"}],
    }  # fmt: skip


def _fanflow(n: int, parallel: bool, tool: str = "shout", args: Any = None) -> tuple[float, float]:
    """(whole run, the batch alone): the `open` node starts the server first."""
    started = time.perf_counter()
    result = fanflow.run(_workflow(n, parallel, tool, args), checkpoint=False)
    took = time.perf_counter() - started
    assert result.ok, result.error
    return took, result.nodes["c"].duration_ms / 1000


async def _raw(n: int) -> tuple[float, float]:
    from mcp import Client, StdioServerParameters

    started = time.perf_counter()
    async with Client(StdioServerParameters(command=sys.executable, args=[TOOLBOX])) as c:
        await c.call_tool("pid", {})  # as the workflows' `open` node: the first call warms up
        connected = time.perf_counter()
        await asyncio.gather(*(c.call_tool("shout", {"text": f"x{i}"}) for i in range(n)))
        calls = time.perf_counter() - connected
    return connected - started, calls


async def _fresh(n: int) -> float:
    from mcp import Client, StdioServerParameters

    started = time.perf_counter()
    for i in range(n):
        async with Client(StdioServerParameters(command=sys.executable, args=[TOOLBOX])) as c:
            await c.call_tool("shout", {"text": f"x{i}"})
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--fresh", type=int, default=10, help="session-per-call calls")
    a = parser.parse_args()
    n = a.calls

    connect, raw_calls = asyncio.run(_raw(n))
    par = _fanflow(n, True)
    seq = _fanflow(n, False)
    fresh = asyncio.run(_fresh(a.fresh))
    fan = _fanflow(20, True, "sleep", {"seconds": 0.5})

    def rate(count: int, seconds: float) -> float:
        return count / seconds if seconds > 0 else float("inf")

    raw_rate = rate(n, raw_calls)
    rows = [
        (f"raw SDK, one session, {n} concurrent (ideal)", raw_rate, f"connect {connect:.2f} s"),
        (f"fanflow batch of {n}, parallel, one session", rate(n, par[1]),
         f"run {par[0]:.2f} s incl. server start"),
        (f"fanflow batch of {n}, sequential, one session", rate(n, seq[1]), f"run {seq[0]:.2f} s"),
        (f"one session per call, sequential ({a.fresh})", rate(a.fresh, fresh), f"{fresh:.2f} s"),
    ]  # fmt: skip
    print(f"{'scenario':<52} {'calls/s':>9}  {'vs ideal':>8}  note")
    for name, r, note in rows:
        print(f"{name:<52} {r:>9.1f}  {r / raw_rate:>8.3f}  {note}")
    pooled = rate(n, par[1])
    print(f"\npooled (parallel) vs session per call: {pooled / rate(a.fresh, fresh):.1f}x calls/s")
    print(f"20 × sleep(0.5) fan-out on one session: {fan[1]:.2f} s (ideal 0.50 s; one at a "
          f"time 10 s); whole run {fan[0]:.2f} s with the server start")  # fmt: skip


if __name__ == "__main__":
    main()
