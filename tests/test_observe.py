"""Observability listeners fed with synthetic event streams (no engine needed)."""

from __future__ import annotations

import asyncio
import io
import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from fanflow import events as ev
from fanflow.events import Event
from fanflow.observe._spans import Span, pack_lanes
from fanflow.observe.progress import LiveProgress, NullProgress, PlainProgress, make_progress
from fanflow.observe.summary import SummaryCollector, format_summary
from fanflow.observe.timeline import render_timeline, write_timeline
from fanflow.observe.trace import TraceWriter

T0 = 1000.0  # perf_counter-like origin; traces must be relative to the run start
SECRET = "sk-SECRET-do-not-leak"


class Run:
    """Builds an event list in time order from a terse script."""

    def __init__(self, deps: dict[str, list[str]] | None = None, batch_nodes=()):
        self.events: list[Event] = []
        self.deps = deps or {}
        self.add(
            ev.RUN_STARTED,
            0.0,
            run_id="r1",
            workflow="wf.json",
            inputs={"api_key": SECRET},
            nodes=list(self.deps),
            wall_start=1.7e9,
            max_concurrent=8,
            deps=self.deps,
            batch_nodes=list(batch_nodes),
        )

    def add(self, kind, t, node=None, index=None, **data):
        self.events.append(Event(kind, T0 + t, node, index, data))
        return self

    def start(self, t, node, batch=None, **kw):
        if batch is not None:
            kw["batch"] = batch
        return self.add(ev.NODE_STARTED, t, node, **kw)

    def finish(self, t, node, status="success", action="default", error=None, attempts=1, **kw):
        return self.add(
            ev.NODE_FINISHED,
            t,
            node,
            status=status,
            action=action,
            outputs={"token": SECRET},
            error=error,
            attempts=attempts,
            **kw,
        )

    def item_start(self, t, node, i):
        return self.add(ev.ITEM_STARTED, t, node, i)

    def item_finish(self, t, node, i, status="success", error=None, attempts=1):
        return self.add(
            ev.ITEM_FINISHED,
            t,
            node,
            i,
            status=status,
            result={"v": SECRET},
            error=error,
            attempts=attempts,
            item={"password": SECRET},
        )

    def end(self, t, status="success"):
        return self.add(
            ev.RUN_FINISHED, t, status=status, outputs={"o": SECRET}, error=None, failed_node=None
        )

    def sorted(self) -> list[Event]:
        return sorted(self.events, key=lambda e: e.t)  # stable: same-time events keep order


def feed(listener, events):
    for e in events:
        listener.on_event(e)
    listener.close()
    return listener


def diamond_with_batch() -> list[Event]:
    """a → (b 0.2s ‖ c 0.4s ‖ w: 3 items, 2 at a time) → d. Item 1 retries once, item 2 fails."""
    r = Run(
        deps={"a": [], "b": ["a"], "c": ["a"], "w": ["a"], "d": ["b", "c", "w"]}, batch_nodes=["w"]
    )
    r.start(0.0, "a").finish(0.1, "a")
    r.start(0.1, "b").start(0.1, "c").start(0.1, "w", batch=3)
    r.item_start(0.1, "w", 0).item_start(0.1, "w", 1)
    r.add(ev.NODE_RETRY, 0.15, "w", 1, attempt=1, error="HTTP 429", wait=0.05)
    r.item_finish(0.2, "w", 0).item_start(0.2, "w", 2)
    r.item_finish(0.3, "w", 1, attempts=2).finish(0.3, "b")
    r.item_finish(0.35, "w", 2, status="failed", error="bad item\nline two")
    r.finish(0.35, "w")
    r.finish(0.5, "c")
    r.start(0.5, "d").finish(0.6, "d").end(0.6)
    return r.sorted()


def spans_of(trace: dict) -> list[dict]:
    return [e for e in trace["traceEvents"] if e["ph"] == "X"]


def lane_names(trace: dict) -> dict[int, str]:
    return {
        e["tid"]: e["args"]["name"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }


def overlaps(a: dict, b: dict) -> bool:
    return a["ts"] < b["ts"] + b["dur"] and b["ts"] < a["ts"] + a["dur"]


# -- trace ----------------------------------------------------------------------------------------


def test_trace_file_is_chrome_json_with_one_span_per_run_and_item(tmp_path: Path):
    path = tmp_path / "sub" / "t.json"
    feed(TraceWriter(path), diamond_with_batch())
    text = path.read_text()
    trace = json.loads(text)
    assert trace["displayTimeUnit"] == "ms"
    names = sorted(s["name"] for s in spans_of(trace))
    assert names == ["a", "b", "c", "d", "w", "w[0]", "w[1]", "w[2]"]
    by_name = {s["name"]: s for s in spans_of(trace)}
    # µs relative to run start
    assert by_name["a"]["ts"] == 0
    assert by_name["a"]["dur"] == pytest.approx(100_000, abs=1)
    assert by_name["d"]["ts"] == pytest.approx(500_000, abs=1)
    assert by_name["w"]["cat"] == "node" and by_name["w[2]"]["cat"] == "item"
    assert by_name["w"]["args"]["items"] == 3
    assert by_name["w[1]"]["args"] == {"status": "success", "item": 1, "attempts": 2, "retries": 1}
    assert by_name["w[2]"]["args"]["status"] == "failed"
    assert by_name["w[2]"]["args"]["error"].startswith("bad item")
    assert by_name["b"]["args"] == {"status": "success"}  # defaults (action, 1 attempt) left out
    assert SECRET not in text  # outputs, inputs, item values never reach the file
    assert not list(tmp_path.glob("sub/*.tmp"))


def test_parallel_spans_get_different_lanes_and_items_their_own(tmp_path: Path):
    trace = feed(TraceWriter(), diamond_with_batch()).to_dict()
    spans = spans_of(trace)
    names = lane_names(trace)
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if overlaps(a, b):
                assert a["tid"] != b["tid"], (a["name"], b["name"])
    by_name = {s["name"]: s for s in spans}
    assert len({by_name[n]["tid"] for n in "bcw"}) == 3  # the fan-out: three lanes at once
    node_tids = {s["tid"] for s in spans if s["cat"] == "node"}
    item_tids = {s["tid"] for s in spans if s["cat"] == "item"}
    assert not node_tids & item_tids
    assert all(names[t].startswith("lane ") for t in node_tids)
    assert sorted(names[t] for t in item_tids) == ["w items 1", "w items 2"]  # packed: 2 at once
    sort = {
        e["tid"]: e["args"]["sort_index"]
        for e in trace["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_sort_index"
    }
    assert max(sort[t] for t in node_tids) < min(sort[t] for t in item_tids)
    # every item lies inside its node's span
    for s in spans:
        if s["cat"] == "item":
            assert by_name["w"]["ts"] <= s["ts"]
            assert s["ts"] + s["dur"] <= by_name["w"]["ts"] + by_name["w"]["dur"] + 1e-6


def test_trace_instants_counter_and_metadata():
    r = Run(deps={"a": [], "x": ["a"]})
    r.start(0, "a").finish(0.1, "a", action="no").add(ev.NODE_SKIPPED, 0.1, "x", reason="dead")
    r.end(0.1)
    trace = feed(TraceWriter(), r.sorted()).to_dict()
    assert spans_of(trace)[0]["args"] == {"status": "success", "action": "no"}
    instants = [e for e in trace["traceEvents"] if e["ph"] == "i"]
    assert [(i["cat"], i["name"]) for i in instants] == [("skip", "x")]
    assert lane_names(trace)[instants[0]["tid"]] == "skipped"
    counter = [e["args"]["in_flight"] for e in trace["traceEvents"] if e["ph"] == "C"]
    assert counter == [1, 0]
    assert trace["otherData"]["status"] == "success"
    assert trace["otherData"]["deps"] == {"a": [], "x": ["a"]}
    assert "inputs" not in trace["otherData"]

    trace = feed(TraceWriter(), diamond_with_batch()).to_dict()
    retry = [e for e in trace["traceEvents"] if e["ph"] == "i" and e["cat"] == "retry"]
    assert len(retry) == 1 and retry[0]["args"]["item"] == 1
    item1 = next(s for s in spans_of(trace) if s["name"] == "w[1]")
    assert retry[0]["tid"] == item1["tid"]  # drawn on the attempt's own lane
    levels = [e["args"]["in_flight"] for e in trace["traceEvents"] if e["ph"] == "C"]
    assert max(levels) == 4  # b, c and two items; the batch node itself is a container
    assert levels[-1] == 0


def test_trace_loops_incomplete_runs_and_resumed_nodes():
    r = Run(deps={"draft": ["check"], "check": ["draft"], "slow": []})
    r.start(0, "draft").finish(0.1, "draft").start(0.1, "check").finish(
        0.2, "check", action="revise"
    )
    r.start(0.2, "draft").finish(0.3, "draft").start(0.3, "check").finish(0.4, "check")
    r.start(0, "slow")  # never finishes: the run was interrupted
    r.start(0.05, "old", resumed=True).finish(0.05, "old", attempts=0, resumed=True)
    r.end(0.5, status="cancelled")
    trace = feed(TraceWriter(), r.sorted()).to_dict()
    spans = spans_of(trace)
    assert sorted(s["name"] for s in spans) == ["check", "check", "draft", "draft", "slow"]
    slow = next(s for s in spans if s["name"] == "slow")
    assert slow["args"]["status"] == "running" and slow["dur"] == pytest.approx(500_000)
    resumed = [e for e in trace["traceEvents"] if e["ph"] == "i" and e["cat"] == "resumed"]
    assert [e["name"] for e in resumed] == ["old"]


def test_trace_to_dict_matches_file_and_survives_no_events(tmp_path: Path):
    tw = feed(TraceWriter(tmp_path / "t.json"), diamond_with_batch())
    assert json.loads((tmp_path / "t.json").read_text()) == tw.to_dict()
    empty = feed(TraceWriter(tmp_path / "e.json"), [])
    assert (
        json.loads((tmp_path / "e.json").read_text())["traceEvents"]
        == empty.to_dict()["traceEvents"]
    )


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 50), st.integers(1, 20)),
        max_size=40,
    )
)
def test_lane_packing_never_overlaps_and_uses_peak_lanes(intervals):
    spans = [Span("n", None, float(s), float(s + d)) for s, d in intervals]
    lanes = pack_lanes(spans)
    for i, a in enumerate(spans):
        for j, b in enumerate(spans):
            if i < j and lanes[i] == lanes[j]:
                assert a.end <= b.start or b.end <= a.start
    # lane count == peak number of spans covering one instant (half-open intervals)
    peak = max((sum(1 for s in spans if s.start <= p.start < s.end) for p in spans), default=0)
    assert len(set(lanes)) == peak


# -- summary --------------------------------------------------------------------------------------


def test_summary_figures_and_critical_path_of_an_uneven_diamond():
    sc = feed(SummaryCollector(), diamond_with_batch())
    s = sc.summary()
    assert s["status"] == "success"
    assert s["wall_ms"] == pytest.approx(600)
    # busy: a .1 + b .2 + c .4 + d .1 + items (.1 + .2 + .15) — the batch container not counted
    assert s["busy_ms"] == pytest.approx(1250)
    assert s["parallelism"] == pytest.approx(1250 / 600, abs=0.01)
    assert s["idle_ms"] == pytest.approx(0, abs=1e-6)
    assert s["speedup"] == pytest.approx(s["parallelism"], abs=0.01)
    assert [p["node"] for p in s["critical_path"]] == ["a", "c", "d"]
    assert [p["ms"] for p in s["critical_path"]] == pytest.approx([100, 400, 100])
    assert s["critical_path_ms"] == pytest.approx(600)
    assert [x["node"] for x in s["slowest"]][:3] == ["c", "w", "b"]
    assert s["slowest"][1]["items"] == 3 and s["slowest"][1]["busy_ms"] == pytest.approx(450)
    assert s["retries"] == 1 and s["failed_items"] == 1
    assert s["failures"] == [{"node": "w", "item": 2, "error": "bad item\nline two"}]
    assert s["nodes"] == {"success": 5}
    json.dumps(s)  # goes into the JSON output as is


def test_summary_is_consistent_with_the_trace():
    events = diamond_with_batch()
    trace = feed(TraceWriter(), events).to_dict()
    s = feed(SummaryCollector(), events).summary()
    leaves = [x for x in spans_of(trace) if x["cat"] == "item" or "items" not in x["args"]]
    assert s["busy_ms"] == pytest.approx(sum(x["dur"] for x in leaves) / 1000)
    assert s["wall_ms"] == pytest.approx(trace["otherData"]["duration_us"] / 1000)
    by_name = {x["name"]: x for x in spans_of(trace)}
    for step in s["critical_path"]:
        assert step["ms"] == pytest.approx(by_name[step["node"]]["dur"] / 1000)


def test_critical_path_through_if_else_and_idle_time():
    # cond → yes (runs) | no (skipped) → join; an idle gap of 0.1s before join starts
    r = Run(deps={"cond": [], "yes": ["cond"], "no": ["cond"], "join": ["yes", "no"]})
    r.start(0, "cond").finish(0.1, "cond", action="yes")
    r.start(0.1, "yes").add(ev.NODE_SKIPPED, 0.1, "no", reason="no incoming edge fired")
    r.finish(0.3, "yes").start(0.4, "join").finish(0.5, "join").end(0.5)
    s = feed(SummaryCollector(), r.sorted()).summary()
    assert [p["node"] for p in s["critical_path"]] == ["cond", "yes", "join"]
    assert s["nodes"] == {"success": 3, "skipped": 1}
    assert s["idle_ms"] == pytest.approx(100)
    assert s["sequential_estimate_ms"] == pytest.approx(500)
    assert s["speedup"] == pytest.approx(1.0)
    assert s["parallelism"] == pytest.approx(0.8)


def test_summary_failures_handled_and_format():
    r = Run(deps={"a": [], "b": ["a"], "fix": ["b"]})
    r.start(0, "a").finish(0.1, "a")
    r.add(ev.NODE_RETRY, 0.15, "b", attempt=1, error="timeout", wait=0.1)
    r.start(0.1, "b").finish(0.3, "b", status="failed", action="error", error="boom", handled=True)
    r.start(0.3, "fix").finish(0.4, "fix", status="failed", action=None, error="exit 1\nstderr")
    r.add(ev.RUN_FINISHED, 0.4, status="failed", outputs={}, error="fix failed", failed_node="fix")
    s = feed(SummaryCollector(), sorted(r.events, key=lambda e: e.t)).summary()
    assert s["status"] == "failed" and s["failed_node"] == "fix"
    assert s["nodes"] == {"success": 1, "failed": 2} and s["handled"] == 1
    assert s["failures"][0] == {"node": "b", "handled": True, "error": "boom"}
    text = format_summary(s)
    lines = text.splitlines()
    assert lines[0].startswith("run failed in 400ms: 3 nodes")
    assert "critical path" in text and "a 100ms -> b 200ms -> fix 100ms" in text
    assert "failed b (handled by its error edge): boom" in text
    assert "failed fix: exit 1" in text and "stderr" not in text
    assert text.isascii()


def test_summary_of_an_empty_run():
    s = feed(SummaryCollector(), []).summary()
    assert s["wall_ms"] == 0 and s["critical_path"] == [] and s["parallelism"] == 0
    format_summary(s)


# -- progress -------------------------------------------------------------------------------------


def test_plain_progress_lines():
    out = io.StringIO()
    p = make_progress(out, tty=False)
    assert isinstance(p, PlainProgress)
    events = diamond_with_batch()
    events.insert(-1, Event(ev.NODE_SKIPPED, T0 + 0.6, "x", None, {"reason": "dead path"}))
    feed(p, events)
    lines = out.getvalue().splitlines()
    assert lines[:2] == ["▶ a", "✓ a 0.10s"]
    assert "▶ w (3 items)" in lines
    assert "↻ w[1] retry after attempt 1 in 0.05s: HTTP 429" in lines
    assert "w 3/3 ✓2 ✗1" in lines
    assert lines.index("w 3/3 ✓2 ✗1") < lines.index("✓ w 0.25s")
    assert "✓ c 0.40s" in lines and "✓ d 0.10s" in lines
    assert "↷ x skipped: dead path" in lines
    assert SECRET not in out.getvalue()


def test_plain_progress_failures_and_ascii_fallback():
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    r = Run()
    r.start(0, "f").finish(0.1, "f", status="failed", action=None, error="exit 2\nmore", attempts=3)
    r.start(0.1, "g").finish(0.2, "g", status="cancelled", action=None, error="cancelled")
    feed(make_progress(out, tty=False), r.sorted())
    out.flush()
    lines = raw.getvalue().decode().splitlines()
    assert lines == [
        "> f",
        "FAIL f 0.10s (3 attempts): exit 2",
        "> g",
        "cancelled g 0.10s cancelled",
    ]


def test_plain_progress_batch_lines_are_rate_limited():
    out = io.StringIO()
    p = make_progress(out, tty=False)
    r = Run()
    r.start(0, "work", batch=200)
    for i in range(200):  # one item finishing every 25 ms: 5 s of batch
        r.item_start(i * 0.025, "work", i)
        r.item_finish(i * 0.025 + 0.02, "work", i, status="failed" if i % 50 == 0 else "success")
    r.finish(5.1, "work").end(5.1)
    feed(p, r.sorted())
    batch_lines = [ln for ln in out.getvalue().splitlines() if ln.startswith("work ")]
    assert 4 <= len(batch_lines) <= 6  # ~1 per second plus the final one, not 200
    assert batch_lines[-1] == "work 200/200 ✓196 ✗4"
    done = [int(ln.split()[1].split("/")[0]) for ln in batch_lines]
    assert done == sorted(done)


def test_plain_progress_caps_routine_lines_in_a_flood_but_never_failures():
    out = io.StringIO()
    p = make_progress(out, tty=False)
    r = Run(deps={f"n{i}": [] for i in range(1000)})
    for i in range(1000):  # a 1,000-node chain in 0.5 s: 2,000 routine lines without the cap
        r.start(i * 0.0005, f"n{i}")
        if i == 500:
            r.finish(i * 0.0005 + 0.0001, f"n{i}", status="failed", action=None, error="boom")
        else:
            r.finish(i * 0.0005 + 0.0001, f"n{i}")
    r.end(0.5, status="failed")
    feed(p, r.sorted())
    lines = out.getvalue().splitlines()
    assert len(lines) <= 35
    assert lines[:2] == ["▶ n0", "✓ n0 0.1ms"]
    assert "✗ n500 0.1ms: boom" in lines  # failures are always written
    assert lines[-1] == "… 985 started, 984 ok (1,000/1,000 done, 0 running)"


def test_plain_progress_coalesces_inside_a_loop_and_close_flushes():
    out = io.StringIO()
    p = make_progress(out, tty=False)

    async def main():
        p.on_event(Event(ev.NODE_STARTED, 0.0, "a", None, {}))
        p.on_event(Event(ev.NODE_STARTED, 0.0, "b", None, {}))
        first = out.getvalue()  # not yet: written together a moment later
        await asyncio.sleep(0.3)
        second = out.getvalue()
        p.on_event(Event(ev.NODE_FINISHED, 0.5, "a", None, {"status": "success"}))
        return first, second

    first, second = asyncio.run(main())
    assert first == ""
    assert second == "▶ a\n▶ b\n"
    p.close()  # the loop is gone; close still writes what was pending
    assert out.getvalue().endswith("✓ a 0.50s\n")


def test_progress_survives_a_closed_stream():
    out = io.StringIO()
    p = make_progress(out, tty=False)
    out.close()
    feed(p, diamond_with_batch())  # no exception: progress must never fail a run


def test_quiet_and_detection():
    assert isinstance(make_progress(io.StringIO(), quiet=True), NullProgress)
    assert isinstance(make_progress(io.StringIO()), PlainProgress)  # StringIO is not a TTY


def test_live_progress_renders_running_nodes_and_batch_counts():
    out = io.StringIO()
    p = make_progress(out, tty=True)
    assert isinstance(p, LiveProgress)
    r = Run(deps={"fetch": [], "work": []})
    r.start(0, "fetch").start(0, "work", batch=200)
    for i in range(37):
        r.item_start(0, "work", i)
        r.item_finish(0.01, "work", i, status="failed" if i < 2 else "success")
    r.add(ev.NODE_RETRY, 0.02, "work", 40, attempt=1, error="429", wait=0.1)
    events = r.sorted()
    for e in events:
        p.on_event(e)
    from rich.console import Console

    frame = Console(file=io.StringIO(), width=100, color_system=None)
    with frame.capture() as cap:
        frame.print(p._render())
    text = cap.get()
    assert "running 2" in text
    assert "fetch" in text and "work" in text
    assert "37/200 ✓ 35 ✗ 2 ↻ 1" in text
    p.on_event(Event(ev.NODE_FINISHED, T0 + 0.5, "fetch", None, {"status": "success"}))
    p.close()
    assert "✓ fetch 0.50s" in out.getvalue()
    assert "▶ work (200 items)" in out.getvalue()


# -- timeline -------------------------------------------------------------------------------------


def test_timeline_html_is_self_contained_and_draws_every_span(tmp_path: Path):
    trace = feed(TraceWriter(), diamond_with_batch()).to_dict()
    html = render_timeline(trace)
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html and "</html>" in html
    for banned in ("<script", "<link", "src=", "@import", "url(http", "https://"):
        assert banned not in html
    assert html.count("<rect") >= len(spans_of(trace))
    assert html.count('rx="2"') == len(spans_of(trace))  # one bar per span
    for name in ("lane 1", "lane 3", "w items 1", "w items 2"):
        assert f">{name}</text>" in html
    assert "w[2]  150.0ms" in html  # hover title of the failed item
    assert "marker-end" in html  # dependency connectors from run_started deps
    out = write_timeline(trace, tmp_path / "x" / "t.html")
    assert out.read_text() == html


def test_timeline_from_a_file_and_escaping(tmp_path: Path):
    r = Run(deps={"<b>": []})
    r.start(0, "<b>").finish(0.1, "<b>", status="failed", action=None, error="<script>x")
    feed(TraceWriter(tmp_path / "t.json"), r.sorted())
    html = write_timeline(tmp_path / "t.json", tmp_path / "t.html").read_text()
    assert "<script" not in html and "&lt;b&gt;" in html


def test_timeline_command(tmp_path: Path):
    from fanflow.commands.timeline import timeline

    feed(TraceWriter(tmp_path / "t.json"), diamond_with_batch())
    res = CliRunner().invoke(timeline, [str(tmp_path / "t.json"), "-o", str(tmp_path / "o.html")])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "o.html").read_text().startswith("<!DOCTYPE html>")
    res = CliRunner().invoke(timeline, [str(tmp_path / "t.json")])
    assert res.exit_code == 0 and (tmp_path / "t.html").exists()
    (tmp_path / "bad.json").write_text('{"traceEvents": [')
    res = CliRunner().invoke(timeline, [str(tmp_path / "bad.json")])
    assert res.exit_code == 2 and "not valid JSON" in res.output
    (tmp_path / "other.json").write_text('{"hello": 1}')
    res = CliRunner().invoke(timeline, [str(tmp_path / "other.json")])
    assert res.exit_code == 2 and "traceEvents" in res.output
    res = CliRunner().invoke(timeline, [str(tmp_path / "missing.json")])
    assert res.exit_code == 2


def test_long_runs_keep_a_bounded_counter_track_and_its_peak(tmp_path: Path):
    r = Run()
    t = 0.0
    for i in range(6000):  # a 6,000-node chain: the counter would toggle 12,000 times
        r.start(t, f"n{i}").finish(t + 0.00002, f"n{i}")
        t += 0.00003
    for i in range(5):  # then a short burst of 5 at once
        r.start(t, f"p{i}")
    for i in range(5):
        r.finish(t + 0.001, f"p{i}")
    r.end(t + 0.001)
    tw = feed(TraceWriter(tmp_path / "t.json"), r.sorted())
    trace = json.loads((tmp_path / "t.json").read_text())
    assert len(spans_of(trace)) == 6005
    levels = [e["args"]["in_flight"] for e in trace["traceEvents"] if e["ph"] == "C"]
    assert len(levels) <= 4000
    assert max(levels) == 5 and levels[-1] == 0
    ts = [e["ts"] for e in trace["traceEvents"] if e["ph"] == "C"]
    assert ts == sorted(ts)
    assert trace == tw.to_dict()


def test_fail_fast_summary_names_the_failure_path_and_the_nodes_never_started():
    r = Run(deps={"s": [], "long": ["s"], "boom": ["s"], "after": ["long", "boom"]})
    r.start(0, "s").finish(0.01, "s").start(0.01, "long").start(0.01, "boom")
    r.finish(0.3, "boom", status="failed", action=None, error="exit 3")
    r.finish(0.301, "long", status="cancelled", action=None, error="cancelled")
    r.add(ev.RUN_FINISHED, 0.302, status="failed", outputs={}, error="x", failed_node="boom")
    s = feed(SummaryCollector(), r.sorted()).summary()
    assert [p["node"] for p in s["critical_path"]] == ["s", "boom"]  # not the cancelled sibling
    assert s["nodes"] == {"success": 1, "failed": 1, "cancelled": 1, "pending": 1}
    assert "4 nodes (" in format_summary(s).splitlines()[0]


def test_trace_that_cannot_be_written_warns_instead_of_failing(tmp_path: Path, capsys):
    (tmp_path / "file").write_text("x")
    tw = feed(TraceWriter(tmp_path / "file" / "t.json"), diamond_with_batch())  # parent is a file
    assert tw.error is not None and "cannot write trace" in tw.error
    assert "warning: cannot write trace" in capsys.readouterr().err
    assert spans_of(tw.to_dict())  # still available in memory (e.g. for --timeline)
