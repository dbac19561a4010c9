"""Typed params and edge actions, checked before anything runs (docs/engine.md, "Params and
edges").

A node type declares its params (`params_spec`: `Param(type, required, default, description,
items, gt, ge)`) and the actions it can emit (`actions`). A literal param value of the wrong type
is a validation error; a value holding a `${…}` template is checked after rendering, at run
time, with the same message (`checked_render` wraps the type's `render_params` hook). Literals
are never coerced; text rendered from a template is, when it spells the expected type in JSON
(`"5"` → 5, `"false"` → false, `'{"a": 1}'` → an object).
"""

from __future__ import annotations

import json
import math
import shlex
from collections.abc import Callable, Iterable
from typing import Any

from fanflow import templates
from fanflow.compile.graph import local_names
from fanflow.errors import NodeError, Problem
from fanflow.load.model import Workflow
from fanflow.nodes.base import Param, ParamProblem, Scope

Render = Callable[[Any, Scope], dict[str, Any]]

_A = {"integer": "an integer", "object": "an object", "array": "an array"}
_EXAMPLE = {
    "string": 'a string such as "text"',
    "number": "a number such as 30",
    "integer": "a whole number such as 3",
    "boolean": "true or false",
    "object": 'an object such as {"name": "value"}',
    "array": 'an array such as ["a", "b"]',
}
_NO = object()


# --------------------------------------------------------------------------- one value


def _fits(kinds: Iterable[str], value: Any) -> bool:
    for kind in kinds:
        if kind == "any":
            return True
        if kind == "string" and isinstance(value, str):
            return True
        if kind == "boolean" and isinstance(value, bool):
            return True
        if kind in ("number", "integer") and isinstance(value, int | float):
            if isinstance(value, bool) or not math.isfinite(value):
                continue
            if kind == "number" or isinstance(value, int) or value.is_integer():
                return True
        if kind == "object" and isinstance(value, dict):
            return True
        if kind == "array" and isinstance(value, list):
            return True
    return False


def _from_text(kinds: Iterable[str], text: str) -> Any:
    """The value `text` spells in JSON when it has one of `kinds`, else _NO."""
    try:
        value = json.loads(text)
    except ValueError:
        return _NO
    return value if not isinstance(value, str) and _fits(kinds, value) else _NO


def _expected(kinds: tuple[str, ...]) -> str:
    words = [_A.get(k, f"a {k}") for k in kinds]
    return words[0] + "".join(f" or {w.split(' ', 1)[1]}" for w in words[1:])


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {json.dumps(value)}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        shown = value if len(value) <= 60 else value[:57] + "..."
        return f"string {json.dumps(shown, ensure_ascii=False)}"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def _hint(kinds: tuple[str, ...], value: Any, param: Param | None, name: str) -> str | None:
    if isinstance(value, str) and _from_text(kinds, value.strip()) is not _NO:
        return f"write {value.strip()} without quotes"
    if kinds == ("string",):
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return f"write it as one string, e.g. {json.dumps(shlex.join(value))}"
        if isinstance(value, int | float):
            return f"write {json.dumps(json.dumps(value))} (in quotes)"
    example = _EXAMPLE.get(kinds[0]) if len(kinds) == 1 else None
    about = f"'{name}' is {param.description}" if param and param.description else None
    return "; ".join(filter(None, (f"write {example}" if example else None, about))) or None


def check_value(
    name: str,
    param: Param,
    value: Any,
    *,
    rendered: bool = False,
    label: str | None = None,
) -> tuple[Any, ParamProblem | None]:
    """One value against its declared type and range: (the value, None) or (it, the problem).
    `rendered`: the value came from a template, so text that spells the type is coerced.
    An optional param given null takes its default."""
    label = label or f"parameter '{name}'"
    if value is None and not param.required:
        return None, None
    kinds = (param.type,)
    if not _fits(kinds, value):
        coerced = _from_text(kinds, value.strip()) if rendered and isinstance(value, str) else _NO
        if coerced is _NO:
            message = f"{label} must be {_expected(kinds)}, got {_got(value)}"
            return value, ParamProblem(message, name, _hint(kinds, value, param, name))
        value = coerced
    if isinstance(value, int | float) and not isinstance(value, bool):
        if param.gt is not None and not value > param.gt:
            bound = f"greater than {param.gt:g}"
        elif param.ge is not None and not value >= param.ge:
            bound = f"at least {param.ge:g}"
        else:
            return value, None
        hint = f"'{name}' is {param.description}" if param.description else None
        return value, ParamProblem(f"{label} must be {bound}, got {value!r}", name, hint)
    return value, None


def check_param(
    name: str, param: Param, compiled: Any, value: Any = _NO
) -> tuple[Any, list[ParamProblem]]:
    """A param as written (`compiled`, templates parsed: those are skipped) or, given `value`,
    as rendered from it. Returns the value (coerced) and the problems, its items' included."""
    static = value is _NO
    if static:
        if isinstance(compiled, templates.Template):
            return compiled, []  # checked once rendered
        value = compiled
    whole = isinstance(compiled, templates.Template)
    value, problem = check_value(name, param, value, rendered=whole)
    if problem is not None:
        return value, [_from(problem, compiled) if whole else problem]
    if not param.items or not isinstance(value, dict | list):
        return value, []
    problems = []
    pairs = value.items() if isinstance(value, dict) else enumerate(value)
    for key, item in pairs:
        # Where the item came from: the whole value's template, or its own entry.
        source = compiled if whole else _entry(compiled, key)
        if static and isinstance(item, templates.Template):
            continue
        if not _fits(param.items, item):
            path = f"{name}.{key}" if isinstance(value, dict) else f"{name}[{key}]"
            message = f"parameter '{path}' must be {_expected(param.items)}, got {_got(item)}"
            found = ParamProblem(message, path, _hint(param.items, item, None, path))
            problems.append(_from(found, source) if not static else found)
    return value, problems


def _entry(compiled: Any, key: Any) -> Any:
    if isinstance(compiled, dict):
        return compiled.get(key)
    if isinstance(compiled, list) and isinstance(key, int) and key < len(compiled):
        return compiled[key]
    return None


def _from(problem: ParamProblem, source: Any) -> ParamProblem:
    """The problem of a rendered value, naming the template it was rendered from."""
    if not isinstance(source, templates.Template):
        return problem
    text = "".join(p if isinstance(p, str) else f"${{{p.text}}}" for p in source.parts)
    return ParamProblem(f"{problem.message} (from {text})", problem.param, problem.hint)


def _spec(cls: Any) -> dict[str, Param]:
    """The class's declared params as Param (a user class may declare plain dicts); worked out
    once per class and spec object (a class given a new spec is read again)."""
    declared = getattr(cls, "params_spec", None) or {}
    cached = _SPECS.get(cls)
    if cached is None or cached[0] is not declared:
        cached = _SPECS[cls] = (declared, _read_spec(declared))
    return cached[1]


_SPECS: dict[Any, tuple[dict[str, Any], dict[str, Param]]] = {}


def _read_spec(declared: dict[str, Any]) -> dict[str, Param]:
    spec: dict[str, Param] = {}
    for key, decl in declared.items():
        if isinstance(decl, Param):
            spec[key] = decl
        elif isinstance(decl, dict):
            try:
                spec[key] = Param(**decl)
            except TypeError:
                continue
    return spec


# --------------------------------------------------------------------------- at run time


_FAST: dict[str, tuple[type, ...]] = {
    "string": (str,), "boolean": (bool,), "object": (dict,), "array": (list,),
    "number": (int, float), "integer": (int,),
}  # fmt: skip


def _low(param: Param) -> float | None:
    """A value above this is within the param's bounds (None: unbounded)."""
    bounds = [b for b in (param.gt, param.ge) if b is not None]
    return max(bounds) if bounds else None


def checked_render(cls: Any, render: Render, compiled: dict[str, Any]) -> Render:
    """`render` followed by the type check of every declared param that holds a template (the
    others were checked by validation). Returns `render` itself when there is none. A problem
    raises NodeError, a failure of the node (or of the batch item) like any other."""
    spec = _spec(cls)
    keys = [k for k in spec if k in compiled and templates.has_templates(compiled[k])]
    if not keys:
        return render
    keys = [k for k in keys if spec[k].type != "any" or spec[k].items]
    # The common case costs one type lookup: a value of exactly the declared Python type, for
    # a param with no item types, within its bounds, is fine as it is.
    fast = {k: () if spec[k].items else _FAST.get(spec[k].type, ()) for k in keys}
    low = {k: _low(spec[k]) for k in keys}

    def checked(params_compiled: Any, scope: Scope) -> dict[str, Any]:
        params = render(params_compiled, scope)
        for key in keys:
            got: Any = params.get(key)
            bound = low[key]
            if type(got) in fast[key] and (bound is None or bound < got < math.inf):
                continue
            value, problems = check_param(key, spec[key], compiled[key], got)
            if problems:
                raise NodeError(problems[0].message)
            params[key] = value
        return params

    return checked


# --------------------------------------------------------------------------- the workflow


def check_declarations(
    workflow: Workflow,
    classes: dict[str, Any],
    parsed: dict[str, Any],
    parsed_items: dict[str, Any],
) -> list[Problem]:
    """Typed params, input defaults, edge actions, duplicate edges and start_node without edges.
    `classes`: node id → class (unknown types left out); `parsed` / `parsed_items`: node id →
    compiled params / batch items (nodes whose templates did not parse left out)."""
    file = workflow.source
    problems: list[Problem] = []
    add = problems.append
    for i, node in enumerate(workflow.nodes):
        spec = _spec(classes.get(node.id))
        compiled = parsed.get(node.id)
        if not spec or not isinstance(compiled, dict):
            continue
        for key, value in compiled.items():
            if key in spec:
                for p in check_param(key, spec[key], value)[1]:
                    add(Problem(p.message, file, f"nodes[{i}].params.{p.param}", node.id, p.hint))

    for name, inp in workflow.inputs.items():
        if inp.default is None or inp.type == "any":
            continue
        label = f"default of input '{name}'"
        _, found = check_value(name, Param(inp.type), inp.default, label=label)
        if found is not None:
            add(Problem(found.message, file, f"inputs.{name}.default", None, found.hint))

    problems += _edge_problems(workflow, classes)
    problems += _start_problems(workflow, parsed, parsed_items)
    return problems


def _edge_problems(workflow: Workflow, classes: dict[str, Any]) -> list[Problem]:
    file = workflow.source
    nodes = {n.id: n for n in workflow.nodes}
    problems = []
    seen: dict[tuple[str, str, str], int] = {}
    for i, edge in enumerate(workflow.edges):
        node, cls = nodes.get(edge.from_), classes.get(edge.from_)
        if node is None or cls is None:
            continue  # an unknown node or type: reported already
        actions = ("default", "error") if node.batch else getattr(cls, "actions", None)
        if actions is not None:
            emits = [*actions, *(() if "error" in actions else ("error",))]
            label = f"{node.type}, batch" if node.batch else node.type
            if edge.action not in emits:
                import difflib  # only when there is something to suggest

                close = difflib.get_close_matches(edge.action, emits, n=1, cutoff=0.6)
                message = f"node '{edge.from_}' ({label}) never emits action '{edge.action}'"
                hint = (
                    "a batch node's action is default (or error)"
                    if node.batch
                    else f"{node.type} emits: {', '.join(emits)}"
                )
                problems.append(Problem(
                    message + (f"; did you mean '{close[0]}'?" if close else ""),
                    file, f"edges[{i}].action", edge.from_, hint,
                ))  # fmt: skip
        key = (edge.from_, edge.to, edge.action)
        if key in seen and workflow._pipeline_paths is None:
            problems.append(Problem(
                f"edge {edge.from_} → {edge.to} (action '{edge.action}') repeats "
                f"edges[{seen[key]}]", file, f"edges[{i}]", edge.from_, "remove one of them",
            ))  # fmt: skip
        seen.setdefault(key, i)
    return problems


def _start_problems(
    workflow: Workflow, parsed: dict[str, Any], parsed_items: dict[str, Any]
) -> list[Problem]:
    """Without edges, start_node runs first, so it cannot read another node."""
    start = workflow.start_node
    if not start or workflow.edges or workflow._pipeline_paths is not None:
        return []
    ids = {n.id for n in workflow.nodes}
    spec = next((n for n in workflow.nodes if n.id == start), None)
    local = local_names(spec) if spec is not None else set()
    reads = sorted({
        ref.root
        for compiled in (parsed.get(start), parsed_items.get(start))
        for _path, ref in templates.iter_refs(compiled)
        if ref.root in ids and ref.root != start and ref.root not in local
    })  # fmt: skip
    if not reads:
        return []
    return [Problem(
        f"start_node '{start}' reads '{reads[0]}', so it cannot run first", workflow.source,
        "start_node", start,
        "without edges the nodes run in array order, a node after those it reads; "
        "remove start_node or add edges",
    )]  # fmt: skip
