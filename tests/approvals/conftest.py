"""Fixtures: a fake clock, real OpenTelemetry SDK providers, and a ledger wired to both."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded.approvals import ApprovalLedger
from tests.approvals.helpers import Telemetry
from tests.support import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    metrics = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[metrics])
    yield Telemetry(tracer_provider, spans, meter_provider, metrics)
    tracer_provider.shutdown()
    meter_provider.shutdown()


@pytest.fixture
def ledger(clock: FakeClock, otel: Telemetry) -> ApprovalLedger:
    return ApprovalLedger(
        clock=clock, tracer_provider=otel.tracer_provider, meter_provider=otel.meter_provider
    )
