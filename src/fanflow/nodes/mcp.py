"""mcp node: call one tool on an MCP server, over the run's pooled session for that server.

Servers come from the workflow's `mcp_servers` and the user's MCP config file
(fanflow.mcp.config). The `mcp` SDK is imported only when a session opens.
"""

from __future__ import annotations

import json
import os
from typing import TYPE_CHECKING, Any, ClassVar

from fanflow.errors import NodeError, WorkflowInvalid
from fanflow.nodes.base import AsyncNode, Param, ParamProblem

if TYPE_CHECKING:
    from fanflow.io.limits import LimitRegistry


def tool_result(structured: Any, text: str) -> Any:
    """The node's `result`: the structured content when the tool gives it (a primitive or list
    the SDK wrapped as {"result": value} is unwrapped), else the text parsed as JSON when it is
    JSON, else the text."""
    if structured is not None:
        if isinstance(structured, dict) and len(structured) == 1 and "result" in structured:
            return structured["result"]
        return structured
    stripped = text.strip()
    if stripped[:1] in ("{", "[", '"') or stripped in ("true", "false", "null"):
        try:
            return json.loads(stripped)
        except ValueError:
            pass
    return text


class McpNode(AsyncNode):
    type_name = "mcp"
    description = (
        "Call a tool on an MCP server (configured in `mcp_servers` or the user's MCP config); "
        "one pooled session per server per run. A tool error fails the node."
    )
    params_spec: ClassVar[dict[str, Param]] = {
        "server": Param("string", required=True, description="a configured MCP server name"),
        "tool": Param("string", required=True, description="the tool's name on that server"),
        "arguments": Param("object", default=None, description="the tool's arguments (templates work)"),
        "timeout": Param("number", default=None, gt=0, description="seconds for the call (default: none)"),
    }  # fmt: skip
    outputs_spec: ClassVar[dict[str, str]] = {
        "result": "structured content when the tool gives it, else the text (JSON-decoded when JSON)",
        "text": "the text content, joined with newlines",
        "structured": "the raw structured content (null when the tool gives none)",
        "is_error": "boolean: true only when an `error` edge handles a tool error",
    }  # fmt: skip
    actions: ClassVar[tuple[str, ...] | None] = ("default", "error")

    @classmethod
    def plan_detail(cls, params: dict[str, Any]) -> str | None:
        return f"mcp {params.get('server')}.{params.get('tool')}"

    @classmethod
    def resource_keys(cls, params: dict[str, Any], limits: LimitRegistry) -> list[str]:
        """`mcp:<server>` (concurrency, rpm), acquired before the budget slot."""
        server = params.get("server")
        key = f"mcp:{server}"
        return [key] if isinstance(server, str) and key in limits.keys else []

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        problems: list[str | ParamProblem] = []
        for name in ("server", "tool"):
            value = params.get(name)
            if name in params and (not isinstance(value, str) or not value.strip()):
                problems.append(ParamProblem(f"'{name}' must be a non-empty string", name))
        return problems

    @classmethod
    def validate_in_workflow(
        cls, params: dict[str, Any], workflow: Any
    ) -> list[str | ParamProblem]:
        """The server must be configured (unless it is a template, known only at run time)."""
        server = params.get("server")
        if not isinstance(server, str) or not server.strip() or "${" in server:
            return []
        from fanflow.mcp.config import configured_servers, user_config_path

        try:
            servers = configured_servers(workflow)
        except WorkflowInvalid as exc:
            first = exc.problems[0]
            return [ParamProblem(f"cannot read the MCP server config: {first.format()}", "server",
                                 "fix the file, or set FANFLOW_MCP_CONFIG to another one")]  # fmt: skip
        if server in servers:
            return []
        names = ", ".join(sorted(servers)) or "none"
        return [ParamProblem(
            f"unknown MCP server '{server}'", "server",
            f"configured servers: {names}; add it to the workflow's `mcp_servers` or to "
            f"{user_config_path()} ({{\"mcpServers\": {{\"{server}\": {{\"command\": …}}}}}})")]  # fmt: skip

    async def exec_async(self, prep_res: Any) -> dict[str, Any]:
        from fanflow.mcp.config import configured_servers, resolve_target
        from fanflow.mcp.pool import get_pool

        p = prep_res or {}
        server, tool = p.get("server"), p.get("tool")
        if not isinstance(server, str) or not server:
            raise NodeError("mcp: 'server' must be a non-empty string")
        if not isinstance(tool, str) or not tool:
            raise NodeError("mcp: 'tool' must be a non-empty string")
        arguments = p.get("arguments") or {}
        if not isinstance(arguments, dict):
            raise NodeError(f"mcp: 'arguments' must be an object, got {type(arguments).__name__}")
        timeout = p.get("timeout")
        workflow = getattr(self.ctx, "workflow", None)
        try:
            servers = configured_servers(workflow)
        except WorkflowInvalid as exc:
            raise NodeError(f"mcp: cannot read the MCP server config: {exc}") from None
        spec = servers.get(server)
        if spec is None:
            raise NodeError(
                f"mcp: unknown MCP server '{server}' (configured: {', '.join(sorted(servers)) or 'none'})"
            )
        source = getattr(workflow, "source", None)
        target = resolve_target(
            server, spec, os.path.dirname(os.path.abspath(source)) if source else None
        )
        res = await get_pool(self.ctx).call_tool(
            target, tool, arguments, float(timeout) if timeout is not None else None
        )
        text = "\n".join(
            c.text for c in res.content if getattr(c, "type", None) == "text" and hasattr(c, "text")
        )
        structured = res.structured_content
        outputs = {
            "result": tool_result(structured, text) if not res.is_error else None,
            "text": text,
            "structured": structured,
            "is_error": bool(res.is_error),
        }
        if res.is_error:
            raise NodeError(
                f"mcp tool '{tool}' on server '{server}' returned an error: {text or '(no text)'}",
                outputs=outputs,
            )
        return outputs
