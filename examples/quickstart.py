"""Quickstart: keep recent traces in memory, bounded, and dump them when something goes wrong.

Run ``python examples/quickstart.py``; caps come from the ``OTEL_BOUNDED_TRACE_*`` variables.
"""

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter

from otel_bounded import TraceStore

store = TraceStore.from_env()  # e.g. OTEL_BOUNDED_TRACE_MAX_TRACES=1000; defaults otherwise
provider = TracerProvider()
provider.add_span_processor(store)
tracer = provider.get_tracer("quickstart")

for order_id in ("A-1", "A-2", "A-3"):
    with (
        tracer.start_as_current_span("handle_order", attributes={"order.id": order_id}),
        tracer.start_as_current_span("db.query", attributes={"db.operation.name": "SELECT"}),
    ):
        pass  # the application's work; each order becomes one trace of two spans

print(f"{len(store)} traces held, least recently active first:")
for trace_id in store.trace_ids():
    spans = store.get(trace_id)  # ReadableSpan objects, usable with any SpanExporter
    print(f"  {trace_id:032x}: {', '.join(span.name for span in spans)}")

# A flight recorder: when something goes wrong, push what is held to any exporter.
exported = store.export_to(ConsoleSpanExporter())
print(f"exported {exported} spans; {store.evicted_count} traces evicted so far")
provider.shutdown()
