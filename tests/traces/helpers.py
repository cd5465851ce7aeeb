"""Spans made by the real SDK for trace store tests."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer

from otel_bounded import TraceStore


def tracer_for(store: TraceStore, *, resource: Resource | None = None) -> Tracer:
    provider = TracerProvider(resource=resource or Resource.create({"service.name": "tests"}))
    provider.add_span_processor(store)
    return provider.get_tracer("tests.scope", "1.2.3")


def make_trace(tracer: Tracer, children: int = 0, name: str = "root") -> int:
    """A root span with `children` child spans; returns the trace id."""
    with tracer.start_as_current_span(name) as root:
        for index in range(children):
            with tracer.start_as_current_span(f"child-{index}", attributes={"index": index}):
                pass
        return root.get_span_context().trace_id


@contextmanager
def open_trace(tracer: Tracer, name: str = "root") -> Iterator[int]:
    """A root span kept open while the block adds children; yields the trace id."""
    with tracer.start_as_current_span(name) as root:
        yield root.get_span_context().trace_id
