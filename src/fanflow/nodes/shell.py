"""shell: run a command in its own process group, so cancellation kills grandchildren too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
from typing import Any

from fanflow import templates
from fanflow.errors import NodeError
from fanflow.nodes.base import AsyncNode, Param, Scope

KILL_GRACE_SECONDS = 2.0


class ShellNode(AsyncNode):
    type_name = "shell"
    description = "Run a shell command (bash); template values are passed as data, never code."
    params_spec = {
        "command": Param("string", True, description="the command line, run by bash -c"),
        "stdin": Param("any", description="text fed to stdin (dicts/lists as JSON)"),
        "cwd": Param("string", description="working directory"),
        "env": Param("object", description="extra environment variables"),
        "timeout": Param("number", default=None, description="seconds before the command is killed"),
        "ignore_errors": Param("boolean", default=False, description="a non-zero exit is not a failure"),
    }  # fmt: skip
    outputs_spec = {
        "stdout": "standard output, trailing newline stripped",
        "stderr": "standard error",
        "exit_code": "the exit status",
    }

    @classmethod
    def render_params(cls, compiled: Any, scope: Scope) -> dict[str, Any]:
        """Values substituted into `command` are data, never code: each template becomes a
        quoted reference to an environment variable that holds its value (added to `env`)."""
        params = {k: templates.render(v, scope) for k, v in compiled.items() if k != "command"}
        command, values = templates.render_for_shell(compiled["command"], scope, "FANFLOW_VALUE_")
        params["command"] = command
        if values:
            params["env"] = {**(params.get("env") or {}), **values}
        return params

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        p = self.params
        env = os.environ.copy()
        env.update({str(k): str(v) for k, v in (p.get("env") or {}).items()})
        stdin = p.get("stdin")
        if stdin is not None and not isinstance(stdin, str | bytes):
            stdin = json.dumps(stdin)
        if isinstance(stdin, str):
            stdin = stdin.encode()
        proc = await asyncio.create_subprocess_exec(
            "bash", "-c", p["command"],
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=p.get("cwd") or None,
            env=env,
            start_new_session=True,  # own process group: killpg reaches every descendant
        )  # fmt: skip
        try:
            out, err = await asyncio.wait_for(proc.communicate(stdin), p.get("timeout"))
        except TimeoutError:
            await _kill_group(proc)
            raise NodeError(
                f"command timed out after {p.get('timeout')} s", retryable=True
            ) from None
        except BaseException:  # cancelled: fail-fast, SIGINT or a lost race
            await _kill_group(proc)
            raise
        stdout = out.decode(errors="replace").removesuffix("\n")
        stderr = err.decode(errors="replace")
        outputs: dict[str, Any] = {"stdout": stdout, "stderr": stderr, "exit_code": proc.returncode}
        if proc.returncode != 0 and not p.get("ignore_errors"):
            detail = stderr.strip()[-500:] or stdout[-500:]
            raise NodeError(
                f"command failed with exit code {proc.returncode}"
                + (f": {detail}" if detail else ""),
                outputs=outputs,
            )
        return outputs


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM the whole group, give it a moment, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.shield(asyncio.wait_for(proc.wait(), KILL_GRACE_SECONDS))
            if sig == signal.SIGTERM:
                # The leader is gone; make sure no grandchild in the group survives it.
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
            return
        except (TimeoutError, asyncio.CancelledError):
            continue
