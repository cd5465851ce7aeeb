"""Traces: a bounded in-memory trace store (a `SpanProcessor`), its records and compaction."""

from otel_bounded.traces.compaction import (
    CompactionPolicy,
    CompactionResult,
    compact_spans,
    operation_totals,
)
from otel_bounded.traces.export import ExportPolicy, ExportReason
from otel_bounded.traces.query import TraceSummary
from otel_bounded.traces.retention import RetentionClass
from otel_bounded.traces.store import (
    DropReason,
    TraceEvictionReason,
    TraceStore,
    TraceStoreStats,
    UnresolvedReason,
)

__all__ = [
    "CompactionPolicy",
    "CompactionResult",
    "DropReason",
    "ExportPolicy",
    "ExportReason",
    "RetentionClass",
    "TraceEvictionReason",
    "TraceStore",
    "TraceStoreStats",
    "TraceSummary",
    "UnresolvedReason",
    "compact_spans",
    "operation_totals",
]
