"""The Python API, which is the whole product: `fanflow.run` does everything `fanflow run` does
(run store and resume, trace, timeline, progress, summary); the CLI only parses arguments and
prints. One run: load → compile → type the inputs → schedule → resolve the declared outputs.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from fanflow import events as ev
from fanflow.compile.compiled import CompiledWorkflow, compile_workflow
from fanflow.errors import Problem, WorkflowInvalid
from fanflow.events import EventBus, Listener
from fanflow.execute.budget import Budget
from fanflow.execute.context import RunContext
from fanflow.execute.resume_state import ResumeState
from fanflow.execute.state import NodeResult, RunState
from fanflow.execute.threads import ThreadExecutor
from fanflow.load.model import Workflow
from fanflow.observe.redact import MASK, Secrets
from fanflow.schedule.driver import Driver
from fanflow.status import CANCELLED, FAILED, SUCCESS, Status
from fanflow.validate.inputs import resolve_inputs

if TYPE_CHECKING:
    from fanflow.store.runs import RunStore

DEFAULT_MAX_CONCURRENT = 256

WorkflowSource = CompiledWorkflow | Workflow | str | Path | dict[str, Any]


@dataclass(repr=False)
class RunResult:
    run_id: str
    status: Status  # success | failed | cancelled
    outputs: dict[str, Any]
    duration_ms: float
    nodes: dict[str, NodeResult]
    store: dict[str, dict[str, Any]] = field(repr=False, default_factory=dict)
    error: str | None = None
    failed_node: str | None = None
    warnings: list[str] = field(default_factory=list)
    summary: dict[str, Any] | None = None  # with summary=True (the CLI's end-of-run table)
    summary_text: str | None = None
    signal: int | None = None  # the signal that cancelled the run (handle_signals=True)
    stdout_output: str | None = None  # the declared output marked `stdout: true`, if any

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS

    def __repr__(self) -> str:  # short: asyncio reprs the finished task, result and all
        return f"<RunResult {self.run_id} {self.status} ({len(self.nodes)} nodes)>"

    def to_json(self) -> dict[str, Any]:
        """The `--output-format json` object (DESIGN.md)."""
        return {
            "status": self.status,
            "outputs": self.outputs,
            "duration_ms": round(self.duration_ms, 3),
            "nodes": {
                k: {"status": v.status, "duration_ms": round(v.duration_ms, 3)}
                | ({"action": v.action} if v.action not in (None, "default") else {})
                | ({"error": v.error} if v.error else {})
                | ({"attempts": v.attempts} if v.attempts > 1 else {})
                for k, v in self.nodes.items()
            },
            "error": self.error,
            "failed_node": self.failed_node,
            "run_id": self.run_id,
            "warnings": self.warnings,
        } | ({"summary": self.summary} if self.summary is not None else {})


def compile_source(source: WorkflowSource) -> CompiledWorkflow:
    """Whatever the caller holds, compiled. A loaded `Workflow` is compiled afresh each time, so
    edits made to it since it was loaded are what runs."""
    return source if isinstance(source, CompiledWorkflow) else compile_workflow(source)


def run(
    workflow: WorkflowSource,
    inputs: dict[str, Any] | None = None,
    *,
    max_concurrent: int | None = None,
    limits: Sequence[str] = (),
    listeners: Sequence[Listener] = (),
    store: str | Path | RunStore | None = None,
    checkpoint: bool = True,
    resume: str | ResumeState | None = None,
    trace: str | Path | None = None,
    timeline: str | Path | None = None,
    progress: TextIO | None = None,
    summary: bool = False,
    run_id: str | None = None,
    inputs_from_text: bool = False,
    handle_signals: bool = False,
    cache: bool = True,
    executor: str | None = None,
    providers: dict[str, dict[str, Any]] | None = None,
) -> RunResult:
    """Run a workflow to completion (blocking). See `run_async` for the options."""
    return asyncio.run(
        run_async(
            workflow, inputs, max_concurrent=max_concurrent, limits=limits, listeners=listeners,
            store=store, checkpoint=checkpoint, resume=resume, trace=trace, timeline=timeline, progress=progress,
            summary=summary, run_id=run_id, inputs_from_text=inputs_from_text,
            handle_signals=handle_signals, cache=cache, executor=executor, providers=providers,
        )
    )  # fmt: skip


async def run_async(
    workflow: WorkflowSource,
    inputs: dict[str, Any] | None = None,
    *,
    max_concurrent: int | None = None,
    limits: Sequence[str] = (),
    listeners: Sequence[Listener] = (),
    store: str | Path | RunStore | None = None,
    checkpoint: bool = True,
    resume: str | ResumeState | None = None,
    trace: str | Path | None = None,
    timeline: str | Path | None = None,
    progress: TextIO | None = None,
    summary: bool = False,
    run_id: str | None = None,
    inputs_from_text: bool = False,
    handle_signals: bool = False,
    cache: bool = True,
    budget: Budget | None = None,
    cancel: asyncio.Event | None = None,
    executor: str | None = None,
    providers: dict[str, dict[str, Any]] | None = None,
) -> RunResult:
    """Run a workflow on the running event loop.

    - `workflow`: a path, a dict, a loaded `Workflow` or a `CompiledWorkflow` (reused as is).
    - `inputs`: values by input name; with `inputs_from_text` they are text to type by their
      declaration (the CLI's name=value words).
    - `max_concurrent`: the global budget of leaf executions (default: the workflow's, else 256).
    - `limits`: overrides such as "llm:openai=10/600rpm", merged field by field over the
      workflow's `limits` and the FANFLOW_LIMITS environment variable.
    - `store`: a run store (a runs.db path, its folder, or a RunStore) to checkpoint into
      (`checkpoint=False`: only read it, to resume); `resume`: a stored run id, a unique prefix or "last" (needs `store`), or a ResumeState.
      With `resume`, the stored run's inputs fill in those not given (secret inputs are not
      stored: give them again, or set FANFLOW_SECRET_<NAME>).
    - `trace` / `timeline`: write a Chrome trace / an HTML timeline of the run.
    - `progress`: a stream for progress lines (a TTY gets a live display);
      `summary`: fill `RunResult.summary` (per-node times, critical path).
    - `handle_signals`: SIGINT, SIGTERM or SIGHUP cancels the run (status cancelled,
      `RunResult.signal` set; the CLI exits 128 + the signal's number: 130, 143, 129); a second
      signal ends the process at once (docs/durable-runs.md, "Signals and process lifetime").
    - `executor`: where sync nodes' exec runs: "thread" (default), "process", "dask" or
      "dask=ADDRESS"; a node's own `executor` wins, and this wins over the workflow's
      (docs/executors.md).
    - `cache`: False bypasses the llm response cache for this run (the CLI's --no-cache;
      docs/llm.md).
    - `providers`: LLM providers `{name: {kind, base_url, api_key_env, default_model,
      headers}}` merged field by field over the workflow's `providers` and FANFLOW_PROVIDERS
      (the CLI's --providers/--provider; docs/llm.md).
    - `budget`: a global budget shared with other runs on this loop (`fanflow mcp serve` gives
      every run it starts the same one); it replaces this run's own `max_concurrent` budget.
    - `cancel`: setting this event cancels the run as an interrupt does (status cancelled,
      recorded as such in the run store, resumable).

    Raises WorkflowInvalid (exit code 2) before any node runs when the workflow, the inputs or
    the environment are invalid; otherwise returns a RunResult. An exception that is not a node
    failure (a bug, a listener that raises) cancels the run and is raised.
    """
    from fanflow.io import provider_config

    with provider_config.overrides(providers):  # validation sees the run's providers
        compiled = compile_source(workflow)
    run_store = _open_store(store) if store is not None else None
    state: ResumeState | None = None
    resume_note: str | None = None
    raw = dict(inputs or {})
    if isinstance(resume, str):
        if run_store is None:
            raise WorkflowInvalid([Problem("resume needs a run store", field="store",
                                           hint="pass store= (the CLI's --store)")])  # fmt: skip
        # a resume continues with the stored run's inputs; those given now override them
        stored = _stored_inputs(run_store, resume, compiled)
        if inputs is None:
            raw, inputs_from_text = stored, False
        else:
            raw = {**stored, **raw}
    values = resolve_inputs(compiled.workflow, raw, from_text=inputs_from_text)
    secrets = Secrets.of(compiled.workflow, values)  # None (nothing to mask) unless secret inputs
    if isinstance(resume, str):
        from fanflow.store.resume import describe_plan, plan_resume

        plan = plan_resume(run_store, resume, compiled, values)  # type: ignore[arg-type]
        state, resume_note = plan.state, describe_plan(plan)
    elif resume is not None:
        state = resume
    with provider_config.overrides(providers):
        preflight(compiled)
    run_executor = _check_executors(compiled, executor)

    all_listeners: list[Listener] = []
    if progress is not None:
        from fanflow.observe.progress import make_progress

        all_listeners.append(make_progress(stream=progress))
        if resume_note:
            print(resume_note, file=progress, flush=True)
    tracer = collector = None
    if trace is not None or timeline is not None:
        from fanflow.observe.trace import TraceWriter

        tracer = TraceWriter(Path(trace) if trace is not None else None)
        all_listeners.append(tracer)
    if summary:
        from fanflow.observe.summary import SummaryCollector

        # With a trace, the summary reads the trace's recording instead of recording again.
        collector = SummaryCollector(tracer.recorder if tracer else None)
        if tracer is None:
            all_listeners.append(collector)
    run_id = run_id or (state.run_id if state else None) or _new_run_id()
    if run_store is not None and checkpoint:
        from fanflow.store.checkpoint import CheckpointWriter

        all_listeners.append(CheckpointWriter(run_store, workflow=compiled,
                                              workflow_path=compiled.source, inputs=values,
                                              resume=state, run_id=run_id, secrets=secrets))  # fmt: skip
    all_listeners += listeners
    if secrets is not None and all_listeners:  # every listener sees masked events
        all_listeners = [secrets.listener(all_listeners)]

    from fanflow.io import llm_cache  # `cache`: the llm response cache (docs/llm.md)

    cache_token = llm_cache.configure(cache, run_store.dir if run_store is not None else None)
    try:
        result = await _execute(compiled, values, all_listeners, state, run_id, max_concurrent,
                                limits, handle_signals, budget, cancel,
                                run_executor=run_executor, providers=providers)  # fmt: skip
    finally:
        llm_cache.reset(cache_token)
    if timeline is not None and tracer is not None:
        from fanflow.observe.timeline import write_timeline

        try:
            write_timeline(tracer.to_dict(), timeline)
        except OSError as exc:  # the run's result stands; say why the picture is missing
            result.warnings.append(f"cannot write timeline {timeline}: {exc.strerror or exc}")
    if collector is not None:
        from fanflow.observe.summary import format_summary

        result.summary = collector.summary(result.store)  # + llm usage and cost
        result.summary_text = format_summary(result.summary)
    if secrets is not None:
        secrets.result(result)
    return result


class _RunExecutor:
    """The run's executor choice, checked; `new` makes the run's Executors."""

    def __init__(self, choice: Any) -> None:
        self.choice = choice

    def new(self, on_close: Any) -> Any:
        from fanflow.execute.executors import Executors

        return Executors(self.choice, on_close)


def _check_executors(compiled: CompiledWorkflow, executor: str | None) -> _RunExecutor:
    """The run's --executor, parsed, and the workflow's `executor` fields checked. (A run
    always gets its Executors: a sub-workflow may name an executor its parent does not.)"""
    from fanflow.execute.executors import check_executors, parse_executor

    wf = compiled.workflow
    if wf.executor or any(n.executor for n in wf.nodes):
        check_executors(wf, lambda node_id: compiled.nodes[node_id].is_async)
    return _RunExecutor(parse_executor(executor) if executor else None)


async def _execute(
    compiled: CompiledWorkflow,
    values: dict[str, Any],
    listeners: list[Listener],
    resume: ResumeState | None,
    run_id: str,
    max_concurrent: int | None,
    limit_specs: Sequence[str],
    handle_signals: bool,
    shared_budget: Budget | None = None,
    cancel: asyncio.Event | None = None,
    run_executor: Any = None,
    providers: dict[str, dict[str, Any]] | None = None,
) -> RunResult:
    wf = compiled.workflow
    budget = max_concurrent or wf.max_concurrent or DEFAULT_MAX_CONCURRENT
    if shared_budget is not None:
        budget = shared_budget.size
    loop = asyncio.get_running_loop()
    bus = EventBus(listeners)
    threads = ThreadExecutor(loop, budget)
    ctx = RunContext(run_id=run_id, bus=bus, threads=threads, loop=loop, workflow=wf,
                     resume=resume)  # fmt: skip
    if run_executor is not None:  # an executor other than the threads may be used
        ctx.executors = run_executor.new(ctx.on_close)
    from fanflow.io.provider_config import active, build_table

    ctx.providers = build_table(wf, extra=dict(providers or {}))
    try:
        if wf.limits or limit_specs or os.environ.get("FANFLOW_LIMITS"):
            from fanflow.io.limits import LimitRegistry, merge_limits

            sections = {k: v.to_dict(exclude_none=True) for k, v in wf.limits.items()}
            ctx.limits = LimitRegistry(merge_limits(sections, limit_specs, os.environ)) or None
        ctx.budget = shared_budget if shared_budget is not None else Budget(budget)
        rs = RunState(compiled, values, ctx, ctx.budget, resume)
        driver = Driver(rs)
        signals = _Signals(loop, driver) if handle_signals else None
        started = time.perf_counter()
        graph = compiled.graph
        if bus.listeners:
            bus.emit(
                ev.RUN_STARTED, run_id=run_id, workflow=compiled.label, inputs=values,
                nodes=graph.ids, wall_start=time.time(), max_concurrent=budget,
                deps=graph.deps,  # read-only: listeners copy what they keep
                batch_nodes=[n for n, p in compiled.nodes.items() if p.batch is not None],
            )  # fmt: skip
        watcher = _watch_cancel(cancel, driver) if cancel is not None else None
        try:
            if signals is not None:
                signals.install()
            with active(ctx.providers):  # resource_keys resolve models with the run's table
                await driver.run()
        finally:
            if watcher is not None:
                watcher.cancel()
            if signals is not None:
                signals.driver = None  # the run is over: a signal now cancels nothing
            await ctx.aclose()
            threads.shutdown()
            if signals is not None:
                signals.restore()
        result = _result(rs, driver, run_id, time.perf_counter() - started)
        if driver.interrupted and signals is not None and signals.received is not None:
            result.signal = signals.received
            result.error = f"interrupted by {signal.Signals(signals.received).name}"
        bus.emit(ev.RUN_FINISHED, status=result.status, outputs=result.outputs, error=result.error,
                 failed_node=result.failed_node, duration_ms=result.duration_ms)  # fmt: skip
    except ev.ListenerFailed as failed:  # the caller gets the listener's own exception
        raise failed.error from None
    finally:
        bus.close()  # listeners flush (checkpoints, trace) even if the run itself raised
    return result


def _watch_cancel(cancel: asyncio.Event, driver: Driver) -> asyncio.Task[None]:
    """`run_async(cancel=...)`: interrupt the driver when the event is set."""

    async def watch() -> None:
        await cancel.wait()
        driver.interrupt()

    return asyncio.get_running_loop().create_task(watch())


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _Signals:
    """`handle_signals`: the first SIGINT, SIGTERM or SIGHUP cancels the run as fail-fast does
    (every subprocess group killed, the run recorded as cancelled); a signal ignored when the
    run starts (`nohup`) stays ignored. Any signal after the first takes its default action at
    once: the process ends by that signal (a shell shows the same 128 + n) and the supervisor
    kills the children (execute/children.py). The handlers found are put back when the run ends."""

    def __init__(self, loop: asyncio.AbstractEventLoop, driver: Driver) -> None:
        self.loop = loop
        self.driver: Driver | None = driver
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        for sig in STOP_SIGNALS:
            if signal.getsignal(sig) == signal.SIG_IGN:  # `nohup fanflow …`: stays ignored
                continue
            self._previous[sig] = signal.getsignal(sig)
            self.loop.add_signal_handler(sig, self._first, sig)

    def _first(self, sig: int) -> None:
        if self.received is not None:
            return
        self.received = sig
        for other in self._previous:  # a second signal must not wait for a graceful shutdown
            self.loop.remove_signal_handler(other)
            signal.signal(other, signal.SIG_DFL)
        if self.driver is not None:
            self.driver.interrupt()

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            self.loop.remove_signal_handler(sig)
            signal.signal(sig, signal.SIG_DFL if handler is None else handler)


def preflight(compiled: CompiledWorkflow) -> None:
    """Checks that need the environment (API keys), done before anything runs."""
    problems = []
    seen = set()
    for i, (node_id, plan) in enumerate(compiled.nodes.items()):
        check = getattr(plan.cls, "preflight", None)
        in_workflow = getattr(plan.cls, "preflight_in_workflow", None)
        params = compiled.workflow.nodes[i].params
        if in_workflow is not None:  # checks that need the workflow's settings (providers)
            message = in_workflow(params, compiled.workflow)
        else:
            message = check(params) if check is not None else None
        if message and message not in seen:
            seen.add(message)
            problems.append(Problem(message, compiled.source, f"nodes[{i}]", node_id))
    if problems:
        raise WorkflowInvalid(problems)


def _result(rs: RunState, driver: Driver, run_id: str, duration: float) -> RunResult:
    warnings = list(rs.compiled.warnings)
    outputs, missing = rs.declared_outputs()
    if not driver.failures and not driver.interrupted:
        warnings += [f"output '{name}' has no value: {why}" for name, why in missing.items()]
    nodes = rs.records  # the records the run kept are its per-node results
    error = failed_node = None
    if driver.interrupted:
        status, error = CANCELLED, "interrupted"
    elif driver.failures:
        first = driver.failures[0]
        status, failed_node = FAILED, first.node_id
        error = f"node '{first.node_id}' failed: {first}"
        if len(driver.failures) > 1:
            error += f" (and {len(driver.failures) - 1} more failed node(s))"
    else:
        status = SUCCESS
    raw = next((n for n, o in rs.compiled.workflow.outputs.items() if o.stdout), None)
    return RunResult(run_id, status, outputs, duration * 1000, nodes, rs.store, error,
                     failed_node, warnings, stdout_output=raw)  # fmt: skip


def _open_store(store: str | Path | RunStore) -> RunStore:
    from fanflow.store.runs import RunStore

    return store if isinstance(store, RunStore) else RunStore(Path(store))


def default_store() -> RunStore:
    """The run store the CLI uses by default: .fanflow/ (or $FANFLOW_HOME)."""
    from fanflow.store.runs import RunStore

    return RunStore(None)


def _stored_inputs(store: RunStore, ref: str, compiled: CompiledWorkflow) -> dict[str, Any]:
    from fanflow.store.runs import workflow_name

    name = workflow_name(compiled.source, compiled.workflow) if ref.strip() == "last" else None
    stored = store.get_run(ref, workflow=name).inputs or {}
    return {k: v for k, v in stored.items() if v != MASK}  # masked: a secret, given again


def _new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + uuid.uuid4().hex[:4]
