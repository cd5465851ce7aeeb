"""What a trace store keeps when it must choose: retention classes and a byte budget.

Every held trace has a class: ``error`` (a span with ERROR status), ``security``
(a refusal recorded on ``otel_bounded.outcome``: a refused approval, a revoked
or invalid token), ``slow`` (its local root took at least the slow threshold)
or ``normal``. A share of every cap (traces, spans, bytes) is reserved for the
non-normal classes: while they stay within it, a full store evicts the least
recently active *normal* trace, so an overload of healthy traffic cannot push
out the traces an operator needs.

Bytes are an estimate made once per span, when it is encoded: the sizes of the
objects its record owns, as CPython allocates them. String values and names
seen often are interned in a bounded table, so a record pointing at a shared
copy owns nothing there. `max_attribute_length` truncates longer strings (and
sequences) before they are held, and marks the span with the keys it cut.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.trace import Event

from otel_bounded import telemetry
from otel_bounded.core import NO_ROOM, BoundedStore, Refusal
from otel_bounded.telemetry import RetentionClass
from otel_bounded.traces.records import HAS_PARENT, PARENT_IS_REMOTE, Extra, Record

__all__ = [
    "DEFAULT_PROTECTED_FRACTION",
    "ERROR",
    "LOCAL_ROOT",
    "NO_BYTES",
    "SECURITY",
    "SECURITY_OUTCOMES",
    "SLOW",
    "Admission",
    "Retention",
    "RetentionClass",
    "class_of",
]

DEFAULT_PROTECTED_FRACTION = 0.25

TRUNCATED_ATTRIBUTES = telemetry.TRUNCATED_ATTRIBUTES


# Bits of what a span says about its trace; a trace's flags are the union of its spans'.
ERROR = 1
SLOW = 2
SECURITY = 4
LOCAL_ROOT = 8
"""Not a class: the span is its trace's local root, so the trace is decided now."""
_CLASS_BITS = ERROR | SLOW | SECURITY

SECURITY_OUTCOMES = frozenset({"refused", "revoked", "invalid", "scope_mismatch"})
"""Values of ``otel_bounded.outcome`` that make a trace ``security``."""

_ERROR_STATUS = 2 << 3  # StatusCode.ERROR's index in the packed small fields
_STATUS_BITS = 0b11 << 3

NO_BYTES = Refusal("max_bytes")
"""The span would not fit under `max_bytes` even with every other trace evicted."""


def class_of(flags: int) -> str:
    """The class a trace's flags put it in: security (refusals carry ERROR too), error, slow."""
    if flags & SECURITY:
        return RetentionClass.SECURITY
    if flags & ERROR:
        return RetentionClass.ERROR
    if flags & SLOW:
        return RetentionClass.SLOW
    return RetentionClass.NORMAL


# -- sizes ---------------------------------------------------------------------
# Checked with tracemalloc on CPython 3.11 (64-bit): `sys.getsizeof`, rounded up
# to the allocator's 8 bytes, plus the constants below.

_TUPLE_OVERHEAD = 0
_RECORD = sys.getsizeof((0,) * 9)
_LARGE_INT = 40  # a span id or a nanosecond timestamp
# The record, its span id, start and end (the parent id is the parent's span id
# object), and its slot in the trace's list.
_SPAN_FIXED = _RECORD + 3 * _LARGE_INT + 8
TRACE_OVERHEAD = 300
"""Per held trace: its list and its entries in the store's maps."""
_EVENT = 136 + 224
_ATTRIBUTE_SLOT = 64
_INTERN_MAX_LENGTH = 128
_MAX_INTERNED = 4096


_INT_60 = 1 << 60


def _int_size(value: int) -> int:
    return (sys.getsizeof(value) + 7) & ~7


def _rounded(size: int) -> int:
    return (size + 7) & ~7


class Admission:
    """Makes a record ready to hold: truncated, its size estimated, its flags read.

    One per store, used under the store's lock. Short strings are interned in
    a bounded table, so the many spans repeating a model name or an operation
    share one copy (and own none of it).
    """

    __slots__ = ("_interned", "_max_length", "_slow_ns", "admit", "truncated")

    def __init__(self, max_attribute_length: int | None, slow_threshold_ms: float) -> None:
        self._max_length = max_attribute_length
        self._slow_ns = int(slow_threshold_ms * 1_000_000)
        self._interned: dict[str, str] = {}
        self.truncated = 0
        """Attribute values truncated, span and event attributes together."""
        self.admit = self._make_admit()
        """`admit(record) -> (record, bytes, flags)`: the record to hold, its size, its flags."""

    def _make_admit(self) -> Callable[[Record], tuple[Record, int, int]]:
        # A closure, as `records._make_encode`: this runs for every span.
        interned = self._interned
        intern = self._intern
        max_length = self._max_length
        slow_ns = self._slow_ns
        getsizeof = sys.getsizeof
        outcome_key = telemetry.OUTCOME
        security_outcomes = SECURITY_OUTCOMES
        local_root_bits = HAS_PARENT | PARENT_IS_REMOTE

        def admit(record: Record) -> tuple[Record, int, int]:
            meta = record[4]
            flags = ERROR if meta & _STATUS_BITS == _ERROR_STATUS else 0
            if meta & local_root_bits != HAS_PARENT:
                flags |= LOCAL_ROOT
                start, end = record[2], record[3]
                if start is not None and end is not None and end - start >= slow_ns:
                    flags |= SLOW
            name = record[5]
            size = _SPAN_FIXED
            shared = interned.get(name)
            if shared is None:
                shared = intern(name)
                if shared is None:
                    size += (getsizeof(name) + 7) & ~7
            replace = shared is not None and shared is not name
            values = record[7]
            if values:
                if max_length is not None and _needs_truncation(values, max_length):
                    return self._admit_truncating(record, flags)
                size += getsizeof(values)
                for value in values:
                    cls = value.__class__
                    if cls is str:
                        shared = interned.get(value)
                        if shared is None:
                            if intern(value) is None:
                                size += (getsizeof(value) + 7) & ~7
                        elif shared is not value:
                            replace = True
                    elif cls is int:
                        if not -5 <= value <= 256:
                            size += 32 if -_INT_60 < value < _INT_60 else _int_size(value)
                    elif cls is float:
                        size += 24
                    elif cls is not bool:
                        size += _value_size(value)
                if outcome_key in record[6]:
                    outcome = values[record[6].index(outcome_key)]
                    if outcome.__class__ is str and outcome in security_outcomes:
                        flags |= SECURITY
            extra = record[8]
            if extra is not None:
                if max_length is not None and extra.events:
                    return self._admit_truncating(record, flags)
                size += _extra_size(extra)
            if replace:
                # Point at the shared copies, so the span's own can be freed.
                record = (
                    *record[:5],
                    interned.get(name, name),
                    record[6],
                    tuple(
                        interned.get(value, value) if value.__class__ is str else value
                        for value in values
                    ),
                    extra,
                )
            return record, size, flags

        return admit

    def _admit_truncating(self, record: Record, flags: int) -> tuple[Record, int, int]:
        """`admit` for a span with something to cut: rare, so plain code."""
        span_id, parent_id, start, end, meta, name, keys, values, extra = record
        max_length = self._max_length
        assert max_length is not None
        if values and _needs_truncation(values, max_length):
            keys, values = self._truncate(keys, values, max_length)
        if extra is not None and extra.events:
            events = self._truncate_events(extra.events, max_length)
            if events is not extra.events:
                extra = extra._replace(events=events)
        interned = self._interned
        name = interned.get(name) or self._intern(name) or name
        values = tuple(
            (interned.get(value) or self._intern(value) or value)
            if value.__class__ is str
            else value
            for value in values
        )
        if telemetry.OUTCOME in keys:
            outcome = values[keys.index(telemetry.OUTCOME)]
            if outcome.__class__ is str and outcome in SECURITY_OUTCOMES:
                flags |= SECURITY
        record = (span_id, parent_id, start, end, meta, name, keys, values, extra)
        return record, self.size_of(record), flags

    def size_of(self, record: Record) -> int:
        """The estimate `admit` makes, for a record already admitted (say, a composite)."""
        _, _, _, _, _, name, _, values, extra = record
        interned = self._interned
        size = _SPAN_FIXED
        if interned.get(name) is not name:
            size += _rounded(sys.getsizeof(name))
        if values:
            size += sys.getsizeof(values) + _TUPLE_OVERHEAD
            for value in values:
                if value.__class__ is str:
                    if interned.get(value) is not value:
                        size += _rounded(sys.getsizeof(value))
                else:
                    size += _value_size(value)
        if extra is not None:
            size += _extra_size(extra)
        return size

    def _intern(self, text: str) -> str | None:
        if len(text) > _INTERN_MAX_LENGTH or len(self._interned) >= _MAX_INTERNED:
            return None
        self._interned[text] = text
        return text

    def _truncate(
        self, keys: tuple[str, ...], values: tuple[Any, ...], max_length: int
    ) -> tuple[tuple[str, ...], tuple[Any, ...]]:
        cut: list[str] = []
        kept = []
        for key, value in zip(keys, values, strict=True):
            shorter = _shortened(value, max_length)
            if shorter is not value:
                cut.append(key)
                self.truncated += 1
            kept.append(shorter)
        return _marked(keys, tuple(kept), cut)

    def _truncate_events(self, events: tuple[Event, ...], max_length: int) -> tuple[Event, ...]:
        result = []
        changed = False
        for event in events:
            attributes = event.attributes
            if attributes and _needs_truncation(tuple(attributes.values()), max_length):
                keys, values = self._truncate(
                    tuple(attributes), tuple(attributes.values()), max_length
                )
                event = Event(
                    event.name,
                    BoundedAttributes(attributes=dict(zip(keys, values, strict=True))),
                    event.timestamp,
                )
                changed = True
            result.append(event)
        return tuple(result) if changed else events


def _needs_truncation(values: tuple[Any, ...], max_length: int) -> bool:
    for value in values:
        cls = value.__class__
        if cls is str:
            if len(value) > max_length:
                return True
        elif cls is tuple and (
            len(value) > max_length
            or any(item.__class__ is str and len(item) > max_length for item in value)
        ):
            return True
    return False


def _shortened(value: Any, max_length: int) -> Any:
    cls = value.__class__
    if cls is str:
        return value[:max_length] if len(value) > max_length else value
    if cls is tuple:
        items = value[:max_length]
        items = tuple(
            item[:max_length] if item.__class__ is str and len(item) > max_length else item
            for item in items
        )
        return items if items != value or len(items) != len(value) else value
    return value


def _marked(
    keys: tuple[str, ...], values: tuple[Any, ...], cut: list[str]
) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    """The attributes with `otel_bounded.truncated_attributes` naming the keys cut."""
    if not cut:
        return keys, values
    if TRUNCATED_ATTRIBUTES in keys:
        index = keys.index(TRUNCATED_ATTRIBUTES)
        earlier = values[index]
        names = tuple(earlier) if isinstance(earlier, tuple) else ()
        merged = names + tuple(key for key in cut if key not in names)
        return keys, (*values[:index], merged, *values[index + 1 :])
    return (*keys, TRUNCATED_ATTRIBUTES), (*values, tuple(cut))


def _value_size(value: Any) -> int:
    cls = value.__class__
    if cls is bool or value is None:
        return 0
    if cls is int:
        return 0 if -5 <= value <= 256 else _rounded(sys.getsizeof(value))
    if cls is float:
        return 24
    if cls is str or cls is bytes:
        return _rounded(sys.getsizeof(value))
    if cls is tuple:
        return sys.getsizeof(value) + _TUPLE_OVERHEAD + sum(_value_size(item) for item in value)
    return _rounded(sys.getsizeof(value))


def _attributes_size(attributes: Mapping[str, Any] | None) -> int:
    if not attributes:
        return 0
    return sum(
        _ATTRIBUTE_SLOT + _value_size(key) + _value_size(value) for key, value in attributes.items()
    )


def _extra_size(extra: Extra) -> int:
    size = 160  # the Extra tuple and its small fields
    if extra.status_description:
        size += _rounded(sys.getsizeof(extra.status_description))
    for event in extra.events:
        size += _EVENT + _rounded(sys.getsizeof(event.name)) + _attributes_size(event.attributes)
    for link in extra.links:
        size += 200 + _attributes_size(link.attributes)
    return size


# -- class-aware eviction ------------------------------------------------------


class Retention:
    """Per-trace bytes and class over a store's `BoundedStore`; chooses what to evict.

    The owner asks `take` before adding a span, so the caps are met here,
    by evicting through `pop`, and the core never evicts for a cap itself.
    Used under the owner's lock only.
    """

    __slots__ = (
        "_bytes",
        "_flags",
        "_max_bytes",
        "_max_spans",
        "_max_traces",
        "_normal",
        "_protected",
        "_reserve_bytes",
        "_reserve_spans",
        "_reserve_traces",
        "_traces",
        "_ttl",
        "evicted_spans",
        "evictions",
        "on_evict",
        "protected_bytes",
        "protected_spans",
        "total_bytes",
    )

    def __init__(
        self,
        traces: BoundedStore[int, list[Record]],
        *,
        max_traces: int,
        max_spans: int,
        max_bytes: int,
        protected_fraction: float,
        reasons: tuple[str, ...],
        ttl: bool,
    ) -> None:
        self._traces = traces
        self._ttl = ttl
        self._max_traces = max_traces
        self._max_spans = max_spans
        self._max_bytes = max_bytes
        self._reserve_traces = int(max_traces * protected_fraction)
        self._reserve_spans = int(max_spans * protected_fraction)
        self._reserve_bytes = int(max_bytes * protected_fraction)
        self._bytes: dict[int, int] = {}
        self._flags: dict[int, int] = {}  # only traces of a protected class
        # Least recently active first, one queue for normal traces, one for the rest.
        self._normal: OrderedDict[int, None] = OrderedDict()
        self._protected: OrderedDict[int, None] = OrderedDict()
        self.total_bytes = 0
        self.protected_bytes = 0
        self.protected_spans = 0
        self.evicted_spans = 0
        self.evictions: dict[tuple[str, str], int] = {
            (reason, cls): 0 for reason in reasons for cls in RetentionClass.ALL
        }
        self.on_evict: Callable[[int, list[Record], str], None] | None = None
        """Called with each trace this layer evicts and why, after it left the store."""

    def flags_of(self, trace_id: int) -> int:
        return self._flags.get(trace_id, 0)

    def held_by_class(self) -> dict[str, int]:
        """Traces held per class."""
        counts = dict.fromkeys(RetentionClass.ALL, 0)
        counts[RetentionClass.NORMAL] = len(self._normal)
        for flags in self._flags.values():
            counts[class_of(flags)] += 1
        return counts

    def take(self, trace_id: int, size: int, flags: int, *, new: bool) -> Refusal | None:
        """Make room for a span of `size` bytes and `flags`, and count it; a `Refusal` if it cannot.

        A new trace is asked for before the owner puts it. A held trace is
        asked for after it grew by the span in the core, so it is the newest
        there and the core's span count already includes the span. On a
        refusal nothing is counted, and the owner drops the span.
        """
        traces = self._traces
        sizes = self._bytes
        if new:
            size += TRACE_OVERHEAD
            if not (
                len(traces) < self._max_traces
                and traces.weight < self._max_spans
                and self.total_bytes + size <= self._max_bytes
            ):
                refusal = self._make_room(trace_id, size, 1)
                if refusal is not None:
                    return refusal
            self.total_bytes += size
            sizes[trace_id] = size
            flags &= _CLASS_BITS
            if not flags:
                self._normal[trace_id] = None
                return None
            self._flags[trace_id] = flags
            self._protected[trace_id] = None
            self.protected_bytes += size
            self.protected_spans += 1
            return None
        if not (traces.weight <= self._max_spans and self.total_bytes + size <= self._max_bytes):
            if sizes.get(trace_id, 0) + size > self._max_bytes:
                return NO_BYTES
            if traces.weight_of(trace_id) > self._max_spans:
                return NO_ROOM
            refusal = self._make_room(trace_id, size, 0)
            if refusal is not None:
                return refusal
        self.total_bytes += size
        sizes[trace_id] += size
        held = self._flags.get(trace_id)
        if held is None:
            if not flags & _CLASS_BITS:
                self._normal.move_to_end(trace_id)
                return None
            # Normal until now: the whole trace moves to the protected share.
            del self._normal[trace_id]
            self._flags[trace_id] = flags & _CLASS_BITS
            self._protected[trace_id] = None
            self.protected_bytes += sizes[trace_id]
            self.protected_spans += traces.weight_of(trace_id)
            return None
        if flags & _CLASS_BITS:
            self._flags[trace_id] = held | (flags & _CLASS_BITS)
        self._protected.move_to_end(trace_id)
        self.protected_bytes += size
        self.protected_spans += 1
        return None

    def _make_room(self, trace_id: int, size: int, spans: int) -> Refusal | None:
        """Evict, least recently active first by class, until `spans` and `size` more fit."""
        if size > self._max_bytes:
            return NO_BYTES
        traces = self._traces
        if self._ttl:
            # Traces that already expired leave before any live one is pushed out.
            traces.expire()
        while True:
            if spans and len(traces) >= self._max_traces:
                reason = _MAX_TRACES
            elif traces.weight + spans > self._max_spans:
                reason = _MAX_SPANS
            elif self.total_bytes + size > self._max_bytes:
                reason = _MAX_BYTES
            else:
                return None
            victim = self._victim(trace_id)
            if victim is None:
                return NO_BYTES if reason == _MAX_BYTES else NO_ROOM
            self._evict(victim, reason)

    def resized(self, trace_id: int, size: int, spans_before: int, spans_after: int) -> None:
        """`trace_id` was rewritten in place (compacted): now `size` bytes, `spans_after` spans."""
        before = self._bytes.get(trace_id)
        if before is None:
            return
        size += TRACE_OVERHEAD
        self._bytes[trace_id] = size
        self.total_bytes += size - before
        if trace_id in self._flags:
            self.protected_bytes += size - before
            self.protected_spans += spans_after - spans_before

    def forget(self, trace_id: int, spans: int) -> str:
        """`trace_id` (`spans` spans) left the store, any way; returns the class it had."""
        size = self._bytes.pop(trace_id, 0)
        self.total_bytes -= size
        flags = self._flags.pop(trace_id, None)
        if flags is None:
            self._normal.pop(trace_id, None)
            return RetentionClass.NORMAL
        del self._protected[trace_id]
        self.protected_bytes -= size
        self.protected_spans -= spans
        return class_of(flags)

    def clear(self) -> None:
        self._bytes.clear()
        self._flags.clear()
        self._normal.clear()
        self._protected.clear()
        self.total_bytes = self.protected_bytes = self.protected_spans = 0

    def _victim(self, current: int) -> int | None:
        """The least recently active normal trace, unless the protected share is exceeded."""
        over = (
            len(self._protected) > self._reserve_traces
            or self.protected_spans > self._reserve_spans
            or self.protected_bytes > self._reserve_bytes
        )
        queues = (self._protected, self._normal) if over else (self._normal, self._protected)
        for queue in queues:
            for trace_id in queue:
                if trace_id != current:
                    return trace_id
        return None

    def _evict(self, trace_id: int, reason: str) -> None:
        traces = self._traces
        spans = traces.weight_of(trace_id)
        records = traces.pop(trace_id)
        self.evicted_spans += spans
        cls = self.forget(trace_id, spans)
        self.evictions[reason, cls] += 1
        if self.on_evict is not None and records is not None:
            self.on_evict(trace_id, records, reason)


_MAX_TRACES = telemetry.TraceEvictionReason.MAX_TRACES
_MAX_SPANS = telemetry.TraceEvictionReason.MAX_SPANS
_MAX_BYTES = telemetry.TraceEvictionReason.MAX_BYTES
