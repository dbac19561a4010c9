"""Every static check, run before anything executes. All problems are reported at once."""

from __future__ import annotations

from typing import Any

from fanflow import templates
from fanflow.compile.graph import Graph, build_graph, local_names
from fanflow.errors import Problem, WorkflowInvalid
from fanflow.load.model import Workflow
from fanflow.load.pipeline import map_pipeline_paths
from fanflow.nodes import registry
from fanflow.nodes.base import ParamProblem
from fanflow.validate.params import check_declarations

BATCH_OUTPUTS = ("results", "count", "success_count", "error_count", "errors", "batch_metadata")
ALWAYS_OUTPUTS = ("error",)  # written when a failure is routed to an `error` edge


def did_you_mean(name: str, candidates: list[str] | set[str]) -> str | None:
    import difflib  # only when there is something to suggest

    close = difflib.get_close_matches(name, sorted(candidates), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else None


def _hint(name: str, candidates: Any, fallback: str) -> str:
    return did_you_mean(name, candidates) or fallback


def check_workflow(workflow: Workflow) -> tuple[Graph, list[str]]:
    """Every static check. Raises WorkflowInvalid with every problem; otherwise returns the
    dependency graph the checks built and the warnings (reads without an edge)."""
    file = workflow.source
    problems: list[Problem] = []
    add = problems.append
    ids = [n.id for n in workflow.nodes]
    id_set = set(ids)
    inputs = set(workflow.inputs)

    seen: set[str] = set()
    for i, node in enumerate(workflow.nodes):
        if node.id in seen:
            add(Problem(f"duplicate node id '{node.id}'", file, f"nodes[{i}].id", node.id,
                        "every node needs a unique id"))  # fmt: skip
        seen.add(node.id)
        if node.id in inputs:
            add(Problem(f"node id '{node.id}' is also the name of an input", file,
                        f"nodes[{i}].id", node.id, "rename the node or the input"))  # fmt: skip

    classes: dict[str, Any] = {}
    for i, node in enumerate(workflow.nodes):
        try:
            classes[node.id] = registry.get_node_class(node.type)
        except KeyError:
            add(Problem(f"unknown node type '{node.type}'", file, f"nodes[{i}].type", node.id,
                        _hint(node.type, registry.known_types(),
                              "run `fanflow nodes` to list node types")))  # fmt: skip
        except Exception as exc:
            add(Problem(f"cannot load node type '{node.type}': {exc}", file,
                        f"nodes[{i}].type", node.id))  # fmt: skip

    for i, edge in enumerate(workflow.edges):
        if edge.from_ in id_set and edge.to in id_set:
            continue
        for end, name in (("from", edge.from_), ("to", edge.to)):
            if name not in id_set:
                add(Problem(f"edge {end} unknown node '{name}'", file, f"edges[{i}].{end}",
                            None, _hint(name, id_set, "edges must name existing node ids")))  # fmt: skip
    if workflow.start_node and workflow.start_node not in id_set:
        add(Problem(f"start_node '{workflow.start_node}' is not a node", file, "start_node",
                    None, _hint(workflow.start_node, id_set, "name an existing node id")))  # fmt: skip

    if workflow.limits:
        from fanflow.io.limits import LimitConfigError, normalize_limits

        try:
            normalize_limits({k: v.to_dict(exclude_none=True) for k, v in workflow.limits.items()})
        except LimitConfigError as exc:
            add(Problem(exc.message, file, "limits",
                        hint="keys look like llm:openai, llm:openai/gpt-4o-mini, http:host, node:shell"))  # fmt: skip

    from fanflow.io.provider_config import problems_for  # providers: workflow, env, CLI

    problems += problems_for(workflow)

    # Parameters against the node type's declared interface, and template syntax.
    compiled_ok = True
    parsed: dict[str, Any] = {}
    parsed_items: dict[str, Any] = {}
    required: dict[Any, list[str]] = {}  # node class → its required params
    for i, node in enumerate(workflow.nodes):
        cls = classes.get(node.id)
        spec = getattr(cls, "params_spec", None) or {}
        if spec:
            if not spec.keys() >= node.params.keys():
                for key in node.params:
                    if key not in spec:
                        add(Problem(f"unknown parameter '{key}' for node type '{node.type}'",
                                    file, f"nodes[{i}].params.{key}", node.id,
                                    _hint(key, spec, f"`fanflow nodes {node.type}` lists them")))  # fmt: skip
            hook = getattr(cls, "validate_params", None)
            found_all = list(hook(node.params)) if hook is not None else []
            in_workflow = getattr(cls, "validate_in_workflow", None)
            if in_workflow is not None:
                found_all += in_workflow(node.params, workflow)
            for found in found_all:
                if isinstance(found, ParamProblem):
                    where = f"nodes[{i}].params" + (f".{found.param}" if found.param else "")
                    add(Problem(found.message, file, where, node.id, found.hint))
                else:
                    add(Problem(str(found), file, f"nodes[{i}].params", node.id))
            needed = required.get(cls)
            if needed is None:
                needed = required[cls] = [k for k, p in spec.items() if p.required]
            for key in needed:
                if key not in node.params:
                    param = spec[key]
                    add(Problem(f"missing required parameter '{key}'", file,
                                f"nodes[{i}].params", node.id,
                                f"add \"{key}\": … ({param.description or param.type})"))  # fmt: skip
        params = node.params
        raw = [k for k, p in spec.items() if p.raw and isinstance(params.get(k), dict | list)]
        if raw:  # kept as written: not this workflow's templates
            params = {k: v for k, v in params.items() if k not in raw}
        targets: list[tuple[str, Any, dict[str, Any]]] = [("params", params, parsed)]
        if node.batch is not None:
            targets.append(("batch.items", node.batch.items, parsed_items))
        for where, value, into in targets:
            try:
                into[node.id] = templates.compile_value(value)  # parsed once, kept for the graph
                if raw and into is parsed:
                    parsed[node.id].update({k: node.params[k] for k in raw})
            except templates.TemplateSyntaxError as exc:
                compiled_ok = False
                add(Problem(str(exc), file, f"nodes[{i}].{where}", node.id))
        if node.batch and isinstance(node.batch.items, str):
            compiled = parsed_items.get(node.id)
            if compiled is not None and not isinstance(compiled, templates.Template):
                add(Problem("batch items must be a list or a ${...} template", file,
                            f"nodes[{i}].batch.items", node.id,
                            "e.g. \"items\": \"${list_files.stdout}\" or [\"a\", \"b\"]"))  # fmt: skip
    printed = [name for name, out in workflow.outputs.items() if out.stdout]
    if len(printed) > 1:
        add(Problem(f"outputs {', '.join(printed)} are all marked stdout: true", file,
                    f"outputs.{printed[1]}.stdout",
                    hint="only one output can be printed alone on stdout; keep it on one"))  # fmt: skip
    for name, out in workflow.outputs.items():
        try:
            templates.compile_value(out.source)
        except templates.TemplateSyntaxError as exc:
            compiled_ok = False
            add(Problem(str(exc), file, f"outputs.{name}.source"))
    # Typed params, input defaults, edge actions, duplicate edges, start_node without edges.
    problems += check_declarations(workflow, classes, parsed, parsed_items)
    if any(n.loop is not None for n in workflow.nodes):
        from fanflow.validate.loops import loop_problems

        problems += loop_problems(workflow, classes)

    if problems or not compiled_ok:
        raise WorkflowInvalid(map_pipeline_paths(problems, workflow._pipeline_paths))

    own_names = _own_names(workflow, classes)
    graph = build_graph(workflow, parsed, parsed_items, own_names)

    # Template references: a known input, node or batch variable, and an output the node makes.
    def check_ref(ref: templates.Ref, field: str, node_id: str | None, local: set[str]) -> None:
        if ref.root in local or ref.root in inputs:
            return
        if ref.root not in id_set:
            params = graph.specs[node_id].params if node_id in graph.specs else None
            fallback = "declare it under 'inputs' or name an existing node"
            hint = templates.shell_variable_hint(ref.root, params) or _hint(
                ref.root, id_set | inputs | local, fallback
            )
            add(Problem(f"template ${{{ref.text}}} names unknown node or input '{ref.root}'",
                        file, field, node_id, hint))  # fmt: skip
            return
        if ref.root == node_id:
            add(Problem(f"node '{node_id}' reads its own output ${{{ref.text}}}", file, field,
                        node_id, "a node's outputs exist only once it has run; to carry a value "
                        "round a loop, read it from the node after this one with a fallback for "
                        "the first pass, e.g. ${review.result ?? setup.result}"))  # fmt: skip
            return
        key = ref.first_key
        if key is None:
            return
        spec = graph.specs[ref.root]
        if spec.batch is not None:
            known = set(BATCH_OUTPUTS)
        else:
            known = set(getattr(classes.get(ref.root), "outputs_spec", None) or {})
            if known and spec.loop is not None:
                known |= {"iterations", "loop_stopped"}  # what a node loop adds
        if known and key not in known and key not in ALWAYS_OUTPUTS:
            add(Problem(f"node '{ref.root}' ({spec.type}) has no output '{key}'", file, field,
                        node_id, _hint(key, known, "outputs: " + ", ".join(sorted(known)))))  # fmt: skip

    static = graph.static_params
    for i, node in enumerate(workflow.nodes):
        if node.id in static and node.batch is None:
            continue  # no template to check
        local = local_names(node, own_names.get(node.id, ()))
        for path, ref in templates.iter_refs(graph.params[node.id], "params"):
            check_ref(ref, f"nodes[{i}].{path}", node.id, local)
        for path, ref in templates.iter_refs(graph.batch_items.get(node.id), "batch.items"):
            check_ref(ref, f"nodes[{i}].{path}", node.id, set())
    for name, out in workflow.outputs.items():
        for _path, ref in templates.iter_refs(templates.compile_value(out.source)):
            check_ref(ref, f"outputs.{name}.source", None, set())

    # Loops must be closed by a non-default action edge; no fan-out inside a loop.
    for comp in graph.components:
        if not comp.is_loop:
            continue
        members = set(comp.nodes)
        internal = [e for n in comp.nodes for e in graph.out_edges[n] if e.dst in members]
        cycle = " → ".join([*comp.nodes, comp.nodes[0]])
        if not any(e.action != "default" for e in internal):
            what = "default edges" if internal else "template reads"
            add(Problem(f"cycle of {what}: {cycle}", file, "edges", comp.nodes[0],
                        "a loop must be closed by an edge with a non-default action "
                        "(e.g. {\"from\": \"review\", \"to\": \"draft\", \"action\": \"revise\"}); "
                        "otherwise remove the edge that closes the cycle"))  # fmt: skip
        for n in comp.nodes:
            by_action: dict[str, int] = {}
            for e in graph.out_edges[n]:
                if e.dst in members:
                    by_action[e.action] = by_action.get(e.action, 0) + 1
            for action, count in by_action.items():
                if count > 1:
                    add(Problem(f"node '{n}' fans out on action '{action}' inside the loop {cycle}",
                                file, "edges", n, "inside a loop each action has one successor; "
                                "move the fan-out after the loop"))  # fmt: skip

    if problems:
        raise WorkflowInvalid(map_pipeline_paths(problems, workflow._pipeline_paths))
    warnings = [*workflow._notes] + [
        f"node '{reader}' reads '{src}' but has no edge from '{src}' "
        f"(fanflow waits for '{src}' anyway; add the edge to make it explicit)"
        for reader, src in (() if graph.implicit_chain else graph.missing_edges())
    ]
    return graph, warnings


def _own_names(workflow: Workflow, classes: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """Per node, the names its class lets its own params read (`local_names`: shell `inputs`)."""
    out: dict[str, tuple[str, ...]] = {}
    for node in workflow.nodes:
        hook = getattr(classes.get(node.id), "local_names", None)  # None: a PocketFlow class
        names = hook(node.params) if hook is not None else ()
        if names:
            out[node.id] = tuple(names)
    return out
