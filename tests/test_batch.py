"""Batch semantics end to end: order, error policies, retries, caps, the seed form."""

from __future__ import annotations

import time

from conftest import run_cli, wf


def batch_node(command: str, items, **batch) -> dict:
    return {"id": "work", "type": "shell", "params": {"command": command},
            "batch": {"items": items, **batch}}  # fmt: skip


def test_results_keep_item_order_when_later_items_finish_first(write_wf):
    # Item 0 sleeps longest, so completion order is the reverse of item order.
    node = batch_node("sleep $(( (4 - ${__index__}) ))e-1; echo ${item}-${__index__}",
                      ["a", "b", "c", "d"], parallel=True, max_concurrent=4)  # fmt: skip
    node["params"]["command"] = "sleep 0.$(( 4 - ${__index__} )); echo ${item}-${__index__}"
    doc = wf(
        [node],
        outputs={
            "out": {"source": "${work.results}"},
            "third": {"source": "${work.results[2].stdout}"},
        },
    )
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert [r["stdout"] for r in res.json["outputs"]["out"]] == ["a-0", "b-1", "c-2", "d-3"]
    assert res.json["outputs"]["third"] == "c-2"


def test_continue_runs_every_item_and_aligns_results(write_wf):
    node = batch_node("test ${item} -ne 2 -a ${item} -ne 4 || exit 1; echo ok${item}",
                      [1, 2, 3, 4, 5], parallel=True, error_handling="continue")  # fmt: skip
    doc = wf([node, {"id": "report", "type": "shell",
                     "params": {"command": "echo first failure at ${work.errors[0].index}"}}],
             outputs={"b": {"source": "${work}"}, "r": {"source": "${report.stdout}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    b = res.json["outputs"]["b"]
    assert [r and r["stdout"] for r in b["results"]] == ["ok1", None, "ok3", None, "ok5"]
    assert (b["count"], b["success_count"], b["error_count"]) == (5, 3, 2)
    assert [(e["index"], e["item"]) for e in b["errors"]] == [(1, 2), (3, 4)]
    assert "exit code 1" in b["errors"][0]["error"]
    assert res.json["outputs"]["r"] == "first failure at 1"
    assert "timing" in b["batch_metadata"]


def test_continue_fails_the_run_only_when_every_item_failed(write_wf):
    doc = wf([batch_node("exit 1", [1, 2], error_handling="continue")])
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 1 and "every item failed" in res.json["error"]


def test_fail_fast_cancels_a_slow_items_process(write_wf, tmp_path):
    marker = tmp_path / "finished"
    node = batch_node(f"if [ ${{item}} = slow ]; then sleep 20; touch {marker}; else sleep 0.3; exit 9; fi",
                      ["slow", "bad"], parallel=True)  # fmt: skip
    t0 = time.monotonic()
    res = run_cli("run", str(write_wf(wf([node]))), "--output-format", "json", timeout=40)
    assert res.code == 1
    assert time.monotonic() - t0 < 15, "the slow item was not cancelled"
    assert "batch failed at item [1]: command failed with exit code 9" in res.json["error"]
    time.sleep(0.5)
    assert not marker.exists()


def test_retries_succeed_on_the_second_attempt(write_wf, tmp_path):
    counter = tmp_path / "count"
    # Each item fails on its first attempt (no marker yet) and succeeds on the second.
    cmd = f"f={tmp_path}/seen-${{item}}; echo x >> {counter}; if [ -e $f ]; then echo done${{item}}; else touch $f; exit 1; fi"
    doc = wf([batch_node(cmd, [1, 2, 3], parallel=True, max_retries=2, retry_wait=0.05)],
             outputs={"r": {"source": "${work.results}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert [r["stdout"] for r in res.json["outputs"]["r"]] == ["done1", "done2", "done3"]
    assert len(counter.read_text().split()) == 6


def test_global_cap_holds_across_two_batching_branches(write_wf, tmp_path):
    lock_dir = tmp_path / "running"
    lock_dir.mkdir()
    peak_log = tmp_path / "peak"
    # Each item registers itself, records how many items are running, then leaves.
    cmd = f"touch {lock_dir}/$$; ls {lock_dir} | wc -l >> {peak_log}; sleep 0.15; rm {lock_dir}/$$"
    branches = [
        {"id": name, "type": "shell", "params": {"command": cmd},
         "batch": {"items": list(range(12)), "parallel": True, "max_concurrent": 10}}
        for name in ("left", "right")
    ]  # fmt: skip
    doc = wf([{"id": "s", "type": "shell", "params": {"command": "true"}}, *branches],
             [("s", "left"), ("s", "right")])  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--max-concurrent", "3", timeout=60)
    assert res.code == 0, res.stderr
    seen = [int(x) for x in peak_log.read_text().split()]
    assert len(seen) == 24
    assert max(seen) <= 3, f"more than 3 items at once: {max(seen)}"
    assert max(seen) >= 2, "the two branches did overlap"


def test_sequential_batch_and_seed_batch_config_form(write_wf):
    doc = wf([
        {"id": "list", "type": "shell", "params": {"command": "echo '[\"x\", \"y\"]'"}},
        {"id": "each", "type": "shell", "params": {"command": "echo got-${item}"},
         "batch_config": {"enabled": True, "items_field": "list.stdout"}},
    ], outputs={"r": {"source": "${each.results}"}, "n": {"source": "${each.count}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert res.code == 0, res.stderr
    assert [r["stdout"] for r in res.json["outputs"]["r"]] == ["got-x", "got-y"]
    assert res.json["outputs"]["n"] == 2


def test_custom_alias_and_code_node_batch(write_wf):
    doc = wf([{"id": "sq", "type": "code", "params": {"code": "result = n * n + i", "inputs": {"n": "${num}", "i": "${__index__}"}},
               "batch": {"items": [3, 4], "as": "num", "parallel": True}}],
             outputs={"r": {"source": "${sq.results}"}})  # fmt: skip
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json")
    assert [r["result"] for r in res.json["outputs"]["r"]] == [9, 17]


def test_batch_config_with_unknown_fields_is_invalid(write_wf):
    doc = wf([batch_node("echo", [1], paralel=True)])
    res = run_cli("validate", str(write_wf(doc)))
    assert res.code == 2 and "nodes[0].batch.paralel" in res.stderr
