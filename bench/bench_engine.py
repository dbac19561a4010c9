"""Engine overhead and parallel speed, printed as ratios to the ideal (issues 2 and 3).

python bench/bench_engine.py            # full sizes
python bench/bench_engine.py --quick    # small sizes (used by the test suite's smoke run)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import resource
import statistics
import time
from typing import Any

import fanflow
from fanflow.nodes.base import AsyncNode


class Noop(AsyncNode):
    type_name = "bench-noop"

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        return {}


class Sleep(AsyncNode):
    type_name = "bench-sleep"

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        await asyncio.sleep(float(self.params["seconds"]))
        return {}


fanflow.register_node(Noop)
fanflow.register_node(Sleep)


def chain(n: int) -> dict[str, Any]:
    return {
        "ir_version": "0.1.0",
        "nodes": [{"id": f"n{i}", "type": "bench-noop"} for i in range(n)],
    }


def fan_out(k: int, seconds: float) -> dict[str, Any]:
    nodes = [{"id": "start", "type": "bench-noop"}, {"id": "join", "type": "bench-noop"}]
    nodes += [
        {"id": f"b{i}", "type": "bench-sleep", "params": {"seconds": seconds}} for i in range(k)
    ]
    edges = [{"from": "start", "to": f"b{i}"} for i in range(k)]
    edges += [{"from": f"b{i}", "to": "join"} for i in range(k)]
    return {"ir_version": "0.1.0", "nodes": nodes, "edges": edges}


def diamond() -> dict[str, Any]:
    def s(i: str, sec: float) -> dict[str, Any]:
        return {"id": i, "type": "bench-sleep", "params": {"seconds": sec}}

    nodes = [s("A", 0), s("B", 0.3), s("C", 0.1), s("D", 0.3), s("E", 0)]
    pairs = [("A", "B"), ("A", "C"), ("C", "D"), ("B", "E"), ("D", "E")]
    return {
        "ir_version": "0.1.0",
        "nodes": nodes,
        "edges": [{"from": a, "to": b} for a, b in pairs],
    }


def batch(n: int, node_type: str, params: dict[str, Any], cap: int) -> dict[str, Any]:
    node = {"id": "work", "type": node_type, "params": params,
            "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": cap}}  # fmt: skip
    return {"ir_version": "0.1.0", "nodes": [node]}


def measure(doc: dict[str, Any], repeats: int) -> list[float]:
    workflow = fanflow.compile_workflow(doc)  # load + validate once, outside the timing
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fanflow.run(workflow)
        times.append(time.perf_counter() - t0)
        assert result.ok, result.error
    return times


def row(name: str, times: list[float], ideal: float | None = None, per: int | None = None) -> str:
    med = statistics.median(times)
    text = (
        f"{name:<42} median {med * 1000:9.1f} ms  [{min(times) * 1000:.1f}–{max(times) * 1000:.1f}]"
    )
    if per:
        text += f"  {med / per * 1e6:7.1f} µs/unit"
    if ideal:
        text += f"  ×{med / ideal:.3f} of ideal {ideal:.2f}s"
    return text


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    r = 2 if args.quick else 5
    big = 1_000 if args.quick else 10_000
    print("fanflow engine benchmarks (in-process, asyncio.run per run)")
    print(row("chain 1,000 no-op nodes", measure(chain(1000), r), per=1000))
    print(row(f"chain {big:,} no-op nodes", measure(chain(big), r), per=big))
    for k in (4, 32, 256):
        print(row(f"fan-out K={k} × sleep 0.2 s", measure(fan_out(k, 0.2), r), ideal=0.2))
    print(row("uneven diamond (critical path 0.4 s)", measure(diamond(), r), ideal=0.4))
    print(row(f"batch {big:,} no-op items", measure(batch(big, "bench-noop", {}, 100), r), per=big))
    n = 200 if args.quick else 1000
    print(row(f"map {n:,} × 50 ms, max_concurrent 100", measure(
        batch(n, "bench-sleep", {"seconds": 0.05}, 100), r), ideal=n / 100 * 0.05))  # fmt: skip
    if not args.quick:
        measure(batch(100_000, "bench-noop", {}, 100), 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB (includes 100,000-item batch when not --quick)")


if __name__ == "__main__":
    main()
