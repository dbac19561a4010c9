"""LLM fan-out speed against the mock server, printed as ratios to the ideal (issue 4).

    python bench/bench_llm.py                # 100 calls x 0.5 s mock latency
    python bench/bench_llm.py --quick        # 10 calls x 0.05 s (smoke run)
    python bench/bench_llm.py --cli          # also time one run through the CLI process

The mock (`python -m fanflow.testing.mockllm`) runs in its own process so that its work does not
compete with the engine for this process's GIL. Each scenario is run through `fanflow.run`
(load and validation outside the timing; the provider client is built inside, once per run, as
in real use). "max@srv" is the peak number of requests the server saw in flight.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import urllib.request
from typing import Any

import fanflow


def llm_batch(node_id: str, n: int, model: str = "bench") -> dict[str, Any]:
    return {
        "id": node_id,
        "type": "llm",
        "params": {"prompt": f"{node_id} item ${{item}}", "model": model},
        "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": n},
    }


def one_batch(n: int, limit: int | None) -> dict[str, Any]:
    doc: dict[str, Any] = {"ir_version": "0.1.0", "nodes": [llm_batch("ask", n)]}
    if limit:
        doc["limits"] = {"llm:openai": {"concurrency": limit}}
    return doc


def two_branches(n: int, limit: int) -> dict[str, Any]:
    half = n // 2
    return {
        "ir_version": "0.1.0",
        "limits": {"llm:openai": {"concurrency": limit}},
        "nodes": [
            {"id": "start", "type": "code", "params": {"code": "result = 1"}},
            llm_batch("a", half),
            llm_batch("b", n - half),
            {
                "id": "join",
                "type": "code",
                "params": {
                    "code": "result = len(a) + len(b)",
                    "inputs": {"a": "${a.results}", "b": "${b.results}"},
                },
            },
        ],
        "edges": [
            {"from": "start", "to": "a"},
            {"from": "start", "to": "b"},
            {"from": "a", "to": "join"},
            {"from": "b", "to": "join"},
        ],
    }


class MockProcess:
    def __init__(self, delay: float):
        cmd = [sys.executable, "-m", "fanflow.testing.mockllm", "--port", "0"]
        self.proc = subprocess.Popen(
            [*cmd, "--delay", str(delay)], stdout=subprocess.PIPE, text=True
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http://"):
            raise RuntimeError("mock server did not start")

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method="POST" if data else "GET")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=5)


def measure(mock: MockProcess, doc: dict[str, Any], repeats: int) -> tuple[list[float], int]:
    workflow = fanflow.compile_workflow(doc)
    times, peak = [], 0
    for _ in range(repeats):
        mock.call("/reset", {})
        t0 = time.perf_counter()
        result = fanflow.run(workflow)
        times.append(time.perf_counter() - t0)
        assert result.ok, result.error
        peak = max(peak, mock.call("/stats")["max_in_flight"])
    return times, peak


def cli_wall(doc: dict[str, Any]) -> float:
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "wf.json")
        with open(path, "w") as fh:
            json.dump(doc, fh)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, "-m", "fanflow", "run", path, "-q", "--no-checkpoint"],
            capture_output=True,
            text=True,
            env={**os.environ, "FANFLOW_HOME": tmp},
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            raise RuntimeError(proc.stderr)
        return wall


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10 calls x 0.05 s")
    ap.add_argument("--n", type=int, default=None, help="number of calls (default 100)")
    ap.add_argument("--delay", type=float, default=None, help="mock latency (default 0.5 s)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--cli", action="store_true", help="also time one CLI run per scenario")
    args = ap.parse_args()
    n = args.n or (10 if args.quick else 100)
    delay = args.delay if args.delay is not None else (0.05 if args.quick else 0.5)
    capped = max(2, n // 5)

    mock = MockProcess(delay)
    os.environ["OPENAI_BASE_URL"] = mock.url + "/v1"
    os.environ["OPENAI_API_KEY"] = "bench-key"
    os.environ["FANFLOW_LLM_CACHE"] = "0"  # measure real calls, not the response cache
    os.environ.pop("FANFLOW_LIMITS", None)
    scenarios = [
        (f"batch {n} parallel, no limit", one_batch(n, None), delay),
        (f"batch {n} parallel, limit {n}", one_batch(n, n), delay),
        (f"batch {n} parallel, limit {capped}", one_batch(n, capped), delay * -(-n // capped)),
        (f"2 branches x {n // 2}, shared limit {n}", two_branches(n, n), delay),
        (f"2 branches x {n // 2}, shared limit {n // 2}", two_branches(n, n // 2), 2 * delay),
    ]
    print(
        f"mock latency {delay} s, {n} calls, median of {args.repeats} runs (python {sys.version.split()[0]})"
    )
    header = f"{'scenario':40} {'ideal':>7} {'median':>8} {'best':>8} {'ratio':>6} {'max@srv':>8}"
    if args.cli:
        header += f" {'cli wall':>9}"
    print(header)
    try:
        # Import the SDK and build its first connections outside the timings (one-off process
        # start-up costs; the "cli wall" column includes them).
        measure(mock, one_batch(2, None), 1)
        for name, doc, ideal in scenarios:
            times, peak = measure(mock, doc, args.repeats)
            med = statistics.median(times)
            line = (
                f"{name:40} {ideal:6.2f}s {med:7.3f}s {min(times):7.3f}s "
                f"{med / ideal:5.2f}x {peak:8d}"
            )
            if args.cli:
                line += f" {cli_wall(doc):8.2f}s"
            print(line, flush=True)
    finally:
        mock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
