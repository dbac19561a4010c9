"""Static checks of an llm node's params (`fanflow validate` and before every run).

Each problem is (message, param, hint). Templated values (``${...}``) are only known at run
time and are checked then.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fanflow.io.images import MEDIA_TYPES, is_url
from fanflow.io.providers import resolve_model
from fanflow.io.schema import SchemaProblem, normalize_schema, parse_json, validation_error

Found = tuple[str, str | None, str | None]


def _templated(value: Any) -> bool:
    if isinstance(value, str):
        return "${" in value
    if isinstance(value, dict):
        return any(_templated(v) for v in value.values())
    if isinstance(value, list):
        return any(_templated(v) for v in value)
    return False


def check_llm_params(params: dict[str, Any]) -> list[Found]:
    found: list[Found] = []
    found += check_model(params.get("model"))
    schema: dict[str, Any] | None = None
    raw = params.get("output_schema")
    if raw is not None and not _templated(raw):
        try:
            schema = normalize_schema(raw)
        except SchemaProblem as exc:
            found.append((
                f"output_schema at {exc.path}: {exc.message}", "output_schema",
                'a JSON Schema such as {"type": "object", "properties": {"items": {"type": '
                '"array"}}}, or the short form {"items": "string[]"}',
            ))  # fmt: skip
    mock = params.get("mock_response")
    if schema is not None and mock is not None and not _templated(mock):
        for i, candidate in enumerate(mock if isinstance(mock, list) else [mock]):
            where = f"mock_response[{i}]" if isinstance(mock, list) else "mock_response"
            try:
                value = parse_json(candidate) if isinstance(candidate, str) else candidate
            except ValueError as exc:
                found.append((f"{where} is not valid JSON for output_schema ({exc})",
                              "mock_response", "give the JSON value itself, or a JSON string"))  # fmt: skip
                continue
            problem = validation_error(value, schema)
            if problem:
                found.append((f"{where} does not satisfy output_schema {problem}",
                              "mock_response", None))  # fmt: skip
    if isinstance(mock, list) and not mock:
        found.append(("mock_response is an empty list", "mock_response", None))
    found += _check_latency(params.get("latency"))
    found += _check_images(params.get("images"))
    return found


def check_model(model: Any) -> list[Found]:
    """The wrong provider for a model name: an Anthropic model sent to OpenAI or vice versa."""
    if not isinstance(model, str) or not model.strip() or "${" in model:
        return []
    provider, name = resolve_model(model, {})
    low = name.lower()
    if provider == "anthropic" and not low.startswith("claude"):
        return [(f"model '{model}': '{name}' is not an Anthropic model", "model",
                 f"for OpenAI or a compatible server write '{name}' or 'openai/{name}'")]  # fmt: skip
    if provider in ("openai", "ollama") and low.startswith("claude"):
        return [(f"model '{model}': '{name}' is an Anthropic model, not a {provider} one",
                 "model", f"write 'anthropic/{name}' or '{name}'")]  # fmt: skip
    if provider == "openai" and model.lower().startswith(("gemini/", "groq/", "mistral/")):
        prefix = model.split("/", 1)[0]
        return [(f"model '{model}': no provider '{prefix}' is configured", "model",
                 f"an OpenAI-compatible {prefix} endpoint works through OPENAI_BASE_URL with "
                 f"model '{name.split('/', 1)[-1]}'")]  # fmt: skip
    return []


def _check_latency(spec: Any) -> list[Found]:
    if spec is None or _templated(spec):
        return []
    ok = (isinstance(spec, int | float) and not isinstance(spec, bool) and spec >= 0) or (
        isinstance(spec, list)
        and len(spec) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in spec)
        and spec[0] <= spec[1]
    )
    if ok:
        return []
    return [(f"latency must be seconds (>= 0) or a range [low, high], got {spec!r}", "latency",
             "e.g. 0.3 or [0.2, 0.6]")]  # fmt: skip


def _check_images(spec: Any) -> list[Found]:
    if spec is None or _templated(spec):
        return []
    items = [spec] if isinstance(spec, str) else spec
    if not isinstance(items, list) or not all(isinstance(i, str) for i in items):
        return [("images must be a list of paths or URLs", "images", None)]
    found: list[Found] = []
    for item in items:
        if is_url(item):
            continue
        if Path(item).suffix.lower() not in MEDIA_TYPES:
            found.append((f"image {item}: unsupported format", "images",
                          f"use {', '.join(sorted(MEDIA_TYPES))} files, or a URL"))  # fmt: skip
    return found
