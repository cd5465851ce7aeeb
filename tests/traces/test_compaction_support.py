"""Trace trees made by the real SDK for the compaction tests (builders only, no tests here).

Span ids count up from 1 (an `IdGenerator`, the SDK's own extension point), so
a failing hypothesis example replays exactly, and every time is explicit, so
no test depends on the clock.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags

from otel_bounded.telemetry import COMPOSITE_COUNT, COMPOSITE_STRATEGY
from otel_bounded.traces.compaction import CompactionPolicy
from otel_bounded.traces.records import Record, SpanEncoder

TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
REMOTE_PARENT_ID = 0xFEEDFACECAFEBEEF
T0 = 1_700_000_000 * 10**9
MS = 1_000_000


class SequentialIds(IdGenerator):
    """One trace id, and span ids 1, 2, 3, ... in creation order."""

    def __init__(self) -> None:
        self._last = 0

    def generate_span_id(self) -> int:
        self._last += 1
        return self._last

    def generate_trace_id(self) -> int:
        return TRACE_ID


class TraceBuilder:
    """Start spans at explicit times under explicit parents; `finish` ends them by end time."""

    def __init__(self, resource: Resource | None = None, scope: str = "tests.compaction") -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider(
            id_generator=SequentialIds(),
            resource=resource or Resource.create({"service.name": "compaction-tests"}),
        )
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer(scope, "1.0")
        self._open: list[tuple[int, int, int, Span]] = []

    def span(
        self,
        name: str,
        parent: Span | None = None,
        *,
        start_ms: float = 0,
        duration_ms: float = 1,
        remote_parent: bool = False,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, Any] | None = None,
        status: Status | None = None,
        event: bool = False,
        link: bool = False,
        tracer: trace.Tracer | None = None,
        end_rank: int = 0,
    ) -> Span:
        """A started span; among spans ending at the same time, lower `end_rank` ends first."""
        if remote_parent:
            context = trace.set_span_in_context(
                trace.NonRecordingSpan(
                    SpanContext(
                        TRACE_ID,
                        REMOTE_PARENT_ID,
                        is_remote=True,
                        trace_flags=TraceFlags(TraceFlags.SAMPLED),
                    )
                )
            )
        elif parent is not None:
            context = trace.set_span_in_context(parent)
        else:
            context = None
        start = T0 + round(start_ms * MS)
        links = [Link(SpanContext(TRACE_ID, REMOTE_PARENT_ID, is_remote=True))] if link else ()
        span = (tracer or self.tracer).start_span(
            name,
            context=context,
            kind=kind,
            attributes=dict(attributes or {}),
            links=links,
            start_time=start,
        )
        assert isinstance(span, Span)
        if event:
            span.add_event("retry", {"attempt": 2}, timestamp=start)
        if status is not None:
            span.set_status(status)
        self._open.append((start + round(duration_ms * MS), end_rank, len(self._open), span))
        return span

    def finish(self) -> list[ReadableSpan]:
        """End every span at its end time, earliest first: the order a processor sees them."""
        for end, _, _, span in sorted(self._open, key=lambda item: item[:3]):
            span.end(end_time=end)
        self._open = []
        return list(self.exporter.get_finished_spans())


def calls(
    count: int,
    name: str = "SELECT",
    *,
    duration_ms: float = 1,
    attributes: Mapping[str, Any] | None = None,
    builder: TraceBuilder | None = None,
    root: Span | None = None,
) -> list[ReadableSpan]:
    """A root of 1 s and `count` sequential calls under it, each `duration_ms` long."""
    builder = builder or TraceBuilder()
    root = root or builder.span("root", duration_ms=1_000)
    for index in range(count):
        builder.span(
            name,
            root,
            start_ms=1 + index * (duration_ms + 0.5),
            duration_ms=duration_ms,
            kind=SpanKind.CLIENT,
            attributes=attributes or {"db.system": "postgresql", "row": index},
        )
    return builder.finish()


def records_of(spans: Sequence[ReadableSpan]) -> list[Record]:
    encode = SpanEncoder().encode
    return [encode(span)[1] for span in spans]


def composite_count(span: ReadableSpan) -> int:
    value = (span.attributes or {}).get(COMPOSITE_COUNT)
    assert isinstance(value, int)
    return value


def is_composite(span: ReadableSpan) -> bool:
    return COMPOSITE_STRATEGY in (span.attributes or {})


# -- random trace trees ----------------------------------------------------------

NAMES = ("SELECT", "SELECT", "GET", "cache.get", "otel_bounded.token.verify", "[MERGED]")
ATTRIBUTES: tuple[dict[str, Any], ...] = (
    {},
    {"db.system": "postgresql"},
    {"db.system": "postgresql", "row": 1},
    {"row": 2, "db.system": "postgresql"},  # the same key set, set in another order
    {"db.system": "mysql", "row": 3},
    {"server.address": "api.example.com"},
    {"server.address": "api.example.com", "db.system": "postgresql"},
    {"server.address": 443},
    # A user span that merely looks like a composite: compaction must not trust it.
    {COMPOSITE_COUNT: 1_000, COMPOSITE_STRATEGY: "exact_match"},
)
DURATIONS_MS = (0, 1, 5, 10, 50, 50.000001, 200)
STATUSES = (
    *[None] * 8,
    Status(StatusCode.OK),
    Status(StatusCode.ERROR, "boom"),
)


@dataclass(frozen=True)
class Node:
    parent: int | None  # index of an earlier node; None: the trace's root
    remote_parent: bool
    name: str
    kind: SpanKind
    attributes: dict[str, Any]
    offset_ms: float
    duration_ms: float
    status: Status | None
    event: bool
    link: bool


@dataclass(frozen=True)
class Tree:
    nodes: tuple[Node, ...]
    sequential: bool
    spans: list[ReadableSpan] = field(compare=False)


def _node(draw: st.DrawFn, index: int, sequential: bool, templates: Sequence[Template]) -> Node:
    if index == 0:
        parent = None
        remote = draw(st.booleans())
    else:
        # Mostly children of the first few nodes, so sibling runs are long.
        if draw(st.integers(0, 3)):
            parent = draw(st.integers(0, min(index - 1, 1)))
        else:
            parent = draw(st.integers(0, index - 1))
        remote = draw(st.integers(0, 19)) == 0
    rare = st.integers(0, 14).map(lambda value: value == 0)
    # Mostly a few repeated kinds of call, as an agent makes them; sometimes anything.
    if draw(st.integers(0, 7)):
        name, kind, attributes = draw(st.sampled_from(templates))
    else:
        name, kind, attributes = draw(_templates)
    return Node(
        parent=parent,
        remote_parent=remote,
        name=name,
        kind=kind,
        attributes=attributes,
        offset_ms=0 if sequential else draw(st.sampled_from((0, 0.5, 1, 2, 3, 60))),
        duration_ms=draw(st.sampled_from(DURATIONS_MS)) if draw(st.integers(0, 2)) == 0 else 1,
        status=draw(st.sampled_from(STATUSES)),
        event=draw(rare),
        link=draw(rare),
    )


Template = tuple[str, SpanKind, dict[str, Any]]
_templates: st.SearchStrategy[Template] = st.tuples(
    st.sampled_from(NAMES),
    st.sampled_from((SpanKind.CLIENT, SpanKind.CLIENT, SpanKind.INTERNAL)),
    st.sampled_from(ATTRIBUTES),
)


@st.composite
def trees(draw: st.DrawFn, max_spans: int = 40, sequential: bool | None = None) -> Tree:
    """A random trace: one root (or local root) and spans under it, made by the real SDK.

    `sequential` lays each parent's children out one after the other, each
    inside its parent, as synchronous code makes them.
    """
    if sequential is None:
        sequential = draw(st.booleans())
    count = draw(st.integers(1, max_spans))
    templates = draw(st.lists(_templates, min_size=1, max_size=3))
    nodes = tuple(_node(draw, index, sequential, templates) for index in range(count))
    return Tree(nodes, sequential, build(nodes, sequential))


def build(nodes: Sequence[Node], sequential: bool) -> list[ReadableSpan]:
    starts, ends = _layout(nodes, sequential)
    builder = TraceBuilder()
    spans: list[Span] = []
    depths: list[int] = []
    for index, node in enumerate(nodes):
        depths.append(0 if node.parent is None else depths[node.parent] + 1)
        spans.append(
            builder.span(
                node.name,
                None if node.parent is None else spans[node.parent],
                start_ms=starts[index],
                duration_ms=ends[index] - starts[index],
                remote_parent=node.remote_parent,
                kind=node.kind,
                attributes=node.attributes,
                status=node.status,
                event=node.event,
                link=node.link,
                # A child ending with its parent ends first, as in synchronous code.
                end_rank=-depths[index],
            )
        )
    return builder.finish()


def _layout(nodes: Sequence[Node], sequential: bool) -> tuple[list[float], list[float]]:
    """Start and end of each node, in ms from the root's start."""
    if not sequential:
        starts: list[float] = []
        for node in nodes:
            starts.append(0.0 if node.parent is None else starts[node.parent] + node.offset_ms)
        return starts, [start + node.duration_ms for start, node in zip(starts, nodes, strict=True)]
    children: dict[int, list[int]] = {}
    for index, node in enumerate(nodes):
        if node.parent is not None:
            children.setdefault(node.parent, []).append(index)
    # A node lasts its own duration, or as long as its children one after the other.
    lengths = [node.duration_ms for node in nodes]
    for index in range(len(nodes) - 1, -1, -1):
        below = sum(lengths[child] for child in children.get(index, ()))
        lengths[index] = max(lengths[index], below)
    starts = [0.0] * len(nodes)
    for index in range(len(nodes)):
        cursor = starts[index]
        for child in children.get(index, ()):
            starts[child] = cursor
            cursor += lengths[child]
    return starts, [start + length for start, length in zip(starts, lengths, strict=True)]


def policies() -> st.SearchStrategy[CompactionPolicy]:
    return st.builds(
        CompactionPolicy,
        exact_match_max_duration_ms=st.sampled_from((0, 1, 10, 50)),
        same_kind_max_duration_ms=st.sampled_from((0, 0, 5, 50, 100)),
        min_run=st.sampled_from((2, 2, 3)),
        protected_prefixes=st.sampled_from((("otel_bounded.",), ("cache.",))),
    )
