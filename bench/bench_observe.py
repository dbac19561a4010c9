"""Cost of the observability listeners on the engine's overhead benchmarks (issues 5 and 11).

    python bench/bench_observe.py            # 10,000-node chain and 10,000-item batch
    python bench/bench_observe.py --quick    # 1,000

Each configuration runs the same compiled workflow in-process through `fanflow.run`'s own
options (`trace=`, `summary=True`, `progress=`), so it pays exactly what the CLI pays: the trace
file written, the summary computed, a trace and a summary sharing one recording. Progress writes
to a pipe that a thread drains (like a CI log). The configurations take turns run by run, so a
busy machine slows them alike; each row is the median of N runs compared with the run without
listeners. "null listener" is the floor any listener pays: the engine creating the events.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import fanflow
from bench_engine import batch, chain  # registers the bench-noop node type
from fanflow.events import Event


class NullListener:
    def on_event(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


def _pipe_stream() -> Any:
    r, w = os.pipe()

    def drain() -> None:
        with os.fdopen(r, "rb") as f:
            while f.read(65536):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return os.fdopen(w, "w", encoding="utf-8", buffering=1)


def run_once(workflow: Any, options: dict[str, Any]) -> tuple[float, float]:
    """Wall and CPU time of this process for one run (CPU time is steadier on a busy machine;
    the pipe-draining thread is included, as a CI log reader would be elsewhere)."""
    options = {k: v() if callable(v) else v for k, v in options.items()}
    gc.collect()
    t0, c0 = time.perf_counter(), time.process_time()
    result = fanflow.run(workflow, **options)  # writes the trace, computes the summary
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    assert result.ok, result.error
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    repeats = args.repeats or (3 if args.quick else 9)
    tmp = Path(tempfile.mkdtemp())
    pipe = _pipe_stream()
    trace = tmp / "t.json"
    configs: dict[str, dict[str, Any]] = {
        "no listeners": {},
        "null listener (the floor)": {"listeners": lambda: [NullListener()]},
        "trace (--trace)": {"trace": trace},
        "summary": {"summary": True},
        "progress, non-TTY pipe": {"progress": pipe},
        "all three (CLI default + --trace)": {"progress": pipe, "summary": True, "trace": trace},
    }
    for label, doc in ((f"chain {n:,} no-op nodes", chain(n)), (f"batch {n:,} no-op items",
                        batch(n, "bench-noop", {}, 100))):  # fmt: skip
        workflow = fanflow.compile_workflow(doc)
        for options in configs.values():  # warm-up
            run_once(workflow, options)
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in configs}
        for _ in range(repeats):
            for name, options in configs.items():
                times[name].append(run_once(workflow, options))
        print(label)
        base_wall = statistics.median(w for w, _ in times["no listeners"])
        base_cpu = statistics.median(c for _, c in times["no listeners"])
        for name in configs:
            wall = statistics.median(w for w, _ in times[name])
            cpu = statistics.median(c for _, c in times[name])
            print(
                f"  {name:<34} wall {wall * 1000:7.1f} ms {(wall / base_wall - 1) * 100:+6.1f}%"
                f"   cpu {cpu * 1000:7.1f} ms {(cpu / base_cpu - 1) * 100:+6.1f}%"
                f"  ({(cpu - base_cpu) / n * 1e6:+5.2f} µs/unit)"
            )
    size = trace.stat().st_size
    print(f"trace file of the last run: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
