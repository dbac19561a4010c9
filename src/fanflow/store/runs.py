"""The run store: every run, node and batch item on the local disk (SQLite, stdlib). The
checkpoint listener that fills it from the event stream lives in fanflow.store.checkpoint.

Location (first match wins): an explicit path (`--store PATH`; a directory means PATH/runs.db),
`$FANFLOW_HOME/runs.db`, else project-local `./.fanflow/runs.db`. Side files for large values live
in `blobs/` next to the database.

Crash safety: the database runs in WAL mode and every write is one transaction, so a process killed
at any instant (kill -9) leaves the committed state intact; an uncommitted transaction is rolled
back by SQLite on the next open. A side file is written (atomically, by rename) before the row that
names it commits, so a crash can leave an orphan side file (removed by `prune`) but never a row
pointing at nothing. See docs/durable-runs.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fanflow.errors import EXIT_INVALID, FanflowError
from fanflow.status import Status

DB_NAME = "runs.db"
BLOB_DIR = "blobs"
SCHEMA_VERSION = 2
# A value whose JSON is larger than this goes to a content-addressed side file instead of the row.
MAX_INLINE_BYTES = 1 << 20
# Side files younger than this are never garbage-collected: a concurrent writer may be about to
# commit the row that references one.
BLOB_GRACE_SECONDS = 600.0
# How long a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 10_000

_BYTES_TAG = "__fanflow_bytes__"
_HOST = os.uname().nodename if hasattr(os, "uname") else ""

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,          -- absolute path of the workflow file (or its name)
    workflow_hash TEXT,                   -- key into workflows: the document this run ran
    inputs        TEXT,                   -- JSON
    status        TEXT NOT NULL,          -- running | success | failed | cancelled (fanflow.Status)
    started       REAL NOT NULL,          -- epoch seconds of the first attempt
    finished      REAL,
    duration      REAL,                   -- seconds, summed over attempts (resumes)
    error         TEXT,
    failed_node   TEXT,
    outputs       TEXT,                   -- JSON of the declared outputs
    outputs_blob  TEXT,
    attempts      INTEGER NOT NULL DEFAULT 1,
    pid           INTEGER,
    host          TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_workflow ON runs(workflow, started);
CREATE INDEX IF NOT EXISTS runs_by_started ON runs(started);

-- Normalised workflow documents (JSON), shared by every run of the same document.
CREATE TABLE IF NOT EXISTS workflows (
    hash          TEXT PRIMARY KEY,
    doc           TEXT NOT NULL
) WITHOUT ROWID;

-- The checkpoint log: one row per writer flush (a transaction), holding every node and item
-- record of that flush as JSON {"n": [node records], "i": [item records]}. Folding a run's rows
-- in id order (later records win) gives each node's and item's last state. One row per flush
-- rather than one per item is what keeps checkpointing cheap (see docs/durable-runs.md).
CREATE TABLE IF NOT EXISTS log (
    id            INTEGER PRIMARY KEY,
    run_id        TEXT NOT NULL,
    data          TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS log_by_run ON log(run_id, id);

-- Which run references which side file (for garbage collection on prune).
CREATE TABLE IF NOT EXISTS blobs (
    run_id        TEXT NOT NULL,
    digest        TEXT NOT NULL,
    PRIMARY KEY (run_id, digest)
) WITHOUT ROWID;
"""

# Positions in a node record: [node, status, action, outputs, error, attempts, item_count,
# started, finished] + optional [blob digest, note] when the outputs are in a side file or could
# not be stored. Item record: [node, index, status, result, error, attempts] + optional
# [blob digest, note].
N_ID, N_STATUS, N_ACTION, N_OUT, N_ERR, N_ATT, N_ITEMS, N_START, N_END, N_BLOB, N_NOTE = range(11)
I_NODE, I_IDX, I_STATUS, I_RES, I_ERR, I_ATT, I_BLOB, I_NOTE = range(8)


class StoreError(FanflowError):
    """The run store cannot be opened or used (exit 1)."""


class UnknownRun(StoreError):
    """No run matches the given id, prefix or "last" (exit 2: a command-line mistake)."""

    exit_code = EXIT_INVALID


class NotStorable(ValueError):
    """A value that JSON cannot represent faithfully (see `encode_value`)."""


# ---------------------------------------------------------------------------------------------
# Locations, ids, values


def default_store_path() -> Path:
    """`$FANFLOW_HOME/runs.db` if FANFLOW_HOME is set, else `./.fanflow/runs.db`."""
    home = os.environ.get("FANFLOW_HOME")
    base = Path(home).expanduser() if home else Path.cwd() / ".fanflow"
    return base / DB_NAME


def resolve_store_path(path: str | os.PathLike[str] | None) -> Path:
    if path is None:
        return default_store_path()
    p = Path(path).expanduser()
    # An existing directory, or a path written with a trailing slash, names the store folder.
    if p.is_dir() or str(path).endswith(("/", os.sep)):
        return p / DB_NAME
    return p


def new_run_id(now: float | None = None) -> str:
    """Short, sortable (local time, to the second), unique by a random suffix.

    Example: 20261128-105812-3f9a."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(now if now is not None else time.time()))
    return f"{stamp}-{os.urandom(2).hex()}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        import base64

        return {_BYTES_TAG: base64.b64encode(bytes(obj)).decode("ascii")}
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serialisable")


def _bytes_hook(d: dict[str, Any]) -> Any:
    if len(d) == 1 and _BYTES_TAG in d:
        import base64

        return base64.b64decode(d[_BYTES_TAG])
    return d


# One encoder, built once: json.dumps with non-default options builds a new one per call.
_ENC = json.JSONEncoder(default=_json_default, ensure_ascii=False, separators=(",", ":"))
_UNSTORABLE = (TypeError, ValueError, RecursionError)


def _make_fast_encode() -> Any:
    """JSONEncoder.encode costs ~1 µs per call before encoding anything (it builds a C encoder
    each time); per-record encoding on the hot path reuses one C encoder instead. Same output."""
    c_make = getattr(json.encoder, "c_make_encoder", None)
    if c_make is None:  # no C accelerator: the plain (slower) path
        return _ENC.encode
    # No circular-reference bookkeeping (markers=None): a cycle ends in RecursionError, which
    # callers treat like any other value JSON cannot hold.
    c_enc = c_make(None, _json_default, json.encoder.encode_basestring, None, ":", ",",
                   False, False, True)  # fmt: skip

    def encode(value: Any) -> str:
        return "".join(c_enc(value, 0))

    return encode


def encode_value(value: Any) -> str:
    """JSON text of a node's outputs or an item's result.

    Deliberate rules: JSON types round-trip exactly (NaN/Infinity included); bytes round-trip
    through a tagged base64 object; tuples come back as lists and non-string dict keys as strings
    (JSON's own conversions). Anything else (sets, datetimes, custom objects, cycles) raises
    NotStorable: the caller stores no value and marks the node/item as not resumable, so a resume
    re-runs it rather than replaying a lossy copy."""
    try:
        return _ENC.encode(value)
    except _UNSTORABLE as exc:
        raise NotStorable(str(exc)) from None


def decode_value(text: str) -> Any:
    if _BYTES_TAG in text:
        return json.loads(text, object_hook=_bytes_hook)
    return json.loads(text)


def _size(text: str) -> int:
    """UTF-8 size without encoding when the answer is obvious."""
    n = len(text)
    return n if n * 4 <= MAX_INLINE_BYTES or text.isascii() else len(text.encode("utf-8"))


def workflow_document(
    workflow: Any, path: str | os.PathLike[str] | None = None
) -> tuple[str | None, str | None]:
    """(hash, JSON text) of the document a run runs: the workflow file's own text when there is
    one (reading it is cheaper than serialising the model), else the model serialised with its
    defaults left out. Stored once per distinct document; resume compares node definitions
    against it."""
    text = None
    if path is not None:
        try:
            text = Path(path).read_text("utf-8")
        except (OSError, UnicodeDecodeError):
            text = None
    if text is None:
        workflow = getattr(workflow, "workflow", workflow)  # a CompiledWorkflow's document
        if workflow is None or not hasattr(workflow, "to_json"):
            return None, None
        text = workflow.to_json()
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16], text


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class RunRecord:
    id: str
    workflow: str
    workflow_hash: str | None
    inputs: dict[str, Any]
    status: str  # as stored; see `effective_status`
    started: float
    finished: float | None
    duration: float | None
    error: str | None
    failed_node: str | None
    attempts: int
    pid: int | None
    host: str | None
    outputs: Any = None

    @property
    def alive(self) -> bool:
        """True while the process that is running this run still exists (same host only)."""
        return self.status == "running" and _process_alive(self.pid, self.host)

    @property
    def effective_status(self) -> str:
        """A run still marked running whose process is gone was killed: report it cancelled
        (it stopped before finishing, and can be resumed)."""
        if self.status == "running" and not self.alive:
            return Status.CANCELLED
        return self.status


@dataclass
class NodeState:
    node_id: str
    status: str
    action: str | None
    error: str | None
    started: float | None
    finished: float | None
    attempts: int | None
    item_count: int | None
    outputs: Any = None
    # False when the outputs could not be stored (or their side file is gone): not resumable.
    has_outputs: bool = False
    note: str | None = None
    items: dict[str, int] = field(default_factory=dict)  # item status -> count

    @property
    def duration(self) -> float | None:
        if self.started is None or self.finished is None:
            return None
        return max(0.0, self.finished - self.started)


def _process_alive(pid: int | None, host: str | None) -> bool:
    if not pid:
        return False
    if host and host != _HOST:
        return True  # cannot tell from here: assume it may still be running
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


def _secs(us: int | float | None) -> float | None:
    """Record times are integer microseconds since the epoch (cheaper to encode than floats)."""
    return None if us is None else us / 1e6


def _opt(rec: list[Any], i: int) -> Any:
    return rec[i] if len(rec) > i else None


# ---------------------------------------------------------------------------------------------
# The store


class RunStore:
    """SQLite run store. Reads go through one connection owned by this object (usable from any
    thread, serialised by a lock); the checkpoint writer opens its own connection via `connect`."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = resolve_store_path(path)
        self.dir = self.path.parent
        self.blob_dir = self.dir / BLOB_DIR
        self._lock = threading.RLock()
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._conn = self.connect()
            self._init_schema()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None

    # -- connections and transactions --------------------------------------------------------

    def connect(self) -> sqlite3.Connection:
        """A new connection: autocommit mode (we issue BEGIN IMMEDIATE ourselves), WAL,
        synchronous=NORMAL (a committed transaction survives a process crash; only an OS crash
        may lose the last few, never consistency), and a generous busy timeout so concurrent
        fanflow processes take turns instead of failing."""
        conn = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        return conn

    def _init_schema(self) -> None:
        version = self._conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"run store {self.path} was written by a newer fanflow (schema {version})"
            )
        if version == SCHEMA_VERSION:
            return
        with transaction(self._conn):
            if version == 1:  # pre-release development layout: nothing worth migrating
                for table in ("runs", "nodes", "items"):
                    self._conn.execute(f"DROP TABLE IF EXISTS {table}")
            for stmt in _statements(_SCHEMA):
                self._conn.execute(stmt)
            self._conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> RunStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def integrity_check(self) -> str:
        with self._lock:
            return self._conn.execute("PRAGMA integrity_check").fetchone()[0]

    # -- values and side files ---------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        return self.blob_dir / digest[:2] / f"{digest}.json"

    def pack_value(self, value: Any) -> tuple[str | None, str | None, str | None]:
        """(inline JSON, side-file digest, note): JSON if small, a side file if large, a note
        saying why nothing was stored otherwise."""
        try:
            text = encode_value(value)
        except NotStorable as exc:
            return None, None, f"not stored: {exc}"
        if _size(text) <= MAX_INLINE_BYTES:
            return text, None, None
        try:
            return None, self.write_blob(text), None
        except OSError as exc:
            return None, None, f"not stored: side file write failed: {exc}"

    def write_blob(self, text: str) -> str:
        """Store `text` in a content-addressed side file; return its digest. Written to a temp
        file, fsynced and renamed into place before any row names it."""
        data = text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        path = self.blob_path(digest)
        if path.exists():
            os.utime(path)  # refresh: keeps it out of a concurrent prune's grace window
            return digest
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return digest

    def read_blob(self, digest: str) -> tuple[bool, Any]:
        try:
            return True, decode_value(self.blob_path(digest).read_text("utf-8"))
        except (OSError, ValueError):
            return False, None

    def encode_record(self, rec: Any, node: bool, digests: list[str]) -> str:
        """JSON text of one node (node=True) or item record. Fast path: one encode. When that
        fails (a value JSON cannot hold) or is too big, the value goes to a side file (its digest
        appended to `digests`) or is replaced by a note saying why it was not stored."""
        try:
            text = _ENC.encode(rec)
            if len(text) * 4 <= MAX_INLINE_BYTES or _size(text) <= MAX_INLINE_BYTES:
                return text
        except _UNSTORABLE:
            pass
        vi, ei, width = (N_OUT, N_ERR, 9) if node else (I_RES, I_ERR, 6)
        r = [*rec[:width], *[None] * (width - len(rec)), _opt(rec, width), _opt(rec, width + 1)]
        if r[ei] is not None and not isinstance(r[ei], str):
            r[ei] = str(r[ei])
        if r[vi] is not None:
            value_text, digest, note = self.pack_value(r[vi])
            if value_text is None:
                r[vi], r[-2], r[-1] = None, digest, note
                if digest:
                    digests.append(digest)
        return _ENC.encode(r)

    def encode_records(self, records: list[Any], node: bool, digests: list[str]) -> list[str]:
        """Many records: one C-level pass when every record is plain and small."""
        enc = _ENC.encode
        try:
            texts = [enc(r) for r in records]
        except _UNSTORABLE:
            return [self.encode_record(r, node, digests) for r in records]
        if texts and max(map(len, texts)) * 4 > MAX_INLINE_BYTES:
            return [self.encode_record(r, node, digests) for r in records]
        return texts

    def pack_records(self, nodes: list[Any], items: list[Any]) -> tuple[list[str], list[str]]:
        """Log rows for these records, and the side files they reference."""
        digests: list[str] = []
        rows = rows_of(self.encode_records(nodes, True, digests),
                       self.encode_records(items, False, digests))  # fmt: skip
        return rows, digests

    # -- runs --------------------------------------------------------------------------------

    def save_workflow(self, conn: sqlite3.Connection, digest: str | None, doc: str | None) -> None:
        if digest and doc is not None:
            conn.execute("INSERT OR IGNORE INTO workflows (hash, doc) VALUES (?, ?)", (digest, doc))

    def workflow_doc(self, digest: str | None) -> str | None:
        if not digest:
            return None
        with self._lock:
            row = self._conn.execute("SELECT doc FROM workflows WHERE hash=?", (digest,))
            row = row.fetchone()
        return row[0] if row else None

    def node_order(self, run: RunRecord) -> list[str]:
        """Node ids of the run's workflow, in document order (empty if unknown)."""
        doc = self.workflow_doc(run.workflow_hash)
        try:
            return [n["id"] for n in json.loads(doc)["nodes"]] if doc else []
        except (ValueError, KeyError, TypeError):
            return []

    def create_run(
        self,
        run_id: str,
        *,
        workflow: str,
        workflow_hash: str | None = None,
        workflow_doc: str | None = None,
        inputs: dict[str, Any] | None = None,
        started: float | None = None,
    ) -> None:
        try:
            inputs_text = encode_value(inputs or {})
        except NotStorable:  # inputs come from the command line: always JSON in practice
            inputs_text = encode_value({k: repr(v) for k, v in (inputs or {}).items()})
        with self._lock, transaction(self._conn):
            self.save_workflow(self._conn, workflow_hash, workflow_doc)
            self._conn.execute(
                "INSERT INTO runs (id, workflow, workflow_hash, inputs, status, started, pid, host)"
                " VALUES (?,?,?,?,'running',?,?,?)",
                (
                    run_id,
                    workflow,
                    workflow_hash,
                    inputs_text,
                    started if started is not None else time.time(),
                    os.getpid(),
                    _HOST,
                ),
            )

    def begin_resume(
        self,
        run_id: str,
        *,
        workflow_hash: str | None,
        workflow_doc: str | None,
        keep_nodes: Iterable[str],
        keep_items: dict[str, Iterable[int]],
    ) -> None:
        """Start another attempt of `run_id`: mark it running again and rewrite its log to exactly
        what the attempt starts from (the kept nodes with all their items, and the kept items of
        partial batches), so that a crash during the resumed attempt can never make a stale
        record look completed. One transaction."""
        keep = set(keep_nodes)
        keep_idx = {(n, i) for n, idxs in keep_items.items() for i in idxs}
        with self._lock:
            nodes, items = self._fold(run_id)
            node_recs = [rec for n, rec in nodes.items() if n in keep]
            item_recs = [
                rec
                for n, by_idx in items.items()
                for i, rec in by_idx.items()
                if n in keep or (n, i) in keep_idx
            ]
            rows, _ = self.pack_records(node_recs, item_recs)
            with transaction(self._conn):
                self.save_workflow(self._conn, workflow_hash, workflow_doc)
                cur = self._conn.execute(
                    "UPDATE runs SET status='running', attempts=attempts+1, pid=?, host=?,"
                    " workflow_hash=COALESCE(?, workflow_hash), finished=NULL, error=NULL,"
                    " failed_node=NULL WHERE id=?",
                    (os.getpid(), _HOST, workflow_hash, run_id),
                )
                if cur.rowcount != 1:
                    raise UnknownRun(f"no run with id {run_id}")
                self._conn.execute("DELETE FROM log WHERE run_id=?", (run_id,))
                self._conn.executemany(
                    "INSERT INTO log (run_id, data) VALUES (?, ?)", [(run_id, r) for r in rows]
                )

    _RUN_COLS = (
        "id, workflow, workflow_hash, inputs, status, started, finished, duration, error,"
        " failed_node, outputs, outputs_blob, attempts, pid, host"
    )

    def _row_to_run(self, row: tuple, with_outputs: bool = False) -> RunRecord:
        (rid, workflow, whash, inputs, status, started, finished, duration, error, failed_node,
         outputs, outputs_blob, attempts, pid, host) = row  # fmt: skip
        rec = RunRecord(
            id=rid,
            workflow=workflow,
            workflow_hash=whash,
            inputs=decode_value(inputs) if inputs else {},
            status=status,
            started=started,
            finished=finished,
            duration=duration,
            error=error,
            failed_node=failed_node,
            attempts=attempts,
            pid=pid,
            host=host,
        )
        if with_outputs:
            if outputs is not None:
                rec.outputs = decode_value(outputs)
            elif outputs_blob:
                rec.outputs = self.read_blob(outputs_blob)[1]
        return rec

    def list_runs(self, limit: int | None = 20, workflow: str | None = None) -> list[RunRecord]:
        """Most recent first. `workflow` filters on the stored workflow path/name."""
        sql = f"SELECT {self._RUN_COLS} FROM runs"
        args: list[Any] = []
        if workflow is not None:
            sql += " WHERE workflow=?"
            args.append(workflow)
        sql += " ORDER BY started DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        with self._lock:
            rows = self._conn.execute(sql, args).fetchall()
        return [self._row_to_run(r) for r in rows]

    def get_run(self, ref: str, workflow: str | None = None) -> RunRecord:
        """A run by exact id, unique id prefix, or "last" (the most recent run, of `workflow`
        when given). Raises UnknownRun with a helpful message otherwise."""
        ref = ref.strip()
        with self._lock:
            if ref == "last":
                sql = f"SELECT {self._RUN_COLS} FROM runs"
                args: tuple[Any, ...] = ()
                if workflow is not None:
                    sql += " WHERE workflow=?"
                    args = (workflow,)
                row = self._conn.execute(sql + " ORDER BY started DESC, id DESC LIMIT 1", args)
                row = row.fetchone()
                if row is None:
                    where = f" of {workflow}" if workflow else ""
                    raise UnknownRun(f"no previous run{where} in {self.path}")
                return self._row_to_run(row, with_outputs=True)
            if not ref:
                raise UnknownRun("empty run id")
            rows = self._conn.execute(
                f"SELECT {self._RUN_COLS} FROM runs WHERE substr(id, 1, ?) = ? ORDER BY id",
                (len(ref), ref),
            ).fetchall()
        exact = [r for r in rows if r[0] == ref]
        if exact:
            return self._row_to_run(exact[0], with_outputs=True)
        if len(rows) == 1:
            return self._row_to_run(rows[0], with_outputs=True)
        if not rows:
            raise UnknownRun(
                f"no run '{ref}' in {self.path} (`fanflow runs` lists the recent runs)"
            )
        ids = ", ".join(r[0] for r in rows[:5]) + (", ..." if len(rows) > 5 else "")
        raise UnknownRun(f"run id prefix '{ref}' is ambiguous: {ids}")

    def _fold(self, run_id: str) -> tuple[dict[str, list[Any]], dict[str, dict[int, list[Any]]]]:
        """The last record of every node and item of a run, from its log."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT data FROM log WHERE run_id=? ORDER BY id", (run_id,)
            ).fetchall()
        nodes: dict[str, list[Any]] = {}
        items: dict[str, dict[int, list[Any]]] = {}
        for (text,) in rows:
            data = decode_value(text)
            for rec in data.get("n", ()):
                nodes[rec[N_ID]] = rec
            for rec in data.get("i", ()):
                items.setdefault(rec[I_NODE], {})[rec[I_IDX]] = rec
        return nodes, items

    def node_states(self, run_id: str, with_outputs: bool = True) -> dict[str, NodeState]:
        """Stored state of each node that started, in start order, with batch item counts."""
        nodes, items = self._fold(run_id)
        out: dict[str, NodeState] = {}
        for nid, rec in nodes.items():
            blob, note = _opt(rec, N_BLOB), _opt(rec, N_NOTE)
            st = NodeState(nid, rec[N_STATUS], rec[N_ACTION], rec[N_ERR], _secs(rec[N_START]),
                           _secs(rec[N_END]), rec[N_ATT], rec[N_ITEMS], note=note)  # fmt: skip
            if rec[N_STATUS] in ("running", "skipped"):
                st.has_outputs = False
            elif blob:
                if with_outputs:
                    st.has_outputs, st.outputs = self.read_blob(blob)
                    if not st.has_outputs:
                        st.note = "side file missing: outputs lost"
                else:
                    st.has_outputs = self.blob_path(blob).exists()
            else:
                st.has_outputs = note is None
                st.outputs = rec[N_OUT] if with_outputs else None
            out[nid] = st
        for nid, by_idx in items.items():
            if nid not in out:  # items of a batch node that never finished (killed mid-batch)
                out[nid] = NodeState(nid, "running", None, None, None, None, None, None)
            counts = out[nid].items
            for rec in by_idx.values():
                counts[rec[I_STATUS]] = counts.get(rec[I_STATUS], 0) + 1
        for nid, rec in nodes.items():
            # A completed batch's own outputs hold its counts (its items may not have been
            # written one by one: see CheckpointWriter._write).
            result = rec[N_OUT]
            if (
                rec[N_STATUS] == "success"
                and isinstance(result, dict)
                and "success_count" in result
            ):
                counts = {
                    "success": int(result.get("success_count") or 0),
                    "failed": int(result.get("error_count") or 0),
                }
                out[nid].items = {k: v for k, v in counts.items() if isinstance(v, int) and v}
        order = sorted(out, key=lambda n: (out[n].started is None, out[n].started or 0.0))
        return {n: out[n] for n in order}

    def item_results(self, run_id: str, node_id: str | None = None) -> dict[str, dict[int, Any]]:
        """Stored results of the successful items, by node and item index. Items whose result
        could not be stored (or whose side file is gone) are left out: they re-run."""
        _, items = self._fold(run_id)
        out: dict[str, dict[int, Any]] = {}
        for nid, by_idx in items.items():
            if node_id is not None and nid != node_id:
                continue
            results: dict[int, Any] = {}
            for idx in sorted(by_idx):
                rec = by_idx[idx]
                if rec[I_STATUS] != "success" or _opt(rec, I_NOTE) is not None:
                    continue
                blob = _opt(rec, I_BLOB)
                if blob:
                    found, value = self.read_blob(blob)
                    if found:
                        results[idx] = value
                else:
                    results[idx] = rec[I_RES]
            if results:
                out[nid] = results
        return out

    # -- pruning -----------------------------------------------------------------------------

    def prune(
        self,
        keep: int | None = None,
        older_than: float | timedelta | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Delete old runs; return their ids. `keep=N` keeps the N most recent runs;
        `older_than` (seconds or timedelta) deletes runs started before now - older_than. With
        both, a run is deleted only when it is beyond the newest N *and* older than the age.
        Runs whose process is still alive are never deleted. Unreferenced side files go too."""
        if keep is None and older_than is None:
            raise ValueError("prune needs keep or older_than")
        if isinstance(older_than, timedelta):
            older_than = older_than.total_seconds()
        runs = self.list_runs(limit=None)
        victims = []
        cutoff = time.time() - older_than if older_than is not None else None
        for i, run in enumerate(runs):
            if keep is not None and i < keep:
                continue
            if cutoff is not None and run.started >= cutoff:
                continue
            if run.alive:
                continue
            victims.append(run.id)
        if dry_run or not victims:
            return victims
        with self._lock, transaction(self._conn):
            for chunk in _chunks(victims, 500):
                marks = ",".join("?" * len(chunk))
                for table, col in (("log", "run_id"), ("blobs", "run_id"), ("runs", "id")):
                    self._conn.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", chunk)
            self._conn.execute(
                "DELETE FROM workflows WHERE hash NOT IN"
                " (SELECT workflow_hash FROM runs WHERE workflow_hash IS NOT NULL)"
            )
        self.collect_garbage()
        return victims

    def collect_garbage(self) -> int:
        """Delete side files no run references (older than the grace period). Returns the count."""
        if not self.blob_dir.is_dir():
            return 0
        with self._lock:
            used = {
                r[0]
                for r in self._conn.execute(
                    "SELECT digest FROM blobs UNION SELECT outputs_blob FROM runs"
                    " WHERE outputs_blob IS NOT NULL"
                )
            }
        removed = 0
        now = time.time()
        for path in self.blob_dir.glob("*/*"):
            name = path.name
            if not name.startswith(".") and name.split(".")[0] in used:
                continue
            try:
                if now - path.stat().st_mtime < BLOB_GRACE_SECONDS:
                    continue
                path.unlink()
                removed += 1
            except OSError:
                pass
        return removed


def rows_of(node_texts: list[str], item_texts: list[str]) -> list[str]:
    """Assemble encoded records into log rows of at most ~MAX_INLINE_BYTES each."""
    total = sum(map(len, node_texts)) + sum(map(len, item_texts))
    if total <= MAX_INLINE_BYTES:
        row = _row_text(node_texts, item_texts)
        if total * 4 <= MAX_INLINE_BYTES or _size(row) <= MAX_INLINE_BYTES:
            return [row]
    rows: list[str] = []
    cur_n: list[str] = []
    cur_i: list[str] = []
    size = 0
    for texts, cur in ((node_texts, cur_n), (item_texts, cur_i)):
        for t in texts:
            n = _size(t) + 1
            if size and size + n > MAX_INLINE_BYTES:
                rows.append(_row_text(cur_n, cur_i))
                cur_n.clear()
                cur_i.clear()
                size = 0
            cur.append(t)
            size += n
    if size or not rows:
        rows.append(_row_text(cur_n, cur_i))
    return rows


def _row_text(node_texts: list[str], item_texts: list[str]) -> str:
    return '{"n":[' + ",".join(node_texts) + '],"i":[' + ",".join(item_texts) + "]}"


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error). IMMEDIATE takes the write lock up front,
    so the busy timeout applies and two writers never deadlock on a lock upgrade."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    else:
        conn.execute("COMMIT")


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements (executescript would commit our open transaction)."""
    buf = ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            yield buf
            buf = ""


def _chunks(seq: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(seq), n):
        yield seq[i : i + n]


def _str(value: Any) -> str | None:
    return value if value is None or isinstance(value, str) else str(value)


def workflow_name(path: str | os.PathLike[str] | None, workflow: Any = None) -> str:
    """What a run records as its workflow: the absolute path of the file, else a name."""
    if path is not None:
        p = Path(path)
        return str(p.resolve()) if p.exists() else str(path)
    name = getattr(workflow, "name", None) or getattr(workflow, "id", None)
    return str(name) if name else "<workflow>"
