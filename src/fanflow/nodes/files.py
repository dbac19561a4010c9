"""read-file, write-file, copy-file, move-file, delete-file."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

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


_OVERWRITE = Param("boolean", default=False, description="replace an existing destination")


def _source_and_dest(params: dict[str, Any], verb: str) -> tuple[Path, Path]:
    source, dest = Path(params["source_path"]), Path(params["dest_path"])
    if not source.is_file():
        why = "is a folder" if source.is_dir() else "does not exist"
        raise NodeError(f"cannot {verb} {source}: it {why}", retryable=False)
    if dest.is_dir():
        dest = dest / source.name  # into a folder, as cp and mv do
    if dest.exists() and not params.get("overwrite"):
        raise NodeError(
            f"cannot {verb} to {dest}: it already exists; set overwrite: true to replace it",
            retryable=False,
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    return source, dest


def _transfer_params(what: str) -> dict[str, Param]:
    return {
        "source_path": Param("string", True, description=f"file to {what}"),
        "dest_path": Param("string", True, description="destination file, or a folder"),
        "overwrite": _OVERWRITE,
    }


class _TransferNode(Node):
    """copy-file and move-file: one file to a destination file or folder."""

    verb: ClassVar[str]
    done: ClassVar[str]  # the output key that says it happened
    actions = ("default", "error")

    @staticmethod
    def transfer(source: Path, dest: Path) -> object:
        raise NotImplementedError

    def exec(self, prep_res: Any) -> dict[str, Any]:
        source, dest = _source_and_dest(self.params, self.verb)
        try:
            self.transfer(source, dest)
        except OSError as exc:
            raise NodeError(f"cannot {self.verb} {source} to {dest}: {exc}") from None
        return {self.done: True, "dest_path": str(dest)}


class CopyFileNode(_TransferNode):
    type_name = "copy-file"
    description = "Copy a file (with its metadata), creating the destination's parent folders."
    params_spec = _transfer_params("copy")
    outputs_spec = {"copied": "true when the copy succeeded", "dest_path": "the file written"}
    verb, done = "copy", "copied"

    @staticmethod
    def transfer(source: Path, dest: Path) -> object:
        return shutil.copy2(source, dest)


class MoveFileNode(_TransferNode):
    type_name = "move-file"
    description = "Move (rename) a file, across file systems too, creating parent folders."
    params_spec = _transfer_params("move")
    outputs_spec = {"moved": "true when the move succeeded", "dest_path": "where the file is now"}
    verb, done = "move", "moved"

    @staticmethod
    def transfer(source: Path, dest: Path) -> object:
        return shutil.move(source, dest)


class DeleteFileNode(Node):
    """pflow's safety rule: the workflow input `confirm_delete` must be the boolean true (a
    param cannot authorise it, nor the text "true"), so a workflow deletes nothing unless the
    person running it says so."""

    type_name = "delete-file"
    description = (
        "Delete a file; runs only when the workflow input confirm_delete is true (boolean). "
        "A file that is already gone counts as deleted."
    )
    params_spec = {"file_path": Param("string", True, description="file to delete")}
    outputs_spec = {"deleted": "what was done", "file_path": "the path"}
    actions = ("default", "error")

    def prep(self, shared: Any) -> Any:
        return shared.get("confirm_delete") is True

    def exec(self, prep_res: Any) -> dict[str, Any]:
        path = Path(self.params["file_path"])
        if prep_res is not True:
            raise NodeError(
                f"delete-file refuses to delete {path}: declare a boolean workflow input "
                "'confirm_delete' and run with confirm_delete=true",
                retryable=False,
            )
        if path.is_dir():
            raise NodeError(f"cannot delete {path}: it is a folder", retryable=False)
        try:
            path.unlink()
        except FileNotFoundError:
            return {"deleted": f"{path} did not exist", "file_path": str(path)}
        except OSError as exc:
            raise NodeError(f"cannot delete {path}: {exc}") from None
        return {"deleted": f"deleted {path}", "file_path": str(path)}
