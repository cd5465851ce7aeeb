"""A real OTLP/gRPC receiver for end-to-end tests, on a free loopback port.

`OTLPReceiver` is a grpcio server implementing the trace, metrics and logs
collector services from `opentelemetry-proto`. It keeps every request it is
sent, decodes spans, metric points and log records into plain values, and
waits for one to arrive under a condition variable with a bounded timeout
(never a fixed sleep). The `otlp_receiver` fixture starts one per test.

Exporters in this process connect with `exporter_arguments()`; a subprocess
gets the same endpoint through `subprocess_environment()`.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

__all__ = [
    "LOOPBACK",
    "WAIT_SECONDS",
    "OTLPReceiver",
    "ReceivedLog",
    "ReceivedPoint",
    "ReceivedSpan",
    "attributes_of",
    "otlp_receiver_fixture",
]

LOOPBACK = "127.0.0.1"
WAIT_SECONDS = 10.0
"""The longest a test waits for something to arrive; it normally arrives at once."""

# A proxy configured in the environment must never see loopback test traffic.
_CHANNEL_OPTIONS = (("grpc.enable_http_proxy", 0),)
_EXPORTERS_TAKE_CHANNEL_OPTIONS = (
    "channel_options" in inspect.signature(OTLPSpanExporter.__init__).parameters
)
_PROXY_VARIABLES = ("http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY")

T = TypeVar("T")


def attributes_of(pairs: Sequence[Any]) -> dict[str, Any]:
    """OTLP `KeyValue`s as a plain dict, arrays as tuples."""
    return {pair.key: _value(pair.value) for pair in pairs}


def _value(any_value: Any) -> Any:
    kind = any_value.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return tuple(_value(item) for item in any_value.array_value.values)
    if kind == "kvlist_value":
        return attributes_of(any_value.kvlist_value.values)
    return getattr(any_value, kind)


@dataclass(frozen=True)
class ReceivedSpan:
    name: str
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    scope: str
    status_code: int
    status_message: str
    trace_id: bytes


@dataclass(frozen=True)
class ReceivedPoint:
    """One data point of a sum or gauge, with what its metric says about it."""

    metric: str
    value: int | float
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    scope: str
    kind: str
    """``sum`` or ``gauge``."""
    unit: str
    monotonic: bool
    temporality: int


@dataclass(frozen=True)
class ReceivedLog:
    body: str
    severity_number: int
    severity_text: str
    attributes: Mapping[str, Any]
    resource: Mapping[str, Any]
    scope: str


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._store(self._receiver._traces, request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._store(self._receiver._metrics, request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def Export(self, request: Any, context: Any) -> Any:
        self._receiver._store(self._receiver._logs, request)
        return logs_service_pb2.ExportLogsServiceResponse()


class OTLPReceiver:
    """An OTLP/gRPC collector stand-in keeping every request it receives."""

    def __init__(self) -> None:
        self._arrived = threading.Condition()
        self._traces: list[Any] = []
        self._metrics: list[Any] = []
        self._logs: list[Any] = []
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="otlp-receiver")
        self._server = grpc.server(self._executor)
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(self), self._server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(self), self._server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(self), self._server)
        self.port = self._server.add_insecure_port(f"{LOOPBACK}:0")
        if self.port == 0:
            raise RuntimeError(f"the OTLP receiver could not bind a port on {LOOPBACK}")

    # -- life cycle --------------------------------------------------------

    def start(self) -> OTLPReceiver:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=None).wait(WAIT_SECONDS)
        self._executor.shutdown(wait=False)

    def __enter__(self) -> OTLPReceiver:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    # -- connecting --------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """``http://127.0.0.1:<port>``, as ``OTEL_EXPORTER_OTLP_ENDPOINT`` takes it."""
        return f"http://{LOOPBACK}:{self.port}"

    def exporter_arguments(self) -> dict[str, Any]:
        """Keyword arguments for any `opentelemetry.exporter.otlp.proto.grpc` exporter."""
        arguments: dict[str, Any] = {
            "endpoint": self.endpoint,
            "insecure": True,
            "timeout": WAIT_SECONDS,
        }
        if _EXPORTERS_TAKE_CHANNEL_OPTIONS:  # older exporters do not
            arguments["channel_options"] = _CHANNEL_OPTIONS
        return arguments

    def subprocess_environment(self, environ: Mapping[str, str]) -> dict[str, str]:
        """`environ` with every signal exported over OTLP/gRPC to this receiver, no proxy."""
        env = {key: value for key, value in environ.items() if key not in _PROXY_VARIABLES}
        env.update(
            OTEL_EXPORTER_OTLP_ENDPOINT=self.endpoint,
            OTEL_EXPORTER_OTLP_PROTOCOL="grpc",
            OTEL_EXPORTER_OTLP_INSECURE="true",
        )
        return env

    # -- what arrived ------------------------------------------------------

    def _store(self, requests: list[Any], request: Any) -> None:
        with self._arrived:
            requests.append(request)
            self._arrived.notify_all()

    def payloads(self) -> bytes:
        """Every request of every signal, serialized: what a collector would have stored."""
        with self._arrived:
            requests = [*self._traces, *self._metrics, *self._logs]
        return b"".join(request.SerializeToString() for request in requests)

    def spans(self) -> list[ReceivedSpan]:
        with self._arrived:
            requests = list(self._traces)
        return [
            ReceivedSpan(
                name=span.name,
                attributes=attributes_of(span.attributes),
                resource=attributes_of(resource_spans.resource.attributes),
                scope=scope_spans.scope.name,
                status_code=span.status.code,
                status_message=span.status.message,
                trace_id=span.trace_id,
            )
            for request in requests
            for resource_spans in request.resource_spans
            for scope_spans in resource_spans.scope_spans
            for span in scope_spans.spans
        ]

    def logs(self) -> list[ReceivedLog]:
        with self._arrived:
            requests = list(self._logs)
        return [
            ReceivedLog(
                body=str(_value(record.body)),
                severity_number=record.severity_number,
                severity_text=record.severity_text,
                attributes=attributes_of(record.attributes),
                resource=attributes_of(resource_logs.resource.attributes),
                scope=scope_logs.scope.name,
            )
            for request in requests
            for resource_logs in request.resource_logs
            for scope_logs in resource_logs.scope_logs
            for record in scope_logs.log_records
        ]

    def latest_points(self, metric: str) -> list[ReceivedPoint]:
        """The points of `metric` in the latest request that carried it (cumulative: its total)."""
        with self._arrived:
            requests = list(self._metrics)
        for request in reversed(requests):
            points = list(_points(request, metric))
            if points:
                return points
        return []

    # -- waiting -----------------------------------------------------------

    def wait_for_span(
        self, name: str, where: Callable[[ReceivedSpan], bool] = lambda _span: True
    ) -> ReceivedSpan:
        """The first span named `name` (and matching `where`) to arrive."""
        return self._wait(
            lambda: next((s for s in self.spans() if s.name == name and where(s)), None),
            lambda: (
                f"a span named {name!r}; spans received: {sorted({s.name for s in self.spans()})}"
            ),
        )

    def wait_for_metric(
        self,
        name: str,
        where: Callable[[list[ReceivedPoint]], bool] = lambda points: bool(points),
    ) -> list[ReceivedPoint]:
        """The latest points of metric `name`, once `where` holds for them."""

        def found() -> list[ReceivedPoint] | None:
            points = self.latest_points(name)
            return points if points and where(points) else None

        return self._wait(
            found,
            lambda: f"metric {name!r} as expected; latest points: {self.latest_points(name)}",
        )

    def wait_for_log(self, text: str) -> ReceivedLog:
        """The first log record whose body contains `text`."""
        return self._wait(
            lambda: next((r for r in self.logs() if text in r.body), None),
            lambda: f"a log containing {text!r}; logs received: {[r.body for r in self.logs()]}",
        )

    def _wait(self, find: Callable[[], T | None], describe: Callable[[], str]) -> T:
        result: list[T] = []

        def arrived() -> bool:
            found = find()
            if found is not None:
                result.append(found)
            return bool(result)

        # The handlers take the same condition, so `find` reads under it safely (it is re-entrant).
        with self._arrived:
            self._arrived.wait_for(arrived, timeout=WAIT_SECONDS)
        if not result:
            raise AssertionError(f"no {describe()} within {WAIT_SECONDS:g} s")
        return result[0]


def _points(request: Any, name: str) -> Iterator[ReceivedPoint]:
    for resource_metrics in request.resource_metrics:
        resource = attributes_of(resource_metrics.resource.attributes)
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                if metric.name != name:
                    continue
                kind = metric.WhichOneof("data")
                if kind == "sum":
                    data_points = metric.sum.data_points
                    monotonic = metric.sum.is_monotonic
                    temporality = metric.sum.aggregation_temporality
                elif kind == "gauge":
                    data_points, monotonic, temporality = metric.gauge.data_points, False, 0
                else:
                    raise AssertionError(
                        f"{name} is a {kind}; this receiver decodes sums and gauges"
                    )
                for point in data_points:
                    value = (
                        point.as_int if point.WhichOneof("value") == "as_int" else point.as_double
                    )
                    yield ReceivedPoint(
                        metric=name,
                        value=value,
                        attributes=attributes_of(point.attributes),
                        resource=resource,
                        scope=scope_metrics.scope.name,
                        kind=kind,
                        unit=metric.unit,
                        monotonic=monotonic,
                        temporality=temporality,
                    )


@pytest.fixture(name="otlp_receiver")
def otlp_receiver_fixture() -> Iterator[OTLPReceiver]:
    """A started `OTLPReceiver`, stopped after the test."""
    with OTLPReceiver() as receiver:
        yield receiver
