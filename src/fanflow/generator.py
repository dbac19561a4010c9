"""`fanflow generate`: ask an LLM for a workflow, with the authoring guide as its instructions,
validate the answer, and feed the problems back for a bounded number of repair rounds.

    result = fanflow.generate("fetch three URLs in parallel and summarise each", model="gpt-4o")
    result.workflow   # a dict that validates; result.rounds: LLM calls it took

The answer may come bare, in a markdown fence, or with prose around it: the first JSON object
that looks like a workflow (it has `nodes` or `pipeline`) is taken. Nothing is run here.
"""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow.errors import FanflowError, NodeError, WorkflowInvalid

DEFAULT_ROUNDS = 3

INSTRUCTIONS = """You write fanflow workflows. The guide below is the whole reference.

Answer with ONE workflow as a JSON object (the `nodes` + `edges` form or the `pipeline` form),
and nothing else: no prose, no comments. Declare every value the user must supply under
`inputs`, and what the user asked for under `outputs`. Let independent steps run in parallel:
no edge between steps that do not need each other's results; use batch for the same operation
over many items, and a `workflow` node batched over items when each item needs several steps.

"""

_FENCE = re.compile(r"```(?:json|JSON)?\s*\n(.*?)```", re.S)


class GenerateFailed(FanflowError):
    """No valid workflow within the rounds (exit 1): the last answer's problems are named."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, last: dict[str, Any] | None = None):
        super().__init__(message)
        self.hint = hint
        self.last = last  # the last workflow the model gave, if it gave one


@dataclass
class Generated:
    workflow: dict[str, Any]  # validates: fanflow.compile_workflow(workflow) succeeds; it has
    # an ir_version (0.1.0 when the model left it out)
    rounds: int  # LLM calls it took (1: the first answer was valid)
    model: str
    usage: dict[str, int] = field(default_factory=dict)
    repaired: list[list[str]] = field(default_factory=list)  # the problems fed back, per round


def generate(
    task: str,
    *,
    model: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    path: str | Path | None = None,
) -> Generated:
    """Blocking `generate_async`."""
    return asyncio.run(generate_async(task, model=model, rounds=rounds, path=path))


async def generate_async(
    task: str,
    *,
    model: str | None = None,
    rounds: int = DEFAULT_ROUNDS,
    path: str | Path | None = None,
) -> Generated:
    """Ask the model (`provider/model`, or a bare name as the llm node resolves it) for a
    workflow doing `task`; validate it as if saved at `path` (relative file names in it resolve
    from there); repair up to `rounds` answers in all. Raises GenerateFailed."""
    from fanflow.guide import build_guide
    from fanflow.io.providers import ChatRequest, new_provider, preflight_llm, resolve_model

    if not task.strip():
        raise GenerateFailed(
            "the task is empty", hint='describe the workflow: fanflow generate "…"'
        )
    missing = preflight_llm({"model": model})  # a key not set, a package not installed
    if missing:
        raise GenerateFailed(missing, hint="or use --model echo/… to try the command offline")
    provider_name, model_name = resolve_model(model)
    try:
        provider = new_provider(provider_name)
    except NodeError as exc:
        raise GenerateFailed(str(exc), hint="name the model as provider/model") from None
    system = INSTRUCTIONS + build_guide()
    messages = [{"role": "user", "content": f"Write a fanflow workflow for this task:\n\n{task}"}]
    usage: dict[str, int] = {}
    repaired: list[list[str]] = []
    last: dict[str, Any] | None = None
    try:
        for round_no in range(1, max(rounds, 1) + 1):
            req = ChatRequest(list(messages), system, model_name, temperature=0)
            try:
                text, used = await provider.chat(req)
            except NodeError as exc:  # the provider's error, already readable (keys redacted)
                raise GenerateFailed(f"the LLM call failed: {exc}") from None
            for k, v in used.items():
                usage[k] = usage.get(k, 0) + v
            doc = extract_workflow(text)
            if doc is not None and "ir_version" not in doc:
                doc = {"ir_version": "0.1.0", **doc}
            problems = check(doc, path) if doc is not None else [_NO_JSON]
            if doc is not None:
                last = doc
            if not problems:
                assert doc is not None
                return Generated(doc, round_no, f"{provider_name}/{model_name}", usage, repaired)
            repaired.append(problems)
            messages += [
                {"role": "assistant", "content": text or "(empty)"},
                {"role": "user", "content": _repair(problems)},
            ]
    finally:
        await provider.aclose()
    shown = "\n".join(f"  - {p}" for p in repaired[-1][:10])
    raise GenerateFailed(
        f"no valid workflow after {len(repaired)} answer(s); the last one's problems:\n{shown}",
        hint="describe the task more precisely, allow more --rounds, or try a stronger --model",
        last=last,
    )


_NO_JSON = (
    "the answer held no JSON workflow object: reply with only the JSON object "
    '(it has "nodes" or "pipeline")'
)


def extract_workflow(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` that looks like a workflow: fenced blocks first, then
    the text itself, then any `{…}` inside prose."""
    candidates = [m.group(1) for m in _FENCE.finditer(text)] + [text]
    decoder = json.JSONDecoder()
    for chunk in candidates:
        chunk = chunk.strip()
        start = chunk.find("{")
        while start >= 0:
            try:
                value, _ = decoder.raw_decode(chunk, start)
            except ValueError:
                value = None
            if isinstance(value, dict) and ("nodes" in value or "pipeline" in value):
                return value
            start = chunk.find("{", start + 1)
    return None


def check(doc: dict[str, Any], path: str | Path | None = None) -> list[str]:
    """Every problem `fanflow validate` would report, as lines (empty: it validates)."""
    from fanflow.compile.compiled import compile_workflow
    from fanflow.load.reader import parse_workflow

    doc = {"ir_version": "0.1.0", **doc}
    try:
        compile_workflow(parse_workflow(doc, str(path) if path is not None else None))
    except WorkflowInvalid as exc:
        return [_line(p) for p in exc.problems]
    return []


def _line(p: Any) -> str:
    where = ", ".join(x for x in (p.field, p.node and f"node '{p.node}'") if x)
    text = f"{where}: {p.message}" if where else p.message
    return f"{text} (hint: {p.hint})" if p.hint else text


def _repair(problems: list[str]) -> str:
    listed = "\n".join(f"- {p}" for p in problems)
    return (
        f"`fanflow validate` rejected that workflow:\n{listed}\n\n"
        "Fix every problem and answer with the whole corrected workflow as one JSON object, "
        "nothing else."
    )
