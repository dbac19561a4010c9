"""MCP tools as workflow nodes: real test servers (tests/mcp_servers/toolbox.py, written with the
SDK) started as subprocesses over stdio, and over streamable HTTP on a free loopback port."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import fanflow
from conftest import run_cli
from fanflow.errors import WorkflowInvalid

pytest.importorskip("mcp")

TOOLBOX = str(Path(__file__).parent / "mcp_servers" / "toolbox.py")
STDIO = {"command": sys.executable, "args": [TOOLBOX]}


def workflow(nodes: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    servers = extra.pop("mcp_servers", {"tb": STDIO})
    return {"ir_version": "0.1.0", "mcp_servers": servers, "nodes": nodes, **extra}


def run(doc: dict[str, Any], inputs: dict[str, Any] | None = None, **kw: Any) -> fanflow.RunResult:
    return fanflow.run(doc, inputs, checkpoint=False, **kw)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("server did not start listening")


@pytest.fixture(scope="module")
def http_toolbox():
    """The toolbox over streamable HTTP, shared by the module."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, TOOLBOX, "http", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        proc.wait(10)


def sleep_batch(n: int, seconds: float, **batch: Any) -> list[dict[str, Any]]:
    return [
        {"id": "s", "type": "mcp",
         "params": {"server": "tb", "tool": "sleep",
                    "arguments": {"seconds": seconds, "tag": "t${item}"}},
         "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": 50, **batch}},
        {"id": "stats", "type": "mcp", "params": {"server": "tb", "tool": "stats"}},
    ]  # fmt: skip


# --------------------------------------------------------------------------- parallel calls


@pytest.mark.slow
def test_twenty_parallel_calls_share_one_stdio_session_and_overlap() -> None:
    doc = workflow(sleep_batch(20, 0.5), edges=[{"from": "s", "to": "stats"}])
    result = run(doc)
    assert result.ok, result.error
    batch = result.store["s"]
    assert [r["result"] for r in batch["results"]] == [f"t{i}" for i in range(20)]  # order kept
    assert result.nodes["s"].duration_ms < 3000  # 20 × 0.5 s would be 10 s one at a time
    stats = result.store["stats"]["result"]
    assert stats["calls"] == 20  # every call reached the one server process: one session
    assert stats["max_in_flight"] >= 10  # the server saw them overlap


@pytest.mark.slow
def test_parallel_calls_over_streamable_http(http_toolbox: str) -> None:
    doc = workflow(sleep_batch(20, 0.5), edges=[{"from": "s", "to": "stats"}],
                   mcp_servers={"tb": {"url": http_toolbox, "headers": {"X-Home": "${HOME}"}}})  # fmt: skip
    asyncio.run(_reset_http(http_toolbox))
    result = run(doc)
    assert result.ok, result.error
    assert result.nodes["s"].duration_ms < 3000
    assert result.store["stats"]["result"]["max_in_flight"] >= 10


async def _reset_http(url: str) -> None:
    from mcp import Client

    async with Client(url) as client:
        await client.call_tool("stats", {"reset": True})


@pytest.mark.slow
def test_mcp_limit_caps_concurrency_at_the_server() -> None:
    doc = workflow(sleep_batch(9, 0.2), edges=[{"from": "s", "to": "stats"}],
                   limits={"mcp:tb": {"concurrency": 3}})  # fmt: skip
    result = run(doc)
    assert result.ok, result.error
    stats = result.store["stats"]["result"]
    assert stats["calls"] == 9
    assert stats["max_in_flight"] == 3  # observed by the server, not only by our limiter


# --------------------------------------------------------------------------- results


@pytest.mark.slow
def test_batch_over_a_structured_result_and_result_shapes() -> None:
    doc = workflow(
        [
            {"id": "w", "type": "mcp",
             "params": {"server": "tb", "tool": "words", "arguments": {"text": "${phrase}"}}},
            {"id": "up", "type": "mcp",
             "params": {"server": "tb", "tool": "shout", "arguments": {"text": "${item}"}},
             "batch": {"items": "${w.result.words}", "parallel": True}},
            {"id": "j", "type": "mcp",
             "params": {"server": "tb", "tool": "as_json", "arguments": {"key": "n", "value": 7}}},
        ],
        inputs={"phrase": {"type": "string"}},
        outputs={"upper": {"source": "${up.results}"}, "count": {"source": "${w.result.count}"},
                 "j": {"source": "${j.result}"}},
    )  # fmt: skip
    result = run(doc, {"phrase": "fan out then in"})
    assert result.ok, result.error
    assert result.outputs["count"] == 4
    assert [r["result"] for r in result.outputs["upper"]] == ["FAN", "OUT", "THEN", "IN"]
    assert result.store["w"]["structured"] == {"words": ["fan", "out", "then", "in"], "count": 4}
    assert result.outputs["j"] == {"n": 7}  # no structured content: the JSON text, decoded
    assert result.store["j"]["structured"] is None


@pytest.mark.slow
def test_tool_error_fails_the_node_or_takes_the_error_edge() -> None:
    failing = {"id": "f", "type": "mcp",
               "params": {"server": "tb", "tool": "fail", "arguments": {"message": "no luck"}}}  # fmt: skip
    result = run(workflow([failing]))
    assert result.status == "failed" and result.failed_node == "f"
    assert "no luck" in (result.error or "") and "server 'tb'" in (result.error or "")
    handled = workflow(
        [failing, {"id": "h", "type": "code", "params": {"code": "result = 'handled: ' + t",
                                                         "inputs": {"t": "${f.text}"}}}],
        edges=[{"from": "f", "to": "h", "action": "error"}],
    )  # fmt: skip
    result = run(handled)
    assert result.ok, result.error
    assert "no luck" in result.store["h"]["result"]
    assert result.store["f"]["is_error"] is True


# --------------------------------------------------------------------------- failures


@pytest.mark.slow
def test_server_crashing_mid_run_is_a_clear_failure_and_cancels_siblings() -> None:
    doc = workflow(
        [
            {"id": "boom", "type": "mcp",
             "params": {"server": "tb", "tool": "crash", "arguments": {"after": 0.3}}},
            {"id": "slow", "type": "mcp",
             "params": {"server": "tb", "tool": "sleep", "arguments": {"seconds": 30}}},
        ],
        edges=[],
    )  # fmt: skip
    started = time.monotonic()
    result = run(doc)
    took = time.monotonic() - started
    assert result.status == "failed"
    assert result.failed_node in ("boom", "slow")
    error = result.error or ""
    assert "mcp server 'tb'" in error and "Connection closed" in error, error
    assert "ExceptionGroup" not in error
    assert took < 15  # the 30 s sibling did not keep the run alive


@pytest.mark.slow
def test_transport_error_is_retried_once_on_a_fresh_session(tmp_path: Path) -> None:
    marker = tmp_path / "crashed"
    doc = workflow([{"id": "c", "type": "mcp", "params": {
        "server": "tb", "tool": "crash_once", "arguments": {"marker": str(marker)}}}])  # fmt: skip
    result = run(doc)
    assert result.ok, result.error
    assert result.store["c"]["result"] == "recovered"
    assert marker.exists()  # the first session's server really died


@pytest.mark.slow
def test_timeout_fails_the_call_and_sessions_close_at_run_end() -> None:
    doc = workflow([
        {"id": "p", "type": "mcp", "params": {"server": "tb", "tool": "pid"}},
        {"id": "t", "type": "mcp", "params": {"server": "tb", "tool": "sleep",
                                              "arguments": {"seconds": 20}, "timeout": 0.3}},
    ], edges=[{"from": "p", "to": "t"}])  # fmt: skip
    started = time.monotonic()
    result = run(doc)
    assert time.monotonic() - started < 10
    assert result.status == "failed" and result.failed_node == "t"
    assert "timed out after 0.3s" in (result.error or "")
    pid = result.store["p"]["result"]
    assert isinstance(pid, int)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the failed run still closed its session: server gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the MCP server {pid} outlived the run")


@pytest.mark.slow
def test_a_cancelled_call_is_cancelled_at_the_server() -> None:
    doc = workflow(
        [
            {"id": "t", "type": "mcp", "params": {"server": "tb", "tool": "sleep",
                                                  "arguments": {"seconds": 20}, "timeout": 0.5}},
            {"id": "stats", "type": "mcp", "params": {"server": "tb", "tool": "stats"}},
        ],
        edges=[{"from": "t", "to": "stats", "action": "error"}],
    )  # fmt: skip
    result = run(doc)
    assert result.ok, result.error  # the timeout was handled by the error edge
    assert "timed out" in (result.nodes["t"].error or "")
    stats = result.store["stats"]["result"]
    assert stats["cancelled"] == 1 and stats["in_flight"] == 0  # the server stopped the tool


def test_server_that_cannot_start_names_the_command() -> None:
    doc = workflow([{"id": "a", "type": "mcp", "params": {"server": "gone", "tool": "x"}}],
                   mcp_servers={"gone": {"command": "/nonexistent/mcp-server"}})  # fmt: skip
    result = run(doc)
    assert result.status == "failed"
    assert "mcp server 'gone'" in (result.error or "")
    assert "/nonexistent/mcp-server" in (result.error or "")


# --------------------------------------------------------------------------- configuration


@pytest.mark.slow
def test_pflow_spelling_and_longest_server_name(tmp_path: Path) -> None:
    doc = workflow(
        [{"id": "a", "type": "mcp-my-tb-shout", "params": {"text": "${who}"}}],
        mcp_servers={"my": {"command": "/nonexistent"}, "my-tb": STDIO},
        inputs={"who": {"type": "string", "default": "pflow"}},
        outputs={"o": {"source": "${a.result}"}},
    )  # fmt: skip
    loaded = fanflow.load_workflow(doc)
    node = loaded.nodes[0]
    assert node.type == "mcp"
    assert node.params == {"server": "my-tb", "tool": "shout", "arguments": {"text": "${who}"}}
    assert run(doc).outputs == {"o": "PFLOW"}


def test_unknown_server_is_a_validation_error_with_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(workflow(
        [{"id": "a", "type": "mcp", "params": {"server": "githib", "tool": "x"}}])))  # fmt: skip
    out = run_cli("validate", str(path), "--output-format", "json",
                  env={"FANFLOW_MCP_CONFIG": str(tmp_path / "none.json")})  # fmt: skip
    assert out.code == 2
    assert "MCP config file not found" in out.stdout  # the named file is missing: said so
    out = run_cli("validate", str(path), "--output-format", "json",
                  env={"XDG_CONFIG_HOME": str(tmp_path), "FANFLOW_MCP_CONFIG": ""})  # fmt: skip
    assert out.code == 2
    problem = out.json["problems"][0]
    assert problem["field"] == "nodes[0].params.server" and problem["node"] == "a"
    assert problem["message"] == "unknown MCP server 'githib'"
    assert "configured servers: tb" in problem["hint"]


def test_user_config_file_supplies_servers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {
        "fromfile": {**STDIO, "alwaysAllow": ["x"]},  # host-specific keys are ignored
        "off": {"command": "x", "disabled": True},
    }}))  # fmt: skip
    monkeypatch.setenv("FANFLOW_MCP_CONFIG", str(config))
    doc = {"ir_version": "0.1.0",
           "nodes": [{"id": "a", "type": "mcp", "params": {"server": "fromfile", "tool": "x"}}]}  # fmt: skip
    fanflow.load_workflow(doc)  # configured by the file
    doc["nodes"][0]["params"]["server"] = "off"
    with pytest.raises(WorkflowInvalid, match="unknown MCP server 'off'"):
        fanflow.load_workflow(doc)
    config.write_text('{"mcpServers": {"bad": {"args": []}}}')
    os.utime(config, (time.time() + 5, time.time() + 5))  # a new mtime: read again
    with pytest.raises(WorkflowInvalid) as info:
        fanflow.load_workflow(doc)
    text = str(info.value)
    assert str(config) in text and "mcpServers.bad" in text and "'command'" in text


def test_workflow_server_spec_needs_command_or_url() -> None:
    doc = workflow([{"id": "a", "type": "mcp", "params": {"server": "tb", "tool": "x"}}],
                   mcp_servers={"tb": {"command": "x", "url": "http://127.0.0.1:1/mcp"}})  # fmt: skip
    with pytest.raises(WorkflowInvalid) as info:
        fanflow.load_workflow(doc)
    assert info.value.problems[0].field == "mcp_servers.tb"


def test_env_references_resolve_when_the_session_opens(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanflow.errors import NodeError
    from fanflow.load.model import McpServerSpec
    from fanflow.mcp.config import resolve_target

    spec = McpServerSpec.from_dict(
        {"url": "http://h/mcp", "headers": {"Authorization": "Bearer ${TOK}"}}
    )
    monkeypatch.setenv("TOK", "s3cret")
    assert dict(resolve_target("x", spec).headers) == {"Authorization": "Bearer s3cret"}
    monkeypatch.delenv("TOK")
    with pytest.raises(NodeError, match=r"headers.Authorization uses \$\{TOK\}"):
        resolve_target("x", spec)


# --------------------------------------------------------------------------- units


def test_result_shapes_and_error_unwrapping() -> None:
    from fanflow.mcp.pool import describe_error, is_transport_error
    from fanflow.nodes.mcp import tool_result

    assert tool_result({"result": [1, 2]}, "") == [1, 2]  # the SDK's wrapping of a list
    assert tool_result({"a": 1, "result": 2}, "") == {"a": 1, "result": 2}
    assert tool_result(None, '{"x": 1}') == {"x": 1}
    assert tool_result(None, "plain {text") == "plain {text"
    assert tool_result(None, "[broken") == "[broken"
    from mcp.shared.exceptions import MCPError

    nested = ExceptionGroup(
        "outer", [ExceptionGroup("inner", [MCPError(-32000, "Connection closed")])]
    )
    assert describe_error(nested) == "Connection closed"
    assert is_transport_error(nested)
    assert not is_transport_error(MCPError(-32602, "bad params"))
    assert describe_error(ValueError("x")) == "ValueError: x"


def test_fanflow_version_and_validation_do_not_import_the_sdk() -> None:
    code = (
        "import sys, fanflow.cli\n"
        "from fanflow import load_workflow\n"
        "load_workflow({'ir_version': '0.1.0', 'mcp_servers': {'s': {'command': 'x'}},"
        " 'nodes': [{'id': 'a', 'type': 'mcp', 'params': {'server': 's', 'tool': 't'}}]})\n"
        "print(sorted(m for m in sys.modules if m == 'mcp' or m.startswith('mcp.')))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_validate_probe_checks_tools_and_arguments_at_the_server(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    nodes = [
        {"id": "a", "type": "mcp", "params": {"server": "tb", "tool": "shoot", "arguments": {"text": "x"}}},
        {"id": "b", "type": "mcp", "params": {"server": "tb", "tool": "sleep", "arguments": {"secnds": 1}}},
        {"id": "c", "type": "mcp", "params": {"server": "tb", "tool": "words", "arguments": {}}},
        {"id": "d", "type": "mcp", "params": {"server": "tb", "tool": "sleep", "arguments": {"seconds": "${n}"}}},
    ]  # fmt: skip
    doc = workflow(nodes, inputs={"n": {"type": "number", "default": 0}})
    path.write_text(json.dumps(doc))
    assert run_cli("validate", str(path)).code == 0  # without --probe: nothing is started
    out = run_cli("validate", "--probe", str(path), "--output-format", "json")
    assert out.code == 2
    found = {(p["node"], p["field"]): p for p in out.json["problems"]}
    assert found[("a", "nodes[0].params.tool")]["hint"].startswith("did you mean 'shout'?")
    assert "did you mean 'seconds'?" in found[("b", "nodes[1].params.arguments.secnds")]["hint"]
    assert (
        found[("c", "nodes[2].params.arguments")]["message"]
        == "tool 'words' needs the argument 'text'"
    )
    assert not any(node == "d" for node, _ in found)  # a templated value is checked at run time
    doc["nodes"] = nodes[3:]
    path.write_text(json.dumps(doc))
    assert run_cli("validate", "--probe", str(path)).code == 0
