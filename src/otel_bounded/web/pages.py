"""The view's HTML: a trace list, a waterfall and the store's counts; no script at all.

Span names, attribute keys and values, events and resource attributes come
from the application and whoever calls it, so every one of them passes
through `_text` (HTML-escaped, and cut to `MAX_VALUE_CHARS` with the cut
said). Bars are SVG rectangles placed by attributes, so the page needs no
inline style and its Content-Security-Policy can forbid them.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace.status import StatusCode

from otel_bounded.traces import TraceStoreStats
from otel_bounded.traces.query import STATUSES, TraceSummary
from otel_bounded.web.tree import waterfall

__all__ = ["MAX_VALUE_CHARS", "STYLE", "stats_page", "trace_list_page", "trace_page"]

MAX_VALUE_CHARS = 1_000
"""Longest value shown in full on a page; the JSON API returns it whole."""

_COMPOSITE_PREFIX = "otel_bounded.composite."
_COMPOSITE_COUNT = "otel_bounded.composite.count"

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1rem 2rem; color: #1d1d1f; }
nav a { margin-right: 1rem; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 2px 8px; border-bottom: 1px solid #e5e5e5;
  vertical-align: top; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
.error { color: #b00020; font-weight: 600; }
.ok { color: #1b7f3a; }
.unset { color: #666; }
.mono { font-family: ui-monospace, monospace; }
.indent { display: inline-block; width: 1.2em; }
.note { color: #666; font-style: italic; }
svg.bar { width: 100%; height: 12px; }
th.timeline { width: 40%; }
svg.bar rect { fill: #4a78c2; }
svg.bar rect.error { fill: #b00020; }
svg.bar rect.composite { fill: #8a63c2; }
details summary { cursor: pointer; }
form label { margin-right: 1rem; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0 1rem; }
dt { font-weight: 600; }
"""


def _text(value: object) -> str:
    """Any value as escaped HTML text, cut to `MAX_VALUE_CHARS` with the cut said."""
    text = value if isinstance(value, str) else repr(value)
    note = ""
    if len(text) > MAX_VALUE_CHARS:
        note = (
            f' <span class="note">({len(text) - MAX_VALUE_CHARS:,} more characters not shown; '
            "the JSON API has the whole value)</span>"
        )
        text = text[:MAX_VALUE_CHARS]
    return html.escape(text, quote=True) + note


def _page(title: str, body: str) -> str:
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_text(title)} · otel-bounded</title>"
        '<link rel="stylesheet" href="/static/style.css"></head><body>'
        '<nav><a href="/">Traces</a><a href="/stats">Stats</a>'
        '<a href="/api/traces">JSON</a></nav>'
        f"{body}</body></html>\n"
    )


def _time(unix_nano: int) -> str:
    if not unix_nano:
        return "unknown"
    moment = datetime.fromtimestamp(unix_nano / 1e9, tz=timezone.utc)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _ms(nanoseconds: int) -> str:
    return f"{nanoseconds / 1e6:,.3f} ms"


def _status(status: str) -> str:
    return f'<span class="{status}">{status}</span>'


# -- the trace list --------------------------------------------------------------


def trace_list_page(
    summaries: Sequence[TraceSummary], filters: Mapping[str, str], error: str | None = None
) -> str:
    """`/`: the query's filters as a form, then the matching traces, newest first."""
    options = "".join(
        f'<option value="{s}"{" selected" if filters.get("status") == s else ""}>{s}</option>'
        for s in STATUSES
    )
    form = (
        '<form method="get" action="/">'
        f'<label>status <select name="status"><option value="">any</option>{options}'
        "</select></label>"
        + "".join(
            f'<label>{label} <input name="{name}" value="{_text(filters.get(name, ""))}" '
            f'size="{size}"></label>'
            for name, label, size in (
                ("name", "span name (* for a prefix)", 24),
                ("min_duration_ms", "min ms", 6),
                ("max_duration_ms", "max ms", 6),
                ("limit", "limit", 5),
            )
        )
        + '<button type="submit">Filter</button></form>'
    )
    if error is not None:
        rows = f'<p class="error">{_text(error)}</p>'
    elif not summaries:
        rows = '<p class="note">No held trace matches.</p>'
    else:
        rows = (
            '<table id="traces"><thead><tr><th>started</th><th>trace</th><th>root</th>'
            '<th>service</th><th class="num">duration</th><th class="num">spans</th>'
            '<th class="num">errors</th><th class="num">merged</th><th>status</th></tr></thead>'
            "<tbody>" + "".join(_summary_row(summary) for summary in summaries) + "</tbody></table>"
        )
    return _page(
        "Traces",
        f"<h1>Traces held</h1>{form}<p class='note'>{len(summaries)} shown, newest first.</p>"
        f"{rows}",
    )


def _summary_row(summary: TraceSummary) -> str:
    root = (
        _text(summary.root_name)
        if summary.root_name is not None
        else '<span class="note">(root not held)</span>'
    )
    return (
        f'<tr class="trace"><td>{_time(summary.start_time_unix_nano)}</td>'
        f'<td class="mono"><a href="/traces/{summary.trace_id}">{summary.trace_id}</a></td>'
        f"<td>{root}</td><td>{_text(summary.service_name or '')}</td>"
        f'<td class="num">{_ms(summary.duration_ns)}</td><td class="num">{summary.spans:,}</td>'
        f'<td class="num">{summary.errors:,}</td><td class="num">{summary.compacted:,}</td>'
        f"<td>{_status(summary.status)}</td></tr>"
    )


# -- one trace ---------------------------------------------------------------------


def trace_page(summary: TraceSummary, spans: Sequence[ReadableSpan]) -> str:
    """`/traces/<id>`: the waterfall, each span's details folded under it."""
    starts = [s.start_time for s in spans if s.start_time is not None]
    ends = [s.end_time for s in spans if s.end_time is not None]
    origin = min(starts, default=0)
    total = max(max(ends, default=0) - origin, 1)
    placed = waterfall(
        spans,
        span_id=lambda s: s.context.span_id if s.context is not None else 0,
        parent_id=lambda s: s.parent.span_id if s.parent is not None else None,
        start=lambda s: s.start_time or 0,
    )
    rows = []
    for index, entry in enumerate(placed):
        rows.append(_span_row(index, entry.span, entry.depth, entry.orphan, origin, total))
    header = (
        f"<h1>Trace <span class='mono'>{summary.trace_id}</span></h1><dl>"
        f"<dt>root</dt><dd>{_text(summary.root_name or '(root not held)')}</dd>"
        f"<dt>service</dt><dd>{_text(summary.service_name or '')}</dd>"
        f"<dt>started</dt><dd>{_time(summary.start_time_unix_nano)}</dd>"
        f"<dt>duration</dt><dd>{_ms(summary.duration_ns)}</dd>"
        f"<dt>spans held</dt><dd>{summary.spans:,}</dd>"
        f"<dt>spans merged into composites</dt><dd>{summary.compacted:,}</dd>"
        f"<dt>errors</dt><dd>{summary.errors:,}</dd>"
        f"<dt>status</dt><dd>{_status(summary.status)}</dd></dl>"
        f'<p><a href="/api/traces/{summary.trace_id}">OTLP JSON</a> '
        '<span class="note">(what a collector\'s /v1/traces accepts)</span></p>'
    )
    table = (
        '<table id="waterfall"><thead><tr><th>span</th><th class="num">duration</th>'
        '<th>status</th><th class="timeline">timeline</th></tr></thead><tbody>'
        + "".join(rows)
        + "</tbody></table>"
    )
    return _page(f"Trace {summary.trace_id}", header + table)


def _span_row(
    index: int, span: ReadableSpan, depth: int, orphan: bool, origin: int, total: int
) -> str:
    attributes = dict(span.attributes or {})
    composite = {k: v for k, v in attributes.items() if k.startswith(_COMPOSITE_PREFIX)}
    is_composite = _COMPOSITE_COUNT in composite
    code = span.status.status_code
    status = {StatusCode.ERROR: "error", StatusCode.OK: "ok"}.get(code, "unset")
    start, end = span.start_time, span.end_time
    duration = end - start if start is not None and end is not None else 0
    left = ((start or origin) - origin) / total * 100
    width = max(duration / total * 100, 0.2)
    bar_class = "error" if status == "error" else "composite" if is_composite else ""
    name = _text(span.name)
    if is_composite:
        name += f' <span class="note">&times;{_text(composite[_COMPOSITE_COUNT])}</span>'
    if orphan:
        name += ' <span class="note">(parent not held)</span>'
    details = _span_details(span, attributes, composite)
    return (
        f'<tr class="span" id="span-{index}"><td>{"<span class=indent></span>" * depth}'
        f"<details><summary>{name}</summary>{details}</details></td>"
        f'<td class="num">{_ms(duration)}</td><td>{_status(status)}</td>'
        f'<td><svg class="bar" viewBox="0 0 100 10" preserveAspectRatio="none">'
        f'<rect class="{bar_class}" x="{left:.3f}" y="0" width="{width:.3f}" height="10"/>'
        "</svg></td></tr>"
    )


def _span_details(
    span: ReadableSpan, attributes: Mapping[str, Any], composite: Mapping[str, Any]
) -> str:
    context = span.context
    parts = [
        "<dl>",
        f"<dt>span id</dt><dd class='mono'>{context.span_id:016x}</dd>" if context else "",
        f"<dt>parent</dt><dd class='mono'>{span.parent.span_id:016x}"
        f"{' (remote)' if span.parent.is_remote else ''}</dd>"
        if span.parent is not None
        else "",
        f"<dt>kind</dt><dd>{_text(span.kind.name)}</dd>",
        f"<dt>started</dt><dd>{_time(span.start_time or 0)}</dd>",
    ]
    if span.status.description:
        parts.append(f"<dt>status message</dt><dd>{_text(span.status.description)}</dd>")
    if span.instrumentation_scope is not None:
        scope = span.instrumentation_scope
        parts.append(f"<dt>scope</dt><dd>{_text(scope.name)} {_text(scope.version or '')}</dd>")
    parts.append("</dl>")
    if composite:
        parts.append(
            "<h4>Composite</h4><p class='note'>Spans merged by compaction; "
            "these attributes say how many and what varied among them.</p>"
            + _attribute_table(composite.items())
        )
    own = [(k, v) for k, v in attributes.items() if k not in composite]
    if own:
        parts.append("<h4>Attributes</h4>" + _attribute_table(own))
    dropped = getattr(span, "dropped_attributes", 0)
    if dropped:
        parts.append(f"<p class='note'>{dropped:,} attributes dropped by the SDK.</p>")
    if span.events:
        parts.append("<h4>Events</h4><ul>")
        for event in span.events:
            parts.append(
                f"<li>{_time(event.timestamp)} <strong>{_text(event.name)}</strong>"
                + (_attribute_table((event.attributes or {}).items()) if event.attributes else "")
                + "</li>"
            )
        parts.append("</ul>")
    if span.links:
        parts.append("<h4>Links</h4><ul>")
        for link in span.links:
            parts.append(
                f"<li class='mono'>{link.context.trace_id:032x}/{link.context.span_id:016x}"
                + (_attribute_table((link.attributes or {}).items()) if link.attributes else "")
                + "</li>"
            )
        parts.append("</ul>")
    resource = span.resource.attributes if span.resource is not None else {}
    if resource:
        parts.append(
            "<details><summary>Resource</summary>"
            + _attribute_table(resource.items())
            + "</details>"
        )
    return "".join(parts)


def _attribute_table(items: Iterable[tuple[str, Any]]) -> str:
    return (
        "<table class='attributes'>"
        + "".join(
            f"<tr><td class='mono'>{_text(key)}</td><td>{_text(_value(value))}</td></tr>"
            for key, value in items
        )
        + "</table>"
    )


def _value(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, tuple | list):
        return "[" + ", ".join(repr(item) for item in value) + "]"
    return repr(value)


# -- stats --------------------------------------------------------------------------


def stats_page(stats: TraceStoreStats) -> str:
    """`/stats`: held against every cap, evictions and drops by reason."""
    ttl = "none" if stats.ttl_seconds is None else f"{stats.ttl_seconds:g} s idle"
    held = (
        '<table id="held"><thead><tr><th></th><th class="num">held</th><th class="num">cap</th>'
        "</tr></thead><tbody>"
        f'<tr><td>traces</td><td class="num">{stats.traces:,}</td>'
        f'<td class="num">{stats.max_traces:,}</td></tr>'
        f'<tr><td>spans</td><td class="num">{stats.spans:,}</td>'
        f'<td class="num">{stats.max_spans:,}</td></tr>'
        f'<tr><td>spans per trace</td><td class="num"></td>'
        f'<td class="num">{stats.max_spans_per_trace:,}</td></tr>'
        f'<tr><td>age (ttl)</td><td class="num"></td><td class="num">{ttl}</td></tr>'
        "</tbody></table>"
    )
    evictions = _counts("evictions", "traces", stats.evictions_by_reason)
    drops = _counts("drops", "spans", stats.drops_by_reason)
    totals = (
        "<dl>"
        f"<dt>spans received</dt><dd>{stats.received_spans:,}</dd>"
        f"<dt>held</dt><dd>{stats.spans:,}</dd>"
        f"<dt>in evicted traces</dt><dd>{stats.evicted_spans:,}</dd>"
        f"<dt>dropped</dt><dd>{stats.dropped_spans:,}</dd>"
        f"<dt>merged by compaction</dt><dd>{stats.spans_compacted:,} "
        f"({stats.compactions:,} passes)</dd></dl>"
    )
    return _page(
        "Stats",
        "<h1>Trace store</h1>"
        + held
        + "<h2>Evictions by reason</h2>"
        + evictions
        + "<h2>Spans dropped by reason</h2>"
        + drops
        + "<h2>Every span accounted for</h2>"
        + totals,
    )


def _counts(table_id: str, unit: str, counts: Mapping[str, int]) -> str:
    return (
        f'<table id="{table_id}"><thead><tr><th>reason</th><th class="num">{unit}</th></tr>'
        "</thead><tbody>"
        + "".join(
            f'<tr><td>{_text(reason)}</td><td class="num">{count:,}</td></tr>'
            for reason, count in counts.items()
        )
        + "</tbody></table>"
    )


def error_page(status: str, message: str) -> str:
    return _page(status, f"<h1>{_text(status)}</h1><p>{_text(message)}</p>")


def query_string(filters: Mapping[str, str]) -> str:
    return urlencode({k: v for k, v in filters.items() if v})
