"""Fixtures for the token tests: a fake clock, real SDK telemetry, a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from otel_bounded.tokens import HMACTokenProvider
from tests.servers import REDIS, RunningServer, launch
from tests.support import FakeClock
from tests.tokens.helpers import SECRET, Telemetry


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def otel() -> Iterator[Telemetry]:
    telemetry = Telemetry.create()
    yield telemetry
    telemetry.shutdown()


@pytest.fixture
def provider(clock: FakeClock, otel: Telemetry) -> HMACTokenProvider:
    return HMACTokenProvider(SECRET, clock=clock, **otel.providers())


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RunningServer]:
    server = launch(REDIS, tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RunningServer) -> str:
    return f"redis://{redis_server.address}/0"
