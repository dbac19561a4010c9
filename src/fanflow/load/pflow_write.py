"""Write a workflow as `.pflow.md` text (for `fanflow convert`): fanflow IR → pflow IR → markdown.

Every value is written in the first form that reads back to the same value under the reader's
rules (fanflow.load.pflow_md), so a round trip keeps meaning. Edges become document order where
they can, `- next:` / `- on-error:` otherwise; a fan-out (several default edges out of one step,
which pflow's markdown cannot say) is written in data order (`parallel: true`) when the data the
steps read implies exactly those edges, and refused otherwise.
"""

from __future__ import annotations

import json
import re
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]

from fanflow.errors import Problem, WorkflowInvalid
from fanflow.load import pflow_md

# Params written as a tagged code block when they hold several lines (pflow's own tags first).
_BLOCK_TAGS = {"command": "shell command", "code": "python code", "prompt": "prompt"}
# Top-level fanflow settings with no pflow spelling: kept under the frontmatter's `fanflow:`.
FANFLOW_SETTINGS = (
    "ir_version",
    "start_node",
    "limits",
    "max_concurrent",
    "on_error",
    "max_visits",
)
_NODE_FIELDS = ("batch", "loop", "retry", "cache", "prompt_cache", "prewarm", "approval")


class ConvertError(Exception):
    def __init__(self, message: str, node: str | None = None, hint: str | None = None):
        super().__init__(message)
        self.problem = Problem(message, node=node, hint=hint)


def fanflow_to_pflow(doc: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """fanflow IR dict → (pflow IR dict, frontmatter). `pipeline` documents must be normalised
    first (fanflow.load.pipeline.normalise_pipeline)."""
    nodes = []
    for node in doc.get("nodes", []):
        out = {k: v for k, v in node.items() if not k.startswith("_")}
        retry = out.get("retry")
        if isinstance(retry, dict) and "max_attempts" in retry:
            retry = dict(retry)
            retry["max"] = retry.pop("max_attempts")
            out["retry"] = retry
        nodes.append(out)
    ir: dict[str, Any] = {"nodes": nodes, "edges": list(doc.get("edges", []))}
    for key in ("inputs", "outputs"):
        if doc.get(key):
            ir[key] = doc[key]
    meta: dict[str, Any] = {}
    if doc.get("name"):
        meta["name"] = doc["name"]
    settings = {k: doc[k] for k in FANFLOW_SETTINGS if k in doc}
    if settings:
        meta["fanflow"] = settings
    if doc.get("description"):
        ir["_description"] = doc["description"]
    return ir, meta


def write_pflow_md(
    ir: dict[str, Any],
    *,
    title: str | None = None,
    description: str | None = None,
    metadata: dict[str, Any] | None = None,
    keep_edges: bool = False,
) -> str:
    """pflow IR dict → `.pflow.md` text. Raises ConvertError for what markdown cannot say;
    with `keep_edges`, routing it cannot say goes to the frontmatter's `fanflow.edges` instead."""
    meta = dict(metadata or {})
    nodes = ir["nodes"]
    try:
        routes, data_order = _routes(nodes, ir.get("edges", []))
    except ConvertError:
        if not keep_edges:
            raise
        # Routing pflow's markdown cannot say: the steps stay in document order in the markdown,
        # and fanflow reads the exact edges back from the frontmatter (docs/pflow.md).
        routes, data_order = {}, False
        meta["fanflow"] = {**meta.get("fanflow", {}), "edges": ir.get("edges", [])}
    if data_order:
        meta["parallel"] = True
    out: list[str] = []
    if meta:
        out += [
            "---",
            yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(),
            "---",
            "",
        ]
    heading = title or meta.get("name")
    if heading:
        out += [f"# {heading}", ""]
    desc = description or ir.get("_description")
    if desc:
        out += [*_prose(desc), ""]
    if ir.get("inputs"):
        out += ["## Inputs", ""]
        for name, spec in ir["inputs"].items():
            out += _entity(
                name, spec.get("description") or f"Input {name}.", _without(spec, "description")
            )
    if ir.get("cache"):
        out += _cache(ir["cache"])
    out += ["## Steps", ""]
    for node in nodes:
        node_id = node["id"]
        items: dict[str, Any] = {"type": node["type"]}
        items.update({k: node[k] for k in _NODE_FIELDS if k in node and not _is_block(k, node[k])})
        items.update(routes.get(node_id, {}))
        blocks = {k: node[k] for k in ("batch", "loop") if k in node and _is_block(k, node[k])}
        params = dict(node.get("params") or {})
        for key in params:
            if key in items or key in ("next", "on-error", "type", *_NODE_FIELDS):
                raise ConvertError(
                    f"parameter '{key}' has a name pflow's markdown reserves",
                    node=node_id,
                    hint="rename the parameter",
                )
        out += _entity(
            node_id, node.get("purpose") or f"Step {node_id}.", items, params, blocks, node_id
        )
    if ir.get("outputs"):
        out += ["## Outputs", ""]
        for name, spec in ir["outputs"].items():
            fields = {k: v for k, v in spec.items() if k != "description" and not k.startswith("_")}
            out += _entity(name, spec.get("description") or f"Output {name}.", fields)
    return "\n".join(out).rstrip() + "\n"


def _cache(cache: dict[str, Any]) -> list[str]:
    out = ["## Cache", ""]
    if cache.get("ttl"):
        out += [f"- ttl: {cache['ttl']}", ""]
    body = "".join(f"{it.get('prose_before', '')}${{{it['var']}}}" for it in cache["items"])
    return out + _fence("cache", body) + [""]


def _without(spec: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {k: v for k, v in spec.items() if k not in keys and not k.startswith("_")}


def _is_block(key: str, value: Any) -> bool:
    return key in ("batch", "loop") and isinstance(value, dict)


def _prose(text: str) -> list[str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    for ln in lines:
        if ln.startswith(("-", "#", "```", "~~~")):
            raise ConvertError(
                f"description line {ln!r} would read back as markdown structure",
                hint="reword the description so no line starts with '-', '#' or a fence",
            )
    return lines


def _entity(
    name: str,
    description: str,
    items: dict[str, Any],
    params: dict[str, Any] | None = None,
    blocks: dict[str, Any] | None = None,
    node: str | None = None,
) -> list[str]:
    out = [f"### {name}", "", *_prose(description), ""]
    fenced: list[str] = []
    for key, value in {**items, **(params or {})}.items():
        if isinstance(value, str) and "\n" in value and key not in ("type",):
            fenced += _fence(_BLOCK_TAGS.get(key, f"text {key}"), value)
        else:
            out += _item(key, value, node)
    for key, value in (blocks or {}).items():
        fenced += _fence(f"yaml {key}", yaml.safe_dump(value, sort_keys=False, allow_unicode=True))
    if fenced:
        out += ["", *fenced]
    return [*out, ""]


def _fence(tag: str, content: str) -> list[str]:
    longest = max((len(m) for m in re.findall(r"`{3,}", content)), default=2)
    fence = "`" * max(3, longest + 1)
    body = content[:-1] if content.endswith("\n") else content
    # The reader drops the newline before the closing fence; one more keeps a trailing newline.
    return [fence + tag, *body.split("\n"), *([""] if content.endswith("\n") else []), fence, ""]


def _item(key: str, value: Any, node: str | None) -> list[str]:
    candidates: list[str] = []
    if isinstance(value, str):
        candidates.append(f"- {key}: {value}")
    dumped = yaml.safe_dump({key: value}, sort_keys=False, allow_unicode=True, width=10**9)
    dumped = dumped.removesuffix("\n...\n").rstrip("\n")
    first, *rest = dumped.split("\n")
    candidates.append("\n".join([f"- {first}", *(f"  {ln}" if ln else ln for ln in rest)]))
    if isinstance(value, str):
        candidates.append(f"- {key}: {json.dumps(value)}")
    else:
        candidates.append(f"- {key}: {json.dumps(value)}")
    for text in candidates:
        if _reads_back(text, key, value):
            return text.split("\n")
    raise ConvertError(
        f"cannot write parameter '{key}' so that it reads back unchanged",
        node=node,
        hint="simplify the value (e.g. avoid special floats)",
    )


def _reads_back(text: str, key: str, value: Any) -> bool:
    probe = pflow_md._Entity("x", 1, "steps", prose=["x"])
    pflow_md._split_lines(text.split("\n"), 1, probe)
    try:
        got = pflow_md._params(probe)
    except (pflow_md.PflowMdError, ValueError, yaml.YAMLError):
        return False
    return list(got) == [key] and type(got[key]) is type(value) and got[key] == value


def _routes(
    nodes: list[dict[str, Any]], edges: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], bool]:
    """Per step, its `next` / `on-error` items; and whether data order is needed (a fan-out)."""
    ids = [n["id"] for n in nodes]
    out: dict[str, list[dict[str, Any]]] = {i: [] for i in ids}
    for e in edges:
        if "action" not in e and "from" in e:
            e = {**e, "action": "default"}
        out[e["from"]].append(e)
    fan = any(sum(1 for e in out[i] if e["action"] == "default") > 1 for i in ids)
    if not edges:  # fanflow: no edges = array order = pflow's document order
        return {}, False
    if fan:
        return _data_order_routes(nodes, edges)
    routes: dict[str, dict[str, Any]] = {}
    # pflow wants a step reached by a named or error route to say where it goes next.
    routed = {e["to"] for e in edges if e.get("action", "default") != "default"}
    for idx, node_id in enumerate(ids):
        mine = out[node_id]
        default = [e["to"] for e in mine if e["action"] == "default"]
        error = [e["to"] for e in mine if e["action"] == "error"]
        named = [e for e in mine if e["action"] not in ("default", "error")]
        r: dict[str, Any] = {}
        if named:
            targets = [e["to"] for e in named]
            if any(e["action"] != e["to"] for e in named) or default != targets[:1]:
                raise ConvertError(
                    "routes are written '- next: a, b', which means actions named after their "
                    "targets plus a default edge to the first",
                    node=node_id,
                    hint="rename the actions after their targets, or keep the workflow in JSON",
                )
            r["next"] = ", ".join(targets)
        elif default:
            following = ids[idx + 1] if idx + 1 < len(ids) else None
            if default[0] != following or node_id in routed:
                r["next"] = default[0]
        elif idx + 1 < len(ids) or node_id in routed:
            r["next"] = "end"
        if error:
            r["on-error"] = error[0]
        if r:
            routes[node_id] = r
    return routes, False


def _data_order_routes(
    nodes: list[dict[str, Any]], edges: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], bool]:
    ids = {n["id"] for n in nodes}
    routes: dict[str, dict[str, Any]] = {}
    for e in edges:
        if e.get("action", "default") != "default":
            raise ConvertError(
                "a workflow with a fan-out and conditional routes cannot be written as .pflow.md",
                node=e["from"],
                hint="keep this workflow in JSON",
            )
    for node in nodes:
        wanted = {e["from"] for e in edges if e["to"] == node["id"]}
        reads = pflow_md.node_reads(node, ids)
        if wanted != reads:
            missing = sorted(wanted - reads) or sorted(reads - wanted)
            raise ConvertError(
                f"the edges into '{node['id']}' differ from the data it reads ({', '.join(missing)}); "
                "a fan-out is written in data order, where the data is the only ordering",
                node=node["id"],
                hint="make each edge match a ${step...} reference, or keep the workflow in JSON",
            )
    return routes, True


def convert_problem(exc: ConvertError, file: str) -> WorkflowInvalid:
    p = exc.problem
    return WorkflowInvalid([Problem(p.message, file=file, node=p.node, hint=p.hint)])
