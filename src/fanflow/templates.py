"""Template variables: `${input}`, `${node.key.a[0].b}`, fallbacks `${a.x ?? b.y ?? "none"}`.

A value that is exactly one template keeps its type (list, dict, number); templates embedded in
text render as text (dicts and lists as JSON). `$${` escapes a literal `${`. Templates are parsed
once when a workflow loads; rendering walks the pre-parsed parts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

_TEMPLATE = re.compile(r"\$\$\{|\$\{([^}]*)\}")
_IDENT = r"[A-Za-z_][A-Za-z0-9_-]*"
_PATH = re.compile(rf"^\s*({_IDENT})((?:\.{_IDENT}|\[\d+\])*)\s*$")
_STEP = re.compile(rf"\.({_IDENT})|\[(\d+)\]")


class TemplateSyntaxError(ValueError):
    pass


class MissingValue(LookupError):
    """A template names something that has no value (yet): a node that did not run, a key that
    is absent. `root` is the first name in the path."""

    def __init__(self, message: str, root: str):
        super().__init__(message)
        self.root = root


@dataclass(frozen=True, slots=True)
class Ref:
    root: str
    steps: tuple[str | int, ...]
    text: str

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


def _parse_expr(body: str) -> Expr:
    refs: list[Ref] = []
    literal: Any = _NO_LITERAL
    alternatives = body.split("??")
    for i, alt in enumerate(alternatives):
        m = _PATH.match(alt)
        if m:
            steps: list[str | int] = []
            for key, idx in _STEP.findall(m.group(2)):
                steps.append(int(idx) if idx else key)
            refs.append(Ref(m.group(1), tuple(steps), alt.strip()))
            continue
        if i == len(alternatives) - 1 and i > 0:
            try:
                literal = json.loads(alt)
                continue
            except ValueError:
                pass
        raise TemplateSyntaxError(
            f"'${{{body}}}' is not a valid template: expected a name such as ${{node.key}} or "
            "${input}, optionally followed by .key or [index] steps and '?? fallback' alternatives"
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
        return [r for p in self.parts if isinstance(p, Expr) for r in p.refs]


def parse(text: str) -> Template | str:
    """Parse a string; returns the plain string when it holds no template."""
    if "${" not in text:
        return text
    parts: list[str | Expr] = []
    pos = 0
    buf = ""
    for m in _TEMPLATE.finditer(text):
        buf += text[pos : m.start()]
        pos = m.end()
        if m.group(0) == "$${":
            buf += "${"
            continue
        if buf:
            parts.append(buf)
            buf = ""
        parts.append(_parse_expr(m.group(1)))
    buf += text[pos:]
    if "${" in buf.replace("$${", "") and not any(isinstance(p, Expr) for p in parts):
        raise TemplateSyntaxError(f"unclosed template in '{text}': add the closing '}}'")
    if buf:
        parts.append(buf)
    if not any(isinstance(p, Expr) for p in parts):
        return "".join(p for p in parts if isinstance(p, str))
    return Template(tuple(parts))


def compile_value(value: Any) -> Any:
    """Pre-parse every string in a JSON value; the result is rendered with `render`."""
    if isinstance(value, str):
        return parse(value)
    if isinstance(value, dict):
        return {k: compile_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [compile_value(v) for v in value]
    return value


def has_templates(compiled: Any) -> bool:
    if isinstance(compiled, Template):
        return True
    if isinstance(compiled, dict):
        return any(has_templates(v) for v in compiled.values())
    if isinstance(compiled, list):
        return any(has_templates(v) for v in compiled)
    return False


def iter_refs(compiled: Any, path: str = ""):
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


# --- rendering -------------------------------------------------------------------------------


def to_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, bool | dict | list):
        return json.dumps(value, ensure_ascii=False, default=str)
    return str(value)


def _step_into(value: Any, step: str | int, ref: Ref) -> Any:
    if isinstance(value, str) and value[:1] in "[{":
        # Shell stdout or an HTTP body holding JSON can be indexed into directly.
        try:
            value = json.loads(value)
        except ValueError:
            pass
    try:
        if isinstance(step, int):
            return value[step]
        if isinstance(value, dict):
            return value[step]
        return getattr(value, step)
    except (KeyError, IndexError, TypeError, AttributeError):
        raise MissingValue(f"${{{ref.text}}}: no value at '{step}'", ref.root) from None


def resolve_ref(ref: Ref, scope: Any) -> Any:
    value = scope(ref.root) if callable(scope) else _lookup(scope, ref.root)
    for step in ref.steps:
        value = _step_into(value, step, ref)
    return value


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


def render_for_shell(
    compiled: Any, scope: Any, prefix: str = "FANFLOW_V"
) -> tuple[str, dict[str, str]]:
    """Render a shell command so that substituted values are data, never code.

    Each template becomes a reference to an environment variable holding its value, quoted for
    the context it appears in (bare, inside "double quotes", inside 'single quotes'), so quotes,
    `;`, `$(…)`, backticks and newlines in a value execute nothing while `echo "Hi ${name}"`
    still prints the name.
    """
    if not isinstance(compiled, Template):
        return to_text(compiled), {}
    env: dict[str, str] = {}
    out: list[str] = []
    quote = ""  # current quoting context of the literal text: "", '"' or "'"
    for part in compiled.parts:
        if isinstance(part, str):
            out.append(part)
            quote = _scan_quotes(part, quote)
            continue
        var = f"{prefix}{len(env)}"
        env[var] = to_text(eval_expr(part, scope))
        if quote == '"':
            out.append(f"${{{var}}}")
        elif quote == "'":
            out.append(f"'\"${{{var}}}\"'")
        else:
            out.append(f'"${{{var}}}"')
    return "".join(out), env


def _scan_quotes(text: str, quote: str) -> str:
    i = 0
    while i < len(text):
        c = text[i]
        if quote == "'":
            if c == "'":
                quote = ""
        elif c == "\\":
            i += 1  # an escaped character never opens or closes a quote
        elif quote == '"':
            if c == '"':
                quote = ""
        elif c in "'\"":
            quote = c
        i += 1
    return quote
