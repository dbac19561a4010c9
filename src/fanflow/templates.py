"""Template variables: `${input}`, `${node.key.a[0].b}`, fallbacks `${a.x ?? b.y ?? "none"}`.

The semantics are written down in docs/templates.md. In short: a value that is exactly one
template keeps its type (list, dict, number); templates embedded in text render as text (dicts and
lists as JSON). A path step reads a dict key, a list index or into JSON text, never an attribute.
`$${` is a literal `${`. Templates are parsed once when a workflow loads; rendering walks the
pre-parsed parts.
"""

from __future__ import annotations

import json
import re
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

_OPEN = re.compile(r"\$\$\{|\$\{")  # `$${` (an escape) wins over the `${` inside it
_ROOT = r"[A-Za-z_][A-Za-z0-9_-]*"  # node ids and input names
_KEY = r"[^\W\d][\w-]*"  # a `.key` step: identifier-like, letters of any script, `-` allowed
_STATIC_STEP = r"""\.[^\W\d][\w-]*|\[\s*-?\d+\s*\]|\[\s*(?:"(?:[^"\\]|\\.)*"|'[^']*')\s*\]"""
_STEP_RE = (
    r"""\.([^\W\d][\w-]*)|\[\s*(-?\d+)\s*\]|\[\s*("(?:[^"\\]|\\.)*"|'[^']*')\s*\]"""
    # a dynamic index, pflow's `[${__index__}]` / `[${item.idx}]`: a path whose value is the step
    rf"|\[\s*\$\{{\s*({_ROOT}(?:{_STATIC_STEP})*)\s*\}}\s*\]"
    # every item of a list: `${map.results[*].summary}` is the list of each result's summary
    r"|\[\s*(\*)\s*\]"
)


class Every:
    """The `[*]` step: the rest of the path is read from every item of a list."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "[*]"


EVERY = Every()
_PATH = re.compile(rf"\s*({_ROOT})((?:{_STEP_RE})*)\s*")
_STEP = re.compile(_STEP_RE)
_PLAIN_KEY = re.compile(_KEY)
_SINGLE_QUOTED = re.compile(r"\s*'([^']*)'\s*")
_JSON_SPACE = re.compile(r"[ \t\n\r]*")  # the whitespace JSON itself allows around a value

_ESCAPE_HINT = "write '$${' for a literal '${'"


class TemplateSyntaxError(ValueError):
    """A malformed template. `path` is where `compile_value` found it inside the value it
    compiled (`.command`, `.headers.Authorization`, `[2]`), "" for the value itself."""

    path: str = ""


class MissingValue(LookupError):
    """A template names something that has no value (yet): a node that did not run, a key that
    is absent. `root` is the first name in the path."""

    def __init__(self, message: str, root: str):
        super().__init__(message)
        self.root = root


@dataclass(frozen=True, slots=True)
class Ref:
    root: str
    # a Ref step is a dynamic index (its value is the step); the EVERY step maps the rest
    steps: tuple[str | int | Ref | Every, ...]
    text: str
    nested: tuple[Ref, ...] = ()  # the dynamic indexes' refs (they are read too)

    @property
    def first_key(self) -> str | None:
        return self.steps[0] if self.steps and isinstance(self.steps[0], str) else None


_NO_LITERAL = object()


@dataclass(frozen=True, slots=True)
class Expr:
    """`a ?? b ?? "lit"`: the first alternative that resolves wins."""

    refs: tuple[Ref, ...]
    literal: Any = _NO_LITERAL  # a trailing JSON literal fallback
    text: str = ""


def _outside_quotes(text: str, start: int = 0) -> Iterator[int]:
    """Indexes of the characters of `text[start:]` outside "…" (JSON, backslash escapes) and '…'
    strings: a `}` or `??` inside a quoted key or literal neither ends nor splits a template."""
    quote = ""
    i = start
    while i < len(text):
        c = text[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 1
            elif c == quote:
                quote = ""
        elif c in "\"'":
            quote = c
        else:
            yield i
        i += 1


def _has_quote(text: str) -> bool:
    return '"' in text or "'" in text


def _closing_brace(text: str, start: int) -> int:
    end = text.find("}", start)
    if end >= 0 and "${" in text[start:end]:  # a dynamic index inside: `${a[${__index__}]}`
        depth = 0
        for i in _outside_quotes(text, start):
            if text.startswith("${", i):
                depth += 1
            elif text[i] == "}":
                if depth == 0:
                    return i
                depth -= 1
        return -1
    if end < 0 or not _has_quote(text[start:end]):
        return end  # no quote before it: the scan below would stop at the same place
    for i in _outside_quotes(text, start):
        if text[i] == "}":
            return i
    return text.find("}", start)  # an unbalanced quote: the body is invalid, say so below


def _alternatives(body: str) -> list[str]:
    if not _has_quote(body):
        return body.split("??")  # what the scan below gives when nothing is quoted
    alternatives: list[str] = []
    start = 0
    for i in _outside_quotes(body):
        if i >= start and body.startswith("??", i):
            alternatives.append(body[start:i])
            start = i + 2
    return [*alternatives, body[start:]]


def _steps(text: str) -> tuple[str | int | Ref | Every, ...]:
    steps: list[str | int | Ref | Every] = []
    for key, index, quoted, dynamic, every in _STEP.findall(text):
        if every:
            steps.append(EVERY)
        elif index:
            steps.append(int(index))
        elif quoted:
            steps.append(json.loads(quoted) if quoted[0] == '"' else quoted[1:-1])
        elif dynamic:
            m = _PATH.fullmatch(dynamic)
            assert m is not None  # the step pattern only matches a path here
            steps.append(Ref(m.group(1), _steps(m.group(2)), dynamic.strip()))
        else:
            steps.append(key)
    return tuple(steps)


def _ref(root: str, steps: tuple[str | int | Ref | Every, ...], text: str) -> Ref:
    nested = tuple(s for s in steps if isinstance(s, Ref))
    return Ref(root, steps, text, nested) if nested else Ref(root, steps, text)


def _parse_expr(body: str) -> Expr:
    if not body.strip():
        raise TemplateSyntaxError(
            "empty template '${}': write a name such as ${node.key} inside, or '$${}' for a "
            "literal '${}'"
        )
    refs: list[Ref] = []
    literal: Any = _NO_LITERAL
    alternatives = _alternatives(body)
    for i, alt in enumerate(alternatives):
        m = _PATH.fullmatch(alt)
        if m:
            try:
                refs.append(_ref(m.group(1), _steps(m.group(2)), alt.strip()))
                continue
            except ValueError:  # a "quoted key" with a bad escape
                pass
        elif i == len(alternatives) - 1 and i > 0:
            if "${" in alt:
                raise TemplateSyntaxError(
                    f"'${{{body}}}': a fallback literal cannot hold a template; write "
                    "${a ?? b} to fall back to another value"
                )
            single = _SINGLE_QUOTED.fullmatch(alt)
            if single:
                literal = single.group(1)
                continue
            try:
                literal = json.loads(alt)
                continue
            except ValueError:
                pass
        raise TemplateSyntaxError(
            f"'${{{body}}}' is not a valid template: expected a name such as ${{node.key}} or "
            "${input}, then .key, [index] or [\"key\"] steps and '?? fallback' alternatives; "
            f"if it is meant for the shell (e.g. ${{VAR:-default}}), write '$${{{body}}}'"
        )
    return Expr(tuple(refs), literal, body.strip())


@dataclass(frozen=True, slots=True)
class Template:
    parts: tuple[str | Expr, ...]

    @property
    def whole(self) -> Expr | None:
        """The expression when the string is exactly one template (type-preserving)."""
        if len(self.parts) == 1 and isinstance(self.parts[0], Expr):
            return self.parts[0]
        return None

    def refs(self) -> list[Ref]:
        """Every reference read, a dynamic index's too."""
        refs = [r for p in self.parts if isinstance(p, Expr) for r in p.refs]
        for r in refs:
            if r.nested:
                refs += r.nested  # (appended while iterating: nested ones are walked too)
        return refs


def parse(text: str) -> Template | str:
    """Parse a string; returns the plain string when it holds no template.

    `$${` is a literal `${` wherever it stands; the literal parts of a Template are plain strings
    (an escaped `${X}` among them reaches a shell command as `${X}`)."""
    if "${" not in text:
        return text
    parts: list[str | Expr] = []
    literal: list[str] = []
    pos = 0
    while (m := _OPEN.search(text, pos)) is not None:
        literal.append(text[pos : m.start()])
        if m.group() == "$${":
            literal.append("${")
            pos = m.end()
            continue
        end = _closing_brace(text, m.end())
        if end < 0:
            shown = text[m.start() : m.start() + 40] + ("…" if len(text) > m.start() + 40 else "")
            raise TemplateSyntaxError(
                f"unclosed template '{shown}': add the closing '}}', or {_ESCAPE_HINT}"
            )
        if text_so_far := "".join(literal):
            parts.append(text_so_far)
        literal = []
        parts.append(_parse_expr(text[m.end() : end]))
        pos = end + 1
    literal.append(text[pos:])
    rest = "".join(literal)
    if not parts:
        return rest
    if rest:
        parts.append(rest)
    return Template(tuple(parts))


def compile_value(value: Any, path: str = "") -> Any:
    """Pre-parse every string in a JSON value; the result is rendered with `render`. A syntax
    error carries the path of the string it is in (`TemplateSyntaxError.path`)."""
    if isinstance(value, str):
        try:
            return parse(value)
        except TemplateSyntaxError as exc:
            exc.path = path
            raise
    if isinstance(value, dict):
        return {k: compile_value(v, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v, f"{path}[{i}]") for i, v in enumerate(value)]
    return value


def has_templates(compiled: Any) -> bool:
    if isinstance(compiled, Template):
        return True
    if isinstance(compiled, dict):
        return any(has_templates(v) for v in compiled.values())
    if isinstance(compiled, list):
        return any(has_templates(v) for v in compiled)
    return False


def iter_refs(compiled: Any, path: str = "") -> Iterator[tuple[str, Ref]]:
    """Yield (field path, Ref) for every reference inside a compiled value."""
    if isinstance(compiled, Template):
        for ref in compiled.refs():
            yield path, ref
    elif isinstance(compiled, dict):
        for k, v in compiled.items():
            yield from iter_refs(v, f"{path}.{k}" if path else k)
    elif isinstance(compiled, list):
        for i, v in enumerate(compiled):
            yield from iter_refs(v, f"{path}[{i}]")


# --- shell variables written as templates ----------------------------------------------------


def shell_variable_hint(name: str, params: Any) -> str | None:
    """The hint for `${name}` that names no node or input, when the node's text uses `name` as a
    shell variable (`for name in`, `read name`, `name=`, `$name`) or `name` looks like an
    environment variable (`HOME`, `API_KEY`)."""
    fix = f"write $${{{name}}} (or ${name}) so fanflow leaves it to the shell"
    n = re.escape(name)
    usage = re.compile(
        rf"\b(?:for|select)\s+{n}\s+in\b"  # for f in …, select f in …
        rf"|\bread\b[^;&|\n]*?\s{n}(?!\w)"  # read f, while read -r a f
        rf"|(?:^|[\s;&|(`]){n}\+?="  # f=…, export f=…, for ((f=0; …))
        rf"|\${n}(?!\w)"  # $f
    )
    if any(usage.search(text) for text in _strings(params)):
        return f"this looks like a shell variable: {fix}"
    if re.fullmatch(r"[A-Z][A-Z0-9_]*", name):
        return (
            f"declare it under 'inputs'; if it is an environment variable of a shell command, {fix}"
        )
    return None


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


# --- JSON text -------------------------------------------------------------------------------

_CACHE_MIN_CHARS = 4096  # shorter texts decode in microseconds: not worth keeping
_CACHE_MAX_CHARS = 64 * 1024 * 1024  # all cached texts together
# Keyed by the text object itself (its id, the entry keeping it alive): every reader of one
# output shares the stored string, while another run's equal text is a new object, so a value
# decoded (and perhaps mutated by a node) in one run never reaches the next.
_cache: OrderedDict[int, tuple[str, Any]] = OrderedDict()
_cache_chars = 0
_cache_lock = threading.Lock()


def json_text(text: str) -> list[Any] | dict[str, Any] | None:
    """The list or object that JSON text holds, or None when the text holds no JSON list/object.

    The one rule for text that holds JSON (template path steps, batch `items` given as text):
    after JSON whitespace (space, tab, newline, carriage return) the text starts with `[` or `{`,
    and the whole text parses. Text that starts so but does not parse raises ValueError (a
    json.JSONDecodeError naming line and column). Numbers, strings, true/false/null do not count:
    there is nothing to step into or batch over. A long text is decoded once and the decoded
    value shared between its renders, like any structured output: nodes must not mutate it."""
    first = _JSON_SPACE.match(text).end()  # type: ignore[union-attr]  # `*` always matches
    if text[first : first + 1] not in ("[", "{"):
        return None
    if len(text) < _CACHE_MIN_CHARS:
        return json.loads(text)
    with _cache_lock:
        entry = _cache.get(id(text))
        if entry is not None and entry[0] is text:
            _cache.move_to_end(id(text))
            return entry[1]
    value = json.loads(text)
    _remember(text, value)
    return value


def _remember(text: str, value: Any) -> None:
    global _cache_chars
    if len(text) > _CACHE_MAX_CHARS:
        return
    with _cache_lock:
        if id(text) in _cache:
            return
        _cache[id(text)] = (text, value)
        _cache_chars += len(text)
        while _cache_chars > _CACHE_MAX_CHARS:
            _, (old, _) = _cache.popitem(last=False)
            _cache_chars -= len(old)


def clear_json_cache() -> None:
    """Forget decoded JSON texts (a long-lived process may call it when a run ends)."""
    global _cache_chars
    with _cache_lock:
        _cache.clear()
        _cache_chars = 0


# --- rendering -------------------------------------------------------------------------------


def _json_default(value: Any) -> Any:
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if isinstance(value, tuple | set | frozenset):
        return list(value)
    return str(value)


def to_text(value: Any) -> str:
    """A value as text: strings as they are, bytes as UTF-8, null/booleans/objects/lists as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", errors="replace")
    if value is None or isinstance(value, bool | dict | list | tuple):
        return json.dumps(value, ensure_ascii=False, default=_json_default)
    return str(value)


def _where(ref: Ref, n: int) -> str:
    """The path of the value that step `n` of `ref` stands on, e.g. `a.result.items[0]`."""
    out = [ref.root]
    for step in ref.steps[:n]:
        if isinstance(step, Ref):
            out.append(f"[${{{step.text}}}]")
        elif isinstance(step, Every):
            out.append("[*]")
        elif isinstance(step, int):
            out.append(f"[{step}]")
        elif _PLAIN_KEY.fullmatch(step):
            out.append(f".{step}")
        else:
            out.append(f"[{json.dumps(step, ensure_ascii=False)}]")
    return "".join(out)


def _no_value(ref: Ref, n: int, why: str) -> MissingValue:
    step = ref.steps[n]
    at = f"[{step}]" if isinstance(step, int) else f"'{step}'"
    return MissingValue(f"${{{ref.text}}}: no value at {at} ({_where(ref, n)} {why})", ref.root)


def _keys(value: dict[Any, Any]) -> str:
    if not value:
        return "is an empty object"
    keys = [str(k) for k in list(value)[:8]]
    return "has keys: " + ", ".join(keys) + (", …" if len(value) > 8 else "")


def _decoded(text: str, ref: Ref, n: int) -> Any:
    """The list or object JSON text holds, for step `n` to read into (else MissingValue)."""
    try:
        decoded = json_text(text)
    except ValueError as exc:
        raise _no_value(ref, n, f"looks like JSON but does not parse: {exc}") from None
    if decoded is None:
        raise _no_value(ref, n, "is text, not JSON")
    return decoded


def _step_into(value: Any, step: str | int | Ref, ref: Ref, n: int, scope: Any = None) -> Any:
    """One path step: a dict key, a list index, or into JSON text. Never an attribute."""
    if isinstance(step, Ref):  # a dynamic index: its value (a whole number or a key) is the step
        step = _dynamic_step(resolve_ref(step, scope), step)
    if isinstance(value, str):
        value = _decoded(value, ref, n)
    if isinstance(value, dict):
        if step in value:
            return value[step]
        raise _no_value(ref, n, _keys(value))
    if isinstance(value, list | tuple):
        if not isinstance(step, int):
            raise _no_value(ref, n, "is a list; use [index]")
        if -len(value) <= step < len(value):
            return value[step]
        raise _no_value(ref, n, f"has {len(value)} items")
    raise _no_value(ref, n, "is null" if value is None else f"is {type(value).__name__}")


def resolve_ref(ref: Ref, scope: Any) -> Any:
    value = scope(ref.root) if callable(scope) else _lookup(scope, ref.root)
    return _walk(value, ref, 0, scope)


def _walk(value: Any, ref: Ref, start: int, scope: Any) -> Any:
    steps = ref.steps
    for n in range(start, len(steps)):
        step = steps[n]
        if isinstance(step, Every):
            if isinstance(value, str):
                value = _decoded(value, ref, n)
            if not isinstance(value, list | tuple):
                raise _no_value(ref, n, "is not a list, so [*] has nothing to go over")
            # a null item (a batch's failed item) stays null: the list keeps item positions
            return [None if v is None else _walk(v, ref, n + 1, scope) for v in value]
        value = _step_into(value, step, ref, n, scope)
    return value


def _dynamic_step(value: Any, index: Ref) -> str | int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        return int(value) if value.lstrip("-").isdigit() else value
    raise MissingValue(
        f"${{{index.text}}} used as an index is {to_text(value)}: an index must be a whole number "
        "or a key",
        index.root,
    )


def _lookup(scope: dict[str, Any], root: str) -> Any:
    try:
        return scope[root]
    except KeyError:
        raise MissingValue(f"'{root}' has no value", root) from None


def eval_expr(expr: Expr, scope: Any) -> Any:
    error: MissingValue | None = None
    for ref in expr.refs:
        try:
            return resolve_ref(ref, scope)
        except MissingValue as exc:
            error = error or exc
    if expr.literal is not _NO_LITERAL:
        return expr.literal
    assert error is not None
    raise error


def render(compiled: Any, scope: Any) -> Any:
    """Render a compiled value. `scope` maps a root name to its value (a dict or a callable)."""
    if isinstance(compiled, Template):
        whole = compiled.whole
        if whole is not None:
            return eval_expr(whole, scope)
        return "".join(
            p if isinstance(p, str) else to_text(eval_expr(p, scope)) for p in compiled.parts
        )
    if isinstance(compiled, dict):
        return {k: render(v, scope) for k, v in compiled.items()}
    if isinstance(compiled, list):
        return [render(v, scope) for v in compiled]
    return compiled
