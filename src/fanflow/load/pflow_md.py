"""Read a `.pflow.md` workflow into pflow's IR dict (the same dict pflow's own parser emits).

markdown-it-py finds the block structure (headings, fenced code blocks with their info strings,
and the source line range of every other block); the raw lines of each non-fence block are then
split into `- key: value` params (YAML) and prose, as pflow does. Errors name file:line, the
entity and a fix. `from_pflow_ir` (fanflow.load.pflow_ir) turns the result into fanflow's IR.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped, unused-ignore]
from markdown_it import MarkdownIt

from fanflow.errors import Problem, WorkflowInvalid

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

ID_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_ITEM_RE = re.compile(r"^\s*-\s+(\S+?):\s*(.*)$")
_BULLET_RE = re.compile(r"^(\s*)- (.+)$")
_BLOCK_SCALAR_RE = re.compile(r"[|>][-+]?([1-9])?[-+]?(?:\s+#.*)?")
_INT_RE = re.compile(r"^[+-]?\d+$")
_FLOAT_RE = re.compile(r"^[+-]?(\d+\.\d*|\.\d+)([eE][+-]?\d+)?$")
_TEMPLATE_SCAN = re.compile(
    r'"(?:\\.|[^"\\])*"' r"|'(?:''|[^'])*'" r"|(\$\{(?:[^{}]|\{[^{}]*\})*\})"
)
_TRUE = {"true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON"}
_FALSE = {"false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF"}
_NULL = {"null", "Null", "NULL", "~"}
_TOP_LEVEL = ("batch", "loop", "retry", "cache", "prompt_cache", "prewarm", "approval")
_ENTITY_SECTIONS = ("inputs", "steps", "outputs")
_TTL_RE = re.compile(r"(?:[1-9]|[1-5][0-9]|60)m|1h")
_SECTIONS = {"inputs": "inputs", "steps": "steps", "outputs": "outputs", "cache": "cache"}
# Params whose value may name a file holding the content (pflow's rule), and the ones parsed as YAML.
FILE_PARAMS = frozenset(
    {"command", "code", "prompt", "source", "stdin", "headers", "output_schema"}
)
YAML_FILE_PARAMS = frozenset({"batch", "output_schema", "headers"})
_FILE_EXTS = frozenset({".md", ".txt", ".py", ".sh", ".yaml", ".yml", ".json"})

STEP_HINT = "write each step as:\n      ### step-id\n\n      What it does.\n\n      - type: shell"


class PflowMdError(Exception):
    def __init__(
        self, message: str, line: int | None, node: str | None = None, hint: str | None = None
    ):
        super().__init__(message)
        self.message, self.line, self.node, self.hint = message, line, node, hint

    def problem(self, file: str | None) -> Problem:
        return Problem(
            self.message,
            file=file,
            field=f"line {self.line}" if self.line else None,
            node=self.node,
            hint=self.hint,
        )


@dataclass
class _Block:
    tag: str
    content: str
    line: int  # the opening fence's line

    @property
    def param(self) -> str:
        parts = self.tag.split()
        return parts[-1] if parts else ""

    @property
    def is_yaml(self) -> bool:
        parts = self.tag.split()
        return len(parts) > 1 and parts[0].lower() == "yaml"


@dataclass
class _Entity:
    id: str
    line: int
    section: str
    prose: list[str] = field(default_factory=list)
    items: list[tuple[str, int]] = field(default_factory=list)  # (raw text, first line)
    blocks: list[_Block] = field(default_factory=list)
    item_keys: dict[str, int] = field(default_factory=dict)  # param -> line


@dataclass
class PflowDocument:
    ir: dict[str, Any]
    title: str | None = None
    description: str | None = None
    metadata: dict[str, Any] | None = None
    # "nodes.<id>", "nodes.<id>.<param>", "inputs.<id>", "outputs.<id>" -> 1-based line
    lines: dict[str, int] = field(default_factory=dict)


_MD: MarkdownIt | None = None


def _markdown() -> MarkdownIt:
    """CommonMark block rules only: inline markup is never needed (about 25% faster)."""
    global _MD
    if _MD is None:
        _MD = MarkdownIt("zero").enable(
            [
                "heading",
                "lheading",
                "fence",
                "code",
                "list",
                "blockquote",
                "hr",
                "html_block",
                "table",
            ]
        )
    return _MD


def looks_like_pflow_md(text: str) -> bool:
    """Content sniffing for a markdown file without the `.pflow.md` extension."""
    return bool(re.search(r"^##\s+Steps\s*$", text, re.MULTILINE)) and bool(
        re.search(r"^###\s+\S", text, re.MULTILINE)
    )


def load_yaml(text: str) -> Any:
    """yaml.safe_load with bare `${...}` templates shielded (so `{a: ${x}}` parses)."""
    saved: dict[str, str] = {}

    def mask(m: re.Match[str]) -> str:
        if m.group(1) is None:
            return m.group(0)
        key = f"__ff_tpl_{len(saved)}__"
        saved[key] = m.group(1)
        return key

    masked = _TEMPLATE_SCAN.sub(mask, text)
    value = yaml.load(masked, Loader=_Loader)
    return _unmask(value, saved) if saved else value


def _unmask(obj: Any, saved: dict[str, str]) -> Any:
    if isinstance(obj, str):
        for key, tpl in saved.items():
            obj = obj.replace(key, tpl)
        return obj
    if isinstance(obj, list):
        return [_unmask(x, saved) for x in obj]
    if isinstance(obj, dict):
        return {_unmask(k, saved): _unmask(v, saved) for k, v in obj.items()}
    return obj


def _scalar(value: str) -> Any:
    """A one-line `- key: value`: pflow's scalar rules (no YAML structure, `#` kept)."""
    if not value:
        return None
    if len(value) >= 2 and value[0] == value[-1] == '"':
        return load_yaml(value)
    if len(value) >= 2 and value[0] == value[-1] == "'":
        return value[1:-1].replace("''", "'")
    if value[0] in "\"'":
        raise ValueError(f"unterminated quoted string: {value}")
    if value.startswith(("{", "[")):
        return load_yaml(value)
    if value in _NULL:
        return None
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if _INT_RE.match(value):
        return int(value)
    if _FLOAT_RE.match(value):
        return float(value)
    return value


def parse_pflow_md(text: str) -> PflowDocument:
    """Parse `.pflow.md` text. Raises PflowMdError (message, line, node, hint)."""
    lines = text.splitlines()
    doc = PflowDocument(ir={})
    body_start = _frontmatter(lines, doc)
    md_text = "\n" * body_start + "\n".join(lines[body_start:])
    tokens = _markdown().parse(md_text)

    section = "none"
    seen: dict[str, int] = {}
    entity: _Entity | None = None
    entities: list[_Entity] = []
    h1_prose: list[str] = []
    h1_found = False
    cache_ttl: str | None = None
    cache_blocks: list[_Block] = []
    cache_line = 0
    orphans: dict[str, list[int]] = {}
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        if tok.level != 0 or tok.map is None or tok.type.endswith("_close"):
            i += 1
            continue
        start, end = tok.map
        line_no = start + 1
        title = tokens[i + 1].content.strip() if tok.type == "heading_open" else ""
        # An empty `##` or a setext heading is a prose line to pflow.
        if title and tok.markup.startswith("#") and tok.tag in ("h1", "h2", "h3"):
            if tok.tag == "h1":
                if not h1_found:
                    h1_found, doc.title, entity = True, title, None
            elif tok.tag == "h2":
                entity = None
                section = _SECTIONS.get(title.lower(), "unknown")
                if section != "unknown":
                    if section in seen:
                        raise PflowMdError(
                            f"duplicate '## {title}' section",
                            line_no,
                            hint=f"merge it with the section at line {seen[section]}",
                        )
                    seen[section] = line_no
                if section == "cache":
                    cache_line = line_no
            else:
                if not ID_RE.match(title):
                    raise PflowMdError(
                        f"invalid id '{title}'",
                        line_no,
                        hint="ids start with a lowercase letter and contain only a-z, 0-9, - and _",
                    )
                for other in entities:
                    if other.id == title and other.section == section:
                        raise PflowMdError(
                            f"duplicate id '{title}'",
                            line_no,
                            node=title,
                            hint=f"'{title}' is already defined at line {other.line}; rename one",
                        )
                entity = _Entity(title, line_no, section)
                entities.append(entity)
            i += 3
            continue
        raw = lines[start:end] if start < len(lines) else []
        if tok.type == "fence":
            block = _Block(
                tok.info.strip(),
                tok.content[:-1] if tok.content.endswith("\n") else tok.content,
                line_no,
            )
            if not _fence_closed(raw, tok.markup):
                raise PflowMdError(
                    "unclosed code block",
                    line_no,
                    node=entity.id if entity else None,
                    hint=f"add a closing {tok.markup} for the fence opened at line {line_no}",
                )
            if entity is not None:
                entity.blocks.append(block)
            elif section == "cache":
                cache_blocks.append(block)
            elif section in _ENTITY_SECTIONS:
                orphans.setdefault(section, []).append(line_no)
        elif entity is not None:
            _split_lines(raw, start + 1, entity)
        elif section == "cache":
            for off, ln in enumerate(raw):
                m = _ITEM_RE.match(ln)
                if m:
                    if m.group(1) != "ttl":
                        raise PflowMdError(
                            f"'{m.group(1)}:' is not a valid parameter for '## Cache'",
                            line_no + off,
                            hint="only '- ttl: 5m' (1m..60m or 1h) is allowed there",
                        )
                    ttl = m.group(2).strip()
                    if not _TTL_RE.fullmatch(ttl):
                        raise PflowMdError(
                            f"invalid '- ttl:' value '{ttl}'",
                            line_no + off,
                            hint="use '- ttl: 5m': any value from 1m through 60m, or 1h",
                        )
                    if cache_ttl is not None:
                        raise PflowMdError(
                            "duplicate '- ttl:' in '## Cache'", line_no + off, hint="keep one"
                        )
                    cache_ttl = ttl
        elif section in _ENTITY_SECTIONS:
            found = [start + 1 + off for off, ln in enumerate(raw) if ln.strip()]
            orphans.setdefault(section, []).extend(found)
        elif h1_found and section == "none":
            h1_prose.extend(ln.strip() for ln in raw if ln.strip())
        i += 1

    for name, at in orphans.items():
        if at and not any(e.section == name for e in entities):
            raise PflowMdError(
                f"'## {name.title()}' has content but no '### id' entities (line {min(at)})",
                min(at),
                hint=f"put each of the {name} under its own '### id' heading with a description",
            )

    if h1_prose:
        doc.description = "\n".join(h1_prose)
    if "steps" not in seen:
        raise PflowMdError(
            "missing '## Steps' section", None, hint="add a '## Steps' section; " + STEP_HINT
        )
    steps = [e for e in entities if e.section == "steps"]
    if not steps:
        raise PflowMdError("the '## Steps' section has no steps", seen["steps"], hint=STEP_HINT)
    _build_ir(doc, entities, steps)
    if "cache" in seen:
        doc.ir["cache"] = _cache(cache_blocks, cache_ttl, cache_line)
    return doc


def _frontmatter(lines: list[str], doc: PflowDocument) -> int:
    if not lines or lines[0].rstrip() != "---":
        return 0
    for idx in range(1, len(lines)):
        if lines[idx].rstrip() == "---":
            try:
                data = yaml.load("\n".join(lines[1:idx]), Loader=_Loader)
            except yaml.YAMLError as exc:
                raise PflowMdError(
                    f"invalid YAML in the frontmatter: {exc}",
                    1,
                    hint="fix the YAML between the '---' lines",
                ) from None
            if isinstance(data, dict):
                doc.metadata = data
            return idx + 1
    return 0


def _fence_closed(raw: list[str], markup: str) -> bool:
    if len(raw) < 2:
        return False
    last = raw[-1].strip()
    return len(last) >= len(markup) and last == markup[0] * len(last)


def _split_lines(raw: list[str], first_line: int, entity: _Entity) -> None:
    """Split one block's raw lines into `- key: value` items and prose, as pflow does."""
    item: list[str] = []
    item_line = 0
    indent = 0
    block_key: int | None = None  # column of an open `- key: |` block scalar
    block_indent = 0

    def flush() -> None:
        nonlocal item, block_key, block_indent
        while item and not item[-1].strip():
            item.pop()
        if item:
            entity.items.append(("\n".join(item), item_line))
        item, block_key, block_indent = [], None, 0

    for off, line in enumerate(raw):
        if block_key is not None:
            col = len(line) - len(line.lstrip(" "))
            blank = col == len(line)
            if not block_indent and not blank and col > block_key:
                block_indent = max([col, *(len(b) for b in item[1:])])
            if blank or (block_indent and col >= block_indent):
                item.append(line)
                continue
            block_key, block_indent = None, 0
        if item:
            col = len(line) - len(line.lstrip())
            if not line.strip() or col >= indent:
                item.append(line)
                continue
            flush()
        m = _BULLET_RE.match(line)
        if m:
            item, item_line, indent = [line.rstrip()], first_line + off, len(m.group(1)) + 2
            im = _ITEM_RE.match(line)
            header = _BLOCK_SCALAR_RE.fullmatch(im.group(2).strip()) if im else None
            if im and header:
                block_key = im.start(1)
                if header.group(1):
                    block_indent = block_key + int(header.group(1))
            continue
        if line.strip():
            entity.prose.append(line.strip())
    flush()


def _params(entity: _Entity) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for text, line in entity.items:
        if "\n" in text:
            try:
                parsed = load_yaml(text)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                at = line + mark.line if mark is not None else line
                raise PflowMdError(
                    f"YAML error in a parameter: {getattr(exc, 'problem', None) or exc}",
                    at,
                    node=entity.id,
                    hint="indent continuation lines under the key, or quote a value holding ': '",
                ) from None
            entries = parsed if isinstance(parsed, list) else [parsed]
            for entry in entries:
                if not isinstance(entry, dict):
                    raise _not_param(str(entry), line, entity)
                for key in entry:
                    entity.item_keys.setdefault(str(key), line)
                merged.update(entry)
            continue
        m = _ITEM_RE.match(text)
        if not m:
            raise _not_param(re.sub(r"^\s*-\s*", "", text).strip(), line, entity)
        try:
            merged[m.group(1)] = _scalar(m.group(2))
        except ValueError as exc:
            raise PflowMdError(
                f"parameter '{m.group(1)}': {exc}",
                line,
                node=entity.id,
                hint="add the missing closing quote",
            ) from None
        except yaml.YAMLError as exc:
            raise PflowMdError(
                f"parameter '{m.group(1)}': invalid YAML flow value: {exc}",
                line,
                node=entity.id,
                hint="check the brackets and quotes of the {...} or [...] value",
            ) from None
        entity.item_keys.setdefault(m.group(1), line)
    return merged


def _not_param(content: str, line: int, entity: _Entity) -> PflowMdError:
    return PflowMdError(
        f"'{content}' is not a valid parameter",
        line,
        node=entity.id,
        hint="parameters are '- key: value'; for a note use a '* ' bullet or plain prose",
    )


def _check(entity: _Entity) -> None:
    kind = {"steps": "step", "inputs": "input", "outputs": "output"}.get(entity.section, "entity")
    if not entity.prose:
        raise PflowMdError(
            f"{kind} '{entity.id}' has no description",
            entity.line,
            node=entity.id,
            hint=f"add a sentence between '### {entity.id}' and its parameters saying what it does",
        )
    seen: dict[str, int] = {}
    for block in entity.blocks:
        if not block.tag:
            raise PflowMdError(
                "code block has no tag",
                block.line,
                node=entity.id,
                hint="tag it, e.g. ```shell command, ```python code, ```prompt, ```yaml batch "
                "(use a 4-backtick fence to hold ``` inside a block)",
            )
        if block.param in seen:
            raise PflowMdError(
                f"duplicate code block for '{block.param}'",
                block.line,
                node=entity.id,
                hint=f"'{block.param}' already has a block at line {seen[block.param]}; keep one",
            )
        seen[block.param] = block.line
        if block.tag.split()[0].lower() == "python" or block.param == "code":
            try:
                ast.parse(block.content)
            except SyntaxError as exc:
                raise PflowMdError(
                    f"Python syntax error: {exc.msg}",
                    block.line + (exc.lineno or 0),
                    node=entity.id,
                    hint=f"fix the Python in the block starting at line {block.line}",
                ) from None
        if block.is_yaml:
            try:
                load_yaml(block.content)
            except yaml.YAMLError as exc:
                raise PflowMdError(
                    f"YAML syntax error in the '{block.tag}' block: {exc}",
                    block.line,
                    node=entity.id,
                    hint="fix the YAML in this block",
                ) from None


def _build_ir(doc: PflowDocument, entities: list[_Entity], steps: list[_Entity]) -> None:
    ir = doc.ir
    inputs = [e for e in entities if e.section == "inputs"]
    if inputs:
        ir["inputs"] = {}
        for e in inputs:
            _check(e)
            spec: dict[str, Any] = {"description": "\n".join(e.prose)}
            spec.update(_params(e))
            for b in e.blocks:
                if b.param:
                    spec[b.param] = b.content
            ir["inputs"][e.id] = spec
            doc.lines[f"inputs.{e.id}"] = e.line
    nodes: list[dict[str, Any]] = []
    routing: dict[str, dict[str, Any]] = {}
    for e in steps:
        node, route = _build_node(e)
        nodes.append(node)
        routing[e.id] = route
        doc.lines[f"nodes.{e.id}"] = e.line
        for key, line in e.item_keys.items():
            doc.lines[f"nodes.{e.id}.{key}"] = line
        for b in e.blocks:
            doc.lines[f"nodes.{e.id}.{b.param}"] = b.line + 1
    ir["nodes"] = nodes
    code_targets: dict[str, list[str]] = {}
    dynamic: list[str] = []
    for e, node in zip(steps, nodes, strict=True):
        for b in e.blocks:
            if b.param == "code":
                targets, has_dynamic, has_end = _code_next_targets(b.content)
                if targets:
                    code_targets[e.id] = targets
                if has_dynamic:
                    dynamic.append(e.id)
                if has_end:
                    node["_routes_to_end"] = True
    ids = [n["id"] for n in nodes]
    if "end" in ids:
        raise PflowMdError(
            "'end' is reserved and cannot be a step id",
            doc.lines["nodes.end"],
            node="end",
            hint="rename the step (e.g. 'finish')",
        )
    ir["edges"] = _edges(ids, routing, code_targets)
    for edge in ir["edges"]:
        if edge["to"] not in ids:
            src = edge["from"]
            key = "on-error" if edge.get("action") == "error" else "next"
            raise PflowMdError(
                f"'{key}' names an unknown step '{edge['to']}'",
                doc.lines.get(f"nodes.{src}.{key}", doc.lines[f"nodes.{src}"]),
                node=src,
                hint=f"use one of: {', '.join(ids)} (or 'end')",
            )
    _check_branches(ir["edges"], routing, dynamic, doc.lines)
    outputs = [e for e in entities if e.section == "outputs"]
    if outputs:
        ir["outputs"] = {}
        for e in outputs:
            _check(e)
            out: dict[str, Any] = {"description": "\n".join(e.prose)}
            params = _params(e)
            out.update(params)
            if "source" in params:
                out["_source_line"] = e.item_keys["source"]
            for b in e.blocks:
                if b.param == "source":
                    out["source"] = b.content
                    out["_source_line"] = b.line + 1
                elif b.param:
                    out[b.param] = b.content
            ir["outputs"][e.id] = out
            doc.lines[f"outputs.{e.id}"] = e.line


def _build_node(e: _Entity) -> tuple[dict[str, Any], dict[str, Any]]:
    _check(e)
    node: dict[str, Any] = {"id": e.id}
    params = _params(e)
    for b in e.blocks:
        if b.param in params:
            raise PflowMdError(
                f"parameter '{b.param}' is defined both inline and as a code block",
                b.line,
                node=e.id,
                hint=f"keep either '- {b.param}: ...' or the code block",
            )
    if "type" not in params:
        raise PflowMdError(
            f"step '{e.id}' has no type",
            e.line,
            node=e.id,
            hint="add '- type: shell' (or code, llm, http, read-file, write-file, workflow, …)",
        )
    node["type"] = params.pop("type")
    for key in _TOP_LEVEL:
        if key in params:
            node[key] = params.pop(key)
    route: dict[str, Any] = {}
    if "next" in params:
        route["next"] = params.pop("next")
        if "end" in _targets(str(route["next"])):
            node["_routes_to_end"] = True
    if "on-error" in params:
        route["on_error"] = params.pop("on-error")
    node["purpose"] = "\n".join(e.prose)
    for b in e.blocks:
        if b.param == "batch":
            node["batch"] = load_yaml(b.content) if b.is_yaml else b.content
        elif b.param == "loop":
            node["loop"] = load_yaml(b.content) if b.is_yaml else b.content
        elif b.is_yaml:
            params[b.param] = load_yaml(b.content)
        else:
            params[b.param] = b.content
            node.setdefault("_source_lines", {})[b.param] = b.line + 1
    if params:
        node["params"] = params
    node["_source_line"] = e.line
    return node, route


def _targets(value: str) -> list[str]:
    if "," in value:
        return [t.strip() for t in value.split(",") if t.strip()]
    return [value.strip()]


def _code_next_targets(code: str) -> tuple[list[str], bool, bool]:
    """Literal `next = "step"` assignments in a python code block (pflow routes on them)."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return [], False, False
    found: list[str] = []
    dynamic = False
    for n in ast.walk(tree):
        target: ast.expr | None = n.target if isinstance(n, ast.AnnAssign) else None
        if isinstance(n, ast.Assign) and len(n.targets) == 1:
            target = n.targets[0]
        value = getattr(n, "value", None)
        if isinstance(target, ast.Name) and target.id == "next" and value is not None:
            if isinstance(value, ast.Constant) and isinstance(value.value, str):
                found.append(value.value)
            else:
                dynamic = True
    unique = list(dict.fromkeys(t for t in found if t != "end"))
    return unique, dynamic, "end" in found


def _check_branches(
    edges: list[dict[str, Any]],
    routing: dict[str, dict[str, Any]],
    dynamic: list[str],
    lines: dict[str, int],
) -> None:
    """pflow's guard against silent fall-through: a step reached by a named route (branch or
    on-error) must say where it goes next, and no other step may fall into it by document order."""
    for node_id in sorted(dynamic):
        if "next" not in routing.get(node_id, {}):
            raise PflowMdError(
                f"step '{node_id}' sets `next` from an expression but has no '- next:' list",
                lines[f"nodes.{node_id}"],
                node=node_id,
                hint="declare every step it may route to: '- next: target-a, target-b'",
            )
    routers: dict[str, set[str]] = {}
    for e in edges:
        if e.get("action") not in (None, "default"):
            routers.setdefault(e["to"], set()).add(e["from"])
    doc_next = {e["from"]: e["to"] for e in edges if "action" not in e}
    for target in sorted(routers):
        if "next" not in routing.get(target, {}):
            after = doc_next.get(target)
            by = ", ".join(f"'{r}'" for r in sorted(routers[target]))
            raise PflowMdError(
                f"step '{target}' is a routing target of {by} but has no '- next:'",
                lines[f"nodes.{target}"],
                node=target,
                hint=(f"add '- next: {after}' to continue, or " if after else "add ")
                + "'- next: end' to stop (pflow refuses silent fall-through)",
            )
    for e in edges:
        if "action" not in e and e["to"] in routers and e["from"] not in routers[e["to"]]:
            raise PflowMdError(
                f"step '{e['from']}' falls through into '{e['to']}' by document order, but "
                f"'{e['to']}' is a routing target",
                lines[f"nodes.{e['from']}"],
                node=e["from"],
                hint=f"add '- next: <step>' or '- next: end' to '### {e['from']}'",
            )


def _edges(
    ids: list[str], routing: dict[str, dict[str, Any]], code_targets: dict[str, list[str]]
) -> list[dict[str, Any]]:
    edges: list[dict[str, Any]] = []
    for i, node_id in enumerate(ids):
        route = routing.get(node_id, {})
        if route.get("next") is not None:
            real = [t for t in _targets(str(route["next"])) if t != "end"]
            if len(real) == 1:
                edges.append({"from": node_id, "to": real[0], "action": "default"})
            elif real:
                edges.extend({"from": node_id, "to": t, "action": t} for t in real)
                edges.append({"from": node_id, "to": real[0], "action": "default"})
        elif i < len(ids) - 1:
            edges.append({"from": node_id, "to": ids[i + 1]})
        if route.get("on_error"):
            edges.append({"from": node_id, "to": str(route["on_error"]), "action": "error"})
        existing = {(e["from"], e.get("action")) for e in edges}
        for t in code_targets.get(node_id, []):
            if (node_id, t) not in existing:
                edges.append({"from": node_id, "to": t, "action": t})
    return edges


def _cache(blocks: list[_Block], ttl: str | None, line: int) -> dict[str, Any]:
    """`## Cache`: one ```cache block split into [prose][${var}] chunks (prose kept verbatim)."""
    for b in blocks:
        if b.param != "cache":
            raise PflowMdError(
                f"code blocks under '## Cache' must use the 'cache' tag, not '{b.tag}'",
                b.line,
                hint="open the block with ```cache",
            )
    if len(blocks) > 1:
        raise PflowMdError(
            "more than one 'cache' block under '## Cache'",
            blocks[1].line,
            hint="combine the values into a single ```cache block",
        )
    items: list[dict[str, Any]] = []
    if blocks:
        content, base, last = blocks[0].content, blocks[0].line + 1, 0
        for m in re.finditer(r"(?<!\$)\$\{([^{}]+)\}", content):
            name = m.group(1)
            at = base + content.count("\n", 0, m.start())
            if any(it["name"] == name for it in items):
                raise PflowMdError(
                    f"duplicate cache chunk '{name}'",
                    at,
                    hint="each ${var} may appear once in '## Cache'",
                )
            before = content[last : m.start()]
            items.append({"name": name, "var": name, "prose_before": before, "_source_line": at})
            last = m.end()
        tail = content.find("${", last)
        if tail >= 0:
            raise PflowMdError(
                f"malformed '${{…}}' in '## Cache': {content[tail : tail + 40]!r}",
                base + content.count("\n", 0, tail),
                hint="close the reference: ${name}",
            )
    if not items:
        raise PflowMdError(
            "'## Cache' needs a ```cache block with at least one '${var}' reference",
            line,
            hint="put the cached values as ${name} references inside one ```cache block",
        )
    out: dict[str, Any] = {"items": items, "_source_line": line}
    if ttl is not None:
        out["ttl"] = ttl
    return out


# --- file references and the fanflow entry point -------------------------------------------


def is_file_reference(value: Any) -> bool:
    if not isinstance(value, str) or not value or "${" in value or "\n" in value or " " in value:
        return False
    if "://" in value:
        return False
    if value.startswith(("./", "../")):
        return True
    return "/" in value and Path(value).suffix.lower() in _FILE_EXTS


def resolve_file_references(ir: dict[str, Any], base: Path, lines: dict[str, int]) -> None:
    """Inline `- prompt: ./p.md`-style params (relative to the workflow file), recording
    `_source_files` as pflow does."""
    for node in ir.get("nodes", []):
        params = node.get("params")
        if isinstance(params, dict):
            for key, value in list(params.items()):
                if key in FILE_PARAMS and is_file_reference(value):
                    params[key] = _read_ref(
                        node["id"], key, value, base, lines, key in YAML_FILE_PARAMS
                    )
                    node.setdefault("_source_files", {})[key] = value
        batch = node.get("batch")
        if isinstance(batch, str) and is_file_reference(batch):
            node["batch"] = _read_ref(node["id"], "batch", batch, base, lines, True)
            node.setdefault("_source_files", {})["batch"] = batch


def _read_ref(
    node: str, key: str, ref: str, base: Path, lines: dict[str, int], as_yaml: bool
) -> Any:
    path = (base / ref).resolve()
    line = lines.get(f"nodes.{node}.{key}", lines.get(f"nodes.{node}"))
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PflowMdError(
            f"parameter '{key}' refers to a file that cannot be read: {ref} ({exc.__class__.__name__})",
            line,
            node=node,
            hint=f"paths are relative to the workflow file's folder ({base}); resolved to {path}",
        ) from None
    if not as_yaml:
        return text
    try:
        return load_yaml(text)
    except yaml.YAMLError as exc:
        raise PflowMdError(
            f"invalid YAML in {ref}: {exc}", line, node=node, hint="fix that file"
        ) from None


def read_pflow_md(text: str, name: str, base: Path) -> PflowDocument:
    """Parse and resolve file references; errors become WorkflowInvalid naming file:line."""
    try:
        doc = parse_pflow_md(text)
        resolve_file_references(doc.ir, base, doc.lines)
    except PflowMdError as exc:
        raise WorkflowInvalid([exc.problem(name)]) from None
    return doc


# --- data order (opt-in: frontmatter `parallel: true` or --data-order) -----------------------

_REF_RE = re.compile(r"(?<!\$)\$\{\s*([a-z][a-z0-9_-]*)")


def node_reads(node: dict[str, Any], ids: set[str]) -> set[str]:
    """Ids of the other steps whose outputs `node`'s params, batch or loop templates read."""
    alias = node["batch"].get("as", "item") if isinstance(node.get("batch"), dict) else None
    found: set[str] = set()
    for part in ("params", "batch", "loop"):
        if part in node:
            for m in _REF_RE.finditer(repr(node[part])):
                ref = m.group(1)
                if ref in ids and ref != node["id"] and ref != alias:
                    found.add(ref)
    return found


def apply_data_order(ir: dict[str, Any]) -> dict[str, Any]:
    """A copy of pflow IR whose document-order edges are replaced by data edges (a→b when b
    reads `${a…}`). Explicit routes (`- next:`, `- on-error:`, code `next`) are kept, and a step
    reached by an explicit route keeps its edges as they are and gets no data edge into it."""
    nodes = ir["nodes"]
    ids = [n["id"] for n in nodes]
    explicit = [e for e in ir.get("edges", []) if "action" in e]
    routed_into = {e["to"] for e in explicit}
    # A document-order edge into a routed-to step still fires in pflow (a router falls through
    # into its own on-error handler on success unless it says `- next:`): keep those.
    explicit += [e for e in ir.get("edges", []) if "action" not in e and e["to"] in routed_into]
    have = {(e["from"], e["to"]) for e in explicit}
    edges = list(explicit)
    for node in nodes:
        if node["id"] in routed_into:
            continue
        reads = node_reads(node, set(ids))
        for src in ids:  # document order, for a stable result
            if src in reads and (src, node["id"]) not in have:
                edges.append({"from": src, "to": node["id"]})
    out = dict(ir)
    out["edges"] = edges
    return out


def data_order_plan(ir: dict[str, Any]) -> dict[str, Any]:
    """What data order would run together: levels (steps that could run at once), the critical
    path (longest chain of dependencies) and the speedup bound total/critical in step counts."""
    ordered = apply_data_order(ir)
    ids = [n["id"] for n in ir["nodes"]]
    deps: dict[str, set[str]] = {i: set() for i in ids}
    by_id = {n["id"]: n for n in ir["nodes"]}
    for e in ordered["edges"]:
        if e.get("action") != "error" and e["from"] != e["to"]:
            deps[e["to"]].add(e["from"])
    for i in ids:
        deps[i] |= node_reads(by_id[i], set(ids))
    depth: dict[str, int] = {}
    prev: dict[str, str | None] = {}

    def visit(n: str, stack: frozenset[str]) -> int:
        if n in depth:
            return depth[n]
        best, via = 0, None
        for d in sorted(deps[n], key=ids.index):
            if d not in stack:
                v = visit(d, stack | {n})
                if v > best:
                    best, via = v, d
        depth[n], prev[n] = best + 1, via
        return best + 1

    for i in ids:
        visit(i, frozenset())
    levels: dict[int, list[str]] = {}
    for i in ids:
        levels.setdefault(depth[i], []).append(i)
    end = max(ids, key=lambda i: depth[i])
    path: list[str] = []
    cur: str | None = end
    while cur is not None:
        path.append(cur)
        cur = prev[cur]
    path.reverse()
    return {
        "levels": [levels[k] for k in sorted(levels)],
        "critical_path": path,
        "steps": len(ids),
        "speedup": len(ids) / len(path),
        "edges": ordered["edges"],
    }
