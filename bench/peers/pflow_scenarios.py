"""pflow-cli 0.16.0 scenarios (run with the pflow peer venv's python).

In-process runs go through `WorkflowRunner().run(ir_dict, params, RunnerConfig(...))`, the library
entry point (pflow's CLI no longer accepts JSON IR files). `RunnerConfig(trace_enabled=False,
cache_enabled=False)`: no trace file per run (a library caller's choice; the CLI rows keep the
default) and no memo cache, so repeated LLM runs really call the server.

pflow 0.16.0 has no task parallelism (one successor per action; a second default edge silently
replaces the first), so:
- fan-out K -> one `code` node with an inline-array `batch` of K items, `parallel: true`,
  `max_concurrent: min(K, 100)` (the schema caps max_concurrent at 100);
- uneven diamond -> a heterogeneous parallel batch over a `workflow` node whose items name two
  sub-workflow files (`b.pflow.md`: B; `cd.pflow.md`: C then D in document order), then E — the
  analogue of PocketFlow's Router trick;
- a wait is a `code` node calling `time.sleep` (pflow's code node runs in a worker thread) and a
  no-op is a `code` node `result: int = 0`.

Workaround: pflow's node scanner puts `site-packages/pflow/nodes` on sys.path while importing
nodes, so `pflow/nodes/http` shadows the stdlib `http` package unless `http.client` is already
imported. The CLI imports it early; a library caller has to, too.
"""

from __future__ import annotations

import http.client  # noqa: F401  (see the module docstring)
import itertools
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

from _common import RunFn, check, main
from pflow.execution.result import RunnerConfig
from pflow.execution.runner import WorkflowRunner

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)

SLEEP_CODE = "import time\ns: float\ntime.sleep(s)\nresult: int = 0"
NOOP_CODE = "result: int = 0"
CONFIG = RunnerConfig(trace_enabled=False, cache_enabled=False)


def _code(node_id: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"id": node_id, "type": "code", "params": {"code": code}, **extra}


def _runner(ir: dict[str, Any], verify: Any = None) -> RunFn:
    def run() -> dict[str, Any] | None:
        result = WorkflowRunner().run(ir, {}, CONFIG)
        if not result.success:
            raise RuntimeError(f"pflow run failed: {[d.message for d in result.errors][:3]}")
        return verify(result.shared_after) if verify else None

    return run


def _chain_edges(ids: list[str]) -> list[dict[str, str]]:
    return [{"from": a, "to": b} for a, b in itertools.pairwise(ids)]


def fanout(p: dict[str, Any]) -> RunFn:
    k, seconds = int(p["k"]), float(p["seconds"])
    cap = min(k, 100)
    work = _code("work", SLEEP_CODE, batch={"items": [seconds] * k, "parallel": True})
    work["params"]["inputs"] = {"s": "${item}"}
    work["batch"]["max_concurrent"] = cap
    ir = {
        "ir_version": "0.1.0",
        "nodes": [_code("start", NOOP_CODE), work, _code("join", NOOP_CODE)],
        "edges": _chain_edges(["start", "work", "join"]),
    }

    def verify(shared: dict[str, Any]) -> dict[str, Any]:
        check(shared["work"]["success_count"] == k, "batch lost items")
        form = "one code node over K items"
        if cap < k:
            form += f"; max_concurrent {cap} (schema maximum)"
        return {"form": form}

    return _runner(ir, verify)


_SUB = """# {title}

{title}.

## Steps
{steps}
"""
_STEP = """
### {id}

Waits {seconds} s.

- type: code

```python code
import time
time.sleep({seconds})
result: int = 0
```
"""


def diamond(p: dict[str, Any]) -> RunFn:
    tmp = Path(tempfile.mkdtemp(prefix="pflow-diamond-"))
    (tmp / "b.pflow.md").write_text(
        _SUB.format(title="Branch B", steps=_STEP.format(id="b", seconds=p["b"]))
    )
    cd_steps = _STEP.format(id="c", seconds=p["c"]) + _STEP.format(id="d", seconds=p["d"])
    (tmp / "cd.pflow.md").write_text(_SUB.format(title="Branch C then D", steps=cd_steps))
    branches = {
        "id": "branches",
        "type": "workflow",
        "params": {"workflow": "${item}"},
        "batch": {
            "items": [str(tmp / "b.pflow.md"), str(tmp / "cd.pflow.md")],
            "parallel": True,
            "max_concurrent": 2,
        },
    }
    ir = {
        "ir_version": "0.1.0",
        "nodes": [_code("a", NOOP_CODE), branches, _code("e", NOOP_CODE)],
        "edges": _chain_edges(["a", "branches", "e"]),
    }

    def verify(shared: dict[str, Any]) -> dict[str, Any]:
        check(shared["branches"]["success_count"] == 2, "a branch failed")
        return {"e_runs": 1 if "e" in shared else 0, "form": "parallel batch over 2 sub-workflows"}

    return _runner(ir, verify)


def _map(n: int, cap: int, code: str, inputs: dict[str, Any] | None) -> RunFn:
    work = _code(
        "work",
        code,
        batch={"items": list(range(n)), "parallel": True, "max_concurrent": cap},
    )
    if inputs:
        work["params"]["inputs"] = inputs
    ir = {"ir_version": "0.1.0", "nodes": [work], "edges": []}

    def verify(shared: dict[str, Any]) -> None:
        check(shared["work"]["success_count"] == n, "map lost items")

    return _runner(ir, verify)


def map_sleep(p: dict[str, Any]) -> RunFn:
    code = f"import time\ntime.sleep({float(p['seconds'])})\nresult: int = 0"
    return _map(int(p["n"]), int(p["cap"]), code, None)


def map_noop(p: dict[str, Any]) -> RunFn:
    return _map(int(p["n"]), int(p["cap"]), NOOP_CODE, None)


def chain(p: dict[str, Any]) -> RunFn:
    n = int(p["n"])
    ids = [f"n{i}" for i in range(n)]
    ir = {
        "ir_version": "0.1.0",
        "nodes": [_code(i, NOOP_CODE) for i in ids],
        "edges": _chain_edges(ids),
    }

    def verify(shared: dict[str, Any]) -> None:
        check(ids[-1] in shared, "chain did not reach its last node")

    return _runner(ir, verify)


def llm(p: dict[str, Any]) -> RunFn:
    n, cap = int(p["n"]), min(int(p["cap"]), 100)
    os.environ.setdefault("OPENAI_API_KEY", "x")
    os.environ["OPENAI_API_BASE"] = p["url"] + "/v1"
    node = {
        "id": "ask",
        "type": "llm",
        "params": {"prompt": "hi ${item}", "model": "openai/gpt-4o-mini"},
        "batch": {"items": list(range(n)), "parallel": True, "max_concurrent": cap},
    }
    ir = {"ir_version": "0.1.0", "nodes": [node], "edges": []}

    def verify(shared: dict[str, Any]) -> None:
        check(
            shared["ask"]["success_count"] == n, f"LLM items failed: {shared['ask']['errors'][:2]}"
        )

    return _runner(ir, verify)


def shell(p: dict[str, Any]) -> RunFn:
    from _common import NotApplicable

    raise NotApplicable("pflow's whole-process row runs its CLI on a .pflow.md (suite.py)")


if __name__ == "__main__":
    main(
        {
            "fanout": fanout,
            "diamond": diamond,
            "map": map_sleep,
            "map_noop": map_noop,
            "chain": chain,
            "llm": llm,
            "shell": shell,
        }
    )
