"""The `workflow` node: run another workflow as one node (docs/subworkflows.md).

`workflow` names the child: a path (relative to the calling file), a saved name (looked up in
`$FANFLOW_HOME/workflows/`, `./.fanflow/workflows/` and pflow's `~/.pflow/workflows/`), or the
child inline (an object with `nodes`/`edges`/…, or a pipeline list). `inputs` maps values of the
parent (templates welcome) onto the child's declared inputs; the child's declared outputs are
the node's outputs (with none declared: every child node's outputs, by id).

The child runs on the parent's scheduler resources: the same global budget, limiters, thread
executor and per-run clients. The node itself holds no budget slot (`holds_slot = False`): only
the child's leaves take slots, so nesting never deadlocks, even at `--max-concurrent 1`. Batch
over the node is the per-item pipeline: every item's child run goes as fast as its own chain,
with no barrier between stages. The child's events reach the parent's listeners with the node
ids prefixed by the path to them (`summarise[3]/score`), which is how progress, traces and
checkpoints see nested work, and how `--resume` finds the child nodes an earlier run finished.
"""

from __future__ import annotations

import contextvars
import dataclasses
import json
import os
from pathlib import Path
from time import perf_counter
from typing import Any, ClassVar

from fanflow import templates
from fanflow.errors import NodeError, WorkflowInvalid
from fanflow.events import EventBus
from fanflow.execute.resume_state import ResumeState
from fanflow.nodes.base import AsyncNode, Param, ParamProblem

DEFAULT_MAX_DEPTH = 10
_SUFFIXES = (".json", ".pflow.md", ".md")
# The files being validated right now, outermost first: a child found here calls itself.
_VALIDATING: contextvars.ContextVar[tuple[str, ...]] = contextvars.ContextVar(
    "fanflow_validating", default=()
)
_COMPILED: dict[Any, Any] = {}  # (path, mtime, size) or inline JSON → CompiledWorkflow


class WorkflowNode(AsyncNode):
    type_name: ClassVar[str] = "workflow"
    description: ClassVar[str] = (
        "Run another workflow (a file, a saved name, or inline) with inputs mapped from this "
        "one; its declared outputs become this node's outputs. Batch over it to run a whole "
        "pipeline per item, each item as fast as its own chain."
    )
    params_spec: ClassVar[dict[str, Param]] = {
        "workflow": Param(
            "any",
            required=True,
            description="path (relative to this file), saved name, or an inline workflow "
            "object / pipeline list",
            raw=True,  # an inline child's templates are the child's
        ),
        "inputs": Param(
            "object", default={}, description="child input name → value (templates welcome)"
        ),
        "max_depth": Param(
            "integer",
            default=DEFAULT_MAX_DEPTH,
            ge=1,
            description="how deep sub-workflows may nest at run time before this node fails",
        ),
    }
    holds_slot: ClassVar[bool] = False

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        ref = params.get("workflow")
        if _is_python_workflow(ref):
            return []
        if not isinstance(ref, str | dict | list) or ref in ("", {}, []):
            return [
                ParamProblem(
                    "'workflow' must name a file or saved workflow, or hold one inline",
                    "workflow",
                    'e.g. "workflow": "summarise.json" or "workflow": {"nodes": [...]}',
                )
            ]
        return []

    @classmethod
    def validate_in_workflow(
        cls, params: dict[str, Any], workflow: Any
    ) -> list[str | ParamProblem]:
        """Load and check the child before anything runs (unless its name is a template):
        its problems are reported at this node; a child that calls itself is refused."""
        ref = params.get("workflow")
        if not (isinstance(ref, str | dict | list) or _is_python_workflow(ref)) or _has_template(
            ref
        ):
            return []
        try:
            compiled = compiled_child(ref, workflow.source)
        except ChildInvalid as exc:
            found = exc.param_problems()
            if exc.workflow is not None:  # it parsed: its inputs can still be checked
                found += _input_problems(params.get("inputs"), exc.workflow)
            return found
        return _input_problems(params.get("inputs"), compiled.workflow)

    @classmethod
    def plan_detail(cls, params: dict[str, Any]) -> str | None:
        ref = params.get("workflow")
        return f"runs {ref}" if isinstance(ref, str) else "runs an inline workflow"

    @classmethod
    def child_workflow(cls, params: dict[str, Any], workflow: Any) -> Any:
        """The child compiled, when its name is not a template (`fanflow plan` shows it)."""
        ref = params.get("workflow")
        if ref is None or _has_template(ref):
            return None
        try:
            return compiled_child(ref, workflow.source)
        except ChildInvalid:
            return None

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        params = prep_res
        ctx = self.ctx
        max_depth = params.get("max_depth") or DEFAULT_MAX_DEPTH
        if ctx.depth + 1 > max_depth:
            raise NodeError(
                f"sub-workflows nest deeper than max_depth {max_depth} (a workflow that calls "
                "itself without end?)"
            )
        parent_file = ctx.workflow.source if ctx.workflow is not None else None
        try:
            # at run time a template-named child may call itself: max_depth bounds that
            compiled = compiled_child(params["workflow"], parent_file, in_run=True)
            from fanflow.validate.inputs import resolve_inputs

            values = resolve_inputs(compiled.workflow, dict(params.get("inputs") or {}))
        except (ChildInvalid, WorkflowInvalid) as exc:
            raise NodeError(_invalid_text(exc)) from None
        return await run_child(self, compiled, values)


async def run_child(node: Any, compiled: Any, values: dict[str, Any]) -> dict[str, Any]:
    """Run a compiled child workflow for `node` on its run's resources; its outputs."""
    from fanflow.execute.state import RunState
    from fanflow.schedule.driver import Driver

    ctx = node.ctx
    item = getattr(node, "item", None)
    prefix = f"{node.node_id}/" if item is None else f"{node.node_id}[{item}]/"
    child_ctx = dataclasses.replace(
        ctx,
        workflow=compiled.workflow,
        depth=ctx.depth + 1,
        bus=_PrefixBus(ctx.bus, prefix),
        resume=_child_resume(ctx.resume, prefix),
        providers=_child_providers(ctx.providers, compiled.workflow),
    )
    rs = RunState(compiled, values, child_ctx, ctx.budget, child_ctx.resume)
    driver = Driver(rs)
    if child_ctx.providers is ctx.providers:
        await driver.run()
    else:  # the child adds providers: its limit keys resolve with them
        from fanflow.io.provider_config import active

        with active(child_ctx.providers):
            await driver.run()
    if driver.failures:
        first = driver.failures[0]
        more = f" (and {len(driver.failures) - 1} more)" if len(driver.failures) > 1 else ""
        raise NodeError(f"sub-workflow node '{first.node_id}' failed: {first}{more}")
    outputs, _ = rs.declared_outputs()
    if not compiled.outputs:
        return dict(rs.store)
    return outputs


def _child_providers(table: Any, workflow: Any) -> Any:
    """The run's LLM providers, plus those only the child defines (docs/llm.md)."""
    if not getattr(workflow, "providers", None):
        return table
    from fanflow.io.provider_config import extend_table

    return extend_table(table, workflow)


class ChildInvalid(Exception):
    """The child could not be found or is not a valid workflow."""

    def __init__(
        self, label: str, problems: list[Any], message: str | None = None, hint: str = ""
    ) -> None:
        super().__init__(message or label)
        self.label = label
        self.problems = problems
        self.message = message
        self.hint = hint or _FIND_HINT
        self.workflow: Any = None  # the child as parsed, when only its checks failed

    def param_problems(self) -> list[str | ParamProblem]:
        if self.message is not None:
            return [ParamProblem(self.message, "workflow", self.hint)]
        out: list[str | ParamProblem] = []
        for p in self.problems:
            where = ", ".join(
                x for x in (p.field and f"at {p.field}", p.node and f"node '{p.node}'") if x
            )
            text = f"sub-workflow {self.label}: {p.message}" + (f" ({where})" if where else "")
            out.append(ParamProblem(text, "workflow", p.hint))
        return out


_CYCLE = (
    "a workflow may not run itself, directly or through others; for repetition use a loop "
    "(an edge back) or batch over the sub-workflow"
)
_FIND_HINT = (
    "give a path relative to this file, a name saved under .fanflow/workflows/, or the "
    "workflow inline"
)


def compiled_child(ref: Any, parent_file: str | None, in_run: bool = False) -> Any:
    """The child workflow compiled (once per file version or inline text, then cached).
    Raises ChildInvalid when it is missing, malformed, invalid, or calls itself."""
    from fanflow.compile.compiled import CompiledWorkflow, compile_workflow
    from fanflow.load.model import Workflow
    from fanflow.load.reader import parse_workflow, read_document

    if isinstance(ref, CompiledWorkflow):  # from Python: a compiled workflow as a node
        return ref
    if isinstance(ref, Workflow):
        try:
            return compile_workflow(ref)
        except WorkflowInvalid as exc:
            raise ChildInvalid(f"'{ref.source or ref.name or 'workflow'}'", exc.problems) from None
    if isinstance(ref, dict | list):
        doc = {"pipeline": ref} if isinstance(ref, list) else dict(ref)
        doc.setdefault("ir_version", "0.1.0")
        key: Any = ("inline", parent_file, json.dumps(doc, sort_keys=True, default=str))
        label, path = "(inline)", None
    else:
        path = _find(ref, parent_file)
        st = path.stat()
        key = (str(path), st.st_mtime_ns, st.st_size)
        label = f"'{ref}'"
    cached = _COMPILED.get(key)
    if cached is not None:
        return cached
    # the calling file counts as being validated: a file naming itself is a cycle too
    stack = _VALIDATING.get()
    if not stack and parent_file and not in_run:
        stack = (str(Path(parent_file).resolve()),)
    me = str(path) if path is not None else None
    if me is not None and me in stack:
        chain = " → ".join(Path(p).name for p in (*stack[stack.index(me) :], me))
        raise ChildInvalid(label, [], f"sub-workflows call each other in a cycle: {chain}", _CYCLE)
    token = _VALIDATING.set((*stack, me) if me is not None else stack)
    workflow = None
    try:
        if path is not None:
            workflow = parse_workflow(read_document(path), str(path))
        else:
            workflow = parse_workflow(doc, parent_file)
        compiled = compile_workflow(workflow)
    except WorkflowInvalid as exc:
        invalid = ChildInvalid(label, exc.problems)
        invalid.workflow = workflow
        raise invalid from None
    finally:
        _VALIDATING.reset(token)
    if len(_COMPILED) > 256:
        _COMPILED.clear()
    _COMPILED[key] = compiled
    return compiled


def _find(ref: str, parent_file: str | None) -> Path:
    base = Path(parent_file).parent if parent_file else Path.cwd()
    direct = Path(ref).expanduser()
    candidates = [direct if direct.is_absolute() else base / direct]
    if not any(ref.endswith(s) for s in _SUFFIXES) and "/" not in ref:
        home = os.environ.get("FANFLOW_HOME")
        saved = [Path(home) / "workflows"] if home else []
        saved += [Path(".fanflow") / "workflows", Path.home() / ".pflow" / "workflows"]
        candidates += [d / f"{ref}{s}" for d in saved for s in _SUFFIXES]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    where = f"no file {candidates[0]}"
    if len(candidates) > 1:
        where += " and no saved workflow of that name"
    raise ChildInvalid(f"'{ref}'", [], f"sub-workflow '{ref}' not found: {where}")


def _input_problems(given: Any, child: Any) -> list[str | ParamProblem]:
    if given is not None and not isinstance(given, dict):
        return []  # the typed-params check reports it
    given = given or {}
    out: list[str | ParamProblem] = []
    declared = child.inputs
    for name in given:
        if name not in declared:
            names = ", ".join(declared) or "none"
            out.append(
                ParamProblem(
                    f"the sub-workflow has no input '{name}'",
                    f"inputs.{name}",
                    f"its declared inputs: {names}",
                )
            )
    for name, spec in declared.items():
        if spec.required and spec.default is None and name not in given and not spec.secret:
            out.append(
                ParamProblem(
                    f"the sub-workflow needs input '{name}'",
                    "inputs",
                    f'add "{name}": … ({spec.description or spec.type})',
                )
            )
    return out


def _is_python_workflow(value: Any) -> bool:
    from fanflow.compile.compiled import CompiledWorkflow
    from fanflow.load.model import Workflow

    return isinstance(value, CompiledWorkflow | Workflow)


def _has_template(value: Any) -> bool:
    return (
        isinstance(templates.compile_value(value), templates.Template)
        if isinstance(value, str)
        else False
    )


def _invalid_text(exc: Exception) -> str:
    if isinstance(exc, ChildInvalid):
        return "; ".join(
            p.message if isinstance(p, ParamProblem) else str(p) for p in exc.param_problems()
        )
    problems = getattr(exc, "problems", [])
    return "sub-workflow inputs: " + "; ".join(p.message for p in problems)


def _child_resume(resume: ResumeState | None, prefix: str) -> ResumeState | None:
    """The completed child nodes an earlier run recorded under `prefix`, by their own ids."""
    return resume.child(prefix) if resume is not None else None


class _PrefixBus(EventBus):
    """The parent's listeners, with the child's node ids prefixed by the path to the child."""

    def __init__(self, parent: EventBus, prefix: str) -> None:
        super().__init__()
        self.listeners = parent.listeners  # shared: RunState checks it to skip building events
        self._parent = parent
        self._prefix = prefix

    def emit(
        self, kind: str, node: str | None = None, item: int | None = None, /, **data: Any
    ) -> None:
        self.emit_at(perf_counter(), kind, node, item, **data)

    def emit_at(
        self,
        t: float,
        kind: str,
        node: str | None = None,
        item: int | None = None,
        /,
        **data: Any,
    ) -> None:
        prefixed = None if node is None else self._prefix + node
        self._parent.emit_at(t, kind, prefixed, item, **data)

    def close(self) -> None:  # the parent's run closes its listeners
        pass
