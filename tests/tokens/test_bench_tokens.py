"""bench/tokens.py runs end to end and judges both goals; no timing is asserted here."""

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
    return importlib.import_module("tokens")


def test_verify_benchmark_times_every_variant_against_pyjwt(bench: ModuleType) -> None:
    rows, goals = bench.bench_verify(rounds=1)

    assert [row[0] for row in rows] == [
        bench.OURS,
        bench.OURS_DICT,
        bench.OURS_OBJECT,
        bench.OURS_DECODE,
        bench.PYJWT,
    ]
    assert rows[-1][2] == "1.000"
    assert [goal.label for goal in goals] == ["verified claims / PyJWT decode"]
    assert goals[0].value > 0


def test_sweep_benchmark_removes_exactly_the_expired_entries(bench: ModuleType) -> None:
    rows, goals = bench.bench_sweep(rounds=2, live=2_000)

    assert "2,000 live" in rows[0][0]
    assert goals[0].unit == " ms"
    assert goals[0].value > 0


def test_revoke_all_benchmark_revokes_every_token_and_judges_the_stall(
    bench: ModuleType,
) -> None:
    rows, goals = bench.bench_revoke_all(tokens=500)

    assert rows[0][0] == "memory"
    assert len(rows) == len(goals)
    assert all(goal.unit == " ms" for goal in goals)
    assert all(goal.limit == 50.0 for goal in goals)
