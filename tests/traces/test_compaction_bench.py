"""The compaction benchmark runs end to end and reports every figure; no timing is asserted."""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


@pytest.fixture
def bench(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    # bench/ holds scripts, not a package: import them the way `python bench/x.py` does.
    monkeypatch.syspath_prepend(str(BENCH))
    return importlib.import_module("compaction")


def test_a_tiny_run_measures_every_variant_and_judges_both_goals(bench: ModuleType) -> None:
    results = bench.run_benchmark(bench.Sizes(rounds=2, traces_per_loop=1))

    assert set(results.timings.per_unit_ns) == set(bench.VARIANTS)
    assert all(len(values) == 2 for values in results.timings.per_unit_ns.values())
    memory = results.memory
    assert memory.held_plain == bench.SPANS
    # The root, the first and the last call, and one composite of every call between:
    # what the store will hold.
    assert memory.held_compacted == 4
    assert memory.merged_entries == bench.CALLS - 3
    assert 0 < memory.compacted < memory.plain
    assert memory.member_arrays < memory.merged_arrays < memory.merged_dict
    assert [goal.verdict for goal in results.goals] == [
        "PASS" if goal.met else "NOT MET" for goal in results.goals
    ]
    report = bench.format_results(results, "python bench/compaction.py --tiny")
    for name in bench.VARIANTS:
        assert name in report
    for goal in results.goals:
        assert goal.label in report


def test_the_replayed_trace_compacts_to_the_root_the_first_and_last_call_and_one_composite(
    bench: ModuleType,
) -> None:
    records = bench.recorded_records()
    held = bench.TraceRecords(bench.CompactionPolicy())

    for record in records:
        held.add(record)

    assert len(records) == bench.SPANS
    assert [record[5] for record in held.records] == [
        "SELECT users",
        "SELECT users",
        "SELECT users",
        "handle_request",
    ]
