"""A local OpenAI-compatible mock server (stdlib asyncio only) for tests, the demo and the bench.

Usage from Python (the server runs its own event loop in a daemon thread)::

    with MockLLMServer(delay=0.5) as srv:
        os.environ["OPENAI_BASE_URL"] = srv.url + "/v1"
        ...
        srv.stats()["max_in_flight"]

From the command line (prints the base URL on one line, then serves until interrupted)::

    python -m fanflow.testing.mockllm --port 0 --delay 0.5

It only binds 127.0.0.1. HTTP/1.1 with keep-alive.

Endpoints
---------
``POST /v1/chat/completions``  OpenAI chat completion. Answers after the delay with the content
    ``"echo: <last user message>"`` and word-count usage. Streaming is not supported (400).
``POST /v1/messages``          the same for the Anthropic Messages API.
``GET  /v1/models``            a one-model list.
``GET|POST /json``             echoes method, path, query, headers (minus authorization) and body.
``GET  /text``                 ``text/plain`` body ``hello from mock``.
``GET  /status/<code>``        answers with that status; ``?retry_after=S`` adds a Retry-After.
``GET  /slow?seconds=S``       answers JSON after S seconds.
``GET  /stats``                ``max_in_flight``, ``in_flight``, ``total``, ``failed_injected``,
    ``delay`` and ``requests``: one record per work request ``{id, path, start, end, status,
    dropped}`` (``time.time()`` seconds; ``dropped`` = the client closed the connection first),
    plus ``model`` for LLM requests.
``POST /control``              JSON ``{"fail_next": N, "fail_status": 429, "retry_after": 1.0,
    "delay": 0.5, "replies": ["text", ...]}`` (all optional): the next N LLM requests fail with
    that status (and Retry-After header when given); ``delay`` changes the default delay;
    ``replies`` scripts the content of the next LLM answers, one per request, in order (then
    back to echoing).
``POST /reset``                clears stats and pending failures.

Per-request delay for the LLM endpoints: header ``X-Mock-Delay: <seconds>``, or the marker
``[delay=<seconds>]`` anywhere in the prompt (useful from workflows, which cannot set headers).
The marker ``[status=<code>]`` in the prompt makes that request fail with that status.

Structured output: a request with OpenAI's ``response_format`` (json_schema) or Anthropic's
forced tool (``tool_choice`` ``{"type": "tool"}``) is answered with a value that satisfies the
schema (strings from the prompt's lines), as JSON content / a ``tool_use`` block. Markers in the
first user message: ``[bad_json=N]`` / ``[mismatch=N]`` make the first N answers of that
conversation unparsable / off-schema (so a repair turn can be tested). Each request's record in
``/stats`` has ``structured`` (the mode or null), ``images`` (image parts received), ``prompt``
(the last user message) and ``system``.

Authentication: with ``api_key=...`` the LLM endpoints answer 401 unless the request carries
that key — and, like real providers, the 401 message quotes the key it got, so tests can check
that callers keep keys out of their own error messages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import threading
import time
from typing import Any
from urllib.parse import parse_qsl, urlsplit

_REASONS = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    408: "Request Timeout",
    429: "Too Many Requests",
    500: "Internal Server Error",
    502: "Bad Gateway",
    503: "Service Unavailable",
}
_DELAY_RE = re.compile(r"\[delay=([0-9.]+)\]")
_STATUS_RE = re.compile(r"\[status=(\d{3})\]")
_WORK_PATHS = ("/v1/chat/completions", "/v1/messages", "/json", "/text", "/status/", "/slow")


class _Request:
    __slots__ = ("body", "headers", "method", "path", "query")

    def __init__(self, method: str, target: str, headers: dict[str, str], body: bytes):
        parts = urlsplit(target)
        self.method = method
        self.path = parts.path
        self.query = dict(parse_qsl(parts.query))
        self.headers = headers
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body or b"null")


class _Conn:
    """A buffered reader that can take back bytes read while watching for a disconnect."""

    def __init__(self, reader: asyncio.StreamReader):
        self.reader = reader
        self.pending = b""

    async def readline(self) -> bytes:
        if self.pending:
            idx = self.pending.find(b"\n")
            if idx >= 0:
                line, self.pending = self.pending[: idx + 1], self.pending[idx + 1 :]
                return line
            head, self.pending = self.pending, b""
            return head + await self.reader.readline()
        return await self.reader.readline()

    async def readexactly(self, n: int) -> bytes:
        head, self.pending = self.pending[:n], self.pending[n:]
        if len(head) < n:
            head += await self.reader.readexactly(n - len(head))
        return head


class _Server:
    """State and handlers; lives on one event loop."""

    def __init__(self, delay: float, api_key: str | None):
        self.default_delay = delay
        self.api_key = api_key
        self.lock = threading.Lock()  # stats are read from other threads
        self.reset()

    def reset(self) -> None:
        with self.lock:
            # Requests still running from before a reset must not count against the new stats.
            self.generation = getattr(self, "generation", 0) + 1
            self.in_flight = 0
            self.max_in_flight = 0
            self.total = 0
            self.failed_injected = 0
            self.fail_next = 0
            self.fail_status = 429
            self.fail_retry_after: float | None = None
            self.replies: list[str] = []
            self.requests: list[dict[str, Any]] = []

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "max_in_flight": self.max_in_flight,
                "in_flight": self.in_flight,
                "total": self.total,
                "failed_injected": self.failed_injected,
                "delay": self.default_delay,
                "requests": [{k: v for k, v in r.items() if k != "task"} for r in self.requests],
            }

    def control(self, cfg: dict[str, Any]) -> dict[str, Any]:
        with self.lock:
            if "fail_next" in cfg:
                self.fail_next = int(cfg["fail_next"])
            if "fail_status" in cfg:
                self.fail_status = int(cfg["fail_status"])
            if "retry_after" in cfg:
                ra = cfg["retry_after"]
                self.fail_retry_after = None if ra is None else float(ra)
            if "delay" in cfg:
                self.default_delay = float(cfg["delay"])
            if "replies" in cfg:
                self.replies = [str(r) for r in cfg["replies"]]
            return {
                "fail_next": self.fail_next,
                "fail_status": self.fail_status,
                "retry_after": self.fail_retry_after,
                "delay": self.default_delay,
            }

    # -- connection handling -------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = _Conn(reader)
        try:
            while True:
                req = await self._read_request(conn)
                if req is None:
                    break
                keep_alive = req.headers.get("connection", "").lower() != "close"
                result = await self._dispatch(req, conn)
                if result is None:  # client went away mid-request
                    break
                status, headers, body = result
                self._write(writer, status, headers, body, keep_alive)
                await writer.drain()
                if not keep_alive:
                    break
        except (ConnectionError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _read_request(self, conn: _Conn) -> _Request | None:
        line = await conn.readline()
        if not line:
            return None
        method, target, _version = line.decode("latin-1").strip().split(" ", 2)
        headers: dict[str, str] = {}
        while True:
            h = await conn.readline()
            if h in (b"\r\n", b"\n", b""):
                break
            name, _, value = h.decode("latin-1").partition(":")
            headers[name.strip().lower()] = value.strip()
        body = b""
        if "content-length" in headers:
            body = await conn.readexactly(int(headers["content-length"]))
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await conn.readline()).split(b";")[0].strip(), 16)
                chunk = await conn.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        return _Request(method, target, headers, body)

    def _write(
        self,
        writer: asyncio.StreamWriter,
        status: int,
        headers: dict[str, str],
        body: bytes,
        keep_alive: bool,
    ) -> None:
        head = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}"]
        headers = {"content-length": str(len(body)), **headers}
        headers["connection"] = "keep-alive" if keep_alive else "close"
        head += [f"{k}: {v}" for k, v in headers.items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    async def _sleep_unless_dropped(self, seconds: float, conn: _Conn) -> bool:
        """Sleep, but return False as soon as the client closes the connection."""
        if seconds <= 0:
            return True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        watch = asyncio.ensure_future(conn.reader.read(1))
        try:
            while True:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    return True
                done, _ = await asyncio.wait({watch}, timeout=remaining)
                if not done:
                    return True
                try:
                    data = watch.result()
                except (ConnectionError, OSError):
                    return False
                if not data:
                    return False  # EOF: the client dropped the request
                conn.pending += data  # a pipelined byte: keep it for the next request
                watch = asyncio.ensure_future(conn.reader.read(1))
        finally:
            if not watch.done():
                watch.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watch

    async def _dispatch(
        self, req: _Request, conn: _Conn
    ) -> tuple[int, dict[str, str], bytes] | None:
        work = req.path.startswith(_WORK_PATHS)
        if not work:
            return self._control_plane(req)
        record: dict[str, Any] = {
            "id": 0,
            "path": req.path,
            "start": time.time(),
            "end": None,
            "status": None,
            "dropped": False,
            "task": asyncio.current_task(),
        }
        generation = self.generation
        with self.lock:
            self.total += 1
            record["id"] = self.total
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self.requests.append(record)
        result: tuple[int, dict[str, str], bytes] | None = None
        try:
            result = await self._work(req, conn)
            return result
        finally:
            with self.lock:
                if generation == self.generation:
                    self.in_flight -= 1
                record["end"] = time.time()
                record["status"] = result[0] if result else None
                record["dropped"] = result is None

    def _control_plane(self, req: _Request) -> tuple[int, dict[str, str], bytes]:
        if req.path == "/stats":
            return _json(200, self.stats())
        if req.path == "/control" and req.method == "POST":
            try:
                return _json(200, self.control(req.json() or {}))
            except (ValueError, TypeError) as exc:
                return _json(400, {"error": f"bad control body: {exc}"})
        if req.path == "/reset" and req.method == "POST":
            self.reset()
            return _json(200, {"ok": True})
        if req.path in ("/", "/health"):
            return _json(200, {"ok": True})
        return _json(404, {"error": {"message": f"no route {req.method} {req.path}"}})

    async def _work(self, req: _Request, conn: _Conn) -> tuple[int, dict[str, str], bytes] | None:
        path = req.path
        if path in ("/v1/chat/completions", "/v1/messages"):
            return await self._llm(req, conn)
        if path == "/json":
            try:
                body: Any = req.json() if req.body else None
            except ValueError:
                body = req.body.decode("utf-8", "replace")
            headers = {k: v for k, v in req.headers.items() if k not in ("authorization",)}
            return _json(
                200,
                {
                    "ok": True,
                    "method": req.method,
                    "path": path,
                    "query": req.query,
                    "headers": headers,
                    "body": body,
                },
            )
        if path == "/text":
            return 200, {"content-type": "text/plain; charset=utf-8"}, b"hello from mock"
        if path.startswith("/status/"):
            try:
                code = int(path.rsplit("/", 1)[1])
            except ValueError:
                return _json(400, {"error": "bad status"})
            extra = {}
            if "retry_after" in req.query:
                extra["retry-after"] = req.query["retry_after"]
            body_text = f"status {code} from mock: " + "x" * 600  # long body: callers excerpt it
            return code, {"content-type": "text/plain", **extra}, body_text.encode()
        if path == "/slow":
            seconds = float(req.query.get("seconds", "1"))
            if not await self._sleep_unless_dropped(seconds, conn):
                return None
            return _json(200, {"ok": True, "slept": seconds})
        return _json(404, {"error": "not found"})

    async def _llm(self, req: _Request, conn: _Conn) -> tuple[int, dict[str, str], bytes] | None:
        anthropic = req.path == "/v1/messages"
        if req.method != "POST":
            return _json(405, {"error": {"message": "use POST"}})
        presented = req.headers.get("x-api-key") or req.headers.get(
            "authorization", ""
        ).removeprefix("Bearer ")
        if self.api_key is not None and presented != self.api_key:
            return _json(
                401,
                {
                    "error": {
                        "message": f"Incorrect API key provided: {presented}.",
                        "type": "invalid_request_error",
                        "code": "invalid_api_key",
                    }
                },
            )
        try:
            payload = req.json() or {}
        except ValueError:
            return _json(400, {"error": {"message": "body is not JSON"}})
        if payload.get("stream"):
            return _json(400, {"error": {"message": "the mock does not stream"}})
        model = str(payload.get("model", "mock"))
        with self.lock:
            for rec in reversed(self.requests):  # tag this request's record for tests
                if rec.get("task") is asyncio.current_task():
                    rec["model"] = model
                    break
        messages = payload.get("messages") or []
        prompt = _last_user_text(messages)
        system = payload.get("system") if anthropic else _system_text(messages)

        delay = self.default_delay
        if "x-mock-delay" in req.headers:
            delay = float(req.headers["x-mock-delay"])
        m = _DELAY_RE.search(prompt)
        if m:
            delay = float(m.group(1))

        injected: tuple[int, float | None] | None = None
        with self.lock:
            if self.fail_next > 0:
                self.fail_next -= 1
                self.failed_injected += 1
                injected = (self.fail_status, self.fail_retry_after)
        m = _STATUS_RE.search(prompt)
        if injected is None and m:
            injected = (int(m.group(1)), None)
        if injected is not None:
            status, retry_after = injected
            headers = {"content-type": "application/json"}
            if retry_after is not None:
                headers["retry-after"] = _fmt_seconds(retry_after)
            body = {"error": {"message": f"mock injected status {status}", "type": "mock_error"}}
            return status, headers, json.dumps(body).encode()

        if not await self._sleep_unless_dropped(delay, conn):
            return None
        structured, schema = _structured(payload, anthropic)
        with self.lock:
            for rec in reversed(self.requests):
                if rec.get("task") is asyncio.current_task():
                    rec["structured"] = structured
                    rec["images"] = _image_count(messages)
                    rec["prompt"] = prompt  # the last user message
                    rec["system"] = system
                    break
        text = f"echo: {prompt}"
        with self.lock:
            scripted = self.replies.pop(0) if self.replies else None
        value: Any = None
        if scripted is not None:
            text, structured = scripted, None
        elif structured:
            value, text = _structured_answer(messages, schema, anthropic)
        tokens_in = len(prompt.split()) + len(str(system or "").split())
        tokens_out = len(text.split())
        if anthropic:
            if structured and value is not None:
                content: list[dict[str, Any]] = [
                    {"type": "tool_use", "id": "toolu_mock", "name": structured_tool(payload),
                     "input": value}
                ]  # fmt: skip
            else:
                content = [{"type": "text", "text": text}]
            return _json(
                200,
                {
                    "id": "msg_mock",
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": content,
                    "stop_reason": "tool_use" if structured and value is not None else "end_turn",
                    "stop_sequence": None,
                    "usage": {"input_tokens": tokens_in, "output_tokens": tokens_out},
                },
            )
        return _json(
            200,
            {
                "id": "chatcmpl-mock",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": text},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": tokens_in,
                    "completion_tokens": tokens_out,
                    "total_tokens": tokens_in + tokens_out,
                },
            },
        )


_BAD_JSON_RE = re.compile(r"\[bad_json=(\d+)\]")
_MISMATCH_RE = re.compile(r"\[mismatch=(\d+)\]")


def _structured(payload: dict[str, Any], anthropic: bool) -> tuple[str | None, Any]:
    """Which native structured-output mode the request asked for, and its schema."""
    if anthropic:
        tools = payload.get("tools") or []
        choice = payload.get("tool_choice") or {}
        if tools and choice.get("type") == "tool":
            tool = next((t for t in tools if t.get("name") == choice.get("name")), tools[0])
            return "tool", tool.get("input_schema") or {}
        return None, None
    fmt = payload.get("response_format") or {}
    if fmt.get("type") == "json_schema":
        return "json_schema", (fmt.get("json_schema") or {}).get("schema") or {}
    if fmt.get("type") == "json_object":
        return "json_object", {}
    return None, None


def structured_tool(payload: dict[str, Any]) -> str:
    return str((payload.get("tool_choice") or {}).get("name") or "output")


def _structured_answer(messages: list[Any], schema: Any, anthropic: bool) -> tuple[Any, str]:
    """A value satisfying the schema, built from the first user message — unless that message
    asks for failures: ``[bad_json=N]`` / ``[mismatch=N]`` make the first N answers of the
    conversation (counted by the assistant turns already in it) unparsable / off-schema."""
    from fanflow.io.schema import synthesize

    first = next(
        (_content_text(m.get("content")) for m in messages
         if isinstance(m, dict) and m.get("role") == "user"),
        "",
    )  # fmt: skip
    turn = sum(1 for m in messages if isinstance(m, dict) and m.get("role") == "assistant")
    m = _BAD_JSON_RE.search(first)
    if m and turn < int(m.group(1)):
        return None, 'Sure! Here is the JSON you asked for: {"oops": '
    m = _MISMATCH_RE.search(first)
    if m and turn < int(m.group(1)):
        value: Any = {"unexpected": True} if anthropic else []
        return value, json.dumps(value)
    value = synthesize(schema if isinstance(schema, dict) else {}, first)
    return value, json.dumps(value)


def _image_count(messages: list[Any]) -> int:
    count = 0
    for m in messages:
        content = m.get("content") if isinstance(m, dict) else None
        if isinstance(content, list):
            count += sum(
                1
                for p in content
                if isinstance(p, dict) and p.get("type") in ("image_url", "image")
            )
    return count


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _last_user_text(messages: list[Any]) -> str:
    for msg in reversed(messages):
        if isinstance(msg, dict) and msg.get("role") == "user":
            return _content_text(msg.get("content"))
    return ""


def _system_text(messages: list[Any]) -> str:
    return " ".join(
        _content_text(m.get("content"))
        for m in messages
        if isinstance(m, dict) and m.get("role") in ("system", "developer")
    )


def _json(status: int, obj: Any) -> tuple[int, dict[str, str], bytes]:
    return status, {"content-type": "application/json"}, json.dumps(obj).encode()


class MockLLMServer:
    """Run the mock on 127.0.0.1 in a background thread with its own event loop."""

    def __init__(self, delay: float = 0.0, port: int = 0, api_key: str | None = None):
        self._state = _Server(delay, api_key)
        self._port = port
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> MockLLMServer:
        ready = threading.Event()
        error: list[BaseException] = []

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._state.handle, "127.0.0.1", self._port, backlog=2048)
                )
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                error.append(exc)
                ready.set()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                self._server.close()
                for task in asyncio.all_tasks(loop):
                    task.cancel()
                with contextlib.suppress(Exception):
                    loop.run_until_complete(asyncio.sleep(0))
                loop.close()

        self._thread = threading.Thread(target=run, name="mockllm", daemon=True)
        self._thread.start()
        ready.wait()
        if error:
            raise error[0]
        return self

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MockLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # In-process equivalents of /stats, /control and /reset.
    def stats(self) -> dict[str, Any]:
        return self._state.stats()

    def control(self, **cfg: Any) -> dict[str, Any]:
        return self._state.control(cfg)

    def reset(self) -> None:
        self._state.reset()


async def _serve_forever(port: int, delay: float, api_key: str | None) -> None:
    state = _Server(delay, api_key)
    server = await asyncio.start_server(state.handle, "127.0.0.1", port, backlog=2048)
    print(f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fanflow.testing.mockllm",
        description="OpenAI-compatible mock LLM server on 127.0.0.1 (prints its URL).",
    )
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--api-key", default=None, help="require this key (else any key)")
    args = parser.parse_args(argv)
    try:
        asyncio.run(_serve_forever(args.port, args.delay, args.api_key))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
