"""A node with `loop:` (validate/loops.py): the same node run pass after pass, each pass a leaf
with its own retries, until its condition says stop or `max_iterations` passes have run.

Pass n renders the node's params with `${__iteration__}` = n and, from the second pass on,
`inputs.<name>` set to the values `carry` took from the previous pass's outputs. After a pass
the condition is read from that pass's outputs (a missing value counts as false, so the loop
ends; a text value is an error, as in pflow: `"false"` would be true). The node's outputs are
the last pass's, plus `iterations` and `loop_stopped` ("condition" or "max_iterations").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fanflow import templates
from fanflow.compile.compiled import NodePlan
from fanflow.errors import NodeError
from fanflow.execute.leaf import run_leaf
from fanflow.execute.state import RunState


async def run_loop(
    rs: RunState, plan: NodePlan, on_start: Callable[[], None]
) -> tuple[dict[str, Any], str, int]:
    loop = plan.loop
    assert loop is not None
    carried: dict[str, Any] = {}
    stopped = "max_iterations"
    iteration = 0
    outputs: dict[str, Any] = {}
    action = "default"
    attempts = 0
    while iteration < loop.max_iterations:
        iteration += 1
        compiled = plan.params
        if carried:  # carried values replace those inputs before anything renders from them
            compiled = {**compiled, "inputs": {**(compiled.get("inputs") or {}), **carried}}
        params = plan.render(compiled, rs.scope({"__iteration__": iteration}))
        outputs, action, attempts = await run_leaf(rs, plan, params, None, on_start)

        def own(root: str, outputs: dict[str, Any] = outputs) -> Any:
            return outputs if root == plan.id else rs.lookup(root)

        if _holds(loop.condition, own, plan.id) == loop.until:
            stopped = "condition"
            break
        carried = {name: templates.render(t, own) for name, t in loop.carry.items()}
    # attempts: the last pass's (each pass retries on its own; `iterations` counts the passes)
    return {**outputs, "iterations": iteration, "loop_stopped": stopped}, action, attempts


def _holds(condition: Any, scope: Callable[[str], Any], node_id: str) -> bool:
    try:
        value = templates.render(condition, scope)
    except templates.MissingValue:
        return False
    if isinstance(value, str):
        raise NodeError(
            f"node '{node_id}': the loop condition is text ({value[:40]!r}), not true/false; "
            "make the node output a boolean or a number",
            retryable=False,
        )
    return bool(value)
