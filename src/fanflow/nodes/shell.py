"""shell: run a command in its own process group, so cancellation kills grandchildren too."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

from fanflow import templates
from fanflow.errors import NodeError
from fanflow.execute import children
from fanflow.nodes import shell_syntax
from fanflow.nodes.base import AsyncNode, Param, ParamProblem, Scope

KILL_GRACE_SECONDS = 2.0
VALUE_PREFIX = "FANFLOW_VALUE_"  # the variables that carry template values into the command


class ShellNode(AsyncNode):
    type_name = "shell"
    description = "Run a shell command (bash); template values are passed as data, never code."
    params_spec = {
        "command": Param("string", True, description="the command line, run by bash -c"),
        "stdin": Param("any", description="text fed to stdin (dicts/lists as JSON)"),
        "cwd": Param("string", description="working directory"),
        "env": Param("object", description="extra environment variables", items=("string", "number")),
        "timeout": Param("number", default=None, description="seconds before the command is killed", gt=0),
        "ignore_errors": Param("boolean", default=False, description="a non-zero exit is not a failure"),
        "strip_newline": Param("boolean", default=True, description="drop stdout's trailing newline"),
        "inputs": Param("object", description="names the command can use as ${name} (values may be templates), pflow's form"),
    }  # fmt: skip
    actions = ("default", "error")  # a non-zero exit is `error` (taken by an error edge)
    outputs_spec = {
        "stdout": "standard output, its trailing newline stripped (unless strip_newline: false)",
        "stderr": "standard error",
        "exit_code": "the exit status",
    }

    @classmethod
    def render_params(cls, compiled: Any, scope: Scope) -> dict[str, Any]:
        """Values substituted into `command` are data, never code: each template becomes a
        reference to a variable holding its value (added to `env`), quoted for its shell
        context (nodes/shell_syntax.py, docs/shell.md)."""
        params = {k: templates.render(v, scope) for k, v in compiled.items() if k != "command"}
        own = params.get("inputs")
        if isinstance(own, dict) and own:  # the command's own names first, then the workflow's

            def scope(root: str, outer: Scope = scope, own: dict[str, Any] = own) -> Any:
                return own[root] if root in own else outer(root)

        command, values = shell_syntax.render_command(compiled["command"], scope, VALUE_PREFIX)
        params["command"] = command
        if values:
            params["env"] = {**(params.get("env") or {}), **values}
        return params

    @classmethod
    def local_names(cls, params: dict[str, Any]) -> tuple[str, ...]:
        own = params.get("inputs")
        return tuple(own) if isinstance(own, dict) else ()

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        """Templates at positions where no reference to a value can be safe (a quoted
        here-document, `eval`'s arguments, …) are refused before anything runs."""
        return [
            ParamProblem(message, "command", hint)
            for message, hint in shell_syntax.problems(params.get("command"))
        ]

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        p = self.params
        extra = {str(k): templates.to_text(v) for k, v in (p.get("env") or {}).items()}
        stdin = p.get("stdin")
        if stdin is not None and not isinstance(stdin, str | bytes):
            stdin = json.dumps(stdin)
        if isinstance(stdin, str):
            stdin = stdin.encode(errors="surrogateescape")
        cwd = p.get("cwd")
        if cwd and not os.path.isdir(cwd):
            raise NodeError(f"cwd {cwd!r} is not a directory")
        # Values too big for one environment string or argument travel on stdin (docs/shell.md).
        delivery = shell_syntax.deliver(p["command"], extra, stdin)
        env, stdin = delivery.env, delivery.stdin
        p = {**p, "command": delivery.command}
        # Own process group, supervised: killpg reaches every descendant, even if fanflow dies.
        proc = await children.spawn(
            "bash", "-c", p["command"],
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            cwd=p.get("cwd") or None,
            env=env,
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
        stdout = out.decode(errors="replace")
        if p.get("strip_newline") is not False:
            stdout = stdout.removesuffix("\n")
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
    """SIGTERM the whole group; SIGKILL it once the leader is gone or after the grace period."""
    await children.kill_group(proc, KILL_GRACE_SECONDS)
