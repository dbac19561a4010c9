"""The per-item pipeline (issue 15): a batch over a sub-workflow against the stage-by-stage
alternative, LangGraph's `Send` to a subgraph, and plain asyncio, in one run.

    python bench/bench_subworkflow.py             # 3 runs of each, median
    python bench/bench_subworkflow.py --runs 1 --items 20

Shape: N items (50), each a chain of 3 stages whose durations are drawn per item and stage from
0.05–0.5 s (seed 7). A stage is an async wait: fanflow's `llm` node on the offline echo provider
with that `latency` (so no process spawns or API keys blur the figure), `asyncio.sleep` for the
others. Ideal = max over items of the item's chain (every item runs its own chain, nothing
waits for anything else); a stage-by-stage engine gets at best the sum over stages of each
stage's slowest item. Target: fanflow ≤ 1.05× the ideal.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import operator
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated, Any, TypedDict

import fanflow

STAGES = 3


def durations(n: int, seed: int = 7) -> list[list[float]]:
    rng = random.Random(seed)
    return [[round(rng.uniform(0.05, 0.5), 3) for _ in range(STAGES)] for _ in range(n)]


def _stage(i: int, after: str | None, latency: str) -> dict[str, Any]:
    prompt = f"stage {i}" + (f" after ${{{after}.response}}" if after else " of ${d}")
    return {"id": f"s{i}", "type": "llm",
            "params": {"model": "echo", "prompt": prompt, "latency": latency, "cache": False}}  # fmt: skip


def per_item_workflows(folder: Path, items: list[list[float]]) -> Path:
    child = {
        "ir_version": "0.1.0",
        "inputs": {"d": {"type": "array", "required": True}},
        "nodes": [_stage(j + 1, f"s{j}" if j else None, f"${{d[{j}]}}") for j in range(STAGES)],
        "edges": [{"from": f"s{j}", "to": f"s{j + 1}"} for j in range(1, STAGES)],
        "outputs": {"last": {"source": f"${{s{STAGES}.response}}"}},
    }
    parent = {
        "ir_version": "0.1.0",
        "max_concurrent": len(items) * 2,
        "nodes": [{"id": "each", "type": "workflow",
                   "params": {"workflow": "item.json", "inputs": {"d": "${item}"}},
                   "batch": {"items": items, "parallel": True, "max_concurrent": len(items)}}],
        "outputs": {"n": {"source": "${each.success_count}"}},
    }  # fmt: skip
    (folder / "item.json").write_text(json.dumps(child))
    path = folder / "per_item.json"
    path.write_text(json.dumps(parent))
    return path


def stage_by_stage_workflow(folder: Path, items: list[list[float]]) -> Path:
    """The same work as one batch node per stage: stage j+1 starts when all of stage j is done."""
    nodes = []
    for j in range(STAGES):
        stage = _stage(j + 1, None, f"${{item[{j}]}}")
        stage["batch"] = {"items": items, "parallel": True, "max_concurrent": len(items)}
        stage["params"]["prompt"] = f"stage {j + 1} of ${{item}}" + (
            f" after ${{s{j}.count}}" if j else ""
        )
        nodes.append(stage)
    doc = {
        "ir_version": "0.1.0",
        "max_concurrent": len(items) * 2,
        "nodes": nodes,
        "edges": [{"from": f"s{j}", "to": f"s{j + 1}"} for j in range(1, STAGES)],
    }
    path = folder / "stages.json"
    path.write_text(json.dumps(doc))
    return path


def run_fanflow(path: Path) -> float:
    t0 = time.perf_counter()
    result = fanflow.run(path, checkpoint=False)
    elapsed = time.perf_counter() - t0
    assert result.ok, result.error
    return elapsed


def run_asyncio(items: list[list[float]]) -> float:
    async def chain(d: list[float]) -> None:
        for s in d:
            await asyncio.sleep(s)

    async def main() -> None:
        await asyncio.gather(*(chain(d) for d in items))

    t0 = time.perf_counter()
    asyncio.run(main())
    return time.perf_counter() - t0


def run_langgraph(items: list[list[float]]) -> float | None:
    try:
        from langgraph.graph import END, START, StateGraph
        from langgraph.types import Send
    except ImportError:
        return None

    class Parent(TypedDict):
        items: list[list[float]]
        done: Annotated[list[int], operator.add]

    class Item(TypedDict):
        d: list[float]
        i: int
        done: Annotated[list[int], operator.add]

    def stage(j: int) -> Any:
        async def run(state: Item) -> dict[str, Any]:
            await asyncio.sleep(state["d"][j])
            return {"done": [state["i"]]} if j == STAGES - 1 else {}

        return run

    sub = StateGraph(Item)
    for j in range(STAGES):
        sub.add_node(f"s{j}", stage(j))
    sub.add_edge(START, "s0")
    for j in range(STAGES - 1):
        sub.add_edge(f"s{j}", f"s{j + 1}")
    sub.add_edge(f"s{STAGES - 1}", END)
    subgraph = sub.compile()

    g = StateGraph(Parent)
    g.add_node("chain", subgraph)
    g.add_conditional_edges(
        START,
        lambda s: [Send("chain", {"d": d, "i": i, "done": []}) for i, d in enumerate(s["items"])],
    )
    g.add_edge("chain", END)
    graph = g.compile()
    t0 = time.perf_counter()
    out = asyncio.run(graph.ainvoke({"items": items, "done": []}, {"max_concurrency": len(items)}))
    elapsed = time.perf_counter() - t0
    assert sorted(out["done"]) == list(range(len(items))), out["done"]
    return elapsed


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--items", type=int, default=50)
    args = ap.parse_args()
    items = durations(args.items)
    ideal = max(sum(d) for d in items)
    barrier = sum(max(d[j] for d in items) for j in range(STAGES))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        per_item = per_item_workflows(folder, items)
        stages = stage_by_stage_workflow(folder, items)
        run_fanflow(per_item)  # warm: imports, compile caches
        rows: dict[str, list[float]] = {"fanflow per-item (workflow node)": [],
                                        "fanflow stage-by-stage (3 batches)": [],
                                        "langgraph Send -> subgraph": [], "asyncio gather": []}  # fmt: skip
        for _ in range(args.runs):
            rows["fanflow per-item (workflow node)"].append(run_fanflow(per_item))
            rows["fanflow stage-by-stage (3 batches)"].append(run_fanflow(stages))
            lg = run_langgraph(items)
            if lg is not None:
                rows["langgraph Send -> subgraph"].append(lg)
            rows["asyncio gather"].append(run_asyncio(items))
    print(f"{args.items} items x {STAGES} stages, 0.05-0.5 s each (seed 7), median of {args.runs}")
    print(f"  ideal (max over items of its chain)    {ideal:7.3f} s")
    print(f"  stage-by-stage ideal (sum of maxima)   {barrier:7.3f} s  ({barrier / ideal:.2f}x)")
    for name, times in rows.items():
        if not times:
            print(f"  {name:<38} not installed (pip install langgraph)")
            continue
        med = statistics.median(times)
        print(f"  {name:<38} {med:7.3f} s  {med / ideal:5.2f}x ideal")
    per = statistics.median(rows["fanflow per-item (workflow node)"])
    print(f"target: fanflow per-item <= 1.05x ideal: {'met' if per <= 1.05 * ideal else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
