"""Helpers for the approval tests: a fake clock, SDK readers and a granted approval."""

from __future__ import annotations

from dataclasses import dataclass

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded.approvals import ApprovalLedger, ApprovalScope

DEPLOY = ApprovalScope("release", "deploy", "service-a")


@dataclass
class Telemetry:
    tracer_provider: TracerProvider
    spans: InMemorySpanExporter
    meter_provider: MeterProvider
    metrics: InMemoryMetricReader

    def points(self, name: str) -> list[tuple[dict[str, object], int | float]]:
        """Every data point of metric `name` collected now, as (attributes, value)."""
        data = self.metrics.get_metrics_data()
        found = []
        for resource_metrics in data.resource_metrics if data else ():
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        found.extend(
                            (dict(point.attributes or {}), point.value)
                            for point in metric.data.data_points
                        )
        return found


def granted(
    ledger: ApprovalLedger,
    *,
    scope: ApprovalScope = DEPLOY,
    requested_by: str = "deploy-agent",
    executor: str = "deploy-agent",
    approver: str = "alice",
    ttl_seconds: float = 600,
    max_uses: int = 1,
) -> str:
    """The token of a freshly requested and approved grant."""
    grant = ledger.request(
        scope,
        requested_by=requested_by,
        executor=executor,
        ttl_seconds=ttl_seconds,
        max_uses=max_uses,
    )
    ledger.approve(grant.token, approver=approver)
    return grant.token
