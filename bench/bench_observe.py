"""Cost of the observability listeners on the engine's overhead benchmarks (issue 5).

    python bench/bench_observe.py            # 10,000-node chain and 10,000-item batch
    python bench/bench_observe.py --quick    # 1,000

Each configuration runs the same loaded workflow in-process; the median of N runs is compared
with the run without listeners. Progress writes to a pipe that a thread drains (like a CI log).
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
from fanflow.observe.progress import make_progress
from fanflow.observe.summary import SummaryCollector
from fanflow.observe.trace import TraceWriter


def _pipe_stream() -> Any:
    r, w = os.pipe()

    def drain() -> None:
        with os.fdopen(r, "rb") as f:
            while f.read(65536):
                pass

    threading.Thread(target=drain, daemon=True).start()
    return os.fdopen(w, "w", encoding="utf-8", buffering=1)


def measure(workflow: Any, make_listeners: Any, repeats: int) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (CPU time is steadier on a busy
    machine; the pipe-draining thread is included, as a CI log reader would be elsewhere)."""
    walls, cpus = [], []
    for _ in range(repeats):
        listeners = make_listeners()
        gc.collect()
        t0, c0 = time.perf_counter(), time.process_time()
        result = fanflow.run(workflow, listeners=listeners)  # bus.close() writes the trace
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        assert result.ok, result.error
    return statistics.median(walls), statistics.median(cpus)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    repeats = 3 if args.quick else 7
    tmp = Path(tempfile.mkdtemp())
    pipe = _pipe_stream()
    configs = {
        "no listeners": lambda: [],
        "trace (--trace)": lambda: [TraceWriter(tmp / "t.json")],
        "summary": lambda: [SummaryCollector()],
        "progress, non-TTY pipe": lambda: [make_progress(pipe, tty=False)],
        "all three (CLI default + --trace)": lambda: [
            make_progress(pipe, tty=False),
            SummaryCollector(),
            TraceWriter(tmp / "t.json"),
        ],
    }
    for label, doc in ((f"chain {n:,} no-op nodes", chain(n)), (f"batch {n:,} no-op items",
                        batch(n, "bench-noop", {}, 100))):  # fmt: skip
        workflow = fanflow.compile_workflow(doc)
        measure(workflow, lambda: [], 2)  # warm-up
        print(label)
        base = None
        for name, make in configs.items():
            wall, cpu = measure(workflow, make, repeats)
            base = base or (wall, cpu)
            print(
                f"  {name:<34} wall {wall * 1000:7.1f} ms {(wall / base[0] - 1) * 100:+6.1f}%"
                f"   cpu {cpu * 1000:7.1f} ms {(cpu / base[1] - 1) * 100:+6.1f}%"
                f"  ({(cpu - base[1]) / n * 1e6:+5.1f} µs/unit)"
            )
    size = (tmp / "t.json").stat().st_size
    print(f"trace file of the last run: {size / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
