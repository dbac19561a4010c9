"""`--trace FILE`: the run as a Chrome Trace Event file (opens in Perfetto and chrome://tracing).

Layout: one process; node runs packed into lanes `lane 1..k` (concurrent spans never share a
lane, so the lane count is the peak node-level concurrency); each batch node's items packed into
lanes of their own (`work items 1..m`) sorted right after the node lanes in the order the batches
started. Skips, resumed nodes (completed by an earlier run) and retries are instant events;
`in_flight` is a counter track of leaf executions (node runs that are not batches, plus items).

Only ids, statuses, actions, counts and (truncated) error text go into the file: never inputs,
params, outputs or item values, which can hold secrets.
"""

from __future__ import annotations

import gc
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import accumulate
from pathlib import Path
from typing import Any

from fanflow.engine.events import Event
from fanflow.observe._spans import Built, Recorder, Span, pack_lanes, short_error

PID = 1
COUNTER_MAX_SAMPLES = 4000  # beyond this the in-flight track is downsampled
SKIP_LANE_NAME = "skipped"
RESUMED_LANE_NAME = "resumed"


def _us(t: float, t0: float) -> int:
    # Whole µs relative to run start: the format's unit, and ints encode much faster than floats.
    # Rounding is monotonic, so spans that did not overlap still do not after rounding.
    return round((t - t0) * 1e6)


@contextmanager
def _gc_paused() -> Iterator[None]:
    # Pairing and formatting allocate a few objects per span; the collections that would
    # trigger find nothing to free (nothing here is cyclic).
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class TraceWriter:
    """Listener buffering events in memory; `close()` writes the trace to `path` (if given)."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else None
        self._rec = Recorder()
        self._text: str | None = None
        self.error: str | None = None  # set when close() could not write the file
        self.on_event = self._rec.on_event  # bound once: the hot path is a single append

    @property
    def recorder(self) -> Recorder:
        return self._rec

    def on_event(self, event: Event) -> None:  # replaced per instance in __init__
        self._rec.on_event(event)

    def close(self) -> None:
        if self.path is None:
            return
        text = self.text()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text(text, encoding="utf-8")
            os.replace(tmp, self.path)  # a reader never sees half a file
        except OSError as exc:
            # The run itself is done and its result stands; say why the trace is missing.
            self.error = f"cannot write trace {self.path}: {exc.strerror or exc}"
            print(f"warning: {self.error}", file=sys.stderr)

    def text(self) -> str:
        """The trace as JSON text (what `close()` writes). Cached once the run has finished."""
        if self._text is not None:
            return self._text
        with _gc_paused():
            text = trace_text(self._rec.build(), self._rec.meta())
        if self._rec.finished is not None:
            self._text = text
        return text

    def to_dict(self) -> dict[str, Any]:
        """The trace as a dict, e.g. for `write_timeline`."""
        return json.loads(self.text())


def _span_args(span: Span) -> dict[str, Any]:
    # Defaults (action "default", a single attempt) are left out: less to write and to read.
    args: dict[str, Any] = {"status": span.status}
    if span.item is not None:
        args["item"] = span.item
    if span.action is not None and span.action != "default":
        args["action"] = span.action
    if span.batch is not None:
        args["items"] = span.batch
    if span.attempts is not None and span.attempts != 1:
        args["attempts"] = span.attempts
    if span.retries:
        args["retries"] = len(span.retries)
    if span.handled:
        args["handled"] = True  # taken by an `error` edge; the run went on
    if span.error is not None:
        args["error"] = short_error(span.error)
    return args


def build_trace(built: Built, meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(trace_text(built, meta))


def trace_text(built: Built, meta: dict[str, Any]) -> str:
    """The trace file's text, one event per line. Spans and counter samples — nearly all of a
    big trace — are formatted straight to JSON text with cached pieces (about 3× faster than
    building dicts and encoding them); the rare events go through the encoder."""
    enc = _ENCODER.encode
    t0 = built.t0
    node_spans = [s for s in built.spans if s.item is None]
    item_spans: dict[str, list[Span]] = {}
    for s in built.spans:
        if s.item is not None:
            item_spans.setdefault(s.node, []).append(s)

    lines: list[str] = []
    add = lines.append
    workflow = meta.get("workflow")
    name = f"fanflow {workflow}" if workflow else "fanflow"
    add(enc({"ph": "M", "name": "process_name", "pid": PID, "tid": 0, "args": {"name": name}}))

    def lane_meta(tid: int, lane_name: str, sort: int) -> None:
        add(enc({"ph": "M", "name": "thread_name", "pid": PID, "tid": tid,
                 "args": {"name": lane_name}}))  # fmt: skip
        add(enc({"ph": "M", "name": "thread_sort_index", "pid": PID, "tid": tid,
                 "args": {"sort_index": sort}}))  # fmt: skip

    # tid of each span (by position in built.spans); node lanes are 1..k, item lanes follow.
    tid_of: dict[int, int] = {}
    node_lanes = pack_lanes(node_spans)
    for span, lane in zip(node_spans, node_lanes, strict=True):
        tid_of[id(span)] = lane + 1
    n_node_lanes = max(node_lanes, default=-1) + 1
    for lane in range(n_node_lanes):
        lane_meta(lane + 1, f"lane {lane + 1}", lane + 1)
    next_tid = n_node_lanes + 1
    # Item lanes grouped per batch node, batches in the order they started.
    for node, items in sorted(item_spans.items(), key=lambda kv: kv[1][0].start):
        lanes = pack_lanes(items)
        for span, lane in zip(items, lanes, strict=True):
            tid_of[id(span)] = next_tid + lane
        for lane in range(max(lanes) + 1):
            lane_meta(next_tid + lane, f"{node} items {lane + 1}", next_tid + lane)
        next_tid += max(lanes) + 1

    batch_nodes = set(item_spans)
    leaves: list[tuple[int, int]] = []  # (start, end) µs of leaf executions, for the counter
    name_json: dict[str, str] = {}  # node id → its JSON string, escaped once
    plain_args: dict[str, str] = {}  # status → args JSON, for spans with nothing else to say
    for span in built.spans:
        tid = tid_of[id(span)]
        node = span.node
        nj = name_json.get(node)
        if nj is None:
            nj = name_json[node] = f'"{node}"' if _PLAIN_ID.fullmatch(node) else enc(node)
        ts = round((span.start - t0) * 1e6)
        dur = round(((span.end if span.end is not None else span.start) - t0) * 1e6) - ts
        if span.item is not None or (span.batch is None and node not in batch_nodes):
            leaves.append((ts, ts + dur))  # a batch node's run is a container, not a leaf
        simple = (
            not span.retries
            and span.error is None
            and (span.action is None or span.action == "default")
            and (span.attempts is None or span.attempts == 1)
            and span.batch is None
            and not span.handled
            and isinstance(span.status, str)
        )
        if span.item is None:
            if simple:
                args = plain_args.get(span.status)
                if args is None:
                    args = plain_args[span.status] = enc({"status": span.status})
            else:
                args = enc(_span_args(span))
            add(
                f'{{"ph":"X","cat":"node","name":{nj},"pid":{PID},"tid":{tid},'
                f'"ts":{ts},"dur":{dur},"args":{args}}}'
            )
        else:
            item = int(span.item)
            if simple:
                args = plain_args.get(span.status)
                if args is None:
                    args = plain_args[span.status] = enc({"status": span.status})
                args = f'{args[:-1]},"item":{item}}}'
            else:
                args = enc(_span_args(span))
            add(
                f'{{"ph":"X","cat":"item","name":{nj[:-1]}[{item}]","pid":{PID},"tid":{tid},'
                f'"ts":{ts},"dur":{dur},"args":{args}}}'
            )
        for r in span.retries:
            rargs: dict[str, Any] = {"node": node, "attempt": r.attempt}
            if span.item is not None:
                rargs["item"] = span.item
            if isinstance(r.wait, int | float):
                rargs["wait_s"] = round(r.wait, 3)
            if r.error is not None:
                rargs["error"] = r.error
            where = node if span.item is None else f"{node}[{span.item}]"
            add(enc({"ph": "i", "s": "t", "cat": "retry", "name": f"retry {where}", "pid": PID,
                     "tid": tid, "ts": _us(r.t, t0), "args": rargs}))  # fmt: skip

    # Nodes that did not run here get instant events in lanes of their own.
    for marks, lane_name, cat in (
        (built.skips, SKIP_LANE_NAME, "skip"),
        (built.resumed, RESUMED_LANE_NAME, "resumed"),
    ):
        if not marks:
            continue
        tid = next_tid
        next_tid += 1
        lane_meta(tid, lane_name, tid)
        for sk in marks:
            margs = {"status": "skipped" if cat == "skip" else "resumed"}
            if sk.reason and cat == "skip":
                margs["reason"] = short_error(sk.reason, 200)  # type: ignore[assignment]
            add(enc({"ph": "i", "s": "t", "cat": cat, "name": sk.node, "pid": PID, "tid": tid,
                     "ts": _us(sk.t, t0), "args": margs}))  # fmt: skip

    for ts, level in _in_flight_counter(leaves):
        add(f'{{"ph":"C","name":"in_flight","pid":{PID},"ts":{ts},"args":{{"in_flight":{level}}}}}')

    other = {k: v for k, v in meta.items() if k not in ("nodes",)}
    other["lanes"] = n_node_lanes
    other["duration_us"] = _us(built.t_end, t0)
    body = ",\n".join(lines)
    return f'{{"displayTimeUnit":"ms","otherData":{enc(other)},"traceEvents":[\n{body}\n]}}\n'


_PLAIN_ID = re.compile(r"[A-Za-z0-9_.\-]+")  # needs no JSON escaping (the usual node id)
_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)


def _in_flight_counter(leaves: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """(ts, level) samples of how many leaf executions run at once, from leaf (start, end) µs.
    Only changes are kept; long runs are downsampled to at most COUNTER_MAX_SAMPLES."""
    if not leaves:
        return []
    # (t, -1) sorts before (t, +1): an end and a start at the same µs do not count as overlap.
    deltas = sorted([(s, 1) for s, _ in leaves] + [(e, -1) for _, e in leaves])
    levels = accumulate(d for _, d in deltas)
    points = list(dict(zip([t for t, _ in deltas], levels, strict=True)).items())  # last per µs
    if len(points) > COUNTER_MAX_SAMPLES:
        points = _downsample(points, COUNTER_MAX_SAMPLES // 2)
    samples: list[tuple[int, int]] = []
    last = None
    for ts, lv in points:
        if lv != last:
            samples.append((ts, lv))
            last = lv
    return samples


def _downsample(points: list[tuple[int, int]], buckets: int) -> list[tuple[int, int]]:
    """At most two samples per time bucket: the bucket's peak, then the level it ends on — a
    10,000-node chain toggling 0/1 every few µs becomes a readable track, and peaks survive."""
    origin = points[0][0]
    width = max((points[-1][0] - origin) / buckets, 1.0)
    out: list[tuple[int, int]] = []
    cur = None
    first_ts = peak = last_ts = last_lv = 0
    for ts, lv in points:
        b = (ts - origin) // width
        if b != cur:
            if cur is not None:
                out.append((first_ts, peak))
                if last_lv != peak:
                    out.append((last_ts, last_lv))
            cur, first_ts, peak = b, ts, lv
        elif lv > peak:
            peak = lv
        last_ts, last_lv = ts, lv
    out.append((first_ts, peak))
    if last_lv != peak:
        out.append((last_ts, last_lv))
    return out
