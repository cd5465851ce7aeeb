"""Zero-code registration adds one store to a provider, whichever door and however often.

The model: a provider holds at most one `TraceStore` after any sequence of
registrations (instrumentor, configurator, an application's own store), and
every span it ends reaches that one store exactly once.
"""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_bounded import TraceStore, registration
from otel_bounded.instrumentor import BoundedInstrumentor


@pytest.fixture(autouse=True)
def no_registered_store(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registration, "_store", None)


def stores_on(provider: TracerProvider) -> list[TraceStore]:
    processors = provider._active_span_processor._span_processors  # the SDK's only record
    return [processor for processor in processors if isinstance(processor, TraceStore)]


def end_spans(provider: TracerProvider, count: int) -> None:
    tracer = provider.get_tracer("test")
    for _ in range(count):
        with tracer.start_as_current_span("work"):
            pass


DOORS = ("instrumentor", "registration", "own_store")


@settings(max_examples=25, deadline=None)
@given(doors=st.lists(st.sampled_from(DOORS), min_size=1, max_size=6))
def test_any_sequence_of_registrations_leaves_one_store_that_sees_each_span_once(
    doors: list[str],
) -> None:
    registration._store = None
    provider = TracerProvider()
    instrumentor = BoundedInstrumentor()
    try:
        for door in doors:
            if door == "instrumentor":
                instrumentor.uninstrument()
                instrumentor.instrument(tracer_provider=provider)
            elif door == "registration":
                registration.add_trace_store(provider)
            elif not stores_on(provider):
                provider.add_span_processor(TraceStore())  # the application's own
        end_spans(provider, 3)

        held = stores_on(provider)
        assert len(held) == 1
        assert held[0].stats().received_spans == 3
        if set(doors) != {"own_store"}:
            assert registration.get_trace_store() is held[0]
    finally:
        instrumentor.uninstrument()
        provider.shutdown()


def test_a_provider_that_is_not_the_sdks_gets_a_warning_and_no_store(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        assert registration.add_trace_store(trace.NoOpTracerProvider()) is None
    assert "NoOpTracerProvider" in caplog.text
    assert registration.get_trace_store() is None


def test_a_store_that_cannot_be_built_is_a_warning_not_an_exception(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:

    def refuse(**_arguments: object) -> TraceStore:
        raise MemoryError("no room")

    monkeypatch.setattr(TraceStore, "from_env", refuse)
    provider = TracerProvider()
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        assert registration.add_trace_store(provider) is None
    assert "otel_bounded added no TraceStore (MemoryError: no room)" in caplog.text
    assert stores_on(provider) == []


def test_both_entry_points_are_declared_and_load() -> None:
    from importlib.metadata import entry_points

    from otel_bounded.configurator import BoundedConfigurator

    (instrumentor,) = entry_points(group="opentelemetry_instrumentor", name="otel_bounded")
    (configurator,) = entry_points(group="opentelemetry_configurator", name="otel_bounded")
    assert instrumentor.load() is BoundedInstrumentor
    assert configurator.load() is BoundedConfigurator
    assert BoundedInstrumentor().instrumentation_dependencies() == ()
