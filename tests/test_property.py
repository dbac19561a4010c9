"""Determinism: random DAGs give identical outputs sequentially and at high concurrency."""

from __future__ import annotations

import asyncio
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fanflow
from fanflow.nodes.base import AsyncNode


class Jitter(AsyncNode):
    """Sleeps a pseudo-random moment so completion order varies between runs."""

    type_name = "prop-jitter"

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        await asyncio.sleep(self.params["delay"])
        return {"value": self.params["value"]}


fanflow.register_node(Jitter)


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 12))
    nodes, edges = [], []
    for i in range(n):
        parents = draw(st.lists(st.integers(0, i - 1), unique=True, max_size=3)) if i else []
        reads = " + ".join(f"str(p{j})" for j in range(len(parents))) or "''"
        inputs = {f"p{j}": f"${{n{p}.value}}" for j, p in enumerate(parents)}
        if draw(st.booleans()):
            code = f"result = '{i}(' + {reads} + ')'"
            nodes.append(
                {"id": f"c{i}", "type": "code", "params": {"code": code, "inputs": inputs}}
            )
            value = f"${{c{i}.result}}"
        else:
            text = f"{i}(" + "".join(f"${{n{p}.value}}" for p in parents) + ")"
            nodes.append({"id": f"c{i}", "type": "shell", "params": {"command": f"echo '{text}'"}})
            value = f"${{c{i}.stdout}}"
        delay = draw(st.sampled_from([0, 0.001, 0.005, 0.01]))
        nodes.append(
            {"id": f"n{i}", "type": "prop-jitter", "params": {"value": value, "delay": delay}}
        )
        edges.append({"from": f"c{i}", "to": f"n{i}"})
        edges += [{"from": f"n{p}", "to": f"c{i}"} for p in parents]
    outputs = {f"o{i}": {"source": f"${{n{i}.value}}"} for i in range(n)}
    return {"ir_version": "0.1.0", "nodes": nodes, "edges": edges, "outputs": outputs}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(dags())
def test_random_dags_same_outputs_at_any_concurrency(doc: dict[str, Any]) -> None:
    workflow = fanflow.load_workflow(doc)
    sequential = fanflow.run(workflow, max_concurrent=1)
    parallel = fanflow.run(workflow, max_concurrent=64)
    assert sequential.ok and parallel.ok, (sequential.error, parallel.error)
    assert sequential.outputs == parallel.outputs
    # A node's value spells its whole ancestry, so equal outputs mean equal dataflow.
    assert all(v.startswith(k[1:]) for k, v in sequential.outputs.items())
