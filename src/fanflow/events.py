"""The one event stream. Progress, traces, summaries and checkpoints all subscribe to it.

Events are emitted on the event-loop thread, in order. Listeners must be quick: anything slow
(disk writes) is buffered by the listener itself.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any, NamedTuple, Protocol

# Event kinds (plain strings keep emission cheap and the stream easy to serialise).
RUN_STARTED = "run_started"  # data: run_id, workflow, inputs, nodes, wall_start, max_concurrent
NODE_STARTED = "node_started"  # node; data: batch (item count) when the node is a batch
NODE_FINISHED = "node_finished"  # node; data: status, action, outputs, error, attempts
NODE_SKIPPED = "node_skipped"  # node; dead path (no incoming edge fired)
NODE_RETRY = "node_retry"  # node, item?; data: attempt, error, wait
ITEM_STARTED = "item_started"  # node, item
ITEM_FINISHED = "item_finished"  # node, item; data: status, result, error, attempts, item
RUN_FINISHED = "run_finished"  # data: status, outputs, error, failed_node


class Event(NamedTuple):
    """One thing that happened. A tuple: the engine makes one per event at C speed."""

    kind: str
    t: float  # time.perf_counter() seconds; RUN_STARTED carries the matching wall clock
    node: str | None = None
    item: int | None = None
    data: dict[str, Any] = {}  # a shared default, never written to


_new_event = tuple.__new__  # Event(...) without the Python-level __new__ of a NamedTuple


class ListenerFailed(BaseException):
    """A listener raised. A BaseException, so no node's failure handling (`except Exception`)
    takes it for the node's own failure: it ends the whole run, from however deep a
    sub-workflow, and the run raises the listener's exception (`error`) to its caller."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


def _deliver(listeners: list[Listener], event: Event) -> None:
    try:
        for listener in listeners:
            listener.on_event(event)
    except ListenerFailed:
        raise
    except Exception as exc:
        raise ListenerFailed(exc) from exc


class Listener(Protocol):
    def on_event(self, event: Event) -> None: ...

    def close(self) -> None: ...


class EventBus:
    """Fan events out to listeners. With no listeners, emitting costs one attribute check."""

    def __init__(self, listeners: list[Listener] | None = None):
        self.listeners: list[Listener] = list(listeners or [])

    def add(self, listener: Listener) -> None:
        self.listeners.append(listener)

    def emit(
        self, kind: str, node: str | None = None, item: int | None = None, /, **data: Any
    ) -> None:
        listeners = self.listeners
        if not listeners:
            return
        _deliver(listeners, _new_event(Event, (kind, perf_counter(), node, item, data)))

    def emit_at(
        self,
        t: float,
        kind: str,
        node: str | None = None,
        item: int | None = None,
        /,
        **data: Any,
    ) -> None:
        """`emit` for something that happened at `t` (perf_counter), reported later: items a
        worker thread ran in one chunk are reported when the chunk comes back."""
        listeners = self.listeners
        if not listeners:
            return
        _deliver(listeners, _new_event(Event, (kind, t, node, item, data)))

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()
