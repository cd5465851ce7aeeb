"""The audit benchmark runs end to end and judges every goal; no timing is asserted."""

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
    return importlib.import_module("audit")


def test_each_part_reports_ours_and_the_peer_and_one_goal(
    bench: ModuleType, tmp_path: Path
) -> None:
    rows, goals = bench.bench_append(tmp_path, rounds=2)
    assert [row[0] for row in rows] == [bench.OURS_APPEND, bench.PEER_APPEND]
    assert len(goals) == 1
    assert goals[0].value > 0
    rows, goals = bench.bench_writer(tmp_path, records=300, rounds=1)
    assert len(rows) == 3
    assert goals[0].value > 0
    rows, goals = bench.bench_verify(tmp_path, records=300, rounds=1)
    assert "verify(302 records" in rows[0][0]
    assert goals[0].value > 0
