"""What a user prints: `repr(TraceStore)` and `TraceStoreStats` as plain data."""

from __future__ import annotations

import dataclasses
import json

import pytest

from otel_bounded import TraceStore
from tests.traces.helpers import make_trace, tracer_for


def test_repr_shows_held_against_every_cap() -> None:
    store = TraceStore(max_traces=3, max_spans=50, max_spans_per_trace=9, ttl_seconds=30)
    tracer = tracer_for(store)
    for _ in range(5):
        make_trace(tracer, children=2)
    text = repr(store)
    assert "3/3 traces" in text
    assert "9/50 spans" in text
    assert "max_spans_per_trace=9" in text
    assert "ttl_seconds=30" in text


def test_stats_are_plain_data_and_read_only() -> None:
    store = TraceStore(max_traces=2)
    tracer = tracer_for(store)
    for _ in range(3):
        make_trace(tracer)
    stats = store.stats()
    data = stats.as_dict()
    assert data == dataclasses.asdict(stats)
    assert json.loads(json.dumps(data)) == data
    assert data["evictions_by_reason"]["max_traces"] == 1
    assert data["ttl_seconds"] is None
    data["evictions_by_reason"]["max_traces"] = 99  # a copy: the caller's to change
    assert stats.evictions_by_reason["max_traces"] == 1
    with pytest.raises(TypeError, match="read-only"):
        stats.evictions_by_reason["max_traces"] = 0  # type: ignore[index]
    with pytest.raises(TypeError, match="read-only"):
        stats.drops_by_reason.clear()  # type: ignore[attr-defined]
