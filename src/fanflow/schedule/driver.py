"""The scheduler's driver: turns readiness steps into work under one asyncio.TaskGroup.

Ready components wait in a FIFO queue taken by at most `budget` worker tasks (a worker waiting
for a resource limit does not count): a worker runs a component, reports it to the readiness
state, queues what became ready and takes the next, so a chain runs in one task. A loop component runs as a sequential sub-flow: from its entry, follow the edge of
each node's action while it stays inside the loop, at most `max_visits` times per node.

Failure: a node failure under fail-fast raises out of its worker, so the TaskGroup cancels every
other worker (subprocess groups are killed by the shell node) and nothing new starts. Under
`on_error: continue` the failure resolves the component (no edge fires) and independent branches
go on. An interrupt cancels the task running the driver. Any other exception (a bug, a listener
that raises) also cancels everything and is raised to the caller: nothing is left running.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping

from fanflow.compile.graph import Component
from fanflow.events import NODE_SKIPPED
from fanflow.execute.node import NodeFailed, run_node
from fanflow.execute.state import RunState
from fanflow.schedule.readiness import Readiness, Step
from fanflow.status import CANCELLED, FAILED, PENDING, RUNNING, SKIPPED


class Driver:
    def __init__(self, rs: RunState) -> None:
        compiled = rs.compiled
        self.rs = rs
        self.comps = compiled.graph.components
        self.fail_fast = compiled.workflow.on_error != "continue"
        self.max_visits = compiled.workflow.max_visits
        self.nodes = compiled.nodes
        self.ready = Readiness(compiled.topology)
        self.failures: list[NodeFailed] = []
        self.interrupted = False
        self._running: dict[int, asyncio.Task[None]] = {}  # component → the task running it
        self._queue: deque[int] = deque()  # ready components no worker has taken yet
        self._workers = 0
        self._max_workers = rs.budget.size  # more could only wait for a slot
        rs.on_limit_wait = self._grow
        self._group: asyncio.TaskGroup | None = None
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        self._task = asyncio.current_task()
        try:
            try:
                async with asyncio.TaskGroup() as group:
                    self._group = group
                    self._apply(self.ready.initial())
            except BaseExceptionGroup as eg:
                bugs = [e for e in eg.exceptions if not isinstance(e, NodeFailed)]
                if bugs:
                    raise bugs[0] from None
        except asyncio.CancelledError:
            if not self.interrupted:
                raise
            self._task.uncancel()  # type: ignore[union-attr]
        finally:
            if self.interrupted or self.failures:
                for record in self.rs.records.values():
                    if record.status in (PENDING, RUNNING):
                        record.status = CANCELLED

    def interrupt(self) -> None:
        """SIGINT: cancel everything, the same way fail-fast does."""
        if not self.interrupted and self._task is not None:
            self.interrupted = True
            self._task.cancel()

    async def _worker(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        queue, lost = self._queue, self.ready.lost
        try:
            while queue:
                k = queue.popleft()
                if lost[k]:
                    continue  # cancelled as a race loser before it started
                self._running[k] = task
                comp = self.comps[k]
                try:
                    if comp.is_loop:
                        actions = await self._run_loop(comp)
                    else:
                        actions = {comp.entry: await run_node(self.rs, self.nodes[comp.entry])}
                except asyncio.CancelledError:
                    if not lost[k]:
                        raise
                    task.uncancel()  # a race loser: readiness already resolved it; go on
                    continue
                except NodeFailed as failure:
                    self.failures.append(failure)
                    if self.fail_fast:
                        raise
                    actions = None
                finally:
                    del self._running[k]
                self._apply(self.ready.finish(k, actions))
        finally:
            self._workers -= 1

    def _apply(self, step: Step) -> None:
        """Mark what became skipped, cancel race losers, queue what became ready, and start
        workers for the queue (at most one per budget slot: more could only wait)."""
        records, emit = self.rs.records, self.rs.emit
        for k in step.skip:
            for node_id in self.comps[k].nodes:
                records[node_id].status = SKIPPED
                if emit is not None:
                    emit(NODE_SKIPPED, node_id, reason="no incoming edge fired")
        for k in step.cancel:
            task = self._running.get(k)
            if task is not None:
                task.cancel()
            else:
                for node_id in self.comps[k].nodes:
                    records[node_id].status = CANCELLED
        self._queue.extend(step.start)
        self._grow()

    def _grow(self) -> None:
        """Start workers while ready components outnumber the workers free to take them. A
        worker waiting for a resource limit holds no slot, so it does not count against the
        cap: unrelated work never queues behind it."""
        queue, rs = self._queue, self.rs
        free = self._workers - len(self._running)  # workers that will take from the queue
        while len(queue) > free and self._workers - rs.limit_waiters < self._max_workers:
            assert self._group is not None
            self._workers += 1
            free += 1
            self._group.create_task(self._worker())

    async def _run_loop(self, comp: Component) -> Mapping[str, str]:
        graph, nodes = self.rs.compiled.graph, self.nodes
        members = set(comp.nodes)
        visits: dict[str, int] = {}
        last: dict[str, str] = {}
        current: str | None = comp.entry
        while current is not None:
            visits[current] = visits.get(current, 0) + 1
            if visits[current] > self.max_visits:
                message = (
                    f"loop ran node '{current}' more than {self.max_visits} times; raise the "
                    "workflow's max_visits or make the loop's exit condition reachable"
                )
                record = self.rs.records[current]
                record.status, record.error = FAILED, message
                raise NodeFailed(current, message)
            action = last[current] = await run_node(self.rs, nodes[current])
            current = next(
                (
                    e.dst
                    for e in graph.out_edges[current]
                    if e.dst in members and e.action == action
                ),
                None,
            )
        for node_id in comp.nodes:
            if node_id not in visits:
                self.rs.records[node_id].status = SKIPPED
                if self.rs.emit is not None:
                    self.rs.emit(NODE_SKIPPED, node_id, reason="loop did not reach it")
        return last
