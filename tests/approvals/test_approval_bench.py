"""The approval benchmark runs end to end on every store it finds; no timing is asserted."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_a_tiny_run_judges_a_goal_for_every_store(monkeypatch: pytest.MonkeyPatch) -> None:
    # bench/ holds scripts, not a package: import them the way `python bench/x.py` does.
    monkeypatch.syspath_prepend(str(BENCH))
    bench = importlib.import_module("approvals")
    rows, goals = bench.run(rounds=1, calls=3)
    labels = [goal.label for goal in goals]
    assert labels[:2] == ["memory consume / peer", "SQLite consume / peer"]
    assert len(rows) == 2 * len(goals)
    assert all(goal.value > 0 for goal in goals)
