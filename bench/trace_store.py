"""What `TraceStore` costs a traced application, in time per span and memory per span.

Run: ``.venv/bin/python bench/trace_store.py`` (``--quick`` for a smoke run).

One interleaved run (see `_harness`) times, per span of an agent-like
workload (a root span and nine children with two or three attributes each,
through ``tracer.start_as_current_span``), a TracerProvider with no processor,
with a `TraceStore` (defaults, and a 1k-trace store, both full and evicting),
with ``SimpleSpanProcessor(InMemorySpanExporter())`` and with
``BatchSpanProcessor`` over a no-op exporter; in the same rounds it times
`TraceStore.on_end` alone on a store holding 100k traces against one holding
1k, both full and evicting. Then tracemalloc compares the bytes a store
retains per span with the SDK's own `ReadableSpan` objects. Each figure is
printed next to its goal.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import platform
import random
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from opentelemetry.context import Context
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, Tracer, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.version import __version__ as sdk_version

import _baseline_store
from _harness import (
    Goal,
    Timings,
    Variant,
    format_goals,
    format_table,
    gc_paused,
    run_interleaved,
)
from otel_bounded import TraceStore, TraceStoreStats, demo
from otel_bounded.core import ENTRY_FULL, Refusal
from otel_bounded.telemetry import DropReason
from otel_bounded.traces import ExportPolicy

SPANS_PER_TRACE = 10

NO_PROCESSOR = "no processor"
STORE_DEFAULTS = "TraceStore() defaults, full"
STORE_SMALL = "TraceStore(max_traces=1_000), full"
STORE_BEFORE = "TraceStore before retention (git 1284a95), full"
STORE_TAIL_EXPORT = "TraceStore, tail export of errors + 1% to BatchSpanProcessor(no-op)"
SIMPLE_IN_MEMORY = "SimpleSpanProcessor(InMemorySpanExporter())"
BATCH_NO_OP = "BatchSpanProcessor(no-op exporter)"
ON_END_LARGE = "TraceStore.on_end, large store"
ON_END_SMALL = "TraceStore.on_end, small store"
ON_END_BEFORE_SUMMARIES = "TraceStore.on_end before summaries, small store"
SPAN_VARIANTS = (
    NO_PROCESSOR,
    STORE_DEFAULTS,
    STORE_SMALL,
    STORE_BEFORE,
    STORE_TAIL_EXPORT,
    SIMPLE_IN_MEMORY,
    BATCH_NO_OP,
)
TAIL_EXPORT_POLICY = ExportPolicy(error=True, slow=False, security=False, ratio=0.01)
ADVERSARIAL_MAX_BYTES = 16_000_000

# The steps of one agent invocation: a span name and the kind of work it stands for.
_STEPS = (
    ("agent.plan", "llm"),
    ("memory.retrieve", "tool"),
    ("llm.chat", "llm"),
    ("tool.search", "tool"),
    ("tool.fetch", "tool"),
    ("llm.chat", "llm"),
    ("tool.run_code", "tool"),
    ("llm.summarize", "llm"),
    ("agent.respond", "agent"),
)
assert len(_STEPS) + 1 == SPANS_PER_TRACE


@dataclass(frozen=True)
class Sizes:
    """How much work each part does; `DEFAULT` fits in ~2-3 minutes on two cores."""

    rounds: int
    traces_per_loop: int  # part 1: traces created per timed loop
    replay_traces: int  # part 2: traces replayed into `on_end` per timed loop
    large_held: int  # part 2: max_traces of the large store
    small_held: int  # part 1 and 2: max_traces of the small store
    memory_spans: int  # part 3: spans held when retained memory is measured
    warmup_rounds: int = 1


DEFAULT = Sizes(
    rounds=40,
    traces_per_loop=600,
    replay_traces=1_000,
    large_held=100_000,
    small_held=1_000,
    memory_spans=20_000,
)
QUICK = Sizes(
    rounds=5,
    traces_per_loop=100,
    replay_traces=100,
    large_held=10_000,
    small_held=1_000,
    memory_spans=2_000,
)


@dataclass(frozen=True)
class Results:
    sizes: Sizes
    timings: Timings
    # Each store's counts once timing is over: proof that it was full and evicting.
    store_stats: dict[str, TraceStoreStats]
    store_bytes_per_span: float
    readable_span_bytes_per_span: float
    goals: list[Goal]
    adversarial_retained_bytes: int = 0
    demo_estimate_bytes: int = 0
    demo_measured_bytes: int = 0
    exported_spans: int = 0


def run_agent_traces(tracer: Tracer, traces: int) -> None:
    """`traces` agent invocations, each a root span with nine children of 2-3 attributes."""
    start_span = tracer.start_as_current_span
    for invocation in range(traces):
        with start_span(
            "agent.invoke", attributes={"agent.name": "bench-agent", "agent.invocation": invocation}
        ):
            for index, (name, kind) in enumerate(_STEPS):
                attributes: dict[str, str | int] = {
                    "agent.step.index": index,
                    "agent.step.kind": kind,
                }
                if kind == "llm":
                    attributes["gen_ai.usage.input_tokens"] = 300 + (invocation * 31 + index) % 4000
                with start_span(name, attributes=attributes):
                    pass


class NoOpExporter(SpanExporter):
    """An exporter that accepts everything, so only the processor's own cost is timed."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


class KeepReadableSpans(SpanProcessor):
    """Keeps every ended span as the SDK hands it over: the naive store, and a recorder."""

    def __init__(self) -> None:
        self.spans: list[ReadableSpan] = []

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        pass

    def on_end(self, span: ReadableSpan) -> None:
        self.spans.append(span)


class StoreBeforeSummaries(TraceStore):
    """`TraceStore` with the `on_end` it had before per-trace summaries: the peer they are
    measured against. Plain lists, no summary fold, no query index, and (as then) no eviction
    callback once the first eviction is logged."""

    def on_end(self, span: ReadableSpan) -> None:
        if self._shutdown:
            return
        try:
            with self._lock:
                self._received += 1
                trace_id, record = self._encode(span)
                traces = self._traces
                records = traces.grow(trace_id)
                if records is None:
                    traces.put(trace_id, [record], weight=1)
                elif records.__class__ is Refusal:
                    self._drop(
                        DropReason.MAX_SPANS_PER_TRACE
                        if records is ENTRY_FULL
                        else DropReason.MAX_SPANS
                    )
                else:
                    records.append(record)  # type: ignore[union-attr]
        except Exception as error:
            self._count_error(error)
        finally:
            if self._pending_warnings:
                self._flush_warnings()
                self._traces.on_evict = None


def _provider(processor: SpanProcessor | None) -> TracerProvider:
    # Shut down explicitly, not at exit, so nothing keeps a measured store alive.
    provider = TracerProvider(shutdown_on_exit=False)
    # `TraceStore` defines `__len__`, so an empty store is falsy: test identity, not truth.
    if processor is not None:
        provider.add_span_processor(processor)
    return provider


def _fill(store: TraceStore, tracer: Tracer) -> None:
    """Fill `store` past its trace cap, so it is evicting before timing starts.

    The store's one first-eviction warning is logged here, not in a timed loop.
    """
    with gc_paused():
        run_agent_traces(tracer, store.stats().max_traces + 1)
    _check_evicting(store)


def _check_evicting(store: TraceStore) -> None:
    stats = store.stats()
    if stats.evicted_traces == 0:
        raise RuntimeError(f"pre-filling did not make the store evict: {stats}")


class _Replay:
    """Times `store.on_end` alone, over freshly ended spans of new traces each loop.

    The spans are recorded untimed by a provider of their own; a provider
    attached to the store would time the SDK too, and shutting it down would
    shut the store.
    """

    def __init__(self, store: TraceStore, traces: int) -> None:
        self.store = store
        self.traces = traces
        self.recorder = KeepReadableSpans()
        self.recorder_tracer = _provider(self.recorder).get_tracer("bench.recorder")
        self.batch: list[ReadableSpan] = []

    def fill(self) -> None:
        """Replay past the store's trace cap, so it is evicting before timing starts."""
        remaining = self.store.stats().max_traces + 1
        with gc_paused():
            while remaining > 0:
                self.record(min(remaining, 1_000))
                self.replay()
                remaining -= len(self.batch) // SPANS_PER_TRACE
            self.forget()
        _check_evicting(self.store)

    def record(self, traces: int | None = None) -> None:
        with gc_paused():
            run_agent_traces(self.recorder_tracer, self.traces if traces is None else traces)
        self.batch, self.recorder.spans = self.recorder.spans, []

    def replay(self) -> None:
        on_end = self.store.on_end
        for span in self.batch:
            on_end(span)

    def forget(self) -> None:
        self.batch = []


def run_benchmark(sizes: Sizes, progress: Callable[[str], object] | None = None) -> Results:
    """Parts 1 and 2 in one interleaved run, then part 3, and every goal judged."""
    say = progress or (lambda _message: None)
    timings, store_stats = time_variants(sizes, say)
    say(f"measuring retained memory of {sizes.memory_spans:,} spans ...")
    store_bytes, readable_bytes = retained_bytes_per_span(sizes.memory_spans)
    say("measuring retained memory under adversarial 1 MB attributes ...")
    adversarial = adversarial_retained_bytes(ADVERSARIAL_MAX_BYTES)
    say("comparing the byte estimate with tracemalloc on the demo workload ...")
    # At least 200 steps: fewer would measure tracemalloc noise, not the store.
    estimate, measured = demo_estimate_and_measured(max(sizes.memory_spans // 5, 200))
    goals = _goals(sizes, timings, store_bytes, readable_bytes)
    goals += [
        Goal(
            "retained bytes, adversarial 1 MB attributes / max_bytes",
            adversarial / ADVERSARIAL_MAX_BYTES,
            1.1,
        ),
        Goal(
            "byte estimate vs tracemalloc, demo workload: |estimate / measured - 1|",
            abs(estimate / measured - 1),
            0.1,
        ),
    ]
    return Results(
        sizes=sizes,
        timings=timings,
        store_stats=store_stats,
        store_bytes_per_span=store_bytes,
        readable_span_bytes_per_span=readable_bytes,
        goals=goals,
        adversarial_retained_bytes=adversarial,
        demo_estimate_bytes=estimate,
        demo_measured_bytes=measured,
    )


def time_variants(
    sizes: Sizes, say: Callable[[str], object]
) -> tuple[Timings, dict[str, TraceStoreStats]]:
    """Every span variant (part 1) and both `on_end` replays (part 2), in the same rounds."""
    meter_provider = MeterProvider()  # real, without readers: stores' instruments cost nothing
    providers: list[TracerProvider] = []
    stores: dict[str, TraceStore] = {}
    variants: list[Variant] = []
    span_units = sizes.traces_per_loop * SPANS_PER_TRACE

    def span_variant(
        name: str, processor: SpanProcessor | None, after: Callable[[], object] | None = None
    ) -> Tracer:
        provider = _provider(processor)
        providers.append(provider)
        tracer = provider.get_tracer("bench.trace_store")
        variants.append(
            Variant(
                name,
                lambda: run_agent_traces(tracer, sizes.traces_per_loop),
                span_units,
                after=after,
            )
        )
        return tracer

    span_variant(NO_PROCESSOR, None)
    tail_batch = BatchSpanProcessor(NoOpExporter())
    for name, store in (
        (STORE_DEFAULTS, TraceStore(meter_provider=meter_provider)),
        (
            STORE_SMALL,
            TraceStore(
                max_traces=sizes.small_held,
                max_spans=20 * sizes.small_held,
                meter_provider=meter_provider,
            ),
        ),
        (STORE_BEFORE, _baseline_store.TraceStore(meter_provider=meter_provider)),
        (
            STORE_TAIL_EXPORT,
            TraceStore(
                meter_provider=meter_provider, export=tail_batch, export_when=TAIL_EXPORT_POLICY
            ),
        ),
    ):
        stores[name] = store  # type: ignore[assignment]
        say(f"pre-filling {name} ...")
        _fill(store, span_variant(name, store))  # type: ignore[arg-type]
    in_memory = InMemorySpanExporter()
    # Cleared after every loop so memory does not grow across rounds.
    span_variant(SIMPLE_IN_MEMORY, SimpleSpanProcessor(in_memory), after=in_memory.clear)
    span_variant(BATCH_NO_OP, BatchSpanProcessor(NoOpExporter()))

    for name, held, kind in (
        (ON_END_LARGE, sizes.large_held, TraceStore),
        (ON_END_SMALL, sizes.small_held, TraceStore),
        (ON_END_BEFORE_SUMMARIES, sizes.small_held, StoreBeforeSummaries),
    ):
        # max_spans well above 10 spans per trace, so max_traces is the binding cap.
        store = kind(max_traces=held, max_spans=20 * held, meter_provider=meter_provider)
        stores[name] = store
        say(f"pre-filling {name} (max_traces={held:,}) ...")
        replay = _Replay(store, sizes.replay_traces)
        replay.fill()
        variants.append(
            Variant(
                name,
                replay.replay,
                sizes.replay_traces * SPANS_PER_TRACE,
                before=replay.record,
                after=replay.forget,
            )
        )

    def on_round(done: int, total: int) -> None:
        if done % 10 == 0 or done == total:
            say(f"round {done}/{total}")

    try:
        timings = run_interleaved(
            variants, sizes.rounds, warmup_rounds=sizes.warmup_rounds, progress=on_round
        )
        return timings, {name: store.stats() for name, store in stores.items()}
    finally:
        for provider in providers:
            provider.shutdown()  # also stops the BatchSpanProcessor's worker thread
        meter_provider.shutdown()


def retained_bytes_per_span(spans: int) -> tuple[float, float]:
    """Bytes retained per span by a `TraceStore` and by a list of the SDK's `ReadableSpan`s."""
    traces = math.ceil(spans / SPANS_PER_TRACE)
    held = traces * SPANS_PER_TRACE
    meter_provider = MeterProvider()
    store = TraceStore(max_traces=traces, max_spans=held, meter_provider=meter_provider)
    keeper = KeepReadableSpans()
    store_bytes = _retained_bytes(store, traces)
    readable_bytes = _retained_bytes(keeper, traces)
    # A figure per span is only honest if every span is still held.
    if store.stats().spans != held or len(keeper.spans) != held:
        raise RuntimeError(f"expected {held} spans held: {store.stats()}, {len(keeper.spans)}")
    meter_provider.shutdown()
    return store_bytes / held, readable_bytes / held


def adversarial_retained_bytes(max_bytes: int) -> int:
    """Bytes a store with `max_bytes` retains after 3x its budget of 1 MB attribute values."""
    meter_provider = MeterProvider()
    store = TraceStore(max_bytes=max_bytes, meter_provider=meter_provider)
    provider = _provider(store)
    tracer = provider.get_tracer("bench.adversarial")
    run_agent_traces(tracer, 1)  # interned resource and scope: not what is measured
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for index in range(3 * max_bytes // 1_000_000):
            with tracer.start_as_current_span(
                "llm.call", attributes={"gen_ai.prompt": "p" * 1_000_000 + str(index)}
            ) as span:
                span.add_event("gen_ai.choice", {"message": "c" * 100_000})
        gc.collect()
        retained = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        provider.shutdown()
        meter_provider.shutdown()
    if store.stats().evictions_by_reason["max_bytes"] == 0:
        raise RuntimeError(f"the adversarial run did not reach max_bytes: {store.stats()}")
    return retained


def _no_guard(_index: int) -> None:
    """The demo step's token and approval checks, left out: only the trace is measured."""


def demo_estimate_and_measured(steps: int) -> tuple[int, int]:
    """The store's byte estimate and tracemalloc's count of what clearing it frees."""
    meter_provider = MeterProvider()
    store = TraceStore(max_traces=steps // 2, max_spans=steps * 4, meter_provider=meter_provider)
    provider = _provider(store)
    tracer = provider.get_tracer("bench.demo")
    rng = random.Random(20_240_601)
    gc.collect()
    tracemalloc.start()
    try:
        for index in range(steps):
            demo._agent_step(tracer, rng, index, _no_guard)
        gc.collect()
        estimate = store.stats().bytes
        before = tracemalloc.get_traced_memory()[0]
        store.clear()
        gc.collect()
        measured = before - tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        provider.shutdown()
        meter_provider.shutdown()
    return estimate, measured


def _retained_bytes(processor: SpanProcessor, traces: int) -> int:
    provider = _provider(processor)
    tracer = provider.get_tracer("bench.memory")
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        run_agent_traces(tracer, traces)
        gc.collect()
        return tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
        provider.shutdown()


def _goals(sizes: Sizes, timings: Timings, store_bytes: float, readable_bytes: float) -> list[Goal]:
    held = f"{_short(sizes.large_held)} held / {_short(sizes.small_held)} held"
    goals = [
        Goal(
            f"span cost: {store} / {NO_PROCESSOR}", timings.median_ratio(store, NO_PROCESSOR), 1.15
        )
        for store in (STORE_DEFAULTS, STORE_SMALL)
    ]
    goals += [
        Goal(
            f"span cost: {store} / {BATCH_NO_OP}",
            timings.median_ratio(store, BATCH_NO_OP),
            1.0,
            strict=True,
        )
        for store in (STORE_DEFAULTS, STORE_SMALL)
    ]
    goals.append(
        Goal(
            f"span cost: {STORE_DEFAULTS} / {STORE_BEFORE}",
            timings.median_ratio(STORE_DEFAULTS, STORE_BEFORE),
            1.05,
        )
    )
    goals.append(
        Goal(
            f"span cost: {STORE_TAIL_EXPORT} / {BATCH_NO_OP}",
            timings.median_ratio(STORE_TAIL_EXPORT, BATCH_NO_OP),
            1.0,
        )
    )
    goals.append(
        Goal(
            f"TraceStore.on_end cost: {held}", timings.median_ratio(ON_END_LARGE, ON_END_SMALL), 1.2
        )
    )
    goals.append(
        Goal(
            "TraceStore.on_end cost: with summaries / before summaries (1k held)",
            timings.median_ratio(ON_END_SMALL, ON_END_BEFORE_SUMMARIES),
            1.05,
        )
    )
    goals.append(
        Goal("retained bytes/span: TraceStore / ReadableSpan", store_bytes / readable_bytes, 0.2)
    )
    return goals


def _short(count: int) -> str:
    return f"{count // 1000}k" if count >= 1000 and count % 1000 == 0 else f"{count:,}"


def _ratio_cell(timings: Timings, name: str, baseline: str) -> str:
    low, middle, high = timings.ratio_quartiles(name, baseline)
    return f"{middle:.3f}x [{low:.3f}-{high:.3f}]"


def format_results(results: Results, command: str) -> str:
    sizes, timings = results.sizes, results.timings
    out = [
        f"TraceStore benchmark: {command}",
        f"Python {platform.python_version()}, opentelemetry-sdk {sdk_version}, "
        f"{os.cpu_count()} CPUs, {platform.machine()}",
        f"{timings.rounds} rounds (+{sizes.warmup_rounds} warm-up discarded), every variant once "
        "per round in a shuffled order, gc.collect() before each timed loop; ratios are "
        "medians of per-round paired ratios, [25th-75th percentile].",
        "",
        f"1. Creating and ending a span ({sizes.traces_per_loop:,} traces of {SPANS_PER_TRACE} "
        "spans per loop; each variant its own TracerProvider)",
        format_table(
            ["variant", "us/span", f"vs {NO_PROCESSOR}", "vs BatchSpanProcessor"],
            [
                (
                    name,
                    f"{timings.median_us(name):.2f}",
                    _ratio_cell(timings, name, NO_PROCESSOR),
                    _ratio_cell(timings, name, BATCH_NO_OP),
                )
                for name in SPAN_VARIANTS
            ],
        ),
        "",
        f"2. TraceStore.on_end alone, per span ({sizes.replay_traces:,} new traces replayed per "
        "loop into stores full and evicting, max_spans = 20 x max_traces)",
        format_table(
            ["store", "us/span", "vs small store"],
            [
                (
                    f"max_traces={held:,}"
                    + (" (on_end before summaries)" if name == ON_END_BEFORE_SUMMARIES else ""),
                    f"{timings.median_us(name):.3f}",
                    _ratio_cell(timings, name, ON_END_SMALL),
                )
                for name, held in (
                    (ON_END_LARGE, sizes.large_held),
                    (ON_END_SMALL, sizes.small_held),
                    (ON_END_BEFORE_SUMMARIES, sizes.small_held),
                )
            ],
        ),
        "",
        "Stores after timing (full and evicting):",
        format_table(
            ["store", "traces", "spans", "evicted traces", "dropped spans"],
            [
                (
                    name,
                    f"{stats.traces:,}/{stats.max_traces:,}",
                    f"{stats.spans:,}/{stats.max_spans:,}",
                    f"{stats.evicted_traces:,}",
                    f"{stats.dropped_spans:,}",
                )
                for name, stats in results.store_stats.items()
            ],
        ),
        "",
        f"3. Retained memory per span (tracemalloc, {sizes.memory_spans:,} spans held, "
        "gc.collect() before each snapshot)",
        format_table(
            ["kept as", "bytes/span"],
            [
                ("TraceStore records", f"{results.store_bytes_per_span:,.0f}"),
                ("SDK ReadableSpan objects", f"{results.readable_span_bytes_per_span:,.0f}"),
            ],
        ),
        "",
        "4. The byte budget (tracemalloc)",
        format_table(
            ["measured", "bytes"],
            [
                (
                    f"retained after {3 * ADVERSARIAL_MAX_BYTES // 1_000_000} spans with 1 MB "
                    f"attributes, max_bytes={ADVERSARIAL_MAX_BYTES:,}",
                    f"{results.adversarial_retained_bytes:,}",
                ),
                ("demo workload: the store's estimate", f"{results.demo_estimate_bytes:,}"),
                ("demo workload: freed by clear()", f"{results.demo_measured_bytes:,}"),
            ],
        ),
        "",
        "Goals",
        format_goals(results.goals),
    ]
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds and spans: a smoke run")
    args = parser.parse_args(argv)
    # The stores here are full on purpose; each one's first-eviction warning is expected.
    logging.getLogger("otel_bounded").addHandler(logging.NullHandler())

    def progress(message: str) -> None:
        print(f"  {message}", file=sys.stderr, flush=True)

    command = "python bench/trace_store.py" + (" --quick" if args.quick else "")
    results = run_benchmark(QUICK if args.quick else DEFAULT, progress)
    print(format_results(results, command))
    return 0


if __name__ == "__main__":
    sys.exit(main())
