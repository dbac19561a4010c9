"""Estimated cost of llm calls: a shipped price table (USD per million tokens) a user can
override with ``FANFLOW_PRICES=/path/prices.json`` (same shape; its entries win).

Lookup of a model: ``<provider>/<model>``, then ``<model>``, then the longest table key that
the model name starts with (``gpt-4o-mini-2024-07-18`` → ``gpt-4o-mini``). No match: the cost
is unknown (``None``) and the summary says so — we never guess.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from fanflow.errors import NodeError

PRICES_AS_OF = "2026-12"  # list prices, USD per 1M tokens (input, output); estimates only
PRICES: dict[str, tuple[float, float]] = {
    # OpenAI
    "gpt-4o": (2.50, 10.00),
    "gpt-4o-mini": (0.15, 0.60),
    "gpt-4.1": (2.00, 8.00),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-5": (1.25, 10.00),
    "gpt-5-mini": (0.25, 2.00),
    "gpt-5-nano": (0.05, 0.40),
    "o3": (2.00, 8.00),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    # Anthropic
    "claude-3-5-haiku": (0.80, 4.00),
    "claude-3-5-sonnet": (3.00, 15.00),
    "claude-3-7-sonnet": (3.00, 15.00),
    "claude-haiku-4-5": (1.00, 5.00),
    "claude-sonnet-4": (3.00, 15.00),
    "claude-opus-4": (15.00, 75.00),
    "claude-opus-4-1": (15.00, 75.00),
    # offline providers cost nothing
    "echo": (0.0, 0.0),
}

_loaded: tuple[str, dict[str, tuple[float, float]]] | None = None


def load_overrides(env: Mapping[str, str] | None = None) -> dict[str, tuple[float, float]]:
    """The table from ``FANFLOW_PRICES``: {"model": {"input": USD/1M, "output": USD/1M}}."""
    global _loaded
    env = os.environ if env is None else env
    path = env.get("FANFLOW_PRICES", "").strip()
    if not path:
        return {}
    if _loaded is not None and _loaded[0] == path:
        return _loaded[1]
    try:
        raw = json.loads(Path(path).expanduser().read_text(encoding="utf-8"))
        table = {str(k): _pair(v) for k, v in raw.items()}
    except (OSError, ValueError, TypeError, AttributeError) as exc:
        raise NodeError(
            f"FANFLOW_PRICES={path}: cannot read the price table ({exc}); expected "
            '{"model": {"input": 0.15, "output": 0.6}} in USD per million tokens',
            retryable=False,
        ) from None
    _loaded = (path, table)
    return table


def _pair(value: Any) -> tuple[float, float]:
    if isinstance(value, dict):
        return float(value["input"]), float(value["output"])
    if isinstance(value, list | tuple) and len(value) == 2:
        return float(value[0]), float(value[1])
    raise ValueError(f"bad price entry {value!r}")


def price_of(
    provider: str, model: str, env: Mapping[str, str] | None = None
) -> tuple[float, float] | None:
    table = {**PRICES, **load_overrides(env)}
    for key in (f"{provider}/{model}", model):
        if key in table:
            return table[key]
    best = max((k for k in table if model.startswith(k)), key=len, default=None)
    return table[best] if best is not None else None


def estimate_cost(
    provider: str,
    model: str,
    input_tokens: int,
    output_tokens: int,
    env: Mapping[str, str] | None = None,
) -> float | None:
    """Estimated USD for one call, or None when the model is not in the table."""
    price = price_of(provider, model, env)
    if price is None:
        return None
    return round((input_tokens * price[0] + output_tokens * price[1]) / 1e6, 8)


__all__ = ["PRICES", "PRICES_AS_OF", "estimate_cost", "load_overrides", "price_of"]
