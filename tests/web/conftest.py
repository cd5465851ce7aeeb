from __future__ import annotations

from collections.abc import Iterator

import pytest

from otel_bounded import TraceStore
from otel_bounded.web import WebView, serve
from tests.web.helpers import recorded_store


@pytest.fixture
def recorded() -> tuple[TraceStore, dict[str, int]]:
    return recorded_store()


@pytest.fixture
def view(recorded: tuple[TraceStore, dict[str, int]]) -> Iterator[WebView]:
    with serve(recorded[0]) as running:
        yield running
