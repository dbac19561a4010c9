"""Engine semantics end to end through the CLI: dataflow, joins, branches, loops, failure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import FANFLOW, run_cli, wf

STAMP = "date +%s.%N"


def timed(seconds: float, label: str) -> str:
    """A shell command printing its start and end wall-clock times."""
    return f's=$({STAMP}); sleep {seconds}; e=$({STAMP}); echo "$s $e {label}"'


def spans(result_json: dict) -> dict[str, tuple[float, float]]:
    out = {}
    for name, text in result_json["outputs"].items():
        start, end, _ = text.split(" ", 2)
        out[name] = (float(start), float(end))
    return out


def test_uneven_diamond_runs_dataflow_not_supersteps(write_wf):
    # A → (B 0.6 ‖ C 0.2 → D 0.6) → E: D must start when C ends, not when B ends.
    nodes = [
        {"id": "A", "type": "shell", "params": {"command": "echo a"}},
        {"id": "B", "type": "shell", "params": {"command": timed(0.6, "B")}},
        {"id": "C", "type": "shell", "params": {"command": timed(0.2, "C")}},
        {"id": "D", "type": "shell", "params": {"command": timed(0.6, "D")}},
        {"id": "E", "type": "shell", "params": {"command": timed(0, "E")}},
    ]
    edges = [("A", "B"), ("A", "C"), ("C", "D"), ("B", "E"), ("D", "E")]
    outputs = {k: {"source": f"${{{k}.stdout}}"} for k in "BCDE"}
    res = run_cli(
        "run", str(write_wf(wf(nodes, edges, outputs=outputs))), "--output-format", "json"
    )
    assert res.code == 0, res.stderr
    s = spans(res.json)
    assert s["B"][0] < s["C"][1] and s["C"][0] < s["B"][1], "B and C overlap"
    assert s["D"][0] < s["B"][1], "D started while B was still running (no superstep barrier)"
    assert s["E"][0] >= max(s["B"][1], s["D"][1]) - 0.01, "E waited for both"


def test_join_runs_exactly_once(write_wf, tmp_path):
    log = tmp_path / "join.log"
    nodes = [
        {"id": "start", "type": "shell", "params": {"command": "true"}},
        *[
            {"id": f"b{i}", "type": "shell", "params": {"command": f"sleep 0.{i}"}}
            for i in range(1, 4)
        ],
        {"id": "join", "type": "shell", "params": {"command": f"echo ran >> {log}"}},
    ]
    edges = [("start", f"b{i}") for i in range(1, 4)] + [(f"b{i}", "join") for i in range(1, 4)]
    res = run_cli("run", str(write_wf(wf(nodes, edges))))
    assert res.code == 0, res.stderr
    assert log.read_text().splitlines() == ["ran"]


def test_or_join_after_if_else_runs_once_and_skips_the_other_branch(write_wf, tmp_path):
    log = tmp_path / "log"
    nodes = [
        {
            "id": "decide",
            "type": "code",
            "params": {
                "code": "next = 'big' if n > 5 else 'small'\nresult = n",
                "inputs": {"n": "${n}"},
            },
        },
        {"id": "big", "type": "shell", "params": {"command": f"echo big >> {log}; echo BIG"}},
        {"id": "small", "type": "shell", "params": {"command": f"echo small >> {log}; echo SMALL"}},
        {"id": "after", "type": "shell", "params": {"command": f"echo after >> {log}; echo done"}},
    ]
    edges = [
        ("decide", "big", "big"),
        ("decide", "small", "small"),
        ("big", "after"),
        ("small", "after"),
    ]
    doc = wf(nodes, edges, inputs={"n": {"type": "integer"}},
             outputs={"which": {"source": "${big.stdout ?? small.stdout}"}})  # fmt: skip
    path = write_wf(doc)
    res = run_cli("run", str(path), "n=9", "--output-format", "json")
    assert res.code == 0, res.stderr
    out = res.json
    assert out["outputs"]["which"] == "BIG"
    assert out["nodes"]["small"]["status"] == "skipped"
    assert out["nodes"]["after"]["status"] == "success"
    assert log.read_text().splitlines() == ["big", "after"]
    log.unlink()
    res = run_cli("run", str(path), "n=1", "--output-format", "json")
    assert res.json["outputs"]["which"] == "SMALL"
    assert log.read_text().splitlines() == ["small", "after"]


def test_reading_an_output_without_an_edge_is_still_a_dependency(write_wf):
    nodes = [
        {"id": "slow", "type": "shell", "params": {"command": "sleep 0.4; echo payload"}},
        {"id": "reader", "type": "shell", "params": {"command": "echo got ${slow.stdout}"}},
        {"id": "other", "type": "shell", "params": {"command": "echo x"}},
    ]
    # Edges exist (so no implicit chain) but none into `reader` from `slow`.
    doc = wf(nodes, [("other", "reader")], outputs={"r": {"source": "${reader.stdout}"}})
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["r"] == "got payload"
    assert "reads 'slow' but has no edge" in res.stderr


def test_no_edges_means_array_order(write_wf, tmp_path):
    log = tmp_path / "order"
    nodes = [
        {
            "id": f"n{i}",
            "type": "shell",
            "params": {"command": f"sleep 0.0{3 - i}; echo {i} >> {log}"},
        }
        for i in range(3)
    ]
    res = run_cli("run", str(write_wf(wf(nodes))))
    assert res.code == 0, res.stderr
    assert log.read_text().split() == ["0", "1", "2"]


def test_revise_loop_runs_until_its_exit_action(write_wf):
    nodes = [
        {"id": "start", "type": "shell", "params": {"command": "echo begin"}},
        {
            "id": "draft",
            "type": "code",
            "params": {"code": "result = prev + 1", "inputs": {"prev": "${review.result ?? 0}"}},
        },
        {
            "id": "review",
            "type": "code",
            "params": {
                "code": "result = n\nnext = 'revise' if n < 3 else 'approve'",
                "inputs": {"n": "${draft.result}"},
            },
        },
        {
            "id": "publish",
            "type": "shell",
            "params": {"command": "echo published ${review.result}"},
        },
    ]
    edges = [
        ("start", "draft"),
        ("draft", "review"),
        ("review", "draft", "revise"),
        ("review", "publish", "approve"),
    ]
    doc = wf(nodes, edges, outputs={"out": {"source": "${publish.stdout}"}})
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["out"] == "published 3"


def test_loop_without_exit_is_bounded(write_wf):
    nodes = [
        {"id": "a", "type": "code", "params": {"code": "result = 1"}},
        {"id": "b", "type": "code", "params": {"code": "next = 'again'"}},
    ]
    doc = wf(nodes, [("a", "b"), ("b", "a", "again")], max_visits=5)
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 1
    assert "more than 5 times" in res.json["error"]


def test_error_edge_handles_a_failure(write_wf):
    nodes = [
        {"id": "risky", "type": "shell", "params": {"command": "echo oops >&2; exit 3"}},
        {
            "id": "recover",
            "type": "shell",
            "params": {"command": "echo recovered from ${risky.exit_code}"},
        },
        {"id": "happy", "type": "shell", "params": {"command": "echo fine"}},
    ]
    doc = wf(nodes, [("risky", "recover", "error"), ("risky", "happy")],
             outputs={"r": {"source": "${recover.stdout}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["r"] == "recovered from 3"
    assert res.json["nodes"]["risky"]["status"] == "failed"
    assert res.json["nodes"]["happy"]["status"] == "skipped"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_fail_fast_cancels_siblings_and_kills_their_grandchildren(write_wf, tmp_path):
    pidfile = tmp_path / "pid"
    nodes = [
        {"id": "start", "type": "shell", "params": {"command": "true"}},
        {
            "id": "slow",
            "type": "shell",
            "params": {"command": f"sleep 30 & echo $! > {pidfile}; wait"},
        },
        {"id": "bad", "type": "shell", "params": {"command": "sleep 0.5; echo broken >&2; exit 7"}},
        {"id": "after", "type": "shell", "params": {"command": "echo never"}},
    ]
    doc = wf(nodes, [("start", "slow"), ("start", "bad"), ("slow", "after"), ("bad", "after")])
    t0 = time.monotonic()
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", timeout=30)
    elapsed = time.monotonic() - t0
    assert res.code == 1
    out = res.json
    assert out["status"] == "failed" and out["failed_node"] == "bad"
    assert "exit code 7" in out["error"] and "broken" in out["error"]
    assert out["nodes"]["slow"]["status"] == "cancelled"
    assert out["nodes"]["start"]["status"] == "success"
    assert out["nodes"]["after"]["status"] in ("cancelled", "skipped")
    assert elapsed < 20, "the run did not wait for the 30 s sleep"
    pid = int(pidfile.read_text())
    deadline = time.monotonic() + 5
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(pid), "the sleep grandchild survived"


def test_sigint_cancels_and_exits_130(write_wf, tmp_path):
    marker = tmp_path / "started"
    nodes = [
        {"id": "a", "type": "shell", "params": {"command": f"touch {marker}; sleep 30"}},
        {"id": "b", "type": "shell", "params": {"command": "sleep 30"}},
    ]
    doc = wf(nodes, [])
    path = write_wf(doc)
    proc = subprocess.Popen([*FANFLOW, "run", str(path), "--output-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 15
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert json.loads(out)["status"] == "cancelled"


def test_shell_values_are_data_never_code(write_wf, tmp_path):
    evil = [
        '"; touch {d}/q1; echo "',
        "$(touch {d}/q2)",
        "`touch {d}/q3`",
        "'; touch {d}/q4; echo '",
        "a\ntouch {d}/q5",
        "${{HOME}} $((1+1)) \\ | & > {d}/q6",
    ]
    values = [v.format(d=tmp_path) for v in evil]
    nodes = [
        {"id": f"n{i}", "type": "shell", "params": {"command": cmd}}
        for i, cmd in enumerate(
            ["echo ${v}", 'echo "${v}"', "echo '${v}'", "printf '%s' \"x${v}y\""]
        )
    ]
    doc = wf(nodes, [], inputs={"v": {"type": "string"}},
             outputs={f"o{i}": {"source": f"${{n{i}.stdout}}"} for i in range(4)})  # fmt: skip
    path = write_wf(doc)
    for value in values:
        res = run_cli("run", str(path), f"v={value}", "--output-format", "json")
        assert res.code == 0, res.stderr
        o = res.json["outputs"]
        assert o["o1"] == value and o["o2"] == value and o["o3"] == f"x{value}y"
        assert not list(tmp_path.glob("q*")), f"{value!r} executed something"
    res = run_cli("run", str(path), "v=World", "--output-format", "json")
    assert res.json["outputs"]["o1"] == "World"


def test_max_concurrent_one_is_a_correct_sequential_run(write_wf, tmp_path):
    log = tmp_path / "log"
    nodes = [
        {"id": "s", "type": "shell", "params": {"command": "true"}},
        *[
            {
                "id": f"b{i}",
                "type": "shell",
                "params": {"command": f"echo start >> {log}; sleep 0.1; echo end >> {log}"},
            }
            for i in range(4)
        ],
        {
            "id": "batch",
            "type": "shell",
            "params": {"command": f"echo start >> {log}; echo ${{item}}; echo end >> {log}"},
            "batch": {"items": [1, 2, 3], "parallel": True, "max_concurrent": 3},
        },
    ]
    edges = [("s", f"b{i}") for i in range(4)] + [("s", "batch")]
    res = run_cli("run", str(write_wf(wf(nodes, edges))), "--max-concurrent", "1", timeout=60)
    assert res.code == 0, res.stderr
    lines = log.read_text().split()
    assert lines == ["start", "end"] * 7, "never two leaves at once"


def test_unknown_option_and_bad_input_pair_exit_2(write_wf):
    path = write_wf(wf([{"id": "a", "type": "shell", "params": {"command": "true"}}]))
    assert run_cli("run", str(path), "nonsense").code == 2
    assert run_cli("run", str(path), "--bogus").code == 2
    res = run_cli("run", str(path), "x=1")
    assert res.code == 2 and "unknown input 'x'" in res.stderr


def test_inputs_are_typed_and_defaulted(write_wf):
    doc = wf(
        [{"id": "typer", "type": "code", "params": {"code": "result = [type(v).__name__ for v in (a, b, c, d, e)]",
          "inputs": {"a": "${a}", "b": "${b}", "c": "${c}", "d": "${d}", "e": "${e}"}}}],
        inputs={"a": {"type": "integer"}, "b": {"type": "boolean"}, "c": {"type": "array"},
                "d": {"type": "object"}, "e": {"type": "string", "default": "dflt"}},
        outputs={"types": {"source": "${typer.result}"}},
    )  # fmt: skip
    path = write_wf(doc)
    res = run_cli(
        "run", str(path), "a=3", "b=true", "c=[1,2]", 'd={"k": 1}', "--output-format", "json"
    )
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["types"] == ["int", "bool", "list", "dict", "str"]
    res = run_cli("run", str(path), "a=three", "b=true", "c=[1,2]", "d={}")
    assert res.code == 2 and "expected an integer" in res.stderr


def test_templates_keep_types_and_render_text(write_wf):
    nodes = [
        {
            "id": "data",
            "type": "code",
            "params": {"code": "result = {'items': [{'name': 'x', 'n': 2}], 'ok': True}"},
        },
        {
            "id": "use",
            "type": "code",
            "params": {
                "code": "result = [whole, first, text]",
                "inputs": {
                    "whole": "${data.result}",
                    "first": "${data.result.items[0].n}",
                    "text": "n=${data.result.items[0].n} all=${data.result.items}",
                },
            },
        },
        {"id": "json_out", "type": "shell", "params": {"command": "echo '{\"a\": [10, 20]}'"}},
        {
            "id": "index_json",
            "type": "code",
            "params": {"code": "result = v", "inputs": {"v": "${json_out.stdout.a[1]}"}},
        },
    ]
    doc = wf(
        nodes, outputs={"u": {"source": "${use.result}"}, "j": {"source": "${index_json.result}"}}
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    whole, first, text = res.json["outputs"]["u"]
    assert whole == {"items": [{"name": "x", "n": 2}], "ok": True}
    assert first == 2
    assert text == 'n=2 all=[{"name": "x", "n": 2}]'
    assert res.json["outputs"]["j"] == 20


def test_file_nodes_round_trip(write_wf, tmp_path):
    target = tmp_path / "sub" / "out.txt"
    nodes = [
        {
            "id": "w",
            "type": "write-file",
            "params": {"file_path": str(target), "content": "hello\n"},
        },
        {
            "id": "a",
            "type": "write-file",
            "params": {"file_path": str(target), "content": "more", "append": True},
        },
        {"id": "r", "type": "read-file", "params": {"file_path": "${a.file_path}"}},
    ]
    doc = wf(nodes, outputs={"c": {"source": "${r.content}"}})
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["c"] == "hello\nmore"


def test_json_output_is_one_object_and_progress_goes_to_stderr(write_wf):
    doc = wf([{"id": "a", "type": "shell", "params": {"command": "echo hi"}}],
             outputs={"x": {"source": "${a.stdout}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    payload = json.loads(res.stdout)  # the whole stdout is one JSON object
    assert set(payload) >= {"status", "outputs", "duration_ms", "nodes", "error"}
    assert payload["nodes"]["a"]["status"] == "success"
    assert "a" in res.stderr


def test_version_is_fast_and_imports_no_engine():
    code = "import sys, fanflow.cli; print(sorted(m for m in sys.modules if m.startswith(('fanflow.engine', 'pydantic', 'openai', 'rich'))))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    res = run_cli("--version")
    assert res.code == 0 and "fanflow" in res.stdout


def test_pocketflow_node_runs_unmodified(write_wf, tmp_path):
    module = tmp_path / "pfnodes.py"
    module.write_text(
        "from pocketflow import Node, AsyncNode\n"
        "class Upper(Node):\n"
        "    def prep(self, shared):\n        return shared['text']\n"
        "    def exec(self, text):\n        return text.upper()\n"
        "    def post(self, shared, prep_res, exec_res):\n        shared['upper'] = exec_res\n        return 'default'\n"
        "class Flaky(AsyncNode):\n"
        "    calls = 0\n"
        "    def __init__(self):\n        super().__init__(max_retries=3, wait=0)\n"
        "    async def exec_async(self, prep_res):\n"
        "        type(self).calls += 1\n"
        "        if type(self).calls < 2:\n            raise RuntimeError('transient')\n"
        "        return type(self).calls\n"
        "    async def post_async(self, shared, prep_res, exec_res):\n        shared['calls'] = exec_res\n"
    )
    doc = wf(
        [{"id": "u", "type": "pfnodes:Upper"}, {"id": "f", "type": "pfnodes:Flaky"}],
        inputs={"text": {"type": "string"}},
        outputs={"u": {"source": "${u.upper}"}, "f": {"source": "${f.calls}"}},
    )
    res = run_cli("run", str(write_wf(doc)), "text=hi", "--output-format", "json",
                  env={"PYTHONPATH": str(tmp_path)})  # fmt: skip
    assert res.code == 0, res.stderr
    assert res.json["outputs"] == {"u": "HI", "f": 2}


def test_user_nodes_from_node_path(write_wf, tmp_path):
    folder = tmp_path / "mynodes"
    folder.mkdir()
    (folder / "greet.py").write_text(
        "from fanflow.nodes.base import Node, Param\n"
        "class Greet(Node):\n"
        "    type_name = 'greet'\n"
        "    params_spec = {'name': Param('string', True)}\n"
        "    outputs_spec = {'greeting': 'text'}\n"
        "    def exec(self, p):\n        return {'greeting': 'hello ' + p['name']}\n"
    )
    doc = wf([{"id": "g", "type": "greet", "params": {"name": "ada"}}],
             outputs={"g": {"source": "${g.greeting}"}})  # fmt: skip
    env = {"FANFLOW_NODE_PATH": str(folder)}
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", env=env)
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["g"] == "hello ada"
    bad = wf([{"id": "g", "type": "greet", "params": {"nam": "ada"}}])
    res = run_cli("validate", str(write_wf(bad, "bad.json")), env=env)
    assert res.code == 2 and "did you mean 'name'" in res.stderr


def test_workflow_dir_independent_cwd(write_wf, tmp_path):
    doc = wf([{"id": "a", "type": "shell", "params": {"command": "pwd", "cwd": str(tmp_path)}}],
             outputs={"d": {"source": "${a.stdout}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=Path("/"))
    assert res.json["outputs"]["d"] == os.path.realpath(tmp_path)
