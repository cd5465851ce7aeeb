"""Trace compaction: repetitive fast sibling spans become one composite span.

An agent's trace is often a root and hundreds of near-identical fast calls.
Holding each as a span fills the store with noise and forces whole, useful
traces out. Compaction collapses such runs, after Elastic APM's span
compression, into one composite span that states nothing false of any member
(`composite.py`): exact counts and durations, the attributes every member
shares, and which keys varied, with how many distinct values.

Two stages run over each parent's children, ordered by start time (ties by
span id), on the store's compact records so nothing is decoded:

- exact match: adjacent siblings with the same name, kind, status code,
  attribute key set, values of the identity keys (`identity_keys` and
  `same_kind_keys`), resource, scope and trace state;
- same kind (off by default): adjacent siblings of the same kind and status
  sharing the value of the first `same_kind_keys` attribute they carry and the
  values of every identity key (a key lacking in both counts as equal); the
  composite is named ``"{key}={value}"`` and keeps exact per-name counts,
  duration sums, minimums and maximums.

A span is never merged if it is a root or local root, has ERROR status, has
events, links or dropped attributes, is the parent or the link target of any
span given, is the first or the last occurrence of its operation (its name and
identity values) in the records given, has a protected name, or carries
``otel_bounded.composite.*`` attributes without being a composite made here.
Composites are recognized by two bits of the record's packed small fields that
only this module sets (`decode` ignores them), never by attribute values, so
no attribute a user sets can make unrelated spans merge.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from operator import itemgetter
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace.status import StatusCode

from otel_bounded import config
from otel_bounded.telemetry import (
    COMPOSITE_COUNT,
    COMPOSITE_COUNTS,
    COMPOSITE_DURATION_SUM_NS,
    COMPOSITE_DURATION_SUMS_NS,
    COMPOSITE_NAMES,
    COMPOSITE_STRATEGY,
)
from otel_bounded.traces.composite import (
    EXACT_MATCH,
    EXACT_TAIL,
    SAME_KIND,
    SAME_KIND_TAIL,
    Group,
    View,
    canon,
    composite_view,
    span_view,
)
from otel_bounded.traces.records import (
    HAS_PARENT,
    PARENT_IS_REMOTE,
    Extra,
    Record,
    SpanEncoder,
    decode,
)

__all__ = [
    "COMPOSITE_MARKS",
    "DEFAULT_IDENTITY_KEYS",
    "DEFAULT_SAME_KIND_KEYS",
    "EXACT_MATCH",
    "SAME_KIND",
    "CompactionPolicy",
    "CompactionResult",
    "compact_records",
    "compact_spans",
    "operation_totals",
    "reparent",
]

DEFAULT_SAME_KIND_KEYS: tuple[str, ...] = (
    "db.system.name",
    "db.system",
    "messaging.system",
    "rpc.system",
    "server.address",
    "peer.service",
)
"""What a call goes to, most specific system first: a database, a broker, an RPC system, a host."""

DEFAULT_IDENTITY_KEYS: tuple[str, ...] = (
    "gen_ai.operation.name",
    "gen_ai.tool.name",
    "gen_ai.request.model",
    "db.statement",
    "db.query.text",
    "db.operation.name",
    "db.operation",
    "db.collection.name",
    "http.request.method",
    "http.method",
    "http.route",
    "url.full",
    "url.path",
    "http.url",
    "http.target",
    "rpc.service",
    "rpc.method",
    "code.function.name",
    "code.function",
    "file.path",
    "messaging.destination.name",
    "messaging.operation.name",
    "server.address",
)
"""OpenTelemetry semantic-convention keys (current and the deprecated names still emitted)
that say *which* operation a span is: spans differing in any of them are never merged."""

# Bits 56 and 57 of a record's packed small fields, above the scope index: set
# only on composites made here, so a user's attributes can never pass for one.
_EXACT_MARK = 1 << 56
_SAME_KIND_MARK = 1 << 57
COMPOSITE_MARKS = _EXACT_MARK | _SAME_KIND_MARK
"""Record meta bits reserved for composites; `decode` ignores them."""

_STATUS_BITS = 0b11 << 3
_ERROR = tuple(StatusCode).index(StatusCode.ERROR) << 3
_PARENT_BITS = HAS_PARENT | PARENT_IS_REMOTE
# What siblings must share besides name and attributes: kind, status code, trace
# flags, remote bits, resource and scope; only the marks may differ.
_CONTEXT_BITS = ~COMPOSITE_MARKS

_ALWAYS_PROTECTED = "otel_bounded."
_COMPOSITE_PREFIX = "otel_bounded.composite."
_EXACT_TAIL = len(EXACT_TAIL)
_SAME_KIND_TAIL = len(SAME_KIND_TAIL)
# Distinct attribute key tuples remembered, as in records.py.
_MAX_CACHED = 4096
_NS_PER_MS = 1_000_000

# Per attribute key tuple: carries composite attributes; (key, index) of each
# identity key present, in policy order; (key, index) of each `same_kind_keys`
# attribute present, in policy order; the key set.
_KeyInfo = tuple[
    bool,
    tuple[tuple[str, int], ...],
    tuple[tuple[str, int], ...],
    frozenset[str],
    tuple[tuple[str, ...], Callable[[Sequence[Any]], tuple[Any, ...]]],
]


@dataclass(frozen=True)
class CompactionPolicy:
    """When sibling spans are merged; durations in milliseconds, 0 turns a stage off.

    Names starting with ``otel_bounded.`` (the token and approval audit spans)
    are protected whatever `protected_prefixes` says. `same_kind_keys` are
    identity keys too.
    """

    exact_match_max_duration_ms: float = 50.0
    same_kind_max_duration_ms: float = 0.0
    min_run: int = 2
    compact_at_spans: int = 64
    protected_prefixes: tuple[str, ...] = (_ALWAYS_PROTECTED,)
    same_kind_keys: tuple[str, ...] = DEFAULT_SAME_KIND_KEYS
    identity_keys: tuple[str, ...] = DEFAULT_IDENTITY_KEYS
    max_varied_samples: int = 8
    max_remembered_ids: int = 1_000_000
    # Derived once, read on every pass: thresholds in ns (-1 when off), prefixes to test.
    _exact_ns: int = field(init=False, repr=False, compare=False)
    _same_kind_ns: int = field(init=False, repr=False, compare=False)
    _protected: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _identity: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _key_infos: dict[tuple[str, ...], _KeyInfo] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        exact_ns = _threshold_ns("exact_match_max_duration_ms", self.exact_match_max_duration_ms)
        same_kind_ns = _threshold_ns("same_kind_max_duration_ms", self.same_kind_max_duration_ms)
        _check_int("min_run", self.min_run, 2, "a run of one span is never compacted")
        _check_int("compact_at_spans", self.compact_at_spans, 1, "spans held per trace")
        _check_int("max_varied_samples", self.max_varied_samples, 0, "values shown per varied key")
        _check_int(
            "max_remembered_ids", self.max_remembered_ids, 0, "merged-away span ids remembered"
        )
        prefixes = _strings("protected_prefixes", self.protected_prefixes)
        keys = _application_keys("same_kind_keys", self.same_kind_keys)
        identity = _application_keys("identity_keys", self.identity_keys)
        object.__setattr__(self, "protected_prefixes", prefixes)
        object.__setattr__(self, "same_kind_keys", keys)
        object.__setattr__(self, "identity_keys", identity)
        object.__setattr__(self, "_exact_ns", exact_ns)
        object.__setattr__(self, "_same_kind_ns", same_kind_ns)
        object.__setattr__(self, "_protected", tuple(dict.fromkeys((_ALWAYS_PROTECTED, *prefixes))))
        object.__setattr__(self, "_identity", tuple(dict.fromkeys((*identity, *keys))))

    @classmethod
    def from_env(cls, **overrides: Any) -> CompactionPolicy | None:
        """The policy from the ``OTEL_BOUNDED_TRACE_COMPACTION_*`` variables; arguments win.

        None when ``OTEL_BOUNDED_TRACE_COMPACTION_ENABLED`` is not ``true``.
        """
        if not config.read(config.TRACE_COMPACTION_ENABLED):
            return None
        return cls(
            **config.read_arguments(
                {
                    "exact_match_max_duration_ms": (
                        config.TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS
                    ),
                    "same_kind_max_duration_ms": config.TRACE_COMPACTION_SAME_KIND_MAX_DURATION_MS,
                    "compact_at_spans": config.TRACE_COMPACTION_AT_SPANS,
                },
                overrides,
            )
        )

    def _key_info(self, keys: tuple[str, ...]) -> _KeyInfo:
        info = self._key_infos.get(keys)
        if info is None:
            identity = tuple((key, keys.index(key)) for key in self._identity if key in keys)
            info = (
                any(key.startswith(_COMPOSITE_PREFIX) for key in keys),
                identity,
                tuple((key, keys.index(key)) for key in self.same_kind_keys if key in keys),
                frozenset(keys),
                (tuple(key for key, _ in identity), _getter(tuple(i for _, i in identity))),
            )
            # Racing threads store equal values, so no lock is needed.
            if len(self._key_infos) < _MAX_CACHED:
                self._key_infos[keys] = info
        return info


@dataclass(frozen=True)
class CompactionResult:
    """What one pass kept, and where each merged-away span went."""

    records: list[Record]
    """Kept records in input order: singles are the input tuples themselves, each composite
    sits where its last member (in input order) was."""
    merged: dict[int, int]
    """Span id of every member merged away -> span id of the kept composite holding it."""
    merged_away: int
    """len(input) - len(records)."""


def compact_records(
    records: Sequence[Record], policy: CompactionPolicy, *, exact_counts: bool = True
) -> CompactionResult:
    """Merge runs of similar fast sibling records of one trace; the input is not changed.

    With `exact_counts` (the default) members are only merged while every
    distinct-value count stays exact; without, as a store does when a trace
    would otherwise lose spans, counts that can no longer be exact become
    lower bounds, flagged as such.
    """
    held = len(records)
    if held < 2 or (policy._exact_ns < 0 and policy._same_kind_ns < 0):
        return CompactionResult(list(records), {}, 0)
    blocked = {record[1] for record in records}
    siblings: dict[int, list[tuple[Any, int, int]]] = {}
    for index, record in enumerate(records):
        # Roots and local roots are never merged, so they need no sibling list.
        if record[4] & _PARENT_BITS == HAS_PARENT:
            entry = (record[2], record[0], index)
            group = siblings.get(record[1])
            if group is None:
                siblings[record[1]] = [entry]
            else:
                group.append(entry)
        extra = record[8]
        if extra is not None and extra.links:
            # A link's target stays itself: ids of other traces are blocked too, harmlessly.
            blocked.update(link.context.span_id for link in extra.links)
    if len({record[0] for record in records}) < held:
        # A repeated span id cannot be merged: `merged` could not say which one went where.
        blocked.update(_repeated_ids(records))
    identities, first_and_last = _identities(records, policy)
    blocked.update(first_and_last)
    compaction = _Pass(records, policy, blocked, exact_counts, identities)
    for group in siblings.values():
        if len(group) > 1:
            try:
                group.sort()
            except TypeError:  # a start time is missing: the order is unknown, merge nothing
                continue
            compaction.siblings(group)
    merged = compaction.merged
    if not merged:
        return CompactionResult(list(records), {}, 0)
    for member, composite in merged.items():
        # Exact composites absorbed by a same-kind one: point their members at it.
        hops = 0
        while composite in merged and hops < held:
            composite = merged[composite]
            hops += 1
        merged[member] = composite
    kept = [record for record in compaction.out if record is not None]
    return CompactionResult(kept, merged, held - len(kept))


def _identities(
    records: Sequence[Record], policy: CompactionPolicy
) -> tuple[list[tuple[Hashable, ...]], set[int]]:
    """Per record, the identity keys present with their values; and the span ids of the first
    and the last occurrence (by start, then id) of each operation.

    An operation is a name with its identity. Composites are skipped for first and
    last: their members were never a first or last one. A composite's identity keys
    are among its plain attributes, as every member had the same values.
    """
    key_infos = policy._key_infos
    identities: list[tuple[Hashable, ...]] = []
    firsts: dict[Hashable, tuple[int, int]] = {}
    lasts: dict[Hashable, tuple[int, int]] = {}
    # A span whose name occurs at most twice is the first or the last of its operation:
    # no need to work out its identity. (A composite's name counts as one more.)
    occurrences = Counter([record[5] for record in records])
    alone: set[int] = set()
    for record in records:
        start = record[2]
        if start is not None and occurrences[record[5]] < 3 and not record[4] & COMPOSITE_MARKS:
            identities.append(())
            alone.add(record[0])
            continue
        keys = record[6]
        identity = _identity_of((key_infos.get(keys) or policy._key_info(keys))[4], record[7])
        identities.append(identity)
        if start is None or record[4] & COMPOSITE_MARKS:
            continue
        operation = (record[5], identity) if identity else record[5]
        order = (start, record[0])
        first = firsts.get(operation)
        if first is None:
            firsts[operation] = lasts[operation] = order
        elif order < first:
            firsts[operation] = order
        elif order > lasts[operation]:
            lasts[operation] = order
    alone.update(order[1] for order in firsts.values())
    alone.update(order[1] for order in lasts.values())
    return identities, alone


def _getter(indexes: tuple[int, ...]) -> Callable[[Sequence[Any]], tuple[Any, ...]]:
    if not indexes:
        return lambda values: ()
    if len(indexes) == 1:
        (index,) = indexes
        return lambda values: (values[index],)
    return itemgetter(*indexes)


_NOT_PLAIN = (float, tuple, list)


def _identity_of(
    info: tuple[tuple[str, ...], Callable[[Sequence[Any]], tuple[Any, ...]]], values: Sequence[Any]
) -> tuple[Hashable, ...]:
    """The identity keys present with their values, equal only for equal types and values."""
    names, getter = info
    if not names:
        return ()
    found = getter(values)
    types = tuple(map(type, found))
    # Floats and arrays compare loosely (0.0 == -0.0, (1,) == (True,)): canonical forms.
    if _NOT_PLAIN[0] in types or _NOT_PLAIN[1] in types or _NOT_PLAIN[2] in types:
        return (names, tuple(canon(value) for value in found))
    return (names, found, types)


class _Candidate:
    """One span or composite that may join a composite, with its members' statistics."""

    __slots__ = (
        "count",
        "end",
        "high",
        "index",
        "keys",
        "low",
        "record",
        "total",
        "view",
    )

    def __init__(
        self,
        index: int,
        record: Record,
        count: int,
        total: int,
        low: int,
        high: int,
        end: int,
        keys: tuple[str, ...],
    ) -> None:
        self.index = index  # its slot in the output
        self.record = record
        self.count = count
        self.total = total
        self.low = low
        self.high = high
        self.end = end
        self.keys = keys  # its members' attribute keys, composite ones left out
        self.view: View | None = None

    def values(self) -> View:
        """What its members' attributes were, as far as known; built only when a run forms."""
        view = self.view
        if view is None:
            record = self.record
            meta = record[4]
            if meta & COMPOSITE_MARKS:
                tail = _EXACT_TAIL if meta & _EXACT_MARK else _SAME_KIND_TAIL
                keys, values = record[6], record[7]
                plain = len(keys) - tail
                varied = values[plain + 5 : plain + 9]
                view = composite_view(keys[:plain], values[:plain], *varied)
            else:
                view = span_view(record[6], record[7])
            self.view = view
        return view

    def by_name(self) -> Iterable[tuple[str, int, int, int, int]]:
        """(name, count, duration sum, shortest, longest) of its members, per name."""
        record = self.record
        if record[4] & _SAME_KIND_MARK:
            values = record[7]
            return zip(values[-5], values[-4], values[-3], values[-2], values[-1], strict=True)
        return ((record[5], self.count, self.total, self.low, self.high),)


class _Pass:
    """One compaction of one trace's records."""

    __slots__ = (
        "blocked",
        "exact_counts",
        "exact_ns",
        "identities",
        "key_info",
        "max_samples",
        "merged",
        "min_run",
        "out",
        "policy",
        "protected",
        "records",
        "same_kind_ns",
    )

    def __init__(
        self,
        records: Sequence[Record],
        policy: CompactionPolicy,
        blocked: set[int],
        exact_counts: bool,
        identities: list[tuple[Hashable, ...]],
    ) -> None:
        self.records = records
        self.identities = identities
        self.exact_counts = exact_counts
        self.policy = policy
        self.blocked = blocked
        self.exact_ns = policy._exact_ns
        self.same_kind_ns = policy._same_kind_ns
        self.min_run = policy.min_run
        self.max_samples = policy.max_varied_samples
        self.protected = policy._protected
        self.key_info = policy._key_info
        self.out: list[Record | None] = list(records)
        self.merged: dict[int, int] = {}

    def siblings(self, group: list[tuple[Any, int, int]]) -> None:
        """Both stages over one parent's children, sorted by (start, span id)."""
        candidates = self.admit(group)
        if self.exact_ns >= 0:
            candidates = self.exact_stage(candidates)
        if self.same_kind_ns >= 0:
            self.same_kind_stage(candidates)

    def admit(self, group: list[tuple[Any, int, int]]) -> list[_Candidate | None]:
        """Each child as a merge candidate, or None where it must be kept as it is."""
        records = self.records
        blocked = self.blocked
        protected = self.protected
        key_infos = self.policy._key_infos
        candidates: list[_Candidate | None] = []
        append = candidates.append
        for entry in group:
            index = entry[2]
            record = records[index]
            span_id, _, start, end, meta, name, keys, _, extra = record
            if (
                meta & _STATUS_BITS == _ERROR
                or span_id in blocked
                or (
                    extra is not None
                    and (
                        extra.events
                        or extra.links
                        or extra.dropped_events
                        or extra.dropped_links
                        or extra.dropped_attributes
                        or extra.status_description
                    )
                )
            ):
                append(None)
            elif meta & COMPOSITE_MARKS:
                append(self.composite_candidate(index, record))
            elif (
                name.startswith(protected)
                or start is None
                or end is None
                or end < start
                or (key_infos.get(keys) or self.key_info(keys))[0]
            ):
                append(None)
            else:
                duration = end - start
                append(_Candidate(index, record, 1, duration, duration, duration, end, keys))
        return candidates

    def composite_candidate(self, index: int, record: Record) -> _Candidate | None:
        # Composites carry their members' durations; joins are judged by those, not by length.
        meta, name, keys, values, end = record[4], record[5], record[6], record[7], record[3]
        if end is None:  # never so: a composite ends when its last member does
            return None
        if meta & _EXACT_MARK:
            if name.startswith(self.protected):
                return None
            plain = len(keys) - _EXACT_TAIL
        else:
            # Named after a key attribute, not after its (unprotected) members.
            plain = len(keys) - _SAME_KIND_TAIL
        count, total, low, high = values[plain : plain + 4]
        varied_keys: tuple[str, ...] = values[plain + 5]
        return _Candidate(index, record, count, total, low, high, end, keys[:plain] + varied_keys)

    def identity(self, candidate: _Candidate) -> tuple[Hashable, ...]:
        """The identity keys present and their values: spans differing here never merge."""
        index = candidate.index
        if candidate.record is self.records[index]:
            return self.identities[index]
        # A composite made in this pass, standing where its last member was.
        record = candidate.record
        return _identity_of(self.key_info(record[6])[4], record[7])

    # -- exact match -----------------------------------------------------

    def exact_stage(self, candidates: list[_Candidate | None]) -> list[_Candidate | None]:
        limit = self.exact_ns
        result: list[_Candidate | None] = []
        run: list[_Candidate] = []
        run_name = ""
        # Built only once a second candidate of the same name comes: most neighbours
        # differ by name, and then comparing names is all a pass costs.
        run_signature: tuple[Any, ...] | None = None
        for member in candidates:
            if member is None or member.high > limit or member.record[4] & _SAME_KIND_MARK:
                if run:
                    self.close(run, result, EXACT_MATCH)
                    run = []
                result.append(member)
                continue
            name = member.record[5]
            if run and name == run_name:
                if run_signature is None:
                    run_signature = self.exact_signature(run[0])
                signature = self.exact_signature(member)
                if signature == run_signature:
                    run.append(member)
                    continue
            else:
                signature = None
            if run:
                self.close(run, result, EXACT_MATCH)
            run = [member]
            run_name = name
            run_signature = signature
        if run:
            self.close(run, result, EXACT_MATCH)
        return result

    def exact_signature(self, member: _Candidate) -> tuple[Any, ...]:
        """What exact-match siblings share: name, context bits (status included), the key set,
        where they come from, and the identity keys' values."""
        record = member.record
        keys = member.keys
        key_set = (
            self.key_info(keys)[3] if not record[4] & COMPOSITE_MARKS else frozenset(member.keys)
        )
        return (
            record[5],
            record[4] & _CONTEXT_BITS,
            key_set,
            _context(record[8]),
            self.identity(member),
        )

    # -- same kind -------------------------------------------------------

    def same_kind_stage(self, candidates: list[_Candidate | None]) -> None:
        limit = self.same_kind_ns
        run: list[_Candidate] = []
        run_signature: tuple[Any, ...] = ()
        for member in candidates:
            signature = None if member is None or member.high > limit else self.kind_of(member)
            if member is None or signature is None:
                self.close(run, None, SAME_KIND)
                run = []
            elif run and signature == run_signature:
                run.append(member)
            else:
                self.close(run, None, SAME_KIND)
                run = [member]
                run_signature = signature
        self.close(run, None, SAME_KIND)

    def kind_of(self, member: _Candidate) -> tuple[Any, ...] | None:
        """What same-kind siblings share: context bits, the first `same_kind_keys` attribute
        present and its value (a str or an int: bools, floats and arrays name no target),
        where they come from, and the identity keys' values."""
        record = member.record
        keys, values = record[6], record[7]
        present = self.key_info(keys)[2]
        if not present:
            return None
        key, position = present[0]
        value = values[position]
        if value.__class__ is not str and value.__class__ is not int:
            return None
        return (
            record[4] & _CONTEXT_BITS,
            key,
            value.__class__,
            value,
            _context(record[8]),
            self.identity(member),
        )

    # -- composites ------------------------------------------------------

    def close(
        self, run: list[_Candidate], result: list[_Candidate | None] | None, strategy: str
    ) -> None:
        """Turn a run into composites, splitting it wherever values could not be counted exactly."""
        if len(run) < 2:
            if result is not None:
                result.extend(run)
            return
        segment: list[_Candidate] = []
        group: Group | None = None
        # Exact-match members share their key set: a plain span joins a group in
        # place, without a view of its own.
        same_keys = strategy == EXACT_MATCH
        for member in run:
            record = member.record
            if group is not None:
                if same_keys and not record[4] & COMPOSITE_MARKS:
                    if group.add_span(record[6], record[7]):
                        segment.append(member)
                        continue
                elif group.add(member.values()):
                    segment.append(member)
                    continue
            view = member.values()
            if group is not None:
                self.merge(segment, group, result, strategy)
            segment = [member]
            group = Group(view, self.exact_counts)
        if group is not None:
            self.merge(segment, group, result, strategy)

    def merge(
        self,
        segment: list[_Candidate],
        group: Group,
        result: list[_Candidate | None] | None,
        strategy: str,
    ) -> None:
        if len(segment) < 2 or sum(member.count for member in segment) < self.min_run:
            if result is not None:
                result.extend(segment)
            return
        first = segment[0].record
        composite_id = first[0]
        count = total = end = last_index = 0
        low = high = -1
        out = self.out
        merged = self.merged
        by_name: dict[str, list[int]] = {}
        for member in segment:
            count += member.count
            total += member.total
            if low < 0 or member.low < low:
                low = member.low
            if member.high > high:
                high = member.high
            if member.end > end:
                end = member.end
            if member.index > last_index:
                last_index = member.index
            out[member.index] = None
            if member.record[0] != composite_id:
                merged[member.record[0]] = composite_id
            if strategy == SAME_KIND:
                _count_names(member, by_name)
        plain_keys, plain_values, varied = group.attributes(self.max_samples)
        varied_keys = varied[0]
        meta = first[4] & ~COMPOSITE_MARKS
        context = _context(first[8])
        extra = None if context is None else Extra(None, (), (), 0, 0, 0, *context)
        if strategy == EXACT_MATCH:
            composite: Record = (
                composite_id,
                first[1],
                first[2],
                end,
                meta | _EXACT_MARK,
                first[5],
                _composite_keys(plain_keys, EXACT_TAIL),
                (
                    *plain_values,
                    *(count, total, low, high, EXACT_MATCH),
                    *varied,
                ),
                extra,
            )
        else:
            # The run's signature guarantees the first same-kind key is plain.
            key, position = self.key_info(first[6])[2][0]
            stats = tuple(by_name.values())
            composite = (
                composite_id,
                first[1],
                first[2],
                end,
                meta | _SAME_KIND_MARK,
                f"{key}={first[7][position]}",
                _composite_keys(plain_keys, SAME_KIND_TAIL),
                (
                    *plain_values,
                    count,
                    total,
                    low,
                    high,
                    SAME_KIND,
                    *varied,
                    tuple(by_name),
                    *(tuple(row[column] for row in stats) for column in range(4)),
                ),
                extra,
            )
        out[last_index] = composite
        if result is not None:
            candidate = _Candidate(
                last_index, composite, count, total, low, high, end, plain_keys + varied_keys
            )
            candidate.view = group.view
            result.append(candidate)


def _count_names(member: _Candidate, by_name: dict[str, list[int]]) -> None:
    for name, count, total, low, high in member.by_name():
        stats = by_name.get(name)
        if stats is None:
            by_name[name] = [count, total, low, high]
        else:
            stats[0] += count
            stats[1] += total
            if low < stats[2]:
                stats[2] = low
            if high > stats[3]:
                stats[3] = high


def _repeated_ids(records: Sequence[Record]) -> set[int]:
    seen: set[int] = set()
    repeated: set[int] = set()
    for record in records:
        (repeated if record[0] in seen else seen).add(record[0])
    return repeated


def _context(extra: Extra | None) -> tuple[Any, Any, Any] | None:
    """What a record's extra says about where a span comes from, or None."""
    if extra is None:
        return None
    context = (extra.trace_state, extra.resource, extra.scope)
    return None if context == (None, None, None) else context


_composite_key_tuples: dict[tuple[str, ...], tuple[str, ...]] = {}


def _composite_keys(keys: tuple[str, ...], attributes: tuple[str, ...]) -> tuple[str, ...]:
    """Shared across composites, as records.py shares the key tuples of spans."""
    combined = keys + attributes
    interned = _composite_key_tuples.get(combined)
    if interned is not None:
        return interned
    if len(_composite_key_tuples) < _MAX_CACHED:
        _composite_key_tuples[combined] = combined
    return combined


def reparent(records: list[Record], merged: Mapping[int, int]) -> None:
    """Point every record whose parent was merged away at the composite that holds it.

    Chains (a member of a composite later merged into another) are followed,
    so a store may keep one map across passes.
    """
    if not merged:
        return
    for index, record in enumerate(records):
        parent = record[1]
        if parent in merged:
            hops = 0
            while parent in merged and hops <= len(merged):
                parent = merged[parent]
                hops += 1
            records[index] = (record[0], parent, *record[2:])


def compact_spans(
    spans: Iterable[ReadableSpan], policy: CompactionPolicy | None = None
) -> list[ReadableSpan]:
    """The spans of one trace with similar fast siblings merged into composite spans.

    Spans kept as they are are returned as the same objects, in input order;
    each composite sits where its last member (in input order) was. None means
    the default policy.
    """
    if policy is None:
        policy = _DEFAULT_POLICY
    elif not isinstance(policy, CompactionPolicy):
        raise ValueError(f"policy must be a CompactionPolicy or None, got {policy!r}")
    encoder = SpanEncoder()
    encode = encoder.encode
    records: list[Record] = []
    originals: dict[int, ReadableSpan] = {}
    trace_id = None
    for span in spans:
        if not isinstance(span, ReadableSpan):
            raise ValueError(f"compact_spans takes ReadableSpan objects, got {span!r}")
        span_trace_id, record = encode(span)
        if trace_id is None:
            trace_id = span_trace_id
        elif span_trace_id != trace_id:
            raise ValueError(
                "compact_spans takes the spans of one trace; got trace ids "
                f"{trace_id:032x} and {span_trace_id:032x}"
            )
        records.append(record)
        originals[id(record)] = span
    if trace_id is None:
        return []
    result = compact_records(records, policy)
    kept: list[ReadableSpan] = []
    for record in result.records:
        # The input records are alive until here, so no composite can reuse their ids.
        original = originals.get(id(record))
        kept.append(original if original is not None else decode(trace_id, record, encoder))
    return kept


def operation_totals(spans: Iterable[ReadableSpan]) -> dict[str, tuple[int, int]]:
    """Per operation name: (spans, total duration in ns), composites counted by their members.

    Reads the composite attributes of any span that carries them consistently,
    so it is a reader's tool: compaction itself never trusts attributes.
    """
    totals: dict[str, list[int]] = {}
    for span in spans:
        for name, count, duration in _operations(span):
            total = totals.get(name)
            if total is None:
                totals[name] = [count, duration]
            else:
                total[0] += count
                total[1] += duration
    return {name: (count, duration) for name, (count, duration) in totals.items()}


def _operations(span: ReadableSpan) -> Sequence[tuple[str, int, int]]:
    attributes = span.attributes or {}
    strategy = attributes.get(COMPOSITE_STRATEGY)
    if strategy == EXACT_MATCH:
        count = attributes.get(COMPOSITE_COUNT)
        total = attributes.get(COMPOSITE_DURATION_SUM_NS)
        if _is_int(count) and _is_int(total):
            return ((span.name, count, total),)  # type: ignore[return-value]
    elif strategy == SAME_KIND:
        names = attributes.get(COMPOSITE_NAMES)
        counts = attributes.get(COMPOSITE_COUNTS)
        sums = attributes.get(COMPOSITE_DURATION_SUMS_NS)
        if (
            isinstance(names, Sequence)
            and isinstance(counts, Sequence)
            and isinstance(sums, Sequence)
            and not isinstance(names, str)
            and len(names) == len(counts) == len(sums)
            and all(isinstance(name, str) for name in names)
            and all(_is_int(value) for value in (*counts, *sums))
        ):
            return tuple(zip(names, counts, sums, strict=True))  # type: ignore[arg-type]
    start, end = span.start_time, span.end_time
    return ((span.name, 1, end - start if start is not None and end is not None else 0),)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _threshold_ns(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number of milliseconds (0: off), got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ValueError(
            f"{name} must be a finite number of milliseconds, 0 or more (0: off), got {value!r}"
        )
    if value == 0:
        return -1
    # Through the decimal text, so 0.3 ms is 300000 ns and not 299999.
    return int(Decimal(str(value)) * _NS_PER_MS)


def _check_int(name: str, value: object, least: int, meaning: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(
            f"{name} must be an integer of at least {least} ({meaning}), got {value!r}"
        )


def _application_keys(name: str, value: object) -> tuple[str, ...]:
    keys = _strings(name, value)
    for key in keys:
        if key.startswith(_ALWAYS_PROTECTED):
            raise ValueError(
                f"{name} must name attributes of the application, not "
                f"otel-bounded's own ({_ALWAYS_PROTECTED}*), got {key!r}"
            )
    return keys


def _strings(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ValueError(f"{name} must be a tuple of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{name} must hold non-empty strings, got {item!r} in {value!r}")
    return tuple(dict.fromkeys(value))


_DEFAULT_POLICY = CompactionPolicy()
