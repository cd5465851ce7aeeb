"""The approvals example runs and shows what it promises."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "approvals.py"


def test_the_example_runs_and_shows_each_decision() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    for refusal in (
        "approval_self_approval",
        "approval_unauthorized_delegate",
        "approval_scope_mismatch",
        "approval_already_consumed",
    ):
        assert f"reason={refusal}" in output
    assert "alice@example.com (approved) -> deploy-agent (executor) -> release-agent" in output
    assert "refused: another version: approval_scope_mismatch" in output
    assert output.count("otel_bounded.approval.") == 10
