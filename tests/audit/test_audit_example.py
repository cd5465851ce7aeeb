"""The audit example runs, records what it promises, and its log verifies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "audit.py"


def test_the_example_records_evictions_a_revocation_and_decisions_and_verifies(
    tmp_path: Path,
) -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLE), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    kinds = [line.split()[1] for line in result.stdout.splitlines() if line[:4].strip().isdigit()]
    assert kinds == [
        "genesis",
        "trace.evicted",
        "trace.evicted",
        "token.revoke",
        "approval.request",
        "approval.approve",
        "approval.consume",
        "checkpoint",
    ]
    assert "verify: OK; 8 records" in result.stdout
    command = result.stdout.strip().splitlines()[-1].split()
    assert command[:3] == ["otel-bounded", "audit", "verify"]
    again = subprocess.run(
        [str(Path(sys.executable).with_name("otel-bounded")), *command[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert again.returncode == 0, again.stdout
    assert again.stdout.startswith("OK: the log verifies")
