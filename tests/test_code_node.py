"""Code nodes cannot break a run (issue 12): exit()/SystemExit/KeyboardInterrupt belong to the
node, print() is the node's `stdout` output (never fanflow's stdout), a `timeout` and Ctrl-C stop
a code node stuck in a loop, a syntax error is a validation error, stdin is not the terminal."""

from __future__ import annotations

import io
import json
import signal
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

import fanflow
from conftest import FANFLOW, run_cli, wf


def code(node_id: str, source: str, **params: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "code", "params": {"code": source, **params}}


def reads(node_id: str, ref: str) -> dict[str, Any]:
    """A code node whose result is the value of `ref` (to see what a node passed on)."""
    return code(node_id, "result = v", inputs={"v": ref})


def _wait_for(predicate: Any, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


# --- exit() and friends belong to the node --------------------------------------------------

ENDS_NORMALLY = {
    "exit0": "result = 'before'\nexit(0)\nresult = 'after'",
    "sysexit": "import sys\nresult = 'sys'\nsys.exit()",
    "exitnone": "result = 'none'\nexit(None)",
    "quit": "result = 'quit'\nquit()",
    "raised": "result = 'raised'\nraise SystemExit",
}
FAILS = {
    "exit3": ("exit(3)", "exit code 3"),
    "sysexit1": ("import sys\nsys.exit(1)", "exit code 1"),
    "message": ("exit('bad input')", "bad input"),
    "kbint": ("raise KeyboardInterrupt", "KeyboardInterrupt (line 1)"),
    "kbmsg": (
        "x = 1\nraise KeyboardInterrupt('stop here')",
        "KeyboardInterrupt: stop here (line 2)",
    ),
}


def test_exit_variants_belong_to_the_node(write_wf):
    nodes, edges = [], []
    for name, source in ENDS_NORMALLY.items():
        nodes += [code(name, source), reads(f"after_{name}", f"${{{name}.result}}")]
        edges.append((name, f"after_{name}"))
    for name, (source, _) in FAILS.items():
        nodes += [code(name, source), reads(f"handle_{name}", f"${{{name}.error}}")]
        edges.append((name, f"handle_{name}", "error"))
    outputs = {n: {"source": f"${{after_{n}.result}}"} for n in ENDS_NORMALLY}
    outputs |= {n: {"source": f"${{handle_{n}.result}}"} for n in FAILS}
    path = write_wf(wf(nodes, edges, outputs=outputs))

    res = run_cli("run", str(path), "--output-format", "json")

    assert res.code == 0, res.stderr
    out = res.json  # stdout is exactly one JSON object
    assert out["status"] == "success"
    assert out["outputs"]["exit0"] == "before"  # `result` as assigned before exit()
    assert [out["outputs"][n] for n in ("sysexit", "exitnone", "quit", "raised")] == [
        "sys", "none", "quit", "raised",
    ]  # fmt: skip
    for name, (_, message) in FAILS.items():
        assert out["nodes"][name]["status"] == "failed"
        assert out["nodes"][name]["error"] == message
        assert out["outputs"][name] == message  # the error edge ran with the message
    for name in ENDS_NORMALLY:
        assert out["nodes"][f"after_{name}"]["status"] == "success"


def test_unhandled_exit_message_fails_the_run_naming_the_node(write_wf):
    path = write_wf(wf([code("check", "exit('bad input')"), reads("next_step", "${check.result}")],
                       [("check", "next_step")]))  # fmt: skip
    res = run_cli("run", str(path), "--output-format", "json")
    assert res.code == 1
    out = res.json
    assert out["failed_node"] == "check" and "bad input" in out["error"]
    assert out["nodes"]["next_step"]["status"] != "success"


def test_exit_leaves_the_host_stdin_open(monkeypatch):
    """site's exit() closes sys.stdin before raising; a code node's exit() must not."""
    stdin = io.StringIO("host data")
    monkeypatch.setattr(sys, "stdin", stdin)
    result = fanflow.run(wf([code("a", "result = 1\nexit()"), code("b", "quit(0)")]))
    assert result.status == "success"
    assert not stdin.closed and stdin.read() == "host data"


# --- print() is the node's output --------------------------------------------------------------

CHATTY = """
import os, sys, time
print('{me} first')
print('{me} to stderr', file=sys.stderr)
open(os.path.join(folder, '{me}.started'), 'w').close()
t0 = time.monotonic()
while not os.path.exists(os.path.join(folder, '{other}.started')) and time.monotonic() - t0 < 10:
    time.sleep(0.001)
for i in range(20):
    print('{me}', i)
    time.sleep(0.0005)
sys.stdout.write('{me} last\\n')
result = '{me} done'
"""


def test_print_is_captured_per_node_and_stdout_stays_one_json_object(write_wf, tmp_path):
    def chatty(me: str, other: str) -> dict[str, Any]:
        return code(me, CHATTY.format(me=me, other=other), inputs={"folder": str(tmp_path)})

    nodes = [code("start", "result = 0"), chatty("a", "b"), chatty("b", "a")]
    outputs = {f"{n}_{s}": {"source": f"${{{n}.{s}}}"} for n in "ab" for s in ("stdout", "stderr")}
    path = write_wf(wf(nodes, [("start", "a"), ("start", "b")], outputs=outputs))

    res = run_cli("run", str(path), "--output-format", "json", "-q")

    assert res.code == 0, res.stderr
    out = json.loads(res.stdout)  # nothing printed by a node reached fanflow's stdout
    for me in "ab":
        lines = [f"{me} first", *(f"{me} {i}" for i in range(20)), f"{me} last"]
        assert out["outputs"][f"{me}_stdout"] == "\n".join(lines)  # one trailing newline off
        assert out["outputs"][f"{me}_stderr"] == f"{me} to stderr\n"
    assert "to stderr" not in res.stderr


def test_host_prints_are_untouched_and_streams_restored(tmp_path, capsys):
    """fanflow.run inside another program: the program's own prints (from any thread) reach
    its stdout during the run, and sys.stdout/sys.stderr are the same objects afterwards."""
    before = sys.stdout, sys.stderr
    flag = tmp_path / "host-printed"
    host_done = threading.Event()

    def host() -> None:
        print("host line")
        flag.touch()
        host_done.set()

    source = ("import os, time\nprint('node line')\nt0 = time.monotonic()\n"
              "while not os.path.exists(flag) and time.monotonic() - t0 < 10:\n"
              "    time.sleep(0.001)\nresult = os.path.exists(flag)")  # fmt: skip
    doc = wf([code("a", source, inputs={"flag": str(flag)})])
    thread = threading.Timer(0.05, host)
    thread.start()
    result = fanflow.run(doc)
    thread.join()

    assert result.status == "success" and result.store["a"]["result"] is True
    assert result.store["a"]["stdout"] == "node line"
    assert (sys.stdout, sys.stderr) == before
    printed = capsys.readouterr().out
    assert "host line" in printed and "node line" not in printed


def test_stdout_outputs_are_declared(write_wf):
    """`${node.stdout}` validates (the outputs are part of the interface)."""
    path = write_wf(wf([code("a", "print('x')"), reads("b", "${a.stdout}${a.stderr}")],
                       [("a", "b")]))  # fmt: skip
    assert run_cli("validate", str(path)).code == 0


# --- timeout and cancellation --------------------------------------------------------------


def test_timeout_stops_a_busy_loop_and_the_error_edge_runs(write_wf):
    path = write_wf(wf(
        [code("spin", "print('spinning')\nwhile True:\n    pass", timeout=0.5),
         reads("handle", "${spin.error}"), reads("partial", "${spin.stdout}")],
        [("spin", "handle", "error"), ("handle", "partial")],
        outputs={"error": {"source": "${handle.result}"}, "printed": {"source": "${partial.result}"}},
    ))  # fmt: skip
    res = run_cli("run", str(path), "--output-format", "json", "-q", timeout=30)
    assert res.code == 0, res.stderr
    out = res.json
    assert out["nodes"]["spin"]["status"] == "failed"
    assert out["outputs"]["error"] == "timed out after 0.5 s"
    assert out["outputs"]["printed"] == "spinning"  # what it printed before the timeout


def test_timeout_covers_a_blocking_call(tmp_path):
    """time.sleep cannot be interrupted: the node still fails at its timeout (plus a grace
    period), and the thread is stopped right after the call returns, before the next line."""
    marker = tmp_path / "after-sleep"
    source = "import time\ntime.sleep(1.5)\nopen(marker, 'w').close()"
    doc = wf([code("nap", source, timeout=0.2, inputs={"marker": str(marker)}),
              reads("handle", "${nap.error}")], [("nap", "handle", "error")])  # fmt: skip
    result = fanflow.run(doc)
    assert result.status == "success"
    assert result.store["handle"]["result"] == "timed out after 0.2 s"
    assert _wait_for(lambda: not _busy_fanflow_threads())
    assert not marker.exists()


def test_timeout_must_be_positive(write_wf):
    path = write_wf(wf([code("a", "result = 1", timeout=0)]))
    res = run_cli("validate", str(path))
    assert res.code == 2
    assert "nodes[0].params.timeout" in res.stderr and "'a'" in res.stderr
    assert "must be greater than 0" in res.stderr


def _busy_fanflow_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("fanflow") and t.is_alive()]


def test_fail_fast_cancellation_stops_a_spinning_code_node(tmp_path):
    """A sibling's failure cancels the run; the code node's thread stops instead of spinning
    on inside the host program after fanflow.run returned."""
    started = tmp_path / "started"
    spin = code("spin", "open(started, 'w').close()\nwhile True:\n    pass",
                inputs={"started": str(started)})  # fmt: skip
    fail = {
        "id": "fail",
        "type": "shell",
        "params": {"command": f"while [ ! -e {started} ]; do sleep 0.01; done; exit 1"},
    }
    result = fanflow.run(wf([code("start", "result = 0"), spin, fail],
                            [("start", "spin"), ("start", "fail")]))  # fmt: skip
    assert result.status == "failed" and result.failed_node == "fail"
    assert result.nodes["spin"].status == "cancelled"
    assert _wait_for(lambda: not _busy_fanflow_threads()), _busy_fanflow_threads()


def test_sigint_stops_a_run_stuck_in_a_code_loop(write_wf, tmp_path):
    started = tmp_path / "started"
    path = write_wf(wf([code("spin", "open(started, 'w').close()\nwhile True:\n    pass",
                             inputs={"started": str(started)})]))  # fmt: skip
    proc = subprocess.Popen([*FANFLOW, "run", str(path), "--output-format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert _wait_for(started.exists, 20)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=10)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    out = json.loads(stdout)
    assert out["status"] == "cancelled" and out["nodes"]["spin"]["status"] == "cancelled"


# --- validation ------------------------------------------------------------------------------


def test_syntax_error_is_a_validation_error_before_anything_runs(write_wf, tmp_path):
    marker = tmp_path / "ran"
    path = write_wf(wf([{"id": "first", "type": "shell", "params": {"command": f"touch {marker}"}},
                        code("parse", "x = 1\nif x\n    pass")],
                       [("first", "parse")]))  # fmt: skip
    res = run_cli("run", str(path), "--output-format", "json")
    assert res.code == 2
    assert not marker.exists()
    problems = res.json["problems"]
    assert len(problems) == 1
    problem = problems[0]
    assert problem["node"] == "parse" and problem["field"] == "nodes[1].params.code"
    assert "line 2" in problem["message"] and "expected ':'" in problem["message"]
    assert run_cli("validate", str(path)).code == 2


def test_code_with_templates_is_not_checked_statically(write_wf):
    """A template in `code` is source text only known at run time: validation leaves it."""
    path = write_wf(wf([code("a", "result = 1"), code("b", "result = ${a.result} +")],
                       [("a", "b")]))  # fmt: skip
    assert run_cli("validate", str(path)).code == 0


# --- neighbours ------------------------------------------------------------------------------


def test_input_reads_no_terminal(write_wf):
    """input() / sys.stdin in a code node see end-of-file at once, even when fanflow's own
    stdin is an open pipe (or a terminal) that would block forever."""
    source = ("import sys\ndata = sys.stdin.read()\ntry:\n    input('name? ')\n"
              "except EOFError as exc:\n    result = [data, str(exc)]")  # fmt: skip
    path = write_wf(wf([code("ask", source)], outputs={"r": {"source": "${ask.result}"}}))
    proc = subprocess.Popen([*FANFLOW, "run", str(path), "--output-format", "json", "-q"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        out, err = proc.communicate(timeout=20)  # stdin is never closed by the test
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    data, message = json.loads(out)["outputs"]["r"]
    assert data == "" and "no stdin" in message


@pytest.mark.parametrize(
    ("source", "action", "error"),
    [
        ("next = 'odd'", "odd", None),
        ("next = None", "default", None),
        ("next = 3", None, "`next` must be a string naming an action, not int"),
    ],
)
def test_next_must_name_an_action(source, action, error):
    doc = wf([code("pick", source), reads("odd", "1"), reads("other", "2")],
             [("pick", "odd", "odd"), ("pick", "other")])  # fmt: skip
    result = fanflow.run(doc)
    record = result.nodes["pick"]
    if error is None:
        assert result.status == "success" and record.action == action
    else:
        assert result.status == "failed" and record.error == error


def test_a_code_node_raising_cancelled_error_is_its_own_failure():
    """asyncio.CancelledError (a BaseException) raised by user code is a failure of that
    node, not a cancellation of the run."""
    doc = wf([code("a", "import asyncio\nraise asyncio.CancelledError('mine')"),
              reads("b", "${a.error}")], [("a", "b", "error")])  # fmt: skip
    result = fanflow.run(doc)
    assert result.status == "success"
    assert result.store["b"]["result"] == "CancelledError: mine (line 2)"


def test_direct_exec_without_the_engine_still_works():
    """A CodeNode used on its own (no worker thread): no timeout enforcement, same outputs."""
    from fanflow.nodes.code import CodeNode

    node = CodeNode()
    node.node_id = "solo"
    node.set_params({"code": "print('hi')\nresult = x * 2", "inputs": {"x": 21}})
    shared: dict[str, Any] = {}
    node.post(shared, None, node.exec(node.prep(shared)))
    assert shared == {"result": 42, "stdout": "hi", "stderr": ""}


def test_thread_executor_interrupt_never_lands_in_the_next_job(monkeypatch):
    """Cancel jobs while they run, just as they finish, and just before they start, many
    times: no interrupt may escape into a later job or into the worker's bookkeeping."""
    import asyncio

    from fanflow.execute import threads

    sent: list[Any] = []
    send = threads._send
    monkeypatch.setattr(threads, "_send", lambda ident, exc: (sent.append(exc), send(ident, exc)))
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible

    def count(n: int) -> int:
        total = 0
        for i in range(n):
            total += i
        return total

    async def main() -> list[Any]:
        loop = asyncio.get_running_loop()
        ex = threads.ThreadExecutor(loop, 2)
        results = []
        try:
            for r in range(800):
                doomed = ex.submit(threads.run_interruptible, count, (r % 53) * 300)
                fine = ex.submit(threads.run_interruptible, count, 100)
                until = time.perf_counter() + (r % 61) * 1e-5
                while time.perf_counter() < until:  # let the worker get a little way
                    pass
                doomed.cancel()
                results.append(await fine)
        finally:
            ex.shutdown()
        return results

    try:
        results = asyncio.run(main())
    finally:
        sys.setswitchinterval(switch)
    assert results == [sum(range(100))] * 800
    assert threads.JobCancelled in sent  # the race was exercised, not only skipped jobs
