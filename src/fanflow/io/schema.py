"""Structured output for the llm node: schemas (full JSON Schema or pflow's short form), strict
JSON parsing of a reply, local validation with precise paths, and a value that satisfies a
schema (what the offline `echo` provider answers).

Short form (a dict with no JSON Schema keyword at its top level)::

    {"title": "string", "tags": "string[]", "score": "number?", "author": {"name": "string"}}

becomes an object schema whose properties are all required (a trailing ``?`` makes one
optional) and that allows no other keys. Type names: string, number, integer, boolean, object,
array, null and the Python aliases str, int, float, bool, list, dict; ``T[]`` / ``list[T]`` /
``["T"]`` are arrays of T; a nested dict is a nested object; a dict with ``type`` is a schema.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from jsonschema import SchemaError  # type: ignore[import-untyped]
from jsonschema.validators import validator_for  # type: ignore[import-untyped]

# Keys that mark a dict as JSON Schema rather than the short form.
SCHEMA_MARKERS = frozenset(
    {"type", "$ref", "$schema", "$defs", "definitions", "oneOf", "anyOf", "allOf", "enum",
     "const", "properties", "items", "not"}
)  # fmt: skip
_ALIASES = {
    "string": "string", "str": "string", "text": "string",
    "number": "number", "float": "number",
    "integer": "integer", "int": "integer",
    "boolean": "boolean", "bool": "boolean",
    "object": "object", "dict": "object",
    "array": "array", "list": "array",
    "null": "null", "none": "null",
}  # fmt: skip
_LIST_OF = re.compile(r"^(?:list\[(.+)\]|(.+)\[\])$")
EXCERPT_CHARS = 200
ARRAY_ITEMS = 5  # synthesised arrays: one item per phrase of the prompt, at most this many


class SchemaProblem(ValueError):
    """A schema that cannot be used; `path` is where in the authored schema ($-rooted)."""

    def __init__(self, message: str, path: str = "$") -> None:
        super().__init__(message)
        self.message = message
        self.path = path


# --------------------------------------------------------------------------- normalising


def is_short_form(schema: dict[str, Any]) -> bool:
    return bool(schema) and not any(k in SCHEMA_MARKERS for k in schema)


def normalize_schema(raw: Any) -> dict[str, Any]:
    """The authored `output_schema` as a checked JSON Schema (short form expanded)."""
    if not isinstance(raw, dict):
        raise SchemaProblem(f"output_schema must be an object (a JSON Schema), got {_kind(raw)}")
    schema = _short_object(raw, "$") if is_short_form(raw) else raw
    check_schema(schema)
    return schema


def _short_object(spec: dict[str, Any], path: str) -> dict[str, Any]:
    props: dict[str, Any] = {}
    required: list[str] = []
    for name, value in spec.items():
        key = str(name)
        optional = False
        if isinstance(value, str) and value.endswith("?"):
            value, optional = value[:-1], True
        props[key] = _short_value(value, f"{path}.{key}")
        if not optional:
            required.append(key)
    return {"type": "object", "properties": props, "required": required,
            "additionalProperties": False}  # fmt: skip


def _short_value(value: Any, path: str) -> dict[str, Any]:
    if isinstance(value, str):
        name = value.strip()
        if name.lower() in _ALIASES:
            return {"type": _ALIASES[name.lower()]}
        m = _LIST_OF.match(name)
        if m:
            return {"type": "array", "items": _short_value(m.group(1) or m.group(2), path + "[]")}
        raise SchemaProblem(
            f"unknown type {value!r} in the short output_schema form "
            f"(use string, number, integer, boolean, object, array, T[] or a nested object)",
            path,
        )
    if isinstance(value, list):
        if len(value) != 1:
            raise SchemaProblem("a list in the short form holds exactly one item type", path)
        return {"type": "array", "items": _short_value(value[0], path + "[0]")}
    if isinstance(value, dict):
        if "type" in value and isinstance(value["type"], str):
            alias = _ALIASES.get(value["type"].lower())
            return {**value, "type": alias} if alias else value
        if is_short_form(value):
            return _short_object(value, path)
        return value
    raise SchemaProblem(f"cannot read {_kind(value)} as a type in the short form", path)


def check_schema(schema: dict[str, Any]) -> None:
    cls = validator_for(schema)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        raise SchemaProblem(f"invalid output_schema: {exc.message}", exc.json_path or "$") from None


# --------------------------------------------------------------------------- parsing, validating

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.S)


def _reject_constant(value: str) -> Any:
    raise ValueError(f"{value} is not valid JSON")


def parse_json(text: str) -> Any:
    """A reply as strict JSON (a ```json fence around it is tolerated). Raises ValueError."""
    m = _FENCE.match(text)
    body = m.group(1) if m else text
    value = json.loads(body, parse_constant=_reject_constant)
    _finite(value)
    return value


def _finite(value: Any) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("numbers must be finite")
    if isinstance(value, dict):
        for v in value.values():
            _finite(v)
    elif isinstance(value, list):
        for v in value:
            _finite(v)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit] + "…"


def validation_error(value: Any, schema: dict[str, Any]) -> str | None:
    """None when `value` satisfies `schema`, else one line: where in the value, what is wrong,
    and which schema keyword said so."""
    validator = validator_for(schema)(schema)
    errors = sorted(validator.iter_errors(value), key=lambda e: (len(e.path), list(e.path)))
    if not errors:
        return None
    err = errors[0]
    keyword_path = "/".join(str(p) for p in err.schema_path)
    return f"at {err.json_path}: {err.message} (schema: {keyword_path or '$'})"


def check_reply(text: str, schema: dict[str, Any]) -> tuple[Any, str | None]:
    """(parsed value, None) or (None, the reason the reply is not usable)."""
    try:
        value = parse_json(text)
    except ValueError as exc:
        return None, f"reply is not valid JSON ({exc})"
    problem = validation_error(value, schema)
    return (None, problem) if problem else (value, None)


# --------------------------------------------------------------------------- provider shapes

ROOT_KEY = "value"


def object_root(schema: dict[str, Any]) -> tuple[dict[str, Any], bool]:
    """Providers require an object at the root (OpenAI json_schema, Anthropic tool input).
    Another root is wrapped as {"value": ...}; the bool says to unwrap the reply."""
    if schema.get("type") == "object":
        return schema, False
    wrapped: dict[str, Any] = {"type": "object", "properties": {ROOT_KEY: schema},
                               "required": [ROOT_KEY], "additionalProperties": False}  # fmt: skip
    for key in ("$defs", "definitions"):
        if key in schema:
            wrapped[key] = schema[key]
    return wrapped, True


# --------------------------------------------------------------------------- synthesis (echo)


class _Phrases:
    """Text for synthesised strings: the prompt's list items and headings when it has some
    (else its lines), markdown markers stripped, in order, each once."""

    def __init__(self, prompt: str) -> None:
        marked: list[str] = []
        plain: list[str] = []
        seen: set[str] = set()
        for line in prompt.splitlines():
            m = _MARKER.match(line)
            text = line[m.end() :] if m else line
            text = text.strip().strip("`*_").strip()
            if not text or text in seen or text.startswith("```"):
                continue
            seen.add(text)
            (marked if m else plain).append(text[:120])
        self.items = marked or [t for t in plain if not t.endswith(":")] or plain
        if not self.items:
            self.items = [" ".join(prompt.split())[:120] or "echo"]
        self.next = 0

    def take(self) -> str:
        text = self.items[self.next % len(self.items)]
        self.next += 1
        return text


_MARKER = re.compile(r"^\s*(?:#{1,6}|[*+-]|\d+[.)])\s+")


def synthesize(schema: dict[str, Any], prompt: str) -> Any:
    """A deterministic value satisfying `schema`, its strings taken from the prompt's lines."""
    return _synth(schema, schema, _Phrases(prompt), 0)


def _resolve(ref: str, root: dict[str, Any]) -> dict[str, Any]:
    node: Any = root
    if ref.startswith("#"):
        for part in ref.lstrip("#").split("/"):
            if part:
                node = node.get(part.replace("~1", "/").replace("~0", "~"), {})
        return node if isinstance(node, dict) else {}
    return {}


def _synth(schema: Any, root: dict[str, Any], words: _Phrases, depth: int) -> Any:
    if not isinstance(schema, dict) or depth > 12:
        return None
    if "$ref" in schema:
        return _synth(_resolve(schema["$ref"], root), root, words, depth + 1)
    if "const" in schema:
        return schema["const"]
    if "default" in schema:
        return schema["default"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):
            return _synth(schema[key][0], root, words, depth + 1)
    if schema.get("allOf"):
        merged: dict[str, Any] = {}
        for part in schema["allOf"]:
            if isinstance(part, dict):
                merged.update(part)
        rest = {k: v for k, v in schema.items() if k != "allOf"}
        return _synth({**merged, **rest}, root, words, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), kind[0] if kind else None)
    if kind is None:
        kind = "object" if "properties" in schema else "array" if "items" in schema else "string"
    if kind == "object":
        props = schema.get("properties") or {}
        return {k: _synth(v, root, words, depth + 1) for k, v in props.items()}
    if kind == "array":
        lo = int(schema.get("minItems", 0))
        hi = int(schema.get("maxItems", max(lo, ARRAY_ITEMS)))
        count = max(lo, min(hi, len(words.items), ARRAY_ITEMS))
        return [_synth(schema.get("items") or {}, root, words, depth + 1) for _ in range(count)]
    if kind in ("integer", "number"):
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        value: float = 1 if low is None else low + (1 if "exclusiveMinimum" in schema else 0)
        if high is not None and value > high:
            value = high
        return int(value) if kind == "integer" else float(value)
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    text = words.take()
    lo_len = int(schema.get("minLength", 0))
    hi_len = schema.get("maxLength")
    if hi_len is not None:
        text = text[: int(hi_len)]
    if len(text) < lo_len:
        text = text + "." * (lo_len - len(text))
    return text


def _kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)  # fmt: skip


__all__ = [
    "SchemaProblem",
    "check_reply",
    "excerpt",
    "normalize_schema",
    "object_root",
    "parse_json",
    "synthesize",
    "validation_error",
]
