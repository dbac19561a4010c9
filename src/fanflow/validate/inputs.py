"""Workflow inputs: typed by their declaration, defaults applied, unknown names rejected.

A secret input not given reads FANFLOW_SECRET_<NAME> from the environment (as text) before its
default applies: a secret need not appear on a command line, and a resume (whose stored inputs
hold only *** for it) can find it again. See docs/observability.md, "Secret inputs".
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from typing import Any

from fanflow.errors import Problem, WorkflowInvalid
from fanflow.load.model import Workflow

SECRET_ENV_PREFIX = "FANFLOW_SECRET_"
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def secret_env_var(name: str) -> str:
    """The environment variable a secret input may be given in: FANFLOW_SECRET_<NAME>."""
    return SECRET_ENV_PREFIX + re.sub(r"[^A-Za-z0-9]", "_", name).upper()


def parse_cli_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """`name=value` words from the command line (the value may itself contain '=')."""
    values: dict[str, str] = {}
    problems = []
    for word in pairs:
        name, sep, value = word.partition("=")
        if not sep or not name:
            problems.append(Problem(f"expected name=value, got {word!r}", field="inputs",
                                    hint="pass inputs as name=value, e.g. repo=."))  # fmt: skip
            continue
        values[name] = value
    if problems:
        raise WorkflowInvalid(problems)
    return values


def _coerce(name: str, kind: str, value: Any, from_text: bool) -> Any:
    if kind in ("string", "any") and (from_text or kind == "any" or isinstance(value, str)):
        return value
    if from_text and isinstance(value, str):
        if kind == "boolean":
            low = value.lower()
            if low in _TRUE | _FALSE:
                return low in _TRUE
            raise ValueError("expected true or false")
        if kind in ("integer", "number"):
            try:
                return int(value) if kind == "integer" else float(value)
            except ValueError:
                raise ValueError(
                    f"expected a{'n integer' if kind == 'integer' else ' number'}"
                ) from None
        if kind in ("array", "object"):
            try:
                value = json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"expected JSON ({exc.msg} at column {exc.colno})") from None
    checks: dict[str, type | tuple[type, ...]] = {
        "string": str, "boolean": bool, "integer": int, "number": (int, float),
        "array": list, "object": dict,
    }  # fmt: skip
    expected = checks[kind]
    if not isinstance(value, expected) or (
        kind in ("integer", "number") and isinstance(value, bool)
    ):
        raise ValueError(f"expected {kind}, got {type(value).__name__}")
    return value


def resolve_inputs(
    workflow: Workflow,
    given: dict[str, Any],
    from_text: bool = False,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    file = workflow.source
    problems = []
    declared = workflow.inputs
    for name in given:
        if name not in declared:
            import difflib

            close = difflib.get_close_matches(name, list(declared), n=1)
            hint = f"did you mean '{close[0]}'?" if close else (
                "declared inputs: " + (", ".join(declared) or "none"))  # fmt: skip
            problems.append(Problem(f"unknown input '{name}'", file, f"inputs.{name}", hint=hint))
    values: dict[str, Any] = {}
    for name, spec in declared.items():
        env = secret_env_var(name) if spec.secret else None
        value, text = (given[name], from_text) if name in given else (None, False)
        if env is not None and name not in given and env in environ:
            value, text = environ[env], True
        if value is not None or name in given:
            try:
                values[name] = _coerce(name, spec.type, value, text)
            except ValueError as exc:
                where = f" (from {env})" if env is not None and name not in given else ""
                problems.append(Problem(f"input '{name}'{where}: {exc}", file, f"inputs.{name}",
                                        hint=f"declared type is {spec.type}"))  # fmt: skip
        elif spec.default is not None:
            values[name] = spec.default
        elif spec.required:
            hint = f"pass {name}=<{spec.type}>"
            if env is not None:
                hint += (f" or set {env}; a secret input is never stored, so resuming a run "
                         "needs it again")  # fmt: skip
            if spec.description:
                hint += f" ({spec.description})"
            problems.append(Problem(f"missing required input '{name}'", file, f"inputs.{name}",
                                    hint=hint))  # fmt: skip
        else:
            values[name] = None
    if problems:
        raise WorkflowInvalid(problems)
    return values
