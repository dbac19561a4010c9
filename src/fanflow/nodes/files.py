"""read-file and write-file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fanflow.errors import NodeError
from fanflow.nodes.base import Node, Param
from fanflow.templates import to_text


class ReadFileNode(Node):
    type_name = "read-file"
    description = "Read a text file."
    params_spec = {
        "file_path": Param("string", True, description="path to read"),
        "encoding": Param("string", default="utf-8", description="text encoding"),
    }
    outputs_spec = {"content": "the file's text", "file_path": "the path read"}
    actions = ("default", "error")

    def exec(self, prep_res: Any) -> dict[str, Any]:
        path = Path(self.params["file_path"])
        try:
            content = path.read_text(encoding=self.params.get("encoding") or "utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise NodeError(f"cannot read {path}: {exc}") from None
        return {"content": content, "file_path": str(path)}


class WriteFileNode(Node):
    type_name = "write-file"
    description = "Write (or append) text to a file, creating parent folders."
    params_spec = {
        "file_path": Param("string", True, description="path to write"),
        "content": Param("any", True, description="text to write (dicts/lists as JSON)"),
        "append": Param("boolean", default=False, description="append instead of replacing"),
        "encoding": Param("string", default="utf-8", description="text encoding"),
    }
    outputs_spec = {"written": "number of characters written", "file_path": "the path written"}
    actions = ("default", "error")

    def exec(self, prep_res: Any) -> dict[str, Any]:
        path = Path(self.params["file_path"])
        text = to_text(self.params.get("content"))
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = "a" if self.params.get("append") else "w"
            with path.open(mode, encoding=self.params.get("encoding") or "utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise NodeError(f"cannot write {path}: {exc}") from None
        return {"written": len(text), "file_path": str(path)}
