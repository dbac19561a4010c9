"""Each answer in the guide's "Answers to common doubts" holds: one check per claim."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import pytest

import fanflow
from fanflow.guide import build_guide

V = "0.1.0"


def code(node_id: str, source: str, inputs: dict[str, str] | None = None, **extra: Any) -> dict:
    params: dict[str, Any] = {"code": source}
    if inputs:
        params["inputs"] = inputs
    return {"id": node_id, "type": "code", "params": params, **extra}


def test_the_guide_has_the_section() -> None:
    assert "## Answers to common doubts" in build_guide()


def test_loop_carry_with_a_fallback_and_outputs_read_the_last_pass() -> None:
    result = fanflow.run({
        "ir_version": V,
        "nodes": [code("setup", "result = 0"),
                  code("draft", "result = prev + 1", {"prev": "${review.result ?? setup.result}"}),
                  code("review", "result = n\nnext = 'revise' if n < 3 else 'done'",
                       {"n": "${draft.result}"}),
                  code("fin", "result = x", {"x": "${draft.result}"})],
        "edges": [{"from": "setup", "to": "draft"}, {"from": "draft", "to": "review"},
                  {"from": "review", "to": "draft", "action": "revise"},
                  {"from": "review", "to": "fin", "action": "done"}],
        "outputs": {"d": {"source": "${draft.result}"}, "f": {"source": "${fin.result}"}},
    })  # fmt: skip
    assert result.ok, result.error
    assert result.outputs == {"d": 3, "f": 3}


def test_past_max_visits_the_node_fails_the_run() -> None:
    result = fanflow.run({
        "ir_version": V, "max_visits": 3,
        "nodes": [code("a", "result = 1"), code("b", "next = 'again'")],
        "edges": [{"from": "a", "to": "b"}, {"from": "b", "to": "a", "action": "again"}],
    })  # fmt: skip
    assert not result.ok and "more than 3 times" in (result.error or "")


def test_fallback_skips_a_skipped_node_and_next_without_result_is_null() -> None:
    result = fanflow.run({
        "ir_version": V,
        "nodes": [code("a", "next = 'x'"), code("b", "result = 'B'"), code("c", "result = 'C'"),
                  code("j", "result = v", {"v": "${b.result ?? c.result}"})],
        "edges": [{"from": "a", "to": "b", "action": "y"}, {"from": "a", "to": "c", "action": "x"},
                  {"from": "b", "to": "j"}, {"from": "c", "to": "j"}],
        "outputs": {"j": {"source": "${j.result}"}, "a": {"source": "${a.result}"}},
    })  # fmt: skip
    assert result.ok, result.error
    assert result.outputs == {"j": "C", "a": None}
    assert result.nodes["b"].status == "skipped"


def test_next_naming_an_action_without_an_edge_skips_what_follows() -> None:
    result = fanflow.run({
        "ir_version": V, "nodes": [code("a", "next = 'zzz'"), code("b", "result = 1")],
        "edges": [{"from": "a", "to": "b"}],
    })  # fmt: skip
    assert result.ok and result.nodes["b"].status == "skipped"


def test_a_failing_shell_command_is_retried(tmp_path: Path) -> None:
    log = tmp_path / "tries"
    result = fanflow.run({"ir_version": V, "nodes": [{
        "id": "s", "type": "shell", "retry": {"max_attempts": 3, "wait": 0},
        "params": {"command": f"echo x >> {log}; exit 3"}}]})  # fmt: skip
    assert not result.ok
    assert log.read_text().count("x") == 3  # max_attempts counts the first try


def test_ignore_errors_keeps_exit_code_and_goes_on() -> None:
    result = fanflow.run({
        "ir_version": V,
        "nodes": [{"id": "s", "type": "shell", "params": {"command": "exit 4", "ignore_errors": True}},
                  code("n", "result = 1")],
        "edges": [{"from": "s", "to": "n"}],
        "outputs": {"e": {"source": "${s.exit_code}"}, "n": {"source": "${n.result}"}},
    })  # fmt: skip
    assert result.ok and result.outputs == {"e": 4, "n": 1}


def test_text_stays_text_merge_mixes_text_and_code_sees_only_its_inputs() -> None:
    result = fanflow.run({
        "ir_version": V,
        "inputs": {"csv": {"type": "string", "default": "a,b"}},
        "nodes": [{"id": "s", "type": "shell", "params": {"command": "echo 42"}},
                  code("c", "result = [type(x).__name__, y]", {"x": "${s.stdout}", "y": "${s.stdout}"}),
                  {"id": "m", "type": "merge", "params": {"inputs": ["x ${s.stdout} y"], "strategy": "list"}},
                  code("trap", "import csv\nresult = type(csv).__name__", {"csv": "${csv}"}),
                  code("scope", "result = csv")],
        "outputs": {"c": {"source": "${c.result}"}, "m": {"source": "${m.result}"},
                    "trap": {"source": "${trap.result}"}},
    })  # fmt: skip
    assert result.outputs["c"] == ["str", "42"]
    assert result.outputs["m"] == ["x 42 y"]
    assert result.outputs["trap"] == "module"
    assert result.nodes["scope"].status == "failed"  # `csv` not listed in its inputs


def test_an_empty_batch_succeeds_with_no_results() -> None:
    result = fanflow.run({
        "ir_version": V, "nodes": [{**code("c", "result = 1"), "batch": {"items": []}}],
        "outputs": {"r": {"source": "${c.results}"}, "n": {"source": "${c.count}"}},
    })  # fmt: skip
    assert result.ok and result.outputs == {"r": [], "n": 0}


def test_relative_paths_resolve_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "f.txt").write_text("hi")
    monkeypatch.chdir(tmp_path)
    result = fanflow.run({
        "ir_version": V, "nodes": [{"id": "r", "type": "read-file", "params": {"file_path": "f.txt"}}],
        "outputs": {"c": {"source": "${r.content}"}, "p": {"source": "${r.file_path}"}},
    })  # fmt: skip
    assert result.outputs == {"c": "hi", "p": "f.txt"}


def test_roots_without_an_edge_run_together_once_an_edge_exists(tmp_path: Path) -> None:
    # a and b each wait until the other has started: they only finish if both run at once
    a, b = tmp_path / "a", tmp_path / "b"
    wait = "touch {me}; for i in $(seq 100); do [ -e {other} ] && exit 0; sleep 0.05; done; exit 1"
    result = fanflow.run({
        "ir_version": V,
        "nodes": [{"id": "a", "type": "shell", "params": {"command": wait.format(me=a, other=b)}},
                  {"id": "b", "type": "shell", "params": {"command": wait.format(me=b, other=a)}},
                  code("c", "result = 1")],
        "edges": [{"from": "a", "to": "c"}],
    })  # fmt: skip
    assert result.ok, result.error


def test_a_first_merge_does_not_wait_for_every_branch_in_the_pipeline_form() -> None:
    result = fanflow.run({"ir_version": V, "pipeline": [
        {"parallel": [
            {"id": "fast", "type": "shell", "params": {"command": "echo fast"}},
            {"id": "slow", "type": "shell", "params": {"command": "sleep 30; echo slow"}},
        ]},
        {"id": "m", "type": "merge",
         "params": {"inputs": ["${fast.stdout}", "${slow.stdout}"], "strategy": "first"}},
    ], "outputs": {"w": {"source": "${m.winner}"}}})  # fmt: skip
    assert result.ok, result.error
    assert result.outputs == {"w": "fast"}
    assert result.nodes["slow"].status == "cancelled"


def test_a_node_reading_its_own_output_is_a_validation_error() -> None:
    with pytest.raises(fanflow.WorkflowInvalid) as info:
        fanflow.run({"ir_version": V, "nodes": [code("c", "result = 1", {"x": "${c.result}"})]})
    problem = info.value.problems[0]
    assert problem.node == "c" and "its own output" in problem.message
    assert problem.field == "nodes[0].params.inputs.x"


def _slow_batch(url: str, limits: dict[str, Any]) -> dict[str, Any]:
    return {
        "ir_version": V,
        "inputs": {"base": {"type": "string"}},
        "limits": limits,
        "nodes": [{"id": "get", "type": "http", "params": {"url": "${base}/slow?seconds=0.3"},
                   "batch": {"items": [1, 2, 3], "parallel": True}}],
    }  # fmt: skip


def test_http_limit_keys_match_the_rendered_host_and_optionally_its_port(server: Any) -> None:
    from urllib.parse import urlsplit

    port = urlsplit(server.url).port
    for limits, expect in (
        ({"http:127.0.0.1": {"concurrency": 1}}, 1),  # the host came from an input
        ({f"http:127.0.0.1:{port}": {"concurrency": 1}}, 1),  # that port only
        ({f"http:127.0.0.1:{port + 1}": {"concurrency": 1}}, 3),  # another port: no limit
    ):
        server.reset()
        result = fanflow.run(_slow_batch(server.url, limits), {"base": server.url},
                             checkpoint=False)  # fmt: skip
        assert result.ok, result.error
        assert server.stats()["max_in_flight"] == expect, limits


def test_a_node_type_key_caps_every_execution_of_that_type(tmp_path: Path) -> None:
    doc = {
        "ir_version": V,
        "limits": {"node:code": {"concurrency": 1}},
        "nodes": [code("nap", "import time\nt0 = time.time()\ntime.sleep(0.1)\nresult = [t0, time.time()]",
                       batch={"items": [1, 2, 3, 4], "parallel": True})],
    }  # fmt: skip
    result = fanflow.run(doc, checkpoint=False)
    assert result.ok, result.error
    spans = sorted(r["result"] for r in result.store["nap"]["results"])
    assert all(a[1] <= b[0] + 1e-3 for a, b in itertools.pairwise(spans))  # no overlap


def test_the_llm_keys_provider_comes_from_the_model_name() -> None:
    from fanflow.io.providers import resolve_model

    assert resolve_model("gpt-4o") == ("openai", "gpt-4o")
    assert resolve_model("claude-sonnet-4-5") == ("anthropic", "claude-sonnet-4-5")
    assert resolve_model("anthropic/claude-x") == ("anthropic", "claude-x")
    assert resolve_model("ollama/llama3") == ("ollama", "llama3")
    assert resolve_model("meta-llama/Llama-3") == ("openai", "meta-llama/Llama-3")
    assert resolve_model("echo") == ("echo", "echo")


def test_a_shell_template_value_is_one_word_never_split_nor_globbed(tmp_path: Path) -> None:
    (tmp_path / "a.sh").write_text("")  # a glob `a b*` could match nothing, `*` could match this
    result = fanflow.run({
        "ir_version": V, "inputs": {"name": {"type": "string"}},
        "nodes": [{"id": "a", "type": "shell",
                   "params": {"command": "printf '[%s]' ${name}.sh", "cwd": str(tmp_path)}}],
        "outputs": {"o": {"source": "${a.stdout}"}},
    }, {"name": "a b*"}, checkpoint=False)  # fmt: skip
    assert result.ok, result.error
    assert result.outputs["o"] == "[a b*.sh]"
