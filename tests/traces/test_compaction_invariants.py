"""Compaction invariants over random trace trees made by the real SDK, one test per invariant."""

from __future__ import annotations

import random

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import StatusCode

from otel_bounded.traces.compaction import (
    CompactionPolicy,
    compact_records,
    compact_spans,
    operation_totals,
    reparent,
)
from otel_bounded.traces.records import Record
from tests.traces.test_compaction_support import (
    Tree,
    composite_count,
    policies,
    records_of,
    trees,
)

# Building spans with the SDK dominates; these settings keep the file to a few seconds.
FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _made_here(kept: list[ReadableSpan], given_spans: list[ReadableSpan]) -> list[ReadableSpan]:
    """The composites compaction made: every kept span that is not an input object."""
    inputs = {id(span) for span in given_spans}
    return [span for span in kept if id(span) not in inputs]


def _by_start(records: list[Record]) -> list[Record]:
    return sorted(records, key=lambda record: (record[2], record[0]))


@FAST
@given(trees(), policies())
def test_every_kept_span_has_its_parent_kept_or_is_a_root(
    tree: Tree, policy: CompactionPolicy
) -> None:
    kept = compact_spans(tree.spans, policy)

    kept_ids = {span.context.span_id for span in kept}
    for span in kept:
        if span.parent is not None and not span.parent.is_remote:
            assert span.parent.span_id in kept_ids, f"{span.name} lost its parent"


@FAST
@given(trees(), policies(), st.data())
def test_a_partial_trace_never_loses_a_parent_it_holds(
    tree: Tree, policy: CompactionPolicy, data: st.DataObject
) -> None:
    # A store compacts before the trace is complete: only the spans ended so far.
    ended = tree.spans[: data.draw(st.integers(1, len(tree.spans)))]

    kept = compact_spans(ended, policy)

    given_ids = {span.context.span_id for span in ended}
    kept_ids = {span.context.span_id for span in kept}
    for span in kept:
        if span.parent is not None and span.parent.span_id in given_ids:
            assert span.parent.span_id in kept_ids


@FAST
@given(trees(), policies())
def test_composite_counts_plus_single_spans_equal_the_spans_that_came_in(
    tree: Tree, policy: CompactionPolicy
) -> None:
    kept = compact_spans(tree.spans, policy)

    composites = _made_here(kept, tree.spans)
    singles = len(kept) - len(composites)
    assert singles + sum(composite_count(span) for span in composites) == len(tree.spans)


@FAST
@given(trees(), policies())
def test_every_span_is_kept_or_merged_into_a_kept_composite(
    tree: Tree, policy: CompactionPolicy
) -> None:
    # Naive pipelines drop whole messages; here every span id is accounted for.
    records = records_of(tree.spans)

    result = compact_records(records, policy)

    kept_ids = {record[0] for record in result.records}
    singles = {record[0] for record in result.records if any(record is r for r in records)}
    assert set(result.merged).isdisjoint(kept_ids)
    assert singles | set(result.merged) | (kept_ids - singles) == {r[0] for r in records}
    assert set(result.merged.values()) <= kept_ids - singles
    assert result.merged_away == len(records) - len(result.records) == len(result.merged)


@FAST
@given(trees(), policies())
def test_count_and_total_duration_per_operation_name_are_exactly_preserved(
    tree: Tree, policy: CompactionPolicy
) -> None:
    kept = compact_spans(tree.spans, policy)

    assert operation_totals(kept) == operation_totals(tree.spans)


@FAST
@given(trees(), policies())
def test_error_protected_root_and_parent_spans_are_kept_unchanged(
    tree: Tree, policy: CompactionPolicy
) -> None:
    parent_ids = {span.parent.span_id for span in tree.spans if span.parent is not None}
    must_keep = [
        span
        for span in tree.spans
        if span.status.status_code is StatusCode.ERROR
        or span.name.startswith(("otel_bounded.", *policy.protected_prefixes))
        or span.parent is None
        or span.parent.is_remote
        or span.events
        or span.links
        or span.context.span_id in parent_ids
    ]

    kept = compact_spans(tree.spans, policy)

    kept_objects = {id(span) for span in kept}
    for span in must_keep:
        assert id(span) in kept_objects, f"{span.name} was merged"
    for span in kept:
        if span.status.status_code is StatusCode.ERROR:
            assert span.status.description == "boom"


@FAST
@given(trees(), policies())
def test_output_encodes_with_the_otlp_span_encoder(tree: Tree, policy: CompactionPolicy) -> None:
    kept = compact_spans(tree.spans, policy)

    request = encode_spans(kept)

    encoded = [
        span
        for resource_spans in request.resource_spans
        for scope_spans in resource_spans.scope_spans
        for span in scope_spans.spans
    ]
    assert len(encoded) == len(kept)
    assert request.SerializeToString()


@FAST
@given(trees(), policies())
def test_compaction_is_deterministic(tree: Tree, policy: CompactionPolicy) -> None:
    first = encode_spans(compact_spans(tree.spans, policy))
    second = encode_spans(compact_spans(tree.spans, policy))

    assert first.SerializeToString(deterministic=True) == second.SerializeToString(
        deterministic=True
    )


@FAST
@given(trees(), policies(), st.randoms(use_true_random=False))
def test_the_order_records_arrive_in_does_not_change_what_is_kept(
    tree: Tree, policy: CompactionPolicy, shuffler: random.Random
) -> None:
    records = records_of(tree.spans)
    shuffled = list(records)
    shuffler.shuffle(shuffled)

    in_order = compact_records(records, policy)
    reordered = compact_records(shuffled, policy)

    assert _by_start(in_order.records) == _by_start(reordered.records)
    assert in_order.merged == reordered.merged


@FAST
@given(trees(), policies())
def test_compacting_twice_equals_compacting_once(tree: Tree, policy: CompactionPolicy) -> None:
    once = compact_records(records_of(tree.spans), policy)

    twice = compact_records(once.records, policy)

    assert twice.merged == {}
    assert all(a is b for a, b in zip(twice.records, once.records, strict=True))


@FAST
@given(trees(), policies())
def test_compact_spans_twice_keeps_the_first_output_as_it_is(
    tree: Tree, policy: CompactionPolicy
) -> None:
    once = compact_spans(tree.spans, policy)

    twice = compact_spans(once, policy)

    assert len(twice) == len(once)
    assert all(a is b for a, b in zip(twice, once, strict=True))


def _absorbing_policies() -> st.SearchStrategy[CompactionPolicy]:
    # A same-kind threshold under the exact one can split runs differently when
    # spans come in pieces (see test_compaction.py); totals hold either way.
    return policies().filter(
        lambda policy: (
            policy.same_kind_max_duration_ms == 0
            or policy.same_kind_max_duration_ms >= policy.exact_match_max_duration_ms
        )
    )


@FAST
@given(trees(sequential=True), _absorbing_policies(), st.data())
def test_compacting_once_then_absorbing_later_spans_equals_compacting_all_at_once(
    tree: Tree, policy: CompactionPolicy, data: st.DataObject
) -> None:
    # Synchronous code: children end before their parent, siblings one after another.
    records = records_of(tree.spans)
    split = data.draw(st.integers(0, len(records)))
    earlier, later = records[:split], records[split:]

    first = compact_records(earlier, policy)
    absorbed = compact_records(first.records + later, policy)
    together = compact_records(records, policy)

    assert _by_start(absorbed.records) == _by_start(together.records)
    chained = {member: absorbed.merged.get(into, into) for member, into in first.merged.items()}
    assert {**chained, **absorbed.merged} == together.merged


@FAST
@given(trees(sequential=True), _absorbing_policies(), st.integers(1, 8))
def test_compacting_every_n_spans_as_a_store_does_equals_compacting_at_the_end(
    tree: Tree, policy: CompactionPolicy, every: int
) -> None:
    records = records_of(tree.spans)
    held: list[Record] = []
    merged: dict[int, int] = {}
    for position, record in enumerate(records, 1):
        held.append(record)
        if position % every == 0 or position == len(records):
            reparent(held, merged)
            result = compact_records(held, policy)
            merged = {member: result.merged.get(into, into) for member, into in merged.items()}
            merged.update(result.merged)
            held = result.records

    assert _by_start(held) == _by_start(compact_records(records, policy).records)
