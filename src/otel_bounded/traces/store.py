"""`TraceStore`: recent traces kept in memory under caps, visible as OTel metrics and logs."""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import StatusCode

from otel_bounded import config, telemetry
from otel_bounded.core import (
    ENTRY_FULL,
    NO_AUDIT,
    NO_ROOM,
    AuditSink,
    BoundedStore,
    Clock,
    EvictionReason,
    Refusal,
    audit_from_env,
    reinit_after_fork,
)
from otel_bounded.errors import TraceNotFound
from otel_bounded.telemetry import DropReason, TraceEvictionReason, UnresolvedReason
from otel_bounded.traces.compaction import CompactionPolicy
from otel_bounded.traces.compactor import Compactor
from otel_bounded.traces.export import ExportPolicy, ExportReason, TailExport, downstream_from_env
from otel_bounded.traces.query import (
    DEFAULT_LIMIT,
    NOTABLE,
    TraceIndex,
    TraceQuery,
    TraceSummary,
    new_trace,
)
from otel_bounded.traces.records import HAS_PARENT, Record, SpanEncoder, decode
from otel_bounded.traces.retention import (
    LOCAL_ROOT,
    NO_BYTES,
    Admission,
    Retention,
    RetentionClass,
)
from otel_bounded.traces.sampler import ratio_sampler_note

__all__ = [
    "DropReason",
    "RetentionClass",
    "TraceEvictionReason",
    "TraceStore",
    "TraceStoreStats",
    "TraceSummary",
    "UnresolvedReason",
]

_COMPONENT_TYPE = "otel_bounded_trace_store"
_EXPORT_BATCH = 512
_MAX_TRACE_ID = (1 << 128) - 1
_MAX_SPAN_ID = (1 << 64) - 1
_HEX_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


_REASONS = {
    EvictionReason.CAPACITY: TraceEvictionReason.MAX_TRACES,
    EvictionReason.WEIGHT: TraceEvictionReason.MAX_SPANS,
    EvictionReason.EXPIRED: TraceEvictionReason.TTL,
}
_EVICTION_REASONS = (
    TraceEvictionReason.MAX_TRACES,
    TraceEvictionReason.MAX_SPANS,
    TraceEvictionReason.TTL,
    TraceEvictionReason.MAX_BYTES,
)
_DROPS = {
    ENTRY_FULL: DropReason.MAX_SPANS_PER_TRACE,
    NO_ROOM: DropReason.MAX_SPANS,
    NO_BYTES: DropReason.MAX_BYTES,
}
# The variable (and argument) that raises the bound behind each reason.
_REMEDY = {
    TraceEvictionReason.MAX_TRACES: (config.TRACE_MAX_TRACES, "max_traces"),
    TraceEvictionReason.MAX_SPANS: (config.TRACE_MAX_SPANS, "max_spans"),
    TraceEvictionReason.TTL: (config.TRACE_TTL_SECONDS, "ttl_seconds"),
    TraceEvictionReason.MAX_BYTES: (config.TRACE_MAX_BYTES, "max_bytes"),
    DropReason.MAX_SPANS_PER_TRACE: (config.TRACE_MAX_SPANS_PER_TRACE, "max_spans_per_trace"),
    DropReason.MAX_SPANS: (config.TRACE_MAX_SPANS, "max_spans"),
}


@dataclass(frozen=True)
class TraceStoreStats:
    """A consistent snapshot of a store's counts.

    Always received = held + evicted + dropped + compacted (`spans_compacted`).
    """

    traces: int
    spans: int
    evicted_traces: int
    evicted_spans: int
    dropped_spans: int
    max_traces: int
    max_spans: int
    max_spans_per_trace: int
    evictions_by_reason: Mapping[str, int] = field(default_factory=dict)
    drops_by_reason: Mapping[str, int] = field(default_factory=dict)
    received_spans: int = 0
    compactions: int = 0
    spans_compacted: int = 0
    unresolved_by_reason: Mapping[str, int] = field(default_factory=dict)
    """Merged-away span ids forgotten while their trace was held, by `UnresolvedReason`."""
    ttl_seconds: float | None = None
    bytes: int = 0
    """Bytes held, as estimated when each span was encoded."""
    max_bytes: int = 0
    evictions_by_class: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    """Traces evicted, by retention class, then by reason."""
    traces_by_class: Mapping[str, int] = field(default_factory=dict)
    truncated_attributes: int = 0
    exported_by_reason: Mapping[str, int] = field(default_factory=dict)
    not_exported: int = 0
    export_failures: int = 0
    """Hand-offs to the tail export's downstream that raised (the spans stay held)."""

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data (`dataclasses.asdict` gives the same, read-only)."""
        return {
            key: dict(value) if isinstance(value, dict) else value
            for key, value in asdict(self).items()
        }


class _ByClass(dict[str, "_Counts"]):
    """Evictions by class, then reason, in a stats snapshot: read-only as `_Counts` is."""

    def _refuse(self, *_args: object, **_kwargs: object) -> Any:
        raise TypeError("a TraceStoreStats snapshot is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class _Counts(dict[str, int]):
    """Counts by reason in a stats snapshot: a dict (so `asdict` copies it) that refuses changes."""

    def _refuse(self, *_args: object, **_kwargs: object) -> Any:
        raise TypeError("a TraceStoreStats snapshot is read-only")

    __setitem__ = __delitem__ = __ior__ = _refuse
    clear = pop = popitem = setdefault = update = _refuse


class TraceStore(SpanProcessor):
    """A `SpanProcessor` keeping recent traces in memory, bounded and observable.

    A trace's age is the time since its latest span was recorded, so "oldest
    first" means least recently active first. Whenever a cap would be
    exceeded, whole oldest traces are evicted; a span that cannot fit even
    then is dropped. Every eviction and drop is counted in metrics, and the
    first of each is logged once as a WARNING naming the variable to raise.
    """

    def __init__(
        self,
        max_traces: int = config.TRACE_MAX_TRACES.default,
        max_spans: int = config.TRACE_MAX_SPANS.default,
        max_spans_per_trace: int = config.TRACE_MAX_SPANS_PER_TRACE.default,
        ttl_seconds: float | None = config.TRACE_TTL_SECONDS.default,
        clock: Clock = time.time,
        meter_provider: MeterProvider | None = None,
        compaction: CompactionPolicy | None = None,
        audit: AuditSink = NO_AUDIT,
        max_bytes: int = config.TRACE_MAX_BYTES.default,
        max_attribute_length: int | None = config.TRACE_MAX_ATTRIBUTE_LENGTH.default,
        protected_fraction: float = config.TRACE_PROTECTED_FRACTION.default,
        slow_threshold_ms: float = config.TRACE_SLOW_THRESHOLD_MS.default,
        export: SpanProcessor | SpanExporter | None = None,
        export_when: ExportPolicy | None = None,
    ) -> None:
        _check_cap("max_traces", max_traces)
        _check_cap("max_spans", max_spans)
        _check_cap("max_spans_per_trace", max_spans_per_trace)
        _check_cap("max_bytes", max_bytes)
        if max_attribute_length is not None:
            _check_cap("max_attribute_length", max_attribute_length)
        if (
            isinstance(protected_fraction, bool)
            or not isinstance(protected_fraction, int | float)
            or not 0 <= protected_fraction < 1
        ):
            raise ValueError(
                f"protected_fraction must be a number from 0 to below 1, got {protected_fraction!r}"
            )
        if (
            isinstance(slow_threshold_ms, bool)
            or not isinstance(slow_threshold_ms, int | float)
            or not 0 < slow_threshold_ms < float("inf")
        ):
            raise ValueError(
                f"slow_threshold_ms must be a positive number, got {slow_threshold_ms!r}"
            )
        if export_when is not None and export is None:
            raise ValueError("export_when needs export (a SpanProcessor or a SpanExporter)")
        if ttl_seconds is not None and (
            isinstance(ttl_seconds, bool)
            or not isinstance(ttl_seconds, int | float)
            or not 0 < ttl_seconds < float("inf")
        ):
            raise ValueError(f"ttl_seconds must be a positive number or None, got {ttl_seconds!r}")
        if compaction is not None and not isinstance(compaction, CompactionPolicy):
            raise ValueError(f"compaction must be a CompactionPolicy or None, got {compaction!r}")
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._limits = {
            "max_traces": max_traces,
            "max_spans": max_spans,
            "max_spans_per_trace": max_spans_per_trace,
            "ttl_seconds": ttl_seconds,
            "max_bytes": max_bytes,
            "max_remembered_ids": None if compaction is None else compaction.max_remembered_ids,
        }
        self._max_spans_per_trace = max_spans_per_trace
        # Spans at which a trace is compacted before a span of it is dropped.
        self._full_trace = min(max_spans_per_trace, max_spans)
        # The retention layer meets the caps, class-aware, before the core would
        # have to: the span cap has one span of slack, as a span of a held trace
        # is counted (it grows) before room is made for it.
        self._traces: BoundedStore[int, list[Record]] = BoundedStore(
            max_traces,
            max_weight=max_spans + 1,
            max_entry_weight=max_spans_per_trace,
            ttl_seconds=ttl_seconds,
            clock=clock,
            on_evict=self._on_evict,
        )
        self._audit = audit
        self._encoder = SpanEncoder()
        self._encode = self._encoder.encode
        self._index = TraceIndex(self._traces, self._encoder)
        self._held = self._index.held
        self._max_bytes = max_bytes
        self._admission = Admission(max_attribute_length, slow_threshold_ms)
        self._admit = self._admission.admit
        self._retention = Retention(
            self._traces,
            max_traces=max_traces,
            max_spans=max_spans,
            max_bytes=max_bytes,
            protected_fraction=protected_fraction,
            reasons=_EVICTION_REASONS,
            ttl=ttl_seconds is not None,
        )
        self._retention.on_evict = self._on_retention_evict
        self._tail = (
            None
            if export is None
            else TailExport(export, export_when or ExportPolicy(), max_decisions=max_traces)
        )
        self._lock = threading.Lock()
        self._received = 0
        self._drops = {
            DropReason.MAX_SPANS_PER_TRACE: 0,
            DropReason.MAX_SPANS: 0,
            DropReason.ERROR: 0,
            DropReason.MAX_BYTES: 0,
        }
        self._shutdown = False
        # First evictions and drops noted under the lock, logged after it is released.
        self._pending_warnings: list[tuple[str, str]] = []
        self._warned: set[str] = set()
        self._first_error: Exception | None = None
        self._first_export_error: Exception | None = None
        self._compactor = (
            None
            if compaction is None
            else Compactor(compaction, self._traces, on_unresolved=self._note_unresolved)
        )
        if self._compactor is not None:
            self._compactor.on_compacted = self._on_compacted
        self.component = telemetry.component_attributes(_COMPONENT_TYPE)
        reinit_after_fork(self._at_fork_reinit)
        telemetry.register_trace_store_instruments(meter_provider, self, self.component)

    @classmethod
    def from_env(cls, **overrides: Any) -> TraceStore:
        """A store configured from the ``OTEL_BOUNDED_TRACE_*`` variables; arguments win."""
        arguments = config.read_arguments(
            {
                "max_traces": config.TRACE_MAX_TRACES,
                "max_spans": config.TRACE_MAX_SPANS,
                "max_spans_per_trace": config.TRACE_MAX_SPANS_PER_TRACE,
                "ttl_seconds": config.TRACE_TTL_SECONDS,
                "max_bytes": config.TRACE_MAX_BYTES,
                "max_attribute_length": config.TRACE_MAX_ATTRIBUTE_LENGTH,
                "protected_fraction": config.TRACE_PROTECTED_FRACTION,
                "slow_threshold_ms": config.TRACE_SLOW_THRESHOLD_MS,
            },
            overrides,
        )
        if "compaction" not in overrides:
            arguments["compaction"] = CompactionPolicy.from_env()
        if "audit" not in overrides:
            arguments["audit"] = audit_from_env()
        if "export" not in overrides:
            arguments["export"] = downstream_from_env()
        if arguments["export"] is not None and "export_when" not in overrides:
            arguments["export_when"] = ExportPolicy.from_env()
        store = cls(**arguments)
        if store._tail is not None:
            note = ratio_sampler_note()
            if note is not None:
                telemetry.logger.info(
                    "TraceStore %s exports traces (tail export) but %s; the store sees only "
                    "the spans it keeps. Set OTEL_TRACES_SAMPLER=parentbased_always_on so the "
                    "store decides from every trace.",
                    store.component[telemetry.COMPONENT_NAME],
                    note,
                )
        return store

    def __repr__(self) -> str:
        with self._lock:
            traces, spans = len(self._traces), self._traces.weight
        ttl = self._limits["ttl_seconds"]
        return (
            f"<TraceStore {self.component[telemetry.COMPONENT_NAME]}: {traces:,}/"
            f"{self._max_traces:,} traces, {spans:,}/{self._max_spans:,} spans, "
            f"max_spans_per_trace={self._max_spans_per_trace:,}, ttl_seconds={ttl}"
            f"{', compacting' if self._compactor is not None else ''}>"
        )

    # -- SpanProcessor ---------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        handed: tuple[int, tuple[Record, ...], ReadableSpan | None] | None = None
        try:
            with self._lock:
                self._received += 1
                trace_id, record = self._encode(span)
                record, size, flags = self._admit(record)
                if self._compactor is not None:
                    held = self._record_compacting(trace_id, record, size, flags, self._compactor)
                else:
                    # `_record`, inlined for the common case: this runs for every span.
                    trace = self._traces.grow(trace_id)
                    if trace is not None and trace.__class__ is not Refusal:
                        refusal = self._retention.take(trace_id, size, flags, new=False)
                        if refusal is None:
                            trace.append(record)  # type: ignore[union-attr]
                            # `HeldTrace.fold` written out: a call would cost more than the fold.
                            start = record[2]
                            if start is not None and start < trace.start:  # type: ignore[union-attr]
                                trace.start = start  # type: ignore[union-attr]
                            end = record[3]
                            if end is not None and end > trace.end:  # type: ignore[union-attr]
                                trace.end = end  # type: ignore[union-attr]
                            if (record[4] ^ HAS_PARENT) & NOTABLE:
                                trace.note(record)  # type: ignore[union-attr]
                            held = True
                        else:
                            held = self._refuse_grown(trace_id, refusal)
                    else:
                        held = self._record(trace_id, record, size, flags, trace)
                if self._tail is not None:
                    handed = self._decide(trace_id, flags, span, held)
        except Exception as error:  # never raise into the application
            self._count_error(error)
        finally:
            if self._pending_warnings:
                self._flush_warnings()
        if handed is not None:
            self._hand_off(*handed)

    def _record(
        self,
        trace_id: int,
        record: Record,
        size: int,
        flags: int,
        records: list[Record] | Refusal | None,
    ) -> bool:
        """Hold `record` after `grow` gave `records`, making room by class-aware eviction.

        False when the span is dropped.
        """
        traces = self._traces
        retention = self._retention
        if records is None:  # new, evicted or expired: the trace starts afresh
            refusal = retention.take(trace_id, size, flags, new=True)
            if refusal is not None:
                self._drop(_DROPS[refusal])
                return False
            trace = new_trace(trace_id, record)
            traces.put(trace_id, trace, weight=1)
            self._held[trace_id] = trace
            return True
        if records.__class__ is Refusal:
            self._drop(_DROPS[records])
            return False
        refusal = retention.take(trace_id, size, flags, new=False)
        if refusal is not None:
            return self._refuse_grown(trace_id, refusal)
        records.append(record)  # type: ignore[union-attr]
        records.fold(record)  # type: ignore[union-attr]
        return True

    def _refuse_grown(self, trace_id: int, refusal: Refusal) -> bool:
        """Drop a span its trace already grew by in the core: the growth is undone."""
        traces = self._traces
        traces.set_weight(trace_id, traces.weight_of(trace_id) - 1)
        self._drop(_DROPS[refusal])
        return False

    def _record_compacting(
        self, trace_id: int, record: Record, size: int, flags: int, compactor: Compactor
    ) -> bool:
        """`_record` with compaction: compact before anything is evicted or dropped."""
        traces = self._traces
        retention = self._retention
        if traces.weight >= self._max_spans:
            compactor.relieve(self._max_spans - 1)
        held = traces.get(trace_id)
        if held is not None and traces.weight_of(trace_id) >= self._full_trace:
            # Compact the trace itself before dropping a span of it: caps count
            # held spans. Only if it grew since its last pass, or nothing changes.
            compactor.compact_if_grown(trace_id, held)
        records = traces.grow(trace_id)
        if records.__class__ is Refusal:
            self._drop(_DROPS[records])
            return False
        # After any pass above: the span's parent may just have been merged away.
        record = compactor.adopt(trace_id, record)
        new = records is None
        refusal = retention.take(trace_id, size, flags, new=new)
        if refusal is not None:
            if not new:
                traces.set_weight(trace_id, traces.weight_of(trace_id) - 1)
            self._drop(_DROPS[refusal])
            return False
        if new:
            records = new_trace(trace_id, record)
            traces.put(trace_id, records, weight=1)
            self._held[trace_id] = records
        else:
            records.append(record)  # type: ignore[union-attr]
            records.fold(record)  # type: ignore[union-attr]
        try:
            compactor.recorded(trace_id, records, record)  # type: ignore[arg-type]
        except Exception as error:  # the span is held: a failed pass drops nothing
            self._note_error(error)
        return True

    def _decide(
        self, trace_id: int, flags: int, span: ReadableSpan, held: bool
    ) -> tuple[int, tuple[Record, ...], ReadableSpan | None] | None:
        """Under the lock: what the tail export hands over for this span, if anything.

        A span of a decided trace follows its decision; a local root decides
        its trace from everything held for it.
        """
        tail = self._tail
        assert tail is not None
        decided = tail.decided(trace_id)
        if decided is not None:
            return (trace_id, (), span) if decided else None
        if not flags & LOCAL_ROOT:
            return None
        if not tail.decide(trace_id, self._retention.flags_of(trace_id) | flags):
            return None
        trace = self._traces.get(trace_id)
        records = tuple(trace) if trace is not None else ()
        return trace_id, records, None if held else span

    def _hand_off(
        self, trace_id: int, records: tuple[Record, ...], span: ReadableSpan | None
    ) -> None:
        """Outside the lock: decode a decided trace and give it to the downstream processor."""
        tail = self._tail
        assert tail is not None
        encoder = self._encoder
        spans = [decode(trace_id, record, encoder) for record in records]
        if span is not None:
            spans.append(span)
        try:
            tail.hand_off(spans)
        except Exception as error:  # the spans are held; only the export failed
            with self._lock:
                tail.failures += 1
                if tail.failures == 1:
                    self._first_export_error = error
                    self._pending_warnings.append(("export_error", ""))
            self._flush_warnings()

    def shutdown(self) -> None:
        """Stop recording; what is held stays readable. The tail export is flushed and shut."""
        self._shutdown = True
        if self._tail is not None:
            self._tail.downstream.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        if self._tail is not None:
            return self._tail.downstream.force_flush(timeout_millis)
        return True

    # -- reads -----------------------------------------------------------

    def __len__(self) -> int:
        """Traces held, never counting an expired one."""
        with self._lock:
            self._traces.expire()
            held = len(self._traces)
        self._flush_warnings()
        return held

    def __contains__(self, trace_id: object) -> bool:
        """Whether a trace is held; anything that is not a trace id is not."""
        try:
            key = _trace_key(trace_id)
        except ValueError:
            return False
        with self._lock:
            held = self._traces.get(key) is not None
        self._flush_warnings()
        return held

    def trace_ids(self) -> tuple[int, ...]:
        """Held trace ids, least recently active first."""
        with self._lock:
            self._traces.expire()
            ids = tuple(self._traces)
        self._flush_warnings()
        return ids

    def get(self, trace_id: int | str) -> tuple[ReadableSpan, ...]:
        """The spans of a held trace, in the order they ended; `TraceNotFound` otherwise.

        "Ended" is when the store received the span; a composite stands where its
        most recently received member did.
        """
        key = _trace_key(trace_id)
        with self._lock:
            trace = self._traces.get(key)
            records = tuple(trace) if trace is not None else ()
            evicted = sum(self._retention.evictions.values())
        self._flush_warnings()
        if trace is None:
            raise TraceNotFound(key, evicted_traces=evicted, max_traces=self._max_traces)
        encoder = self._encoder
        return tuple(decode(key, record, encoder) for record in records)

    def resolve(self, trace_id: int | str, span_id: int) -> ReadableSpan | None:
        """The span that now stands for `span_id` in a held trace: itself, or the composite
        that holds it since it was merged away; None when no such id is held or remembered.

        `TraceNotFound` when the trace is not held.
        """
        key = _trace_key(trace_id)
        if (
            isinstance(span_id, bool)
            or not isinstance(span_id, int)
            or not 0 < span_id <= _MAX_SPAN_ID
        ):
            raise ValueError(f"a span id is a positive 64-bit int, got {span_id!r}")
        with self._lock:
            trace = self._traces.get(key)
            record = None
            if trace is not None:
                record = _find(trace, span_id)
                if record is None and self._compactor is not None:
                    composite = self._compactor.resolve(key, span_id)
                    if composite is not None:
                        record = _find(trace, composite)
            evicted = sum(self._traces.evictions.values())
        self._flush_warnings()
        if trace is None:
            raise TraceNotFound(key, evicted_traces=evicted, max_traces=self._max_traces)
        return None if record is None else decode(key, record, self._encoder)

    def query(
        self,
        *,
        status: str | None = None,
        name: str | None = None,
        min_duration_ms: float | None = None,
        max_duration_ms: float | None = None,
        attributes: Mapping[str, Any] | None = None,
        since: float | None = None,
        until: float | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[TraceSummary]:
        """Summaries of held traces matching every filter given, newest start first.

        `status`: ``"error"``, ``"ok"`` or ``"unset"`` (see `TraceSummary`);
        `name`: some span's name, exactly, or a prefix ending in ``*``;
        `attributes`: keys and values one span carries (its resource's count
        too, e.g. ``service.name``), compared by type and value; `since` and
        `until`: Unix seconds, inclusive, on the trace's start. Filters on
        status, duration and time read only per-trace summaries.
        """
        request = TraceQuery(
            status=status,
            name=name,
            min_duration_ms=min_duration_ms,
            max_duration_ms=max_duration_ms,
            attributes=attributes,
            since=since,
            until=until,
            limit=limit,
        )
        try:
            return self._index.query(request, self._lock)
        finally:
            self._flush_warnings()

    def summary(self, trace_id: int | str) -> TraceSummary:
        """The summary of one held trace; `TraceNotFound` otherwise."""
        key = _trace_key(trace_id)
        with self._lock:
            summary = self._index.summary(key)
            evicted = sum(self._traces.evictions.values())
        self._flush_warnings()
        if summary is None:
            raise TraceNotFound(key, evicted_traces=evicted, max_traces=self._max_traces)
        return summary

    @property
    def evicted_count(self) -> int:
        """Whole traces evicted since the store was created, every reason together."""
        return self.stats().evicted_traces

    def stats(self) -> TraceStoreStats:
        """Counts at this moment, expired traces removed first."""
        stats = self._stats()
        self._flush_warnings()
        return stats

    def _stats(self) -> TraceStoreStats:
        with self._lock:
            traces = self._traces
            traces.expire()
            retention = self._retention
            by_class: dict[str, dict[str, int]] = {
                cls: dict.fromkeys(_EVICTION_REASONS, 0) for cls in RetentionClass.ALL
            }
            evictions = dict.fromkeys(_EVICTION_REASONS, 0)
            for (reason, cls), count in retention.evictions.items():
                by_class[cls][reason] = count
                evictions[reason] += count
            dropped = sum(self._drops.values())
            tail = self._tail
            return TraceStoreStats(
                traces=len(traces),
                spans=traces.weight,
                evicted_traces=sum(evictions.values()),
                evicted_spans=traces.evicted_weight + retention.evicted_spans,
                dropped_spans=dropped,
                max_traces=self._max_traces,
                max_spans=self._max_spans,
                max_spans_per_trace=self._max_spans_per_trace,
                evictions_by_reason=_Counts(evictions),
                drops_by_reason=_Counts(self._drops),
                received_spans=self._received,
                compactions=0 if self._compactor is None else self._compactor.compactions,
                spans_compacted=0 if self._compactor is None else self._compactor.spans_compacted,
                unresolved_by_reason=_Counts(
                    {UnresolvedReason.MAX_REMEMBERED_IDS: 0}
                    if self._compactor is None
                    else self._compactor.unresolved
                ),
                ttl_seconds=self._limits["ttl_seconds"],
                bytes=retention.total_bytes,
                max_bytes=self._max_bytes,
                evictions_by_class=_ByClass(
                    {cls: _Counts(counts) for cls, counts in by_class.items()}
                ),
                traces_by_class=_Counts(retention.held_by_class()),
                truncated_attributes=self._admission.truncated,
                exported_by_reason=_Counts(
                    tail.exported if tail is not None else dict.fromkeys(ExportReason.ALL, 0)
                ),
                not_exported=0 if tail is None else tail.not_exported,
                export_failures=0 if tail is None else tail.failures,
            )

    def clear(self) -> None:
        """Forget every held trace; counts of past evictions and drops are kept.

        Spans removed here leave `received_spans` too, so that received = held
        + evicted + dropped still holds.
        """
        with self._lock:
            self._received -= self._traces.weight
            self._traces.clear()
            self._retention.clear()
            self._index.clear()
            if self._compactor is not None:
                self._compactor.clear()

    def export_to(
        self, exporter: SpanExporter, trace_ids: Iterable[int | str] | None = None
    ) -> int:
        """Push held traces (all, or those named; unknown ids are skipped) to `exporter`.

        Returns how many spans the exporter accepted: a flight recorder to dump
        when something goes wrong.
        """
        ids = self.trace_ids() if trace_ids is None else [_trace_key(t) for t in trace_ids]
        batch: list[ReadableSpan] = []
        exported = 0
        for trace_id in ids:
            try:
                batch.extend(self.get(trace_id))
            except TraceNotFound:
                continue
            if len(batch) >= _EXPORT_BATCH:
                exported += _export(exporter, batch)
                batch = []
        if batch:
            exported += _export(exporter, batch)
        return exported

    def dump(
        self,
        exporter: SpanExporter,
        *,
        since: float | None = None,
        status: StatusCode | None = None,
    ) -> int:
        """Export held traces now, the flight recorder's snapshot; returns spans accepted.

        `since` (Unix seconds) keeps traces with a span that ended then or
        later; `status` keeps traces with a span of that status. Spans go to
        `exporter` in batches of whole traces, from this thread.
        """
        if since is not None and (
            isinstance(since, bool) or not isinstance(since, int | float) or since != since
        ):
            raise ValueError(f"since must be Unix seconds or None, got {since!r}")
        if status is not None and not isinstance(status, StatusCode):
            raise ValueError(f"status must be a StatusCode or None, got {status!r}")
        since_ns = None if since is None else int(since * 1e9)
        status_bits = None if status is None else list(StatusCode).index(status) << 3
        chosen: list[tuple[int, tuple[Record, ...]]] = []
        with self._lock:
            traces = self._traces
            traces.expire()
            for trace_id in traces:
                records = traces.get(trace_id)
                if records is None:
                    continue
                if since_ns is not None and not any(
                    (record[3] or 0) >= since_ns for record in records
                ):
                    continue
                if status_bits is not None and not any(
                    record[4] & 0b11000 == status_bits for record in records
                ):
                    continue
                chosen.append((trace_id, tuple(records)))
        self._flush_warnings()
        encoder = self._encoder
        exported = 0
        batch: list[ReadableSpan] = []
        for trace_id, snapshot in chosen:
            batch.extend(decode(trace_id, record, encoder) for record in snapshot)
            if len(batch) >= _EXPORT_BATCH:
                exported += _export(exporter, batch)
                batch = []
        if batch:
            exported += _export(exporter, batch)
        return exported

    # -- internals -------------------------------------------------------

    def _drop(self, reason: str) -> None:
        self._drops[reason] += 1
        if reason not in self._warned:
            self._warned.add(reason)
            self._pending_warnings.append(("drop", reason))

    def _count_error(self, error: Exception) -> None:
        with self._lock:
            self._drops[DropReason.ERROR] += 1
            self._note_error(error)

    def _note_error(self, error: Exception) -> None:
        """Keep the first failure for one WARNING with its traceback; later ones are counted."""
        if self._first_error is None:
            self._first_error = error
            self._pending_warnings.append(("error", DropReason.ERROR))

    def _note_unresolved(self, reason: str) -> None:
        self._pending_warnings.append(("unresolved", reason))

    def _on_evict(self, trace_id: int, records: list[Record], reason: str) -> None:
        """The core evicted a trace (it expired): the retention layer counts it by class."""
        retention = self._retention
        cls = retention.forget(trace_id, len(records))
        retention.evictions[_REASONS[reason], cls] += 1
        self._on_retention_evict(trace_id, records, _REASONS[reason])

    def _on_retention_evict(self, trace_id: int, records: list[Record], reason: str) -> None:
        """Every evicted trace, whoever evicted it (`reason` a `TraceEvictionReason`)."""
        self._held.pop(trace_id, None)
        # The spans are decoded and encoded by the audit log's writer, off this thread.
        self._audit.append(
            telemetry.AUDIT_TRACE_EVICTED,
            {
                "trace_id": f"{trace_id:032x}",
                "reason": reason,
                "span_count": len(records),
                "spans": partial(_decode_all, trace_id, records, self._encoder),
            },
        )
        if self._compactor is not None:
            self._compactor.forget(trace_id)
        if "evict" not in self._warned:
            self._warned.add("evict")
            self._pending_warnings.append(("evict", reason))

    def _on_compacted(self, trace_id: int, records: list[Record], spans_before: int) -> None:
        size_of = self._admission.size_of
        self._retention.resized(
            trace_id, sum(size_of(record) for record in records), spans_before, len(records)
        )

    def _flush_warnings(self) -> None:
        """Log the first eviction and first drops noted under the lock, outside it."""
        if not self._pending_warnings:
            return
        with self._lock:
            pending, self._pending_warnings = self._pending_warnings, []
            held_traces, held_spans = len(self._traces), self._traces.weight
        name = self.component[telemetry.COMPONENT_NAME]
        for kind, reason in pending:
            if kind == "export_error":
                telemetry.logger.warning(
                    "TraceStore %s failed to hand an exported trace to its downstream span "
                    "processor; the spans stay held and the application is not affected. This "
                    "and any later failure are counted in TraceStore.stats().export_failures "
                    "and not logged again.",
                    name,
                    exc_info=self._first_export_error,
                )
                continue
            fields: dict[str, str | int | float] = dict(self.component)
            if kind == "unresolved":
                fields[telemetry.COMPACTION_UNRESOLVED_REASON] = reason
                fields[telemetry.CAP_NAME] = "max_remembered_ids"
                remembered = self._limits["max_remembered_ids"]
                if remembered is not None:
                    fields[telemetry.CAP_VALUE] = remembered
                telemetry.logger.warning(
                    "TraceStore %s forgot merged-away span ids of a held trace (reason %s): "
                    "a late child of such a span keeps its original parent id and resolve() "
                    "returns None for it. Raise CompactionPolicy.max_remembered_ids to "
                    "remember more. Further ones are counted in %s, not logged.",
                    name,
                    reason,
                    telemetry.TRACE_STORE_COMPACTION_UNRESOLVED,
                    extra=fields,
                )
                continue
            if kind == "error":
                fields[telemetry.DROP_REASON] = DropReason.ERROR
                telemetry.logger.warning(
                    "TraceStore %s failed to record a span; it never raises into the "
                    "application, so this and any later failure are counted in %s "
                    "(reason error) and not logged again. Please report it.",
                    name,
                    telemetry.TRACE_STORE_SPANS_DROPPED,
                    exc_info=self._first_error,
                    extra=fields,
                )
                continue
            variable, argument = _REMEDY[reason]
            limit = self._limits[argument]
            # The structured twin of the message, for OTel log records (see otel_bounded.logs).
            fields[telemetry.DROP_REASON if kind == "drop" else telemetry.EVICTION_REASON] = reason
            fields[telemetry.CAP_NAME] = argument
            fields[telemetry.CAP_VARIABLE] = variable.name
            if limit is not None:
                fields[telemetry.CAP_VALUE] = limit
            if kind == "drop":
                telemetry.logger.warning(
                    "TraceStore %s dropped its first span (reason %s, %s=%s). Raise %s (or "
                    "%s=) to keep more. Further drops are counted in %s, not logged.",
                    name,
                    reason,
                    argument,
                    limit,
                    variable.name,
                    argument,
                    telemetry.TRACE_STORE_SPANS_DROPPED,
                    extra=fields,
                )
            elif reason == TraceEvictionReason.TTL:
                telemetry.logger.warning(
                    "TraceStore %s expired its first trace (idle for ttl_seconds=%s; holding "
                    "%d traces, %d spans). Raise %s (or %s=) to keep idle traces longer. "
                    "Further evictions are counted in %s, not logged.",
                    name,
                    limit,
                    held_traces,
                    held_spans,
                    variable.name,
                    argument,
                    telemetry.TRACE_STORE_EVICTIONS,
                    extra=fields,
                )
            else:
                telemetry.logger.warning(
                    "TraceStore %s evicted its first trace (reason %s, %s=%s; holding %d "
                    "traces, %d spans). The least recently active traces are now evicted to "
                    "stay within the cap; raise %s (or %s=) to keep more. Further evictions "
                    "are counted in %s, not logged.",
                    name,
                    reason,
                    argument,
                    limit,
                    held_traces,
                    held_spans,
                    variable.name,
                    argument,
                    telemetry.TRACE_STORE_EVICTIONS,
                    extra=fields,
                )

    def _at_fork_reinit(self) -> None:
        self._lock = threading.Lock()


def _check_cap(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def _trace_key(trace_id: object) -> int:
    if isinstance(trace_id, int) and not isinstance(trace_id, bool):
        if 0 < trace_id <= _MAX_TRACE_ID:
            return trace_id
    elif isinstance(trace_id, str) and _HEX_TRACE_ID.fullmatch(trace_id):
        value = int(trace_id, 16)
        if value > 0:
            return value
    raise ValueError(f"a trace id is a positive 128-bit int or 32 hex digits, got {trace_id!r}")


def _find(records: Sequence[Record], span_id: int) -> Record | None:
    for record in records:
        if record[0] == span_id:
            return record
    return None


def _decode_all(
    trace_id: int, records: list[Record], encoder: SpanEncoder
) -> tuple[ReadableSpan, ...]:
    return tuple(decode(trace_id, record, encoder) for record in records)


def _export(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> int:
    result = exporter.export(spans)
    return len(spans) if result is SpanExportResult.SUCCESS else 0
