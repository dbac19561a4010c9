"""Per-resource concurrency and rate limits, shared by every batch item and branch of a run.

A resource key names what a call uses:

- ``llm:<provider>``           e.g. ``llm:openai`` (every model of that provider)
- ``llm:<provider>/<model>``   e.g. ``llm:openai/gpt-4o-mini``
- ``http:<host>``              any port of that host; ``http:<host>:<port>`` one port only
- ``mcp:<server>``             every tool call to one MCP server (fanflow.nodes.mcp)
- ``node:<type>``              every execution of a node type (acquired by the engine)

Each configured key gets ONE :class:`Limiter` per run holding a FIFO concurrency cap and a rate
limit that paces starts evenly: `rpm: 6000` lets one call start every 10 ms, `rpm: 120` one every
0.5 s, so no window of 60 s (nor of one second, where providers also count) holds more than its
share, and a whole minute's quota never starts at once. Reservations pace the wake-ups; the
starts themselves are then checked against the actual earlier starts (at most ceil(rpm/60) in
the last second, each at least 0.8 interval after the previous), so timers that fire late
together on a busy loop still go out spaced. The same object is used from
coroutines on the loop (``async with registry.acquire(...)``) and from worker threads
(``with registry.acquire_sync(...)``), which is why this is not aiolimiter (bound to one loop,
allows a 2x burst, no concurrency cap). Keys that are not configured cost one dict lookup.

Spec syntax (``--limit`` and ``FANFLOW_LIMITS``)::

    RESOURCE=CONC            llm:openai=10          at most 10 calls in flight
    RESOURCE=RPMrpm          llm:openai=60rpm       at most 60 call starts per minute
    RESOURCE=CONC/RPMrpm     llm:openai=10/60rpm    both
    RESOURCE=none            llm:openai=none        remove a limit set by the workflow

``FANFLOW_LIMITS`` holds several specs separated by ``,``, ``;`` or whitespace.
"""

from __future__ import annotations

import asyncio
import math
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from fanflow.errors import Problem, WorkflowInvalid

DEFAULT_WINDOW = 60.0  # seconds; "rpm" is starts per window
# Actual starts are at least this fraction of an interval (window/rpm) apart: late timers cannot
# fire together, and a call woken late can still catch up (timers wake up to ~1 ms late).
SPACING = 0.8

_KEY_RE = re.compile(r"^[a-z][a-z0-9_-]*:\S+$")


class LimitConfigError(WorkflowInvalid, ValueError):
    """A limits section or a --limit/FANFLOW_LIMITS spec is malformed: a user error, so it is a
    WorkflowInvalid (exit 2, no traceback) wherever it surfaces."""

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__([Problem(message, field="limits")])


# --------------------------------------------------------------------------- config parsing


def _check_key(key: str) -> str:
    key = key.strip()
    if not _KEY_RE.match(key):
        hint = f" (did you mean 'llm:{key}'?)" if key in ("openai", "anthropic") else ""
        raise LimitConfigError(
            f"invalid limit resource {key!r}: expected llm:<provider>[/<model>], "
            f"http:<host>[:<port>], mcp:<server> or node:<type>{hint}"
        )
    kind, _, rest = key.partition(":")
    if kind == "http":
        rest = rest.lower()  # host names are case-insensitive
    return f"{kind}:{rest}"


def _check_count(value: Any, what: str, key: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise LimitConfigError(f"limit {key!r}: {what} must be a positive integer, got {value!r}")
    return value


def parse_limit_value(key: str, value: str) -> dict[str, int | None]:
    """'10', '60rpm', '10/60rpm', 'none' → {"concurrency", "rpm"} (absent fields omitted)."""
    text = value.strip().lower()
    if text in ("none", "unlimited", "off"):
        return {"concurrency": None, "rpm": None}
    out: dict[str, int | None] = {}
    parts = [p.strip() for p in text.split("/")]
    if not 1 <= len(parts) <= 2 or not all(parts):
        raise LimitConfigError(
            f"invalid limit {key}={value!r}: expected CONC, RPMrpm or CONC/RPMrpm "
            f"(e.g. {key}=10/60rpm)"
        )
    for part in parts:
        m = re.fullmatch(r"(\d+)\s*(rpm)?", part)
        if not m:
            raise LimitConfigError(
                f"invalid limit {key}={value!r}: {part!r} is neither a count nor '<N>rpm'"
            )
        field_name = "rpm" if m.group(2) else "concurrency"
        if field_name in out:
            raise LimitConfigError(f"invalid limit {key}={value!r}: {field_name} given twice")
        out[field_name] = _check_count(int(m.group(1)), field_name, key)
    return out


def parse_limit_spec(spec: str) -> tuple[str, dict[str, int | None]]:
    """'llm:openai=10/60rpm' → ('llm:openai', {'concurrency': 10, 'rpm': 60})."""
    key, sep, value = spec.strip().rpartition("=")
    if not sep or not key:
        raise LimitConfigError(
            f"invalid limit {spec!r}: expected RESOURCE=CONC[/RPMrpm], e.g. llm:openai=10/60rpm"
        )
    key = _check_key(key)
    return key, parse_limit_value(key, value)


def parse_limit_specs(text: str) -> list[tuple[str, dict[str, int | None]]]:
    """Several specs separated by ',', ';' or whitespace (the FANFLOW_LIMITS format)."""
    return [parse_limit_spec(s) for s in re.split(r"[,;\s]+", text) if s]


def normalize_limits(section: Mapping[str, Any] | None) -> dict[str, dict[str, int | None]]:
    """Validate a workflow-level ``limits`` section.

    Values may be ``{"concurrency": 5, "rpm": 60}`` (either field optional), a bare integer
    (concurrency) or a spec string such as ``"5/60rpm"``.
    """
    out: dict[str, dict[str, int | None]] = {}
    for raw_key, value in (section or {}).items():
        key = _check_key(raw_key)
        if isinstance(value, Mapping):
            unknown = set(value) - {"concurrency", "rpm"}
            if unknown:
                raise LimitConfigError(
                    f"limit {key!r}: unknown field(s) {sorted(unknown)}; use concurrency and rpm"
                )
            entry = {
                "concurrency": _check_count(value.get("concurrency"), "concurrency", key),
                "rpm": _check_count(value.get("rpm"), "rpm", key),
            }
        elif isinstance(value, int) and not isinstance(value, bool):
            entry = {"concurrency": _check_count(value, "concurrency", key), "rpm": None}
        elif isinstance(value, str):
            entry = {"concurrency": None, "rpm": None, **parse_limit_value(key, value)}
        elif value is None:
            entry = {"concurrency": None, "rpm": None}
        else:
            raise LimitConfigError(
                f"limit {key!r}: expected an object {{concurrency, rpm}}, a number or "
                f"'CONC/RPMrpm', got {value!r}"
            )
        out[key] = entry
    return out


def merge_limits(
    workflow: Mapping[str, Any] | None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
) -> dict[str, dict[str, int | None]]:
    """Workflow ``limits`` < env ``FANFLOW_LIMITS`` < CLI ``--limit`` specs (later wins).

    Overrides merge field by field: ``llm:openai=60rpm`` keeps the workflow's concurrency for
    that key; ``=none`` clears both fields.
    """
    merged = normalize_limits(workflow)
    layers: list[tuple[str, dict[str, int | None]]] = []
    if env is not None and env.get("FANFLOW_LIMITS"):
        layers += parse_limit_specs(env["FANFLOW_LIMITS"])
    for spec in overrides:
        layers.append(parse_limit_spec(spec))
    for key, fields in layers:
        entry = merged.setdefault(key, {"concurrency": None, "rpm": None})
        entry.update(fields)
    return {k: v for k, v in merged.items() if v.get("concurrency") or v.get("rpm")}


# --------------------------------------------------------------------------- the limiter


@dataclass(eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop | None = None  # None → a thread waiting on `event`
    future: asyncio.Future[None] | None = None
    event: threading.Event | None = None
    granted: bool = False


@dataclass(eq=False)
class Limiter:
    """One resource's limits. All state is guarded by the registry-wide lock `lock`."""

    key: str
    concurrency: int | None
    rpm: int | None
    window: float
    lock: threading.Lock
    in_flight: int = 0
    peak_in_flight: int = 0
    acquired: int = 0
    waiters: deque[_Waiter] = field(default_factory=deque)
    # Reserved start times (time.monotonic), non-decreasing; only the last `rpm` matter.
    starts: deque[float] = field(default_factory=deque)
    # When calls actually started (not their reservations), over the last second: at most
    # ceil(rpm/60) of them, so timers that fire late together cannot bunch into one second.
    recent: deque[float] = field(default_factory=deque)

    # -- concurrency (caller holds self.lock) -------------------------------------------------

    def _try_take(self) -> bool:
        if self.concurrency is None or (self.in_flight < self.concurrency and not self.waiters):
            self._enter()
            return True
        return False

    def _enter(self) -> None:
        self.in_flight += 1
        self.acquired += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight

    def _release_locked(self) -> None:
        """Hand the slot straight to the first live waiter (FIFO, no barging) or free it."""
        self.in_flight -= 1
        while self.waiters:
            w = self.waiters.popleft()
            if w.loop is None:
                assert w.event is not None
                w.granted = True
                self._enter()
                w.event.set()
                return
            fut = w.future
            assert fut is not None
            try:
                w.loop.call_soon_threadsafe(_resolve, fut)
            except RuntimeError:  # that loop is closed: the waiter is gone, try the next one
                continue
            w.granted = True
            self._enter()
            return

    # -- rate (caller holds self.lock) ---------------------------------------------------------

    def _next_start(self, now: float) -> float:
        """The earliest time a call may actually start: now, unless the last second (a 60th
        of the window) already holds its share of starts; then when the oldest leaves it."""
        if not self.rpm:
            return now
        second = self.window / 60
        recent = self.recent
        while recent and recent[0] <= now - second:
            recent.popleft()
        spaced = recent[-1] + SPACING * self.window / self.rpm if recent else now
        if len(recent) < math.ceil(self.rpm / 60):
            return max(now, spaced)
        return max(recent[0] + second, spaced)

    def _earliest_start(self, now: float) -> float:
        starts = self.starts
        cutoff = now - self.window
        while starts and starts[0] <= cutoff:
            starts.popleft()
        t = now
        if starts:
            # never before an earlier reservation: keeps `starts` sorted (FIFO for the rate)
            t = max(t, starts[-1])
            if self.rpm is not None:
                # evenly paced: one start per window/rpm, never a burst (providers also count
                # per second: "6000 rpm" is enforced as 100 per second), which also keeps any
                # window of 60 s within rpm
                t = max(t, starts[-1] + self.window / self.rpm)
        return t


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class _NullContext:
    """No configured key: the shared, allocation-free context for both `with` and `async with`."""

    __slots__ = ()

    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, *exc: object) -> None:
        return None


NULL_LIMIT = _NullContext()


class LimitRegistry:
    """The run's limiters, one per configured resource key.

    ``config`` maps a resource key to ``{"concurrency": int | None, "rpm": int | None}``
    (use :func:`merge_limits` to build it from a workflow section and overrides). ``window`` is
    the rate window in seconds (60 for real use; tests pass something small).
    """

    def __init__(
        self,
        config: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        window: float = DEFAULT_WINDOW,
    ) -> None:
        # One lock for all limiters: a call needing several keys reserves its start time on all
        # of them atomically, and the critical sections are a few microseconds long.
        self._lock = threading.Lock()
        self.window = window
        self._limiters: dict[str, Limiter] = {}
        for key, entry in normalize_limits(config).items():
            if entry["concurrency"] or entry["rpm"]:
                self._limiters[key] = Limiter(
                    key, entry["concurrency"], entry["rpm"], window, self._lock
                )

    # -- key helpers ---------------------------------------------------------------------------

    @property
    def keys(self) -> list[str]:
        return sorted(self._limiters)

    def __bool__(self) -> bool:
        return bool(self._limiters)

    def keys_for_llm(self, provider: str, model: str | None = None) -> list[str]:
        keys = [f"llm:{provider}"]
        if model:
            keys.append(f"llm:{provider}/{model}")
        return [k for k in keys if k in self._limiters]

    def keys_for_http(self, url: str) -> list[str]:
        try:
            parts = urlsplit(url)
            host = (parts.hostname or "").lower()
            port = parts.port or {"http": 80, "https": 443}.get(parts.scheme.lower())
        except ValueError:
            return []
        keys = [f"http:{host}"]
        if port:
            keys.append(f"http:{host}:{port}")
        return [k for k in keys if k in self._limiters]

    def keys_for_node(self, type_name: str) -> list[str]:
        key = f"node:{type_name}"
        return [key] if key in self._limiters else []

    def _select(self, keys: Iterable[str]) -> list[Limiter]:
        # Sorted, de-duplicated: a fixed acquisition order means two calls needing the same
        # pair of capped keys can never hold one each and wait for the other.
        found = {k: self._limiters[k] for k in keys if k in self._limiters}
        return [found[k] for k in sorted(found)]

    # -- acquisition ---------------------------------------------------------------------------

    def acquire(self, *keys: str) -> Any:
        """``async with registry.acquire(*keys):`` on the event loop."""
        limiters = self._select(keys)
        if not limiters:
            return NULL_LIMIT
        return self._acquire_async(limiters)

    def acquire_sync(self, *keys: str) -> Any:
        """``with registry.acquire_sync(*keys):`` from a worker thread (blocks that thread)."""
        limiters = self._select(keys)
        if not limiters:
            return NULL_LIMIT
        return self._acquire_blocking(limiters)

    @asynccontextmanager
    async def _acquire_async(self, limiters: list[Limiter]) -> AsyncIterator[None]:
        held: list[Limiter] = []
        try:
            for lim in limiters:
                await self._take_slot_async(lim)
                held.append(lim)
            await self._wait_rate_async(limiters)
            yield
        finally:
            self._release(held)

    @contextmanager
    def _acquire_blocking(self, limiters: list[Limiter]) -> Iterator[None]:
        held: list[Limiter] = []
        try:
            for lim in limiters:
                self._take_slot_blocking(lim)
                held.append(lim)
            _, delay = self._reserve(limiters)
            if delay > 0:
                time.sleep(delay)
            while (gap := self._start_gap(limiters)) > 0:
                time.sleep(gap)
            yield
        finally:
            self._release(held)

    async def _take_slot_async(self, lim: Limiter) -> None:
        with self._lock:
            if lim._try_take():
                return
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop=loop, future=loop.create_future())
            lim.waiters.append(waiter)
        try:
            assert waiter.future is not None
            await waiter.future
        except BaseException:
            with self._lock:
                if waiter.granted:
                    lim._release_locked()  # handed a slot while being cancelled: pass it on
                else:
                    lim.waiters.remove(waiter)
            raise

    def _take_slot_blocking(self, lim: Limiter) -> None:
        with self._lock:
            if lim._try_take():
                return
            waiter = _Waiter(event=threading.Event())
            lim.waiters.append(waiter)
        assert waiter.event is not None
        waiter.event.wait()

    def _reserve(self, limiters: list[Limiter]) -> tuple[float, float]:
        """Reserve one start time on every rate-limited key at once.

        Returns (start time, seconds to wait until it)."""
        rated = [lim for lim in limiters if lim.rpm is not None]
        if not rated:
            return 0.0, 0.0
        with self._lock:
            now = time.monotonic()
            t = max(lim._earliest_start(now) for lim in rated)
            for lim in rated:
                lim.starts.append(t)
        return t, t - now

    async def _wait_rate_async(self, limiters: list[Limiter]) -> None:
        t, delay = self._reserve(limiters)
        if delay > 0:
            try:
                await asyncio.sleep(delay)
            except BaseException:
                # Cancelled before starting: give the reservation back (dropping a point only
                # lowers every window's count, so the limit still holds).
                with self._lock:
                    for lim in limiters:
                        if lim.rpm is not None and t in lim.starts:
                            lim.starts.remove(t)
                raise
        while (gap := self._start_gap(limiters)) > 0:
            await asyncio.sleep(gap)

    def _start_gap(self, limiters: list[Limiter]) -> float:
        """0 (and the start recorded) when no rate-limited key's last second is full of actual
        starts; else the seconds until one is not. Reservations pace the wake-ups; this caps
        the starts themselves when a busy loop wakes several late ones at once."""
        rated = [lim for lim in limiters if lim.rpm is not None]
        if not rated:
            return 0.0
        with self._lock:
            now = time.monotonic()
            gap = max(lim._next_start(now) for lim in rated) - now
            if gap > 0:
                return gap
            for lim in rated:
                lim.recent.append(now)
        return 0.0

    def _release(self, held: list[Limiter]) -> None:
        if not held:
            return
        with self._lock:
            for lim in reversed(held):
                lim._release_locked()

    # -- introspection -------------------------------------------------------------------------

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per configured key: limits, current and peak in flight, total acquisitions."""
        with self._lock:
            return {
                key: {
                    "concurrency": lim.concurrency,
                    "rpm": lim.rpm,
                    "in_flight": lim.in_flight,
                    "peak_in_flight": lim.peak_in_flight,
                    "acquired": lim.acquired,
                    "waiting": len(lim.waiters),
                }
                for key, lim in sorted(self._limiters.items())
            }


def build_limits(
    workflow: Mapping[str, Any] | None,
    overrides: Iterable[str] = (),
    env: Mapping[str, str] | None = None,
    *,
    window: float = DEFAULT_WINDOW,
) -> LimitRegistry:
    """The run's registry from the workflow's ``limits``, ``FANFLOW_LIMITS`` and ``--limit``."""
    return LimitRegistry(merge_limits(workflow, overrides, env), window=window)


__all__ = [
    "DEFAULT_WINDOW",
    "NULL_LIMIT",
    "LimitConfigError",
    "LimitRegistry",
    "Limiter",
    "build_limits",
    "merge_limits",
    "normalize_limits",
    "parse_limit_spec",
    "parse_limit_specs",
    "parse_limit_value",
]
