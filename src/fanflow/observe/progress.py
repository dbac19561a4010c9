"""Live progress on stderr, fed by the event stream.

- A TTY gets a rich Live display: the nodes running right now, elapsed time, batch bars with
  `done/total ✓ ok ✗ failed`, retries; finished nodes scroll above it as plain lines.
- Anything else (pipes, CI logs, TERM=dumb) gets plain lines as things happen — rich on a non-TTY
  prints only the final frame, which would leave a CI log silent for the whole run.
- quiet → a listener that does nothing.

Listeners run on the event-loop thread and must be cheap (a 10,000-node chain emits 20,000
events). The plain listener counts each event as it comes and keeps no reference to it (a
recording of Event objects is what made the garbage collector walk the heap); the lines it makes
reach the stream together at most every `COALESCE_S` through the running loop (immediately when
there is no loop: tests, sync callers). Routine lines (a start, a success, a
skip) are capped at `ROUTINE_LINES_PER_S` per second of run time; beyond that they are counted
and said in one line per second (`… 2,490 started, 2,490 ok (2,500/10,000 done, 1 running: n2500)`).
Failures, cancellations, retries and batch counts are always written.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, TextIO

from fanflow.events import (
    ITEM_FINISHED,
    ITEM_STARTED,
    NODE_FINISHED,
    NODE_RETRY,
    NODE_SKIPPED,
    NODE_STARTED,
    RUN_FINISHED,
    RUN_STARTED,
    Event,
    Listener,
)
from fanflow.status import CANCELLED, FAILED, SUCCESS

COALESCE_S = 0.05  # lines reach the stream at most this late; a person cannot tell
BATCH_LINE_EVERY_S = 1.0  # non-TTY: at most one progress line per batch per second
ROUTINE_LINES_PER_S = 30  # non-TTY: start/success/skip lines per second of run time, then counts
ERROR_CHARS = 200

UNICODE_GLYPHS = {
    "start": "▶",
    "ok": "✓",
    "fail": "✗",
    "skip": "↷",
    "retry": "↻",
    "cancel": "⊘",
    "more": "…",
}
ASCII_GLYPHS = {
    "start": ">",
    "ok": "ok",
    "fail": "FAIL",
    "skip": "skip",
    "retry": "retry",
    "cancel": "cancelled",
    "more": "...",
}


def make_progress(
    stream: TextIO | None = None, quiet: bool = False, tty: bool | None = None
) -> Listener:
    """The progress listener for `stream` (default stderr). `tty` overrides detection."""
    if quiet:
        return NullProgress()
    stream = stream if stream is not None else sys.stderr
    if tty is None:
        tty = _is_tty(stream)
    if tty:
        return LiveProgress(stream)
    return PlainProgress(stream)


def _is_tty(stream: TextIO) -> bool:
    if os.environ.get("TERM") == "dumb":
        return False
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


def _glyphs_for(stream: TextIO) -> dict[str, str]:
    # A log captured with LANG=C has an ASCII stream: a ✓ would raise UnicodeEncodeError.
    encoding = getattr(stream, "encoding", None) or "utf-8"
    try:
        "".join(UNICODE_GLYPHS.values()).encode(encoding)
    except (UnicodeEncodeError, LookupError):
        return ASCII_GLYPHS
    return UNICODE_GLYPHS


def fmt_duration(seconds: float) -> str:
    if seconds < 0.01:
        return f"{seconds * 1000:.1f}ms"
    if seconds < 60:
        return f"{seconds:.2f}s"
    minutes, sec = divmod(seconds, 60)
    return f"{int(minutes)}m{sec:04.1f}s"


def _first_line(error: Any) -> str:
    text = str(error).strip()
    line = text.splitlines()[0] if text else "error"
    return line if len(line) <= ERROR_CHARS else line[: ERROR_CHARS - 1] + "…"


class NullProgress:
    def on_event(self, event: Event) -> None:
        pass

    def close(self) -> None:
        pass


def _later(delay: float, callback: Callable[[], None]) -> bool:
    """Call `callback` after `delay` on the running loop; False when no loop runs here."""
    try:
        loop = asyncio.get_running_loop()
    except RuntimeError:
        return False
    loop.call_later(delay, callback)
    return True


class _Batch:
    __slots__ = ("cached", "done", "failed", "last_line", "ok", "retries", "running", "total")

    def __init__(self, total: int | None, t: float):
        self.total = total
        self.done = self.ok = self.failed = self.running = self.retries = self.cached = 0
        self.last_line = t


def _cached(outputs: Any) -> bool:
    """An llm node's outputs that came from the response cache (`llm_usage.cached`)."""
    usage = outputs.get("llm_usage") if isinstance(outputs, dict) else None
    return isinstance(usage, dict) and usage.get("cached") is True


class _LineSink:
    """Buffered lines, emitted together soon after they were produced (see module docstring)."""

    def __init__(self, emit: Any):
        self._emit = emit  # callable(list) doing the actual output
        self._buf: list[Any] = []
        self._scheduled = False
        self.broken = False

    def add(self, line: Any) -> None:
        if self.broken:
            return
        self._buf.append(line)
        if self._scheduled:
            return
        if not _later(COALESCE_S, self.flush):
            self.flush()
            return
        self._scheduled = True

    def flush(self) -> None:
        self._scheduled = False
        if not self._buf or self.broken:
            return
        lines, self._buf = self._buf, []
        try:
            self._emit(lines)
        except (OSError, ValueError):  # broken pipe / closed stream: progress must not fail a run
            self.broken = True


class _ProgressBase:
    """Node/batch bookkeeping shared by both renderings; subclasses turn it into output.

    Routine lines go through `_take(t)`: the plain listener gives each second of run time a budget
    of them and counts the rest (`held`), said in one line when the second is over."""

    window_s = float("inf")  # the live display shows everything: one endless window
    lines_per_window = sys.maxsize

    def __init__(self, glyphs: dict[str, str]):
        self.g = glyphs
        self.t0: float | None = None
        self.total_nodes: int | None = None
        self.running: dict[str, float] = {}  # node -> start t, insertion order = start order
        self.batches: dict[str, _Batch] = {}
        self.done = self.failed = self.skipped = self.retries = 0
        self.window_end = float("-inf")
        self.budget = 0  # routine lines left in this window
        self.held = [0, 0, 0, 0]  # routine lines not written: started, ok, skipped, resumed

    def _line(self, line: str, style: str | None = None) -> None:
        raise NotImplementedError

    def _take(self, t: float) -> bool:
        """May a routine line at time `t` be written? If not, the caller counts it in `held`."""
        if t >= self.window_end:
            self._say_held()
            self.window_end = t + self.window_s
            self.budget = self.lines_per_window
        if self.budget > 0:
            self.budget -= 1
            return True
        return False

    def _say_held(self) -> None:
        held = self.held
        if not any(held):
            return
        parts = [
            f"{n:,} {word}"
            for n, word in zip(held, ("started", "ok", "skipped", "resumed"), strict=True)
            if n
        ]
        self.held = [0, 0, 0, 0]
        done = f"{self.done:,}" + (f"/{self.total_nodes:,}" if self.total_nodes else "")
        running = ""
        if self.running:
            names = list(self.running)[:3]
            more = len(self.running) - len(names)
            running = ": " + ", ".join(names) + (f" +{more:,}" if more else "")
        self._line(
            f"{self.g['more']} {', '.join(parts)} ({done} done, "
            f"{len(self.running):,} running{running})",
            "dim",
        )

    def _batch_line(self, node: str, b: _Batch) -> str:
        total = "?" if b.total is None else str(b.total)
        cached = f" ({b.cached} cached)" if b.cached else ""
        return f"{node} {b.done}/{total} {self.g['ok']}{b.ok} {self.g['fail']}{b.failed}{cached}"

    def handle(self, e: Event) -> None:
        kind = e.kind
        g = self.g
        if e.node is not None and "/" in e.node and kind != NODE_RETRY:
            # A sub-workflow's node: its parent's line stands for it; only a failure is shown,
            # as the cause the parent's failure line quotes.
            d = e.data
            if kind == NODE_FINISHED and d.get("status") == FAILED and not d.get("handled"):
                err = _first_line(d.get("error")) if d.get("error") else FAILED
                self._line(f"{g['fail']} {e.node}: {err}", "red")
            return
        if kind == ITEM_FINISHED:
            b = self.batches.get(e.node)  # type: ignore[arg-type]
            if b is None:
                return
            b.done += 1
            b.running -= 1
            status = e.data.get("status")
            if status == SUCCESS:
                b.ok += 1
                b.cached += _cached(e.data.get("result"))
            elif status == FAILED:
                b.failed += 1
            self._item_finished(e.node, b, e.t)  # type: ignore[arg-type]
        elif kind == ITEM_STARTED:
            b = self.batches.get(e.node)  # type: ignore[arg-type]
            if b is None:  # items without a batch start event: track them anyway
                b = self.batches[e.node] = _Batch(None, e.t)  # type: ignore[index]
            b.running += 1
        elif kind == NODE_FINISHED:
            node = e.node or "?"
            d = e.data
            if d.get("resumed"):
                self.done += 1
                if self._take(e.t):
                    self._line(f"{g['ok']} {node} (resumed: completed by an earlier run)", "dim")
                else:
                    self.held[3] += 1
                return
            start = self.running.pop(node, None)
            status = d.get("status")
            self.done += 1
            b = self.batches.pop(node, None)
            # A flood's usual event: counted, not formatted (the budget test inlined).
            if (
                b is None
                and status == SUCCESS
                and ((e.t < self.window_end and self.budget <= 0) or not self._take(e.t))
            ):
                self.held[1] += 1
                return
            if b is not None:
                self._line(self._batch_line(node, b), "dim")
            dur = fmt_duration(e.t - start) if start is not None else "-"
            attempts = d.get("attempts")
            note = f" ({attempts} attempts)" if isinstance(attempts, int) and attempts > 1 else ""
            action = d.get("action")
            if action and action != "default" and status == SUCCESS:
                note += f" -> {action}"
            if b is None and status == SUCCESS and _cached(d.get("outputs")):
                note += " cached"
            if status == SUCCESS:
                self._line(f"{g['ok']} {node} {dur}{note}", "green")
            elif status == CANCELLED:
                self._line(f"{g['cancel']} {node} {dur} cancelled", "yellow")
            else:
                self.failed += 1
                err = _first_line(d.get("error")) if d.get("error") else status or FAILED
                if d.get("handled"):
                    err += " (handled by its error edge)"
                self._line(f"{g['fail']} {node} {dur}{note}: {err}", "red")
        elif kind == NODE_STARTED:
            node = e.node or "?"
            d = e.data
            if d and d.get("resumed"):
                return  # replayed from an earlier run; its finish line says so
            self.running[node] = e.t
            count = d.get("batch") if d else None
            if count is not None:
                self.batches[node] = _Batch(count, e.t)
                self._line(f"{g['start']} {node} ({count} items)", "dim")
            elif (e.t < self.window_end and self.budget <= 0) or not self._take(e.t):
                self.held[0] += 1
            else:
                self._line(f"{g['start']} {node}", "dim")
        elif kind == NODE_SKIPPED:
            self.done += 1
            self.skipped += 1
            if not self._take(e.t):
                self.held[2] += 1
                return
            reason = e.data.get("reason")
            self._line(f"{g['skip']} {e.node} skipped" + (f": {reason}" if reason else ""), "dim")
        elif kind == NODE_RETRY:
            self.retries += 1
            d = e.data
            where = e.node if e.item is None else f"{e.node}[{e.item}]"
            b = self.batches.get(e.node)  # type: ignore[arg-type]
            if b is not None:
                b.retries += 1
            wait = d.get("wait")
            after = f" in {fmt_duration(float(wait))}" if isinstance(wait, int | float) else ""
            err = f": {_first_line(d['error'])}" if d.get("error") else ""
            self._line(
                f"{g['retry']} {where} retry after attempt {d.get('attempt', '?')}{after}{err}",
                "yellow",
            )
        elif kind == RUN_STARTED:
            self.t0 = e.t
            nodes = e.data.get("nodes")
            self.total_nodes = len(nodes) if nodes is not None else None

    def _item_finished(self, node: str, b: _Batch, t: float) -> None:
        pass


class PlainProgress(_ProgressBase):
    """Lines for pipes and CI logs (see the module docstring for what is written and when)."""

    window_s = 1.0

    def __init__(
        self,
        stream: TextIO,
        batch_every: float = BATCH_LINE_EVERY_S,
        lines_per_s: int = ROUTINE_LINES_PER_S,
    ):
        super().__init__(_glyphs_for(stream))
        self.stream = stream
        self.batch_every = batch_every
        self.lines_per_window = lines_per_s
        self._out: list[str] = []  # lines not written yet
        self._armed = False  # a flush is scheduled on the running loop
        self.broken = False

    def on_event(self, event: Event) -> None:
        """Count the event now (keeping no reference to it) and make sure a flush is coming."""
        self.handle(event)
        if self._armed or not (self._out or any(self.held)):
            return
        if _later(COALESCE_S, self._tick):
            self._armed = True
        else:
            self._write()

    def _tick(self) -> None:
        """The scheduled flush. Held lines are said once their second is over, even if nothing
        else happens (event times are `perf_counter` seconds, like the clock read here)."""
        self.flush()
        if not any(self.held) or self._armed:
            return
        left = self.window_end - time.perf_counter()
        if left <= 0:
            self._say_held()
            self._write()
            return
        if _later(min(max(left, COALESCE_S), self.window_s), self._tick):
            self._armed = True

    def flush(self) -> None:
        """Write the lines the events made (one write and one flush)."""
        self._armed = False
        self._write()

    def _write(self) -> None:
        if not self._out or self.broken:
            return
        lines = self._out
        self._out = []
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except (OSError, ValueError):  # broken pipe / closed stream: progress must not fail a run
            self.broken = True

    def _line(self, line: str, style: str | None = None) -> None:
        self._out.append(line)

    def _item_finished(self, node: str, b: _Batch, t: float) -> None:
        # Periodic line; the final count is written when the batch node finishes.
        if t - b.last_line >= self.batch_every and b.done != b.total:
            b.last_line = t
            self._out.append(self._batch_line(node, b))

    def close(self) -> None:
        self.flush()
        self._say_held()
        self._write()


class LiveProgress(_ProgressBase):
    """rich Live display for a terminal. Rendering happens on rich's refresh thread, so state
    changes and snapshots go through a lock."""

    MAX_ROWS = 12

    def __init__(self, stream: TextIO):
        from rich.console import Console

        super().__init__(UNICODE_GLYPHS)
        self.console = Console(file=stream, force_terminal=True, highlight=False)
        self._lock = threading.Lock()
        self._live: Any = None
        self._closed = False
        self._sink = _LineSink(self._print)
        self._spinner: Any = None

    def on_event(self, event: Event) -> None:
        with self._lock:
            self.handle(event)
        if event.kind == RUN_FINISHED:
            self.close()  # outside the lock: stopping renders a last frame, which takes it
        elif self._live is None and not self._closed:
            self._start()

    def _start(self) -> None:
        from rich.live import Live
        from rich.spinner import Spinner

        self._spinner = Spinner("dots", style="cyan")  # one instance, or it never animates
        self._live = Live(
            get_renderable=self._render,
            console=self.console,
            refresh_per_second=8,
            transient=True,  # the finished lines and the summary are the record, not the frame
            redirect_stdout=False,  # stdout carries data (JSON output), never progress
            redirect_stderr=True,
        )
        self._live.start()

    def _line(self, line: str, style: str | None = None) -> None:
        self._sink.add((line, style))

    def _print(self, lines: list[tuple[str, str | None]]) -> None:
        from rich.text import Text

        out = Text()
        for i, (line, style) in enumerate(lines):
            if i:
                out.append("\n")
            out.append(line, style=style or "")
        self.console.print(out, soft_wrap=True)

    def _render(self) -> Any:
        from rich.progress_bar import ProgressBar
        from rich.table import Table
        from rich.text import Text

        now = time.perf_counter()
        with self._lock:
            t0 = self.t0
            running = list(self.running.items())
            batches = {
                n: (b.total, b.done, b.ok, b.failed, b.running, b.retries)
                for n, b in self.batches.items()
            }
            done, failed, retries, total = self.done, self.failed, self.retries, self.total_nodes
        g = self.g
        head = Text()
        head.append(f"{fmt_duration(now - t0) if t0 is not None else '-'}", style="bold")
        head.append(f"  running {len(running)}")
        head.append(f"  done {done}" + (f"/{total}" if total is not None else ""))
        if failed:
            head.append(f"  {g['fail']} {failed}", style="red")
        if retries:
            head.append(f"  {g['retry']} {retries}", style="yellow")
        grid = Table.grid(padding=(0, 2))
        grid.add_row(self._spinner, head)
        rows = Table.grid(padding=(0, 2))
        for node, start in running[: self.MAX_ROWS]:
            b = batches.get(node)
            if b is None:
                rows.add_row(Text(node, style="cyan"), Text(fmt_duration(now - start)))
                continue
            b_total, b_done, ok, bad, in_flight, b_retries = b
            counts = Text(f"{b_done}/{b_total if b_total is not None else '?'}")
            counts.append(f" {g['ok']} {ok}", style="green")
            if bad:
                counts.append(f" {g['fail']} {bad}", style="red")
            if b_retries:
                counts.append(f" {g['retry']} {b_retries}", style="yellow")
            counts.append(f"  ({in_flight} running)", style="dim")
            bar = ProgressBar(
                total=float(b_total or 0) or None,
                completed=b_done,
                width=24,
                complete_style="green",
                finished_style="green",
            )
            rows.add_row(Text(node, style="cyan"), Text(fmt_duration(now - start)), bar, counts)
        if len(running) > self.MAX_ROWS:
            rows.add_row(Text(f"… {len(running) - self.MAX_ROWS} more", style="dim"))
        grid.add_row(Text(""), rows)
        return grid

    def close(self) -> None:
        self._closed = True
        self._sink.flush()  # finished lines first, above the frame
        if self._live is not None:
            live, self._live = self._live, None
            live.stop()
