"""Retry policy: how many attempts, which failures are worth another try, how long to wait."""

from __future__ import annotations

import random
from dataclasses import dataclass

from fanflow.errors import NodeError

RETRY_AFTER_CAP = 300.0  # never sleep longer than this on a server's say-so


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 1  # total attempts; 1 = no retry
    wait: float = 0.0
    backoff: str = "fixed"  # fixed | exponential
    max_wait: float = 30.0
    transient_only: bool = False  # retry only NodeErrors marked retryable (429, 5xx, timeouts)

    def should_retry(self, attempt: int, exc: BaseException) -> bool:
        if attempt >= self.attempts:
            return False
        if self.transient_only:
            return isinstance(exc, NodeError) and exc.retryable
        return True

    def delay(self, attempt: int, exc: BaseException) -> float:
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return min(max(float(retry_after), 0.0), RETRY_AFTER_CAP)
        if self.backoff == "exponential":
            base = min(self.max_wait, self.wait * 2 ** (attempt - 1))
            return base * (0.5 + random.random() / 2)  # jitter spreads synchronized retries
        return self.wait


NO_RETRY = RetryPolicy()
