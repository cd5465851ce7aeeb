"""Fixtures: a fake clock, real OpenTelemetry SDK providers, and a ledger wired to both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded.approvals import ApprovalLedger
from tests.approvals.helpers import Telemetry
from tests.servers import REDIS, RunningServer, launch
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


@pytest.fixture(scope="session")
def approval_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real redis-server for the approval tests; each test starts from an empty database."""
    server = launch(REDIS, tmp_path_factory.mktemp("approval-redis"))
    yield server
    server.stop()


@pytest.fixture
def redis_url(approval_redis: RunningServer) -> str:
    url = f"redis://{approval_redis.address}/0"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.close()
    return url


@pytest.fixture(params=["memory", "sqlite", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store in turn: this process, a SQLite file, a real Redis."""
    if request.param == "memory":
        return "memory"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'approvals.db'}"
    return str(request.getfixturevalue("redis_url"))


@pytest.fixture(params=["sqlite", "redis"])
def shared_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store that processes and replicas share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'approvals.db'}"
    return str(request.getfixturevalue("redis_url"))
