"""Static checks of an llm node's params (`fanflow validate` and before every run).

Each problem is (message, param, hint). Templated values (``${...}``) are only known at run
time and are checked then.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fanflow.io.images import MEDIA_TYPES, is_url
from fanflow.io.provider_config import BUILTIN_KINDS, Table
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


# OpenAI-compatible services a model prefix often names, with their base URLs (for the hint).
KNOWN_ENDPOINTS = {
    "gemini": "https://generativelanguage.googleapis.com/v1beta/openai",
    "groq": "https://api.groq.com/openai/v1",
    "mistral": "https://api.mistral.ai/v1",
    "openrouter": "https://openrouter.ai/api/v1",
    "together": "https://api.together.xyz/v1",
    "deepseek": "https://api.deepseek.com/v1",
    "fireworks": "https://api.fireworks.ai/inference/v1",
    "xai": "https://api.x.ai/v1",
    "perplexity": "https://api.perplexity.ai",
    "vllm": "http://localhost:8000/v1",
    "lmstudio": "http://localhost:1234/v1",
}


def check_model(
    model: Any, table: Table | None = None, env: Mapping[str, str] | None = None
) -> list[Found]:
    """The model against the providers: the wrong provider for a model name, a prefix naming
    no configured provider, a provider name alone without a default_model."""
    table = {} if table is None else table
    env = {} if env is None else env
    if model is None or (isinstance(model, str) and not model.strip()):
        return _check_no_model(table, env)
    if not isinstance(model, str) or "${" in model:
        return []
    provider, name = resolve_model(model, {}, table)
    found = _check_prefix(model, table)
    if found or (provider in table and not table[provider].builtin):
        return found
    return _check_kind(model, provider, name)


def _check_no_model(table: Table, env: Mapping[str, str]) -> list[Found]:
    if (env.get("FANFLOW_LLM_MODEL") or "").strip():
        return []
    named = sorted(cfg.name for cfg in table.values() if cfg.default_model)
    if len(named) < 2:
        return []
    return [(f"no model, and several providers set a default_model ({', '.join(named)})",
             "model", f"name one: \"model\": \"{named[0]}\" (its default_model) or "
             f"\"{named[0]}/<model>\", or set FANFLOW_LLM_MODEL")]  # fmt: skip


def _check_prefix(model: str, table: Table) -> list[Found]:
    prefix, sep, rest = model.strip().partition("/")
    low = prefix.lower()
    if not sep:
        cfg = table.get(low)
        if cfg is not None and not cfg.builtin and not cfg.default_model:
            return [(f"model '{model}': provider '{prefix}' has no default_model", "model",
                     f"write '{prefix}/<model>', or set default_model in {cfg.where}")]  # fmt: skip
        return []
    if low in table or low in BUILTIN_KINDS or low == "echo":
        return []
    configured = sorted(set(table) | set(BUILTIN_KINDS))
    close = difflib.get_close_matches(low, configured, n=1, cutoff=0.75)
    if close:
        return [(f"model '{model}': no provider '{prefix}' is configured", "model",
                 f"did you mean '{close[0]}/{rest}'?")]  # fmt: skip
    url = KNOWN_ENDPOINTS.get(low)
    if url is None:
        return []  # a Hugging Face style name (meta-llama/Llama-3), sent whole to openai
    entry = (
        f'"providers": {{"{low}": {{"base_url": "{url}", "api_key_env": "{low.upper()}_API_KEY"}}}}'
    )
    return [(f"model '{model}': no provider '{prefix}' is configured", "model",
             f"add {entry} to the workflow (or FANFLOW_PROVIDERS), then export "
             f"{low.upper()}_API_KEY")]  # fmt: skip


def _check_kind(model: str, provider: str, name: str) -> list[Found]:
    """An Anthropic model sent to OpenAI or vice versa."""
    low = name.lower()
    if provider == "anthropic" and not low.startswith("claude"):
        return [(f"model '{model}': '{name}' is not an Anthropic model", "model",
                 f"for OpenAI or a compatible server write '{name}' or 'openai/{name}'")]  # fmt: skip
    if provider in ("openai", "ollama") and low.startswith("claude"):
        return [(f"model '{model}': '{name}' is an Anthropic model, not a {provider} one",
                 "model", f"write 'anthropic/{name}' or '{name}'")]  # fmt: skip
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
