"""The dataflow scheduler (ours).

A component (one node, or a loop run as a sequential sub-flow) starts the moment every incoming
edge and every node it reads has resolved — no supersteps, so an uneven diamond finishes in its
critical-path time. When a component finishes, the edges whose action matches fire and the rest
die; a component whose incoming edges all resolved without one firing is skipped, and its own
edges die (dead-path elimination), so an or-join after an if/else runs exactly once.

Failure: fail-fast cancels every running component (subprocess groups are killed by the shell
node) and starts nothing new; an `error` edge handles a failure instead; the workflow-level
`on_error: continue` lets independent branches finish and skips what depends on the failure.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from fanflow import templates
from fanflow.engine import events as ev
from fanflow.engine.batch import coerce_items, run_batch
from fanflow.engine.context import RunContext
from fanflow.engine.events import EventBus
from fanflow.engine.execute import execute
from fanflow.engine.retry import NO_RETRY, RetryPolicy
from fanflow.engine.state import ResumeState
from fanflow.errors import NodeError
from fanflow.graph import Component, Graph
from fanflow.nodes.base import is_async_node


class NodeFailed(Exception):
    def __init__(self, node_id: str, message: str):
        super().__init__(message)
        self.node_id = node_id


@dataclass
class NodeRecord:
    status: str = "pending"  # pending|running|success|failed|skipped|cancelled
    action: str | None = None
    error: str | None = None
    started: float | None = None
    duration: float = 0.0
    attempts: int = 0
    handled: bool = False


@dataclass
class Runtime:
    """Everything a run's components share."""

    graph: Graph
    classes: dict[str, Any]
    is_async: dict[str, bool]
    inputs: dict[str, Any]
    ctx: RunContext
    budget: asyncio.Semaphore
    resume: ResumeState | None = None
    store: dict[str, dict[str, Any]] = field(default_factory=dict)
    records: dict[str, NodeRecord] = field(default_factory=dict)
    policies: dict[str, RetryPolicy] = field(default_factory=dict)
    node_limits: dict[str, list[str]] = field(default_factory=dict)  # node id → node:<type> keys

    @property
    def bus(self) -> EventBus:
        return self.ctx.bus

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self.ctx.loop

    @property
    def pool(self) -> Any:
        return self.ctx.pool

    def lookup(self, root: str) -> Any:
        """Scope for templates: inputs, then node outputs."""
        if root in self.inputs:
            return self.inputs[root]
        if root in self.store:
            return self.store[root]
        record = self.records.get(root)
        if record is not None:
            why = {
                "skipped": "was skipped (its branch was not taken)",
                "failed": "failed",
                "cancelled": "was cancelled",
            }.get(record.status, "has not run")
            raise templates.MissingValue(
                f"node '{root}' {why}, so ${{{root}…}} has no value; "
                f"use a fallback such as ${{{root}.key ?? other.key}}",
                root,
            )
        raise templates.MissingValue(f"'{root}' is not an input or node", root)

    def render_params(self, node_id: str, compiled: Any, extra: dict[str, Any] | None) -> Any:
        if node_id in self.graph.static_params and compiled is self.graph.params[node_id]:
            return dict(compiled)  # no templates: skip the walk (a fresh dict per execution)
        if extra:
            lookup = self.lookup

            def scope(root: str) -> Any:
                return extra[root] if root in extra else lookup(root)
        else:
            scope = self.lookup
        try:
            shell_params = getattr(self.classes[node_id], "shell_params", ())
            if shell_params and isinstance(compiled, dict):
                params = {}
                env: dict[str, str] = {}
                for key, value in compiled.items():
                    if key in shell_params:
                        params[key], found = templates.render_for_shell(
                            value, scope, f"FANFLOW_{key.upper()}_"
                        )
                        env.update(found)
                    else:
                        params[key] = templates.render(value, scope)
                params["__shell_env__"] = env
                return params
            return templates.render(compiled, scope) if compiled else {}
        except templates.MissingValue as exc:
            raise NodeError(f"cannot resolve a template: {exc}") from None


class Scheduler:
    def __init__(self, rt: Runtime, on_error: str = "fail_fast"):
        self.rt = rt
        self.graph = rt.graph
        self.comps: list[Component] = rt.graph.components
        self.on_error = on_error
        n = len(self.comps)
        self.pending = [len(c.in_edges) + len(c.data_deps) for c in self.comps]
        self.fired = [False] * n
        self.started = [False] * n
        self.join_any = [self._is_join_any(c) for c in self.comps]
        self.data_dependents: list[list[int]] = [[] for _ in range(n)]
        for c in self.comps:
            for d in c.data_deps:
                self.data_dependents[d].append(c.index)
        self.remaining = n
        self.tasks: dict[int, asyncio.Task[None]] = {}
        self.failure: NodeFailed | None = None
        self.failures: list[NodeFailed] = []
        self.interrupted = False
        self._done: asyncio.Future[None] | None = None

    def _is_join_any(self, comp: Component) -> bool:
        if comp.is_loop:
            return False
        spec = self.graph.specs[comp.entry]
        return spec.type == "merge" and spec.params.get("strategy") == "first"

    # --- driving ------------------------------------------------------------------------------

    async def run(self) -> None:
        self._done = self.rt.loop.create_future()
        ready = [c.index for c in self.comps if self.pending[c.index] == 0]
        for k in ready:
            self._start(k)
        if self.remaining == 0 and not self._done.done():
            self._done.set_result(None)
        try:
            await self._done
        except asyncio.CancelledError:
            self.interrupted = True
            raise
        finally:
            await self._cancel_all()

    def interrupt(self) -> None:
        """SIGINT: cancel the same way fail-fast does."""
        self.interrupted = True
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    async def _cancel_all(self) -> None:
        running = [t for t in self.tasks.values() if not t.done()]
        for task in running:
            task.cancel()
        if running:
            await asyncio.gather(*running, return_exceptions=True)
        for _node_id, record in self.rt.records.items():
            if record.status in ("pending", "running"):
                record.status = "cancelled"

    def _start(self, k: int) -> None:
        if self.started[k] or (self._done is not None and self._done.done()):
            return
        comp = self.comps[k]
        if comp.in_edges and not self.fired[k] and not self.join_any[k]:
            self._skip(k)
            return
        self.started[k] = True
        if self.join_any[k]:
            self._cancel_losers(k)
        self.tasks[k] = self.rt.loop.create_task(self._run_component(k))

    def _cancel_losers(self, k: int) -> None:
        """merge `first`: the first upstream to succeed wins; the others are cancelled."""
        comp = self.comps[k]
        upstream = {self.graph.comp_of[e.src] for e in comp.in_edges} | comp.data_deps
        for u in upstream:
            task = self.tasks.get(u)
            if task is not None and not task.done():
                task.cancel()

    async def _run_component(self, k: int) -> None:
        comp = self.comps[k]
        try:
            if comp.is_loop:
                actions = await self._run_loop(comp)
            else:
                actions = {comp.entry: await self._run_node(comp.entry)}
        except asyncio.CancelledError:
            if self._done is not None and not self._done.done() and self.join_any_cancelled(k):
                self._resolve(k, {})  # a race loser: not a failure
                return
            raise
        except NodeFailed as exc:
            self.failures.append(exc)
            if self.on_error == "continue":
                self._resolve(k, {})
                return
            if self.failure is None:
                self.failure = exc
            if self._done is not None and not self._done.done():
                self._done.set_result(None)
            return
        finally:
            self.tasks.pop(k, None)
        self._resolve(k, actions)

    def join_any_cancelled(self, k: int) -> bool:
        comp = self.comps[k]
        for e in comp.out_edges:
            if self.join_any[self.graph.comp_of[e.dst]] and self.started[self.graph.comp_of[e.dst]]:
                return True
        return any(self.join_any[d] and self.started[d] for d in self.data_dependents[k])

    def _resolve(self, k: int, actions: dict[str, str]) -> None:
        """Mark component k finished; fire or kill its edges; start or skip what became ready."""
        work = [(k, actions)]
        while work:
            k, actions = work.pop()
            self.remaining -= 1
            comp = self.comps[k]
            succeeded = bool(actions)
            for e in comp.out_edges:
                t = self.graph.comp_of[e.dst]
                fired = actions.get(e.src) == e.action
                if fired:
                    self.fired[t] = True
                self.pending[t] -= 1
                self._maybe_ready(t, fired, work)
            for t in self.data_dependents[k]:
                self.pending[t] -= 1
                self._maybe_ready(t, succeeded, work)
        if self.remaining == 0 and self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _maybe_ready(self, t: int, upstream_ok: bool, work: list) -> None:
        if self.started[t]:
            return
        if self.join_any[t]:
            if upstream_ok:
                self._start(t)
            elif self.pending[t] == 0:
                self.started[t] = True
                self._mark_skipped(t)
                work.append((t, {}))
            return
        if self.pending[t] != 0:
            return
        comp = self.comps[t]
        if comp.in_edges and not self.fired[t]:
            self.started[t] = True
            self._mark_skipped(t)
            work.append((t, {}))
        else:
            self._start(t)

    def _skip(self, k: int) -> None:
        self.started[k] = True
        self._mark_skipped(k)
        self._resolve(k, {})

    def _mark_skipped(self, k: int) -> None:
        for node_id in self.comps[k].nodes:
            self.rt.records[node_id].status = "skipped"
            self.rt.bus.emit(ev.NODE_SKIPPED, node_id, reason="no incoming edge fired")

    # --- running ------------------------------------------------------------------------------

    async def _run_loop(self, comp: Component) -> dict[str, str]:
        """A loop runs as a sequential sub-flow from its entry, following actions, bounded."""
        members = set(comp.nodes)
        limit = self.graph.workflow.max_visits
        visits: dict[str, int] = {}
        last: dict[str, str] = {}
        current: str | None = comp.entry
        while current is not None:
            visits[current] = visits.get(current, 0) + 1
            if visits[current] > limit:
                raise NodeFailed(
                    current,
                    f"loop ran node '{current}' more than {limit} times; raise the workflow's "
                    "max_visits or make the loop's exit condition reachable",
                )
            action = await self._run_node(current)
            last[current] = action
            current = next(
                (e.dst for e in self.graph.out_edges[current]
                 if e.dst in members and e.action == action),
                None,
            )  # fmt: skip
        for node_id in comp.nodes:
            if node_id not in visits:
                self.rt.records[node_id].status = "skipped"
                self.rt.bus.emit(ev.NODE_SKIPPED, node_id, reason="loop did not reach it")
        return last

    async def _run_node(self, node_id: str) -> str:
        rt = self.rt
        record = rt.records[node_id]
        bus = rt.bus
        done = rt.resume.nodes.get(node_id) if rt.resume else None
        if done is not None and record.attempts == 0:
            # Resumed: replay the stored outputs and action as if the node had just run.
            rt.store[node_id] = done.outputs
            record.status, record.action, record.attempts = "success", done.action, 0
            bus.emit(ev.NODE_STARTED, node_id, resumed=True)
            bus.emit(ev.NODE_FINISHED, node_id, status="success", action=done.action,
                     outputs=done.outputs, error=None, attempts=0, resumed=True)  # fmt: skip
            return done.action
        spec = self.graph.specs[node_id]
        record.status = "running"
        record.started = t0 = time.perf_counter()
        try:
            if spec.batch is not None:
                items = coerce_items(
                    node_id, rt.render_params(node_id, self.graph.batch_items[node_id], None)
                )
                bus.emit(ev.NODE_STARTED, node_id, batch=len(items))
                outputs = await run_batch(rt, node_id, items)
                action, attempts = "default", 1
            else:
                bus.emit(ev.NODE_STARTED, node_id)
                if self.join_any[self.graph.comp_of[node_id]]:
                    params = self._render_race(node_id)
                else:
                    params = rt.render_params(node_id, self.graph.params[node_id], None)
                if spec.type == "merge":
                    params["__sources__"] = self._merge_sources(node_id, params)
                outputs, action, attempts = await execute(
                    rt, node_id, params, rt.policies.get(node_id, NO_RETRY)
                )
        except asyncio.CancelledError:
            record.status, record.duration = "cancelled", time.perf_counter() - t0
            bus.emit(ev.NODE_FINISHED, node_id, status="cancelled", action=None, outputs={},
                     error="cancelled", attempts=record.attempts)  # fmt: skip
            raise
        except Exception as exc:
            record.duration = time.perf_counter() - t0
            message = str(exc) or type(exc).__name__
            partial = getattr(exc, "outputs", None) or {}
            record.status, record.error = "failed", message
            record.attempts = getattr(exc, "attempts", 1)
            handled = any(e.action == "error" for e in self.graph.out_edges[node_id])
            if handled:
                record.handled, record.action = True, "error"
                rt.store[node_id] = {**partial, "error": message}
            elif partial:
                rt.store[node_id] = {**partial, "error": message}
            bus.emit(ev.NODE_FINISHED, node_id, status="failed", action="error" if handled else None,
                     outputs=rt.store.get(node_id, {}), error=message, attempts=record.attempts,
                     handled=handled)  # fmt: skip
            if handled:
                return "error"
            raise NodeFailed(node_id, message) from exc
        record.duration = time.perf_counter() - t0
        rt.store[node_id] = outputs
        record.status, record.action, record.attempts = "success", action, attempts
        bus.emit(ev.NODE_FINISHED, node_id, status="success", action=action, outputs=outputs,
                 error=None, attempts=attempts)  # fmt: skip
        return action

    def _render_race(self, node_id: str) -> dict[str, Any]:
        """merge `first`: render only the inputs whose node has finished (the winner)."""
        compiled = dict(self.graph.params[node_id])
        inputs = compiled.pop("inputs", None)
        params = self.rt.render_params(node_id, compiled, None)
        if isinstance(inputs, dict):
            kept: Any = {}
            for name, value in inputs.items():
                try:
                    kept[name] = templates.render(value, self.rt.lookup)
                except templates.MissingValue:
                    pass
        else:
            kept = []
            for value in inputs or []:
                try:
                    kept.append(templates.render(value, self.rt.lookup))
                except templates.MissingValue:
                    pass
        params["inputs"] = kept
        return params

    def _merge_sources(self, node_id: str, params: dict[str, Any]) -> Any:
        """For merge nodes: the node id each rendered input reads, in order."""
        compiled = self.graph.params[node_id]
        inputs = compiled.get("inputs") if isinstance(compiled, dict) else None

        def source(value: Any) -> str | None:
            refs = value.refs() if isinstance(value, templates.Template) else []
            return refs[0].root if refs else None

        def present(value: Any) -> bool:
            root = source(value)
            return root is None or root in self.rt.store or root in self.rt.inputs

        if isinstance(inputs, dict):
            return {k: source(v) for k, v in inputs.items() if k in params.get("inputs", {})}
        if isinstance(inputs, list):
            return [source(v) for v in inputs if present(v)]
        return None


def build_policies(graph: Graph, classes: dict[str, Any]) -> dict[str, RetryPolicy]:
    """Per node: the IR's `retry` wins; else PocketFlow's max_retries/wait; else the type default."""
    policies = {}
    for node_id, spec in graph.specs.items():
        cls = classes[node_id]
        if spec.retry is not None:
            r = spec.retry
            policies[node_id] = RetryPolicy(r.max_attempts, r.wait, r.backoff, r.max_wait)
            continue
        default = getattr(cls, "default_attempts", None)
        if default is not None and default > 1:
            policies[node_id] = RetryPolicy(default, 1.0, "exponential", 30.0, transient_only=True)
            continue
        if default is None:  # a foreign (PocketFlow) node: honour its own settings
            probe = cls()
            attempts = int(getattr(probe, "max_retries", 1) or 1)
            if attempts > 1:
                policies[node_id] = RetryPolicy(attempts, float(getattr(probe, "wait", 0) or 0))
    return policies


def classify(classes: dict[str, Any]) -> dict[str, bool]:
    return {node_id: is_async_node(cls) for node_id, cls in classes.items()}
