"""The run store: every run, node and batch item on the local disk (SQLite, stdlib), and the
checkpoint listener that fills it from the event stream without slowing the run down.

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

import base64
import hashlib
import json
import os
import secrets
import socket
import sqlite3
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from fanflow.engine import events as ev
from fanflow.errors import EXIT_INVALID, FanflowError

DB_NAME = "runs.db"
BLOB_DIR = "blobs"
SCHEMA_VERSION = 1
# A value whose JSON is larger than this goes to a content-addressed side file instead of the row.
MAX_INLINE_BYTES = 1 << 20
# The checkpoint thread commits what has queued up at most this often; on kill -9 at most about
# this much of the most recent completions is lost (it re-runs on resume).
FLUSH_INTERVAL = 0.02
# ...or sooner, once this many events are waiting (keeps transactions and memory bounded).
FLUSH_EVENTS = 2000
# Side files younger than this are never garbage-collected: a concurrent writer may be about to
# commit the row that references one.
BLOB_GRACE_SECONDS = 600.0
# How long a connection waits for another process's write lock before giving up.
BUSY_TIMEOUT_MS = 10_000

_BYTES_TAG = "__fanflow_bytes__"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id            TEXT PRIMARY KEY,
    workflow      TEXT NOT NULL,          -- absolute path of the workflow file (or its name)
    workflow_hash TEXT,
    node_hashes   TEXT,                   -- JSON {node_id: hash}, in workflow order
    inputs        TEXT,                   -- JSON
    inputs_hash   TEXT,
    status        TEXT NOT NULL,          -- running | success | failed | cancelled | interrupted
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

CREATE TABLE IF NOT EXISTS nodes (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    status        TEXT NOT NULL,          -- running | success | failed | cancelled | skipped
    action        TEXT,
    outputs       TEXT,                   -- JSON; NULL when in a side file or not storable
    outputs_blob  TEXT,                   -- sha256 of the side file holding the outputs
    note          TEXT,                   -- why outputs were not stored (then not resumable)
    error         TEXT,
    attempts      INTEGER,
    item_count    INTEGER,                -- batch nodes: number of items
    started       REAL,
    finished      REAL,
    PRIMARY KEY (run_id, node_id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS items (
    run_id        TEXT NOT NULL,
    node_id       TEXT NOT NULL,
    idx           INTEGER NOT NULL,
    status        TEXT NOT NULL,          -- success | failed | cancelled
    result        TEXT,
    result_blob   TEXT,
    note          TEXT,
    error         TEXT,
    attempts      INTEGER,
    finished      REAL,
    PRIMARY KEY (run_id, node_id, idx)
) WITHOUT ROWID;
"""


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
    return f"{stamp}-{secrets.token_hex(2)}"


def _json_default(obj: Any) -> Any:
    if isinstance(obj, bytes | bytearray | memoryview):
        return {_BYTES_TAG: base64.b64encode(bytes(obj)).decode("ascii")}
    raise TypeError(f"value of type {type(obj).__name__} is not JSON-serialisable")


def _bytes_hook(d: dict[str, Any]) -> Any:
    if len(d) == 1 and _BYTES_TAG in d:
        return base64.b64decode(d[_BYTES_TAG])
    return d


def encode_value(value: Any) -> str:
    """JSON text of a node's outputs or an item's result.

    Deliberate rules: JSON types round-trip exactly (NaN/Infinity included); bytes round-trip
    through a tagged base64 object; tuples come back as lists and non-string dict keys as strings
    (JSON's own conversions). Anything else (sets, datetimes, custom objects, cycles) raises
    NotStorable: the caller stores no value and marks the node/item as not resumable, so a resume
    re-runs it rather than replaying a lossy copy."""
    try:
        return json.dumps(value, default=_json_default, ensure_ascii=False, separators=(",", ":"))
    except (TypeError, ValueError, RecursionError) as exc:
        raise NotStorable(str(exc)) from None


def decode_value(text: str) -> Any:
    if _BYTES_TAG in text:
        return json.loads(text, object_hook=_bytes_hook)
    return json.loads(text)


# ---------------------------------------------------------------------------------------------
# Records


@dataclass
class RunRecord:
    id: str
    workflow: str
    workflow_hash: str | None
    node_hashes: dict[str, str]
    inputs: dict[str, Any]
    inputs_hash: str | None
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
        """A run still marked running whose process is gone was killed: report it interrupted."""
        if self.status == "running" and not self.alive:
            return "interrupted"
        return self.status

    @property
    def node_order(self) -> list[str]:
        return list(self.node_hashes)


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
    if host and host != socket.gethostname():
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


# ---------------------------------------------------------------------------------------------
# The store


class RunStore:
    """SQLite run store. Reads go through one connection owned by this object (usable from any
    thread, serialised by a lock); the checkpoint writer opens its own connection via `connect`."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = resolve_store_path(path)
        self.dir = self.path.parent
        self.blob_dir = self.dir / BLOB_DIR
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._conn = self.connect()
            self._init_schema()
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot open run store {self.path}: {exc}") from None
        self._lock = threading.RLock()

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

    def pack(self, value: Any) -> tuple[str | None, str | None, str | None]:
        """(inline JSON, side-file digest, note). Exactly one of the three is set."""
        try:
            text = encode_value(value)
        except NotStorable as exc:
            return None, None, f"not stored: {exc}"
        data = text.encode("utf-8")
        if len(data) <= MAX_INLINE_BYTES:
            return text, None, None
        digest = hashlib.sha256(data).hexdigest()
        try:
            self._write_blob(digest, data)
        except OSError as exc:
            return None, None, f"not stored: side file write failed: {exc}"
        return None, digest, None

    def _write_blob(self, digest: str, data: bytes) -> None:
        path = self.blob_path(digest)
        if path.exists():
            os.utime(path)  # refresh: keeps it out of a concurrent prune's grace window
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{digest}.{os.getpid()}.{threading.get_ident()}.tmp")
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())  # the row that names it may commit right after: be on disk
        os.replace(tmp, path)

    def unpack(self, text: str | None, digest: str | None) -> tuple[bool, Any]:
        """(found, value). A missing or unreadable side file reads as not found."""
        if text is not None:
            return True, decode_value(text)
        if digest:
            try:
                return True, decode_value(self.blob_path(digest).read_text("utf-8"))
            except (OSError, ValueError):
                return False, None
        return False, None

    # -- runs --------------------------------------------------------------------------------

    def create_run(
        self,
        run_id: str,
        *,
        workflow: str,
        workflow_hash: str | None = None,
        node_hashes: dict[str, str] | None = None,
        inputs: dict[str, Any] | None = None,
        inputs_hash: str | None = None,
        started: float | None = None,
    ) -> None:
        inputs_text, _, note = self.pack(inputs or {})
        if inputs_text is None:  # inputs come from the command line: always JSON in practice
            inputs_text = json.dumps({"__unstorable__": note})
        with self._lock, transaction(self._conn):
            self._conn.execute(
                "INSERT INTO runs (id, workflow, workflow_hash, node_hashes, inputs, inputs_hash,"
                " status, started, pid, host) VALUES (?,?,?,?,?,?,'running',?,?,?)",
                (
                    run_id,
                    workflow,
                    workflow_hash,
                    json.dumps(node_hashes or {}),
                    inputs_text,
                    inputs_hash,
                    started if started is not None else time.time(),
                    os.getpid(),
                    socket.gethostname(),
                ),
            )

    def begin_resume(
        self,
        run_id: str,
        *,
        workflow_hash: str | None,
        node_hashes: dict[str, str] | None,
        keep_nodes: Iterable[str],
        keep_items: dict[str, Iterable[int]],
    ) -> None:
        """Start another attempt of `run_id`: mark it running again and drop every stored node
        and item state that the attempt will not start from, so that a crash during the resumed
        attempt can never make a stale row look completed."""
        keep_nodes = list(keep_nodes)
        with self._lock, transaction(self._conn):
            cur = self._conn.execute(
                "UPDATE runs SET status='running', attempts=attempts+1, pid=?, host=?,"
                " workflow_hash=COALESCE(?, workflow_hash), node_hashes=COALESCE(?, node_hashes),"
                " finished=NULL, error=NULL, failed_node=NULL WHERE id=?",
                (
                    os.getpid(),
                    socket.gethostname(),
                    workflow_hash,
                    json.dumps(node_hashes) if node_hashes is not None else None,
                    run_id,
                ),
            )
            if cur.rowcount != 1:
                raise UnknownRun(f"no run with id {run_id}")
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep_nodes (node_id TEXT)")
            self._conn.execute("CREATE TEMP TABLE IF NOT EXISTS keep_items (node_id TEXT, idx INT)")
            self._conn.execute("DELETE FROM keep_nodes")
            self._conn.execute("DELETE FROM keep_items")
            self._conn.executemany("INSERT INTO keep_nodes VALUES (?)", [(n,) for n in keep_nodes])
            self._conn.executemany(
                "INSERT INTO keep_items VALUES (?, ?)",
                [(n, i) for n, idxs in keep_items.items() for i in idxs],
            )
            self._conn.execute(
                "DELETE FROM nodes WHERE run_id=?"
                " AND node_id NOT IN (SELECT node_id FROM keep_nodes)",
                (run_id,),
            )
            # Completed nodes keep all their item rows (history for `runs show`); a partial batch
            # keeps exactly the items it resumes from.
            self._conn.execute(
                "DELETE FROM items WHERE run_id=?"
                " AND node_id NOT IN (SELECT node_id FROM keep_nodes)"
                " AND (node_id, idx) NOT IN (SELECT node_id, idx FROM keep_items)",
                (run_id,),
            )

    def _row_to_run(self, row: sqlite3.Row | tuple, with_outputs: bool = False) -> RunRecord:
        (
            rid,
            workflow,
            whash,
            nhashes,
            inputs,
            ihash,
            status,
            started,
            finished,
            duration,
            error,
            failed_node,
            outputs,
            outputs_blob,
            attempts,
            pid,
            host,
        ) = row
        rec = RunRecord(
            id=rid,
            workflow=workflow,
            workflow_hash=whash,
            node_hashes=json.loads(nhashes) if nhashes else {},
            inputs=decode_value(inputs) if inputs else {},
            inputs_hash=ihash,
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
            rec.outputs = self.unpack(outputs, outputs_blob)[1]
        return rec

    _RUN_COLS = (
        "id, workflow, workflow_hash, node_hashes, inputs, inputs_hash, status, started, finished,"
        " duration, error, failed_node, outputs, outputs_blob, attempts, pid, host"
    )

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

    def node_states(self, run_id: str, with_outputs: bool = True) -> dict[str, NodeState]:
        """Stored state of each node that started, in start order, with batch item counts."""
        cols = "node_id, status, action, error, started, finished, attempts, item_count, note"
        if with_outputs:
            cols += ", outputs, outputs_blob"
        else:
            cols += ", outputs IS NOT NULL OR outputs_blob IS NOT NULL, NULL"
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {cols} FROM nodes WHERE run_id=?"
                " ORDER BY started IS NULL, started, node_id",
                (run_id,),
            ).fetchall()
            counts = self._conn.execute(
                "SELECT node_id, status, COUNT(*) FROM items WHERE run_id=?"
                " GROUP BY node_id, status",
                (run_id,),
            ).fetchall()
        out: dict[str, NodeState] = {}
        for nid, status, action, error, started, finished, attempts, n_items, note, o, blob in rows:
            st = NodeState(
                nid, status, action, error, started, finished, attempts, n_items, note=note
            )
            if with_outputs:
                st.has_outputs, st.outputs = self.unpack(o, blob)
                if (o is not None or blob) and not st.has_outputs:
                    st.note = "side file missing: outputs lost"
            else:
                st.has_outputs = bool(o)
            out[nid] = st
        for nid, status, n in counts:
            if nid not in out:  # items of a batch node that never finished (killed mid-batch)
                out[nid] = NodeState(nid, "running", None, None, None, None, None, None)
            out[nid].items[status] = n
        return out

    def item_results(self, run_id: str, node_id: str | None = None) -> dict[str, dict[int, Any]]:
        """Stored results of the successful items, by node and item index. Items whose result
        could not be stored (or whose side file is gone) are left out: they re-run."""
        sql = (
            "SELECT node_id, idx, result, result_blob FROM items"
            " WHERE run_id=? AND status='success'"
        )
        args: tuple[Any, ...] = (run_id,)
        if node_id is not None:
            sql += " AND node_id=?"
            args = (run_id, node_id)
        with self._lock:
            rows = self._conn.execute(sql + " ORDER BY node_id, idx", args).fetchall()
        out: dict[str, dict[int, Any]] = {}
        for nid, idx, text, blob in rows:
            found, value = self.unpack(text, blob)
            if found:
                out.setdefault(nid, {})[idx] = value
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
                for table, col in (("items", "run_id"), ("nodes", "run_id"), ("runs", "id")):
                    self._conn.execute(f"DELETE FROM {table} WHERE {col} IN ({marks})", chunk)
        self.collect_garbage()
        return victims

    def collect_garbage(self) -> int:
        """Delete side files no row references (older than the grace period). Returns the count."""
        if not self.blob_dir.is_dir():
            return 0
        with self._lock:
            used = {
                r[0]
                for r in self._conn.execute(
                    "SELECT outputs_blob FROM runs WHERE outputs_blob IS NOT NULL"
                    " UNION SELECT outputs_blob FROM nodes WHERE outputs_blob IS NOT NULL"
                    " UNION SELECT result_blob FROM items WHERE result_blob IS NOT NULL"
                )
            }
        removed = 0
        now = time.time()
        for path in self.blob_dir.glob("*/*"):
            name = path.name
            digest = name.lstrip(".").split(".")[0]
            if digest in used and not name.startswith("."):
                continue
            try:
                if now - path.stat().st_mtime < BLOB_GRACE_SECONDS:
                    continue
                path.unlink()
                removed += 1
            except OSError:
                pass
        return removed


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


# ---------------------------------------------------------------------------------------------
# The checkpoint listener

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

_NODE_STARTED_SQL = (
    "INSERT INTO nodes (run_id, node_id, status, started, item_count) VALUES (?,?,'running',?,?)"
    " ON CONFLICT(run_id, node_id) DO UPDATE SET status='running', started=excluded.started,"
    " item_count=excluded.item_count, finished=NULL, error=NULL"
)
_NODE_FINISHED_SQL = (
    "INSERT INTO nodes (run_id, node_id, status, action, outputs, outputs_blob, note, error,"
    " attempts, item_count, started, finished) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
    " ON CONFLICT(run_id, node_id) DO UPDATE SET status=excluded.status, action=excluded.action,"
    " outputs=excluded.outputs, outputs_blob=excluded.outputs_blob, note=excluded.note,"
    " error=excluded.error, attempts=excluded.attempts,"
    # a replayed node may finish without a fresh start event: keep what we knew
    " item_count=COALESCE(excluded.item_count, nodes.item_count),"
    " started=COALESCE(excluded.started, nodes.started), finished=excluded.finished"
)
_ITEM_SQL = (
    "INSERT OR REPLACE INTO items (run_id, node_id, idx, status, result, result_blob, note, error,"
    " attempts, finished) VALUES (?,?,?,?,?,?,?,?,?,?)"
)


class CheckpointWriter:
    """Event listener that persists the run as it happens.

    `on_event` (loop thread) only appends to a deque: O(1), no lock, no I/O. A background thread
    wakes every FLUSH_INTERVAL (or when FLUSH_EVENTS are waiting), drains the deque and writes
    everything in one transaction, so a 10,000-item batch costs a handful of commits, not 10,000.
    `close()` flushes the rest and records the final status.

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
        resume: Any = None,  # fanflow.engine.state.ResumeState
        flush_interval: float = FLUSH_INTERVAL,
        flush_events: int = FLUSH_EVENTS,
    ):
        self.store = store
        self.flush_interval = flush_interval
        self.flush_events = flush_events
        self.errors: list[str] = []
        self.final_status: str | None = None
        # perf_counter -> epoch seconds, so event times become wall-clock timestamps
        self._wall_offset = time.time() - time.perf_counter()
        self._segment_start = time.time()
        self._prev_duration = 0.0
        self._node_started: dict[str, float] = {}
        self._node_items: dict[str, int] = {}
        self._finished_event: ev.Event | None = None

        whash, nhashes, ihash = None, None, None
        if workflow is not None:
            from fanflow.store.resume import inputs_hash, workflow_hashes

            whash, nhashes = workflow_hashes(workflow)
            ihash = inputs_hash(inputs or {})
        # A fresh run without an explicit id follows the id the engine announces in run_started.
        self._adopt_id = resume is None and run_id is None
        if resume is not None:
            self.run_id = resume.run_id
            prev = store.get_run(self.run_id)
            self._prev_duration = prev.duration or 0.0
            store.begin_resume(
                self.run_id,
                workflow_hash=whash,
                node_hashes=nhashes,
                keep_nodes=resume.nodes,
                keep_items={n: list(items) for n, items in resume.items.items()},
            )
        else:
            wf = workflow_name(workflow_path, workflow)
            for _attempt in range(5):
                self.run_id = run_id or new_run_id()
                try:
                    store.create_run(
                        self.run_id,
                        workflow=wf,
                        workflow_hash=whash,
                        node_hashes=nhashes,
                        inputs=inputs,
                        inputs_hash=ihash,
                    )
                    break
                except sqlite3.IntegrityError:
                    if run_id is not None:
                        raise StoreError(f"run id {run_id} already exists") from None
            else:
                raise StoreError("could not allocate a unique run id")

        self._queue: deque[ev.Event] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="fanflow-checkpoint", daemon=True)
        self._thread.start()

    # -- loop thread ------------------------------------------------------------------------

    def on_event(self, event: ev.Event) -> None:
        if event.kind in _WANTED:
            q = self._queue
            q.append(event)
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

    # -- writer thread ----------------------------------------------------------------------

    def _loop(self) -> None:
        try:
            conn = self.store.connect()
        except sqlite3.Error as exc:
            self._report(f"cannot open the run store: {exc}")
            return
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
        q = self._queue
        if not q:
            return
        batch = []
        pop = q.popleft
        try:
            while True:
                batch.append(pop())
        except IndexError:
            pass
        try:
            self._write(conn, batch)
        except sqlite3.OperationalError as exc:
            # Most likely another process held the lock past the busy timeout: try once more on
            # the next tick rather than dropping the checkpoints.
            if getattr(self, "_retrying", False):
                self._report(f"checkpoint write failed: {exc}")
                self._retrying = False
            else:
                self._retrying = True
                q.extendleft(reversed(batch))
        except Exception as exc:  # a checkpoint problem must never break the run itself
            self._report(f"checkpoint write failed: {type(exc).__name__}: {exc}")

    def _write(self, conn: sqlite3.Connection, batch: list[ev.Event]) -> None:
        rid = self.run_id
        off = self._wall_offset
        pack = self.store.pack
        started_rows: dict[str, tuple] = {}
        finished_rows: dict[str, tuple] = {}
        item_rows: list[tuple] = []
        rename: tuple[str, str] | None = None
        for e in batch:
            kind = e.kind
            if e.data.get("resumed"):
                continue  # a node replayed from the store: its row is already there
            if kind == ev.ITEM_FINISHED:
                d = e.data
                status = d.get("status", "success")
                if status == "success":
                    text, blob, note = pack(d.get("result"))
                else:
                    text, blob, note = None, None, None
                err = d.get("error")
                item_rows.append(
                    (
                        rid,
                        e.node,
                        e.item,
                        status,
                        text,
                        blob,
                        note,
                        _str(err),
                        d.get("attempts"),
                        e.t + off,
                    )
                )
            elif kind == ev.NODE_FINISHED:
                d = e.data
                node = e.node
                status = d.get("status", "success")
                text, blob, note = pack(d.get("outputs") or {})
                started_rows.pop(node, None)
                finished_rows[node] = (
                    rid,
                    node,
                    status,
                    d.get("action"),
                    text,
                    blob,
                    note,
                    _str(d.get("error")),
                    d.get("attempts"),
                    self._node_items.get(node),
                    self._node_started.get(node),
                    e.t + off,
                )
            elif kind == ev.NODE_STARTED:
                t = e.t + off
                self._node_started[e.node] = t
                n = e.data.get("batch")
                if n is not None:
                    self._node_items[e.node] = n
                finished_rows.pop(e.node, None)
                started_rows[e.node] = (rid, e.node, t, n)
            elif kind == ev.NODE_SKIPPED:
                started_rows.pop(e.node, None)
                reason = e.data.get("reason")
                finished_rows[e.node] = (
                    rid, e.node, "skipped", None, None, None, _str(reason),
                    None, None, None, None, e.t + off,
                )  # fmt: skip
            elif kind == ev.RUN_STARTED:
                ws = e.data.get("wall_start")
                if isinstance(ws, int | float):
                    self._wall_offset = off = ws - e.t
                engine_id = e.data.get("run_id")
                if self._adopt_id and engine_id and engine_id != rid:
                    self._adopt_id = False
                    if conn.execute("SELECT 1 FROM runs WHERE id=?", (engine_id,)).fetchone():
                        self._report(f"run id {engine_id} already exists; stored as {rid}")
                    else:
                        rename = (rid, str(engine_id))
                        rid = str(engine_id)
            elif kind == ev.RUN_FINISHED:
                self._finished_event = e
        try:
            with transaction(conn):
                if rename is not None:
                    self._rename(conn, *rename)
                if started_rows:
                    conn.executemany(_NODE_STARTED_SQL, started_rows.values())
                if finished_rows:
                    conn.executemany(_NODE_FINISHED_SQL, finished_rows.values())
                if item_rows:
                    conn.executemany(_ITEM_SQL, item_rows)
        except BaseException:
            if rename is not None:
                self._adopt_id = True  # the retry renames again
            raise
        if rename is not None:
            self.run_id = rename[1]

    def _rename(self, conn: sqlite3.Connection, old: str, new: str) -> None:
        """The engine announced its own run id (the caller did not pass ours to the runner):
        adopt it, so that the id the user sees is the one the store knows."""
        for table, col in (("runs", "id"), ("nodes", "run_id"), ("items", "run_id")):
            conn.execute(f"UPDATE {table} SET {col}=? WHERE {col}=?", (new, old))

    def _finish(self, conn: sqlite3.Connection) -> None:
        e = self._finished_event
        now = time.time()
        if e is not None:
            d = e.data
            status = d.get("status") or "failed"
            error, failed_node = _str(d.get("error")), d.get("failed_node")
            text, blob, note = self.store.pack(d.get("outputs") or {})
        else:  # closed without run_finished: the run was torn down (Ctrl-C, crash in the engine)
            status, error, failed_node = "interrupted", "run did not finish", None
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


def _str(value: Any) -> str | None:
    return None if value is None else str(value)


def workflow_name(path: str | os.PathLike[str] | None, workflow: Any = None) -> str:
    """What a run records as its workflow: the absolute path of the file, else a name."""
    if path is not None:
        p = Path(path)
        return str(p.resolve()) if p.exists() else str(path)
    name = getattr(workflow, "name", None) or getattr(workflow, "id", None)
    return str(name) if name else "<workflow>"
