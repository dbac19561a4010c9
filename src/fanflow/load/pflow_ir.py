"""pflow's IR (as pflow's own parser emits it, and as `fanflow.load.pflow_md` reads it from a
`.pflow.md` file) → a fanflow workflow document.

fanflow's format keeps pflow's keys with pflow's meaning (DESIGN.md), so most of a pflow IR
passes through as it is. What differs:

- parser bookkeeping (`_source_line(s)`, `_source_files`, `_routes_to_end`) and pflow-only
  top-level keys (`enable_namespacing`, `template_resolution_mode`, an empty `mappings`, the
  `cache` prompt-cache block) are dropped: they change nothing fanflow does;
- node `retry: {max, wait, backoff}` becomes fanflow's `{max_attempts, wait, backoff}`, with
  pflow's defaults (fixed backoff, no wait);
- node `cache` on an llm node becomes the llm param `cache` (fanflow's response cache);
  `prompt_cache` and `prewarm` (provider-side prompt caching) are dropped, each with a warning
  that says so;
- input `stdin` is dropped here (the CLI routes piped data to that input); output `stdout` is
  fanflow's too (the CLI prints that output alone, raw);
- node `loop:` is fanflow's too (docs/engine.md, "Node loops");
- what fanflow cannot run yet is refused before anything runs, with the node named:
  `approval:` gates and non-empty `mappings`.

The behaviour table and what is not supported: docs/pflow.md.
"""

from __future__ import annotations

from typing import Any

from fanflow.errors import Problem, WorkflowInvalid

_BOOKKEEPING = ("_source_line", "_source_lines", "_source_files", "_routes_to_end")
_DROPPED_TOP = ("enable_namespacing", "template_resolution_mode", "cache")
_DROPPED_NODE = ("prompt_cache", "prewarm")
_UNSUPPORTED = {
    "approval": "approval gates (`approval: required`) are not supported: fanflow does not pause "
    "a run for a person; remove the key or split the workflow in two",
}


def is_pflow_ir(doc: dict[str, Any]) -> bool:
    """Whether a JSON document holds something only pflow's IR has (fanflow's own format also
    has `ir_version`, so that alone says nothing)."""
    if any(k in doc for k in (*_DROPPED_TOP, "mappings")):
        return True
    nodes = doc.get("nodes")
    if not isinstance(nodes, list):
        return False
    keys = {*_BOOKKEEPING, *_DROPPED_NODE, *_UNSUPPORTED}
    for node in nodes:
        if isinstance(node, dict) and (keys & node.keys() or _pflow_retry(node.get("retry"))):
            return True
    return False


def _pflow_retry(retry: Any) -> bool:
    return isinstance(retry, dict) and "max" in retry and "max_attempts" not in retry


def from_pflow_ir(
    doc: dict[str, Any], file: str | None, notes: list[str] | None = None
) -> dict[str, Any]:
    """Translate; raises WorkflowInvalid naming each node that uses what fanflow cannot run.
    What is accepted but has no effect in fanflow is said in `notes` (run warnings)."""
    problems: list[Problem] = []
    notes = [] if notes is None else notes
    if doc.get("cache"):
        notes.append("the top-level prompt-cache block `cache` has no effect: fanflow does no "
                     "provider-side prompt caching (its llm response cache is on by default)")  # fmt: skip
    out = {k: v for k, v in doc.items() if k not in _DROPPED_TOP}
    out.setdefault("ir_version", "0.1.0")  # the markdown form has none
    mappings = out.pop("mappings", None)
    if mappings:
        problems.append(Problem("pflow's legacy `mappings` are not supported", file, "mappings",
                                hint="read the values with ${node.key} templates instead"))  # fmt: skip
    if isinstance(out.get("inputs"), dict):
        out["inputs"] = {
            name: _without(spec, ("stdin", *_BOOKKEEPING)) for name, spec in out["inputs"].items()
        }
    if isinstance(out.get("outputs"), dict):
        out["outputs"] = {name: _without(o, _BOOKKEEPING) for name, o in out["outputs"].items()}
    if isinstance(out.get("nodes"), list):
        out["nodes"] = [_node(n, i, file, problems, notes) for i, n in enumerate(out["nodes"])]
    if problems:
        raise WorkflowInvalid(problems)
    return out


def _without(value: Any, keys: tuple[str, ...]) -> Any:
    return {k: v for k, v in value.items() if k not in keys} if isinstance(value, dict) else value


def _node(
    node: Any, index: int, file: str | None, problems: list[Problem], notes: list[str]
) -> Any:
    if not isinstance(node, dict):
        return node  # the schema check reports it
    out = _without(node, (*_BOOKKEEPING, *_DROPPED_NODE))
    node_id = node.get("id") if isinstance(node.get("id"), str) else None
    if node.get("prompt_cache"):
        notes.append(f"node '{node_id}': `prompt_cache` has no effect (no provider-side prompt "
                     "caching in fanflow)")  # fmt: skip
    if node.get("prewarm"):
        notes.append(f"node '{node_id}': `prewarm` has no effect: fanflow starts every batch item "
                     "at once, with no cache-warming first call")  # fmt: skip
    if node.get("cache") is True and node.get("type") != "llm":
        notes.append(f"node '{node_id}': `cache: true` has no effect: fanflow caches llm "
                     "responses only")  # fmt: skip
    for key, message in _UNSUPPORTED.items():
        if key in out:
            problems.append(Problem(message, file, f"nodes[{index}].{key}", node_id))
    cache = out.pop("cache", None)
    if cache is False and out.get("type") == "llm":
        out["params"] = {**(out.get("params") or {}), "cache": False}
    retry = out.get("retry")
    if _pflow_retry(retry):
        unknown = set(retry) - {"max", "wait", "backoff"}
        if unknown:
            problems.append(Problem(f"unknown retry key '{sorted(unknown)[0]}'", file,
                                    f"nodes[{index}].retry", node_id,
                                    "pflow's retry takes max, wait and backoff"))  # fmt: skip
        out["retry"] = {
            "max_attempts": retry["max"],
            "wait": retry.get("wait", 0),
            "backoff": retry.get("backoff", "fixed"),
            "max_wait": 60.0,  # pflow clamps each wait to 60 s
        }
    return out
