"""Signals and process lifetime, through the CLI with real signals and real subprocesses.

SIGTERM / SIGHUP / SIGINT cancel the run like Ctrl-C (exit 143 / 129 / 130, the run recorded as
cancelled and resumable); when fanflow is SIGKILLed, the supervisor kills what it started. Every
item records the pids that could still cause its side effect (the marker file), so "nothing lives
on" is checked against the processes themselves, and the markers are checked after the items'
sleep would have ended.
"""

from __future__ import annotations

import asyncio
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
from fanflow.store.runs import RunStore, default_store_path

if sys.platform != "linux":
    pytest.skip("POSIX signals and /proc", allow_module_level=True)

N = 4
SLEEP = 1.0  # each item's side effect happens this long after it starts


def batch_doc(command: str, n: int = N) -> dict[str, Any]:
    nodes = [
        {
            "id": "work",
            "type": "shell",
            "params": {"command": command},
            "batch": {"items": list(range(n)), "parallel": True},
        }
    ]
    return wf(nodes, [], outputs={"count": {"source": "${work.success_count}"}})


# Each item: record its shell's pid, say it started, sleep, then the side effects.
ITEM = (
    f"echo $$ >> pids; touch started_${{item}}; sleep {SLEEP}; "
    "echo ${item} >> done.log; touch marker_${item}"
)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_for(predicate: Any, timeout: float = 20, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def pids(path: Path) -> list[int]:
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def start(path: Path, cwd: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([*FANFLOW, "run", str(path), *args], cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip


def start_and_wait(path: Path, cwd: Path, *args: str) -> tuple[subprocess.Popen[str], float]:
    """Start a run and wait until every item is running; returns the process and when."""
    proc = start(path, cwd, *args)
    wait_for(lambda: all((cwd / f"started_{i}").exists() for i in range(N)) or proc.poll() is not None,
             what="every item to start")  # fmt: skip
    assert proc.poll() is None, proc.communicate()
    return proc, time.monotonic()


def assert_nothing_lives_on(
    cwd: Path, started_at: float, pidfiles: tuple[str, ...] = ("pids",)
) -> None:
    everyone = [p for name in pidfiles for p in pids(cwd / name)]
    assert everyone, "the items recorded no pids"
    wait_for(
        lambda: not any(alive(p) for p in everyone), timeout=10, what="the items' processes to die"
    )
    # Past the moment each item's side effect would have happened: none happened.
    time.sleep(max(0.0, started_at + SLEEP + 0.5 - time.monotonic()))
    assert not list(cwd.glob("marker_*")), "an item's side effect happened after fanflow exited"
    assert lines(cwd / "done.log") == []


def store() -> RunStore:
    return RunStore(default_store_path())  # FANFLOW_HOME points into the test's tmp_path


def resume_runs_every_item_once(path: Path, cwd: Path) -> None:
    listed = run_cli("runs", cwd=cwd)
    run = store().get_run("last")
    assert run.effective_status == "cancelled"
    assert run.id in listed.stdout and "cancelled" in listed.stdout
    second = run_cli("run", str(path), "--resume", "last", "--output-format", "json", cwd=cwd)
    assert second.code == 0, second.stderr
    assert second.json["outputs"]["count"] == N
    assert sorted(lines(cwd / "done.log")) == [str(i) for i in range(N)]  # each item once
    assert store().get_run(run.id).status == "success"


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGHUP, 129)])
def test_sigterm_and_sighup_cancel_kill_the_items_and_the_run_resumes(
    write_wf, tmp_path, sig, code
):
    path = write_wf(batch_doc(ITEM))
    proc, started_at = start_and_wait(path, tmp_path, "--output-format", "json")
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    result = json.loads(out)
    name = signal.Signals(sig).name
    assert result["status"] == "cancelled"
    assert result["error"] == f"interrupted by {name}"
    assert result["nodes"]["work"]["status"] == "cancelled"
    assert store().get_run("last").status == "cancelled"
    assert_nothing_lives_on(tmp_path, started_at)
    resume_runs_every_item_once(path, tmp_path)


def test_sigint_says_which_signal_and_exits_130(write_wf, tmp_path):
    path = write_wf(batch_doc(ITEM))
    proc, started_at = start_and_wait(path, tmp_path, "--output-format", "json")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130, err
    assert json.loads(out)["error"] == "interrupted by SIGINT"
    assert_nothing_lives_on(tmp_path, started_at)


def test_sigkill_leaves_no_item_running_and_resume_runs_each_item_once(write_wf, tmp_path):
    path = write_wf(batch_doc(ITEM))
    proc, started_at = start_and_wait(path, tmp_path, "-q")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=20)
    assert proc.returncode == -signal.SIGKILL
    assert_nothing_lives_on(tmp_path, started_at)
    resume_runs_every_item_once(path, tmp_path)


# A grandchild in the background that even ignores SIGTERM, and a python grandchild.
GRANDCHILDREN = (
    f"(trap '' TERM; sleep {SLEEP}; touch marker_bg_${{item}}) & echo $! >> gpids; "
    f"{sys.executable} -c 'import time, sys; time.sleep({SLEEP}); open(sys.argv[1], \"w\")' "
    "marker_py_${item} & echo $! >> gpids; echo $$ >> pids; touch started_${item}; wait"
)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_grandchildren_die_with_the_run(write_wf, tmp_path, sig):
    path = write_wf(batch_doc(GRANDCHILDREN))
    proc, started_at = start_and_wait(path, tmp_path, "-q")
    wait_for(lambda: len(pids(tmp_path / "gpids")) == 2 * N, what="the grandchildren's pids")
    proc.send_signal(sig)
    proc.communicate(timeout=20)
    assert proc.returncode in (143, -sig)
    assert_nothing_lives_on(tmp_path, started_at, ("pids", "gpids"))


def test_a_second_signal_forces_a_quick_exit(write_wf, tmp_path):
    # The command ignores SIGTERM, so the graceful shutdown would wait out the kill grace period;
    # a second SIGTERM ends fanflow at once and its children still die.
    item = "trap '' TERM; " + ITEM
    path = write_wf(batch_doc(item))
    proc, started_at = start_and_wait(path, tmp_path, "-q")
    proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=20)
    assert proc.returncode in (143, -signal.SIGTERM)
    assert_nothing_lives_on(tmp_path, started_at)
    assert store().get_run("last").effective_status == "cancelled"


# Lists the command lines of fanflow's children (the shell's parent is fanflow).
LIST_CHILDREN = (
    "for p in $(cat /proc/$PPID/task/*/children); do tr '\\0' ' ' < /proc/$p/cmdline; echo; done"
)


def test_one_supervisor_per_run_and_none_when_nothing_is_spawned(write_wf, tmp_path):
    # A run with no subprocess starts no helper process: the code node sees no child of fanflow.
    code = (
        "import os\n"
        "me = str(os.getpid())\n"
        "result = [p for p in os.listdir('/proc') if p.isdigit() and "
        "open(f'/proc/{p}/stat').read().rsplit(')', 1)[1].split()[1] == me]"
    )
    doc = wf([{"id": "c", "type": "code", "params": {"code": code}}],
             outputs={"children": {"source": "${c.result}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["children"] == []
    # A batch of shell items shares one supervisor.
    doc = batch_doc(LIST_CHILDREN + " > children_${item}")
    res = run_cli("run", str(write_wf(doc)), cwd=tmp_path)
    assert res.code == 0, res.stderr
    for i in range(N):
        text = (tmp_path / f"children_{i}").read_text()
        assert text.count("fanflow-supervisor") == 1, text


def test_handle_signals_restores_the_handlers_it_found(tmp_path):
    # Library use: fanflow.run(handle_signals=True) hands the process back as it found it.
    import fanflow

    def mine(signum: int, frame: Any) -> None:
        pass

    doc = wf([{"id": "s", "type": "shell", "params": {"command": "true"}}])
    before = {s: signal.signal(s, mine) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        result = fanflow.run(doc, handle_signals=True)
        assert result.ok, result.error
        assert all(signal.getsignal(s) is mine for s in before)
    finally:
        for s, handler in before.items():
            signal.signal(s, handler)


def test_closed_stdout_is_not_a_traceback(write_wf, tmp_path):
    # `fanflow run wf.json | head -0`: the reader is gone; fanflow must not print a traceback.
    doc = wf([{"id": "s", "type": "shell", "params": {"command": "seq 1 20000"}}],
             outputs={"out": {"source": "${s.stdout}"}})  # fmt: skip
    path = write_wf(doc)
    shell = f"{' '.join(FANFLOW)} run {path} -q | head -c 10 >/dev/null; echo ${{PIPESTATUS[0]}}"
    proc = subprocess.run(["bash", "-c", shell], cwd=tmp_path, capture_output=True, text=True,
                          timeout=30, env={**os.environ})  # fmt: skip
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Exception ignored" not in proc.stderr, proc.stderr
    assert proc.stdout.strip() in ("0", "141"), proc.stderr


GAP_SCRIPT = """
import os, signal, subprocess, sys, time
from fanflow.execute import children
sup = children._supervisor()
# A child as spawn() starts it, tagged, but fanflow dies before it could register the child.
env = {**os.environ, children.TAG_VAR: f"{sup.token}:12345"}
child = subprocess.Popen(["bash", "-c", "sleep %s & echo $! > gpid; wait"], env=env,
                         start_new_session=True)
open("pid", "w").write(str(child.pid))
while not os.path.exists("gpid") or not open("gpid").read().strip():
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
""" % (SLEEP * 10)


def test_a_child_fanflow_died_too_early_to_register_still_dies(tmp_path):
    proc = subprocess.run([sys.executable, "-c", GAP_SCRIPT], cwd=tmp_path, timeout=30)
    assert proc.returncode == -signal.SIGKILL
    everyone = pids(tmp_path / "pid") + pids(tmp_path / "gpid")
    assert len(everyone) == 2
    wait_for(lambda: not any(alive(p) for p in everyone), timeout=10, what="the child to die")


def test_timeout_kills_a_grandchild_that_ignores_sigterm_once_the_shell_is_gone(write_wf, tmp_path):
    # The group gets SIGTERM; the shell dies of it, and the grandchild that ignores it is killed
    # right then, not after the grace period (by when its side effect would have happened).
    command = f"(trap '' TERM; sleep {SLEEP * 1.5}; touch marker_bg) & echo $! >> gpids; wait"
    doc = wf([{"id": "s", "type": "shell", "params": {"command": command, "timeout": 0.3}}])
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json", cwd=tmp_path)
    assert res.code == 1, res.stderr
    assert "timed out" in res.json["nodes"]["s"]["error"]
    grandchild = pids(tmp_path / "gpids")
    wait_for(
        lambda: not any(alive(p) for p in grandchild), timeout=10, what="the grandchild to die"
    )
    time.sleep(SLEEP * 1.5 + 0.3)
    assert not (tmp_path / "marker_bg").exists()


def test_a_signal_ignored_at_start_stays_ignored(write_wf, tmp_path):
    # `nohup fanflow run …` ignores SIGHUP: the run goes on and completes.
    path = write_wf(batch_doc(ITEM))
    shell = 'trap "" HUP; exec "$@"'
    proc = subprocess.Popen(["bash", "-c", shell, "bash", *FANFLOW, "run", str(path), "-q"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    wait_for(lambda: all((tmp_path / f"started_{i}").exists() for i in range(N)), what="items")
    proc.send_signal(signal.SIGHUP)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    assert sorted(lines(tmp_path / "done.log")) == [str(i) for i in range(N)]


def test_kill_group_returns_once_the_pipes_are_at_their_end():
    # The shell exits on SIGTERM at once; its child ignores SIGTERM and holds stdout until the
    # SIGKILL. kill_group must not return before that pipe has ended (a run that ends then
    # closes the loop under a live transport: "Event loop is closed" on stderr).
    from fanflow.execute import children

    async def main() -> tuple[bool, bool]:
        proc = await children.spawn(
            "bash", "-c", "(trap '' TERM; sleep 30) & wait",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        reading = asyncio.ensure_future(proc.communicate())
        await asyncio.sleep(0.3)
        reading.cancel()
        await children.kill_group(proc, grace=5.0)
        assert proc.stdout is not None and proc.stderr is not None
        return proc.stdout.at_eof(), proc.stderr.at_eof()

    assert asyncio.run(main()) == (True, True)
