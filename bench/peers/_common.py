"""Worker-side harness shared by every `<system>_scenarios.py` (stdlib only: it runs in each
peer's own venv).

A worker is started once per (system, scenario) by `bench/suite.py`:

    <venv python> bench/peers/<system>_scenarios.py SCENARIO --params '{"k": 4, ...}' \
        --warmup 1 --repeats 7

The scenario function receives the params dict, builds whatever the system needs (timed as
`setup_s`) and returns a zero-argument callable: one timed run. The callable may return a dict of
extra facts (e.g. how many times a join ran); the last one is reported. The worker prints exactly
one JSON line on stdout, the last line of its output:

    {"ok": true, "times": [...], "warmup_times": [...], "setup_s": 0.01, "extra": {...}}
    {"na": "why this system cannot express the scenario"}
    {"error": "...", "traceback": "..."}

A scenario may instead be a *once* scenario (a whole-process run): it runs a single time and
the parent measures the process from outside (wall time, peak RSS).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from typing import Any

RunFn = Callable[[], "dict[str, Any] | None"]
ScenarioFn = Callable[[dict[str, Any]], RunFn]


class NotApplicable(Exception):
    """The system cannot express this scenario; the message says why."""


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.flush()
    sys.stdout.write("\n" + json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def main(scenarios: dict[str, ScenarioFn]) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("scenario")
    parser.add_argument("--params", default="{}")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--once", action="store_true", help="run once, print nothing extra")
    args = parser.parse_args()
    params: dict[str, Any] = json.loads(args.params)

    fn = scenarios.get(args.scenario)
    if fn is None:
        emit({"na": f"scenario {args.scenario!r} not implemented for this system"})
        return
    try:
        t0 = time.perf_counter()
        run = fn(params)
        setup_s = time.perf_counter() - t0
        if args.once:
            extra = run() or {}
            emit({"ok": True, "extra": extra, "setup_s": setup_s})
            return
        warm: list[float] = []
        extra: dict[str, Any] = {}
        for _ in range(args.warmup):
            t = time.perf_counter()
            extra = run() or {}
            warm.append(time.perf_counter() - t)
        times: list[float] = []
        for _ in range(args.repeats):
            t = time.perf_counter()
            extra = run() or {}
            times.append(time.perf_counter() - t)
        emit(
            {
                "ok": True,
                "times": times,
                "warmup_times": warm,
                "setup_s": setup_s,
                "extra": extra,
                "pid": os.getpid(),
            }
        )
    except NotApplicable as exc:
        emit({"na": str(exc)})
    except BaseException as exc:
        emit({"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()})
        sys.exit(1)


def check(cond: bool, message: str) -> None:
    """Fail the scenario (not silently report a time) when a run did not do the work."""
    if not cond:
        raise RuntimeError(message)
