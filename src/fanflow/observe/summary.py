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
"""

from __future__ import annotations

from typing import Any

from fanflow.engine.events import Event
from fanflow.observe._spans import Built, Recorder, Span, short_error

TOP_SLOWEST = 5
MAX_FAILURES = 10
_EPS = 1e-9  # perf_counter ties: a dependency finishing "at" the start still counts as before


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


class SummaryCollector:
    """Listener; call `summary()` after the run (or during it, for a partial picture)."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        # A recorder shared with a TraceWriter records each event once for both; the owner of
        # the recorder is then the only one subscribed to the bus.
        self._rec = recorder or Recorder()
        self.on_event = self._rec.on_event  # the hot path is one append

    def on_event(self, event: Event) -> None:  # replaced per instance in __init__
        self._rec.on_event(event)

    def close(self) -> None:
        pass

    def summary(self) -> dict[str, Any]:
        return summarize(self._rec.build(), self._rec.meta())


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
    node_runs = [s for s in built.spans if s.item is None]
    items_by_node: dict[str, list[Span]] = {}
    for s in built.spans:
        if s.item is not None:
            items_by_node.setdefault(s.node, []).append(s)
    batch_nodes = set(meta.get("batch_nodes") or ()) | set(items_by_node)
    batch_nodes |= {s.node for s in node_runs if s.batch is not None}

    leaves = [s for s in built.spans if s.item is not None or s.node not in batch_nodes]
    busy = sum(s.duration for s in leaves)
    wall = max(built.t_end - built.t0, 0.0)
    covered = _union_length([(s.start, s.end or s.start) for s in leaves])
    idle = max(wall - covered, 0.0)

    # Per node: time (its run, or its items' total for a batch) summed over loop visits.
    busy_by_node: dict[str, float] = {}
    for s in leaves:
        busy_by_node[s.node] = busy_by_node.get(s.node, 0.0) + s.duration
    wall_by_node: dict[str, float] = {}
    status_by_node: dict[str, str] = {}
    runs_by_node: dict[str, int] = {}
    for s in node_runs:
        wall_by_node[s.node] = wall_by_node.get(s.node, 0.0) + s.duration
        status_by_node[s.node] = "handled" if s.handled else s.status
        runs_by_node[s.node] = runs_by_node.get(s.node, 0) + 1
    for sk in built.skips:
        status_by_node.setdefault(sk.node, "skipped")
    for sk in built.resumed:
        status_by_node.setdefault(sk.node, "resumed")

    counts: dict[str, int] = {}
    for st in status_by_node.values():
        counts[st] = counts.get(st, 0) + 1
    not_run = [n for n in meta.get("nodes") or () if n not in status_by_node]
    if not_run:  # never started: the run stopped first (fail-fast, interrupt)
        counts["not run"] = len(not_run)

    slowest = []
    for node, dur in sorted(wall_by_node.items(), key=lambda kv: -kv[1])[:TOP_SLOWEST]:
        entry: dict[str, Any] = {"node": node, "ms": _ms(dur), "status": status_by_node[node]}
        if node in batch_nodes:
            entry["items"] = len(items_by_node.get(node, ()))
            entry["busy_ms"] = _ms(busy_by_node.get(node, 0.0))
        if runs_by_node[node] > 1:
            entry["runs"] = runs_by_node[node]
        slowest.append(entry)

    failures: list[dict[str, Any]] = []
    failed_items = 0
    for s in built.spans:
        if s.status != "failed":
            continue
        if s.item is not None:
            failed_items += 1
        if len(failures) < MAX_FAILURES:
            f: dict[str, Any] = {"node": s.node}
            if s.item is not None:
                f["item"] = s.item
            if s.handled:
                f["handled"] = True
            f["error"] = short_error(s.error, 300)
            failures.append(f)

    path = critical_path(built, meta.get("deps"))
    seq = busy + idle
    return {
        "status": meta.get("status") or ("incomplete" if built.spans else "empty"),
        "wall_ms": _ms(wall),
        "busy_ms": _ms(busy),
        "idle_ms": _ms(idle),
        "parallelism": round(busy / wall, 2) if wall > 0 else 0.0,
        "sequential_estimate_ms": _ms(seq),
        "speedup": round(seq / wall, 2) if wall > 0 else 1.0,
        "critical_path": path,
        "critical_path_ms": round(sum(p["ms"] for p in path), 3),
        "slowest": slowest,
        "nodes": counts,
        "retries": sum(len(s.retries) for s in built.spans),
        "failed_items": failed_items,
        "failures": failures,
        **({"failed_node": meta["failed_node"]} if meta.get("failed_node") else {}),
    }


def critical_path(built: Built, deps: dict[str, list[str]] | None) -> list[dict[str, Any]]:
    """The realised critical path, first node first. Each step: {node, ms, start_ms, end_ms,
    status}. Skipped nodes take part with 0 ms (an or-join waits on the branch that ran)."""
    # Every finish of every node (loops finish several times): node -> [(end, start, status)].
    finishes: dict[str, list[tuple[float, float, str]]] = {}
    for s in built.spans:
        if s.item is None and s.end is not None:
            finishes.setdefault(s.node, []).append((s.end, s.start, s.status))
    for sk in built.skips:
        finishes.setdefault(sk.node, []).append((sk.t, sk.t, "skipped"))
    if not finishes:
        return []
    # Cancelled nodes stop when something else failed: the path that matters ends there.
    ran = [(n, f) for n, fs in finishes.items() for f in fs if f[2] not in ("skipped", "cancelled")]
    candidates = ran or [(n, f) for n, fs in finishes.items() for f in fs]
    last_node, (end, start, status) = max(candidates, key=lambda nf: nf[1][0])
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
            "ms": _ms(e - s),
            "start_ms": _ms(s - t0),
            "end_ms": _ms(e - t0),
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


def format_summary(d: dict[str, Any]) -> str:
    """A few lines for stderr. ASCII only, so it survives any terminal or log encoding."""
    counts = d.get("nodes", {})
    parts = [f"{n} {st}" for st, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]
    total = sum(counts.values())
    lines = [
        f"run {d.get('status', '?')} in {_fmt_s(d['wall_ms'])}: {total} nodes"
        + (f" ({', '.join(parts)})" if parts else "")
    ]
    lines.append(
        f"  busy {_fmt_s(d['busy_ms'])}, parallelism {d['parallelism']:.1f}x, "
        f"~{d['speedup']:.1f}x faster than sequential (~{_fmt_s(d['sequential_estimate_ms'])})"
    )
    path = d.get("critical_path") or []
    if path:
        shown = path if len(path) <= 8 else [*path[:3], None, *path[-4:]]
        chain = " -> ".join("..." if p is None else f"{p['node']} {_fmt_s(p['ms'])}" for p in shown)
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
    for f in d.get("failures") or []:
        where = f["node"] + (f"[{f['item']}]" if "item" in f else "")
        if f.get("handled"):
            where += " (handled by its error edge)"
        err = (f.get("error") or "").splitlines()
        lines.append(f"  failed {where}: {err[0] if err else 'error'}"[:200])
    return "\n".join(lines)
