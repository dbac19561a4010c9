"""Executors (issue 16), ratios to the ideal measured in the same run.

python bench/bench_executors.py              # full sizes
python bench/bench_executors.py --quick      # small sizes
python bench/bench_executors.py --dask       # also fanflow's own Dask LocalCluster

1. CPU-bound code batch: 8 items × ~0.37 s of Python arithmetic, parallel. Ideal = the
   items' sequential time / the cores. Target with `process`: ≤ 1.15× ideal (the thread
   executor beside it: the GIL keeps it at ~1 core).
2. Per-item overhead: no-op code items (`result = x * 2`) and tiny shell items per executor,
   µs/item of the whole run. For code on threads, the same batch with the chunked hop turned
   off (one thread hop per item, as before issue 16) is measured beside it.
"""

from __future__ import annotations

import argparse
import gc
import os
import time
from typing import Any

import fanflow
from fanflow.execute import batch as batch_mod

CPU_CODE = """
s = 0
for i in range(n):
    s += i * i % 7
result = s
"""


def cores() -> int:
    return len(os.sched_getaffinity(0)) or 1


def code_batch(code: str, n: int, cap: int, inputs: dict[str, Any]) -> dict[str, Any]:
    return {
        "ir_version": "0.1.0",
        "inputs": {"xs": {"type": "array"}},
        "nodes": [{
            "id": "c", "type": "code",
            "params": {"code": code, "inputs": {"x": "${item}", **inputs}, "timeout": 600},
            "batch": {"items": "${xs}", "parallel": cap > 1, "max_concurrent": cap},
        }],
    }  # fmt: skip


def shell_batch(n: int, cap: int) -> dict[str, Any]:
    return {
        "ir_version": "0.1.0",
        "inputs": {"xs": {"type": "array"}},
        "nodes": [{
            "id": "s", "type": "shell", "params": {"command": "true"},
            "batch": {"items": "${xs}", "parallel": True, "max_concurrent": cap},
        }],
    }  # fmt: skip


def timed(doc: dict[str, Any], n: int, executor: str | None, repeats: int = 1) -> list[float]:
    workflow = fanflow.compile_workflow(doc)  # load + validate once, outside the timing
    times = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        result = fanflow.run(workflow, {"xs": list(range(n))}, executor=executor)
        times.append(time.perf_counter() - t0)
        assert result.ok, result.error
    return times


def calibrate(seconds: float) -> tuple[int, float]:
    """The loop count whose arithmetic takes ~`seconds` here, and one item's measured time."""
    code = compile(CPU_CODE, "<cpu>", "exec")
    n = 200_000
    while True:
        t0 = time.perf_counter()
        exec(code, {"n": n})
        took = time.perf_counter() - t0
        if took > 0.05:
            break
        n *= 2
    runs = []
    for _ in range(3):  # the least disturbed of three (the machine may be shared)
        t0 = time.perf_counter()
        exec(code, {"n": n})
        runs.append(time.perf_counter() - t0)
    n = int(n * seconds / min(took, *runs))
    t0 = time.perf_counter()
    exec(code, {"n": n})
    return n, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dask", action="store_true", help="also run on a Dask LocalCluster")
    parser.add_argument("--cpu", action="store_true", help="only the CPU-bound batch")
    args = parser.parse_args()
    k = cores()
    executors = ["thread", "process"] + (["dask"] if args.dask else [])
    print(f"cores: {k}; executors: {', '.join(executors)}")

    # 1. CPU-bound batch. The machine may be shared: rounds interleave the sequential baseline
    # and each executor, and the best of the rounds is kept for each.
    items = 4 if args.quick else 8
    n, _ = calibrate(0.1 if args.quick else 0.37)
    seq_doc = code_batch(CPU_CODE, items, 1, {"n": n})
    doc = code_batch(CPU_CODE, items, items, {"n": n})
    best: dict[str, float] = {}
    for _ in range(1 if args.quick else 3):
        for name, d, ex in [("sequential", seq_doc, "thread")] + [(e, doc, e) for e in executors]:
            t = timed(d, items, ex)[0]
            best[name] = min(best.get(name, t), t)
    ideal = best["sequential"] / k
    print(f"\nCPU batch: {items} items, sequential run {best['sequential']:.2f} s "
          f"({best['sequential'] / items:.2f} s/item); ideal on {k} cores = {ideal:.2f} s"
          " (best of the rounds)")  # fmt: skip
    for ex in executors:
        print(f"  {ex:<8} {best[ex]:6.2f} s   ×{best[ex] / ideal:.3f} of ideal")
    if args.cpu:
        return

    # 2. per-item overhead
    size = 2_000 if args.quick else 10_000
    print(f"\nper-item overhead, {size:,} items, max_concurrent 100 (whole run, µs/item)")
    noop = code_batch("result = x * 2", size, 100, {})
    seq = code_batch("result = x * 2", size, 1, {})
    for ex in executors:
        t = min(timed(noop, size, ex, repeats=3 if ex == "thread" else 1))
        print(f"  code  {ex:<8} {t / size * 1e6:8.1f} µs/item")
    wide = code_batch("result = x * 2", size, 2_000, {})
    for ex in executors[1:]:  # more in flight: bigger chunks per message / Dask task
        t = min(timed(wide, size, ex))
        print(f"  code  {ex:<8} {t / size * 1e6:8.1f} µs/item with max_concurrent 2000")
    t_seq = min(timed(seq, size, "thread", repeats=3))
    print(f"  code  thread, sequential batch {t_seq / size * 1e6:8.1f} µs/item")
    saved = batch_mod._chunkable
    batch_mod._chunkable = lambda rs, plan: False  # type: ignore[assignment]
    try:
        t_old = min(timed(noop, size, "thread", repeats=3))
        t_old_seq = min(timed(seq, size, "thread", repeats=3))
    finally:
        batch_mod._chunkable = saved  # type: ignore[assignment]
    print(f"  code  thread, one hop per item (before): {t_old / size * 1e6:.1f} µs/item parallel,"
          f" {t_old_seq / size * 1e6:.1f} µs/item sequential; target ≤ 10")  # fmt: skip
    shell_n = size // 5 if not args.quick else 500
    for ex in executors:
        t = min(timed(shell_batch(shell_n, 100), shell_n, ex))
        print(f"  shell {ex:<8} {t / shell_n * 1e6:8.1f} µs/item ({shell_n:,} items; shell is"
              " async: it always runs on the driver's loop)")  # fmt: skip


if __name__ == "__main__":
    main()
