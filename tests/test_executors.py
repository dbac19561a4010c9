"""Executors (issue 16): a real process pool, the choice per run / workflow / node, the chunked
thread hop. Items record what they observe themselves (pids, time windows, files)."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

import fanflow
from fanflow.errors import WorkflowInvalid
from fanflow.nodes.base import Node

BUSY = """
import os, time
t0 = time.time()
s = 0
while time.time() - t0 < seconds:
    s += 1
result = {"pid": os.getpid(), "t0": t0, "t1": time.time(), "x": x}
"""


def batch_doc(code: str, items: list[Any], inputs: dict[str, Any] | None = None,
              cap: int = 8, **batch: Any) -> dict[str, Any]:  # fmt: skip
    params = {"code": code, "inputs": {"x": "${item}", **(inputs or {})}}
    spec = {"items": items, "parallel": cap > 1, "max_concurrent": cap, **batch}
    return {"ir_version": "0.1.0", "nodes": [{"id": "c", "type": "code", "params": params,
                                              "batch": spec}]}  # fmt: skip


def results(r: Any, node: str = "c") -> list[Any]:
    return [x["result"] if x else None for x in r.store[node]["results"]]


def test_process_items_overlap_on_distinct_pids_in_order() -> None:
    r = fanflow.run(batch_doc(BUSY, list(range(4)), {"seconds": 0.4}), executor="process")
    assert r.status == "success", r.error
    got = results(r)
    assert [g["x"] for g in got] == [0, 1, 2, 3]  # order kept
    pids = {g["pid"] for g in got}
    assert len(pids) >= 2 and os.getpid() not in pids
    windows = sorted((g["t0"], g["t1"]) for g in got)
    overlaps = any(a[1] > b[0] for a, b in itertools.pairwise(windows))
    assert overlaps, windows


def test_process_results_identical_to_threads() -> None:
    code = (
        "import math\nprint('item', x)\nresult = {'sq': x * x, 'root': math.sqrt(x),"
        " 'text': str(x) * 2}\nnext = 'default'"
    )
    doc = batch_doc(code, list(range(30)), cap=5, error_handling="continue")
    by = {ex: fanflow.run(doc, executor=ex) for ex in ("thread", "process")}
    assert by["thread"].status == by["process"].status == "success"
    assert by["thread"].store["c"]["results"] == by["process"].store["c"]["results"]
    assert by["process"].store["c"]["results"][3]["stdout"] == "item 3"


def test_process_failures_match_threads() -> None:
    code = "if x % 3 == 0:\n    raise ValueError(f'bad {x}')\nresult = x"
    doc = batch_doc(code, list(range(9)), cap=3, error_handling="continue")
    by = {ex: fanflow.run(doc, executor=ex) for ex in ("thread", "process")}
    assert by["thread"].store["c"]["errors"] == by["process"].store["c"]["errors"]
    assert by["process"].store["c"]["errors"][0]["error"] == "ValueError: bad 0 (line 2)"


def test_worker_killed_mid_batch_fails_that_item_only() -> None:
    code = "import os, time\nif x == 2:\n    os.kill(os.getpid(), 9)\ntime.sleep(0.05)\nresult = x"
    doc = batch_doc(code, list(range(6)), cap=3, error_handling="continue")
    r = fanflow.run(doc, executor="process")
    assert r.status == "success", r.error
    out = r.store["c"]
    assert out["error_count"] == 1 and out["errors"][0]["index"] == 2
    assert "died while running this item (killed by SIGKILL)" in out["errors"][0]["error"]
    assert [v for i, v in enumerate(results(r)) if i != 2] == [0, 1, 3, 4, 5]


def test_worker_killed_fail_fast_ends_run_with_clear_message() -> None:
    code = "import os\nif x == 1:\n    os._exit(3)\nresult = x"
    t0 = time.perf_counter()
    r = fanflow.run(batch_doc(code, list(range(4)), cap=2), executor="process")
    assert time.perf_counter() - t0 < 20
    assert r.status == "failed"
    assert "item [1]" in r.error and "died while running this item (exit code 3)" in r.error


# Item 0 fails at 0.3 s; item 1 would spin for 8 s, touching `beat` as it goes, then write
# `path`. A working stop ends item 1 within a fraction of that, however loaded the machine.
STOPPABLE = (
    "import os, time\nif x == 0:\n    time.sleep(0.3)\n    raise RuntimeError('first fails')\n"
    "t0 = last = time.time()\nwhile time.time() - t0 < 8.0:\n"
    "    if time.time() - last > 0.05:\n        open(beat, 'w').close()\n        last = time.time()\n"
    "open(path, 'w').write('written')\nresult = x"
)


def stoppable_doc(tmp_path: Path) -> dict[str, Any]:
    inputs = {"path": str(tmp_path / "late.txt"), "beat": str(tmp_path / "beat")}
    return batch_doc(STOPPABLE, [0, 1], inputs, cap=2)


def assert_item_stopped(tmp_path: Path) -> None:
    """Waits until item 1's heartbeat has been still for 0.5 s (or its 8 s are over); it must
    have stopped before writing its file."""
    beat, deadline = tmp_path / "beat", time.monotonic() + 9.0
    while time.monotonic() < deadline:
        if beat.exists() and time.time() - beat.stat().st_mtime > 0.5:
            break
        time.sleep(0.1)
    assert beat.exists(), "item 1 never ran"
    assert not (tmp_path / "late.txt").exists(), "item 1 ran to its end: nothing stopped it"


def test_fail_fast_stops_the_other_items_in_their_workers(tmp_path: Path) -> None:
    r = fanflow.run(stoppable_doc(tmp_path), executor="process")
    assert r.status == "failed" and "first fails" in r.error
    assert_item_stopped(tmp_path)


def test_code_timeout_stops_a_busy_loop_in_the_worker() -> None:
    doc = batch_doc("while True:\n    pass", [0], {}, cap=1)
    doc["nodes"][0]["params"]["timeout"] = 0.3
    t0 = time.perf_counter()
    r = fanflow.run(doc, executor="process")
    assert time.perf_counter() - t0 < 10
    assert r.status == "failed" and "timed out after 0.3 s" in r.error


def test_code_timeout_in_worker_then_worker_reused() -> None:
    code = "import os\nif x == 0:\n    while True:\n        pass\nresult = os.getpid()"
    doc = batch_doc(code, [0, 1, 2], {}, cap=1, error_handling="continue")
    doc["nodes"][0]["params"]["timeout"] = 0.3
    r = fanflow.run(doc, executor="process")
    assert r.status == "success"
    assert "timed out" in r.store["c"]["errors"][0]["error"]
    assert results(r)[1] == results(r)[2] != os.getpid()


class Square(Node):
    """A picklable user sync node that may leave the process."""

    type_name = "test-square"
    remote_exec = True

    def exec(self, prep_res: Any) -> dict[str, Any]:
        print("squaring")
        return {"value": prep_res["n"] ** 2, "pid": os.getpid()}


class Local(Node):
    """A sync node that stays on the threads unless its node asks."""

    type_name = "test-local"

    def exec(self, prep_res: Any) -> dict[str, Any]:
        return {"pid": os.getpid()}


fanflow.register_node(Square)
fanflow.register_node(Local)


def _nodes_doc(**extra: Any) -> dict[str, Any]:
    return {"ir_version": "0.1.0", **extra, "nodes": [
        {"id": "sq", "type": "test-square", "params": {"n": 7}},
        {"id": "loc", "type": "test-local"},
        {"id": "pinned", "type": "test-square", "params": {"n": 2}, "executor": "thread"},
        {"id": "asked", "type": "test-local", "executor": "process"},
    ]}  # fmt: skip


def test_choice_per_run_workflow_and_node() -> None:
    me = os.getpid()
    r = fanflow.run(_nodes_doc(), executor="process")
    assert r.status == "success", r.error
    s = r.store
    assert s["sq"]["value"] == 49 and s["sq"]["pid"] != me  # the run's choice moves it
    assert s["loc"]["pid"] == me  # remote_exec False: stays unless its node asks
    assert s["pinned"]["pid"] == me  # the node's own executor wins
    assert s["asked"]["pid"] != me  # a node's own executor moves any sync node
    r = fanflow.run(_nodes_doc(executor="process"))  # the workflow's choice
    assert r.store["sq"]["pid"] != me
    r = fanflow.run(_nodes_doc(executor="process"), executor="thread")  # the run's wins
    assert r.store["sq"]["pid"] == me and r.store["asked"]["pid"] != me


def test_bad_executor_is_invalid_before_running() -> None:
    with pytest.raises(WorkflowInvalid, match="unknown executor 'gpu'") as info:
        fanflow.run(batch_doc("result = x", [1]), executor="gpu")
    assert info.value.problems[0].field == "--executor"
    with pytest.raises(Exception, match="executor"):
        fanflow.run({**batch_doc("result = x", [1]), "executor": "fast"})


def test_executor_on_async_node_is_refused() -> None:
    doc = {
        "ir_version": "0.1.0",
        "nodes": [
            {"id": "s", "type": "shell", "params": {"command": "echo hi"}, "executor": "process"}
        ],
    }
    with pytest.raises(WorkflowInvalid, match="async") as info:
        fanflow.run(doc)
    assert info.value.problems[0].field == "nodes[0].executor"


class Unpicklable(Node):
    type_name = "test-unpicklable"
    remote_exec = True

    def prep(self, shared: Any) -> Any:
        return threading.Lock()  # a prep result that cannot travel


fanflow.register_node(Unpicklable)


def test_unpicklable_call_is_a_clear_item_failure() -> None:
    doc = {"ir_version": "0.1.0", "nodes": [{"id": "u", "type": "test-unpicklable"}]}
    r = fanflow.run(doc, executor="process")
    assert r.status == "failed"
    assert "cannot be sent to a worker process" in r.error and "executor: thread" in r.error


def test_cli_executor_flag(tmp_path: Path) -> None:
    wf = tmp_path / "wf.json"
    doc = batch_doc("import os\nresult = os.getpid()", [1, 2, 3], cap=3)
    doc["outputs"] = {"pids": {"source": "${c.results}"}}
    wf.write_text(json.dumps(doc))
    cli = [sys.executable, "-m", "fanflow", "run", str(wf), "--output-format", "json", "-q",
           "--no-checkpoint"]  # fmt: skip
    p = subprocess.run([*cli, "--executor", "process"], capture_output=True, text=True,
                       timeout=60)  # fmt: skip
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["status"] == "success"
    pids = {x["result"] for x in out["outputs"]["pids"]}
    assert p.returncode == 0 and pids and all(isinstance(x, int) for x in pids)
    bad = subprocess.run([*cli, "--executor", "gpu"], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert "unknown executor" in bad.stdout and "Traceback" not in bad.stderr


# --- the thread executor's chunked hop ----------------------------------------------------------


class _Events:
    def __init__(self) -> None:
        self.started: list[int] = []
        self.finished: list[tuple[int, str]] = []

    def on_event(self, event: Any) -> None:
        if event.kind == "item_started":
            self.started.append(event.item)
        elif event.kind == "item_finished":
            self.finished.append((event.item, event.data["status"]))

    def close(self) -> None:
        pass


@pytest.mark.parametrize("cap", [1, 50])
def test_fast_items_hop_in_chunks_with_per_item_events(
    cap: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    from fanflow.execute.threads import ThreadExecutor

    hops = 0
    submit = ThreadExecutor.submit

    def counting(self: Any, *args: Any) -> Any:
        nonlocal hops
        hops += 1
        return submit(self, *args)

    monkeypatch.setattr(ThreadExecutor, "submit", counting)
    n = 3000
    events = _Events()
    r = fanflow.run(batch_doc("result = x * 2", list(range(n)), cap=cap), listeners=[events])
    assert r.status == "success"
    assert results(r) == [2 * x for x in range(n)]
    assert sorted(events.started) == list(range(n))
    assert sorted(events.finished) == [(i, "success") for i in range(n)]
    assert hops < n / 10  # chunked: far fewer hops than items


def test_chunked_items_keep_their_own_times_in_the_trace(tmp_path: Path) -> None:
    # Reported when their chunk returns, but timed by the thread that ran them: a sequential
    # chunked batch shows items one after another, each as long as it took.
    trace = tmp_path / "t.json"
    code = "import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.0003: pass\nresult = x"
    r = fanflow.run(batch_doc(code, list(range(200)), cap=1), trace=trace, checkpoint=False)
    assert r.status == "success"
    spans = sorted(
        (e["ts"], e["dur"])
        for e in json.loads(trace.read_text())["traceEvents"]
        if e.get("cat") == "item"
    )
    assert len(spans) == 200
    assert all(dur >= 250 for _, dur in spans)  # µs: each item's own busy wait, not zero
    assert all(a[0] + a[1] <= b[0] + 1 for a, b in itertools.pairwise(spans))  # in sequence


def test_chunked_fail_fast_stops_at_the_failed_item() -> None:
    events = _Events()
    code = "if x == 500:\n    raise ValueError('boom')\nresult = x"
    r = fanflow.run(batch_doc(code, list(range(5000)), cap=1), listeners=[events])
    assert r.status == "failed" and "item [500]: ValueError: boom" in r.error
    assert max(events.started) == 500  # nothing after the failure ran (sequential batch)


def test_blocking_items_still_get_a_thread_each() -> None:
    code = "import time\ntime.sleep(0.3)\nresult = x"
    t0 = time.perf_counter()
    r = fanflow.run(batch_doc(code, list(range(20)), cap=20))
    took = time.perf_counter() - t0
    assert r.status == "success" and results(r) == list(range(20))
    assert took < 3.0  # 20 × 0.3 s one after another would be 6 s


def test_item_events_say_where_the_item_ran() -> None:
    class Where:
        def __init__(self) -> None:
            self.workers: dict[int, str] = {}

        def on_event(self, event: Any) -> None:
            if event.kind == "item_finished":
                self.workers[event.item] = event.data.get("worker", "")

        def close(self) -> None:
            pass

    seen = Where()
    r = fanflow.run(batch_doc("import os\nresult = os.getpid()", [0, 1, 2], cap=3),
                    executor="process", listeners=[seen])  # fmt: skip
    assert r.status == "success"
    assert [seen.workers[i] for i in range(3)] == [f"pid {pid}" for pid in results(r)]
    threads = Where()
    fanflow.run(batch_doc("result = x", [0, 1]), listeners=[threads])
    assert threads.workers == {0: "", 1: ""}


def test_the_trace_says_which_worker_ran_each_item(tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    r = fanflow.run(batch_doc("import os\nresult = os.getpid()", [0, 1, 2], cap=3),
                    executor="process", trace=trace, checkpoint=False)  # fmt: skip
    assert r.status == "success"
    spans = [e for e in json.loads(trace.read_text())["traceEvents"] if e.get("cat") == "item"]
    assert sorted(e["args"]["worker"] for e in spans) == sorted(f"pid {p}" for p in results(r))


def test_sigint_on_the_cli_kills_the_workers_running_items(tmp_path: Path) -> None:
    import signal

    pids = tmp_path / "pids"
    pids.mkdir()
    code = (
        "import os, time, pathlib\n"
        "pathlib.Path(d, str(os.getpid())).write_text('')\n"
        "t0 = time.time()\nwhile time.time() - t0 < 30:\n    pass\nresult = x"
    )
    wf = tmp_path / "wf.json"
    wf.write_text(json.dumps(batch_doc(code, [0, 1], {"d": str(pids)}, cap=2)))
    cli = [sys.executable, "-m", "fanflow", "run", str(wf), "-q", "--no-checkpoint",
           "--executor", "process"]  # fmt: skip
    proc = subprocess.Popen(cli, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while len(list(pids.iterdir())) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    workers = [int(p.name) for p in pids.iterdir()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=15)
    assert proc.returncode == 130, err
    time.sleep(0.3)
    for pid in workers:  # the busy items were stopped, not left running for 30 s
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


@pytest.mark.slow
def test_property_process_matches_threads() -> None:
    """Random batches (values, failures, exits, prints, policies, widths): the process executor's
    node outputs equal the thread executor's, item for item."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    code = (
        "import sys\nif x % 7 == 3:\n    raise ValueError(f'v{x}')\nif x % 11 == 5:\n"
        "    sys.exit(f'stop {x}')\nprint(x, file=sys.stderr if x % 2 else sys.stdout)\n"
        "result = {'x': x, 'half': x / 2, 's': 'a' * (x % 5)}"
    )

    @settings(max_examples=6, deadline=None, derandomize=True)
    @given(
        xs=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=25),
        cap=st.sampled_from([1, 3, 8]),
        policy=st.sampled_from(["continue", "fail_fast"]),
    )
    def same(xs: list[int], cap: int, policy: str) -> None:
        doc = batch_doc(code, xs, cap=cap, error_handling=policy)
        a, b = fanflow.run(doc, executor="thread"), fanflow.run(doc, executor="process")
        assert a.status == b.status
        if policy == "continue":  # fail_fast: which items ran before the stop may differ
            strip = {"batch_metadata"}
            left = {k: v for k, v in a.store.get("c", {}).items() if k not in strip}
            right = {k: v for k, v in b.store.get("c", {}).items() if k not in strip}
            assert left == right
        else:
            assert (a.error is None) == (b.error is None)

    same()


def test_a_sub_workflow_node_can_name_its_own_executor() -> None:
    child = {
        "nodes": [{"id": "p", "type": "code", "executor": "process",
                   "params": {"code": "import os\nresult = os.getpid()"}}],
        "outputs": {"pid": {"source": "${p.result}"}},
    }  # fmt: skip
    doc = {"ir_version": "0.1.0", "nodes": [
        {"id": "sub", "type": "workflow", "params": {"workflow": child}}]}  # fmt: skip
    r = fanflow.run(doc)
    assert r.status == "success", r.error
    pid = r.store["sub"]["pid"]
    assert isinstance(pid, int) and pid != os.getpid()


def test_a_node_class_defined_in_a_script_main_runs_in_a_worker(tmp_path: Path) -> None:
    pytest.importorskip("cloudpickle")
    script = tmp_path / "script.py"
    script.write_text(
        "import os, fanflow\nfrom fanflow.nodes.base import Node\n"
        "class MainNode(Node):\n    type_name = 'main-node'\n    remote_exec = True\n"
        "    def exec(self, prep):\n        return {'pid': os.getpid()}\n"
        "fanflow.register_node(MainNode)\n"  # no main guard: the workers must not re-run this
        "r = fanflow.run({'ir_version': '0.1.0', 'nodes': [{'id': 'm', 'type': 'main-node'}]},"
        " executor='process')\nprint(r.status, r.store['m']['pid'] != os.getpid())\n"
    )
    p = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    assert p.stdout.strip() == "success True", p.stderr


def test_plan_and_nodes_say_where_a_node_runs(tmp_path: Path) -> None:
    from conftest import run_cli

    path = tmp_path / "wf.json"
    path.write_text(json.dumps({
        "ir_version": "0.1.0", "executor": "process",
        "nodes": [{"id": "c", "type": "code", "params": {"code": "result = 1"}},
                  {"id": "s", "type": "shell", "params": {"command": "true"}},
                  {"id": "d", "type": "code", "executor": "dask", "params": {"code": "result = 1"}}],
        "edges": [{"from": "c", "to": "s"}, {"from": "c", "to": "d"}],
    }))  # fmt: skip
    plan = run_cli("plan", str(path), "--format", "json").json
    assert {n["id"]: n["executor"] for n in plan["nodes"]} == {
        "c": "process", "s": "loop", "d": "dask"}  # fmt: skip
    assert "c (on process)" in run_cli("plan", str(path)).stdout
    assert "worker processes" in run_cli("nodes", "code").stdout
    assert "event loop" in run_cli("nodes", "shell").stdout
