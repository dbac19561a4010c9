"""The component DAG in the flat form the scheduler's readiness state runs on, built once per
compiled workflow: for each component (numbered in topological order), how many things it waits
for, its out edges, the components that read it without an edge, and what it depends on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fanflow.compile.graph import Graph


@dataclass(frozen=True, slots=True)
class Topology:
    waits_for: tuple[int, ...]  # incoming edges + components read without an edge
    has_in_edges: tuple[bool, ...]
    out: tuple[tuple[tuple[int, str, str], ...], ...]  # (target component, source node, action)
    readers: tuple[tuple[int, ...], ...]  # components that read this one without an edge
    upstream: tuple[frozenset[int], ...]  # components this one depends on
    join_first: tuple[bool, ...]  # starts on the first upstream success (a race)

    @classmethod
    def of(cls, graph: Graph, join_first: Sequence[bool]) -> Topology:
        comps, comp_of = graph.components, graph.comp_of
        readers: list[list[int]] = [[] for _ in comps]
        for c in comps:
            for d in sorted(c.data_deps):
                readers[d].append(c.index)
        return cls(
            waits_for=tuple(len(c.in_edges) + len(c.data_deps) for c in comps),
            has_in_edges=tuple(bool(c.in_edges) for c in comps),
            out=tuple(tuple((comp_of[e.dst], e.src, e.action) for e in c.out_edges) for c in comps),
            readers=tuple(tuple(r) for r in readers),
            upstream=tuple(
                frozenset({comp_of[e.src] for e in c.in_edges} | c.data_deps) for c in comps
            ),
            join_first=tuple(join_first),
        )
