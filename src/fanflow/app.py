"""What `fanflow run` does beyond the engine: wire the listeners (progress, summary, trace,
checkpoint) onto the one event stream, resume from the run store, write the timeline."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from fanflow.engine.inputs import parse_cli_pairs, resolve_inputs
from fanflow.engine.runner import RunResult, run_async
from fanflow.ir.load import load_workflow


def execute_run(
    workflow_path: str,
    input_pairs: tuple[str, ...] | list[str],
    *,
    max_concurrent: int | None = None,
    trace_path: str | None = None,
    timeline_path: str | None = None,
    limit_specs: tuple[str, ...] = (),
    resume_ref: str | None = None,
    store_path: str | None = None,
    checkpoint: bool = True,
    quiet: bool = False,
    json_output: bool = False,
) -> tuple[RunResult, str | None]:
    """Run a workflow file as the CLI does. Returns the result and the summary text."""
    workflow = load_workflow(workflow_path)
    raw_inputs: dict[str, Any] = parse_cli_pairs(input_pairs)
    from_text = True

    store = resume = None
    if checkpoint or resume_ref:
        from fanflow.store.runs import RunStore

        store = RunStore(Path(store_path) if store_path else None)
    if resume_ref and not input_pairs:
        # `--resume` alone continues with the inputs the stored run had.
        raw_inputs, from_text = _stored_inputs(store, resume_ref, workflow_path, workflow), False
    # Typed once here, so the run store and a resume compare the values the run sees.
    inputs = resolve_inputs(workflow, raw_inputs, from_text=from_text)
    if resume_ref:
        from fanflow.store.resume import describe_plan, plan_resume

        plan = plan_resume(store, resume_ref, workflow, inputs)
        resume = plan.state
        if not quiet:  # say what is reused and what runs again
            print(describe_plan(plan), file=sys.stderr, flush=True)

    listeners: list[Any] = [_progress(quiet)]
    trace = None
    if trace_path or timeline_path:
        from fanflow.observe.trace import TraceWriter

        trace = TraceWriter(Path(trace_path) if trace_path else None)
        listeners.append(trace)
    from fanflow.observe.summary import SummaryCollector

    # With a trace, the summary reads the trace's recording instead of recording again.
    summary = SummaryCollector(trace.recorder if trace else None)
    if trace is None:
        listeners.append(summary)
    if checkpoint:
        from fanflow.store.checkpoint import CheckpointWriter

        listeners.append(CheckpointWriter(store, workflow_path=workflow_path, workflow=workflow,
                                          inputs=inputs, resume=resume))  # fmt: skip

    result = asyncio.run(
        run_async(
            workflow, inputs, max_concurrent=max_concurrent, listeners=listeners, resume=resume,
            limits=limit_specs, handle_sigint=True, workflow_name=workflow_path,
        )
    )  # fmt: skip
    if timeline_path and trace is not None:
        from fanflow.observe.timeline import write_timeline

        try:
            write_timeline(trace.to_dict(), timeline_path)
        except OSError as exc:  # the run's result stands; say why the picture is missing
            result.warnings.append(f"cannot write timeline {timeline_path}: {exc.strerror or exc}")
    from fanflow.observe.summary import format_summary

    result.summary = summary.summary()
    return result, format_summary(result.summary)


def _progress(quiet: bool) -> Any:
    from fanflow.observe.progress import make_progress

    return make_progress(stream=sys.stderr, quiet=quiet)


def _stored_inputs(store: Any, ref: str, workflow_path: str, workflow: Any) -> dict[str, Any]:
    from fanflow.store.runs import workflow_name

    name = workflow_name(workflow_path, workflow) if ref.strip() == "last" else None
    return dict(store.get_run(ref, workflow=name).inputs or {})
