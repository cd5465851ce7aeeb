"""TraceStore metrics (read with a real MeterProvider) and its single warning log."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator

import pytest
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import SimpleLogRecordProcessor

try:
    from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter as InMemoryLogExporter
except ImportError:  # SDKs before the rename
    from opentelemetry.sdk._logs.export import InMemoryLogExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, Metric

from otel_bounded import TraceStore
from otel_bounded.telemetry import (
    COMPONENT_NAME,
    COMPONENT_TYPE,
    DROP_REASON,
    EVICTION_REASON,
    TRACE_STORE_CAPACITY,
    TRACE_STORE_EVICTIONS,
    TRACE_STORE_SPANS,
    TRACE_STORE_SPANS_DROPPED,
    TRACE_STORE_TRACES,
)
from tests.support import FakeClock
from tests.traces.helpers import make_trace, tracer_for


def collect(reader: InMemoryMetricReader) -> dict[str, Metric]:
    data = reader.get_metrics_data()
    if data is None:
        return {}
    return {
        metric.name: metric
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        if scope_metrics.scope.name == "otel_bounded"
        for metric in scope_metrics.metrics
    }


def points(metric: Metric, component: str) -> dict[str, int]:
    """Values by the metric's reason attribute (or "" when it has none), for one store.

    Evictions are reported per reason and retention class: summed over classes here.
    """
    found = {}
    for point in metric.data.data_points:
        attributes = dict(point.attributes or {})
        if attributes.get(COMPONENT_NAME) != component:
            continue
        reason = attributes.get(EVICTION_REASON, attributes.get(DROP_REASON, ""))
        found[str(reason)] = found.get(str(reason), 0) + int(point.value)
    return found


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


def test_metrics_report_held_capacity_evictions_and_drops(reader: InMemoryMetricReader) -> None:
    clock = FakeClock()
    store = TraceStore(
        max_traces=3,
        max_spans=100,
        max_spans_per_trace=2,
        ttl_seconds=60,
        clock=clock,
        meter_provider=MeterProvider(metric_readers=[reader]),
    )
    tracer = tracer_for(store)
    for _ in range(5):
        make_trace(tracer, children=3)  # 2 of 4 spans per trace dropped
    clock.advance(60)
    make_trace(tracer)
    name = store.component[COMPONENT_NAME]
    metrics = collect(reader)

    assert points(metrics[TRACE_STORE_TRACES], name) == {"": 1}
    assert points(metrics[TRACE_STORE_SPANS], name) == {"": 1}
    assert points(metrics[TRACE_STORE_CAPACITY], name) == {"": 3}
    assert points(metrics[TRACE_STORE_EVICTIONS], name) == {
        "max_traces": 2,
        "max_spans": 0,
        "ttl": 3,
        "max_bytes": 0,
    }
    assert points(metrics[TRACE_STORE_SPANS_DROPPED], name) == {
        "max_spans_per_trace": 10,
        "max_spans": 0,
        "error": 0,
        "max_bytes": 0,
    }
    assert metrics[TRACE_STORE_TRACES].unit == "{trace}"
    assert metrics[TRACE_STORE_SPANS].unit == "{span}"
    assert metrics[TRACE_STORE_EVICTIONS].data.is_monotonic
    assert metrics[TRACE_STORE_SPANS_DROPPED].data.is_monotonic


def test_several_stores_are_told_apart_like_the_sdk_processors(
    reader: InMemoryMetricReader,
) -> None:
    provider = MeterProvider(metric_readers=[reader])
    small = TraceStore(max_traces=1, meter_provider=provider)
    large = TraceStore(max_traces=50, meter_provider=provider)
    make_trace(tracer_for(small))
    make_trace(tracer_for(small))
    assert small.component[COMPONENT_TYPE] == large.component[COMPONENT_TYPE]
    assert small.component[COMPONENT_NAME] != large.component[COMPONENT_NAME]
    capacity = collect(reader)[TRACE_STORE_CAPACITY]
    assert points(capacity, small.component[COMPONENT_NAME]) == {"": 1}
    assert points(capacity, large.component[COMPONENT_NAME]) == {"": 50}


def test_a_collected_store_stops_reporting_instead_of_being_kept_alive(
    reader: InMemoryMetricReader,
) -> None:
    import gc
    import weakref

    provider = MeterProvider(metric_readers=[reader])
    kept = TraceStore(max_traces=7, meter_provider=provider)
    store = TraceStore(meter_provider=provider)
    name = store.component[COMPONENT_NAME]
    alive = weakref.ref(store)
    del store
    gc.collect()
    assert alive() is None
    capacity = collect(reader)[TRACE_STORE_CAPACITY]
    assert points(capacity, name) == {}
    assert points(capacity, kept.component[COMPONENT_NAME]) == {"": 7}


def warnings_in(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        record
        for record in caplog.records
        if record.name == "otel_bounded" and record.levelno == logging.WARNING
    ]


def test_exactly_one_warning_at_the_first_eviction_naming_cap_reason_and_variable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = TraceStore(max_traces=2)
    tracer = tracer_for(store)
    with caplog.at_level(logging.DEBUG, logger="otel_bounded"):
        make_trace(tracer)
        make_trace(tracer)
        assert warnings_in(caplog) == []
        for _ in range(50):
            make_trace(tracer)
    (warning,) = warnings_in(caplog)
    message = warning.getMessage()
    assert "evicted its first trace" in message
    assert "max_traces" in message
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in message
    assert [r for r in caplog.records if r.name == "otel_bounded"] == [warning]


def test_the_first_eviction_warning_names_the_span_cap_when_spans_run_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = TraceStore(max_spans=4)
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        for _ in range(5):
            make_trace(tracer_for(store), children=1)
    (warning,) = warnings_in(caplog)
    assert "max_spans" in warning.getMessage()
    assert "OTEL_BOUNDED_TRACE_MAX_SPANS" in warning.getMessage()


def test_the_first_dropped_span_is_logged_once_too(caplog: pytest.LogCaptureFixture) -> None:
    store = TraceStore(max_spans_per_trace=1)
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        for _ in range(3):
            make_trace(tracer_for(store), children=4)
    (warning,) = warnings_in(caplog)
    assert "dropped its first span" in warning.getMessage()
    assert "OTEL_BOUNDED_TRACE_MAX_SPANS_PER_TRACE" in warning.getMessage()


@pytest.fixture
def otel_logs() -> Iterator[InMemoryLogExporter]:
    exporter = InMemoryLogExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    with warnings.catch_warnings():
        # SDK 1.45 deprecates its LoggingHandler for a separate package; it still works.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.INFO, logger_provider=provider)
    logger = logging.getLogger("otel_bounded")
    logger.addHandler(handler)
    try:
        yield exporter
    finally:
        logger.removeHandler(handler)
        provider.shutdown()


def test_the_warning_reaches_collectors_through_the_sdk_logging_handler(
    otel_logs: InMemoryLogExporter,
) -> None:
    store = TraceStore(max_traces=1)
    tracer = tracer_for(store)
    for _ in range(3):
        make_trace(tracer)
    records = [log.log_record for log in otel_logs.get_finished_logs()]
    assert len(records) == 1
    assert records[0].severity_number is SeverityNumber.WARN
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in str(records[0].body)


def test_the_store_emits_no_spans_itself() -> None:
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    store = TraceStore(max_traces=1)
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    provider.add_span_processor(store)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    own = provider.get_tracer("app")
    for _ in range(3):
        with own.start_as_current_span("work"):
            pass
    assert [span.name for span in exporter.get_finished_spans()] == ["work"] * 3
