"""Trace compaction: repetitive fast sibling spans become one composite span.

An agent's trace is often a root and hundreds of near-identical fast calls.
Holding each as a span fills the store with noise and forces whole, useful
traces out. Compaction collapses such runs, after Elastic APM's span
compression, into one span that keeps what a reader needs to continue: how
many calls of each operation there were and exactly how long they took in all.

Two stages run over each parent's children, ordered by start time (ties by
span id), on the store's compact records so nothing is decoded:

- exact match: adjacent siblings with the same name, kind, attribute key set,
  values of the `same_kind_keys` attributes, resource and scope;
- same kind (off by default): adjacent siblings of the same kind sharing the
  value of the first `same_kind_keys` attribute they carry; the composite is
  named ``"{key}={value}"`` and keeps exact per-name counts and duration sums.

A span is never merged if it is a root or local root, has ERROR status, has
events or links, is the parent of any span given, has a protected name, or
carries ``otel_bounded.composite.*`` attributes without being a composite made
here. Composites are recognized by two bits of the record's packed small
fields that only this module sets (`decode` ignores them), never by attribute
values, so no attribute a user sets can make unrelated spans merge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace.status import StatusCode

from otel_bounded import config
from otel_bounded.telemetry import (
    COMPOSITE_COUNT,
    COMPOSITE_COUNTS,
    COMPOSITE_DURATION_SUM_NS,
    COMPOSITE_DURATION_SUMS_NS,
    COMPOSITE_MAX_NS,
    COMPOSITE_MIN_NS,
    COMPOSITE_NAMES,
    COMPOSITE_STRATEGY,
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

EXACT_MATCH = "exact_match"
SAME_KIND = "same_kind"

DEFAULT_SAME_KIND_KEYS: tuple[str, ...] = (
    "db.system.name",
    "db.system",
    "messaging.system",
    "rpc.system",
    "server.address",
    "peer.service",
)
"""What a call goes to, most specific system first: a database, a broker, an RPC system, a host."""

# Bits 56 and 57 of a record's packed small fields, above the scope index: set
# only on composites made here, so a user's attributes can never pass for one.
_EXACT_MARK = 1 << 56
_SAME_KIND_MARK = 1 << 57
COMPOSITE_MARKS = _EXACT_MARK | _SAME_KIND_MARK
"""Record meta bits reserved for composites; `decode` ignores them."""

_STATUS_BITS = 0b11 << 3
_ERROR = tuple(StatusCode).index(StatusCode.ERROR) << 3
_PARENT_BITS = HAS_PARENT | PARENT_IS_REMOTE
# What siblings must share besides name and attributes: kind, trace flags,
# remote bits, resource and scope; status (UNSET or OK) and the marks may differ.
_CONTEXT_BITS = ~(_STATUS_BITS | COMPOSITE_MARKS)

_ALWAYS_PROTECTED = "otel_bounded."
_COMPOSITE_PREFIX = "otel_bounded.composite."
_EXACT_ATTRIBUTES = (
    COMPOSITE_COUNT,
    COMPOSITE_DURATION_SUM_NS,
    COMPOSITE_MIN_NS,
    COMPOSITE_MAX_NS,
    COMPOSITE_STRATEGY,
)
_SAME_KIND_ATTRIBUTES = (
    *_EXACT_ATTRIBUTES,
    COMPOSITE_NAMES,
    COMPOSITE_COUNTS,
    COMPOSITE_DURATION_SUMS_NS,
)
_EXACT_TAIL = len(_EXACT_ATTRIBUTES)
_SAME_KIND_TAIL = len(_SAME_KIND_ATTRIBUTES)
# Distinct attribute key tuples remembered, as in records.py.
_MAX_CACHED = 4096
_NS_PER_MS = 1_000_000

# Per attribute key tuple: carries composite attributes; (key, index) of each
# `same_kind_keys` attribute present, in policy order.
_KeyInfo = tuple[bool, tuple[tuple[str, int], ...]]
# (slot in the output, record, span count, duration sum, shortest, longest, end,
# key info of its own attributes): one candidate, a single span or a composite,
# with the durations of its members.
_Member = tuple[int, Record, int, int, int, int, int, _KeyInfo]


@dataclass(frozen=True)
class CompactionPolicy:
    """When sibling spans are merged; durations in milliseconds, 0 turns a stage off.

    Names starting with ``otel_bounded.`` (the token and approval audit spans)
    are protected whatever `protected_prefixes` says.
    """

    exact_match_max_duration_ms: float = 50.0
    same_kind_max_duration_ms: float = 0.0
    min_run: int = 2
    compact_at_spans: int = 64
    protected_prefixes: tuple[str, ...] = (_ALWAYS_PROTECTED,)
    same_kind_keys: tuple[str, ...] = DEFAULT_SAME_KIND_KEYS
    # Derived once, read on every pass: thresholds in ns (-1 when off), prefixes to test.
    _exact_ns: int = field(init=False, repr=False, compare=False)
    _same_kind_ns: int = field(init=False, repr=False, compare=False)
    _protected: tuple[str, ...] = field(init=False, repr=False, compare=False)
    _key_infos: dict[tuple[str, ...], _KeyInfo] = field(
        init=False, repr=False, compare=False, default_factory=dict
    )

    def __post_init__(self) -> None:
        exact_ns = _threshold_ns("exact_match_max_duration_ms", self.exact_match_max_duration_ms)
        same_kind_ns = _threshold_ns("same_kind_max_duration_ms", self.same_kind_max_duration_ms)
        _check_int("min_run", self.min_run, 2, "a run of one span is never compacted")
        _check_int("compact_at_spans", self.compact_at_spans, 1, "spans held per trace")
        prefixes = _strings("protected_prefixes", self.protected_prefixes)
        keys = _strings("same_kind_keys", self.same_kind_keys)
        for key in keys:
            if key.startswith(_ALWAYS_PROTECTED):
                raise ValueError(
                    f"same_kind_keys must name attributes of the application, not "
                    f"otel-bounded's own ({_ALWAYS_PROTECTED}*), got {key!r}"
                )
        object.__setattr__(self, "protected_prefixes", prefixes)
        object.__setattr__(self, "same_kind_keys", keys)
        object.__setattr__(self, "_exact_ns", exact_ns)
        object.__setattr__(self, "_same_kind_ns", same_kind_ns)
        object.__setattr__(self, "_protected", tuple(dict.fromkeys((_ALWAYS_PROTECTED, *prefixes))))

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
            info = (
                any(key.startswith(_COMPOSITE_PREFIX) for key in keys),
                tuple((key, keys.index(key)) for key in self.same_kind_keys if key in keys),
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
    sits where its first member (by start time) was."""
    merged: dict[int, int]
    """Span id of every member merged away -> span id of the kept composite holding it."""
    merged_away: int
    """len(input) - len(records)."""


def compact_records(records: Sequence[Record], policy: CompactionPolicy) -> CompactionResult:
    """Merge runs of similar fast sibling records of one trace; the input is not changed."""
    held = len(records)
    if held < 2 or (policy._exact_ns < 0 and policy._same_kind_ns < 0):
        return CompactionResult(list(records), {}, 0)
    parents = {record[1] for record in records}
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
    if len({record[0] for record in records}) < held:
        # A repeated span id cannot be merged: `merged` could not say which one went where.
        parents.update(_repeated_ids(records))
    compaction = _Pass(records, policy, parents)
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


class _Pass:
    """One compaction of one trace's records."""

    __slots__ = (
        "blocked",
        "exact_ns",
        "key_info",
        "merged",
        "min_run",
        "out",
        "policy",
        "protected",
        "records",
        "same_kind_ns",
    )

    def __init__(self, records: Sequence[Record], policy: CompactionPolicy, blocked: set[int]):
        self.records = records
        self.policy = policy
        self.blocked = blocked
        self.exact_ns = policy._exact_ns
        self.same_kind_ns = policy._same_kind_ns
        self.min_run = policy.min_run
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

    def admit(self, group: list[tuple[Any, int, int]]) -> list[_Member | None]:
        """Each child as a merge candidate, or None where it must be kept as it is."""
        # One loop with everything local: this runs for every span held, every pass.
        records = self.records
        blocked = self.blocked
        protected = self.protected
        key_infos = self.policy._key_infos
        candidates: list[_Member | None] = []
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
                    and (extra.events or extra.links or extra.dropped_events or extra.dropped_links)
                )
            ):
                append(None)
            elif meta & COMPOSITE_MARKS:
                append(self.composite_member(index, record))
            else:
                info = key_infos.get(keys) or self.key_info(keys)
                if (
                    info[0]
                    or name.startswith(protected)
                    or start is None
                    or end is None
                    or end < start
                ):
                    append(None)
                else:
                    duration = end - start
                    append((index, record, 1, duration, duration, duration, end, info))
        return candidates

    def composite_member(self, index: int, record: Record) -> _Member | None:
        # Composites carry their members' durations; joins are judged by those, not by length.
        meta, name, keys, values = record[4], record[5], record[6], record[7]
        if meta & _EXACT_MARK:
            if name.startswith(self.protected):
                return None
            keys = keys[:-_EXACT_TAIL]
            count, total, low, high = values[-_EXACT_TAIL:-1]
        else:
            # Named after a key attribute, not after its (unprotected) members.
            keys = keys[:-_SAME_KIND_TAIL]
            count, total, low, high = values[-_SAME_KIND_TAIL:-4]
        end = record[3]
        if end is None:  # never so: a composite ends when its last member does
            return None
        return (index, record, count, total, low, high, end, self.key_info(keys))

    # -- exact match -----------------------------------------------------

    def exact_stage(self, candidates: list[_Member | None]) -> list[_Member | None]:
        limit = self.exact_ns
        result: list[_Member | None] = []
        run: list[_Member] = []
        run_name = ""
        # Built only once a second candidate of the same name comes: most neighbours
        # differ by name, and then comparing names is all a pass costs.
        run_signature: tuple[Any, ...] | None = None
        for member in candidates:
            if member is None or member[5] > limit or member[1][4] & _SAME_KIND_MARK:
                if run:
                    self.close_exact(run, result)
                    run = []
                result.append(member)
                continue
            name = member[1][5]
            if run and name == run_name:
                if run_signature is None:
                    run_signature = _exact_signature(run[0])
                signature = _exact_signature(member)
                if signature == run_signature or _same_key_set(signature, run_signature):
                    run.append(member)
                    continue
            else:
                signature = None
            if run:
                self.close_exact(run, result)
            run = [member]
            run_name = name
            run_signature = signature
        if run:
            self.close_exact(run, result)
        return result

    def close_exact(self, run: list[_Member], result: list[_Member | None]) -> None:
        if len(run) < 2 or sum(member[2] for member in run) < self.min_run:
            result.extend(run)
            return
        first_index, first, count, total, low, high, end, info = run[0]
        out = self.out
        merged = self.merged
        first_id = first[0]
        for member in run[1:]:
            index, record, members, duration_sum, shortest, longest, last, _ = member
            count += members
            total += duration_sum
            if shortest < low:
                low = shortest
            if longest > high:
                high = longest
            if last > end:
                end = last
            # The member's slot: its own, or its first member's if it is a composite.
            out[index] = None
            merged[record[0]] = first_id
        meta, keys, values = first[4], first[6], first[7]
        if meta & _EXACT_MARK:
            keys, values = keys[:-_EXACT_TAIL], values[:-_EXACT_TAIL]
        composite: Record = (
            first_id,
            first[1],
            first[2],
            end,
            (meta & ~COMPOSITE_MARKS) | _EXACT_MARK,
            first[5],
            _composite_keys(keys, _EXACT_ATTRIBUTES),
            (*values, count, total, low, high, EXACT_MATCH),
            first[8],
        )
        out[first_index] = composite
        result.append((first_index, composite, count, total, low, high, end, info))

    # -- same kind -------------------------------------------------------

    def same_kind_stage(self, candidates: list[_Member | None]) -> None:
        limit = self.same_kind_ns
        run: list[_Member] = []
        run_signature: tuple[Any, ...] = ()
        for member in candidates:
            signature = (
                None if member is None or member[5] > limit else _same_kind_signature(member)
            )
            if member is None or signature is None:
                self.close_same_kind(run, run_signature)
                run = []
            elif run and signature == run_signature:
                run.append(member)
            else:
                self.close_same_kind(run, run_signature)
                run = [member]
                run_signature = signature
        self.close_same_kind(run, run_signature)

    def close_same_kind(self, run: list[_Member], signature: tuple[Any, ...]) -> None:
        if len(run) < 2 or sum(member[2] for member in run) < self.min_run:
            return
        first_index, first, count, total, low, high, end, _ = run[0]
        by_name: dict[str, list[int]] = {}
        shared = dict(_key_attributes(run[0]))
        for position, member in enumerate(run):
            index, record, members, duration_sum, shortest, longest, last, _ = member
            _count_names(record, members, duration_sum, by_name)
            if position == 0:
                continue
            count += members
            total += duration_sum
            low = min(low, shortest)
            high = max(high, longest)
            end = max(end, last)
            if shared:
                attributes = dict(_key_attributes(member))
                shared = {k: v for k, v in shared.items() if attributes.get(k) == v}
            self.out[index] = None
            self.merged[record[0]] = first[0]
        _, key, _, value, context = signature
        composite: Record = (
            first[0],
            first[1],
            first[2],
            end,
            (first[4] & ~COMPOSITE_MARKS) | _SAME_KIND_MARK,
            f"{key}={value}",
            _composite_keys(tuple(shared), _SAME_KIND_ATTRIBUTES),
            (
                *(typed[1] for typed in shared.values()),
                count,
                total,
                low,
                high,
                SAME_KIND,
                tuple(by_name),
                tuple(sums[0] for sums in by_name.values()),
                tuple(sums[1] for sums in by_name.values()),
            ),
            None if context is None else Extra(None, (), (), 0, 0, 0, *context),
        )
        self.out[first_index] = composite


def _exact_signature(member: _Member) -> tuple[Any, ...]:
    """What exact-match siblings share: name, context bits, attribute keys, where they come
    from, then the values of the `same_kind_keys` present, each after its type (True == 1,
    but "true" and "1" are different targets)."""
    record = member[1]
    meta, keys, values, extra = record[4], record[6], record[7], record[8]
    if meta & _EXACT_MARK:
        keys = keys[:-_EXACT_TAIL]
    context = None if extra is None else _context(extra)
    present = member[7][1]
    if not present:
        return (record[5], meta & _CONTEXT_BITS, keys, context)
    if len(present) == 1:
        value = values[present[0][1]]
        return (record[5], meta & _CONTEXT_BITS, keys, context, value.__class__, value)
    return (
        record[5],
        meta & _CONTEXT_BITS,
        keys,
        context,
        *[part for _, i in present for part in (values[i].__class__, values[i])],
    )


def _same_kind_signature(member: _Member) -> tuple[Any, ...] | None:
    present = member[7][1]
    if not present:
        return None
    record = member[1]
    key, position = present[0]
    value = record[7][position]
    # Strings and integers name a target; bools, floats and arrays do not.
    if value.__class__ is not str and value.__class__ is not int:
        return None
    return (record[4] & _CONTEXT_BITS, key, value.__class__, value, _context(record[8]))


def _key_attributes(member: _Member) -> list[tuple[str, tuple[type, Any]]]:
    """The `same_kind_keys` attributes of a candidate, values tagged with their type."""
    values = member[1][7]
    return [(key, (values[i].__class__, values[i])) for key, i in member[7][1]]


def _count_names(
    record: Record, members: int, duration_sum: int, by_name: dict[str, list[int]]
) -> None:
    if record[4] & _SAME_KIND_MARK:
        values = record[7]
        parts: Iterable[tuple[str, int, int]] = zip(values[-3], values[-2], values[-1], strict=True)
    else:
        parts = ((record[5], members, duration_sum),)
    for name, count, total in parts:
        sums = by_name.get(name)
        if sums is None:
            by_name[name] = [count, total]
        else:
            sums[0] += count
            sums[1] += total


def _repeated_ids(records: Sequence[Record]) -> set[int]:
    seen: set[int] = set()
    repeated: set[int] = set()
    for record in records:
        (repeated if record[0] in seen else seen).add(record[0])
    return repeated


def _same_key_set(signature: tuple[Any, ...], other: tuple[Any, ...]) -> bool:
    """Equal but for the order of attribute keys (the application set them in another order)."""
    return (
        signature[0] == other[0]
        and signature[1] == other[1]
        and signature[3:] == other[3:]
        and len(signature[2]) == len(other[2])
        and set(signature[2]) == set(other[2])
    )


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
    each composite sits where its first member was. None means the default
    policy.
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


def _strings(name: str, value: object) -> tuple[str, ...]:
    if isinstance(value, str) or not isinstance(value, tuple | list):
        raise ValueError(f"{name} must be a tuple of strings, got {value!r}")
    for item in value:
        if not isinstance(item, str) or not item:
            raise ValueError(f"{name} must hold non-empty strings, got {item!r} in {value!r}")
    return tuple(dict.fromkeys(value))


_DEFAULT_POLICY = CompactionPolicy()
