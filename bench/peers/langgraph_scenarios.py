"""LangGraph scenarios (run with the langgraph peer venv's python).

Idioms (docs/benchmarks.md): async nodes on `StateGraph`, invoked with `ainvoke`; fan-out as K
static edges `start -> b_i` plus a waiting edge `add_edge([b_0..b_K-1], "join")` (the list form is
LangGraph's correct join: plain edges would fire the join once per superstep); parallel writes go
through an `Annotated[list, operator.add]` reducer; maps are `Send("work", ...)` from a conditional
edge with the top-level `config["max_concurrency"]` as the cap. No checkpointer (the default).
Graph build + compile is timed separately (`setup_s`); each timed run is one `asyncio.run(ainvoke)`.
"""

from __future__ import annotations

import asyncio
import itertools
import operator
import time
from typing import Annotated, Any, TypedDict

from _common import RunFn, check, main
from langgraph.graph import END, START, StateGraph
from langgraph.types import Send


class State(TypedDict, total=False):
    done: Annotated[list, operator.add]


def _sleeper(seconds: float, name: str = "", log: dict[str, Any] | None = None) -> Any:
    async def node(state: Any) -> dict[str, Any]:
        t0 = time.perf_counter()
        if seconds:
            await asyncio.sleep(seconds)
        if log is not None:
            log["spans"][name] = (t0, time.perf_counter())
            log["runs"][name] = log["runs"].get(name, 0) + 1
        return {"done": [name]}

    return node


def fanout(p: dict[str, Any]) -> RunFn:
    k, seconds = int(p["k"]), float(p["seconds"])
    log: dict[str, Any] = {"spans": {}, "runs": {}}
    g = StateGraph(State)
    g.add_node("start", _sleeper(0, "start"))
    names = [f"b{i}" for i in range(k)]
    for name in names:
        g.add_node(name, _sleeper(seconds, name, log))
        g.add_edge("start", name)
    g.add_node("join", _sleeper(0, "join", log))
    g.add_edge(names, "join")
    g.add_edge(START, "start")
    g.add_edge("join", END)
    graph = g.compile()

    def run() -> dict[str, Any]:
        log["runs"].clear()
        out = asyncio.run(graph.ainvoke({"done": []}))
        check(len(out["done"]) == k + 2, f"expected {k + 2} writes, got {len(out['done'])}")
        return {"join_runs": log["runs"]["join"]}

    return run


def diamond(p: dict[str, Any]) -> RunFn:
    log: dict[str, Any] = {"spans": {}, "runs": {}}
    g = StateGraph(State)
    for name, seconds in (("A", 0), ("B", p["b"]), ("C", p["c"]), ("D", p["d"]), ("E", 0)):
        g.add_node(name, _sleeper(float(seconds), name, log))
    g.add_edge(START, "A")
    g.add_edge("A", "B")
    g.add_edge("A", "C")
    g.add_edge("C", "D")
    g.add_edge(["B", "D"], "E")  # waiting edge: E runs once, after both
    g.add_edge("E", END)
    graph = g.compile()

    def run() -> dict[str, Any]:
        log["spans"].clear()
        log["runs"].clear()
        t0 = time.perf_counter()
        asyncio.run(graph.ainvoke({"done": []}))
        return {
            "e_runs": log["runs"].get("E", 0),
            "timeline": {
                k: [round(s - t0, 3), round(f - t0, 3)] for k, (s, f) in log["spans"].items()
            },
        }

    return run


class MapState(TypedDict, total=False):
    n: int
    done: Annotated[list, operator.add]


def _map(n: int, cap: int, seconds: float) -> RunFn:
    async def work(arg: dict[str, Any]) -> dict[str, Any]:
        if seconds:
            await asyncio.sleep(seconds)
        return {"done": [arg["i"]]}

    def fan(state: MapState) -> list[Send]:
        return [Send("work", {"i": i}) for i in range(state["n"])]

    g = StateGraph(MapState)
    g.add_node("start", lambda state: {})
    g.add_node("work", work)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", fan, ["work"])
    g.add_edge("work", END)
    graph = g.compile()

    def run() -> None:
        out = asyncio.run(graph.ainvoke({"n": n, "done": []}, {"max_concurrency": cap}))
        check(len(out["done"]) == n, f"map lost items: {len(out['done'])}/{n}")

    return run


def map_sleep(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), float(p["seconds"]))


def map_noop(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), 0.0)


class ChainState(TypedDict, total=False):
    x: int


def chain(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])

    async def noop(state: ChainState) -> dict[str, Any]:
        return {}

    async def last(state: ChainState) -> dict[str, Any]:
        return {"x": state.get("x", 0) + 1}

    g = StateGraph(ChainState)
    names = [f"n{i}" for i in range(n)]
    for name in names[:-1]:
        g.add_node(name, noop)
    g.add_node(names[-1], last)
    g.add_edge(START, names[0])
    for left, right in itertools.pairwise(names):
        g.add_edge(left, right)
    g.add_edge(names[-1], END)
    graph = g.compile()
    config = {"recursion_limit": n + 10}

    def run() -> None:
        out = asyncio.run(graph.ainvoke({"x": 0}, config))
        check(out.get("x") == 1, "chain did not reach its last node")

    return run


class LlmState(TypedDict, total=False):
    n: int
    answers: Annotated[list, operator.add]


def llm(p: dict[str, Any]) -> RunFn:
    from openai import AsyncOpenAI

    n, cap, url = int(p["n"]), int(p["cap"]), p["url"]
    holder: dict[str, Any] = {}

    async def call(arg: dict[str, Any]) -> dict[str, Any]:
        resp = await holder["client"].chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {arg['i']}"}]
        )
        return {"answers": [resp.choices[0].message.content]}

    def fan(state: LlmState) -> list[Send]:
        return [Send("call", {"i": i}) for i in range(state["n"])]

    g = StateGraph(LlmState)
    g.add_node("start", lambda state: {})
    g.add_node("call", call)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", fan, ["call"])
    g.add_edge("call", END)
    graph = g.compile()

    async def once() -> dict[str, Any]:
        # One shared client per run (its connection pool belongs to the run's event loop).
        async with AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:
            holder["client"] = client
            return await graph.ainvoke({"n": n, "answers": []}, {"max_concurrency": cap})

    def run() -> None:
        out = asyncio.run(once())
        check(len(out["answers"]) == n and all(out["answers"]), "missing LLM responses")

    return run


def shell(p: dict[str, Any]) -> RunFn:
    n, cap, command = int(p["n"]), int(p["cap"]), f"sleep {p['seconds']}"

    async def work(arg: dict[str, Any]) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_shell(command)
        return {"done": [await proc.wait()]}

    def fan(state: MapState) -> list[Send]:
        return [Send("work", {"i": i}) for i in range(state["n"])]

    g = StateGraph(MapState)
    g.add_node("start", lambda state: {})
    g.add_node("work", work)
    g.add_edge(START, "start")
    g.add_conditional_edges("start", fan, ["work"])
    g.add_edge("work", END)
    graph = g.compile()

    def run() -> dict[str, Any]:
        t0 = time.perf_counter()
        out = asyncio.run(graph.ainvoke({"n": n, "done": []}, {"max_concurrency": cap}))
        check(out["done"] == [0] * n, "a shell item failed")
        return {"engine_s": time.perf_counter() - t0}

    return run


if __name__ == "__main__":
    main(
        {
            "fanout": fanout,
            "diamond": diamond,
            "map": map_sleep,
            "map_noop": map_noop,
            "chain": chain,
            "llm": llm,
            "shell": shell,
        }
    )
