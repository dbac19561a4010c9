"""The dask executor against real clusters: a module-scoped in-process LocalCluster (threads,
tcp) where only the protocol matters, and fanflow's own LocalCluster (worker processes)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import fanflow

distributed = pytest.importorskip("distributed")

from test_executors import BUSY, assert_item_stopped, batch_doc, results, stoppable_doc  # noqa: E402


@pytest.fixture(scope="module")
def address() -> Iterator[str]:
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=4, processes=False,
                                       protocol="tcp", dashboard_address=None)  # fmt: skip
    try:
        yield f"dask={cluster.scheduler_address}"
    finally:
        cluster.close()


def test_dask_results_identical_to_threads(address: str) -> None:
    code = "print('item', x)\nif x == 4:\n    raise ValueError('four')\nresult = {'sq': x * x}"
    doc = batch_doc(code, list(range(12)), cap=6, error_handling="continue")
    by = {ex: fanflow.run(doc, executor=ex) for ex in ("thread", address)}
    assert by["thread"].status == by[address].status == "success", by[address].error
    assert by["thread"].store["c"] == {
        **by[address].store["c"],
        "batch_metadata": by["thread"].store["c"]["batch_metadata"],
    }
    assert by[address].store["c"]["results"][3]["stdout"] == "item 3"


def test_dask_fail_fast_stops_the_running_item_on_the_worker(address: str, tmp_path: Path) -> None:
    doc = stoppable_doc(tmp_path)
    doc["nodes"][0]["executor"] = address
    r = fanflow.run(doc)
    assert r.status == "failed" and "first fails" in r.error
    assert_item_stopped(tmp_path)


def test_dask_code_timeout_on_a_worker_thread(address: str) -> None:
    doc = batch_doc("while True:\n    pass", [0], {}, cap=1)
    doc["nodes"][0]["params"]["timeout"] = 0.3
    r = fanflow.run(doc, executor=address)
    assert r.status == "failed" and "timed out after 0.3 s" in r.error


def test_dask_unreachable_scheduler_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    from fanflow.execute import dask_exec

    monkeypatch.setattr(dask_exec, "_CONNECT_TIMEOUT", 1.0)
    r = fanflow.run(batch_doc("result = x", [1]), executor="dask=tcp://127.0.0.1:9")
    assert r.status == "failed"
    assert "cannot reach a Dask scheduler" in r.error and "dask scheduler" in r.error


@pytest.mark.slow
def test_dask_local_cluster_processes_overlap_and_version_check(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    r = fanflow.run(batch_doc(BUSY, list(range(4)), {"seconds": 0.4}), executor="dask")
    assert r.status == "success", r.error
    got = results(r)
    assert [g["x"] for g in got] == [0, 1, 2, 3]
    assert len({g["pid"] for g in got}) >= 2 and os.getpid() not in {g["pid"] for g in got}
    monkeypatch.setattr(fanflow, "__version__", "0.0.0-driver")
    r = fanflow.run(batch_doc("result = x", [1]), executor="dask")
    assert r.status == "failed"
    assert "runs fanflow" in r.error and "the driver 0.0.0-driver" in r.error


def test_property_dask_matches_threads(address: str) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st

    code = "if x % 7 == 3:\n    raise ValueError(f'v{x}')\nprint(x)\nresult = {'x': x, 'h': x / 2}"

    @settings(max_examples=5, deadline=None, derandomize=True)
    @given(
        xs=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=30),
        cap=st.sampled_from([1, 4, 16]),
    )
    def same(xs: list[int], cap: int) -> None:
        doc = batch_doc(code, xs, cap=cap, error_handling="continue")
        a, b = fanflow.run(doc, executor="thread"), fanflow.run(doc, executor=address)
        assert a.status == b.status
        strip = {"batch_metadata"}
        assert {k: v for k, v in a.store.get("c", {}).items() if k not in strip} == {
            k: v for k, v in b.store.get("c", {}).items() if k not in strip
        }

    same()
