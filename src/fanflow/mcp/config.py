"""Where MCP servers are configured: the workflow's `mcp_servers` and the user's config file.

Both use the shape MCP hosts use::

    {"mcpServers": {"name": {"command": "...", "args": [...], "env": {...}, "cwd": "..."},
                    "other": {"url": "http://127.0.0.1:8000/mcp", "headers": {...}}}}

The user file is `$FANFLOW_MCP_CONFIG` when set, else `$XDG_CONFIG_HOME/fanflow/mcp.json`
(`~/.config/fanflow/mcp.json`). A server the workflow names overrides one of the same name in the
file. Keys hosts add for themselves (`disabled`, `alwaysAllow`, `description`, …) are ignored in
the file; a host entry with `"disabled": true` is left out. `${NAME}` in `args`, `env`, `cwd`,
`url` and `headers` is replaced by the environment variable NAME when the session opens (so a
token never has to be written into a workflow).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fanflow.errors import NodeError, Problem, WorkflowInvalid
from fanflow.load.model import McpServerSpec, SchemaInvalid, field_path

CONFIG_ENV = "FANFLOW_MCP_CONFIG"
_SPEC_KEYS = {"type", "command", "args", "env", "cwd", "url", "headers"}
_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")

_cache: dict[tuple[str, float], dict[str, McpServerSpec]] = {}


def user_config_path() -> Path:
    """The user's MCP config file (it need not exist)."""
    given = os.environ.get(CONFIG_ENV)
    if given:
        return Path(given).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "fanflow" / "mcp.json"


def load_user_servers() -> dict[str, McpServerSpec]:
    """The servers of the user's config file ({} when there is none). Raises WorkflowInvalid
    naming the file and the entry when it is malformed."""
    path = user_config_path()
    try:
        mtime = path.stat().st_mtime
    except OSError:
        if os.environ.get(CONFIG_ENV):
            raise WorkflowInvalid([Problem("MCP config file not found", str(path),
                                           hint=f"fix or unset {CONFIG_ENV}")]) from None  # fmt: skip
        return {}
    key = (str(path), mtime)
    if key in _cache:
        return _cache[key]
    found = parse_servers_document(_read_json(path), str(path))
    _cache.clear()
    _cache[key] = found
    return found


def _read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowInvalid(
            [Problem(f"cannot read the MCP config file: {exc}", str(path))]
        ) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise WorkflowInvalid([Problem(
            f"malformed JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}", str(path),
            hint="the file holds {\"mcpServers\": {name: {command, args, env} | {url}}}")]) from None  # fmt: skip


def parse_servers_document(doc: Any, file: str | None = None) -> dict[str, McpServerSpec]:
    """`{"mcpServers": {...}}` (or the bare mapping) → validated specs."""
    if isinstance(doc, dict) and isinstance(doc.get("mcpServers"), dict):
        entries, prefix = doc["mcpServers"], "mcpServers"
    elif isinstance(doc, dict) and "mcpServers" not in doc:
        entries, prefix = doc, ""
    else:
        raise WorkflowInvalid([Problem("expected {\"mcpServers\": {name: server}}", file,
                                       "mcpServers")])  # fmt: skip
    out: dict[str, McpServerSpec] = {}
    problems: list[Problem] = []
    for name, entry in entries.items():
        where = f"{prefix}.{name}" if prefix else name
        if not isinstance(entry, dict):
            problems.append(Problem("a server must be an object", file, where))
            continue
        if entry.get("disabled") is True:
            continue
        try:
            out[name] = McpServerSpec.from_dict({k: v for k, v in entry.items() if k in _SPEC_KEYS})
        except SchemaInvalid as exc:
            for err in exc.errors:
                sub = field_path(err.loc)
                problems.append(Problem(err.message, file, f"{where}.{sub}" if sub else where))
    if problems:
        raise WorkflowInvalid(problems)
    return out


def configured_servers(workflow: Any) -> dict[str, McpServerSpec]:
    """Every server a workflow can name: the user's file, then the workflow's own (which win)."""
    own = dict(getattr(workflow, "mcp_servers", None) or {})
    return {**load_user_servers(), **own}


@dataclass(frozen=True)
class ServerTarget:
    """A server spec with `${NAME}` references resolved: what a session is opened with."""

    name: str
    command: str | None
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    cwd: str | None
    url: str | None
    headers: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        """Sessions are pooled by name and the exact settings (a sub-workflow may define the
        same name differently)."""
        text = json.dumps([self.name, self.command, self.args, self.env, self.cwd, self.url,
                           self.headers])  # fmt: skip
        return self.name + ":" + hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def transport(self) -> str:
        return "stdio" if self.command is not None else "http"

    def describe(self) -> str:
        if self.url is not None:
            return self.url
        return " ".join([self.command or "", *self.args])


def resolve_target(name: str, spec: McpServerSpec, base_dir: str | None = None) -> ServerTarget:
    """Resolve `${NAME}` references; a relative `cwd` is taken from the workflow's folder."""

    def sub(value: str, field: str) -> str:
        def one(m: re.Match[str]) -> str:
            var = m.group(1)
            if var not in os.environ:
                raise NodeError(
                    f"mcp server '{name}': {field} uses ${{{var}}} but the environment "
                    f"variable {var} is not set"
                )
            return os.environ[var]

        return _ENV_REF.sub(one, value)

    cwd = sub(spec.cwd, "cwd") if spec.cwd else None
    if cwd and base_dir and not os.path.isabs(cwd):
        cwd = os.path.join(base_dir, cwd)
    return ServerTarget(
        name=name,
        command=spec.command,
        args=tuple(sub(a, "args") for a in spec.args),
        env=tuple(sorted((k, sub(v, f"env.{k}")) for k, v in spec.env.items())),
        cwd=cwd,
        url=sub(spec.url, "url") if spec.url else None,
        headers=tuple(sorted((k, sub(v, f"headers.{k}")) for k, v in spec.headers.items())),
    )
