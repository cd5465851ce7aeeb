"""Tail export end to end: the SDK's BatchSpanProcessor and OTLP exporter, to a real receiver."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Status, StatusCode

from otel_bounded import TraceStore, telemetry
from otel_bounded.traces import ExportPolicy
from tests.e2e.otlp_receiver import (
    OTLPReceiver,
    otlp_receiver_fixture,  # noqa: F401  (registers the otlp_receiver fixture)
)

# Only force_flush and shutdown export, so every export is one the test asked for.
_NEVER_MILLIS = 3_600_000


def test_only_the_decided_traces_reach_the_receiver_whole(otlp_receiver: OTLPReceiver) -> None:
    batch = BatchSpanProcessor(
        OTLPSpanExporter(**otlp_receiver.exporter_arguments()), schedule_delay_millis=_NEVER_MILLIS
    )
    store = TraceStore(export=batch, export_when=ExportPolicy(slow=False))
    provider = TracerProvider(
        resource=Resource.create({"service.name": "tail-export"}), shutdown_on_exit=False
    )
    provider.add_span_processor(store)
    tracer = provider.get_tracer("tests")

    for index in range(20):  # healthy traffic: held, never shipped
        with (
            tracer.start_as_current_span(f"healthy-{index}"),
            tracer.start_as_current_span("healthy-child"),
        ):
            pass
    with tracer.start_as_current_span("failing") as failing:
        with tracer.start_as_current_span("failing-step") as step:
            step.set_status(Status(StatusCode.ERROR, "timed out"))
        late = tracer.start_span("failing-late", context=trace.set_span_in_context(failing))
    with (
        tracer.start_as_current_span("approval") as approval,
        tracer.start_as_current_span(
            "otel_bounded.approval.approve", attributes={telemetry.OUTCOME: "refused"}
        ),
    ):
        pass
    late.end()  # after its trace was decided: follows it
    assert store.force_flush()

    otlp_receiver.wait_for_span("failing-late")
    spans = otlp_receiver.spans()
    by_trace: dict[bytes, list[str]] = {}
    for span in spans:
        by_trace.setdefault(span.trace_id, []).append(span.name)
    failing_id = failing.get_span_context().trace_id.to_bytes(16, "big")
    approval_id = approval.get_span_context().trace_id.to_bytes(16, "big")
    assert by_trace == {
        failing_id: ["failing-step", "failing", "failing-late"],
        approval_id: ["otel_bounded.approval.approve", "approval"],
    }
    step_span = next(s for s in spans if s.name == "failing-step")
    assert (step_span.status_code, step_span.status_message) == (2, "timed out")
    assert step_span.resource["service.name"] == "tail-export"
    stats = store.stats()
    assert stats.exported_by_reason == {"error": 1, "slow": 0, "security": 1, "ratio": 0}
    assert stats.not_exported == 20
    assert stats.received_spans == stats.spans == 45
    provider.shutdown()


def test_otel_bounded_trace_export_otlp_ships_through_the_exporters_own_variables(
    otlp_receiver: OTLPReceiver,
) -> None:
    script = textwrap.dedent(
        """
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace import Status, StatusCode
        from otel_bounded import TraceStore

        provider = TracerProvider()
        provider.add_span_processor(TraceStore.from_env())
        tracer = provider.get_tracer("tests")
        with tracer.start_as_current_span("healthy"):
            pass
        with tracer.start_as_current_span("failing") as span:
            span.set_status(Status(StatusCode.ERROR))
        provider.shutdown()
        """
    )
    environment = otlp_receiver.subprocess_environment(
        {**os.environ, "OTEL_BOUNDED_TRACE_EXPORT": "otlp"}
    )
    subprocess.run(
        [sys.executable, "-c", script], env=environment, check=True, timeout=60, capture_output=True
    )
    otlp_receiver.wait_for_span("failing")
    assert [span.name for span in otlp_receiver.spans()] == ["failing"]
