"""The TraceStore benchmark runs end to end and reports every figure; no timing is asserted."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # bench/ holds scripts, not a package: import them the way `python bench/x.py` does.
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("trace_store")


@pytest.fixture
def harness(bench: ModuleType) -> ModuleType:
    return importlib.import_module("_harness")


def test_tiny_run_times_every_variant_and_judges_every_goal(bench: ModuleType) -> None:
    sizes = bench.Sizes(
        rounds=2,
        traces_per_loop=3,
        replay_traces=3,
        large_held=40,
        small_held=10,
        memory_spans=50,
    )

    results = bench.run_benchmark(sizes)

    names = {
        *bench.SPAN_VARIANTS,
        bench.ON_END_LARGE,
        bench.ON_END_SMALL,
        bench.ON_END_BEFORE_SUMMARIES,
    }
    assert set(results.timings.per_unit_ns) == names
    for name in names:
        assert len(results.timings.per_unit_ns[name]) == sizes.rounds
        assert results.timings.median_us(name) > 0
    for name, stats in results.store_stats.items():
        assert stats.traces == stats.max_traces, f"{name} was not full"
        assert stats.evicted_traces > 0, f"{name} was not evicting"
        assert stats.dropped_spans == 0
    assert results.store_stats[bench.ON_END_LARGE].max_traces == sizes.large_held
    assert results.store_stats[bench.ON_END_SMALL].max_traces == sizes.small_held
    assert results.store_bytes_per_span > 0
    assert results.readable_span_bytes_per_span > 0

    # The standing and summary goals; store vs before retention, tail export, the byte budget.
    assert len(results.goals) == 11
    tail = results.store_stats[bench.STORE_TAIL_EXPORT]
    assert sum(tail.exported_by_reason.values()) + tail.not_exported > 0
    assert results.adversarial_retained_bytes > 0
    assert results.demo_estimate_bytes > 0
    assert results.demo_measured_bytes > 0
    for goal in results.goals:
        assert goal.verdict == ("PASS" if goal.met else "NOT MET")

    report = bench.format_results(results, "python bench/trace_store.py --tiny")
    for heading in ("1. Creating and ending a span", "2. TraceStore.on_end alone", "3. Retained"):
        assert heading in report
    for name in bench.SPAN_VARIANTS:
        assert name in report
    goal_lines = report.split("Goals")[1].splitlines()
    for goal in results.goals:
        (line,) = [line for line in goal_lines if line.startswith(goal.label)]
        assert line.endswith(goal.verdict)


def test_paired_ratio_is_the_median_of_per_round_ratios(harness: ModuleType) -> None:
    # Round by round a/b is 2, 4, 1: median 2. The ratio of medians would say 3.
    timings = harness.Timings({"a": [10.0, 40.0, 30.0], "b": [5.0, 10.0, 30.0]})

    assert timings.ratios("a", "b") == [2.0, 4.0, 1.0]
    assert timings.median_ratio("a", "b") == 2.0
    assert timings.ratio_quartiles("a", "b")[1] == 2.0
    assert timings.median_us("a") == 0.03


def test_each_round_times_every_variant_once_between_its_untimed_hooks(
    harness: ModuleType,
) -> None:
    log: list[str] = []

    def variant(name: str) -> object:
        return harness.Variant(
            name,
            loop=lambda: log.append(name),
            units=2,
            before=lambda: log.append(f"before {name}"),
            after=lambda: log.append(f"after {name}"),
        )

    timings = harness.run_interleaved(
        [variant("x"), variant("y"), variant("z")], rounds=5, warmup_rounds=1
    )

    assert {name: len(values) for name, values in timings.per_unit_ns.items()} == {
        "x": 5,
        "y": 5,
        "z": 5,
    }
    loops = [entry for entry in log if " " not in entry]
    rounds = [tuple(loops[start : start + 3]) for start in range(0, len(loops), 3)]
    assert len(rounds) == 6
    assert all(sorted(order) == ["x", "y", "z"] for order in rounds)
    assert len(set(rounds)) > 1, "the order should change between rounds"
    for index, entry in enumerate(log):
        if " " not in entry:
            assert log[index - 1] == f"before {entry}"
            assert log[index + 1] == f"after {entry}"


def test_goal_verdicts_respect_inclusive_and_strict_limits(harness: ModuleType) -> None:
    assert harness.Goal("at the limit", 1.15, 1.15).verdict == "PASS"
    assert harness.Goal("over the limit", 1.16, 1.15).verdict == "NOT MET"
    assert harness.Goal("at a strict limit", 1.0, 1.0, strict=True).verdict == "NOT MET"
    assert harness.Goal("under a strict limit", 0.99, 1.0, strict=True).verdict == "PASS"
