"""LLM-friendly authoring end to end, through the CLI: the pipeline form, merge strategies, the
branch error policy, `fanflow guide` / `fanflow nodes`, and every workflow in examples/."""

from __future__ import annotations

import json
import random
import re
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from conftest import run_cli
from fanflow.testing.mockllm import MockLLMServer

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"


def sh(node_id: str, command: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "shell", "params": {"command": command}, **extra}


def timed(node_id: str, seconds: float) -> dict[str, Any]:
    """A shell node that reports when it started and ended (epoch seconds) on stdout."""
    return sh(node_id, f"s=$(date +%s.%N); sleep {seconds}; echo $s $(date +%s.%N)")


def spans(outputs: dict[str, str]) -> dict[str, tuple[float, float]]:
    out = {}
    for name, text in outputs.items():
        start, end = text.split()
        out[name] = (float(start), float(end))
    return out


def overlap(intervals: list[tuple[float, float]]) -> bool:
    """True when all intervals share a common instant."""
    return max(s for s, _ in intervals) < min(e for _, e in intervals)


def run_json(
    path: Path, *args: str, cwd: Path | None = None, env: dict | None = None, timeout: float = 60
) -> tuple[int, dict[str, Any]]:
    # No run store: these tests are about authoring, and stay independent of checkpointing.
    args = (*args, "--output-format", "json", "-q", "--no-checkpoint")
    res = run_cli("run", str(path), *args, cwd=cwd, env=env, timeout=timeout)
    return res.code, res.json


# --------------------------------------------------------------------------- pipeline form

NESTED_PIPELINE = {
    "ir_version": "0.1.0",
    "pipeline": [
        timed("start", 0.1),
        {
            "parallel": [
                timed("a", 1),
                [timed("b1", 1), {"parallel": [timed("c1", 1), timed("c2", 1)]}],
                {"parallel": [timed("d1", 1), timed("d2", 1)]},
            ]
        },
        timed("end", 0.1),
    ],
    "outputs": {
        n: {"source": "${" + n + ".stdout}"}
        for n in ("start", "a", "b1", "c1", "c2", "d1", "d2", "end")
    },
}

# The same workflow written by hand as nodes + edges.
NESTED_GRAPH = {
    "ir_version": "0.1.0",
    "nodes": [
        timed(n, 0.1 if n in ("start", "end") else 1)
        for n in ("start", "a", "b1", "c1", "c2", "d1", "d2", "end")
    ],
    "edges": [{"from": "start", "to": t} for t in ("a", "b1", "d1", "d2")]
    + [{"from": "b1", "to": "c1"}, {"from": "b1", "to": "c2"}]
    + [{"from": s, "to": "end"} for s in ("a", "c1", "c2", "d1", "d2")],
    "outputs": NESTED_PIPELINE["outputs"],
}


def test_nested_parallel_blocks_run_in_parallel(write_wf):
    code, out = run_json(write_wf(NESTED_PIPELINE))
    assert code == 0, out
    t = spans(out["outputs"])
    # Every branch of the outer block starts after `start` and they all run at the same time.
    assert all(t[n][0] >= t["start"][1] for n in ("a", "b1", "d1", "d2"))
    assert overlap([t["a"], t["b1"], t["d1"], t["d2"]])
    # The nested block inside the sub-chain waits for b1, then runs its two branches together.
    assert t["c1"][0] >= t["b1"][1] and t["c2"][0] >= t["b1"][1]
    assert overlap([t["c1"], t["c2"]])
    # The step after the block waits for every branch.
    assert t["end"][0] >= max(t[n][1] for n in ("a", "c1", "c2", "d1", "d2"))
    # Sequentially this is 7 s of sleeping; in parallel about 2.2 s (loose bound).
    assert out["duration_ms"] < 5000


def test_pipeline_and_graph_forms_give_the_same_graph_and_outputs(write_wf):
    import fanflow

    p_graph = fanflow.compile_workflow(write_wf(NESTED_PIPELINE, "p.json")).graph
    g_graph = fanflow.compile_workflow(write_wf(NESTED_GRAPH, "g.json")).graph
    assert p_graph.ids == g_graph.ids
    assert set(p_graph.edges) == set(g_graph.edges)
    assert p_graph.deps == g_graph.deps

    # Same outputs (modulo the timestamps): compare which node ran and in what order.
    doc_p = json.loads(json.dumps(NESTED_PIPELINE).replace("sleep 1;", "sleep 0.1;"))
    doc_g = json.loads(json.dumps(NESTED_GRAPH).replace("sleep 1;", "sleep 0.1;"))
    for doc in (doc_p, doc_g):
        for node in doc.get("nodes", []):
            node["params"]["command"] = f"echo {node['id']}"
    for step in _walk_nodes(doc_p["pipeline"]):
        step["params"]["command"] = f"echo {step['id']}"
    code_p, out_p = run_json(write_wf(doc_p, "p2.json"))
    code_g, out_g = run_json(write_wf(doc_g, "g2.json"))
    assert code_p == code_g == 0
    assert out_p["outputs"] == out_g["outputs"] == {n: n for n in out_p["outputs"]}
    assert {n: v["status"] for n, v in out_p["nodes"].items()} == {
        n: v["status"] for n, v in out_g["nodes"].items()
    }


def _walk_nodes(steps: Any):
    if isinstance(steps, list):
        for s in steps:
            yield from _walk_nodes(s)
    elif "parallel" in steps:
        yield from _walk_nodes(steps["parallel"])
    else:
        yield steps


def test_pipeline_and_graph_forms_give_the_same_plan(write_wf):
    p = run_cli("plan", str(write_wf(NESTED_PIPELINE, "p.json")))
    g = run_cli("plan", str(write_wf(NESTED_GRAPH, "g.json")))
    assert p.code == g.code == 0, p.stderr + g.stderr
    assert p.stdout.replace("p.json", "X") == g.stdout.replace("g.json", "X")


def test_plan_normalised_prints_the_generated_nodes_and_edges(write_wf):
    res = run_cli("plan", "--normalised", str(write_wf(NESTED_PIPELINE)))
    assert res.code == 0, res.stderr
    printed = json.loads(res.stdout)
    assert "pipeline" not in printed
    assert [n["id"] for n in printed["nodes"]] == [n["id"] for n in NESTED_GRAPH["nodes"]]
    pairs = {(e["from"], e["to"]) for e in printed["edges"]}
    assert pairs == {(e["from"], e["to"]) for e in NESTED_GRAPH["edges"]}


def test_a_single_parallel_block_runs_in_parallel(write_wf):
    doc = {
        "ir_version": "0.1.0",
        "pipeline": [{"parallel": [timed("x", 1), timed("y", 1)]}],
        "outputs": {n: {"source": "${" + n + ".stdout}"} for n in ("x", "y")},
    }
    code, out = run_json(write_wf(doc))
    assert code == 0, out
    t = spans(out["outputs"])
    assert overlap([t["x"], t["y"]])


def test_pipeline_errors_are_reported_with_their_path_and_exit_2(write_wf):
    doc = {
        "ir_version": "0.1.0",
        "pipeline": [
            sh("a", "echo a"),
            {"parallel": [sh("b", "echo b"), {"type": "shell"}]},
            {"parallel": []},
        ],
    }
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2
    assert "pipeline[1].parallel[1]: node has no 'id'" in res.stderr
    assert "pipeline[2].parallel: empty parallel block" in res.stderr

    both = {"ir_version": "0.1.0", "nodes": [sh("a", "echo")], "pipeline": [sh("b", "echo")]}
    res = run_cli("validate", str(write_wf(both, "both.json")))
    assert res.code == 2
    assert "'pipeline' and 'nodes' cannot be used together" in res.stderr


def test_pipeline_with_an_extra_action_edge_runs_a_loop(write_wf):
    doc = {
        "ir_version": "0.1.0",
        "pipeline": [
            {
                "id": "draft",
                "type": "code",
                "params": {"code": "result = prev + 1", "inputs": {"prev": "${check.result ?? 0}"}},
            },
            {
                "id": "check",
                "type": "code",
                "params": {
                    "code": "result = n\nnext = 'again' if n < 3 else 'default'",
                    "inputs": {"n": "${draft.result}"},
                },
            },
            {
                "id": "done",
                "type": "code",
                "params": {"code": "result = n * 10", "inputs": {"n": "${check.result}"}},
            },
        ],
        "edges": [{"from": "check", "to": "draft", "action": "again"}],
        "outputs": {"done": {"source": "${done.result}"}},
    }
    code, out = run_json(write_wf(doc))
    assert code == 0, out
    assert out["outputs"] == {"done": 30}


# --------------------------------------------------------------------------- merge through runs


def test_merge_object_list_concat_through_a_run(tmp_path):
    code, out = run_json(EXAMPLES / "merge-strategies.json", cwd=tmp_path)
    assert code == 0, out
    assert out["outputs"] == {
        "object": {"alpha": "alpha", "beta": "beta", "gamma": {"n": 3}},
        "list": ["alpha", "beta", 3],
        "text": 'alpha | beta | {"n": 3}',
        "named": {"first": "alpha", "second": "beta"},
    }


def _processes_with(marker: str) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(marker in part for part in proc.info["cmdline"] or []):
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return found


@pytest.mark.parametrize("form", ["list", "dict"])
def test_merge_first_cancels_the_loser(write_wf, form):
    # A duration no other test uses, so the loser's processes can be found (or not) afterwards.
    slow = f"30.{random.randrange(10**6, 10**7)}"
    inputs: Any = ["${slow.stdout}", "${fast.stdout}"]
    if form == "dict":
        inputs = {"s": "${slow.stdout}", "f": "${fast.stdout}"}
    doc = {
        "ir_version": "0.1.0",
        "nodes": [
            sh("slow", f"sleep {slow}; echo slow"),
            sh("fast", "sleep 0.2; echo fast"),
            {"id": "race", "type": "merge", "params": {"inputs": inputs, "strategy": "first"}},
            {
                "id": "after",
                "type": "code",
                "params": {"code": "result = w.upper()", "inputs": {"w": "${race.result}"}},
            },
        ],
        "edges": [
            {"from": "slow", "to": "race"},
            {"from": "fast", "to": "race"},
            {"from": "race", "to": "after"},
        ],
        "outputs": {
            "answer": {"source": "${race.result}"},
            "winner": {"source": "${race.winner}"},
            "after": {"source": "${after.result}"},
        },
    }
    started = time.monotonic()
    code, out = run_json(write_wf(doc), timeout=25)
    elapsed = time.monotonic() - started
    assert code == 0, out
    assert elapsed < 20  # far from the loser's 30 s
    assert out["outputs"] == {"answer": "fast", "winner": "fast", "after": "FAST"}
    assert out["nodes"]["slow"]["status"] == "cancelled"
    assert out["nodes"]["fast"]["status"] == "success"
    assert out["nodes"]["race"]["status"] == "success"
    assert out["status"] == "success"
    # The loser's subprocess (bash and its sleep) is gone, not orphaned.
    deadline = time.monotonic() + 5
    while _processes_with(slow) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_with(slow) == []


def test_merge_first_where_the_winner_is_declared_second(tmp_path):
    code, out = run_json(EXAMPLES / "merge-first-race.json", cwd=tmp_path, timeout=25)
    assert code == 0, out
    assert out["outputs"] == {"answer": "fast answer to question", "winner": "fast"}
    assert out["nodes"]["slow"]["status"] == "cancelled"


# --------------------------------------------------------------------------- branch error policy


def _branchy(policy: str | None, out_dir: Path) -> dict[str, Any]:
    doc = {
        "ir_version": "0.1.0",
        "nodes": [
            sh("start", "echo go"),
            sh("flaky", "sleep 0.2; echo broken >&2; exit 3"),
            sh("after_flaky", f"touch {out_dir}/after_flaky"),
            sh("steady", "sleep 1.5; echo fine"),
            sh("after_steady", f"touch {out_dir}/after_steady"),
        ],
        "edges": [
            {"from": "start", "to": "flaky"},
            {"from": "flaky", "to": "after_flaky"},
            {"from": "start", "to": "steady"},
            {"from": "steady", "to": "after_steady"},
        ],
    }
    if policy:
        doc["on_error"] = policy
    return doc


def test_on_error_continue_finishes_independent_branches(write_wf, tmp_path):
    code, out = run_json(write_wf(_branchy("continue", tmp_path)))
    assert code == 1
    assert out["status"] == "failed"
    assert out["failed_node"] == "flaky"
    assert "exit code 3" in out["error"]
    status = {n: v["status"] for n, v in out["nodes"].items()}
    assert status == {
        "start": "success",
        "flaky": "failed",
        "after_flaky": "skipped",
        "steady": "success",
        "after_steady": "success",
    }
    assert (tmp_path / "after_steady").exists()
    assert not (tmp_path / "after_flaky").exists()


def test_fail_fast_is_the_default_and_cancels_the_other_branch(write_wf, tmp_path):
    code, out = run_json(write_wf(_branchy(None, tmp_path)))
    assert code == 1
    status = {n: v["status"] for n, v in out["nodes"].items()}
    assert status["flaky"] == "failed"
    assert status["steady"] == "cancelled"
    assert status["after_steady"] in ("cancelled", "skipped")
    assert not (tmp_path / "after_steady").exists()


# --------------------------------------------------------------------------- guide and nodes


def guide_json_blocks(text: str) -> list[Any]:
    """Every ```json block of the guide; each must be well-formed JSON."""
    return [json.loads(b) for b in re.findall(r"```json\n(.*?)\n```", text, flags=re.S)]


def test_guide_documents_every_node_type_from_the_registry():
    # Built-ins only: other tests register extra types in this process, not in the CLI's.
    from fanflow.nodes.registry import BUILTIN_NODES, get_node_class

    res = run_cli("guide")
    assert res.code == 0
    text = res.stdout
    for name in BUILTIN_NODES:
        assert f"### {name}\n" in text
        cls = get_node_class(name)
        for param in cls.params_spec:
            assert re.search(rf"^    {re.escape(param)} +\(", text, flags=re.M), (name, param)
        for output in cls.outputs_spec:
            assert re.search(rf"^    {re.escape(output)} ", text, flags=re.M), (name, output)
    for topic in (
        "## Templates",
        "## Batch",
        "${__index__}",
        "on_error",
        "--max-concurrent",
        '"limits"',
        "## Pipeline form",
        "strategy",
        "max_retries",
        "retry_wait",
        "error_handling",
        "max_concurrent",
        "action",
    ):
        assert topic in text, topic


def guide_examples(text: str) -> list[dict[str, Any]]:
    """The complete workflows of the guide's examples section."""
    section = text.split("## Complete examples", 1)[1].split("\n## ", 1)[0]
    return guide_json_blocks(section)


def test_guide_examples_validate(tmp_path):
    text = run_cli("guide").stdout
    examples = guide_examples(text)
    assert len(examples) == 3
    # Every complete workflow anywhere in the guide validates, not only the three examples.
    complete = [b for b in guide_json_blocks(text) if isinstance(b, dict) and "ir_version" in b]
    assert len(complete) == 4
    for i, doc in enumerate(complete):
        path = tmp_path / f"guide-{i}.json"
        path.write_text(json.dumps(doc))
        res = run_cli("validate", str(path))
        assert res.code == 0, res.stderr
    forms = set()
    for doc in examples:
        forms |= {"pipeline"} if "pipeline" in doc else {"graph"}
        forms |= {"batch"} if any("batch" in n for n in doc.get("nodes", [])) else set()
    assert forms == {"graph", "batch", "pipeline"}


def test_guide_examples_run(tmp_path, monkeypatch):
    examples = guide_examples(run_cli("guide").stdout)
    paths = []
    for i, doc in enumerate(examples):
        paths.append(tmp_path / f"guide-{i}.json")
        paths[-1].write_text(json.dumps(doc))

    # 1: offline.
    report = tmp_path / "survey.md"
    code, out = run_json(paths[0], f"dir={ROOT / 'examples'}", f"report={report}")
    assert code == 0, out
    assert out["outputs"]["files"] == len(list((ROOT / "examples").glob("*"))) > 3
    assert "# Survey of" in report.read_text()

    # 2 and 3 call LLMs and HTTP: against the local mock server.
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("a.md", "b.md", "c.md"):
        (docs / name).write_text(f"document {name}")
    with MockLLMServer() as srv:
        env = {
            "OPENAI_BASE_URL": srv.url + "/v1",
            "OPENAI_API_KEY": "test",
            "ANTHROPIC_BASE_URL": srv.url,
            "ANTHROPIC_API_KEY": "test",
        }
        code, out = run_json(paths[1], f"dir={docs}", env=env)
        assert code == 0, out
        summary = out["outputs"]["summary"]
        # One line per document, in item order, each with that item's LLM answer (the mock
        # echoes the prompt, which carries the item's index, path and text).
        starts = [
            summary.index(f"- {docs / n}: echo: Document {i} (")
            for i, n in enumerate(("a.md", "b.md", "c.md"))
        ]
        assert starts == sorted(starts)
        assert "document b.md" in summary
        assert out["outputs"]["failed"] == 0

        code, out = run_json(paths[2], f"url={srv.url}/text", env=env)
        assert code == 0, out
        assert out["outputs"]["summary_by"] in ("ask_fast", "ask_other")
        parts = out["outputs"]["text"].split("\n\n---\n\n")
        assert len(parts) == 3
        assert "hello from mock" in parts[1] and "French" in parts[1]


def test_nodes_lists_every_type_with_a_description():
    from fanflow.nodes.registry import BUILTIN_NODES

    res = run_cli("nodes")
    assert res.code == 0
    listed = {line.split()[0]: line for line in res.stdout.splitlines() if line.strip()}
    assert set(BUILTIN_NODES) <= set(listed)
    assert all(len(line.split(None, 1)) == 2 for line in listed.values())


def test_nodes_describes_one_type():
    res = run_cli("nodes", "merge")
    assert res.code == 0
    assert "strategy" in res.stdout and 'default "object"' in res.stdout
    assert "inputs" in res.stdout and "required" in res.stdout
    assert "winner" in res.stdout

    res = run_cli("nodes", "shell", "--output-format", "json")
    info = res.json
    assert info["type"] == "shell"
    assert info["params"]["command"]["required"] is True
    assert info["params"]["ignore_errors"]["default"] is False
    assert set(info["outputs"]) == {"stdout", "stderr", "exit_code"}


def test_nodes_unknown_type_suggests_and_exits_2():
    res = run_cli("nodes", "shel")
    assert res.code == 2
    assert "unknown node type 'shel'" in res.stderr
    assert "did you mean 'shell'?" in res.stderr
    assert res.stdout == ""


# --------------------------------------------------------------------------- examples/

ALL_EXAMPLES = sorted(p.name for p in EXAMPLES.glob("*.json"))


@pytest.mark.parametrize("name", ALL_EXAMPLES)
def test_example_validates(name):
    res = run_cli("validate", str(EXAMPLES / name))
    assert res.code == 0, res.stderr
    if name in OFFLINE or name in ("demo.json", "llm-translate.json"):
        assert "warning" not in res.stderr


# Expected outputs of every example that runs offline (exit code, outputs).
OFFLINE: dict[str, tuple[list[str], int, dict[str, Any]]] = {
    "fan-out-diamond.json": ([], 0, {"summary": "11 words, 51 chars, most frequent: the"}),
    "if-else-or-join.json": ([], 0, {"message": "7 IS ODD, 3N+1 IS 22"}),
    "revise-loop.json": ([], 0, {"published": "draft v3 (published)", "versions": 3}),
    "batch-sequential.json": (
        [],
        0,
        {"lines": ["0: hello ada", "1: hello grace", "2: hello linus"], "count": 3},
    ),
    "batch-parallel.json": ([], 0, {"total": 140 - 25, "failed": 1, "first_error_index": 5}),
    "pipeline-nested.json": (
        [],
        0,
        {
            "result": {
                "upper": "FANFLOW",
                "reversed": "wolfnaf",
                "length": 7,
                "vowels": 2,
                "letters": ["a", "f", "l", "n", "o", "w"],
            }
        },
    ),
    "merge-strategies.json": (
        [],
        0,
        {
            "object": {"alpha": "alpha", "beta": "beta", "gamma": {"n": 3}},
            "list": ["alpha", "beta", 3],
            "text": 'alpha | beta | {"n": 3}',
            "named": {"first": "alpha", "second": "beta"},
        },
    ),
    "merge-first-race.json": ([], 0, {"answer": "fast answer to question", "winner": "fast"}),
    "on-error-continue.json": (["out={tmp}"], 1, {"steady": "{tmp}/steady.txt"}),
}


def test_the_authoring_examples_are_all_present():
    # Other examples (added with other features) are validated above; these are this suite's.
    assert {*OFFLINE, "demo.json", "llm-translate.json"} <= set(ALL_EXAMPLES)


@pytest.mark.parametrize("name", sorted(OFFLINE))
def test_offline_example_runs(name, tmp_path):
    args, want_code, want = OFFLINE[name]
    fill = json.loads(json.dumps(want).replace("{tmp}", str(tmp_path)))
    code, out = run_json(
        EXAMPLES / name,
        *(a.replace("{tmp}", str(tmp_path)) for a in args),
        cwd=tmp_path,
        timeout=30,
    )
    assert code == want_code, out
    assert out["outputs"] == fill


def test_llm_example_runs_against_the_mock(tmp_path):
    with MockLLMServer(delay=0.3) as srv:
        env = {"OPENAI_BASE_URL": srv.url + "/v1", "OPENAI_API_KEY": "test"}
        started = time.monotonic()
        code, out = run_json(
            EXAMPLES / "llm-translate.json", "text=good morning", env=env, cwd=tmp_path
        )
        elapsed = time.monotonic() - started
        stats = srv.stats()
    assert code == 0, out
    result = out["outputs"]["translations"]
    assert list(result) == ["french", "german", "japanese"]
    assert "French" in result["french"] and "good morning" in result["french"]
    assert "Japanese" in result["japanese"]
    # The three calls were in flight together (the mock counts them).
    assert stats["max_in_flight"] == 3
    assert elapsed < 10


def test_demo_runs_offline_and_writes_its_report(tmp_path):
    # A small source tree with known contents, so every number in the report can be checked.
    src = tmp_path / "src"
    (src / "pkg").mkdir(parents=True)
    (src / "a.py").write_text("x = 1\n" * 30)
    (src / "pkg" / "b.py").write_text("# TODO: more\n" + "y = 2\n" * 9)
    (src / "pkg" / "c.py").write_text("z = 3\n" * 20 + "# FIXME\n")
    (src / "notes.txt").write_text("not python\n")
    out_dir = tmp_path / "demo-out"
    code, out = run_json(EXAMPLES / "demo.json", f"src={src}", f"out={out_dir}", cwd=tmp_path)
    assert code == 0, out
    report = out_dir / "report.md"
    assert out["outputs"] == {"report": str(report), "files": 3, "lines": 61}
    text = report.read_text()
    assert text.startswith("# fanflow demo report")
    assert "3 Python files, 61 lines, 2 TODO/FIXME markers" in text
    # Largest first, from the batch's per-item results.
    assert text.index(f"{src}/a.py: 30 lines") < text.index(f"{src}/pkg/c.py: 21 lines")
    assert text.index(f"{src}/pkg/c.py: 21 lines") < text.index(f"{src}/pkg/b.py: 10 lines")
    assert all(v["status"] == "success" for v in out["nodes"].values())


def test_demo_defaults_work_from_the_repository_root(tmp_path):
    # What `make demo` runs: default inputs, from the repository root.
    out_dir = tmp_path / "demo-output"
    code, out = run_json(EXAMPLES / "demo.json", f"out={out_dir}", cwd=ROOT)
    assert code == 0, out
    assert out["outputs"]["files"] > 10
    assert (out_dir / "report.md").read_text().startswith("# fanflow demo report")
