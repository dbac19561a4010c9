"""The scheduler's readiness state, driven by hand: no asyncio, no nodes run."""

from __future__ import annotations

from typing import Any

from fanflow.compile.graph import Graph, build_graph
from fanflow.compile.topology import Topology
from fanflow.load.reader import parse_source
from fanflow.schedule.readiness import Readiness


def graph(nodes: list[str], edges: list[Any], reads: dict[str, list[str]] | None = None) -> Graph:
    reads = reads or {}
    doc_nodes = []
    for n in nodes:
        inputs = {f"v{i}": f"${{{r}.result}}" for i, r in enumerate(reads.get(n, []))}
        doc_nodes.append(
            {"id": n, "type": "code", "params": {"code": "result = 1", "inputs": inputs}}
        )
    doc_edges = []
    for e in edges:
        a, b, *action = e if isinstance(e, tuple) else (*e.split(">"),)
        doc_edges.append({"from": a, "to": b, "action": action[0] if action else "default"})
    return build_graph(
        parse_source({"ir_version": "0.1.0", "nodes": doc_nodes, "edges": doc_edges})
    )


class Harness:
    def __init__(self, g: Graph, join_first: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.g = g
        self.state = Readiness(
            Topology.of(g, [c.entry in join_first and not c.is_loop for c in g.components])
        )
        self.started: list[str] = []
        self.skipped: list[str] = []
        self.cancelled: list[str] = []
        self._take(self.state.initial())

    def name(self, k: int) -> str:
        return self.g.components[k].entry

    def _take(self, step: Any) -> None:
        self.started += [self.name(k) for k in step.start]
        self.skipped += [self.name(k) for k in step.skip]
        self.cancelled += [self.name(k) for k in step.cancel]

    def finish(self, node: str, action: str | None = "default") -> None:
        k = self.g.comp_of[node]
        self._take(self.state.finish(k, None if action is None else {node: action}))


def test_a_node_starts_when_its_last_dependency_finishes() -> None:
    h = Harness(graph(["a", "b", "c", "d"], ["a>b", "a>c", "b>d", "c>d"]))
    assert h.started == ["a"]
    h.finish("a")
    assert h.started == ["a", "b", "c"]
    h.finish("c")
    assert h.started == ["a", "b", "c"]  # d still waits for b
    h.finish("b")
    assert h.started[-1] == "d" and h.state.remaining == 1
    h.finish("d")
    assert h.state.done


def test_a_read_without_an_edge_is_a_dependency() -> None:
    h = Harness(graph(["a", "b"], [], reads={"b": ["a"]}))
    assert h.started == ["a"]
    h.finish("a")
    assert h.started == ["a", "b"]


def test_dead_path_is_skipped_and_an_or_join_runs_once() -> None:
    g = graph(["if", "yes", "no", "after_no", "join"],
              [("if", "yes", "yes"), ("if", "no", "no"), "no>after_no", "yes>join", "after_no>join"])  # fmt: skip
    h = Harness(g)
    h.finish("if", "yes")
    assert h.started == ["if", "yes"]
    assert h.skipped == ["no", "after_no"]  # the dead branch dies all the way down
    h.finish("yes")
    assert h.started.count("join") == 1
    h.finish("join")
    assert h.state.done


def test_all_inputs_dead_means_skipped() -> None:
    h = Harness(graph(["a", "b"], [("a", "b", "other")]))
    h.finish("a")
    assert h.skipped == ["b"] and h.state.done


def test_a_failure_fires_no_edge() -> None:
    h = Harness(graph(["a", "b", "c"], ["a>b", "b>c"]))
    h.finish("a", None)  # failed (under on_error: continue)
    assert h.skipped == ["b", "c"] and h.state.done


def test_first_join_starts_on_the_first_success_and_cancels_only_unneeded_work() -> None:
    # fast, slow and lone feed the race; slow also feeds audit; lone_up only feeds lone.
    g = graph(["fast", "lone_up", "lone", "slow", "race", "audit"],
              ["fast>race", "lone_up>lone", "lone>race", "slow>race", "slow>audit"])  # fmt: skip
    h = Harness(g, join_first={"race"})
    assert set(h.started) == {"fast", "lone_up", "slow"}
    h.finish("fast")
    assert "race" in h.started
    assert sorted(h.cancelled) == ["lone", "lone_up"]  # not slow: audit still needs it
    assert h.state.lost[g.comp_of["lone_up"]]
    h.finish("lone_up")  # a cancelled component reporting late changes nothing
    assert "lone" not in h.started
    h.finish("race")
    h.finish("slow")
    assert h.started[-1] == "audit"
    h.finish("audit")
    assert h.state.done


def test_first_join_with_every_input_dead_is_skipped() -> None:
    g = graph(["a", "b", "race"], [("a", "race", "x"), ("b", "race", "x")])
    h = Harness(g, join_first={"race"})
    h.finish("a")
    h.finish("b")
    assert h.skipped == ["race"] and h.state.done


def test_loop_is_one_component() -> None:
    g = graph(["setup", "draft", "review", "done"],
              ["setup>draft", "draft>review", ("review", "draft", "revise"), "review>done"])  # fmt: skip
    loop = g.components[g.comp_of["draft"]]
    assert loop.is_loop and loop.nodes == ["draft", "review"] and loop.entry == "draft"
    h = Harness(g)
    h.finish("setup")
    assert h.started == ["setup", "draft"]
    h.state.finish(g.comp_of["draft"], {"draft": "default", "review": "default"})
    assert h.state.remaining == 1  # `done` became ready
