"""What trace compaction saves in memory and costs in time, per span.

Run: ``.venv/bin/python bench/compaction.py`` (``--quick`` for a smoke run).

Workload: one trace, a root span and 500 identical fast
calls under it, a query per row (same name, kind CLIENT, ``db.system``,
``db.statement`` and a row id that differs per call), made with
``tracer.start_as_current_span``. Compaction runs as `TraceStore` will run it
the store does: over the trace's records each time they grow by
``compact_at_spans`` (64) since the last pass, and when the local root ends.

1. Retained bytes (tracemalloc, ``gc.collect()`` before each snapshot): the
   records held for the trace without compaction and with the default policy,
   and what remembering merged span ids for late children adds: as a dict, as
   two sorted ``array('Q')`` (member, composite) and as one ``array('Q')`` of
   member ids per composite. Goal: at least 10x fewer bytes.
2. Time, in interleaved rounds (see `_harness`): replaying the trace's records
   into a holder that compacts, minus the same replay into one that only
   appends, per span; next to creating and ending a span with no processor in
   the same rounds. Also the worst case: 500 calls with distinct names, so
   every pass examines every record and merges nothing.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import tracemalloc
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import SpanKind, Tracer

from _harness import Goal, Timings, Variant, format_goals, format_table, run_interleaved
from otel_bounded.traces.compaction import CompactionPolicy, compact_records
from otel_bounded.traces.records import HAS_PARENT, PARENT_IS_REMOTE, Record, SpanEncoder

CALLS = 500
SPANS = CALLS + 1
STATEMENT = "SELECT name, email FROM users WHERE id = %s"

NO_PROCESSOR = "span created and ended, no processor"
APPEND = "records appended, no compaction"
COMPACTING = "records appended, compacted every 64"
COMPACTING_DISTINCT = "records appended, compacted every 64, nothing mergeable"
VARIANTS = (NO_PROCESSOR, APPEND, COMPACTING, COMPACTING_DISTINCT)


@dataclass(frozen=True)
class Sizes:
    rounds: int
    traces_per_loop: int
    warmup_rounds: int = 1


DEFAULT = Sizes(rounds=30, traces_per_loop=20)
QUICK = Sizes(rounds=5, traces_per_loop=4)


class TraceRecords:
    """One trace's records, compacted when `TraceStore` will compact them."""

    __slots__ = ("merged", "policy", "records", "since")

    def __init__(self, policy: CompactionPolicy | None, merged: dict[int, int] | None = None):
        self.policy = policy
        self.records: list[Record] = []
        self.since = 0
        # Where late children of merged spans would be re-parented; None: not kept.
        self.merged = merged

    def add(self, record: Record) -> None:
        self.records.append(record)
        policy = self.policy
        if policy is None:
            return
        self.since += 1
        local_root = record[4] & (HAS_PARENT | PARENT_IS_REMOTE) != HAS_PARENT
        if local_root or self.since >= policy.compact_at_spans:
            result = compact_records(self.records, policy, exact_counts=False)
            self.records = result.records
            self.since = 0
            if self.merged is not None:
                self.merged.update(result.merged)


class Recorder(SpanProcessor):
    """Encodes each ended span into `TraceRecords`, as the store does."""

    def __init__(self, records: TraceRecords) -> None:
        self.records = records
        self.encode = SpanEncoder().encode

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.records.add(self.encode(span)[1])


def run_trace(tracer: Tracer, distinct_names: bool = False) -> None:
    """A root and `CALLS` fast calls under it: the benchmark's workload."""
    start_span = tracer.start_as_current_span
    with start_span("handle_request"):
        for row in range(CALLS):
            with start_span(
                f"SELECT users {row}" if distinct_names else "SELECT users",
                kind=SpanKind.CLIENT,
                attributes={"db.system": "postgresql", "db.statement": STATEMENT, "app.row": row},
            ):
                pass


def _provider(processor: SpanProcessor | None = None) -> TracerProvider:
    provider = TracerProvider(shutdown_on_exit=False)
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def recorded_records(distinct_names: bool = False) -> list[Record]:
    """The trace's records in the order its spans ended, made once, untimed."""
    held = TraceRecords(None)
    provider = _provider(Recorder(held))
    run_trace(provider.get_tracer("bench.compaction"), distinct_names)
    provider.shutdown()
    return held.records


def replay(records: Sequence[Record], policy: CompactionPolicy | None, traces: int) -> None:
    for _ in range(traces):
        held = TraceRecords(policy)
        add = held.add
        for record in records:
            add(record)


@dataclass(frozen=True)
class Memory:
    plain: int
    compacted: int
    merged_dict: int
    merged_arrays: int
    member_arrays: int
    held_plain: int
    held_compacted: int
    merged_entries: int


def retained_bytes(policy: CompactionPolicy) -> Memory:
    """Bytes held for the trace without and with compaction, and for its merged ids.

    One trace goes through first, so the policy's caches (attribute key tuples,
    bounded and shared by every trace) are not counted against this one.
    """
    _retained(lambda: TraceRecords(policy))
    plain, plain_held = _retained(lambda: TraceRecords(None))
    compacted, compacted_held = _retained(lambda: TraceRecords(policy))
    merged: dict[int, int] = {}

    def with_merged() -> TraceRecords:
        merged.clear()
        return TraceRecords(policy, merged)

    with_dict, _ = _retained(with_merged)
    members = array("Q", sorted(merged))
    composites = array("Q", (merged[member] for member in members))
    by_composite: dict[int, array[int]] = {}
    for member, composite in merged.items():
        by_composite.setdefault(composite, array("Q")).append(member)
    return Memory(
        plain=plain,
        compacted=compacted,
        merged_dict=with_dict - compacted,
        merged_arrays=sys.getsizeof(members) + sys.getsizeof(composites),
        member_arrays=sum(sys.getsizeof(ids) for ids in by_composite.values()),
        held_plain=plain_held,
        held_compacted=compacted_held,
        merged_entries=len(merged),
    )


def _retained(make: Callable[[], TraceRecords], tries: int = 3) -> tuple[int, int]:
    """The fewest bytes retained over a few runs, and the records then held: what any
    other thread of the process allocates meanwhile (tracemalloc sees it all), or a
    call stalled past the 50 ms threshold on a loaded machine, only ever adds."""
    sizes: list[tuple[int, int]] = []
    for _ in range(tries):
        held = make()
        provider = _provider(Recorder(held))
        tracer = provider.get_tracer("bench.compaction")
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            run_trace(tracer)
            gc.collect()
            sizes.append((tracemalloc.get_traced_memory()[0] - before, len(held.records)))
        finally:
            tracemalloc.stop()
            provider.shutdown()
    return min(sizes)


@dataclass(frozen=True)
class Results:
    sizes: Sizes
    timings: Timings
    memory: Memory
    added_us: dict[str, float]
    added_ratio: dict[str, tuple[float, float, float]]
    goals: list[Goal]


def time_variants(sizes: Sizes, policy: CompactionPolicy) -> Timings:
    records = recorded_records()
    distinct = recorded_records(distinct_names=True)
    units = sizes.traces_per_loop * SPANS
    tracer = _provider().get_tracer("bench.compaction")

    def spans() -> None:
        for _ in range(sizes.traces_per_loop):
            run_trace(tracer)

    variants = [
        Variant(NO_PROCESSOR, spans, units),
        Variant(APPEND, lambda: replay(records, None, sizes.traces_per_loop), units),
        Variant(COMPACTING, lambda: replay(records, policy, sizes.traces_per_loop), units),
        Variant(
            COMPACTING_DISTINCT, lambda: replay(distinct, policy, sizes.traces_per_loop), units
        ),
    ]
    return run_interleaved(variants, sizes.rounds, warmup_rounds=sizes.warmup_rounds)


def added_cost(timings: Timings, name: str) -> list[float]:
    """Per round, ns per span that compacting adds to appending (timed in the same round)."""
    return [
        compacting - appending
        for compacting, appending in zip(
            timings.per_unit_ns[name], timings.per_unit_ns[APPEND], strict=True
        )
    ]


def added_ratios(timings: Timings, name: str) -> tuple[float, float, float]:
    """Added cost over the cost of a span with no processor: 25th, 50th, 75th percentile."""
    ratios = [
        added / span
        for added, span in zip(
            added_cost(timings, name), timings.per_unit_ns[NO_PROCESSOR], strict=True
        )
    ]
    if len(ratios) < 2:
        return ratios[0], ratios[0], ratios[0]
    low, middle, high = statistics.quantiles(ratios, n=4, method="inclusive")
    return low, middle, high


def run_benchmark(sizes: Sizes, progress: Callable[[str], object] | None = None) -> Results:
    say = progress or (lambda _message: None)
    policy = CompactionPolicy()
    say("measuring retained bytes ...")
    memory = retained_bytes(policy)
    say(f"timing {sizes.rounds} rounds ...")
    timings = time_variants(sizes, policy)
    added_us = {
        name: statistics.median(added_cost(timings, name)) / 1_000
        for name in (COMPACTING, COMPACTING_DISTINCT)
    }
    ratios = {name: added_ratios(timings, name) for name in (COMPACTING, COMPACTING_DISTINCT)}
    goals = [
        Goal(
            "retained bytes, records alone: compacted / not compacted",
            memory.compacted / memory.plain,
            0.1,
        ),
    ]
    return Results(sizes, timings, memory, added_us, ratios, goals)


def format_results(results: Results, command: str) -> str:
    sizes, timings, memory = results.sizes, results.timings, results.memory

    def per_span(value: int, spans: int = SPANS) -> str:
        return f"{value:,} ({value / spans:,.0f}/span)"

    out = [
        f"Compaction benchmark: {command}",
        f"Python {platform.python_version()}, opentelemetry-sdk {sdk_version}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}",
        f"Workload: a root and {CALLS} identical fast calls ({SPANS} spans); default policy "
        "(exact match <= 50 ms, compacted every 64 spans and when the root ends).",
        "",
        "1. Retained bytes for the trace (tracemalloc)",
        format_table(
            ["held as", "records", "bytes"],
            [
                ("records, no compaction", memory.held_plain, per_span(memory.plain)),
                ("records, compacted", memory.held_compacted, per_span(memory.compacted)),
                (
                    f"+ merged ids as a dict ({memory.merged_entries} entries)",
                    "",
                    per_span(memory.merged_dict),
                ),
                ("+ merged ids as two sorted array('Q')", "", per_span(memory.merged_arrays)),
                (
                    "+ member ids as one array('Q') per composite",
                    "",
                    per_span(memory.member_arrays),
                ),
            ],
        ),
        f"Fewer bytes: {memory.plain / memory.compacted:,.0f}x for the records alone; "
        f"{memory.plain / (memory.compacted + memory.merged_dict):,.1f}x with a dict of merged "
        f"ids; {memory.plain / (memory.compacted + memory.merged_arrays):,.1f}x with two "
        f"arrays; {memory.plain / (memory.compacted + memory.member_arrays):,.1f}x with an array "
        "per composite.",
        "",
        f"2. Time per span ({timings.rounds} rounds, +{sizes.warmup_rounds} warm-up discarded; "
        f"{sizes.traces_per_loop} traces of {SPANS} spans per loop; medians, added cost is the "
        "per-round difference with appending only)",
        format_table(
            ["variant", "us/span"],
            [(name, f"{timings.median_us(name):.3f}") for name in VARIANTS],
        ),
        "",
        format_table(
            ["compaction adds", "us/span", f"vs {NO_PROCESSOR} [25th-75th]"],
            [
                (
                    name,
                    f"{results.added_us[name]:.3f}",
                    "{1:.3f}x [{0:.3f}-{2:.3f}]".format(*results.added_ratio[name]),
                )
                for name in (COMPACTING, COMPACTING_DISTINCT)
            ],
        ),
        "",
        "Goals",
        format_goals(results.goals),
    ]
    return "\n".join(out)


class _Keep(SpanProcessor):
    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


def through_store(rounds: int, distinct_names: bool = False) -> str:
    """The same trace through `TraceStore.on_end`, as an application runs it.

    Retained bytes of the whole store (records, merged-id arrays and all), with
    and without compaction, and what `on_end` costs per span in each; the spans
    are made once by the SDK and replayed, so only the store is timed.
    """
    import gc
    import statistics
    import time
    import tracemalloc

    from otel_bounded import TraceStore

    keep = _Keep()
    provider = _provider(keep)
    run_trace(provider.get_tracer("bench.compaction"), distinct_names)
    spans = keep.spans

    def fill(store: TraceStore) -> None:
        on_end = store.on_end
        for span in spans:
            on_end(span)

    def retained(policy: CompactionPolicy | None, warm: bool) -> int:
        if warm:
            # One trace through a store with the same policy first: the policy's caches
            # (attribute key tuples, bounded, shared by every trace) are then not counted.
            fill(TraceStore(compaction=policy))
        store = TraceStore(compaction=policy)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        fill(store)
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - before
        tracemalloc.stop()
        del store
        return size

    cold_plain, cold = retained(None, False), retained(CompactionPolicy(), False)
    plain, compacted = retained(None, True), retained(CompactionPolicy(), True)
    costs: dict[str, list[float]] = {"plain": [], "compacted": []}
    for _ in range(rounds):
        for name, policy in (("plain", None), ("compacted", CompactionPolicy())):
            store = TraceStore(compaction=policy)
            gc.collect()
            start = time.perf_counter()
            fill(store)
            costs[name].append((time.perf_counter() - start) / len(spans) * 1e6)
    plain_us = statistics.median(costs["plain"])
    compacted_us = statistics.median(costs["compacted"])
    label = "distinct names, nothing mergeable" if distinct_names else "identical calls"
    section = "5." if distinct_names else "4."
    lines = []
    if not distinct_names:
        ratio = compacted / max(plain, 1)
        verdict = "PASS" if ratio <= 0.1 else "NOT MET"
        lines.append(
            f"goal: retained bytes through TraceStore, compacted / plain = {ratio:.3f}x "
            f"(<= 0.10x, caches warm): {verdict}"
        )
    return "\n".join(
        [
            f"{section} Through TraceStore.on_end ({len(spans)} spans, {label}; {rounds} rounds)",
            f"retained for the trace: {plain:,} bytes plain, {compacted:,} bytes compacted "
            f"(merged-id arrays and compaction state included, policy caches warm): "
            f"{plain / max(compacted, 1):.1f}x fewer",
            f"first trace of a fresh policy (its caches counted): {cold_plain:,} bytes plain, "
            f"{cold:,} bytes compacted: {cold_plain / max(cold, 1):.1f}x fewer",
            f"on_end: {plain_us:.2f} us/span plain, {compacted_us:.2f} us/span compacting "
            f"(+{compacted_us - plain_us:.2f} us)",
            *lines,
        ]
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds: a smoke run")
    args = parser.parse_args(argv)

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    command = "python bench/compaction.py" + (" --quick" if args.quick else "")
    sizes = QUICK if args.quick else DEFAULT
    print(format_results(run_benchmark(sizes, progress), command))
    print()
    print(through_store(sizes.rounds))
    print(through_store(sizes.rounds, distinct_names=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
