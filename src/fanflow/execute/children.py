"""Child processes: each runs in its own process group, and none outlives fanflow.

`spawn` starts a child in a new session (its pgid is its pid, so `killpg` reaches every
descendant that stays in the group) and `kill_group` stops it: SIGTERM to the group, SIGKILL to
the group as soon as the leader has exited (so no grandchild survives it) or after the grace
period. That covers every way a run ends while fanflow is alive (cancellation, a signal, a
timeout, fail-fast).

For the ways fanflow can die without running any code (SIGKILL, the OOM killer, a second signal),
one small **supervisor** process per fanflow process is started at the first spawn
(`python -I -S -c`, in its own session, holding the read end of a pipe whose write end only
fanflow holds). Fanflow tells it, one line each, which child leads which group and which child
is done. When the pipe reaches EOF — fanflow is gone, however it died — the supervisor SIGKILLs
the group of every child not done. A child is tagged before it starts (`FANFLOW_CHILD=<token>:<id>`
in its environment), so a child that fanflow died too early to register is found too, by reading
/proc/*/environ. A clean exit says so (`x`) and skips that scan. Measured costs and the reasons
for this design (no `preexec_fn`, no PR_SET_PDEATHSIG): docs/durable-runs.md.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import itertools
import os
import secrets
import signal
import sys
import threading
from typing import Any

TAG_VAR = "FANFLOW_CHILD"
KILL_GRACE_SECONDS = 2.0
_POLL_SECONDS = 0.02

# The supervisor: reads `g <id> <pgid>` (child <id> leads group <pgid>), `d <id>` (done) and
# `x` (fanflow exits cleanly) from stdin; at EOF it SIGKILLs the group of every child not done.
_SUPERVISOR = r"""
import os, sys, _signal as signal  # not `signal`: importing it (and enum) doubles start-up
for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
    signal.signal(s, signal.SIG_IGN)
mark = sys.argv[2].encode()  # FANFLOW_CHILD=<token>:
groups, done, buf, clean = {}, set(), b"", False
while chunk := os.read(0, 1 << 16):
    *lines, buf = (buf + chunk).split(b"\n")
    for line in lines:
        kind, *args = line.split() or [b""]
        if kind == b"g":
            groups[int(args[0])] = int(args[1])
        elif kind == b"d":
            groups.pop(int(args[0]), None)
            done.add(int(args[0]))
        elif kind == b"x":
            clean = True
targets = set(groups.values())
if not clean:
    for pid in os.listdir("/proc") if os.path.isdir("/proc") else ():
        try:
            with open(f"/proc/{pid}/environ", "rb") as f:
                tags = [e for e in f.read().split(b"\0") if e.startswith(mark)]
            child = int(tags[0][len(mark):]) if tags else None
            if child is not None and child not in done and child not in groups:
                targets.add(os.getpgid(int(pid)))  # started, but fanflow died before `g`
        except (OSError, ValueError):
            pass
targets.discard(os.getpgid(0))
for pgid in targets:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except OSError:
        pass
"""


class _Supervisor:
    """The write end of the supervisor's pipe (one per fanflow process, started lazily)."""

    def __init__(self) -> None:
        self.owner = os.getpid()
        self.token = f"{self.owner}-{secrets.token_hex(4)}"
        self.live: set[int] = set()  # children tagged and not done (registered or about to be)
        read, self.fd = os.pipe()  # both close-on-exec: no child inherits the write end
        env = {k: v for k, v in os.environ.items() if k != TAG_VAR}
        mark = f"{TAG_VAR}={self.token}:"
        argv = [sys.executable, "-I", "-S", "-c", _SUPERVISOR, "fanflow-supervisor", mark]
        try:
            self.pid: int | None = os.posix_spawn(
                sys.executable, argv, env, setsid=True,
                file_actions=[(os.POSIX_SPAWN_DUP2, read, 0),
                              (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                              (os.POSIX_SPAWN_DUP2, 1, 2)],
            )  # fmt: skip
        except OSError:  # children still die with their group on every exit but a hard one
            self.pid = None
        finally:
            os.close(read)
        if self.pid is not None:
            atexit.register(self.close)

    def send(self, line: str) -> None:
        if self.pid is None:
            return
        try:
            os.write(self.fd, line.encode() + b"\n")  # < PIPE_BUF: atomic across threads
        except OSError:  # the supervisor died: carry on without it (a new one at next spawn)
            self.pid = None

    def close(self) -> None:
        """At a clean exit: nothing is left to kill unless a child is still live."""
        if not self.live:
            self.send("x")
        with contextlib.suppress(OSError):
            os.close(self.fd)


_lock = threading.Lock()
_current: _Supervisor | None = None
_ids = itertools.count(1)
_watchers: set[asyncio.Task[None]] = set()


def _supervisor() -> _Supervisor:
    global _current
    with _lock:
        sup = _current
        if sup is None or sup.pid is None or sup.owner != os.getpid():  # none, dead or forked
            sup = _current = _Supervisor()
        return sup


async def spawn(program: str, *args: str, env: dict[str, str] | None = None,
                **kwargs: Any) -> asyncio.subprocess.Process:  # fmt: skip
    """`asyncio.create_subprocess_exec` in a new session, supervised until it is done (it has
    exited and its pipes are closed). Cancelled while the process is being set up, it kills the
    process's group before re-raising, so no half-started child is left behind."""
    sup = _supervisor()
    child = next(_ids)
    sup.live.add(child)
    env = {**(os.environ if env is None else env), TAG_VAR: f"{sup.token}:{child}"}
    creating = asyncio.ensure_future(asyncio.create_subprocess_exec(
        program, *args, env=env, start_new_session=True, **kwargs))  # fmt: skip
    try:
        proc = await asyncio.shield(creating)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # a failed start has nothing to kill
            await kill_group(await creating)
        _done(sup, child)
        raise
    except BaseException:
        _done(sup, child)
        raise
    sup.send(f"g {child} {proc.pid}")
    watcher = asyncio.ensure_future(_release_when_done(sup, child, proc))
    _watchers.add(watcher)
    watcher.add_done_callback(_watchers.discard)
    return proc


async def _release_when_done(
    sup: _Supervisor, child: int, proc: asyncio.subprocess.Process
) -> None:
    await proc.wait()  # the process has exited (a descendant may still hold its pipes)
    _done(sup, child)


def _done(sup: _Supervisor, child: int) -> None:
    if child in sup.live:
        sup.live.discard(child)
        sup.send(f"d {child}")


async def kill_group(proc: asyncio.subprocess.Process, grace: float = KILL_GRACE_SECONDS) -> None:
    """SIGTERM the process's group; SIGKILL the group once the leader has exited (so that no
    grandchild outlives it) or after `grace` seconds; then wait (boundedly) for its pipes."""
    _killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.shield(_leader_exit(proc, grace))
    _killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(TimeoutError, asyncio.CancelledError):
        await asyncio.shield(asyncio.wait_for(_gone(proc), grace))


async def _gone(proc: asyncio.subprocess.Process) -> None:
    """The process has exited and its output pipes are at their end. `proc.wait()` alone
    returns as soon as the leader is reaped, while a killed grandchild may still hold the
    pipes: a run ending then would close the loop under them ("Event loop is closed" from the
    transport's __del__)."""
    await proc.wait()
    for stream in (proc.stdout, proc.stderr):
        if stream is not None:
            while await stream.read(1 << 16):
                pass


async def _leader_exit(proc: asyncio.subprocess.Process, grace: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while proc.returncode is None and loop.time() < deadline:
        await asyncio.sleep(_POLL_SECONDS)


def _killpg(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)
