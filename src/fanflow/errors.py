"""User-facing errors. Every error a user can cause ends up as one of these, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass

EXIT_OK = 0
EXIT_RUN_FAILED = 1
EXIT_INVALID = 2
EXIT_INTERRUPTED = 130


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow or command line: where it is, what it is, how to fix it."""

    message: str
    file: str | None = None
    field: str | None = None  # JSON path such as "nodes[3].params.command"
    node: str | None = None
    hint: str | None = None

    def format(self) -> str:
        where = ":".join(p for p in (self.file, self.field) if p)
        if self.node:
            where = f"{where} (node '{self.node}')" if where else f"node '{self.node}'"
        text = f"{where}: {self.message}" if where else self.message
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text

    def to_dict(self) -> dict[str, str]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class FanflowError(Exception):
    """Base class: carries the documented exit code."""

    exit_code = EXIT_RUN_FAILED


class WorkflowInvalid(FanflowError):
    """The workflow or the command line is invalid (exit 2). Holds every problem found."""

    exit_code = EXIT_INVALID

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__(self.format())

    def format(self) -> str:
        n = len(self.problems)
        # Problems with no file come from the command line or environment (inputs, --limit).
        head = "invalid workflow" if any(p.file for p in self.problems) else "invalid settings"
        head = head if n == 1 else f"{head} ({n} problems)"
        return head + ":\n" + "\n".join("  - " + p.format() for p in self.problems)


class NodeError(Exception):
    """Raised by a node for an expected failure. `retryable` marks transient causes
    (429, 5xx, timeouts); `retry_after` carries a server's Retry-After in seconds."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        outputs: dict | None = None,
    ):
        super().__init__(message)
        self.retryable = retryable
        self.retry_after = retry_after
        # What the node produced before failing (e.g. a shell command's stdout/stderr/exit_code),
        # kept so an `error` edge handler can read it.
        self.outputs = outputs
