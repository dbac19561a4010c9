"""Where LLM providers are configured: the workflow's `providers`, ``FANFLOW_PROVIDERS``, the
CLI (``--providers FILE``, ``--provider NAME=URL``), merged field by field in that order.

An entry: ``{"kind": "openai"|"anthropic", "base_url", "api_key_env", "default_model",
"headers"}``. A model ``<name>/<model>`` routes to entry `name`; an entry named like a built-in
(``openai``, ``anthropic``, ``ollama``) changes that built-in. ``${VAR}`` in a header value is
the environment variable VAR (as in MCP server settings). docs/llm.md, "Providers".
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow.errors import Problem, WorkflowInvalid

ENV_VAR = "FANFLOW_PROVIDERS"
RUN_LABEL = "run.providers"  # messages about the CLI's / fanflow.run's providers
FIELDS = ("kind", "base_url", "api_key_env", "default_model", "headers")
BUILTIN_KINDS = {"openai": "openai", "anthropic": "anthropic", "ollama": "openai"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_VAR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FIELD_HINT = "fields: kind (openai|anthropic), base_url, api_key_env, default_model, headers"

Entries = dict[str, dict[str, Any]]  # name → raw entry (JSON)


@dataclass(frozen=True)
class ProviderConfig:
    """One configured provider, merged from every place that names it."""

    name: str
    kind: str = "openai"  # the API it speaks
    base_url: str | None = None
    api_key_env: str | None = None
    default_model: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    where: str = ""  # where it was (last) defined, for messages: "providers.local"
    origins: Mapping[str, str] = field(default_factory=dict)  # field → where it was set

    @property
    def builtin(self) -> bool:
        return self.name in BUILTIN_KINDS

    def at(self, field: str) -> str:
        """Where `field` ("api_key_env", "headers.X-Team") was set: "providers.local.<field>"."""
        return f"{self.origins.get(field, self.where)}.{field}"


Table = dict[str, ProviderConfig]

# The run's CLI/API providers (`fanflow.run(providers=...)`), seen by validation and preflight;
# and the run's merged table, seen by `resolve_model` where no RunContext is at hand.
_OVERRIDES: contextvars.ContextVar[Entries | None] = contextvars.ContextVar(
    "fanflow_provider_overrides", default=None
)
_ACTIVE: contextvars.ContextVar[Table | None] = contextvars.ContextVar(
    "fanflow_providers", default=None
)


@contextlib.contextmanager
def overrides(entries: Mapping[str, Mapping[str, Any]] | None) -> Iterator[None]:
    token = _OVERRIDES.set({k: dict(v) for k, v in entries.items()} if entries else None)
    try:
        yield
    finally:
        _OVERRIDES.reset(token)


@contextlib.contextmanager
def active(table: Table | None) -> Iterator[None]:
    token = _ACTIVE.set(table)
    try:
        yield
    finally:
        _ACTIVE.reset(token)


def active_table() -> Table:
    return _ACTIVE.get() or {}


# --------------------------------------------------------------------------- reading


def read_entries(text: str, file: str | None, where: str) -> Entries:
    """A providers document: ``{name: entry}`` (or ``{"providers": {name: entry}}``)."""
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise WorkflowInvalid([Problem(f"not valid JSON: {exc}", file, where or None,
                                       hint='e.g. {"local": {"base_url": "http://localhost:8000/v1"}}')]) from None  # fmt: skip
    if isinstance(doc, dict) and isinstance(doc.get("providers"), dict) and len(doc) == 1:
        doc = doc["providers"]
    if not isinstance(doc, dict):
        raise WorkflowInvalid([Problem("expected an object {name: provider}", file, where or None)])
    return doc


def env_entries(env: Mapping[str, str] | None = None) -> tuple[Entries, str]:
    """``FANFLOW_PROVIDERS``: inline JSON (starting with ``{``) or a JSON file's path; (entries,
    the label to name in messages). Raises WorkflowInvalid."""
    env = os.environ if env is None else env
    value = (env.get(ENV_VAR) or "").strip()
    if not value:
        return {}, ENV_VAR
    if value.startswith("{"):
        return read_entries(value, None, ENV_VAR), ENV_VAR
    return load_file(value, ENV_VAR), value


def load_file(path: str, option: str) -> Entries:
    try:
        text = Path(path).expanduser().read_text(encoding="utf-8")
    except OSError as exc:
        raise WorkflowInvalid([Problem(f"cannot read providers file {path}: "
                                       f"{exc.strerror or exc}", None, option)]) from None  # fmt: skip
    return read_entries(text, path, "")


def parse_flag(spec: str) -> tuple[str, dict[str, Any]]:
    """``--provider NAME=BASE_URL``: an OpenAI-compatible endpoint with no key."""
    name, sep, url = spec.partition("=")
    name, url = name.strip(), url.strip()
    if not sep or not name or not url:
        raise WorkflowInvalid([Problem(f"--provider {spec!r}: expected NAME=BASE_URL", None,
                                       "--provider", hint="e.g. --provider vllm=http://localhost:8000/v1; "
                                       "for keys and headers use --providers FILE")])  # fmt: skip
    return name, {"base_url": url}


def cli_entries(files: tuple[str, ...] = (), flags: tuple[str, ...] = ()) -> Entries:
    """The CLI's providers: each ``--providers FILE`` in order, then each ``--provider``;
    every entry checked (raises WorkflowInvalid naming the file and the entry)."""
    out: Entries = {}
    problems: list[Problem] = []
    for path in files:
        found = load_file(path, "--providers")
        problems += check_entries(found, path, "")
        out = merge_entries(out, found)
    for spec in flags:
        name, entry = parse_flag(spec)
        problems += check_entries({name: entry}, None, "--provider")
        out = merge_entries(out, {name: entry})
    if problems:
        raise WorkflowInvalid(problems)
    return out


# --------------------------------------------------------------------------- checking


def check_entries(entries: Mapping[str, Any], file: str | None, prefix: str) -> list[Problem]:
    """Every problem of a providers map (unknown fields, types, names, key variables). Never
    quotes a value that could be a key."""
    problems: list[Problem] = []
    for name, entry in entries.items():
        where = f"{prefix}.{name}" if prefix else str(name)
        found = _check_entry(str(name), entry)
        problems += [Problem(m, file, f"{where}.{s}" if s else where, None, h) for m, s, h in found]
    return problems


def _check_entry(name: str, entry: Any) -> list[tuple[str, str, str | None]]:
    """(message, field under the entry, hint) for each problem of one entry."""
    from fanflow.load.model import ProviderSpec, SchemaInvalid, field_path

    found: list[tuple[str, str, str | None]] = []
    if not _NAME.match(name):
        found.append((f"provider name {name!r} must be letters, digits, '_', '.' or '-' "
                      "(no '/')", "", None))  # fmt: skip
    elif name.lower() == "echo":
        found.append(("'echo' is the offline provider and takes no settings", "",
                      "remove the entry"))  # fmt: skip
    if not isinstance(entry, dict):
        return [*found, ("a provider must be an object", "", _FIELD_HINT)]
    try:
        ProviderSpec.from_dict(entry)
    except SchemaInvalid as exc:
        for err in exc.errors:
            hint = _FIELD_HINT if err.kind == "unknown_field" else None
            found.append((err.message, field_path(err.loc), hint))
    return found + _semantics(name, entry)


def _semantics(name: str, entry: Mapping[str, Any]) -> list[tuple[str, str, str | None]]:
    found: list[tuple[str, str, str | None]] = []
    own = BUILTIN_KINDS.get(str(name).lower())
    kind = entry.get("kind")
    if own and kind is not None and kind != own:
        found.append((f"the built-in provider '{name}' speaks the {own} API, not {kind}",
                      "kind", "give another name to a provider of a different kind"))  # fmt: skip
    var = entry.get("api_key_env")
    if isinstance(var, str) and not _VAR.match(var):
        found.append(("api_key_env must name an environment variable (A-Z, 0-9, _), not hold "
                      "the key itself", "api_key_env",
                      'e.g. "api_key_env": "OPENROUTER_API_KEY", then export that variable'))  # fmt: skip
    base = entry.get("base_url")
    if isinstance(base, str) and not base.startswith(("http://", "https://")):
        found.append(("base_url must be an http:// or https:// URL", "base_url",
                      "e.g. http://localhost:8000/v1"))  # fmt: skip
    headers = entry.get("headers")
    if isinstance(headers, dict):
        for key, value in headers.items():
            if isinstance(value, str) and "${" in ENV_REF.sub("", value):
                found.append((f"header {key}: only ${{VAR}} (an environment variable) may be "
                              "referenced here", f"headers.{key}", None))  # fmt: skip
    return found


def problems_for(workflow: Any, env: Mapping[str, str] | None = None) -> list[Problem]:
    """The checks `fanflow validate` adds: the workflow's entries, ``FANFLOW_PROVIDERS`` and
    the run's CLI/API providers."""
    own = _workflow_entries(workflow)
    problems = check_entries(own, workflow.source, "providers")
    try:
        entries, label = env_entries(env)
    except WorkflowInvalid as exc:
        return problems + exc.problems
    file = None if label == ENV_VAR else label
    problems += check_entries(entries, file, ENV_VAR if file is None else "")
    problems += check_entries(_OVERRIDES.get() or {}, None, RUN_LABEL)
    return problems


# --------------------------------------------------------------------------- merging


def merge_entries(base: Entries, more: Mapping[str, Mapping[str, Any]]) -> Entries:
    """Field by field; `headers` merge by header name."""
    out = {k: dict(v) for k, v in base.items()}
    for name, entry in more.items():
        key = str(name).lower()
        into = out.setdefault(key, {})
        for f, value in entry.items():
            if f == "headers" and isinstance(value, dict):
                into["headers"] = {**into.get("headers", {}), **value}
            elif value is not None:
                into[f] = value
    return out


def _workflow_entries(workflow: Any) -> Entries:
    specs = getattr(workflow, "providers", None) or {}
    return {name: spec.to_dict(exclude_none=True) for name, spec in specs.items()}


def build_table(
    workflow: Any, env: Mapping[str, str] | None = None, extra: Entries | None = None
) -> Table:
    """The run's providers: the workflow's < FANFLOW_PROVIDERS < the CLI/API's. An unreadable
    FANFLOW_PROVIDERS counts as empty here (validation reports it)."""
    try:
        from_env, _ = env_entries(env)
    except WorkflowInvalid:
        from_env = {}
    layers = [("providers", _workflow_entries(workflow)), (ENV_VAR, from_env),
              (RUN_LABEL, extra if extra is not None else _OVERRIDES.get() or {})]  # fmt: skip
    merged: Entries = {}
    where: dict[str, str] = {}
    origins: dict[str, dict[str, str]] = {}
    for label, entries in layers:
        merged = merge_entries(merged, entries)
        for n, entry in entries.items():
            key, at = str(n).lower(), f"{label}.{n}"
            where[key] = at
            origins.setdefault(key, {}).update({f: at for f in _field_names(entry)})
    return {
        name: _config(name, entry, where[name], origins[name]) for name, entry in merged.items()
    }


def _field_names(entry: Mapping[str, Any]) -> list[str]:
    names = [f for f, v in entry.items() if v is not None and f != "headers"]
    headers = entry.get("headers")
    return names + ([f"headers.{h}" for h in headers] if isinstance(headers, dict) else [])


def extend_table(table: Table | None, workflow: Any) -> Table:
    """A sub-workflow's providers: its run's, plus the names only the child defines."""
    base = dict(table or {})
    for name, cfg in build_table(workflow, extra={}).items():
        base.setdefault(name, cfg)
    return base


def _config(
    name: str, entry: Mapping[str, Any], where: str, origins: Mapping[str, str]
) -> ProviderConfig:
    headers = entry.get("headers")
    return ProviderConfig(
        name=name,
        kind=str(entry.get("kind") or BUILTIN_KINDS.get(name, "openai")),
        base_url=_str_or_none(entry.get("base_url")),
        api_key_env=_str_or_none(entry.get("api_key_env")),
        default_model=_str_or_none(entry.get("default_model")),
        headers={str(k): str(v) for k, v in headers.items()} if isinstance(headers, dict) else {},
        where=where,
        origins=origins,
    )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


# --------------------------------------------------------------------------- at run time


def header_values(cfg: ProviderConfig, env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The headers with ``${VAR}`` replaced; (headers, the values that came from variables,
    redacted from messages). Raises KeyError(var) when one is unset."""
    secrets: list[str] = []

    def one(m: re.Match[str]) -> str:
        value = env.get(m.group(1))
        if value is None:
            raise KeyError(m.group(1))
        secrets.append(value)
        return value

    return {k: ENV_REF.sub(one, v) for k, v in cfg.headers.items()}, secrets


def missing_vars(cfg: ProviderConfig, env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(field, variable) for each variable this provider needs that is not set."""
    out: list[tuple[str, str]] = []
    if cfg.api_key_env and not env.get(cfg.api_key_env):
        out.append(("api_key_env", cfg.api_key_env))
    for key, value in cfg.headers.items():
        out += [(f"headers.{key}", var) for var in ENV_REF.findall(value) if var not in env]
    return out


def header_var_field(cfg: ProviderConfig, var: str) -> str:
    """The header field that references `var`."""
    for key, value in cfg.headers.items():
        if var in ENV_REF.findall(value):
            return f"headers.{key}"
    return "headers"


__all__ = [
    "BUILTIN_KINDS",
    "ENV_VAR",
    "ProviderConfig",
    "Table",
    "active",
    "active_table",
    "build_table",
    "check_entries",
    "cli_entries",
    "env_entries",
    "extend_table",
    "header_values",
    "merge_entries",
    "missing_vars",
    "overrides",
    "problems_for",
]
