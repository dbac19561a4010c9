"""LLM providers behind one small interface of ours.

- :class:`OpenAIProvider`: OpenAI and any OpenAI-compatible server through the official SDK's
  ``AsyncOpenAI`` (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).
- :class:`AnthropicProvider`: ``anthropic.AsyncAnthropic`` (optional extra ``fanflow[anthropic]``;
  ``ANTHROPIC_API_KEY``, ``ANTHROPIC_BASE_URL``).

One client per provider per run (:func:`get_provider` caches it in ``ctx.clients``): building a
client costs ~90 ms of CPU and a client per call turned 100 concurrent 0.5 s calls into 5-8 s.
SDK retries are off (``max_retries=0``) because the engine retries; SDK errors become
:class:`~fanflow.errors.NodeError` with ``retryable``/``retry_after`` set for transient causes.
API keys never appear in our messages: known keys and ``sk-...`` shapes are redacted.
"""

from __future__ import annotations

import email.utils
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fanflow.errors import NodeError

if TYPE_CHECKING:
    from fanflow.execute.context import RunContext

DEFAULT_MODEL = "gpt-4o-mini"
DEFAULT_TIMEOUT = 120.0  # seconds per call; the node's `timeout` param overrides it
ANTHROPIC_DEFAULT_MAX_TOKENS = 4096  # the Messages API requires max_tokens
_EXCERPT = 300
_PLACEHOLDER_KEY = "not-needed"  # for OpenAI-compatible servers that take no key

# Environment variables that hold secrets; their values are scrubbed from every message.
SECRET_ENV_VARS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN")
_KEY_SHAPES = re.compile(r"\b(sk-[A-Za-z0-9*_\-]{4,}|Bearer\s+\S+)")


class LLMProvider:
    """The interface every provider implements. One instance serves a whole run."""

    name: str = ""

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
        raise NotImplementedError

    async def aclose(self) -> None:
        return None


# --------------------------------------------------------------------------- model resolution


def resolve_model(model: str | None, env: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Model string → (provider, model name sent to that provider).

    ``openai/x`` and bare names → openai (names with other slashes, e.g. ``meta-llama/Llama-3``
    served by an OpenAI-compatible server, are passed through whole); ``anthropic/x`` and
    ``claude-*`` → anthropic. Empty → ``FANFLOW_LLM_MODEL`` or ``gpt-4o-mini``.
    """
    env = os.environ if env is None else env
    name = (model or "").strip() or env.get("FANFLOW_LLM_MODEL", "").strip() or DEFAULT_MODEL
    prefix, sep, rest = name.partition("/")
    if sep and prefix.lower() in _PROVIDERS and rest:
        return prefix.lower(), rest
    if name.lower().startswith("claude-"):
        return "anthropic", name
    return "openai", name


# --------------------------------------------------------------------------- redaction, errors


def redact(text: str, secrets: list[str] | tuple[str, ...] = ()) -> str:
    """Remove API keys from a message: known values (env and explicit) and key-like shapes."""
    values = [s for s in (*secrets, *(os.environ.get(v, "") for v in SECRET_ENV_VARS)) if s]
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


def _status_error(
    provider: str, status: int, headers: Mapping[str, str] | None, body: Any, secrets: list[str]
) -> NodeError:
    transient = is_transient_status(status)
    excerpt = redact(body_excerpt(body), secrets)
    msg = f"{provider} API returned HTTP {status}"
    if excerpt:
        msg += f": {excerpt}"
    if status in (401, 403):
        var = "OPENAI_API_KEY" if provider == "openai" else "ANTHROPIC_API_KEY"
        msg += f" (check {var})"
    return NodeError(
        msg, retryable=transient, retry_after=parse_retry_after(headers) if transient else None
    )


def _map_sdk_error(
    exc: Exception, provider: str, sdk: Any, secrets: list[str], timeout: float | None
) -> NodeError:
    """Translate an openai/anthropic SDK exception (both share the same class names)."""
    if isinstance(exc, sdk.APITimeoutError):
        after = f" after {timeout:g}s" if timeout else ""
        return NodeError(f"{provider} request timed out{after}", retryable=True)
    if isinstance(exc, sdk.APIConnectionError):
        cause = exc.__cause__ or exc.__context__
        detail = f": {type(cause).__name__}: {cause}" if cause else ""
        return NodeError(redact(f"{provider} connection error{detail}", secrets), retryable=True)
    if isinstance(exc, sdk.APIStatusError):
        response = getattr(exc, "response", None)
        headers = getattr(response, "headers", None)
        body = getattr(exc, "body", None)
        if body is None and response is not None:
            try:
                body = response.text
            except Exception:
                body = None
        return _status_error(provider, exc.status_code, headers, body, secrets)
    return NodeError(redact(f"{provider} client error: {exc}", secrets), retryable=False)


# --------------------------------------------------------------------------- providers


class OpenAIProvider(LLMProvider):
    """OpenAI or any OpenAI-compatible server (Chat Completions API)."""

    name = "openai"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        import openai

        env = os.environ if env is None else env
        self._sdk = openai
        base_url = base_url or env.get("OPENAI_BASE_URL") or None
        api_key = api_key or env.get("OPENAI_API_KEY") or None
        if api_key is None:
            if not base_url:
                raise NodeError(missing_key_message("openai"), retryable=False)
            api_key = _PLACEHOLDER_KEY  # local compatible servers usually ignore the key
        self._secrets = [api_key]
        self.client = openai.AsyncOpenAI(
            api_key=api_key, base_url=base_url, max_retries=0, timeout=DEFAULT_TIMEOUT
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
        messages: list[dict[str, str]] = []
        if system:
            messages.append({"role": "system", "content": system})
        messages.append({"role": "user", "content": prompt})
        kwargs: dict[str, Any] = {"model": model, "messages": messages}
        if temperature is not None:
            kwargs["temperature"] = temperature
        if max_tokens is not None:
            kwargs["max_tokens"] = max_tokens
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            resp = await self.client.chat.completions.create(**kwargs)
        except self._sdk.OpenAIError as exc:
            raise _map_sdk_error(exc, "openai", self._sdk, self._secrets, timeout) from None
        choices = getattr(resp, "choices", None) or []
        text = (choices[0].message.content if choices else None) or ""
        usage = getattr(resp, "usage", None)
        tin = int(getattr(usage, "prompt_tokens", 0) or 0)
        tout = int(getattr(usage, "completion_tokens", 0) or 0)
        total = int(getattr(usage, "total_tokens", 0) or 0) or tin + tout
        return text, {"input_tokens": tin, "output_tokens": tout, "total_tokens": total}

    async def aclose(self) -> None:
        await self.client.close()


class AnthropicProvider(LLMProvider):
    """Anthropic Messages API through the optional ``anthropic`` SDK."""

    name = "anthropic"

    def __init__(
        self,
        api_key: str | None = None,
        base_url: str | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        try:
            import anthropic
        except ImportError:
            raise NodeError(
                "the anthropic package is not installed: pip install 'fanflow[anthropic]' "
                "(or pip install anthropic)",
                retryable=False,
            ) from None
        env = os.environ if env is None else env
        self._sdk = anthropic
        api_key = api_key or env.get("ANTHROPIC_API_KEY") or None
        auth_token = env.get("ANTHROPIC_AUTH_TOKEN") or None
        if api_key is None and auth_token is None:
            raise NodeError(missing_key_message("anthropic"), retryable=False)
        self._secrets = [s for s in (api_key, auth_token) if s]
        kwargs: dict[str, Any] = {"max_retries": 0, "timeout": DEFAULT_TIMEOUT}
        if api_key:
            kwargs["api_key"] = api_key
        else:
            kwargs["auth_token"] = auth_token
        base_url = base_url or env.get("ANTHROPIC_BASE_URL") or None
        if base_url:
            kwargs["base_url"] = base_url
        self.client = anthropic.AsyncAnthropic(**kwargs)

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
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": max_tokens or ANTHROPIC_DEFAULT_MAX_TOKENS,
            "messages": [{"role": "user", "content": prompt}],
        }
        if system:
            kwargs["system"] = system
        if temperature is not None:
            kwargs["temperature"] = temperature
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            resp = await self.client.messages.create(**kwargs)
        except self._sdk.AnthropicError as exc:
            raise _map_sdk_error(exc, "anthropic", self._sdk, self._secrets, timeout) from None
        text = "".join(
            getattr(block, "text", "") or ""
            for block in (getattr(resp, "content", None) or [])
            if getattr(block, "type", "") == "text"
        )
        usage = getattr(resp, "usage", None)
        tin = int(getattr(usage, "input_tokens", 0) or 0)
        tout = int(getattr(usage, "output_tokens", 0) or 0)
        return text, {"input_tokens": tin, "output_tokens": tout, "total_tokens": tin + tout}

    async def aclose(self) -> None:
        await self.client.close()


_PROVIDERS: dict[str, Callable[[], LLMProvider]] = {
    "openai": OpenAIProvider,
    "anthropic": AnthropicProvider,
}


def register_provider(name: str, factory: Callable[[], LLMProvider]) -> None:
    """Add or replace a provider (models named ``<name>/<model>`` then route to it)."""
    _PROVIDERS[name.lower()] = factory


def get_provider(ctx: RunContext, name: str) -> LLMProvider:
    """The run's one provider instance for `name`, created on first use, closed at run end."""
    key = f"llm:{name}"
    provider = ctx.clients.get(key)
    if provider is None:
        factory = _PROVIDERS.get(name)
        if factory is None:
            raise NodeError(
                f"unknown LLM provider {name!r} (known: {', '.join(sorted(_PROVIDERS))})"
            )
        provider = factory()
        ctx.clients[key] = provider
        ctx.on_close(provider.aclose)
    return provider


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


def preflight_llm(params: Mapping[str, Any], env: Mapping[str, str] | None = None) -> str | None:
    """Before the run: a clear message when the provider this node will use has no key.

    `params` are the raw IR params: a templated model (``${...}``) is only known at run time,
    so the default model's provider is checked then.
    """
    env = os.environ if env is None else env
    model = params.get("model")
    literal = isinstance(model, str) and "${" not in model
    provider, _ = resolve_model(model if literal else None, env)
    if provider == "openai":
        if not env.get("OPENAI_API_KEY") and not env.get("OPENAI_BASE_URL"):
            return missing_key_message("openai")
    elif provider == "anthropic":
        try:
            import anthropic  # noqa: F401
        except ImportError:
            return "the anthropic package is not installed: pip install 'fanflow[anthropic]'"
        if not env.get("ANTHROPIC_API_KEY") and not env.get("ANTHROPIC_AUTH_TOKEN"):
            return missing_key_message("anthropic")
    elif provider not in _PROVIDERS:
        return f"unknown LLM provider {provider!r}"
    return None


__all__ = [
    "DEFAULT_MODEL",
    "AnthropicProvider",
    "LLMProvider",
    "OpenAIProvider",
    "body_excerpt",
    "get_provider",
    "is_transient_status",
    "missing_key_message",
    "parse_retry_after",
    "preflight_llm",
    "redact",
    "register_provider",
    "resolve_model",
]
