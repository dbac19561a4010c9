"""PocketFlow 0.0.3's own classes as fanflow node types, run unmodified (docs/pocketflow.md).

A plain `pocketflow.Node` / `AsyncNode` subclass needs nothing: the engine drives its
prep → exec → post itself, with fanflow's visible retries. Every other PocketFlow object —
`BatchNode`, `Flow`, `BatchFlow`, `AsyncBatchNode`, `AsyncParallelBatchNode`, `AsyncFlow`,
`AsyncBatchFlow`, `AsyncParallelBatchFlow`, any class overriding `_exec`/`_run`/`_run_async`,
and a module-level instance named as a type — is wrapped at compile time in an adapter: a
fanflow node whose one execution is PocketFlow's own `_run(shared)` / `_run_async(shared)`, so
item iteration, per-item retries, `exec_fallback`, `>>` / `- "action" >>` orchestration and
`set_params` injection are PocketFlow's by construction.

- `shared` is the node's `NodeShared`: PocketFlow's writes land in the node's outputs.
- params: the node's fanflow params are merged over the object's own `params`, then given to
  it with `set_params` (as `Flow._orch` passes a flow's params on to its nodes).
- the action is what PocketFlow's `_run` returns (post's return; a Flow's last action).
- retries: PocketFlow's own (`max_retries`/`wait` per item or per inner node); the engine adds
  none unless the IR asks for `retry`, which re-runs the whole object.
- the budget: sync adapters run on the thread pool holding one slot; `AsyncBatchNode`,
  `AsyncFlow`, `AsyncBatchFlow` hold one slot on the loop; `AsyncParallelBatchNode` and
  `AsyncParallelBatchFlow` hold none and take one slot of `ctx.budget` per item attempt (per
  child flow run) and one for prep and one for post, so `--max-concurrent` bounds their
  parallelism; when one item fails the adapter cancels the items still running.

This module does not import `pocketflow`: a class can only be a PocketFlow one when the
package is already imported.
"""

from __future__ import annotations

import asyncio
import copy
import copyreg
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, ClassVar, cast

from fanflow.nodes.base import AsyncNode, Node

_adapters: dict[Any, type[Node]] = {}


def adapt(obj: Any) -> Any:
    """The node class the engine runs for a resolved type: `obj` itself, unless it is a
    PocketFlow object the engine cannot drive as a plain node (then its adapter class)."""
    pf = sys.modules.get("pocketflow")
    base = getattr(pf, "BaseNode", None)
    if base is None:
        return obj
    if isinstance(obj, type):
        if not issubclass(obj, base) or _engine_drives(obj, pf):
            return obj
    elif not isinstance(obj, base):
        return obj
    cached = _adapters.get(obj)
    if cached is None:
        cached = _adapters[obj] = _make_adapter(obj, pf)
    return cached


def is_adapter(cls: Any) -> bool:
    return isinstance(cls, _AdapterType)


def _engine_drives(cls: type, pf: Any) -> bool:
    """True when the class keeps PocketFlow's plain `_exec`/`_run`/`_run_async`: the engine's
    own prep → exec → post (with its retries) is then exactly PocketFlow's lifecycle."""
    plain = {
        "_exec": (pf.BaseNode._exec, pf.Node._exec, pf.AsyncNode._exec),
        "_run": (pf.BaseNode._run, pf.AsyncNode._run),
        "_run_async": (None, pf.AsyncNode._run_async),
    }
    return all(getattr(cls, name, None) in impls for name, impls in plain.items())


def _make_adapter(target: Any, pf: Any) -> type[Node]:
    cls: Any = target if isinstance(target, type) else type(target)
    if not issubclass(cls, pf.AsyncNode):
        # `BaseNode._run` is prep → _exec → post: the engine can run those as its three steps
        # (prep and post on the driver, `_exec` wherever the node's executor says)
        base: type[Node] = _SyncSteps if cls._run is pf.BaseNode._run else _SyncRun
    elif issubclass(cls, pf.AsyncParallelBatchNode):
        base = _ParallelBatchNode
    elif issubclass(cls, pf.AsyncParallelBatchFlow):
        base = _ParallelBatchFlow
    else:
        base = _AsyncAdapter
    name = cls.__name__ if target is cls else f"{cls.__name__}Instance"
    doc = (cls.__doc__ or "").strip().split("\n")[0]
    ns = {"target": target, "description": doc or f"PocketFlow {name}", "__module__": __name__}
    return cast("type[Node]", _AdapterType(name, (base,), ns))


class _AdapterType(type):
    """The adapters' metaclass: an adapter pickles as "the adapter of <target>" (a process or
    Dask worker rebuilds it from the PocketFlow class, which pickles by reference)."""


def _adapter_of(target: Any) -> Any:
    return adapt(target)


def _reduce_adapter(cls: Any) -> tuple[Any, tuple[Any]]:
    return _adapter_of, (cls.target,)


copyreg.pickle(_AdapterType, _reduce_adapter)


def _fresh(target: Any) -> Any:
    """A PocketFlow object of its own for one execution: a new instance of a class, a shallow
    copy of an instance (as `Flow._orch` copies each node it runs)."""
    if not isinstance(target, type):
        return copy.copy(target)
    try:
        return target()
    except TypeError as exc:
        raise TypeError(
            f"cannot create PocketFlow {target.__name__}() without arguments ({exc}); "
            "give its constructor defaults, or name a module-level instance as the type"
        ) from exc


def _action(action: Any) -> str | None:
    return action if action is None or isinstance(action, str) else str(action)


class _PocketFlowAdapter:
    """What both adapters share: the PocketFlow object and the params it is given."""

    target: ClassVar[Any]  # the PocketFlow class (or instance) this adapter runs
    params: dict[str, Any]

    def _bind(self) -> Any:
        pf = _fresh(self.target)
        pf.set_params({**(getattr(pf, "params", None) or {}), **self.params})
        self.pf = pf
        return pf

    @classmethod
    def target_name(cls) -> str:
        t = cls.target
        return f"{t.__name__}" if isinstance(t, type) else f"{type(t).__name__} instance"

    def _bound(self) -> Any:
        pf = self.__dict__.get("pf")
        return self._bind() if pf is None else pf  # a remote exec binds its own


class _SyncSteps(_PocketFlowAdapter, Node):
    """A sync PocketFlow node (BatchNode, …): its prep, PocketFlow's `_exec` (item iteration,
    per-item retries and `exec_fallback`) and its post, as the engine's three steps."""

    def prep(self, shared: MutableMapping[str, Any]) -> Any:
        return self._bind().prep(shared)

    def exec(self, prep_res: Any) -> Any:
        return self._bound()._exec(prep_res)

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        return _action(self._bound().post(shared, prep_res, exec_res))


class _SyncRun(_PocketFlowAdapter, Node):
    """A sync PocketFlow flow: `_run(shared)` on the run's thread pool, in one slot."""

    def prep(self, shared: MutableMapping[str, Any]) -> Any:
        self._bind()
        return shared

    def exec(self, prep_res: Any) -> Any:
        pf = self.__dict__.get("pf")
        if pf is None:  # exec without this node's prep: sent to a process or Dask worker
            raise TypeError(
                f"PocketFlow {self.target_name()} runs its nodes against the shared store, so "
                "it runs on the driver: remove `executor` from this node"
            )
        return _action(pf._run(prep_res))

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        return exec_res  # the action PocketFlow returned


class _AsyncAdapter(_PocketFlowAdapter, AsyncNode):
    """An async PocketFlow object: `await _run_async(shared)` on the loop, in one slot."""

    async def prep_async(self, shared: MutableMapping[str, Any]) -> Any:
        self._bind()
        return shared

    async def exec_async(self, prep_res: Any) -> Any:
        return _action(await self.pf._run_async(prep_res))

    async def post_async(
        self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any
    ) -> str | None:
        return exec_res  # the action PocketFlow returned


class _Parallel(_AsyncAdapter):
    """Runs without the leaf's slot; PocketFlow's `asyncio.gather` fan-out takes one slot of
    the global budget per unit of work instead (the methods named in `slotted`)."""

    holds_slot = False
    slotted: ClassVar[tuple[str, ...]] = ()

    async def prep_async(self, shared: MutableMapping[str, Any]) -> Any:
        pf = self._bind()
        self._tasks: set[asyncio.Task[Any]] = set()
        budget = getattr(getattr(self, "ctx", None), "budget", None)
        for name in ("prep_async", "post_async", *self.slotted):
            # an instance attribute: PocketFlow's own `self.<name>(...)` calls reach it
            setattr(pf, name, self._in_slot(budget, getattr(pf, name)))
        return shared

    def _in_slot(
        self, budget: Any, fn: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        tasks = self._tasks

        async def call(*args: Any) -> Any:
            task = asyncio.current_task()
            if task is not None:
                tasks.add(task)  # a gather child: cancelled if a sibling fails
            if budget is None:
                return await fn(*args)
            if not budget.take():
                await budget.wait()
            try:
                return await fn(*args)
            finally:
                budget.release()

        return call

    async def exec_async(self, prep_res: Any) -> Any:
        try:
            return await super().exec_async(prep_res)
        except Exception:
            # gather leaves the other items running when one fails: fail fast instead
            me = asyncio.current_task()
            rest = [t for t in self._tasks if t is not me and not t.done()]
            for task in rest:
                task.cancel()
            await asyncio.gather(*rest, return_exceptions=True)
            raise


class _ParallelBatchNode(_Parallel):
    """AsyncParallelBatchNode: one slot per item attempt (and for its fallback)."""

    slotted = ("exec_async", "exec_fallback_async")


class _ParallelBatchFlow(_Parallel):
    """AsyncParallelBatchFlow: one slot per child flow run (its inner nodes run in it)."""

    slotted = ("_orch_async",)
