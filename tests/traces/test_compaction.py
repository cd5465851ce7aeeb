"""Compaction, case by case: what merges, what never does, and what a composite carries."""

from __future__ import annotations

import json
import logging
import math
from typing import Any

import pytest
from opentelemetry import trace as trace_api
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
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
from otel_bounded.traces.compaction import (
    COMPOSITE_MARKS,
    DEFAULT_IDENTITY_KEYS,
    DEFAULT_SAME_KIND_KEYS,
    EXACT_MATCH,
    SAME_KIND,
    CompactionPolicy,
    compact_records,
    compact_spans,
    operation_totals,
    reparent,
)
from otel_bounded.traces.records import Record, SpanEncoder, decode
from tests.traces.test_compaction_support import (
    MS,
    T0,
    TRACE_ID,
    TraceBuilder,
    calls,
    composite_count,
    is_composite,
    records_of,
)

SAME_KIND_ON = CompactionPolicy(same_kind_max_duration_ms=50)


def by_name(spans: list[ReadableSpan]) -> dict[str, ReadableSpan]:
    named = {span.name: span for span in spans}
    assert len(named) == len(spans), "names are not unique"
    return named


def attributes(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


# -- exact match -----------------------------------------------------------------


def test_a_run_of_identical_fast_calls_becomes_one_composite_with_exact_statistics() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index, duration in enumerate((5, 2, 1, 4, 3, 7)):
        builder.span(
            "SELECT",
            root,
            start_ms=10 * (index + 1),
            duration_ms=duration,
            kind=SpanKind.CLIENT,
            attributes={"db.system": "postgresql", "row": index},
        )
    spans = builder.finish()
    first_member = spans[1]

    kept = compact_spans(spans)

    # The first and the last call stay as they are; the four between become one.
    assert kept[0] is spans[0]
    assert kept[2] is spans[5]
    composite = kept[1]
    assert len(kept) == 4
    assert attributes(composite) == {
        "db.system": "postgresql",
        COMPOSITE_COUNT: 4,
        COMPOSITE_DURATION_SUM_NS: 10 * MS,
        COMPOSITE_MIN_NS: 1 * MS,
        COMPOSITE_MAX_NS: 4 * MS,
        COMPOSITE_STRATEGY: EXACT_MATCH,
        # The row differed in every member: said, never shown as the first member's.
        COMPOSITE_VARIED_KEYS: ("row",),
        COMPOSITE_VARIED_DISTINCT: (4,),
        COMPOSITE_VARIED_DISTINCT_EXACT: (True,),
        COMPOSITE_VARIED_SAMPLES: ("[1,2,3,4]",),
    }
    assert composite.context.span_id == first_member.context.span_id
    assert composite.parent == first_member.parent
    assert composite.kind is SpanKind.CLIENT
    assert composite.start_time == T0 + 20 * MS
    assert composite.end_time == T0 + 53 * MS
    assert composite.resource == first_member.resource
    assert composite.instrumentation_scope == first_member.instrumentation_scope


def test_a_composite_ends_at_the_latest_end_of_its_members_not_the_last_started() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    builder.span("fetch", root, start_ms=1, duration_ms=1)
    builder.span("fetch", root, start_ms=2, duration_ms=30)  # overlaps the next one
    builder.span("fetch", root, start_ms=3, duration_ms=5)
    builder.span("fetch", root, start_ms=40, duration_ms=1)
    spans = builder.finish()

    (composite,) = [span for span in compact_spans(spans) if is_composite(span)]

    assert composite.start_time == T0 + 2 * MS
    assert composite.end_time == T0 + 32 * MS


def test_siblings_are_ordered_by_start_time_not_by_the_order_they_ended() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    builder.span("fetch", root, start_ms=1, duration_ms=20)  # ends last
    builder.span("parse", root, start_ms=5, duration_ms=1)
    builder.span("fetch", root, start_ms=10, duration_ms=1)
    spans = builder.finish()
    assert [span.name for span in spans] == ["parse", "fetch", "fetch", "root"]

    kept = compact_spans(spans)

    # Ordered by start, the two fetches are not adjacent: parse started between them.
    assert kept == spans


def test_a_run_shorter_than_min_run_is_kept_as_it_is() -> None:
    spans = calls(5)  # three between the first and the last

    kept = compact_spans(spans, CompactionPolicy(min_run=4))

    assert kept == spans


def test_a_run_reaching_min_run_is_merged() -> None:
    kept = compact_spans(calls(6), CompactionPolicy(min_run=4))

    assert [composite_count(span) for span in kept if is_composite(span)] == [4]


def test_a_span_exactly_at_the_threshold_merges_and_one_nanosecond_longer_does_not() -> None:
    at_limit = calls(4, duration_ms=50)
    over_limit = calls(4, duration_ms=50.000001)

    assert len(compact_spans(at_limit)) == 4
    assert compact_spans(over_limit) == over_limit


def test_a_slow_call_splits_a_run_in_two() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index, duration in enumerate((1, 1, 1, 80, 1, 1, 1)):
        builder.span("SELECT", root, start_ms=100 * index + 1, duration_ms=duration)
    spans = builder.finish()

    kept = compact_spans(spans)

    assert [composite_count(s) if is_composite(s) else 1 for s in kept] == [1, 2, 1, 2, 1, 1]


def test_the_first_and_the_last_occurrence_of_an_operation_stay_as_they_are() -> None:
    spans = calls(3, attributes={"db.system": "postgresql"})

    assert compact_spans(spans) == spans
    kept = compact_spans(calls(4, attributes={"db.system": "postgresql"}))
    assert [composite_count(s) if is_composite(s) else 1 for s in kept] == [1, 2, 1, 1]


def test_the_same_keys_set_in_another_order_still_match() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    builder.span("SELECT", root, start_ms=1, attributes={"db.system": "postgresql", "row": 0})
    builder.span("SELECT", root, start_ms=3, attributes={"db.system": "postgresql", "row": 1})
    builder.span("SELECT", root, start_ms=5, attributes={"row": 2, "db.system": "postgresql"})
    builder.span("SELECT", root, start_ms=7, attributes={"db.system": "postgresql", "row": 3})

    kept = compact_spans(builder.finish())

    assert [composite_count(span) for span in kept if is_composite(span)] == [2]


def test_members_share_their_status_code_ok_and_unset_never_merge() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    ok = Status(StatusCode.OK)
    for index, status in enumerate((None, None, None, ok, ok, None)):
        builder.span("SELECT", root, start_ms=2 * index + 1, status=status)
    spans = builder.finish()

    kept = compact_spans(spans)

    composites = [span for span in kept if is_composite(span)]
    assert [(s.status.status_code, composite_count(s)) for s in composites] == [
        (StatusCode.UNSET, 2),
        (StatusCode.OK, 2),
    ]


def test_kept_records_stay_in_input_order_with_each_composite_where_its_last_member_was() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    builder.span("late", root, start_ms=0.5, duration_ms=500)
    builder.span("other", root, start_ms=1, duration_ms=4.5)  # ends between two members
    for start in (2, 4, 6, 8):
        builder.span("SELECT", root, start_ms=start)
    spans = builder.finish()
    names = ["SELECT", "SELECT", "other", "SELECT", "SELECT", "late", "root"]
    assert [span.name for span in spans] == names

    result = compact_records(records_of(spans), CompactionPolicy())

    assert [record[5] for record in result.records] == [
        "SELECT",
        "other",
        "SELECT",
        "SELECT",
        "late",
        "root",
    ]
    assert result.records[2][4] & COMPOSITE_MARKS


# -- absorbing into composites of an earlier pass ----------------------------------


def test_an_earlier_composite_absorbs_new_members_judged_by_their_durations() -> None:
    # Ten 40 ms calls: the composite spans over 300 ms, each member took 40 ms.
    records = records_of(calls(11, duration_ms=40, attributes={"db.system": "postgresql"}))
    root, calls_ = records[-1], records[:-1]
    first = compact_records(calls_[:10], CompactionPolicy())
    (_, composite, _) = first.records
    start, end = composite[2], composite[3]
    assert start is not None
    assert end is not None
    assert end - start > 300 * MS

    second = compact_records([*first.records, *calls_[10:], root], CompactionPolicy())

    # The old last call is no longer the last: it joins the composite.
    (_, absorbed, newest, kept_root) = second.records
    assert kept_root is root
    assert newest is calls_[10]
    values = dict(zip(absorbed[6], absorbed[7], strict=True))
    assert values[COMPOSITE_COUNT] == 9
    assert values[COMPOSITE_DURATION_SUM_NS] == 9 * 40 * MS
    assert values[COMPOSITE_MAX_NS] == 40 * MS
    assert second.merged == {calls_[9][0]: composite[0]}


def test_an_earlier_composite_does_not_absorb_a_member_over_the_threshold() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index, duration in enumerate((1, 1, 1, 60, 1)):
        builder.span("SELECT", root, start_ms=100 * index + 1, duration_ms=duration)
    records = records_of(builder.finish())
    first = compact_records(records[:4], CompactionPolicy())
    assert first.merged == {records[2][0]: records[1][0]}

    second = compact_records([*first.records, *records[4:]], CompactionPolicy())

    assert second.merged == {}
    assert second.records[2:] == records[3:]


def test_a_composite_whose_sample_was_truncated_absorbs_no_unseen_value() -> None:
    # Twelve calls, a row id each: ten merge, their distinct rows counted exactly (10),
    # eight shown. A later row may or may not be among the two not shown, so it is
    # not absorbed: the count would stop being exact.
    records = records_of(calls(13))
    root, calls_ = records[-1], records[:-1]
    first = compact_records(calls_[:12], CompactionPolicy())
    (_, composite, _) = first.records
    values = dict(zip(composite[6], composite[7], strict=True))
    assert values[COMPOSITE_VARIED_DISTINCT] == (10,)
    assert len(json.loads(values[COMPOSITE_VARIED_SAMPLES][0])) == 8

    second = compact_records([*first.records, calls_[12], root], CompactionPolicy())

    assert composite[0] not in second.merged.values()
    assert composite in second.records


def test_under_pressure_a_truncated_composite_absorbs_with_a_count_flagged_as_a_lower_bound() -> (
    None
):
    records = records_of(calls(13))
    root, calls_ = records[-1], records[:-1]
    first = compact_records(calls_[:12], CompactionPolicy())

    second = compact_records(
        [*first.records, calls_[12], root], CompactionPolicy(), exact_counts=False
    )

    (_, absorbed, _, _) = second.records
    values = dict(zip(absorbed[6], absorbed[7], strict=True))
    assert values[COMPOSITE_COUNT] == 11
    # 11 distinct rows in truth; what is known: at least 10, at most 11 (the count).
    assert values[COMPOSITE_VARIED_DISTINCT] == (10,)
    assert values[COMPOSITE_VARIED_DISTINCT_EXACT] == (False,)


# -- same kind -------------------------------------------------------------------


def test_same_kind_merging_is_off_by_default() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index, name in enumerate(("SELECT", "INSERT", "SELECT", "UPDATE")):
        builder.span(name, root, start_ms=2 * index + 1, attributes={"db.system": "postgresql"})
    spans = builder.finish()

    assert CompactionPolicy().same_kind_max_duration_ms == 0
    assert compact_spans(spans) == spans


def test_same_kind_siblings_merge_with_exact_per_name_counts_sums_minimums_and_maximums() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    steps = (("GET", 1), ("SET", 2), ("GET", 3), ("SET", 4), ("GET", 5), ("SET", 6))
    for index, (name, duration) in enumerate((*steps, ("GET", 7), ("SET", 8))):
        builder.span(
            name,
            root,
            start_ms=20 * index + 1,
            duration_ms=duration,
            kind=SpanKind.CLIENT,
            attributes={"db.system": "redis", "server.address": "cache1", "row": index},
        )
    spans = builder.finish()

    kept = compact_spans(spans, SAME_KIND_ON)

    composite = by_name([s for s in kept if is_composite(s)])["db.system=redis"]
    assert attributes(composite) == {
        "db.system": "redis",
        "server.address": "cache1",
        COMPOSITE_COUNT: 4,
        COMPOSITE_DURATION_SUM_NS: 18 * MS,
        COMPOSITE_MIN_NS: 3 * MS,
        COMPOSITE_MAX_NS: 6 * MS,
        COMPOSITE_STRATEGY: SAME_KIND,
        COMPOSITE_VARIED_KEYS: ("row",),
        COMPOSITE_VARIED_DISTINCT: (4,),
        COMPOSITE_VARIED_DISTINCT_EXACT: (True,),
        COMPOSITE_VARIED_SAMPLES: ("[2,3,4,5]",),
        COMPOSITE_NAMES: ("GET", "SET"),
        COMPOSITE_COUNTS: (2, 2),
        COMPOSITE_DURATION_SUMS_NS: (8 * MS, 10 * MS),
        COMPOSITE_MINS_NS: (3 * MS, 4 * MS),
        COMPOSITE_MAXES_NS: (5 * MS, 6 * MS),
    }
    assert composite.kind is SpanKind.CLIENT
    assert composite.context.span_id == spans[2].context.span_id
    assert operation_totals(kept) == operation_totals(spans)


def _alternating(attributes_of: Any, names: tuple[str, str] = ("a", "b")) -> list[ReadableSpan]:
    """a, b, a, b, a, b: the middle a and b are neither first nor last of their name."""
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index in range(6):
        builder.span(
            names[index % 2], root, start_ms=2 * index + 1, attributes=attributes_of(index)
        )
    return builder.finish()


def test_a_same_kind_composite_shows_what_every_member_shares_and_declares_what_varied() -> None:
    spans = _alternating(
        lambda index: (
            {"db.system": "mysql", "shared": "x", "secret.row": index}
            | ({"only.some": True} if index == 2 else {})
        )
    )

    (composite,) = [s for s in compact_spans(spans, SAME_KIND_ON) if is_composite(s)]

    shown = attributes(composite)
    assert {k: v for k, v in shown.items() if "composite" not in k} == {
        "db.system": "mysql",
        "shared": "x",
    }
    assert shown[COMPOSITE_VARIED_KEYS] == ("secret.row", "only.some")
    assert shown[COMPOSITE_VARIED_DISTINCT] == (2, 2)
    assert shown[COMPOSITE_VARIED_DISTINCT_EXACT] == (True, True)
    # A member lacking a key is one more value, shown as null.
    assert shown[COMPOSITE_VARIED_SAMPLES] == ("[2,3]", "[true,null]")


def test_same_kind_never_merges_spans_differing_in_an_identity_key() -> None:
    spans = _alternating(lambda index: {"db.system": "mysql", "server.address": f"db{index % 4}"})

    assert compact_spans(spans, SAME_KIND_ON) == spans


def test_same_kind_groups_by_the_first_key_attribute_present() -> None:
    spans = _alternating(lambda index: {"server.address": "api", "rpc.system": "grpc"})
    assert DEFAULT_SAME_KIND_KEYS.index("rpc.system") < DEFAULT_SAME_KIND_KEYS.index(
        "server.address"
    )

    kept = compact_spans(spans, SAME_KIND_ON)

    assert [span.name for span in kept] == ["a", "b", "rpc.system=grpc", "a", "b", "root"]


def test_same_kind_never_joins_different_kinds_or_different_targets() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    builder.span("q", root, start_ms=1, kind=SpanKind.CLIENT, attributes={"db.system": "mysql"})
    builder.span("q", root, start_ms=3, kind=SpanKind.SERVER, attributes={"db.system": "mysql"})
    builder.span("r", root, start_ms=5, kind=SpanKind.SERVER, attributes={"db.system": "redis"})
    builder.span("s", root, start_ms=7, kind=SpanKind.SERVER, attributes={"server.address": 1})
    builder.span("t", root, start_ms=9, kind=SpanKind.SERVER, attributes={"server.address": True})
    spans = builder.finish()

    assert compact_spans(spans, SAME_KIND_ON) == spans


def test_exact_composites_then_join_a_same_kind_composite_with_their_counts() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    names = ("GET", "SET", "GET", "GET", "GET", "SET", "SET", "SET", "GET", "SET")
    for index, name in enumerate(names):
        builder.span(name, root, start_ms=2 * index + 1, attributes={"db.system": "redis"})
    spans = builder.finish()
    records = records_of(spans)

    result = compact_records(records, SAME_KIND_ON)

    (_, _, composite, _, _, _root) = result.records
    values = dict(zip(composite[6], composite[7], strict=True))
    assert values[COMPOSITE_NAMES] == ("GET", "SET")
    assert values[COMPOSITE_COUNTS] == (3, 3)
    # Members of the intermediate SET composite point at the final composite.
    assert result.merged == {record[0]: records[2][0] for record in records[3:8]}


# -- never merged ----------------------------------------------------------------


def _run_around(middle: dict[str, Any], policy: CompactionPolicy | None = None) -> list[int]:
    """A call, two identical fast calls, the span described by `middle`, two more and a last
    call: how many spans each kept span stands for, in start order."""
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index in range(7):
        options: dict[str, Any] = {"start_ms": 2 * index + 1, "attributes": {"row": index}}
        if index == 3:
            options.update(middle)
            middle_id = builder.span(options.pop("name", "SELECT"), root, **options).context
        else:
            builder.span("SELECT", root, **options)
    spans = builder.finish()

    kept = compact_spans(spans, policy)

    assert operation_totals(kept) == operation_totals(spans)
    (kept_middle,) = [span for span in kept if span.context.span_id == middle_id.span_id]
    assert any(kept_middle is span for span in spans), "the middle span was merged"
    made = [span for span in kept if not any(span is given for given in spans)]
    kept.sort(key=lambda span: span.start_time or 0)
    return [composite_count(span) if span in made else 1 for span in kept]


@pytest.mark.parametrize(
    "middle",
    [
        pytest.param({"status": Status(StatusCode.ERROR, "boom")}, id="error"),
        pytest.param({"event": True}, id="event"),
        pytest.param({"link": True}, id="link"),
        pytest.param({"name": "otel_bounded.token.verify"}, id="protected-name"),
        pytest.param({"duration_ms": 51}, id="too-slow"),
        pytest.param({"kind": SpanKind.CLIENT}, id="other-kind"),
        pytest.param({"attributes": {"row": 2, "extra": 1}}, id="other-keys"),
        pytest.param({"attributes": {"row": 2, "db.system": "mysql"}}, id="other-target"),
    ],
)
def test_a_span_that_must_not_merge_is_kept_and_splits_the_run(middle: dict[str, Any]) -> None:
    # The root, the first call, two calls, the middle span, two calls, the last call.
    assert _run_around(middle) == [1, 1, 2, 1, 2, 1]


def test_an_error_span_is_kept_verbatim_with_its_description() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index in range(3):
        builder.span("SELECT", root, start_ms=2 * index + 1, status=Status(StatusCode.ERROR, "x"))
    spans = builder.finish()

    kept = compact_spans(spans)

    assert kept == spans
    assert all(span.status.description == "x" for span in kept[:3])


def test_a_parent_is_never_merged_even_with_identical_fast_siblings() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    spans_ = [builder.span("step", root, start_ms=10 * index + 1) for index in range(3)]
    builder.span("inner", spans_[1], start_ms=11.5, duration_ms=0.1)
    spans = builder.finish()

    kept = compact_spans(spans)

    assert kept == spans


def test_roots_and_local_roots_are_never_merged() -> None:
    builder = TraceBuilder()
    for index in range(3):
        builder.span("handler", start_ms=2 * index, remote_parent=True)
    builder.span("root")
    builder.span("root", start_ms=5)
    spans = builder.finish()

    assert compact_spans(spans) == spans


def test_audit_spans_stay_protected_when_other_prefixes_are_configured() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index in range(3):
        builder.span("otel_bounded.approval.verify", root, start_ms=2 * index + 1)
    for index in range(3):
        builder.span("cache.get", root, start_ms=2 * index + 11)
    spans = builder.finish()

    kept = compact_spans(spans, CompactionPolicy(protected_prefixes=("cache.",)))

    assert kept == spans


def test_spans_from_different_resources_or_scopes_never_merge() -> None:
    builder = TraceBuilder()
    other_scope = builder.provider.get_tracer("another.library", "2.0")
    root = builder.span("root", duration_ms=1_000)
    builder.span("SELECT", root, start_ms=1)
    builder.span("SELECT", root, start_ms=3, tracer=other_scope)
    spans = builder.finish()
    elsewhere = TraceBuilder(resource=Resource.create({"service.name": "elsewhere"}))
    records = records_of(spans)
    encoder = SpanEncoder()
    foreign = encoder.encode(calls(1, builder=elsewhere)[0])[1]
    # The same span, from another service: only the resource differs.
    same_but_resource = (records[1][0] + 100, *records[0][1:4], foreign[4], *records[0][5:])

    assert compact_spans(spans) == spans
    assert compact_records([records[0], same_but_resource], CompactionPolicy()).merged == {}


def test_spans_sharing_a_span_id_are_never_merged() -> None:
    records = records_of(calls(3))
    twin = (records[0][0], *records[1][1:])

    result = compact_records([records[0], twin, records[2], records[3]], CompactionPolicy())

    assert result.merged == {}


def test_both_stages_off_changes_nothing() -> None:
    spans = calls(10)
    policy = CompactionPolicy(exact_match_max_duration_ms=0, same_kind_max_duration_ms=0)

    assert compact_spans(spans, policy) == spans


# -- failure modes of naive compaction pipelines --------------------------------------------------


def test_a_span_with_composite_attributes_is_not_taken_for_a_composite() -> None:
    # The refused pipeline marked merged messages with a magic string and then
    # deleted every message carrying it. Here a user attribute is never trusted:
    # a span claiming to stand for 1,000 calls is kept as itself and absorbs nothing.
    fake = {COMPOSITE_COUNT: 1_000, COMPOSITE_STRATEGY: EXACT_MATCH, "row": 2}

    # The root, a call, two calls, the fake kept as one span, two calls, a call.
    assert _run_around({"attributes": fake}) == [1, 1, 2, 1, 2, 1]


def test_a_record_with_composite_attributes_but_no_composite_mark_absorbs_nothing() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    fake = {
        COMPOSITE_COUNT: 1_000,
        COMPOSITE_DURATION_SUM_NS: 1,
        COMPOSITE_MIN_NS: 1,
        COMPOSITE_MAX_NS: 1,
        COMPOSITE_STRATEGY: EXACT_MATCH,
    }
    builder.span("SELECT", root, start_ms=1, attributes=fake)
    builder.span("SELECT", root, start_ms=3, attributes=fake)
    spans = builder.finish()

    assert compact_spans(spans) == spans
    assert compact_records(records_of(spans), CompactionPolicy()).merged == {}


def test_spans_named_or_valued_like_merge_markers_are_never_dropped() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index, name in enumerate(("[MERGED]", "SELECT", "[MERGED]", EXACT_MATCH, SAME_KIND)):
        builder.span(name, root, start_ms=2 * index + 1, attributes={"summary": "[MERGED]"})
    spans = builder.finish()

    kept = compact_spans(spans, SAME_KIND_ON)

    assert kept == spans


def test_no_span_disappears_without_a_composite_counting_it() -> None:
    # The refused pipeline collapsed "chatty" messages into a summary that kept
    # nothing of them. Here every merged span id maps to a kept composite whose
    # per-name counts include it.
    spans = calls(6, attributes={"db.system": "postgresql"})
    builder = TraceBuilder()
    mixed_root = builder.span("root", duration_ms=1_000)
    for index, name in enumerate(("GET", "GET", "SET", "GET")):
        builder.span(name, mixed_root, start_ms=2 * index + 1, attributes={"db.system": "redis"})
    for given, policy in ((spans, CompactionPolicy()), (builder.finish(), SAME_KIND_ON)):
        records = records_of(given)

        result = compact_records(records, policy)

        kept = {record[0]: record for record in result.records}
        for record in records:
            if record[0] not in kept:
                composite = kept[result.merged[record[0]]]
                values = dict(zip(composite[6], composite[7], strict=True))
                assert record[5] in values.get(COMPOSITE_NAMES, (composite[5],))
        assert operation_totals(
            [decode(TRACE_ID, record, _encoder_for(given)) for record in result.records]
        ) == operation_totals(given)


def _encoder_for(spans: list[ReadableSpan]) -> SpanEncoder:
    encoder = SpanEncoder()
    for span in spans:
        encoder.encode(span)
    return encoder


# -- late children ---------------------------------------------------------------


def test_a_child_that_ends_after_its_parent_was_merged_is_reparented_to_the_composite() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    steps = [builder.span("step", root, start_ms=2 * index + 1) for index in range(5)]
    builder.span("async-callback", steps[2], start_ms=6, duration_ms=500)
    spans = builder.finish()
    records = records_of(spans)
    ended_before_child = [r for r in records if r[5] == "step"]
    late_child = next(r for r in records if r[5] == "async-callback")
    result = compact_records(ended_before_child, CompactionPolicy())
    (_, composite, _) = result.records
    assert result.merged == {records[2][0]: composite[0], records[3][0]: composite[0]}

    held = [*result.records, late_child]
    reparent(held, result.merged)

    assert held[3][1] == composite[0]
    assert held[3][2:] == late_child[2:]
    assert compact_records(held, CompactionPolicy()).merged == {}, "a parent is never merged"


def test_reparent_follows_a_member_through_two_passes() -> None:
    records: list[Record] = records_of(calls(1))
    child = (99, 3, *records[0][2:])

    held = [child]
    reparent(held, {3: 2, 2: 1})

    assert held[0][1] == 1


def test_reparent_leaves_other_records_as_the_same_objects() -> None:
    records = records_of(calls(3))
    held = list(records)

    reparent(held, {12345: 1})

    assert all(a is b for a, b in zip(held, records, strict=True))


# -- compact_spans and operation_totals ------------------------------------------


def test_compact_spans_returns_kept_spans_as_the_same_objects() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index in range(4):
        builder.span("SELECT", root, start_ms=2 * index + 1)
    builder.span("GET", root, start_ms=9)
    spans = builder.finish()

    kept = compact_spans(spans)

    assert kept[0] is spans[0]
    assert is_composite(kept[1])
    assert kept[2:] == spans[3:]
    assert all(a is b for a, b in zip(kept[2:], spans[3:], strict=True))


def test_compact_spans_of_no_spans_is_empty() -> None:
    assert compact_spans([]) == []
    assert compact_spans(iter(())) == []


def test_compact_spans_refuses_spans_of_two_traces() -> None:
    first = calls(1)
    other = TraceBuilder()
    other_root = other.span("root")
    other.provider.id_generator.generate_trace_id = lambda: TRACE_ID + 1  # type: ignore[method-assign]
    second = other.tracer.start_span("other-trace")
    second.end()
    other_root.end()

    with pytest.raises(ValueError, match="one trace"):
        compact_spans([*first, *other.exporter.get_finished_spans()])


def test_compact_spans_refuses_what_is_not_a_span_or_a_policy() -> None:
    with pytest.raises(ValueError, match="ReadableSpan"):
        compact_spans(["not a span"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match="CompactionPolicy"):
        compact_spans(calls(1), policy={"min_run": 2})  # type: ignore[arg-type]


def test_composite_output_encodes_with_the_otlp_span_encoder() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index, name in enumerate(("GET", "SET", "GET", "GET", "SET", "GET", "SET")):
        builder.span(name, root, start_ms=2 * index + 1, attributes={"db.system": "redis"})

    kept = compact_spans(builder.finish(), SAME_KIND_ON)

    request = encode_spans(kept)
    encoded = request.resource_spans[0].scope_spans[0].spans
    (encoded_composite,) = [span for span in encoded if span.name == "db.system=redis"]
    values = {attribute.key: attribute.value for attribute in encoded_composite.attributes}
    assert [v.string_value for v in values[COMPOSITE_NAMES].array_value.values] == ["GET", "SET"]
    assert [v.int_value for v in values[COMPOSITE_COUNTS].array_value.values] == [2, 1]
    assert list(values[COMPOSITE_VARIED_KEYS].array_value.values) == []


def test_operation_totals_counts_composites_by_their_members() -> None:
    spans = calls(5, duration_ms=2)

    before = operation_totals(spans)
    after = operation_totals(compact_spans(spans))

    assert before["SELECT"] == (5, 10 * MS)
    assert after == before


def test_operation_totals_reads_malformed_composite_attributes_as_a_plain_span() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    builder.span(
        "odd",
        root,
        start_ms=1,
        duration_ms=3,
        attributes={COMPOSITE_STRATEGY: SAME_KIND, COMPOSITE_NAMES: ("a", "b")},
    )

    assert operation_totals(builder.finish())["odd"] == (1, 3 * MS)


# -- policy ----------------------------------------------------------------------


def test_default_policy_values() -> None:
    policy = CompactionPolicy()

    assert policy.exact_match_max_duration_ms == 50.0
    assert policy.same_kind_max_duration_ms == 0.0
    assert policy.min_run == 2
    assert policy.compact_at_spans == 64
    assert policy.protected_prefixes == ("otel_bounded.",)
    assert policy.same_kind_keys == DEFAULT_SAME_KIND_KEYS
    assert policy.identity_keys == DEFAULT_IDENTITY_KEYS
    assert policy.max_varied_samples == 8
    assert policy.max_remembered_ids == 1_000_000
    assert policy == CompactionPolicy()


def test_the_default_identity_keys_cover_the_operations_an_agent_performs() -> None:
    required = {
        "gen_ai.operation.name",
        "gen_ai.tool.name",
        "db.statement",
        "db.query.text",
        "db.operation.name",
        "http.request.method",
        "http.route",
        "url.full",
        "url.path",
        "rpc.method",
        "code.function.name",
        "file.path",
        "messaging.destination.name",
        "server.address",
    }

    assert required <= set(DEFAULT_IDENTITY_KEYS)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"exact_match_max_duration_ms": -1}, "exact_match_max_duration_ms must be a finite"),
        ({"exact_match_max_duration_ms": math.nan}, "exact_match_max_duration_ms must be a fin"),
        ({"same_kind_max_duration_ms": math.inf}, "same_kind_max_duration_ms must be a finite"),
        ({"same_kind_max_duration_ms": "5"}, "same_kind_max_duration_ms must be a number"),
        ({"exact_match_max_duration_ms": True}, "exact_match_max_duration_ms must be a number"),
        ({"min_run": 1}, "min_run must be an integer of at least 2"),
        ({"min_run": 2.5}, "min_run must be an integer"),
        ({"min_run": True}, "min_run must be an integer"),
        ({"compact_at_spans": 0}, "compact_at_spans must be an integer of at least 1"),
        ({"compact_at_spans": None}, "compact_at_spans must be an integer"),
        ({"protected_prefixes": "otel_bounded."}, "protected_prefixes must be a tuple"),
        ({"protected_prefixes": ("",)}, "protected_prefixes must hold non-empty strings"),
        ({"protected_prefixes": (1,)}, "protected_prefixes must hold non-empty strings"),
        ({"same_kind_keys": None}, "same_kind_keys must be a tuple"),
        ({"same_kind_keys": ("otel_bounded.x",)}, "same_kind_keys must name attributes"),
        ({"identity_keys": "gen_ai.tool.name"}, "identity_keys must be a tuple"),
        ({"identity_keys": ("otel_bounded.x",)}, "identity_keys must name attributes"),
        ({"max_varied_samples": -1}, "max_varied_samples must be an integer of at least 0"),
        ({"max_varied_samples": 1.5}, "max_varied_samples must be an integer"),
        ({"max_remembered_ids": -1}, "max_remembered_ids must be an integer of at least 0"),
        ({"max_remembered_ids": False}, "max_remembered_ids must be an integer"),
    ],
)
def test_invalid_policy_values_are_refused_with_a_clear_message(
    arguments: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        CompactionPolicy(**arguments)


def test_a_list_of_prefixes_is_accepted_as_a_tuple() -> None:
    policy = CompactionPolicy(protected_prefixes=["audit."])  # type: ignore[arg-type]

    assert policy.protected_prefixes == ("audit.",)
    assert hash(policy) == hash(CompactionPolicy(protected_prefixes=("audit.",)))


def test_fractional_milliseconds_convert_exactly_to_nanoseconds() -> None:
    spans = calls(4, duration_ms=0.3)

    assert len(compact_spans(spans, CompactionPolicy(exact_match_max_duration_ms=0.3))) == 4


def test_from_env_is_none_unless_compaction_is_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", raising=False)
    assert CompactionPolicy.from_env() is None
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", "false")
    assert CompactionPolicy.from_env(min_run=3) is None


def test_from_env_reads_every_compaction_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", "TRUE")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS", "20")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_SAME_KIND_MAX_DURATION_MS", "2.5")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_AT_SPANS", "128")

    policy = CompactionPolicy.from_env()

    assert policy == CompactionPolicy(
        exact_match_max_duration_ms=20, same_kind_max_duration_ms=2.5, compact_at_spans=128
    )


def test_from_env_arguments_win_over_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", "true")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_AT_SPANS", "128")

    policy = CompactionPolicy.from_env(compact_at_spans=16, min_run=3)

    assert policy is not None
    assert (policy.compact_at_spans, policy.min_run) == (16, 3)


def test_from_env_warns_about_an_invalid_value_and_uses_the_default(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_ENABLED", "true")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS", "-3")

    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        policy = CompactionPolicy.from_env()

    assert policy == CompactionPolicy()
    assert "OTEL_BOUNDED_TRACE_COMPACTION_EXACT_MATCH_MAX_DURATION_MS='-3' is invalid" in (
        caplog.text
    )


def test_a_count_that_cannot_stay_exact_is_a_lower_bound_never_more_than_there_were() -> None:
    # Chunks 1, 2, 0, 1, ...: three distinct values in all. Two exact passes leave two
    # composites, each showing two of its three chunks; merging them, nobody knows
    # whether their hidden values are the same: at least 3, flagged, never 6.
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    for index in range(16):
        attributes = {"db.system": "x", "chunk": index % 3}
        builder.span("SELECT", root, start_ms=2 * index + 1, attributes=attributes)
    records = records_of(builder.finish())
    policy = CompactionPolicy(max_varied_samples=2)
    first = compact_records(records[:8], policy)
    second = compact_records([*first.records, *records[8:16]], policy)
    assert [r[4] & COMPOSITE_MARKS != 0 for r in second.records] == [False, True, True, False]

    third = compact_records(second.records, policy, exact_counts=False)

    (composite,) = [r for r in third.records if r[4] & COMPOSITE_MARKS]
    values = dict(zip(composite[6], composite[7], strict=True))
    assert values[COMPOSITE_COUNT] == 14
    assert values[COMPOSITE_VARIED_KEYS] == ("chunk",)
    assert values[COMPOSITE_VARIED_DISTINCT] == (3,)
    assert values[COMPOSITE_VARIED_DISTINCT_EXACT] == (False,)
    assert len(json.loads(values[COMPOSITE_VARIED_SAMPLES][0])) == 2


def test_the_target_of_a_link_from_the_trace_stays_a_plain_span() -> None:
    builder = TraceBuilder()
    root = builder.span("root", duration_ms=1_000)
    steps = [builder.span("step", root, start_ms=2 * index + 1) for index in range(6)]
    target = steps[2].get_span_context()
    follower = builder.tracer.start_span(
        "summarize",
        context=trace_api.set_span_in_context(root),
        links=[Link(target)],
        start_time=T0 + 30 * MS,
    )
    follower.end(end_time=T0 + 31 * MS)
    builder.finish()
    spans = list(builder.exporter.get_finished_spans())

    kept = compact_spans(spans)

    assert any(span.context.span_id == target.span_id for span in kept)
    assert [composite_count(s) for s in kept if is_composite(s)] == [2]
