"""`fanflow guide` and `fanflow nodes`: what an AI agent needs to author workflows.

The node reference is generated from the registry (description, params_spec, outputs_spec) so it
never drifts from the code; the prose lives in GUIDE_TEMPLATE below and the complete examples are
Python dicts dumped as JSON, so they are always well-formed (a test validates each of them).

Kept as a Python module rather than a data file so that it ships in every install without
package-data configuration.
"""

from __future__ import annotations

import json
import textwrap
from typing import Any

from fanflow.nodes.base import Param

# --------------------------------------------------------------------------- node reference


def node_types() -> list[str]:
    from fanflow.nodes.registry import known_types

    return known_types()


def load_node_class(name: str) -> Any:
    """The class for a type name; KeyError when unknown, other exceptions when it fails to load."""
    from fanflow.nodes.registry import get_node_class

    return get_node_class(name)


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text and text.strip() else ""


def node_summaries() -> list[tuple[str, str]]:
    """(type name, one-line description) for every known node type; never raises."""
    rows = []
    for name in node_types():
        try:
            cls = load_node_class(name)
            desc = first_line(getattr(cls, "description", "") or (cls.__doc__ or ""))
        except Exception as exc:  # a broken plugin must not hide the other types
            desc = f"(cannot be loaded: {type(exc).__name__}: {exc})"
        rows.append((name, desc))
    return rows


def _param_type(param: Any) -> str:
    return getattr(param, "type", None) or "any"


def format_default(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, default=str)


def node_info(name: str, cls: Any) -> dict[str, Any]:
    """A node type's interface as plain data (for `fanflow nodes NAME --output-format json`)."""
    params = {}
    for key, param in (getattr(cls, "params_spec", None) or {}).items():
        if not isinstance(param, Param):
            param = Param(**param) if isinstance(param, dict) else Param()
        entry: dict[str, Any] = {"type": _param_type(param), "required": bool(param.required)}
        if not param.required and param.default is not None:
            entry["default"] = param.default
        entry["description"] = param.description
        params[key] = entry
    return {
        "type": name,
        "description": (getattr(cls, "description", "") or (cls.__doc__ or "")).strip(),
        "params": params,
        "outputs": dict(getattr(cls, "outputs_spec", None) or {}),
        "runs_on": runs_on(cls),
    }


def runs_on(cls: Any) -> str:
    """Where a node type's work runs (docs/executors.md)."""
    if hasattr(cls, "exec_async"):
        return "the event loop (async: no executor moves it)"
    if getattr(cls, "remote_exec", False):
        return (
            "threads; `--executor` / `executor: process|dask` moves it to worker processes or Dask"
        )
    return "threads; only its own `executor` on the node moves it"


def describe_node(name: str, cls: Any, heading: str = "") -> str:
    """Human/agent-readable reference of one node type."""
    info = node_info(name, cls)
    lines = [f"{heading}{name}", _wrap(info["description"] or "(no description)", "  ", "  ")]
    params = info["params"]
    if params:
        lines.append("  params:")
        width = max(len(k) for k in params)
        for key, p in params.items():
            if p["required"]:
                kind = f"{p['type']}, required"
            elif "default" in p:
                kind = f"{p['type']}, default {format_default(p['default'])}"
            else:
                kind = f"{p['type']}, optional"
            desc = f" — {p['description']}" if p["description"] else ""
            lines.append(_wrap(f"{key.ljust(width)}  ({kind}){desc}", "    ", " " * (width + 8)))
    else:
        lines.append("  params: any (not declared by this node type)")
    outputs = info["outputs"]
    if outputs:
        lines.append("  outputs:")
        width = max(len(k) for k in outputs)
        for key, desc in outputs.items():
            lines.append(_wrap(f"{key.ljust(width)}  {desc}".rstrip(), "    ", " " * (width + 6)))
    else:
        lines.append("  outputs: any keys the node writes")
    lines.append(_wrap(f"runs on: {info['runs_on']}", "  ", "    "))
    return "\n".join(lines)


def _wrap(text: str, first: str, rest: str) -> str:
    # Long descriptions stay readable in a terminal; breaking on spaces keeps templates whole.
    return textwrap.fill(
        text,
        width=100,
        initial_indent=first,
        subsequent_indent=rest,
        break_long_words=False,
        break_on_hyphens=False,
    )


def node_reference() -> str:
    """Every node type, described; a type that fails to load is listed with the reason."""
    blocks = []
    for name in node_types():
        try:
            blocks.append(describe_node(name, load_node_class(name), heading="### "))
        except Exception as exc:
            blocks.append(f"### {name}\n  (cannot be loaded: {type(exc).__name__}: {exc})")
    return "\n\n".join(blocks)


# --------------------------------------------------------------------------- examples

# Three complete workflows, each a different parallel form. tests/test_authoring_e2e.py
# extracts them from the printed guide and validates them; the first runs offline.
EXAMPLES: list[tuple[str, str, dict[str, Any]]] = [
    (
        "Fan-out / fan-in over edges (offline: shell, code, merge, write-file)",
        "Three independent looks at a folder run at the same time; the merge waits for all "
        "three, the report is written once. Run: "
        "`fanflow run survey.json dir=. report=/tmp/survey.md`",
        {
            "ir_version": "0.1.0",
            "description": "Survey a folder: three parallel probes, one merged report",
            "inputs": {
                "dir": {"type": "string", "description": "folder to survey"},
                "report": {"type": "string", "description": "where to write the report"},
            },
            "nodes": [
                {
                    "id": "files",
                    "type": "shell",
                    "purpose": "list the files once; all probes start from it",
                    "params": {"command": "find ${dir} -maxdepth 2 -type f | sort"},
                },
                {
                    "id": "count",
                    "type": "code",
                    "params": {
                        "code": "result = len([l for l in listing.splitlines() if l])",
                        "inputs": {"listing": "${files.stdout}"},
                    },
                },
                {
                    "id": "biggest",
                    "type": "shell",
                    "params": {"command": "du -a ${dir} | sort -rn | head -n 3"},
                },
                {
                    "id": "types",
                    "type": "code",
                    "params": {
                        "code": (
                            "import collections, os\n"
                            "exts = [os.path.splitext(p)[1] or '(none)'\n"
                            "        for p in listing.splitlines() if p]\n"
                            "result = dict(collections.Counter(exts).most_common(5))"
                        ),
                        "inputs": {"listing": "${files.stdout}"},
                    },
                },
                {
                    "id": "summary",
                    "type": "merge",
                    "purpose": "fan-in: one object keyed by node id",
                    "params": {
                        "inputs": ["${count.result}", "${biggest.stdout}", "${types.result}"],
                        "strategy": "object",
                    },
                },
                {
                    "id": "write",
                    "type": "write-file",
                    "params": {
                        "file_path": "${report}",
                        "content": "# Survey of ${dir}\n\n${summary.result}\n",
                    },
                },
            ],
            "edges": [
                {"from": "files", "to": "count"},
                {"from": "files", "to": "biggest"},
                {"from": "files", "to": "types"},
                {"from": "count", "to": "summary"},
                {"from": "biggest", "to": "summary"},
                {"from": "types", "to": "summary"},
                {"from": "summary", "to": "write"},
            ],
            "outputs": {
                "report": {"source": "${write.file_path}"},
                "files": {"source": "${count.result}"},
            },
        },
    ),
    (
        "Batch: one LLM call per item, concurrently, under a provider limit",
        "`batch.parallel` runs the items concurrently (at most `max_concurrent` at once); "
        "`limits` caps every call to the provider across the whole run; `continue` keeps "
        "going when an item fails (its result is null, the error is listed in `errors`).",
        {
            "ir_version": "0.1.0",
            "description": "Summarise every Markdown file of a folder, 8 at a time",
            "inputs": {"dir": {"type": "string", "description": "folder with .md files"}},
            "limits": {"llm:openai": {"concurrency": 8, "rpm": 300}},
            "nodes": [
                {
                    "id": "find",
                    "type": "shell",
                    "params": {"command": "find ${dir} -name '*.md' | sort"},
                },
                {
                    "id": "docs",
                    "type": "code",
                    "purpose": "a real list of {path, text} items for the batch",
                    "params": {
                        "code": (
                            "paths = [line for line in listing.splitlines() if line]\n"
                            "result = [{'path': p, 'text': open(p).read()[:4000]} for p in paths]"
                        ),
                        "inputs": {"listing": "${find.stdout}"},
                    },
                },
                {
                    "id": "summarise",
                    "type": "llm",
                    "purpose": "one call per file, 8 in flight at most",
                    "batch": {
                        "items": "${docs.result}",
                        "as": "doc",
                        "parallel": True,
                        "max_concurrent": 8,
                        "error_handling": "continue",
                        "max_retries": 3,
                        "retry_wait": 2,
                    },
                    "params": {
                        "model": "gpt-4o-mini",
                        "system": "You summarise documents in two sentences.",
                        "prompt": "Document ${__index__} (${doc.path}):\n\n${doc.text}",
                    },
                },
                {
                    "id": "report",
                    "type": "code",
                    "params": {
                        "code": (
                            "lines = [f\"- {d['path']}: {r['response'] if r else '(failed)'}\"\n"
                            "         for d, r in zip(docs, results)]\n"
                            "result = '\\n'.join(lines)"
                        ),
                        "inputs": {"docs": "${docs.result}", "results": "${summarise.results}"},
                    },
                },
            ],
            "edges": [
                {"from": "find", "to": "docs"},
                {"from": "docs", "to": "summarise"},
                {"from": "summarise", "to": "report"},
            ],
            "outputs": {
                "summary": {"source": "${report.result}"},
                "failed": {"source": "${summarise.error_count}"},
            },
        },
    ),
    (
        "Pipeline form with nested parallel blocks, a race and a concat merge",
        "Read as: fetch, then at the same time (a) translate to French, (b) translate to "
        "German and check it, (c) ask two models and keep the first answer; then combine. "
        "It normalises to nodes + edges; `fanflow plan` shows what will run in parallel.",
        {
            "ir_version": "0.1.0",
            "description": "Fetch a text, process it three ways at once, combine",
            "inputs": {"url": {"type": "string", "description": "where the text is"}},
            "pipeline": [
                {
                    "id": "fetch",
                    "type": "http",
                    "params": {"url": "${url}", "method": "GET"},
                },
                {
                    "parallel": [
                        {
                            "id": "fr",
                            "type": "llm",
                            "params": {"prompt": "Translate into French:\n${fetch.response}"},
                        },
                        [
                            {
                                "id": "de",
                                "type": "llm",
                                "params": {"prompt": "Translate into German:\n${fetch.response}"},
                            },
                            {
                                "id": "de_check",
                                "type": "llm",
                                "params": {
                                    "prompt": "Fix any mistakes in this German text, "
                                    "answer with the text only:\n${de.response}"
                                },
                            },
                        ],
                        [
                            {
                                "parallel": [
                                    {
                                        "id": "ask_fast",
                                        "type": "llm",
                                        "params": {
                                            "model": "gpt-4o-mini",
                                            "prompt": "One-line summary:\n${fetch.response}",
                                        },
                                    },
                                    {
                                        "id": "ask_other",
                                        "type": "llm",
                                        "params": {
                                            "model": "anthropic/claude-haiku-4-5",
                                            "prompt": "One-line summary:\n${fetch.response}",
                                        },
                                    },
                                ]
                            },
                            {
                                "id": "summary",
                                "type": "merge",
                                "purpose": "race: the first answer wins, the other is cancelled",
                                "params": {
                                    "inputs": ["${ask_fast.response}", "${ask_other.response}"],
                                    "strategy": "first",
                                },
                            },
                        ],
                    ]
                },
                {
                    "id": "combined",
                    "type": "merge",
                    "params": {
                        "inputs": [
                            "${summary.result}",
                            "${fr.response}",
                            "${de_check.response}",
                        ],
                        "strategy": "concat",
                        "separator": "\n\n---\n\n",
                    },
                },
            ],
            "outputs": {
                "text": {"source": "${combined.result}"},
                "summary_by": {"source": "${summary.winner}"},
            },
        },
    ),
]


def guide_examples() -> list[dict[str, Any]]:
    return [doc for _title, _note, doc in EXAMPLES]


def compact_json(value: Any, indent: int = 0, width: int = 100, prefix: int = 0) -> str:
    """Pretty JSON that keeps any object or list fitting in the line on one line: about half the
    lines of indent=2, which matters when the reader is a model paying per token. `prefix` is
    how many characters precede the value on its first line (a key)."""
    flat = json.dumps(value, ensure_ascii=False)
    # +1 leaves room for the comma that may follow.
    if indent + prefix + len(flat) + 1 <= width or not isinstance(value, dict | list) or not value:
        return flat
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = []
        for k, v in value.items():
            key = json.dumps(k, ensure_ascii=False) + ": "
            items.append(pad + key + compact_json(v, indent + 2, width, len(key)))
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + compact_json(v, indent + 2, width) for v in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def _examples_text() -> str:
    parts = []
    for i, (title, note, doc) in enumerate(EXAMPLES, 1):
        note = textwrap.fill(note, width=100, break_long_words=False, break_on_hyphens=False)
        parts.append(f"### Example {i}: {title}\n\n{note}\n\n```json\n{compact_json(doc)}\n```")
    return "\n\n".join(parts)


# --------------------------------------------------------------------------- the guide

GUIDE_TEMPLATE = r"""# Authoring fanflow workflows — a guide for AI agents

fanflow runs a workflow written as JSON: nodes (shell commands, file reads/writes, HTTP calls,
LLM calls, inline Python, merges) connected by edges. It validates the whole file before anything
runs, then starts every node the moment its dependencies are done, so independent work runs in
parallel without you asking for it.

    fanflow validate wf.json                 # every static check, nothing runs (exit 2 if invalid)
    fanflow run wf.json name=value ...       # run; --output-format json for one JSON object
    fanflow run wf.json --max-concurrent 4   # cap everything running at once
    fanflow plan wf.json                     # what will run in parallel, before running
    fanflow nodes [TYPE]                     # node types, or one type's params and outputs
    fanflow schema                           # the JSON Schema of the workflow format

Always run `fanflow validate` after writing a workflow and fix every problem it lists.

## Workflow shape

```json
{
  "ir_version": "0.1.0",
  "description": "optional, one line",
  "inputs":  {"dir": {"type": "string", "required": true, "description": "..."}},
  "nodes":   [{"id": "list", "type": "shell", "params": {"command": "ls ${dir}"},
               "purpose": "optional note"},
              {"id": "count", "type": "code", "params": {"code": "result = len(s.split())",
                                                         "inputs": {"s": "${list.stdout}"}}}],
  "edges":   [{"from": "list", "to": "count", "action": "default"}],
  "outputs": {"files": {"source": "${count.result}"}}
}
```

- `id`: letters, digits, `_` or `-`, starting with a letter or `_`; unique; not an input name.
- Inputs are given on the command line as `name=value`; types: string, number, integer,
  boolean, array, object (JSON text for the last two), any. An input with a `"default"` is
  optional; without one it is required unless `"required": false`. `"secret": true` (API keys,
  tokens) masks its value as `***` in everything fanflow stores or prints; it may also be given
  as the environment variable `FANFLOW_SECRET_<NAME>`.
- Optional top level: `limits`, `max_concurrent`, `on_error`, `max_visits` (loop bound, 100),
  `start_node`, `name`. Unknown keys are errors.
- Instead of `nodes` + `edges` you may write a `pipeline` (see "Pipeline form").

## Node types

<<NODE_TYPES>>

Every node also gets the output `error` when its failure is routed to an `error` edge.
A batch node's outputs are the batch results (see "Batch"), not the node's own outputs.

## Templates

- `${name}` is a workflow input; `${node.key}` is an output of node `node`;
  paths go deeper: `${fetch.response.items[0].title}`. `[-1]` is the last item; a key with
  dots, spaces or a leading digit is written `["key.name"]` or `['key name']`.
- A path step reads an object key, a list index, or into JSON text; nothing else (no
  attributes, no characters of plain text). A step that finds nothing fails the node with
  "no value at 'key'" and what was there instead.
- A string that is exactly one template keeps the value's type (list, object, number):
  `"items": "${find.result}"` passes a real list. Templates inside longer text render as text
  (objects and lists as JSON).
- If a text output holds a JSON list or object (e.g. a shell command printing JSON; whitespace
  and newlines around it are fine), you can index into it: `${probe.stdout.version}`.
- Fallbacks: `${a.response ?? b.response ?? "none"}` takes the first that has a value.
- `$${` writes a literal `${`. Use it for shell variables and parameter expansions, which
  fanflow would otherwise read as templates: `for f in *.txt; do wc -l $${f}; done` (or `$f`),
  `$${HOME:-/tmp}`.
- In shell commands, template values are passed as data, never code: quotes, `;`, `$(...)` in
  a value execute nothing, and a value is one word, never split on spaces nor globbed
  (`sh ${name}.sh` runs exactly that file). Write `echo "Hello ${user}"` as you would expect.
- Inside a batch: `${item}` (or the name you give in `as`) and `${__index__}` (0-based).

## Dependencies and edges

- A node's dependencies are its incoming edges plus every node its templates read. Reading
  `${a.x}` already makes `a` run first, even without an edge (validate warns; add the edge).
- Several edges out of one node = fan-out: the targets run at the same time.
  Several edges into one node = fan-in: it waits for all of them and runs once.
- No `edges` at all: nodes run one after another in array order.
- Add an edge when order matters but no data flows (e.g. a node writes a file another reads).

## Actions, conditional edges, loops

- Every node ends with an action, `"default"` unless: a shell command exiting non-zero gives
  `"error"` (a failure, unless an `error` edge handles it or `ignore_errors` is true); a `code`
  node may assign `next = "some_action"`.
- An edge with `"action": "x"` fires only when its source ended with action `x`. Nodes reached
  only by edges that did not fire are skipped, and so is everything only they lead to.
  A node after an if/else (an or-join) runs exactly once, after whichever branch ran.
- Error handling: `{"from": "fetch", "to": "fallback", "action": "error"}` routes a failure of
  `fetch` to `fallback` instead of failing the run; `${fetch.error}` holds the message.
- Loops (retry/revise): a cycle is allowed only when an edge with a non-default action closes
  it, e.g. `draft → review` (default) and `review → draft` (action `revise`), where `review` is a
  code node that sets `next = "revise"` or `next = "done"`. A cycle of default edges is an error.
  Loops run sequentially, at most `max_visits` visits per node.
- One node repeating itself: `"loop": {"until": "${count.result.done}", "carry": {"total":
  "${count.result.total}"}, "max_iterations": 10}` on a code node runs it again until the
  condition (a true/false value of its own output; `while` is the opposite) holds. `carry` sets
  the next pass's `inputs.total`; in the code, `total: int = 0` is the first pass's value.
  `${__iteration__}` is the pass number (from 1); the outputs are the last pass's, plus
  `iterations` and `loop_stopped` (`condition` or `max_iterations`).

## Batch: the same node over many items

```json
{"id": "summarise", "type": "llm", "params": {"prompt": "Summarise ${path}"},
 "batch": {"items": "${find.result}", "as": "path", "parallel": true, "max_concurrent": 10,
           "error_handling": "continue", "max_retries": 3, "retry_wait": 1}}
```

- `items`: a `${...}` template giving a list, or an inline JSON list.
- `as` (default `item`), `parallel` (default false = one item at a time), `max_concurrent`
  (default 10; only with parallel), `error_handling` (`fail_fast` default: the first failure
  cancels the rest; `continue`: every item runs), `max_retries` (pflow's name; it counts
  attempts per item, the first included: default 1 = no retry), `retry_wait` (seconds between
  attempts).
- Outputs: `results` (one entry per item, in item order, null for a failed item; each entry is
  that item's node outputs, e.g. `${map.results[0].response}`), `count`, `success_count`,
  `error_count`, `errors` (`[{"index", "item", "error"}]`), `batch_metadata` (timing).
- One field of every result, as a list (no code node needed): `${map.results[*].response}`
  (null where an item failed). The same item of an earlier batch: `${map.results[${__index__}]}`.
- A node without batch may retry too: `"retry": {"max_attempts": 3, "wait": 1}`.

## Fan-out vs batch vs pipeline — which to use

- **Batch** — the same operation over a list of things (files, rows, URLs, prompts): one node
  with `batch`. Use `parallel: true` for I/O (LLM, HTTP, shell); keep it sequential when order
  of side effects matters.
- **Fan-out / fan-in** — different operations that do not depend on each other (analyse AND
  visualise the same data): several nodes reading the same upstream, joined by a node that reads
  them all (often a `merge`).
- **Batch over a sub-workflow** — several steps per item: put the steps in a child workflow and
  batch a `workflow` node over the items (see below).
- **Pipeline form** — the same graphs, written as an ordered list of steps; use it when the
  workflow reads naturally as "do A, then B and C at the same time, then D". It cannot express
  conditional edges by itself (add those in `edges`, see below).
- Do not chain independent steps: `a → b → c` when `b` and `c` only need `a` makes them wait
  for each other for nothing. Prefer `a → b`, `a → c`.

## Sub-workflows: a whole pipeline per item

```json
{"id": "each", "type": "workflow",
 "params": {"workflow": "summarise.json", "inputs": {"doc": "${item}"}},
 "batch": {"items": "${list.files}", "parallel": true}}
```

- `workflow`: a path relative to THIS file, a saved name (`.fanflow/workflows/NAME.json`), or the
  child inline (`{"inputs": …, "nodes": […], "outputs": …}` or a pipeline list; `${…}` inside an
  inline child are the child's own). `inputs` maps the child's declared inputs to this
  workflow's values. Outputs: the child's declared `outputs` (`${each.results[0].summary}`).
- Batch over it when each item needs several steps (extract → summarise → score): each item's
  chain runs on its own, no item waits for another item's stage. Three batch nodes in a row
  would make every item wait for the slowest item of each stage.
- The child is validated with the parent; a child that runs itself is an error. Children share
  the parent's `--max-concurrent` budget and limits.

## Pipeline form

```json
{"pipeline": [
  {"id": "fetch", "type": "http", "params": {"url": "${url}"}},
  {"parallel": [
    {"id": "fr", "type": "llm", "params": {"prompt": "French: ${fetch.response}"}},
    [{"id": "de", "type": "llm", "params": {"prompt": "German: ${fetch.response}"}},
     {"id": "de_fix", "type": "llm", "params": {"prompt": "Fix: ${de.response}"}}]
  ]},
  {"id": "join", "type": "merge", "params": {"inputs": ["${fr.response}", "${de_fix.response}"]}}
]}
```

- Steps run in order. A `{"parallel": [...]}` block runs its branches at the same time; a
  branch is a node, a list of steps run in sequence (a sub-chain), or another parallel block.
- Each step waits for every branch of the step before it. It becomes ordinary `nodes` + `edges`;
  do not also give `nodes`. Extra `edges` (e.g. a loop's action edge) may be added next to it.

## merge: joining parallel branches

- `"inputs": ["${a.response}", "${b.response}"]` (or `{"name": "${a.response}", ...}`).
- `strategy`: `object` (default; `{"a": ..., "b": ...}` keyed by node id, or by your names in the
  object form), `list` (values in declared order), `concat` (text joined by `separator`,
  default a newline), `first` (a race: the merge runs as soon as one input's node succeeds and
  the other input nodes are cancelled; `winner` names the node that won).
- Output: `${merge_id.result}` (and `${merge_id.winner}` for `first`).
- For `object` with a list of inputs, each input must read a different node; otherwise use the
  object form to name them.

## Concurrency and limits

- fanflow runs everything that is ready at once. `--max-concurrent N` (or top-level
  `"max_concurrent": N`) caps how many node executions and batch items run at the same time
  across the whole run; `--max-concurrent 1` runs sequentially with the same results.
- Provider and host limits, shared by every branch and batch item:
  `"limits": {"llm:openai": {"concurrency": 10, "rpm": 600}, "http:api.example.com": {"rpm": 60}}`
  (keys: `llm:<provider>`, `llm:<provider>/<model>`, `http:<host>`, `node:<type>`).
  Set them for any workflow that fans out LLM or HTTP calls; a batch's `max_concurrent` caps
  only that batch. On the command line, `--limit llm:openai=10/600rpm` overrides one.
- Every key takes `concurrency` and/or `rpm`; `rpm` paces starts evenly (`rpm: 600` is one start
  every 0.1 s, never a burst). `http:<host>` is matched against the host of the
  URL as rendered at run time (a host from an input works) on any port; `http:<host>:<port>`
  limits one port (80/443 implied by http/https). `node:<type>` counts every execution of that
  type (node runs and batch items). The `llm:` provider comes from the model name:
  `anthropic/…` or `claude-…` → anthropic, `ollama/…` → ollama, `echo` → echo, any other name
  (`gpt-4o`, `meta-llama/Llama-3`) → openai; `llm:openai/gpt-4o` limits one model.
- Any other endpoint (vLLM, Ollama, OpenRouter, Gemini's OpenAI API): a top-level
  `"providers": {"local": {"base_url": "http://localhost:8000/v1", "api_key_env": "LOCAL_KEY",
  "default_model": "qwen", "headers": {"X-Team": "${TEAM}"}}}` (`kind: "anthropic"` for the
  Messages API); then `"model": "local/<m>"` routes there and `llm:local` limits it. Never put a
  key in the file: `api_key_env` names the variable. Also `FANFLOW_PROVIDERS`, `--provider
  local=URL`, `--providers FILE` (docs/llm.md).

## When something fails

- Default (fail-fast): the first failure cancels everything still running, starts nothing new,
  keeps completed outputs, and the run exits 1 naming the failed node.
- `"on_error": "continue"` (top level): a failed branch is recorded, nodes that depend on it are
  skipped, independent branches run to completion; the run still reports failure (exit 1).
- Per node: an `error` edge handles its failure; `retry` retries it; in a batch,
  `error_handling: "continue"` keeps the other items.

## Answers to common doubts

- Loop carry: a node in a loop reads the previous pass with a fallback for the first one,
  `"prev": "${review.result ?? setup.result}"`; outputs and later nodes see the last pass. A loop
  needs no `start_node`: the edge from a setup step enters it. Past `max_visits` the node fails
  the run ("loop ran node 'x' more than N times"). One node repeating itself carries values with
  `loop: {"until": …, "carry": {…}}` instead (see Actions above).
- Joins: several edges into a node wait for all of them; after an if/else the edges that did not
  fire are dead, so the join runs once, after the branch that ran. `${a.x ?? b.x}` skips a
  skipped `a`. A code node that sets `next` need not set `result` (it is then null). `next`
  naming an action with no edge ends that path: nodes only it would reach are skipped. A
  `first` merge starts on the first input to succeed, in the pipeline form too.
- Retries: `retry.max_attempts` and batch `max_retries` both count attempts, the first try
  included (1 = no retry). A shell command exiting non-zero is retried like any failure.
  `retry` defaults: 3 attempts, `wait` 1 s, `backoff` exponential with jitter (each wait is
  `wait·2^(n-1)` times 0.5–1, at most `max_wait` 30 s); `"backoff": "fixed"` waits exactly
  `wait`. http and llm make up to 3 attempts by themselves on 429, 5xx and timeouts
  (honouring Retry-After); `"retry": {"max_attempts": 1}` turns that off.
- Data: a whole-value template keeps the value's type, and text stays text (a shell printing
  `42` gives the string "42"; read into JSON text with `${s.stdout.key}`), except where a type
  is declared: a typed param, or a code input annotated at the top of the code (`data: dict`,
  `n: int`) decodes JSON text; `n: int = 0` is that input's default. `ignore_errors`
  keeps `exit_code` and ends with action `default`. Merge inputs may mix text and templates
  (`"x ${a.result}"` renders as text). Code sees only its `inputs` (not the workflow's inputs
  nor the batch item unless listed: `"inputs": {"item": "${item}"}`); an `import csv` in the
  code replaces an input named `csv`. Relative paths resolve against the directory fanflow
  runs in; `file_path` returns the path as given; a batch over an empty list succeeds with
  `results: []`, `count: 0`.
- Order: with no edges at all, nodes run in array order, a node after those it reads. Once any
  edge exists, nodes with no edge and no read between them run at the same time.

## MCP tools as nodes

- Configure servers in the workflow's top-level `mcp_servers`, in the shape MCP hosts use:
  `{"gh": {"command": "npx", "args": ["-y", "server-github"], "env": {"TOKEN": "${GH_TOKEN}"}}}`
  (stdio) or `{"docs": {"url": "http://127.0.0.1:8000/mcp", "headers": {...}}}` (streamable
  HTTP); the user's `~/.config/fanflow/mcp.json` (`{"mcpServers": {...}}`, or the file
  `FANFLOW_MCP_CONFIG` names) is read too. `${NAME}` there is an environment variable.
- A node: `{"id": "issues", "type": "mcp", "params": {"server": "gh", "tool": "list_issues",
  "arguments": {"repo": "${repo}"}, "timeout": 30}}`. pflow's `"type": "mcp-gh-list_issues"`
  with the arguments as params means the same.
- Outputs: `result` (the tool's structured content, else its text, JSON-decoded when it is
  JSON), `text`, `structured`, `is_error`. Batch over `${issues.result.items}`.
- One session per server per run, shared by every parallel node and batch item; cap it with
  `"limits": {"mcp:gh": {"concurrency": 4, "rpm": 60}}`. A tool error fails the node (an
  `error` edge can read `${node.text}`).

## Complete examples

<<EXAMPLES>>

## Checklist before you run

1. Every id is unique and every template names an existing input or node output
   (`fanflow nodes TYPE` lists outputs).
2. Independent steps are not chained; joins read every branch they need.
3. Lists of similar work use `batch` with `parallel: true` and a sensible `max_concurrent`;
   LLM/HTTP fan-outs have `limits`.
4. `fanflow validate wf.json` passes.
"""


def build_guide() -> str:
    return (
        GUIDE_TEMPLATE.replace("<<NODE_TYPES>>", node_reference())
        .replace("<<EXAMPLES>>", _examples_text())
        .rstrip()
        + "\n"
    )
