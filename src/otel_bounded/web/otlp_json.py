"""Spans in the OTLP/HTTP JSON encoding, as a collector's ``/v1/traces`` accepts them.

The SDK's own OTLP encoder builds the protobuf message, so the content is
exactly what the OTLP exporter would send; protobuf's JSON mapping then
writes it with the two changes the OTLP specification makes: trace and span
ids are hex strings, not base64, and enums are integers.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan

__all__ = ["encode_otlp_json"]

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def encode_otlp_json(spans: Sequence[ReadableSpan]) -> dict[str, Any]:
    """``{"resourceSpans": [...]}`` for `spans`."""
    # Imported here: an application that never asks for a trace never loads protobuf.
    from google.protobuf.json_format import MessageToDict
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    data: dict[str, Any] = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    data.setdefault("resourceSpans", [])
    for resource_spans in data["resourceSpans"]:
        for scope_spans in resource_spans.get("scopeSpans", ()):
            for span in scope_spans.get("spans", ()):
                _hex_ids(span)
                for link in span.get("links", ()):
                    _hex_ids(link)
    return data


def _hex_ids(message: dict[str, Any]) -> None:
    for key in _ID_KEYS:
        if key in message:
            message[key] = base64.b64decode(message[key]).hex()
