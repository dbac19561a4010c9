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
    # The workflow being run (fanflow.load.model.Workflow: its `source`, `mcp_servers`, …); a
    # sub-workflow's run gets a copy of this context naming its own workflow.
    workflow: Any = None
    # The global --max-concurrent budget (fanflow.execute.budget.Budget), shared by nested runs.
    budget: Any = None
    depth: int = 0  # how deep in sub-workflows this run is (0: the top-level run)
    # Where sync leaves' exec runs besides the threads (fanflow.execute.executors.Executors;
    # None: every sync leaf on the threads). Shared by nested runs.
    executors: Any = None
    # What an earlier run completed (fanflow.execute.resume_state.ResumeState), for --resume;
    # a sub-workflow's run sees the entries recorded under its own prefix.
    resume: Any = None
    # The run's LLM providers (fanflow.io.provider_config.Table: name → ProviderConfig), from
    # the workflow's `providers`, FANFLOW_PROVIDERS and the CLI; a sub-workflow adds its own.
    providers: Any = None
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
