"""`fanflow mcp serve`, driven with the SDK's client: over stdio (an agent-style session end to
end) and over streamable HTTP (one module-scoped server, its global budget set to 2)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("mcp")

from mcp import Client, StdioServerParameters

from fanflow.errors import WorkflowInvalid
from fanflow.mcp.server import parse_http
from test_mcp_client import free_port, wait_for_port

TOOLS = {"run", "start", "status", "cancel", "resume", "validate", "plan", "guide", "nodes",
         "runs_list", "runs_show"}  # fmt: skip


def data(result: Any) -> Any:
    """A tool's structured result (or its error text)."""
    assert "Traceback" not in "".join(getattr(c, "text", "") for c in result.content)
    if result.is_error:
        return {"tool_error": result.content[0].text}
    return result.structured_content


def shell(node_id: str, command: str) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command}}


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory):
    """`fanflow mcp serve --http` with a global budget of 2, shared by the module."""
    store = tmp_path_factory.mktemp("mcp-store")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "fanflow", "mcp", "serve", "--http", f"127.0.0.1:{port}",
         "--max-concurrent", "2", "--store", str(store)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=10)
        assert b"Traceback" not in err, err.decode()


def with_client(server: Any, body: Callable[[Client], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        async with Client(server) as client:
            return await body(client)

    return asyncio.run(main())


# --------------------------------------------------------------------------- stdio, end to end


@pytest.mark.slow
def test_agent_session_over_stdio(tmp_path: Path) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "fanflow", "mcp", "serve", "--store", str(tmp_path / "store")],
        cwd=str(tmp_path),
    )
    broken = {"ir_version": "0.1.0", "inputs": {"who": {"type": "string"}},
              "nodes": [{"id": "greet", "type": "shel", "params": {"command": "echo hi ${who}"}},
                        {"id": "shout", "type": "shell", "params": {"command": "echo ${gret.stdout}!"}}],
              "outputs": {"out": {"source": "${shout.stdout}"}}}  # fmt: skip

    async def session(c: Client) -> None:
        tools = {t.name for t in (await c.list_tools()).tools}
        assert tools >= TOOLS
        guide = await c.read_resource("fanflow://guide")
        assert "mcp" in guide.contents[0].text  # type: ignore[union-attr]
        assert "shell" in data(await c.call_tool("nodes", {}))["nodes"]

        check = data(await c.call_tool("validate", {"workflow": broken}))
        assert check["valid"] is False
        fields = {p["field"]: p for p in check["problems"]}
        assert fields["nodes[0].type"]["hint"] == "did you mean 'shell'?"
        assert fields["nodes[0].type"]["node"] == "greet"

        fixed = json.loads(json.dumps(broken).replace('"shel"', '"shell"').replace("gret", "greet"))
        assert data(await c.call_tool("validate", {"workflow": json.dumps(fixed)}))["valid"]
        plan = data(await c.call_tool("plan", {"workflow": fixed}))
        assert plan["levels"] == [["greet"], ["shout"]]
        assert plan["critical_path"] == ["greet", "shout"]

        missing = data(await c.call_tool("run", {"workflow": fixed}))
        assert "who" in missing["tool_error"]  # a required input: the CLI's message
        done = data(await c.call_tool("run", {"workflow": fixed, "inputs": {"who": "agent"}}))
        assert done.get("status") == "success", done
        assert done["outputs"] == {"out": "hi agent!"}
        assert done["nodes"]["greet"]["outputs"]["stdout"] == "hi agent"
        assert done["summary"]["critical_path"]

        path = tmp_path / "long.json"
        path.write_text(json.dumps({"ir_version": "0.1.0", "nodes": [
            shell("a", "sleep 0.4"), shell("b", "echo done")],
            "edges": [{"from": "a", "to": "b"}], "outputs": {"b": {"source": "${b.stdout}"}}}))  # fmt: skip
        started = data(await c.call_tool("start", {"workflow": str(path)}))
        run_id = started["run_id"]
        first = data(await c.call_tool("status", {"run_id": run_id}))
        assert first["status"] == "running" and first["progress"]["nodes_total"] == 2
        for _ in range(100):
            polled = data(await c.call_tool("status", {"run_id": run_id, "wait": 1}))
            if polled["status"] != "running":
                break
        assert polled["status"] == "success", polled
        assert polled["progress"]["nodes_done"] == 2
        assert polled["result"]["outputs"] == {"b": "done"}

        runs = data(await c.call_tool("runs_list", {}))["runs"]
        assert run_id in [r["id"] for r in runs] and done["run_id"] in [r["id"] for r in runs]
        shown = data(await c.call_tool("runs_show", {"run_id": run_id}))
        assert shown["nodes"]["b"]["status"] == "success"
        unknown = data(await c.call_tool("runs_show", {"run_id": "nope"}))
        assert "nope" in unknown["tool_error"]

    with_client(params, session)


# --------------------------------------------------------------------------- HTTP


@pytest.mark.slow
def test_two_concurrent_runs_share_one_global_budget(http_server: str, tmp_path: Path) -> None:
    log = tmp_path / "spans.log"
    item = f's=$(date +%s.%N); sleep 0.3; echo "$s $(date +%s.%N)" >> {log}'

    def wf(tag: str) -> dict[str, Any]:
        return {"ir_version": "0.1.0", "nodes": [
            {"id": f"b{tag}", "type": "shell", "params": {"command": item + " # ${item}"},
             "batch": {"items": [1, 2, 3], "parallel": True}}]}  # fmt: skip

    async def body(c: Client) -> list[Any]:
        return list(await asyncio.gather(
            c.call_tool("run", {"workflow": wf("x")}), c.call_tool("run", {"workflow": wf("y")})))  # fmt: skip

    results = [data(r) for r in with_client(http_server, body)]
    assert [r["status"] for r in results] == ["success", "success"], results
    spans = [tuple(map(float, line.split())) for line in log.read_text().splitlines()]
    assert len(spans) == 6
    edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    peak = now = 0
    for _, step in edges:
        now += step
        peak = max(peak, now)
    assert peak <= 2  # 6 items of two runs, one budget of 2 (each run alone could run 3)


@pytest.mark.slow
def test_failures_cancel_and_resume_keep_the_server_up(http_server: str, tmp_path: Path) -> None:
    counter, gate = tmp_path / "count", tmp_path / "gate"
    resumable = {"ir_version": "0.1.0", "nodes": [
        shell("a", f"echo x >> {counter}"), shell("b", f"test -e {gate}")],
        "edges": [{"from": "a", "to": "b"}]}  # fmt: skip
    path = tmp_path / "resumable.json"
    path.write_text(json.dumps(resumable))

    async def body(c: Client) -> None:
        failed = data(await c.call_tool("run", {"workflow": str(path)}))
        assert failed["status"] == "failed" and failed["failed_node"] == "b"
        bad = data(await c.call_tool("run", {"workflow": '{"ir_version": "0.1.0", "nodes": [}'}))
        assert "malformed JSON at line 1" in bad["tool_error"]
        assert (
            "unknown node type" in data(await c.call_tool("nodes", {"name": "shel"}))["tool_error"]
        )

        gate.write_text("open")
        resumed = data(await c.call_tool("resume", {"run_id": failed["run_id"]}))
        assert resumed["run_id"] == failed["run_id"]
        final = data(await c.call_tool("status", {"run_id": resumed["run_id"], "wait": 30}))
        assert final["status"] == "success", final
        assert counter.read_text().count("x") == 1  # `a` completed before: not run again

        long = {"ir_version": "0.1.0", "nodes": [shell("wait", "sleep 30")]}
        started = data(await c.call_tool("start", {"workflow": long}))
        t0 = time.monotonic()
        cancelled = data(await c.call_tool("cancel", {"run_id": started["run_id"]}))
        assert cancelled["status"] == "cancelled"
        assert time.monotonic() - t0 < 10
        shown = data(await c.call_tool("runs_show", {"run_id": started["run_id"]}))
        assert shown["status"] == "cancelled"
        assert "no run 'zzz'" in data(await c.call_tool("status", {"run_id": "zzz"}))["tool_error"]

    with_client(http_server, body)


def test_http_address_parsing() -> None:
    assert parse_http("8765") == ("127.0.0.1", 8765)
    assert parse_http(":8765") == ("127.0.0.1", 8765)
    assert parse_http("0.0.0.0:80") == ("0.0.0.0", 80)
    assert parse_http("[::1]:9000") == ("::1", 9000)
    with pytest.raises(WorkflowInvalid, match="--http"):
        parse_http("localhost:http")
