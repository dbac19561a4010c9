"""PocketFlow 0.0.3 scenarios (run with the pocketflow peer venv's python).

Idioms (docs/benchmarks.md): PocketFlow has one successor per action, so "one node -> K different
nodes" is an `AsyncParallelBatchFlow` whose `prep_async` yields one params dict per branch and
whose sub-flow starts at a Router returning `params["branch"]` as its action. Maps are an
`AsyncParallelBatchNode` (plain `asyncio.gather`); PocketFlow has no concurrency cap, so the cap
is an `asyncio.Semaphore` inside `exec_async`.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from _common import RunFn, check, main
from pocketflow import AsyncFlow, AsyncNode, AsyncParallelBatchFlow, AsyncParallelBatchNode


class Sleep(AsyncNode):
    """Waits `seconds` (a constructor argument: flows overwrite node params with their own)."""

    def __init__(self, seconds: float, name: str = "", log: dict[str, Any] | None = None):
        super().__init__()
        self.seconds = seconds
        self.name = name
        self.log = log

    async def exec_async(self, prep_res: Any) -> Any:
        t0 = time.perf_counter()
        await asyncio.sleep(self.seconds)
        if self.log is not None:
            self.log["spans"][self.name] = (t0, time.perf_counter())
            self.log["runs"][self.name] = self.log["runs"].get(self.name, 0) + 1
        return None


class Router(AsyncNode):
    async def post_async(self, shared: dict, prep_res: Any, exec_res: Any) -> str:
        return self.params["branch"]


class Branches(AsyncParallelBatchFlow):
    def __init__(self, start: AsyncNode, branches: list[str]):
        super().__init__(start=start)
        self.branches = branches

    async def prep_async(self, shared: dict) -> list[dict[str, Any]]:
        return [{"branch": b} for b in self.branches]


def fanout(p: dict[str, Any]) -> RunFn:
    k, seconds = int(p["k"]), float(p["seconds"])
    log: dict[str, Any] = {"spans": {}, "runs": {}}
    router = Router()
    names = [f"b{i}" for i in range(k)]
    for name in names:
        router - name >> Sleep(seconds, name, log)
    start, join = Sleep(0, "start"), Sleep(0, "join", log)
    start >> Branches(router, names) >> join
    flow = AsyncFlow(start=start)

    def run() -> dict[str, Any]:
        log["spans"].clear()
        log["runs"].clear()
        asyncio.run(flow.run_async({}))
        check(len(log["spans"]) == k + 1, f"expected {k} branches + join, got {len(log['spans'])}")
        return {"join_runs": log["runs"]["join"]}

    return run


def diamond(p: dict[str, Any]) -> RunFn:
    log: dict[str, Any] = {"spans": {}, "runs": {}}
    a, e = Sleep(0, "A", log), Sleep(0, "E", log)
    b, c, d = Sleep(p["b"], "B", log), Sleep(p["c"], "C", log), Sleep(p["d"], "D", log)
    router = Router()
    router - "b" >> b
    router - "c" >> c >> d
    a >> Branches(router, ["b", "c"]) >> e
    flow = AsyncFlow(start=a)

    def run() -> dict[str, Any]:
        log["spans"].clear()
        log["runs"].clear()
        t0 = time.perf_counter()
        asyncio.run(flow.run_async({}))
        return {
            "e_runs": log["runs"].get("E", 0),
            "timeline": {
                k: [round(s - t0, 3), round(f - t0, 3)] for k, (s, f) in log["spans"].items()
            },
        }

    return run


class CappedMap(AsyncParallelBatchNode):
    """One node over `n` items, at most `cap` at once, each waiting `seconds`."""

    def __init__(self, n: int, cap: int, seconds: float):
        super().__init__()
        self.n, self.cap, self.seconds = n, cap, seconds
        self.sem: asyncio.Semaphore | None = None

    async def prep_async(self, shared: dict) -> list[int]:
        self.sem = asyncio.Semaphore(self.cap)  # per run: a semaphore binds to its loop
        return list(range(self.n))

    async def exec_async(self, item: int) -> int:
        assert self.sem is not None
        async with self.sem:
            if self.seconds:
                await asyncio.sleep(self.seconds)
            return item

    async def post_async(self, shared: dict, prep_res: Any, exec_res: list[int]) -> None:
        shared["results"] = exec_res


def _map(n: int, cap: int, seconds: float) -> RunFn:
    node = CappedMap(n, cap, seconds)
    flow = AsyncFlow(start=node)

    def run() -> None:
        shared: dict[str, Any] = {}
        asyncio.run(flow.run_async(shared))
        check(len(shared["results"]) == n, "map lost items")

    return run


def map_sleep(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), float(p["seconds"]))


def map_noop(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), 0.0)


class Noop(AsyncNode):
    async def exec_async(self, prep_res: Any) -> Any:
        return None


class Count(AsyncNode):
    async def post_async(self, shared: dict, prep_res: Any, exec_res: Any) -> None:
        shared["n"] = shared.get("n", 0) + 1


def chain(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])
    nodes = [Noop() for _ in range(n - 1)] + [Count()]
    for left, right in itertools.pairwise(nodes):
        left >> right
    flow = AsyncFlow(start=nodes[0])

    def run() -> None:
        shared: dict[str, Any] = {}
        asyncio.run(flow.run_async(shared))
        check(shared.get("n") == 1, "chain did not reach its last node")

    return run


class LlmMap(AsyncParallelBatchNode):
    def __init__(self, n: int, cap: int, url: str):
        super().__init__()
        self.n, self.cap, self.url = n, cap, url
        self.sem: asyncio.Semaphore | None = None
        self.client: Any = None

    async def prep_async(self, shared: dict) -> list[int]:
        from openai import AsyncOpenAI

        self.sem = asyncio.Semaphore(self.cap)
        self.client = AsyncOpenAI(base_url=self.url + "/v1", api_key="x", max_retries=0)
        return list(range(self.n))

    async def exec_async(self, item: int) -> str:
        assert self.sem is not None
        async with self.sem:
            resp = await self.client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {item}"}]
            )
            return resp.choices[0].message.content or ""

    async def post_async(self, shared: dict, prep_res: Any, exec_res: list[str]) -> None:
        await self.client.close()
        shared["results"] = exec_res


def llm(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])
    flow = AsyncFlow(start=LlmMap(n, int(p["cap"]), p["url"]))

    def run() -> None:
        shared: dict[str, Any] = {}
        asyncio.run(flow.run_async(shared))
        check(len(shared["results"]) == n and all(shared["results"]), "missing LLM responses")

    return run


class ShellMap(AsyncParallelBatchNode):
    def __init__(self, n: int, cap: int, command: str):
        super().__init__()
        self.n, self.cap, self.command = n, cap, command
        self.sem: asyncio.Semaphore | None = None

    async def prep_async(self, shared: dict) -> list[int]:
        self.sem = asyncio.Semaphore(self.cap)
        return list(range(self.n))

    async def exec_async(self, item: int) -> int:
        assert self.sem is not None
        async with self.sem:
            proc = await asyncio.create_subprocess_shell(self.command)
            return await proc.wait()

    async def post_async(self, shared: dict, prep_res: Any, exec_res: list[int]) -> None:
        shared["codes"] = exec_res


def shell(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])
    flow = AsyncFlow(start=ShellMap(n, int(p["cap"]), f"sleep {p['seconds']}"))

    def run() -> dict[str, Any]:
        shared: dict[str, Any] = {}
        t0 = time.perf_counter()
        asyncio.run(flow.run_async(shared))
        check(shared["codes"] == [0] * n, "a shell item failed")
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
