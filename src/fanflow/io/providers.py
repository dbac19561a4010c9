"""LLM providers behind one small interface of ours.

- :class:`OpenAIProvider`: OpenAI and any OpenAI-compatible server, Chat Completions API
  (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).
- :class:`AnthropicProvider`: the Anthropic Messages API (``ANTHROPIC_API_KEY`` or
  ``ANTHROPIC_AUTH_TOKEN``, ``ANTHROPIC_BASE_URL``).

Both speak their API directly over one lean aiohttp session (fanflow.io.lean_http): the official
SDKs cost ~15× the client CPU per call for one JSON POST. One client per provider per run
(:func:`get_provider` caches it in ``ctx.clients``); the engine retries, so there are no client
retries; HTTP errors become :class:`~fanflow.errors.NodeError` with ``retryable``/
``retry_after`` set for transient causes. API keys never appear in our messages: known keys and
``sk-...`` shapes are redacted.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import os
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fanflow.errors import NodeError
from fanflow.io.lean_http import LeanClient
from fanflow.io.provider_config import (
    ProviderConfig,
    Table,
    active_table,
    header_values,
    header_var_field,
    missing_vars,
)

if TYPE_CHECKING:
    from fanflow.execute.context import RunContext

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 120.0  # seconds per call; the node's `timeout` param overrides it
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens
_EXCERPT = 300
_PLACEHOLDER_KEY = "not-needed"
OPENAI_DEFAULT_URL = "https://api.openai.com/v1"
ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"  # the Messages API version header
OLLAMA_DEFAULT_URL = "http://localhost:11434/v1"  # for OpenAI-compatible servers that take no key

# Environment variables that hold secrets; their values are scrubbed from every message.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
_CONFIGURED_SECRET_VARS: set[str] = set()  # providers' `api_key_env` variables, once used
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9*_\-]{4,}|Bearer\s+\S+)")


@dataclass(frozen=True)
class Image:
    """An image for a vision model: a URL the provider fetches, or inline base64 data."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None  # base64

    def as_url(self) -> str:
        return self.url if self.url else f"data:{self.media_type};base64,{self.data}"


@dataclass
class ChatRequest:
    """One call, in our neutral shape; each provider turns it into its own API's."""

    messages: list[dict[str, str]]  # {"role": "user"|"assistant", "content": text}
    system: str | None
    model: str
    temperature: float | None = None
    max_tokens: int | None = None
    timeout: float | None = None
    schema: dict[str, Any] | None = None  # structured output; the root is an object
    images: Sequence[Image] = field(default_factory=tuple)  # on the first user message
    latency: Any = None  # offline providers: simulated latency (see latency_seconds)


class LLMProvider:
    """The interface every provider implements. One instance serves a whole run.

    Implement `chat` (the full request: history, schema, images), or only `complete` (one
    prompt): the base `chat` then sends a transcript and asks for JSON in the system prompt.
    """

    name: str = ""

    async def chat(self, req: ChatRequest) -> tuple[str, dict[str, int]]:
        """Return (text, {"input_tokens", "output_tokens", "total_tokens"}). With a schema the
        text is the JSON reply (the caller parses and validates it)."""
        if type(self).complete is LLMProvider.complete:
            raise NotImplementedError(f"{type(self).__name__} implements neither chat nor complete")
        if req.images:
            raise NodeError(f"LLM provider {self.name!r} does not support images", retryable=False)
        if len(req.messages) == 1:
            prompt = req.messages[0]["content"]
        else:
            prompt = "\n\n".join(f"{m['role'].title()}: {m['content']}" for m in req.messages)
        system = req.system
        if req.schema is not None:
            ask = "Reply with only a JSON value matching this JSON Schema: " + json.dumps(
                req.schema, ensure_ascii=False
            )
            system = f"{system}\n\n{ask}" if system else ask
        return await self.complete(
            prompt, system, req.model, req.temperature, req.max_tokens, timeout=req.timeout
        )

    async def complete(
        self,
        prompt: str,
        system: str | None,
        model: str,
        temperature: float | None,
        max_tokens: int | None,
        *,
        timeout: float | None = None,
    ) -> tuple[str, dict[str, int]]:
        """Return (text, {"input_tokens", "output_tokens", "total_tokens"})."""
        if type(self).chat is LLMProvider.chat:
            raise NotImplementedError(f"{type(self).__name__} implements neither chat nor complete")
        req = ChatRequest([{"role": "user", "content": prompt}], system, model, temperature,
                          max_tokens, timeout)  # fmt: skip
        return await self.chat(req)

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- model resolution


def resolve_model(
    model: str | None, env: Mapping[str, str] | None = None, table: Table | None = None
) -> tuple[str, str]:
    """Model string → (provider, model name sent to that provider).

    ``<provider>/x`` → that provider (built-in or configured in `table`, default: the run's);
    a configured provider's name alone → its ``default_model``; other names with a slash
    (``meta-llama/Llama-3`` served by an OpenAI-compatible server) and bare names → openai;
    ``claude-*`` → anthropic. Empty → ``FANFLOW_LLM_MODEL``, else the one configured
    provider with a ``default_model``, else ``gpt-4o-mini``.
    """
    env = os.environ if env is None else env
    table = active_table() if table is None else table
    name = (model or "").strip() or env.get("FANFLOW_LLM_MODEL", "").strip()
    if not name:
        default = default_provider(table)
        if default is not None and default.default_model:
            return default.name, default.default_model
        name = DEFAULT_MODEL
    if name.lower() == "echo":
        return "echo", "echo"
    prefix, sep, rest = name.partition("/")
    low = prefix.lower()
    cfg = table.get(low)
    if not sep and cfg is not None and cfg.default_model:
        return low, cfg.default_model
    if sep and rest and (cfg is not None or low in _PROVIDERS):
        return low, rest
    if name.lower().startswith("claude-"):
        return "anthropic", name
    return "openai", name


def default_provider(table: Table) -> ProviderConfig | None:
    """The configured provider a node with no model uses: the only one with a default_model."""
    found = [cfg for cfg in table.values() if cfg.default_model]
    return found[0] if len(found) == 1 else None


# --------------------------------------------------------------------------- redaction, errors


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove API keys from a message: known values (env and explicit) and key-like shapes."""
    names = (*SECRET_ENV_VARS, *_CONFIGURED_SECRET_VARS)
    values = [s for s in (*secrets, *(os.environ.get(v, "") for v in names)) if s]
    for value in sorted(set(values), key=len, reverse=True):
        if len(value) >= 4:
            text = text.replace(value, "***")
    return _KEY_SHAPES.sub("***", text)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Retry-After (seconds or HTTP date) or retry-after-ms → seconds; None when absent/bad."""
    if not headers:
        return None
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def is_transient_status(status: int) -> bool:
    return status in (408, 409, 425, 429) or status >= 500


def body_excerpt(body: Any, limit: int = _EXCERPT) -> str:
    if body is None:
        return ""
    if not isinstance(body, str):
        try:
            body = json.dumps(body, ensure_ascii=False)
        except (TypeError, ValueError):
            body = str(body)
    body = " ".join(body.split())
    return body if len(body) <= limit else body[:limit] + "…"


def status_error(
    provider: str,
    status: int,
    headers: Mapping[str, str] | None,
    body: Any,
    secrets: list[str],
    key_var: str | None = None,
) -> NodeError:
    transient = is_transient_status(status)
    excerpt = redact(body_excerpt(body), secrets)
    msg = f"{provider} API returned HTTP {status}"
    if excerpt:
        msg += f": {excerpt}"
    if status in (401, 403):
        var = key_var or ("ANTHROPIC_API_KEY" if provider == "anthropic" else "OPENAI_API_KEY")
        msg += f" (check {var})"
    return NodeError(
        msg, retryable=transient, retry_after=parse_retry_after(headers) if transient else None
    )


# --------------------------------------------------------------------------- providers


class OpenAIProvider(LLMProvider):
    """OpenAI or any OpenAI-compatible server (Chat Completions API)."""

    name = "openai"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        key_var: str | None = None,
        secrets: Sequence[str] = (),
    ) -> None:
        env = os.environ if env is None else env
        self.name = name or type(self).name
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        if api_key is None:
            if not base_url:
                raise NodeError(missing_key_message("openai"), retryable=False)
            api_key = _PLACEHOLDER_KEY  # local compatible servers usually ignore the key
        self._secrets = [api_key, *secrets]
        self._url = (base_url or OPENAI_DEFAULT_URL).rstrip("/") + "/chat/completions"
        sent = {"authorization": f"Bearer {api_key}", **(headers or {})}
        self.client = LeanClient(self.name, sent, self._secrets, key_var)

    async def chat(self, req: ChatRequest) -> tuple[str, dict[str, int]]:
        messages = _with_images(req, lambda text: [{"type": "text", "text": text}] + [
            {"type": "image_url", "image_url": {"url": img.as_url()}} for img in req.images
        ])  # fmt: skip
        if req.system:
            messages.insert(0, {"role": "system", "content": req.system})
        kwargs: dict[str, Any] = {"model": req.model, "messages": messages}
        if req.temperature is not None:
            kwargs["temperature"] = req.temperature
        if req.max_tokens is not None:
            kwargs["max_tokens"] = req.max_tokens
        if req.schema is not None:
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": req.schema, "strict": False},
            }
        resp = await self.client.post_json(self._url, kwargs, req.timeout or DEFAULT_TIMEOUT)
        choices = resp.get("choices") or []
        message = (
            (choices[0].get("message") if isinstance(choices[0], dict) else None)
            if choices
            else None
        )
        text = (message or {}).get("content") or ""
        usage = resp.get("usage") or {}
        tin = int(usage.get("prompt_tokens") or 0)
        tout = int(usage.get("completion_tokens") or 0)
        total = int(usage.get("total_tokens") or 0) or tin + tout
        return text, {"input_tokens": tin, "output_tokens": tout, "total_tokens": total}

    async def aclose(self) -> None:
        await self.client.aclose()


class AnthropicProvider(LLMProvider):
    """The Anthropic Messages API (or a server that speaks it)."""

    name = "anthropic"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        env: Mapping[str, str] | None = None,
        *,
        name: str | None = None,
        headers: Mapping[str, str] | None = None,
        key_var: str | None = None,
        secrets: Sequence[str] = (),
        require_key: bool = True,
    ) -> None:
        env = os.environ if env is None else env
        self.name = name or type(self).name
        api_key = api_key or env.get("ANTHROPIC_API_KEY") or None
        auth_token = env.get("ANTHROPIC_AUTH_TOKEN") or None
        if api_key is None and auth_token is None and require_key:
            raise NodeError(missing_key_message("anthropic"), retryable=False)
        self._secrets = [s for s in (api_key, auth_token, *secrets) if s]
        auth = {"x-api-key": api_key} if api_key else {}
        if auth_token and not api_key:
            auth = {"authorization": f"Bearer {auth_token}"}
        sent = {**auth, "anthropic-version": ANTHROPIC_VERSION, **(headers or {})}
        base_url = base_url or env.get("ANTHROPIC_BASE_URL") or ANTHROPIC_DEFAULT_URL
        self._url = base_url.rstrip("/") + "/v1/messages"
        self.client = LeanClient(self.name, sent, self._secrets, key_var)

    async def chat(self, req: ChatRequest) -> tuple[str, dict[str, int]]:
        messages = _with_images(req, lambda text: [
            *(_anthropic_image(img) for img in req.images), {"type": "text", "text": text}
        ])  # fmt: skip
        kwargs: dict[str, Any] = {
            "model": req.model,
            "max_tokens": req.max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
            "messages": messages,
        }
        if req.system:
            kwargs["system"] = req.system
        if req.temperature is not None:
            kwargs["temperature"] = req.temperature
        if req.schema is not None:  # tool mode: the forced tool's input is the structured reply
            kwargs["tools"] = [
                {
                    "name": "output",
                    "description": "Return the answer as this tool's input.",
                    "input_schema": req.schema,
                }
            ]
            kwargs["tool_choice"] = {"type": "tool", "name": "output"}
        resp = await self.client.post_json(self._url, kwargs, req.timeout or DEFAULT_TIMEOUT)
        blocks = [b for b in resp.get("content") or [] if isinstance(b, dict)]
        tool = next((b for b in blocks if b.get("type") == "tool_use"), None)
        if req.schema is not None and tool is not None:
            text = json.dumps(tool.get("input"), ensure_ascii=False)
        else:
            text = "".join(b.get("text") or "" for b in blocks if b.get("type") == "text")
        usage = resp.get("usage") or {}
        tin = int(usage.get("input_tokens") or 0)
        tout = int(usage.get("output_tokens") or 0)
        return text, {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout}

    async def aclose(self) -> None:
        await self.client.aclose()


def _with_images(
    req: ChatRequest, parts: Callable[[str], list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """The request's messages, the first user message's text turned into `parts(text)` (the
    provider's text + image content parts) when the request has images."""
    messages: list[dict[str, Any]] = []
    first_user = bool(req.images)
    for m in req.messages:
        content: Any = m["content"]
        if first_user and m["role"] == "user":
            first_user = False
            content = parts(content)
        messages.append({"role": m["role"], "content": content})
    return messages


def _anthropic_image(img: Image) -> dict[str, Any]:
    if img.url:
        return {"type": "image", "source": {"type": "url", "url": img.url}}
    source = {"type": "base64", "media_type": img.media_type, "data": img.data}
    return {"type": "image", "source": source}


class OllamaProvider(OpenAIProvider):
    """A local Ollama server through its OpenAI-compatible API (``ollama/<model>``):
    ``OLLAMA_BASE_URL`` (default http://localhost:11434/v1), no key."""

    name = "ollama"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        base = env.get("OLLAMA_BASE_URL") or OLLAMA_DEFAULT_URL
        super().__init__(api_key=_PLACEHOLDER_KEY, base_url=base, env={})


# --------------------------------------------------------------------------- offline: echo


def latency_seconds(spec: Any, seed: str = "") -> float:
    """A simulated latency: a number of seconds, or a range ``[lo, hi]`` / ``"lo-hi"`` from
    which each call takes a value fixed by a hash of `seed` (its prompt): realistic spread, and
    the same on every run."""
    if spec is None or spec == "":
        return 0.0
    if isinstance(spec, str):
        lo_s, sep, hi_s = spec.strip().partition("-")
        spec = [lo_s, hi_s] if sep and lo_s else spec
    if isinstance(spec, list | tuple):
        if len(spec) != 2:
            raise NodeError(f"latency range must be [low, high], got {spec!r}", retryable=False)
        try:
            lo, hi = float(spec[0]), float(spec[1])
        except (TypeError, ValueError):
            raise NodeError(f"latency must be numbers, got {spec!r}", retryable=False) from None
        frac = int.from_bytes(hashlib.blake2b(seed.encode(), digest_size=4).digest(), "big")
        return max(0.0, lo + (hi - lo) * frac / 0xFFFFFFFF)
    try:
        return max(0.0, float(spec))
    except (TypeError, ValueError):
        raise NodeError(f"latency must be seconds, got {spec!r}", retryable=False) from None


def word_usage(prompt: str, system: str | None, text: str) -> dict[str, int]:
    """Token counts for offline answers: words, as the loopback mock counts them."""
    tin = len(prompt.split()) + len((system or "").split())
    tout = len(text.split())
    return {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout}


class EchoProvider(LLMProvider):
    """Offline, no key, no network: answers ``echo: <prompt>``, or with a schema a value that
    satisfies it (strings taken from the prompt's lines), after the request's `latency` (else
    ``FANFLOW_ECHO_LATENCY``)."""

    name = "echo"

    def __init__(self, env: Mapping[str, str] | None = None) -> None:
        env = os.environ if env is None else env
        self.default_latency: Any = env.get("FANFLOW_ECHO_LATENCY") or None

    async def chat(self, req: ChatRequest) -> tuple[str, dict[str, int]]:
        from fanflow.io.schema import synthesize

        prompt = next((m["content"] for m in req.messages if m["role"] == "user"), "")
        spec = req.latency if req.latency is not None else self.default_latency
        delay = latency_seconds(spec, prompt)
        if delay > 0:
            await asyncio.sleep(delay)
        if req.schema is not None:
            text = json.dumps(synthesize(req.schema, prompt), ensure_ascii=False)
        else:
            text = f"echo: {prompt}"
        return text, word_usage(prompt, req.system, text)


_PROVIDERS: dict[str, Callable[[], LLMProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
    "ollama": OllamaProvider,
    "echo": EchoProvider,
}


def register_provider(name: str, factory: Callable[[], LLMProvider]) -> None:
    """Add or replace a provider (models named ``<name>/<model>`` then route to it)."""
    _PROVIDERS[name.lower()] = factory


def new_provider(name: str) -> LLMProvider:
    """A new instance of provider `name` (the caller closes it); NodeError when unknown."""
    factory = _PROVIDERS.get(name)
    if factory is None:
        raise NodeError(f"unknown LLM provider {name!r} (known: {', '.join(sorted(_PROVIDERS))})")
    return factory()


def get_provider(ctx: RunContext, name: str) -> LLMProvider:
    """The run's one provider instance for `name`, created on first use, closed at run end;
    configured by the run's `providers` (``ctx.providers``) when they name it."""
    key = f"llm:{name}"
    provider = ctx.clients.get(key)
    if provider is None:
        cfg = (ctx.providers or {}).get(name)
        provider = provider_from_config(cfg) if cfg is not None else new_provider(name)
        ctx.clients[key] = provider
        ctx.on_close(provider.aclose)
    return provider


def provider_from_config(cfg: ProviderConfig, env: Mapping[str, str] | None = None) -> LLMProvider:
    """A provider for a configured entry (a custom one, or a built-in with changed settings)."""
    env = os.environ if env is None else env
    try:
        headers, header_secrets = header_values(cfg, env)
    except KeyError as exc:
        raise NodeError(
            unset_var_message(cfg, "headers", str(exc.args[0])), retryable=False
        ) from None
    headers = {k.lower(): v for k, v in headers.items()}
    key: str | None = None
    if cfg.api_key_env:
        _CONFIGURED_SECRET_VARS.add(cfg.api_key_env)
        key = env.get(cfg.api_key_env) or None
        if key is None:
            raise NodeError(unset_var_message(cfg, "api_key_env", cfg.api_key_env), retryable=False)
    common: dict[str, Any] = {"name": cfg.name, "headers": headers, "secrets": header_secrets,
                              "key_var": cfg.api_key_env}  # fmt: skip
    if cfg.kind == "anthropic":
        if cfg.name == "anthropic" and key is None:  # the built-in, its own key variables
            return AnthropicProvider(None, cfg.base_url, env, **common)
        return AnthropicProvider(key, cfg.base_url, {}, require_key=False, **common)
    if cfg.name == "openai":
        base = cfg.base_url or env.get("OPENAI_BASE_URL") or None
        key = key or (None if cfg.api_key_env else env.get("OPENAI_API_KEY")) or None
        return OpenAIProvider(key, base, {}, **common)
    base = cfg.base_url or (env.get("OLLAMA_BASE_URL") or OLLAMA_DEFAULT_URL
                            if cfg.name == "ollama" else OPENAI_DEFAULT_URL)  # fmt: skip
    return OpenAIProvider(key or _PLACEHOLDER_KEY, base, {}, **common)


def unset_var_message(cfg: ProviderConfig, field: str, var: str) -> str:
    if field == "headers":
        field = header_var_field(cfg, var)
    return (
        f"provider '{cfg.name}' needs the environment variable {var} ({cfg.at(field)}), "
        f"which is not set: export {var}=..."
    )


# --------------------------------------------------------------------------- preflight


def missing_key_message(provider: str) -> str:
    if provider == "anthropic":
        return (
            "ANTHROPIC_API_KEY is not set: export ANTHROPIC_API_KEY=... "
            "(or use an OpenAI-compatible model via OPENAI_BASE_URL)"
        )
    return (
        "OPENAI_API_KEY is not set: export OPENAI_API_KEY=... or point OPENAI_BASE_URL "
        "at an OpenAI-compatible server"
    )


def preflight_llm(
    params: Mapping[str, Any], env: Mapping[str, str] | None = None, table: Table | None = None
) -> str | None:
    """Before the run: a clear message when the provider this node will use has no key.

    `params` are the raw IR params: a templated model (``${...}``) is only known at run time,
    so the default model's provider is checked then.
    """
    env = os.environ if env is None else env
    table = active_table() if table is None else table
    model = params.get("model")
    literal = isinstance(model, str) and "${" not in model
    provider, _ = resolve_model(model if literal else None, env, table)
    cfg = table.get(provider)
    if cfg is not None:
        missing = missing_vars(cfg, env)
        if missing:
            return unset_var_message(cfg, *missing[0])
        if cfg.api_key_env or not cfg.builtin:
            return None
        if provider == "openai" and cfg.base_url:
            return None  # a compatible server: a placeholder key is sent
    if provider == "openai":
        if not env.get("OPENAI_API_KEY") and not env.get("OPENAI_BASE_URL"):
            return missing_key_message("openai")
    elif provider == "anthropic":
        if not env.get("ANTHROPIC_API_KEY") and not env.get("ANTHROPIC_AUTH_TOKEN"):
            return missing_key_message("anthropic")
    elif provider not in _PROVIDERS:
        return f"unknown LLM provider {provider!r}"
    return None  # echo, ollama and registered providers need no key of ours


__all__ = [
    "DEFAULT_MODEL",
    "AnthropicProvider",
    "ChatRequest",
    "EchoProvider",
    "Image",
    "LLMProvider",
    "OllamaProvider",
    "OpenAIProvider",
    "ProviderConfig",
    "body_excerpt",
    "default_provider",
    "get_provider",
    "is_transient_status",
    "latency_seconds",
    "missing_key_message",
    "parse_retry_after",
    "preflight_llm",
    "provider_from_config",
    "redact",
    "register_provider",
    "resolve_model",
    "word_usage",
]
