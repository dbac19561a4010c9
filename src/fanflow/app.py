"""What `fanflow run` does beyond the engine: wire the listeners (progress, summary, trace,
checkpoint) onto the one event stream, resume from the run store, write the timeline."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

from fanflow.engine.inputs import parse_cli_pairs
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
    inputs = parse_cli_pairs(input_pairs)

    listeners: list[Any] = []
    progress = _progress(quiet)
    if progress is not None:
        listeners.append(progress)
    summary = _summary()
    if summary is not None:
        listeners.append(summary)
    trace = None
    if trace_path or timeline_path:
        from fanflow.observe.trace import TraceWriter

        trace = TraceWriter(Path(trace_path) if trace_path else None)
        listeners.append(trace)

    resume = None
    if checkpoint or resume_ref:
        _store, resume, writer = _checkpointing(
            workflow_path, workflow, inputs, store_path, resume_ref, checkpoint
        )
        if writer is not None:
            listeners.append(writer)

    result = asyncio.run(
        run_async(
            workflow, inputs, max_concurrent=max_concurrent, listeners=listeners, resume=resume,
            limits=limit_specs, inputs_from_text=True, handle_sigint=True, workflow_name=workflow_path,
        )
    )  # fmt: skip
    if timeline_path and trace is not None:
        from fanflow.observe.timeline import write_timeline

        try:
            write_timeline(trace.to_dict(), timeline_path)
        except OSError as exc:  # the run's result stands; say why the picture is missing
            result.warnings.append(f"cannot write timeline {timeline_path}: {exc.strerror or exc}")
    text = None
    if summary is not None:
        from fanflow.observe.summary import format_summary

        data = summary.summary()
        result.summary = data
        text = format_summary(data)
    return result, text


def _progress(quiet: bool) -> Any:
    try:
        from fanflow.observe.progress import make_progress
    except ImportError:
        return None
    return make_progress(stream=sys.stderr, quiet=quiet)


def _summary() -> Any:
    try:
        from fanflow.observe.summary import SummaryCollector
    except ImportError:
        return None
    return SummaryCollector()


def _checkpointing(
    workflow_path: str, workflow: Any, inputs: dict[str, Any], store_path: str | None,
    resume_ref: str | None, checkpoint: bool,
) -> tuple[Any, Any, Any]:  # fmt: skip
    try:
        from fanflow.store.runs import CheckpointWriter, RunStore
    except ImportError:
        return None, None, None
    store = RunStore(Path(store_path) if store_path else None)
    resume = None
    if resume_ref:
        from fanflow.store.resume import load_resume

        resume = load_resume(store, resume_ref, workflow, inputs)
    writer = None
    if checkpoint:
        writer = CheckpointWriter(
            store, workflow_path=workflow_path, workflow=workflow, resume=resume
        )
    return store, resume, writer
