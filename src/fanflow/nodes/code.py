"""code: inline Python. `inputs` are bound as variables; `result` is the output; `next` is the action."""

from __future__ import annotations

from typing import Any

from fanflow.errors import NodeError
from fanflow.nodes.base import Node, Param

_compiled: dict[str, Any] = {}


class CodeNode(Node):
    type_name = "code"
    description = "Run inline Python; assign `result` (and optionally `next` to pick the action)."
    params_spec = {
        "code": Param("string", True, description="Python source; inputs are bound as variables"),
        "inputs": Param("object", default={}, description="{name: value or ${template}}"),
    }
    outputs_spec = {"result": "the value the code assigned to `result`"}

    def exec(self, prep_res: Any) -> tuple[dict[str, Any], str | None]:
        source = self.params["code"]
        code = _compiled.get(source)
        if code is None:
            try:
                code = _compiled[source] = compile(source, f"<code node {self.node_id}>", "exec")
            except SyntaxError as exc:
                raise NodeError(f"syntax error in code, line {exc.lineno}: {exc.msg}") from None
        namespace: dict[str, Any] = dict(self.params.get("inputs") or {})
        try:
            exec(code, namespace)  # inline Python is the node's purpose
        except Exception as exc:
            raise NodeError(f"{type(exc).__name__}: {exc}") from None
        action = str(namespace["next"]) if "next" in namespace else None
        return {"result": namespace.get("result")}, action

    def post(self, shared: Any, prep_res: Any, exec_res: Any) -> str | None:
        outputs, action = exec_res
        shared.update(outputs)
        return action
