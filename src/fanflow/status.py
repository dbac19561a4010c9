"""The one status vocabulary, shared by the engine, events, run store, summary, trace and CLI.

A `StrEnum`, so a status compares equal to its text (`Status.SUCCESS == "success"`) and
serialises as that text in JSON, SQLite and trace files.

Node (and batch item) statuses:

- ``pending``   not started (yet): waiting on its dependencies, or the run ended first
- ``running``   started, not finished
- ``success``   finished; its outputs are in the store
- ``failed``    raised; when an ``error`` edge took the failure, ``handled`` is set beside it
- ``skipped``   never ran because no incoming edge fired (dead path) or a loop did not reach it
- ``cancelled`` stopped before finishing: fail-fast, an interrupt, or a lost ``first`` race

Run statuses: ``running``, ``success``, ``failed``, ``cancelled`` (interrupted: SIGINT, or the
process died while the run store still said ``running``; such a run can be resumed).
"""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCESS = "success"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        """The node will not change any more (success, failed, skipped or cancelled)."""
        return self not in (Status.PENDING, Status.RUNNING)


PENDING = Status.PENDING
RUNNING = Status.RUNNING
SUCCESS = Status.SUCCESS
FAILED = Status.FAILED
SKIPPED = Status.SKIPPED
CANCELLED = Status.CANCELLED
