"""Every counted series is reported from 0, so `increase()` sees its first event.

A counter series that first appears at 1 has no earlier sample: Prometheus's
`increase()` and `rate()` read it as no change, and an alert on a single
event (the first self-approval, the first span lost to an error) never fires.
"""

from __future__ import annotations

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_bounded import TraceStore, telemetry
from otel_bounded.approvals import ApprovalLedger, ApprovalScope
from otel_bounded.errors import ApprovalError, ApprovalReason
from otel_bounded.tokens import HMACTokenProvider


def points(reader: InMemoryMetricReader, name: str, component: str) -> dict[tuple[str, ...], int]:
    """The points of `name` for one component: label values (sorted by key) -> value."""
    found: dict[tuple[str, ...], int] = {}
    data = reader.get_metrics_data()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != name:
                    continue
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    if attributes.pop(telemetry.COMPONENT_NAME) != component:
                        continue
                    attributes.pop(telemetry.COMPONENT_TYPE)
                    key = tuple(str(attributes[label]) for label in sorted(attributes))
                    found[key] = int(point.value)
    return found


def test_every_approval_decision_series_starts_at_zero() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    ledger = ApprovalLedger(meter_provider=meter_provider)
    name = ledger.component[telemetry.COMPONENT_NAME]
    # Sorted by attribute key: (reason code, outcome).
    expected = {("", "allowed"): 0} | {(code, "refused"): 0 for code in ApprovalReason.ALL}
    assert points(reader, telemetry.APPROVAL_DECISIONS, name) == expected
    grant = ledger.request(
        ApprovalScope("release", "deploy"), requested_by="bot", executor="bot", ttl_seconds=60
    )
    with pytest.raises(ApprovalError):
        ledger.approve(grant.token, approver="BOT")
    expected[("", "allowed")] = 1
    expected[(ApprovalReason.SELF_APPROVAL, "refused")] = 1
    assert points(reader, telemetry.APPROVAL_DECISIONS, name) == expected
    assert points(reader, telemetry.APPROVAL_EVICTIONS, name) == {
        ("retention",): 0,
        ("max_terminal",): 0,
    }
    meter_provider.shutdown()


def test_every_trace_eviction_and_drop_reason_starts_at_zero() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    store = TraceStore(max_traces=1, meter_provider=meter_provider)
    name = store.component[telemetry.COMPONENT_NAME]
    assert points(reader, telemetry.TRACE_STORE_EVICTIONS, name) == {
        (reason,): 0 for reason in ("max_traces", "max_spans", "ttl")
    }
    assert points(reader, telemetry.TRACE_STORE_SPANS_DROPPED, name) == {
        (reason,): 0 for reason in ("max_spans_per_trace", "max_spans", "error")
    }
    meter_provider.shutdown()


def test_every_token_verification_outcome_starts_at_zero() -> None:
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    provider = HMACTokenProvider(b"s" * 32, meter_provider=meter_provider)
    name = provider.component[telemetry.COMPONENT_NAME]
    outcomes = ("ok", "revoked", "expired", "invalid", "scope_mismatch", "unavailable")
    assert points(reader, telemetry.TOKEN_VERIFICATIONS, name) == {
        (outcome,): 0 for outcome in outcomes
    }
    meter_provider.shutdown()
