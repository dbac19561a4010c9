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
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import fanflow
from bench_engine import batch, chain  # registers the bench-noop node type
from fanflow.observe.progress import make_progress
from fanflow.observe.summary import SummaryCollector
from fanflow.store.checkpoint import CheckpointWriter
from fanflow.store.runs import RunStore


class NullListener:
    """Receives every event and does nothing: isolates the cost of the event stream itself,
    which the engine skips entirely when a run has no listener at all."""

    def on_event(self, event: Any) -> None:
        pass

    def close(self) -> None:
        pass


def _cli_default() -> list[Any]:
    """What `fanflow run` attaches anyway: progress (to a pipe, non-TTY) and the summary."""
    return [make_progress(_DEVNULL, tty=False), SummaryCollector()]


_DEVNULL = open(os.devnull, "w")  # noqa: SIM115 - lives for the whole benchmark

BASELINES = {
    "no listeners": lambda: [],
    "null listener": lambda: [NullListener()],
    "CLI default listeners": _cli_default,
}


def run_once(workflow: Any, make: Any, store: RunStore | None, path: Path | None = None) -> float:
    gc.collect()
    t0 = time.perf_counter()
    listeners: list[Any] = make()
    writer = None
    if store is not None:
        writer = CheckpointWriter(store, workflow=workflow, workflow_path=path, inputs={})
        listeners.append(writer)
    result = fanflow.run(workflow, listeners=listeners, run_id=writer.run_id if writer else None)
    elapsed = time.perf_counter() - t0  # run() closes the bus: the writer has flushed by now
    assert result.ok, result.error
    if writer is not None:
        assert not writer.errors, writer.errors
        assert writer.final_status == "success"
    return elapsed


def cli_section(n: int, repeats: int, tmp: Path, ratios: dict[str, float]) -> None:
    """What a user waits for: `fanflow run FILE -q` as a whole process (start-up, loading and
    validating the workflow, the run, the store), with and without `--no-checkpoint`."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent), "FANFLOW_HOME": str(tmp / "h")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as installed: start-up from cached bytecode
    noop = "bench_engine:Noop"  # a `module:Class` type: the same no-op node, in a fresh process
    docs = {
        f"CLI: chain {n:,} no-op nodes": {
            "ir_version": "0.1.0",
            "nodes": [{"id": f"n{i}", "type": noop} for i in range(n)],
        },
        f"CLI: batch {n:,} no-op items": batch(n, noop, {}, 100),
    }
    for label, doc in docs.items():
        path = tmp / "cli.json"
        path.write_text(json.dumps(doc))
        cmd = [sys.executable, "-m", "fanflow", "run", str(path), "-q"]
        subprocess.run(cmd, env=env, check=True, capture_output=True)  # warm the OS caches
        base, ckpt = [], []
        for _ in range(repeats):
            for extra, into in (["--no-checkpoint"], base), ([], ckpt):
                t0 = time.perf_counter()
                subprocess.run([*cmd, *extra], env=env, check=True, capture_output=True)
                into.append(time.perf_counter() - t0)
        b, c = statistics.median(base), statistics.median(ckpt)
        ratios[label] = c / b
        print(
            f"{label}: --no-checkpoint {b * 1000:7.1f} ms, default {c * 1000:7.1f} ms"
            f"   ratio {c / b:.3f} ({(c / b - 1) * 100:+.1f}%)"
        )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    n = 1_000 if args.quick else 10_000
    repeats = args.repeats or (3 if args.quick else 9)
    tmp = Path(tempfile.mkdtemp(prefix="fanflow-bench-ckpt-"))
    ratios: dict[str, float] = {}
    try:
        store = RunStore(tmp / "runs.db")  # one store, as in a project: it exists before the run
        shell_n = 100 if args.quick else 400
        cases = (
            (f"chain {n:,} no-op nodes", chain(n)),
            (f"batch {n:,} no-op items", batch(n, "bench-noop", {}, 100)),
            # for scale: a batch whose items do real (if tiny) work
            (
                f"batch {shell_n} shell `true` items",
                batch(shell_n, "shell", {"command": "true"}, 16),
            ),
        )
        for label, doc in cases:
            path = tmp / "wf.json"  # as from the CLI: the run records the file it ran
            path.write_text(json.dumps(doc))
            workflow = fanflow.compile_workflow(path)
            run_once(workflow, lambda: [], None)  # warm-up (imports, caches)
            run_once(workflow, lambda: [], store, path)
            print(label)
            for base_name, make in BASELINES.items():
                base, ckpt = [], []
                for _ in range(repeats):  # interleaved: machine drift hits both alike
                    base.append(run_once(workflow, make, None))
                    ckpt.append(run_once(workflow, make, store, path))
                b, c = statistics.median(base), statistics.median(ckpt)
                ratios[f"{label} / {base_name}"] = c / b
                # best-of alongside the median: on a shared machine the minimum is the run
                # least disturbed by others
                print(
                    f"  {base_name:<22} {b * 1000:7.1f} ms   + checkpoint {c * 1000:7.1f} ms"
                    f"   ratio {c / b:.3f} ({(c / b - 1) * 100:+.1f}%)"
                    f"   best-of ratio {min(ckpt) / min(base):.3f}"
                )
        cli_section(n, repeats, tmp, ratios)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    worst = max(ratios, key=ratios.__getitem__)
    print(f"worst ratio {ratios[worst]:.3f} ({worst}); target ≤ 1.15")


if __name__ == "__main__":
    main()
