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
    # the global budget (default 256) must not be what caps the fan-out
    doc: dict[str, Any] = {
        "ir_version": "0.1.0",
        "max_concurrent": n,
        "nodes": [llm_batch("ask", n)],
    }
    if limit:
        doc["limits"] = {"llm:openai": {"concurrency": limit}}
    return doc


def two_branches(n: int, limit: int) -> dict[str, Any]:
    half = n // 2
    return {
        "ir_version": "0.1.0",
        "max_concurrent": n,
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


def measure(mock: MockProcess, doc: dict[str, Any], repeats: int) -> tuple[list[float], int, float]:
    """Wall times, the server's peak in flight, and the client's CPU seconds per call (this
    process only: the mock serves from its own process)."""
    workflow = fanflow.compile_workflow(doc)
    times, peak, cpu = [], 0, []
    for _ in range(repeats):
        mock.call("/reset", {})
        c0, t0 = time.process_time(), time.perf_counter()
        result = fanflow.run(workflow)
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        assert result.ok, result.error
        stats = mock.call("/stats")
        peak = max(peak, stats["max_in_flight"])
        calls = stats["total"]
    return times, peak, statistics.median(cpu) / max(calls, 1)


def raw_floor(mock: MockProcess, n: int, repeats: int) -> tuple[float, float]:
    """The no-engine floor in the same run: n concurrent chat POSTs from plain asyncio over one
    aiohttp session (what fanflow's providers use). Median wall, CPU seconds per call."""
    import asyncio

    import aiohttp

    body = {"model": "bench", "messages": [{"role": "user", "content": "floor"}]}
    headers = {"content-type": "application/json", "authorization": "Bearer bench-key"}

    async def go() -> tuple[float, float]:
        connector = aiohttp.TCPConnector(limit=0)
        async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

            async def one() -> None:
                async with session.post(
                    mock.url + "/v1/chat/completions", data=json.dumps(body).encode()
                ) as resp:
                    json.loads(await resp.read())

            await asyncio.gather(*(one() for _ in range(min(n, 20))))  # warm connections
            c0, t0 = time.process_time(), time.perf_counter()
            await asyncio.gather(*(one() for _ in range(n)))
            return time.perf_counter() - t0, (time.process_time() - c0) / n

    runs = [asyncio.run(go()) for _ in range(repeats)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def rate_check(mock: MockProcess, n: int, rpm: int) -> None:
    """An n-item classification batch under `rpm`: the run should take (n - 1) · 60/rpm (the
    limit), and no second should see more than rpm/60 starts at the server (what providers
    enforce); the mock answers at once, so the limiter alone decides the pace."""
    doc = one_batch(n, None)
    doc["limits"] = {"llm:openai": {"rpm": rpm}}
    mock.call("/reset", {})
    t0 = time.perf_counter()
    result = fanflow.run(doc)
    wall = time.perf_counter() - t0
    assert result.ok, result.error
    starts = sorted(r["start"] for r in mock.call("/stats")["requests"])
    ideal = (n - 1) * 60.0 / rpm
    rate = (len(starts) - 1) / (starts[-1] - starts[0]) * 60 if len(starts) > 1 else 0.0
    per_second = rpm / 60
    busiest, j = 0, 0
    for i, s in enumerate(starts):  # the most starts in any 1 s window
        while starts[j] <= s - 1.0:
            j += 1
        busiest = max(busiest, i - j + 1)
    print(
        f"rate: {n} calls under rpm {rpm}: {wall:.2f}s (limit's pace {ideal:.2f}s, "
        f"{wall / ideal:.3f}x), measured {rate:.0f} rpm ({rate / rpm - 1:+.1%}), busiest second "
        f"{busiest} starts (allowed {per_second:.0f}), server errors: "
        f"{sum(1 for r in mock.call('/stats')['requests'] if r.get('status', 200) >= 400)}"
    )


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
    ap.add_argument("--rate", action="store_true",
                    help="only the rate check: 3,000 calls under rpm 6000 (about 30 s)")  # fmt: skip
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
    header = (
        f"{'scenario':40} {'ideal':>7} {'median':>8} {'best':>8} {'ratio':>6} {'max@srv':>8}"
        f" {'cpu/call':>9}"
    )
    if args.cli:
        header += f" {'cli wall':>9}"
    print(header)
    if args.rate:
        try:
            rate_check(mock, 3000, 6000)
        finally:
            mock.close()
        return 0
    try:
        # Import the SDK and build its first connections outside the timings (one-off process
        # start-up costs; the "cli wall" column includes them).
        measure(mock, one_batch(2, None), 1)
        for name, doc, ideal in scenarios:
            times, peak, cpu = measure(mock, doc, args.repeats)
            med = statistics.median(times)
            line = (
                f"{name:40} {ideal:6.2f}s {med:7.3f}s {min(times):7.3f}s "
                f"{med / ideal:5.2f}x {peak:8d} {cpu * 1000:7.2f}ms"
            )
            if args.cli:
                line += f" {cli_wall(doc):8.2f}s"
            print(line, flush=True)
        wall, cpu = raw_floor(mock, n, args.repeats)
        print(f"{'floor: plain asyncio + aiohttp, ' + str(n) + ' calls':40} {delay:6.2f}s "
              f"{wall:7.3f}s {'':>8} {wall / delay:5.2f}x {'':>8} {cpu * 1000:7.2f}ms")  # fmt: skip
    finally:
        mock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
