"""The graph model every stage shares: nodes, edges by action, dependencies and components.

Dependencies of a node = its incoming edges ∪ the nodes its templates read. Strongly connected
components (loops closed by a non-default action edge) run as sequential sub-flows; the graph
of components is a DAG, which the scheduler runs as dataflow.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from fanflow import templates
from fanflow.load.model import NodeSpec, Workflow

BATCH_VARS = ("__index__",)


class Edge(NamedTuple):  # a tuple: 20,000 of them build in a few ms
    src: str
    dst: str
    action: str = "default"


@dataclass
class Component:
    """A single node, or a loop (SCC) run sequentially from its entry node."""

    index: int
    nodes: list[str]
    entry: str
    is_loop: bool
    in_edges: list[Edge] = field(default_factory=list)  # from other components
    data_deps: set[int] = field(default_factory=set)  # components read without an edge
    out_edges: list[Edge] = field(default_factory=list)  # to other components


@dataclass(frozen=True)
class Graph:
    """Built once per compile; nothing writes to it afterwards."""

    ids: list[str]
    specs: dict[str, NodeSpec]
    params: dict[str, Any]  # node id → compiled params
    batch_items: dict[str, Any]  # node id → compiled batch items
    edges: list[Edge]
    out_edges: dict[str, list[Edge]]
    in_edges: dict[str, list[Edge]]
    reads: dict[str, set[str]]  # node id → node ids its templates read
    deps: dict[str, set[str]]  # node id → upstream node ids (edges ∪ reads)
    components: list[Component]
    comp_of: dict[str, int]
    implicit_chain: bool  # no edges in the document: a chain in data order (data_order)
    static_params: set[str] = field(default_factory=set)  # nodes whose params hold no template

    def missing_edges(self) -> list[tuple[str, str]]:
        """(reader, source) pairs where a node reads another's output without an edge path:
        readers in document order, each one's sources by id. Worked out once per graph.

        Only reads that no direct edge covers (loose reads) are looked at. One pass over the
        components in topological order keeps, per node, the loose sources that reach it over
        edges as a bitset (a Python int): the OR of its edge predecessors' sets and bits, for
        the nodes the loose sources reach only. Linear when nothing reads loosely (a join with
        an edge from each of 10,000 branches costs nothing); at worst n²/64 machine words of
        ORs, and a node's set is dropped once its last out edge has been followed (a 10,000
        chain where each node reads two back: tens of milliseconds)."""
        return list(self._missing_edges)

    @cached_property
    def loose_reads(self) -> dict[str, list[str]]:
        """Reader → the nodes it reads that no direct edge comes from, by id (readers with
        such reads only, in document order). Worked out once per graph."""
        loose: dict[str, list[str]] = {}
        for node in self.ids:
            reads = self.reads[node]
            if not reads:
                continue
            direct = {e.src for e in self.in_edges[node]}
            srcs = [r for r in reads if r not in direct]
            if srcs:
                loose[node] = sorted(srcs)
        return loose

    @cached_property
    def _missing_edges(self) -> tuple[tuple[str, str], ...]:
        loose = self.loose_reads
        if not loose:
            return ()
        # Only a loose source with an out edge can reach a reader: each gets a bit, numbered
        # in topological order (sets stay short), and only what they reach carries a set.
        origins = {s for srcs in loose.values() for s in srcs if self.out_edges[s]}
        down = self._edge_descendants(origins)
        last = max(self.comp_of[r] for r in loose)
        pos: dict[str, int] = {}
        for comp in self.components[: last + 1]:
            for n in comp.nodes:
                if n in origins:
                    pos[n] = len(pos)
        reach: dict[str, int] = {}  # node in `down` → bits of the origins with a path to it
        left = {n: len(self.out_edges[n]) for n in down}  # out edges not yet followed
        found: dict[str, list[str]] = {}
        for comp in self.components[: last + 1]:
            for group in self._edge_cycles(comp):
                got = 0
                if group[0] in down:  # else nothing reaches it (nor the rest of its cycle)
                    for n in group:
                        got |= 1 << pos[n] if n in pos else 0
                        for e in self.in_edges[n]:
                            if e.src in reach:
                                got |= reach[e.src]
                    for n in group:  # an edge cycle: all members reach all members
                        reach[n] = got
                for n in group:
                    if n in loose:
                        missing = [s for s in loose[n] if s not in pos or not got >> pos[s] & 1]
                        if missing:
                            found[n] = missing
                    if n in reach:
                        for e in self.in_edges[n]:
                            if e.src in reach:
                                left[e.src] -= 1
                                if left[e.src] == 0:
                                    del reach[e.src]
                        if left[n] == 0:
                            del reach[n]
        return tuple((n, s) for n in self.ids if n in found for s in found[n])

    def _edge_descendants(self, sources: set[str]) -> set[str]:
        seen = set(sources)
        stack = list(sources)
        while stack:
            for e in self.out_edges[stack.pop()]:
                if e.dst not in seen:
                    seen.add(e.dst)
                    stack.append(e.dst)
        return seen

    def _edge_cycles(self, comp: Component) -> list[list[str]]:
        """A component's nodes grouped into the cycles of its own edges, in topological order
        of those edges (a loop's members are strongly connected through edges and reads
        together, and only edges make a path). A single node: itself."""
        if not comp.is_loop:
            return [comp.nodes]
        members = set(comp.nodes)
        inner = {n: {e.src for e in self.in_edges[n] if e.src in members} for n in comp.nodes}
        cycles, _ = _components(comp.nodes, inner, None, self.in_edges)
        return [c.nodes for c in cycles]


def batch_alias(spec: NodeSpec) -> str | None:
    return spec.batch.as_ if spec.batch else None


def local_names(spec: NodeSpec, own: tuple[str, ...] = ()) -> set[str]:
    """The names a node's own templates read that are neither inputs nor nodes: a batch's
    alias and `__index__`, a node loop's `__iteration__`, and `own` (its class's
    `local_names`, e.g. the shell's `inputs`)."""
    local = {spec.batch.as_, *BATCH_VARS} if spec.batch else set()
    if spec.loop is not None:
        local.add("__iteration__")
    local.update(own)
    return local


def build_graph(
    workflow: Workflow,
    params: dict[str, Any] | None = None,
    batch_items: dict[str, Any] | None = None,
    own_names: dict[str, tuple[str, ...]] | None = None,
) -> Graph:
    """Build the graph. Assumes ids are unique and edges name existing nodes (validated first).
    `params` / `batch_items`: the nodes' templates already parsed (else they are parsed here)."""
    ids = [n.id for n in workflow.nodes]
    specs = {n.id: n for n in workflow.nodes}
    if params is None:
        params = {n.id: templates.compile_value(n.params) for n in workflow.nodes}
    if batch_items is None:
        batch_items = {
            n.id: templates.compile_value(n.batch.items) for n in workflow.nodes if n.batch
        }
    batch_items = {n.id: batch_items[n.id] for n in workflow.nodes if n.batch is not None}

    static = {i for i in ids if not templates.has_templates(params[i])}
    reads: dict[str, set[str]] = {}
    for node in workflow.nodes:
        if node.id in static and node.batch is None:
            reads[node.id] = set()
            continue
        local = local_names(node, own_names.get(node.id, ()) if own_names else ())
        found: set[str] = set()
        for compiled in (params[node.id], batch_items.get(node.id)):
            for _path, ref in templates.iter_refs(compiled):
                if ref.root in specs and ref.root != node.id and ref.root not in local:
                    found.add(ref.root)
        reads[node.id] = found

    implicit_chain = not workflow.edges and workflow._pipeline_paths is None
    if implicit_chain:
        order = data_order(ids, reads, workflow.start_node)
        edges = [Edge(a, b) for a, b in itertools.pairwise(order)]
    else:
        edges = [Edge(e.from_, e.to, e.action) for e in workflow.edges]
    out_edges: dict[str, list[Edge]] = {i: [] for i in ids}
    in_edges: dict[str, list[Edge]] = {i: [] for i in ids}
    for e in edges:
        if e.src in out_edges and e.dst in in_edges:
            out_edges[e.src].append(e)
            in_edges[e.dst].append(e)

    deps = {i: {e.src for e in in_edges[i]} | reads[i] for i in ids}

    comps, comp_of = _components(ids, deps, workflow.start_node, in_edges)
    for comp in comps:
        members = set(comp.nodes)
        for n in comp.nodes:
            comp.in_edges += [e for e in in_edges[n] if e.src not in members]
            comp.out_edges += [e for e in out_edges[n] if e.dst not in members]
            comp.data_deps |= {comp_of[r] for r in reads[n] if r not in members}
    return Graph(
        ids, specs, params, batch_items, edges, out_edges, in_edges, reads, deps,
        comps, comp_of, implicit_chain, static,
    )  # fmt: skip


def data_order(ids: list[str], reads: dict[str, set[str]], start: str | None) -> list[str]:
    """The order of a workflow without edges: array order, except that a node runs after every
    node it reads (a stable topological sort: of the nodes whose reads have run, the first in
    the array goes next), and `start` first when it reads nothing. Nodes in a cycle of reads,
    and those that read them, are left out: they get no chain edge, and validation reports the
    cycle."""
    position = {n: i for i, n in enumerate(ids)}
    waiting = {n: len(reads[n]) for n in ids}
    readers: dict[str, list[str]] = {n: [] for n in ids}
    for n in ids:
        for r in reads[n]:
            readers[r].append(n)
    ready = [(-1 if n == start else position[n], n) for n in ids if not waiting[n]]
    heapq.heapify(ready)
    order = []
    while ready:
        _, n = heapq.heappop(ready)
        order.append(n)
        for reader in readers[n]:
            waiting[reader] -= 1
            if not waiting[reader]:
                heapq.heappush(ready, (position[reader], reader))
    return order


def _components(
    ids: list[str], deps: dict[str, set[str]], start: str | None, in_edges: dict[str, list[Edge]]
) -> tuple[list[Component], dict[str, int]]:
    """Tarjan's SCCs (iterative), returned in topological order of the component DAG."""
    order = {n: i for i, n in enumerate(ids)}
    succ: dict[str, list[str]] = {n: [] for n in ids}
    for n in ids:
        for d in deps[n]:
            succ[d].append(n)
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    sccs: list[list[str]] = []
    counter = 0
    for root in ids:
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, i = work.pop()
            if i == 0:
                index[node] = low[node] = counter
                counter += 1
                stack.append(node)
                on_stack.add(node)
            recurse = False
            for j in range(i, len(succ[node])):
                nxt = succ[node][j]
                if nxt not in index:
                    work.append((node, j + 1))
                    work.append((nxt, 0))
                    recurse = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if recurse:
                continue
            if low[node] == index[node]:
                scc = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    scc.append(w)
                    if w == node:
                        break
                sccs.append(scc if len(scc) == 1 else sorted(scc, key=order.__getitem__))
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[node])
    sccs.reverse()  # Tarjan emits sinks first
    comps: list[Component] = []
    comp_of: dict[str, int] = {}
    for k, members in enumerate(sccs):
        is_loop = len(members) > 1 or any(e.src == members[0] for e in in_edges[members[0]])
        entry = members[0]
        if is_loop:
            member_set = set(members)
            if start in member_set:
                entry = start
            else:
                entry = next(
                    (m for m in members if any(e.src not in member_set for e in in_edges[m])),
                    members[0],
                )
        comps.append(Component(k, members, entry, is_loop))
        for m in members:
            comp_of[m] = k
    return comps, comp_of
