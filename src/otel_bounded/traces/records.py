"""Compact span records: what the trace store keeps instead of `ReadableSpan` objects.

A record is a tuple of primitives: span id, parent span id, start and end
times, one int of packed small fields (kind, status code, trace flags, remote
bits, resource and scope indexes), the name, an interned tuple of attribute
keys, a tuple of attribute values, and ``None`` where a span has nothing unusual (no events, links,
status description, trace state or dropped counts). Tuples of primitives are
untracked by the garbage collector, so a full store does not slow every
collection of the application. `decode` rebuilds a faithful `ReadableSpan`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util import BoundedList
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

__all__ = [
    "HAS_PARENT",
    "PARENT_IS_REMOTE",
    "Extra",
    "Interner",
    "Record",
    "SpanEncoder",
    "decode",
]

# Bits of the packed small fields: kind 0-2, status 3-4, flags 5-12, parent flags
# 13-20, is_remote 21, parent is_remote 22, has parent 23, resource index 24-39,
# scope index 40-55; bits 56-57 are composite marks, set only by compaction.py.
_NO_INDEX = 0xFFFF
# Distinct resources and scopes interned per store; any further one is kept in
# its span's record instead, so it is freed with the span.
_MAX_INTERNED = 256
_MAX_KEY_TUPLES = 4096

_KINDS = tuple(SpanKind)
_KIND_CODES = {id(kind): index for index, kind in enumerate(_KINDS)}
_STATUS_CODES_BY_INDEX = tuple(StatusCode)
_STATUS_CODES = {id(code): index << 3 for index, code in enumerate(_STATUS_CODES_BY_INDEX)}
HAS_PARENT = 1 << 23
"""Bit of a record's packed small fields: the span has a parent."""
PARENT_IS_REMOTE = 1 << 22
"""Bit of a record's packed small fields: the span's parent is remote (a local root)."""
_UNSET = Status(StatusCode.UNSET)
_EMPTY_STATE = TraceState()

Record = tuple[
    int, int, "int | None", "int | None", int, str, tuple[str, ...], tuple[Any, ...], "Extra | None"
]
_Encoded = tuple[int, Record]


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
    """Turns ended spans into records; one per store, used under the store's lock."""

    __slots__ = ("encode", "resources", "scopes")

    def __init__(self) -> None:
        self.resources = Interner()
        self.scopes = Interner()
        self.encode = _make_encode(self.resources, self.scopes)
        """`encode(span) -> (trace_id, record)`."""


def _make_encode(resources: Interner, scopes: Interner) -> Callable[[ReadableSpan], _Encoded]:
    # A closure: this runs for every span, and closure variables are read
    # faster than attributes. Private span fields are read for the same reason.
    key_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}
    metas: dict[int, int] = {}
    kind_codes = _KIND_CODES
    status_codes = _STATUS_CODES
    bounded_attributes = BoundedAttributes
    bounded_list = BoundedList

    def encode(span: ReadableSpan) -> _Encoded:
        trace_id, span_id, is_remote, flags, state, _ = span._context  # type: ignore[misc]
        parent = span._parent
        status = span._status
        meta = (
            kind_codes[id(span._kind)]
            | status_codes[id(status._status_code)]
            | (flags << 5)
            | (is_remote << 21)
        )
        if parent is not None:
            meta |= (parent[3] << 13) | (parent[2] << 22) | HAS_PARENT
            parent_id = parent[1]
        else:
            parent_id = 0
        resource = span._resource
        resource_index = (
            resources.last_index if resource is resources.last_object else resources.index(resource)
        )
        scope = span._instrumentation_scope
        scope_index = scopes.last_index if scope is scopes.last_object else scopes.index(scope)
        meta |= (resource_index << 24) | (scope_index << 40)
        # Spans share a handful of these: one int object each instead of one a span.
        interned_meta = metas.get(meta)
        if interned_meta is not None:
            meta = interned_meta
        elif len(metas) < _MAX_KEY_TUPLES:
            metas[meta] = meta

        attributes = span._attributes
        dropped_attributes = 0
        if attributes.__class__ is bounded_attributes:
            dropped_attributes = attributes.dropped
            attributes = attributes._dict
        if attributes:
            keys = tuple(attributes)
            interned = key_tuples.get(keys)
            if interned is not None:
                keys = interned
            elif len(key_tuples) < _MAX_KEY_TUPLES:
                key_tuples[keys] = keys
            values = tuple(attributes.values())
        else:
            keys = values = ()

        events = span._events
        links = span._links
        extra = None
        if (
            (events._dq if events.__class__ is bounded_list else events)  # type: ignore[attr-defined]
            or (links._dq if links.__class__ is bounded_list else links)  # type: ignore[attr-defined]
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
                resource if resource_index == _NO_INDEX else None,
                scope if scope_index == _NO_INDEX else None,
            )
        return trace_id, (
            span_id,
            parent_id,
            span._start_time,
            span._end_time,
            meta,
            span._name,
            keys,
            values,
            extra,
        )

    return encode


def decode(trace_id: int, record: Record, encoder: SpanEncoder) -> ReadableSpan:
    """A `ReadableSpan` equal, for every exporter, to the span the record was made from."""
    span_id, parent_id, start, end, meta, name, keys, values, extra = record
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
        start_time=start,
        end_time=end,
        instrumentation_scope=scope,
    )


def _bounded(items: tuple[Any, ...], dropped: int) -> Sequence[Any]:
    if not dropped:
        return items
    bounded: BoundedList[Any] = BoundedList(None)
    bounded.extend(items)
    bounded.dropped = dropped
    return bounded
