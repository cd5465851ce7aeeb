"""Helpers for the token tests: real OpenTelemetry SDK readers, and tokens signed by hand."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded.telemetry import COMPONENT_NAME
from otel_bounded.tokens import derive_key_id

SECRET = b"correct horse battery staple, 32+ bytes of key"
OTHER_SECRET = b"another secret that is long enough to be a key"


@dataclass
class Telemetry:
    """A real tracer provider and meter provider, each with an in-memory reader."""

    tracer_provider: TracerProvider
    exporter: InMemorySpanExporter
    meter_provider: MeterProvider
    reader: InMemoryMetricReader

    @classmethod
    def create(cls) -> Telemetry:
        exporter = InMemorySpanExporter()
        tracer_provider = TracerProvider()
        tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
        reader = InMemoryMetricReader()
        return cls(tracer_provider, exporter, MeterProvider(metric_readers=[reader]), reader)

    def providers(self) -> dict[str, Any]:
        return {"tracer_provider": self.tracer_provider, "meter_provider": self.meter_provider}

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        finished = self.exporter.get_finished_spans()
        return [span for span in finished if name is None or span.name == name]

    def points(self, metric_name: str, component: str) -> list[tuple[dict[str, Any], float]]:
        """(attributes, value) of every point of `metric_name` reported by `component`."""
        found = []
        for metric in self.metrics():
            if metric.name != metric_name:
                continue
            for point in metric.data.data_points:
                attributes = dict(point.attributes or {})
                if attributes.get(COMPONENT_NAME) == component:
                    found.append((attributes, point.value))
        return found

    def metrics(self) -> Iterator[Any]:
        data = self.reader.get_metrics_data()
        if data is None:
            return
        for resource_metrics in data.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                yield from scope_metrics.metrics

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def signed_token(fields: list[Any] | str, secret: bytes = SECRET) -> str:
    """An encoded token over any payload (`fields`, or JSON text), signed with `secret`.

    What only a holder of the secret can make: a replica running other code,
    or an older version of this one.
    """
    key_id = derive_key_id(secret)
    text = fields if isinstance(fields, str) else json.dumps(fields, separators=(",", ":"))
    payload = base64.urlsafe_b64encode(text.encode()).rstrip(b"=").decode()
    signing_input = f"otb1.{key_id}.{payload}"
    mac = hmac.HMAC(secret, hashes.SHA256())
    mac.update(signing_input.encode("ascii"))
    signature = base64.urlsafe_b64encode(mac.finalize()).rstrip(b"=").decode()
    return f"{signing_input}.{signature}"
