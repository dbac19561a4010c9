"""The CLI contract (docs/cli.md): with `--output-format json` every exit prints exactly one JSON
object on stdout, whatever went wrong and wherever (click's own usage errors included); exit 2
for an invalid command line or workflow; never a traceback; a closed stdout changes nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import FANFLOW, run_cli, wf

SIMPLE = wf(
    [{"id": "a", "type": "shell", "params": {"command": "echo ${n}"}}],
    inputs={"n": {"type": "integer"}},
    outputs={"out": {"source": "${a.stdout}"}},
)


@pytest.fixture
def simple(write_wf) -> Path:
    return write_wf(SIMPLE)


def invalid(res, *words: str) -> dict:
    """The `invalid` object: exit 2, one JSON object on stdout, the words in its error."""
    assert res.code == 2, (res.stdout, res.stderr)
    payload = json.loads(res.stdout)  # exactly one JSON document, nothing else on stdout
    assert payload["status"] == "invalid"
    assert payload["problems"] and all(p["message"] for p in payload["problems"])
    for word in words:
        assert word in payload["error"], payload
    assert "error:" in res.stderr  # people still get the message on stderr
    return payload


@pytest.mark.parametrize(
    ("args", "words", "field"),
    [
        (["--max-concurrent", "0"], ["--max-concurrent", "0"], "--max-concurrent"),
        (["--max-concurrent=many"], ["--max-concurrent", "many"], "--max-concurrent"),
        (["--bogus"], ["--bogus"], None),
        (["--limit", "nonsense"], ["nonsense"], "limits"),
        (["nope"], ["name=value", "nope"], "inputs"),
        (["n=abc"], ["integer"], "inputs.n"),
        (["m=1"], ["unknown input 'm'"], "inputs.m"),
        (["--resume", "no-such-run"], ["no-such-run"], "--resume"),
    ],
)
def test_run_usage_errors_keep_the_json_contract(simple, args, words, field):
    res = run_cli("run", str(simple), "n=1", *args, "--output-format", "json")
    payload = invalid(res, *words)
    if field is not None:
        assert payload["problems"][0].get("field") == field, payload


def test_output_format_is_found_wherever_it_is_written(simple):
    # before the workflow, in = form, and the last one wins (as click decides)
    for args in (
        ["--output-format", "json", str(simple), "--max-concurrent", "0"],
        [str(simple), "--max-concurrent", "0", "--output-format=json"],
        [
            str(simple),
            "--output-format",
            "text",
            "--max-concurrent",
            "0",
            "--output-format",
            "json",
        ],
    ):
        invalid(run_cli("run", *args), "--max-concurrent")
    res = run_cli(
        "run",
        str(simple),
        "--output-format",
        "json",
        "--max-concurrent",
        "0",
        "--output-format",
        "text",
    )
    assert res.code == 2 and res.stdout == "" and "--max-concurrent" in res.stderr


def test_a_missing_workflow_argument_and_a_missing_file(tmp_path):
    invalid(run_cli("run", "--output-format", "json"), "WORKFLOW")
    payload = invalid(run_cli("run", str(tmp_path / "nope.json"), "--output-format", "json"))
    assert payload["problems"][0]["message"] == "file not found"


def test_a_directory_as_the_workflow_names_it_and_lists_candidates(tmp_path, write_wf):
    write_wf(SIMPLE, "one.json")
    for command in ("run", "validate"):
        payload = invalid(run_cli(command, str(tmp_path), "--output-format", "json"))
        problem = payload["problems"][0]
        assert problem["file"] == str(tmp_path) and "directory" in problem["message"]
        assert "one.json" in problem["hint"]
    # text mode: the same message, no usage banner needed
    res = run_cli("run", str(tmp_path))
    assert res.code == 2 and res.stdout == "" and "is a directory" in res.stderr


def test_text_mode_usage_errors_stay_on_stderr(simple):
    res = run_cli("run", str(simple), "--max-concurrent", "0")
    assert res.code == 2 and res.stdout == ""
    assert "Usage:" in res.stderr and "--max-concurrent" in res.stderr


def test_validate_speaks_json_too(write_wf, tmp_path):
    good = write_wf(SIMPLE)
    res = run_cli("validate", str(good), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert res.json == {
        "status": "valid",
        "workflow": str(good),
        "nodes": 1,
        "edges": 0,
        "warnings": [],
    }
    bad = write_wf(wf([{"id": "a", "type": "shelll"}]), "bad.json")
    payload = invalid(run_cli("validate", str(bad), "--output-format", "json"), "shell")
    assert payload["problems"][0]["node"] == "a"
    invalid(run_cli("validate", str(good), "--output-format", "json", "--nope"), "--nope")
    # text stays as it was
    res = run_cli("validate", str(good))
    assert res.code == 0 and "valid (1 nodes, 0 edges)" in res.stdout


def test_plan_runs_and_nodes_errors_keep_the_json_contract(simple, tmp_path):
    invalid(run_cli("plan", str(tmp_path / "nope.json"), "--output-format", "json"))
    invalid(run_cli("plan", str(simple), "--format", "json", "--bogus"), "--bogus")
    invalid(run_cli("runs", "--limit", "0", "--output-format", "json"), "--limit")
    invalid(run_cli("runs", "show", "nope", "--output-format", "json"), "nope")
    assert run_cli("run", str(simple), "n=1", "-q").code == 0  # now there is a store
    invalid(run_cli("runs", "show", "nope", "--output-format", "json"), "no run 'nope'")
    invalid(run_cli("nodes", "shelll", "--output-format", "json"), "shell")
    # and the successful forms are unchanged
    assert run_cli("plan", str(simple), "--output-format", "json").json["levels"]
    assert run_cli("runs", "--output-format", "json").json["runs"]


def test_an_unknown_command_in_json_mode(simple):
    invalid(run_cli("rnu", str(simple), "--output-format", "json"), "rnu")


def test_a_custom_node_printing_to_stdout_cannot_break_the_json(tmp_path):
    (tmp_path / "nodes").mkdir()
    (tmp_path / "nodes" / "chatty.py").write_text(
        "import os, sys\n"
        "from fanflow.nodes.base import Node\n"
        "class Chatty(Node):\n"
        "    type_name = 'chatty'\n"
        "    def exec(self, prep_res):\n"
        "        print('hello from python')\n"
        "        sys.stdout.flush()\n"
        "        os.system('echo hello from a child')\n"
        "        os.write(1, b'hello from fd 1\\n')\n"
        "        return 'done'\n"
    )
    path = tmp_path / "wf.json"
    path.write_text(json.dumps(wf([{"id": "c", "type": "chatty"}])))
    env = {"FANFLOW_NODE_PATH": str(tmp_path / "nodes")}
    res = run_cli("run", str(path), "--output-format", "json", env=env)
    assert res.code == 0, res.stderr
    assert res.json["status"] == "success"  # stdout is exactly the one object
    for line in ("hello from python", "hello from a child", "hello from fd 1"):
        assert line in res.stderr  # nothing is lost: it went to stderr


def _closed_stdout(args: list[str], cwd: Path) -> tuple[int, str]:
    """Run the CLI with a stdout whose reader has gone (`fanflow … | head -0`)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [*FANFLOW, *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            cwd=cwd,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write_end)
    assert "Traceback" not in proc.stderr and "Exception ignored" not in proc.stderr, proc.stderr
    return proc.returncode, proc.stderr


def test_a_closed_stdout_keeps_the_exit_code_and_the_stderr_messages(write_wf, tmp_path):
    big = "seq 1 200000"  # far more than a pipe buffer
    ok = write_wf(
        wf(
            [{"id": "a", "type": "shell", "params": {"command": big}}],
            outputs={"o": {"source": "${a.stdout}"}},
        ),
        "ok.json",
    )
    bad = write_wf(
        wf(
            [
                {"id": "a", "type": "shell", "params": {"command": big}},
                {"id": "b", "type": "shell", "params": {"command": "exit 3"}},
            ],
            [("a", "b")],
            outputs={"o": {"source": "${a.stdout}"}},
        ),
        "bad.json",
    )
    for fmt in ("json", "text"):
        code, err = _closed_stdout(["run", str(ok), "-q", "--output-format", fmt], tmp_path)
        assert code == 0, err
        code, err = _closed_stdout(["run", str(bad), "-q", "--output-format", fmt], tmp_path)
        assert code == 1 and "node 'b' failed" in err
    code, err = _closed_stdout(["schema"], tmp_path)
    assert code == 0, err


def test_python_api_usage_of_main_still_raises_in_non_standalone_mode(simple):
    # click's contract for embedders: standalone_mode=False propagates instead of exiting
    import click

    from fanflow.cli import main

    with pytest.raises(click.UsageError):
        main(
            ["run", str(simple), "--max-concurrent", "0", "--output-format", "json"],
            standalone_mode=False,
        )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
