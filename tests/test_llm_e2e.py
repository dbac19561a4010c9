"""End to end: workflows with llm nodes run through the real CLI against the loopback mock."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from conftest import FANFLOW, run_cli, wf
from fanflow.testing.mockllm import MockLLMServer


@pytest.fixture
def mock(server):
    server.reset()
    server.control(fail_next=0, delay=0.0, retry_after=None, fail_status=429)
    return server


def llm_env(srv: MockLLMServer, **extra: str) -> dict[str, str]:
    env = {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": srv.url + "/v1", **extra}
    env.setdefault("FANFLOW_LIMITS", "")
    env.setdefault("FANFLOW_LLM_MODEL", "")
    env.setdefault("FANFLOW_LLM_CACHE", "0")  # these tests count requests at the server
    return env


def llm_batch(node_id: str, n: int, delay: float, model: str | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"prompt": f"[delay={delay}] {node_id} item ${{item}}"}
    if model:
        params["model"] = model
    return {
        "id": node_id,
        "type": "llm",
        "params": params,
        "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": 50},
    }


def overlapping(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> bool:
    return any(x["start"] < y["end"] and y["start"] < x["end"] for x in a for y in b)


def test_batch_under_a_workflow_limit(mock, write_wf):
    doc = wf(
        [llm_batch("ask", 20, 0.2)],
        limits={"llm:openai": {"concurrency": 5}},
        outputs={"answers": {"source": "${ask.results}"}, "ok": {"source": "${ask.success_count}"}},
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=llm_env(mock))
    assert res.code == 0, res.stderr
    out = res.json
    assert out["status"] == "success"
    assert out["outputs"]["ok"] == 20
    answers = out["outputs"]["answers"]
    assert [a["response"] for a in answers] == [
        f"echo: [delay=0.2] ask item {i}" for i in range(20)
    ]
    assert answers[0]["llm_usage"]["model"] == "gpt-4o-mini"
    stats = mock.stats()
    assert stats["total"] == 20
    assert 1 < stats["max_in_flight"] <= 5  # capped by the limit, yet really concurrent


def test_cli_limit_overrides_the_workflow(mock, write_wf):
    doc = wf([llm_batch("ask", 8, 0.2)], limits={"llm:openai": {"concurrency": 5}})
    path = str(write_wf(doc))
    res = run_cli("run", path, "--limit", "llm:openai=2", "-q", env=llm_env(mock))
    assert res.code == 0, res.stderr
    assert mock.stats()["max_in_flight"] == 2
    mock.reset()
    res = run_cli("run", path, "-q", env=llm_env(mock, FANFLOW_LIMITS="llm:openai=3"))
    assert res.code == 0, res.stderr
    assert 2 <= mock.stats()["max_in_flight"] <= 3


def test_bad_limit_spec_is_exit_2(mock, write_wf):
    doc = wf([{"id": "a", "type": "llm", "params": {"prompt": "x"}}])
    res = run_cli("run", str(write_wf(doc)), "--limit", "openai=3", env=llm_env(mock))
    assert res.code == 2
    assert "llm:openai" in res.stderr  # the did-you-mean hint


def test_429_is_retried_after_the_stated_delay(mock, write_wf):
    mock.control(fail_next=1, fail_status=429, retry_after=2)
    doc = wf(
        [{"id": "ask", "type": "llm", "params": {"prompt": "hello"}}],
        outputs={"answer": {"source": "${ask.response}"}},
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=llm_env(mock))
    assert res.code == 0, res.stderr
    out = res.json
    assert out["outputs"]["answer"] == "echo: hello"
    assert out["nodes"]["ask"]["attempts"] == 2
    first, second = mock.stats()["requests"]
    assert (first["status"], second["status"]) == (429, 200)
    gap = second["start"] - first["end"]
    # waited for Retry-After: 2, not the engine's own first backoff (at most 1 s)
    assert gap >= 1.9
    assert gap < 10


def _batch_429(mock, write_wf, batch_extra: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    mock.control(fail_next=1, fail_status=429, retry_after=1)
    node = llm_batch("ask", 4, 0.1)
    node["batch"].update(batch_extra)
    doc = wf([node], outputs={"ok": {"source": "${ask.success_count}"}})
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=llm_env(mock))
    return res, mock.stats()["requests"]


def test_429_in_a_batch_item_is_retried_with_max_retries(mock, write_wf):
    res, reqs = _batch_429(mock, write_wf, {"max_retries": 3})
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["ok"] == 4
    assert [r["status"] for r in reqs].count(429) == 1 and len(reqs) == 5
    failed = next(r for r in reqs if r["status"] == 429)
    assert max(r["start"] for r in reqs) - failed["end"] >= 0.9  # honoured Retry-After: 1


def test_429_in_a_batch_item_is_retried_by_default(mock, write_wf):
    res, _reqs = _batch_429(mock, write_wf, {})
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["ok"] == 4


def test_non_transient_error_fails_without_retry(mock, write_wf):
    doc = wf([{"id": "ask", "type": "llm", "params": {"prompt": "[status=400] hi"}}])
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=llm_env(mock))
    assert res.code == 1
    out = res.json
    assert out["failed_node"] == "ask"
    assert "400" in out["error"]
    assert mock.stats()["total"] == 1


def test_two_parallel_branches_share_one_limit(mock, write_wf):
    doc = wf(
        [
            {"id": "start", "type": "code", "params": {"code": "result = 1"}},
            llm_batch("a", 10, 0.2, model="model-a"),
            llm_batch("b", 10, 0.2, model="model-b"),
            {
                "id": "join",
                "type": "code",
                "params": {
                    "code": "result = len(a) + len(b)",
                    "inputs": {"a": "${a.results}", "b": "${b.results}"},
                },
            },
        ],
        edges=[("start", "a"), ("start", "b"), ("a", "join"), ("b", "join")],
        limits={"llm:openai": {"concurrency": 4}},
        outputs={"n": {"source": "${join.result}"}},
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=llm_env(mock))
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["n"] == 20
    stats = mock.stats()
    assert stats["total"] == 20
    assert 1 < stats["max_in_flight"] <= 4  # one limiter for both branches
    reqs_a = [r for r in stats["requests"] if r.get("model") == "model-a"]
    reqs_b = [r for r in stats["requests"] if r.get("model") == "model-b"]
    assert len(reqs_a) == len(reqs_b) == 10
    assert overlapping(reqs_a, reqs_b)  # the branches really ran at the same time


def test_missing_key_is_reported_before_the_run(mock, write_wf):
    doc = wf([{"id": "ask", "type": "llm", "params": {"prompt": "x"}}])
    env = {k: v for k, v in os.environ.items() if k not in ("OPENAI_API_KEY", "OPENAI_BASE_URL")}
    env["FANFLOW_LLM_MODEL"] = ""
    proc = subprocess.run(
        [*FANFLOW, "run", str(write_wf(doc))],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "OPENAI_API_KEY is not set" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert mock.stats()["total"] == 0


def test_api_key_stays_out_of_output_and_trace(write_wf, tmp_path: Path):
    secret = "sk-proj-TOPsecret0987654321"
    with MockLLMServer(api_key="another-key") as srv:
        doc = wf([{"id": "ask", "type": "llm", "params": {"prompt": "x"}}])
        trace = tmp_path / "trace.json"
        env = llm_env(srv, OPENAI_API_KEY=secret)
        res = run_cli(
            "run", str(write_wf(doc)), "--output-format", "json", "--trace", str(trace), env=env
        )
        assert srv.stats()["requests"][0]["status"] == 401  # the server did get (and echo) it
    assert res.code == 1
    assert "401" in res.json["error"]
    assert trace.exists()
    for text in (res.stdout, res.stderr, trace.read_text()):
        assert secret not in text and "TOPsecret" not in text


def test_fail_fast_cancels_in_flight_calls(mock, write_wf):
    doc = wf(
        [
            {"id": "start", "type": "code", "params": {"code": "result = 1"}},
            {"id": "slow", "type": "llm", "params": {"prompt": "[delay=20] slow"}},
            {"id": "bad", "type": "llm", "params": {"prompt": "[delay=0.3] [status=400] bad"}},
        ],
        edges=[("start", "slow"), ("start", "bad")],
    )
    t0 = time.monotonic()
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=llm_env(mock))
    elapsed = time.monotonic() - t0
    assert res.code == 1
    assert res.json["failed_node"] == "bad"
    assert res.json["nodes"]["slow"]["status"] == "cancelled"
    assert elapsed < 10  # not the 20 s of the slow call
    slow = [r for r in mock.stats()["requests"] if r["status"] != 400]
    assert slow and slow[0]["dropped"] and slow[0]["end"] - slow[0]["start"] < 5


def test_sigint_cancels_in_flight_calls(mock, write_wf):
    doc = wf([llm_batch("ask", 10, 20)])
    env = {**os.environ, **llm_env(mock)}
    proc = subprocess.Popen(
        [*FANFLOW, "run", str(write_wf(doc)), "-q"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 20
    while mock.stats()["in_flight"] < 10 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert mock.stats()["in_flight"] == 10
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    assert time.monotonic() - t0 < 5
    assert "Traceback" not in err
    deadline = time.monotonic() + 3
    while mock.stats()["in_flight"] and time.monotonic() < deadline:
        time.sleep(0.05)
    stats = mock.stats()
    assert stats["in_flight"] == 0
    assert all(r["dropped"] for r in stats["requests"])


def test_example_llm_fanout_runs_against_the_mock(mock):
    mock.control(delay=0.3)  # long enough for the three branches to overlap at the server
    example = Path(__file__).resolve().parents[1] / "examples" / "llm_fanout.json"
    res = run_cli(
        "run",
        str(example),
        "topic=tabs versus spaces",
        "--output-format",
        "json",
        env=llm_env(mock),
    )
    assert res.code == 0, res.stderr
    out = res.json
    assert out["status"] == "success"
    report = out["outputs"]["report"]
    assert "tabs versus spaces" in report
    # three parallel calls, then the join call that reads all three answers
    reqs = mock.stats()["requests"]
    assert len(reqs) == 4
    assert 2 <= mock.stats()["max_in_flight"] <= 3  # the branches overlapped
    assert json.dumps(out)  # plain JSON data


if sys.platform == "win32":  # pragma: no cover
    pytest.skip("POSIX signals", allow_module_level=True)
