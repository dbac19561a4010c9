"""http and llm nodes driven directly with a real RunContext against the loopback mock server."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2
import pytest

import fanflow
from conftest import point_llm_at
from fanflow.errors import NodeError
from fanflow.events import EventBus
from fanflow.execute.context import RunContext
from fanflow.execute.threads import ThreadExecutor
from fanflow.io.limits import LimitRegistry
from fanflow.io.providers import parse_retry_after, redact, resolve_model
from fanflow.nodes.http import HttpNode
from fanflow.nodes.llm import LlmNode
from fanflow.testing.mockllm import MockLLMServer


@pytest.fixture
def mock(server, monkeypatch):
    point_llm_at(server, monkeypatch)
    server.control(fail_next=0, delay=0.0, retry_after=None, fail_status=429)
    monkeypatch.delenv("FANFLOW_LLM_MODEL", raising=False)
    return server


@contextlib.asynccontextmanager
async def run_context(limits: LimitRegistry | None = None) -> AsyncIterator[RunContext]:
    loop = asyncio.get_running_loop()
    pool = ThreadExecutor(loop, 4)
    ctx = RunContext(run_id="test", bus=EventBus(), threads=pool, loop=loop, limits=limits)
    try:
        yield ctx
    finally:
        await ctx.aclose()
        pool.shutdown()


async def run_node(cls: type, ctx: RunContext, params: dict[str, Any]) -> dict[str, Any]:
    node = cls()
    node.ctx = ctx
    node.node_id = "n"
    node.set_params(params)
    prep = await node.prep_async({})
    return await node.exec_async(prep)


def run(coro_fn, *args: Any, limits: LimitRegistry | None = None) -> Any:
    async def main() -> Any:
        async with run_context(limits) as ctx:
            return await coro_fn(ctx, *args)

    return asyncio.run(main())


def wait_for_drop(srv: MockLLMServer, path: str, timeout: float = 3.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recs = [r for r in srv.stats()["requests"] if r["path"] == path and r["end"]]
        if recs:
            return recs[-1]
        time.sleep(0.02)
    raise AssertionError(f"server never saw the end of {path}")


# --------------------------------------------------------------------------- http


def test_http_get_json_with_query_and_headers(mock):
    async def go(ctx: RunContext) -> dict[str, Any]:
        return await run_node(
            HttpNode,
            ctx,
            {"url": mock.url + "/json", "params": {"q": "cats", "n": 3}, "headers": {"X-T": "1"}},
        )

    out = run(go)
    assert out["status_code"] == 200
    assert isinstance(out["response"], dict)  # decoded because the content type is JSON
    assert out["response"]["query"] == {"q": "cats", "n": "3"}
    assert out["response"]["headers"]["x-t"] == "1"
    assert out["response_headers"]["content-type"] == "application/json"


def test_http_post_bodies(mock):
    async def go(ctx: RunContext) -> tuple[dict[str, Any], dict[str, Any]]:
        as_json = await run_node(
            HttpNode, ctx, {"url": mock.url + "/json", "method": "post", "body": {"a": [1, 2]}}
        )
        raw = await run_node(
            HttpNode, ctx, {"url": mock.url + "/json", "method": "PUT", "body": "plain text"}
        )
        return as_json, raw

    as_json, raw = run(go)
    assert as_json["response"]["method"] == "POST"
    assert as_json["response"]["body"] == {"a": [1, 2]}
    assert as_json["response"]["headers"]["content-type"] == "application/json"
    assert raw["response"]["method"] == "PUT"
    assert raw["response"]["body"] == "plain text"


def test_http_text_response_stays_text(mock):
    out = run(lambda ctx: run_node(HttpNode, ctx, {"url": mock.url + "/text"}))
    assert out["response"] == "hello from mock"
    assert out["status_code"] == 200


def test_http_404_is_not_retryable_and_keeps_an_excerpt(mock):
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(HttpNode, ctx, {"url": mock.url + "/status/404"}))
    exc = err.value
    assert not exc.retryable
    assert "404" in str(exc) and "status 404 from mock" in str(exc)
    assert len(str(exc)) < 500  # an excerpt, not the whole 600-byte body
    assert exc.outputs["status_code"] == 404


@pytest.mark.parametrize("code", [429, 503])
def test_http_transient_status_is_retryable_with_retry_after(mock, code):
    url = f"{mock.url}/status/{code}?retry_after=2"
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(HttpNode, ctx, {"url": url}))
    assert err.value.retryable
    assert err.value.retry_after == 2.0
    assert str(code) in str(err.value)
    assert "retry_after" not in str(err.value)  # query strings (may hold tokens) stay out


def test_http_timeout_is_retryable(mock):
    t0 = time.monotonic()
    with pytest.raises(NodeError) as err:
        run(
            lambda ctx: run_node(
                HttpNode, ctx, {"url": mock.url + "/slow?seconds=10", "timeout": 0.3}
            )
        )
    assert err.value.retryable
    assert "timed out" in str(err.value)
    assert time.monotonic() - t0 < 5


def test_http_connection_refused_is_retryable():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(HttpNode, ctx, {"url": f"http://127.0.0.1:{port}/x"}))
    assert err.value.retryable


def test_http_bad_url_is_not_retryable(mock):
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(HttpNode, ctx, {"url": "ftp://example.com/x"}))
    assert not err.value.retryable


def test_http_one_client_per_run_closed_at_the_end(mock):
    seen: dict[str, Any] = {}

    async def go(ctx: RunContext) -> None:
        await asyncio.gather(
            *(run_node(HttpNode, ctx, {"url": mock.url + "/text"}) for _ in range(5))
        )
        seen.update(ctx.clients)

    run(go)
    assert list(seen) == ["http"]
    assert seen["http"].is_closed  # ctx.aclose() closed it


def test_http_cancel_drops_the_connection_promptly(mock):
    async def go(ctx: RunContext) -> float:
        task = asyncio.create_task(run_node(HttpNode, ctx, {"url": mock.url + "/slow?seconds=10"}))
        await asyncio.sleep(0.3)
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    cancel_time = run(go)
    assert cancel_time < 1.0
    rec = wait_for_drop(mock, "/slow")
    assert rec["dropped"]
    assert rec["end"] - rec["start"] < 3  # the server saw the drop, not a 10 s completion


# --------------------------------------------------------------------------- llm


def test_llm_call_returns_response_and_usage(mock):
    out = run(
        lambda ctx: run_node(
            LlmNode, ctx, {"prompt": "hello there", "system": "be brief", "temperature": 0}
        )
    )
    assert out["response"] == "echo: hello there"
    usage = out["llm_usage"]
    assert {k: usage[k] for k in ("model", "input_tokens", "output_tokens", "total_tokens")} == {
        "model": "gpt-4o-mini",
        "input_tokens": 4,  # 2 prompt words + 2 system words, counted by the mock
        "output_tokens": 3,
        "total_tokens": 7,
    }


def test_llm_model_resolution_and_default_env(mock, monkeypatch):
    monkeypatch.setenv("FANFLOW_LLM_MODEL", "my-local-model")
    out = run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "x"}))
    assert out["llm_usage"]["model"] == "my-local-model"
    out = run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "x", "model": "openai/gpt-4o"}))
    assert out["llm_usage"]["model"] == "gpt-4o"
    assert resolve_model("claude-3-5-haiku", {}) == ("anthropic", "claude-3-5-haiku")
    assert resolve_model("anthropic/claude-x", {}) == ("anthropic", "claude-x")
    assert resolve_model("meta-llama/Llama-3-8B", {}) == ("openai", "meta-llama/Llama-3-8B")
    assert resolve_model(None, {}) == ("openai", "gpt-4o-mini")


def test_llm_429_is_retryable_with_retry_after(mock):
    mock.control(fail_next=1, fail_status=429, retry_after=1.5)
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "x"}))
    assert err.value.retryable
    assert err.value.retry_after == 1.5
    assert "429" in str(err.value)
    # the next call succeeds: only one failure was injected
    assert run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "y"}))["response"] == "echo: y"


def test_llm_5xx_retryable_4xx_not(mock):
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "[status=500] x"}))
    assert err.value.retryable and err.value.retry_after is None
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "[status=400] x"}))
    assert not err.value.retryable
    assert "400" in str(err.value) and "mock injected status 400" in str(err.value)


def test_llm_timeout_is_retryable(mock):
    t0 = time.monotonic()
    with pytest.raises(NodeError) as err:
        run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "[delay=10] x", "timeout": 0.3}))
    assert err.value.retryable
    assert "timed out" in str(err.value)
    assert time.monotonic() - t0 < 5


def test_llm_without_limits_runs_all_at_once(mock):
    async def go(ctx: RunContext) -> None:
        await asyncio.gather(
            *(run_node(LlmNode, ctx, {"prompt": "[delay=0.3] a"}) for _ in range(20))
        )

    t0 = time.monotonic()
    run(go)
    assert mock.stats()["max_in_flight"] > 4  # nothing caps it (20 when the box is idle)
    assert time.monotonic() - t0 < 3


def test_llm_one_client_per_run_closed_at_the_end(mock):
    seen: dict[str, Any] = {}

    async def go(ctx: RunContext) -> None:
        await asyncio.gather(*(run_node(LlmNode, ctx, {"prompt": "a"}) for _ in range(5)))
        seen.update(ctx.clients)

    run(go)
    assert list(seen) == ["llm:openai"]
    assert seen["llm:openai"].client.is_closed()


def test_llm_cancel_drops_the_request_promptly(mock):
    async def go(ctx: RunContext) -> float:
        task = asyncio.create_task(run_node(LlmNode, ctx, {"prompt": "[delay=10] slow"}))
        await asyncio.sleep(0.3)
        task.cancel()
        t0 = time.monotonic()
        with pytest.raises(asyncio.CancelledError):
            await task
        return time.monotonic() - t0

    assert run(go) < 1.0
    rec = wait_for_drop(mock, "/v1/chat/completions")
    assert rec["dropped"]
    assert rec["end"] - rec["start"] < 3


def test_llm_anthropic_provider_via_the_mock(mock, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-anthropic-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", mock.url)
    out = run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "hi claude", "model": "claude-test-1"}))
    assert out["response"] == "echo: hi claude"
    assert out["llm_usage"]["model"] == "claude-test-1"
    assert out["llm_usage"]["total_tokens"] == 5
    assert mock.stats()["requests"][-1]["path"] == "/v1/messages"


# --------------------------------------------------------------------------- keys and preflight


def test_preflight_names_the_variable_to_set(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("ANTHROPIC_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("FANFLOW_LLM_MODEL", raising=False)
    msg = LlmNode.preflight({"prompt": "x"})
    assert msg and "OPENAI_API_KEY" in msg and "export OPENAI_API_KEY=" in msg
    assert "OPENAI_BASE_URL" in msg
    # a templated model is unknown before the run: the default model's provider is checked
    assert "OPENAI_API_KEY" in (LlmNode.preflight({"prompt": "x", "model": "${cfg.model}"}) or "")
    claude = LlmNode.preflight({"prompt": "x", "model": "claude-3-5-haiku"})
    assert claude and "ANTHROPIC_API_KEY" in claude
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    assert LlmNode.preflight({"prompt": "x"}) is None
    monkeypatch.delenv("OPENAI_API_KEY")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")  # a local server needs no key
    assert LlmNode.preflight({"prompt": "x"}) is None


def test_missing_key_at_run_time_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(NodeError, match="OPENAI_API_KEY is not set") as err:
        run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "x", "model": "gpt-4o"}))
    assert not err.value.retryable


def test_api_key_never_in_error_text(monkeypatch):
    secret = "sk-proj-SECRETsecret1234567890"
    with MockLLMServer(api_key="the-right-key") as srv:
        # Honesty check: the server really does echo the key it was given (as OpenAI does).
        raw = httpx2.post(
            srv.url + "/v1/chat/completions",
            headers={"authorization": f"Bearer {secret}"},
            json={"model": "m", "messages": [{"role": "user", "content": "x"}]},
        )
        assert raw.status_code == 401 and secret in raw.text
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.url + "/v1")
        with pytest.raises(NodeError) as err:
            run(lambda ctx: run_node(LlmNode, ctx, {"prompt": "x"}))
    text = str(err.value)
    assert "401" in text and "OPENAI_API_KEY" in text
    assert secret not in text and "SECRETsecret" not in text
    assert not err.value.retryable


def test_redact_and_retry_after_helpers(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "abcd-1234-xyz")
    assert "abcd-1234-xyz" not in redact("key abcd-1234-xyz leaked")
    assert "sk-live" not in redact("Incorrect API key provided: sk-live-abcdefgh.")
    assert "tok" not in redact("Authorization: Bearer tok123")
    assert parse_retry_after({"retry-after": "3"}) == 3.0
    assert parse_retry_after({"retry-after-ms": "250"}) == 0.25
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None
    date = parse_retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert date == 0.0  # a date in the past means "now"


def test_mock_http_control_endpoints(mock):
    with httpx2.Client(base_url=mock.url) as c:
        assert c.post("/control", json={"fail_next": 2, "retry_after": 1}).json()["fail_next"] == 2
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        first = c.post("/v1/chat/completions", json=body)
        assert first.status_code == 429 and first.headers["retry-after"] == "1"
        assert c.post("/v1/chat/completions", json=body).status_code == 429
        ok = c.post("/v1/chat/completions", json=body, headers={"X-Mock-Delay": "0.1"})
        assert ok.status_code == 200
        assert ok.json()["choices"][0]["message"]["content"] == "echo: hi"
        stats = c.get("/stats").json()
        assert stats["total"] == 3 and stats["failed_injected"] == 2
        assert [r["status"] for r in stats["requests"]] == [429, 429, 200]
        assert c.post("/reset").json() == {"ok": True}
        assert c.get("/stats").json()["total"] == 0
        assert json.loads(c.get("/nope").text)["error"]


# --- limits: the engine acquires a node's resource keys (its resource_keys hook) -------------


def run_batch(node: dict[str, Any], items: list[Any], limits: dict[str, Any], **extra: Any) -> Any:
    """The node over `items` as a wide parallel batch, under `limits`, through the engine."""
    work = {**node, "id": "work",
            "batch": {"items": items, "parallel": True, "max_concurrent": 50}}  # fmt: skip
    doc = {"ir_version": "0.1.0", "limits": limits, "nodes": [work, *extra.pop("nodes", [])]}
    return fanflow.run({**doc, **extra})


def test_http_limit_caps_in_flight_at_the_server(mock):
    node = {"type": "http", "params": {"url": mock.url + "/slow?seconds=0.2"}}
    result = run_batch(node, list(range(12)), {"http:127.0.0.1": {"concurrency": 3}})
    assert result.ok, result.error
    assert [r["status_code"] for r in result.store["work"]["results"]] == [200] * 12
    assert 2 <= mock.stats()["max_in_flight"] <= 3  # capped, yet concurrent


def test_llm_limit_caps_in_flight_at_the_server(mock):
    node = {"type": "llm", "params": {"prompt": "[delay=0.2] n${item}"}}
    result = run_batch(node, list(range(16)), {"llm:openai": {"concurrency": 4}})
    assert result.ok, result.error
    responses = [r["response"] for r in result.store["work"]["results"]]
    assert responses == [f"echo: [delay=0.2] n{i}" for i in range(16)]
    assert 2 <= mock.stats()["max_in_flight"] <= 4  # capped, yet concurrent


def test_llm_per_model_limit(mock):
    node = {"type": "llm", "params": {"prompt": "[delay=0.2] a", "model": "slow-model"}}
    result = run_batch(node, list(range(6)), {"llm:openai/slow-model": {"concurrency": 2}})
    assert result.ok, result.error
    assert mock.stats()["max_in_flight"] == 2  # capped, yet concurrent


def test_llm_node_type_limit(mock):
    node = {"type": "llm", "params": {"prompt": "[delay=0.2] a"}}
    result = run_batch(node, list(range(9)), {"node:llm": {"concurrency": 3}})
    assert result.ok, result.error
    assert 2 <= mock.stats()["max_in_flight"] <= 3  # capped, yet concurrent


def test_llm_cancel_while_waiting_for_the_limiter(mock):
    """Fail-fast cancels a call queued on its limit before it reaches the server."""
    node = {"type": "llm", "params": {"prompt": "[delay=2] ${item}"}}
    start = {"id": "start", "type": "shell", "params": {"command": "true"}}
    boom = {"id": "boom", "type": "shell", "params": {"command": "sleep 0.3; exit 1"}}
    t0 = time.monotonic()
    result = run_batch(node, ["a", "b"], {"llm:openai": {"concurrency": 1}}, nodes=[start, boom],
                       edges=[{"from": "start", "to": "work"}, {"from": "start", "to": "boom"}])  # fmt: skip
    assert result.status == "failed" and result.failed_node == "boom"
    assert time.monotonic() - t0 < 1.8  # the running call was dropped, not awaited
    assert mock.stats()["total"] == 1  # the queued call never reached the server
    assert result.nodes["work"].status == "cancelled"
