"""`TraceStore.query` against a brute-force filter of `get()` over random traces."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_bounded import CompactionPolicy, TraceNotFound, TraceStore
from otel_bounded.telemetry import COMPOSITE_COUNT, COMPOSITE_NAMES, COMPOSITE_STRATEGY
from otel_bounded.traces.query import TraceSummary

SCOPE = InstrumentationScope("tests.query", "1.0")
RESOURCES = (
    Resource({"service.name": "api"}),
    Resource({"service.name": "worker", "deployment.environment": "prod"}),
    Resource({"service.name": 7}),  # a service name that is not a string
    Resource({}),
)
NAMES = (
    "GET /",
    "SELECT",
    "SELECT users",
    "llm.chat",
    "<img src=x onerror=alert(1)>",
    "é\u0301",
    "",
)
ATTRIBUTE_VALUES = (1, True, "1", 1.0, "c-42", ("a", "b"), (1, 2))
ATTRIBUTE_KEYS = ("gen_ai.conversation.id", "service.name", "k")
SECOND = 1_000_000_000


@dataclass(frozen=True)
class SpanSpec:
    trace: int
    span: int
    parent: str  # "none", "local", "remote"
    parent_pick: int
    name: str
    status: StatusCode
    start: int
    duration: int
    attributes: tuple[tuple[str, Any], ...]
    resource: int


span_specs = st.builds(
    SpanSpec,
    trace=st.integers(1, 6),
    span=st.integers(1, 40),
    parent=st.sampled_from(("none", "local", "local", "local", "remote")),
    parent_pick=st.integers(0, 40),
    name=st.sampled_from(NAMES),
    status=st.sampled_from(tuple(StatusCode)),
    start=st.integers(0, 5 * SECOND),
    duration=st.integers(0, 3 * SECOND),
    attributes=st.lists(
        st.tuples(st.sampled_from(ATTRIBUTE_KEYS), st.sampled_from(ATTRIBUTE_VALUES)),
        max_size=2,
        unique_by=lambda pair: pair[0],
    ).map(tuple),
    resource=st.integers(0, len(RESOURCES) - 1),
)


def readable(spec: SpanSpec, seen: Sequence[int]) -> ReadableSpan:
    trace_id = spec.trace << 64 | 0xABC
    parent = None
    if spec.parent == "remote":
        parent = SpanContext(trace_id, 0xFFFF + spec.parent_pick, is_remote=True)
    elif spec.parent == "local" and seen:
        parent = SpanContext(trace_id, seen[spec.parent_pick % len(seen)], is_remote=False)
    return ReadableSpan(
        name=spec.name,
        context=SpanContext(trace_id, spec.span, is_remote=False, trace_flags=TraceFlags(1)),
        parent=parent,
        resource=RESOURCES[spec.resource],
        attributes=dict(spec.attributes),
        kind=SpanKind.INTERNAL,
        status=Status(spec.status),
        start_time=spec.start,
        end_time=spec.start + spec.duration,
        instrumentation_scope=SCOPE,
    )


def feed(store: TraceStore, specs: Sequence[SpanSpec]) -> None:
    seen: dict[int, list[int]] = {}
    for spec in specs:
        ids = seen.setdefault(spec.trace, [])
        store.on_end(readable(spec, ids))
        ids.append(spec.span)


# -- the model: every field and filter recomputed from get() -------------------


def same(held: object, wanted: object) -> bool:
    if isinstance(held, tuple | list) and isinstance(wanted, tuple | list):
        return len(held) == len(wanted) and all(map(same, held, wanted))
    return type(held) is type(wanted) and held == wanted


def model_summary(trace_id: int, spans: Sequence[ReadableSpan]) -> TraceSummary:
    start = min(span.start_time for span in spans)  # type: ignore[type-var]
    end = max(span.end_time for span in spans)  # type: ignore[type-var]
    roots = [span for span in spans if span.parent is None]
    local_roots = [span for span in spans if span.parent is not None and span.parent.is_remote]
    root = roots[0] if roots else None
    if root is None and local_roots:
        root = min(local_roots, key=lambda s: (s.start_time, spans.index(s)))
    errors = sum(span.status.status_code is StatusCode.ERROR for span in spans)
    status = "unset"
    if errors:
        status = "error"
    elif root is not None and root.status.status_code is StatusCode.OK:
        status = "ok"
    service = (root or spans[0]).resource.attributes.get("service.name")
    compacted = sum(
        span.attributes[COMPOSITE_COUNT] - 1  # type: ignore[operator]
        for span in spans
        if span.attributes and COMPOSITE_STRATEGY in span.attributes
    )
    return TraceSummary(
        trace_id=f"{trace_id:032x}",
        root_name=None if root is None else root.name,
        service_name=service if isinstance(service, str) else None,
        start_time_unix_nano=start,  # type: ignore[arg-type]
        duration_ns=end - start,  # type: ignore[operator]
        spans=len(spans),
        errors=errors,
        compacted=compacted,
        status=status,
    )


def span_names(span: ReadableSpan) -> list[str]:
    names = [span.name]
    merged = (span.attributes or {}).get(COMPOSITE_NAMES)
    if merged is not None:
        names.extend(merged)  # type: ignore[arg-type]
    return names


def model_query(store: TraceStore, **query: Any) -> list[TraceSummary]:
    kept = []
    for trace_id in store.trace_ids():
        spans = store.get(trace_id)
        summary = model_summary(trace_id, spans)
        if query.get("status") is not None and summary.status != query["status"]:
            continue
        duration = Fraction(summary.duration_ns, 1_000_000)
        if query.get("min_duration_ms") is not None and duration < Fraction(
            query["min_duration_ms"]
        ):
            continue
        if query.get("max_duration_ms") is not None and duration > Fraction(
            query["max_duration_ms"]
        ):
            continue
        start = Fraction(summary.start_time_unix_nano, SECOND)
        if query.get("since") is not None and start < Fraction(query["since"]):
            continue
        if query.get("until") is not None and start > Fraction(query["until"]):
            continue
        name = query.get("name")
        if name is not None:
            names = [n for span in spans for n in span_names(span)]
            if name.endswith("*"):
                if not any(n.startswith(name[:-1]) for n in names):
                    continue
            elif name not in names:
                continue
        wanted: Mapping[str, Any] | None = query.get("attributes")
        if wanted is not None and not any(
            all(
                key in merged and same(merged[key], value)
                for merged in [{**span.resource.attributes, **(span.attributes or {})}]
                for key, value in wanted.items()
            )
            for span in spans
        ):
            continue
        kept.append(summary)
    kept.sort(key=lambda s: (s.start_time_unix_nano, s.trace_id), reverse=True)
    return kept[: query.get("limit", 100)]


queries = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(("error", "ok", "unset")),
        "name": st.sampled_from((*NAMES[:-1], "SELECT*", "llm.*", "<img*", "nothing")),
        "min_duration_ms": st.one_of(st.integers(0, 3000), st.floats(0, 3000)),
        "max_duration_ms": st.one_of(st.integers(0, 3000), st.floats(0, 3000)),
        "attributes": st.dictionaries(
            st.sampled_from((*ATTRIBUTE_KEYS, "deployment.environment")),
            st.sampled_from((*ATTRIBUTE_VALUES, "api", "worker", "prod", 7)),
            min_size=1,
            max_size=2,
        ),
        "since": st.one_of(st.integers(0, 5), st.floats(0, 5)),
        "until": st.one_of(st.integers(0, 5), st.floats(0, 5)),
        "limit": st.integers(1, 8),
    },
)

stores = st.sampled_from(
    (
        {},
        {"max_traces": 3, "max_spans": 25, "max_spans_per_trace": 8},
        {"compaction": CompactionPolicy(exact_match_max_duration_ms=2000, compact_at_spans=3)},
        {
            "max_spans": 20,
            "compaction": CompactionPolicy(
                exact_match_max_duration_ms=2000,
                same_kind_max_duration_ms=2000,
                same_kind_keys=("k",),
                compact_at_spans=2,
            ),
        },
    )
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    specs=st.lists(span_specs, max_size=60),
    options=stores,
    query_sets=st.lists(queries, min_size=1, max_size=4),
)
def test_query_equals_a_brute_force_filter_of_get(
    specs: list[SpanSpec], options: dict[str, Any], query_sets: list[dict[str, Any]]
) -> None:
    store = TraceStore(**options)
    feed(store, specs)
    for query in query_sets:
        assert store.query(**query) == model_query(store, **query), query
    for trace_id in store.trace_ids():
        assert store.summary(trace_id) == model_summary(trace_id, store.get(trace_id))


@settings(max_examples=40, deadline=None)
@given(
    specs=st.lists(span_specs, min_size=1, max_size=40),
    ttl_steps=st.lists(st.integers(0, 4), min_size=1, max_size=5),
)
def test_expired_and_cleared_traces_are_never_returned(
    specs: list[SpanSpec], ttl_steps: list[int]
) -> None:
    now = [1000.0]
    store = TraceStore(ttl_seconds=3, clock=lambda: now[0])
    for step, spec in enumerate(specs):
        feed(store, [spec])
        now[0] += ttl_steps[step % len(ttl_steps)]
        returned = {summary.trace_id for summary in store.query(limit=10_000)}
        assert returned == {f"{trace_id:032x}" for trace_id in store.trace_ids()}
    store.clear()
    assert store.query() == []


def test_a_user_attribute_named_like_a_composite_is_not_counted_as_compacted() -> None:
    store = TraceStore()
    forged = SpanSpec(1, 1, "none", 0, "root", StatusCode.UNSET, 0, 10, (), 0)
    span = readable(forged, [])
    span._attributes = {COMPOSITE_COUNT: 50, COMPOSITE_STRATEGY: "exact_match"}  # type: ignore[assignment]
    store.on_end(span)
    (summary,) = store.query()
    assert summary.compacted == 0
    assert summary.spans == 1


def test_newest_first_and_limit() -> None:
    store = TraceStore()
    feed(
        store,
        [
            SpanSpec(trace, 1, "none", 0, f"t{trace}", StatusCode.UNSET, trace * SECOND, 5, (), 0)
            for trace in (3, 1, 5, 2, 4)
        ],
    )
    assert [s.root_name for s in store.query()] == ["t5", "t4", "t3", "t2", "t1"]
    assert [s.root_name for s in store.query(limit=2)] == ["t5", "t4"]


def test_summary_is_plain_json() -> None:
    store = TraceStore()
    feed(store, [SpanSpec(1, 1, "none", 0, "root", StatusCode.ERROR, SECOND, 7, (), 1)])
    (summary,) = store.query()
    data = json.loads(json.dumps(summary.as_dict()))
    assert data == {
        "trace_id": f"{1 << 64 | 0xABC:032x}",
        "root_name": "root",
        "service_name": "worker",
        "start_time_unix_nano": SECOND,
        "duration_ns": 7,
        "spans": 1,
        "errors": 1,
        "compacted": 0,
        "status": "error",
    }
    with pytest.raises(AttributeError):
        summary.status = "ok"  # type: ignore[misc]


@pytest.mark.parametrize(
    "arguments",
    [
        {"status": "failed"},
        {"status": "ERROR"},
        {"name": ""},
        {"name": "*"},
        {"name": 3},
        {"min_duration_ms": -1},
        {"max_duration_ms": math.nan},
        {"since": math.inf},
        {"until": True},
        {"attributes": {}},
        {"attributes": {1: "x"}},
        {"attributes": [("k", "v")]},
        {"limit": 0},
        {"limit": 10_001},
        {"limit": 2.0},
        {"limit": True},
    ],
)
def test_invalid_query_arguments_raise_value_error(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(arguments))):
        TraceStore().query(**arguments)


def test_summary_of_an_unknown_trace_raises_trace_not_found() -> None:
    with pytest.raises(TraceNotFound):
        TraceStore().summary("0" * 31 + "1")


def test_queries_running_beside_writers_see_only_held_traces() -> None:
    store = TraceStore(max_traces=50)
    stop = threading.Event()
    failures: list[BaseException] = []

    def write() -> None:
        trace = 1
        while not stop.is_set():
            spec = SpanSpec(trace % 500 + 1, 1, "none", 0, "w", StatusCode.UNSET, trace, 3, (), 0)
            feed(store, [spec])
            trace += 1

    def read() -> None:
        try:
            for _ in range(200):
                for summary in store.query(limit=100, min_duration_ms=0):
                    assert summary.spans >= 1
                    assert summary.root_name == "w"
        except BaseException as error:  # reported by the main thread
            failures.append(error)

    writer = threading.Thread(target=write)
    reader = threading.Thread(target=read)
    writer.start()
    reader.start()
    reader.join()
    stop.set()
    writer.join()
    assert not failures
    assert len(store.query(limit=10_000)) == len(store) <= 50
