"""Durable runs through the CLI: checkpoints, `--resume`, kill -9, Ctrl-C, changed workflows.

Executions are counted through a side-effect log that the shell commands append to, so "ran
exactly these items again" is checked against what really ran, not what the engine says.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

from conftest import FANFLOW, run_cli, wf
from fanflow.store.runs import RunStore, default_store_path


def log_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def batch_doc(command: str, n: int, **batch: Any) -> dict[str, Any]:
    """gen → work (a batch of shell items over 0..n-1) → total (reads every result)."""
    nodes = [
        {"id": "gen", "type": "code", "params": {"code": f"result = list(range({n}))"}},
        {
            "id": "work",
            "type": "shell",
            "params": {"command": command},
            "batch": {"items": "${gen.result}", **batch},
        },
        {
            "id": "total",
            "type": "code",
            "params": {
                "code": "result = ' '.join(r['stdout'] for r in results)",
                "inputs": {"results": "${work.results}"},
            },
        },
    ]
    return wf(nodes, [("gen", "work"), ("work", "total")],
              outputs={"all": {"source": "${total.result}"}})  # fmt: skip


def store() -> RunStore:
    return RunStore(default_store_path())  # FANFLOW_HOME points into the test's tmp_path


def test_failed_item_then_resume_runs_exactly_the_failed_and_unstarted_items(write_wf, tmp_path):
    # Items run one at a time; item 15 fails while the file `broken` exists.
    cmd = "echo ${item} >> runs.log; if [ -f broken ] && [ ${item} = 15 ]; then exit 3; fi; echo r${item}"
    path = write_wf(batch_doc(cmd, 20))
    (tmp_path / "broken").touch()

    first = run_cli("run", str(path), "--output-format", "json", cwd=tmp_path)
    assert first.code == 1, first.stderr
    assert first.json["failed_node"] == "work"
    assert log_lines(tmp_path / "runs.log") == [str(i) for i in range(16)]  # 16..19 never ran
    run = store().get_run("last")
    assert run.status == "failed"
    assert sorted(store().item_results(run.id)["work"]) == list(range(15))

    listing = run_cli("runs", "show", run.id[:10], cwd=tmp_path)
    assert listing.code == 0 and "15/20 ok, 1 failed, 4 pending" in listing.stdout

    # Fix the cause and resume: only 15 (failed) and 16..19 (never started) run.
    (tmp_path / "broken").unlink()
    (tmp_path / "runs.log").unlink()
    second = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert log_lines(tmp_path / "runs.log") == ["15", "16", "17", "18", "19"]
    assert second.json["nodes"]["gen"]["status"] in ("success", "resumed")

    # Same run, same id, and the same outputs as a run that never failed.
    again = store().get_run("last")
    assert again.id == run.id and again.status == "success" and again.attempts == 2
    clean_dir = tmp_path / "clean"
    clean_dir.mkdir()
    clean = run_cli("run", str(path), "--no-checkpoint", "--output-format", "json", cwd=clean_dir)
    assert clean.code == 0, clean.stderr
    assert second.json["outputs"] == clean.json["outputs"]
    assert second.json["outputs"]["all"] == " ".join(f"r{i}" for i in range(20))

    # A third resume has nothing left to do: nothing runs, same outputs.
    (tmp_path / "runs.log").unlink()
    third = run_cli("run", str(path), "--resume", run.id, "--output-format", "json", cwd=tmp_path)
    assert third.code == 0, third.stderr
    assert log_lines(tmp_path / "runs.log") == []
    assert third.json["outputs"] == clean.json["outputs"]


def test_parallel_batch_resume_reruns_no_completed_item(write_wf, tmp_path):
    # Parallel items; item 7 fails fast, cancelling the ones in flight.
    cmd = (
        "echo start-${item} >> runs.log; sleep 0.05; "
        "if [ -f broken ] && [ ${item} = 7 ]; then exit 3; fi; "
        "echo done-${item} >> runs.log; echo r${item}"
    )
    path = write_wf(batch_doc(cmd, 30, parallel=True, max_concurrent=4))
    (tmp_path / "broken").touch()
    first = run_cli("run", str(path), "--output-format", "json", cwd=tmp_path)
    assert first.code == 1, first.stderr
    stored = set(store().item_results(store().get_run("last").id)["work"])
    done_first = {int(x[5:]) for x in log_lines(tmp_path / "runs.log") if x.startswith("done-")}
    # every recorded item really ran; one in flight may have logged "done" and then been
    # cancelled by the failure before the engine saw it finish: that one counts as not done
    assert stored <= done_first and len(done_first - stored) <= 4
    assert 7 not in stored and len(stored) < 30

    (tmp_path / "broken").unlink()
    (tmp_path / "runs.log").unlink()
    second = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=tmp_path)
    assert second.code == 0, second.stderr
    started = [int(x[6:]) for x in log_lines(tmp_path / "runs.log") if x.startswith("start-")]
    assert sorted(started) == sorted(set(range(30)) - stored)  # each missing item once, no other
    assert second.json["outputs"]["all"] == " ".join(f"r{i}" for i in range(30))


def test_kill_9_mid_batch_then_resume(write_wf, tmp_path):
    cmd = "sleep 0.15; echo ${item} >> done.log; echo r${item}"
    n = 40
    path = write_wf(batch_doc(cmd, n, parallel=True, max_concurrent=3))
    proc = subprocess.Popen([*FANFLOW, "run", str(path), "-q"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while len(log_lines(tmp_path / "done.log")) < 10 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, "the run ended before it could be killed"
        done_at_kill = set(map(int, log_lines(tmp_path / "done.log")))
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=10)
    assert proc.returncode == -signal.SIGKILL
    time.sleep(0.5)  # items already running in their own process groups may still finish

    s = store()
    assert s.integrity_check() == "ok"
    run = s.get_run("last")
    assert run.status == "running" and run.effective_status == "cancelled"
    stored = set(s.item_results(run.id).get("work", {}))
    assert stored <= done_at_kill | set(map(int, log_lines(tmp_path / "done.log")))
    # At most the last flush interval of completions is lost (≤ the concurrency here).
    assert len(done_at_kill - stored) <= 3, (done_at_kill, stored)
    assert len(stored) >= 7
    listed = run_cli("runs", cwd=tmp_path)
    assert run.id in listed.stdout and "cancelled" in listed.stdout

    before = log_lines(tmp_path / "done.log")
    second = run_cli("run", str(path), "--resume", "last", "--output-format", "json",
                     cwd=tmp_path, timeout=60)  # fmt: skip
    assert second.code == 0, second.stderr
    rerun = list(map(int, log_lines(tmp_path / "done.log")[len(before) :]))
    assert not set(rerun) & stored, "a checkpointed item ran again"
    assert sorted(rerun) == sorted(set(range(n)) - stored)
    assert second.json["outputs"]["all"] == " ".join(f"r{i}" for i in range(n))
    assert store().get_run(run.id).status == "success"


def test_sigint_mid_fan_out_then_resume_finishes_the_cancelled_branch_only(write_wf, tmp_path):
    nodes = [
        {"id": "start", "type": "shell", "params": {"command": "echo start >> runs.log; echo s"}},
        {"id": "fast", "type": "shell", "params": {"command": "echo fast >> runs.log; echo f"}},
        {
            "id": "slow",
            "type": "shell",
            "params": {
                "command": "echo slow-start >> runs.log; [ -f quick ] || sleep 30; "
                "echo slow-done >> runs.log; echo w"
            },
        },
        {
            "id": "join",
            "type": "shell",
            "params": {"command": "echo join >> runs.log; echo ${fast.stdout}${slow.stdout}"},
        },
    ]
    doc = wf(nodes, [("start", "fast"), ("start", "slow"), ("fast", "join"), ("slow", "join")],
             outputs={"joined": {"source": "${join.stdout}"}})  # fmt: skip
    path = write_wf(doc)
    proc = subprocess.Popen([*FANFLOW, "run", str(path), "--output-format", "json"], cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        lines = log_lines(tmp_path / "runs.log")
        if "fast" in lines and "slow-start" in lines:
            break
        time.sleep(0.02)
    time.sleep(0.3)  # let `fast` finish and be recorded
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    result = json.loads(out)
    assert result["nodes"]["slow"]["status"] == "cancelled"
    assert result["nodes"]["fast"]["status"] == "success"
    run = store().get_run("last")
    assert run.status == "cancelled"

    (tmp_path / "quick").touch()
    (tmp_path / "runs.log").unlink()
    second = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert log_lines(tmp_path / "runs.log") == ["slow-start", "slow-done", "join"]
    assert second.json["outputs"]["joined"] == "fw"


def test_changed_workflow_is_refused_with_exit_2(write_wf, tmp_path):
    cmd = "if [ -f broken ] && [ ${item} = 3 ]; then exit 3; fi; echo r${item}"
    doc = batch_doc(cmd, 5)
    path = write_wf(doc)
    (tmp_path / "broken").touch()
    assert run_cli("run", str(path), cwd=tmp_path).code == 1

    changed = json.loads(json.dumps(doc))
    changed["nodes"][0]["params"]["code"] = "result = list(range(6))"  # gen completed
    path.write_text(json.dumps(changed))
    res = run_cli("run", str(path), "--resume", "last", cwd=tmp_path)
    assert res.code == 2
    assert "'gen'" in res.stderr and "fresh run" in res.stderr
    assert "Traceback" not in res.stderr

    # Different inputs are refused too; an unknown run id is a clean exit 2.
    path.write_text(json.dumps(doc))
    res = run_cli("run", str(path), "--resume", "no-such-run", cwd=tmp_path)
    assert res.code == 2 and "no run 'no-such-run'" in res.stderr
    # Changing only what never completed is fine: `total` re-runs with its new definition.
    edited = json.loads(json.dumps(doc))
    edited["nodes"][2]["params"]["code"] = "result = '+'.join(r['stdout'] for r in results)"
    path.write_text(json.dumps(edited))
    (tmp_path / "broken").unlink()
    res = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["all"] == "+".join(f"r{i}" for i in range(5))


def test_changed_inputs_are_refused(write_wf, tmp_path):
    nodes = [
        {"id": "a", "type": "shell", "params": {"command": "echo ${who}"}},
        {"id": "b", "type": "shell", "params": {"command": "[ -f ok ] && echo done"}},
    ]
    doc = wf(nodes, [("a", "b")], inputs={"who": {"type": "string"}})
    path = write_wf(doc)
    assert run_cli("run", str(path), "who=ann", cwd=tmp_path).code == 1
    res = run_cli("run", str(path), "who=bob", "--resume", "last", cwd=tmp_path)
    assert res.code == 2 and "inputs changed (who)" in res.stderr
    (tmp_path / "ok").touch()
    res = run_cli("run", str(path), "who=ann", "--resume", "last", cwd=tmp_path)
    assert res.code == 0, res.stderr


def test_no_checkpoint_records_nothing(write_wf, tmp_path):
    path = write_wf(wf([{"id": "a", "type": "shell", "params": {"command": "true"}}]))
    assert run_cli("run", str(path), "--no-checkpoint", cwd=tmp_path).code == 0
    assert not default_store_path().exists()
    assert run_cli("run", str(path), cwd=tmp_path).code == 0
    assert len(store().list_runs()) == 1
    # --store puts the store elsewhere
    other = tmp_path / "elsewhere.db"
    assert run_cli("run", str(path), "--store", str(other), cwd=tmp_path).code == 0
    assert len(RunStore(other).list_runs()) == 1
    assert os.path.exists(other)


def test_resume_retries_only_the_failed_items_of_a_continue_batch(write_wf, tmp_path):
    # error_handling: continue lets the run succeed with item 2 failed; after the cause is fixed,
    # a resume runs item 2 alone and the node that read the partial results again.
    cmd = "echo ${item} >> runs.log; if [ -f broken ] && [ ${item} = 2 ]; then exit 3; fi; echo r${item}"
    path = write_wf(batch_doc(cmd, 5, parallel=True, max_concurrent=2, error_handling="continue"))
    (tmp_path / "broken").touch()
    first = run_cli("run", str(path), "--output-format", "json", cwd=tmp_path)
    assert first.code == 1  # `total` cannot join a null result: the run fails after the batch
    (tmp_path / "broken").unlink()
    (tmp_path / "runs.log").unlink()
    second = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=tmp_path)
    assert second.code == 0, second.stderr
    assert log_lines(tmp_path / "runs.log") == ["2"]
    assert second.json["outputs"]["all"] == "r0 r1 r2 r3 r4"
    assert "1 failed item(s): they run again" in second.stderr
