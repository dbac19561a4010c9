"""`fanflow mcp serve`: fanflow as an MCP server, for agents (Claude Code, Cursor, any MCP host).

Tools: run, start, status, cancel, resume, validate, plan, guide, nodes, runs_list, runs_show;
the guide is also the resource `fanflow://guide`. A workflow is given as a path, an inline JSON
object (or its text), or `.pflow.md` text. Errors a user can cause come back as tool errors
carrying the CLI's message, never a traceback; a failing run is a result (status failed), and
nothing a run does takes the server down.

Every run the server starts (run, start, resume) takes its leaf slots from ONE process-wide
global budget (`--max-concurrent`, default 256), so two agents running workflows at once share
the machine's budget instead of getting 256 each. Runs are recorded in the run store (`--store`,
default as for `fanflow run`), so `runs_list`, `runs_show` and `resume` see them, and so does
`fanflow runs` on the command line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fanflow import events as ev
from fanflow.errors import FanflowError, Problem, WorkflowInvalid

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from fanflow.api import RunResult
    from fanflow.compile.compiled import CompiledWorkflow
    from fanflow.execute.budget import Budget

DEFAULT_MAX_CONCURRENT = 256
MAX_JOBS = 200  # finished background runs kept for `status` (oldest dropped first)
MAX_OUTPUT_CHARS = 50_000  # a node's outputs larger than this come back as a preview

WorkflowArg = str | dict[str, Any]

_F = TypeVar("_F", bound=Callable[..., Awaitable[Any]])


# --------------------------------------------------------------------------- workflow sources


def load_source(workflow: WorkflowArg) -> CompiledWorkflow:
    """A tool's `workflow` argument, compiled (every static check run). Raises WorkflowInvalid."""
    from fanflow.compile.compiled import compile_workflow
    from fanflow.load.reader import parse_source, parse_workflow

    if isinstance(workflow, dict):
        return compile_workflow(parse_workflow(workflow, None))
    if not isinstance(workflow, str) or not workflow.strip():
        raise WorkflowInvalid([Problem("'workflow' must be a path, a JSON object or .pflow.md text",
                                       field="workflow")])  # fmt: skip
    text = workflow.strip()
    if text.startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise WorkflowInvalid([Problem(
                f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}",
                field="workflow", hint="pass the workflow as a JSON object, or fix the text")]) from None  # fmt: skip
        if not isinstance(doc, dict):  # pragma: no cover - text starting with { is an object
            raise WorkflowInvalid([Problem("a workflow must be a JSON object", field="workflow")])
        return compile_workflow(parse_workflow(doc, None))
    if "\n" in text:  # .pflow.md text (a path has no newline)
        from fanflow.load.reader import _read_pflow

        doc = _read_pflow(workflow, Path.cwd() / "inline.pflow.md", None)
        return compile_workflow(parse_workflow(doc, "<inline .pflow.md>"))
    path = Path(text).expanduser()
    if path.is_dir():
        raise WorkflowInvalid([Problem("is a directory, not a workflow file", str(path),
                                       hint="give the path of a .json or .pflow.md file")])  # fmt: skip
    return compile_workflow(parse_source(path))


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


def _node_outputs(value: Any) -> Any:
    text = json.dumps(value, default=str)
    if len(text) <= MAX_OUTPUT_CHARS:
        return json.loads(text)
    return {"truncated": True, "chars": len(text), "preview": text[:2000]}


def run_payload(result: RunResult, with_outputs: bool = True) -> dict[str, Any]:
    """The CLI's `--output-format json` object, with each node's outputs beside its status."""
    payload = _jsonable(result.to_json())
    if with_outputs:
        for node_id, entry in payload["nodes"].items():
            if node_id in result.store:
                entry["outputs"] = _node_outputs(result.store[node_id])
    return dict(payload)


# --------------------------------------------------------------------------- background runs


@dataclass
class Progress:
    """A listener counting what a run has done (for `status`)."""

    nodes: list[str] = field(default_factory=list)
    done: dict[str, str] = field(default_factory=dict)  # node -> final status
    running: set[str] = field(default_factory=set)
    items_total: dict[str, int] = field(default_factory=dict)
    items_done: dict[str, int] = field(default_factory=dict)

    def on_event(self, event: Any) -> None:
        kind, node = event.kind, event.node
        if kind == ev.RUN_STARTED:
            self.nodes = list(event.data.get("nodes") or [])
        elif kind == ev.NODE_STARTED and node is not None:
            self.running.add(node)
            if event.data.get("batch") is not None:
                self.items_total[node] = int(event.data["batch"])
        elif kind == ev.NODE_FINISHED and node is not None:
            self.running.discard(node)
            self.done[node] = str(event.data.get("status"))
        elif kind == ev.NODE_SKIPPED and node is not None:
            self.done[node] = "skipped"
        elif kind == ev.ITEM_FINISHED and node is not None:
            self.items_done[node] = self.items_done.get(node, 0) + 1

    def close(self) -> None:
        pass

    def counts(self) -> dict[str, Any]:
        by_status: dict[str, int] = {}
        for status in self.done.values():
            by_status[status] = by_status.get(status, 0) + 1
        out: dict[str, Any] = {
            "nodes_total": len(self.nodes),
            "nodes_done": len(self.done),
            "nodes_running": sorted(self.running),
            **by_status,
        }
        if self.items_total:
            out["items"] = {
                n: {"done": self.items_done.get(n, 0), "total": t}
                for n, t in self.items_total.items()
            }
        return out


@dataclass
class Job:
    run_id: str
    workflow: str
    started: float
    progress: Progress
    cancel: asyncio.Event
    task: asyncio.Task[None] | None = None
    result: RunResult | None = None
    error: str | None = None  # the run could not run (invalid inputs) or crashed

    @property
    def status(self) -> str:
        if self.result is not None:
            return str(self.result.status)
        if self.error is not None:
            return "failed"
        return "cancelling" if self.cancel.is_set() else "running"

    def report(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "run_id": self.run_id,
            "workflow": self.workflow,
            "status": self.status,
            "elapsed_s": round(time.time() - self.started, 3),
            "progress": self.progress.counts(),
        }
        if self.result is not None:
            out["result"] = run_payload(self.result)
        if self.error is not None:
            out["error"] = self.error
        return out


class Service:
    """What the tools do, independent of the MCP layer (the server adapts it)."""

    def __init__(self, max_concurrent: int = DEFAULT_MAX_CONCURRENT, store: str | None = None):
        self.max_concurrent = max_concurrent
        self.store_path = store
        self._budget: Budget | None = None
        self._run_store: Any = None
        self.jobs: dict[str, Job] = {}

    @property
    def budget(self) -> Budget:
        if self._budget is None:
            from fanflow.execute.budget import Budget

            self._budget = Budget(self.max_concurrent)
        return self._budget

    def _store(self) -> Any:
        """The run store, opened once and shared by every run and read (its reads are
        serialised by its own lock; each run's checkpoint writer has its own connection)."""
        if self._run_store is None:
            from fanflow.store.runs import RunStore, resolve_store_path

            self._run_store = RunStore(resolve_store_path(self.store_path))
        return self._run_store

    async def _run(
        self,
        compiled: CompiledWorkflow,
        inputs: dict[str, Any] | None,
        run_id: str,
        progress: Progress | None = None,
        cancel: asyncio.Event | None = None,
        resume: str | None = None,
    ) -> RunResult:
        import fanflow

        return await fanflow.run_async(
            compiled, inputs, store=self._store(), resume=resume, run_id=run_id,
            listeners=[progress] if progress is not None else (), summary=True,
            budget=self.budget, cancel=cancel,
        )  # fmt: skip

    async def run(self, workflow: WorkflowArg, inputs: dict[str, Any] | None) -> dict[str, Any]:
        from fanflow.api import _new_run_id

        compiled = load_source(workflow)
        result = await self._run(compiled, inputs or {}, _new_run_id())
        return run_payload(result)

    async def start(
        self,
        workflow: WorkflowArg,
        inputs: dict[str, Any] | None,
        resume: str | None = None,
    ) -> dict[str, Any]:
        from fanflow.api import _new_run_id, preflight
        from fanflow.validate.inputs import resolve_inputs

        compiled = load_source(workflow)
        if resume is None:  # bad inputs are the caller's error now, not a failed run later
            resolve_inputs(compiled.workflow, dict(inputs or {}))
            preflight(compiled)
        run_id = resume_id(self, resume) if resume is not None else _new_run_id()
        job = Job(run_id, compiled.label, time.time(), Progress(), asyncio.Event())

        async def body() -> None:
            try:
                job.result = await self._run(compiled, inputs, run_id, job.progress, job.cancel,
                                             resume)  # fmt: skip
            except FanflowError as exc:
                job.error = str(exc)
            except Exception as exc:  # a bug: reported, the server stays up
                job.error = f"internal error: {type(exc).__name__}: {exc}"

        job.task = asyncio.get_running_loop().create_task(body(), name=f"fanflow-run-{run_id}")
        self.jobs.pop(run_id, None)
        self.jobs[run_id] = job
        self._forget_old()
        await asyncio.sleep(0)  # let it start
        return {"run_id": run_id, "status": job.status, "workflow": job.workflow}

    def _forget_old(self) -> None:
        finished = [k for k, j in self.jobs.items() if j.task is not None and j.task.done()]
        for k in finished[: max(0, len(self.jobs) - MAX_JOBS)]:
            del self.jobs[k]

    def job(self, run_id: str) -> Job:
        job = self.jobs.get(run_id)
        if job is None:
            matches = [j for k, j in self.jobs.items() if k.startswith(run_id)] if run_id else []
            if len(matches) == 1:
                return matches[0]
            known = ", ".join(list(self.jobs)[-5:]) or "none"
            raise WorkflowInvalid([Problem(
                f"no run '{run_id}' was started by this server", field="run_id",
                hint=f"recent: {known}; runs from elsewhere: runs_show")])  # fmt: skip
        return job

    async def status(self, run_id: str, wait: float = 0.0) -> dict[str, Any]:
        job = self.job(run_id)
        if wait > 0 and job.task is not None and not job.task.done():
            await asyncio.wait([job.task], timeout=min(wait, 60.0))
        return job.report()

    async def cancel(self, run_id: str, wait: float = 10.0) -> dict[str, Any]:
        job = self.job(run_id)
        job.cancel.set()
        if job.task is not None and not job.task.done() and wait > 0:
            await asyncio.wait([job.task], timeout=wait)
        return job.report()

    async def resume(
        self, run_id: str, workflow: WorkflowArg | None, inputs: dict[str, Any] | None
    ) -> dict[str, Any]:
        if workflow is None:
            workflow = self._stored_workflow(run_id)
        return await self.start(workflow, inputs or None, resume=run_id)

    def _stored_workflow(self, run_ref: str) -> WorkflowArg:
        store = self._store()
        run = store.get_run(run_ref)
        if run.workflow and Path(run.workflow).is_file():
            return str(run.workflow)
        doc = store.workflow_doc(run.workflow_hash)
        if doc:
            try:
                parsed = json.loads(doc)
            except ValueError:
                parsed = None
            if isinstance(parsed, dict):
                return parsed
        raise WorkflowInvalid([Problem(f"the workflow of run '{run_ref}' is not available",
                                       field="workflow", hint="pass `workflow` too")])  # fmt: skip

    def validate(self, workflow: WorkflowArg) -> dict[str, Any]:
        try:
            compiled = load_source(workflow)
        except WorkflowInvalid as exc:
            return {"valid": False, "error": str(exc),
                    "problems": [p.to_dict() for p in exc.problems]}  # fmt: skip
        return {
            "valid": True,
            "problems": [],
            "nodes": len(compiled.graph.ids),
            "edges": len(compiled.graph.edges),
            "warnings": list(compiled.warnings),
        }

    def plan(self, workflow: WorkflowArg) -> dict[str, Any]:
        from fanflow.observe.plan import build_plan

        plan = dict(_jsonable(build_plan(load_source(workflow))))
        plan["critical_path"] = critical_path(plan.get("nodes") or [])
        return plan

    def nodes(self, name: str | None) -> dict[str, Any]:
        from fanflow import guide

        if not name:
            return {"nodes": dict(guide.node_summaries())}
        try:
            cls = guide.load_node_class(name)
        except KeyError:
            import difflib

            known = guide.node_types()
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
            raise WorkflowInvalid([Problem(
                f"unknown node type '{name}'" + (f" — did you mean '{close[0]}'?" if close else ""),
                field="name", hint=f"known types: {', '.join(known)}")]) from None  # fmt: skip
        return dict(_jsonable(guide.node_info(name, cls)))

    def runs_list(self, limit: int, workflow: str | None) -> dict[str, Any]:
        from fanflow.commands.runs import _run_json
        from fanflow.store.runs import resolve_store_path, workflow_name

        if not resolve_store_path(self.store_path).exists():
            return {"runs": []}
        wf = workflow_name(workflow) if workflow else None
        return {"runs": [_run_json(r) for r in self._store().list_runs(limit=limit, workflow=wf)]}

    def runs_show(self, run_id: str) -> dict[str, Any]:
        from fanflow.commands.runs import _run_json
        from fanflow.store.runs import resolve_store_path

        if not resolve_store_path(self.store_path).exists():
            raise WorkflowInvalid([Problem(f"no run '{run_id}': no runs recorded yet",
                                           field="run_id")])  # fmt: skip
        store = self._store()
        run = store.get_run(run_id)
        states = store.node_states(run.id, with_outputs=True)
        order = store.node_order(run)
        order += [n for n in states if n not in set(order)]
        nodes: dict[str, Any] = {}
        for n in order:
            st = states.get(n)
            if st is None:
                nodes[n] = {"status": "pending"}
                continue
            nodes[n] = {"status": st.status, "action": st.action, "error": st.error,
                        "attempts": st.attempts,
                        "duration_ms": None if st.duration is None else round(st.duration * 1000, 3),
                        "outputs": _node_outputs(st.outputs)}  # fmt: skip
        return dict(_jsonable({**_run_json(run), "inputs": run.inputs, "outputs": run.outputs,
                               "nodes": nodes}))  # fmt: skip


def critical_path(nodes: list[dict[str, Any]]) -> list[str]:
    """The longest dependency chain, counted in nodes (every node taken as equally long): a
    lower bound on the steps any schedule needs."""
    best: dict[str, tuple[int, str | None]] = {}
    for node in sorted(nodes, key=lambda n: n.get("level", 0)):
        deps = [d for d in node.get("deps") or [] if d in best]
        prev = max(deps, key=lambda d: best[d][0], default=None)
        best[node["id"]] = (best[prev][0] + 1 if prev else 1, prev)
    if not best:
        return []
    end: str | None = max(best, key=lambda k: best[k][0])
    path: list[str] = []
    while end is not None:
        path.append(end)
        end = best[end][1]
    return path[::-1]


def resume_id(service: Service, ref: str) -> str:
    """The stored run id a resume continues (a prefix or `last` resolved)."""
    return str(service._store().get_run(ref).id)


# --------------------------------------------------------------------------- the MCP layer


def _tool_errors(fn: _F) -> _F:
    """User errors → ToolError with the CLI's message; a bug → ToolError naming it (never a
    traceback, and the server stays up)."""
    from mcp.server.mcpserver.exceptions import ToolError

    @functools.wraps(fn)
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return await fn(*args, **kwargs)
        except ToolError:
            raise
        except FanflowError as exc:
            hint = getattr(exc, "hint", None)
            raise ToolError(str(exc) + (f"\n    hint: {hint}" if hint else "")) from None
        except Exception as exc:
            raise ToolError(f"internal error: {type(exc).__name__}: {exc}") from None

    return wrapper  # type: ignore[return-value]


INSTRUCTIONS = (
    "fanflow runs JSON workflows of shell, file, HTTP, LLM, Python and MCP-tool nodes in "
    "parallel wherever their dependencies allow. Read the `guide` tool (or the fanflow://guide "
    "resource) first; `validate` before `run`; use `start` + `status` for long runs."
)


def build_server(service: Service | None = None) -> MCPServer:
    """The MCP server and its tools over `service`."""
    from mcp.server.mcpserver import MCPServer

    svc = service or Service()
    server: MCPServer = MCPServer("fanflow", instructions=INSTRUCTIONS, log_level="WARNING")

    @server.tool()
    @_tool_errors
    async def run(workflow: WorkflowArg, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a workflow to completion and return status, declared outputs, per-node results
        (status, duration, error, outputs) and the summary (critical path, parallelism).
        `workflow`: a file path, a JSON object, or .pflow.md text. `inputs`: values by input name.
        A failed run is a result with status "failed"; an invalid workflow is a tool error."""
        return await svc.run(workflow, inputs)

    @server.tool()
    @_tool_errors
    async def start(workflow: WorkflowArg, inputs: dict[str, Any] | None = None) -> dict[str, Any]:
        """Start a workflow in the background; returns its run_id at once. Poll with `status`,
        stop with `cancel`."""
        return await svc.start(workflow, inputs)

    @server.tool()
    @_tool_errors
    async def status(run_id: str, wait: float = 0.0) -> dict[str, Any]:
        """Progress of a run started here (nodes done/running, batch items), and the full result
        once it is finished. `wait`: seconds (at most 60) to wait for it to finish first."""
        return await svc.status(run_id, wait)

    @server.tool()
    @_tool_errors
    async def cancel(run_id: str) -> dict[str, Any]:
        """Cancel a running run (it is recorded as cancelled and can be resumed)."""
        return await svc.cancel(run_id)

    @server.tool()
    @_tool_errors
    async def resume(
        run_id: str, workflow: WorkflowArg | None = None, inputs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Resume a stored run in the background (`last`, an id or a prefix): only what did not
        complete runs again. `workflow` defaults to the one the run ran. Poll with `status`."""
        return await svc.resume(run_id, workflow, inputs)

    @server.tool()
    @_tool_errors
    async def validate(workflow: WorkflowArg) -> dict[str, Any]:
        """Every static check, nothing executed. Returns valid, and problems as diagnostics:
        message, file, field (a JSON path such as nodes[2].params.command), node, hint."""
        return svc.validate(workflow)

    @server.tool()
    @_tool_errors
    async def plan(workflow: WorkflowArg) -> dict[str, Any]:
        """The static schedule: dependency levels, what runs in parallel, joins, branches,
        loops and the critical path."""
        return svc.plan(workflow)

    @server.tool()
    @_tool_errors
    async def guide() -> str:
        """The workflow authoring guide: format, node types, templates, parallel forms, examples."""
        from fanflow.guide import build_guide

        return build_guide()

    @server.tool()
    @_tool_errors
    async def nodes(name: str | None = None) -> dict[str, Any]:
        """The node catalogue (type → one line), or one type's params and outputs."""
        return svc.nodes(name)

    @server.tool()
    @_tool_errors
    async def runs_list(limit: int = 20, workflow: str | None = None) -> dict[str, Any]:
        """Recent runs in the run store, newest first (any process's, the CLI's too)."""
        return svc.runs_list(limit, workflow)

    @server.tool()
    @_tool_errors
    async def runs_show(run_id: str) -> dict[str, Any]:
        """One stored run (an id, a unique prefix or `last`): per-node status, errors, outputs."""
        return svc.runs_show(run_id)

    @server.resource("fanflow://guide", name="guide", mime_type="text/markdown",
                     description="The fanflow workflow authoring guide")  # fmt: skip
    def guide_resource() -> str:
        from fanflow.guide import build_guide

        return build_guide()

    return server


def parse_http(value: str) -> tuple[str, int]:
    """`HOST:PORT`, `:PORT` or `PORT` (loopback by default)."""
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise WorkflowInvalid([Problem(f"invalid --http {value!r}: expected HOST:PORT, e.g. "
                                       "127.0.0.1:8765", field="--http")])  # fmt: skip
    return host, int(port)


def serve(http: str | None = None, max_concurrent: int = DEFAULT_MAX_CONCURRENT,
          store: str | None = None) -> None:  # fmt: skip
    """Run the server until its client goes away (stdio) or it is interrupted (HTTP)."""
    server = build_server(Service(max_concurrent, store))
    if http is None:
        server.run("stdio")
        return
    host, port = parse_http(http)
    server.run("streamable-http", host=host, port=port)
