"""Shared by the trace writer and the summary: record events as small tuples, pair them into spans.

Listeners run on the event-loop thread, so `on_event` only appends a tuple holding the few fields
we need (ids, statuses, actions, counts, error text). Outputs, params and item values are never
kept, so nothing secret can leak into a trace or summary. Pairing happens once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fanflow.engine.events import (
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

# Internal record kinds next to the public event kinds.
RESUMED = "resumed"
HANDLED = "node_finished_handled"

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


@dataclass(slots=True)
class Span:
    """One leaf or node execution: a node run (`item is None`) or one batch item."""

    node: str
    item: int | None
    start: float
    end: float | None = None
    status: str = "incomplete"  # stays so when the run ended before the finish event arrived
    action: str | None = None
    attempts: Any = None
    error: Any = None
    batch: int | None = None  # item count, for the run of a batch node
    handled: bool = False  # failed, but an `error` edge took it (the run went on)
    retries: list[Retry] = field(default_factory=list)

    @property
    def duration(self) -> float:
        return 0.0 if self.end is None else self.end - self.start


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


class Recorder:
    """Append-only event buffer. `on_event` is a few attribute loads and one append."""

    __slots__ = ("finished", "records", "started")

    def __init__(self) -> None:
        self.records: list[tuple] = []
        self.started: Event | None = None  # RUN_STARTED, kept whole minus inputs (see meta)
        self.finished: Event | None = None

    def on_event(self, event: Event) -> None:
        kind = event.kind
        if kind in (NODE_FINISHED, ITEM_FINISHED):
            d = event.data
            if d.get("resumed"):  # replayed from an earlier run: nothing ran here
                self.records.append((RESUMED, event.t, event.node, None))
                return
            # A failure taken by an `error` edge is not a run failure: remember it was handled.
            if kind == NODE_FINISHED and d.get("handled"):
                kind = HANDLED
            self.records.append(
                (
                    kind,
                    event.t,
                    event.node,
                    event.item,
                    d.get("status"),
                    d.get("action"),
                    d.get("attempts"),
                    d.get("error"),
                )
            )
        elif kind == NODE_STARTED:
            if event.data.get("resumed"):
                return
            self.records.append((kind, event.t, event.node, None, event.data.get("batch")))
        elif kind == ITEM_STARTED:
            self.records.append((kind, event.t, event.node, event.item))
        elif kind == NODE_RETRY:
            d = event.data
            self.records.append(
                (
                    kind,
                    event.t,
                    event.node,
                    event.item,
                    d.get("attempt"),
                    d.get("error"),
                    d.get("wait"),
                )
            )
        elif kind == NODE_SKIPPED:
            self.records.append((kind, event.t, event.node, None, event.data.get("reason")))
        elif kind == RUN_STARTED:
            self.started = event
        elif kind == RUN_FINISHED:
            self.finished = event

    # -- what the run said about itself (ids and statuses only) -------------------------------

    def meta(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.started is not None:
            d = self.started.data
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
                out["deps"] = {k: list(v) for k, v in d["deps"].items()}
        if self.finished is not None:
            d = self.finished.data
            out["status"] = d.get("status")
            if d.get("failed_node") is not None:
                out["failed_node"] = d["failed_node"]
            if d.get("error") is not None:
                out["error"] = short_error(d["error"])
        return out

    def build(self) -> Built:
        """Pair starts with finishes. A node may run several times (loops), so each finish closes
        the oldest open run of that node; anything still open at the end stays `incomplete`."""
        records = self.records
        if self.started is not None:
            t0 = self.started.t
        elif records:
            t0 = records[0][1]
        else:
            t0 = 0.0
        t_end = t0
        if self.finished is not None:
            t_end = self.finished.t
        elif records:
            t_end = max(t0, records[-1][1])

        spans: list[Span] = []
        skips: list[Skip] = []
        resumed: list[Skip] = []
        open_nodes: dict[str, list[Span]] = {}
        open_items: dict[tuple[str, int | None], Span] = {}
        for rec in records:
            kind, t, node = rec[0], rec[1], rec[2]
            if kind == NODE_STARTED:
                span = Span(node, None, t, batch=rec[4])
                spans.append(span)
                open_nodes.setdefault(node, []).append(span)
            elif kind == ITEM_STARTED:
                span = Span(node, rec[3], t)
                spans.append(span)
                open_items[(node, rec[3])] = span
            elif kind in (NODE_FINISHED, HANDLED):
                runs = open_nodes.get(node)
                if not runs:
                    continue  # replayed on resume: it did not run in this process
                span = runs.pop(0)
                span.end, span.status, span.action, span.attempts, span.error = t, *rec[4:8]
                span.handled = kind == HANDLED
            elif kind == ITEM_FINISHED:
                span = open_items.pop((node, rec[3]), None)
                if span is None:
                    continue
                span.end, span.status, span.attempts, span.error = t, rec[4], rec[6], rec[7]
            elif kind == NODE_RETRY:
                item = rec[3]
                target = open_items.get((node, item)) if item is not None else None
                if target is None:
                    runs = open_nodes.get(node)
                    target = runs[-1] if runs else None
                if target is not None:
                    target.retries.append(Retry(t, rec[4], short_error(rec[5]), rec[6]))
            elif kind == NODE_SKIPPED:
                skips.append(Skip(node, t, rec[4]))
            elif kind == RESUMED:
                resumed.append(Skip(node, t, "resumed"))
        # Executions cut short (crash, interrupt without finish events) end with the run.
        for span in spans:
            if span.end is None:
                span.end = max(t_end, span.start)
            elif span.end > t_end:
                t_end = span.end
        return Built(spans, skips, t0, t_end, resumed)


def pack_lanes(spans: list[Span]) -> list[int]:
    """Interval packing: give each span (in start order) the lowest lane free at its start, so
    concurrent spans never share a lane and the lane count equals the peak concurrency."""
    import heapq

    order = sorted(range(len(spans)), key=lambda i: (spans[i].start, spans[i].end))
    lanes = [0] * len(spans)
    busy: list[tuple[float, int]] = []  # (end, lane)
    free: list[int] = []
    n_lanes = 0
    for i in order:
        s = spans[i]
        while busy and busy[0][0] <= s.start:
            heapq.heappush(free, heapq.heappop(busy)[1])
        if free:
            lane = heapq.heappop(free)
        else:
            lane = n_lanes
            n_lanes += 1
        lanes[i] = lane
        heapq.heappush(busy, (s.end if s.end is not None else s.start, lane))
    return lanes
