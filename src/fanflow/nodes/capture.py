"""Per-thread standard streams for code nodes: what a thread running a code node prints is that
node's `stdout` / `stderr`, and it reads end-of-file from stdin.

While at least one capture is open, `sys.stdout`, `sys.stderr` and `sys.stdin` are proxies. A
proxy routes a thread that has a capture open to that capture, and every other thread to the
stream that was there before, so the host program's own prints (fanflow.run inside another
program) are untouched. When the last capture closes, the streams are put back, unless someone
replaced them meanwhile: then the proxy stays in their chain and only forwards.

Threads a code node starts itself are not its thread: their output goes to the real streams.
"""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any

_get_ident = threading.get_ident
# thread ident → (what it wrote to stdout, to stderr), while it captures
_CAPTURES: dict[int, tuple[list[str], list[str]]] = {}
_lock = threading.Lock()
_open = 0  # open captures
# The proxies last installed (stdout, stderr, stdin), reused while they wrap the same streams:
# a new proxy per capture costs more than the code node it captures.
_proxies: tuple[_Writer, _Writer, _Reader] | None = None


def begin() -> None:
    """Open a capture for the calling thread."""
    global _open
    ident = _get_ident()
    with _lock:
        _CAPTURES[ident] = ([], [])
        _open += 1
        if _open == 1:
            _install()


def end() -> tuple[str, str]:
    """Close the calling thread's capture: (what it wrote to stdout, to stderr)."""
    global _open
    ident = _get_ident()
    with _lock:
        out, err = _CAPTURES.pop(ident, ((), ()))
        _open -= 1
        if _open == 0 and _proxies is not None:  # put back what was there, unless replaced
            if sys.stdout is _proxies[0]:
                sys.stdout = _proxies[0].target
            if sys.stderr is _proxies[1]:
                sys.stderr = _proxies[1].target
            if sys.stdin is _proxies[2]:
                sys.stdin = _proxies[2].target
    return "".join(out), "".join(err)


def _install() -> None:
    global _proxies
    out, err, inp = sys.stdout, sys.stderr, sys.stdin
    p = _proxies
    if p is None or out is not p[0].target or err is not p[1].target or inp is not p[2].target:
        p = _proxies = (_Writer(out, 0), _Writer(err, 1), _Reader(inp))
    sys.stdout, sys.stderr, sys.stdin = p


def capturing() -> bool:
    return _get_ident() in _CAPTURES


class _Proxy:
    __slots__ = ("target",)

    def __init__(self, target: Any) -> None:
        self.target = target

    def isatty(self) -> bool:
        if capturing() or self.target is None:
            return False
        return bool(self.target.isatty())

    def fileno(self) -> int:
        if capturing() or self.target is None:
            raise io.UnsupportedOperation("a code node's standard streams have no file descriptor")
        return int(self.target.fileno())

    def close(self) -> None:
        if not capturing() and self.target is not None:
            self.target.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.target, name)


class _Writer(_Proxy):
    __slots__ = ("_which",)

    def __init__(self, target: Any, which: int) -> None:
        super().__init__(target)
        self._which = which  # 0: stdout, 1: stderr

    def _parts(self) -> list[str] | None:
        capture = _CAPTURES.get(_get_ident())
        return None if capture is None else capture[self._which]

    def write(self, text: str) -> int:
        parts = self._parts()
        if parts is None:
            return self.target.write(text) if self.target is not None else len(text)
        if not isinstance(text, str):
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        parts.append(text)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        if not capturing() and self.target is not None:
            self.target.flush()

    @property
    def buffer(self) -> Any:
        parts = self._parts()
        return self.target.buffer if parts is None else _Bytes(parts)


class _Bytes:
    """`sys.stdout.buffer` of a capturing thread: bytes written land in its capture as text."""

    def __init__(self, parts: list[str]) -> None:
        self._parts = parts

    def write(self, data: bytes) -> int:
        self._parts.append(bytes(data).decode("utf-8", errors="replace"))
        return len(data)

    def flush(self) -> None:
        pass


class _Reader(_Proxy):
    """sys.stdin: a capturing thread reads end-of-file (never the terminal or fanflow's pipe)."""

    __slots__ = ()

    def read(self, size: int = -1) -> str:
        return "" if capturing() else str(self.target.read(size))

    def readline(self, size: int = -1) -> str:
        return "" if capturing() else str(self.target.readline(size))

    def readlines(self, hint: int = -1) -> list[str]:
        return [] if capturing() else list(self.target.readlines(hint))

    def __iter__(self) -> Iterator[str]:
        return iter(()) if capturing() else iter(self.target)

    @property
    def buffer(self) -> Any:
        return io.BytesIO() if capturing() else self.target.buffer
