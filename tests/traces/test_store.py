"""TraceStore caps, order, expiry and reads."""

from __future__ import annotations

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otel_bounded import DropReason, TraceNotFound, TraceStore
from tests.support import FakeClock
from tests.traces.helpers import make_trace, open_trace, tracer_for


def invariant_holds(store: TraceStore) -> bool:
    stats = store.stats()
    return stats.received_spans == stats.spans + stats.evicted_spans + stats.dropped_spans


def test_least_recently_active_trace_is_evicted_first() -> None:
    store = TraceStore(max_traces=3)
    tracer = tracer_for(store)
    first, second, third = (make_trace(tracer) for _ in range(3))
    make_trace(tracer)  # a fourth trace pushes out the first
    store_ids = store.trace_ids()
    assert first not in store_ids
    assert store_ids[:2] == (second, third)
    assert store.evicted_count == 1
    assert store.stats().evictions_by_reason["max_traces"] == 1


def test_a_new_span_refreshes_its_trace_so_it_is_evicted_last() -> None:
    store = TraceStore(max_traces=2)
    tracer = tracer_for(store)
    with open_trace(tracer) as long_session:
        make_trace(tracer)  # another trace in between
        with tracer.start_as_current_span("still-working"):
            pass
        ids_before = store.trace_ids()
    assert ids_before[-1] == long_session


def test_the_cap_on_traces_is_never_exceeded_and_counts_add_up() -> None:
    store = TraceStore(max_traces=5, max_spans=1_000)
    tracer = tracer_for(store)
    for _ in range(40):
        make_trace(tracer, children=2)
        assert len(store) <= 5
    stats = store.stats()
    assert stats.traces == 5
    assert stats.evicted_traces == 35
    assert stats.evicted_spans == 35 * 3
    assert invariant_holds(store)


def test_whole_oldest_traces_are_evicted_to_stay_under_max_spans() -> None:
    store = TraceStore(max_traces=100, max_spans=10)
    tracer = tracer_for(store)
    ids = [make_trace(tracer, children=3) for _ in range(5)]
    stats = store.stats()
    assert stats.spans <= 10
    assert store.trace_ids() == tuple(ids[-2:])
    assert stats.evictions_by_reason["max_spans"] == 3
    assert stats.evictions_by_reason["max_traces"] == 0
    assert invariant_holds(store)


def test_spans_past_max_spans_per_trace_are_dropped_and_counted() -> None:
    store = TraceStore(max_spans_per_trace=4)
    tracer = tracer_for(store)
    trace_id = make_trace(tracer, children=9)
    spans = store.get(trace_id)
    assert [span.name for span in spans] == ["child-0", "child-1", "child-2", "child-3"]
    stats = store.stats()
    assert stats.drops_by_reason[DropReason.MAX_SPANS_PER_TRACE] == 6
    assert stats.dropped_spans == 6
    assert invariant_holds(store)


def test_a_span_that_cannot_fit_even_alone_is_dropped_not_the_trace() -> None:
    store = TraceStore(max_spans=3, max_spans_per_trace=100)
    tracer = tracer_for(store)
    trace_id = make_trace(tracer, children=4)
    assert len(store.get(trace_id)) == 3
    assert store.stats().drops_by_reason[DropReason.MAX_SPANS] == 2
    assert invariant_holds(store)


def test_caps_are_independent_of_each_other() -> None:
    store = TraceStore(max_traces=1_000, max_spans=5, max_spans_per_trace=2)
    tracer = tracer_for(store)
    for _ in range(4):
        make_trace(tracer, children=3)
    stats = store.stats()
    assert stats.spans <= 5
    assert all(len(store.get(trace_id)) <= 2 for trace_id in store.trace_ids())
    assert invariant_holds(store)


def test_a_trace_idle_for_ttl_is_never_returned() -> None:
    clock = FakeClock()
    store = TraceStore(ttl_seconds=60, clock=clock)
    tracer = tracer_for(store)
    old = make_trace(tracer)
    clock.advance(30)
    young = make_trace(tracer)
    clock.advance(30)
    assert old not in store
    assert store.trace_ids() == (young,)
    assert len(store) == 1
    with pytest.raises(TraceNotFound):
        store.get(old)
    assert store.stats().evictions_by_reason["ttl"] == 1


def test_a_long_session_that_keeps_producing_spans_stays_young() -> None:
    clock = FakeClock()
    store = TraceStore(ttl_seconds=60, clock=clock)
    tracer = tracer_for(store)
    with open_trace(tracer) as session:
        for _ in range(5):
            clock.advance(50)
            with tracer.start_as_current_span("step"):
                pass
        assert store.trace_ids() == (session,)
    assert len(store.get(session)) == 6


def test_a_span_for_an_evicted_trace_starts_it_afresh() -> None:
    clock = FakeClock()
    store = TraceStore(ttl_seconds=10, clock=clock)
    tracer = tracer_for(store)
    with open_trace(tracer) as trace_id:
        with tracer.start_as_current_span("early"):
            pass
        clock.advance(10)
        with tracer.start_as_current_span("late"):
            pass
    assert [span.name for span in store.get(trace_id)] == ["late", "root"]
    assert invariant_holds(store)


def test_get_rebuilds_faithful_readable_spans() -> None:
    store = TraceStore()
    resource = Resource.create({"service.name": "agent", "deployment.environment": "test"})
    tracer = tracer_for(store, resource=resource)
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        link_context = root.get_span_context()
        with tracer.start_as_current_span(
            "tool.call",
            kind=SpanKind.CLIENT,
            attributes={"tool": "search", "tags": ("a", "b"), "n": 3, "ok": True},
            links=[Link(link_context, {"why": "retry"})],
        ) as child:
            child.add_event("retry", {"attempt": 2})
            child.set_status(Status(StatusCode.ERROR, "tool failed"))
    spans = store.get(link_context.trace_id)
    provider_spans = list(spans)
    rebuilt_child, rebuilt_root = provider_spans
    assert rebuilt_child.name == "tool.call"
    assert rebuilt_child.kind is SpanKind.CLIENT
    assert dict(rebuilt_child.attributes or {}) == {
        "tool": "search",
        "tags": ("a", "b"),
        "n": 3,
        "ok": True,
    }
    assert rebuilt_child.status.status_code is StatusCode.ERROR
    assert rebuilt_child.status.description == "tool failed"
    assert [event.name for event in rebuilt_child.events] == ["retry"]
    assert dict(rebuilt_child.events[0].attributes or {}) == {"attempt": 2}
    assert rebuilt_child.links[0].context == link_context
    assert rebuilt_child.parent is not None
    assert rebuilt_child.parent.span_id == link_context.span_id
    assert rebuilt_child.context.trace_id == link_context.trace_id
    assert rebuilt_child.resource.attributes["service.name"] == "agent"
    assert rebuilt_child.instrumentation_scope is not None
    assert rebuilt_child.instrumentation_scope.name == "tests.scope"
    assert rebuilt_child.instrumentation_scope.version == "1.2.3"
    assert rebuilt_child.start_time is not None
    assert rebuilt_child.end_time is not None
    assert rebuilt_child.start_time <= rebuilt_child.end_time
    assert rebuilt_root.parent is None
    assert rebuilt_root.kind is SpanKind.SERVER
    encoded = encode_spans(provider_spans)
    assert [span.name for span in encoded.resource_spans[0].scope_spans[0].spans] == [
        "tool.call",
        "root",
    ]


def test_get_matches_what_the_sdk_itself_would_export() -> None:
    store = TraceStore()
    reference = InMemorySpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": "tests"}))
    provider.add_span_processor(store)
    provider.add_span_processor(SimpleSpanProcessor(reference))
    tracer = provider.get_tracer("tests.scope", "1.2.3")
    with tracer.start_as_current_span("root", kind=SpanKind.SERVER) as root:
        with tracer.start_as_current_span("call", attributes={"a": 1}) as call:
            call.add_event("e", {"b": 2})
            call.set_status(Status(StatusCode.ERROR, "boom"))
        with tracer.start_as_current_span("other", links=[Link(root.get_span_context())]):
            pass
        trace_id = root.get_span_context().trace_id
    expected = encode_spans(reference.get_finished_spans())
    actual = encode_spans(store.get(trace_id))
    assert actual == expected


def test_dropped_counts_survive_the_round_trip() -> None:
    from opentelemetry.sdk.trace import SpanLimits, TracerProvider

    store = TraceStore()
    provider = TracerProvider(
        span_limits=SpanLimits(max_span_attributes=1, max_events=1, max_links=1)
    )
    provider.add_span_processor(store)
    tracer = provider.get_tracer("limits")
    with tracer.start_as_current_span("root", attributes={"a": 1, "b": 2}) as span:
        span.add_event("one")
        span.add_event("two")
        trace_id = span.get_span_context().trace_id
    (rebuilt,) = store.get(trace_id)
    assert rebuilt.dropped_attributes == 1
    assert rebuilt.dropped_events == 1


def test_reads_accept_the_32_digit_hex_form() -> None:
    store = TraceStore()
    trace_id = make_trace(tracer_for(store))
    by_hex = encode_spans(store.get(f"{trace_id:032x}"))
    assert by_hex == encode_spans(store.get(trace_id))
    assert f"{trace_id:032X}" in store


@pytest.mark.parametrize("bad", ["xyz", "0x" + "1" * 30, "1" * 31, -1, 0, 1 << 128, 1.5, None])
def test_malformed_trace_ids_raise_value_error(bad: object) -> None:
    with pytest.raises(ValueError, match="trace id"):
        TraceStore().get(bad)  # type: ignore[arg-type]


def test_trace_not_found_says_it_may_have_been_evicted_and_names_the_cap() -> None:
    store = TraceStore(max_traces=1)
    tracer = tracer_for(store)
    evicted = make_trace(tracer)
    make_trace(tracer)
    with pytest.raises(TraceNotFound) as caught:
        store.get(evicted)
    assert isinstance(caught.value, KeyError)
    message = str(caught.value)
    assert "evicted" in message
    assert "1 traces evicted" in message
    assert "max_traces=1" in message
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in message


def test_export_to_pushes_held_traces_and_skips_unknown_ids() -> None:
    store = TraceStore()
    tracer = tracer_for(store)
    first = make_trace(tracer, children=2)
    second = make_trace(tracer, children=1)
    exporter = InMemorySpanExporter()
    assert store.export_to(exporter, [first, 12345]) == 3
    assert store.export_to(exporter) == 5
    names = [span.name for span in exporter.get_finished_spans()]
    assert names.count("root") == 3
    assert second in {span.context.trace_id for span in exporter.get_finished_spans()}


def test_clear_forgets_traces_but_keeps_the_counts_consistent() -> None:
    store = TraceStore(max_traces=2)
    tracer = tracer_for(store)
    for _ in range(3):
        make_trace(tracer)
    store.clear()
    assert len(store) == 0
    assert store.evicted_count == 1
    assert invariant_holds(store)


def test_after_shutdown_on_end_ignores_spans() -> None:
    store = TraceStore()
    tracer = tracer_for(store)
    make_trace(tracer)
    store.shutdown()
    make_trace(tracer)
    assert len(store) == 1
    assert store.force_flush() is True


def test_on_end_never_raises_into_the_application() -> None:
    store = TraceStore()
    store.on_end(object())  # type: ignore[arg-type]
    stats = store.stats()
    assert stats.drops_by_reason[DropReason.ERROR] == 1
    assert invariant_holds(store)


@pytest.mark.parametrize(
    ("arguments", "name"),
    [
        ({"max_traces": 0}, "max_traces"),
        ({"max_traces": -5}, "max_traces"),
        ({"max_traces": "10"}, "max_traces"),
        ({"max_spans": 0}, "max_spans"),
        ({"max_spans_per_trace": 2.5}, "max_spans_per_trace"),
        ({"max_spans_per_trace": False}, "max_spans_per_trace"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": -1}, "ttl_seconds"),
        ({"ttl_seconds": "60"}, "ttl_seconds"),
        ({"clock": "now"}, "clock"),
    ],
)
def test_invalid_constructor_arguments_raise_value_error(
    arguments: dict[str, object], name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        TraceStore(**arguments)  # type: ignore[arg-type]


def test_an_encoding_failure_is_logged_once_with_its_traceback_and_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    import logging

    store = TraceStore()
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        for _ in range(3):
            store.on_end(object())  # type: ignore[arg-type]
    (warning,) = [r for r in caplog.records if r.name == "otel_bounded"]
    assert "failed to record a span" in warning.getMessage()
    assert warning.exc_info is not None
    assert store.stats().drops_by_reason[DropReason.ERROR] == 3


def test_membership_of_something_that_is_not_a_trace_id_is_false() -> None:
    store = TraceStore()
    assert "nope" not in store
    assert None not in store


def test_get_is_faithful_across_resources_scopes_remote_parents_and_flags() -> None:
    """Whatever an exporter reads survives: trace state, remote parents, flags, limits."""
    from opentelemetry import trace as trace_api
    from opentelemetry.sdk.trace import SpanLimits
    from opentelemetry.sdk.trace.sampling import ALWAYS_ON, Decision, Sampler, SamplingResult
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    class RecordOnly(Sampler):
        def should_sample(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            return SamplingResult(Decision.RECORD_ONLY)

        def get_description(self) -> str:
            return "record only"

    class KeepAll(SpanProcessor):
        """What the SDK hands processors, recorded-only spans included."""

        def __init__(self) -> None:
            self.spans: list[ReadableSpan] = []

        def on_end(self, span: ReadableSpan) -> None:
            self.spans.append(span)

    store = TraceStore()
    reference = KeepAll()
    remote = SpanContext(
        0x5B8EFFF798038103D269B633813FC60C,
        0xEEE19B7EC3C1B174,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "value"), ("other", "x")]),
    )
    parent = trace_api.set_span_in_context(NonRecordingSpan(remote))
    for service, sampler in (("agent", ALWAYS_ON), ("worker", RecordOnly())):
        provider = TracerProvider(
            resource=Resource.create({"service.name": service}),
            sampler=sampler,
            span_limits=SpanLimits(max_events=1, max_links=1, max_span_attributes=2),
        )
        provider.add_span_processor(store)
        provider.add_span_processor(reference)
        for scope in ("scope.a", "scope.b"):
            tracer = provider.get_tracer(scope, "2.0", schema_url="https://example.com/s")
            with tracer.start_as_current_span(
                f"{service}.{scope}",
                context=parent,
                kind=SpanKind.CONSUMER,
                attributes={"a": 1, "b": 2, "c": 3},
                links=[Link(remote, {"l": 1}), Link(remote)],
            ) as span:
                span.add_event("first", {"e": 1})
                span.add_event("second")
                span.set_status(Status(StatusCode.OK))
    expected = encode_spans(reference.spans)
    assert encode_spans(store.get(remote.trace_id)) == expected
    flags = {span.context.trace_flags for span in store.get(remote.trace_id)}
    assert flags == {TraceFlags(TraceFlags.SAMPLED), TraceFlags(TraceFlags.DEFAULT)}
