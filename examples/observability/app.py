"""A busy little service for the observability stack: traces, tokens and approvals, over OTLP.

Start the stack, then this app, and watch the "otel-bounded" dashboard in Grafana
(http://localhost:3000) and the traces in Jaeger (http://localhost:16686)::

    docker compose -f examples/observability/compose.yaml up -d
    OTEL_EXPORTER_OTLP_ENDPOINT=http://localhost:4317 python examples/observability/app.py

Every second it serves a burst of requests (each one trace, some with far too many
spans), issues, verifies and revokes capability tokens, and asks for approvals to
deploy, some of which are refused. Caps come from the usual ``OTEL_BOUNDED_*``
variables; the demo lowers a few (DEMO_DEFAULTS) so evictions show within a minute.
"""

from __future__ import annotations

import argparse
import logging
import os
import random
import secrets
import time
import warnings
from dataclasses import dataclass, field

from opentelemetry.exporter.otlp.proto.grpc import _log_exporter as grpc_logs
from opentelemetry.exporter.otlp.proto.grpc import metric_exporter as grpc_metrics
from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc_traces
from opentelemetry.exporter.otlp.proto.http import _log_exporter as http_logs
from opentelemetry.exporter.otlp.proto.http import metric_exporter as http_metrics
from opentelemetry.exporter.otlp.proto.http import trace_exporter as http_traces
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, LogRecordExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExporter, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.trace import Status, StatusCode, Tracer

from otel_bounded import ApprovalError, ApprovalLedger, ApprovalScope, TokenError, TraceStore
from otel_bounded import config as bounded_config
from otel_bounded.core import Clock
from otel_bounded.tokens import CapabilityToken, HMACTokenProvider

DEMO_DEFAULTS = {
    "OTEL_SERVICE_NAME": "otel-bounded-demo",
    "OTEL_METRIC_EXPORT_INTERVAL": "5000",  # milliseconds: the dashboard moves every 5 s
    "OTEL_BOUNDED_TRACE_MAX_TRACES": "200",
    "OTEL_BOUNDED_TRACE_MAX_SPANS_PER_TRACE": "50",
    "OTEL_BOUNDED_TRACE_COMPACTION_ENABLED": "true",
    "OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS": "5",
}
"""Set only where the environment does not already say otherwise."""

REQUESTS_PER_TICK = 20
BATCH_JOB_SPANS = 80
"""Spans in an occasional batch job's trace: more than the demo's per-trace cap."""
SERVICES = ("service-a", "service-b", "service-c")
USERS = ("alice", "bob", "carol", "dave")


@dataclass
class Demo:
    """The app's bounded state and the traffic it keeps making."""

    tracer: Tracer
    store: TraceStore
    tokens: HMACTokenProvider
    ledger: ApprovalLedger
    rng: random.Random
    issued: list[CapabilityToken] = field(default_factory=list)


def build(
    tracer_provider: TracerProvider,
    meter_provider: MeterProvider,
    *,
    clock: Clock = time.time,
    rng: random.Random | None = None,
) -> Demo:
    """The trace store, token provider and ledger, reporting to these providers."""
    store = TraceStore.from_env(clock=clock, meter_provider=meter_provider)
    tracer_provider.add_span_processor(store)
    overrides = {}
    if (
        bounded_config.read(bounded_config.TOKEN_SECRET) is None
        and bounded_config.read(bounded_config.TOKEN_SECRET_FILE) is None
    ):
        # A fresh key per run: a demo has nothing to share it with, and no key lives in the source.
        overrides["secret"] = secrets.token_bytes(32)
    tokens = HMACTokenProvider.from_env(
        clock=clock, tracer_provider=tracer_provider, meter_provider=meter_provider, **overrides
    )
    ledger = ApprovalLedger(
        clock=clock, tracer_provider=tracer_provider, meter_provider=meter_provider
    )
    return Demo(
        tracer_provider.get_tracer("otel-bounded-demo"),
        store,
        tokens,
        ledger,
        rng or random.Random(),
    )


def tick(demo: Demo) -> None:
    """One second of traffic."""
    for _ in range(REQUESTS_PER_TICK):
        serve_request(demo)
    if demo.rng.random() < 0.2:
        run_batch_job(demo)
    use_tokens(demo)
    ask_for_approvals(demo)


def serve_request(demo: Demo) -> None:
    with demo.tracer.start_as_current_span("GET /orders"):
        for step in ("auth", "db.query", "render")[: demo.rng.randint(1, 3)]:
            with demo.tracer.start_as_current_span(step):
                pass


def run_batch_job(demo: Demo) -> None:
    """A trace of many fast, alike spans: compacted if enabled, else partly dropped."""
    with demo.tracer.start_as_current_span("nightly-report"):
        for _ in range(BATCH_JOB_SPANS):
            with demo.tracer.start_as_current_span("cache.get"):
                pass


def use_tokens(demo: Demo) -> None:
    """Issue, verify (with every outcome a client can cause) and revoke capability tokens."""
    rng, tokens = demo.rng, demo.tokens
    for _ in range(3):
        user = rng.choice(USERS)
        demo.issued.append(tokens.issue("reports.read", user, ttl_seconds=rng.uniform(5, 30)))
    del demo.issued[:-60]  # old ones are long expired
    for token in rng.sample(demo.issued, min(8, len(demo.issued))):
        presented_as = token.principal_id if rng.random() < 0.9 else "mallory"
        text = token.encode()
        if rng.random() < 0.05:
            text = text[:-5] + ("x" if text[-5] != "x" else "y") + text[-4:]  # tampered
        with demo.tracer.start_as_current_span("GET /reports") as span:
            try:
                tokens.verify(
                    text, expected_principal_id=presented_as, expected_capability_id="reports.read"
                )
            except TokenError as refused:
                # A 403; counted by outcome in otel_bounded.token.verifications.
                span.set_status(Status(StatusCode.ERROR, type(refused).__name__))
    if rng.random() < 0.5:
        tokens.revoke(rng.choice(demo.issued))


def ask_for_approvals(demo: Demo) -> None:
    """An agent asks to deploy; a person approves; sometimes something is off and refused."""
    rng, ledger = demo.rng, demo.ledger
    service = rng.choice(SERVICES)
    deploy = ApprovalScope(policy="release", action="deploy", resource=service)
    with demo.tracer.start_as_current_span(f"deploy {service}") as span:
        try:
            grant = ledger.request(
                deploy, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60
            )
            approver = "deploy-agent" if rng.random() < 0.1 else rng.choice(USERS)
            ledger.approve(grant.token, approver=approver)
            roll = rng.random()
            if roll < 0.1:
                other = ApprovalScope(policy="release", action="drop-table", resource=service)
                ledger.consume(grant.token, other, "deploy-agent")
            elif roll < 0.2:
                ledger.consume(grant.token, deploy, "intern-agent")
            ledger.consume(grant.token, deploy, "deploy-agent")
            if roll > 0.9:
                ledger.consume(grant.token, deploy, "deploy-agent")  # a retry: already used
        except ApprovalError as refused:
            # Counted by reason code in otel_bounded.approval.decisions.
            span.set_status(Status(StatusCode.ERROR, refused.reason_code))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)"
    )
    args = parser.parse_args(argv)
    for name, value in DEMO_DEFAULTS.items():
        os.environ.setdefault(name, value)

    span_exporter, metric_exporter, log_exporter = otlp_exporters()
    resource = Resource.create()  # service.name from OTEL_SERVICE_NAME
    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[PeriodicExportingMetricReader(metric_exporter)]
    )
    logger_provider = LoggerProvider(resource=resource)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(log_exporter))
    with warnings.catch_warnings():
        # Deprecated in favour of opentelemetry-instrumentation-logging, which is not a
        # dependency; the SDK's handler still delivers the records.
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(logger_provider=logger_provider)
    # The first eviction and first drop are logged once as WARNINGs: send them as log records.
    logging.getLogger("otel_bounded").addHandler(handler)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    demo = build(tracer_provider, meter_provider)
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "the default OTLP endpoint")
    print(f"sending to {endpoint}; Ctrl-C to stop")
    deadline = None if args.duration is None else time.monotonic() + args.duration
    ticks = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            tick(demo)
            ticks += 1
            if ticks % 10 == 0:
                stats = demo.store.stats()
                print(
                    f"{stats.traces}/{stats.max_traces} traces held, {stats.evicted_traces} "
                    f"evicted, {stats.dropped_spans} spans dropped, "
                    f"{demo.tokens.revocation_count} revocations held"
                )
            time.sleep(1)
    except KeyboardInterrupt:
        pass
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()
        demo.tokens.close()
    return 0


def otlp_exporters() -> tuple[SpanExporter, MetricExporter, LogRecordExporter]:
    """Span, metric and log exporters for OTEL_EXPORTER_OTLP_PROTOCOL (gRPC by default).

    Each reads OTEL_EXPORTER_OTLP_ENDPOINT (and the other OTEL_EXPORTER_OTLP_*
    variables) itself.
    """
    if os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc") == "grpc":
        return (
            grpc_traces.OTLPSpanExporter(),
            grpc_metrics.OTLPMetricExporter(),
            grpc_logs.OTLPLogExporter(),
        )
    return (
        http_traces.OTLPSpanExporter(),
        http_metrics.OTLPMetricExporter(),
        http_logs.OTLPLogExporter(),
    )


if __name__ == "__main__":
    raise SystemExit(main())
