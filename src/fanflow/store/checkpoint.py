"""The checkpoint listener: persists every completed node and batch item from the event stream
into the run store as the run goes, without serialising the parallel run (records are encoded
on the loop thread and committed in batched transactions by a background thread).

On a kill -9 the completions of the last flush interval may be lost; they simply run again on
resume. See docs/durable-runs.md.
"""

from __future__ import annotations

import operator
import os
import sqlite3
import sys
import threading
import time
from collections import deque
from typing import Any

from fanflow import events as ev
from fanflow.observe.redact import NOT_STORED, Secrets
from fanflow.store.runs import (
    MAX_INLINE_BYTES,
    RunStore,
    StoreError,
    _make_fast_encode,
    _str,
    new_run_id,
    rows_of,
    transaction,
    workflow_document,
    workflow_name,
)

# The checkpoint thread commits what has queued up at most this often; on kill -9 at most about
# this much of the most recent completions is lost (it re-runs on resume).
FLUSH_INTERVAL = 0.05
# ...or sooner, once this many events are waiting (keeps transactions and memory bounded).
FLUSH_EVENTS = 2000


_ITEM_KEYS = ("status", "result", "error", "attempts")
_ITEM_FIELDS = operator.itemgetter(*_ITEM_KEYS)
_ITEM = ev.ITEM_FINISHED
_NODE_FINISHED = ev.NODE_FINISHED
_NODE_STARTED = ev.NODE_STARTED
_encode = _make_fast_encode()
# Anything the fast path cannot take: missing fields, values JSON cannot hold.
_FALLBACK = (KeyError, TypeError, ValueError, RecursionError)
# An encoded record longer than this (in characters) may exceed MAX_INLINE_BYTES in UTF-8: the
# writer thread re-checks it and moves the value to a side file if needed.
_INLINE_CHARS = MAX_INLINE_BYTES // 4

_WANTED = frozenset(
    {
        ev.RUN_STARTED,
        ev.NODE_STARTED,
        ev.NODE_FINISHED,
        ev.NODE_SKIPPED,
        ev.ITEM_FINISHED,
        ev.RUN_FINISHED,
    }
)


class CheckpointWriter:
    """Event listener that persists the run as it happens.

    `on_event` (loop thread) appends to a deque — no lock, no I/O — after encoding a finished
    plain node's record (see on_event). A background thread wakes every FLUSH_INTERVAL (or when
    FLUSH_EVENTS are waiting), drains the deques and commits everything as one log row in one
    transaction, so a 10,000-item batch costs a handful of commits, not 10,000. `close()`
    flushes the rest and records the final status; call it from a `finally` (the engine's
    EventBus.close does).

    For a fresh run the run row is created here (synchronously, before anything runs), so a run
    killed before its first flush is still listed. For a resumed run pass `resume=` (the state
    from `load_resume`): the run keeps its id and its stored state is trimmed to what the resumed
    attempt starts from.
    """

    def __init__(
        self,
        store: RunStore,
        *,
        workflow: Any = None,
        workflow_path: str | os.PathLike[str] | None = None,
        inputs: dict[str, Any] | None = None,
        run_id: str | None = None,
        resume: Any = None,  # fanflow.execute.resume_state.ResumeState
        secrets: Secrets | None = None,
        flush_interval: float = FLUSH_INTERVAL,
        flush_events: int = FLUSH_EVENTS,
    ):
        self.store = store
        # With secrets, the events come masked (fanflow.observe.redact); records whose outputs
        # were masked are stored without them (resume re-runs those) and the inputs masked.
        self._masked = secrets is not None
        if secrets is not None and inputs:
            inputs = secrets.inputs(inputs)
        self.flush_interval = flush_interval
        self.flush_events = flush_events
        self.errors: list[str] = []
        self.final_status: str | None = None
        # perf_counter -> epoch seconds, so event times become wall-clock timestamps
        self._wall_offset = time.time() - time.perf_counter()
        self._segment_start = time.time()
        self._prev_duration = 0.0
        # cached JSON of ids, statuses, actions (see on_event); the workflow's node ids up front
        self._js: dict[Any, str] = {None: "null", "success": '"success"', "default": '"default"'}
        ids = (
            getattr(getattr(workflow, "graph", None), "ids", None) if workflow is not None else None
        )
        if ids:
            self._js.update((i, _encode(i)) for i in ids)
        self._js_limit = len(self._js) + 4096
        self._slow_started: dict[str, float | None] = {}  # start times for the writer's slow path
        self._node_items: dict[str, int] = {}
        # node -> start (perf_counter) of the nodes running now; written by the loop thread
        self._running: dict[str, float] = {}
        self._written_running: dict[str, float] = {}  # what the writer recorded as running
        self._finished_event: ev.Event | None = None
        self._retrying = False

        whash, doc = workflow_document(workflow, workflow_path)
        # A fresh run without an explicit id follows the id the engine announces in run_started.
        self._adopt_id = resume is None and run_id is None
        if resume is not None:
            self.run_id = resume.run_id
            prev = store.get_run(self.run_id)
            self._prev_duration = prev.duration or 0.0
            store.begin_resume(
                self.run_id,
                workflow_hash=whash,
                workflow_doc=doc,
                keep_nodes=resume.nodes,
                keep_items={n: list(items) for n, items in resume.items.items()},
            )
        else:
            wf = workflow_name(workflow_path, workflow)
            for _attempt in range(5):
                self.run_id = run_id or new_run_id()
                try:
                    store.create_run(self.run_id, workflow=wf, workflow_hash=whash,
                                     workflow_doc=doc, inputs=inputs)  # fmt: skip
                    break
                except sqlite3.IntegrityError:
                    if run_id is not None:
                        raise StoreError(f"run id {run_id} already exists") from None
            else:
                raise StoreError("could not allocate a unique run id")

        self._queue: deque[Any] = deque()  # node records and other events, in order
        self._items: deque[ev.Event] = deque()  # item completions (the hot path)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        # Opened here, before the run starts: opening it on the writer thread would make that
        # thread contend for the GIL with the busy loop right at the start of the run.
        try:
            self._conn = store.connect()
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open run store {store.path}: {exc}") from None
        self._thread = threading.Thread(target=self._loop, name="fanflow-checkpoint", daemon=True)
        self._thread.start()

    # -- loop thread ------------------------------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        """Runs on the loop thread, so it does as little as possible. Item completions are queued
        as they are (the writer encodes them in bulk, or skips them when their batch completes
        before the next flush). A finished plain node is encoded here from cached pieces and a
        reused C encoder: under CPython's GIL an encode on the writer thread would hold up the
        loop just as long, and doing it here saves handing the GIL back and forth. Batch nodes
        (large outputs) and anything unusual (a value JSON cannot hold, a value that may need a
        side file) are queued raw for the writer thread, which does all disk I/O."""
        kind = event.kind
        if kind == _ITEM:
            items = self._items
            items.append(event)
            if len(items) == self.flush_events:
                self._wake.set()
            return
        if kind == _NODE_FINISHED:
            node = event.node or ""
            started = self._running.pop(node, None)
            d = event.data
            if d.get("resumed"):
                return  # a node replayed from the store: its record is already there
            if (self._node_items and node in self._node_items) or (
                self._masked and d.get("redacted")
            ):
                # A batch: its outputs hold every item's result and may be large. One encode,
                # on the writer thread, which also decides on a side file. (Or outputs masked
                # for a secret: the writer stores a note instead.)
                self._slow_started[node] = started
                q = self._queue
                q.append(event)
                return
            status = d.get("status")
            off = self._wall_offset
            js = self._js
            # The record's JSON, assembled from cached encodings of its small parts (ids,
            # statuses, actions): a generic encode of the whole tuple costs several times more.
            try:
                outputs = d.get("outputs")
                out = _encode(outputs) if outputs else "{}"
                get, add = js.get, self._js_add
                action, err, att = d.get("action"), d.get("error"), d.get("attempts")
                text = (
                    f"[{get(node) or add(node)},{get(status) or add(status)},"
                    f"{get(action) or add(action)},{out},{get(err) or add(err)},"
                    f"{get(att) or add(att)},null,"
                    f"{'null' if started is None else int((started + off) * 1e6)},"
                    f"{int((event.t + off) * 1e6)}]"
                )
            except _FALLBACK:
                text = None
            entry: Any
            if text is not None and len(text) <= _INLINE_CHARS:
                entry = text
            else:
                self._slow_started[node] = started
                entry = event
        elif kind == _NODE_STARTED:
            node = event.node or ""
            d = event.data
            if d:
                if d.get("resumed"):
                    return
                n = d.get("batch")
                if n is not None:
                    self._node_items[node] = n
            self._running[node] = event.t  # the writer reads this at each flush
            return
        elif kind in _WANTED:
            if kind == ev.RUN_STARTED:
                ws = event.data.get("wall_start")
                if isinstance(ws, int | float):
                    self._wall_offset = ws - event.t
            entry = event
        else:
            return
        q = self._queue
        q.append(entry)
        if len(q) == self.flush_events:
            self._wake.set()

    def close(self) -> None:
        """Flush everything, record the final status, stop the thread. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        self._thread.join()

    def _js_add(self, value: Any) -> str:
        """JSON of a small scalar (id, status, action, attempt count), cached while the cache
        is small; anything unusual raises into the caller's slow path."""
        text = _encode(value)
        if len(self._js) < self._js_limit and type(value) in (str, int) and len(text) < 200:
            self._js[value] = text
        return text

    # -- writer thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        conn = self._conn
        try:
            while not self._stop.is_set():
                self._wake.wait(self.flush_interval)
                self._wake.clear()
                self._flush(conn)
            self._flush(conn)
            self._finish(conn)
        finally:
            conn.close()

    def _flush(self, conn: sqlite3.Connection) -> None:
        # Items first: a batch's items all precede its node_finished, so a batch node seen
        # finished below has every item it will ever have in `items` or in an earlier flush.
        iq, q = self._items, self._queue
        if not q and not iq:
            return
        pop = iq.popleft
        items = [pop() for _ in range(len(iq))]
        pop = q.popleft
        batch = [pop() for _ in range(len(q))]
        try:
            self._write(conn, batch, items)
            self._retrying = False
        except sqlite3.OperationalError as exc:
            # Most likely another process held the lock past the busy timeout: try once more on
            # the next tick rather than dropping the checkpoints.
            if self._retrying:
                self._report(f"checkpoint write failed: {exc}")
                self._retrying = False
            else:
                self._retrying = True
                q.extendleft(reversed(batch))
                iq.extendleft(reversed(items))
        except Exception as exc:  # a checkpoint problem must never break the run itself
            self._report(f"checkpoint write failed: {type(exc).__name__}: {exc}")

    def _write(self, conn: sqlite3.Connection, batch: list[Any], items: list[ev.Event]) -> None:
        """Commit one flush. `batch` holds encoded node records (str) and raw events (batch
        nodes, unusual values, skips, run start/end), in order; `items` the item completions."""
        rid = self.run_id
        off = self._wall_offset
        enc = self.store.encode_record
        digests: list[str] = []
        done: set[str] = set()  # batch nodes that succeeded within this flush
        item_events = items
        rename: tuple[str, str] | None = None
        node_texts = [e for e in batch if type(e) is str]
        if len(node_texts) != len(batch):  # something else too: go through it in order
            node_texts = []
            for e in batch:
                if type(e) is str:
                    node_texts.append(e)
                    continue
                kind, node, d = e.kind, e.node, e.data
                if kind == _NODE_FINISHED:  # a batch node, or a value for a side file or a note
                    started = self._slow_started.pop(node, None)
                    masked = self._masked and d.get("redacted")
                    node_texts.append(enc((node, d.get("status"), d.get("action"),
                                           None if masked else d.get("outputs") or {},
                                           d.get("error"), d.get("attempts"),
                                           self._node_items.get(node),
                                           None if started is None else int((started + off) * 1e6),
                                           int((e.t + off) * 1e6),
                                           *((None, NOT_STORED) if masked else ())),
                                          True, digests))  # fmt: skip
                    if d.get("status") == "success":
                        done.add(node)
                elif kind == ev.NODE_SKIPPED:
                    node_texts.append(enc((node, "skipped", None, None, None, None, None, None,
                                           int((e.t + off) * 1e6), None, _str(d.get("reason"))),
                                          True, digests))  # fmt: skip
                elif kind == ev.RUN_STARTED:
                    engine_id = d.get("run_id")
                    if self._adopt_id and engine_id and engine_id != rid:
                        self._adopt_id = False
                        if conn.execute("SELECT 1 FROM runs WHERE id=?", (engine_id,)).fetchone():
                            self._report(f"run id {engine_id} already exists; stored as {rid}")
                        else:
                            rename = (rid, str(engine_id))
                            rid = str(engine_id)
                elif kind == ev.RUN_FINISHED:
                    self._finished_event = e
        # Nodes running right now (taken after draining the queue: a node that finished before
        # this point has its record in this flush or an earlier one; a record appended later in
        # a row wins when the log is folded).
        for node, started in self._running.copy().items():
            if self._written_running.get(node) != started:
                self._written_running[node] = started
                node_texts.append(enc((node, "running", None, None, None, None,
                                       self._node_items.get(node), int((started + off) * 1e6),
                                       None), True, digests))  # fmt: skip
        # Items of a batch that succeeded within this flush are not written one by one: the
        # node's record carries every result (only an unfinished batch needs them to resume).
        items_json = None
        if item_events:
            try:
                records = [(e.node, e.item, *_ITEM_FIELDS(e.data))
                           for e in item_events if e.node not in done]  # fmt: skip
            except KeyError:  # an emitter that leaves fields out: the tolerant path
                records = [(e.node, e.item, *(e.data.get(k) for k in _ITEM_KEYS))
                           for e in item_events if e.node not in done]  # fmt: skip
            if self._masked:
                records = _without_masked(records, [e for e in item_events if e.node not in done])
            del item_events
            try:
                items_json = _encode(records)
                if len(items_json) > _INLINE_CHARS:
                    items_json = None
            except _FALLBACK:
                items_json = None
            if items_json is None:
                rows = rows_of(node_texts, self.store.encode_records(records, False, digests))
            else:
                rows = ['{"n":[' + ",".join(node_texts) + '],"i":' + items_json + "}"]
        elif node_texts:
            rows = rows_of(node_texts, [])
        else:
            rows = []
        if not rows and rename is None:
            return
        try:
            with transaction(conn):
                if rename is not None:
                    for table, col in (("runs", "id"), ("log", "run_id"), ("blobs", "run_id")):
                        conn.execute(
                            f"UPDATE {table} SET {col}=? WHERE {col}=?", (rename[1], rename[0])
                        )
                if rows:
                    conn.executemany(
                        "INSERT INTO log (run_id, data) VALUES (?, ?)", [(rid, r) for r in rows]
                    )
                if digests:
                    conn.executemany(
                        "INSERT OR IGNORE INTO blobs (run_id, digest) VALUES (?, ?)",
                        [(rid, dg) for dg in digests],
                    )
        except BaseException:
            if rename is not None:
                self._adopt_id = True  # the retry renames again
            raise
        if rename is not None:
            self.run_id = rename[1]

    def _finish(self, conn: sqlite3.Connection) -> None:
        e = self._finished_event
        now = time.time()
        if e is not None:
            d = e.data
            status = d.get("status") or "failed"
            error, failed_node = _str(d.get("error")), d.get("failed_node")
            text, blob, note = self.store.pack_value(d.get("outputs") or {})
        else:  # closed without run_finished: the run was torn down (Ctrl-C, crash in the engine)
            status, error, failed_node = "cancelled", "run did not finish", None
            text, blob, note = None, None, None
        self.final_status = status
        try:
            with transaction(conn):
                conn.execute(
                    "UPDATE runs SET status=?, finished=?, duration=?, error=?, failed_node=?,"
                    " outputs=?, outputs_blob=? WHERE id=?",
                    (
                        status,
                        now,
                        self._prev_duration + (now - self._segment_start),
                        error or note,
                        failed_node,
                        text,
                        blob,
                        self.run_id,
                    ),
                )
        except sqlite3.Error as exc:
            self._report(f"could not record the final status: {exc}")

    def _report(self, message: str) -> None:
        self.errors.append(message)
        if len(self.errors) == 1:  # once: a full disk must not flood stderr
            print(f"fanflow: warning: {message} (resume may redo some work)", file=sys.stderr)


def _without_masked(records: list[Any], events: list[ev.Event]) -> list[Any]:
    """Item records (parallel to their events) with masked results replaced by a note."""
    return [
        (*rec[:3], None, *rec[4:6], None, NOT_STORED) if e.data.get("redacted") else rec
        for rec, e in zip(records, events, strict=True)
    ]
