"""On-disk response cache for llm calls: re-running a workflow during development is free.

Where: ``llm-cache/`` next to the run store (``$FANFLOW_HOME`` or ``./.fanflow/``, or the folder
of the store the run was given). One JSON file per response, named by the SHA-256 of the key:
provider, model, system, messages, images (their bytes' digest), output schema, temperature,
max_tokens. Only successful (and, with a schema, valid) replies are stored. Writes are atomic
(temporary file + rename), so parallel batch items and concurrent runs never read half a file;
an unreadable entry is a miss.

Switches: ``cache: false`` on a node; ``fanflow.run(..., cache=False)`` / ``--no-cache`` for a
run (:func:`configure`, a context variable the run's tasks inherit); ``FANFLOW_LLM_CACHE=0`` in
the environment. The offline providers (``echo``, ``mock_response``) are never cached: they cost
nothing, and a cached echo would hide the latency it simulates.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CACHE_VERSION = 1
DIR_NAME = "llm-cache"


@dataclass(frozen=True)
class CacheSettings:
    enabled: bool = True
    store_dir: Path | None = None  # the run store's folder; None: the default store's


_SETTINGS: contextvars.ContextVar[CacheSettings | None] = contextvars.ContextVar(
    "fanflow_llm_cache", default=None
)
_DEFAULT = CacheSettings()


def configure(enabled: bool = True, store_dir: Path | None = None) -> contextvars.Token[Any]:
    """Set the cache for the current run (call `reset(token)` when the run ends)."""
    return _SETTINGS.set(CacheSettings(enabled, store_dir))


def reset(token: contextvars.Token[Any]) -> None:
    _SETTINGS.reset(token)


def enabled() -> bool:
    if os.environ.get("FANFLOW_LLM_CACHE", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    return (_SETTINGS.get() or _DEFAULT).enabled


def cache_dir() -> Path:
    base = (_SETTINGS.get() or _DEFAULT).store_dir
    if base is None:
        home = os.environ.get("FANFLOW_HOME")
        base = Path(home).expanduser() if home else Path.cwd() / ".fanflow"
    return base / DIR_NAME


def make_key(material: dict[str, Any]) -> str:
    blob = json.dumps(
        {"v": CACHE_VERSION, **material}, sort_keys=True, ensure_ascii=False, default=str,
        separators=(",", ":"),
    )  # fmt: skip
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _path(key: str) -> Path:
    return cache_dir() / key[:2] / f"{key}.json"


def get(key: str) -> dict[str, Any] | None:
    try:
        data = json.loads(_path(key).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "text" in data else None


def put(key: str, value: dict[str, Any]) -> None:
    """Store an entry; a cache that cannot be written is silently skipped (it is an optimisation)."""
    import tempfile  # on the first write only: a run without llm calls does without it

    path = _path(key)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(value, fh, ensure_ascii=False)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError, UnboundLocalError):
            os.unlink(tmp)


__all__ = ["CacheSettings", "cache_dir", "configure", "enabled", "get", "make_key", "put", "reset"]
