"""`fanflow generate` (issue 18): the LLM's answer is extracted, validated, repaired with the
validator's problems, and only a valid workflow comes out. A scripted mock LLM plays the model."""

from __future__ import annotations

import json

import pytest

import fanflow
from conftest import point_llm_at, run_cli
from fanflow.generator import GenerateFailed, extract_workflow

GOOD = {
    "inputs": {"url": {"type": "string", "required": True}},
    "nodes": [
        {"id": "fetch", "type": "http", "params": {"url": "${url}"}},
        {"id": "a", "type": "code", "params": {"code": "result = 1"}},
        {"id": "b", "type": "code", "params": {"code": "result = 2"}},
        {"id": "join", "type": "merge", "params": {"inputs": ["${a.result}", "${b.result}"]}},
    ],
    "edges": [
        {"from": "fetch", "to": "a"},
        {"from": "fetch", "to": "b"},
        {"from": "a", "to": "join"},
        {"from": "b", "to": "join"},
    ],
    "outputs": {"both": {"source": "${join.result}"}},
}
WITH_VERSION = {"ir_version": "0.1.0", **GOOD}  # what comes out: the version filled in
BROKEN = {**GOOD, "nodes": [*GOOD["nodes"][:3], {"id": "join", "type": "merj", "params": {}}]}


@pytest.fixture
def llm(server, monkeypatch):
    return point_llm_at(server, monkeypatch)


def _env(llm):
    return {"OPENAI_API_KEY": "test-key", "OPENAI_BASE_URL": llm.url + "/v1"}


def test_a_broken_first_answer_is_repaired_from_the_validators_problems(llm, tmp_path):
    llm.control(replies=[json.dumps(BROKEN), json.dumps(GOOD)])
    out = tmp_path / "wf.json"
    r = run_cli("generate", "fetch a URL and do two things with it at once", "-o", str(out),
                "--model", "gpt-4o-mini", env=_env(llm))  # fmt: skip
    assert r.code == 0, r.stderr
    assert json.loads(out.read_text()) == WITH_VERSION
    assert "valid after 2 answer(s)" in r.stderr
    assert "a, b" in r.stderr  # the plan: a and b on one level
    requests = llm.stats()["requests"]
    assert len(requests) == 2
    repair = requests[1]["prompt"]
    assert "unknown node type 'merj'" in repair and "nodes[3].type" in repair
    assert "## Node types" in requests[0]["system"]  # the guide is the instructions


@pytest.mark.parametrize(
    "answer",
    [
        "```json\n" + json.dumps(GOOD, indent=2) + "\n```",
        "Here is the workflow you asked for:\n\n" + json.dumps(GOOD) + "\n\nIt fetches first.",
        "Sure. {not json} Then: " + json.dumps(GOOD),
    ],
    ids=["fenced", "prose-around", "stray-brace-first"],
)
def test_the_workflow_is_found_in_fences_and_prose(answer):
    assert extract_workflow(answer) == GOOD


def test_json_output_and_python_api(llm, tmp_path):
    llm.control(replies=["```\n" + json.dumps(GOOD) + "\n```"])
    r = run_cli("generate", "task", "--model", "gpt-4o-mini", "--output-format", "json",
                env=_env(llm))  # fmt: skip
    assert r.code == 0, r.stderr
    out = r.json
    assert out["status"] == "success" and out["rounds"] == 1 and out["workflow"] == WITH_VERSION
    assert out["plan"]["levels"] == [["fetch"], ["a", "b"], ["join"]]
    llm.control(replies=[json.dumps(GOOD)])
    result = fanflow.generate("task", model="gpt-4o-mini")
    assert (
        result.workflow == WITH_VERSION
        and result.rounds == 1
        and result.model == "openai/gpt-4o-mini"
    )


def test_a_hopeless_model_exhausts_the_rounds_with_a_clear_error(llm, tmp_path):
    llm.control(replies=["I cannot do that.", json.dumps(BROKEN), json.dumps(BROKEN)])
    out = tmp_path / "wf.json"
    r = run_cli("generate", "task", "-o", str(out), "--rounds", "3", "--model", "gpt-4o-mini",
                "--output-format", "json", env=_env(llm))  # fmt: skip
    assert r.code == 1
    assert not out.exists()  # nothing invalid is written
    body = r.json
    assert body["status"] == "failed"
    assert "no valid workflow after 3 answer(s)" in body["error"]
    assert "unknown node type 'merj'" in body["error"]
    assert len(llm.stats()["requests"]) == 3
    with pytest.raises(GenerateFailed):
        llm.control(replies=["nope"])
        fanflow.generate("task", model="gpt-4o-mini", rounds=1)


def test_run_after_generating(llm, tmp_path):
    wf = {"nodes": [{"id": "hi", "type": "code", "params": {"code": "result = 'hello'"}}],
          "outputs": {"greeting": {"source": "${hi.result}"}}}  # fmt: skip
    llm.control(replies=[json.dumps(wf)])
    out = tmp_path / "wf.json"
    r = run_cli("generate", "say hello", "-o", str(out), "--run", "--model", "gpt-4o-mini",
                env=_env(llm))  # fmt: skip
    assert r.code == 0, r.stderr
    assert r.stdout.strip() == "hello"  # the run printed its one output


def test_offline_provider_and_missing_key_fail_clearly(tmp_path):
    r = run_cli("generate", "task", "--model", "echo/any", "--rounds", "1")
    assert r.code == 1
    assert "held no JSON workflow" in r.stderr
    r = run_cli("generate", "task", "--model", "gpt-4o-mini", env={"OPENAI_API_KEY": ""})
    assert r.code == 1 and "OPENAI_API_KEY is not set" in r.stderr
