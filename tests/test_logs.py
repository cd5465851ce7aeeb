"""A first-eviction WARNING reaches a person and OpenTelemetry whatever logging looks like.

Every combination of handlers an application may have configured runs in one
fresh interpreter (the logs API's global provider is set once per process),
and each outcome is compared with a model written from the rule itself:

- stderr gets the warning exactly once unless a handler of the application's
  on the way (not OpenTelemetry's bridge) takes WARNINGs;
- OpenTelemetry gets it once per bridge on the way, or once through the logs
  API when there is none, always with its structured attributes.
"""

from __future__ import annotations

import itertools
import json
import logging
import subprocess
import sys
import textwrap

import pytest

from otel_bounded import TraceStore, logs, telemetry

SCRIPT = textwrap.dedent(
    """
    import io, itertools, json, logging, sys, warnings
    from opentelemetry import _logs
    from opentelemetry.instrumentation.logging.handler import LoggingHandler as Instrumentation
    from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
    from opentelemetry.sdk._logs.export import InMemoryLogExporter, SimpleLogRecordProcessor
    from opentelemetry.sdk.trace import TracerProvider
    from otel_bounded import TraceStore

    warnings.simplefilter("ignore", DeprecationWarning)  # the SDK's bridge is deprecated
    exporter = InMemoryLogExporter()
    provider = LoggerProvider()
    provider.add_log_record_processor(SimpleLogRecordProcessor(exporter))
    _logs.set_logger_provider(provider)
    ours, root = logging.getLogger("otel_bounded"), logging.getLogger()
    BRIDGES = ("none", "sdk", "instrumentation")
    results = []
    for app_on_ours, app_on_root, bridge_on_ours, bridge_on_root, propagate in itertools.product(
        ("none", "warning", "error"), (False, True), (False, True), BRIDGES, (False, True)
    ):
        added = []
        app_output = io.StringIO()
        if app_on_ours != "none":
            handler = logging.StreamHandler(app_output)
            handler.setLevel(logging.WARNING if app_on_ours == "warning" else logging.ERROR)
            added.append((ours, handler))
        if app_on_root:
            added.append((root, logging.StreamHandler(app_output)))
        if bridge_on_ours:
            added.append((ours, LoggingHandler(logger_provider=provider)))
        if bridge_on_root != "none":
            bridge = LoggingHandler if bridge_on_root == "sdk" else Instrumentation
            added.append((root, bridge(logger_provider=provider)))
        for logger, handler in added:
            logger.addHandler(handler)
        ours.propagate = propagate
        stderr, sys.stderr = sys.stderr, io.StringIO()
        exporter.clear()
        try:
            tracer_provider = TracerProvider()
            store = TraceStore(max_traces=1)
            tracer_provider.add_span_processor(store)
            tracer = tracer_provider.get_tracer("t")
            for _ in range(2):
                with tracer.start_as_current_span("work"):
                    pass
        finally:
            captured, sys.stderr = sys.stderr.getvalue(), stderr
            for logger, handler in added:
                logger.removeHandler(handler)
            ours.propagate = True
        records = [
            {"body": str(r.log_record.body), "attributes": dict(r.log_record.attributes or {})}
            for r in exporter.get_finished_logs()
        ]
        results.append({
            "config": [app_on_ours, app_on_root, bridge_on_ours, bridge_on_root, propagate],
            "stderr": captured.count("evicted its first trace"),
            "app": app_output.getvalue().count("evicted its first trace"),
            "records": [r for r in records if "evicted its first trace" in r["body"]],
            "component": store.component["otel.component.name"],
        })
    print(json.dumps(results))
    """
)


def test_every_handler_configuration_gets_the_warning_where_the_rule_says() -> None:
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=60
    )
    outcomes = json.loads(result.stdout)
    configurations = list(
        itertools.product(
            ("none", "warning", "error"),
            (False, True),
            (False, True),
            ("none", "sdk", "instrumentation"),
            (False, True),
        )
    )
    assert [tuple(outcome["config"]) for outcome in outcomes] == configurations

    for outcome in outcomes:
        app_on_ours, app_on_root, bridge_on_ours, bridge_on_root, propagate = outcome["config"]
        reaching_root = propagate
        app_takes = app_on_ours == "warning" or (app_on_root and reaching_root)
        bridges = int(bridge_on_ours) + int(bridge_on_root != "none" and reaching_root)

        assert outcome["stderr"] == (0 if app_takes else 1), outcome["config"]
        assert outcome["app"] == int(app_on_ours == "warning") + int(
            app_on_root and reaching_root
        ), outcome["config"]
        assert len(outcome["records"]) == max(bridges, 1), outcome["config"]
        for record in outcome["records"]:
            attributes = record["attributes"]
            assert attributes[telemetry.EVICTION_REASON] == "max_traces"
            assert attributes[telemetry.CAP_NAME] == "max_traces"
            assert attributes[telemetry.CAP_VALUE] == 1
            assert attributes[telemetry.CAP_VARIABLE] == "OTEL_BOUNDED_TRACE_MAX_TRACES"
            assert attributes[telemetry.COMPONENT_NAME] == outcome["component"]
            assert attributes[telemetry.COMPONENT_TYPE] == "otel_bounded_trace_store"


def test_a_root_logger_at_error_does_not_swallow_the_warning() -> None:
    script = textwrap.dedent(
        """
        import logging
        logging.basicConfig(level=logging.ERROR, format="APP %(message)s")
        from opentelemetry.sdk.trace import TracerProvider
        from otel_bounded import TraceStore
        provider = TracerProvider()
        provider.add_span_processor(TraceStore(max_spans_per_trace=1))
        with provider.get_tracer("t").start_as_current_span("root"):
            for _ in range(3):
                with provider.get_tracer("t").start_as_current_span("child"):
                    pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    # Through the application's own handler (its format), once, naming the variable.
    assert result.stderr.count("APP TraceStore") == 1
    assert "dropped its first span" in result.stderr
    assert "OTEL_BOUNDED_TRACE_MAX_SPANS_PER_TRACE" in result.stderr


def test_an_application_that_sets_our_level_keeps_its_choice() -> None:
    script = textwrap.dedent(
        """
        import logging
        logging.getLogger("otel_bounded").setLevel(logging.ERROR)
        from opentelemetry.sdk.trace import TracerProvider
        from otel_bounded import TraceStore
        provider = TracerProvider()
        provider.add_span_processor(TraceStore(max_traces=1))
        for _ in range(3):
            with provider.get_tracer("t").start_as_current_span("work"):
                pass
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert "evicted its first trace" not in result.stderr


def test_a_recording_failure_carries_its_reason_component_and_exception(
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = TraceStore()
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        store.on_end(object())  # type: ignore[arg-type]
    (record,) = [r for r in caplog.records if r.name == "otel_bounded"]

    attributes = logs.structured_attributes(record)
    assert attributes[telemetry.DROP_REASON] == "error"
    assert attributes[telemetry.COMPONENT_NAME] == store.component[telemetry.COMPONENT_NAME]
    assert record.exc_info is not None
    assert attributes["exception.type"] == type(record.exc_info[1]).__qualname__
    assert "Traceback" in attributes["exception.stacktrace"]
    # No cap was reached: no cap attributes, rather than made-up ones.
    assert telemetry.CAP_NAME not in attributes
