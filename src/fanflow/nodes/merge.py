"""merge: collect the outputs of several upstream nodes into one value (the fan-in of a fan-out).

The declared `inputs` are templates, so the dependencies stay explicit. Rendering loses where a
value came from, so this node's own `render_params` hook also records `sources`: for a list of
inputs, the id of the node each entry reads (None for an entry that reads no node); for a dict of
inputs, {name: node id}.

`strategy: "first"` is a race: `joins_on_first` tells the scheduler to start the merge as soon
as one upstream succeeds (and to cancel the upstream work nothing else needs); only the inputs
that have a value by then are rendered. When several are present (every upstream had already
finished), the first present one in declared order wins, so the result is still deterministic.
"""

from __future__ import annotations

import json
import re
from typing import Any

from fanflow import templates
from fanflow.errors import NodeError
from fanflow.nodes.base import Node, Param, ParamProblem, Scope

STRATEGIES = ("object", "list", "concat", "first")
SOURCES_PARAM = "sources"  # set by render_params, never by the author (not a declared param)
# The node a template entry reads first: `${fetch.response}` → "fetch" (static check only).
_FIRST_REF = re.compile(r"\$\{\s*([^.\[}\s]+)")


class MergeNode(Node):
    type_name = "merge"
    description = (
        "Join parallel branches into one value: an object by node id, a list, joined text, "
        "or the first to succeed (a race that cancels the others)."
    )
    params_spec = {
        "inputs": Param(
            type="any",
            required=True,
            description='What to merge: a list of templates (["${a.response}", "${b.response}"]) '
            'or an object of named templates ({"fr": "${fr.response}", "de": "${de.response}"}). '
            "Each template makes its node a dependency.",
        ),
        "strategy": Param(
            type="string",
            default="object",
            description="object: {node id (or the name in the dict form): value}; "
            "list: values in declared order; concat: values as text joined by `separator`; "
            "first: the first upstream to succeed wins and the other branches are cancelled.",
        ),
        "separator": Param(
            type="string", default="\n", description="Text placed between values for concat."
        ),
    }
    outputs_spec = {
        "result": "the merged value (object, list, text, or the winning value for first)",
        "winner": "first only: the id of the node whose value won",
    }
    actions = ("default", "error")

    @classmethod
    def joins_on_first(cls, params: dict[str, Any]) -> bool:
        return params.get("strategy") == "first"

    @classmethod
    def render_params(cls, compiled: Any, scope: Scope) -> dict[str, Any]:
        """Render the inputs and note the node each one reads (`sources`), since rendering loses
        where a value came from. For `first`, only the inputs that have a value are rendered:
        the engine starts the merge as soon as one upstream succeeds."""
        params = {k: templates.render(v, scope) for k, v in compiled.items() if k != "inputs"}
        inputs = compiled.get("inputs")
        race = params.get("strategy") == "first"
        if isinstance(inputs, dict):
            rendered = {k: _render(v, scope, race) for k, v in inputs.items()}
            params["inputs"] = {k: v for k, v in rendered.items() if v is not _ABSENT}
            params[SOURCES_PARAM] = {k: _source(inputs[k]) for k in params["inputs"]}
        elif isinstance(inputs, list):
            pairs = [(_render(v, scope, race), _source(v)) for v in inputs]
            kept = [(v, src) for v, src in pairs if v is not _ABSENT]
            params["inputs"] = [v for v, _ in kept]
            params[SOURCES_PARAM] = [src for _, src in kept]
        else:
            params["inputs"] = templates.render(inputs, scope)
        return params

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        """Static checks the generic param validation cannot express (returns messages)."""
        problems: list[str | ParamProblem] = []
        strategy = params.get("strategy", "object")
        if strategy not in STRATEGIES:
            problems.append(
                f"unknown merge strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        inputs = params.get("inputs")
        if not isinstance(inputs, list | dict):
            problems.append("merge 'inputs' must be a list of templates or an object of templates")
        elif not inputs:
            problems.append("merge 'inputs' is empty: name at least one upstream value")
        elif isinstance(inputs, list) and strategy == "object":
            seen: set[str] = set()
            for entry in inputs:
                match = _FIRST_REF.search(entry) if isinstance(entry, str) else None
                if match and match.group(1) in seen:
                    problems.append(
                        f"merge 'object': two inputs read node {match.group(1)!r}, so keying by "
                        "node id would lose one; use the object form of 'inputs' to name them"
                    )
                elif match:
                    seen.add(match.group(1))
        return problems  # `separator` is typed in params_spec

    def exec(self, prep_res: Any) -> dict[str, Any]:
        params = prep_res if isinstance(prep_res, dict) else self.params
        strategy = params.get("strategy") or "object"
        if strategy not in STRATEGIES:
            raise NodeError(
                f"unknown merge strategy {strategy!r}; expected one of {', '.join(STRATEGIES)}"
            )
        names, values, sources = _entries(params.get("inputs"), params.get(SOURCES_PARAM))

        if strategy == "first":
            for name, value, source in zip(names, values, sources, strict=True):
                if value is not None:
                    return {"result": value, "winner": source if source is not None else name}
            raise NodeError("merge 'first': no upstream produced a value")
        if strategy == "list":
            return {"result": values}
        if strategy == "concat":
            separator = params.get("separator")
            separator = "\n" if separator is None else str(separator)
            # None is an absent value (e.g. a branch that failed under on_error: continue).
            return {"result": separator.join(_as_text(v) for v in values if v is not None)}
        return {"result": _keyed(names, values)}


_ABSENT = object()


def _render(value: Any, scope: Scope, race: bool) -> Any:
    if not race:
        return templates.render(value, scope)
    try:
        return templates.render(value, scope)
    except templates.MissingValue:
        return _ABSENT  # that branch has not finished (or lost): the race goes on without it


def _source(value: Any) -> str | None:
    refs = value.refs() if isinstance(value, templates.Template) else []
    return refs[0].root if refs else None


def _entries(inputs: Any, sources: Any) -> tuple[list[str], list[Any], list[str | None]]:
    """Normalise both input forms to parallel lists: (names, values, source node ids).

    For the list form a name is the source node id when known, else the position ("0", "1").
    """
    if isinstance(inputs, dict):
        src = sources if isinstance(sources, dict) else {}
        names = [str(k) for k in inputs]
        return names, list(inputs.values()), [src.get(k) for k in inputs]
    if isinstance(inputs, list):
        src_list = list(sources) if isinstance(sources, list) else []
        src_list += [None] * (len(inputs) - len(src_list))
        srcs = [s if isinstance(s, str) else None for s in src_list[: len(inputs)]]
        names = [s if s is not None else str(i) for i, s in enumerate(srcs)]
        return names, list(inputs), srcs
    raise NodeError(
        "merge 'inputs' must be a list of templates or an object of templates, "
        f"got {type(inputs).__name__}"
    )


def _keyed(names: list[str], values: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, value in zip(names, values, strict=True):
        if name in out:
            raise NodeError(
                f"merge 'object': two inputs read node {name!r}, so keying by node id would lose "
                'one of them; name them with the object form: {"a": "${x.y}", "b": "${x.z}"}'
            )
        out[name] = value
    return out


def _as_text(value: Any) -> str:
    # Same rendering as a template embedded in text: structures as JSON, the rest as str().
    if isinstance(value, str):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False)
    return json.dumps(value) if isinstance(value, bool) else str(value)
