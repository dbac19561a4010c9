"""Where a sync leaf's `exec` runs: the run's thread executor (the default), a pool of worker
processes (`process`), or a Dask cluster (`dask`, `dask=ADDRESS`). docs/executors.md.

The choice is made per node, most specific first: the node's own `executor`, then the run's
(`fanflow run --executor`, `fanflow.run(executor=…)`), then the workflow's top-level
`executor`, else `thread`. A run's or workflow's choice moves only node classes whose
`remote_exec` hook is True (code nodes; a user class that says so); a node's own `executor`
moves any sync node. Async nodes always run on the driver's loop, where the limits live.

Off the driver, only `exec` (or `exec_fallback`) runs remotely: `prep` and `post` touch the
shared store, so they run on the driver's loop. What goes over the wire is the node's class
(by reference: the same fanflow and user modules must be importable there), its params, its
prep result and, for a fallback, the exception; what comes back is the exec result, what exec
printed (replayed on the driver's stdout/stderr) and where it ran. The scheduler, budget,
limits, checkpoints and trace stay on the driver: an item waits for its budget slot and its
limits before it is sent, so they bound what is in flight.
"""

from __future__ import annotations

import contextvars
import os
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fanflow.errors import NodeError, Problem, WorkflowInvalid
from fanflow.execute import threads
from fanflow.nodes.base import NodeShared

KINDS = ("thread", "process", "dask")

# (node class, params, node id, retry number, prep result, fallback exception or None)
RemoteCall = tuple[Any, dict[str, Any], str, int, Any, BaseException | None]
# exec's result, what it wrote to stdout and stderr, where it ran ("pid 123", "dask tcp://…")
RemoteResult = tuple[Any, str, str, str]


@dataclass(frozen=True, slots=True)
class ExecutorChoice:
    kind: str  # thread | process | dask
    address: str | None = None  # dask: the scheduler's address (None: a LocalCluster)

    @property
    def key(self) -> str:
        return self.kind if self.address is None else f"{self.kind}={self.address}"


THREAD = ExecutorChoice("thread")


def parse_executor(text: str, field: str = "--executor") -> ExecutorChoice:
    """`thread`, `process`, `dask` or `dask=ADDRESS` (e.g. dask=tcp://10.0.0.5:8786)."""
    kind, sep, address = text.strip().partition("=")
    kind = kind.strip().lower()
    if kind not in KINDS or (sep and (kind != "dask" or not address.strip())):
        raise WorkflowInvalid([Problem(
            f"unknown executor {text!r}", field=field,
            hint="use thread, process, dask or dask=ADDRESS (e.g. dask=tcp://host:8786)",
        )])  # fmt: skip
    return ExecutorChoice(kind, address.strip() or None)


class Remote(Protocol):
    """An executor that runs `exec` off the driver's threads."""

    kind: str

    async def run(self, call: RemoteCall) -> RemoteResult:
        """Run one call; cancelling the awaiting task stops its work where it runs."""
        ...

    async def aclose(self) -> None: ...


class Executors:
    """A run's executors (shared by its sub-workflow runs): which one each node uses, and the
    remote ones, each started on first use and closed when the run ends."""

    def __init__(self, run_choice: ExecutorChoice | None, on_close: Callable[..., None]) -> None:
        self.run_choice = run_choice
        self._on_close = on_close
        self._remotes: dict[str, Remote] = {}
        self._by_node: dict[tuple[int, str], Remote | None] = {}
        self._registered = False

    def remote_for(self, workflow: Any, plan: Any) -> Remote | None:
        """The remote executor a sync node's exec goes to, or None for the thread executor."""
        if plan.executor is None and self.run_choice is None and not workflow.executor:
            return None  # nothing names an executor: every sync node runs on the threads
        key = (id(workflow), plan.id)
        try:
            return self._by_node[key]
        except KeyError:
            pass
        choice = self.choice_for(workflow, plan)
        remote = None if choice.kind == "thread" else self._remote(choice)
        self._by_node[key] = remote
        return remote

    def choice_for(self, workflow: Any, plan: Any) -> ExecutorChoice:
        return choose(plan, self.run_choice, getattr(workflow, "executor", None))

    def _remote(self, choice: ExecutorChoice) -> Remote:
        remote = self._remotes.get(choice.key)
        if remote is None:
            if choice.kind == "process":
                from fanflow.execute.process import ProcessExecutor

                remote = ProcessExecutor()
            else:
                from fanflow.execute.dask_exec import DaskExecutor

                remote = DaskExecutor(choice.address)
            self._remotes[choice.key] = remote
            if not self._registered:
                self._registered = True
                self._on_close(self.aclose)
        return remote

    async def aclose(self) -> None:
        remotes = list(self._remotes.values())
        self._remotes.clear()
        for remote in remotes:
            try:
                await remote.aclose()
            except Exception:
                pass


def choose(
    plan: Any, run_choice: ExecutorChoice | None, workflow_choice: str | None
) -> ExecutorChoice:
    """Most specific wins: the node's `executor` (its NodePlan's), the run's, the workflow's;
    else thread."""
    if plan.is_async:
        return THREAD  # (a node's own `executor` on an async node is refused by check_executors)
    if plan.executor:
        return parse_executor(plan.executor, f"nodes.{plan.id}.executor")
    if not getattr(plan.cls, "remote_exec", False):
        return THREAD
    if run_choice is not None:
        return run_choice
    if workflow_choice:
        return parse_executor(workflow_choice, "executor")
    return THREAD


def check_executors(workflow: Any, is_async: Callable[[str], bool]) -> None:
    """Before the run: an `executor` on an async node is an error (it always runs on the loop)."""
    problems = []
    for i, spec in enumerate(getattr(workflow, "nodes", ())):
        if spec.executor and is_async(spec.id):
            problems.append(Problem(
                f"node type '{spec.type}' is async: it always runs on the driver's event loop",
                field=f"nodes[{i}].executor", node=spec.id, file=workflow.source,
                hint="remove `executor` from this node (executors apply to sync nodes: code,"
                " custom sync nodes)",
            ))  # fmt: skip
    if problems:
        raise WorkflowInvalid(problems)


def ran_on() -> dict[str, str]:
    """For the item_finished event of a leaf that just ran remotely in this task: {"worker":
    "pid 123" | "dask tcp://…"}; {} for the threads. Reading it clears it."""
    where = _RAN_ON.get()
    if where is None:
        return {}
    _RAN_ON.set(None)
    return {"worker": where}


_RAN_ON: contextvars.ContextVar[str | None] = contextvars.ContextVar("fanflow_ran_on", default=None)


async def run_remote(
    remote: Remote, node: Any, shared: NodeShared, fallback: Exception | None
) -> Any:
    """A sync node's lifecycle with its exec on `remote`: prep and post on the driver."""
    prep = node.prep(shared)
    call: RemoteCall = (type(node), node.params, node.node_id, node.cur_retry, prep, fallback)
    _RAN_ON.set(remote.kind)  # a failed call names the executor it was sent to
    res, out, err, where = await remote.run(call)
    _RAN_ON.set(where)
    if out:
        sys.stdout.write(out)
    if err:
        sys.stderr.write(err)
    return node.post(shared, prep, res)


# --- the worker side: what runs in a worker process or on a Dask worker ----------------------


def exec_call(call: RemoteCall) -> tuple[bool, Any, str, str]:
    """Run one call's exec here: (ok, result or exception, stdout, stderr). What exec prints
    is captured (code nodes capture their own)."""
    from fanflow.nodes import capture

    cls, params, node_id, retry, prep, fallback = call
    capture.begin()
    try:
        node = cls()
        node.params = params
        node.node_id = node_id
        node.cur_retry = retry
        if fallback is None:
            value, ok = node.exec(prep), True
        else:
            value, ok = node.exec_fallback(prep, fallback), True
    except Exception as exc:
        value, ok = sendable_error(exc), False
    except BaseException as exc:  # SystemExit, KeyboardInterrupt, an interrupt: the item's failure
        value, ok = NodeError(threads.describe(exc)), False
    finally:
        out, err = capture.end()
    if ok:
        import pickle  # in a worker process only (the driver's start-up does without it)

        try:
            pickle.dumps(value)
        except Exception as exc:
            value, ok = (
                NodeError(
                    f"the result of node '{node_id}' cannot be sent back from the worker: "
                    f"{threads.describe(exc)}; return plain data (dicts, lists, strings, numbers)"
                ),
                False,
            )
    return ok, value, out, err


def sendable_error(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a NodeError carrying its text."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        error = NodeError(threads.describe(exc))
        error.outputs = getattr(exc, "outputs", None)
        return error


def install_worker_regions() -> None:
    """In a worker process: interruptible regions (a code node's `timeout`) without fanflow's
    thread executor: SIGALRM in the main thread, an asynchronous exception in other threads."""
    threads.local_regions = _region


_in_region = threading.local()
_region_lock = threading.Lock()


def _region(
    fn: Callable[..., Any], args: tuple[Any, ...], timeout: float | None, message: str
) -> Any:
    if timeout is None or getattr(_in_region, "on", False):
        return fn(*args)
    _in_region.on = True
    try:
        if threading.current_thread() is threading.main_thread():
            return _alarm_region(fn, args, timeout)
        return _timer_region(fn, args, timeout)
    except threads.DeadlineExceeded:
        raise NodeError(message.format(timeout=timeout), retryable=True) from None
    finally:
        _in_region.on = False


_alarm_armed = False


def _on_alarm(signum: int, frame: Any) -> None:
    if _alarm_armed:
        raise threads.DeadlineExceeded


def _alarm_region(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    global _alarm_armed
    previous = signal.signal(signal.SIGALRM, _on_alarm)
    _alarm_armed = True
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args)
    finally:
        _alarm_armed = False
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _timer_region(fn: Callable[..., Any], args: tuple[Any, ...], timeout: float) -> Any:
    ident = threading.get_ident()
    state = {"active": True, "sent": False}

    def expire() -> None:
        with _region_lock:
            if state["active"]:
                state["sent"] = True
                threads._send(ident, threads.DeadlineExceeded)

    timer = threading.Timer(timeout, expire)
    timer.daemon = True
    timer.start()
    try:
        return fn(*args)
    finally:
        timer.cancel()
        while True:
            try:
                with _region_lock:
                    state["active"] = False
                    if state["sent"]:
                        state["sent"] = False
                        threads._send(ident, None)  # withdraw one not delivered yet
                break
            except threads.DeadlineExceeded:  # delivered on the way out: spent
                pass


def where_here() -> str:
    return f"pid {os.getpid()}"


__all__ = [
    "THREAD", "ExecutorChoice", "Executors", "Remote", "RemoteCall", "RemoteResult",
    "check_executors", "choose", "exec_call", "parse_executor", "run_remote",
]  # fmt: skip
