"""Traces for web view tests, made by the real SDK, and a plain HTTP client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otel_bounded import CompactionPolicy, TraceStore

HOSTILE_NAME = "<img src=x onerror=alert(1)>"


def recorded_store(*, compaction: bool = True) -> tuple[TraceStore, dict[str, int]]:
    """A store holding a few traces with everything a page shows; their ids by purpose."""
    store = TraceStore(
        compaction=CompactionPolicy(exact_match_max_duration_ms=1_000, compact_at_spans=64)
        if compaction
        else None
    )
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout"}))
    provider.add_span_processor(store)
    tracer = provider.get_tracer("tests.web", "0.1")
    ids: dict[str, int] = {}
    with tracer.start_as_current_span("GET /orders", kind=SpanKind.SERVER) as root:
        root.set_status(Status(StatusCode.OK))
        for index in range(6):
            with tracer.start_as_current_span(
                "SELECT orders", kind=SpanKind.CLIENT, attributes={"db.system": "postgresql"}
            ) as query:
                query.set_attribute("row", index)
        with tracer.start_as_current_span(
            "llm.chat",
            attributes={
                "gen_ai.request.model": "m-1",
                "floats": (1.5, -0.0),
                "flag": True,
                "count": 7,
                "tags": ("a", "b"),
            },
        ) as chat:
            chat.add_event("prompt", {"tokens": 12, "text": "</td><script>alert(2)</script>"})
        ids["ok"] = root.get_span_context().trace_id
    with tracer.start_as_current_span(HOSTILE_NAME, attributes={HOSTILE_NAME: HOSTILE_NAME}) as bad:
        with tracer.start_as_current_span(
            "tool.call", links=[Link(root.get_span_context(), {"why": "retry"})]
        ) as tool:
            tool.set_status(Status(StatusCode.ERROR, "boom <b>bold</b>"))
            tool.record_exception(ValueError("bad \x1b[31m input"))
        ids["hostile"] = bad.get_span_context().trace_id
    return store, ids


def get(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def request(url: str, method: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(
        url,
        method=method,
        headers=headers,
        data=b"" if method in ("POST", "PUT", "PATCH") else None,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def get_json(url: str, **headers: str) -> tuple[int, Any]:
    status, _, body = get(url, **headers)
    return status, json.loads(body)
