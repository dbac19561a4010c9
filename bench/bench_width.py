"""Width costs what length costs (issue 11): a 10,000-wide fan-out/fan-in against a 10,000-long
chain, for the static commands and for the run itself.

    python bench/bench_width.py            # 10,000 wide / 10,000 long (under a minute)
    python bench/bench_width.py --quick    # 1,000
    python bench/bench_width.py --repeats 1  # e.g. to time a slow (quadratic) build once

wide  = start → b0 … b9999 → join; the join is a code node whose inputs read `${b_i.result}` of
        every branch, with an edge from every branch.
chain = n0 → n1 → … → n9999; each node reads `${n_{i-1}.result}`, with an edge from it.

`fanflow validate` and `fanflow plan` (text, json, mermaid) run as subprocesses, as a user runs
them: the wall time includes interpreter start-up and imports (the `--version` row). The run is
in-process (`fanflow.run`, loading included), shown as µs per node. Each cell is the median of
the repeats; CPU time (user + sys) is shown too, as it is steadier on a busy machine.

Targets: wide ÷ chain per node ≈ ×1; run ≤ 10 µs/node; every command ≤ 1 s wall at 10,000.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fanflow

TARGET_S = 1.0  # the static commands, whole process, at 10,000 wide
TARGET_RUN_US = 10.0
FULL = 10_000

CODE = "result = 1"


def _code(node_id: str, inputs: dict[str, str] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"code": CODE}
    if inputs:
        params["inputs"] = inputs
    return {"id": node_id, "type": "code", "params": params}


def wide(k: int) -> dict[str, Any]:
    """start → b0..b{k-1} → join, where the join reads every branch."""
    branches = [f"b{i}" for i in range(k)]
    nodes = [_code("start"), *(_code(b) for b in branches)]
    nodes.append(_code("join", {f"v{i}": f"${{{b}.result}}" for i, b in enumerate(branches)}))
    edges = [{"from": "start", "to": b} for b in branches]
    edges += [{"from": b, "to": "join"} for b in branches]
    return {"ir_version": "0.1.0", "name": f"wide-{k}", "nodes": nodes, "edges": edges}


def chain(n: int) -> dict[str, Any]:
    """n0 → n1 → … → n{n-1}, each reading the one before."""
    nodes = [_code("n0")]
    nodes += [_code(f"n{i}", {"prev": f"${{n{i - 1}.result}}"}) for i in range(1, n)]
    edges = [{"from": f"n{i - 1}", "to": f"n{i}"} for i in range(1, n)]
    return {"ir_version": "0.1.0", "name": f"chain-{n}", "nodes": nodes, "edges": edges}


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}  # as installed:
# start-up from cached bytecode (a sandbox that sets it compiles every module from source)


def time_command(args: list[str], repeats: int) -> tuple[float, float, str]:
    """Median wall and CPU seconds of `python -m fanflow ARGS`, and the first line it printed."""
    walls, cpus = [], []
    first = ""
    for _ in range(repeats):
        cpu0, t0 = _children_cpu(), time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "fanflow", *args],
            capture_output=True,
            text=True,
            check=False,
            env=_ENV,
        )
        walls.append(time.perf_counter() - t0)
        cpus.append(_children_cpu() - cpu0)
        if proc.returncode != 0:
            sys.exit(f"`fanflow {' '.join(args)}` exited {proc.returncode}:\n{proc.stderr}")
        first = proc.stdout.split("\n", 1)[0]
    return statistics.median(walls), statistics.median(cpus), first


def time_run(doc: dict[str, Any], repeats: int) -> tuple[float, float]:
    """Median wall and CPU seconds of `fanflow.run(doc)` in this process (loading included)."""
    walls, cpus = [], []
    for _ in range(repeats):
        gc.collect()
        c0, t0 = time.process_time(), time.perf_counter()
        result = fanflow.run(doc)
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
        if not result.ok:
            sys.exit(f"run of {doc['name']} ended {result.status}: {result.error}")
        del result
    return statistics.median(walls), statistics.median(cpus)


def time_compile(doc: dict[str, Any], repeats: int) -> float | None:
    """Median wall seconds of loading, validating and compiling alone: the static share of a run
    (None where this fanflow has no `compile_workflow`)."""
    compile_workflow = getattr(fanflow, "compile_workflow", None)
    if compile_workflow is None:
        return None
    walls = []
    for _ in range(repeats):
        gc.collect()
        t0 = time.perf_counter()
        compile_workflow(doc)
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def time_engine(doc: dict[str, Any], repeats: int) -> float | None:
    """Median wall seconds of running the compiled workflow: the engine's share of a run."""
    compile_workflow = getattr(fanflow, "compile_workflow", None)
    if compile_workflow is None:
        return None
    compiled = compile_workflow(doc)
    walls = []
    for _ in range(repeats + 1):
        gc.collect()
        t0 = time.perf_counter()
        result = fanflow.run(compiled)
        walls.append(time.perf_counter() - t0)
        if not result.ok:
            sys.exit(f"run of {doc['name']} ended {result.status}: {result.error}")
    return statistics.median(walls[1:])


def thread_round_trip_us(n: int = 5000) -> float:
    """A bare hand-off to a waiting thread and back (two queues, no engine), in µs: the least a
    node that runs on a worker thread and waits for its predecessor can cost on this machine."""
    import queue
    import threading

    there: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    back: queue.SimpleQueue[int] = queue.SimpleQueue()

    def serve() -> None:
        while (job := there.get()) is not None:
            back.put(job)

    worker = threading.Thread(target=serve)
    worker.start()
    for _ in range(200):
        there.put(1)
        back.get()
    t0 = time.perf_counter()
    for _ in range(n):
        there.put(1)
        back.get()
    elapsed = time.perf_counter() - t0
    there.put(None)
    worker.join()
    return elapsed / n * 1e6


def _ratio(a: float, b: float) -> str:
    return f"×{a / b:.2f}" if b > 0 else "–"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 wide / long instead of 10,000")
    ap.add_argument("--repeats", type=int, help="runs per cell, median (default 3, full 2)")
    args = ap.parse_args()
    k = 1_000 if args.quick else FULL
    if args.repeats is None:
        args.repeats = 3 if args.quick else 2
    shapes = {"wide": wide(k), "chain": chain(k)}
    sizes = {name: len(doc["nodes"]) for name, doc in shapes.items()}

    print(
        f"fanflow {fanflow.__version__} · python {sys.version.split()[0]} · {os.cpu_count()} cores"
    )
    print(f"load average at start {os.getloadavg()[0]:.2f}")
    print(
        f"wide = start → {k:,} code nodes → join (reads all {k:,}); "
        f"chain = {k:,} code nodes, each reading the one before\n"
    )

    with tempfile.TemporaryDirectory(prefix="bench_width_") as tmp:
        paths = {}
        for name, doc in shapes.items():
            paths[name] = str(Path(tmp) / f"{name}.json")
            Path(paths[name]).write_text(json.dumps(doc))

        startup_wall, startup_cpu, _ = time_command(["--version"], args.repeats)
        commands = {
            "validate": ["validate"],
            "plan": ["plan"],
            "plan --format json": ["plan", "--format", "json"],
            "plan --format mermaid": ["plan", "--format", "mermaid"],
        }
        head = f"{'command':<24}{'wide':>22}{'chain':>22}{'wide÷chain':>12}   vs {TARGET_S:g} s"
        print(head)
        print("-" * len(head))
        startup = f"{startup_wall:.3f} s (cpu {startup_cpu:.2f})"
        print(f"{'--version (start-up)':<24}{startup:>22}")
        worst = 0.0
        for label, argv in commands.items():
            cells = {}
            for name in shapes:
                cells[name] = time_command([*argv, paths[name]], args.repeats)
            (ww, wc, first), (cw, cc, _) = cells["wide"], cells["chain"]
            if label == "plan" and f"up to {k} nodes in parallel" not in first:
                sys.exit(f"unexpected plan of the wide workflow: {first}")
            per = (ww / sizes["wide"]) / (cw / sizes["chain"])
            worst = max(worst, ww, cw)
            verdict = "ok" if max(ww, cw) <= TARGET_S else "OVER"
            print(
                f"{label:<24}{f'{ww:.3f} s (cpu {wc:.2f})':>22}{f'{cw:.3f} s (cpu {cc:.2f})':>22}"
                f"{f'×{per:.2f}':>12}   {verdict}"
            )

        fanflow.run(wide(10))  # warm-up: the engine's imports
        runs = {name: time_run(doc, args.repeats) for name, doc in shapes.items()}
        compiles = {name: time_compile(doc, args.repeats) for name, doc in shapes.items()}
        engine = {name: time_engine(doc, args.repeats) for name, doc in shapes.items()}
    us = {name: wall / sizes[name] * 1e6 for name, (wall, _) in runs.items()}
    cpu_us = {name: cpu / sizes[name] * 1e6 for name, (_, cpu) in runs.items()}
    rows: list[tuple[str, dict[str, float], str]] = [
        ("run (in-process)", us, ""),
        ("  cpu", cpu_us, ""),
    ]
    comp_w, comp_c = compiles["wide"], compiles["chain"]
    if comp_w is not None and comp_c is not None:
        rows.append(("  of which compile", {"wide": comp_w / sizes["wide"] * 1e6,
                                            "chain": comp_c / sizes["chain"] * 1e6}, ""))  # fmt: skip
    if all(v is not None for v in engine.values()):
        eng = {name: v / sizes[name] * 1e6 for name, v in engine.items() if v is not None}
        ok = "ok" if eng["wide"] <= TARGET_RUN_US else "OVER"
        rows.append(("  engine (compiled)", eng, f"   wide ≤ {TARGET_RUN_US:g} µs/node: {ok}"))
    for label, per_node, note in rows:
        w, c = f"{per_node['wide']:.1f} µs/node", f"{per_node['chain']:.1f} µs/node"
        print(f"{label:<24}{w:>22}{c:>22}{_ratio(per_node['wide'], per_node['chain']):>12}{note}")
    floor = thread_round_trip_us()
    print(
        f"{'thread round trip':<24}{'':>22}{f'{floor:.1f} µs':>22}"
        "   (the chain's floor: each code node waits for the one before on a worker thread)"
    )
    print(
        f"\nwhole run: wide {runs['wide'][0]:.3f} s, chain {runs['chain'][0]:.3f} s "
        f"({sizes['wide']:,} / {sizes['chain']:,} nodes); slowest command {worst:.3f} s"
        + ("" if k == FULL else f" (the {TARGET_S:g} s target is for {FULL:,})")
    )
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
