"""Batch: the same node once per item. Items stream through a fixed set of workers (no task per
pending item); results land by index, so order is kept whatever finishes first.

Sync items on the thread executor go to the threads in chunks: one hop (a queue put, a thread
wake-up, a loop wake-up) per chunk instead of per item. A chunk grows toward ~2 ms of work
(at most 256 items) while items are fast, and is one item when they are slow, so blocking
items still get a thread each. Per-item events, order, `fail_fast` (the chunk stops at its
first failure) and cancellation (checked between items; a code node's running code is
interrupted) hold; a chunk holds one budget slot (its items run one after another).

Error policies: `fail_fast` stops the other workers at the first failed item (their running
items are cancelled); `continue` runs every item and reports the failures in `errors`. Either
way a batch whose every item failed is a failed node.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from fanflow import templates
from fanflow.compile.compiled import NodePlan
from fanflow.errors import NodeError
from fanflow.events import ITEM_FINISHED, ITEM_STARTED
from fanflow.execute.executors import ran_on
from fanflow.execute.leaf import _new_node, _sync, failure_message, run_leaf
from fanflow.execute.state import RunState
from fanflow.execute.threads import current_job
from fanflow.nodes.base import NodeShared
from fanflow.status import CANCELLED, FAILED, SUCCESS


class _StopBatch(Exception):
    """fail_fast: an item failed; the other workers stop."""


async def run_batch(rs: RunState, plan: NodePlan, items: list[Any]) -> dict[str, Any]:
    spec = plan.batch
    assert spec is not None
    n = len(items)
    results: list[Any] = [None] * n
    errors: list[dict[str, Any]] = []
    durations: list[float] = []
    alias = spec.as_
    fail_fast = spec.error_handling == "fail_fast"
    emit = rs.emit

    done = rs.resume.items.get(plan.id, {}) if rs.resume else {}
    for index, result in done.items():
        if 0 <= index < n:
            results[index] = result
    pending = iter([i for i in range(n) if i not in done] if done else range(n))
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        static, render, compiled = plan.static, plan.render, plan.params
        for i in pending:
            if stopped:
                return
            item = items[i]
            t0 = 0.0

            def on_start(i: int = i) -> None:
                nonlocal t0
                if t0 == 0.0:
                    t0 = time.perf_counter()
                    if emit is not None:
                        emit(ITEM_STARTED, plan.id, i)

            try:
                if static:
                    params = dict(compiled)
                else:
                    params = render(compiled, rs.scope({alias: item, "__index__": i}))
                outputs, _action, attempts = await run_leaf(rs, plan, params, i, on_start)
            except asyncio.CancelledError:
                if emit is not None and t0:
                    emit(ITEM_FINISHED, plan.id, i, status=CANCELLED, result=None,
                         error="cancelled", attempts=0, item=item)  # fmt: skip
                raise
            except Exception as exc:
                on_start()  # a template that cannot render fails the item before it starts
                durations.append(time.perf_counter() - t0)
                message = failure_message(exc)
                errors.append({"index": i, "item": item, "error": message})
                if emit is not None:
                    emit(ITEM_FINISHED, plan.id, i, status=FAILED, result=None, error=message,
                         attempts=getattr(exc, "attempts", 1), item=item,
                         **ran_on())  # fmt: skip
                if fail_fast:
                    stopped = True
                    raise _StopBatch(f"item [{i}]: {message}") from exc
                continue
            durations.append(time.perf_counter() - t0)
            results[i] = outputs
            if emit is not None:
                emit(ITEM_FINISHED, plan.id, i, status=SUCCESS, result=outputs, error=None,
                     attempts=attempts, item=item, **ran_on())  # fmt: skip

    gate = _Gate()

    async def chunk_worker() -> None:
        """Sync items on the threads, several per hop (module docstring): one budget slot and
        one thread job per chunk; events, results and errors per item, in order."""
        nonlocal stopped
        size = 1
        submit, budget = rs.ctx.threads.submit, rs.budget
        loop = asyncio.get_running_loop()
        while not stopped:
            while gate.fast and gate.inflight >= _FAST_INFLIGHT:
                await gate.park()
            if stopped:
                return
            chunk = list(itertools.islice(pending, size))
            if not chunk:
                gate.wake_all()  # the parked find nothing left either
                return
            gate.inflight += 1
            try:
                if not budget.take():
                    await budget.wait()
                # a chunk still running after _OPEN_AFTER holds slow items: let the others go
                timer = loop.call_later(_OPEN_AFTER, gate.open) if gate.fast else None
                try:
                    outcomes = await submit(_run_chunk, rs, plan, items, chunk, fail_fast)
                finally:
                    budget.release()
                    if timer is not None:
                        timer.cancel()
            finally:
                gate.inflight -= 1
                gate.wake_one()
            if outcomes:  # sized by the work's own time, not the wait for a thread
                spent = outcomes[-1][4] - outcomes[0][3]
                size = _next_size(size, spent, len(outcomes))
                fast = spent / len(outcomes) < _FAST_ITEM
                if gate.fast and not fast:
                    gate.wake_all()
                gate.fast = fast
            at = rs.ctx.bus.emit_at  # each item's own start and end, as the thread timed them
            for i, ok, value, t0, t1 in outcomes:
                durations.append(t1 - t0)
                item = items[i]
                if ok:
                    results[i] = value
                    if emit is not None:
                        at(t0, ITEM_STARTED, plan.id, i)
                        at(t1, ITEM_FINISHED, plan.id, i, status=SUCCESS, result=value,
                           error=None, attempts=1, item=item)  # fmt: skip
                    continue
                message = failure_message(value)
                errors.append({"index": i, "item": item, "error": message})
                if emit is not None:
                    at(t0, ITEM_STARTED, plan.id, i)
                    at(t1, ITEM_FINISHED, plan.id, i, status=FAILED, result=None,
                       error=message, attempts=1, item=item)  # fmt: skip
                if fail_fast:
                    stopped = True
                    raise _StopBatch(f"item [{i}]: {message}") from value

    started = time.perf_counter()
    workers = min(spec.max_concurrent if spec.parallel else 1, max(n - len(done), 1))
    failure: _StopBatch | None = None
    try:
        run = chunk_worker if _chunkable(rs, plan) else worker
        if workers == 1:
            await run()
        else:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(run())
    except _StopBatch as exc:
        failure = exc
    except BaseExceptionGroup as group_exc:
        others = [e for e in group_exc.exceptions if not isinstance(e, _StopBatch)]
        if others:
            raise others[0] from None
        failure = group_exc.exceptions[0]  # type: ignore[assignment]

    errors.sort(key=lambda e: e["index"])
    outputs = _contract(results, errors, durations, spec, time.perf_counter() - started)
    if failure is not None:
        raise NodeError(f"batch failed at {failure}", outputs=outputs)
    if n and outputs["error_count"] == n:
        raise NodeError(
            f"every item failed ({n}); first error: {errors[0]['error']}", outputs=outputs
        )
    return outputs


_CHUNK_TIME = 0.002  # seconds of work a chunk of fast items aims at
_CHUNK_MAX = 512
# Items faster than this are CPU work that more threads cannot speed up (the GIL): only
# _FAST_INFLIGHT chunks are then in flight (one runs while the loop handles the other's
# results); the other workers park until items turn slow or the batch ends. A batch starts
# that way, so its first items are timed without other threads competing for the GIL; a chunk
# still running after _OPEN_AFTER lets the others go at once (blocking items are not held back).
_FAST_ITEM = 0.0002
_FAST_INFLIGHT = 1
_OPEN_AFTER = 0.02  # a chunk running longer than this (fast chunks aim at 2 ms) opens the gate


class _Gate:
    """How many chunks of a batch are in flight, and the workers parked meanwhile."""

    __slots__ = ("fast", "inflight", "parked")

    def __init__(self) -> None:
        self.fast = True  # until measured: start with few threads, so the measure is fair
        self.inflight = 0
        self.parked: list[asyncio.Future[None]] = []

    async def park(self) -> None:
        future = asyncio.get_running_loop().create_future()
        self.parked.append(future)
        await future

    def wake_one(self) -> None:
        while self.parked:
            future = self.parked.pop()
            if not future.done():
                future.set_result(None)
                return

    def open(self) -> None:
        """Items are slow (blocking): every worker may run one."""
        self.fast = False
        self.wake_all()

    def wake_all(self) -> None:
        parked, self.parked = self.parked, []
        for future in parked:
            if not future.done():
                future.set_result(None)


def _chunkable(rs: RunState, plan: NodePlan) -> bool:
    """Items go to the threads in chunks when nothing per item needs the loop between them: a
    sync node on the thread executor, holding a slot, with no resource limits, no retries and
    no PocketFlow exec_fallback."""
    if plan.is_async or not plan.holds_slot or plan.policy.attempts != 1 or rs.ctx.limits:
        return False
    executors = rs.ctx.executors
    if executors is not None and executors.remote_for(rs.ctx.workflow, plan) is not None:
        return False
    impl = getattr(plan.cls, "exec_fallback", None)
    return getattr(impl, "__qualname__", "").split(".")[0] in ("Node", "BaseNode")


def _next_size(size: int, spent: float, ran: int) -> int:
    """The next chunk's size: ~_CHUNK_TIME of work, growing at most 4× a step; items slower
    than that (blocking I/O, heavy work) go one per hop, each on its own thread as before."""
    if ran == 0:
        return size
    per_item = spent / ran
    if per_item >= _CHUNK_TIME:
        return 1
    return max(1, min(_CHUNK_MAX, size * 4, int(_CHUNK_TIME / per_item)))


def _run_chunk(
    rs: RunState, plan: NodePlan, items: list[Any], chunk: list[int], fail_fast: bool
) -> list[tuple[int, bool, Any, float, float]]:
    """On a worker thread: each item's render → prep → exec → post, in order. Between items it
    stops if the job was cancelled; with fail_fast, after the first failure."""
    out: list[tuple[int, bool, Any, float, float]] = []
    static, render, compiled, alias = plan.static, plan.render, plan.params, plan.batch.as_  # type: ignore[union-attr]
    inputs, store, clock = rs.inputs, rs.store, time.perf_counter
    job = current_job()
    for i in chunk:
        if job is not None and job.cancelled():
            break
        t0 = clock()
        try:
            if static:
                params = dict(compiled)
            else:
                params = render(compiled, rs.scope({alias: items[i], "__index__": i}))
            own: dict[str, Any] = {}
            _sync(_new_node(rs, plan, params, i, 1), NodeShared(own, inputs, store), None)
            out.append((i, True, own, t0, clock()))
        except Exception as exc:
            exc.attempts = 1  # type: ignore[attr-defined]
            out.append((i, False, exc, t0, clock()))
            if fail_fast:
                break
    return out


def _contract(
    results: list[Any], errors: list[dict[str, Any]], durations: list[float], spec: Any,
    total: float,
) -> dict[str, Any]:  # fmt: skip
    failed = {e["index"] for e in errors}
    ms = [d * 1000 for d in durations]
    return {
        "results": [None if i in failed else r for i, r in enumerate(results)],
        "count": len(results),
        "success_count": len(results) - len(errors),
        "error_count": len(errors),
        "errors": errors,
        "batch_metadata": {
            "parallel": spec.parallel,
            "max_concurrent": spec.max_concurrent if spec.parallel else 1,
            "max_retries": spec.max_retries,
            "retry_wait": spec.retry_wait,
            "error_handling": spec.error_handling,
            "timing": {
                "total_ms": round(total * 1000, 3),
                "avg_item_ms": round(sum(ms) / len(ms), 3) if ms else 0.0,
                "min_item_ms": round(min(ms), 3) if ms else 0.0,
                "max_item_ms": round(max(ms), 3) if ms else 0.0,
            },
        },
    }


def coerce_items(node_id: str, value: Any) -> list[Any]:
    """Items must be a list; JSON text holding a list (e.g. shell stdout) is accepted, recognised
    as template path steps recognise it (`templates.json_text`)."""
    if isinstance(value, str):
        try:
            decoded = templates.json_text(value)
        except ValueError as exc:
            raise NodeError(
                f"batch items of node '{node_id}' are text that looks like JSON but does not"
                f" parse ({exc}), expected a list; print a JSON array, e.g. with `jq -c`"
            ) from None
        if decoded is not None:
            value = decoded
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        shown = templates.to_text(value)
        raise NodeError(
            f"batch items of node '{node_id}' resolved to {type(value).__name__}, expected a list"
            f" (got {shown[:80]!r}); point 'items' at a list, e.g. JSON array output"
        )
    return value
