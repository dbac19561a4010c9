"""A Chrome trace (ours, from TraceWriter) → one self-contained HTML page with an SVG Gantt chart.

No JavaScript, external CSS or web fonts: the file opens anywhere, offline, and can be attached to
an issue. One row per lane; bars coloured by status; thin connectors from each dependency's end to
the node's start make the fan-out and the join visible at a glance; hovering shows a title with
the span's details; an `in flight` step chart along the bottom shows how much ran at once.
"""

from __future__ import annotations

import html
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fanflow.status import CANCELLED, FAILED, RUNNING, SUCCESS

WIDTH = 1200
GUTTER = 170  # lane labels
RIGHT = 24
AXIS_H = 28
COUNTER_H = 70
MAX_CONNECTOR_SPANS = 400  # above this, connectors are a hairball rather than a picture

STATUS_COLORS: dict[str, str] = {
    SUCCESS: "#3a9d5d",
    FAILED: "#d64545",
    CANCELLED: "#9a9a9a",
    RUNNING: "#e09b2d",  # started, never finished: the run ended first
    "incomplete": "#e09b2d",  # what traces written before the status vocabulary said
}
ITEM_COLORS: dict[str, str] = {
    SUCCESS: "#5fa8d3",
    FAILED: "#d64545",
    CANCELLED: "#b0b0b0",
    RUNNING: "#e09b2d",
}
DEFAULT_COLOR = "#7f8c8d"


@dataclass
class _Lane:
    tid: Any
    name: str
    sort: float
    kind: str = "node"  # node | item | skip
    spans: list[dict[str, Any]] = field(default_factory=list)
    marks: list[dict[str, Any]] = field(default_factory=list)


def load_trace(trace: str | os.PathLike[str] | dict[str, Any]) -> dict[str, Any]:
    if isinstance(trace, dict):
        return trace
    with open(trace, encoding="utf-8") as f:
        data = json.load(f)
    if isinstance(data, list):  # the JSON Array form of the format is legal too
        data = {"traceEvents": data}
    if not isinstance(data, dict) or not isinstance(data.get("traceEvents"), list):
        raise ValueError("not a Chrome trace: expected an object with a 'traceEvents' list")
    return data


def write_timeline(
    trace: str | os.PathLike[str] | dict[str, Any], out_html: str | os.PathLike[str]
) -> Path:
    """Render `trace` (a path to a trace JSON file, or TraceWriter.to_dict()) to `out_html`."""
    page = render_timeline(load_trace(trace))
    out = Path(out_html)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out


# -- layout ---------------------------------------------------------------------------------------


def _collect(events: list[dict[str, Any]]) -> tuple[list[_Lane], list[tuple[float, float]]]:
    names: dict[Any, str] = {}
    sorts: dict[Any, float] = {}
    lanes: dict[Any, _Lane] = {}
    counter: list[tuple[float, float]] = []
    for e in events:
        ph = e.get("ph")
        key = (e.get("pid"), e.get("tid"))
        if ph == "M":
            if e.get("name") == "thread_name":
                names[key] = str(e.get("args", {}).get("name", ""))
            elif e.get("name") == "thread_sort_index":
                sorts[key] = float(e.get("args", {}).get("sort_index", 0))
        elif ph == "X":
            lanes.setdefault(key, _Lane(key, "", 0)).spans.append(e)
        elif ph in ("i", "I"):
            lanes.setdefault(key, _Lane(key, "", 0)).marks.append(e)
        elif ph == "C" and e.get("name") == "in_flight":
            value = e.get("args", {}).get("in_flight")
            if isinstance(value, int | float):
                counter.append((float(e.get("ts", 0)), float(value)))
    for key, lane in lanes.items():
        lane.name = names.get(key) or f"thread {key[1]}"
        lane.sort = sorts.get(key, key[1] if isinstance(key[1], int | float) else 0)
        if any(s.get("cat") == "item" for s in lane.spans):
            lane.kind = "item"
        elif not lane.spans and all(m.get("cat") in ("skip", "resumed") for m in lane.marks):
            lane.kind = "skip"
    ordered = sorted(lanes.values(), key=lambda ln: (ln.sort, str(ln.tid)))
    counter.sort()
    return ordered, counter


def _nice_step(span_us: float, target: int = 10) -> float:
    raw = max(span_us / target, 1e-3)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _fmt_us(us: float) -> str:
    if us == 0:
        return "0"
    if us < 1000:
        return f"{us:g}µs"
    if us < 1_000_000:
        return f"{us / 1000:g}ms"
    if us < 60_000_000:
        return f"{us / 1_000_000:g}s"
    return f"{us / 60_000_000:.1f}min"


def _fmt_dur(us: float) -> str:
    if us < 1000:
        return f"{us:.0f}µs"
    if us < 1_000_000:
        return f"{us / 1000:.1f}ms"
    return f"{us / 1_000_000:.2f}s"


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _tooltip(e: dict[str, Any]) -> str:
    lines = [f"{e.get('name')}  {_fmt_dur(float(e.get('dur', 0)))}"]
    lines.append(f"start {_fmt_dur(float(e.get('ts', 0)))}")
    for k, v in (e.get("args") or {}).items():
        lines.append(f"{k}: {v}")
    return "\n".join(lines)


def render_timeline(trace: dict[str, Any]) -> str:
    events = trace.get("traceEvents") or []
    other = trace.get("otherData") or {}
    lanes, counter = _collect(events)
    spans = [s for ln in lanes for s in ln.spans]
    marks = [m for ln in lanes for m in ln.marks]
    end_us = max(
        [float(s.get("ts", 0)) + float(s.get("dur", 0)) for s in spans]
        + [float(m.get("ts", 0)) for m in marks]
        + [float(other.get("duration_us") or 0), 1.0]
    )
    n_rows = max(len(lanes), 1)
    row_h = 24.0 if n_rows <= 24 else max(3.0, min(24.0, 640.0 / n_rows))
    plot_w = WIDTH - GUTTER - RIGHT
    top = AXIS_H
    chart_h = n_rows * row_h
    has_counter = len(counter) > 1
    height = top + chart_h + (COUNTER_H + 24 if has_counter else 12)

    def x(us: float) -> float:
        return GUTTER + plot_w * (us / end_us)

    lane_of_span: dict[int, int] = {}
    for i, ln in enumerate(lanes):
        for s in ln.spans:
            lane_of_span[id(s)] = i

    def y(row: int) -> float:
        return top + row * row_h

    out: list[str] = []
    w = out.append
    w(
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {height:.0f}" '
        f'width="100%" role="img" aria-label="run timeline">'
    )
    w(
        "<defs><marker id='arr' viewBox='0 0 6 6' refX='5' refY='3' markerWidth='6' "
        "markerHeight='6' orient='auto-start-reverse'><path d='M0,0L6,3L0,6z' fill='#333'/>"
        "</marker></defs>"
    )
    # Lane backgrounds: item lanes tinted so a batch's items read as a block under the nodes.
    show_labels = row_h >= 11
    for i, ln in enumerate(lanes):
        fill = {"item": "#eef5fb", "skip": "#f6f6f6"}.get(
            ln.kind, "#fafafa" if i % 2 else "#ffffff"
        )
        w(
            f'<rect x="{GUTTER}" y="{y(i):.2f}" width="{plot_w}" height="{row_h:.2f}" '
            f'fill="{fill}"/>'
        )
        if show_labels or i == 0 or ln.kind != lanes[i - 1].kind:
            w(
                f'<text class="lane" x="{GUTTER - 8}" y="{y(i) + min(row_h, 24) / 2 + 4:.2f}" '
                f'text-anchor="end">{_esc(ln.name)}</text>'
            )
    # Time axis with gridlines.
    step = _nice_step(end_us)
    t = 0.0
    while t <= end_us * 1.0001:
        xx = x(t)
        w(
            f'<line x1="{xx:.2f}" y1="{top - 4}" x2="{xx:.2f}" y2="{top + chart_h:.2f}" '
            f'stroke="#ddd" stroke-width="1"/>'
        )
        w(f'<text class="tick" x="{xx:.2f}" y="{top - 8}" text-anchor="middle">{_fmt_us(t)}</text>')
        t += step
    # Bars.
    pad = max(1.0, row_h * 0.15) if row_h >= 6 else 0.0
    for i, ln in enumerate(lanes):
        for s in ln.spans:
            ts = float(s.get("ts", 0))
            dur = float(s.get("dur", 0))
            args = s.get("args") or {}
            status = str(args.get("status", ""))
            is_item = s.get("cat") == "item"
            is_batch = "items" in args and not is_item
            color = (ITEM_COLORS if is_item else STATUS_COLORS).get(status, DEFAULT_COLOR)
            x0 = x(ts)
            w_px = x(ts + dur) - x0
            bw = max(w_px - 1.0 if w_px > 4 else w_px, 1.0)  # 1px gap: back-to-back bars stay apart
            style = f'fill="{color}"'
            if is_batch:  # a batch node is a container of its items: outlined, lighter
                style = f'fill="{color}" fill-opacity="0.35" stroke="{color}" stroke-width="1.5"'
            w(f"<g><title>{_esc(_tooltip(s))}</title>")
            w(
                f'<rect x="{x0:.2f}" y="{y(i) + pad:.2f}" width="{bw:.2f}" '
                f'height="{max(row_h - 2 * pad, 1):.2f}" rx="2" {style}/>'
            )
            label = str(s.get("name", ""))
            if show_labels and bw >= 7 * len(label) + 6:
                cls = "bar dark" if is_batch else "bar"  # dark text on the light container
                w(
                    f'<text class="{cls}" x="{x0 + 4:.2f}" y="{y(i) + row_h / 2 + 4:.2f}">'
                    f"{_esc(label)}</text>"
                )
            w("</g>")
        for m in ln.marks:
            mx = x(float(m.get("ts", 0)))
            cy = y(i) + row_h / 2
            r = max(min(row_h / 2 - 2, 6), 2)
            tip = _esc(
                f"{m.get('name')} at {_fmt_dur(float(m.get('ts', 0)))}\n"
                + "\n".join(f"{k}: {v}" for k, v in (m.get("args") or {}).items())
            )
            if m.get("cat") == "resumed":  # completed by an earlier run: a grey dot
                w(
                    f"<g><title>{tip}</title><circle cx='{mx:.2f}' cy='{cy:.2f}' r='{r:.2f}' "
                    f"fill='#bbb'/>"
                )
                if show_labels:
                    w(
                        f'<text class="mark" x="{mx + r + 3:.2f}" y="{cy + 4:.2f}">'
                        f"{_esc(m.get('name'))}</text>"
                    )
                w("</g>")
            elif m.get("cat") == "skip":
                w(
                    f"<g><title>{tip}</title><path d='M{mx:.2f},{cy - r:.2f}L{mx + r:.2f},{cy:.2f}"
                    f"L{mx:.2f},{cy + r:.2f}L{mx - r:.2f},{cy:.2f}z' fill='#fff' stroke='#888' "
                    f"stroke-width='1.5'/>"
                )
                if show_labels:
                    w(
                        f'<text class="mark" x="{mx + r + 3:.2f}" y="{cy + 4:.2f}">'
                        f"{_esc(m.get('name'))}</text>"
                    )
                w("</g>")
            else:  # retry: a small warning triangle on the bar where the attempt failed
                w(
                    f"<g><title>{tip}</title><path d='M{mx:.2f},{cy - r:.2f}L{mx + r:.2f},"
                    f"{cy + r:.2f}L{mx - r:.2f},{cy + r:.2f}z' fill='#f0ad4e' stroke='#8a5a00' "
                    f"stroke-width='1'/></g>"
                )
    # Dependency connectors: dep's (latest) end → node's start.
    deps = other.get("deps")
    node_spans = [s for s in spans if s.get("cat") == "node"]
    if isinstance(deps, dict) and len(node_spans) <= MAX_CONNECTOR_SPANS:
        by_name: dict[str, list[dict[str, Any]]] = {}
        for s in node_spans:
            by_name.setdefault(str(s.get("name")), []).append(s)
        for s in node_spans:
            start = float(s.get("ts", 0))
            for dep in deps.get(str(s.get("name")), ()):
                before = [
                    d
                    for d in by_name.get(dep, ())
                    if float(d.get("ts", 0)) + float(d.get("dur", 0)) <= start + 1.0
                ]
                if not before:
                    continue
                d = max(before, key=lambda d: float(d.get("ts", 0)) + float(d.get("dur", 0)))
                x1 = x(float(d["ts"]) + float(d.get("dur", 0)))
                y1 = y(lane_of_span[id(d)]) + row_h / 2
                x2 = x(start)
                y2 = y(lane_of_span[id(s)]) + row_h / 2
                if abs(y1 - y2) < 0.5 and x2 - x1 < 2:
                    continue  # same lane, back to back: the bars already touch
                mid = (x1 + x2) / 2 if x2 - x1 > 12 else x1 + 6
                # A dot where the dependency ended: the fan-out reads as one dot, many arrows.
                w(
                    f"<g><title>{_esc(dep)} → {_esc(s.get('name'))}</title>"
                    f"<circle cx='{x1:.2f}' cy='{y1:.2f}' r='2.5' fill='#333'/>"
                    f"<path d='M{x1:.2f},{y1:.2f}C{mid:.2f},{y1:.2f} {mid:.2f},{y2:.2f} "
                    f"{x2:.2f},{y2:.2f}' fill='none' stroke='#333' stroke-opacity='0.75' "
                    f"stroke-width='1.4' marker-end='url(#arr)'/></g>"
                )
    w(
        f'<line x1="{GUTTER}" y1="{top + chart_h:.2f}" x2="{GUTTER + plot_w}" '
        f'y2="{top + chart_h:.2f}" stroke="#999"/>'
    )
    # In-flight step chart.
    if has_counter:
        base = top + chart_h + 16 + COUNTER_H
        peak = max(v for _, v in counter) or 1.0
        pts = [f"{x(0):.2f},{base:.2f}"]
        level = 0.0
        for ts, v in counter:
            yy_prev = base - COUNTER_H * level / peak
            yy = base - COUNTER_H * v / peak
            pts.append(f"{x(ts):.2f},{yy_prev:.2f}")
            pts.append(f"{x(ts):.2f},{yy:.2f}")
            level = v
        pts.append(f"{x(end_us):.2f},{base - COUNTER_H * level / peak:.2f}")
        pts.append(f"{x(end_us):.2f},{base:.2f}")
        w(
            f"<polygon points='{' '.join(pts)}' fill='#8fb8de' fill-opacity='0.6' "
            f"stroke='#3b73a8' stroke-width='1'><title>leaf executions in flight "
            f"(peak {peak:g})</title></polygon>"
        )
        w(
            f'<text class="lane" x="{GUTTER - 8}" y="{base - COUNTER_H / 2 + 4:.2f}" '
            f'text-anchor="end">in flight (peak {peak:g})</text>'
        )
        w(
            f'<line x1="{GUTTER}" y1="{base:.2f}" x2="{GUTTER + plot_w}" y2="{base:.2f}" '
            f'stroke="#999"/>'
        )
    w("</svg>")
    svg = "".join(out)
    return _page(svg, other, spans, lanes, counter, end_us)


def _page(
    svg: str,
    other: dict[str, Any],
    spans: list[dict[str, Any]],
    lanes: list[_Lane],
    counter: list[tuple[float, float]],
    end_us: float,
) -> str:
    workflow = other.get("workflow") or "run"
    status = other.get("status") or "?"
    n_nodes = sum(1 for s in spans if s.get("cat") == "node")
    n_items = sum(1 for s in spans if s.get("cat") == "item")
    busy = sum(
        float(s.get("dur", 0))
        for s in spans
        if s.get("cat") == "item" or "items" not in (s.get("args") or {})
    )
    facts = [
        f"status <b class='st-{_esc(status)}'>{_esc(status)}</b>",
        f"wall {_fmt_dur(end_us)}",
        f"{n_nodes} node runs" + (f", {n_items} items" if n_items else ""),
        f"{sum(1 for ln in lanes if ln.kind == 'node')} lanes",
    ]
    if end_us > 1 and busy:
        facts.append(f"parallelism {busy / end_us:.1f}×")
    if counter:
        facts.append(f"peak in flight {max(v for _, v in counter):g}")
    legend = "".join(
        f"<span><i style='background:{c}'></i>{name}</span>"
        for name, c in (
            (SUCCESS, STATUS_COLORS[SUCCESS]),
            (FAILED, STATUS_COLORS[FAILED]),
            (CANCELLED, STATUS_COLORS[CANCELLED]),
            (RUNNING, STATUS_COLORS[RUNNING]),
            ("batch item", ITEM_COLORS[SUCCESS]),
        )
    )
    legend += (
        "<span><i style='background:#fff;border:1.5px solid #3a9d5d'></i>batch node</span>"
        "<span><i class='tri'></i>retry</span>"
        "<span><i style='background:#fff;border:1.5px solid #888;transform:rotate(45deg);"
        "width:8px;height:8px'></i>skipped</span>"
        "<span><b style='color:#555'>→</b> waits on</span>"
    )
    title = f"fanflow timeline — {workflow}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{_esc(title)}</title>
<style>
body{{margin:16px 20px;font:13px/1.4 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:#222;background:#fff}}
h1{{font-size:17px;margin:0 0 4px}}
.facts{{color:#444;margin-bottom:6px}} .facts span+span:before{{content:" · ";color:#aaa}}
.st-success{{color:#2d7d4a}} .st-failed{{color:#c0392b}} .st-cancelled{{color:#777}}
.legend{{margin:4px 0 8px;color:#444}} .legend span{{margin-right:14px;white-space:nowrap}}
.legend i{{display:inline-block;width:12px;height:10px;margin-right:5px;vertical-align:-1px;
border-radius:2px}}
.legend i.tri{{width:0;height:0;border-radius:0;border-left:6px solid transparent;
border-right:6px solid transparent;border-bottom:10px solid #f0ad4e}}
svg{{display:block;max-width:{WIDTH}px}}
svg text{{font:11px system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;fill:#333}}
svg text.bar{{font-weight:600;pointer-events:none;fill:#fff}} svg text.dark{{fill:#123}}
svg text.tick{{fill:#666}}
svg text.mark{{fill:#666;font-style:italic}}
svg g:hover rect{{stroke:#111;stroke-width:1.5}}
.note{{color:#888;font-size:12px;margin-top:8px}}
</style></head><body>
<h1>{_esc(title)}</h1>
<div class="facts">{"".join(f"<span>{f}</span>" for f in facts)}</div>
<div class="legend">{legend}</div>
{svg}
<div class="note">Hover a bar for details. Each row is a lane: spans that overlap in time never
share one. The same data opens in Perfetto (ui.perfetto.dev) from the trace file.</div>
</body></html>
"""
