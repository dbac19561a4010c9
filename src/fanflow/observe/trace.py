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
import math
import os
import sys
from bisect import bisect_left
from collections.abc import Callable
from itertools import accumulate
from json.encoder import encode_basestring as quote
from pathlib import Path
from typing import Any

from fanflow._gc import gc_paused
from fanflow.events import Event
from fanflow.observe._spans import (
    Built,
    Recorder,
    Retry,
    Span,
    pack_intervals,
    short_error,
    sub_workflow_holders,
)
from fanflow.status import SKIPPED, SUCCESS

PID = 1
COUNTER_MAX_SAMPLES = 4000  # beyond this the in-flight track is downsampled
SKIP_LANE_NAME = "skipped"
RESUMED_LANE_NAME = "resumed"


def _us(t: float, t0: float) -> int:
    # Whole µs relative to run start: the format's unit, and ints encode much faster than floats.
    # Rounding is monotonic, so spans that did not overlap still do not after rounding.
    return round((t - t0) * 1e6)


class TraceWriter:
    """Listener buffering events in memory; `close()` writes the trace to `path` (if given)."""

    on_event: Callable[[Event], None]  # the recorder's list.append: the hot path is one append

    def __init__(self, path: str | os.PathLike[str] | None = None):
        self.path = Path(path) if path is not None else None
        self._rec = Recorder()
        self._text: str | None = None
        self.error: str | None = None  # set when close() could not write the file
        self.on_event = self._rec.on_event

    @property
    def recorder(self) -> Recorder:
        return self._rec

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
        built = self._rec.build()
        with gc_paused():
            text = trace_text(built, self._rec.meta())
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
    if span.worker is not None:
        args["worker"] = span.worker  # a worker process or Dask worker ran it
    if span.handled:
        args["handled"] = True  # taken by an `error` edge; the run went on
    if span.cached:
        args["cached"] = True  # an llm call answered from the response cache
    if span.error is not None:
        args["error"] = short_error(span.error)
    return args


def _take_nested(
    node_spans: list[Span],
    item_spans: dict[str, list[Span]],
    holders: set[tuple[str, int | None]],
    groups: dict[str, list[Span]],
) -> tuple[list[Span], dict[str, list[Span]]]:
    """Move sub-workflow spans out of the node and item lanes into `groups`, keyed by the run
    of the child they belong to: a child node `each[3]/score` to `each[3]`, and the batch item
    that ran the child (`each` item 3) to the head of its own group."""
    top = []
    for s in node_spans:
        if "/" in s.node:
            groups.setdefault(s.node.rpartition("/")[0], []).append(s)
        else:
            top.append(s)
    kept: dict[str, list[Span]] = {}
    for node, items in item_spans.items():
        for s in items:
            if (node, s.item) in holders:
                groups.setdefault(f"{node}[{s.item}]", []).insert(0, s)
            elif "/" in node:
                groups.setdefault(node.rpartition("/")[0], []).append(s)
            else:
                kept.setdefault(node, []).append(s)
    return top, kept


def _nested_lines(
    groups: dict[str, list[Span]],
    holders: set[tuple[str, int | None]],
    t0: float,
    tid: int,
    add: Callable[[str], None],
    lane_meta: Callable[[int, str, int], None],
    keys: list[int],
    retried: list[tuple[tuple[Retry, ...], str, int | None, int]],
) -> int:
    """One group of lanes per child run, in the order they started: its batch item (when a
    batch ran it) on the first lane, the child's spans packed under it — a chain shares that
    lane, so Perfetto nests the stages in the item. Returns the next free tid."""
    enc = _ENCODER.encode
    for key, spans in sorted(groups.items(), key=lambda kv: min(s.start for s in kv[1])):
        head = (
            spans[0]
            if spans[0].item is not None and f"{spans[0].node}[{spans[0].item}]" == key
            else None
        )
        members = sorted(spans[1:] if head is not None else spans, key=lambda s: s.start)
        starts = [_us(s.start, t0) for s in members]
        ends = [_us(s.end, t0) for s in members]
        lanes = pack_intervals(starts, ends) if members else []
        for lane in range(max(lanes, default=0) + 1):
            lane_meta(tid + lane, key if lane == 0 else f"{key} {lane + 1}", tid + lane)
        if head is not None:
            ts, te = _us(head.start, t0), _us(head.end, t0)
            add(enc({"ph": "X", "cat": "item", "name": key, "pid": PID, "tid": tid, "ts": ts,
                     "dur": te - ts, "args": _span_args(head)}))  # fmt: skip
        for s, ts, te, lane in zip(members, starts, ends, lanes, strict=True):
            name = s.node if s.item is None else f"{s.node}[{s.item}]"
            cat = "node" if s.item is None else "item"
            add(enc({"ph": "X", "cat": cat, "name": name, "pid": PID, "tid": tid + lane,
                     "ts": ts, "dur": te - ts, "args": _span_args(s)}))  # fmt: skip
            if s.retries:
                retried.append((s.retries, s.node, s.item, tid + lane))
            if s.batch is None and (s.node, s.item) not in holders:  # a leaf: in flight
                keys += [ts * 2 + 1, te * 2]
        tid += max(lanes, default=0) + 1
    return tid


def build_trace(built: Built, meta: dict[str, Any]) -> dict[str, Any]:
    return json.loads(trace_text(built, meta))


def trace_text(built: Built, meta: dict[str, Any]) -> str:
    """The trace file's text, one event per line. Spans and counter samples — nearly all of a
    big trace — are formatted straight to JSON text with cached pieces (about 3× faster than
    building dicts and encoding them); the rare events go through the encoder."""
    enc = _ENCODER.encode
    t0 = built.t0
    spans = built.spans
    # Spans are read by position in the loops over all of them (a tuple index is much cheaper
    # than a NamedTuple attribute): 0 node, 1 item, 2 start, 3 end, 4 status, 5: the rest.
    node_spans = [s for s in spans if s[1] is None]
    item_spans: dict[str, list[Span]] = {}
    if len(node_spans) != len(spans):
        for s in spans:
            if s[1] is not None:
                item_spans.setdefault(s[0], []).append(s)

    # Sub-workflows: their spans go to lanes of their own, one group per run of a child
    # (`each[3]`), laid out after the batch lanes (see _nested_lines).
    holders = sub_workflow_holders(node_spans)
    groups: dict[str, list[Span]] = {}
    if holders:
        node_spans, item_spans = _take_nested(node_spans, item_spans, holders, groups)

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

    # Whole µs from the run start; lanes packed on those, so what the file shows never overlaps.
    starts = [round((s[2] - t0) * 1e6) for s in node_spans]
    ends = [round((s[3] - t0) * 1e6) for s in node_spans]
    lanes = pack_intervals(starts, ends)  # node lanes are tids 1..k, item lanes follow
    n_node_lanes = max(lanes, default=-1) + 1
    for lane in range(n_node_lanes):
        lane_meta(lane + 1, f"lane {lane + 1}", lane + 1)

    tid_ts = [f',"pid":{PID},"tid":{lane + 1},"ts":' for lane in range(n_node_lanes)]
    # Nearly every span has only a status to say: its args are one cached JSON text per status,
    # and its line is formatted in a comprehension. The others go through `_span_args`.
    plain = {st: enc({"status": st}) for st in {s[4] for s in spans}}
    args: list[str | None] = [
        plain[s[4]] if s[5:] == _PLAIN_NODE_TAIL else None for s in node_spans
    ]
    retried: list[tuple[tuple[Retry, ...], str, int | None, int]] = []
    for i, arg in enumerate(args) if None in args else ():
        if arg is None:
            span = node_spans[i]
            args[i] = enc(_span_args(span))
            if span.retries:
                retried.append((span.retries, span.node, None, lanes[i] + 1))
    lines += [
        f'{_NODE_HEAD}{quote(s[0])}{tid_ts[lane]}{ts},"dur":{te - ts},"args":{arg}}}'
        for s, ts, te, lane, arg in zip(node_spans, starts, ends, lanes, args, strict=True)
    ]
    # Leaf starts (2·µs + 1) and ends (2·µs), for the in-flight counter; a batch node's own run
    # is a container, not a leaf.
    if item_spans or any(s.batch is not None for s in node_spans):
        leaf = [s[8] is None and s[0] not in item_spans for s in node_spans]
        keys = [ts * 2 + 1 for ts, is_leaf in zip(starts, leaf, strict=True) if is_leaf]
        keys += [te * 2 for te, is_leaf in zip(ends, leaf, strict=True) if is_leaf]
    else:
        keys = [ts * 2 + 1 for ts in starts]
        keys += [te * 2 for te in ends]

    # Item lanes grouped per batch node, batches in the order they started.
    next_tid = n_node_lanes + 1
    for node, items in sorted(item_spans.items(), key=lambda kv: kv[1][0].start):
        starts = [round((s[2] - t0) * 1e6) for s in items]
        ends = [round((s[3] - t0) * 1e6) for s in items]
        lanes = pack_intervals(starts, ends)
        n_lanes = max(lanes) + 1
        for lane in range(n_lanes):
            lane_meta(next_tid + lane, f"{node} items {lane + 1}", next_tid + lane)
        head = f'{{"ph":"X","cat":"item","name":{quote(node)[:-1]}['  # "name[3]"
        tids = [f'"pid":{PID},"tid":{next_tid + lane},"ts":' for lane in range(n_lanes)]
        open_args = {st: text[:-1] + ',"item":' for st, text in plain.items()}
        args = [f"{open_args[s[4]]}{s[1]}}}" if s[5:] == _PLAIN_ITEM_TAIL else None for s in items]
        for i, arg in enumerate(args) if None in args else ():
            if arg is None:
                span = items[i]
                args[i] = enc(_span_args(span))
                if span.retries:
                    retried.append((span.retries, node, span.item, next_tid + lanes[i]))
        lines += [
            f'{head}{s[1]}]",{tids[lane]}{ts},"dur":{te - ts},"args":{arg}}}'
            for s, ts, te, lane, arg in zip(items, starts, ends, lanes, args, strict=True)
        ]
        keys += [ts * 2 + 1 for ts in starts]
        keys += [te * 2 for te in ends]
        next_tid += n_lanes
    if groups:
        next_tid = _nested_lines(groups, holders, t0, next_tid, add, lane_meta, keys, retried)
    for retries, node, item, tid in retried:
        _retry_lines(add, retries, node, item, tid, t0)

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
            margs: dict[str, Any] = {"status": SKIPPED}
            if cat == "resumed":  # completed by an earlier run
                margs = {"status": SUCCESS, "resumed": True}
            elif sk.reason:
                margs["reason"] = short_error(sk.reason, 200)
            add(enc({"ph": "i", "s": "t", "cat": cat, "name": sk.node, "pid": PID, "tid": tid,
                     "ts": _us(sk.t, t0), "args": margs}))  # fmt: skip

    for ts, level in _in_flight_counter(keys):
        add(f'{{"ph":"C","name":"in_flight","pid":{PID},"ts":{ts},"args":{{"in_flight":{level}}}}}')

    other = {k: v for k, v in meta.items() if k not in ("nodes",)}
    other["lanes"] = n_node_lanes
    other["duration_us"] = _us(built.t_end, t0)
    body = ",\n".join(lines)
    return f'{{"displayTimeUnit":"ms","otherData":{enc(other)},"traceEvents":[\n{body}\n]}}\n'


def _retry_lines(
    add: Callable[[str], None],
    retries: tuple[Retry, ...],
    node: str,
    item: int | None,
    tid: int,
    t0: float,
) -> None:
    where = node if item is None else f"{node}[{item}]"
    for r in retries:
        rargs: dict[str, Any] = {"node": node, "attempt": r.attempt}
        if item is not None:
            rargs["item"] = item
        if isinstance(r.wait, int | float):
            rargs["wait_s"] = round(r.wait, 3)
        if r.error is not None:
            rargs["error"] = r.error
        add(_ENCODER.encode({"ph": "i", "s": "t", "cat": "retry", "name": f"retry {where}",
                             "pid": PID, "tid": tid, "ts": _us(r.t, t0), "args": rargs}))  # fmt: skip


_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), default=str)
_NODE_HEAD = '{"ph":"X","cat":"node","name":'
# Span fields after the status when a span has nothing else to say (action, attempts, error,
# batch, handled, retries): what the engine emits for a plain success.
_PLAIN_NODE_TAIL = ("default", 1, None, None, False, (), None, False)
_PLAIN_ITEM_TAIL = (None, 1, None, None, False, (), None, False)


def _in_flight_counter(keys: list[int]) -> list[tuple[int, int]]:
    """(ts, level) samples of how many leaf executions run at once, from the leaves' start keys
    (2·µs + 1) and end keys (2·µs). Sorted, an end sorts before a start at the same µs, so
    back-to-back leaves do not count as overlap, and the last level of a µs is its highest.
    One sample per µs (the level it ends on), only changes kept; long runs are downsampled to
    at most COUNTER_MAX_SAMPLES."""
    if not keys:
        return []
    keys.sort()
    levels = list(accumulate([(k & 1) * 2 - 1 for k in keys]))
    if len(keys) > COUNTER_MAX_SAMPLES:
        points = _downsample(keys, levels, COUNTER_MAX_SAMPLES // 2 - 1)
    else:
        points = list(dict(zip([k >> 1 for k in keys], levels, strict=True)).items())
    samples: list[tuple[int, int]] = []
    last = None
    for point in points:
        if point[1] != last:
            samples.append(point)
            last = point[1]
    return samples


def _downsample(keys: list[int], levels: list[int], buckets: int) -> list[tuple[int, int]]:
    """At most two samples per time bucket: the bucket's peak, then the level it ends on — a
    10,000-node chain toggling 0/1 every few µs becomes a readable track, and peaks survive.
    A bucket never splits a µs, and is found by bisection and read with slices: the loop runs
    once per bucket, not once per point."""
    origin = keys[0] >> 1
    width = max(((keys[-1] >> 1) - origin) / buckets, 1.0)
    out: list[tuple[int, int]] = []
    i, n = 0, len(keys)
    while i < n:
        b = ((keys[i] >> 1) - origin) // width
        # keys of the µs before the bucket's (exclusive, fractional) upper bound
        j = bisect_left(keys, 2 * math.ceil(origin + (b + 1) * width), i + 1)
        peak = max(levels[i:j])
        out.append((keys[i] >> 1, peak))
        if levels[j - 1] != peak:
            out.append((keys[j - 1] >> 1, levels[j - 1]))
        i = j
    return out
