"""Run store and checkpoint writer: real SQLite files, real threads, real processes and SIGKILL."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from fanflow import events as ev
from fanflow.errors import EXIT_INVALID
from fanflow.events import Event
from fanflow.store import runs as runs_mod
from fanflow.store.checkpoint import CheckpointWriter
from fanflow.store.runs import (
    MAX_INLINE_BYTES,
    RunStore,
    UnknownRun,
    decode_value,
    default_store_path,
    encode_value,
    new_run_id,
)


def emit(writer: CheckpointWriter, kind: str, node: str | None = None, idx: int | None = None,
         **data: Any) -> None:  # fmt: skip
    writer.on_event(Event(kind, time.perf_counter(), node, idx, data))


def simple_run(store: RunStore, **writer_kw: Any) -> CheckpointWriter:
    """A run with a plain node, a 3-item batch whose item 1 failed, and a failed run status."""
    w = CheckpointWriter(store, workflow_path="wf.json", inputs={"x": 1}, **writer_kw)
    emit(w, ev.RUN_STARTED, run_id=w.run_id, wall_start=time.time(), nodes=["a", "b"])
    emit(w, ev.NODE_STARTED, "a")
    emit(w, ev.NODE_FINISHED, "a", status="success", action="default", outputs={"stdout": "hi"})
    emit(w, ev.NODE_STARTED, "b", batch=3)
    for i in range(3):
        ok = i != 1
        emit(w, ev.ITEM_FINISHED, "b", i, status="success" if ok else "failed",
             result={"v": i} if ok else None, error=None if ok else "boom", attempts=1)  # fmt: skip
    emit(w, ev.NODE_FINISHED, "b", status="failed", action=None,
         outputs={"results": [{"v": 0}, None, {"v": 2}]}, error="item [1] failed")  # fmt: skip
    emit(w, ev.RUN_FINISHED, status="failed", outputs={}, error="b failed", failed_node="b")
    w.close()
    return w


def test_default_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FANFLOW_HOME", str(tmp_path / "home"))
    assert default_store_path() == tmp_path / "home" / "runs.db"
    monkeypatch.delenv("FANFLOW_HOME")
    monkeypatch.chdir(tmp_path)
    assert default_store_path() == tmp_path / ".fanflow" / "runs.db"
    # a directory given as the store means the database inside it
    (tmp_path / "d").mkdir()
    assert RunStore(tmp_path / "d").path == tmp_path / "d" / "runs.db"


def test_run_ids_are_short_sortable_unique() -> None:
    ids = {new_run_id(1_800_000_000) for _ in range(200)}
    assert len(ids) > 190  # random suffix: collisions are rare (and retried on insert)
    a, b = new_run_id(1_800_000_000), new_run_id(1_800_000_100)
    assert a < b and len(a) == len("20261128-105812-3f9a")


def test_write_and_read_back(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    w = simple_run(store)
    assert w.errors == [] and w.final_status == "failed"

    run = store.get_run(w.run_id)
    assert run.status == run.effective_status == "failed"
    assert run.inputs == {"x": 1} and run.error == "b failed" and run.failed_node == "b"
    assert run.workflow == "wf.json" and run.duration is not None and run.duration >= 0

    states = store.node_states(run.id)
    assert list(states) == ["a", "b"]
    assert states["a"].status == "success" and states["a"].outputs == {"stdout": "hi"}
    assert states["a"].has_outputs and states["a"].duration is not None
    assert states["b"].status == "failed" and states["b"].item_count == 3
    assert states["b"].items == {"success": 2, "failed": 1}
    assert store.item_results(run.id) == {"b": {0: {"v": 0}, 2: {"v": 2}}}
    assert store.integrity_check() == "ok"


def test_get_run_by_prefix_last_and_unknown(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    first = simple_run(store, run_id="20260101-000000-aaaa").run_id
    second = simple_run(store, run_id="20260101-000000-aaab").run_id
    assert store.get_run("last").id == second  # same start second: the id breaks the tie
    assert store.get_run("20260101-000000-aaaa").id == first
    with pytest.raises(UnknownRun, match="ambiguous") as exc:
        store.get_run("20260101")
    assert exc.value.exit_code == EXIT_INVALID
    with pytest.raises(UnknownRun, match="no run 'zzz'"):
        store.get_run("zzz")
    with pytest.raises(UnknownRun):
        RunStore(tmp_path / "empty.db").get_run("last")
    assert [r.id for r in store.list_runs()] == [second, first]
    assert [r.id for r in store.list_runs(limit=1)] == [second]


def test_values_round_trip_deliberately() -> None:
    value = {"b": b"\x00\xff", "t": (1, 2), "n": None, "f": 1.5, "s": "é", "nan": float("inf")}
    back = decode_value(encode_value(value))
    assert back["b"] == b"\x00\xff" and back["t"] == [1, 2] and back["s"] == "é"
    assert back["nan"] == float("inf")
    with pytest.raises(runs_mod.NotStorable):
        encode_value({"s": {1, 2}})


def test_big_outputs_go_to_side_files_never_truncated(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    big = "x" * (MAX_INLINE_BYTES + 10)
    w = CheckpointWriter(store, workflow_path="wf.json")
    emit(w, ev.NODE_STARTED, "a")
    emit(w, ev.NODE_FINISHED, "a", status="success", action="default", outputs={"content": big})
    emit(w, ev.NODE_STARTED, "b", batch=1)
    emit(w, ev.ITEM_FINISHED, "b", 0, status="success", result={"content": big + "y"})
    emit(w, ev.RUN_FINISHED, status="success", outputs={"out": big})
    w.close()

    conn = sqlite3.connect(store.path)
    sizes = [r[0] for r in conn.execute("SELECT length(CAST(data AS BLOB)) FROM log")]
    assert sizes and max(sizes) < MAX_INLINE_BYTES  # rows stay small: values went aside
    assert conn.execute("SELECT COUNT(*) FROM blobs").fetchone()[0] == 2
    conn.close()
    blob = hashlib.sha256(encode_value({"content": big}).encode()).hexdigest()
    assert store.blob_path(blob).is_file()
    assert store.node_states(w.run_id)["a"].outputs == {"content": big}
    assert store.item_results(w.run_id)["b"][0] == {"content": big + "y"}
    assert store.get_run(w.run_id).outputs == {"out": big}
    assert len(list(store.blob_dir.glob("*/*.json"))) == 3

    # A side file that disappeared reads as "not stored": the node is then not resumable.
    store.blob_path(blob).unlink()
    st = store.node_states(w.run_id)["a"]
    assert not st.has_outputs and "missing" in (st.note or "")


def test_small_outputs_stay_inline(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    w = CheckpointWriter(store, workflow_path="wf.json")
    emit(w, ev.NODE_FINISHED, "a", status="success", action="default", outputs={"c": "x" * 1000})
    w.close()
    assert not store.blob_dir.exists()


def test_unserialisable_outputs_are_marked_not_resumable(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    w = CheckpointWriter(store, workflow_path="wf.json")
    emit(w, ev.NODE_FINISHED, "a", status="success", action="default", outputs={"s": {1, 2}})
    emit(w, ev.ITEM_FINISHED, "b", 0, status="success", result={"s": object()})
    emit(w, ev.ITEM_FINISHED, "b", 1, status="success", result={"ok": 1})
    w.close()
    st = store.node_states(w.run_id)["a"]
    assert st.status == "success" and not st.has_outputs and "not stored" in (st.note or "")
    assert store.item_results(w.run_id) == {"b": {1: {"ok": 1}}}  # item 0 will re-run


def test_close_without_run_finished_marks_cancelled(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    w = CheckpointWriter(store, workflow_path="wf.json")
    emit(w, ev.NODE_FINISHED, "a", status="success", action="default", outputs={})
    w.close()
    w.close()  # idempotent
    assert store.get_run(w.run_id).status == "cancelled"


def test_writer_follows_the_engine_run_id(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    w = CheckpointWriter(store, workflow_path="wf.json")
    emit(w, ev.RUN_STARTED, run_id="20260101-000000-beef", wall_start=time.time())
    emit(w, ev.NODE_FINISHED, "a", status="success", action="default", outputs={"k": 1})
    w.close()
    assert w.run_id == "20260101-000000-beef"
    assert [r.id for r in store.list_runs()] == ["20260101-000000-beef"]
    assert store.node_states("20260101-000000-beef")["a"].outputs == {"k": 1}


def test_writes_are_batched_not_per_event(tmp_path: Path) -> None:
    """10,000 item completions must cost a handful of transactions, not 10,000."""
    store = RunStore(tmp_path / "runs.db")
    w = CheckpointWriter(store, workflow_path="wf.json")
    commits = []
    real_write = w._write

    def counting_write(conn: sqlite3.Connection, batch: list[Any], items: list[Event]) -> None:
        commits.append(len(items))
        real_write(conn, batch, items)

    w._write = counting_write  # type: ignore[method-assign]
    t0 = time.perf_counter()
    for i in range(10_000):
        emit(w, ev.ITEM_FINISHED, "b", i, status="success", result={"i": i})
    on_event_cost = time.perf_counter() - t0
    w.close()
    assert sum(commits) == 10_000
    assert len(commits) < 200, commits
    assert len(store.item_results(w.run_id)["b"]) == 10_000
    # loose sanity bound (appending to a deque): far below a millisecond per event
    assert on_event_cost / 10_000 < 1e-3


def test_concurrent_writers_finishing_at_once(tmp_path: Path) -> None:
    """Eight runs in threads plus three in other processes write the same store at the same
    moment: every row lands, the file stays sound."""
    path = tmp_path / "runs.db"
    RunStore(path).close()
    script = textwrap.dedent(
        f"""
        import sys, time
        from fanflow import events as ev
        from fanflow.events import Event
        from fanflow.store.checkpoint import CheckpointWriter
        from fanflow.store.runs import RunStore
        w = CheckpointWriter(RunStore({str(path)!r}), workflow_path="proc.json",
                             flush_interval=0.001)
        while time.time() < float(sys.argv[1]):
            time.sleep(0.001)
        for i in range(400):
            w.on_event(Event(ev.ITEM_FINISHED, time.perf_counter(), "b", i,
                             {{"status": "success", "result": {{"i": i}}}}))
        w.on_event(Event(ev.RUN_FINISHED, time.perf_counter(), None, None,
                         {{"status": "success", "outputs": {{}}}}))
        w.close()
        assert not w.errors, w.errors
        """
    )
    start_at = time.time() + 1.5
    procs = [subprocess.Popen([sys.executable, "-c", script, str(start_at)]) for _ in range(3)]
    writers: list[CheckpointWriter] = []

    def one() -> None:
        w = CheckpointWriter(RunStore(path), workflow_path="thread.json", flush_interval=0.001)
        writers.append(w)
        while time.time() < start_at:
            time.sleep(0.001)
        for i in range(400):
            emit(w, ev.ITEM_FINISHED, "b", i, status="success", result={"i": i})
            emit(w, ev.NODE_FINISHED, f"n{i % 7}", status="success", action="default",
                 outputs={"i": i})  # fmt: skip
        emit(w, ev.RUN_FINISHED, status="success", outputs={})
        w.close()

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for p in procs:
        assert p.wait(timeout=60) == 0
    assert all(not w.errors for w in writers)

    store = RunStore(path)
    assert store.integrity_check() == "ok"
    runs = store.list_runs(limit=None)
    assert len(runs) == 11 and all(r.status == "success" for r in runs)
    for r in runs:
        assert len(store.item_results(r.id)["b"]) == 400


_KILL_SCRIPT = """
import sys, time
from fanflow import events as ev
from fanflow.events import Event
from fanflow.store.checkpoint import CheckpointWriter
from fanflow.store.runs import MAX_INLINE_BYTES, RunStore
w = CheckpointWriter(RunStore(sys.argv[1]), workflow_path="wf.json", flush_interval=0.002)
big = "z" * (MAX_INLINE_BYTES + 1)
i = 0
while True:
    w.on_event(Event(ev.ITEM_FINISHED, time.perf_counter(), "b", i,
                     {"status": "success", "result": {"i": i, "big": big + str(i) if i % 50 == 0 else ""}}))
    if i % 100 == 0:
        w.on_event(Event(ev.NODE_FINISHED, time.perf_counter(), f"n{i}", None,
                         {"status": "success", "action": "default", "outputs": {"i": i}}))
    i += 1
    if i % 20 == 0:
        time.sleep(0.0005)
"""


@pytest.mark.parametrize("delay", [0.4, 0.9, 1.7])
def test_sigkill_mid_write_leaves_a_consistent_store(tmp_path: Path, delay: float) -> None:
    path = tmp_path / "runs.db"
    proc = subprocess.Popen([sys.executable, "-c", _KILL_SCRIPT, str(path)])
    try:
        deadline = time.time() + 30
        while True:  # wait until it has committed some items (one log row holds many)
            assert time.time() < deadline, "the writer committed no items in 30 s"
            time.sleep(0.05)
            if path.exists():
                try:
                    with sqlite3.connect(path) as c:
                        if c.execute("SELECT COUNT(*) FROM log").fetchone()[0] > 5:
                            break
                except sqlite3.Error:
                    pass
        time.sleep(delay)
        assert proc.poll() is None, "writer died on its own"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()

    store = RunStore(path)  # opens (WAL recovery happens here)
    assert store.integrity_check() == "ok"
    (run,) = store.list_runs()
    assert run.status == "running" and run.effective_status == "cancelled"
    items = store.item_results(run.id)["b"]
    assert len(items) > 100
    # committed items form a prefix (one writer, in order) and every value is complete
    assert sorted(items) == list(range(len(items)))
    for i, result in items.items():
        assert result["i"] == i
        assert result["big"] == ("z" * (MAX_INLINE_BYTES + 1) + str(i) if i % 50 == 0 else "")
    nodes = store.node_states(run.id)
    assert all(st.has_outputs and st.outputs == {"i": int(n[1:])} for n, st in nodes.items()
               if n != "b")  # fmt: skip


def test_prune_keep_older_than_and_side_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runs_mod, "BLOB_GRACE_SECONDS", 0.0)
    store = RunStore(tmp_path / "runs.db")
    ids = []
    for k in range(5):
        w = CheckpointWriter(store, workflow_path="wf.json")
        emit(w, ev.NODE_FINISHED, "a", status="success", action="default",
             outputs={"big": str(k) * (MAX_INLINE_BYTES + 1)})  # fmt: skip
        emit(w, ev.RUN_FINISHED, status="success", outputs={})
        w.close()
        ids.append(w.run_id)
    # make the first three look old
    with sqlite3.connect(store.path) as c:
        for k, rid in enumerate(ids[:3]):
            c.execute("UPDATE runs SET started=? WHERE id=?", (time.time() - 30 * 86400 - k, rid))
    assert len(list(store.blob_dir.glob("*/*.json"))) == 5

    assert sorted(store.prune(older_than=7 * 86400, dry_run=True)) == sorted(ids[:3])
    assert len(store.list_runs()) == 5  # a dry run deletes nothing
    # ids[2] is the oldest (started 30 days and 2 s ago): the only one beyond the newest 4
    assert store.prune(keep=4, older_than=7 * 86400) == [ids[2]]
    assert sorted(store.prune(older_than=7 * 86400)) == sorted(ids[:2])
    assert {r.id for r in store.list_runs()} == set(ids[3:])
    assert len(list(store.blob_dir.glob("*/*.json"))) == 2  # the side files went with them
    assert store.prune(keep=1) == [ids[3]]
    assert store.node_states(ids[3]) == {} and store.item_results(ids[3]) == {}
    with pytest.raises(ValueError):
        store.prune()


def test_prune_never_deletes_a_live_run(tmp_path: Path) -> None:
    store = RunStore(tmp_path / "runs.db")
    live = CheckpointWriter(store, workflow_path="wf.json")  # this process: alive, running
    assert store.prune(keep=0) == []
    live.close()
    assert store.prune(keep=0) == [live.run_id]


def test_corrupt_store_is_a_clean_error(tmp_path: Path) -> None:
    bad = tmp_path / "runs.db"
    bad.write_text("this is not a database" * 100)
    with pytest.raises(runs_mod.StoreError, match="cannot open run store"):
        RunStore(bad)


def test_begin_resume_trims_to_the_resume_state(tmp_path: Path) -> None:
    from fanflow.execute.resume_state import CompletedNode, ResumeState

    store = RunStore(tmp_path / "runs.db")
    w = simple_run(store)
    state = ResumeState(run_id=w.run_id, nodes={"a": CompletedNode({"stdout": "hi"})},
                        items={"b": {0: {"v": 0}}})  # fmt: skip
    w2 = CheckpointWriter(store, workflow_path="wf.json", resume=state)
    assert w2.run_id == w.run_id
    run = store.get_run(w.run_id)
    assert run.status == "running" and run.attempts == 2
    assert set(store.node_states(run.id)) == {"a", "b"}  # b: only its kept item remains
    assert store.item_results(run.id) == {"b": {0: {"v": 0}}}
    # the replayed node's events are not written again; new work is
    emit(w2, ev.NODE_STARTED, "a", resumed=True)
    emit(w2, ev.NODE_FINISHED, "a", status="success", action="default", outputs={"x": 0},
         resumed=True)  # fmt: skip
    emit(w2, ev.NODE_STARTED, "b", batch=3)
    for i in (1, 2):
        emit(w2, ev.ITEM_FINISHED, "b", i, status="success", result={"v": i})
    emit(
        w2,
        ev.NODE_FINISHED,
        "b",
        status="success",
        action="default",
        outputs={"results": [0, 1, 2], "count": 3, "success_count": 3, "error_count": 0},
    )
    emit(w2, ev.RUN_FINISHED, status="success", outputs={"ok": True})
    w2.close()
    run = store.get_run(w.run_id)
    assert run.status == "success" and run.outputs == {"ok": True}
    states = store.node_states(run.id)
    assert states["a"].outputs == {"stdout": "hi"}  # untouched by the replay
    assert states["b"].status == "success" and states["b"].items == {"success": 3}


def test_runs_cli_list_show_prune(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from fanflow.commands.runs import runs

    db = tmp_path / "s" / "runs.db"
    store = RunStore(db)
    w = simple_run(store)
    runner = CliRunner()
    res = runner.invoke(runs, ["--store", str(db)])
    assert res.exit_code == 0 and w.run_id in res.output and "failed" in res.output
    res = runner.invoke(runs, ["show", w.run_id[:12], "--store", str(db)])
    assert res.exit_code == 0, res.output
    assert "2/3 ok, 1 failed" in res.output and "item [1] failed" in res.output
    res = runner.invoke(runs, ["--store", str(db), "show", "last", "--output-format", "json"])
    data = json.loads(res.output)
    assert data["nodes"]["b"]["items"] == {"count": 3, "success": 2, "failed": 1}
    res = runner.invoke(runs, ["show", "nope", "--store", str(db)])
    assert res.exit_code == EXIT_INVALID and "no run 'nope'" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)
    res = runner.invoke(runs, ["prune", "--store", str(db)])
    assert res.exit_code == EXIT_INVALID
    res = runner.invoke(runs, ["prune", "--keep", "0", "--store", str(db)])
    assert res.exit_code == 0 and w.run_id in res.output
    assert RunStore(db).list_runs() == []
    # looking at a store that does not exist creates nothing
    res = runner.invoke(runs, ["--store", str(tmp_path / "none" / "runs.db")])
    assert res.exit_code == 0 and not (tmp_path / "none").exists()


def test_pid_liveness() -> None:
    assert runs_mod._process_alive(os.getpid(), None)
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    assert not runs_mod._process_alive(p.pid, None)
