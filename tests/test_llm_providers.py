"""LLM providers configured in one place (workflow `providers`, FANFLOW_PROVIDERS, --providers /
--provider): routing, keys from the named variable, headers, validation and preflight errors,
over real HTTP on loopback (a recording aiohttp server, and the project's mock)."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

import fanflow
from conftest import run_cli, wf
from fanflow.errors import WorkflowInvalid
from fanflow.io.provider_config import build_table
from fanflow.io.providers import resolve_model
from fanflow.testing.mockllm import MockLLMServer

SECRET = "sk-local-0123456789abcdef"  # never to appear in any message


class Recorder:
    """An OpenAI/Anthropic-shaped server that records each request's headers and body."""

    def __init__(self, delay: float = 0.0) -> None:
        self.delay = delay
        self.requests: list[dict[str, Any]] = []
        self.in_flight = self.max_in_flight = 0
        self._ready = threading.Event()
        self.url = ""

    async def _answer(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.requests.append({"path": request.path, "headers": {k.lower(): v for k, v in request.headers.items()},
                              "body": body})  # fmt: skip
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        await asyncio.sleep(self.delay)
        self.in_flight -= 1
        if request.path == "/v1/messages":
            return web.json_response({"content": [{"type": "text", "text": "hi from recorder"}],
                                      "usage": {"input_tokens": 3, "output_tokens": 3}})  # fmt: skip
        return web.json_response({"choices": [{"message": {"content": "hi from recorder"}}],
                                  "usage": {"prompt_tokens": 3, "completion_tokens": 3}})  # fmt: skip

    def _serve(self) -> None:
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._answer)
        app.router.add_post("/v1/messages", self._answer)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def __enter__(self) -> Recorder:
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)


@pytest.fixture
def rec():
    with Recorder() as r:
        yield r


@pytest.fixture
def clean_env(monkeypatch):
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL",
                "ANTHROPIC_AUTH_TOKEN", "FANFLOW_PROVIDERS", "FANFLOW_LLM_MODEL", "FANFLOW_LIMITS"):  # fmt: skip
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("FANFLOW_LLM_CACHE", "0")  # these tests count requests at the server
    return monkeypatch


def ask(model: str | None = "local/m1", node_id: str = "ask", **params: Any) -> dict[str, Any]:
    p: dict[str, Any] = {"prompt": "hello", **params}
    if model is not None:
        p["model"] = model
    return {"id": node_id, "type": "llm", "params": p}


OUT = {"r": {"source": "${ask.response}"}, "u": {"source": "${ask.llm_usage}"}}


def write(tmp_path: Path, doc: dict[str, Any], name: str = "wf.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


# --------------------------------------------------------------------------- routing over HTTP


def test_workflow_provider_sends_its_key_and_headers(rec, clean_env, tmp_path):
    providers = {"local": {"base_url": rec.url + "/v1", "api_key_env": "MY_LOCAL_KEY",
                           "headers": {"X-Team": "${TEAM}", "X-Static": "yes"}}}  # fmt: skip
    doc = wf([ask()], providers=providers, outputs=OUT)
    env = {"MY_LOCAL_KEY": SECRET, "TEAM": "blue", "OPENAI_API_KEY": "not-this-one"}
    res = run_cli("run", write(tmp_path, doc), "--output-format", "json", env=env)
    assert res.code == 0, res.stderr
    out = res.json
    assert out["outputs"]["r"] == "hi from recorder"
    assert out["outputs"]["u"]["provider"] == "local" and out["outputs"]["u"]["model"] == "m1"
    [req] = rec.requests
    assert req["path"] == "/v1/chat/completions" and req["body"]["model"] == "m1"
    headers = req["headers"]
    assert headers["authorization"] == f"Bearer {SECRET}"
    assert headers["x-team"] == "blue" and headers["x-static"] == "yes"


def test_anthropic_kind_entry_reaches_the_mock_messages_api(clean_env):
    with MockLLMServer(api_key=SECRET) as srv:
        providers = {"proxy": {"kind": "anthropic", "base_url": srv.url,
                               "api_key_env": "PROXY_KEY"}}  # fmt: skip
        clean_env.setenv("PROXY_KEY", SECRET)
        res = fanflow.run(wf([ask("proxy/claude-x")], providers=providers, outputs=OUT))
        assert res.ok, res.error
        assert res.outputs["r"] == "echo: hello"
        assert res.outputs["u"]["provider"] == "proxy"
        [record] = srv.stats()["requests"]
        assert record["path"] == "/v1/messages" and record["model"] == "claude-x"


def test_a_wrong_key_is_named_by_its_variable_and_never_shown(clean_env):
    with MockLLMServer(api_key="the-right-one") as srv:
        providers = {"local": {"base_url": srv.url + "/v1", "api_key_env": "MY_LOCAL_KEY"}}
        clean_env.setenv("MY_LOCAL_KEY", SECRET)
        res = fanflow.run(wf([ask()], providers=providers))
        assert not res.ok
        assert "HTTP 401" in res.error and "(check MY_LOCAL_KEY)" in res.error
        assert SECRET not in res.error


def test_default_model_and_a_provider_name_alone(rec, clean_env):
    providers = {"local": {"base_url": rec.url + "/v1", "default_model": "qwen-7b"}}
    doc = wf([ask(None), ask("local", "b")], providers=providers, outputs=OUT)
    res = fanflow.run(doc)
    assert res.ok, res.error
    assert res.outputs["u"]["provider"] == "local"
    assert [r["body"]["model"] for r in rec.requests] == ["qwen-7b", "qwen-7b"]
    headers = rec.requests[0]["headers"]
    assert headers["authorization"] == "Bearer not-needed"  # no key variable: a placeholder


def test_builtin_entry_changes_openai_base_url_and_key_variable(rec, clean_env):
    providers = {"openai": {"base_url": rec.url + "/v1", "api_key_env": "WORK_OPENAI_KEY"}}
    clean_env.setenv("WORK_OPENAI_KEY", SECRET)
    res = fanflow.run(wf([ask("gpt-4o-mini")], providers=providers, outputs=OUT))
    assert res.ok, res.error
    assert res.outputs["u"]["provider"] == "openai"
    headers = rec.requests[0]["headers"]
    assert headers["authorization"] == f"Bearer {SECRET}"


def test_limits_apply_to_a_configured_provider(clean_env):
    with Recorder(delay=0.1) as slow:
        node = ask() | {"batch": {"items": [1, 2, 3, 4], "parallel": True}}
        doc = wf([node], providers={"local": {"base_url": slow.url + "/v1"}},
                 limits={"llm:local": {"concurrency": 1}})  # fmt: skip
        assert fanflow.run(doc).ok
        assert len(slow.requests) == 4 and slow.max_in_flight == 1


# --------------------------------------------------------------------------- env and CLI


def test_env_providers_inline_json_and_file(rec, clean_env, tmp_path):
    entry = {"local": {"base_url": rec.url + "/v1", "headers": {"X-From": "env"}}}
    clean_env.setenv("FANFLOW_PROVIDERS", json.dumps(entry))
    assert fanflow.run(wf([ask()])).ok
    path = tmp_path / "providers.json"
    path.write_text(json.dumps({"providers": {"local": {"base_url": rec.url + "/v1",
                                                        "headers": {"X-From": "file"}}}}))  # fmt: skip
    clean_env.setenv("FANFLOW_PROVIDERS", str(path))
    assert fanflow.run(wf([ask()])).ok
    assert [r["headers"].get("x-from") for r in rec.requests] == ["env", "file"]


def test_cli_flag_and_file_override_the_workflow_field_by_field(rec, clean_env, tmp_path):
    dead = {"local": {"base_url": "http://127.0.0.1:9/v1", "headers": {"X-Wf": "kept"}}}
    path = write(tmp_path, wf([ask()], providers=dead, outputs=OUT))
    res = run_cli("run", path, "--provider", f"local={rec.url}/v1", "--output-format", "json")
    assert res.code == 0, res.stderr
    assert rec.requests[-1]["headers"].get("x-wf") == "kept"  # only base_url was overridden
    extra = tmp_path / "p.json"
    extra.write_text(json.dumps({"local": {"base_url": rec.url + "/v1", "api_key_env": "K"}}))
    res = run_cli("run", path, "--providers", str(extra), "-q", env={"K": SECRET})
    assert res.code == 0, res.stderr
    assert rec.requests[-1]["headers"]["authorization"] == f"Bearer {SECRET}"
    ok = run_cli("validate", write(tmp_path, wf([ask("vllm/x")]), "v.json"),
                 "--provider", f"vllm={rec.url}/v1")  # fmt: skip
    assert ok.code == 0, ok.stderr


def test_sub_workflow_inherits_providers_and_adds_its_own(rec, clean_env, tmp_path):
    child = wf([ask("local/m1", "c1"), ask("own/m2", "c2")],
               providers={"own": {"base_url": rec.url + "/v1", "headers": {"X-Child": "1"}}})  # fmt: skip
    (tmp_path / "child.json").write_text(json.dumps(child))
    parent = wf([{"id": "sub", "type": "workflow", "params": {"workflow": "child.json"}}],
                providers={"local": {"base_url": rec.url + "/v1", "headers": {"X-Parent": "1"}}})  # fmt: skip
    parent["limits"] = {"llm:own": {"concurrency": 1}}
    res = fanflow.run(write(tmp_path, parent, "parent.json"))
    assert res.ok, res.error
    seen = {r["body"]["model"]: r["headers"] for r in rec.requests}
    assert seen["m1"].get("x-parent") == "1" and seen["m2"].get("x-child") == "1"
    # the child's own provider is its limit key, too
    from fanflow.io.limits import LimitRegistry
    from fanflow.io.provider_config import active, extend_table
    from fanflow.nodes.llm import LlmNode

    limits = LimitRegistry({"llm:own": {"concurrency": 1}})
    child_table = extend_table({}, fanflow.compile_workflow(child).workflow)
    with active(child_table):
        assert LlmNode.resource_keys({"model": "own/m2"}, limits) == ["llm:own"]


# --------------------------------------------------------------------------- validation


def test_schema_errors_of_an_entry_name_file_and_field(clean_env, tmp_path):
    providers = {"local": {"kind": "vllm", "base_url": 8000, "api_key": SECRET}}
    path = write(tmp_path, wf([ask()], providers=providers))
    res = run_cli("validate", path)
    assert res.code == 2
    err = res.stderr
    assert f"{path}:providers.local.kind" in err and "'openai' or 'anthropic'" in err
    assert f"{path}:providers.local.base_url: Input should be a valid string" in err
    assert f"{path}:providers.local.api_key: unknown field" in err
    assert SECRET not in err
    res = run_cli("validate", path, "--output-format", "json")
    assert res.code == 2 and res.json["status"] == "invalid"
    fields = {p["field"] for p in res.json["problems"]}
    assert fields == {"providers.local.kind", "providers.local.base_url", "providers.local.api_key"}
    assert SECRET not in res.stdout


def test_routing_errors_name_node_and_fix(clean_env, tmp_path):
    providers = {"local": {"base_url": "localhost:8000", "api_key_env": SECRET}}
    nodes = [ask("locl/m"), ask("groq/llama-3.1-8b", "g"), ask("local", "n")]
    path = write(tmp_path, wf(nodes, providers=providers))
    res = run_cli("validate", path)
    assert res.code == 2
    err = res.stderr
    assert f"{path}:providers.local.api_key_env: api_key_env must name an environment" in err
    assert f"{path}:providers.local.base_url: base_url must be an http:// or https://" in err
    assert "nodes[0].params.model (node 'ask')" in err and "did you mean 'local/m'?" in err
    assert "no provider 'groq' is configured" in err and "https://api.groq.com/openai/v1" in err
    assert "provider 'local' has no default_model" in err
    assert SECRET not in err
    res = run_cli("validate", path, "--output-format", "json")
    assert res.code == 2
    by_field = {p["field"]: p for p in res.json["problems"]}
    assert by_field["nodes[1].params.model"]["node"] == "g"
    assert "GROQ_API_KEY" in by_field["nodes[1].params.model"]["hint"]
    assert SECRET not in res.stdout


def test_unset_key_variable_is_a_preflight_error(clean_env, tmp_path):
    providers = {"local": {"base_url": "http://127.0.0.1:9/v1", "api_key_env": "NOT_SET_KEY"}}
    path = write(tmp_path, wf([ask()], providers=providers))
    assert run_cli("validate", path).code == 0  # the environment is checked when running
    res = run_cli("run", path, "--output-format", "json")
    assert res.code == 2
    [problem] = res.json["problems"]
    assert problem["node"] == "ask" and problem["file"] == path
    assert "NOT_SET_KEY" in problem["message"]
    assert "providers.local.api_key_env" in problem["message"]
    assert "export NOT_SET_KEY=" in problem["message"]
    env = {"NOT_SET_KEY": SECRET,
           "FANFLOW_PROVIDERS": json.dumps({"local": {"headers": {"X-Tok": "${NO_SUCH_TOKEN}"}}})}  # fmt: skip
    res = run_cli("run", path, env=env)
    assert res.code == 2 and "NO_SUCH_TOKEN (FANFLOW_PROVIDERS.local.headers.X-Tok)" in res.stderr
    assert SECRET not in res.stderr


def test_bad_env_and_cli_config_are_exit_2(clean_env, tmp_path):
    path = write(tmp_path, wf([ask("echo")]))
    res = run_cli("validate", path, env={"FANFLOW_PROVIDERS": "{not json"})
    assert res.code == 2 and "FANFLOW_PROVIDERS" in res.stderr and "not valid JSON" in res.stderr
    res = run_cli("validate", path, env={"FANFLOW_PROVIDERS": '{"x": {"kind": "grpc"}}'})
    assert res.code == 2 and "FANFLOW_PROVIDERS.x.kind" in res.stderr
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"x": {"base": "http://h"}}))
    res = run_cli("run", path, "--providers", str(bad), "--output-format", "json")
    assert res.code == 2
    assert res.json["problems"][0]["field"] == "x.base" and res.json["problems"][0]["file"] == str(
        bad
    )
    res = run_cli("run", path, "--provider", "nourl")
    assert res.code == 2 and "expected NAME=BASE_URL" in res.stderr


def test_several_default_models_and_no_model_is_ambiguous(clean_env):
    providers = {"a": {"base_url": "http://h/v1", "default_model": "m"},
                 "b": {"base_url": "http://h/v1", "default_model": "n"}}  # fmt: skip
    with pytest.raises(WorkflowInvalid) as exc:
        fanflow.compile_workflow(wf([ask(None)], providers=providers))
    assert "several providers set a default_model (a, b)" in str(exc.value)


def test_resolution_rules():
    doc = wf([ask()], providers={"local": {"base_url": "http://h/v1", "default_model": "q"}})
    table = build_table(fanflow.compile_workflow(doc).workflow, {}, {})
    assert resolve_model("local/x", {}, table) == ("local", "x")
    assert resolve_model("local", {}, table) == ("local", "q")
    assert resolve_model(None, {}, table) == ("local", "q")
    assert resolve_model(None, {"FANFLOW_LLM_MODEL": "gpt-4o"}, table) == ("openai", "gpt-4o")
    assert resolve_model("meta-llama/Llama-3", {}, table) == ("openai", "meta-llama/Llama-3")
    assert resolve_model("LOCAL/x", {}, table) == ("local", "x")
