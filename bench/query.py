"""What `TraceStore.query` costs over 100,000 held traces, and how long `on_end` waits behind it.

Run: ``.venv/bin/python bench/query.py`` (``--quick`` for a smoke run).

1. A store holding 100,000 traces (a root and two children each, 1% with an
   error) answers queries: summary-only ones (status, duration, no filter)
   and ones that read records (a span name prefix, an attribute). Each is
   timed over many runs, `gc.collect()` before each; the peer is the same
   question answered by brute force over `get()` (decoding every span).
2. While one thread runs queries in a loop, another records spans through
   `on_end` (new traces into the full store, so it evicts too); every time
   that thread takes the store's lock, the wait is measured. The same writer
   without queries gives the wait the interpreter alone causes.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import logging
import platform
import statistics
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.sdk.version import __version__ as sdk_version
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode

from _harness import Goal, format_goals, format_table, gc_paused
from otel_bounded import TraceStore

RESOURCE = Resource.create({"service.name": "bench-agent"})
SCOPE = InstrumentationScope("bench.query", "1.0")
SPANS_PER_TRACE = 3


@dataclass(frozen=True)
class Sizes:
    held: int  # traces held
    runs: int  # timed runs per query
    contention_seconds: float  # how long the writer records beside the query loop


DEFAULT = Sizes(held=100_000, runs=30, contention_seconds=5.0)
QUICK = Sizes(held=5_000, runs=5, contention_seconds=0.5)


def agent_trace(number: int) -> list[ReadableSpan]:
    """One trace: a root (1 in 100 with an ERROR child) and two children, as the SDK ends them."""
    trace_id = (number + 1) << 32 | 0x5EED
    start = 1_700_000_000_000_000_000 + number * 1_000_000
    root = SpanContext(trace_id, 1, is_remote=False)
    spans = []
    for child, name in enumerate(("llm.chat", "tool.search"), start=2):
        error = number % 100 == 0 and child == 3
        spans.append(
            ReadableSpan(
                name=name,
                context=SpanContext(trace_id, child, is_remote=False),
                parent=root,
                resource=RESOURCE,
                attributes={"gen_ai.conversation.id": f"c-{number % 1000}", "step": child},
                kind=SpanKind.INTERNAL,
                status=Status(StatusCode.ERROR if error else StatusCode.UNSET),
                start_time=start + child * 100_000,
                end_time=start + child * 100_000 + (number % 50) * 10_000,
                instrumentation_scope=SCOPE,
            )
        )
    spans.append(
        ReadableSpan(
            name="agent.invoke",
            context=root,
            parent=None,
            resource=RESOURCE,
            attributes={"agent.name": "bench"},
            kind=SpanKind.SERVER,
            status=Status(StatusCode.UNSET),
            start_time=start,
            end_time=start + 900_000 + (number % 50) * 10_000,
            instrumentation_scope=SCOPE,
        )
    )
    return spans


def filled_store(held: int) -> TraceStore:
    store = TraceStore(max_traces=held, max_spans=SPANS_PER_TRACE * held)
    with gc_paused():
        for number in range(held):
            for span in agent_trace(number):
                store.on_end(span)
    if len(store) != held:
        raise RuntimeError(f"expected {held} traces held, got {len(store)}")
    return store


def brute_force(store: TraceStore, wants: Callable[[Sequence[ReadableSpan]], bool]) -> int:
    """The peer: decode every held trace with get() and test it."""
    return sum(1 for trace_id in store.trace_ids() if wants(store.get(trace_id)))


QUERIES: list[tuple[str, dict[str, Any], bool]] = [
    ("status=error (summary only)", {"status": "error"}, False),
    ("min_duration_ms=1.2 (summary only)", {"min_duration_ms": 1.2}, False),
    ("no filter, limit=100 (summary only)", {}, False),
    ("name=tool.* (reads records)", {"name": "tool.*"}, True),
    ("attributes={gen_ai.conversation.id: c-42}",
     {"attributes": {"gen_ai.conversation.id": "c-42"}}, True),
]  # fmt: skip


def time_queries(store: TraceStore, runs: int) -> list[tuple[str, float, float, int]]:
    """(label, median ms, longest ms, traces returned) per query."""
    rows = []
    for label, arguments, _ in QUERIES:
        times = []
        returned = 0
        for _ in range(runs):
            gc.collect()
            started = time.perf_counter()
            returned = len(store.query(**arguments, limit=100))
            times.append((time.perf_counter() - started) * 1e3)
        rows.append((label, statistics.median(times), max(times), returned))
    return rows


def time_brute_force(store: TraceStore) -> float:
    gc.collect()
    started = time.perf_counter()
    brute_force(store, lambda spans: any(s.status.status_code is StatusCode.ERROR for s in spans))
    return (time.perf_counter() - started) * 1e3


class TimedLock:
    """The store's lock, timing how long one watched thread waits to take it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.watched: int | None = None
        self.waits_ns: list[int] = []

    def acquire(self, blocking: bool = True, timeout: float = -1) -> bool:
        if threading.get_ident() != self.watched:
            return self._lock.acquire(blocking, timeout)
        started = time.perf_counter_ns()
        taken = self._lock.acquire(blocking, timeout)
        self.waits_ns.append(time.perf_counter_ns() - started)
        return taken

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> bool:
        return self.acquire()

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.release()


@dataclass(frozen=True)
class Waits:
    label: str
    spans: int
    queries: int
    longest_ms: float
    p999_ms: float
    over_1ms: int
    longest_call_ms: float


def lock_waits(store: TraceStore, seconds: float, *, with_queries: bool, first: int) -> Waits:
    lock = TimedLock()
    store._lock = lock  # type: ignore[assignment]
    stop = threading.Event()
    queries = 0

    def query_loop() -> None:
        nonlocal queries
        while not stop.is_set():
            for _, arguments, _ in QUERIES:
                store.query(**arguments)
                queries += 1

    spans = [span for number in range(first, first + 20_000) for span in agent_trace(number)]
    reader = threading.Thread(target=query_loop)
    if with_queries:
        reader.start()
    lock.watched = threading.get_ident()
    recorded = 0
    longest_call = 0
    clock = time.perf_counter_ns
    on_end = store.on_end
    deadline = time.perf_counter() + seconds
    try:
        while time.perf_counter() < deadline and recorded < len(spans):
            for span in spans[recorded : recorded + 300]:
                started = clock()
                on_end(span)
                longest_call = max(longest_call, clock() - started)
            recorded += 300
    finally:
        lock.watched = None
        stop.set()
        if with_queries:
            reader.join()
    waits = sorted(lock.waits_ns)
    p999 = waits[min(len(waits) - 1, int(len(waits) * 0.999))]
    return Waits(
        "on_end beside a query loop" if with_queries else "on_end alone",
        recorded,
        queries,
        waits[-1] / 1e6,
        p999 / 1e6,
        sum(1 for wait in waits if wait > 1_000_000),
        longest_call / 1e6,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a small store: a smoke run")
    args = parser.parse_args(argv)
    sizes = QUICK if args.quick else DEFAULT
    logging.getLogger("otel_bounded").addHandler(logging.NullHandler())
    print(f"  filling a store with {sizes.held:,} traces ...", file=sys.stderr, flush=True)
    store = filled_store(sizes.held)
    print("  timing queries ...", file=sys.stderr, flush=True)
    rows = time_queries(store, sizes.runs)
    brute_ms = time_brute_force(store)
    print("  measuring lock waits ...", file=sys.stderr, flush=True)
    alone = lock_waits(store, sizes.contention_seconds, with_queries=False, first=sizes.held)
    beside = lock_waits(
        store, sizes.contention_seconds, with_queries=True, first=sizes.held + 20_000
    )
    # The same with the filled heap frozen (gc.freeze()): a full collection then skips the
    # 100,000 held traces, which separates the collector's pauses from the lock's holds.
    gc.collect()
    gc.freeze()
    frozen = lock_waits(
        store, sizes.contention_seconds, with_queries=True, first=sizes.held + 40_000
    )
    frozen = dataclasses.replace(frozen, label="on_end beside a query loop, gc.freeze()")
    gc.unfreeze()
    summary_only = max(
        row[2] for row, (_, _, reads) in zip(rows, QUERIES, strict=True) if not reads
    )
    goals = [
        Goal("summary-only query, longest of all runs", summary_only, 50.0, unit=" ms"),
        Goal("longest on_end wait for the lock beside queries", beside.longest_ms, 1.0, unit=" ms"),
    ]
    print(
        "\n".join(
            [
                "TraceStore.query benchmark: python bench/query.py"
                + (" --quick" if args.quick else ""),
                f"Python {platform.python_version()}, opentelemetry-sdk {sdk_version}, "
                f"{platform.machine()}",
                "",
                f"1. Queries over {sizes.held:,} held traces ({SPANS_PER_TRACE} spans each), "
                f"{sizes.runs} runs each, gc.collect() before each",
                format_table(
                    ["query (limit=100)", "median ms", "longest ms", "returned"],
                    [(label, f"{m:.2f}", f"{x:.2f}", f"{n:,}") for label, m, x, n in rows],
                ),
                f"peer: status=error by brute force over get(), one run: {brute_ms:,.0f} ms "
                f"({brute_ms / rows[0][1]:,.0f}x the median query)",
                "",
                "2. Waits of one thread's on_end for the store's lock, and its longest call "
                f"({sizes.contention_seconds:g} s each; the store full, so evicting)",
                format_table(
                    [
                        "",
                        "spans",
                        "queries run",
                        "longest wait ms",
                        "99.9th pct ms",
                        "waits > 1 ms",
                        "longest on_end ms",
                    ],
                    [
                        (
                            w.label,
                            f"{w.spans:,}",
                            f"{w.queries:,}",
                            f"{w.longest_ms:.3f}",
                            f"{w.p999_ms:.3f}",
                            f"{w.over_1ms:,}",
                            f"{w.longest_call_ms:.3f}",
                        )
                        for w in (alone, beside, frozen)
                    ],
                ),
                "",
                "Goals",
                format_goals(goals),
            ]
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
