"""The `pipeline` form: an ordered list of steps, where a step is a node or a `{"parallel": [...]}`
block, normalised into the plain `nodes` + `edges` graph so that every later stage (validation,
plan, scheduler, trace, resume) sees one model.

    "pipeline": [
      {"id": "fetch", ...},
      {"parallel": [
        {"id": "fr", ...},                               # a branch of one node
        [{"id": "de", ...}, {"id": "de_check", ...}],    # a branch that is a sequential sub-chain
        {"parallel": [{"id": "x", ...}, {"id": "y", ...}]}  # a nested block
      ]},
      {"id": "combine", ...}
    ]

Each step's exits are connected to the next step's entries. A node is its own entry and exit; a
block's entries are the entries of all its branches and its exits the exits of all its branches; a
sub-chain's entries are those of its first step and its exits those of its last.

Pure dict → dict: nothing here depends on the IR model, so the loader can run it before
schema validation and `fanflow plan --normalised` can print its result as it is.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from fanflow.errors import Problem, WorkflowInvalid

# Keys a parallel block may carry besides "parallel": documentation only, dropped on normalising.
_BLOCK_DOC_KEYS = frozenset({"purpose"})

_SHAPE_HINT = (
    'a pipeline step is a node object ({"id": ..., "type": ..., "params": ...}), '
    'a {"parallel": [...]} block, or (inside a block) a list of steps run one after another'
)


@dataclass
class _Walk:
    file: str | None
    nodes: list[dict[str, Any]] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)  # paths[i] = pipeline path of nodes[i]
    edges: list[tuple[str, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    def problem(self, message: str, path: str, hint: str | None = None) -> None:
        self.problems.append(Problem(message, file=self.file, field=path, hint=hint))

    def connect(self, exits: list[str], entries: list[str]) -> None:
        for src in exits:
            for dst in entries:
                self.edges.append((src, dst))

    def chain(self, steps: list[Any], path: str) -> tuple[list[str], list[str]]:
        """Walk a sequence; return (entries, exits) of the whole sequence."""
        entries: list[str] = []
        exits: list[str] = []
        for i, step in enumerate(steps):
            step_entries, step_exits = self.step(step, f"{path}[{i}]")
            if i == 0:
                entries = step_entries
            else:
                self.connect(exits, step_entries)
            # A broken step yields no ids (its problem is recorded and normalising will fail);
            # keep the previous exits so that walking on reports only the later steps' own problems.
            if step_exits or i == 0:
                exits = step_exits
        return entries, exits

    def step(self, step: Any, path: str) -> tuple[list[str], list[str]]:
        if isinstance(step, list):
            if not step:
                self.problem(
                    "empty sub-chain", path, hint="a list inside a pipeline needs at least one step"
                )
                return [], []
            return self.chain(step, path)
        if not isinstance(step, dict):
            self.problem(
                f"expected a node or a parallel block, got {_kind(step)}", path, hint=_SHAPE_HINT
            )
            return [], []
        if "parallel" in step:
            return self.block(step, path)
        return self.node(step, path)

    def block(self, step: dict[str, Any], path: str) -> tuple[list[str], list[str]]:
        extra = sorted(set(step) - {"parallel"} - _BLOCK_DOC_KEYS)
        if extra:
            self.problem(
                f"a parallel block takes only 'parallel' (and 'purpose'), got {extra}",
                path,
                hint='put nodes inside the block: {"parallel": [{"id": ...}, {"id": ...}]}; '
                "a node's own item-level parallelism goes in its batch: "
                '{"batch": {"items": ..., "parallel": true}}',
            )
            return [], []
        branches = step["parallel"]
        bpath = f"{path}.parallel"
        if not isinstance(branches, list):
            self.problem(
                f"'parallel' must be a list of branches, got {_kind(branches)}",
                bpath,
                hint=_SHAPE_HINT,
            )
            return [], []
        if not branches:
            self.problem(
                "empty parallel block",
                bpath,
                hint="a parallel block needs at least one branch (usually two or more)",
            )
            return [], []
        entries: list[str] = []
        exits: list[str] = []
        for i, branch in enumerate(branches):
            b_entries, b_exits = self.step(branch, f"{bpath}[{i}]")
            entries += b_entries
            exits += b_exits
        return entries, exits

    def node(self, step: dict[str, Any], path: str) -> tuple[list[str], list[str]]:
        node_id = step.get("id")
        if "id" not in step:
            self.problem(
                "node has no 'id'",
                path,
                hint='every node needs a unique id, e.g. {"id": "fetch", "type": "shell", ...}',
            )
            return [], []
        if not isinstance(node_id, str) or not node_id:
            self.problem(
                f"node 'id' must be a non-empty string, got {node_id!r}",
                f"{path}.id",
            )
            return [], []
        # Copied so that later stages may annotate nodes without touching the caller's document.
        self.nodes.append(copy.deepcopy(step))
        self.paths.append(path)
        return [node_id], [node_id]


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def normalise_pipeline_with_paths(
    doc: dict[str, Any], file: str | None = None
) -> tuple[dict[str, Any], dict[str, str]]:
    """Like `normalise_pipeline`, also returning {"nodes[i]": "pipeline[...]"} so that a later
    stage can report a problem at the place the author wrote it (see `pipeline_field`)."""
    if "pipeline" not in doc:
        return doc, {}
    problems: list[Problem] = []
    if "nodes" in doc:
        problems.append(
            Problem(
                "'pipeline' and 'nodes' cannot be used together",
                file=file,
                field="pipeline",
                hint="use either the pipeline form or nodes + edges; the pipeline form "
                "generates the nodes and edges itself (extra action edges may go in 'edges')",
            )
        )
    steps = doc["pipeline"]
    if not isinstance(steps, list):
        problems.append(
            Problem(
                f"'pipeline' must be a list of steps, got {_kind(steps)}",
                file=file,
                field="pipeline",
                hint=_SHAPE_HINT,
            )
        )
        raise WorkflowInvalid(problems)
    if not steps:
        problems.append(
            Problem(
                "empty pipeline",
                file=file,
                field="pipeline",
                hint="a pipeline needs at least one node",
            )
        )
        raise WorkflowInvalid(problems)

    walk = _Walk(file)
    walk.chain(steps, "pipeline")
    problems += walk.problems
    if problems:
        raise WorkflowInvalid(problems)

    # Edges sorted by where their ends appear in the document: reads top to bottom in `plan`.
    order = {node["id"]: i for i, node in reversed(list(enumerate(walk.nodes)))}
    pairs = sorted(walk.edges, key=lambda e: (order[e[0]], order[e[1]]))
    edges = _dedupe([{"from": a, "to": b} for a, b in pairs])
    extra = doc.get("edges")
    if isinstance(extra, list):
        # Extra edges (action edges closing a loop, error handlers) are added to the generated
        # ones; an extra edge identical to a generated one is not doubled.
        edges = _dedupe(edges + copy.deepcopy(extra))
    elif extra is not None:
        edges = extra  # not a list: left for the validator to report on the key as written

    out: dict[str, Any] = {}
    for key, value in doc.items():
        if key == "pipeline":
            out["nodes"] = walk.nodes
            out["edges"] = edges
        elif key != "edges":
            out[key] = value
    return out, {f"nodes[{i}]": p for i, p in enumerate(walk.paths)}


def normalise_pipeline(doc: dict[str, Any], file: str | None = None) -> dict[str, Any]:
    """Return `doc` with its `pipeline` replaced by the equivalent `nodes` + `edges`.

    Nodes come out in document order (depth-first: a block's branches in order), edges connect
    each step's exits to the next step's entries. An `edges` list given next to `pipeline` is
    kept and appended (for action edges: loops, error handlers). A document without `pipeline`
    is returned unchanged. Raises WorkflowInvalid listing every structural problem with its JSON
    path (e.g. `pipeline[2].parallel[0]`).
    """
    return normalise_pipeline_with_paths(doc, file)[0]


def pipeline_field(field_path: str | None, paths: dict[str, str]) -> str | None:
    """Rewrite a `nodes[i]...` problem path to the pipeline path the author wrote."""
    if not field_path or not field_path.startswith("nodes["):
        return field_path
    head, sep, rest = field_path.partition("]")
    mapped = paths.get(head + sep)
    return mapped + rest if mapped else field_path


def _dedupe(edges: list[Any]) -> list[Any]:
    seen: set[str] = set()
    out: list[Any] = []
    for edge in edges:
        key = repr(sorted(edge.items())) if isinstance(edge, dict) else repr(edge)
        if key not in seen:
            seen.add(key)
            out.append(edge)
    return out


def map_pipeline_paths(problems: list[Problem], paths: dict[str, str] | None) -> list[Problem]:
    """Report problems of a pipeline-form workflow at the path the author wrote."""
    if not paths:
        return problems
    from dataclasses import replace

    return [replace(p, field=pipeline_field(p.field, paths)) for p in problems]
