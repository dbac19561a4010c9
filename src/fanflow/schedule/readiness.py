"""Which components may start: the scheduler's whole state, pure and synchronous.

A component is one node, or a loop run as a sequential sub-flow. It waits for every incoming
edge and every component it reads (a template read without an edge) to resolve. Then:

- it **starts** if at least one incoming edge fired, or it has no incoming edges;
- otherwise it is **skipped** and its own edges die (dead-path elimination), which is how an
  or-join after an if/else runs exactly once.

A component that joins on the first input (merge `first`) starts as soon as one upstream fires or
succeeds; at that moment the upstream work that nothing else needs is **cancelled**: a component
is unneeded when every component that depends on it is the race itself or unneeded too. Work
another node still needs is never cancelled.

`finish(k, actions)` reports what component k did: the action each of its nodes took
(`{node: action}`), or None when it failed or was cancelled (no edge fires). It returns a `Step`:
what to start, what became skipped, what to cancel. No asyncio here: the driver turns steps into
tasks, and the unit tests drive this class by hand.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import dataclass, field

from fanflow.compile.topology import Topology

WAITING, STARTED, RESOLVED = 0, 1, 2


@dataclass(slots=True)
class Step:
    start: list[int] = field(default_factory=list)
    skip: list[int] = field(default_factory=list)
    cancel: list[int] = field(default_factory=list)


class Readiness:
    def __init__(self, topology: Topology) -> None:
        n = len(topology.waits_for)
        self.join_first = topology.join_first
        self.has_in_edges = topology.has_in_edges
        self.out = topology.out
        self.readers = topology.readers
        self.upstream = topology.upstream
        self.pending = list(topology.waits_for)
        self.fired = [False] * n
        self.state = [WAITING] * n
        self.lost = [False] * n  # cancelled as the loser of a race
        self.remaining = n

    @property
    def done(self) -> bool:
        return self.remaining == 0

    def initial(self) -> Step:
        step = Step()
        for k, pending in enumerate(self.pending):
            if pending == 0 and self.state[k] == WAITING:
                self._ready(k, step)
        return step

    def finish(self, k: int, actions: Mapping[str, str] | None) -> Step:
        """Component k ended (actions=None: it failed or was cancelled)."""
        step = Step()
        if self.state[k] == RESOLVED:  # a race loser whose cancellation already resolved it
            return step
        self._resolve(k, actions, step)
        return step

    # --- internals ----------------------------------------------------------------------------

    def _resolve(self, k: int, actions: Mapping[str, str] | None, step: Step) -> None:
        work: list[tuple[int, Mapping[str, str] | None]] = [(k, actions)]
        while work:
            k, actions = work.pop()
            self.state[k] = RESOLVED
            self.remaining -= 1
            for t, src, action in self.out[k]:
                fired = actions is not None and actions.get(src) == action
                if fired:
                    self.fired[t] = True
                self.pending[t] -= 1
                self._update(t, fired, step, work)
            for t in self.readers[k]:
                self.pending[t] -= 1
                self._update(t, actions is not None, step, work)

    def _update(
        self,
        t: int,
        upstream_ok: bool,
        step: Step,
        work: list[tuple[int, Mapping[str, str] | None]],
    ) -> None:
        if self.state[t] != WAITING:
            return
        if self.join_first[t] and upstream_ok:
            self._ready(t, step)
        elif self.pending[t] == 0:
            if self.has_in_edges[t] and not self.fired[t]:
                self.state[t] = STARTED  # resolved through `work` right after
                step.skip.append(t)
                work.append((t, None))
            else:
                self._ready(t, step)

    def _ready(self, k: int, step: Step) -> None:
        self.state[k] = STARTED
        step.start.append(k)
        if self.join_first[k]:
            self._cancel_unneeded(k, step)

    def _cancel_unneeded(self, race: int, step: Step) -> None:
        """Cancel the race's unfinished upstream that nothing else needs. Components are
        numbered in topological order, so taking the highest number first decides every
        dependent of a component before the component itself."""
        unneeded = {race}
        heap = [-u for u in self.upstream[race] if self.state[u] != RESOLVED]
        heapq.heapify(heap)
        seen = {-u for u in heap}
        while heap:
            u = -heapq.heappop(heap)
            if any(t not in unneeded for t, _, _ in self.out[u]) or any(
                t not in unneeded for t in self.readers[u]
            ):
                continue  # something else still needs u: it runs on
            unneeded.add(u)
            self.lost[u] = True
            self.state[u] = RESOLVED
            self.remaining -= 1
            step.cancel.append(u)
            for v in self.upstream[u]:
                if v not in seen and self.state[v] != RESOLVED:
                    seen.add(v)
                    heapq.heappush(heap, -v)
