"""Tail export: whole traces handed to a real BatchSpanProcessor when their local root ends."""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode

from otel_bounded import TraceStore, telemetry
from otel_bounded.traces import ExportPolicy
from tests.traces.helpers import make_trace


class Pipeline:
    """A store exporting through a real BatchSpanProcessor into memory."""

    def __init__(self, policy: ExportPolicy | None = None, **store_arguments: object) -> None:
        self.exported = InMemorySpanExporter()
        self.batch = BatchSpanProcessor(self.exported, schedule_delay_millis=60_000)
        self.store = TraceStore(export=self.batch, export_when=policy, **store_arguments)  # type: ignore[arg-type]
        self.provider = TracerProvider()
        self.provider.add_span_processor(self.store)
        self.tracer = self.provider.get_tracer("tests")

    def shipped(self) -> dict[int, list[str]]:
        """Span names exported so far, by trace id, in the order they were handed over."""
        self.store.force_flush()
        by_trace: dict[int, list[str]] = {}
        for span in self.exported.get_finished_spans():
            by_trace.setdefault(span.context.trace_id, []).append(span.name)
        return by_trace


@pytest.fixture
def pipeline() -> Iterator[Pipeline]:
    made = Pipeline(ExportPolicy(ratio=0.0))
    yield made
    made.provider.shutdown()


def failing_trace(tracer: trace.Tracer, children: int = 2) -> int:
    with tracer.start_as_current_span("root") as root:
        for index in range(children):
            with tracer.start_as_current_span(f"child-{index}") as child:
                if index == children - 1:
                    child.set_status(Status(StatusCode.ERROR, "boom"))
        return root.get_span_context().trace_id


def test_an_error_trace_is_exported_whole_and_a_healthy_one_not(pipeline: Pipeline) -> None:
    healthy = make_trace(pipeline.tracer, children=3)
    failing = failing_trace(pipeline.tracer)

    assert pipeline.shipped() == {failing: ["child-0", "child-1", "root"]}
    stats = pipeline.store.stats()
    assert stats.exported_by_reason == {"error": 1, "slow": 0, "security": 0, "ratio": 0}
    assert stats.not_exported == 1
    # Exported or not, both stay held: the store is still the flight recorder.
    assert healthy in pipeline.store
    assert failing in pipeline.store


def test_a_slow_local_root_exports_its_trace() -> None:
    made = Pipeline(ExportPolicy(error=False, ratio=0.0), slow_threshold_ms=100)
    start = 1_700_000_000 * 10**9
    slow = made.tracer.start_span("slow", start_time=start)
    slow.end(end_time=start + 100 * 10**6)
    quick = made.tracer.start_span("quick", start_time=start)
    quick.end(end_time=start + 99 * 10**6)
    assert made.shipped() == {slow.get_span_context().trace_id: ["slow"]}
    assert made.store.stats().exported_by_reason["slow"] == 1
    made.provider.shutdown()


def test_a_security_refusal_exports_its_trace_and_names_security(pipeline: Pipeline) -> None:
    with pipeline.tracer.start_as_current_span("request") as root:
        with pipeline.tracer.start_as_current_span(
            "check", attributes={telemetry.OUTCOME: "revoked"}
        ):
            pass
        refused = root.get_span_context().trace_id
    assert pipeline.shipped() == {refused: ["check", "request"]}
    assert pipeline.store.stats().exported_by_reason["security"] == 1


def test_conditions_left_out_of_the_policy_export_nothing() -> None:
    made = Pipeline(ExportPolicy(error=False, slow=False, security=False, ratio=0.0))
    failing_trace(made.tracer)
    assert made.shipped() == {}
    assert made.store.stats().not_exported == 1
    made.provider.shutdown()


def test_a_span_ending_after_the_decision_follows_it(pipeline: Pipeline) -> None:
    tracer = pipeline.tracer
    root = tracer.start_span("root")
    context = trace.set_span_in_context(root)
    late = tracer.start_span("late", context=context)
    late_healthy_root = tracer.start_span("healthy-root")
    late_healthy = tracer.start_span(
        "healthy-late", context=trace.set_span_in_context(late_healthy_root)
    )
    root.set_status(Status(StatusCode.ERROR))
    root.end()
    late_healthy_root.end()
    assert pipeline.shipped() == {root.get_span_context().trace_id: ["root"]}
    late.end()  # after its trace was exported: exported too
    late_healthy.end()  # after its trace was not: not exported either
    assert pipeline.shipped() == {root.get_span_context().trace_id: ["root", "late"]}
    assert pipeline.store.stats().exported_by_reason["error"] == 1


def test_decisions_are_remembered_up_to_max_traces() -> None:
    made = Pipeline(ExportPolicy(ratio=0.0), max_traces=3)
    tracer = made.tracer
    root = tracer.start_span("root")
    late = tracer.start_span("late", context=trace.set_span_in_context(root))
    root.set_status(Status(StatusCode.ERROR))
    root.end()
    for _ in range(3):  # three more decisions push the first one out
        make_trace(tracer)
    late.end()
    trace_id = root.get_span_context().trace_id
    # Forgotten, the late span is a trace of its own now with no local root: not exported.
    assert made.shipped() == {trace_id: ["root"]}
    made.provider.shutdown()


def test_the_ratio_keeps_the_traces_the_sdk_ratio_sampler_keeps() -> None:
    ratio = 0.25
    made = Pipeline(ExportPolicy(error=False, slow=False, security=False, ratio=ratio))
    sampler = TraceIdRatioBased(ratio)
    ids = RandomIdGenerator()
    random.seed(20_240_601)  # the SDK's id generator draws from the global RNG
    expected = set()
    for _ in range(400):
        trace_id = ids.generate_trace_id()
        result = sampler.should_sample(None, trace_id, "root")
        if result.decision is Decision.RECORD_AND_SAMPLE:
            expected.add(trace_id)
        context = trace.SpanContext(
            trace_id, ids.generate_span_id(), is_remote=True, trace_flags=trace.TraceFlags(1)
        )
        with made.tracer.start_as_current_span(
            "root", context=trace.set_span_in_context(trace.NonRecordingSpan(context))
        ):
            pass
    shipped = set(made.shipped())
    assert shipped == expected
    assert 60 <= len(expected) <= 140  # about a quarter, so the comparison means something
    stats = made.store.stats()
    assert stats.exported_by_reason["ratio"] == len(expected)
    assert stats.not_exported == 400 - len(expected)
    made.provider.shutdown()


def test_an_exporter_is_wrapped_in_a_batch_processor_and_shut_down_with_the_store() -> None:
    exported = InMemorySpanExporter()
    store = TraceStore(export=exported)
    provider = TracerProvider()
    provider.add_span_processor(store)
    failing = failing_trace(provider.get_tracer("tests"), children=1)
    assert store.force_flush()
    assert {span.context.trace_id for span in exported.get_finished_spans()} == {failing}
    provider.shutdown()
    assert exported._stopped  # shut down through the store's batch processor


def test_a_failing_downstream_never_raises_into_the_application(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken(SimpleSpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            raise RuntimeError("downstream is broken")

    store = TraceStore(export=Broken(InMemorySpanExporter()))
    provider = TracerProvider()
    provider.add_span_processor(store)
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        failing = failing_trace(provider.get_tracer("tests"), children=1)
        failing_trace(provider.get_tracer("tests"), children=1)
    assert failing in store
    stats = store.stats()
    assert stats.received_spans == stats.spans == 4
    assert stats.dropped_spans == 0
    assert stats.export_failures == 2
    (warning,) = [r for r in caplog.records if "failed" in r.getMessage()]
    assert "downstream" in warning.getMessage()
    assert "dropped" not in warning.getMessage()


def test_export_when_without_export_is_refused() -> None:
    with pytest.raises(ValueError, match="export_when needs export"):
        TraceStore(export_when=ExportPolicy())
    with pytest.raises(ValueError, match="SpanProcessor or a SpanExporter"):
        TraceStore(export="otlp")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("text", "policy"),
    [
        ("error", ExportPolicy(error=True, slow=False, security=False)),
        (
            " Error , SLOW,ratio:0.01 ",
            ExportPolicy(error=True, slow=True, security=False, ratio=0.01),
        ),
        ("security,ratio:1", ExportPolicy(error=False, slow=False, security=True, ratio=1.0)),
        ("", ExportPolicy(error=False, slow=False, security=False)),
    ],
)
def test_export_when_text_parses(text: str, policy: ExportPolicy) -> None:
    assert ExportPolicy.parse(text) == policy


@pytest.mark.parametrize(
    "text", ["errors", "ratio:2", "ratio:-0.1", "ratio:x", "ratio:", "slow;error"]
)
def test_bad_export_when_text_raises_value_error(text: str) -> None:
    with pytest.raises(ValueError, match=r"condition|ratio|number"):
        ExportPolicy.parse(text)


# -- dump ------------------------------------------------------------------------


def test_dump_exports_held_traces_filtered_by_time_and_status() -> None:
    store = TraceStore()
    provider = TracerProvider()
    provider.add_span_processor(store)
    tracer = provider.get_tracer("tests")
    start = 1_700_000_000 * 10**9
    old = tracer.start_span("old", start_time=start)
    old.end(end_time=start + 10**9)
    recent = tracer.start_span("recent", start_time=start + 100 * 10**9)
    recent.set_status(Status(StatusCode.ERROR))
    recent.end(end_time=start + 101 * 10**9)
    everything, since, failing = (InMemorySpanExporter() for _ in range(3))

    assert store.dump(everything) == 2
    assert store.dump(since, since=1_700_000_050) == 1
    assert store.dump(failing, status=StatusCode.ERROR) == 1
    assert [s.name for s in everything.get_finished_spans()] == ["old", "recent"]
    assert [s.name for s in since.get_finished_spans()] == ["recent"]
    assert [s.name for s in failing.get_finished_spans()] == ["recent"]
    with pytest.raises(ValueError, match="since"):
        store.dump(everything, since="yesterday")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="status"):
        store.dump(everything, status="error")  # type: ignore[arg-type]


# -- from_env ----------------------------------------------------------------------


def test_from_env_exports_to_the_console_when_asked() -> None:
    # A process of its own: the console exporter writes to the stdout it was imported with.
    script = textwrap.dedent(
        """
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.trace import Status, StatusCode
        from otel_bounded import TraceStore

        provider = TracerProvider()
        provider.add_span_processor(TraceStore.from_env())
        tracer = provider.get_tracer("tests")
        with tracer.start_as_current_span("failing-root"):
            with tracer.start_as_current_span("failing-child") as child:
                child.set_status(Status(StatusCode.ERROR))
        with tracer.start_as_current_span("healthy-root"):
            pass
        provider.shutdown()
        """
    )
    environment = {
        **os.environ,
        "OTEL_BOUNDED_TRACE_EXPORT": "console",
        "OTEL_BOUNDED_TRACE_EXPORT_WHEN": "error",
    }
    result = subprocess.run(
        [sys.executable, "-c", script],
        env=environment,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert '"name": "failing-child"' in result.stdout
    assert '"name": "failing-root"' in result.stdout
    assert "healthy-root" not in result.stdout


def test_from_env_warns_about_a_bad_policy_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_EXPORT", "console")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_EXPORT_WHEN", "errors-only")
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        store = TraceStore.from_env()
    assert "OTEL_BOUNDED_TRACE_EXPORT_WHEN" in caplog.text
    assert store._tail is not None
    assert store._tail.policy == ExportPolicy()
    store.shutdown()


def test_from_env_says_once_when_a_ratio_sampler_hides_traces_from_tail_export(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_EXPORT", "console")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.1")
    with caplog.at_level(logging.INFO, logger="otel_bounded"):
        store = TraceStore.from_env()
    notes = [r for r in caplog.records if r.levelno == logging.INFO]
    assert len(notes) == 1
    assert "parentbased_traceidratio (0.1)" in notes[0].getMessage()
    assert "sees only" in notes[0].getMessage()
    store.shutdown()
    caplog.clear()
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_EXPORT", "none")
    with caplog.at_level(logging.INFO, logger="otel_bounded"):
        TraceStore.from_env()
    assert not caplog.records  # no tail export: nothing to say
