"""Every signal otel-bounded emits, through the real OTLP/gRPC exporters to a real receiver.

Each test builds the SDK's tracer, meter and logger providers with the
`opentelemetry.exporter.otlp.proto.grpc` exporters pointed at a receiver on
loopback, does something with a store, flushes, and reads back what a
collector would have received: names, values, attributes, reasons. Flushing
exports synchronously, so the receiver's bounded wait normally returns at once.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.logs.v1 import logs_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from otel_bounded import ApprovalError, ApprovalLedger, ApprovalScope, TokenError, TraceStore
from otel_bounded import telemetry as names
from otel_bounded.errors import ApprovalReason
from otel_bounded.tokens import HMACTokenProvider, SweepTrigger
from tests.e2e.otlp_receiver import (
    OTLPReceiver,
    ReceivedPoint,
    ReceivedSpan,
    otlp_receiver_fixture,  # noqa: F401  (registers the otlp_receiver fixture)
)
from tests.support import FakeClock

SERVICE = "otel-bounded-e2e"
SECRET = "e2e secret: at least thirty-two bytes of HMAC key material"
# Only force_flush and shutdown export, so every export is one the test asked for.
_NEVER_MILLIS = 3_600_000


@dataclass
class Pipeline:
    """The SDK's three providers, exporting over OTLP/gRPC to one receiver."""

    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    logger_provider: LoggerProvider
    receiver: OTLPReceiver

    def flush(self) -> None:
        assert self.tracer_provider.force_flush()
        assert self.meter_provider.force_flush()
        assert self.logger_provider.force_flush()


@pytest.fixture
def pipeline(otlp_receiver: OTLPReceiver) -> Iterator[Pipeline]:
    resource = Resource.create({"service.name": SERVICE})
    arguments = otlp_receiver.exporter_arguments()
    tracer_provider = TracerProvider(resource=resource, shutdown_on_exit=False)
    tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(**arguments)))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(**arguments), export_interval_millis=_NEVER_MILLIS
    )
    meter_provider = MeterProvider(
        resource=resource, metric_readers=[reader], shutdown_on_exit=False
    )
    logger_provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter(**arguments)))
    # The SDK's handler is deprecated in favour of opentelemetry-instrumentation-logging,
    # which is not a dependency; it still carries records exactly as users run it today.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        handler = LoggingHandler(level=logging.WARNING, logger_provider=logger_provider)
    names.logger.addHandler(handler)
    try:
        yield Pipeline(tracer_provider, meter_provider, logger_provider, otlp_receiver)
    finally:
        names.logger.removeHandler(handler)
        tracer_provider.shutdown()
        meter_provider.shutdown()
        logger_provider.shutdown()


def app_tracer_provider(*stores: TraceStore) -> TracerProvider:
    """The application's own tracer provider, feeding `stores`."""
    provider = TracerProvider(shutdown_on_exit=False)
    for store in stores:
        provider.add_span_processor(store)
    return provider


def make_traces(provider: TracerProvider, count: int) -> None:
    """`count` traces of two spans each: a request and a query inside it."""
    tracer = provider.get_tracer("e2e.app")
    for index in range(count):
        with (
            tracer.start_as_current_span(f"request-{index}"),
            tracer.start_as_current_span("db.query"),
        ):
            pass


def by_component(points: list[ReceivedPoint], owner: Any, label: str) -> dict[str, int | float]:
    """The points `owner` (a store, provider or ledger) reported, keyed by attribute `label`."""
    component = owner.component[names.COMPONENT_NAME]
    return {
        point.attributes[label]: point.value
        for point in points
        if point.attributes[names.COMPONENT_NAME] == component
    }


def value_of(points: list[ReceivedPoint], owner: Any) -> int | float:
    """The one point `owner` reported."""
    component = owner.component[names.COMPONENT_NAME]
    (value,) = [p.value for p in points if p.attributes[names.COMPONENT_NAME] == component]
    return value


# -- trace store -------------------------------------------------------------


def test_eviction_counter_arrives_with_each_stores_count_and_reason(pipeline: Pipeline) -> None:
    by_traces = TraceStore(max_traces=3, meter_provider=pipeline.meter_provider)
    by_spans = TraceStore(
        max_spans=4, max_spans_per_trace=2, meter_provider=pipeline.meter_provider
    )
    make_traces(app_tracer_provider(by_traces, by_spans), 5)

    pipeline.flush()
    points = pipeline.receiver.wait_for_metric(names.TRACE_STORE_EVICTIONS)

    # 5 traces into 3 slots: the 2 oldest go. 10 spans into 4: 3 whole traces go.
    assert by_component(points, by_traces, names.EVICTION_REASON) == {
        "max_traces": 2,
        "max_spans": 0,
        "ttl": 0,
    }
    assert by_component(points, by_spans, names.EVICTION_REASON) == {
        "max_traces": 0,
        "max_spans": 3,
        "ttl": 0,
    }
    point = points[0]
    assert (point.kind, point.monotonic, point.unit) == ("sum", True, "{trace}")
    assert point.temporality == metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
    assert point.scope == names.INSTRUMENTATION_NAME
    assert point.resource["service.name"] == SERVICE
    assert point.attributes[names.COMPONENT_TYPE] == "otel_bounded_trace_store"


def test_held_traces_and_capacity_arrive_next_to_each_other(pipeline: Pipeline) -> None:
    store = TraceStore(max_traces=3, meter_provider=pipeline.meter_provider)
    make_traces(app_tracer_provider(store), 5)

    pipeline.flush()

    held = pipeline.receiver.wait_for_metric(names.TRACE_STORE_TRACES)
    capacity = pipeline.receiver.latest_points(names.TRACE_STORE_CAPACITY)
    spans = pipeline.receiver.latest_points(names.TRACE_STORE_SPANS)
    assert (value_of(held, store), value_of(capacity, store), value_of(spans, store)) == (3, 3, 6)


def test_first_eviction_warning_arrives_once_as_a_log_record(pipeline: Pipeline) -> None:
    store = TraceStore(max_traces=2, meter_provider=pipeline.meter_provider)
    make_traces(app_tracer_provider(store), 6)
    assert store.stats().evicted_traces == 4

    pipeline.flush()
    record = pipeline.receiver.wait_for_log("evicted its first trace")

    assert record.severity_number == logs_pb2.SEVERITY_NUMBER_WARN
    assert record.scope == names.INSTRUMENTATION_NAME
    assert record.resource["service.name"] == SERVICE
    for mentioned in (
        store.component[names.COMPONENT_NAME],
        "reason max_traces",
        "OTEL_BOUNDED_TRACE_MAX_TRACES",
        names.TRACE_STORE_EVICTIONS,
    ):
        assert mentioned in record.body
    # Four evictions, one warning: the rest are only counted.
    first_evictions = [r for r in pipeline.receiver.logs() if "evicted its first" in r.body]
    assert len(first_evictions) == 1


# -- tokens ------------------------------------------------------------------


def test_token_revoke_and_sweep_spans_arrive_with_their_attributes(pipeline: Pipeline) -> None:
    clock = FakeClock()
    provider = HMACTokenProvider(
        SECRET,
        clock=clock,
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
    )
    token = provider.issue("reports:read", "user-42", ttl_seconds=60)
    assert provider.revoke(token) is True
    assert provider.revoke_all("user-7") == 0
    with pytest.raises(TokenError):
        provider.verify(
            token, expected_principal_id="user-42", expected_capability_id="reports:read"
        )
    clock.advance(61 + provider.max_clock_skew_seconds)  # expired on every replica
    assert provider.sweep() == 1

    pipeline.flush()
    receiver = pipeline.receiver
    component = provider.component[names.COMPONENT_NAME]

    revoke = receiver.wait_for_span(names.SPAN_TOKEN_REVOKE)
    assert revoke.attributes == {
        names.COMPONENT_TYPE: "otel_bounded_token_provider",
        names.COMPONENT_NAME: component,
        names.REVOCATION_STORE_KIND: "memory",
        names.TOKEN_ID: token.token_id,
        names.CAPABILITY_ID: "reports:read",
        names.TOKEN_KEY_ID: provider.key_id,
        names.PRINCIPAL_ID: "user-42",
        names.TOKEN_EXPIRES_AT: token.expires_at,
        names.REVOKE_NEWLY: True,
    }
    assert revoke.scope == names.INSTRUMENTATION_NAME
    assert revoke.resource["service.name"] == SERVICE

    revoke_all = receiver.wait_for_span(names.SPAN_TOKEN_REVOKE_ALL)
    assert revoke_all.attributes[names.PRINCIPAL_ID] == "user-7"
    assert revoke_all.attributes[names.REVOKE_ALL_COUNT] == 0

    sweep = receiver.wait_for_span(
        names.SPAN_TOKEN_SWEEP,
        lambda span: span.attributes[names.SWEEP_TRIGGER] == SweepTrigger.MANUAL,
    )
    # The token's entry expired with it; user-7's cut-off stays for max_ttl_seconds.
    assert sweep.attributes[names.SWEEP_REMOVED] == 1
    assert sweep.attributes[names.SWEEP_REMAINING] == 1
    assert sweep.attributes[names.COMPONENT_NAME] == component

    held = receiver.wait_for_metric(names.TOKEN_REVOCATIONS)
    swept = receiver.latest_points(names.TOKEN_REVOCATIONS_SWEPT)
    verifications = receiver.latest_points(names.TOKEN_VERIFICATIONS)
    assert (value_of(held, provider), value_of(swept, provider)) == (1, 1)
    assert by_component(verifications, provider, names.OUTCOME)["revoked"] == 1


# -- approvals ---------------------------------------------------------------


def test_approval_decision_spans_arrive_with_reason_codes_on_refusals(pipeline: Pipeline) -> None:
    ledger = ApprovalLedger(
        clock=FakeClock(),
        tracer_provider=pipeline.tracer_provider,
        meter_provider=pipeline.meter_provider,
    )
    deploy = ApprovalScope(policy="release", action="deploy", resource="service-a")
    other = ApprovalScope(policy="release", action="deploy", resource="service-b")
    grant = ledger.request(
        deploy, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=600
    )
    ledger.approve(grant.token, approver="alice@example.com")
    refusals = {}
    for scope, actor in ((other, "deploy-agent"), (deploy, "mallory")):
        with pytest.raises(ApprovalError) as refused:
            ledger.consume(grant.token, scope, actor)
        refusals[actor] = refused.value.reason_code
    ledger.consume(grant.token, deploy, "deploy-agent")
    with pytest.raises(ApprovalError):
        ledger.consume(grant.token, deploy, "deploy-agent")

    pipeline.flush()
    receiver = pipeline.receiver

    approve = receiver.wait_for_span("otel_bounded.approval.approve")
    assert approve.attributes[names.APPROVAL_APPROVING_ACTOR] == "alice@example.com"
    assert approve.attributes[names.APPROVAL_ID] == grant.approval_id

    def consume(outcome: str, reason: str = "") -> ReceivedSpan:
        def matches(span: ReceivedSpan) -> bool:
            return span.attributes[names.OUTCOME] == outcome and (
                span.attributes.get(names.APPROVAL_REASON_CODE, "") == reason
            )

        return receiver.wait_for_span("otel_bounded.approval.consume", matches)

    allowed = consume("allowed")
    assert allowed.status_code != trace_pb2.Status.STATUS_CODE_ERROR
    assert allowed.attributes[names.APPROVAL_STATUS] == "consumed"
    assert allowed.attributes[names.APPROVAL_USES] == 1
    assert allowed.attributes[names.APPROVAL_EXECUTING_ACTOR] == "deploy-agent"
    assert allowed.attributes[names.APPROVAL_RESOURCE] == "service-a"
    assert allowed.attributes[names.APPROVAL_ID] == grant.approval_id

    assert refusals == {
        "deploy-agent": "approval_scope_mismatch",
        "mallory": "approval_unauthorized_delegate",
    }
    for reason in (*refusals.values(), "approval_already_consumed"):
        refused_span = consume("refused", reason)
        assert refused_span.status_code == trace_pb2.Status.STATUS_CODE_ERROR
        assert refused_span.status_message == reason
    mismatch = consume("refused", "approval_scope_mismatch")
    assert mismatch.attributes[names.APPROVAL_RESOURCE] == "service-b"
    intruder = consume("refused", "approval_unauthorized_delegate")
    assert intruder.attributes[names.APPROVAL_ACTOR] == "mallory"

    decisions = receiver.wait_for_metric(names.APPROVAL_DECISIONS)
    counted = {
        (p.attributes[names.OUTCOME], p.attributes[names.APPROVAL_REASON_CODE]): p.value
        for p in decisions
    }
    # Every (outcome, reason code) series is exported from 0, not only those seen.
    expected = {("allowed", ""): 3} | {("refused", code): 0 for code in ApprovalReason.ALL}
    expected[("refused", "approval_scope_mismatch")] = 1
    expected[("refused", "approval_unauthorized_delegate")] = 1
    expected[("refused", "approval_already_consumed")] = 1
    assert counted == expected


# -- secrets -----------------------------------------------------------------


def test_no_secret_or_token_reaches_the_collector(pipeline: Pipeline) -> None:
    clock = FakeClock()
    providers = {
        "tracer_provider": pipeline.tracer_provider,
        "meter_provider": pipeline.meter_provider,
    }
    tokens = HMACTokenProvider(SECRET, clock=clock, **providers)
    token = tokens.issue("reports:read", "user-42", ttl_seconds=60)
    encoded = token.encode()
    forged = encoded[:-4] + ("AAAA" if not encoded.endswith("AAAA") else "BBBB")
    for presented in (encoded, forged):
        with pytest.raises(TokenError):
            tokens.verify(presented, expected_principal_id="user-9", expected_capability_id="x")
    with pytest.raises(TokenError):
        tokens.revoke(forged)
    assert tokens.revoke(encoded) is True
    clock.advance(61)
    tokens.sweep()

    ledger = ApprovalLedger(clock=clock, **providers)
    deploy = ApprovalScope(policy="release", action="deploy")
    grant = ledger.request(deploy, requested_by="agent", executor="agent", ttl_seconds=60)
    with pytest.raises(ApprovalError):
        ledger.consume(grant.token, deploy, "agent")  # not approved yet
    ledger.approve(grant.token, approver="alice")
    with pytest.raises(ApprovalError):
        ledger.verify(grant.token, deploy, grant.token)  # a token where the executor goes
    ledger.consume(grant.token, deploy, "agent")

    # A store evicting and warning, so every signal carries something.
    store = TraceStore(max_traces=1, meter_provider=pipeline.meter_provider)
    make_traces(app_tracer_provider(store), 2)

    pipeline.flush()
    receiver = pipeline.receiver
    receiver.wait_for_span("otel_bounded.approval.consume")
    receiver.wait_for_metric(names.TOKEN_VERIFICATIONS)
    receiver.wait_for_log("evicted its first trace")

    payloads = receiver.payloads()
    # What identifies the token and the grant does arrive, so the search below has material.
    assert token.token_id.encode() in payloads
    assert grant.approval_id.encode() in payloads
    for secret in (SECRET, encoded, forged, token.signature, grant.token):
        assert secret.encode() not in payloads


@pytest.mark.parametrize("operation", ["approve", "delegate"])
def test_a_token_passed_as_an_actor_never_reaches_the_collector(
    pipeline: Pipeline, operation: str
) -> None:
    ledger = ApprovalLedger(clock=FakeClock(), tracer_provider=pipeline.tracer_provider)
    deploy = ApprovalScope(policy="release", action="deploy")
    grant = ledger.request(deploy, requested_by="agent", executor="agent", ttl_seconds=60)
    # Arguments passed out of order: the token itself where a person's name goes.
    if operation == "approve":
        with pytest.raises(ValueError, match="approval token was passed"):
            ledger.approve(grant.token, approver=grant.token)
    else:
        ledger.approve(grant.token, approver="alice")
        with pytest.raises(ValueError, match="approval token was passed"):
            ledger.delegate(grant.token, by="agent", to=grant.token, reason="swapped arguments")

    pipeline.flush()
    pipeline.receiver.wait_for_span(f"otel_bounded.approval.{operation}")

    payloads = pipeline.receiver.payloads()
    assert grant.approval_id.encode() in payloads
    assert grant.token.encode() not in payloads
