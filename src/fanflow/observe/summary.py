"""Run summary: where the time went, computed from the event stream.

Figures (all times in ms):
- wall_ms: run_started → run_finished.
- busy_ms: the sum of leaf execution time — a node's run time, or for a batch node the sum of its
  items' times (the batch's own span is a container and is not counted twice).
- parallelism: busy ÷ wall, the average number of executions in flight.
- idle_ms: wall time during which nothing ran (start-up, scheduling gaps). A sequential run would
  pay it too, so the sequential estimate is busy + idle and speedup = that ÷ wall.
- critical_path: the chain that was actually realised, walked back from the last node to finish
  through, at each step, the dependency that finished last before the node started.
- nodes: node counts by status (`fanflow.status.Status`: the last run of a node that ran several
  times counts); `handled` says how many of the failed were taken by an `error` edge, `resumed`
  how many of the successful completed in an earlier run; `pending` counts the nodes that never
  started because the run stopped first.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable
from operator import itemgetter
from typing import Any

from fanflow._gc import gc_paused
from fanflow.events import Event
from fanflow.observe._spans import Built, Recorder, Span, short_error, sub_workflow_holders
from fanflow.status import CANCELLED, FAILED, PENDING, RUNNING, SKIPPED, SUCCESS

TOP_SLOWEST = 5
MAX_FAILURES = 10
_EPS = 1e-9  # perf_counter ties: a dependency finishing "at" the start still counts as before
_RETRIES = itemgetter(10)  # Span.retries, at C speed
_SECOND = itemgetter(1)


def _ms(seconds: float) -> float:
    # ms to the µs; round() to whole units is much cheaper than round(x, 3)
    return round(seconds * 1e6) / 1e3


class SummaryCollector:
    """Listener; call `summary()` after the run (or during it, for a partial picture)."""

    on_event: Callable[[Event], None]  # the recorder's list.append: the hot path is one append

    def __init__(self, recorder: Recorder | None = None) -> None:
        # A recorder shared with a TraceWriter records each event once for both; the owner of
        # the recorder is then the only one subscribed to the bus.
        self._rec = recorder or Recorder()
        self.on_event = self._rec.on_event

    def close(self) -> None:
        pass

    def summary(self, store: dict[str, Any] | None = None) -> dict[str, Any]:
        """`store`: the run's node outputs, from which the llm usage and cost are added."""
        built = self._rec.build()
        with gc_paused():
            out = summarize(built, self._rec.meta())
        if store:
            usage = llm_usage(store)
            if usage is not None:
                out["llm"] = usage
        return out


def _union_length(intervals: list[tuple[float, float]]) -> float:
    total = 0.0
    cur_s = cur_e = None
    for s, e in sorted(intervals):
        if cur_e is None or s > cur_e:
            if cur_e is not None:
                total += cur_e - cur_s  # type: ignore[operator]
            cur_s, cur_e = s, e
        elif e > cur_e:
            cur_e = e
    if cur_e is not None:
        total += cur_e - cur_s  # type: ignore[operator]
    return total


def summarize(built: Built, meta: dict[str, Any]) -> dict[str, Any]:
    # Spans are read by position in the passes over all of them (a tuple index is much cheaper
    # than a NamedTuple attribute): 0 node, 1 item, 2 start, 3 end, 4 status, 8 batch, 9 handled.
    spans = built.spans
    node_runs = [s for s in spans if s[1] is None]
    items = [s for s in spans if s[1] is not None] if len(node_runs) != len(spans) else []
    items_by_node: dict[str, list[Span]] = {}
    for s in items:
        items_by_node.setdefault(s.node, []).append(s)
    batch_nodes = set(meta.get("batch_nodes") or ()) | set(items_by_node)
    batch_nodes.update([s[0] for s in node_runs if s[8] is not None])

    leaf_runs = [s for s in node_runs if s[0] not in batch_nodes] if batch_nodes else node_runs
    holders = sub_workflow_holders(node_runs)  # their time is their children's: not counted
    if holders:
        leaf_runs = [s for s in leaf_runs if (s[0], None) not in holders]
        items = [s for s in items if (s[0], s[1]) not in holders]
    intervals = [(s[2], s[3]) for s in leaf_runs] + [(s[2], s[3]) for s in items]
    busy = sum([e - s for s, e in intervals])
    wall = max(built.t_end - built.t0, 0.0)
    idle = max(wall - _union_length(intervals), 0.0)

    # Per node, summed over loop visits: its time (wall), its last status, its runs.
    names = [s[0] for s in node_runs]
    runs_by_node: dict[str, int] = {}
    if len(set(names)) == len(names):  # each node ran once: the usual case, done at C speed
        wall_by_node = {s[0]: s[3] - s[2] for s in node_runs}
        status_by_node = {s[0]: s[4] for s in node_runs}
        handled = {s[0] for s in node_runs if s[9]}
    else:
        wall_by_node, status_by_node, handled = {}, {}, set()
        for s in node_runs:
            wall_by_node[s.node] = wall_by_node.get(s.node, 0.0) + s.duration
            status_by_node[s.node] = s.status
            runs_by_node[s.node] = runs_by_node.get(s.node, 0) + 1
            if s.handled:
                handled.add(s.node)
            else:
                handled.discard(s.node)
    for sk in built.skips:
        status_by_node.setdefault(sk.node, SKIPPED)
    resumed = 0
    for sk in built.resumed:
        if sk.node not in status_by_node:
            status_by_node[sk.node] = SUCCESS  # completed by an earlier run
            resumed += 1

    nested = sum(1 for n in status_by_node if "/" in n)  # nodes of sub-workflows
    counts = dict(Counter(v for n, v in status_by_node.items() if "/" not in n))
    not_run = [n for n in meta.get("nodes") or () if n not in status_by_node]
    if not_run:  # never started: the run stopped first (fail-fast, interrupt)
        counts[PENDING] = len(not_run)

    slowest = []
    for node, dur in heapq.nlargest(TOP_SLOWEST, wall_by_node.items(), key=_SECOND):
        entry: dict[str, Any] = {"node": node, "ms": _ms(dur), "status": status_by_node[node]}
        if node in handled:
            entry["handled"] = True
        if node in batch_nodes:
            node_items = items_by_node.get(node, ())
            entry["items"] = len(node_items)
            entry["busy_ms"] = _ms(sum([s.end - s.start for s in node_items]))
        if runs_by_node.get(node, 1) > 1:
            entry["runs"] = runs_by_node[node]
        slowest.append(entry)

    failures: list[dict[str, Any]] = []
    failed = [s for s in spans if s[4] == FAILED]
    for s in failed[:MAX_FAILURES]:
        f: dict[str, Any] = {"node": s.node}
        if s.item is not None:
            f["item"] = s.item
        if s.handled:
            f["handled"] = True
        f["error"] = short_error(s.error, 300)
        failures.append(f)

    if holders:  # the path runs through this workflow's nodes, then descends into children
        path = critical_path(built, meta.get("deps"), [s for s in node_runs if "/" not in s[0]])
        _descend(path, spans, holders, built.t0)
    else:
        path = critical_path(built, meta.get("deps"), node_runs)
    seq = busy + idle
    return {
        "status": meta.get("status") or (RUNNING if spans else PENDING),
        "wall_ms": _ms(wall),
        "busy_ms": _ms(busy),
        "idle_ms": _ms(idle),
        "parallelism": round(busy / wall, 2) if wall > 0 else 0.0,
        "sequential_estimate_ms": _ms(seq),
        "speedup": round(seq / wall, 2) if wall > 0 else 1.0,
        "critical_path": path,
        "critical_path_ms": round(sum([p["ms"] for p in path]), 3),
        "slowest": slowest,
        "nodes": counts,
        "nested": nested,
        "handled": len(handled),  # of the failed: an `error` edge took the failure
        "resumed": resumed,
        "retries": sum(map(len, map(_RETRIES, spans))),
        "failed_items": sum(1 for s in failed if s.item is not None),
        "failures": failures,
        **({"failed_node": meta["failed_node"]} if meta.get("failed_node") else {}),
    }


def llm_usage(store: dict[str, Any]) -> dict[str, Any] | None:
    """Token usage and estimated cost of the run's llm calls, per node and in total, read from
    the `llm_usage` outputs (a batch's items are summed; a loop's node counts its last visit).
    `cost_usd` sums the known costs; `cost_unknown` lists the models with no price."""
    by_node: dict[str, dict[str, Any]] = {}
    for node, outputs in store.items():
        if not isinstance(outputs, dict):
            continue
        found = [outputs.get("llm_usage")]
        results = outputs.get("results")
        if found[0] is None and isinstance(results, list):
            found = [r.get("llm_usage") for r in results if isinstance(r, dict)]
        entries = [u for u in found if isinstance(u, dict) and "input_tokens" in u]
        if entries:
            by_node[node] = _add_usage(entries)
    if not by_node:
        return None
    total = _add_usage(list(by_node.values()))
    return {**total, "by_node": by_node}


def _add_usage(entries: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"calls": 0, "requests": 0, "cached": 0, "mocked": 0,
                           "input_tokens": 0, "output_tokens": 0, "total_tokens": 0,
                           "cost_usd": 0.0, "cost_unknown": []}  # fmt: skip
    unknown: set[str] = set()
    for u in entries:
        single = "calls" not in u  # one call's llm_usage, or an already added node
        out["calls"] += 1 if single else u["calls"]
        out["requests"] += int(u.get("requests", 1) or 0)
        out["cached"] += (1 if u.get("cached") else 0) if single else u["cached"]
        out["mocked"] += (1 if u.get("mocked") else 0) if single else u["mocked"]
        for key in ("input_tokens", "output_tokens", "total_tokens"):
            out[key] += int(u.get(key) or 0)
        cost = u.get("cost_usd")
        if cost is not None:
            out["cost_usd"] += float(cost)
        if single and cost is None:
            unknown.add(str(u.get("model") or "?"))
        unknown.update(u.get("cost_unknown") or ())
    out["cost_usd"] = round(out["cost_usd"], 8)
    out["cost_unknown"] = sorted(unknown)
    return out


def format_llm_usage(u: dict[str, Any]) -> str:
    notes = [f"{u[k]} {k}" for k in ("cached", "mocked") if u.get(k)]
    line = f"  llm: {u['calls']} calls" + (f" ({', '.join(notes)})" if notes else "")
    if u["requests"] != u["calls"] - u["cached"] - u["mocked"]:
        line += f", {u['requests']} requests"
    line += f", {u['input_tokens']:,} tokens in / {u['output_tokens']:,} out"
    unknown = u.get("cost_unknown") or []
    if unknown and not u["cost_usd"]:
        return line + f", cost unknown ({', '.join(unknown)})"
    line += f", est. ${u['cost_usd']:.4f}"
    if unknown:
        line += f" + cost unknown for {', '.join(unknown)}"
    return line


_NOT_ON_PATH = (SKIPPED, CANCELLED)  # cancelled nodes stop because something else failed


def _descend(
    path: list[dict[str, Any]], spans: list[Span], holders: set[tuple[str, int | None]], t0: float
) -> None:
    """For each step of the path that ran a sub-workflow, `via`: the chain inside the child
    run that ended last (for a batch, its slowest item), walked back from its last span by
    what finished before each started."""
    for step in path:
        node = step["node"]
        if (node, None) not in holders:
            continue
        runs = [
            s for s in spans if s.item is not None and s.node == node and (node, s.item) in holders
        ]
        key = f"{node}[{max(runs, key=lambda s: s.end).item}]/" if runs else f"{node}/"
        inner = sorted(
            (
                s
                for s in spans
                if s.item is None and s.node.startswith(key) and "/" not in s.node[len(key) :]
            ),
            key=lambda s: s.end,
        )
        chain: list[Span] = []
        while inner:
            last = inner.pop()
            chain.append(last)
            inner = [s for s in inner if s.end <= last.start + _EPS]
        step["via"] = [
            {"node": s.node, "ms": round((s.end - s.start) * 1e6) / 1e3} for s in reversed(chain)
        ]


def critical_path(
    built: Built, deps: dict[str, list[str]] | None, node_runs: list[Span] | None = None
) -> list[dict[str, Any]]:
    """The realised critical path, first node first. Each step: {node, ms, start_ms, end_ms,
    status}. Skipped nodes take part with 0 ms (an or-join waits on the branch that ran)."""
    if node_runs is None:
        node_runs = [s for s in built.spans if s.item is None]
    # Every finish of every node (loops finish several times): node -> [(end, start, status)].
    finishes: dict[str, list[tuple[float, float, str]]] = {}
    last: tuple[str, tuple[float, float, str]] | None = None  # the latest finish that ran
    for node, _, start, end, status, *_ in node_runs:
        f = (end, start, status)
        runs = finishes.get(node)
        if runs is None:
            finishes[node] = [f]
        else:
            runs.append(f)
        if (last is None or end > last[1][0]) and status not in _NOT_ON_PATH:
            last = (node, f)
    for sk in built.skips:
        finishes.setdefault(sk.node, []).append((sk.t, sk.t, SKIPPED))
    if not finishes:
        return []
    if last is None:  # nothing ran to completion: the path ends at the latest of the others
        last = max(((n, f) for n, fs in finishes.items() for f in fs), key=lambda nf: nf[1][0])
    last_node, (end, start, status) = last
    steps = [(last_node, start, end, status)]
    seen = {(last_node, end)}
    deps = deps or {}
    node, cur_start = last_node, start
    while True:
        best: tuple[str, float, float, str] | None = None
        for dep in deps.get(node, ()):
            for f_end, f_start, f_status in finishes.get(dep, ()):
                if f_end <= cur_start + _EPS and (best is None or f_end > best[2]):
                    best = (dep, f_start, f_end, f_status)
        if best is None or (best[0], best[2]) in seen:
            break
        seen.add((best[0], best[2]))
        steps.append(best)
        node, cur_start = best[0], best[1]
    steps.reverse()
    t0 = built.t0
    return [
        {
            "node": n,
            "ms": round((e - s) * 1e6) / 1e3,
            "start_ms": round((s - t0) * 1e6) / 1e3,
            "end_ms": round((e - t0) * 1e6) / 1e3,
            "status": st,
        }
        for n, s, e, st in steps
    ]


def _fmt_s(ms: float) -> str:
    if ms < 1:
        return f"{ms:.2f}ms"
    if ms < 1000:
        return f"{ms:.0f}ms"
    return f"{ms / 1000:.2f}s"


def _fmt_step(step: dict[str, Any]) -> str:
    text = f"{step['node']} {_fmt_s(step['ms'])}"
    via = step.get("via")
    if via:
        text += " [" + " -> ".join(f"{v['node']} {_fmt_s(v['ms'])}" for v in via) + "]"
    return text


def format_summary(d: dict[str, Any]) -> str:
    """A few lines for stderr. ASCII only, so it survives any terminal or log encoding."""
    counts = d.get("nodes", {})
    notes = {FAILED: (d.get("handled"), "handled"), SUCCESS: (d.get("resumed"), "resumed")}
    parts = []
    for st, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        extra, word = notes.get(st, (None, ""))
        parts.append(f"{n} {st}" + (f" incl. {extra} {word}" if extra else ""))
    total = sum(counts.values())
    nested = f", +{d['nested']} in sub-workflows" if d.get("nested") else ""
    lines = [
        f"run {d.get('status', '?')} in {_fmt_s(d['wall_ms'])}: {total} nodes"
        + (f" ({', '.join(parts)}{nested})" if parts else "")
    ]
    lines.append(
        f"  busy {_fmt_s(d['busy_ms'])}, parallelism {d['parallelism']:.1f}x, "
        f"~{d['speedup']:.1f}x faster than sequential (~{_fmt_s(d['sequential_estimate_ms'])})"
    )
    path = d.get("critical_path") or []
    if path:
        shown = path if len(path) <= 8 else [*path[:3], None, *path[-4:]]
        chain = " -> ".join("..." if p is None else _fmt_step(p) for p in shown)
        lines.append(
            f"  critical path {_fmt_s(d['critical_path_ms'])} ({len(path)} nodes): {chain}"
        )
    slow = d.get("slowest") or []
    if len(slow) > 1:
        lines.append("  slowest: " + ", ".join(f"{s['node']} {_fmt_s(s['ms'])}" for s in slow))
    extra = []
    if d.get("retries"):
        extra.append(f"retries: {d['retries']}")
    if d.get("failed_items"):
        extra.append(f"failed items: {d['failed_items']}")
    if extra:
        lines.append("  " + ", ".join(extra))
    if d.get("llm"):
        lines.append(format_llm_usage(d["llm"]))
    for f in d.get("failures") or []:
        where = f["node"] + (f"[{f['item']}]" if "item" in f else "")
        if f.get("handled"):
            where += " (handled by its error edge)"
        err = (f.get("error") or "").splitlines()
        lines.append(f"  failed {where}: {err[0] if err else 'error'}"[:200])
    return "\n".join(lines)
