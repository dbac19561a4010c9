"""One MCP client session per server per run, shared by every node and batch item of the run.

A session is opened lazily by the first call that needs it (concurrent first calls wait for the
same opening), multiplexes every concurrent call over one connection, and is closed when the run
ends, whether it succeeded or not (`RunContext.on_close`). Each session lives in an owner task of
its own: the SDK's client is an anyio context (task groups, cancel scopes) that must be entered
and left by the same task, while the calls come from many node tasks.

A transport error (the connection closed, the server process died, an HTTP connection failed)
evicts the session; the call is retried once on a fresh session, and a second transport error is
the node's failure, with the real message dug out of the SDK's ExceptionGroups.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from fanflow.errors import NodeError
from fanflow.mcp.config import ServerTarget

if TYPE_CHECKING:
    from mcp import Client
    from mcp.types import CallToolResult, Tool

CLIENT_KEY = "mcp"
CLOSE_TIMEOUT = 5.0  # seconds a closing session may take before its owner task is cancelled


def leaves(exc: BaseException) -> Iterator[BaseException]:
    """The exceptions inside (nested) exception groups, the group itself when it is not one."""
    if isinstance(exc, BaseExceptionGroup):
        for sub in exc.exceptions:
            yield from leaves(sub)
    else:
        yield exc


def describe_error(exc: BaseException) -> str:
    """The real message of an SDK error: the first meaningful leaf of its exception groups."""
    found = [e for e in leaves(exc) if not isinstance(e, asyncio.CancelledError)] or [exc]
    first = found[0]
    text = str(first).strip()
    name = type(first).__name__
    if not text:
        return name
    return text if name in ("MCPError", "NodeError") else f"{name}: {text}"


def is_transport_error(exc: BaseException) -> bool:
    """True when the connection, not the tool, failed: worth one more try on a fresh session."""
    import anyio
    from mcp.shared.exceptions import MCPError
    from mcp.types import CONNECTION_CLOSED

    for e in leaves(exc):
        if isinstance(e, MCPError):
            if e.code == CONNECTION_CLOSED:
                return True
            continue
        if isinstance(e, (anyio.ClosedResourceError, anyio.BrokenResourceError, anyio.EndOfStream,
                          ConnectionError, EOFError)):  # fmt: skip
            return True
        try:
            import httpx2
        except ImportError:  # pragma: no cover - httpx2 comes with mcp
            continue
        if isinstance(e, httpx2.TransportError):
            return True
    return False


class McpTransportError(NodeError):
    """The server could not be reached or went away, after the one retry."""


class _Session:
    """One open client session and the task that owns it."""

    def __init__(self, target: ServerTarget) -> None:
        self.target = target
        self.client: Client | None = None
        self.tools: list[Tool] | None = None
        self._ready: asyncio.Future[Client] = asyncio.get_running_loop().create_future()
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._own(), name=f"fanflow-mcp-{target.name}")
        self.dead = False

    async def ready(self) -> Client:
        return await asyncio.shield(self._ready)

    async def _own(self) -> None:
        from mcp import Client, StdioServerParameters

        t = self.target
        try:
            async with contextlib.AsyncExitStack() as stack:
                server: Any
                if t.command is not None:
                    server = StdioServerParameters(
                        command=t.command, args=list(t.args), env=dict(t.env) or None, cwd=t.cwd
                    )
                elif t.headers:
                    from mcp.client.streamable_http import streamable_http_client
                    from mcp.shared._httpx_utils import create_mcp_http_client

                    http = await stack.enter_async_context(
                        create_mcp_http_client(headers=dict(t.headers))
                    )
                    server = streamable_http_client(t.url or "", http_client=http)
                else:
                    server = t.url
                client = await stack.enter_async_context(Client(server))
                self.client = client
                self._ready.set_result(client)
                await self._stop.wait()
        except BaseException as exc:
            self.dead = True
            if not self._ready.done():
                self._ready.set_exception(_open_error(t, exc))
            if isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self.dead = True
            if not self._ready.done():  # pragma: no cover - defensive
                self._ready.set_exception(NodeError(f"mcp server '{t.name}' closed"))

    async def close(self) -> None:
        self._stop.set()
        self.dead = True
        try:
            await asyncio.wait_for(asyncio.shield(self._task), CLOSE_TIMEOUT)
        except TimeoutError:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        except BaseException:
            pass
        if not self._ready.done():
            self._ready.cancel()
        elif not self._ready.cancelled():
            self._ready.exception()  # retrieved: no "exception never retrieved" noise


def _open_error(target: ServerTarget, exc: BaseException) -> NodeError:
    message = describe_error(exc)
    hint = ""
    if target.command is not None and any(isinstance(e, FileNotFoundError) for e in leaves(exc)):
        hint = f" (is '{target.command}' installed and on PATH?)"
    return McpTransportError(
        f"mcp server '{target.name}' ({target.describe()}) could not be started or reached: "
        f"{message}{hint}"
    )


class McpPool:
    """The run's MCP sessions, by server (see the module docstring)."""

    def __init__(self) -> None:
        self._sessions: dict[str, _Session] = {}
        self._closing: set[asyncio.Task[None]] = set()  # evicted sessions being closed
        self._closed = False
        self.opened = 0  # sessions opened over the run (tests and the benchmark read it)

    def _session(self, target: ServerTarget) -> _Session:
        if self._closed:
            raise NodeError("the run is over: its MCP sessions are closed")
        session = self._sessions.get(target.key)
        if session is None or session.dead:
            session = self._sessions[target.key] = _Session(target)
            self.opened += 1
        return session

    def _evict(self, session: _Session) -> None:
        if self._sessions.get(session.target.key) is session:
            del self._sessions[session.target.key]
        session.dead = True
        task = asyncio.get_running_loop().create_task(session.close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def call_tool(
        self,
        target: ServerTarget,
        tool: str,
        arguments: dict[str, Any],
        timeout: float | None = None,
    ) -> CallToolResult:
        """Call `tool` on the server's session; one retry on a fresh session after a transport
        error. Raises NodeError (a timeout is retryable, as the engine's retry policy sees it)."""
        for attempt in (1, 2):
            session = self._session(target)
            try:
                client = await session.ready()
                if timeout is None:
                    return await client.call_tool(tool, arguments)
                async with asyncio.timeout(timeout):
                    return await client.call_tool(tool, arguments)
            except TimeoutError:
                raise NodeError(
                    f"mcp tool '{tool}' on server '{target.name}' timed out after {timeout:g}s",
                    retryable=True,
                ) from None
            except McpTransportError:
                self._evict(session)
                if attempt == 2:
                    raise
            except Exception as exc:
                if not is_transport_error(exc):
                    raise NodeError(
                        f"mcp tool '{tool}' on server '{target.name}': {describe_error(exc)}"
                    ) from None
                self._evict(session)
                if attempt == 2:
                    raise McpTransportError(
                        f"mcp server '{target.name}' failed during tool '{tool}' (also on a "
                        f"fresh session): {describe_error(exc)}"
                    ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def list_tools(self, target: ServerTarget) -> list[Tool]:
        """The server's tools (listed once per session)."""
        session = self._session(target)
        try:
            client = await session.ready()
            if session.tools is None:
                session.tools = list((await client.list_tools()).tools)
            return session.tools
        except NodeError:
            self._evict(session)
            raise
        except Exception as exc:
            self._evict(session)
            raise McpTransportError(
                f"mcp server '{target.name}': cannot list its tools: {describe_error(exc)}"
            ) from None

    async def aclose(self) -> None:
        """Close every session (the run's end, success or not)."""
        self._closed = True
        sessions = list(self._sessions.values())
        self._sessions.clear()
        await asyncio.gather(*(s.close() for s in sessions), *self._closing,
                             return_exceptions=True)  # fmt: skip


def get_pool(ctx: Any) -> McpPool:
    """The run's pool, created on first use; closed with the run (`ctx.on_close`)."""
    pool = ctx.clients.get(CLIENT_KEY)
    if pool is None:
        pool = ctx.clients[CLIENT_KEY] = McpPool()
        ctx.on_close(pool.aclose)
    return pool
