"""Compact span records: what the trace store keeps instead of `ReadableSpan` objects.

A record is a tuple of primitives: the numeric fields packed into one bytes
object, the name, an interned tuple of attribute keys, a tuple of attribute
values, and ``None`` where a span has nothing unusual (no events, links,
status description, trace state or dropped counts). Tuples of primitives are
untracked by the garbage collector, so a full store does not slow every
collection of the application. `decode` rebuilds a faithful `ReadableSpan`.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

__all__ = ["Extra", "Interner", "Record", "SpanEncoder", "decode"]

# span_id, parent span_id, start, end (ns; -1 for None), meta bits.
_NUMBERS = struct.Struct("<QQqqQ")
_pack = _NUMBERS.pack

# meta bits: kind 0-2, status 3-4, flags 5-12, parent flags 13-20, is_remote 21,
# parent is_remote 22, has parent 23, resource index 24-39, scope index 40-55.
_NO_INDEX = 0xFFFF
_MAX_INTERNED = 0xFFFF
_MAX_KEY_TUPLES = 4096

_KINDS = tuple(SpanKind)
_KIND_CODES = {id(kind): index for index, kind in enumerate(_KINDS)}
_STATUS_CODES_BY_INDEX = tuple(StatusCode)
_STATUS_CODES = {id(code): index for index, code in enumerate(_STATUS_CODES_BY_INDEX)}
_UNSET = Status(StatusCode.UNSET)
_EMPTY_STATE = TraceState()

Record = tuple[bytes, str, tuple[str, ...], tuple[Any, ...], "Extra | None"]


class Extra(NamedTuple):
    """The rarely present parts of a span, kept only when a span has them."""

    status_description: str | None
    events: tuple[Event, ...]
    links: tuple[Link, ...]
    dropped_attributes: int
    dropped_events: int
    dropped_links: int
    trace_state: TraceState | None
    resource: Resource | None
    scope: InstrumentationScope | None


class Interner:
    """Shared objects (resources, scopes) replaced by a small index, bounded in size."""

    __slots__ = ("_ids", "last_index", "last_object", "objects")

    def __init__(self) -> None:
        self.objects: list[Any] = []
        self._ids: dict[int, int] = {}
        # The encoder checks these inline: nearly every span repeats the last one.
        self.last_object: object = None
        self.last_index = _NO_INDEX

    def index(self, obj: object) -> int:
        if obj is self.last_object:
            return self.last_index
        # The object is kept alive by `objects`, so its id cannot be reused.
        index = self._ids.get(id(obj))
        if index is None:
            if len(self.objects) >= _MAX_INTERNED or obj is None:
                return _NO_INDEX
            index = len(self.objects)
            self.objects.append(obj)
            self._ids[id(obj)] = index
        self.last_object = obj
        self.last_index = index
        return index


class SpanEncoder:
    """Turns ended spans into records; one per store, owned under the store's lock."""

    __slots__ = ("_key_tuples", "resources", "scopes")

    def __init__(self) -> None:
        self.resources = Interner()
        self.scopes = Interner()
        self._key_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}

    def encode(self, span: ReadableSpan) -> tuple[int, Record]:
        """The span's trace id and its record."""
        # Private fields are read directly: this runs for every span.
        trace_id, span_id, is_remote, flags, state, _ = span._context  # type: ignore[misc]
        parent = span._parent
        if parent is not None:
            parent_id = parent[1]
            meta = (int(parent[3]) << 13) | (parent[2] << 22) | (1 << 23)
        else:
            parent_id = 0
            meta = 0
        status = span._status
        meta |= (
            _KIND_CODES[id(span._kind)]
            | (_STATUS_CODES[id(status._status_code)] << 3)
            | (int(flags) << 5)
            | (is_remote << 21)
        )
        resources = self.resources
        resource = span._resource
        resource_index = (
            resources.last_index if resource is resources.last_object else resources.index(resource)
        )
        scopes = self.scopes
        scope = span._instrumentation_scope
        scope_index = scopes.last_index if scope is scopes.last_object else scopes.index(scope)
        meta |= (resource_index << 24) | (scope_index << 40)

        attributes = span._attributes
        dropped_attributes = 0
        if not attributes:
            keys: tuple[str, ...] = ()
            values: tuple[Any, ...] = ()
        else:
            if attributes.__class__ is BoundedAttributes:
                dropped_attributes = attributes.dropped
                attributes = attributes._dict
            keys = tuple(attributes)
            interned = self._key_tuples.get(keys)
            if interned is not None:
                keys = interned
            elif len(self._key_tuples) < _MAX_KEY_TUPLES:
                self._key_tuples[keys] = keys
            values = tuple(attributes.values())

        events = span._events
        links = span._links
        extra = None
        if (
            (events._dq if events.__class__ is BoundedList else events)  # type: ignore[attr-defined]
            or (links._dq if links.__class__ is BoundedList else links)  # type: ignore[attr-defined]
            or dropped_attributes
            or status._description
            or (state is not None and state._dict)
            or resource_index == _NO_INDEX
            or scope_index == _NO_INDEX
        ):
            extra = Extra(
                status._description,
                tuple(events),
                tuple(links),
                dropped_attributes,
                span.dropped_events,
                span.dropped_links,
                state if state is not None and len(state) else None,
                span._resource if resource_index == _NO_INDEX else None,
                span._instrumentation_scope if scope_index == _NO_INDEX else None,
            )
        start = span._start_time
        end = span._end_time
        numbers = _pack(
            span_id,
            parent_id,
            -1 if start is None else start,
            -1 if end is None else end,
            meta,
        )
        return trace_id, (numbers, span._name, keys, values, extra)


def decode(trace_id: int, record: Record, encoder: SpanEncoder) -> ReadableSpan:
    """A `ReadableSpan` equal, for every exporter, to the span the record was made from."""
    numbers, name, keys, values, extra = record
    span_id, parent_id, start, end, meta = _NUMBERS.unpack(numbers)
    flags = TraceFlags((meta >> 5) & 0xFF)
    state = extra.trace_state if extra is not None and extra.trace_state is not None else None
    context = SpanContext(
        trace_id, span_id, is_remote=bool(meta >> 21 & 1), trace_flags=flags, trace_state=state
    )
    parent = None
    if meta >> 23 & 1:
        parent = SpanContext(
            trace_id,
            parent_id,
            is_remote=bool(meta >> 22 & 1),
            trace_flags=TraceFlags((meta >> 13) & 0xFF),
        )
    resource_index = (meta >> 24) & 0xFFFF
    scope_index = (meta >> 40) & 0xFFFF
    resource = (
        extra.resource
        if resource_index == _NO_INDEX and extra is not None
        else encoder.resources.objects[resource_index]
    )
    scope = (
        extra.scope
        if scope_index == _NO_INDEX and extra is not None
        else encoder.scopes.objects[scope_index]
    )
    attributes: Mapping[str, Any] = dict(zip(keys, values, strict=True))
    events: Sequence[Event] = ()
    links: Sequence[Link] = ()
    code = _STATUS_CODES_BY_INDEX[(meta >> 3) & 0b11]
    status = _UNSET if code is StatusCode.UNSET else Status(code)
    if extra is not None:
        if extra.dropped_attributes:
            bounded = BoundedAttributes(attributes=attributes, immutable=False)
            bounded.dropped = extra.dropped_attributes
            attributes = bounded
        events = _bounded(extra.events, extra.dropped_events)
        links = _bounded(extra.links, extra.dropped_links)
        if extra.status_description:
            status = Status(code, extra.status_description)
    return ReadableSpan(
        name=name,
        context=context,
        parent=parent,
        resource=resource,
        attributes=attributes,
        events=events,
        links=links,
        kind=_KINDS[meta & 0b111],
        status=status,
        start_time=None if start == -1 else start,
        end_time=None if end == -1 else end,
        instrumentation_scope=scope,
    )


def _bounded(items: tuple[Any, ...], dropped: int) -> Sequence[Any]:
    if not dropped:
        return items
    bounded: BoundedList[Any] = BoundedList(None)
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded
