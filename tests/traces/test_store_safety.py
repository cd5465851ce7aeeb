"""TraceStore under random streams, many threads, fork, and hundreds of thousands of spans."""

from __future__ import annotations

import gc
import os
import threading
import tracemalloc
from collections import OrderedDict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanContext, TraceFlags

from otel_bounded import TraceStore
from tests.support import FakeClock
from tests.traces.helpers import make_trace, tracer_for

RESOURCE = Resource({"service.name": "synthetic"})


def synthetic_span(trace_id: int, span_id: int) -> ReadableSpan:
    """A span as the SDK hands it to processors, built directly because it is cheaper."""
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(name="op", context=context, resource=RESOURCE, start_time=1, end_time=2)


class ReferenceStore:
    """The specification, spelled out naively: what TraceStore must hold after each span."""

    def __init__(self, max_traces: int, max_spans: int, per_trace: int, ttl: float) -> None:
        self.traces: OrderedDict[int, list[int]] = OrderedDict()
        self.touched: dict[int, float] = {}
        self.max_traces, self.max_spans, self.per_trace, self.ttl = (
            max_traces,
            max_spans,
            per_trace,
            ttl,
        )

    def expire(self, now: float) -> None:
        for trace_id in [t for t in self.traces if now - self.touched[t] >= self.ttl]:
            del self.traces[trace_id]

    def add(self, trace_id: int, span_id: int, now: float) -> None:
        self.expire(now)
        spans = self.traces.get(trace_id)
        if spans is None:
            while len(self.traces) >= self.max_traces:
                self.traces.popitem(last=False)
            spans = self.traces[trace_id] = []
        elif len(spans) >= self.per_trace:
            return
        if len(spans) + 1 > self.max_spans:
            return
        self.traces.move_to_end(trace_id)
        while sum(map(len, self.traces.values())) + 1 > self.max_spans:
            self.traces.popitem(last=False)
        spans.append(span_id)
        self.touched[trace_id] = now


@settings(max_examples=80, deadline=None)
@given(
    stream=st.lists(st.tuples(st.integers(1, 12), st.floats(0, 5)), max_size=120),
    max_traces=st.integers(1, 6),
    max_spans=st.integers(1, 15),
    per_trace=st.integers(1, 6),
    ttl=st.floats(1, 30),
)
def test_store_matches_the_specification_on_random_span_streams(
    stream: list[tuple[int, float]],
    max_traces: int,
    max_spans: int,
    per_trace: int,
    ttl: float,
) -> None:
    clock = FakeClock(0.0)
    store = TraceStore(max_traces, max_spans, per_trace, ttl_seconds=ttl, clock=clock)
    reference = ReferenceStore(max_traces, max_spans, per_trace, ttl)
    for span_id, (trace_id, pause) in enumerate(stream, start=1):
        clock.advance(pause)
        store.on_end(synthetic_span(trace_id, span_id))
        reference.add(trace_id, span_id, clock.now)
        stats = store.stats()
        assert stats.traces <= max_traces
        assert stats.spans <= max_spans
        reference.expire(clock.now)
        assert store.trace_ids() == tuple(reference.traces)
        for held in reference.traces:
            assert [s.context.span_id for s in store.get(held)] == reference.traces[held]
        assert stats.received_spans == stats.spans + stats.evicted_spans + stats.dropped_spans


def test_eviction_is_deterministic_for_the_same_stream_and_clock() -> None:
    def run() -> tuple[tuple[int, ...], dict[str, int]]:
        clock = FakeClock(0.0)
        store = TraceStore(max_traces=7, max_spans=25, ttl_seconds=40, clock=clock)
        for index in range(2_000):
            clock.advance(index % 3)
            store.on_end(synthetic_span(1 + (index * 7919) % 31, index + 1))
        stats = store.stats()
        return store.trace_ids(), dict(stats.evictions_by_reason)

    assert run() == run()


def test_caps_hold_at_every_moment_under_eight_threads() -> None:
    store = TraceStore(max_traces=50, max_spans=300, max_spans_per_trace=20)
    tracer = tracer_for(store)
    stop = threading.Event()
    violations: list[str] = []
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            for _ in range(300):
                make_trace(tracer, children=4)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def watch() -> None:
        while not stop.is_set():
            stats = store.stats()
            if stats.traces > 50 or stats.spans > 300:
                violations.append(repr(stats))

    watcher = threading.Thread(target=watch)
    watcher.start()
    producers = [threading.Thread(target=produce) for _ in range(8)]
    for thread in producers:
        thread.start()
    for thread in producers:
        thread.join()
    stop.set()
    watcher.join()
    assert errors == []
    assert violations == []
    stats = store.stats()
    assert stats.received_spans == 8 * 300 * 5
    assert stats.received_spans == stats.spans + stats.evicted_spans + stats.dropped_spans


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_the_lock_is_held_can_still_record() -> None:
    store = TraceStore(max_traces=10)
    tracer = tracer_for(store)
    make_trace(tracer)
    read_end, write_end = os.pipe()
    with store._lock:  # another thread would hold it at fork time in real life
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            try:
                make_trace(tracer, children=2)
                os.write(write_end, str(len(store)).encode())
            finally:
                os._exit(0)
    os.close(write_end)
    child_reply = os.read(read_end, 16).decode()
    os.close(read_end)
    _, status = os.waitpid(pid, 0)
    assert os.WEXITSTATUS(status) == 0
    assert child_reply == "2"
    assert len(store) == 1


def test_memory_stays_flat_through_hundreds_of_thousands_of_spans() -> None:
    store = TraceStore(max_traces=1_000, max_spans=50_000)

    def feed(first_trace: int, traces: int) -> None:
        for trace_id in range(first_trace, first_trace + traces):
            for span in range(5):
                store.on_end(synthetic_span(trace_id, trace_id * 8 + span + 1))

    feed(1, 2_000)  # fill the store and the interning tables
    gc.collect()
    tracemalloc.start()
    try:
        feed(10_000, 20_000)
        gc.collect()
        before, _ = tracemalloc.get_traced_memory()
        feed(100_000, 40_000)  # 200k more spans
        gc.collect()
        after, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    stats = store.stats()
    assert stats.traces == 1_000
    assert stats.received_spans == 310_000
    # A full store's footprint does not grow with the spans pushed through it.
    assert after - before < 256 * 1024, f"grew by {after - before} bytes"


def child_span(trace_id: int, span_id: int, parent_id: int, start: int) -> ReadableSpan:
    """A fast child span under `parent_id`, as the SDK hands it to processors."""
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=TraceFlags(1))
    parent = SpanContext(trace_id, parent_id, is_remote=False, trace_flags=TraceFlags(1))
    return ReadableSpan(
        name=f"call-{span_id % 3}",
        context=context,
        parent=parent,
        resource=RESOURCE,
        start_time=start,
        end_time=start + 1_000,
    )


@settings(max_examples=60, deadline=None)
@given(
    stream=st.lists(st.tuples(st.integers(1, 6), st.floats(-3, 5), st.booleans()), max_size=150),
    max_traces=st.integers(1, 5),
    max_spans=st.integers(2, 30),
    per_trace=st.integers(2, 12),
    at_spans=st.integers(1, 8),
)
def test_a_compacting_store_keeps_its_caps_and_counts_on_random_streams(
    stream: list[tuple[int, float, bool]],
    max_traces: int,
    max_spans: int,
    per_trace: int,
    at_spans: int,
) -> None:
    from otel_bounded import CompactionPolicy

    clock = FakeClock(0.0)
    store = TraceStore(
        max_traces,
        max_spans,
        per_trace,
        ttl_seconds=20,
        clock=clock,
        compaction=CompactionPolicy(compact_at_spans=at_spans),
    )
    for span_id, (trace_id, pause, is_root) in enumerate(stream, start=2):
        clock.advance(pause)  # the clock also steps back
        if is_root:
            store.on_end(synthetic_span(trace_id, span_id))
        else:
            store.on_end(child_span(trace_id, span_id, 1, span_id * 10_000))
        stats = store.stats()
        assert stats.traces <= max_traces
        assert stats.spans <= max_spans
        assert stats.received_spans == (
            stats.spans + stats.evicted_spans + stats.dropped_spans + stats.spans_compacted
        )
        held = store.trace_ids()
        assert len(held) == len(store) == stats.traces
        assert sum(len(store.get(trace_id)) for trace_id in held) == stats.spans
        assert all(len(store.get(trace_id)) <= per_trace for trace_id in held)
