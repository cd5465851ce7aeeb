"""`TraceStore`: recent traces kept in memory under caps, visible as OTel metrics and logs."""

from __future__ import annotations

import re
import threading
import time
from array import array
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from opentelemetry.context import Context
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from otel_bounded import config, telemetry
from otel_bounded.core import (
    ENTRY_FULL,
    BoundedStore,
    Clock,
    EvictionReason,
    Refusal,
    reinit_after_fork,
)
from otel_bounded.errors import TraceNotFound
from otel_bounded.telemetry import DropReason, TraceEvictionReason
from otel_bounded.traces.compaction import CompactionPolicy, compact_records
from otel_bounded.traces.records import HAS_PARENT, PARENT_IS_REMOTE, Record, SpanEncoder, decode

__all__ = ["DropReason", "TraceEvictionReason", "TraceStore", "TraceStoreStats"]

_COMPONENT_TYPE = "otel_bounded_trace_store"
_EXPORT_BATCH = 512
_MAX_TRACE_ID = (1 << 128) - 1
_HEX_TRACE_ID = re.compile(r"[0-9a-fA-F]{32}")


_REASONS = {
    EvictionReason.CAPACITY: TraceEvictionReason.MAX_TRACES,
    EvictionReason.WEIGHT: TraceEvictionReason.MAX_SPANS,
    EvictionReason.EXPIRED: TraceEvictionReason.TTL,
}
# The variable (and argument) that raises the bound behind each reason.
_REMEDY = {
    TraceEvictionReason.MAX_TRACES: (config.TRACE_MAX_TRACES, "max_traces"),
    TraceEvictionReason.MAX_SPANS: (config.TRACE_MAX_SPANS, "max_spans"),
    TraceEvictionReason.TTL: (config.TRACE_TTL_SECONDS, "ttl_seconds"),
    DropReason.MAX_SPANS_PER_TRACE: (config.TRACE_MAX_SPANS_PER_TRACE, "max_spans_per_trace"),
    DropReason.MAX_SPANS: (config.TRACE_MAX_SPANS, "max_spans"),
}


@dataclass(frozen=True)
class TraceStoreStats:
    """A consistent snapshot of a store's counts; always received = held + evicted + dropped."""

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
    ) -> None:
        _check_cap("max_traces", max_traces)
        _check_cap("max_spans", max_spans)
        _check_cap("max_spans_per_trace", max_spans_per_trace)
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
        }
        self._max_spans_per_trace = max_spans_per_trace
        self._traces: BoundedStore[int, list[Record]] = BoundedStore(
            max_traces,
            max_weight=max_spans,
            max_entry_weight=max_spans_per_trace,
            ttl_seconds=ttl_seconds,
            clock=clock,
            on_evict=self._on_evict,
        )
        self._encoder = SpanEncoder()
        self._encode = self._encoder.encode
        self._lock = threading.Lock()
        self._received = 0
        self._drops = {
            DropReason.MAX_SPANS_PER_TRACE: 0,
            DropReason.MAX_SPANS: 0,
            DropReason.ERROR: 0,
        }
        self._shutdown = False
        # First evictions and drops noted under the lock, logged after it is released.
        self._pending_warnings: list[tuple[str, str]] = []
        self._warned: set[str] = set()
        self._first_error: Exception | None = None
        self._compactor = (
            None
            if compaction is None
            else _Compactor(compaction, self._traces, remembered_budget=max_spans)
        )
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
            },
            overrides,
        )
        if "compaction" not in overrides:
            arguments["compaction"] = CompactionPolicy.from_env()
        return cls(**arguments)

    # -- SpanProcessor ---------------------------------------------------

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        try:
            with self._lock:
                self._received += 1
                trace_id, record = self._encode(span)
                if self._compactor is not None:
                    self._record_compacting(trace_id, record, self._compactor)
                    return
                traces = self._traces
                records = traces.grow(trace_id)
                if records is None:
                    # New, evicted or expired: the trace starts afresh.
                    traces.put(trace_id, [record], weight=1)
                elif records.__class__ is Refusal:
                    self._drop(
                        DropReason.MAX_SPANS_PER_TRACE
                        if records is ENTRY_FULL
                        else DropReason.MAX_SPANS
                    )
                else:
                    records.append(record)  # type: ignore[union-attr]
        except Exception as error:  # never raise into the application
            self._count_error(error)
        finally:
            if self._pending_warnings:
                self._flush_warnings()

    def _record_compacting(self, trace_id: int, record: Record, compactor: _Compactor) -> None:
        """`on_end` with compaction: compact before anything is evicted or dropped."""
        traces = self._traces
        if traces.weight >= self._max_spans:
            compactor.relieve(self._max_spans - 1)
        records = traces.grow(trace_id)
        if records.__class__ is Refusal:
            # Compact the trace itself before dropping a span of it: caps count
            # held spans. Only if it grew since its last pass, or nothing changes.
            held = traces.get(trace_id)
            if held is not None and compactor.compact_if_grown(trace_id, held):
                records = traces.grow(trace_id)
        # After any pass above: the span's parent may just have been merged away.
        record = compactor.adopt(trace_id, record)
        if records is None:
            # New, evicted or expired: the trace starts afresh.
            records = [record]
            traces.put(trace_id, records, weight=1)
        elif records.__class__ is Refusal:
            self._drop(
                DropReason.MAX_SPANS_PER_TRACE if records is ENTRY_FULL else DropReason.MAX_SPANS
            )
            return
        else:
            records.append(record)  # type: ignore[union-attr]
        try:
            compactor.recorded(trace_id, records, record)  # type: ignore[arg-type]
        except Exception as error:  # the span is held: a failed pass drops nothing
            self._note_error(error)

    def shutdown(self) -> None:
        """Stop recording; what is held stays readable."""
        self._shutdown = True

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
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
        """The spans of a held trace, in the order they ended; `TraceNotFound` otherwise."""
        key = _trace_key(trace_id)
        with self._lock:
            trace = self._traces.get(key)
            records = tuple(trace) if trace is not None else ()
            evicted = sum(self._traces.evictions.values())
        self._flush_warnings()
        if trace is None:
            raise TraceNotFound(key, evicted_traces=evicted, max_traces=self._max_traces)
        encoder = self._encoder
        return tuple(decode(key, record, encoder) for record in records)

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
            evictions = {_REASONS[reason]: count for reason, count in traces.evictions.items()}
            dropped = sum(self._drops.values())
            return TraceStoreStats(
                traces=len(traces),
                spans=traces.weight,
                evicted_traces=sum(evictions.values()),
                evicted_spans=traces.evicted_weight,
                dropped_spans=dropped,
                max_traces=traces.max_entries or 0,
                max_spans=traces.max_weight or 0,
                max_spans_per_trace=self._max_spans_per_trace,
                evictions_by_reason=MappingProxyType(evictions),
                drops_by_reason=MappingProxyType(dict(self._drops)),
                received_spans=self._received,
                compactions=0 if self._compactor is None else self._compactor.compactions,
                spans_compacted=0 if self._compactor is None else self._compactor.spans_compacted,
            )

    def clear(self) -> None:
        """Forget every held trace; counts of past evictions and drops are kept.

        Spans removed here leave `received_spans` too, so that received = held
        + evicted + dropped still holds.
        """
        with self._lock:
            self._received -= self._traces.weight
            self._traces.clear()
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

    def _on_evict(self, trace_id: int, _records: list[Record], reason: str) -> None:
        if self._compactor is not None:
            self._compactor.forget(trace_id)
        if "evict" not in self._warned:
            self._warned.add("evict")
            self._pending_warnings.append(("evict", _REASONS[reason]))
            if self._compactor is None:
                # Only the first eviction is logged; later ones are counted by the core alone.
                self._traces.on_evict = None

    def _flush_warnings(self) -> None:
        """Log the first eviction and first drops noted under the lock, outside it."""
        if not self._pending_warnings:
            return
        with self._lock:
            pending, self._pending_warnings = self._pending_warnings, []
            held_traces, held_spans = len(self._traces), self._traces.weight
        name = self.component[telemetry.COMPONENT_NAME]
        for kind, reason in pending:
            fields: dict[str, str | int | float] = dict(self.component)
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


class _Compactor:
    """A store's compaction state; used under the store's lock only.

    Per trace: the held count at which its next pass is due, whether it grew
    since its last pass, and the span ids it merged away, so that a child
    ending after its parent was merged is re-parented to the composite.
    """

    __slots__ = (
        "_at_spans",
        "_dirty",
        "_due",
        "_last_pass",
        "_merged",
        "_policy",
        "_remembered",
        "_remembered_budget",
        "_traces",
        "compactions",
        "spans_compacted",
    )

    def __init__(
        self,
        policy: CompactionPolicy,
        traces: BoundedStore[int, list[Record]],
        remembered_budget: int,
    ) -> None:
        self._policy = policy
        self._traces = traces
        self._at_spans = policy.compact_at_spans
        self._due: dict[int, int] = {}
        self._last_pass: dict[int, int] = {}
        # Traces grown since their last pass, least recently active first.
        self._dirty: OrderedDict[int, None] = OrderedDict()
        # Merged-away span ids and their composites, per trace: the 8-byte ids
        # sorted by member id, a parallel array of slots into the trace's few
        # composite ids (a dict would cost 7x more); least recently merged
        # trace first. At most `remembered_budget` ids in
        # all (the span cap): the oldest trace's are forgotten first.
        self._merged: OrderedDict[int, tuple[array[int], array[int], array[int]]] = OrderedDict()
        self._remembered = 0
        self._remembered_budget = remembered_budget
        self.compactions = 0
        self.spans_compacted = 0

    def adopt(self, trace_id: int, record: Record) -> Record:
        """`record`, re-parented to a composite if its parent was merged away."""
        if not self._merged or not record[4] & HAS_PARENT:
            return record
        merged = self._merged.get(trace_id)
        if merged is None:
            return record
        members, slots, composites = merged
        parent = record[1]
        index = bisect_left(members, parent)
        if index == len(members) or members[index] != parent:
            return record
        return (record[0], composites[slots[index]], *record[2:])

    def recorded(self, trace_id: int, records: list[Record], record: Record) -> None:
        """After `record` was added: compact when due, and when the local root ends."""
        dirty = self._dirty
        dirty[trace_id] = None
        dirty.move_to_end(trace_id)
        meta = record[4]
        local_root = not meta & HAS_PARENT or meta & PARENT_IS_REMOTE
        if local_root or len(records) >= self._due.get(trace_id, self._at_spans):
            self.compact(trace_id, records)

    def relieve(self, target: int) -> None:
        """Compact least recently active traces until at most `target` spans are held.

        A pass costs what its trace holds, so a trace is compacted again only
        once it grew by a quarter since its last pass: amortized O(1) per span.
        Each trace leaves the queue when looked at and joins it again with its
        next span.
        """
        traces = self._traces
        dirty = self._dirty
        last_pass = self._last_pass
        while dirty and traces.weight > target:
            trace_id, _ = dirty.popitem(last=False)
            records = traces.get(trace_id)
            if records is None:
                continue
            last = last_pass.get(trace_id, 0)
            if len(records) - last >= max(1, last // 4):
                self.compact(trace_id, records)

    def compact_if_grown(self, trace_id: int, records: list[Record]) -> bool:
        """Compact a full trace before dropping a span of it, unless nothing changed since."""
        return trace_id in self._dirty and self.compact(trace_id, records)

    def compact(self, trace_id: int, records: list[Record]) -> bool:
        """Compact one held trace in place; True when it merged anything."""
        self._dirty.pop(trace_id, None)
        result = compact_records(records, self._policy)
        held = len(result.records)
        self._due[trace_id] = held + self._at_spans
        self._last_pass[trace_id] = held
        if not result.merged_away:
            return False
        records[:] = result.records
        self._traces.set_weight(trace_id, held)
        self.compactions += 1
        self.spans_compacted += result.merged_away
        self._remember(trace_id, result.merged)
        return True

    def _remember(self, trace_id: int, merged: Mapping[int, int]) -> None:
        pairs: dict[int, int] = {}
        held = self._merged.pop(trace_id, None)
        if held is not None:
            members, slots, composites = held
            self._remembered -= len(members)
            # A composite merged into a larger one: its members now belong to that one.
            pairs = {
                member: merged.get(composites[slot], composites[slot])
                for member, slot in zip(members, slots, strict=True)
            }
        pairs.update(merged)
        if len(pairs) > self._remembered_budget:
            # Late children come soon after their parent: keep this pass's merges.
            pairs = dict(list(merged.items())[: self._remembered_budget])
        # Sorted for bisect in `adopt`; a pass sorts anyway, this is part of it.
        ordered = sorted(pairs.items())
        # A trace has few composites: each merged id points at one by a 2-byte slot.
        composites_of: dict[int, int] = {}
        for _, composite in ordered:
            composites_of.setdefault(composite, len(composites_of))
        self._merged[trace_id] = (
            array("Q", [member for member, _ in ordered]),
            array(
                "H" if len(composites_of) <= 0xFFFF else "I",
                [composites_of[composite] for _, composite in ordered],
            ),
            array("Q", composites_of),
        )
        self._remembered += len(ordered)
        while self._remembered > self._remembered_budget and len(self._merged) > 1:
            _, (members, _, _) = self._merged.popitem(last=False)
            self._remembered -= len(members)

    def forget(self, trace_id: int) -> None:
        self._due.pop(trace_id, None)
        self._last_pass.pop(trace_id, None)
        self._dirty.pop(trace_id, None)
        held = self._merged.pop(trace_id, None)
        if held is not None:
            self._remembered -= len(held[0])

    def clear(self) -> None:
        self._due.clear()
        self._last_pass.clear()
        self._dirty.clear()
        self._merged.clear()
        self._remembered = 0


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


def _export(exporter: SpanExporter, spans: Sequence[ReadableSpan]) -> int:
    result = exporter.export(spans)
    return len(spans) if result is SpanExportResult.SUCCESS else 0
