"""Per-trace summaries kept as spans end, and the query that reads them.

`on_end` folds each recorded span into its trace's summary (earliest start,
latest end, errors, spans received, the root), so a query that filters on
status, duration or time reads one small list per trace and decodes nothing.
Filters on span names or attributes read the compact records, still without
decoding them. A query holds the store's lock only in short slices, so spans
ending meanwhile never wait long behind it.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from fractions import Fraction
from operator import attrgetter
from typing import Any

from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.trace.status import StatusCode

from otel_bounded.core import BoundedStore
from otel_bounded.telemetry import COMPOSITE_COUNT, COMPOSITE_NAMES
from otel_bounded.traces.compaction import COMPOSITE_MARKS
from otel_bounded.traces.records import HAS_PARENT, PARENT_IS_REMOTE, Record, SpanEncoder

__all__ = [
    "NOTABLE",
    "STATUSES",
    "HeldTrace",
    "TraceIndex",
    "TraceQuery",
    "TraceSummary",
    "new_trace",
]

STATUSES = ("error", "ok", "unset")
"""What `TraceSummary.status` can say, and what `TraceStore.query(status=)` takes."""

DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
"""Most summaries one query returns."""

_STATUS_BITS = 0b11 << 3
_ERROR = tuple(StatusCode).index(StatusCode.ERROR) << 3
_OK = tuple(StatusCode).index(StatusCode.OK) << 3
_PARENT_BITS = HAS_PARENT | PARENT_IS_REMOTE
_NO_INDEX = 0xFFFF
_NS_PER_MS = 1_000_000
_NS_PER_S = 1_000_000_000
# Before any span with a start time: larger than any time a span can carry.
_NO_START = 1 << 64
# Work done per hold of the store's lock: one unit per trace looked at, one per
# record read. About 0.1-0.2 ms of a 2-core machine, well under the 1 ms an
# `on_end` may wait.
_SLICE = 200


@dataclass(frozen=True)
class TraceSummary:
    """One held trace at a glance; `as_dict()` is what the JSON API returns.

    `status` is ``"error"`` when any held span has ERROR status, else the root
    span's status (``"ok"`` or ``"unset"``), ``"unset"`` when no root is held.
    `spans` counts held spans (a composite counts as one); `compacted` counts
    the spans merged into composites. `root_name` and `service_name` are None
    when the trace's root span is not held (still running, dropped, or started
    elsewhere and never seen here: then the earliest-starting local root is used).
    """

    trace_id: str
    root_name: str | None
    service_name: str | None
    start_time_unix_nano: int
    duration_ns: int
    spans: int
    errors: int
    compacted: int
    status: str

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable data."""
        return asdict(self)


@dataclass(frozen=True)
class TraceQuery:
    """Validated query arguments; see `TraceStore.query`."""

    status: str | None = None
    name: str | None = None
    min_duration_ms: float | None = None
    max_duration_ms: float | None = None
    attributes: Mapping[str, Any] | None = None
    since: float | None = None
    until: float | None = None
    limit: int = DEFAULT_LIMIT

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(
                f"status must be one of {', '.join(STATUSES)} or None, got {self.status!r}"
            )
        if self.name is not None and (not isinstance(self.name, str) or self.name in ("", "*")):
            raise ValueError(
                f"name must be a non-empty span name (a trailing * for a prefix), got {self.name!r}"
            )
        for argument in ("min_duration_ms", "max_duration_ms", "since", "until"):
            _check_number(argument, getattr(self, argument))
        if self.attributes is not None:
            if not isinstance(self.attributes, Mapping) or not self.attributes:
                raise ValueError(
                    f"attributes must be a non-empty mapping or None, got {self.attributes!r}"
                )
            for key in self.attributes:
                if not isinstance(key, str):
                    raise ValueError(f"attributes must have string keys, got {key!r}")
            object.__setattr__(self, "attributes", dict(self.attributes))
        if (
            isinstance(self.limit, bool)
            or not isinstance(self.limit, int)
            or not 0 < self.limit <= MAX_LIMIT
        ):
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {self.limit!r}")

    @property
    def reads_records(self) -> bool:
        return self.name is not None or self.attributes is not None


def _check_number(argument: str, value: object) -> None:
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{argument} must be a finite number or None, got {value!r}")
    if value < 0:
        raise ValueError(f"{argument} must be 0 or more, got {value!r}")


class HeldTrace(list):  # type: ignore[type-arg]
    """A held trace's records, with its summary kept beside them as spans end.

    The store's value for each trace, so `on_end` finds the summary without a
    lookup and eviction takes it away with the records. `start` is the
    earliest span start, `end` the latest span end (`_NO_START` and -1 while
    unknown), `errors` the spans with ERROR status (compaction never merges
    them), `root` the record of the root span, else of the earliest-starting
    local root, or None.
    """

    __slots__ = ("end", "errors", "ok", "root", "start", "trace_id")

    trace_id: int
    start: int
    end: int
    errors: int
    root: Record | None
    ok: bool
    """The root's status is OK (kept with `root`, so a query need not read the record)."""

    def fold(self, record: Record) -> None:
        """Take one span just appended into the summary."""
        start, end = record[2], record[3]
        if start is not None and start < self.start:
            self.start = start
        if end is not None and end > self.end:
            self.end = end
        if (record[4] ^ HAS_PARENT) & NOTABLE:
            self.note(record)

    def note(self, record: Record) -> None:
        """A span that is an error, a root or a local root."""
        meta = record[4]
        if meta & _STATUS_BITS == _ERROR:
            self.errors += 1
        if meta & _PARENT_BITS != HAS_PARENT:
            root = self.root = _root(self.root, record)
            self.ok = root[4] & _STATUS_BITS == _OK


NOTABLE = HAS_PARENT | PARENT_IS_REMOTE | (_ERROR & ~_OK)
"""`(meta ^ HAS_PARENT) & NOTABLE` is non-zero for an error, a root or a local root."""


def new_trace(trace_id: int, record: Record) -> HeldTrace:
    """The value a store puts for a trace whose first held span is `record`."""
    trace = HeldTrace((record,))
    trace.trace_id = trace_id
    start, end = record[2], record[3]
    trace.start = _NO_START if start is None else start
    trace.end = -1 if end is None else end
    trace.errors = 0
    trace.root = None
    trace.ok = False
    if (record[4] ^ HAS_PARENT) & NOTABLE:
        trace.note(record)
    return trace


def _root(held: Record | None, record: Record) -> Record:
    """The trace's root: a span without a parent, else the earliest-starting local root."""
    if held is None:
        return record
    if not held[4] & HAS_PARENT:
        return held
    if not record[4] & HAS_PARENT:
        return record
    if record[2] is not None and (held[2] is None or record[2] < held[2]):
        return record
    return held


class TraceIndex:
    """Every held trace by id in a plain dict, so a query can list them in one fast copy.

    The store's entries are an `OrderedDict`, which iterates about ten times
    slower. Changed only under the store's lock: a trace joins when it starts
    and leaves when it is evicted or cleared.
    """

    __slots__ = ("_encoder", "_traces", "evicted", "held")

    def __init__(self, traces: BoundedStore[int, list[Record]], encoder: SpanEncoder) -> None:
        self._traces = traces
        self._encoder = encoder
        self.held: dict[int, HeldTrace] = {}
        pop = self.held.pop

        def evicted(trace_id: int, _trace: object, _reason: str) -> None:
            pop(trace_id, None)

        self.evicted = evicted
        """An `on_evict` callback for the store's entries that only keeps `held` in step."""

    def clear(self) -> None:
        self.held.clear()

    # -- queries ---------------------------------------------------------

    def query(self, query: TraceQuery, lock: threading.Lock) -> list[TraceSummary]:
        """Matching held traces, newest start first (ties: larger trace id first).

        The summary filters and the ordering read the traces' summaries
        without the lock: each field read is atomic, and every trace
        returned is checked again under the lock before it is summarized.
        Records are read under the lock only, a few traces at a time.
        """
        with lock:
            self._traces.expire()
        # Copying a plain dict's values is one step for the interpreter; the lock
        # is not needed for it, and 100,000 traces would hold it too long. Each
        # pass over every trace costs what touching 100,000 objects costs, so the
        # error filter (the most asked) is done in the same pass as the copy.
        values = self.held.values()
        traces = list(filter(_ERRORS_OF, values)) if query.status == "error" else list(values)
        for narrow in _list_filters(query):
            traces = narrow(traces)
        traces.sort(key=_START_OF, reverse=True)
        return self._verified(traces, query, lock)

    def _verified(
        self, ordered: list[HeldTrace], query: TraceQuery, lock: threading.Lock
    ) -> list[TraceSummary]:
        """The first `query.limit` of `ordered` still held and matching, in short lock holds."""
        held = self.held
        match_summary = _summary_filter(query)
        match_records = _records_filter(query, self._encoder) if query.reads_records else None
        wanted = query.limit
        results: list[TraceSummary] = []
        position, total = 0, len(ordered)
        # Past the limit, traces starting at the same moment as the last one taken
        # are taken too: ties go to the larger trace id, not to the scan order.
        boundary: int | None = None
        while position < total:
            with lock:
                budget = _SLICE
                while position < total and budget > 0:
                    trace = ordered[position]
                    if boundary is not None and trace.start != boundary:
                        position = total
                        break
                    position += 1
                    budget -= 1 + len(trace)
                    if held.get(trace.trace_id) is not trace or not match_summary(trace):
                        continue  # evicted, or changed, since the copy
                    if match_records is not None and not match_records(trace):
                        continue
                    results.append(self._summarize(trace))
                    if len(results) >= wanted and boundary is None:
                        boundary = trace.start
            # A span that waited for the lock has it now, but must also get the
            # interpreter: hand it over instead of running on for a switch interval.
            _hand_over()
        results.sort(key=_SUMMARY_ORDER, reverse=True)
        return results[:wanted]

    def summary(self, trace_id: int) -> TraceSummary | None:
        """The summary of one held trace; call under the store's lock."""
        trace = self._traces.get(trace_id)
        if trace is None:
            return None
        return self._summarize(trace)  # type: ignore[arg-type]

    def _summarize(self, trace: HeldTrace) -> TraceSummary:
        root = trace.root
        if root is not None:
            root_name: str | None = root[5]
            service = _service_name(root, self._encoder)
            status = "ok" if root[4] & _STATUS_BITS == _OK else "unset"
        else:
            root_name = None
            service = _service_name(trace[0], self._encoder) if trace else None
            status = "unset"
        start, end = trace.start, trace.end
        known = start != _NO_START and end >= start
        return TraceSummary(
            trace_id=f"{trace.trace_id:032x}",
            root_name=root_name,
            service_name=service,
            start_time_unix_nano=start if start != _NO_START else 0,
            duration_ns=end - start if known else 0,
            spans=len(trace),
            errors=trace.errors,
            compacted=sum(_merged_into(record) for record in trace),
            status="error" if trace.errors else status,
        )


_START_OF = attrgetter("start")
_hand_over = functools.partial(time.sleep, 0)


def _SUMMARY_ORDER(summary: TraceSummary) -> tuple[int, str]:
    return (summary.start_time_unix_nano, summary.trace_id)


def _list_filters(query: TraceQuery) -> list[Callable[[list[HeldTrace]], list[HeldTrace]]]:
    """The summary filters of `query` over whole lists: a comprehension each, no call per trace.

    The same tests as `_summary_filter`, which checks one trace again under the lock.
    """
    filters: list[Callable[[list[HeldTrace]], list[HeldTrace]]] = []
    # status="error" is applied by the copy itself, in `TraceIndex.query`.
    if query.status == "ok":
        filters.append(lambda traces: [t for t in traces if t.ok and not t.errors])
    elif query.status == "unset":
        filters.append(lambda traces: [t for t in traces if not t.ok and not t.errors])
    if query.min_duration_ms is not None:
        least = math.ceil(Fraction(query.min_duration_ms) * _NS_PER_MS)
        if least > 0:  # a duration is never negative; an unknown one is 0
            filters.append(lambda traces: [t for t in traces if t.end - t.start >= least])
    if query.max_duration_ms is not None:
        most = math.floor(Fraction(query.max_duration_ms) * _NS_PER_MS)
        filters.append(lambda traces: [t for t in traces if t.end - t.start <= most])
    if query.since is not None:
        since = math.ceil(Fraction(query.since) * _NS_PER_S)
        filters.append(lambda traces: [t for t in traces if since <= t.start < _NO_START])
    if query.until is not None:
        until = math.floor(Fraction(query.until) * _NS_PER_S)
        filters.append(
            lambda traces: [t for t in traces if t.start <= until and t.start != _NO_START]
        )
    return filters


_ERRORS_OF = attrgetter("errors")


def _merged_into(record: Record) -> int:
    """Spans merged away into a record: its composite count less itself, else 0."""
    if not record[4] & COMPOSITE_MARKS or COMPOSITE_COUNT not in record[6]:
        return 0
    count = record[7][record[6].index(COMPOSITE_COUNT)]
    return count - 1 if isinstance(count, int) and not isinstance(count, bool) else 0


def _summary_filter(query: TraceQuery) -> Callable[[HeldTrace], bool]:
    """A test on a summary list for the status, duration and time filters of `query`."""
    tests: list[Callable[[HeldTrace], bool]] = []
    if query.status == "error":
        tests.append(lambda t: t.errors > 0)
    elif query.status is not None:
        wanted = query.status == "ok"
        tests.append(lambda t: not t.errors and t.ok is wanted)
    if query.min_duration_ms is not None:
        least = math.ceil(Fraction(query.min_duration_ms) * _NS_PER_MS)
        tests.append(lambda t: _duration(t) >= least)
    if query.max_duration_ms is not None:
        most = math.floor(Fraction(query.max_duration_ms) * _NS_PER_MS)
        tests.append(lambda t: _duration(t) <= most)
    if query.since is not None:
        since = math.ceil(Fraction(query.since) * _NS_PER_S)
        tests.append(lambda t: t.start != _NO_START and t.start >= since)
    if query.until is not None:
        until = math.floor(Fraction(query.until) * _NS_PER_S)
        tests.append(lambda t: t.start <= until and t.start != _NO_START)
    if not tests:
        return lambda _t: True
    if len(tests) == 1:
        return tests[0]
    return lambda t: all(test(t) for test in tests)


def _duration(trace: HeldTrace) -> int:
    start, end = trace.start, trace.end
    return end - start if start != _NO_START and end >= start else 0


def _records_filter(query: TraceQuery, encoder: SpanEncoder) -> Callable[[Sequence[Record]], bool]:
    """A test on a trace's records for the name and attribute filters of `query`."""
    name = query.name
    names: Callable[[Record], bool] | None = None
    if name is not None:
        if name.endswith("*"):
            prefix = name[:-1]
            names = lambda record: any(n.startswith(prefix) for n in _names(record))  # noqa: E731
        else:
            names = lambda record: name in _names(record)  # noqa: E731
    wanted = tuple((query.attributes or {}).items())
    carries = _carries_test(wanted, encoder)

    def test(records: Sequence[Record]) -> bool:
        if names is not None and not any(names(record) for record in records):
            return False
        return not wanted or any(carries(record) for record in records)

    return test


def _carries_test(
    wanted: tuple[tuple[str, Any], ...], encoder: SpanEncoder
) -> Callable[[Record], bool]:
    """`carries(record)`: the span carries every wanted attribute, itself or on its resource."""
    if len(wanted) != 1 or isinstance(wanted[0][1], tuple | list):
        return lambda record: _carries(record, wanted, encoder)
    # One scalar attribute, the usual question: written out, it is read once per span held.
    key, value = wanted[0]
    kind = value.__class__
    on_resource: dict[int, bool] = {}

    def carries(record: Record) -> bool:
        keys = record[6]
        if key in keys:
            held = record[7][keys.index(key)]
            return held.__class__ is kind and held == value
        index = (record[4] >> 24) & 0xFFFF
        if index == _NO_INDEX:
            return _carries(record, wanted, encoder)
        found = on_resource.get(index)
        if found is None:
            found = on_resource[index] = _carries(record, wanted, encoder)
        return found

    return carries


def _names(record: Record) -> tuple[str, ...]:
    """A span's name; for a composite also the names of the spans merged into it."""
    if record[4] & COMPOSITE_MARKS and COMPOSITE_NAMES in record[6]:
        merged = record[7][record[6].index(COMPOSITE_NAMES)]
        if isinstance(merged, tuple | list):
            return (record[5], *(n for n in merged if isinstance(n, str)))
    return (record[5],)


def _carries(record: Record, wanted: tuple[tuple[str, Any], ...], encoder: SpanEncoder) -> bool:
    """Whether one span carries every wanted attribute, on itself or its resource."""
    keys, values = record[6], record[7]
    resource: Mapping[str, Any] | None = None
    for key, value in wanted:
        if key in keys:
            if _same_value(values[keys.index(key)], value):
                continue
            return False
        if resource is None:
            resource = _resource_attributes(record, encoder)
        if key not in resource or not _same_value(resource[key], value):
            return False
    return True


def _same_value(held: object, wanted: object) -> bool:
    """Equal and of the same type: True is not 1, and 1 is not 1.0 or "1"."""
    if isinstance(held, tuple | list) and isinstance(wanted, tuple | list):
        return len(held) == len(wanted) and all(
            _same_value(a, b) for a, b in zip(held, wanted, strict=True)
        )
    return held.__class__ is wanted.__class__ and held == wanted


def _resource_attributes(record: Record, encoder: SpanEncoder) -> Mapping[str, Any]:
    index = (record[4] >> 24) & 0xFFFF
    extra = record[8]
    if index == _NO_INDEX:
        resource = extra.resource if extra is not None else None
    else:
        resource = encoder.resources.objects[index]
    return resource.attributes if resource is not None else {}


def _service_name(record: Record, encoder: SpanEncoder) -> str | None:
    service = _resource_attributes(record, encoder).get(SERVICE_NAME)
    return service if isinstance(service, str) else None
