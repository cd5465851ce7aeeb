"""Retention classes and the byte budget: what a full store keeps, checked against a model."""

from __future__ import annotations

import gc
import random
import tracemalloc
from collections import OrderedDict
from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.trace import SpanContext, Status, StatusCode, TraceFlags

from otel_bounded import ApprovalLedger, CompactionPolicy, TraceStore, demo, telemetry
from otel_bounded.errors import ApprovalError
from otel_bounded.traces import RetentionClass
from tests.support import FakeClock
from tests.traces.helpers import make_trace, tracer_for
from tests.traces.test_compaction_support import Tree, policies, trees

RESOURCE = Resource({"service.name": "synthetic"})


def synthetic_span(
    trace_id: int, span_id: int, *, error: bool = False, attributes: dict[str, object] | None = None
) -> ReadableSpan:
    """A root-less span as the SDK hands it over: each has a parent, so none is slow."""
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
    parent = SpanContext(trace_id, 1 << 40, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name="op",
        context=context,
        parent=parent,
        resource=RESOURCE,
        attributes=attributes or {},
        status=Status(StatusCode.ERROR) if error else Status(StatusCode.UNSET),
        start_time=1,
        end_time=2,
    )


def sizes() -> tuple[int, int]:
    """(bytes per span, bytes per trace) as the store reports them, for `synthetic_span`s."""
    store = TraceStore()
    store.on_end(synthetic_span(7, 1))
    one = store.stats().bytes
    store.on_end(synthetic_span(7, 2))
    two = store.stats().bytes
    return two - one, 2 * one - two


@dataclass
class Model:
    """The retention rule spelled out naively over whole lists, oldest first."""

    max_traces: int
    max_spans: int
    per_trace: int
    max_bytes: int
    fraction: float
    span_bytes: int
    trace_bytes: int
    traces: OrderedDict[int, list[int]] = field(default_factory=OrderedDict)
    protected: set[int] = field(default_factory=set)

    def bytes_of(self, trace_ids: list[int]) -> int:
        return sum(self.trace_bytes + self.span_bytes * len(self.traces[t]) for t in trace_ids)

    def victim(self, current: int) -> int | None:
        protected = [t for t in self.traces if t in self.protected]
        normal = [t for t in self.traces if t not in self.protected]
        over = (
            len(protected) > int(self.max_traces * self.fraction)
            or sum(len(self.traces[t]) for t in protected) > int(self.max_spans * self.fraction)
            or self.bytes_of(protected) > int(self.max_bytes * self.fraction)
        )
        for queue in (protected, normal) if over else (normal, protected):
            for trace_id in queue:
                if trace_id != current:
                    return trace_id
        return None

    def add(self, trace_id: int, span_id: int, error: bool) -> None:
        spans = self.traces.get(trace_id)
        new = spans is None
        if spans is not None and len(spans) >= self.per_trace:
            return
        own = 0 if spans is None else len(spans)
        need = self.span_bytes + (self.trace_bytes if new else 0)
        if (0 if new else self.bytes_of([trace_id])) + need > self.max_bytes:
            return
        if own + 1 > self.max_spans:
            return
        while (
            (new and len(self.traces) >= self.max_traces)
            or sum(map(len, self.traces.values())) + 1 > self.max_spans
            or self.bytes_of(list(self.traces)) + need > self.max_bytes
        ):
            victim = self.victim(trace_id)
            assert victim is not None
            del self.traces[victim]
            self.protected.discard(victim)
        if new:
            self.traces[trace_id] = []
        self.traces[trace_id].append(span_id)
        self.traces.move_to_end(trace_id)
        if error:
            self.protected.add(trace_id)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=st.lists(st.tuples(st.integers(1, 10), st.booleans()), max_size=100),
    max_traces=st.integers(1, 6),
    max_spans=st.integers(1, 15),
    per_trace=st.integers(1, 6),
    byte_spans=st.integers(1, 20),
    fraction=st.sampled_from([0.0, 0.25, 0.5, 0.9]),
)
def test_store_keeps_what_the_class_aware_model_keeps(
    stream: list[tuple[int, bool]],
    max_traces: int,
    max_spans: int,
    per_trace: int,
    byte_spans: int,
    fraction: float,
) -> None:
    span_bytes, trace_bytes = sizes()
    max_bytes = trace_bytes + byte_spans * span_bytes
    store = TraceStore(
        max_traces,
        max_spans,
        per_trace,
        max_bytes=max_bytes,
        protected_fraction=fraction,
    )
    model = Model(max_traces, max_spans, per_trace, max_bytes, fraction, span_bytes, trace_bytes)
    for span_id, (trace_id, error) in enumerate(stream, start=1):
        # Mostly healthy traffic: an error only on some traces' spans.
        error = error and trace_id % 3 == 0
        store.on_end(synthetic_span(trace_id, span_id, error=error))
        model.add(trace_id, span_id, error)
        stats = store.stats()
        assert store.trace_ids() == tuple(model.traces)
        for held, spans in model.traces.items():
            assert [s.context.span_id for s in store.get(held)] == spans
        assert stats.bytes == model.bytes_of(list(model.traces)) <= max_bytes
        assert stats.received_spans == stats.spans + stats.evicted_spans + stats.dropped_spans
        assert stats.traces_by_class[RetentionClass.ERROR] == len(model.protected)
        assert (
            sum(stats.evictions_by_reason.values())
            == stats.evicted_traces
            == sum(sum(by_reason.values()) for by_reason in stats.evictions_by_class.values())
        )


def test_every_error_trace_survives_a_tenfold_overload_of_normal_traffic() -> None:
    store = TraceStore(max_traces=100, max_spans=10_000, protected_fraction=0.25)
    tracer = tracer_for(store)
    errors = []
    # The window: 25 error traces (the reserved share) among ten times the cap of healthy ones.
    for index in range(1_000):
        make_trace(tracer, children=2)
        if index % 40 == 0:
            with tracer.start_as_current_span("failing") as span:
                span.set_status(Status(StatusCode.ERROR, "boom"))
                errors.append(span.get_span_context().trace_id)

    assert len(errors) == 25
    assert all(trace_id in store for trace_id in errors)
    stats = store.stats()
    assert stats.traces == 100
    assert stats.traces_by_class == {"normal": 75, "error": 25, "slow": 0, "security": 0}
    assert sum(stats.evictions_by_class[RetentionClass.ERROR].values()) == 0
    assert stats.evictions_by_class[RetentionClass.NORMAL]["max_traces"] == 1_000 - 75


def test_without_a_reserve_error_traces_are_evicted_like_any_other() -> None:
    store = TraceStore(max_traces=100, max_spans=10_000, protected_fraction=0.0)
    tracer = tracer_for(store)
    with tracer.start_as_current_span("failing") as span:
        span.set_status(Status(StatusCode.ERROR))
        failing = span.get_span_context().trace_id
    make_trace(tracer)  # the error trace is the oldest, but protected traces go last ...
    for _ in range(99):
        make_trace(tracer)
    # ... until they exceed their (empty) share: then they are the first to go.
    assert failing not in store
    assert store.stats().evictions_by_class[RetentionClass.ERROR]["max_traces"] == 1


def test_protected_traces_beyond_their_share_go_oldest_first() -> None:
    store = TraceStore(max_traces=8, max_spans=1_000, protected_fraction=0.25)
    tracer = tracer_for(store)
    failing = []
    for _ in range(6):
        with tracer.start_as_current_span("failing") as span:
            span.set_status(Status(StatusCode.ERROR))
            failing.append(span.get_span_context().trace_id)
    healthy = [make_trace(tracer) for _ in range(6)]
    # 2 traces (a quarter of 8) are reserved; 6 error traces exceed it, so the oldest go.
    assert [t for t in failing if t in store] == failing[-2:]
    assert [t for t in healthy if t in store] == healthy
    assert store.stats().evictions_by_class[RetentionClass.ERROR]["max_traces"] == 4


def test_a_trace_is_slow_when_its_local_root_takes_the_threshold() -> None:
    store = TraceStore(max_traces=4, slow_threshold_ms=500)  # a reserve of one trace
    tracer = tracer_for(store)
    start = 1_700_000_000 * 10**9
    slow = tracer.start_span("slow", start_time=start)
    slow.end(end_time=start + 500 * 10**6)
    quick = tracer.start_span("quick", start_time=start)
    quick.end(end_time=start + 499 * 10**6)
    for _ in range(5):
        make_trace(tracer)
    assert slow.get_span_context().trace_id in store
    assert quick.get_span_context().trace_id not in store
    assert store.stats().traces_by_class[RetentionClass.SLOW] == 1


def test_a_refused_approval_makes_its_trace_a_security_trace() -> None:
    store = TraceStore(max_traces=4)  # a reserve of one trace
    provider = TracerProvider(resource=Resource.create({"service.name": "tests"}))
    provider.add_span_processor(store)
    clock = FakeClock()
    ledger = ApprovalLedger(clock=clock, tracer_provider=provider)
    tracer = provider.get_tracer("tests")
    with tracer.start_as_current_span("deploy") as root:
        with pytest.raises(ApprovalError):
            ledger.approve("no-such-approval", approver="bob")
        refused = root.get_span_context().trace_id
    for _ in range(5):
        make_trace(tracer)
    assert refused in store
    spans = store.get(refused)
    assert any(s.attributes.get(telemetry.OUTCOME) == "refused" for s in spans)
    assert store.stats().traces_by_class[RetentionClass.SECURITY] == 1


def test_security_outcomes_on_any_span_count_and_others_do_not() -> None:
    store = TraceStore(max_traces=50)
    for index, outcome in enumerate(["revoked", "invalid", "scope_mismatch", "ok", "allowed", 7]):
        store.on_end(synthetic_span(100 + index, 1, attributes={telemetry.OUTCOME: outcome}))
    assert store.stats().traces_by_class == {"normal": 3, "error": 0, "slow": 0, "security": 3}


# -- bytes ---------------------------------------------------------------------


def test_adversarial_megabyte_attributes_stay_within_the_byte_budget() -> None:
    max_bytes = 8_000_000
    store = TraceStore(max_bytes=max_bytes)
    tracer = tracer_for(store)
    make_trace(tracer)  # interned resources and scopes are not what is measured
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(40):
            with tracer.start_as_current_span(
                "llm.call",
                attributes={
                    "gen_ai.prompt": "p" * 1_000_000 + str(index),
                    "gen_ai.tools": tuple("t" * 20_000 for _ in range(10)),
                },
            ) as span:
                span.add_event("completion", {"text": "c" * 200_000})
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    stats = store.stats()
    assert stats.evictions_by_reason["max_bytes"] > 30
    assert stats.bytes <= max_bytes
    assert retained <= 1.1 * max_bytes
    assert stats.received_spans == stats.spans + stats.evicted_spans + stats.dropped_spans


def test_a_span_larger_than_the_budget_is_dropped_and_counted() -> None:
    store = TraceStore(max_bytes=100_000)
    tracer = tracer_for(store)
    kept = make_trace(tracer)
    with tracer.start_as_current_span("huge", attributes={"blob": "x" * 200_000}):
        pass
    stats = store.stats()
    assert kept in store
    assert stats.drops_by_reason["max_bytes"] == 1
    assert stats.evicted_traces == 0


def _no_guard(_index: int) -> None:
    """The demo step's token and approval checks, left out: only the trace is measured."""


def test_the_estimate_is_within_ten_percent_of_measured_memory_on_the_demo_workload() -> None:
    store = TraceStore(max_traces=800, max_spans=8_000)
    tracer = tracer_for(store)
    rng = random.Random(7)
    gc.collect()
    tracemalloc.start()
    try:
        for index in range(1_200):
            demo._agent_step(tracer, rng, index, _no_guard)
        gc.collect()
        estimate = store.stats().bytes
        before = tracemalloc.get_traced_memory()[0]
        store.clear()
        gc.collect()
        measured = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert store.stats().bytes == 0
    assert abs(estimate - measured) <= 0.1 * measured, (estimate, measured)


# -- truncation ----------------------------------------------------------------

attribute_values = st.one_of(
    st.text(max_size=30),
    st.integers(),
    st.floats(allow_nan=False),
    st.booleans(),
    st.lists(st.text(max_size=30), max_size=12).map(tuple),
    st.lists(st.integers(), max_size=12).map(tuple),
)


def truncated(value: object, limit: int) -> object:
    """The model: strings to `limit` characters, sequences to `limit` items of such strings."""
    if isinstance(value, str):
        return value[:limit]
    if isinstance(value, tuple):
        return tuple(truncated(item, limit) for item in value[:limit])
    return value


@settings(max_examples=80, deadline=None)
@given(
    attributes=st.dictionaries(st.text(min_size=1, max_size=8), attribute_values, max_size=6),
    limit=st.integers(1, 15),
)
def test_truncation_cuts_every_long_value_and_names_it_on_the_span(
    attributes: dict[str, object], limit: int
) -> None:
    attributes.pop(telemetry.TRUNCATED_ATTRIBUTES, None)
    store = TraceStore(max_attribute_length=limit)
    store.on_end(synthetic_span(5, 1, attributes=attributes))
    (held,) = store.get(5)
    cut = [key for key, value in attributes.items() if truncated(value, limit) != value]
    expected = {key: truncated(value, limit) for key, value in attributes.items()}
    if cut:
        expected[telemetry.TRUNCATED_ATTRIBUTES] = tuple(cut)
    assert dict(held.attributes) == expected
    assert store.stats().truncated_attributes == len(cut)


def test_truncation_cuts_event_attributes_and_leaves_hostile_unicode_whole_characters() -> None:
    store = TraceStore(max_attribute_length=4)
    tracer = tracer_for(store)
    with tracer.start_as_current_span(
        "s", attributes={"name": "🙂🙃\u202e\U0001d518nicode"}
    ) as span:
        span.add_event("e", {"text": "\u0000\ud800abcdef", "n": 12345678})
        trace_id = span.get_span_context().trace_id
    (held,) = store.get(trace_id)
    assert held.attributes["name"] == "🙂🙃\u202e\U0001d518"
    assert held.attributes[telemetry.TRUNCATED_ATTRIBUTES] == ("name",)
    (event,) = held.events
    assert dict(event.attributes) == {
        "text": "\u0000\ud800ab",
        "n": 12345678,
        telemetry.TRUNCATED_ATTRIBUTES: ("text",),
    }
    assert store.stats().truncated_attributes == 2


def test_without_a_length_limit_nothing_is_truncated() -> None:
    store = TraceStore()
    store.on_end(synthetic_span(5, 1, attributes={"long": "x" * 100_000}))
    (held,) = store.get(5)
    assert held.attributes == {"long": "x" * 100_000}
    assert store.stats().truncated_attributes == 0


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("max_bytes", 0),
        ("max_bytes", 1.5),
        ("max_attribute_length", 0),
        ("max_attribute_length", True),
        ("protected_fraction", 1),
        ("protected_fraction", -0.1),
        ("protected_fraction", "0.2"),
        ("slow_threshold_ms", 0),
        ("slow_threshold_ms", float("inf")),
    ],
)
def test_invalid_retention_arguments_raise_value_error(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=argument):
        TraceStore(**{argument: value})  # type: ignore[arg-type]


def test_a_truncated_refusal_span_still_makes_a_security_trace() -> None:
    store = TraceStore(max_attribute_length=8)
    store.on_end(
        synthetic_span(9, 1, attributes={telemetry.OUTCOME: "revoked", "reason": "r" * 50})
    )
    (held,) = store.get(9)
    assert held.attributes["reason"] == "r" * 8
    assert store.stats().traces_by_class[RetentionClass.SECURITY] == 1


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    forest=st.lists(trees(), min_size=1, max_size=3),
    policy=policies(),
    max_spans=st.integers(2, 40),
    byte_spans=st.integers(2, 40),
    fraction=st.sampled_from([0.0, 0.25, 0.6]),
)
def test_caps_bytes_and_accounting_hold_with_compaction_and_classes(
    forest: list[Tree],
    policy: CompactionPolicy,
    max_spans: int,
    byte_spans: int,
    fraction: float,
) -> None:
    span_bytes, trace_bytes = sizes()
    max_bytes = trace_bytes + byte_spans * span_bytes
    store = TraceStore(
        max_traces=3,
        max_spans=max_spans,
        max_bytes=max_bytes,
        protected_fraction=fraction,
        compaction=policy,
    )
    # Interleave the trees' spans, each tree in the order the SDK ended them.
    queues = [list(tree.spans) for tree in forest]
    while any(queues):
        for queue in queues:
            if queue:
                store.on_end(queue.pop(0))
                stats = store.stats()
                assert stats.traces <= 3
                assert stats.spans <= max_spans
                assert 0 <= stats.bytes <= max_bytes
                assert stats.received_spans == (
                    stats.spans + stats.evicted_spans + stats.dropped_spans + stats.spans_compacted
                )
    store.clear()
    assert store.stats().bytes == 0
