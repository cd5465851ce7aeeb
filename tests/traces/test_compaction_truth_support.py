"""Agent-like traces, and a judge of composites against the spans they stand for (no tests here).

The judge is an independent model: it knows nothing of how compaction groups
spans, only what a composite claims (its attributes) and what its members were
(the SDK's own copies, from an `InMemorySpanExporter` on the same provider).
"""

from __future__ import annotations

import json
import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from otel_bounded.telemetry import (
    COMPOSITE_COUNT,
    COMPOSITE_COUNTS,
    COMPOSITE_DURATION_SUM_NS,
    COMPOSITE_DURATION_SUMS_NS,
    COMPOSITE_MAX_NS,
    COMPOSITE_MAXES_NS,
    COMPOSITE_MIN_NS,
    COMPOSITE_MINS_NS,
    COMPOSITE_NAMES,
    COMPOSITE_STRATEGY,
    COMPOSITE_VARIED_DISTINCT,
    COMPOSITE_VARIED_DISTINCT_EXACT,
    COMPOSITE_VARIED_KEYS,
    COMPOSITE_VARIED_SAMPLES,
)
from otel_bounded.traces.compaction import CompactionPolicy

T0 = 1_700_000_000 * 10**9
MS = 1_000_000
COMPOSITE_PREFIX = "otel_bounded.composite."


class CountingIds(IdGenerator):
    """Trace ids 1, 2, 3 ... and span ids 1, 2, 3 ...: a failing example replays exactly."""

    def __init__(self) -> None:
        self._span = 0
        self._trace = 0

    def generate_span_id(self) -> int:
        self._span += 1
        return self._span

    def generate_trace_id(self) -> int:
        self._trace += 1
        return self._trace


# -- the model's notion of equality ----------------------------------------------


def same(a: Any, b: Any) -> bool:
    """Equal in type and value, as a reader would see them (NaN is NaN, -0.0 is not 0.0)."""
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if type(a) is not type(b):
        return False
    if isinstance(a, float):
        return repr(a) == repr(b)
    return bool(a == b)


def key_of(value: Any) -> Hashable:
    """A hashable stand-in, equal exactly when `same` says so; None for a lacking key."""
    if value is None:
        return None
    if isinstance(value, tuple | list):
        return ("seq", tuple(key_of(item) for item in value))
    if isinstance(value, float):
        return (float, repr(value))
    return (type(value), value)


def duration(span: ReadableSpan) -> int:
    assert span.start_time is not None
    assert span.end_time is not None
    return span.end_time - span.start_time


def is_composite(span: ReadableSpan) -> bool:
    return COMPOSITE_STRATEGY in (span.attributes or {})


def operation(span: ReadableSpan, policy: CompactionPolicy) -> Hashable:
    attributes = span.attributes or {}
    identity = (*policy.identity_keys, *policy.same_kind_keys)
    return (span.name, tuple((k, key_of(attributes[k])) for k in identity if k in attributes))


# -- the judge -------------------------------------------------------------------


def judge_composite(
    composite: ReadableSpan,
    members: Sequence[ReadableSpan],
    policy: CompactionPolicy,
    exact_counts_only: bool = False,
) -> None:
    """Everything the composite states is true of every member, and nothing is left unsaid."""
    attributes = dict(composite.attributes or {})
    assert len(members) >= 2
    assert attributes[COMPOSITE_COUNT] == len(members)
    durations = [duration(member) for member in members]
    assert attributes[COMPOSITE_DURATION_SUM_NS] == sum(durations)
    assert attributes[COMPOSITE_MIN_NS] == min(durations)
    assert attributes[COMPOSITE_MAX_NS] == max(durations)
    assert composite.start_time == min(m.start_time for m in members)  # type: ignore[type-var]
    assert composite.end_time == max(m.end_time for m in members)  # type: ignore[type-var]
    for member in members:
        assert member.status.status_code is composite.status.status_code
        assert member.status.status_code is not StatusCode.ERROR
        assert member.kind is composite.kind
        assert member.parent is not None
        assert not member.parent.is_remote
        assert not member.events
        assert not member.links
        assert member.resource == composite.resource
        assert member.instrumentation_scope == composite.instrumentation_scope
    strategy = attributes[COMPOSITE_STRATEGY]
    if strategy == "exact_match":
        assert all(member.name == composite.name for member in members)
    else:
        assert strategy == "same_kind"
        names = attributes[COMPOSITE_NAMES]
        expected: dict[str, list[int]] = {}
        for member, length in zip(members, durations, strict=True):
            expected.setdefault(member.name, []).append(length)
        assert sorted(names) == sorted(expected)
        for name, count, total, low, high in zip(
            names,
            attributes[COMPOSITE_COUNTS],
            attributes[COMPOSITE_DURATION_SUMS_NS],
            attributes[COMPOSITE_MINS_NS],
            attributes[COMPOSITE_MAXES_NS],
            strict=True,
        ):
            assert (count, total, low, high) == (
                len(expected[name]),
                sum(expected[name]),
                min(expected[name]),
                max(expected[name]),
            )
    plain = {k: v for k, v in attributes.items() if not k.startswith(COMPOSITE_PREFIX)}
    # Rule 1: a plain attribute is true of every member.
    for key, value in plain.items():
        for member in members:
            assert key in (member.attributes or {}), (key, member.attributes)
            assert same((member.attributes or {})[key], value), (key, value, member.attributes)
    # Every other key any member carries varied, and says how.
    varied = {
        key: (distinct, exact, text)
        for key, distinct, exact, text in zip(
            attributes[COMPOSITE_VARIED_KEYS],
            attributes[COMPOSITE_VARIED_DISTINCT],
            attributes[COMPOSITE_VARIED_DISTINCT_EXACT],
            attributes[COMPOSITE_VARIED_SAMPLES],
            strict=True,
        )
    }
    seen_keys = {key for member in members for key in (member.attributes or {})}
    assert set(plain) | set(varied) == seen_keys
    assert not set(plain) & set(varied)
    identity = set(policy.identity_keys) | set(policy.same_kind_keys)
    assert not identity & set(varied), "an identity key varied inside one composite"
    for key, (distinct, exact, text) in varied.items():
        values = {key_of((member.attributes or {}).get(key)) for member in members}
        samples = [key_of(_from_json(value)) for value in json.loads(text)]
        assert len(samples) == len(set(samples))
        assert set(samples) <= values, (key, samples, values)
        if exact:
            assert distinct == len(values) >= 2, (key, distinct, values)
            assert len(samples) == min(distinct, policy.max_varied_samples)
        else:
            # A lower bound, flagged: never more than there were.
            assert len(samples) <= min(distinct, policy.max_varied_samples)
            assert 2 <= distinct <= len(values), (key, distinct, values)
            assert not exact_counts_only, "an inexact count where exact counts were asked"


def _from_json(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_from_json(item) for item in value)
    return value


def assert_verbatim(held: ReadableSpan, original: ReadableSpan, parent_id: int | None) -> None:
    """The held span is the original, but for a parent re-pointed at what stands for it."""
    assert held.context == original.context
    assert held.name == original.name
    assert held.kind is original.kind
    assert dict(held.attributes or {}) == dict(original.attributes or {})
    assert held.status.status_code is original.status.status_code
    assert held.status.description == original.status.description
    assert (held.start_time, held.end_time) == (original.start_time, original.end_time)
    assert list(held.events) == list(original.events)
    assert [link.context for link in held.links] == [link.context for link in original.links]
    if original.parent is None:
        assert held.parent is None
    else:
        assert held.parent is not None
        assert held.parent.span_id == (original.parent.span_id if parent_id is None else parent_id)


# -- agent-like traces -------------------------------------------------------------

TOOLS = ("read_file", "write_file", "bash")
PATHS = ("src/app.py", "README.md")
STATEMENTS = ("SELECT 1", "DELETE FROM users", "SELECT name FROM users WHERE id = ?")
STATUSES = (None, None, None, None, StatusCode.OK, StatusCode.OK, StatusCode.ERROR)


@dataclass(frozen=True)
class Call:
    """One span of an agent's trace."""

    trace: int  # which of the interleaved traces
    parent: int | None  # index of an earlier call of the same trace; None: its root
    name: str
    attributes: dict[str, Any]
    offset_ms: float
    duration_ms: float
    status: StatusCode | None
    late: bool  # ends after its parent ended
    link_to: int | None  # index of an earlier call of the same trace it links to


Template = tuple[str, dict[str, Any], bool, bool, bool]


def _template(draw: st.DrawFn) -> Template:
    """A kind of call an agent repeats: its name and attributes, and whether each call carries
    its own id, its task's id and one of a few chunk numbers. Kinds of one name share their
    keys and differ in values."""
    name = draw(st.sampled_from(("execute_tool",) * 3 + ("db.query", "cache.get", "cache.set")))
    attributes: dict[str, Any]
    if name == "execute_tool":
        tool = draw(st.sampled_from(TOOLS))
        attributes = {"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool}
        if tool != "bash":
            attributes["file.path"] = draw(st.sampled_from(PATHS))
    elif name == "db.query":
        attributes = {"db.system": "sqlite", "db.statement": draw(st.sampled_from(STATEMENTS))}
    else:
        attributes = {"db.system": "redis"}
    return name, attributes, draw(st.booleans()), draw(st.booleans()), draw(st.booleans())


def _call(
    draw: st.DrawFn, templates: Sequence[Template], index: int, task: int
) -> tuple[str, dict[str, Any], StatusCode | None]:
    if draw(st.integers(0, 7)):
        name, base, with_id, with_task, with_chunk = draw(st.sampled_from(templates))
        status = draw(st.sampled_from((None,) * 6 + (StatusCode.OK,)))
    else:
        name, base, with_id, with_task, with_chunk = _template(draw)
        status = draw(st.sampled_from(STATUSES))
    if name == "execute_tool" and draw(st.integers(0, 7)) == 0:
        name = "task"
    attributes = dict(base)
    if with_id:
        attributes["call.id"] = f"call-{index}"  # a per-call id
    if with_task:
        attributes["task.id"] = task
    if with_chunk:
        attributes["chunk"] = draw(st.integers(0, 2))  # a few values, repeated across calls
    if draw(st.integers(0, 11)) == 0:
        attributes["retry"] = draw(st.sampled_from((1, True, 1.0, "1", (1, 2), -0.0, 0.0)))
    return name, attributes, status


@st.composite
def agent_traces(draw: st.DrawFn, max_calls: int = 60) -> list[Call]:
    """Up to three interleaved traces of an agent: tasks, tool calls, queries, late and linked."""
    traces = draw(st.integers(1, 3))
    count = draw(st.integers(traces, max_calls))
    templates = [_template(draw) for _ in range(draw(st.integers(1, 3)))]
    templates += templates[:1]  # the first kind of call is the most frequent
    calls: list[Call] = []
    per_trace: dict[int, list[int]] = {t: [] for t in range(traces)}
    for index in range(count):
        which = index if index < traces else draw(st.integers(0, traces - 1))
        mine = per_trace[which]
        status: StatusCode | None = None
        if not mine:
            parent = None
            name, attributes = "invoke_agent", {}
        else:
            # Mostly under the root or an early task, so sibling runs are long.
            if draw(st.integers(0, 3)):
                parent = mine[min(len(mine) - 1, draw(st.integers(0, 1)))]
            else:
                parent = draw(st.sampled_from(mine))
            name, attributes, status = _call(draw, templates, index, parent)
        rare = st.integers(0, 9).map(lambda value: value == 0)
        local = [i for i in mine if i != parent]
        calls.append(
            Call(
                trace=which,
                parent=None if parent is None else mine.index(parent),
                name=name,
                attributes=attributes,
                offset_ms=draw(st.sampled_from((0.5, 1, 2, 5))),
                duration_ms=draw(st.sampled_from((1, 1, 1, 2, 3, 80))),
                status=status,
                late=parent is not None and draw(rare),
                link_to=mine.index(draw(st.sampled_from(local))) if local and draw(rare) else None,
            )
        )
        mine.append(index)
    return calls


def run_calls(calls: Sequence[Call], provider: TracerProvider) -> None:
    """Start and end every call through the real SDK, ending them in end-time order."""
    tracer = provider.get_tracer("tests.agent", "1.0")
    by_trace: dict[int, list[int]] = {}
    for index, call in enumerate(calls):
        by_trace.setdefault(call.trace, []).append(index)
    starts: dict[int, int] = {}
    ends: dict[int, int] = {}
    children: dict[int, list[int]] = {}
    for indices in by_trace.values():
        for position, index in enumerate(indices):
            call = calls[index]
            if call.parent is None:
                starts[index] = T0 + position * MS
            else:
                parent = indices[call.parent]
                children.setdefault(parent, []).append(index)
                starts[index] = starts[parent] + round(call.offset_ms * MS) * (position + 1)
    # A span ends after its own duration, and after its children unless they are late.
    for index in sorted(starts, key=lambda i: -i):
        own = starts[index] + round(calls[index].duration_ms * MS)
        inner = [ends[child] for child in children.get(index, ()) if not calls[child].late]
        ends[index] = max([own, *inner])
    # Parents come before their children in index order, so a late parent is pushed first.
    for index in sorted(starts):
        for child in children.get(index, ()):
            if calls[child].late:
                ends[child] = max(ends[child], ends[index] + MS)
    spans: dict[int, Span] = {}
    for index in sorted(starts, key=lambda i: (starts[i], i)):
        call = calls[index]
        indices = by_trace[call.trace]
        context = None
        links: list[Link] = []
        if call.parent is not None:
            context = trace.set_span_in_context(spans[indices[call.parent]])
        if call.link_to is not None and indices[call.link_to] in spans:
            links.append(Link(spans[indices[call.link_to]].get_span_context()))
        span = tracer.start_span(
            call.name,
            context=context,
            kind=SpanKind.CLIENT if call.name == "db.query" else SpanKind.INTERNAL,
            attributes=call.attributes,
            links=links,
            start_time=starts[index],
        )
        assert isinstance(span, Span)
        if call.status is not None:
            span.set_status(
                Status(call.status, "failed" if call.status is StatusCode.ERROR else None)
            )
        spans[index] = span
    depth: dict[int, int] = {}
    for index in sorted(spans):
        call = calls[index]
        parent = None if call.parent is None else by_trace[call.trace][call.parent]
        depth[index] = 0 if parent is None else depth[parent] + 1
    # Of spans ending together, the deepest ends first, as in synchronous code.
    for index in sorted(spans, key=lambda i: (ends[i], -depth[i], i)):
        spans[index].end(end_time=ends[index])


def provider_with(*processors: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    """A provider feeding `processors` and, after them, the SDK's in-memory exporter."""
    provider = TracerProvider(id_generator=CountingIds())
    for processor in processors:
        provider.add_span_processor(processor)
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def per_name_stats(spans: Sequence[ReadableSpan]) -> dict[str, tuple[int, int, int, int]]:
    """(count, duration sum, min, max) per operation name, reading composites by their claims."""
    stats: dict[str, list[int]] = {}

    def add(name: str, count: int, total: int, low: int, high: int) -> None:
        row = stats.setdefault(name, [0, 0, math.inf, -1])  # type: ignore[list-item]
        row[0] += count
        row[1] += total
        row[2] = min(row[2], low)
        row[3] = max(row[3], high)

    for span in spans:
        attributes: Mapping[str, Any] = span.attributes or {}
        strategy = attributes.get(COMPOSITE_STRATEGY)
        if strategy == "exact_match":
            add(
                span.name,
                attributes[COMPOSITE_COUNT],
                attributes[COMPOSITE_DURATION_SUM_NS],
                attributes[COMPOSITE_MIN_NS],
                attributes[COMPOSITE_MAX_NS],
            )
        elif strategy == "same_kind":
            for row in zip(
                attributes[COMPOSITE_NAMES],
                attributes[COMPOSITE_COUNTS],
                attributes[COMPOSITE_DURATION_SUMS_NS],
                attributes[COMPOSITE_MINS_NS],
                attributes[COMPOSITE_MAXES_NS],
                strict=True,
            ):
                add(*row)
        else:
            length = duration(span)
            add(span.name, 1, length, length, length)
    return {name: (row[0], row[1], row[2], row[3]) for name, row in stats.items()}
