"""Shared helpers: run the real CLI in a subprocess, write workflow files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fanflow.testing.mockllm import MockLLMServer

FANFLOW = [sys.executable, "-m", "fanflow"]


@pytest.fixture(scope="module")
def server():
    """A mock OpenAI/Anthropic server on loopback, shared by a test module."""
    with MockLLMServer(delay=0.0) as srv:
        yield srv


def point_llm_at(
    server: MockLLMServer, monkeypatch: pytest.MonkeyPatch, *, anthropic: bool = False
) -> MockLLMServer:
    """Reset the mock and point the openai (and anthropic) providers at it with test keys."""
    server.reset()
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPENAI_BASE_URL", server.url + "/v1")
    if anthropic:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
    return server


@dataclass
class CliResult:
    code: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout)


def run_cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None,
            timeout: float = 60) -> CliResult:  # fmt: skip
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [*FANFLOW, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout
    )
    assert "Traceback" not in proc.stderr, proc.stderr
    return CliResult(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def write_wf(tmp_path: Path):
    def write(doc: dict[str, Any] | str, name: str = "wf.json") -> Path:
        path = tmp_path / name
        path.write_text(doc if isinstance(doc, str) else json.dumps(doc, indent=2))
        return path

    return write


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Keep run stores of CLI runs inside the test's temp folder.
    monkeypatch.setenv("FANFLOW_HOME", str(tmp_path / ".fanflow-home"))


def wf(nodes: list[dict], edges: list[dict] | None = None, **extra: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"ir_version": "0.1.0", "nodes": nodes, **extra}
    if edges is not None:
        doc["edges"] = [
            {"from": e[0], "to": e[1], **({"action": e[2]} if len(e) > 2 else {})}
            if isinstance(e, tuple | list)
            else e
            for e in edges
        ]
    return doc


class Events:
    """A listener that keeps every event (fanflow.events.Event) of a run."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def on_event(self, event: Any) -> None:
        self.events.append(event)

    def close(self) -> None:
        pass

    def t(self, kind: str, node: str) -> float:
        """When the first `kind` event of `node` happened (perf_counter seconds)."""
        return next(e.t for e in self.events if e.kind == kind and e.node == node)

    def span(self, node: str) -> tuple[float, float]:
        return self.t("node_started", node), self.t("node_finished", node)
