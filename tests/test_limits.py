"""LimitRegistry: one limiter per resource shared by coroutines (on several loops) and threads."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time

import pytest

from fanflow.io.limits import (
    NULL_LIMIT,
    LimitConfigError,
    LimitRegistry,
    build_limits,
    merge_limits,
    normalize_limits,
    parse_limit_spec,
    parse_limit_specs,
)


class InFlight:
    """Counts callers inside the limited section, from any thread."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.starts: list[float] = []

    def enter(self) -> None:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
            self.starts.append(time.monotonic())

    def leave(self) -> None:
        with self.lock:
            self.now -= 1


def _run_mixed(reg: LimitRegistry, keys: tuple[str, ...], track: InFlight, hold: float, n: int):
    """n acquisitions from each of: the main loop, a second loop in a thread, two plain threads."""

    async def one() -> None:
        async with reg.acquire(*keys):
            track.enter()
            await asyncio.sleep(hold)
            track.leave()

    async def many() -> None:
        await asyncio.gather(*(one() for _ in range(n)))

    def thread_user() -> None:
        for _ in range(n):
            with reg.acquire_sync(*keys):
                track.enter()
                time.sleep(hold)
                track.leave()

    threads = [threading.Thread(target=thread_user) for _ in range(2)]
    threads.append(threading.Thread(target=lambda: asyncio.run(many())))
    for t in threads:
        t.start()
    asyncio.run(many())
    for t in threads:
        t.join(timeout=30)
        assert not t.is_alive()


def test_concurrency_cap_shared_by_tasks_loops_and_threads():
    reg = LimitRegistry({"llm:openai": {"concurrency": 3}})
    track = InFlight()
    _run_mixed(reg, ("llm:openai",), track, hold=0.02, n=10)
    assert len(track.starts) == 40
    assert track.peak == 3  # never above the cap, and the cap was actually reached
    stats = reg.stats()["llm:openai"]
    assert stats["peak_in_flight"] == 3
    assert stats["in_flight"] == 0 and stats["waiting"] == 0
    assert stats["acquired"] == 40


def test_rpm_respected_over_a_window():
    # 5 starts per 1 s window (rpm over a shortened window), 15 calls from tasks and threads.
    reg = LimitRegistry({"llm:openai": {"rpm": 5}}, window=1.0)
    track = InFlight()
    t0 = time.monotonic()
    reg_keys = ("llm:openai",)

    async def one() -> None:
        async with reg.acquire(*reg_keys):
            track.enter()
            track.leave()

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(9)))

    def thread_user() -> None:
        for _ in range(3):
            with reg.acquire_sync(*reg_keys):
                track.enter()
                track.leave()

    threads = [threading.Thread(target=thread_user) for _ in range(2)]
    for t in threads:
        t.start()
    asyncio.run(main())
    for t in threads:
        t.join(timeout=30)
    elapsed = time.monotonic() - t0
    starts = sorted(track.starts)
    assert len(starts) == 15
    # Reservations are strict; allow 0.1 s for sleep wake-up jitter when checking windows.
    worst = max(sum(1 for s in starts if first <= s < first + 0.9) for first in starts)
    assert worst <= 5
    assert elapsed >= 1.9  # 15 starts at 5 per second need at least two full windows
    assert elapsed < 10


def test_late_wake_ups_still_start_spaced():
    # rpm 60 over a 1 s window: one start per 1/60 s. The loop is blocked for 0.2 s while ten
    # reservations come due; they must not all start at once when it is free again.
    reg = LimitRegistry({"llm:x": {"rpm": 60}}, window=1.0)
    interval = 1.0 / 60
    starts: list[float] = []

    async def one() -> None:
        async with reg.acquire("llm:x"):
            starts.append(time.monotonic())

    async def main() -> None:
        tasks = [asyncio.ensure_future(one()) for _ in range(12)]
        await asyncio.sleep(0.01)
        time.sleep(0.2)  # a busy loop: the timers of the next ten reservations pass meanwhile
        await asyncio.gather(*tasks)

    asyncio.run(main())
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert len(starts) == 12
    assert min(gaps) >= 0.8 * interval - 1e-3, gaps  # spaced by actual start (SPACING)
    per_second = max(sum(1 for s in starts if a <= s < a + interval) for a in starts)
    assert per_second <= 1  # the last "second" (window/60) holds at most ceil(rpm/60) starts


def test_rpm_and_concurrency_together():
    reg = LimitRegistry({"http:api.example.com": {"concurrency": 2, "rpm": 4}}, window=0.5)
    track = InFlight()
    keys = tuple(reg.keys_for_http("https://api.example.com/v1/x"))
    assert keys == ("http:api.example.com",)
    _run_mixed(reg, keys, track, hold=0.01, n=2)
    starts = sorted(track.starts)
    assert track.peak <= 2
    assert max(sum(1 for s in starts if f <= s < f + 0.4) for f in starts) <= 4


def test_several_keys_are_all_honoured():
    # Provider-wide cap 4; one model capped at 2. Calls to that model take both keys.
    reg = LimitRegistry({"llm:openai": {"concurrency": 4}, "llm:openai/big": {"concurrency": 2}})
    big, other, total = InFlight(), InFlight(), InFlight()

    async def call(model: str, track: InFlight) -> None:
        async with reg.acquire(*reg.keys_for_llm("openai", model)):
            track.enter()
            total.enter()
            await asyncio.sleep(0.03)
            total.leave()
            track.leave()

    async def main() -> None:
        await asyncio.gather(
            *(call("big", big) for _ in range(8)), *(call("small", other) for _ in range(8))
        )

    asyncio.run(main())
    assert big.peak == 2
    assert total.peak == 4
    assert reg.keys_for_llm("openai", "big") == ["llm:openai", "llm:openai/big"]
    assert reg.keys_for_llm("anthropic", "x") == []


def test_cancelled_waiter_does_not_leak_a_slot():
    reg = LimitRegistry({"node:shell": {"concurrency": 1}})

    async def main() -> None:
        async with reg.acquire("node:shell"):
            waiter = asyncio.create_task(_acquire_once(reg))
            await asyncio.sleep(0.05)
            assert reg.stats()["node:shell"]["waiting"] == 1
            waiter.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiter
        # the slot is free again: this must not hang
        await asyncio.wait_for(_acquire_once(reg), timeout=2)

    asyncio.run(main())
    stats = reg.stats()["node:shell"]
    assert stats["in_flight"] == 0 and stats["waiting"] == 0


def test_waiter_cancelled_after_being_granted_passes_the_slot_on():
    reg = LimitRegistry({"node:x": {"concurrency": 1}})

    async def main() -> None:
        holder_release = asyncio.Event()

        async def holder() -> None:
            async with reg.acquire("node:x"):
                await holder_release.wait()

        h = asyncio.create_task(holder())
        await asyncio.sleep(0.01)
        w1 = asyncio.create_task(_acquire_once(reg))
        w2 = asyncio.create_task(_acquire_once(reg))
        await asyncio.sleep(0.01)
        holder_release.set()
        await h  # the slot is now handed to w1 (granted, not yet resumed)...
        w1.cancel()  # ...which is cancelled before it runs: w2 must get the slot
        await asyncio.wait_for(w2, timeout=2)

    asyncio.run(main())
    assert reg.stats()["node:x"]["in_flight"] == 0


async def _acquire_once(reg: LimitRegistry) -> None:
    async with reg.acquire(*reg.keys):
        await asyncio.sleep(0)


def test_unconfigured_keys_are_free():
    reg = LimitRegistry({"llm:openai": {"concurrency": 1}})
    assert reg.acquire("llm:anthropic", "http:example.com") is NULL_LIMIT
    assert reg.acquire_sync() is NULL_LIMIT
    assert LimitRegistry({}).acquire("llm:openai") is NULL_LIMIT
    assert not LimitRegistry(None)
    with reg.acquire_sync("node:unknown"):
        pass


def test_http_keys_match_host_and_port():
    reg = LimitRegistry({"http:localhost": 2, "http:api.example.com:8443": 1})
    assert reg.keys_for_http("http://LocalHost:8080/a") == ["http:localhost"]
    assert reg.keys_for_http("https://api.example.com:8443/x") == ["http:api.example.com:8443"]
    assert reg.keys_for_http("https://api.example.com/x") == []
    assert reg.keys_for_http("not a url") == []
    reg443 = LimitRegistry({"http:example.com:443": 1})
    assert reg443.keys_for_http("https://example.com/") == ["http:example.com:443"]


def test_parse_limit_spec_syntax():
    assert parse_limit_spec("llm:openai=10/60rpm") == ("llm:openai", {"concurrency": 10, "rpm": 60})
    assert parse_limit_spec("llm:openai=10") == ("llm:openai", {"concurrency": 10})
    assert parse_limit_spec("llm:openai/gpt-4o=60rpm") == ("llm:openai/gpt-4o", {"rpm": 60})
    assert parse_limit_spec("http:API.example.com:8080=60rpm/3") == (
        "http:api.example.com:8080",
        {"rpm": 60, "concurrency": 3},
    )
    assert parse_limit_spec("node:shell=none") == ("node:shell", {"concurrency": None, "rpm": None})
    assert [k for k, _ in parse_limit_specs("llm:openai=5, http:a=2;node:shell=1 ")] == [
        "llm:openai",
        "http:a",
        "node:shell",
    ]


@pytest.mark.parametrize(
    "bad",
    [
        "openai=3",
        "llm:openai",
        "llm:openai=",
        "llm:openai=0",
        "llm:openai=3/4",
        "llm:x=fast",
        "llm:x=5rps",
        "=3",
    ],
)
def test_parse_limit_spec_rejects(bad):
    with pytest.raises(LimitConfigError) as err:
        parse_limit_spec(bad)
    assert "limit" in str(err.value)


def test_missing_prefix_gets_a_hint():
    with pytest.raises(LimitConfigError, match="did you mean 'llm:openai'"):
        parse_limit_spec("openai=3")


def test_merge_order_workflow_env_cli():
    wf = {"llm:openai": {"concurrency": 5, "rpm": 100}, "http:a": {"concurrency": 1}}
    env = {"FANFLOW_LIMITS": "llm:openai=60rpm,node:shell=2"}
    merged = merge_limits(wf, ["llm:openai=8", "http:a=none"], env)
    # env changes only the rpm, the CLI then the concurrency; `none` drops the key
    assert merged == {
        "llm:openai": {"concurrency": 8, "rpm": 60},
        "node:shell": {"concurrency": 2, "rpm": None},
    }
    reg = build_limits(wf, [], {})
    assert reg.keys == ["http:a", "llm:openai"]


def test_normalize_limits_forms_and_errors():
    assert normalize_limits({"llm:openai": 3, "http:x": "2/30rpm", "node:y": {"rpm": 5}}) == {
        "llm:openai": {"concurrency": 3, "rpm": None},
        "http:x": {"concurrency": 2, "rpm": 30},
        "node:y": {"concurrency": None, "rpm": 5},
    }
    with pytest.raises(LimitConfigError, match="unknown field"):
        normalize_limits({"llm:openai": {"concurency": 3}})
    with pytest.raises(LimitConfigError, match="positive integer"):
        normalize_limits({"llm:openai": {"concurrency": -1}})
    with pytest.raises(LimitConfigError):
        normalize_limits({"llm:openai": [1, 2]})


def test_limit_errors_are_user_errors_with_exit_2():
    from fanflow.errors import EXIT_INVALID, WorkflowInvalid

    with pytest.raises(WorkflowInvalid) as err:
        parse_limit_spec("llm:openai=lots")
    assert err.value.exit_code == EXIT_INVALID
    assert isinstance(err.value, ValueError)
    assert err.value.problems[0].field == "limits"
