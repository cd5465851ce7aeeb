"""Traces: a bounded in-memory trace store (a `SpanProcessor`) and its compact span records."""

from otel_bounded.traces.store import DropReason, TraceEvictionReason, TraceStore, TraceStoreStats

__all__ = ["DropReason", "TraceEvictionReason", "TraceStore", "TraceStoreStats"]
