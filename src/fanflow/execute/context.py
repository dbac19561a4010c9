"""Per-run context handed to every node: the things a run shares across all its nodes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from fanflow.events import EventBus
from fanflow.execute.threads import ThreadExecutor


@dataclass
class RunContext:
    run_id: str
    bus: EventBus
    threads: ThreadExecutor  # runs sync node lifecycles; grows to the budget when they block
    loop: asyncio.AbstractEventLoop
    # One limiter per resource ("llm:openai", "http:example.com", "node:shell"), shared by every
    # batch item and branch of the run. Built from the workflow's `limits` and CLI overrides.
    limits: Any = None  # fanflow.io.limits.LimitRegistry
    # One client per provider per run (never one per call); closed when the run ends.
    clients: dict[str, Any] = field(default_factory=dict)
    _closers: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    def on_close(self, closer: Callable[[], Awaitable[None]]) -> None:
        self._closers.append(closer)

    async def aclose(self) -> None:
        for closer in reversed(self._closers):
            try:
                await closer()
            except Exception:
                pass
        self._closers.clear()
