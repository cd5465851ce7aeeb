"""The command line's side of the view: read a running process's JSON API and print it.

Every failure a person can cause (a URL nothing answers, a trace that is not
held, a server that is not an otel-bounded view) becomes `WebViewError`, one
line that says what to do. Span names and attributes are the application's
data, so control characters are shown escaped, never sent to the terminal.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from otel_bounded.errors import WebViewError
from otel_bounded.web.tree import waterfall

__all__ = [
    "fetch_json",
    "format_stats",
    "format_trace",
    "format_traces",
    "traces_path",
]

_TIMEOUT_SECONDS = 10.0
_MAX_BODY = 64 * 1024 * 1024
_STATUS_NAMES = {0: "unset", 1: "ok", 2: "error"}
_COMPOSITE_COUNT = "otel_bounded.composite.count"


def fetch_json(base_url: str, path: str) -> Any:
    """GET `path` under `base_url` and parse its JSON; `WebViewError` when anything fails."""
    url = _join(base_url, path)
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=_TIMEOUT_SECONDS) as response:  # noqa: S310
            body = response.read(_MAX_BODY + 1)
    except urllib.error.HTTPError as error:
        raise WebViewError(f"{url}: HTTP {error.code}: {_server_message(error)}") from None
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        raise WebViewError(
            f"cannot reach {base_url} ({reason}); is the process serving its trace view "
            "(otel_bounded.web.serve or OTEL_BOUNDED_HTTP_ENDPOINT)?"
        ) from None
    if len(body) > _MAX_BODY:
        raise WebViewError(f"{url}: the response is over {_MAX_BODY:,} bytes")
    try:
        return json.loads(body)
    except ValueError:
        raise WebViewError(f"{url} did not answer JSON: is it an otel-bounded view?") from None


def _join(base_url: str, path: str) -> str:
    parts = urllib.parse.urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise WebViewError(f"--url must be an http:// or https:// URL, got {base_url!r}")
    return base_url.rstrip("/") + path


def _server_message(error: urllib.error.HTTPError) -> str:
    try:
        data = json.loads(error.read(64 * 1024))
        message = data.get("error") if isinstance(data, dict) else None
    except (ValueError, OSError):
        message = None
    return _safe(str(message)) if message else str(error.reason)


def traces_path(filters: Mapping[str, object]) -> str:
    query = urllib.parse.urlencode({k: v for k, v in filters.items() if v is not None})
    return "/api/traces" + (f"?{query}" if query else "")


def _safe(text: str) -> str:
    """`text` with control characters escaped: an attribute could hold a terminal escape."""
    return "".join(char if char.isprintable() or char == " " else repr(char)[1:-1] for char in text)


def _ms(nanoseconds: int) -> str:
    return f"{nanoseconds / 1e6:,.3f} ms"


# -- traces ------------------------------------------------------------------------


def format_traces(data: Any) -> str:
    traces = data.get("traces") if isinstance(data, dict) else None
    if not isinstance(traces, list):
        raise WebViewError("the answer has no trace list: is the URL an otel-bounded view?")
    if not traces:
        return "no held trace matches\n"
    rows = [("TRACE ID", "STATUS", "DURATION", "SPANS", "ERRORS", "SERVICE", "ROOT")]
    for summary in traces:
        rows.append(
            (
                str(summary["trace_id"]),
                str(summary["status"]),
                _ms(int(summary["duration_ns"])),
                f"{int(summary['spans']):,}",
                f"{int(summary['errors']):,}",
                _safe(str(summary.get("service_name") or "")),
                _safe(str(summary.get("root_name") or "(root not held)")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = [
        "".join(cell.ljust(width + 2) for cell, width in zip(row, widths, strict=False)) + row[-1]
        for row in rows
    ]
    return "\n".join(lines) + "\n"


# -- one trace ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Span:
    span_id: int
    parent_id: int | None
    name: str
    start: int
    end: int
    status: str
    message: str
    service: str
    count: int | None


def format_trace(data: Any) -> str:
    """An indented tree: each span with its duration and status, children under parents."""
    spans = _spans(data)
    if not spans:
        raise WebViewError("the answer holds no span: is the URL an otel-bounded view?")
    origin = min(span.start for span in spans)
    lines = []
    for placed in waterfall(
        spans,
        span_id=lambda s: s.span_id,
        parent_id=lambda s: s.parent_id,
        start=lambda s: s.start,
    ):
        span = placed.span
        notes = []
        if span.count is not None:
            notes.append(f"x{span.count} merged")
        if placed.orphan:
            notes.append("parent not held")
        if span.message:
            notes.append(_safe(span.message))
        note = f"  ({'; '.join(notes)})" if notes else ""
        lines.append(
            f"{'  ' * placed.depth}{_safe(span.name)}  {_ms(span.end - span.start)}  "
            f"{span.status.upper() if span.status == 'error' else span.status}  "
            f"+{_ms(span.start - origin)}{note}"
        )
    return "\n".join(lines) + "\n"


def _spans(data: Any) -> list[_Span]:
    if not isinstance(data, dict) or not isinstance(data.get("resourceSpans"), list):
        raise WebViewError("the answer is not OTLP JSON: is the URL an otel-bounded view?")
    spans = []
    for resource_spans in data["resourceSpans"]:
        resource = _attributes(resource_spans.get("resource", {}).get("attributes", []))
        service = str(resource.get("service.name", ""))
        for scope_spans in resource_spans.get("scopeSpans", []):
            for span in scope_spans.get("spans", []):
                attributes = _attributes(span.get("attributes", []))
                status = span.get("status", {})
                count = attributes.get(_COMPOSITE_COUNT)
                parent = span.get("parentSpanId")
                spans.append(
                    _Span(
                        span_id=int(span.get("spanId", "0") or "0", 16),
                        parent_id=int(parent, 16) if parent else None,
                        name=str(span.get("name", "")),
                        start=int(span.get("startTimeUnixNano", 0)),
                        end=int(span.get("endTimeUnixNano", 0)),
                        status=_STATUS_NAMES.get(int(status.get("code", 0)), "unset"),
                        message=str(status.get("message", "")),
                        service=service,
                        count=int(count) if isinstance(count, int | str) and count else None,
                    )
                )
    return spans


def _attributes(items: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    result = {}
    for item in items:
        value = item.get("value", {})
        for kind in ("stringValue", "intValue", "boolValue", "doubleValue"):
            if kind in value:
                result[str(item.get("key"))] = value[kind]
                break
    return result


# -- stats --------------------------------------------------------------------------


def format_stats(data: Any) -> str:
    if not isinstance(data, dict) or "max_traces" not in data:
        raise WebViewError("the answer holds no store counts: is the URL an otel-bounded view?")
    ttl = data.get("ttl_seconds")
    lines = [
        f"{'':<26}{'held':>12}{'cap':>12}",
        f"{'traces':<26}{data['traces']:>12,}{data['max_traces']:>12,}",
        f"{'spans':<26}{data['spans']:>12,}{data['max_spans']:>12,}",
        f"{'spans per trace (max)':<26}{'':>12}{data['max_spans_per_trace']:>12,}",
        f"{'ttl (seconds idle)':<26}{'':>12}{'none' if ttl is None else f'{ttl:g}':>12}",
        "",
        f"{'evictions by reason':<26}{'traces':>12}",
    ]
    for reason, count in data.get("evictions_by_reason", {}).items():
        lines.append(f"  {_safe(str(reason)):<24}{count:>12,}")
    lines += ["", f"{'spans dropped by reason':<26}{'spans':>12}"]
    for reason, count in data.get("drops_by_reason", {}).items():
        lines.append(f"  {_safe(str(reason)):<24}{count:>12,}")
    lines += [
        "",
        f"{'spans received':<26}{data.get('received_spans', 0):>12,}  = {data['spans']:,} held + "
        f"{data.get('evicted_spans', 0):,} in evicted traces + "
        f"{data.get('dropped_spans', 0):,} dropped"
        + (
            f" + {data['spans_compacted']:,} merged by compaction"
            if data.get("spans_compacted")
            else ""
        ),
    ]
    return "\n".join(lines) + "\n"
