"""The thread executor for sync leaves: worker threads take lifecycles from one queue, and their
results come back to the event loop in batches.

Not `loop.run_in_executor` on a ThreadPoolExecutor: there every completion wakes the loop
through its self-pipe on its own, and the pool starts a thread for every job submitted while
none is idle. Measured on this project's 2-core VM, a bare `run_in_executor` round trip costs
about 125 µs, so a 10,000-wide fan-out of tiny code nodes spent 200 µs per node. Here a worker
that finishes while earlier results still wait for the loop adds its result to the same batch
(one wake-up for the lot), and a new thread starts only when the queue backs up faster than the
running threads drain it, up to `size` threads (sync nodes that block on I/O still get one each).

Stopping a job (threads cannot be killed). A job cancelled before a worker takes it never runs.
Inside a running job, `run_interruptible(fn, *args, timeout=…, message=…)` is an interruptible
region: when the job's future is cancelled (fail-fast, a lost race, SIGINT) or
its timeout passes, an exception is raised *in the worker thread* (PyThreadState_SetAsyncExc) at
its next bytecode, so a pure-Python loop stops; a blocking C call (time.sleep, a socket read)
finishes first and the exception lands right after it. A timeout that has not ended the job
GRACE seconds after its interrupt (a blocking call, or code that swallowed the interrupt with a
bare `except:`) fails the job from the loop anyway: the node fails on time, and the thread is
left to finish its call and stop. Only the region is interruptible, so an interrupt never lands
in a node's own bookkeeping, the worker's, or the next job: each region takes at most one
interrupt, leaving it withdraws one not yet delivered, and one delivered while leaving is
absorbed (see `run_interruptible` and `_leave`). Which code may be
interrupted is the node class's choice (the code node wraps the user's code); the rest of a
cancelled job runs to its end and its result is dropped.
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
from collections.abc import Callable
from typing import Any

from fanflow.errors import NodeError

_STOP = None
_SPAWN_AFTER = 0.001  # with every thread busy, how long the queue may stay backed up before
# another thread starts: blocked threads (sleep, I/O) get company fast, busy CPU work does not
# multiply threads that would only fight over the GIL
GRACE = 0.5  # after a timeout's interrupt, how long the job may take to stop before it fails
_NEVER = float("inf")
_by_thread: dict[int, _Worker] = {}  # thread ident → its worker, for fanflow worker threads
_TIMED_OUT = "timed out after {timeout:g} s"
# Set in a process or Dask worker (fanflow.execute.executors): runs an interruptible region of
# a thread that is not a fanflow worker thread, (fn, args, timeout, message) → fn's result.
local_regions: Callable[[Callable[..., Any], tuple[Any, ...], float | None, str], Any] | None
local_regions = None


class Interrupt(BaseException):
    """Raised inside an interruptible region from outside its thread. A BaseException, so
    `except Exception` in user code does not swallow it."""


class JobCancelled(Interrupt):
    """The job's future was cancelled: nobody waits for its result any more."""


class DeadlineExceeded(Interrupt):
    """The region's timeout passed."""


def run_interruptible(
    fn: Callable[..., Any], *args: Any, timeout: float | None = None, message: str = _TIMED_OUT
) -> Any:
    """fn(*args) as an interruptible region: cancelling the job stops it (JobCancelled) and,
    with a `timeout` (seconds), it fails with NodeError(message) once it has run that long
    (`message` is formatted with `timeout`). Outside a fanflow worker thread (a node called
    directly), or nested in another region, it is a plain call."""
    worker = _by_thread.get(threading.get_ident())
    if worker is None or worker.job is None or worker.region:
        if worker is None and local_regions is not None:  # a worker process of an executor
            return local_regions(fn, args, timeout, message)
        return fn(*args)
    executor = worker.executor
    try:
        try:
            executor._enter(worker, timeout, message)  # inside the try: see _leave
            return fn(*args)
        finally:
            while True:
                try:
                    executor._leave(worker)
                    break
                except Interrupt:  # the region's one interrupt arrived late: spent
                    pass
    except DeadlineExceeded:
        raise NodeError(message.format(timeout=timeout), retryable=True) from None


def current_job() -> asyncio.Future[Any] | None:
    """In a job on a fanflow worker thread, its future (a job running several items checks
    `cancelled()` between them); else None."""
    worker = _by_thread.get(threading.get_ident())
    return worker.job if worker is not None else None


class _Worker:
    """One worker thread's state; its fields change under the executor's lock."""

    __slots__ = ("deadline", "executor", "ident", "interrupted", "job", "message", "region",
                 "timeout")  # fmt: skip

    def __init__(self, executor: ThreadExecutor, ident: int) -> None:
        self.executor = executor
        self.ident = ident
        self.job: _JobFuture | None = None  # the future of the job it runs
        self.region = False  # inside an interruptible region
        self.interrupted = False  # an interrupt was sent to this region (at most one)
        self.deadline = _NEVER  # when the watchdog acts next on this region
        self.timeout: float | None = None  # the region's, and its message (a format string)
        self.message = ""


class _JobFuture(asyncio.Future[Any]):
    """A job's future: cancelling it (the awaiting task was cancelled) interrupts the job."""

    __slots__ = ("_executor", "_worker")
    _executor: ThreadExecutor
    _worker: _Worker | None

    def cancel(self, msg: Any = None) -> bool:
        if not super().cancel(msg):
            return False
        self._executor._cancelled(self)
        return True


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
        self._workers: list[_Worker] = []
        self._cond = threading.Condition(self._lock)  # wakes the watchdog
        self._watchdog: threading.Thread | None = None
        self._wake_at = _NEVER  # when the watchdog wakes next
        self._shortest = _NEVER  # the shortest timeout a region has had

    def submit(self, fn: Callable[..., Any], *args: Any) -> asyncio.Future[Any]:
        """Run fn(*args) on a worker thread; the returned future resolves on the loop.
        Cancelling the future interrupts fn's interruptible regions (module docstring)."""
        future = _JobFuture(loop=self.loop)
        future._executor = self
        future._worker = None
        self._jobs.put((future, fn, args))
        if self._idle:  # a thread waits on the queue: it takes this job (a read of the count
            return future  # without the lock is as good as one under it: see _serve)
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
        """Stop idle threads and the watchdog; a thread still busy with a cancelled job ends
        after it (interrupted if it is in an interruptible region)."""
        with self._lock:
            self._closed = True
            threads = self._threads
            watchdog = self._watchdog
            self._cond.notify()
        for _ in range(threads):
            self._jobs.put(_STOP)
        if watchdog is not None:
            watchdog.join(1.0)

    # --- internals ----------------------------------------------------------------------------

    def _maybe_grow(self) -> None:
        with self._lock:
            self._watching = False
            if self._closed or self._idle or self._threads >= self.size or self._jobs.empty():
                return
            self._threads += 1
            # look again shortly: a burst of blocking jobs gets a thread each within ms
            again = self._watching = self._threads < self.size
        self._start_thread()
        if again:
            self.loop.call_later(_SPAWN_AFTER, self._maybe_grow)

    def _start_thread(self) -> None:
        name = f"{self.name}-{self._threads}"
        threading.Thread(target=self._work, name=name, daemon=True).start()

    def _work(self) -> None:
        worker = _Worker(self, threading.get_ident())
        with self._lock:
            self._workers.append(worker)
        _by_thread[worker.ident] = worker
        try:
            self._serve(worker)
        finally:
            del _by_thread[worker.ident]
            with self._lock:
                self._workers.remove(worker)

    def _serve(self, worker: _Worker) -> None:
        """Take jobs until told to stop. `_idle` counts threads waiting on the queue (or about
        to): it goes up when a thread finishes a job, in the same locked step that hands the
        result over, and down once `get` returns, so a count read at any moment may include a
        thread that is just taking an earlier job, whether read under the lock or not."""
        jobs, lock, done = self._jobs, self._lock, self._done
        with lock:
            self._idle += 1
        while True:
            job = jobs.get()
            with lock:
                self._idle -= 1
                if job is _STOP:
                    return
                future, fn, args = job
                if future.cancelled():  # cancelled before it started: it never runs
                    self._idle += 1
                    continue
                worker.job, future._worker = future, worker
            result: Any = None
            error: BaseException | None = None
            try:
                result = fn(*args)
            except (Exception, JobCancelled) as exc:  # handed to the awaiting coroutine
                error = exc
            except BaseException as exc:  # SystemExit, KeyboardInterrupt…: the job's failure
                error = NodeError(describe(exc))
            with lock:
                worker.job = None
                done.append((future, result, error))
                wake = len(done) == 1  # the first of a batch schedules the drain
                self._idle += 1
            if wake:
                try:
                    self.loop.call_soon_threadsafe(self._drain)
                except RuntimeError:  # the loop is closed: nobody waits for this any more
                    with lock:
                        self._idle -= 1
                    return

    def _drain(self) -> None:
        with self._lock:
            batch = self._done[:]
            self._done.clear()
        for future, result, error in batch:
            if future.done():  # cancelled, or failed by its timeout while it was stuck
                continue
            if error is None:
                future.set_result(result)
            else:
                future.set_exception(error)

    # --- interrupts: the loop (cancel) and the watchdog (timeouts) stop a region ----------------

    def _enter(self, worker: _Worker, timeout: float | None, message: str) -> None:
        """The worker's thread enters an interruptible region."""
        with self._lock:
            job = worker.job
            if job is not None and job.cancelled():
                raise JobCancelled
            worker.region, worker.interrupted = True, False
            if timeout is None:
                return
            worker.deadline = time.monotonic() + timeout
            worker.timeout, worker.message = timeout, message
            self._shortest = min(self._shortest, timeout)
            if self._watchdog is None and not self._closed:
                self._watchdog = threading.Thread(
                    target=self._watch, name=f"{self.name}-watchdog", daemon=True
                )
                self._watchdog.start()
            elif worker.deadline < self._wake_at:
                self._cond.notify()

    def _leave(self, worker: _Worker) -> None:
        """The worker's thread leaves its region. Under the lock, so no new interrupt can be
        sent, an interrupt sent but not delivered yet is withdrawn: nothing can land after
        this returns. The region's one interrupt may still be delivered on the way here (even
        on entering this function); the caller absorbs it and calls again."""
        with self._lock:
            worker.region = False
            worker.deadline = _NEVER
            if worker.interrupted:
                worker.interrupted = False
                _send(worker.ident, None)

    def _interrupt(self, worker: _Worker, exc: type[Interrupt]) -> bool:
        """Under the lock: send `exc` to the worker's region, at most once per region."""
        if not worker.region or worker.interrupted:
            return False
        worker.interrupted = True
        _send(worker.ident, exc)
        return True

    def _cancelled(self, future: _JobFuture) -> None:
        """On the loop: a job's future was cancelled."""
        with self._lock:
            worker = future._worker
            if worker is not None and worker.job is future:
                self._interrupt(worker, JobCancelled)

    def _watch(self) -> None:
        """The watchdog thread: interrupts regions whose timeout passed; GRACE later, if the
        region has still not ended, fails its job from the loop. It also wakes once per shortest
        timeout seen, idle or not: a region starting later cannot end before that wake-up, so
        entering one needs no notify (one per code node would cost a thread switch each)."""
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                wake = now + self._shortest
                for worker in self._workers:
                    if worker.deadline <= now:
                        self._expire(worker, now)
                    wake = min(wake, worker.deadline)
                self._wake_at = wake
                self._cond.wait(wake - now)

    def _expire(self, worker: _Worker, now: float) -> None:
        if not worker.region:
            worker.deadline = _NEVER
        elif self._interrupt(worker, DeadlineExceeded):
            worker.deadline = now + GRACE
        else:  # interrupted GRACE ago and still running: stop waiting for it
            worker.deadline = _NEVER
            try:
                message = worker.message.format(timeout=worker.timeout)
                self.loop.call_soon_threadsafe(_fail_stuck, worker.job, message)
            except RuntimeError:  # the loop is closed
                pass


def describe(exc: BaseException) -> str:
    """`Type: message`, or the type alone when the exception says nothing."""
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _fail_stuck(future: asyncio.Future[Any] | None, message: str) -> None:
    if future is not None and not future.done():
        future.set_exception(NodeError(message, retryable=True))


def _send(ident: int, exc: type[BaseException] | None) -> None:
    """Raise `exc` in thread `ident` at its next bytecode (None: withdraw a pending one)."""
    import ctypes  # only when interrupting: the import costs milliseconds

    target = ctypes.py_object(exc) if exc is not None else None
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), target)
