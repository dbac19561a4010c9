"""agent: hand a task to a coding-agent CLI (Claude Code's `claude`, OpenAI's `codex`) and take
its final answer. pflow's `agent` node, run as a supervised subprocess like the shell node's:
its own process group, killed on cancellation or timeout (docs/pflow.md, "agent").

    claude -p PROMPT --output-format json [--model M] [--append-system-prompt S] [--max-turns N]
    codex exec --skip-git-repo-check --output-last-message FILE [--model M] -- PROMPT

Neither program ships with fanflow: a missing one is reported before the run starts.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, ClassVar

from fanflow.errors import NodeError
from fanflow.execute import children
from fanflow.nodes.base import AsyncNode, Param, ParamProblem

BACKENDS = {
    "claude": "Claude Code (npm install -g @anthropic-ai/claude-code)",
    "codex": "the Codex CLI (npm install -g @openai/codex)",
}
DEFAULT_TIMEOUT = 300.0


class AgentNode(AsyncNode):
    type_name: ClassVar[str] = "agent"
    description: ClassVar[str] = (
        "Give a task to a coding agent (the claude or codex CLI) and take its final answer."
    )
    params_spec: ClassVar[dict[str, Param]] = {
        "backend": Param("string", True, description="claude or codex"),
        "prompt": Param("string", True, description="the task"),
        "model": Param("string", description="the backend's model name"),
        "system_prompt": Param("string", description="extra system instructions (claude)"),
        "cwd": Param("string", description="working directory the agent works in"),
        "timeout": Param("number", default=DEFAULT_TIMEOUT, gt=0, description="seconds"),
        "max_turns": Param("integer", ge=1, description="claude: most agent turns"),
        "allowed_tools": Param("array", items=("string",), description="claude: tools it may use"),
        "disallowed_tools": Param("array", items=("string",), description="claude: tools it may not use"),
        "sandbox": Param("any", description="codex: read-only, workspace-write or danger-full-access; claude: its sandbox settings object"),
        "max_thinking_tokens": Param("integer", ge=0, description="claude: reasoning budget"),
        "approval_policy": Param("string", description="codex: untrusted, on-failure, on-request or never"),
        "profile": Param("string", description="codex: the CLI profile"),
        "config": Param("object", description="codex: -c key=value overrides"),
        "add_dir": Param("array", items=("string",), description="codex: more writable folders"),
    }  # fmt: skip
    outputs_spec: ClassVar[dict[str, str]] = {
        "result": "the agent's final answer (text)",
        "session_id": "the backend's session id, when it gives one",
        "usage": "token usage the backend reported",
        "cost_usd": "cost the backend reported",
    }
    actions: ClassVar[tuple[str, ...]] = ("default", "error")

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        backend = params.get("backend")
        if isinstance(backend, str) and "${" not in backend and backend not in BACKENDS:
            return [ParamProblem(f"unknown agent backend {backend!r}", "backend",
                                 "use claude or codex")]  # fmt: skip
        return []

    @classmethod
    def preflight(cls, params: dict[str, Any]) -> str | None:
        backend = params.get("backend")
        if backend in BACKENDS and shutil.which(str(backend)) is None:
            return _missing(str(backend))
        return None

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        p = prep_res
        backend = p.get("backend")
        if backend not in BACKENDS:
            raise NodeError(
                f"unknown agent backend {backend!r}: use claude or codex", retryable=False
            )
        program = shutil.which(backend)
        if program is None:
            raise NodeError(_missing(backend), retryable=False)
        cwd = p.get("cwd") or None
        if cwd is not None and not os.path.isdir(cwd):
            raise NodeError(f"cwd {cwd!r} is not a directory", retryable=False)
        timeout = float(p.get("timeout") or DEFAULT_TIMEOUT)
        with tempfile.TemporaryDirectory(prefix="fanflow-agent-") as tmp:
            last = Path(tmp) / "last-message.txt"
            argv = _argv(program, backend, p, last)
            env = None
            if backend == "claude" and p.get("max_thinking_tokens") is not None:
                env = {**os.environ, "MAX_THINKING_TOKENS": str(p["max_thinking_tokens"])}
            out, err, code = await _run(argv, cwd, timeout, env)
            if code != 0:
                detail = (err.strip() or out.strip())[-500:]
                raise NodeError(
                    f"{backend} exited with code {code}" + (f": {detail}" if detail else "")
                )
            if backend == "codex":
                text = last.read_text() if last.exists() else out
                return {"result": text.strip(), "session_id": None, "usage": {}, "cost_usd": None}
        return _claude_outputs(out)


def _missing(backend: str) -> str:
    return f"agent backend '{backend}' needs the `{backend}` program on PATH: install {BACKENDS[backend]}"


def _argv(program: str, backend: str, p: dict[str, Any], last: Path) -> list[str]:
    prompt = str(p["prompt"])
    if backend == "claude":
        argv = [program, "-p", prompt, "--output-format", "json"]
        if p.get("model"):
            argv += ["--model", str(p["model"])]
        if p.get("system_prompt"):
            argv += ["--append-system-prompt", str(p["system_prompt"])]
        if p.get("max_turns"):
            argv += ["--max-turns", str(p["max_turns"])]
        if p.get("allowed_tools"):
            argv += ["--allowedTools", ",".join(map(str, p["allowed_tools"]))]
        if p.get("disallowed_tools"):
            argv += ["--disallowedTools", ",".join(map(str, p["disallowed_tools"]))]
        if isinstance(p.get("sandbox"), dict):
            argv += ["--settings", json.dumps({"sandbox": p["sandbox"]})]
        return argv
    argv = [program, "exec", "--skip-git-repo-check", "--output-last-message", str(last)]
    for flag, key in (("--model", "model"), ("--sandbox", "sandbox"), ("--profile", "profile")):
        if p.get(key) and isinstance(p[key], str | int | float):
            argv += [flag, str(p[key])]
    config = dict(p.get("config") or {})
    if p.get("approval_policy"):
        config["approval_policy"] = p["approval_policy"]
    if p.get("system_prompt"):
        config["instructions"] = p["system_prompt"]
    for key, value in config.items():  # codex parses each value as TOML; JSON text is TOML
        argv += ["-c", f"{key}={json.dumps(value)}"]
    for folder in p.get("add_dir") or ():
        argv += ["--add-dir", str(folder)]
    return [*argv, "--", prompt]


async def _run(
    argv: list[str], cwd: str | None, timeout: float, env: dict[str, str] | None
) -> tuple[str, str, int]:
    proc = await children.spawn(
        argv[0], *argv[1:], env=env, stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, cwd=cwd,
    )  # fmt: skip
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except TimeoutError:
        await children.kill_group(proc)
        raise NodeError(f"agent timed out after {timeout:g} s", retryable=True) from None
    except BaseException:  # cancelled: fail-fast, SIGINT, a lost race
        await children.kill_group(proc)
        raise
    code = proc.returncode if proc.returncode is not None else -1
    return out.decode(errors="replace"), err.decode(errors="replace"), code


def _claude_outputs(out: str) -> dict[str, Any]:
    """`claude -p --output-format json` prints one JSON object: result, session_id, usage…"""
    try:
        reply = json.loads(out)
    except ValueError:
        return {"result": out.strip(), "session_id": None, "usage": {}, "cost_usd": None}
    if not isinstance(reply, dict):
        return {"result": out.strip(), "session_id": None, "usage": {}, "cost_usd": None}
    if reply.get("is_error"):
        raise NodeError(f"claude reported an error: {reply.get('result') or reply.get('subtype')}")
    return {
        "result": reply.get("result", ""),
        "session_id": reply.get("session_id"),
        "usage": reply.get("usage") or {},
        "cost_usd": reply.get("total_cost_usd"),
    }
