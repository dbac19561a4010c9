"""The thread executor for sync leaves: worker threads take lifecycles from one queue, and their
results come back to the event loop in batches.

Not `loop.run_in_executor` on a ThreadPoolExecutor: there every completion wakes the loop
through its self-pipe on its own, and the pool starts a thread for every job submitted while
none is idle. Measured on this project's 2-core VM, a bare `run_in_executor` round trip costs
about 125 µs, so a 10,000-wide fan-out of tiny code nodes spent 200 µs per node. Here a worker
that finishes while earlier results still wait for the loop adds its result to the same batch
(one wake-up for the lot), and a new thread starts only when the queue backs up faster than the
running threads drain it, up to `size` threads (sync nodes that block on I/O still get one each).
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Callable
from typing import Any

_STOP = None
_SPAWN_AFTER = 0.001  # with every thread busy, how long the queue may stay backed up before
# another thread starts: blocked threads (sleep, I/O) get company fast, busy CPU work does not
# multiply threads that would only fight over the GIL


class ThreadExecutor:
    def __init__(self, loop: asyncio.AbstractEventLoop, size: int, name: str = "fanflow") -> None:
        self.loop = loop
        self.size = size
        self.name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._done: list[tuple[asyncio.Future[Any], Any, BaseException | None]] = []
        self._threads = 0
        self._idle = 0
        self._closed = False
        self._watching = False  # a _maybe_grow is scheduled

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run fn(*args) on a worker thread; the returned future resolves on the loop."""
        future = self.loop.create_future()
        self._jobs.put((future, fn, args))
        with self._lock:
            busy = self._idle == 0 and self._threads < self.size and not self._closed
            first = busy and self._threads == 0
            if first:
                self._threads += 1
            watch = busy and not first and not self._watching
            self._watching = self._watching or watch
        if first:
            self._start_thread()
        elif watch:  # every thread is busy: grow if the queue is still backed up in a moment
            self.loop.call_later(_SPAWN_AFTER, self._maybe_grow)
        return future

    def shutdown(self) -> None:
        """Stop idle threads; a thread still busy with a cancelled job ends after it."""
        with self._lock:
            self._closed = True
            threads = self._threads
        for _ in range(threads):
            self._jobs.put(_STOP)

    # --- internals ----------------------------------------------------------------------------

    def _maybe_grow(self) -> None:
        with self._lock:
            self._watching = False
            if self._closed or self._idle or self._threads >= self.size or self._jobs.empty():
                return
            self._threads += 1
        self._start_thread()

    def _start_thread(self) -> None:
        name = f"{self.name}-{self._threads}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        jobs, lock, done = self._jobs, self._lock, self._done
        while True:
            with lock:
                self._idle += 1
            job = jobs.get()
            with lock:
                self._idle -= 1
            if job is _STOP:
                return
            future, fn, args = job
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except BaseException as exc:  # handed to the awaiting coroutine, never lost
                error = exc
            with lock:
                done.append((future, result, error))
                wake = len(done) == 1  # the first of a batch schedules the drain
            if wake:
                try:
                    self.loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: nobody waits for this any more
                    return

    def _drain(self) -> None:
        with self._lock:
            batch = self._done[:]
            self._done.clear()
        for future, result, error in batch:
            if future.cancelled():
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)
