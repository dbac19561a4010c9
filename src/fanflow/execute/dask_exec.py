"""The dask executor: sync leaves' exec on a Dask `distributed` cluster (`fanflow[dask]`).

`dask=tcp://host:8786` connects to a running scheduler; plain `dask` starts a LocalCluster
(worker processes, one per core, one thread each) for the run and closes it at the end.
`distributed` is imported only when a run uses this executor.

Calls submitted in the same loop iteration (a batch's items, each already holding its budget
slot and limits on the driver) are sent as one task per chunk (one task per item costs ~2 ms of
scheduler time; chunks bring it under 0.1 ms an item). Each chunk's results are handed back as
that chunk completes, so progress and checkpoints advance per chunk. A chunk whose items were
all cancelled (fail-fast, SIGINT) is cancelled on the cluster; a running chunk also sees a
`distributed.Event` set and stops at its next item, and a code node's running code is
interrupted there. A worker lost mid-chunk is Dask's to retry (`retries`); when it gives up,
the chunk's items fail with its error. Node classes travel by reference, code nodes' code as
source: workers need the same fanflow version (checked on connect: a mismatch is a clear error)
and the same user modules.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
import time
import uuid
from typing import Any

from fanflow.errors import NodeError
from fanflow.execute.executors import RemoteCall, RemoteResult

_CHUNK_MAX = 500
_CHUNK_MIN = 100
_SLOW_ITEM = 0.005  # seconds: items slower than this go one per task
_RETRIES = 1  # Dask retries a chunk whose worker died once, then the chunk fails
_CONNECT_TIMEOUT = 20.0
_HINT = (
    "start one with `dask scheduler` and `dask worker tcp://HOST:8786` (docs/executors.md), or"
    " use --executor dask for a local cluster"
)


class DaskExecutor:
    kind = "dask"

    def __init__(self, address: str | None) -> None:
        self.address = address
        self._client: Any = None
        self._cluster: Any = None
        self._start: asyncio.Task[None] | None = None
        self._outbox: list[tuple[RemoteCall, asyncio.Future[RemoteResult]]] = []
        self._flushing = False
        self._threads = 1
        self._item_time: float | None = None  # recent seconds per item on a worker
        self._tasks: set[asyncio.Task[None]] = set()
        self._running: dict[str, Any] = {}  # chunk key → its Dask future, until it completes
        self._closed = False

    async def run(self, call: RemoteCall) -> RemoteResult:
        if self._closed:
            raise NodeError("the dask executor is closed (the run ended)")
        if self._client is None:
            if self._start is None:
                self._start = asyncio.ensure_future(self._connect())
            await asyncio.shield(self._start)
        loop = asyncio.get_running_loop()
        future: asyncio.Future[RemoteResult] = loop.create_future()
        self._outbox.append((call, future))
        if not self._flushing:
            self._flushing = True
            loop.call_soon(self._flush)
        return await future  # a cancelled item: _flush skips it, _collect cancels its chunk

    async def _connect(self) -> None:
        try:
            import distributed
        except ImportError:
            raise NodeError(
                "the dask executor needs the `distributed` package: pip install 'fanflow[dask]'"
            ) from None
        try:
            if self.address is None:
                cores = len(os.sched_getaffinity(0)) or 1
                self._cluster = await distributed.LocalCluster(
                    n_workers=cores, threads_per_worker=1, processes=True,
                    dashboard_address=":0", asynchronous=True,
                )  # fmt: skip
                self._client = await distributed.Client(self._cluster, asynchronous=True)
            else:
                self._client = await distributed.Client(
                    self.address, asynchronous=True, timeout=_CONNECT_TIMEOUT
                )
            await self._client.wait_for_workers(1, timeout=_CONNECT_TIMEOUT)
        except (OSError, TimeoutError) as exc:
            await self._shutdown()
            where = self.address or "a local cluster"
            raise NodeError(
                f"cannot reach a Dask scheduler with workers at {where}: {exc}; {_HINT}"
            ) from None
        await self._check_versions()
        info = self._client.scheduler_info()
        self._threads = sum(w.get("nthreads", 1) for w in info.get("workers", {}).values()) or 1

    async def _check_versions(self) -> None:
        import fanflow

        mine = fanflow.__version__
        theirs = await self._client.run(_fanflow_version)
        wrong = {w: v for w, v in theirs.items() if v != mine}
        if wrong:
            worker, version = next(iter(wrong.items()))
            await self._shutdown()
            raise NodeError(
                f"Dask worker {worker} runs fanflow {version}, the driver {mine}"
                f" ({len(wrong)} of {len(theirs)} workers differ): install the same fanflow"
                " version (and your node modules) on every worker"
            )

    def _flush(self) -> None:
        self._flushing = False
        outbox = [(c, f) for c, f in self._outbox if not f.done()]
        self._outbox = []
        if not outbox or self._client is None:
            for _, future in outbox:
                if not future.done():
                    future.set_exception(NodeError("the dask executor is closed"))
            return
        per = self._chunk_size(len(outbox))
        for start in range(0, len(outbox), per):
            chunk = outbox[start : start + per]
            task = asyncio.ensure_future(self._send(chunk))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _chunk_size(self, queued: int) -> int:
        """Slow items (known from earlier chunks) go one task each, spread over the workers;
        fast or not yet timed ones in chunks of at least _CHUNK_MIN (a task costs ~ms), never
        so few chunks that workers stay idle."""
        spread = -(-queued // (2 * self._threads))
        if self._item_time is None:
            return max(1, min(_CHUNK_MAX, spread))
        if self._item_time > _SLOW_ITEM:
            return 1
        return max(1, min(_CHUNK_MAX, max(spread, min(queued, _CHUNK_MIN))))

    async def _send(self, chunk: list[tuple[RemoteCall, asyncio.Future[RemoteResult]]]) -> None:
        import distributed

        futures = [f for _, f in chunk]
        key = f"fanflow-chunk-{uuid.uuid4().hex}"
        try:
            task = self._client.submit(_run_chunk, [c for c, _ in chunk], key, key=key,
                                       pure=False, retries=_RETRIES)  # fmt: skip
        except Exception as exc:  # e.g. a call that does not pickle
            _fail(futures, f"cannot send the items to Dask: {exc}")
            return
        self._running[key] = task
        watch = asyncio.ensure_future(_all_cancelled(futures))
        done = asyncio.ensure_future(task.result())
        try:
            await asyncio.wait([done, watch], return_when=asyncio.FIRST_COMPLETED)
            if not done.done():  # every item was cancelled: stop the chunk on the cluster
                done.cancel()
                await _maybe(distributed.Event(key, client=self._client).set())
                await _maybe(self._client.cancel([task]))
                return
            answers = done.result()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the chunk failed as a whole (a lost worker, twice)
            _fail(futures, f"the Dask task running this item failed: {_describe(exc)}")
            return
        finally:
            watch.cancel()
            self._running.pop(key, None)
        took = sum(a[5] for a in answers) / len(answers) if answers else 0.0
        self._item_time = took if self._item_time is None else 0.7 * self._item_time + 0.3 * took
        for future, (ok, value, out, err, where, _) in zip(futures, answers, strict=False):
            if future.done():
                continue
            if ok:
                future.set_result((value, out, err, where))
            else:
                future.set_exception(value if isinstance(value, BaseException) else
                                     NodeError("cancelled on the worker"))  # fmt: skip

    async def aclose(self) -> None:
        """Chunks still running (the run failed or was cancelled) are stopped on the cluster
        before it closes."""
        self._closed = True
        if self._running and self._client is not None:
            import distributed

            running, self._running = self._running, {}
            try:
                for key in running:
                    await _maybe(distributed.Event(key, client=self._client).set())
                await _maybe(self._client.cancel(list(running.values())))
            except Exception:
                pass
        for task in list(self._tasks):
            task.cancel()
        await self._shutdown()

    async def _shutdown(self) -> None:
        client, cluster = self._client, self._cluster
        self._client = self._cluster = None
        if client is not None:
            try:
                await client.close()
            except Exception:
                pass
        if cluster is not None:
            try:
                await cluster.close()
            except Exception:
                pass


async def _maybe(result: Any) -> Any:
    return await result if inspect.isawaitable(result) else result


async def _all_cancelled(futures: list[asyncio.Future[Any]]) -> None:
    while not all(f.done() for f in futures):
        await asyncio.wait(futures, return_when=asyncio.FIRST_COMPLETED)
        futures = [f for f in futures if not f.done()]
        if not futures:
            return


def _fail(futures: list[asyncio.Future[Any]], message: str) -> None:
    for future in futures:
        if not future.done():
            future.set_exception(NodeError(message))


def _describe(exc: BaseException) -> str:
    from fanflow.execute.threads import describe

    return describe(exc)


def _fanflow_version() -> str:
    import fanflow

    return fanflow.__version__


# --- on the Dask worker ----------------------------------------------------------------------


def _run_chunk(calls: list[RemoteCall], key: str) -> list[tuple[bool, Any, str, str, str, float]]:
    """One chunk on a Dask worker thread: the items in order; stops when the driver sets the
    chunk's Event (checked by a watcher thread, which interrupts the running code)."""
    import distributed

    from fanflow.execute import threads
    from fanflow.execute.executors import exec_call, install_worker_regions

    install_worker_regions()
    worker = distributed.get_worker()
    where = f"dask {worker.address}"
    stop = threading.Event()
    ident = threading.get_ident()
    state = {"running": True}
    lock = threading.Lock()

    from distributed.utils import sync

    def is_set() -> bool:
        # over the worker's own connection to the scheduler (a client found from this thread
        # may be a driver's, in an in-process cluster, and close with its run)
        return bool(sync(worker.loop, worker.scheduler.event_is_set, name=key))

    def watch() -> None:
        try:
            while not stop.wait(0.2):  # a quick poll: no wait left pending on the scheduler
                if is_set():
                    stop.set()
                    with lock:
                        if state["running"]:
                            threads._send(ident, threads.JobCancelled)
                    return
        except Exception:  # the cluster is going away: nothing left to stop
            return

    watcher = threading.Thread(target=watch, name="fanflow-dask-cancel", daemon=True)
    watcher.start()
    out: list[tuple[bool, Any, str, str, str, float]] = []
    clock = time.perf_counter
    try:
        for call in calls:
            if stop.is_set():
                out.append((False, None, "", "", where, 0.0))
                continue
            t0 = clock()
            try:
                ok, value, o, e = exec_call(call)
            except threads.JobCancelled:
                ok, value, o, e = False, None, "", ""
            out.append((ok, value, o, e, where, clock() - t0))
    finally:
        with lock:
            state["running"] = False
            stop.set()
    return out
