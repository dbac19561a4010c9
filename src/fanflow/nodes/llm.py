"""llm node: one chat completion through the run's shared provider client, under the limits.

Also: structured output (`output_schema`, validated locally, one repair call), offline answers
(`model: echo`, `mock_response`), the on-disk response cache, token usage and estimated cost,
and `images` for vision models. docs/llm.md describes them.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from fanflow.errors import NodeError
from fanflow.io import llm_cache
from fanflow.io.images import ImageError, image_digest, load_images
from fanflow.io.prices import estimate_cost
from fanflow.io.provider_config import build_table
from fanflow.io.providers import (
    DEFAULT_TIMEOUT,
    ChatRequest,
    Image,
    get_provider,
    latency_seconds,
    preflight_llm,
    resolve_model,
    word_usage,
)
from fanflow.io.schema import (
    SchemaProblem,
    excerpt,
    normalize_schema,
    object_root,
    parse_json,
    validation_error,
)
from fanflow.nodes.base import AsyncNode, Param, ParamProblem

if TYPE_CHECKING:
    from fanflow.io.limits import LimitRegistry

REPAIR_ATTEMPTS = 1  # bounded: one more call when the reply is not valid JSON for the schema
_MOCK_CALLS = "llm:mock_calls"  # ctx.clients key: node id → calls so far (mock_response lists)


class LlmNode(AsyncNode):
    type_name = "llm"
    description = (
        "Call an LLM (OpenAI or any OpenAI-compatible server via OPENAI_BASE_URL; Anthropic for "
        "claude-* / anthropic/* models; ollama/<m>; offline: model echo or mock_response). "
        "output_schema makes the response parsed, validated JSON. Transient failures (429, 5xx, "
        "timeouts) are retried; replies are cached on disk."
    )
    params_spec: ClassVar[dict[str, Param]] = {
        "prompt": Param("string", required=True, description="the user message"),
        "system": Param("string", default=None, description="system prompt"),
        "model": Param(
            "string",
            default=None,
            description="e.g. gpt-4o-mini, openai/<m>, anthropic/<m>, claude-*, ollama/<m>, "
            "<provider>/<m> for a workflow `providers` entry, echo (offline); default "
            "$FANFLOW_LLM_MODEL, a provider's default_model, or gpt-4o-mini",
        ),
        "temperature": Param("number", default=None, description="sampling temperature", ge=0),
        "max_tokens": Param("integer", default=None, description="maximum output tokens", ge=1),
        "timeout": Param("number", default=DEFAULT_TIMEOUT, description="seconds per call", gt=0),
        "output_schema": Param(
            "any",
            default=None,
            description='JSON Schema (or short form {"name": "string", "tags": "string[]"}) '
            "the reply must satisfy; the parsed value becomes `response`",
        ),
        "mock_response": Param(
            "any",
            default=None,
            description="answer without calling the model: text or JSON; a list cycles per call",
        ),
        "latency": Param(
            "any",
            default=None,
            description="echo/mock_response only: simulated seconds per call, or [low, high]",
        ),
        "images": Param(
            "any", default=None, description="image paths or URLs for vision models (a list)"
        ),
        "cache": Param("boolean", default=True, description="use the on-disk response cache"),
    }
    actions: ClassVar[tuple[str, ...] | None] = ("default", "error")
    outputs_spec: ClassVar[dict[str, str]] = {
        "response": "the model's text, or with output_schema the parsed JSON value",
        "llm_usage": "{model, provider, input_tokens, output_tokens, total_tokens, cost_usd "
        "(null: cost unknown), requests (made to the provider), cached, mocked}",
    }
    default_attempts = 3

    @classmethod
    def resource_keys(cls, params: dict[str, Any], limits: LimitRegistry) -> list[str]:
        """`llm:<provider>` and `llm:<provider>/<model>`, acquired before the budget slot."""
        provider, model = resolve_model(params.get("model"))
        return limits.keys_for_llm(provider, model)

    @classmethod
    def preflight(cls, params: dict[str, Any]) -> str | None:
        """Checked before the run starts: names the env var to set when a key is missing."""
        return cls.preflight_in_workflow(params, None)

    @classmethod
    def preflight_in_workflow(cls, params: dict[str, Any], workflow: Any) -> str | None:
        """`preflight` with the workflow's providers (and the run's, FANFLOW_PROVIDERS)."""
        if params.get("mock_response") is not None:
            return None  # answered offline: no key needed
        return preflight_llm(params, os.environ, build_table(workflow))

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        from fanflow.io.llm_params import check_llm_params

        return [ParamProblem(msg, param, hint) for msg, param, hint in check_llm_params(params)]

    @classmethod
    def validate_in_workflow(
        cls, params: dict[str, Any], workflow: Any
    ) -> list[str | ParamProblem]:
        """The model against the providers the workflow, FANFLOW_PROVIDERS and the run set."""
        from fanflow.io.llm_params import check_model

        found = check_model(params.get("model"), build_table(workflow), os.environ)
        return [ParamProblem(msg, param, hint) for msg, param, hint in found]

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        p = prep_res or {}
        prompt = p.get("prompt")
        if prompt is None or prompt == "":
            raise NodeError("llm: 'prompt' is required and must not be empty")
        if not isinstance(prompt, str):  # a template that rendered to data: send it as JSON
            prompt = json.dumps(prompt, ensure_ascii=False, default=str)
        system = p.get("system")
        if system is not None and not isinstance(system, str):
            system = json.dumps(system, ensure_ascii=False, default=str)
        temperature = _number(p.get("temperature"), "temperature", float)
        max_tokens = _number(p.get("max_tokens"), "max_tokens", int)
        timeout = _number(p.get("timeout"), "timeout", float) or DEFAULT_TIMEOUT
        schema = self._schema(p.get("output_schema"))
        provider_name, model = resolve_model(
            p.get("model"), None, getattr(self.ctx, "providers", None) or {}
        )
        try:
            images = load_images(p.get("images"))
        except ImageError as exc:
            raise NodeError(f"llm node '{self.node_id}': {exc}", retryable=False) from None

        if p.get("mock_response") is not None:
            return await self._mock(p, prompt, system, schema, provider_name, model)

        wire_schema, wrapped = object_root(schema) if schema is not None else (None, False)
        req = ChatRequest(
            [{"role": "user", "content": prompt}], system or None, model, temperature,
            max_tokens, timeout, wire_schema, images, p.get("latency"),
        )  # fmt: skip
        use_cache = p.get("cache") is not False and provider_name != "echo" and llm_cache.enabled()
        key = _cache_key(provider_name, req, images) if use_cache else None
        if key is not None:
            hit = llm_cache.get(key)
            if hit is not None:
                found = self._accept(hit["text"], schema, wrapped, final=False)
                if found is not _INVALID:
                    usage = dict(hit.get("usage") or {})
                    return self._outputs(found, provider_name, model, usage, 0, cached=True)

        provider = get_provider(self.ctx, provider_name)
        text, usage = await provider.chat(req)
        calls = 1
        value: Any = text
        if schema is not None:
            for attempt in range(REPAIR_ATTEMPTS + 1):
                value = self._accept(text, schema, wrapped, final=attempt == REPAIR_ATTEMPTS)
                if value is not _INVALID:
                    break
                req.messages += [
                    {"role": "assistant", "content": text or "(empty)"},
                    {"role": "user", "content": _repair_prompt(self._last_problem)},
                ]
                text, more = await provider.chat(req)
                calls += 1
                usage = {k: usage.get(k, 0) + more.get(k, 0) for k in {*usage, *more}}
        if key is not None:
            llm_cache.put(key, {"text": text, "usage": usage, "model": model})
        return self._outputs(value, provider_name, model, usage, calls)

    # -- structured output --------------------------------------------------------------------

    _last_problem: str = ""

    def _schema(self, raw: Any) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            return normalize_schema(raw)
        except SchemaProblem as exc:
            raise NodeError(
                f"llm node '{self.node_id}': output_schema at {exc.path}: {exc.message}",
                retryable=False,
            ) from None

    def _accept(self, text: str, schema: dict[str, Any] | None, wrapped: bool, final: bool) -> Any:
        """The reply's value, or _INVALID (the reason kept for the repair prompt); on the final
        attempt an invalid reply raises, naming the node, the schema path and an excerpt."""
        if schema is None:
            return text
        try:
            value = parse_json(text)
            if wrapped:
                if not isinstance(value, dict) or "value" not in value:
                    raise ValueError('expected {"value": ...}')
                value = value["value"]
        except ValueError as exc:
            problem = f"the reply is not valid JSON ({exc})"
        else:
            found = validation_error(value, schema)
            if found is None:
                return value
            problem = f"the reply does not satisfy output_schema {found}"
        self._last_problem = problem
        if final:
            tries = f" after {REPAIR_ATTEMPTS} repair attempt" if REPAIR_ATTEMPTS else ""
            raise NodeError(
                f"llm node '{self.node_id}': {problem}{tries}; reply: {excerpt(text) or '(empty)'}",
                retryable=False,
            )
        return _INVALID

    # -- offline: mock_response ---------------------------------------------------------------

    async def _mock(
        self,
        p: dict[str, Any],
        prompt: str,
        system: str | None,
        schema: dict[str, Any] | None,
        provider_name: str,
        model: str,
    ) -> dict[str, Any]:
        import asyncio

        mock = p["mock_response"]
        if isinstance(mock, list):
            if not mock:
                raise NodeError(f"llm node '{self.node_id}': mock_response is an empty list")
            calls = self.ctx.clients.setdefault(_MOCK_CALLS, {})
            n = calls.get(self.node_id, 0)
            calls[self.node_id] = n + 1
            mock = mock[n % len(mock)]
        delay = latency_seconds(p.get("latency"), prompt)
        if delay > 0:
            await asyncio.sleep(delay)
        value = mock
        if schema is not None:
            try:
                value = parse_json(mock) if isinstance(mock, str) else mock
            except ValueError as exc:
                raise NodeError(
                    f"llm node '{self.node_id}': mock_response is not valid JSON for "
                    f"output_schema ({exc}): {excerpt(mock)}",
                    retryable=False,
                ) from None
            found = validation_error(value, schema)
            if found is not None:
                raise NodeError(
                    f"llm node '{self.node_id}': mock_response does not satisfy output_schema "
                    f"{found}; mock_response: {excerpt(value)}",
                    retryable=False,
                )
        text = mock if isinstance(mock, str) else json.dumps(mock, ensure_ascii=False)
        usage = word_usage(prompt, system, text)
        out = self._outputs(value, provider_name, model, usage, 0, cost=0.0)
        out["llm_usage"]["mocked"] = True
        return out

    def _outputs(
        self,
        value: Any,
        provider: str,
        model: str,
        usage: dict[str, Any],
        requests: int,
        *,
        cached: bool = False,
        cost: float | None = None,
    ) -> dict[str, Any]:
        tin = int(usage.get("input_tokens", 0) or 0)
        tout = int(usage.get("output_tokens", 0) or 0)
        total = int(usage.get("total_tokens", 0) or 0) or tin + tout
        if cost is None:
            cost = 0.0 if cached else estimate_cost(provider, model, tin, tout)
        return {
            "response": value,
            "llm_usage": {
                "model": model, "provider": provider, "input_tokens": tin,
                "output_tokens": tout, "total_tokens": total, "cost_usd": cost,
                "requests": requests, "cached": cached,
            },
        }  # fmt: skip


_INVALID: Any = object()


def _repair_prompt(problem: str) -> str:
    return (
        f"Your previous reply could not be used: {problem}. Reply again with only the JSON "
        "value that satisfies the schema: no prose, no code fence."
    )


def _cache_key(provider: str, req: ChatRequest, images: list[Image]) -> str:
    return llm_cache.make_key(
        {
            "provider": provider,
            "model": req.model,
            "system": req.system,
            "messages": req.messages,
            "schema": req.schema,
            "temperature": req.temperature,
            "max_tokens": req.max_tokens,
            "images": [image_digest(img) for img in images],
        }
    )


def _number(value: Any, name: str, kind: type) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise NodeError(f"llm: '{name}' must be a number, got {value!r}") from None
