"""`fanflow plan`: the static schedule of a validated workflow, before anything runs.

Pure functions over the graph model (fanflow.graph.Graph): dependency levels (what can run at the
same time), fan-outs, joins, conditional branches, loops, batches, warnings, and a Mermaid
`flowchart TD` of the graph.

Levels: the graph of components (a loop is one component) is a DAG; a component's level is one
more than the highest level among the components it depends on (edges ∪ template reads). Nodes
in one level never depend on each other. The scheduler is dataflow, not level-by-level: a node
starts as soon as its own dependencies finish, so levels show potential parallelism, not phases.
"""

from __future__ import annotations

import json
from typing import Any

from fanflow.graph import Graph

Guards = dict[str, frozenset[tuple[str, str]]]


def build_plan(workflow: Any, graph: Graph | None = None) -> dict[str, Any]:
    """The plan as a JSON-ready dict. `workflow` is a validated fanflow Workflow."""
    g = graph if graph is not None else workflow.graph
    order = {n: i for i, n in enumerate(g.ids)}
    comps = g.components
    comp_level: dict[int, int] = {}
    for comp in comps:  # components come in topological order
        members = set(comp.nodes)
        upstream = {g.comp_of[d] for n in comp.nodes for d in g.deps[n] if d not in members}
        comp_level[comp.index] = 1 + max((comp_level[c] for c in upstream), default=0)
    level_of = {n: comp_level[g.comp_of[n]] for n in g.ids}
    levels: list[list[str]] = [[] for _ in range(max(level_of.values(), default=0))]
    for n in g.ids:  # document order within a level
        levels[level_of[n] - 1].append(n)

    nodes = []
    for n in g.ids:
        spec = g.specs[n]
        entry: dict[str, Any] = {
            "id": n,
            "type": spec.type,
            "level": level_of[n],
            "deps": sorted(g.deps[n], key=order.__getitem__),
        }
        if spec.purpose:
            entry["purpose"] = spec.purpose
        if spec.batch is not None:
            b = spec.batch
            entry["batch"] = {
                "items": len(b.items) if isinstance(b.items, list) else b.items,
                "parallel": b.parallel,
                "max_concurrent": b.max_concurrent if b.parallel else 1,
                "error_handling": b.error_handling,
            }
        nodes.append(entry)

    # Fan-out: successors that start together when the node's action fires. Edges with another
    # action are alternatives (if/else), and successors inside the node's own loop take turns.
    # A template read without an edge makes the reader wait whatever the action.
    readers: dict[str, list[str]] = {n: [] for n in g.ids}
    for n in g.ids:
        edge_srcs = {e.src for e in g.in_edges[n]}
        for src in g.reads[n]:
            if src not in edge_srcs:
                readers[src].append(n)
    fan_outs = []
    up: dict[str, set[str]] = {}
    for n in g.ids:
        outside = [e for e in g.out_edges[n] if g.comp_of[e.dst] != g.comp_of[n]]
        by_action: dict[str, list[str]] = {}
        for e in outside:
            targets = by_action.setdefault(e.action, [])
            if e.dst not in targets:
                targets.append(e.dst)
        extra = [r for r in readers[n] if g.comp_of[r] != g.comp_of[n]]
        for action in by_action or {"default": []}:
            targets = by_action.get(action, []) + [
                r for r in extra if r not in by_action.get(action, [])
            ]
            if len(targets) > 1:  # a target waiting for another target does not start with it
                targets = [
                    t for t in targets if not any(_upstream(g, t, up) & {o} for o in targets)
                ]
            if len(targets) > 1:
                fan_outs.append(
                    {"node": n, "action": action, "to": sorted(targets, key=order.__getitem__)}
                )

    guards = _guards(g)
    loop_nodes = {n for c in comps if c.is_loop for n in c.nodes}
    joins = []
    for n in g.ids:
        if len(g.deps[n]) < 2 or n in loop_nodes:
            continue
        inputs = sorted(g.deps[n], key=order.__getitem__)
        joins.append({"node": n, "waits_for": inputs, "kind": _join_kind(inputs, guards)})

    branches = []
    for n in g.ids:
        outs = g.out_edges[n]
        if not any(e.action != "default" for e in outs):
            continue
        arms: dict[str, list[str]] = {}
        for e in outs:
            arms.setdefault(e.action, []).append(e.dst)
        branches.append({"node": n, "actions": arms})

    loops = []
    for comp in comps:
        if not comp.is_loop:
            continue
        members = set(comp.nodes)
        back = [
            {"from": e.src, "to": e.dst, "action": e.action}
            for n in comp.nodes
            for e in g.out_edges[n]
            if e.dst in members and (e.dst == comp.entry or e.src == e.dst)
        ]
        exits = [{"from": e.src, "to": e.dst, "action": e.action} for e in comp.out_edges]
        loops.append(
            {
                "nodes": comp.nodes,
                "entry": comp.entry,
                "back_edges": back,
                "exits": exits,
                "max_visits": workflow.max_visits,
            }
        )

    warnings = list(workflow.warnings)
    if g.implicit_chain and len(g.ids) > 1:
        warnings.append(
            "no edges: nodes run one after another in array order; add edges to let "
            "independent nodes run in parallel"
        )
    for n in g.ids:
        b = g.specs[n].batch
        if b is not None and not b.parallel:
            warnings.append(
                f"batch '{n}' runs its items one at a time; set \"parallel\": true to run "
                "them concurrently"
            )

    missing = [] if g.implicit_chain else g.missing_edges()
    return {
        "workflow": workflow.source or workflow.name,
        "nodes": nodes,
        "edges": [{"from": e.src, "to": e.dst, "action": e.action} for e in g.edges],
        "implicit_chain": g.implicit_chain,
        "levels": levels,
        # a loop counts once per level: its nodes take turns
        "max_parallel": max((len({g.comp_of[n] for n in lv}) for lv in levels), default=0),
        "fan_outs": fan_outs,
        "joins": joins,
        "branches": branches,
        "loops": loops,
        "missing_edges": [{"node": r, "reads": s} for r, s in missing],
        "warnings": warnings,
    }


def _upstream(g: Graph, node: str, cache: dict[str, set[str]]) -> set[str]:
    """Every node `node` waits for, directly or not (computed on demand: fan-outs are few)."""
    if node not in cache:
        seen: set[str] = set()
        stack = list(g.deps[node])
        while stack:
            d = stack.pop()
            if d not in seen:
                seen.add(d)
                stack.extend(g.deps[d])
        cache[node] = seen
    return cache[node]


def _guards(g: Graph) -> Guards:
    """For each node, the (branch node, action) choices that must hold for it to run at all:
    an edge with a non-default action adds its choice; a node with several incoming edges runs
    if any of them fires, so it keeps only the choices common to all of them."""
    guards: Guards = {}
    for comp in g.components:  # topological order
        members = set(comp.nodes)
        for n in comp.nodes:
            per_edge = []
            for e in g.in_edges[n]:
                if e.src in members:
                    continue  # inside a loop: the loop's entry conditions apply
                base = guards.get(e.src, frozenset())
                per_edge.append(base | {(e.src, e.action)} if e.action != "default" else base)
            guards[n] = frozenset.intersection(*per_edge) if per_edge else frozenset()
        if comp.is_loop:
            for n in comp.nodes:
                guards[n] = guards[comp.entry]
    return guards


def _join_kind(inputs: list[str], guards: Guards) -> str:
    """`any` when two inputs sit on different arms of the same branch, so at most one of them
    runs (the or-join after an if/else); otherwise `all`."""
    for i, a in enumerate(inputs):
        for b in inputs[i + 1 :]:
            for node, action in guards.get(a, ()):
                if any(n2 == node and act2 != action for n2, act2 in guards.get(b, ())):
                    return "any"
    return "all"


# -- text -----------------------------------------------------------------------------------------


def format_plan_text(plan: dict[str, Any]) -> str:
    nodes = {n["id"]: n for n in plan["nodes"]}
    levels = plan["levels"]
    loops = plan["loops"]
    par = plan["max_parallel"]
    out = [
        f"plan for {plan['workflow'] or 'workflow'}: {len(nodes)} nodes, "
        f"{len(plan['edges'])} edges, {len(levels)} levels, "
        f"up to {par} {'node' if par == 1 else 'nodes'} in parallel",
        "",
        "levels (what is on one line can run at the same time):",
    ]
    loop_of = {n: i for i, lp in enumerate(loops, 1) for n in lp["nodes"]}
    width = len(str(len(levels)))
    for i, level in enumerate(levels, 1):
        parts: list[str] = []
        shown: set[int] = set()
        for n in level:
            k = loop_of.get(n)
            if k is None:
                parts.append(_node_label(nodes[n]))
            elif k not in shown:  # a loop is one unit: its nodes take turns
                shown.add(k)
                parts.append(f"[loop {k}: {' -> '.join(loops[k - 1]['nodes'])}]")
        out.append(f"  {str(i).rjust(width)}  " + "   ".join(parts))
    if plan["fan_outs"]:
        out += ["", "fan-out (start together):"]
        for f in plan["fan_outs"]:
            on = f" (on action '{f['action']}')" if f["action"] != "default" else ""
            out.append(f"  {f['node']} -> {', '.join(f['to'])}{on}")
    if plan["joins"]:
        out += ["", "joins (wait until every input has finished or been skipped):"]
        for j in plan["joins"]:
            if j["kind"] == "any":
                out.append(
                    f"  {j['node']} <- {' | '.join(j['waits_for'])}"
                    "  (or-join: only one branch runs; runs once after it)"
                )
            else:
                out.append(f"  {j['node']} <- {', '.join(j['waits_for'])}")
    if plan["branches"]:
        out += ["", "conditional branches (the node's action picks the edges that fire):"]
        for b in plan["branches"]:
            arms = "; ".join(f"{a} -> {', '.join(t)}" for a, t in b["actions"].items())
            out.append(f"  {b['node']}: {arms}")
    if loops:
        out += ["", "loops (run sequentially, bounded by max_visits):"]
        for i, lp in enumerate(loops, 1):
            cycle = " -> ".join([*lp["nodes"], lp["entry"]])
            back = ", ".join(f"{e['from']} -[{e['action']}]-> {e['to']}" for e in lp["back_edges"])
            text = f"  loop {i}: {cycle} (entry {lp['entry']}, max {lp['max_visits']} visits"
            out.append(text + (f"; back edge {back})" if back else ")"))
    if plan["warnings"]:
        out += ["", "warnings:"]
        out += [f"  - {w}" for w in plan["warnings"]]
    return "\n".join(out)


def _node_label(node: dict[str, Any]) -> str:
    b = node.get("batch")
    if b is None:
        return node["id"]
    items = f"{b['items']} items" if isinstance(b["items"], int) else f"items {b['items']}"
    how = f"{b['max_concurrent']} at a time" if b["parallel"] else "one at a time"
    return f"{node['id']} (batch: {items}, {how})"


# -- Mermaid --------------------------------------------------------------------------------------


def _mermaid_text(text: str) -> str:
    # Inside "..." labels Mermaid takes entities; a raw quote would end the label.
    return (
        text.replace("&", "&amp;").replace('"', "#quot;").replace("<", "&lt;").replace(">", "&gt;")
    )


def format_plan_mermaid(plan: dict[str, Any]) -> str:
    """A `flowchart TD`: batch nodes as subroutine boxes, non-default action edges labelled,
    template reads without an edge dotted, loops as subgraphs."""
    ids = {n["id"]: f"n{i}" for i, n in enumerate(plan["nodes"])}  # ids like `end` break Mermaid
    by_id = {n["id"]: n for n in plan["nodes"]}
    in_loop = {n for lp in plan["loops"] for n in lp["nodes"]}

    def node_line(n: dict[str, Any]) -> str:
        label = f"{_mermaid_text(n['id'])}<br/><small>{_mermaid_text(n['type'])}</small>"
        if n.get("batch") is not None:
            return f'{ids[n["id"]]}[["{label}"]]'
        return f'{ids[n["id"]]}["{label}"]'

    out = ["flowchart TD"]
    out += ["    " + node_line(n) for n in plan["nodes"] if n["id"] not in in_loop]
    for i, lp in enumerate(plan["loops"], 1):
        out.append(f'    subgraph loop{i}["loop {i}"]')
        out += ["        " + node_line(by_id[nid]) for nid in lp["nodes"]]
        out.append("    end")
    for e in plan["edges"]:
        a, b = ids[e["from"]], ids[e["to"]]
        if e["action"] == "default":
            out.append(f"    {a} --> {b}")
        else:
            out.append(f'    {a} -->|"{_mermaid_text(e["action"])}"| {b}')
    for m in plan["missing_edges"]:
        out.append(f'    {ids[m["reads"]]} -.->|"reads, no edge"| {ids[m["node"]]}')
    batch = [ids[n["id"]] for n in plan["nodes"] if n.get("batch") is not None]
    if batch:
        out.append("    classDef batch fill:#eef5fb,stroke:#3b73a8")
        out.append(f"    class {','.join(batch)} batch")
    return "\n".join(out)


def format_plan_json(plan: dict[str, Any]) -> str:
    return json.dumps(plan, indent=2, default=str)
