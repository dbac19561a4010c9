"""pflow's node types and template forms that pflow workflows use (issue 13, second part):
copy-file / move-file / delete-file (confirm_delete), shell strip_newline, the agent node, and
dynamic indexes `${a.results[${__index__}]}`."""

from __future__ import annotations

import json
import os
import stat
import textwrap
from pathlib import Path

import pytest

import fanflow
from conftest import run_cli, wf


def _run(doc: dict, **inputs):
    result = fanflow.run(doc, inputs, checkpoint=False)
    return result


def test_copy_and_move_create_folders_and_refuse_to_overwrite(tmp_path):
    src = tmp_path / "a.txt"
    src.write_text("hello")
    doc = wf(
        [
            {"id": "cp", "type": "copy-file",
             "params": {"source_path": str(src), "dest_path": str(tmp_path / "x" / "b.txt")}},
            {"id": "mv", "type": "move-file",
             "params": {"source_path": "${cp.dest_path}", "dest_path": str(tmp_path / "y")}},
        ],
        [("cp", "mv")],
        outputs={"where": {"source": "${mv.dest_path}"}, "copied": {"source": "${cp.copied}"}},
    )  # fmt: skip
    (tmp_path / "y").mkdir()
    result = _run(doc)
    assert result.ok, result.error
    assert result.outputs == {"where": str(tmp_path / "y" / "b.txt"), "copied": True}
    assert (tmp_path / "y" / "b.txt").read_text() == "hello"
    assert not (tmp_path / "x" / "b.txt").exists() and src.exists()
    again = _run(wf([{"id": "cp", "type": "copy-file",
                      "params": {"source_path": str(src), "dest_path": str(tmp_path / "y" / "b.txt")}}]))  # fmt: skip
    assert not again.ok and "already exists; set overwrite: true" in again.error


def test_delete_needs_the_boolean_input_confirm_delete(tmp_path):
    victim = tmp_path / "v.txt"
    victim.write_text("x")
    doc = wf(
        [{"id": "rm", "type": "delete-file", "params": {"file_path": str(victim)}}],
        inputs={"confirm_delete": {"type": "boolean", "required": False}},
    )
    refused = _run(doc)
    assert not refused.ok and "confirm_delete=true" in refused.error
    assert victim.exists()
    done = _run(doc, confirm_delete=True)
    assert done.ok, done.error
    assert not victim.exists()
    gone = _run(doc, confirm_delete=True)  # already gone: still success (idempotent)
    assert gone.ok and "did not exist" in gone.store["rm"]["deleted"]


def test_delete_through_the_cli_takes_confirm_delete_as_typed_input(tmp_path, write_wf):
    victim = tmp_path / "v.txt"
    victim.write_text("x")
    path = write_wf(
        wf(
            [{"id": "rm", "type": "delete-file", "params": {"file_path": str(victim)}}],
            inputs={"confirm_delete": {"type": "boolean", "required": False}},
        )
    )
    assert run_cli("run", str(path)).code == 1 and victim.exists()
    assert run_cli("run", str(path), "confirm_delete=true").code == 0
    assert not victim.exists()


def test_shell_strip_newline(tmp_path):
    doc = wf(
        [
            {"id": "kept", "type": "shell", "params": {"command": "printf 'a\\n'", "strip_newline": False}},
            {"id": "cut", "type": "shell", "params": {"command": "printf 'a\\n'"}},
        ],
        [],
        outputs={"kept": {"source": "${kept.stdout}"}, "cut": {"source": "${cut.stdout}"}},
    )  # fmt: skip
    result = _run(doc)
    assert result.ok, result.error
    assert result.outputs == {"kept": "a\n", "cut": "a"}


def test_dynamic_index_reads_the_matching_item_of_an_earlier_batch():
    doc = wf(
        [
            {"id": "first", "type": "code", "params": {"code": "result = x * 10", "inputs": {"x": "${item}"}},
             "batch": {"items": [1, 2, 3]}},
            {"id": "second", "type": "code",
             "params": {"code": "result = prev + x", "inputs": {"prev": "${first.results[${__index__}].result}", "x": "${item}"}},
             "batch": {"items": [1, 2, 3]}},
            {"id": "pick", "type": "code",
             "params": {"code": "result = v", "inputs": {"v": "${first.results[${which.result}].result}"}}},
            {"id": "which", "type": "code", "params": {"code": "result = 2"}},
        ],
        [("first", "second"), ("first", "which"), ("which", "pick")],
        outputs={"second": {"source": "${second.results}"}, "pick": {"source": "${pick.result}"}},
    )  # fmt: skip
    result = _run(doc)
    assert result.ok, result.error
    assert [r["result"] for r in result.outputs["second"]] == [11, 22, 33]
    assert result.outputs["pick"] == 30


def test_dynamic_index_names_are_checked_like_any_template(write_wf):
    path = write_wf(
        wf([{"id": "a", "type": "code", "params": {"code": "result = v", "inputs": {"v": "${a0[${nope}]}"}}},
            {"id": "a0", "type": "code", "params": {"code": "result = [1]"}}], [("a0", "a")])
    )  # fmt: skip
    r = run_cli("validate", str(path))
    assert r.code == 2 and "'nope'" in r.stderr


def _fake(bin_dir: Path, name: str, script: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    exe = bin_dir / name
    exe.write_text("#!/usr/bin/env python3\n" + textwrap.dedent(script))
    exe.chmod(exe.stat().st_mode | stat.S_IEXEC)


def test_agent_runs_the_claude_cli_and_takes_its_result(tmp_path, write_wf):
    bin_dir = tmp_path / "bin"
    _fake(bin_dir, "claude", """
        import json, sys
        args = sys.argv[1:]
        print(json.dumps({"type": "result", "is_error": False, "session_id": "s-1",
                          "result": "did: " + args[args.index("-p") + 1] + " with " + args[args.index("--model") + 1],
                          "usage": {"input_tokens": 3}, "total_cost_usd": 0.01}))
    """)  # fmt: skip
    _fake(bin_dir, "codex", """
        import sys
        args = sys.argv[1:]
        out = args[args.index("--output-last-message") + 1]
        open(out, "w").write("codex says: " + args[-1] + "\\n")
        print("progress noise")
    """)  # fmt: skip
    path = write_wf(
        wf(
            [
                {"id": "ask", "type": "agent", "params": {"backend": "claude", "prompt": "fix the bug", "model": "sonnet"}},
                {"id": "other", "type": "agent", "params": {"backend": "codex", "prompt": "review"}},
            ],
            [],
            outputs={"a": {"source": "${ask.result}"}, "s": {"source": "${ask.session_id}"},
                     "b": {"source": "${other.result}"}},
        )
    )  # fmt: skip
    env = {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    r = run_cli("run", str(path), "--output-format", "json", env=env)
    assert r.code == 0, r.stderr
    assert r.json["outputs"] == {"a": "did: fix the bug with sonnet", "s": "s-1",
                                 "b": "codex says: review"}  # fmt: skip


def test_agent_without_its_program_is_refused_before_the_run(tmp_path, write_wf):
    marker = tmp_path / "ran"
    path = write_wf(
        wf(
            [{"id": "first", "type": "shell", "params": {"command": f"touch {marker}"}},
             {"id": "ask", "type": "agent", "params": {"backend": "claude", "prompt": "hi"}}],
            [("first", "ask")],
        )
    )  # fmt: skip
    r = run_cli("run", str(path), "--output-format", "json", env={"PATH": "/usr/bin:/bin"})
    assert r.code == 2
    assert "needs the `claude` program on PATH" in r.json["error"]
    assert not marker.exists()
    bad = write_wf(
        wf([{"id": "ask", "type": "agent", "params": {"backend": "gpt", "prompt": "x"}}]), "b.json"
    )
    r = run_cli("validate", str(bad))
    assert r.code == 2 and "unknown agent backend 'gpt'" in r.stderr


@pytest.mark.parametrize("name", ["run-searcher", "run-review-lenses"])
def test_pflow_agent_workflows_from_the_sdist_validate_now(name):
    # Both of the sdist's workflows drive coding agents (claude and codex); they load and
    # validate, every agent param they use included.
    here = Path(__file__).parent / "pflow" / f"{name}.pflow.md"
    r = run_cli("validate", str(here), "--output-format", "json")
    assert r.code == 0, r.stdout
    assert json.loads(r.stdout)["status"] == "valid"


def test_an_output_marked_stdout_is_printed_alone_and_raw(write_wf):
    path = write_wf(
        wf(
            [{"id": "a", "type": "shell", "params": {"command": "printf 'line 1\\nline 2'"}}],
            outputs={"text": {"source": "${a.stdout}", "stdout": True},
                     "code": {"source": "${a.exit_code}"}},
        )
    )  # fmt: skip
    r = run_cli("run", str(path), "-q")
    assert r.code == 0 and r.stdout == "line 1\nline 2\n"
    assert run_cli("run", str(path), "--output-format", "json").json["outputs"]["code"] == 0
    two = write_wf(
        wf(
            [{"id": "a", "type": "shell", "params": {"command": "true"}}],
            outputs={"x": {"source": "${a.stdout}", "stdout": True},
                     "y": {"source": "${a.stderr}", "stdout": True}},
        ),
        "two.json",
    )  # fmt: skip
    r = run_cli("validate", str(two))
    assert r.code == 2 and "outputs.y.stdout" in r.stderr


def test_shell_inputs_are_names_the_command_reads_as_data(tmp_path, monkeypatch):
    # pflow's guide example: the command reads ${raw} and ${iteration} from its own inputs.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "queue.txt").write_text("a; rm -rf /\nb\nc\n")
    src = Path(__file__).parent / "pflow" / "guide-sub-workflows-3.pflow.md"
    result = fanflow.run(src, {"iteration": 1}, checkpoint=False)
    assert result.ok, result.error
    assert (tmp_path / "log.txt").read_text() == "a; rm -rf /\n"  # data, never code
    assert (tmp_path / "queue.txt").read_text() == "b\nc\n"


def test_a_shell_loop_carries_a_value_through_its_inputs():
    doc = wf(
        [{"id": "grow", "type": "shell",
          "params": {"command": "echo \"${word}x\"", "inputs": {"word": "a"}},
          "loop": {"until": "${grow.done}", "carry": {"word": "${grow.stdout}"}, "max_iterations": 3}}],
        outputs={"w": {"source": "${grow.stdout}"}, "n": {"source": "${grow.iterations}"}},
    )  # fmt: skip
    result = fanflow.run(doc, checkpoint=False)
    assert result.ok, result.error
    assert result.outputs == {"w": "axxx", "n": 3}  # a → ax → axx → axxx, the cap stops it


def test_code_inputs_typed_by_annotation_are_decoded_from_json_text():
    doc = wf(
        [
            {"id": "emit", "type": "shell", "params": {"command": "echo '{\"n\": 2}'; true"}},
            {"id": "use", "type": "code",
             "params": {"code": "data: dict\ncount: int\nresult: int = data['n'] * count",
                        "inputs": {"data": "${emit.stdout}", "count": "3"}}},
            {"id": "bad", "type": "code",
             "params": {"code": "data: dict\nresult = 1", "inputs": {"data": "not json"}}},
        ],
        [("emit", "use"), ("use", "bad")],
        outputs={"r": {"source": "${use.result}"}},
    )  # fmt: skip
    result = fanflow.run(doc, checkpoint=False)
    assert result.store["use"]["result"] == 6  # the shell's JSON text reached `data: dict`
    assert not result.ok
    assert "input 'data' expects dict but received text 'not json'" in result.error
