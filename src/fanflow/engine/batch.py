"""Batch: the same node once per item. Items stream through a fixed set of workers (no task
per pending item); results land by index, so order is kept whatever finishes first."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TYPE_CHECKING, Any

from fanflow import templates
from fanflow.engine import events as ev
from fanflow.engine.execute import execute
from fanflow.engine.retry import NO_RETRY, RetryPolicy
from fanflow.errors import NodeError

if TYPE_CHECKING:
    from fanflow.engine.scheduler import Runtime


class _StopBatch(Exception):
    """fail_fast: an item failed; the other workers stop."""


async def run_batch(rt: Runtime, node_id: str, items: list[Any]) -> dict[str, Any]:
    spec = rt.graph.specs[node_id].batch
    assert spec is not None
    n = len(items)
    results: list[Any] = [None] * n
    errors: list[dict[str, Any]] = []
    durations: list[float] = []
    if "max_retries" in spec.model_fields_set:
        policy = RetryPolicy(attempts=spec.max_retries, wait=spec.retry_wait)
    else:  # the node type's own policy, e.g. llm/http retry transient failures
        policy = rt.policies.get(node_id, NO_RETRY)
    compiled = rt.graph.params[node_id]
    alias = spec.as_
    fail_fast = spec.error_handling == "fail_fast"
    emit = rt.bus.emit
    bus_on = bool(rt.bus.listeners)

    done = rt.resume.items.get(node_id, {}) if rt.resume else {}
    for index, result in done.items():
        if 0 <= index < n:
            results[index] = result
    pending = iter([i for i in range(n) if i not in done] if done else range(n))
    stopped = False

    async def worker() -> None:
        nonlocal stopped
        for i in pending:
            if stopped:
                return
            item = items[i]
            extra = {alias: item, "__index__": i}
            if bus_on:
                emit(ev.ITEM_STARTED, node_id, i)
            t0 = time.perf_counter()
            try:
                params = rt.render_params(node_id, compiled, extra)
                outputs, _action, attempts = await execute(rt, node_id, params, policy, i)
            except asyncio.CancelledError:
                if bus_on:
                    emit(ev.ITEM_FINISHED, node_id, i, status="cancelled", result=None,
                         error="cancelled", attempts=0, item=item)  # fmt: skip
                raise
            except Exception as exc:
                durations.append(time.perf_counter() - t0)
                message = str(exc) or type(exc).__name__
                errors.append({"index": i, "item": item, "error": message})
                if bus_on:
                    emit(ev.ITEM_FINISHED, node_id, i, status="failed", result=None,
                         error=message, attempts=getattr(exc, "attempts", 1), item=item)  # fmt: skip
                if fail_fast:
                    stopped = True
                    raise _StopBatch(f"item [{i}]: {message}") from exc
                continue
            durations.append(time.perf_counter() - t0)
            results[i] = outputs
            if bus_on:
                emit(ev.ITEM_FINISHED, node_id, i, status="success", result=outputs,
                     error=None, attempts=attempts, item=item)  # fmt: skip

    started = time.perf_counter()
    workers = min(spec.max_concurrent if spec.parallel else 1, max(n - len(done), 1))
    failure: _StopBatch | None = None
    try:
        if workers == 1:
            await worker()
        else:
            await _run_workers(worker, workers)
    except _StopBatch as exc:
        failure = exc

    errors.sort(key=lambda e: e["index"])
    outputs = _contract(results, errors, durations, spec, time.perf_counter() - started)
    if failure is not None:
        raise NodeError(f"batch failed at {failure}", outputs=outputs)
    if n and outputs["error_count"] == n:
        raise NodeError(
            f"every item failed ({n}); first error: {errors[0]['error']}", outputs=outputs
        )
    return outputs


async def _run_workers(worker: Any, count: int) -> None:
    """Run the workers; the first _StopBatch cancels the rest (TaskGroup) and is re-raised."""
    try:
        async with asyncio.TaskGroup() as group:
            for _ in range(count):
                group.create_task(worker())
    except BaseExceptionGroup as group_exc:
        others = [e for e in group_exc.exceptions if not isinstance(e, _StopBatch)]
        raise (others or group_exc.exceptions)[0] from None


def _contract(results, errors, durations, spec, total: float) -> dict[str, Any]:
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
    """Items must be a list; JSON text holding a list (e.g. shell stdout) is accepted."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            pass
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        shown = templates.to_text(value)
        raise NodeError(
            f"batch items of node '{node_id}' resolved to {type(value).__name__}, expected a list"
            f" (got {shown[:80]!r}); point 'items' at a list, e.g. JSON array output"
        )
    return value
