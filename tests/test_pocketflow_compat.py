"""PocketFlow 0.0.3's own classes run unmodified as fanflow node types (issue 15, last bullet).

Every program below is plain PocketFlow. Each test runs it twice — by PocketFlow itself
(`obj.run(shared)` / `asyncio.run(obj.run_async(shared))`) and as one fanflow node — and checks
that the node's outputs are exactly what PocketFlow wrote into its shared dict, and that the
node's action is what PocketFlow's run returned.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import time
from pathlib import Path
from typing import Any, ClassVar

import pocketflow as pf
import pytest

import fanflow
from conftest import run_cli, wf
from fanflow.nodes import pocketflow_compat

MOD = __name__  # the programs are referenced as `<this module>:<Class>`
TESTS = str(Path(__file__).parent)


# --- the PocketFlow programs -------------------------------------------------------------------


class Upper(pf.Node):
    def prep(self, shared):
        return shared["text"]

    def exec(self, text):
        return text.upper()

    def post(self, shared, prep_res, exec_res):
        shared["upper"] = exec_res
        return "shout" if exec_res.endswith("!") else "default"


class Doubler(pf.BatchNode):
    """Doubles each number; post writes the list."""

    def prep(self, shared):
        return shared["numbers"]

    def exec(self, n):
        return n * 2  # one item: "can't multiply sequence by non-int" if given the list

    def post(self, shared, prep_res, exec_res):
        shared["doubled"] = exec_res
        shared["total"] = sum(exec_res)
        return "big" if sum(exec_res) > 10 else "small"


class Draft(pf.Node):
    def prep(self, shared):
        return shared["topic"]

    def exec(self, topic):
        return f"{self.params.get('style', 'plain')} draft about {topic}"

    def post(self, shared, prep_res, exec_res):
        shared["draft"] = exec_res


class Check(pf.Node):
    def prep(self, shared):
        return shared["draft"]

    def exec(self, draft):
        return "approve" if "cats" in draft else "revise"

    def post(self, shared, prep_res, exec_res):
        shared["verdict"] = exec_res
        return exec_res


class Publish(pf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["published"] = shared["draft"].upper()
        return "published"


class Revise(pf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["notes"] = f"rewrite: {shared['draft']}"
        return "revised"


class Review(pf.Flow):
    """Draft → check → publish on approve, revise otherwise."""

    def __init__(self):
        draft, check = Draft(), Check()
        draft >> check
        check - "approve" >> Publish()
        check - "revise" >> Revise()
        super().__init__(start=draft)


class Greet(pf.Node):
    def prep(self, shared):
        return self.params["name"]

    def exec(self, name):
        return f"{self.params['greeting']}, {name}"

    def post(self, shared, prep_res, exec_res):
        shared.setdefault("greetings", []).append(exec_res)


class Tally(pf.Node):
    def post(self, shared, prep_res, exec_res):
        shared["count"] = shared.get("count", 0) + 1


class GreetEach(pf.BatchFlow):
    """One inner flow run per name; the name and the flow's own greeting come as params."""

    def __init__(self):
        greet = Greet()
        greet >> Tally()
        super().__init__(start=greet)
        self.set_params({"greeting": "hello"})

    def prep(self, shared):
        return [{"name": n} for n in shared["names"]]

    def post(self, shared, prep_res, exec_res):
        shared["runs"] = len(prep_res)
        return "greeted"


class AsyncLookup(pf.AsyncNode):
    async def prep_async(self, shared):
        return shared["key"]

    async def exec_async(self, key):
        await asyncio.sleep(0.01)
        return {"a": 1, "b": 2}.get(key, 0)

    async def post_async(self, shared, prep_res, exec_res):
        shared["value"] = exec_res
        return "found" if exec_res else "missing"


class AsyncSquares(pf.AsyncBatchNode):
    async def prep_async(self, shared):
        return shared["numbers"]

    async def exec_async(self, n):
        await asyncio.sleep(0.001)
        return n * n

    async def post_async(self, shared, prep_res, exec_res):
        shared["squares"] = exec_res


def _span(item: Any, t0: float) -> dict[str, Any]:
    return {"item": item, "start": t0, "end": time.perf_counter()}


class Sleepers(pf.AsyncParallelBatchNode):
    """Every item sleeps 0.2 s and reports its span."""

    async def prep_async(self, shared):
        return shared["items"]

    async def exec_async(self, item):
        t0 = time.perf_counter()
        await asyncio.sleep(0.2)
        return _span(item, t0)

    async def post_async(self, shared, prep_res, exec_res):
        shared["results"] = [r["item"] * 10 for r in exec_res]
        shared["spans"] = exec_res


class AsyncFetchStep(pf.AsyncNode):
    async def prep_async(self, shared):
        return shared["url"]

    async def exec_async(self, url):
        await asyncio.sleep(0.01)
        return "ok" if url.startswith("https://") else "bad"

    async def post_async(self, shared, prep_res, exec_res):
        shared["fetched"] = exec_res
        return exec_res


class SyncSummarise(pf.Node):  # a sync node inside an AsyncFlow: PocketFlow calls its _run
    def prep(self, shared):
        return shared["url"]

    def post(self, shared, prep_res, exec_res):
        shared["summary"] = f"summary of {prep_res}"
        return "done"


class Reject(pf.AsyncNode):
    async def post_async(self, shared, prep_res, exec_res):
        shared["rejected"] = True
        return "rejected"


class AsyncPipeline(pf.AsyncFlow):
    def __init__(self):
        fetch = AsyncFetchStep()
        fetch - "ok" >> SyncSummarise()
        fetch - "bad" >> Reject()
        super().__init__(start=fetch)


class AsyncLabel(pf.AsyncNode):
    async def prep_async(self, shared):
        return self.params["n"]

    async def exec_async(self, n):
        await asyncio.sleep(0.001)
        return f"{self.params['prefix']}-{n}"

    async def post_async(self, shared, prep_res, exec_res):
        shared.setdefault("labels", []).append(exec_res)


class AsyncLabelEach(pf.AsyncBatchFlow):
    def __init__(self):
        super().__init__(start=AsyncLabel())

    async def prep_async(self, shared):
        return [{"n": n} for n in shared["numbers"]]


class SleepStep(pf.AsyncNode):
    async def prep_async(self, shared):
        return self.params["i"]

    async def exec_async(self, i):
        t0 = time.perf_counter()
        await asyncio.sleep(0.2)
        return _span(i, t0)

    async def post_async(self, shared, prep_res, exec_res):
        shared["out"][str(prep_res)] = exec_res["item"] + 100
        shared["spans"].append(exec_res)


class ParallelEach(pf.AsyncParallelBatchFlow):
    def __init__(self):
        super().__init__(start=SleepStep())

    async def prep_async(self, shared):
        shared["out"], shared["spans"] = {}, []
        return [{"i": i} for i in shared["items"]]

    async def post_async(self, shared, prep_res, exec_res):
        shared["spans"].sort(key=lambda s: s["item"])
        return "all-done"


class FlakyItems(pf.BatchNode):
    """Each item fails twice, then succeeds: 3 attempts per item with max_retries=3."""

    def __init__(self):
        super().__init__(max_retries=3, wait=0)
        self.failures: dict[int, int] = {}

    def prep(self, shared):
        return shared["numbers"]

    def exec(self, n):
        self.failures[n] = self.failures.get(n, 0) + 1
        if self.failures[n] <= 2:
            raise RuntimeError(f"flaky {n}")
        return {"n": n, "attempts": self.cur_retry + 1}

    def post(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


class FallbackItems(pf.BatchNode):
    """Odd items always fail; exec_fallback turns them into a marker (per item)."""

    def __init__(self):
        super().__init__(max_retries=2)

    def prep(self, shared):
        return shared["numbers"]

    def exec(self, n):
        if n % 2:
            raise ValueError(f"odd {n}")
        return n

    def exec_fallback(self, prep_res, exc):
        return f"fallback({prep_res}): {exc}"

    def post(self, shared, prep_res, exec_res):
        shared["results"] = exec_res


class FlakyNode(pf.Node):
    """Fails twice then succeeds (calls counted per run token: the engine may build a node per
    attempt)."""

    calls: ClassVar[dict[str, int]] = {}

    def __init__(self):
        super().__init__(max_retries=3)

    def prep(self, shared):
        return shared["token"]

    def exec(self, token):
        n = self.calls[token] = self.calls.get(token, 0) + 1
        if n <= 2:
            raise RuntimeError("transient")
        return self.cur_retry + 1

    def post(self, shared, prep_res, exec_res):
        shared["attempts"] = exec_res


# --- running a program both ways ---------------------------------------------------------------


def by_pocketflow(cls: type, inputs: dict[str, Any], params: dict[str, Any] | None = None):
    """(what PocketFlow wrote into shared, the action its run returned)."""
    obj = cls()
    if params:
        obj.set_params({**obj.params, **params})
    shared = dict(inputs)
    if isinstance(obj, pf.AsyncNode):
        action = asyncio.run(obj.run_async(shared))
    else:
        action = obj.run(shared)
    return {k: v for k, v in shared.items() if k not in inputs}, action


def node_doc(cls: type, inputs: dict[str, Any], params: dict[str, Any] | None = None) -> dict:
    return wf([{"id": "n", "type": f"{MOD}:{cls.__name__}", "params": params or {}}],
              inputs={k: {"type": "any"} for k in inputs})  # fmt: skip


def by_fanflow(cls: type, inputs: dict[str, Any], params: dict[str, Any] | None = None, **kw: Any):
    res = fanflow.run(node_doc(cls, inputs, params), inputs, **kw)
    assert res.ok, res.error
    return res.store["n"], res.nodes["n"].action, res


def same_both_ways(cls: type, inputs: dict[str, Any], params: dict[str, Any] | None = None):
    expected, pf_action = by_pocketflow(cls, inputs, params)
    outputs, action, res = by_fanflow(cls, inputs, params)
    assert outputs == expected
    assert action == (pf_action or "default")
    return outputs, action, res


def overlapped(spans: list[dict[str, Any]]) -> bool:
    return any(a["start"] < b["end"] and b["start"] < a["end"]
               for a, b in itertools.combinations(spans, 2))  # fmt: skip


# --- the ten classes -----------------------------------------------------------------------------


def test_node_same_as_pocketflow():
    outputs, action, _ = same_both_ways(Upper, {"text": "hi!"})
    assert outputs == {"upper": "HI!"} and action == "shout"


def test_batch_node_execs_each_item():
    outputs, action, _ = same_both_ways(Doubler, {"numbers": [1, 2, 3]})
    assert outputs == {"doubled": [2, 4, 6], "total": 12} and action == "big"
    outputs, action, _ = same_both_ways(Doubler, {"numbers": [1]})
    assert action == "small"


def test_flow_runs_its_nodes_and_takes_the_action_branch():
    outputs, action, _ = same_both_ways(Review, {"topic": "cats"})
    assert outputs["published"] == "PLAIN DRAFT ABOUT CATS" and "notes" not in outputs
    assert action == "published"  # a Flow's action is its last node's
    outputs, action, _ = same_both_ways(Review, {"topic": "dogs"})
    assert outputs["notes"] == "rewrite: plain draft about dogs" and "published" not in outputs
    assert action == "revised"


def test_flow_params_reach_inner_nodes():
    outputs, _, _ = same_both_ways(Review, {"topic": "cats"}, {"style": "bold"})
    assert outputs["draft"] == "bold draft about cats"


def test_batch_flow_injects_per_item_params():
    outputs, action, _ = same_both_ways(GreetEach, {"names": ["ada", "bob"]})
    assert outputs == {"greetings": ["hello, ada", "hello, bob"], "count": 2, "runs": 2}
    assert action == "greeted"


def test_batch_flow_fanflow_params_merge_over_its_own():
    outputs, _, _ = same_both_ways(GreetEach, {"names": ["ada"]}, {"greeting": "hi"})
    assert outputs["greetings"] == ["hi, ada"]


def test_async_node_same_as_pocketflow():
    outputs, action, _ = same_both_ways(AsyncLookup, {"key": "b"})
    assert outputs == {"value": 2} and action == "found"


def test_async_batch_node_execs_each_item():
    outputs, _, _ = same_both_ways(AsyncSquares, {"numbers": [1, 2, 3]})
    assert outputs == {"squares": [1, 4, 9]}


def test_async_parallel_batch_node_same_results():
    expected, _ = by_pocketflow(Sleepers, {"items": [1, 2, 3]})
    outputs, action, _ = by_fanflow(Sleepers, {"items": [1, 2, 3]})
    assert outputs["results"] == expected["results"] == [10, 20, 30]
    assert [s["item"] for s in outputs["spans"]] == [1, 2, 3] and action == "default"


def test_async_flow_with_a_sync_inner_node_and_branches():
    outputs, action, _ = same_both_ways(AsyncPipeline, {"url": "https://x"})
    assert outputs == {"fetched": "ok", "summary": "summary of https://x"} and action == "done"
    outputs, action, _ = same_both_ways(AsyncPipeline, {"url": "ftp://x"})
    assert outputs == {"fetched": "bad", "rejected": True} and action == "rejected"


def test_async_batch_flow_injects_per_item_params():
    outputs, _, _ = same_both_ways(AsyncLabelEach, {"numbers": [3, 1, 2]}, {"prefix": "p"})
    assert outputs == {"labels": ["p-3", "p-1", "p-2"]}


def test_async_parallel_batch_flow_same_results():
    expected, pf_action = by_pocketflow(ParallelEach, {"items": [1, 2, 3]})
    outputs, action, _ = by_fanflow(ParallelEach, {"items": [1, 2, 3]})
    assert outputs["out"] == expected["out"] == {"1": 101, "2": 102, "3": 103}
    assert action == pf_action == "all-done"


# --- parallel variants under the global budget ---------------------------------------------------


@pytest.mark.parametrize("cls", [Sleepers, ParallelEach])
def test_parallel_variants_follow_the_budget(cls):
    items = {"items": [1, 2, 3, 4]}
    serial, _, _ = by_fanflow(cls, items, max_concurrent=1)
    assert len(serial["spans"]) == 4 and not overlapped(serial["spans"])
    wide, _, _ = by_fanflow(cls, items, max_concurrent=4)
    assert overlapped(wide["spans"])
    # 4 × 0.2 s items at 4 wide: about 0.2 s, far from the 0.8 s a serial run needs
    assert max(s["end"] for s in wide["spans"]) - min(s["start"] for s in wide["spans"]) < 0.7


def test_batch_over_a_parallel_node_at_max_concurrent_1_does_not_deadlock():
    doc = wf([{"id": "n", "type": f"{MOD}:Sleepers", "params": {"tag": "${item}"},
               "batch": {"items": ["a", "b"], "parallel": True}}],
             inputs={"items": {"type": "any"}})  # fmt: skip
    res = fanflow.run(doc, {"items": [1, 2]}, max_concurrent=1)
    assert res.ok, res.error
    spans = [s for r in res.store["n"]["results"] for s in r["spans"]]
    assert len(spans) == 4 and not overlapped(spans)  # one slot: every item took it in turn


class SometimesFails(pf.AsyncParallelBatchNode):
    cancelled: ClassVar[list[int]] = []

    async def prep_async(self, shared):
        return shared["items"]

    async def exec_async(self, item):
        if item == 0:
            await asyncio.sleep(0.05)
            raise RuntimeError("item 0 broke")
        try:
            await asyncio.sleep(5)
        except asyncio.CancelledError:
            self.cancelled.append(item)
            raise
        return item


def test_parallel_item_failure_cancels_the_other_items():
    SometimesFails.cancelled.clear()

    async def main() -> tuple[Any, list[int]]:
        res = await fanflow.run_async(node_doc(SometimesFails, {"items": 0}), {"items": [0, 1, 2]})
        return res, sorted(SometimesFails.cancelled)  # before the loop's shutdown cancels strays

    t0 = time.perf_counter()
    res, cancelled = asyncio.run(main())
    assert res.status == "failed" and "item 0 broke" in (res.error or "")
    assert cancelled == [1, 2]  # gather alone would leave them running past the failure
    assert time.perf_counter() - t0 < 4  # did not wait for the 5 s items


# --- retries and fallbacks -----------------------------------------------------------------------


def test_batch_retries_are_pocketflows_per_item_not_doubled():
    outputs, _, res = same_both_ways(FlakyItems, {"numbers": [1, 2]})
    assert outputs["results"] == [{"n": 1, "attempts": 3}, {"n": 2, "attempts": 3}]
    assert res.nodes["n"].attempts == 1  # the engine re-ran nothing on top


def test_batch_exec_fallback_per_item():
    outputs, _, _ = same_both_ways(FallbackItems, {"numbers": [1, 2, 3]})
    assert outputs["results"] == ["fallback(1): odd 1", 2, "fallback(3): odd 3"]


def test_node_retry_count_matches_pocketflow():
    expected, _ = by_pocketflow(FlakyNode, {"token": "pf"})
    outputs, _, res = by_fanflow(FlakyNode, {"token": "ff"})
    assert outputs == expected == {"attempts": 3}
    assert res.nodes["n"].attempts == 3  # the engine's retries, visible in the run


def test_failure_inside_a_flow_fails_the_node():
    res = fanflow.run(node_doc(Doubler, {"numbers": 0}), {"numbers": ["a", None]})
    assert res.status == "failed" and res.failed_node == "n"


# --- adapters: when and what -------------------------------------------------------------------


def test_plain_nodes_are_driven_by_the_engine_others_adapted():
    assert pocketflow_compat.adapt(Upper) is Upper
    assert pocketflow_compat.adapt(AsyncLookup) is AsyncLookup
    for cls in (Doubler, Review, GreetEach, AsyncSquares, Sleepers, AsyncPipeline,
                AsyncLabelEach, ParallelEach):  # fmt: skip
        adapter = pocketflow_compat.adapt(cls)
        assert pocketflow_compat.is_adapter(adapter) and adapter.target is cls
        assert pocketflow_compat.adapt(cls) is adapter  # one adapter per class
    assert pocketflow_compat.adapt(Sleepers).holds_slot is False
    assert pocketflow_compat.adapt(AsyncSquares).holds_slot is True
    assert pocketflow_compat.adapt(dict) is dict


REVIEW_INSTANCE = Review()  # a module-level flow object named as a node type


def test_a_flow_instance_as_node_type():
    res = fanflow.run(
        wf([{"id": "n", "type": f"{MOD}:REVIEW_INSTANCE"}], inputs={"topic": {"type": "any"}}),
        {"topic": "cats"},
    )
    assert res.ok, res.error
    assert res.store["n"]["published"] == "PLAIN DRAFT ABOUT CATS"
    assert REVIEW_INSTANCE.params == {}  # each run works on a copy


def test_outputs_feed_downstream_nodes_and_edges_follow_the_action():
    doc = wf(
        [{"id": "d", "type": f"{MOD}:Doubler"},
         {"id": "big", "type": "code", "params": {"code": "result = sum(xs)",
                                                  "inputs": {"xs": "${d.doubled}"}}},
         {"id": "small", "type": "code", "params": {"code": "result = 0"}}],
        [{"from": "d", "to": "big", "action": "big"}, {"from": "d", "to": "small", "action": "small"}],
        inputs={"numbers": {"type": "any"}},
    )  # fmt: skip
    res = fanflow.run(doc, {"numbers": [5, 6]})
    assert res.ok, res.error
    assert res.store["big"]["result"] == 22 and res.nodes["small"].status == "skipped"


def test_fanflow_batch_over_a_pocketflow_flow():
    doc = wf([{"id": "n", "type": f"{MOD}:Review", "params": {"style": "${item}"},
               "batch": {"items": ["bold", "calm", "dry"], "parallel": True}}],
             inputs={"topic": {"type": "any"}})  # fmt: skip
    res = fanflow.run(doc, {"topic": "cats"})
    assert res.ok, res.error
    drafts = [r["draft"] for r in res.store["n"]["results"]]
    assert drafts == ["bold draft about cats", "calm draft about cats", "dry draft about cats"]


class PidDoubler(pf.BatchNode):
    def prep(self, shared):
        return shared["numbers"]

    def exec(self, n):
        return {"n": n * 2, "pid": os.getpid()}

    def post(self, shared, prep_res, exec_res):
        shared["doubled"] = [r["n"] for r in exec_res]
        shared["pids"] = sorted({r["pid"] for r in exec_res})


def test_batch_node_exec_on_a_process_executor():
    doc = node_doc(PidDoubler, {"numbers": 0})
    doc["nodes"][0]["executor"] = "process"
    res = fanflow.run(doc, {"numbers": [1, 2, 3]})
    assert res.ok, res.error
    assert res.store["n"]["doubled"] == [2, 4, 6]
    assert res.store["n"]["pids"] != [os.getpid()]  # PocketFlow's _exec ran in a worker


def test_flow_refuses_a_process_executor():
    doc = node_doc(Review, {"topic": 0})
    doc["nodes"][0]["executor"] = "process"
    res = fanflow.run(doc, {"topic": "cats"})
    assert res.status == "failed" and "remove `executor` from this node" in (res.error or "")


# --- through the CLI -----------------------------------------------------------------------------


def _cli(write_wf, doc: dict, *args: str):
    return run_cli("run", str(write_wf(doc)), *args, "--output-format", "json",
                   env={"PYTHONPATH": TESTS})  # fmt: skip


def test_cli_batch_node_and_batch_flow(write_wf):
    cli_mod = Path(__file__).stem
    doc = wf(
        [{"id": "d", "type": f"{cli_mod}:Doubler"},
         {"id": "g", "type": f"{cli_mod}:GreetEach", "params": {"greeting": "hey"}}],
        [{"from": "d", "to": "g", "action": "small"}],  # Doubler's action picks the edge
        inputs={"numbers": {"type": "array"}, "names": {"type": "array"}},
        outputs={"doubled": {"source": "${d.doubled}"}, "greetings": {"source": "${g.greetings}"}},
    )  # fmt: skip
    res = _cli(write_wf, doc, "numbers=[1,2]", 'names=["ada","bob"]')
    assert res.code == 0, res.stderr
    assert res.json["outputs"] == {"doubled": [2, 4], "greetings": ["hey, ada", "hey, bob"]}
    assert res.json["nodes"]["d"]["action"] == "small"
    assert res.json["nodes"]["g"]["action"] == "greeted"


@pytest.mark.parametrize(("width", "overlap"), [(1, False), (4, True)])
def test_cli_parallel_batch_node_under_max_concurrent(write_wf, width, overlap):
    doc = wf([{"id": "s", "type": f"{Path(__file__).stem}:Sleepers"}],
             inputs={"items": {"type": "array"}},
             outputs={"spans": {"source": "${s.spans}"}, "results": {"source": "${s.results}"}})  # fmt: skip
    res = _cli(write_wf, doc, "items=[1,2,3,4]", "--max-concurrent", str(width))
    assert res.code == 0, res.stderr
    assert res.json["outputs"]["results"] == [10, 20, 30, 40]
    assert overlapped(res.json["outputs"]["spans"]) is overlap


class NeedsArgs(pf.BatchNode):
    def __init__(self, model):
        super().__init__()


def test_cli_class_needing_constructor_args_fails_cleanly(write_wf):
    doc = wf([{"id": "x", "type": f"{Path(__file__).stem}:NeedsArgs"}])
    res = _cli(write_wf, doc)
    assert res.code == 1
    assert res.json["failed_node"] == "x"
    assert "NeedsArgs() without arguments" in res.json["error"]
