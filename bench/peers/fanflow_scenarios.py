"""fanflow scenarios (run with fanflow's own venv python), through the Python API.

Idioms (docs/benchmarks.md): a workflow is a JSON IR dict; fan-out/fan-in are plain edges
(`start -> b_i`, `b_i -> join`: a join waits for all its live inputs and runs once); a map is a
`batch` with `parallel: true` and `max_concurrent`; waits are a registered `AsyncNode` awaiting
`asyncio.sleep`, and a no-op node is an `AsyncNode` whose `exec_async` returns `{}`. Each timed
run is one `fanflow.run(workflow, ...)` call (validation + scheduling + outputs).
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from typing import Any

from _common import RunFn, check, main

import fanflow
from fanflow.nodes.base import AsyncNode

LOG: dict[str, Any] = {"spans": {}, "runs": {}}


class Sleep(AsyncNode):
    type_name = "sleep"

    async def exec_async(self, prep_res: Any) -> Any:
        t0 = time.perf_counter()
        await asyncio.sleep(float(self.params.get("seconds", 0)))
        name = self.params.get("name")
        if name:
            LOG["spans"][name] = (t0, time.perf_counter())
            LOG["runs"][name] = LOG["runs"].get(name, 0) + 1
        return {"ok": True}


class Noop(AsyncNode):
    type_name = "noop"

    async def exec_async(self, prep_res: Any) -> Any:
        return {}


fanflow.register_node(Sleep)
fanflow.register_node(Noop)

IR = "0.1.0"


def _status(obj: Any) -> str:
    status = getattr(obj, "status", obj)
    return str(getattr(status, "value", status))


_loaded: dict[int, Any] = {}


def _run(workflow: dict[str, Any], max_concurrent: int | None = None) -> Any:
    # Load and validate once (the warm-up run pays it), like the peers' graph build/compile,
    # which peers.md reports separately from invoke time.
    loaded = _loaded.get(id(workflow))
    if loaded is None:
        loaded = _loaded[id(workflow)] = fanflow.compile_workflow(workflow)
    kwargs: dict[str, Any] = {"inputs": {}}
    if max_concurrent is not None:
        kwargs["max_concurrent"] = max_concurrent
    result = fanflow.run(loaded, **kwargs)
    status = _status(result)
    check(status == "success", f"fanflow run status {status!r}: {getattr(result, 'error', '')}")
    return result


def _check_count(result: Any, node_id: str, n: int) -> None:
    """The batch output contract: every item succeeded (when the result exposes the store)."""
    out = (getattr(result, "store", None) or {}).get(node_id)
    if isinstance(out, dict) and "success_count" in out:
        check(out["success_count"] == n, f"{node_id}: {out['success_count']}/{n} items succeeded")


def _sleep(node_id: str, seconds: float, log: bool = False) -> dict[str, Any]:
    params: dict[str, Any] = {"seconds": seconds}
    if log:
        params["name"] = node_id
    return {"id": node_id, "type": "sleep", "params": params}


def fanout(p: dict[str, Any]) -> RunFn:
    k, seconds = int(p["k"]), float(p["seconds"])
    names = [f"b{i}" for i in range(k)]
    workflow = {
        "ir_version": IR,
        "nodes": [
            {"id": "start", "type": "noop"},
            *(_sleep(n, seconds) for n in names),
            _sleep("join", 0, log=True),
        ],
        "edges": [{"from": "start", "to": n} for n in names]
        + [{"from": n, "to": "join"} for n in names],
    }

    def run() -> dict[str, Any]:
        LOG["runs"].clear()
        result = _run(workflow)
        done = sum(1 for n in names if _status(result.nodes[n]) == "success")
        check(done == k, f"only {done}/{k} branches succeeded")
        return {"join_runs": LOG["runs"].get("join", 0)}

    return run


def diamond(p: dict[str, Any]) -> RunFn:
    workflow = {
        "ir_version": IR,
        "nodes": [
            _sleep("A", 0, log=True),
            _sleep("B", float(p["b"]), log=True),
            _sleep("C", float(p["c"]), log=True),
            _sleep("D", float(p["d"]), log=True),
            _sleep("E", 0, log=True),
        ],
        "edges": [
            {"from": "A", "to": "B"},
            {"from": "A", "to": "C"},
            {"from": "C", "to": "D"},
            {"from": "B", "to": "E"},
            {"from": "D", "to": "E"},
        ],
    }

    def run() -> dict[str, Any]:
        LOG["spans"].clear()
        LOG["runs"].clear()
        t0 = time.perf_counter()
        _run(workflow)
        return {
            "e_runs": LOG["runs"].get("E", 0),
            "timeline": {
                k: [round(s - t0, 3), round(f - t0, 3)] for k, (s, f) in LOG["spans"].items()
            },
        }

    return run


def _map(n: int, cap: int, node_type: str, params: dict[str, Any]) -> RunFn:
    workflow = {
        "ir_version": IR,
        "nodes": [
            {
                "id": "work",
                "type": node_type,
                "params": params,
                "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": cap},
            }
        ],
        "edges": [],
    }

    def run() -> None:
        result = _run(workflow)
        check(_status(result.nodes["work"]) == "success", "map failed")
        _check_count(result, "work", n)

    return run


def map_sleep(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), "sleep", {"seconds": float(p["seconds"])})


def map_noop(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), "noop", {})


def chain(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])
    ids = [f"n{i}" for i in range(n)]
    workflow = {
        "ir_version": IR,
        "nodes": [{"id": i, "type": "noop"} for i in ids],
        "edges": [{"from": a, "to": b} for a, b in itertools.pairwise(ids)],
    }

    def run() -> None:
        result = _run(workflow)
        check(_status(result.nodes[ids[-1]]) == "success", "chain did not reach its last node")

    return run


def llm(p: dict[str, Any]) -> RunFn:
    n, cap = int(p["n"]), int(p["cap"])
    os.environ.setdefault("OPENAI_API_KEY", "x")
    os.environ["OPENAI_BASE_URL"] = p["url"] + "/v1"
    os.environ["FANFLOW_LLM_CACHE"] = "0"  # measure real calls, not the response cache
    workflow = {
        "ir_version": IR,
        "nodes": [
            {
                "id": "ask",
                "type": "llm",
                "params": {"prompt": "hi ${item}", "model": "gpt-4o-mini"},
                "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": cap},
            }
        ],
        "edges": [],
    }

    def run() -> None:
        result = _run(workflow)
        check(_status(result.nodes["ask"]) == "success", "LLM batch failed")
        _check_count(result, "ask", n)

    return run


if __name__ == "__main__":
    main(
        {
            "fanout": fanout,
            "diamond": diamond,
            "map": map_sleep,
            "map_noop": map_noop,
            "chain": chain,
            "llm": llm,
        }
    )
