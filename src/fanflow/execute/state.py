"""What one run's executions share: inputs, the store of outputs, a record per node, the budget.

Each node writes only its own namespace (`store[node_id]`), so parallel branches never race on
writes. Templates read inputs first, then node outputs, through `lookup`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fanflow import templates
from fanflow.compile.compiled import CompiledWorkflow
from fanflow.events import EventBus
from fanflow.execute.budget import Budget
from fanflow.execute.context import RunContext
from fanflow.execute.resume_state import ResumeState
from fanflow.status import PENDING, RUNNING, Status


@dataclass(slots=True)
class NodeResult:
    """What one node did in a run: kept up to date while it runs, returned in RunResult.nodes."""

    status: Status = PENDING
    duration_ms: float = 0.0  # of its last run, from when its work started
    action: str | None = None
    error: str | None = None
    attempts: int = 0
    handled: bool = False  # failed, and an `error` edge took the failure

    def begin(self) -> None:
        """A run of the node starts (a loop runs a node again): nothing an earlier visit left
        (its error, that an error edge handled it, its action) describes this one."""
        self.status, self.error, self.handled, self.action = RUNNING, None, False, None


def _nothing() -> None:
    pass


_WHY = {
    "skipped": "was skipped (its branch was not taken)",
    "failed": "failed",
    "cancelled": "was cancelled",
}


class RunState:
    __slots__ = (
        "budget", "compiled", "ctx", "emit", "inputs", "limit_waiters", "on_limit_wait",
        "records", "resume", "store",
    )  # fmt: skip

    def __init__(
        self,
        compiled: CompiledWorkflow,
        inputs: dict[str, Any],
        ctx: RunContext,
        budget: Budget,
        resume: ResumeState | None,
    ) -> None:
        self.compiled = compiled
        self.inputs = inputs
        self.ctx = ctx
        self.budget = budget
        self.resume = resume
        self.store: dict[str, dict[str, Any]] = {}
        self.records = {node_id: NodeResult() for node_id in compiled.graph.ids}
        # Leaves waiting for a resource limit (they hold no budget slot), and whom to tell when
        # one starts waiting: the scheduler lets other work go ahead meanwhile.
        self.limit_waiters = 0
        self.on_limit_wait: Callable[[], None] = _nothing
        bus = ctx.bus
        # None when nobody listens: the hot path then skips building events altogether.
        self.emit: Callable[..., None] | None = bus.emit if bus.listeners else None

    @property
    def bus(self) -> EventBus:
        return self.ctx.bus

    def lookup(self, root: str) -> Any:
        """Scope for templates: inputs, then node outputs."""
        if root in self.inputs:
            return self.inputs[root]
        if root in self.store:
            return self.store[root]
        record = self.records.get(root)
        if record is not None:
            why = _WHY.get(record.status, "has not run")
            raise templates.MissingValue(
                f"node '{root}' {why}, so ${{{root}…}} has no value; "
                f"use a fallback such as ${{{root}.key ?? other.key}}",
                root,
            )
        raise templates.MissingValue(f"'{root}' is not an input or node", root)

    def declared_outputs(self) -> tuple[dict[str, Any], dict[str, str]]:
        """The workflow's declared outputs rendered from this run (None where a source has no
        value), and why each missing one has none."""
        outputs: dict[str, Any] = {}
        missing: dict[str, str] = {}
        for name, source in self.compiled.outputs.items():
            try:
                outputs[name] = templates.render(source, self.lookup)
            except templates.MissingValue as exc:
                outputs[name] = None
                missing[name] = str(exc)
        return outputs, missing

    def scope(self, extra: dict[str, Any]) -> Callable[[str], Any]:
        """`lookup` with extra names in front (a batch item's alias and `__index__`)."""
        lookup = self.lookup

        def scope(root: str) -> Any:
            return extra[root] if root in extra else lookup(root)

        return scope
