"""Batch: the same node once per item. Items stream through a fixed set of workers (no task per
pending item); results land by index, so order is kept whatever finishes first.

Error policies: `fail_fast` stops the other workers at the first failed item (their running
items are cancelled); `continue` runs every item and reports the failures in `errors`. Either
way a batch whose every item failed is a failed node.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from fanflow import templates
from fanflow.compile.compiled import NodePlan
from fanflow.errors import NodeError
from fanflow.events import ITEM_FINISHED, ITEM_STARTED
from fanflow.execute.leaf import failure_message, run_leaf
from fanflow.execute.state import RunState
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
                         attempts=getattr(exc, "attempts", 1), item=item)  # fmt: skip
                if fail_fast:
                    stopped = True
                    raise _StopBatch(f"item [{i}]: {message}") from exc
                continue
            durations.append(time.perf_counter() - t0)
            results[i] = outputs
            if emit is not None:
                emit(ITEM_FINISHED, plan.id, i, status=SUCCESS, result=outputs, error=None,
                     attempts=attempts, item=item)  # fmt: skip

    started = time.perf_counter()
    workers = min(spec.max_concurrent if spec.parallel else 1, max(n - len(done), 1))
    failure: _StopBatch | None = None
    try:
        if workers == 1:
            await worker()
        else:
            async with asyncio.TaskGroup() as group:
                for _ in range(workers):
                    group.create_task(worker())
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
