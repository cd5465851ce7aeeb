"""The JSON API: traces parsed back as OTLP protobuf and compared span by span with `get()`."""

from __future__ import annotations

import base64
import copy
import json
from typing import Any

from google.protobuf.json_format import ParseDict
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_bounded import TraceStore
from otel_bounded.web import WebView, serve
from tests.web.helpers import get, get_json, recorded_store


def parse_otlp_json(data: dict[str, Any]) -> ExportTraceServiceRequest:
    """What a collector does with a /v1/traces body: hex ids, then protobuf's JSON mapping."""
    data = copy.deepcopy(data)
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for item in (span, *span.get("links", [])):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if key in item:
                            assert len(item[key]) in (16, 32), item[key]
                            item[key] = base64.b64encode(bytes.fromhex(item[key])).decode()
    return ParseDict(data, ExportTraceServiceRequest())


def plain(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(plain(item) for item in value.array_value.values)
    return getattr(value, kind)


def test_a_trace_parses_as_otlp_and_equals_get_span_by_span(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, ids = recorded
    for trace_id in ids.values():
        status, data = get_json(f"{view.url}api/traces/{trace_id:032x}")
        assert status == 200
        request = parse_otlp_json(data)
        received = [
            (resource_spans.resource, span)
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]
        held: tuple[ReadableSpan, ...] = store.get(trace_id)
        assert len(received) == len(held)
        by_id = {span.context.span_id: span for span in held}  # type: ignore[union-attr]
        for resource, span in received:
            expected = by_id[int.from_bytes(span.span_id, "big")]
            assert int.from_bytes(span.trace_id, "big") == trace_id
            assert span.name == expected.name
            assert span.start_time_unix_nano == expected.start_time
            assert span.end_time_unix_nano == expected.end_time
            assert span.kind == expected.kind.value + 1
            parent = int.from_bytes(span.parent_span_id, "big") if span.parent_span_id else None
            assert parent == (expected.parent.span_id if expected.parent else None)
            code = {StatusCode.UNSET: 0, StatusCode.OK: 1, StatusCode.ERROR: 2}
            assert span.status.code == code[expected.status.status_code]
            assert span.status.message == (expected.status.description or "")
            assert {a.key: plain(a.value) for a in span.attributes} == dict(
                expected.attributes or {}
            )
            assert [(e.name, e.time_unix_nano) for e in span.events] == [
                (e.name, e.timestamp) for e in expected.events
            ]
            assert [int.from_bytes(link.span_id, "big") for link in span.links] == [
                link.context.span_id for link in expected.links
            ]
            assert {a.key: plain(a.value) for a in resource.attributes} == dict(
                expected.resource.attributes
            )


def test_composites_reach_the_api_with_their_counts(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    _, ids = recorded
    _, data = get_json(f"{view.url}api/traces/{ids['ok']:032x}")
    spans = [
        span
        for resource_spans in data["resourceSpans"]
        for scope_spans in resource_spans["scopeSpans"]
        for span in scope_spans["spans"]
    ]
    selects = [span for span in spans if span["name"] == "SELECT orders"]
    counts = [
        int(attribute["value"]["intValue"])
        for span in selects
        for attribute in span.get("attributes", [])
        if attribute["key"] == "otel_bounded.composite.count"
    ]
    assert counts, "the six fast SELECTs were compacted"
    # Every SELECT is accounted for: composites by their count, the rest one each.
    assert sum(counts) + len(selects) - len(counts) == 6
    (summary,) = [
        t for t in get_json(f"{view.url}api/traces")[1]["traces"] if t["root_name"] == "GET /orders"
    ]
    assert summary["compacted"] == sum(count - 1 for count in counts)
    assert summary["spans"] == len(spans)


def test_trace_list_is_the_query_as_json(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, _ = recorded
    status, data = get_json(f"{view.url}api/traces")
    assert status == 200
    assert data == {"traces": [summary.as_dict() for summary in store.query()]}
    _, errors = get_json(f"{view.url}api/traces?status=error&limit=5")
    assert errors == {"traces": [s.as_dict() for s in store.query(status="error", limit=5)]}
    _, named = get_json(f"{view.url}api/traces?name=SELECT%2A&min_duration_ms=0")
    assert named == {"traces": [s.as_dict() for s in store.query(name="SELECT*")]}


def test_stats_as_json(view: WebView, recorded: tuple[TraceStore, dict[str, int]]) -> None:
    store, _ = recorded
    status, data = get_json(f"{view.url}api/stats")
    assert status == 200
    assert data == json.loads(json.dumps(store.stats().as_dict()))
    assert data["traces"] == 2


def test_unknown_and_malformed_trace_ids_are_404_with_a_message(view: WebView) -> None:
    status, data = get_json(f"{view.url}api/traces/{'0' * 31}1")
    assert status == 404
    assert "is not held" in data["error"]
    status, data = get_json(f"{view.url}api/traces/XYZ")
    assert status == 404
    assert "32 lowercase hex" in data["error"]


def test_bad_filters_are_400_naming_the_parameter(view: WebView) -> None:
    for query, named in (
        ("status=failed", "status"),
        ("limit=0", "limit"),
        ("limit=100000", "limit"),
        ("min_duration_ms=nan", "min_duration_ms"),
        ("min_duration_ms=-3", "min_duration_ms"),
        ("colour=red", "colour"),
        ("limit=1&limit=2", "limit"),
    ):
        status, data = get_json(f"{view.url}api/traces?{query}")
        assert status == 400, query
        assert named in data["error"], (query, data)


def test_json_responses_are_json(view: WebView) -> None:
    status, headers, _ = get(f"{view.url}api/stats")
    assert status == 200
    assert headers["Content-Type"] == "application/json"


def _span_ids(data: dict[str, Any]) -> set[tuple[int, int]]:
    request = parse_otlp_json(data)
    return {
        (int.from_bytes(span.trace_id, "big"), int.from_bytes(span.span_id, "big"))
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    }


def _held_ids(store: TraceStore, keep: Any) -> set[tuple[int, int]]:
    """The brute-force model: every span of every held trace that `keep` accepts."""
    return {
        (trace_id, span.context.span_id)  # type: ignore[union-attr]
        for trace_id in store.trace_ids()
        for spans in [store.get(trace_id)]
        if keep(spans)
        for span in spans
    }


def test_the_dump_is_every_held_trace_or_those_filtered_as_one_otlp_body(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, ids = recorded
    cases: list[tuple[str, Any]] = [
        ("", lambda spans: True),
        (
            "?status=error",
            lambda spans: any(s.status.status_code is StatusCode.ERROR for s in spans),
        ),
        ("?status=ok", lambda spans: any(s.status.status_code is StatusCode.OK for s in spans)),
        ("?since=0", lambda spans: True),
        ("?since=99999999999", lambda spans: False),
    ]
    for query, keep in cases:
        status, data = get_json(f"{view.url}api/dump{query}")
        assert status == 200, query
        assert _span_ids(data) == _held_ids(store, keep), query
    status, data = get_json(f"{view.url}api/dump?status=error")
    assert {trace_id for trace_id, _ in _span_ids(data)} == {ids["hostile"]}


def test_the_dump_refuses_bad_filters_with_400() -> None:
    store, _ = recorded_store()
    with serve(store) as running:
        for query in ("?status=boom", "?since=nan", "?since=soon", "?limit=3"):
            status, _ = get_json(f"{running.url}api/dump{query}")
            assert status == 400, query
