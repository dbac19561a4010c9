"""Cost of checkpointing (issue 6): the run store's CheckpointWriter on the engine's overhead
benchmarks, the 10,000-node no-op chain and the 10,000-item no-op batch. Target: ≤ 15% extra.

    python bench/bench_checkpoint.py            # 10,000
    python bench/bench_checkpoint.py --quick    # 1,000

The timed region covers what `fanflow run` adds: opening the store, creating the run row, every
node/item write and the final flush in close(). Configurations are interleaved run by run (so
machine drift hits them alike) and the median of N runs is compared. Each run writes a fresh
store in a temp folder on the local disk.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import fanflow
from bench_engine import batch, chain  # registers the bench-noop node type
from fanflow.observe.summary import SummaryCollector
from fanflow.store.runs import CheckpointWriter, RunStore


def run_once(workflow: Any, checkpoint: bool, tmp: Path, extra: bool) -> float:
    folder = Path(tempfile.mkdtemp(dir=tmp))
    gc.collect()
    t0 = time.perf_counter()
    listeners: list[Any] = [SummaryCollector()] if extra else []
    writer = None
    if checkpoint:
        writer = CheckpointWriter(RunStore(folder / "runs.db"), workflow=workflow,
                                  workflow_path="bench.json", inputs={})  # fmt: skip
        listeners.append(writer)
    result = fanflow.run(workflow, listeners=listeners, run_id=writer.run_id if writer else None)
    elapsed = time.perf_counter() - t0  # run() closes the bus: the writer has flushed by now
    assert result.ok, result.error
    if writer is not None:
        assert not writer.errors, writer.errors
        assert writer.final_status == "success"
    shutil.rmtree(folder, ignore_errors=True)
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    repeats = args.repeats or (3 if args.quick else 9)
    tmp = Path(tempfile.mkdtemp(prefix="fanflow-bench-ckpt-"))
    worst = 0.0
    try:
        cases = (
            (f"chain {n:,} no-op nodes", chain(n)),
            (f"batch {n:,} no-op items", batch(n, "bench-noop", {}, 100)),
        )
        for label, doc in cases:
            workflow = fanflow.load_workflow(doc)
            run_once(workflow, False, tmp, False)  # warm-up (imports, caches)
            run_once(workflow, True, tmp, False)
            for extra in (False, True):
                base, ckpt = [], []
                for _ in range(repeats):
                    base.append(run_once(workflow, False, tmp, extra))
                    ckpt.append(run_once(workflow, True, tmp, extra))
                b, c = statistics.median(base), statistics.median(ckpt)
                ratio = c / b
                worst = max(worst, ratio)
                with_what = " (+ summary listener)" if extra else ""
                print(
                    f"{label}{with_what}: without {b * 1000:7.1f} ms, with checkpoint "
                    f"{c * 1000:7.1f} ms  ratio {ratio:.3f} ({(ratio - 1) * 100:+.1f}%)"
                )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"worst ratio {worst:.3f} (target ≤ 1.15)")


if __name__ == "__main__":
    main()
