"""The node contract: PocketFlow's prep → exec → post lifecycle, in a sync and an async flavour.

Sync nodes run on the engine's own thread pool; async nodes run on the event loop. The engine
drives the lifecycle itself (so retries and cancellation are visible and uniform), which is also
why a plain `pocketflow.Node` / `AsyncNode` subclass runs unmodified: only `prep`, `exec`,
`exec_fallback`, `post`, `max_retries` and `wait` (or their `_async` twins) are used.

`shared` is the node's view of the store: reads see the node's own outputs, then the workflow
inputs, then other nodes' namespaces by id; writes land in the node's own namespace only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, MutableMapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from fanflow import templates

if TYPE_CHECKING:
    from fanflow.execute.context import RunContext
    from fanflow.io.limits import LimitRegistry

Scope = Callable[[str], Any]  # a template root name → its value (raises templates.MissingValue)


@dataclass(frozen=True)
class Param:
    """Declared parameter of a node type (drives validation, `fanflow nodes` and the guide)."""

    type: str = "string"  # string|number|integer|boolean|object|array|any
    required: bool = False
    default: Any = None  # documents the default; null given for an optional param means it too
    description: str = ""
    items: tuple[str, ...] = ()  # object/array: the types its values may have (empty: any)
    gt: float | None = None  # number/integer: the value must be greater than this
    ge: float | None = None  # number/integer: … greater than or equal to this
    # An object or array value is passed on as written: `${…}` inside belongs to something else
    # (an inline sub-workflow's own templates), so this workflow neither parses nor renders it.
    # A text value is an ordinary param (it may be a template).
    raw: bool = False


@dataclass(frozen=True)
class ParamProblem:
    """What a node type's `validate_params` hook reports: the message, the param it is about
    (the validator turns it into the field `nodes[i].params.<param>`) and how to fix it."""

    message: str
    param: str | None = None
    hint: str | None = None


class Node:
    """Sync node. Subclasses set `type_name`, `params_spec`, `outputs_spec` and override exec."""

    type_name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    params_spec: ClassVar[dict[str, Param]] = {}
    # Output keys this node type writes; empty means "any key" (custom nodes, code results).
    outputs_spec: ClassVar[dict[str, str]] = {}
    # Default engine retry policy for this type: attempts (1 = no retry) and whether only
    # transient NodeErrors (retryable=True) are retried. Overridden by a node's `retry` config.
    default_attempts: ClassVar[int] = 1
    # The actions `post` can return; None means any (code's `next`, user nodes). The engine adds
    # `error` for every node, when an `error` edge takes a failure. An edge on any other action
    # is a validation error.
    actions: ClassVar[tuple[str, ...] | None] = None
    # False for an async node that only waits on other executions (a sub-workflow): the engine
    # then runs its lifecycle without a slot of the global budget, so nested runs never hold a
    # slot while their leaves queue for one. Such a node takes `self.ctx.budget` slots itself
    # for any work of its own.
    holds_slot: ClassVar[bool] = True
    # True when `exec` may run in another process or on another machine (docs/executors.md):
    # it needs only its params and prep result (never `self.ctx`, the shared store, or the
    # driver's files), and the class, params, prep result and exec result pickle. A run's or a
    # workflow's `executor` moves only such nodes off the driver's threads; a node's own
    # `executor` moves any sync node. Async nodes always run on the driver's loop.
    remote_exec: ClassVar[bool] = False

    ctx: RunContext
    node_id: str
    item: int | None = None  # the batch item's index this execution runs (None: not a batch)

    def __init__(self, max_retries: int = 1, wait: float = 0) -> None:
        self.params: dict[str, Any] = {}
        self.max_retries = max_retries
        self.wait = wait
        self.cur_retry = 0

    # --- hooks the engine calls on the class; no node type is special to the scheduler ---------

    @classmethod
    def render_params(cls, compiled: Any, scope: Scope) -> dict[str, Any]:
        """Turn the node's compiled params (templates parsed at compile time) into the params of
        one execution. Raises templates.MissingValue when a template has no value."""
        rendered = templates.render(compiled, scope)
        return rendered if isinstance(rendered, dict) else {}

    @classmethod
    def validate_params(cls, params: dict[str, Any]) -> list[str | ParamProblem]:
        """Static checks of the node's params (as written, templates unparsed), run by
        `fanflow validate` and before every run. A plain string is a message about the params
        as a whole."""
        return []

    @classmethod
    def validate_in_workflow(
        cls, params: dict[str, Any], workflow: Any
    ) -> list[str | ParamProblem]:
        """Static checks that need the whole workflow (a `fanflow.load.model.Workflow`, whose
        `source` is the file it came from): a sub-workflow's file, an MCP server the workflow
        configures. Reported like `validate_params`."""
        return []

    @classmethod
    def local_names(cls, params: dict[str, Any]) -> tuple[str, ...]:
        """Names the node's own params may read as `${name}` besides the workflow's inputs and
        nodes (the shell's `inputs`, pflow's form); its `render_params` supplies their values."""
        return ()

    @classmethod
    def plan_detail(cls, params: dict[str, Any]) -> str | None:
        """A few words `fanflow plan` shows next to the node (its params as written), e.g. the
        MCP server and tool it calls. None: nothing to add."""
        return None

    @classmethod
    def child_workflow(cls, params: dict[str, Any], workflow: Any) -> Any:
        """The workflow this node runs, compiled, when it runs one (a sub-workflow): `fanflow
        plan` shows its plan under the node. None for other nodes."""
        return None

    @classmethod
    def joins_on_first(cls, params: dict[str, Any]) -> bool:
        """True when the node starts as soon as ONE upstream succeeds (a race), instead of
        waiting for all; upstream work that nothing else needs is then cancelled."""
        return False

    @classmethod
    def resource_keys(cls, params: dict[str, Any], limits: LimitRegistry) -> list[str]:
        """The limit keys one execution uses besides `node:<type>` (which the engine adds for
        every type), e.g. `llm:openai/gpt-4o` or `http:api.example.com`. The engine acquires
        them all before the global budget slot, so no slot is held while waiting."""
        return []

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def prep(self, shared: MutableMapping[str, Any]) -> Any:
        return self.params

    def exec(self, prep_res: Any) -> Any:
        return {}

    def exec_fallback(self, prep_res: Any, exc: Exception) -> Any:
        raise exc

    def post(self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any) -> str | None:
        if isinstance(exec_res, dict):
            shared.update(exec_res)
        return None


class AsyncNode(Node):
    """Async node: the lifecycle is awaited on the engine's event loop (I/O-bound work)."""

    async def prep_async(self, shared: MutableMapping[str, Any]) -> Any:
        return self.params

    async def exec_async(self, prep_res: Any) -> Any:
        return {}

    async def exec_fallback_async(self, prep_res: Any, exc: Exception) -> Any:
        raise exc

    async def post_async(
        self, shared: MutableMapping[str, Any], prep_res: Any, exec_res: Any
    ) -> str | None:
        if isinstance(exec_res, dict):
            shared.update(exec_res)
        return None


def is_async_node(obj: Any) -> bool:
    return hasattr(obj, "exec_async")


class NodeShared(MutableMapping[str, Any]):
    """A node's view of the shared store (see module docstring)."""

    __slots__ = ("_inputs", "_own", "_store")

    def __init__(self, own: dict[str, Any], inputs: dict[str, Any], store: dict[str, dict]):
        self._own = own
        self._inputs = inputs
        self._store = store

    def __getitem__(self, key: str) -> Any:
        if key in self._own:
            return self._own[key]
        if key in self._inputs:
            return self._inputs[key]
        return self._store[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._own[key] = value

    def __delitem__(self, key: str) -> None:
        del self._own[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._own)

    def __len__(self) -> int:
        return len(self._own)

    def update(self, *args: Any, **kwargs: Any) -> None:
        self._own.update(*args, **kwargs)  # writes land in the node's own namespace

    def __contains__(self, key: object) -> bool:
        return key in self._own or key in self._inputs or key in self._store
