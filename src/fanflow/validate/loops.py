"""Static checks of node `loop:` blocks (pflow's node-level loop; docs/engine.md, "Node loops").

A loop node runs again while (`while`) or until (`until`) a value of its own output holds, at
most `max_iterations` times; `carry` hands values of this pass's outputs to the next pass as
`inputs.<name>`. The condition reads only the node's own output; carried values read the
node's own output or the workflow's inputs (nothing else is known to have run when a pass
ends, so nothing else may be read).
"""

from __future__ import annotations

from typing import Any

from fanflow import templates
from fanflow.errors import Problem
from fanflow.load.model import Workflow

LOOP_VARS = ("__iteration__",)  # 1-based pass number, readable in the node's params


def loop_problems(workflow: Workflow, classes: dict[str, Any]) -> list[Problem]:
    file = workflow.source
    problems: list[Problem] = []
    inputs = set(workflow.inputs)
    for i, node in enumerate(workflow.nodes):
        loop = node.loop
        if loop is None:
            continue
        where = f"nodes[{i}].loop"
        example = f"e.g. until: ${{{node.id}.result.done}}"
        if node.batch is not None:
            problems.append(Problem("a node cannot have both batch and loop", file, where,
                                    node.id, "batch over a sub-workflow that loops instead"))  # fmt: skip
        if (loop.while_ is None) == (loop.until is None):
            problems.append(Problem("a loop needs exactly one of `while` and `until`", file,
                                    where, node.id, example))  # fmt: skip
        for key, text in (("while", loop.while_), ("until", loop.until)):
            if text is None:
                continue
            try:
                cond = templates.parse(text)
            except templates.TemplateSyntaxError as exc:
                problems.append(Problem(str(exc), file, f"{where}.{key}", node.id))
                continue
            whole = cond.whole if isinstance(cond, templates.Template) else None
            if whole is None or any(r.root != node.id for r in cond.refs()):  # type: ignore[union-attr]
                problems.append(Problem(
                    f"the loop's `{key}` must be one template reading this node's output",
                    file, f"{where}.{key}", node.id, example))  # fmt: skip
        spec = getattr(classes.get(node.id), "params_spec", None) or {}
        if loop.carry and spec and "inputs" not in spec:
            problems.append(Problem(
                f"`carry` sets the next pass's `inputs`, and node type '{node.type}' has none",
                file, f"{where}.carry", node.id, "carry works with node types that take inputs, "
                "such as code"))  # fmt: skip
        for name, text in loop.carry.items():
            try:
                compiled = templates.compile_value(text)
            except templates.TemplateSyntaxError as exc:
                problems.append(Problem(str(exc), file, f"{where}.carry.{name}", node.id))
                continue
            for _path, ref in templates.iter_refs(compiled):
                if ref.root != node.id and ref.root not in inputs:
                    problems.append(Problem(
                        f"a carried value can read only this node's output or the workflow's "
                        f"inputs, not '{ref.root}'", file, f"{where}.carry.{name}", node.id,
                        f"e.g. ${{{node.id}.result.total}}"))  # fmt: skip
    return problems
