"""`fanflow plan`: the static schedule of a validated workflow, before anything runs.

Pure functions over the graph model (fanflow.compile.graph.Graph): dependency levels (what can run at the
same time), fan-outs, joins, conditional branches, loops, batches, warnings, and a Mermaid
`flowchart TD` of the graph.

Levels: the graph of components (a loop is one component) is a DAG; a component's level is one
more than the highest level among the components it depends on (edges ∪ template reads). Nodes
in one level never depend on each other. The scheduler is dataflow, not level-by-level: a node
starts as soon as its own dependencies finish, so levels show potential parallelism, not phases.
"""

from __future__ import annotations

import itertools
import json
from json.encoder import encode_basestring_ascii as _str
from typing import Any

from fanflow.compile.graph import Graph


def build_plan(workflow: Any, graph: Graph | None = None) -> dict[str, Any]:
    """The plan as a JSON-ready dict. `workflow` is a CompiledWorkflow."""
    g = graph if graph is not None else workflow.graph  # a CompiledWorkflow
    order = {n: i for i, n in enumerate(g.ids)}
    comps = g.components
    comp_of = g.comp_of
    comp_level = [0] * len(comps)
    for comp in comps:  # components come in topological order
        upstream = comp.data_deps.union([comp_of[e.src] for e in comp.in_edges])
        comp_level[comp.index] = 1 + max(map(comp_level.__getitem__, upstream), default=0)
    level_of = {n: comp_level[comp_of[n]] for n in g.ids}
    levels: list[list[str]] = [[] for _ in range(max(level_of.values(), default=0))]
    for n in g.ids:  # document order within a level
        levels[level_of[n] - 1].append(n)

    nodes = []
    deps: dict[str, list[str]] = {}  # in document order
    plans = workflow.nodes  # the CompiledWorkflow's node plans
    for n in g.ids:
        spec = g.specs[n]
        d = g.deps[n]
        deps[n] = sorted(d, key=order.__getitem__) if len(d) > 1 else list(d)
        entry: dict[str, Any] = {"id": n, "type": spec.type, "level": level_of[n], "deps": deps[n]}
        if spec.purpose:
            entry["purpose"] = spec.purpose
        entry.update(_class_entries(workflow, n, plans[n], spec.params))
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
    readers: dict[str, list[str]] = {}
    for n, srcs in g.loose_reads.items():
        for src in srcs:
            readers.setdefault(src, []).append(n)
    fan_outs = []
    succ: dict[str, list[str]] | None = None  # built on the first fan-out
    for n in g.ids:
        outs, loose = g.out_edges[n], readers.get(n, ())
        if len(outs) + len(loose) < 2:
            continue  # one successor at most: no fan-out
        k = comp_of[n]
        by_action: dict[str, list[str]] = {}
        for e in outs:
            if comp_of[e.dst] != k:
                by_action.setdefault(e.action, []).append(e.dst)
        extra = [r for r in loose if comp_of[r] != k]
        for action in by_action or {"default": []}:
            targets = list(dict.fromkeys(by_action.get(action, []) + extra))
            if len(targets) > 1:  # a target waiting for another target does not start with it
                if succ is None:
                    succ = _successors(g)
                waiting = _waiting(g, targets, succ, comp_level)
                targets = [t for t in targets if t not in waiting]
            if len(targets) > 1:
                fan_outs.append(
                    {"node": n, "action": action, "to": sorted(targets, key=order.__getitem__)}
                )

    or_joins = _OrJoins(g)
    loop_nodes = {n for c in comps if c.is_loop for n in c.nodes}
    joins = []
    for n in g.ids:
        if len(g.deps[n]) < 2 or n in loop_nodes:
            continue
        inputs = deps[n]
        joins.append({"node": n, "waits_for": inputs, "kind": or_joins.kind(inputs)})

    branches = []
    branching = {e.src for e in g.edges if e.action != "default"}
    for n in g.ids:
        if n not in branching:
            continue
        arms: dict[str, list[str]] = {}
        for e in g.out_edges[n]:
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
                "max_visits": workflow.workflow.max_visits,
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
        "max_parallel": max((len({comp_of[n] for n in lv}) for lv in levels), default=0),
        "fan_outs": fan_outs,
        "joins": joins,
        "branches": branches,
        "loops": loops,
        "missing_edges": [{"node": r, "reads": s} for r, s in missing],
        "warnings": warnings,
    }


def _successors(g: Graph) -> dict[str, list[str]]:
    """The nodes waiting directly for each node (deps reversed)."""
    succ: dict[str, list[str]] = {n: [] for n in g.ids}
    for n in g.ids:
        for d in g.deps[n]:
            succ[d].append(n)
    return succ


def _waiting(
    g: Graph, targets: list[str], succ: dict[str, list[str]], comp_level: list[int]
) -> set[str]:
    """The targets that wait, directly or not, for one of the targets (themselves included: a
    loop). One search forwards from all of them at once, pruned past the deepest target's level:
    levels grow along every dependency, so nothing beyond it leads back to a target."""
    limit = max(comp_level[g.comp_of[t]] for t in targets)
    seen: set[str] = set()
    stack = [s for t in targets for s in succ[t]]
    while stack:
        m = stack.pop()
        if m in seen or comp_level[g.comp_of[m]] > limit:
            continue
        seen.add(m)
        stack.extend(succ[m])
    return seen.intersection(targets)


class _OrJoins:
    """Which joins are or-joins: two of their inputs sit on different arms of the same branch,
    so at most one of them runs (the join after an if/else).

    A node runs only if the (branch node, action) choices on every path to it are made: its
    guards. Put a vertex for each choice between the branch node's component and the targets
    of its edges with that action; a node's guards are then the choice vertices that dominate
    it, i.e. its ancestors in the dominator tree of the component DAG, and two inputs conflict
    exactly where their dominator paths part at a branch's component through two choices of the
    same node with different actions. Built once in O(graph · log depth) (jump pointers: no
    guard set is ever copied, so a long chain of branches stays linear); each join costs
    O(inputs · log). Only nodes with two or more actions can part paths, so the choices of the
    others are left out. Inside a loop the loop's entry conditions apply to all its nodes."""

    def __init__(self, g: Graph) -> None:
        self._comp_of = g.comp_of
        actions: dict[str, set[str]] = {}
        for e in g.edges:
            if e.action != "default" and g.comp_of[e.src] != g.comp_of[e.dst]:
                actions.setdefault(e.src, set()).add(e.action)
        branching = {x for x, acts in actions.items() if len(acts) > 1}
        self._active = bool(branching)
        if not self._active:
            return  # no branch with two arms: every join waits for all its inputs
        # vertex 0 is the root above every source; parent/depth/jump make a skew-binary
        # jump-pointer tree (ancestor and LCA queries in O(log depth), O(1) to add a vertex)
        self._parent, self._depth, self._jump = [0], [0], [0]
        self._choice: list[tuple[str, str] | None] = [None]
        self._vertex: list[int] = [0] * len(g.components)  # component → its vertex
        choices: dict[tuple[str, str], int] = {}
        for comp in g.components:  # topological order: every predecessor has its vertex
            idom = -1
            for e in g.in_edges[comp.entry]:
                src = g.comp_of[e.src]
                if src == comp.index:
                    continue  # inside the loop
                pred = self._vertex[src]
                if e.src in branching and e.action != "default":
                    key = (e.src, e.action)
                    if key not in choices:
                        choices[key] = self._add(pred, key)
                    pred = choices[key]
                idom = pred if idom < 0 else self._lca(idom, pred)
            self._vertex[comp.index] = self._add(max(idom, 0), None)
        children: list[list[int]] = [[] for _ in self._parent]
        for v in range(1, len(self._parent)):
            children[self._parent[v]].append(v)
        self._pre = [0] * len(self._parent)  # preorder number: a subtree is an interval
        stack, k = [0], 0
        while stack:
            v = stack.pop()
            self._pre[v], k = k, k + 1
            stack.extend(children[v])

    def _add(self, parent: int, choice: tuple[str, str] | None) -> int:
        depth, jump = self._depth, self._jump
        j = jump[parent]
        far = jump[j] if depth[parent] - depth[j] == depth[j] - depth[jump[j]] else parent
        self._parent.append(parent)
        depth.append(depth[parent] + 1)
        jump.append(far)
        self._choice.append(choice)
        return len(self._parent) - 1

    def _up_to(self, v: int, depth: int) -> int:
        """The ancestor of `v` at `depth`."""
        d, jump, parent = self._depth, self._jump, self._parent
        while d[v] > depth:
            v = jump[v] if d[jump[v]] >= depth else parent[v]
        return v

    def _lca(self, a: int, b: int) -> int:
        d, jump, parent = self._depth, self._jump, self._parent
        a, b = self._up_to(a, d[b]), self._up_to(b, d[a])
        while a != b:  # same depth, so the same jump lengths
            a, b = (jump[a], jump[b]) if jump[a] != jump[b] else (parent[a], parent[b])
        return a

    def kind(self, inputs: list[str]) -> str:
        if not self._active:
            return "all"
        verts = sorted({self._vertex[self._comp_of[n]] for n in inputs}, key=self._pre.__getitem__)
        # In preorder, the inputs under each child of a vertex are consecutive, so the children
        # of a vertex that hold inputs are exactly those met by neighbouring pairs parting there.
        parted: dict[int, set[int]] = {}
        for a, b in itertools.pairwise(verts):
            top = self._lca(a, b)
            if top != a:  # a is not b's ancestor: the paths part at `top`
                below = self._depth[top] + 1
                parted.setdefault(top, set()).update((self._up_to(a, below), self._up_to(b, below)))
        for arms in parted.values():
            taken: dict[str, str] = {}
            for v in arms:
                choice = self._choice[v]
                if choice is not None and taken.setdefault(choice[0], choice[1]) != choice[1]:
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
    for node in plan["nodes"]:
        if "workflow" in node:
            child = format_plan_text(node["workflow"]).splitlines()
            out += ["", f"sub-workflow of {node['id']}: " + child[0].removeprefix("plan for ")]
            out += [f"  {line}" if line else line for line in child[1:]]
    return "\n".join(out)


def _class_entries(
    workflow: Any, node_id: str, plan: Any, params: dict[str, Any]
) -> dict[str, Any]:
    """What the node's class adds to its plan entry: where it runs, a few words of detail (the
    MCP tool it calls), and the plan of a workflow it runs, under the node."""
    out: dict[str, Any] = {"executor": _executor(workflow, plan)}
    detail_of = getattr(plan.cls, "plan_detail", None)
    detail = detail_of(params) if detail_of is not None else None
    if detail:
        out["detail"] = detail
    child_of = getattr(plan.cls, "child_workflow", None)
    child = child_of(params, workflow.workflow) if child_of is not None else None
    if child is not None:
        out["workflow"] = build_plan(child)
    return out


def _executor(workflow: Any, plan: Any) -> str:
    """Where the node's work runs, as far as the workflow says (a run's --executor can still
    move nodes left on "thread")."""
    if plan.is_async:
        return "loop"
    from fanflow.execute.executors import choose

    return choose(plan, None, workflow.workflow.executor).key


def _node_label(node: dict[str, Any]) -> str:
    b = node.get("batch")
    detail = f" [{node['detail']}]" if node.get("detail") else ""
    if node.get("executor") not in (None, "thread", "loop"):
        detail += f" (on {node['executor']})"
    if b is None:
        return f"{node['id']}{detail}"
    items = f"{b['items']} items" if isinstance(b["items"], int) else f"items {b['items']}"
    how = f"{b['max_concurrent']} at a time" if b["parallel"] else "one at a time"
    return f"{node['id']}{detail} (batch: {items}, {how})"


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


_encode = json.JSONEncoder(default=str).encode  # compact and in C: scalars, empty containers


def format_plan_json(plan: dict[str, Any]) -> str:
    """`json.dumps(plan, indent=2, default=str)`, character for character. The stdlib encodes
    indented JSON in pure Python, token by token; this joins whole lists of ids at once, which
    halves the time on a 10,000-wide plan."""
    return _indented(plan, "")


def _indented(value: Any, pad: str) -> str:
    inner = pad + "  "
    sep = ",\n" + inner
    if type(value) is dict and value and all(type(k) is str for k in value):
        parts = []
        for k, v in value.items():
            t = type(v)
            if t is str:
                parts.append(f"{_str(k)}: {_str(v)}")
            elif t is int:
                parts.append(f"{_str(k)}: {int.__repr__(v)}")
            else:
                parts.append(f"{_str(k)}: {_indented(v, inner)}")
        return "{\n" + inner + sep.join(parts) + "\n" + pad + "}"
    if type(value) is list and value:
        if all(type(v) is str for v in value):
            items = sep.join(map(_str, value))
        else:
            items = sep.join([_indented(v, inner) for v in value])
        return "[\n" + inner + items + "\n" + pad + "]"
    if isinstance(value, dict | list | tuple) and value:  # anything unusual: the stdlib's rules
        return json.dumps(value, indent=2, default=str).replace("\n", "\n" + pad)
    return _encode(value)
