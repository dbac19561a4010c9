"""The process executor: a pool of worker processes, one per core, for CPU-bound sync leaves.

Not `concurrent.futures.ProcessPoolExecutor`: a worker that dies there breaks the whole pool
(every pending future fails with BrokenProcessPool) and a running call cannot be stopped. Here
each worker has its own pipe, read from the driver's event loop (`add_reader`):

- Calls submitted in the same loop iteration (a batch's items) are sent in chunks, several
  calls per message, so a call costs one pickled tuple rather than one round trip; results come
  back one message per call, in order, so per-item events, order and error policies hold.
- A worker that dies (os._exit, a segfault, the OOM killer) fails the call it was running with
  a message naming the pid and the signal; the calls queued behind it go to other workers and
  a replacement starts on demand.
- Cancelling a call (fail-fast, SIGINT/SIGTERM cancelling the run, a lost race) that a worker
  is running kills that worker (SIGKILL): the work really stops. A call still queued in a
  worker's chunk is skipped there (the worker reads cancellations between calls).
- A code node's `timeout` is enforced inside the worker (SIGALRM: a busy loop stops).

Workers are fresh interpreters (`python -c`, ~0.13 s each, started in parallel on first use;
fork with the driver's loop and threads running is unsafe, and multiprocessing's spawn and
forkserver re-import the caller's `__main__`, which breaks a script without a main guard). They
get the driver's sys.path, ignore SIGINT (the driver decides), write stray output to stderr
(never the driver's stdout, which may carry JSON), and exit when the driver closes their pipe.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import pickle
import signal
import subprocess
import sys
import time
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from fanflow.errors import NodeError
from fanflow.execute.executors import RemoteCall, RemoteResult

_CHUNK_MAX = 64  # calls per message at most: a worker is never handed a long queue
_FAST_ITEM = 0.002  # calls faster than this (seconds) are sent several per message
_ids = itertools.count(1)


class _Job:
    __slots__ = ("future", "id", "payload", "proc")

    def __init__(self, payload: bytes, future: asyncio.Future[RemoteResult]) -> None:
        self.id = next(_ids)
        self.payload = payload
        self.future = future
        self.proc: _Proc | None = None


class _Proc:
    __slots__ = ("jobs", "pid", "process", "rx", "tx")

    def __init__(self, process: subprocess.Popen[bytes], tx: Connection, rx: Connection) -> None:
        self.process = process
        self.tx = tx  # calls and cancellations to the worker
        self.rx = rx  # its answers
        self.pid: int = process.pid
        self.jobs: deque[_Job] = deque()  # sent, in the order the worker runs them

    def exit_code(self, wait: float) -> int | None:
        try:
            return self.process.wait(wait)
        except subprocess.TimeoutExpired:
            return None

    def close(self) -> None:
        for conn in (self.tx, self.rx):
            try:
                conn.close()
            except OSError:
                pass


class ProcessExecutor:
    kind = "process"

    def __init__(self, size: int | None = None) -> None:
        self.size = size or len(os.sched_getaffinity(0)) or 1
        self._procs: list[_Proc] = []
        self._outbox: deque[_Job] = deque()
        self._flushing = False
        self._closed = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._item_time = float("inf")  # recent seconds per call in a worker (moving average)

    async def run(self, call: RemoteCall) -> RemoteResult:
        if self._closed:
            raise NodeError("the process executor is closed (the run ended)")
        loop = self._loop = asyncio.get_running_loop()
        try:
            payload = _dumps(call)
        except Exception as exc:
            raise NodeError(
                f"node '{call[2]}' cannot be sent to a worker process: {exc}; its class must be"
                " importable by name (defined at module level) and its params and prep result"
                " picklable, or run it with executor: thread"
            ) from None
        job = _Job(payload, loop.create_future())
        self._outbox.append(job)
        self._schedule_flush()
        try:
            return await job.future
        except asyncio.CancelledError:
            self._cancel(job)
            raise

    async def aclose(self) -> None:
        self._closed = True
        procs, self._procs = self._procs, []
        for proc in procs:
            self._forget(proc)
            try:
                proc.tx.send(None)
            except OSError:
                pass
        loop = asyncio.get_running_loop()
        for proc in procs:
            if proc.process.poll() is None:
                await loop.run_in_executor(None, proc.exit_code, 1.0)
            if proc.process.poll() is None:
                proc.process.kill()
                proc.exit_code(1.0)
            proc.close()
        for job in self._outbox:
            if not job.future.done():
                job.future.set_exception(NodeError("the run ended before this item ran"))
        self._outbox.clear()

    # --- sending --------------------------------------------------------------------------------

    def _schedule_flush(self) -> None:
        if not self._flushing and self._loop is not None:
            self._flushing = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Hand queued calls to idle workers (starting workers up to `size`), in chunks."""
        self._flushing = False
        outbox = self._outbox
        while outbox and outbox[0].future.done():
            outbox.popleft()
        if not outbox or self._closed:
            return
        idle = [p for p in self._procs if not p.jobs]
        while len(self._procs) < self.size and len(idle) < len(outbox):
            try:
                idle.append(self._start())
            except OSError as exc:
                if not self._procs:
                    self._fail_all(f"cannot start a worker process: {exc}")
                    return
                break
        if not idle:
            return  # a worker going idle flushes again
        per = 1  # until items are known to be fast: long items are balanced one by one
        if self._item_time < _FAST_ITEM:
            per = max(1, min(_CHUNK_MAX, -(-len(outbox) // (2 * self.size))))
        for proc in idle:
            chunk: list[tuple[int, bytes]] = []
            while outbox and len(chunk) < per:
                job = outbox.popleft()
                if job.future.done():
                    continue
                job.proc = proc
                proc.jobs.append(job)
                chunk.append((job.id, job.payload))
            if not chunk:
                break
            try:
                proc.tx.send(chunk)
            except OSError:
                self._died(proc)
                return

    def _start(self) -> _Proc:
        """A fresh interpreter running `_main` (not multiprocessing's spawn or forkserver: they
        re-import the caller's `__main__`, which breaks scripts without a main guard)."""
        to_worker, from_driver = os.pipe()
        to_driver, from_worker = os.pipe()
        try:
            process = subprocess.Popen(
                [sys.executable, "-c", _BOOT, str(to_worker), str(from_worker)],
                pass_fds=(to_worker, from_worker), stdin=subprocess.DEVNULL,
                stdout=_stderr_fd(),
            )  # fmt: skip
        except BaseException:
            for fd in (to_worker, from_driver, to_driver, from_worker):
                os.close(fd)
            raise
        os.close(to_worker)
        os.close(from_worker)
        tx = Connection(from_driver, readable=False)
        rx = Connection(to_driver, writable=False)
        proc = _Proc(process, tx, rx)
        tx.send(list(sys.path))  # the worker imports node classes as the driver does
        self._procs.append(proc)
        assert self._loop is not None
        self._loop.add_reader(rx.fileno(), self._readable, proc)
        return proc

    # --- receiving ------------------------------------------------------------------------------

    def _readable(self, proc: _Proc) -> None:
        try:
            while proc.rx.poll():
                ok, value, out, err, took = proc.rx.recv()
                self._item_time = took if self._item_time == float("inf") else (
                    0.8 * self._item_time + 0.2 * took
                )  # fmt: skip
                job = proc.jobs.popleft()
                job.proc = None
                if job.future.done():  # cancelled meanwhile
                    continue
                if ok:
                    job.future.set_result((value, out, err, f"pid {proc.pid}"))
                else:
                    if isinstance(value, BaseException) and (out or err):
                        _attach_streams(value, out, err)
                    job.future.set_exception(value)
        except (EOFError, OSError):
            self._died(proc)
            return
        except Exception as exc:  # a result that does not unpickle here
            failed = proc.jobs.popleft() if proc.jobs else None
            if failed is not None and not failed.future.done():
                failed.future.set_exception(NodeError(f"cannot read the worker's result: {exc}"))
        if not proc.jobs and self._outbox:
            self._schedule_flush()

    def _died(self, proc: _Proc) -> None:
        """A worker ended without being asked: the call it ran fails, the rest are requeued."""
        self._forget(proc)
        if proc in self._procs:
            self._procs.remove(proc)
        code = proc.exit_code(0.5)
        proc.close()
        jobs = proc.jobs
        running = jobs.popleft() if jobs else None
        for job in reversed(jobs):
            job.proc = None
            self._outbox.appendleft(job)
        jobs.clear()
        if running is not None and not running.future.done():
            running.future.set_exception(NodeError(
                f"worker process {proc.pid} died while running this item ({_why(code)})"
            ))  # fmt: skip
        if self._outbox and not self._closed:
            self._schedule_flush()

    def _forget(self, proc: _Proc) -> None:
        if self._loop is not None and not self._loop.is_closed():
            try:
                self._loop.remove_reader(proc.rx.fileno())
            except (OSError, ValueError):
                pass

    # --- cancelling -----------------------------------------------------------------------------

    def _cancel(self, job: _Job) -> None:
        proc = job.proc
        if proc is None:
            return  # still in the outbox: flushing skips it
        if proc.jobs and proc.jobs[0] is job:  # running: stop it for real
            proc.process.kill()
            self._died(proc)
        else:  # queued in the worker's chunk: it skips it
            try:
                proc.tx.send(job.id)
            except OSError:
                pass

    def _fail_all(self, message: str) -> None:
        for job in self._outbox:
            if not job.future.done():
                job.future.set_exception(NodeError(message))
        self._outbox.clear()


def _dumps(call: RemoteCall) -> bytes:
    """cloudpickle when it is installed (a class defined in a script's __main__ travels by
    value), else pickle (classes by reference)."""
    global _dumps_impl
    if _dumps_impl is None:
        try:
            import cloudpickle  # type: ignore[import-untyped]

            _dumps_impl = cloudpickle.dumps
        except ImportError:
            _dumps_impl = pickle.dumps
    return _dumps_impl(call, protocol=pickle.HIGHEST_PROTOCOL)


_dumps_impl: Any = None


def _attach_streams(exc: BaseException, out: str, err: str) -> None:
    outputs = getattr(exc, "outputs", None)
    if isinstance(exc, NodeError) and outputs is None:
        exc.outputs = {"stdout": out, "stderr": err}


def _why(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


# --- the worker process ------------------------------------------------------------------------


_BOOT = "import sys; from fanflow.execute.process import _main; _main(*map(int, sys.argv[1:]))"


def _stderr_fd() -> int | None:
    """The driver's real stderr: a worker's stray output goes there, never to stdout."""
    try:
        return sys.__stderr__.fileno() if sys.__stderr__ is not None else None
    except (AttributeError, OSError, ValueError):
        return None


def _main(rfd: int, wfd: int) -> None:
    """A worker process: its pipes are inherited file descriptors."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver cancels; a terminal ^C is for it
    rx = Connection(rfd, writable=False)
    tx = Connection(wfd, readable=False)
    try:
        path = rx.recv()
    except (EOFError, OSError):
        return
    sys.path[:] = [p for p in path if isinstance(p, str)]
    _serve(rx, tx)


def _serve(conn: Connection, out: Connection) -> None:
    """A worker's loop: take a chunk of calls, run them in order, answer one message per call;
    between calls, read cancellations of calls still queued."""
    from fanflow.execute.executors import exec_call, install_worker_regions

    install_worker_regions()
    skipped: set[int] = set()
    while True:
        try:
            message = conn.recv()
        except (EOFError, OSError):
            return
        if message is None:
            return
        if isinstance(message, int):
            skipped.add(message)
            continue
        for job_id, payload in message:
            while conn.poll():
                extra = conn.recv()
                if extra is None:
                    return
                if isinstance(extra, int):
                    skipped.add(extra)
            t0 = time.perf_counter()
            if job_id in skipped:
                skipped.discard(job_id)
                answer: tuple[bool, Any, str, str] = (False, None, "", "")
            else:
                try:
                    call = pickle.loads(payload)
                except Exception as exc:
                    error = NodeError(
                        f"cannot load the node in the worker process: {exc}; its class must be"
                        " importable by name there (a module on sys.path, not the script's"
                        " __main__), or run it with executor: thread"
                    )
                    answer = (False, error, "", "")
                else:
                    answer = exec_call(call)
            try:
                out.send((*answer, time.perf_counter() - t0))
            except (OSError, ValueError):
                return
