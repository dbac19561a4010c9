"""`fanflow runs`: list, inspect and prune the runs recorded in the run store.

    fanflow runs [--limit N] [--workflow FILE]     recent runs, newest first
    fanflow runs show RUN_ID|PREFIX|last           per-node state of one run
    fanflow runs prune [--keep N] [--older-than 7d] [--dry-run]

`--store PATH` (on the group or any subcommand) picks the store; default as for `fanflow run`.
Unknown run ids exit 2 with a message, never a traceback.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from fanflow.errors import EXIT_INVALID
from fanflow.status import Status

_STORE_HELP = "Run store (SQLite) path; default .fanflow/runs.db or $FANFLOW_HOME/runs.db."
_FORMAT = click.Choice(["text", "json"])


def _store_option(f: Any) -> Any:
    return click.option(
        "--store",
        "store_path",
        type=click.Path(path_type=Path),
        default=None,
        help=_STORE_HELP,
    )(f)


def _open(ctx: click.Context, store_path: Path | None) -> Any:
    """Open the store; None (after a message) when it does not exist yet, so that merely looking
    never creates a .fanflow/ folder."""
    from fanflow.store.runs import RunStore, StoreError, resolve_store_path

    path = store_path or (ctx.obj or {}).get("store_path")
    resolved = resolve_store_path(path)
    if not resolved.exists():
        return None
    try:
        return RunStore(resolved)
    except StoreError as exc:
        _fail(str(exc), 1)


def _fail(message: str, code: int) -> NoReturn:
    from fanflow.cli import CommandFailed

    raise CommandFailed(message, code)  # the CLI reports it (JSON with --output-format json)


def _when(epoch: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch)) if epoch else "-"


def _dur(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.2f}s"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


def _short_path(workflow: str) -> str:
    """Paths under the current directory are shown relative to it."""
    try:
        return str(Path(workflow).relative_to(Path.cwd()))
    except ValueError:
        return workflow


def _one_line(text: str | None, width: int = 80) -> str:
    if not text:
        return ""
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1] + "…"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def _run_json(run: Any) -> dict[str, Any]:
    return {
        "id": run.id,
        "workflow": run.workflow,
        "status": run.effective_status,
        "started": run.started,
        "finished": run.finished,
        "duration_ms": None if run.duration is None else round(run.duration * 1000, 3),
        "attempts": run.attempts,
        "error": run.error,
        "failed_node": run.failed_node,
    }


@click.group("runs", invoke_without_command=True)
@_store_option
@click.option("-n", "--limit", type=click.IntRange(min=1), default=20, show_default=True)
@click.option("--workflow", type=click.Path(path_type=Path), default=None, help="Only this file.")
@click.option("--output-format", type=_FORMAT, default="text", help="json: one object on stdout.")
@click.pass_context
def runs(
    ctx: click.Context,
    store_path: Path | None,
    limit: int,
    workflow: Path | None,
    output_format: str,
) -> None:
    """List recent runs (newest first); `runs show ID` and `runs prune` for more."""
    ctx.ensure_object(dict)
    ctx.obj["store_path"] = store_path
    if ctx.invoked_subcommand is not None:
        return
    from fanflow.store.runs import workflow_name

    store = _open(ctx, store_path)
    records = []
    if store is not None:
        with store:
            wf = workflow_name(workflow) if workflow is not None else None
            records = store.list_runs(limit=limit, workflow=wf)
    if output_format == "json":
        click.echo(json.dumps({"runs": [_run_json(r) for r in records]}))
        return
    if not records:
        click.echo("no runs recorded yet", err=True)
        return
    rows = [["ID", "WORKFLOW", "STATUS", "STARTED", "DURATION"]]
    for r in records:
        status = r.effective_status + (f" ({r.attempts} attempts)" if r.attempts > 1 else "")
        rows.append([r.id, _short_path(r.workflow), status, _when(r.started), _dur(r.duration)])
    click.echo(_table(rows))


def _items_text(total: int | None, counts: dict[str, int]) -> str:
    if total is None and not counts:
        return ""
    ok = counts.get("success", 0)
    parts = [f"{ok}/{total if total is not None else '?'} ok"]
    for status in ("failed", "cancelled"):
        if counts.get(status):
            parts.append(f"{counts[status]} {status}")
    if total is not None:
        missing = total - sum(counts.values())
        if missing > 0:
            parts.append(f"{missing} pending")
    return ", ".join(parts)


@runs.command("show")
@click.argument("run_ref", metavar="RUN_ID")
@_store_option
@click.option("--output-format", type=_FORMAT, default="text", help="json: one object on stdout.")
@click.pass_context
def show(ctx: click.Context, run_ref: str, store_path: Path | None, output_format: str) -> None:
    """Per-node state of RUN_ID (an id, a unique prefix, or `last`)."""
    from fanflow.store.runs import UnknownRun

    store = _open(ctx, store_path)
    if store is None:
        _fail(f"no run '{run_ref}': no runs recorded yet", EXIT_INVALID)
    with store:
        try:
            run = store.get_run(run_ref)
        except UnknownRun as exc:
            _fail(str(exc), EXIT_INVALID)
        states = store.node_states(run.id, with_outputs=False)
        known = store.node_order(run)
    order = known + [n for n in states if n not in set(known)]

    if output_format == "json":
        nodes: dict[str, dict[str, Any]] = {}
        for n in order:
            st = states.get(n)
            if st is None:
                nodes[n] = {"status": Status.PENDING}
                continue
            nodes[n] = {
                "status": st.status,
                "action": st.action,
                "duration_ms": None if st.duration is None else round(st.duration * 1000, 3),
                "error": st.error,
                "attempts": st.attempts,
            }
            if st.item_count is not None or st.items:
                nodes[n]["items"] = {"count": st.item_count, **st.items}
            if st.note:
                nodes[n]["note"] = st.note
        payload = {**_run_json(run), "inputs": run.inputs, "outputs": run.outputs, "nodes": nodes}
        click.echo(json.dumps(payload, default=str))
        return

    head = f"run {run.id}  {run.effective_status}"
    if run.attempts > 1:
        head += f"  ({run.attempts} attempts)"
    lines = [
        head,
        f"  workflow  {_short_path(run.workflow)}",
        f"  started   {_when(run.started)}   duration {_dur(run.duration)}",
    ]
    if run.inputs:
        lines.append(f"  inputs    {_one_line(json.dumps(run.inputs, default=str), 100)}")
    if run.error:
        lines.append(f"  error     {_one_line(run.error, 100)}")
    click.echo("\n".join(lines))
    if not order:
        return
    rows = [["NODE", "STATUS", "ACTION", "DURATION", "ITEMS", "ERROR"]]
    for n in order:
        st = states.get(n)
        if st is None:
            rows.append([n, Status.PENDING, "", "", "", ""])
            continue
        detail = st.error or (st.note if st.status != "skipped" else "") or ""
        rows.append(
            [
                n,
                st.status,
                st.action or "",
                _dur(st.duration) if st.duration is not None else "",
                _items_text(st.item_count, st.items),
                _one_line(detail, 60),
            ]
        )
    click.echo()
    click.echo(_table(rows))


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 86400, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_age(text: str) -> float:
    """'7d', '12h', '30m', '90s', '2w' (a bare number means days) -> seconds."""
    m = _AGE.match(text.lower())
    if not m:
        raise ValueError(f"not an age: {text!r} (use e.g. 7d, 12h, 30m)")
    return float(m.group(1)) * _UNIT[m.group(2)]


@runs.command("prune")
@click.option("--keep", type=click.IntRange(min=0), default=None, help="Keep the N newest runs.")
@click.option("--older-than", "older_than", default=None, help="Delete runs older than this: 7d.")
@click.option("--dry-run", is_flag=True, help="Only list what would be deleted.")
@_store_option
@click.pass_context
def prune(
    ctx: click.Context,
    keep: int | None,
    older_than: str | None,
    dry_run: bool,
    store_path: Path | None,
) -> None:
    """Delete old runs. With both options, only runs beyond the newest N *and* older than the age
    go. Runs still in progress are never deleted."""
    if keep is None and older_than is None:
        _fail("give --keep N and/or --older-than AGE (e.g. --older-than 7d)", EXIT_INVALID)
    age = None
    if older_than is not None:
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            _fail(str(exc), EXIT_INVALID)
    store = _open(ctx, store_path)
    if store is None:
        click.echo("no runs recorded yet", err=True)
        return
    with store:
        gone = store.prune(keep=keep, older_than=age, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    click.echo(f"{verb} {len(gone)} run(s)", err=True)
    for run_id in gone:
        click.echo(run_id)
