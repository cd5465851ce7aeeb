"""TraceStore with compaction: chatty traces stay whole, nothing a reader needs is lost."""

from __future__ import annotations

import logging
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from otel_bounded import CompactionPolicy, TraceStore, operation_totals
from otel_bounded.errors import TraceNotFound
from otel_bounded.telemetry import COMPOSITE_COUNT, UnresolvedReason
from tests.traces.test_compaction_support import Tree, policies, trees

MS = 1_000_000
T0 = 1_700_000_000 * 10**9


class Recorder:
    """A store and, beside it, the SDK's own copy of every span, to compare against."""

    def __init__(self, store: TraceStore) -> None:
        self.store = store
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(store)
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer: Tracer = provider.get_tracer("tests.store_compaction")

    def chatty_trace(self, calls: int, *, name: str = "db.query", close: bool = True) -> int:
        """A root and `calls` fast identical children at explicit times; returns the trace id."""
        root = self.tracer.start_span("agent.step", start_time=T0)
        context = root.get_span_context()
        from opentelemetry import trace

        parent = trace.set_span_in_context(root)
        for index in range(calls):
            start = T0 + (index + 1) * MS
            child = self.tracer.start_span(
                name, context=parent, start_time=start, attributes={"db.system": "postgresql"}
            )
            child.end(end_time=start + MS // 2)
        if close:
            root.end(end_time=T0 + (calls + 2) * MS)
        return context.trace_id

    def sdk_spans(self, trace_id: int) -> list:  # type: ignore[type-arg]
        return [s for s in self.exporter.get_finished_spans() if s.context.trace_id == trace_id]


def accounted(store: TraceStore) -> bool:
    stats = store.stats()
    return stats.received_spans == (
        stats.spans + stats.evicted_spans + stats.dropped_spans + stats.spans_compacted
    )


def test_a_chatty_trace_is_compacted_and_its_totals_survive() -> None:
    recorder = Recorder(TraceStore(compaction=CompactionPolicy()))
    trace_id = recorder.chatty_trace(500)
    held = recorder.store.get(trace_id)
    assert len(held) < 20
    assert operation_totals(held) == operation_totals(recorder.sdk_spans(trace_id))
    encoded = encode_spans(held).resource_spans[0].scope_spans[0].spans
    assert len(encoded) == len(held)
    stats = recorder.store.stats()
    assert stats.spans_compacted == 501 - len(held)
    assert stats.compactions >= 1
    assert accounted(recorder.store)


def test_compaction_lets_a_chatty_trace_stay_whole_under_the_per_trace_cap() -> None:
    without = Recorder(TraceStore(max_spans_per_trace=50))
    trace_id = without.chatty_trace(500)
    assert without.store.stats().dropped_spans == 451

    compacting = Recorder(TraceStore(max_spans_per_trace=50, compaction=CompactionPolicy()))
    trace_id = compacting.chatty_trace(500)
    assert compacting.store.stats().dropped_spans == 0
    held = compacting.store.get(trace_id)
    assert operation_totals(held) == operation_totals(compacting.sdk_spans(trace_id))
    assert accounted(compacting.store)


def test_a_trace_is_compacted_each_time_it_grows_by_compact_at_spans() -> None:
    policy = CompactionPolicy(compact_at_spans=10)
    recorder = Recorder(TraceStore(compaction=policy))
    recorder.chatty_trace(25, close=False)  # the root is still open: no local-root pass
    stats = recorder.store.stats()
    # A pass at 10 held spans leaves the first, one composite and the last; the
    # next is due when 10 more arrived (13 held), and absorbs all but the new
    # last; the last 5 wait for the next pass.
    assert stats.compactions == 2
    assert stats.spans == 3 + 5
    assert stats.spans_compacted == 25 - 8


def test_under_span_pressure_oldest_traces_are_compacted_before_any_is_evicted() -> None:
    policy = CompactionPolicy(compact_at_spans=1_000)  # no pass but under pressure
    recorder = Recorder(TraceStore(max_spans=100, compaction=policy))
    first = recorder.chatty_trace(40, close=False)
    second = recorder.chatty_trace(40, close=False)
    third = recorder.chatty_trace(40, close=False)
    stats = recorder.store.stats()
    assert stats.evicted_traces == 0
    assert set(recorder.store.trace_ids()) == {first, second, third}
    assert stats.spans <= 100
    assert stats.compactions >= 1
    assert accounted(recorder.store)


def test_without_compaction_the_same_pressure_evicts_whole_traces() -> None:
    recorder = Recorder(TraceStore(max_spans=100))
    for _ in range(3):
        recorder.chatty_trace(40, close=False)
    assert recorder.store.stats().evicted_traces >= 1


def test_error_spans_are_kept_verbatim_and_split_runs() -> None:
    recorder = Recorder(TraceStore(compaction=CompactionPolicy(compact_at_spans=5)))
    from opentelemetry import trace

    root = recorder.tracer.start_span("agent.step", start_time=T0)
    parent = trace.set_span_in_context(root)
    for index in range(12):
        child = recorder.tracer.start_span(
            "db.query", context=parent, start_time=T0 + (index + 1) * MS
        )
        if index == 6:
            child.set_status(Status(StatusCode.ERROR, "deadlock detected"))
        child.end(end_time=T0 + (index + 1) * MS + 1000)
    root.end(end_time=T0 + 20 * MS)
    held = recorder.store.get(root.get_span_context().trace_id)
    errors = [s for s in held if s.status.status_code is StatusCode.ERROR]
    assert len(errors) == 1
    assert errors[0].status.description == "deadlock detected"
    assert COMPOSITE_COUNT not in (errors[0].attributes or {})
    # The first call, five merged, the error, four merged, the last call.
    assert [s.attributes[COMPOSITE_COUNT] for s in held if COMPOSITE_COUNT in s.attributes] == [
        5,
        4,
    ]


def test_a_child_ending_after_its_parent_was_merged_is_reparented_to_the_composite() -> None:
    from opentelemetry import trace

    recorder = Recorder(TraceStore(compaction=CompactionPolicy(compact_at_spans=4)))
    root = recorder.tracer.start_span("agent.step", start_time=T0)
    parent = trace.set_span_in_context(root)
    calls = []
    for index in range(4):
        call = recorder.tracer.start_span(
            "cache.get", context=parent, start_time=T0 + (index + 1) * MS
        )
        calls.append(call)
    late_child = recorder.tracer.start_span(
        "cache.refresh", context=trace.set_span_in_context(calls[2]), start_time=T0 + 3 * MS + 10
    )
    for index, call in enumerate(calls):
        call.end(end_time=T0 + (index + 1) * MS + 500)
    late_child.end(end_time=T0 + 9 * MS)  # after its parent was merged away
    root.end(end_time=T0 + 10 * MS)
    held = recorder.store.get(root.get_span_context().trace_id)
    held_ids = {span.context.span_id for span in held}
    (composite,) = [s for s in held if COMPOSITE_COUNT in (s.attributes or {})]
    (refresh,) = [s for s in held if s.name == "cache.refresh"]
    assert refresh.parent is not None
    assert refresh.parent.span_id == composite.context.span_id
    for span in held:
        assert span.parent is None or span.parent.span_id in held_ids


def test_compaction_is_read_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", "TRUE")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_AT_SPANS", "8")
    recorder = Recorder(TraceStore.from_env())
    recorder.chatty_trace(20, close=False)
    assert recorder.store.stats().compactions >= 1

    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", "yes")
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        off = Recorder(TraceStore.from_env())
    off.chatty_trace(100)
    assert off.store.stats().compactions == 0
    assert any("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED" in r.getMessage() for r in caplog.records)


def test_compaction_metrics_count_passes_and_spans_merged_away() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    store = TraceStore(
        compaction=CompactionPolicy(), meter_provider=MeterProvider(metric_readers=[reader])
    )
    recorder = Recorder(store)
    recorder.chatty_trace(200)
    stats = store.stats()
    data = reader.get_metrics_data()
    assert data is not None
    values = {
        metric.name: point.value
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for metric in sm.metrics
        for point in metric.data.data_points
        if dict(point.attributes or {}).get("otel.component.name")
        == store.component["otel.component.name"]
    }
    assert values["otel_bounded.trace_store.compactions"] == stats.compactions
    assert values["otel_bounded.trace_store.spans.compacted"] == stats.spans_compacted
    assert stats.spans_compacted > 0


def test_invalid_compaction_argument_raises_value_error() -> None:
    with pytest.raises(ValueError, match="compaction"):
        TraceStore(compaction="yes please")  # type: ignore[arg-type]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees(), policies(), st.integers(1, 12))
def test_a_compacting_store_keeps_totals_parents_and_counts_on_random_trees(
    tree: Tree, policy: CompactionPolicy, every: int
) -> None:
    store = TraceStore(compaction=replace(policy, compact_at_spans=every))
    for span in tree.spans:  # in the order the SDK ended them
        store.on_end(span)
    (trace_id,) = {span.context.trace_id for span in tree.spans}
    held = store.get(trace_id)
    assert operation_totals(held) == operation_totals(tree.spans)
    held_ids = {span.context.span_id for span in held}
    for span in held:
        if span.parent is not None and not span.parent.is_remote:
            assert span.parent.span_id in held_ids, f"{span.name} lost its parent"
    for span in tree.spans:
        if span.status.status_code is StatusCode.ERROR:
            assert any(kept.context.span_id == span.context.span_id for kept in held)
    assert accounted(store)
    assert sum(
        len(scope.spans) for rs in encode_spans(held).resource_spans for scope in rs.scope_spans
    ) == len(held)


def _late_child_scenario(store: TraceStore) -> tuple[Recorder, int]:
    """Six fast calls whose third gets a child ending only after the calls were compacted."""
    from opentelemetry import trace

    recorder = Recorder(store)
    root = recorder.tracer.start_span("agent.step", start_time=T0)
    parent = trace.set_span_in_context(root)
    calls = [
        recorder.tracer.start_span("q", context=parent, start_time=T0 + (i + 1) * MS)
        for i in range(6)
    ]
    late = recorder.tracer.start_span(
        "late.child", context=trace.set_span_in_context(calls[2]), start_time=T0 + 3 * MS + 1
    )
    for index, call in enumerate(calls):
        call.end(end_time=T0 + (index + 1) * MS + 500)
    other = recorder.tracer.start_span("other", context=parent, start_time=T0 + 8 * MS)
    other.end(end_time=T0 + 9 * MS)
    late.end(end_time=T0 + 10 * MS)  # arrives when the trace is full: compacted first
    root.end(end_time=T0 + 11 * MS)
    return recorder, root.get_span_context().trace_id


@pytest.mark.parametrize(
    "store",
    [
        pytest.param(
            TraceStore(max_spans_per_trace=7, compaction=CompactionPolicy(compact_at_spans=100)),
            id="at the per-trace cap",
        ),
        pytest.param(
            TraceStore(max_spans=7, compaction=CompactionPolicy(compact_at_spans=100)),
            id="under span-cap pressure",
        ),
    ],
)
def test_a_late_child_whose_parent_is_merged_just_before_it_is_stored_keeps_a_parent(
    store: TraceStore,
) -> None:
    recorder, trace_id = _late_child_scenario(store)
    held = recorder.store.get(trace_id)
    held_ids = {span.context.span_id for span in held}
    (late,) = [span for span in held if span.name == "late.child"]
    assert late.parent is not None
    assert late.parent.span_id in held_ids
    sdk_late = next(s for s in recorder.sdk_spans(trace_id) if s.name == "late.child")
    assert sdk_late.parent is not None
    stand_in = recorder.store.resolve(trace_id, sdk_late.parent.span_id)
    assert stand_in is not None
    assert stand_in.context.span_id == late.parent.span_id
    assert COMPOSITE_COUNT in (stand_in.attributes or {})
    assert accounted(recorder.store)


def test_a_full_trace_with_nothing_to_merge_is_not_recompacted_for_every_dropped_span(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import otel_bounded.traces.compactor as store_module

    passes = []
    real = store_module.compact_records

    def counting(records, policy, **options):  # type: ignore[no-untyped-def]
        passes.append(len(records))
        return real(records, policy, **options)

    monkeypatch.setattr(store_module, "compact_records", counting)
    from opentelemetry import trace

    recorder = Recorder(
        TraceStore(max_spans_per_trace=50, compaction=CompactionPolicy(compact_at_spans=1_000))
    )
    root = recorder.tracer.start_span("agent.step", start_time=T0)
    parent = trace.set_span_in_context(root)
    for index in range(500):  # distinct names: nothing can merge
        child = recorder.tracer.start_span(
            f"step-{index}", context=parent, start_time=T0 + (index + 1) * MS
        )
        child.end(end_time=T0 + (index + 1) * MS + 10)
    assert recorder.store.stats().drops_by_reason["max_spans_per_trace"] == 450
    # One pass when the trace first filled up; none for the 449 spans dropped after it.
    assert passes == [50]


def test_remembered_merged_ids_are_bounded_by_their_own_budget_and_every_loss_is_counted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    policy = CompactionPolicy(compact_at_spans=16, max_remembered_ids=200)
    store = TraceStore(max_spans=200, compaction=policy)
    recorder = Recorder(store)
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        for _ in range(50):
            recorder.chatty_trace(300, close=False)
        stats = store.stats()
    compactor = store._compactor
    assert compactor is not None
    assert compactor._remembered <= 200
    assert sum(len(ids[0]) for ids in compactor._merged.values()) == compactor._remembered
    assert stats.spans <= 200
    assert accounted(store)
    # Every merged id is remembered, was forgotten and counted, or left with its trace.
    forgotten = stats.unresolved_by_reason[UnresolvedReason.MAX_REMEMBERED_IDS]
    assert forgotten > 0
    warnings = [r for r in caplog.records if "max_remembered_ids" in r.getMessage()]
    assert len(warnings) == 1


def test_late_children_of_merged_parents_resolve_whatever_the_span_cap() -> None:
    # The reported case: max_spans=64, nothing evicted or dropped, yet late children
    # pointed at parent ids no longer held, because remembered ids were trimmed to
    # the span cap. They have a budget of their own now.
    from opentelemetry import trace

    store = TraceStore(max_spans=64, compaction=CompactionPolicy(compact_at_spans=8))
    recorder = Recorder(store)
    root = recorder.tracer.start_span("invoke_agent", start_time=T0)
    parent = trace.set_span_in_context(root)
    late_children = []
    for index in range(400):
        call = recorder.tracer.start_span(
            "execute_tool",
            context=parent,
            start_time=T0 + (index + 1) * MS,
            attributes={"gen_ai.tool.name": "read_file", "call.id": f"call-{index}"},
        )
        if index % 20 == 5:
            late_children.append(
                recorder.tracer.start_span(
                    "callback",
                    context=trace.set_span_in_context(call),
                    start_time=T0 + (index + 1) * MS + 1,
                )
            )
        call.end(end_time=T0 + (index + 1) * MS + 500)
    for child in late_children:
        child.end(end_time=T0 + 500 * MS)
    root.end(end_time=T0 + 501 * MS)
    trace_id = root.get_span_context().trace_id

    stats = store.stats()
    assert stats.evicted_traces == stats.dropped_spans == 0
    assert sum(stats.unresolved_by_reason.values()) == 0
    held = store.get(trace_id)
    held_ids = {span.context.span_id for span in held}
    callbacks = [span for span in held if span.name == "callback"]
    assert len(callbacks) == 20
    for span in callbacks:
        assert span.parent is not None
        assert span.parent.span_id in held_ids
    for span in recorder.sdk_spans(trace_id):
        assert store.resolve(trace_id, span.context.span_id) is not None


def test_resolve_returns_the_span_itself_or_the_composite_that_stands_for_it() -> None:
    recorder = Recorder(TraceStore(compaction=CompactionPolicy()))
    trace_id = recorder.chatty_trace(10)
    spans = recorder.sdk_spans(trace_id)
    held = {span.context.span_id: span for span in recorder.store.get(trace_id)}

    for span in spans:
        resolved = recorder.store.resolve(trace_id, span.context.span_id)
        assert resolved is not None
        assert resolved.context.span_id in held
        if span.context.span_id in held:
            assert resolved.context.span_id == span.context.span_id
        else:
            assert COMPOSITE_COUNT in (resolved.attributes or {})
    assert recorder.store.resolve(trace_id, 12345) is None
    with pytest.raises(TraceNotFound):
        recorder.store.resolve(trace_id + 1, spans[0].context.span_id)
    for bad in (0, -1, 1 << 64, True, "1", None):
        with pytest.raises(ValueError, match="span id"):
            recorder.store.resolve(trace_id, bad)  # type: ignore[arg-type]


def test_a_link_to_a_merged_span_resolves_to_its_composite() -> None:
    from opentelemetry import trace

    recorder = Recorder(TraceStore(compaction=CompactionPolicy(compact_at_spans=6)))
    root = recorder.tracer.start_span("invoke_agent", start_time=T0)
    parent = trace.set_span_in_context(root)
    calls = []
    for index in range(8):
        call = recorder.tracer.start_span("q", context=parent, start_time=T0 + (index + 1) * MS)
        call.end(end_time=T0 + (index + 1) * MS + 500)
        calls.append(call)
    summary = recorder.tracer.start_span(
        "summarize",
        context=parent,
        start_time=T0 + 20 * MS,
        links=[trace.Link(calls[3].get_span_context())],
    )
    summary.end(end_time=T0 + 21 * MS)
    root.end(end_time=T0 + 22 * MS)
    trace_id = root.get_span_context().trace_id

    target = calls[3].get_span_context().span_id
    assert target not in {s.context.span_id for s in recorder.store.get(trace_id)}
    resolved = recorder.store.resolve(trace_id, target)
    assert resolved is not None
    assert COMPOSITE_COUNT in (resolved.attributes or {})


def test_unresolved_ids_are_reported_as_a_metric_from_zero() -> None:
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader

    reader = InMemoryMetricReader()
    store = TraceStore(
        compaction=CompactionPolicy(max_remembered_ids=0),
        meter_provider=MeterProvider(metric_readers=[reader]),
    )

    def unresolved() -> dict[str, int]:
        data = reader.get_metrics_data()
        assert data is not None
        return {
            dict(point.attributes or {})["otel_bounded.compaction.unresolved.reason"]: point.value
            for rm in data.resource_metrics
            for sm in rm.scope_metrics
            for metric in sm.metrics
            if metric.name == "otel_bounded.trace_store.compaction.unresolved"
            for point in metric.data.data_points
            if dict(point.attributes or {}).get("otel.component.name")
            == store.component["otel.component.name"]
        }

    assert unresolved() == {"max_remembered_ids": 0}
    recorder = Recorder(store)
    recorder.chatty_trace(20)
    assert unresolved() == {"max_remembered_ids": store.stats().spans_compacted}
    assert store.stats().spans_compacted > 0


def test_at_its_cap_a_trace_of_calls_with_per_call_ids_keeps_every_span_with_flagged_counts() -> (
    None
):
    # Exact distinct counts would keep a composite per pass here and fill the trace;
    # at its cap, composites merge anyway and say their counts are lower bounds.
    from opentelemetry import trace

    store = TraceStore(max_spans_per_trace=20, compaction=CompactionPolicy(compact_at_spans=8))
    recorder = Recorder(store)
    root = recorder.tracer.start_span("invoke_agent", start_time=T0)
    parent = trace.set_span_in_context(root)
    for index in range(500):
        call = recorder.tracer.start_span(
            "execute_tool",
            context=parent,
            start_time=T0 + (index + 1) * MS,
            attributes={"gen_ai.tool.name": "bash", "call.id": f"call-{index}"},
        )
        call.end(end_time=T0 + (index + 1) * MS + 500)
    root.end(end_time=T0 + 501 * MS)

    trace_id = root.get_span_context().trace_id
    assert store.stats().dropped_spans == 0
    held = store.get(trace_id)
    flags = [
        flag
        for span in held
        for flag in (span.attributes or {}).get("otel_bounded.composite.varied_distinct_exact", ())
    ]
    assert False in flags
    assert operation_totals(held) == operation_totals(
        recorder.sdk_spans(root.get_span_context().trace_id)
    )
    assert accounted(store)
