"""pflow's IR run by fanflow: bookkeeping keys accepted, retry mapped, piped stdin, refusals."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import fanflow
from fanflow.errors import WorkflowInvalid
from fanflow.load.pflow_ir import from_pflow_ir, is_pflow_ir

FANFLOW = [sys.executable, "-m", "fanflow"]


def _pflow_ir(tmp: Path) -> dict:
    counter = tmp / "attempts"
    return {
        "ir_version": "0.1.0",
        "enable_namespacing": True,
        "template_resolution_mode": "strict",
        "inputs": {"text": {"type": "string", "stdin": True, "_source_line": 5}},
        "nodes": [
            {"id": "flaky", "type": "shell", "_source_line": 9, "_source_lines": [9, 14],
             "retry": {"max": 3, "wait": 0, "backoff": "fixed"},
             "params": {"command": f"echo x >> {counter}; test $(wc -l < {counter}) -ge 2"}},
            {"id": "count", "type": "shell", "prewarm": True, "_routes_to_end": True,
             "params": {"command": "wc -w | tr -d ' '", "stdin": "${text}"}},
        ],
        "edges": [{"from": "flaky", "to": "count"}],
        "outputs": {"words": {"source": "${count.stdout}", "stdout": True, "_source_line": 20}},
    }  # fmt: skip


def test_fanflow_documents_are_not_taken_for_pflow_ones() -> None:
    doc = {"ir_version": "0.1.0", "nodes": [{"id": "a", "type": "shell", "params": {}}]}
    assert not is_pflow_ir(doc)
    assert not is_pflow_ir(
        {**doc, "nodes": [{"id": "a", "type": "x", "retry": {"max_attempts": 2}}]}
    )
    assert is_pflow_ir({**doc, "nodes": [{"id": "a", "type": "x", "retry": {"max": 2}}]})
    assert is_pflow_ir({**doc, "nodes": [{"id": "a", "type": "x", "_source_line": 3}]})


def test_pflow_ir_runs_with_its_retry_and_without_its_bookkeeping(tmp_path: Path) -> None:
    translated = from_pflow_ir(_pflow_ir(tmp_path), None)
    assert translated["nodes"][0]["retry"] == {
        "max_attempts": 3, "wait": 0, "backoff": "fixed", "max_wait": 60.0,
    }  # fmt: skip
    result = fanflow.run(_pflow_ir(tmp_path), {"text": "one two three"})
    assert result.ok, result.error
    assert result.outputs == {"words": "3"}
    assert (tmp_path / "attempts").read_text().count("x") == 2  # failed once, retried once


def test_piped_stdin_reaches_the_stdin_input_through_the_cli(tmp_path: Path) -> None:
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(_pflow_ir(tmp_path)))
    proc = subprocess.run(
        [*FANFLOW, str(path), "-p", "--output-format", "json"],
        input="a b c d", capture_output=True, text=True, timeout=60, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["outputs"] == {"words": "4"}


@pytest.mark.parametrize(
    ("key", "value", "words"),
    [("approval", "required", "approval")],
)  # fmt: skip
def test_what_fanflow_cannot_run_is_refused_naming_the_node(
    key: str, value: object, words: str
) -> None:
    doc = {"ir_version": "0.1.0", "nodes": [{"id": "n", "type": "shell", key: value,
                                             "params": {"command": "true"}}]}  # fmt: skip
    with pytest.raises(WorkflowInvalid) as info:
        fanflow.run(doc)
    problem = info.value.problems[0]
    assert problem.node == "n" and problem.field == f"nodes[0].{key}" and words in problem.message


def test_pflow_keys_without_effect_are_said_as_warnings() -> None:
    doc = {
        "ir_version": "0.1.0",
        "cache": {"ttl": "5m", "items": []},
        "nodes": [
            {"id": "a", "type": "llm", "prewarm": True, "prompt_cache": ["intro"],
             "params": {"prompt": "hi", "model": "echo"}, "batch": {"items": [1, 2]}},
            {"id": "b", "type": "shell", "cache": True, "params": {"command": "true"}},
        ],
    }  # fmt: skip
    compiled = fanflow.compile_workflow(doc)
    text = "\n".join(compiled.warnings)
    assert "top-level prompt-cache block" in text
    assert "node 'a': `prompt_cache` has no effect" in text
    assert "node 'a': `prewarm` has no effect" in text
    assert "node 'b': `cache: true` has no effect" in text
    result = fanflow.run(compiled, checkpoint=False)
    assert result.ok and any("prewarm" in w for w in result.warnings)
