"""llm response cache (on disk next to the run store), token usage and estimated cost, images,
and ollama routing, against the loopback mock."""

from __future__ import annotations

import json
from typing import Any

import pytest

import fanflow
from conftest import point_llm_at, run_cli, wf
from fanflow.io.prices import estimate_cost, price_of


@pytest.fixture
def mock(server, monkeypatch):
    point_llm_at(server, monkeypatch, anthropic=True)
    for var in ("FANFLOW_LLM_MODEL", "FANFLOW_LIMITS", "FANFLOW_LLM_CACHE", "FANFLOW_PRICES"):
        monkeypatch.delenv(var, raising=False)
    return server


def batch(prompt: str, n: int, **params: Any) -> dict[str, Any]:
    return {"id": "ask", "type": "llm", "params": {"prompt": prompt, **params},
            "batch": {"items": list(range(n)), "parallel": True}}  # fmt: skip


OUT = {"r": {"source": "${ask.results}"}}


def test_rerun_hits_the_cache_and_a_changed_prompt_misses(mock, tmp_path):
    store = tmp_path / "store"
    store.mkdir()  # a folder names the store's folder; the cache lives beside runs.db
    doc = wf([batch("q ${item}", 4)], outputs=OUT)
    first = fanflow.run(doc, store=store, summary=True)
    assert first.ok, first.error
    assert mock.stats()["total"] == 4
    assert list((store / "llm-cache").rglob("*.json"))  # next to the run store
    mock.reset()
    again = fanflow.run(doc, store=store, summary=True)
    assert again.ok
    assert mock.stats()["total"] == 0
    assert [r["response"] for r in again.outputs["r"]] == [
        r["response"] for r in first.outputs["r"]
    ]
    assert all(r["llm_usage"]["cached"] for r in again.outputs["r"])
    assert again.summary["llm"]["cached"] == 4 and again.summary["llm"]["cost_usd"] == 0.0
    assert "4 cached" in again.summary_text
    changed = fanflow.run(wf([batch("Q ${item}", 4)], outputs=OUT), store=store)
    assert changed.ok and mock.stats()["total"] == 4  # a new prompt is a miss


def test_schema_is_part_of_the_key_and_cache_can_be_switched_off(mock, tmp_path):
    store = tmp_path / "store"
    doc = wf([batch("- a ${item}", 2)], outputs=OUT)
    assert fanflow.run(doc, store=store).ok
    schema = wf([batch("- a ${item}", 2, output_schema={"x": "string[]"})], outputs=OUT)
    assert fanflow.run(schema, store=store).ok
    assert mock.stats()["total"] == 4
    assert fanflow.run(doc, store=store, cache=False).ok  # per run (--no-cache)
    assert mock.stats()["total"] == 6
    off = wf([batch("- a ${item}", 2, cache=False)], outputs=OUT)  # per node
    assert fanflow.run(off, store=store).ok
    assert mock.stats()["total"] == 8
    assert fanflow.run(doc, store=store).ok  # still cached
    assert mock.stats()["total"] == 8


def test_cost_per_node_and_run_in_the_json_output(mock, write_wf):
    doc = wf([batch("one two three ${item}", 3)], outputs={"n": {"source": "${ask.count}"}})
    res = run_cli("run", str(write_wf(doc)), "--output-format", "json",
                  env={"FANFLOW_LLM_CACHE": "0"})  # fmt: skip
    assert res.code == 0, res.stderr
    llm = res.json["summary"]["llm"]
    # the mock counts words: 4 in, 5 out ("echo: one two three N") per call
    expected = 3 * estimate_cost("openai", "gpt-4o-mini", 4, 5)
    assert llm["calls"] == 3 and llm["input_tokens"] == 12 and llm["output_tokens"] == 15
    assert llm["cost_usd"] == pytest.approx(expected)
    assert llm["by_node"]["ask"]["cost_usd"] == pytest.approx(expected)
    assert "est. $" in res.stderr


def test_unknown_model_says_cost_unknown_and_a_table_can_override(mock, write_wf, tmp_path):
    doc = wf([{"id": "ask", "type": "llm", "params": {"prompt": "hi", "model": "my-local-model"}}])
    path = str(write_wf(doc))
    res = run_cli("run", path, "--output-format", "json", env={"FANFLOW_LLM_CACHE": "0"})
    assert res.code == 0, res.stderr
    assert res.json["summary"]["llm"]["cost_unknown"] == ["my-local-model"]
    assert "cost unknown (my-local-model)" in res.stderr
    prices = tmp_path / "prices.json"
    prices.write_text(json.dumps({"my-local-model": {"input": 1000000, "output": 0}}))
    res = run_cli("run", path, "--output-format", "json",
                  env={"FANFLOW_LLM_CACHE": "0", "FANFLOW_PRICES": str(prices)})  # fmt: skip
    assert res.json["summary"]["llm"]["cost_usd"] == pytest.approx(1.0)  # 1 token in x $1


def test_price_lookup():
    assert price_of("openai", "gpt-4o-mini-2024-07-18") == price_of("openai", "gpt-4o-mini")
    assert price_of("openai", "gpt-4o-2024-08-06") == price_of("openai", "gpt-4o")
    assert price_of("openai", "nobody-knows") is None
    assert estimate_cost("echo", "echo", 100, 100) == 0.0


def test_images_reach_openai_and_anthropic(mock, tmp_path):
    img = tmp_path / "pic.png"
    img.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    images = [str(img), "https://example.com/cat.jpg"]
    for model in ("gpt-4o", "anthropic/claude-haiku-4-5"):
        doc = wf([{"id": "v", "type": "llm",
                   "params": {"prompt": "describe", "model": model, "images": images}}])  # fmt: skip
        res = fanflow.run(doc, cache=False)
        assert res.ok, res.error
    assert [r["images"] for r in mock.stats()["requests"]] == [2, 2]


def test_missing_image_and_bad_format_are_clear(mock, tmp_path, write_wf):
    res = fanflow.run(wf([{"id": "v", "type": "llm",
                           "params": {"prompt": "d", "images": [str(tmp_path / "no.png")]}}]))  # fmt: skip
    assert not res.ok and "cannot read image" in res.error
    bad = wf([{"id": "v", "type": "llm", "params": {"prompt": "d", "images": ["a.bmp"]}}])
    out = run_cli("validate", str(write_wf(bad)))
    assert out.code == 2 and "unsupported format" in out.stderr


def test_ollama_prefix_routes_to_the_ollama_url(mock, monkeypatch):
    monkeypatch.setenv("OLLAMA_BASE_URL", mock.url + "/v1")
    monkeypatch.delenv("OPENAI_API_KEY")
    doc = wf([{"id": "o", "type": "llm", "params": {"prompt": "hi", "model": "ollama/llama3.2"}}],
             outputs={"u": {"source": "${o.llm_usage}"}})  # fmt: skip
    res = fanflow.run(doc, cache=False)
    assert res.ok, res.error
    assert res.outputs["u"]["provider"] == "ollama"
    assert mock.stats()["requests"][0]["model"] == "llama3.2"


def test_cache_hits_show_in_progress_and_trace(mock, tmp_path):
    import io

    store = tmp_path / "store"
    store.mkdir()
    single = {"id": "one", "type": "llm", "params": {"prompt": "single question"}}
    doc = wf([batch("q ${item}", 3), single], outputs=OUT)
    first_progress = io.StringIO()
    assert fanflow.run(doc, store=store, progress=first_progress).ok
    assert "cached" not in first_progress.getvalue()
    progress, trace = io.StringIO(), tmp_path / "trace.json"
    again = fanflow.run(doc, store=store, progress=progress, trace=trace)
    assert again.ok and mock.stats()["total"] == 4  # only the first run reached the server
    lines = progress.getvalue().splitlines()
    assert any(line.startswith("ask 3/3") and line.endswith("(3 cached)") for line in lines)
    assert any(" one " in f" {line} " and line.endswith(" cached") for line in lines), lines
    events = json.loads(trace.read_text())["traceEvents"]
    spans = [e for e in events if e.get("ph") == "X" and e.get("cat") in ("node", "item")]
    cached = {e["name"] for e in spans if e["args"].get("cached") is True}
    assert cached == {"one", "ask[0]", "ask[1]", "ask[2]"}, spans
    plain = fanflow.run(doc, store=store, trace=tmp_path / "t2.json", cache=False)
    events = json.loads((tmp_path / "t2.json").read_text())["traceEvents"]
    assert plain.ok and not any(e.get("args", {}).get("cached") for e in events)
