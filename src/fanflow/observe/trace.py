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

import json
import os
from pathlib import Path
from typing import Any

from fanflow.engine.events import Event
from fanflow.observe._spans import Built, Recorder, Span, pack_lanes, short_error

PID = 1
SKIP_LANE_NAME = "skipped"
RESUMED_LANE_NAME = "resumed"


def _us(t: float, t0: float) -> float:
    # Microseconds relative to run start; 3 decimals keeps ns resolution without float noise.
    return round((t - t0) * 1e6, 3)


class TraceWriter:
    """Listener buffering events in memory; `close()` writes the trace to `path` (if given)."""

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else None
        self._rec = Recorder()
        self._dict: dict[str, Any] | None = None
        self.on_event = self._rec.on_event  # bound once: the hot path is a single append

    def on_event(self, event: Event) -> None:  # replaced per instance in __init__
        self._rec.on_event(event)

    def close(self) -> None:
        if self.path is None:
            return
        data = self.to_dict()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            _dump(data, f)
        os.replace(tmp, self.path)  # a reader never sees half a file

    def to_dict(self) -> dict[str, Any]:
        """The trace as a dict (what `close()` writes). Cached once the run has finished."""
        if self._dict is not None:
            return self._dict
        data = build_trace(self._rec.build(), self._rec.meta())
        if self._rec.finished is not None:
            self._dict = data
        return data


def _dump(data: dict[str, Any], f: Any) -> None:
    # One event per line: valid JSON that still diffs and greps well, at json.dumps speed.
    dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode
    f.write('{"displayTimeUnit":"ms","otherData":')
    f.write(dumps(data.get("otherData", {})))
    f.write(',"traceEvents":[\n')
    f.write(",\n".join(map(dumps, data["traceEvents"])))
    f.write("\n]}\n")


def _span_args(span: Span) -> dict[str, Any]:
    args: dict[str, Any] = {"status": span.status}
    if span.item is not None:
        args["item"] = span.item
    if span.action is not None:
        args["action"] = span.action
    if span.batch is not None:
        args["items"] = span.batch
    if span.attempts is not None:
        args["attempts"] = span.attempts
    if span.retries:
        args["retries"] = len(span.retries)
    if span.handled:
        args["handled"] = True  # taken by an `error` edge; the run went on
    if span.error is not None:
        args["error"] = short_error(span.error)
    return args


def build_trace(built: Built, meta: dict[str, Any]) -> dict[str, Any]:
    t0 = built.t0
    node_spans = [s for s in built.spans if s.item is None]
    item_spans: dict[str, list[Span]] = {}
    for s in built.spans:
        if s.item is not None:
            item_spans.setdefault(s.node, []).append(s)

    events: list[dict[str, Any]] = []
    workflow = meta.get("workflow")
    events.append(
        {
            "ph": "M",
            "name": "process_name",
            "pid": PID,
            "tid": 0,
            "args": {"name": f"fanflow {workflow}" if workflow else "fanflow"},
        }
    )

    def lane_meta(tid: int, name: str, sort: int) -> None:
        events.append(
            {"ph": "M", "name": "thread_name", "pid": PID, "tid": tid, "args": {"name": name}}
        )
        events.append(
            {
                "ph": "M",
                "name": "thread_sort_index",
                "pid": PID,
                "tid": tid,
                "args": {"sort_index": sort},
            }
        )

    # tid of each span, filled in below; node lanes are tids 1..k, item lanes follow.
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

    for span in built.spans:
        tid = tid_of[id(span)]
        events.append(
            {
                "ph": "X",
                "cat": "node" if span.item is None else "item",
                "name": span.node if span.item is None else f"{span.node}[{span.item}]",
                "pid": PID,
                "tid": tid,
                "ts": _us(span.start, t0),
                "dur": _us(span.end or span.start, span.start),
                "args": _span_args(span),
            }
        )
        for r in span.retries:
            args: dict[str, Any] = {"node": span.node, "attempt": r.attempt}
            if span.item is not None:
                args["item"] = span.item
            if r.wait is not None:
                args["wait_s"] = r.wait
            if r.error is not None:
                args["error"] = r.error
            events.append(
                {
                    "ph": "i",
                    "s": "t",
                    "cat": "retry",
                    "name": f"retry {span.node}"
                    + (f"[{span.item}]" if span.item is not None else ""),
                    "pid": PID,
                    "tid": tid,
                    "ts": _us(r.t, t0),
                    "args": args,
                }
            )

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
            args = {"status": "skipped" if cat == "skip" else "resumed"}
            if sk.reason and cat == "skip":
                args["reason"] = short_error(sk.reason, 200)
            events.append(
                {
                    "ph": "i",
                    "s": "t",
                    "cat": cat,
                    "name": sk.node,
                    "pid": PID,
                    "tid": tid,
                    "ts": _us(sk.t, t0),
                    "args": args,
                }
            )

    events.extend(_in_flight_counter(built, t0))

    other = {k: v for k, v in meta.items() if k not in ("nodes",)}
    other["lanes"] = n_node_lanes
    other["duration_us"] = _us(built.t_end, t0)
    return {"traceEvents": events, "displayTimeUnit": "ms", "otherData": other}


def _in_flight_counter(built: Built, t0: float) -> list[dict[str, Any]]:
    """Counter samples of how many leaf executions run at once (batch node runs are containers:
    their items are the leaves). Samples at the same timestamp collapse to the last value."""
    batch_nodes = {s.node for s in built.spans if s.item is not None}
    deltas: list[tuple[float, int]] = []
    for s in built.spans:
        if s.item is None and (s.batch is not None or s.node in batch_nodes):
            continue
        deltas.append((s.start, 1))
        deltas.append((s.end if s.end is not None else s.start, -1))
    if not deltas:
        return []
    deltas.sort(key=lambda d: (d[0], d[1]))  # ends before starts at the same instant
    # Level after all changes at each timestamp, then only the samples where it changes.
    levels: list[tuple[float, int]] = []
    level = 0
    for t, d in deltas:
        level += d
        ts = _us(t, t0)
        if levels and levels[-1][0] == ts:
            levels[-1] = (ts, level)
        else:
            levels.append((ts, level))
    samples: list[dict[str, Any]] = []
    last = None
    for ts, lv in levels:
        if lv != last:
            samples.append(
                {"ph": "C", "name": "in_flight", "pid": PID, "ts": ts, "args": {"in_flight": lv}}
            )
            last = lv
    return samples
