"""Shared by the trace writer and the summary: keep the events, pair them into spans at the end.

Listeners run on the event-loop thread, so `Recorder.on_event` is the bound `append` of a list:
no Python frame, no per-event tuple. The events keep the references the engine gave them
(outputs, item values) in memory until the recorder is dropped, but only ids, statuses,
actions, counts and error text are ever copied into a span, so nothing secret can reach a
trace or summary. Pairing happens once, in `build()`, with garbage collection paused.
"""

from __future__ import annotations

import heapq
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from fanflow._gc import gc_paused
from fanflow.events import (
    ITEM_FINISHED,
    ITEM_STARTED,
    NODE_FINISHED,
    NODE_RETRY,
    NODE_SKIPPED,
    NODE_STARTED,
    RUN_FINISHED,
    RUN_STARTED,
    Event,
)
from fanflow.status import RUNNING, Status

ERROR_CHARS = 500  # long tracebacks would bloat the trace; the head says what went wrong


def short_error(error: Any, limit: int = ERROR_CHARS) -> str | None:
    if error is None:
        return None
    text = str(error)
    return text if len(text) <= limit else text[: limit - 1] + "…"


@dataclass(slots=True)
class Retry:
    t: float
    attempt: Any
    error: str | None
    wait: Any


class Span(NamedTuple):
    """One leaf or node execution: a node run (`item is None`) or one batch item.

    A tuple, so `build()` makes one per execution at C speed and readers can unpack it."""

    node: str
    item: int | None
    start: float
    end: float  # a run cut short (no finish event) ends with the run, its status `running`
    status: str = RUNNING
    action: str | None = None
    attempts: Any = None
    error: Any = None
    batch: int | None = None  # item count, for the run of a batch node
    handled: bool = False  # failed, but an `error` edge took it (the run went on)
    retries: tuple[Retry, ...] = ()
    worker: str | None = None  # where it ran, when not on the driver's threads ("pid 123")
    cached: bool = False  # an llm call answered from the response cache (llm_usage.cached)

    @property
    def duration(self) -> float:
        return self.end - self.start


@dataclass(slots=True)
class Skip:
    node: str
    t: float
    reason: str | None


@dataclass
class Built:
    spans: list[Span]  # node runs and items, in start order
    skips: list[Skip]
    t0: float
    t_end: float
    resumed: list[Skip] = field(default_factory=list)  # completed in an earlier run, replayed


_new = tuple.__new__  # Span(...) without the Python-level __new__ of a NamedTuple


# A recorded event is a plain tuple of atomic values (str, number, bool, None): the garbage
# collector stops tracking such a tuple at its first collection, so a recording of 100,000
# events is never walked again and never triggers a full collection. (Keeping the Event
# objects, whose data dicts hold outputs and Status members, cost a 10,000-node chain about
# 7 µs per node in collections: the trace's whole overhead, nearly.) The shapes:
#   (kind, t, node, item, status, action, attempts, error, handled, worker, cached)  finished
#   (kind, t, node, item, batch)                                     node started (+ item)
#   (kind, t, node, item, attempt, error, wait)                      retry
#   (kind, t, node, None, reason)                                    skipped
#   (kind, t)                                                        run started / finished
# A resumed node's replayed events are recorded as RESUMED: (RESUMED, t, node, item).
Record = tuple[Any, ...]
RESUMED = "resumed"
_PLAIN: dict[Any, str] = {
    s: s.value for s in Status
}  # Status members are GC-tracked objects; their text is not


class Recorder:
    """The event buffer a trace and a summary share: `on_event` keeps each event as a small
    tuple of atomic values (above); `build()` pairs them into spans once, at the end."""

    __slots__ = ("_add", "_built", "_built_n", "_meta", "events", "finished", "started")

    def __init__(self) -> None:
        self.events: list[Record] = []
        self._add = self.events.append
        self.started: Event | None = None
        self.finished: Event | None = None
        self._built: Built | None = None
        self._meta: dict[str, Any] | None = None
        self._built_n = -1  # len(events) when _built and _meta were made

    def on_event(self, e: Event) -> None:
        kind, t, node, item, d = e
        if kind in (NODE_FINISHED, ITEM_FINISHED):
            if d.get("resumed"):
                self._add((RESUMED, t, node, item))
                return
            error = d.get("error")
            if error is not None and error.__class__ is not str:
                error = str(error)
            status = d.get("status")
            out = d.get("outputs") if kind == NODE_FINISHED else d.get("result")
            usage = out.get("llm_usage") if out.__class__ is dict else None
            cached = usage.__class__ is dict and usage.get("cached") is True
            self._add((kind, t, node, item, _PLAIN.get(status, status), d.get("action"),
                       d.get("attempts"), error, d.get("handled", False),
                       d.get("worker"), cached))  # fmt: skip
        elif kind in (NODE_STARTED, ITEM_STARTED):
            if not d:
                self._add((kind, t, node, item, None))
            elif not d.get("resumed"):
                self._add((kind, t, node, item, d.get("batch")))
        elif kind == NODE_RETRY:
            self._add((kind, t, node, item, d.get("attempt"), short_error(d.get("error")),
                       d.get("wait")))  # fmt: skip
        elif kind == NODE_SKIPPED:
            self._add((kind, t, node, None, d.get("reason")))
        elif kind in (RUN_STARTED, RUN_FINISHED):
            if kind == RUN_STARTED:
                self.started = self.started or e
            else:
                self.finished = e
            self._add((kind, t))

    def close(self) -> None:
        pass

    # -- what the run said about itself (ids and statuses only) -------------------------------

    def meta(self) -> dict[str, Any]:
        if self._meta is not None and self._built_n == len(self.events):
            return self._meta
        out: dict[str, Any] = {}
        started = self.started
        if started is not None:
            d = started.data
            for key in (
                "run_id",
                "workflow",
                "wall_start",
                "max_concurrent",
                "nodes",
                "batch_nodes",
            ):
                if d.get(key) is not None:
                    out[key] = d[key]
            if d.get("deps") is not None:
                out["deps"] = {k: sorted(v) for k, v in d["deps"].items()}
        finished = self.finished
        if finished is not None:
            d = finished.data
            out["status"] = d.get("status")
            if d.get("failed_node") is not None:
                out["failed_node"] = d["failed_node"]
            if d.get("error") is not None:
                out["error"] = short_error(d["error"])
        if self._built is not None and self._built_n == len(self.events):
            self._meta = out  # the run has finished: a trace and a summary read it once
        return out

    def build(self) -> Built:
        """Pair starts with finishes (see `build_spans`). Cached once the run has finished, so a
        trace and a summary sharing this recorder pair the events once."""
        n = len(self.events)
        if self._built is not None and self._built_n == n:
            return self._built
        with gc_paused():
            built = build_spans(self.events)
        if self.finished is not None:
            self._built, self._built_n = built, n
        return built


def build_spans(events: Sequence[Record]) -> Built:
    """Pair starts with finishes, records in emission (time) order. A node may run several
    times (loops), so each finish closes the oldest open run of that node; anything still open
    at the end ends with the run, status `running`."""
    spans: list[Any] = []  # a Span, or None while its run is open
    open_nodes: dict[str | None, tuple[int, float, Any]] = {}  # node → (index, start, batch)
    more_open: dict[str | None, list[tuple[int, float, Any]]] = {}  # a node's later open runs
    open_items: dict[tuple[str | None, int | None], tuple[int, float]] = {}
    orphans: list[tuple[tuple[str | None, int | None], tuple[int, float]]] = []
    retries: dict[int, list[Retry]] = {}
    skips: list[Skip] = []
    resumed: list[Skip] = []
    t0: float | None = None
    t_run_end: float | None = None
    new, add, span_cls = _new, spans.append, Span
    for e in events:
        kind = e[0]
        if kind == NODE_FINISHED:
            node = e[2]
            run = open_nodes.pop(node, None)
            if run is None:
                continue
            if more_open and node in more_open:
                _promote(node, open_nodes, more_open)
            i, start, batch = run
            spans[i] = new(span_cls, (node, None, start, e[1], e[4], e[5], e[6], e[7], batch,
                                      e[8], (), e[9], e[10]))  # fmt: skip
        elif kind == NODE_STARTED:
            node = e[2]
            run = (len(spans), e[1], e[4])
            if node in open_nodes:  # a second open run of the same node (rare)
                more_open.setdefault(node, []).append(run)
            else:
                open_nodes[node] = run
            add(None)
        elif kind == ITEM_FINISHED:
            item_run = open_items.pop((e[2], e[3]), None)
            if item_run is None:
                continue
            i, start = item_run
            spans[i] = new(span_cls, (e[2], e[3], start, e[1], e[4], None, e[6], e[7], None,
                                      False, (), e[9], e[10]))  # fmt: skip
        elif kind == ITEM_STARTED:
            item_key = (e[2], e[3])
            if item_key in open_items:  # started again before it finished: the first stays open
                orphans.append((item_key, open_items[item_key]))
            open_items[item_key] = (len(spans), e[1])
            add(None)
        elif kind == RESUMED:  # replayed from an earlier run: nothing ran here
            resumed.append(Skip(e[2] or "?", e[1], "resumed"))
        elif kind == NODE_RETRY:
            target: int | None = None
            if e[3] is not None:
                item_run = open_items.get((e[2], e[3]))
                target = item_run[0] if item_run is not None else None
            if target is None:
                later = more_open.get(e[2])
                node_run = later[-1] if later else open_nodes.get(e[2])
                target = node_run[0] if node_run is not None else None
            if target is not None:
                retries.setdefault(target, []).append(Retry(e[1], e[4], e[5], e[6]))
        elif kind == NODE_SKIPPED:
            skips.append(Skip(e[2] or "?", e[1], e[4]))
        elif kind == RUN_STARTED:
            if t0 is None:
                t0 = e[1]
        elif kind == RUN_FINISHED:
            t_run_end = e[1]
    if t0 is None:
        t0 = events[0][1] if events else 0.0
    # Events come in time order: the last one is the latest finish (or run_finished itself).
    t_end = max(t0 if t_run_end is None else t_run_end, events[-1][1] if events else t0)
    # Executions cut short (crash, interrupt without finish events) end with the run.
    for node, (i, start, batch) in open_nodes.items():
        spans[i] = Span(node or "?", None, start, max(t_end, start), RUNNING, batch=batch)
    for node, runs in more_open.items():
        for i, start, batch in runs:
            spans[i] = Span(node or "?", None, start, max(t_end, start), RUNNING, batch=batch)
    for (node, item), (i, start) in [*open_items.items(), *orphans]:
        spans[i] = Span(node or "?", item, start, max(t_end, start), RUNNING)
    for i, rs in retries.items():
        spans[i] = spans[i]._replace(retries=tuple(rs))
    return Built(spans, skips, t0, t_end, resumed)


def _promote(
    node: str | None,
    open_nodes: dict[str | None, tuple[int, float, Any]],
    more_open: dict[str | None, list[tuple[int, float, Any]]],
) -> None:
    later = more_open[node]
    open_nodes[node] = later.pop(0)
    if not later:
        del more_open[node]


def pack_lanes(spans: Sequence[Span]) -> list[int]:
    """Interval packing: give each span (in start order) the lowest lane free at its start, so
    concurrent spans never share a lane and the lane count equals the peak concurrency."""
    return pack_intervals([s.start for s in spans], [s.end for s in spans])


def sub_workflow_holders(node_runs: list[Span]) -> set[tuple[str, int | None]]:
    """(node, item) pairs whose run is a sub-workflow's: every prefix of a nested node id
    (`a[2]/b/c` → ("a", None), ("a", 2), ("a[2]/b", None))."""
    out: set[tuple[str, int | None]] = set()
    for node_id in {s[0] for s in node_runs if "/" in s[0]}:
        head = ""
        for part in node_id.split("/")[:-1]:
            name, item = part, None
            if part.endswith("]") and "[" in part:
                name, _, index = part[:-1].rpartition("[")
                item = int(index) if index.isdigit() else None
            out.add((head + name, None))
            if item is not None:
                out.add((head + name, item))
            head += part + "/"
    return out


def pack_intervals(starts: list[Any], ends: list[Any]) -> list[int]:
    """`pack_lanes` on parallel lists of starts and ends (floats, or int µs)."""
    n = len(starts)
    if starts == sorted(starts):  # what build() gives: no sort, ties keep their order
        order: Sequence[int] = range(n)
    else:
        order = sorted(range(n), key=lambda i: (starts[i], ends[i]))
    lanes = [0] * n
    busy: list[tuple[Any, int]] = []  # heap of (end, lane)
    free: list[int] = []  # heap of lanes
    n_lanes = 0
    heappush, heappop = heapq.heappush, heapq.heappop
    for i in order:
        s = starts[i]
        if not free and len(busy) == 1 and busy[0][0] <= s:
            lane = busy[0][1]  # one lane in use and it is free again: a chain, the usual case
            busy[0] = (ends[i], lane)
            lanes[i] = lane
            continue
        while busy and busy[0][0] <= s:
            heappush(free, heappop(busy)[1])
        if free:
            lane = heappop(free)
        else:
            lane = n_lanes
            n_lanes += 1
        lanes[i] = lane
        heappush(busy, (ends[i], lane))
    return lanes
