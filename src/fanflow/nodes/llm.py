"""llm node: one chat completion through the run's shared provider client, under the limits."""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from fanflow.errors import NodeError
from fanflow.io.providers import DEFAULT_TIMEOUT, get_provider, preflight_llm, resolve_model
from fanflow.nodes.base import AsyncNode, Param

if TYPE_CHECKING:
    from fanflow.io.limits import LimitRegistry


class LlmNode(AsyncNode):
    type_name = "llm"
    description = (
        "Call an LLM (OpenAI or any OpenAI-compatible server via OPENAI_BASE_URL; Anthropic for "
        "claude-* / anthropic/* models). Transient failures (429, 5xx, timeouts) are retried."
    )
    params_spec: ClassVar[dict[str, Param]] = {
        "prompt": Param("string", required=True, description="the user message"),
        "system": Param("string", default=None, description="system prompt"),
        "model": Param(
            "string",
            default=None,
            description="e.g. gpt-4o-mini, openai/<m>, anthropic/<m>, claude-*; "
            "default $FANFLOW_LLM_MODEL or gpt-4o-mini",
        ),
        "temperature": Param("number", default=None, description="sampling temperature", ge=0),
        "max_tokens": Param("integer", default=None, description="maximum output tokens", ge=1),
        "timeout": Param("number", default=DEFAULT_TIMEOUT, description="seconds per call", gt=0),
    }
    actions: ClassVar[tuple[str, ...] | None] = ("default", "error")
    outputs_spec: ClassVar[dict[str, str]] = {
        "response": "the model's text",
        "llm_usage": "{model, input_tokens, output_tokens, total_tokens}",
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
        return preflight_llm(params, os.environ)

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

        provider_name, model = resolve_model(p.get("model"))
        provider = get_provider(self.ctx, provider_name)
        text, usage = await provider.complete(
            prompt, system or None, model, temperature, max_tokens, timeout=timeout
        )
        return {"response": text, "llm_usage": {"model": model, **usage}}


def _number(value: Any, name: str, kind: type) -> Any:
    if value is None or value == "":
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise NodeError(f"llm: '{name}' must be a number, got {value!r}") from None
