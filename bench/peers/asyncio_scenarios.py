"""Plain asyncio, no engine: the floor every engine is compared against (run with fanflow's venv
python; stdlib only, plus `openai` for the LLM scenario).

Fan-out is `asyncio.gather` of K sleeps; the diamond is two tasks (`B`, `C then D`) awaited before
E; maps are `gather` over items behind an `asyncio.Semaphore(cap)`; a chain of N no-op "nodes" is
N sequential `await`s of a coroutine wrapped in its own Task (what a scheduler that gives every
node a task pays).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from _common import RunFn, check, main


def fanout(p: dict[str, Any]) -> RunFn:
    k, seconds = int(p["k"]), float(p["seconds"])

    def run() -> None:
        async def go() -> list[Any]:
            return await asyncio.gather(*(asyncio.sleep(seconds) for _ in range(k)))

        check(len(asyncio.run(go())) == k, "lost branches")

    return run


def diamond(p: dict[str, Any]) -> RunFn:
    b, c, d = float(p["b"]), float(p["c"]), float(p["d"])

    def run() -> dict[str, Any]:
        spans: dict[str, tuple[float, float]] = {}

        async def step(name: str, seconds: float) -> None:
            t = time.perf_counter()
            await asyncio.sleep(seconds)
            spans[name] = (t, time.perf_counter())

        async def c_then_d() -> None:
            await step("C", c)
            await step("D", d)

        async def go() -> None:
            await step("A", 0)
            await asyncio.gather(step("B", b), c_then_d())
            await step("E", 0)

        t0 = time.perf_counter()
        asyncio.run(go())
        return {
            "e_runs": 1,
            "timeline": {k: [round(s - t0, 3), round(f - t0, 3)] for k, (s, f) in spans.items()},
        }

    return run


def _map(n: int, cap: int, seconds: float) -> RunFn:
    def run() -> None:
        async def go() -> list[int]:
            sem = asyncio.Semaphore(cap)

            async def item(i: int) -> int:
                async with sem:
                    if seconds:
                        await asyncio.sleep(seconds)
                    return i

            return await asyncio.gather(*(item(i) for i in range(n)))

        check(len(asyncio.run(go())) == n, "lost items")

    return run


def map_sleep(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), float(p["seconds"]))


def map_noop(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), 0.0)


def chain(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])

    async def noop(x: int) -> int:
        return x + 1

    def run() -> None:
        async def go() -> int:
            x = 0
            for _ in range(n):
                x = await asyncio.ensure_future(noop(x))
            return x

        check(asyncio.run(go()) == n, "chain broke")

    return run


def llm(p: dict[str, Any]) -> RunFn:
    from openai import AsyncOpenAI

    n, cap, url = int(p["n"]), int(p["cap"]), p["url"]

    def run() -> None:
        async def go() -> list[str]:
            sem = asyncio.Semaphore(cap)
            async with AsyncOpenAI(base_url=url + "/v1", api_key="x", max_retries=0) as client:

                async def call(i: int) -> str:
                    async with sem:
                        resp = await client.chat.completions.create(
                            model="gpt-4o-mini", messages=[{"role": "user", "content": f"hi {i}"}]
                        )
                        return resp.choices[0].message.content or ""

                return await asyncio.gather(*(call(i) for i in range(n)))

        out = asyncio.run(go())
        check(len(out) == n and all(out), "missing LLM responses")

    return run


def shell(p: dict[str, Any]) -> RunFn:
    n, cap, command = int(p["n"]), int(p["cap"]), f"sleep {p['seconds']}"

    def run() -> dict[str, Any]:
        async def go() -> list[int]:
            sem = asyncio.Semaphore(cap)

            async def item() -> int:
                async with sem:
                    proc = await asyncio.create_subprocess_shell(command)
                    return await proc.wait()

            return await asyncio.gather(*(item() for _ in range(n)))

        t0 = time.perf_counter()
        check(asyncio.run(go()) == [0] * n, "a shell item failed")
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
