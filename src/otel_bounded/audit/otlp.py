"""Spans in the OTLP JSON encoding, and back to an OTLP request for re-export.

The OTLP JSON encoding is the protobuf JSON mapping with two changes the
specification makes: trace and span ids are hex, not base64, and enums are
integers. Evicted traces are stored this way, so any OTLP tool reads them and
`otel-bounded audit export` sends them to a collector exactly as they were.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )
    from opentelemetry.sdk.trace import ReadableSpan

# The exporter and protobuf modules are imported when first needed: a process
# that never evicts a trace into a log loads no exporter.

__all__ = ["request_from_resource_spans", "spans_to_resource_spans"]

_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


def spans_to_resource_spans(spans: Sequence[ReadableSpan]) -> list[dict[str, Any]]:
    """The spans as OTLP JSON ``resourceSpans``, as the OTLP exporters would send them."""
    from google.protobuf import json_format
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    message = json_format.MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    resource_spans: list[dict[str, Any]] = message.get("resourceSpans", [])
    for span in _spans(resource_spans):
        _convert_ids(span, _base64_to_hex)
        for link in span.get("links", ()):
            _convert_ids(link, _base64_to_hex)
    return resource_spans


def request_from_resource_spans(
    resource_spans: Iterable[dict[str, Any]],
) -> ExportTraceServiceRequest:
    """An OTLP export request holding `resource_spans` (OTLP JSON); `ValueError` if malformed."""
    from google.protobuf import json_format
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    copied = [_copy(item) for item in resource_spans]
    for span in _spans(copied):
        _convert_ids(span, _hex_to_base64)
        for link in span.get("links", ()):
            _convert_ids(link, _hex_to_base64)
    request = ExportTraceServiceRequest()
    try:
        json_format.ParseDict({"resourceSpans": copied}, request)
    except json_format.ParseError as error:
        raise ValueError(f"not OTLP JSON resource spans: {error}") from None
    return request


def _spans(resource_spans: list[dict[str, Any]]) -> Iterable[dict[str, Any]]:
    for resource in resource_spans:
        for scope in resource.get("scopeSpans", ()):
            yield from scope.get("spans", ())


def _convert_ids(item: dict[str, Any], convert: Any) -> None:
    for name in _ID_FIELDS:
        value = item.get(name)
        if isinstance(value, str) and value:
            item[name] = convert(value)


def _base64_to_hex(value: str) -> str:
    return base64.b64decode(value).hex()


def _hex_to_base64(value: str) -> str:
    try:
        return base64.b64encode(bytes.fromhex(value)).decode("ascii")
    except ValueError:
        raise ValueError(f"not a hex id: {value[:40]!r}") from None


def _copy(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _copy(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_copy(item) for item in value]
    return value
