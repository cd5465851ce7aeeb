"""Traces: a bounded in-memory trace store (a `SpanProcessor`), its records and compaction."""

from otel_bounded.traces.compaction import (
    CompactionPolicy,
    CompactionResult,
    compact_spans,
    operation_totals,
)
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
    "TraceEvictionReason",
    "TraceStore",
    "TraceStoreStats",
    "UnresolvedReason",
    "compact_spans",
    "operation_totals",
]
