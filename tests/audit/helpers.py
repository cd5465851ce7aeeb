"""Shared helpers for the audit log tests: keys, small logs, and reading files back."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from otel_bounded.audit import AuditLog, read_records
from otel_bounded.audit.format import SYSTEM_KINDS

# Fixed, so that a failing example replays; the tests never use it anywhere else.
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
OTHER_KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
SEGMENT = 4096


def small_log(path: Path, **overrides: Any) -> AuditLog:
    """A signed log with the smallest segments, so a few records rotate and retain."""
    arguments: dict[str, Any] = {
        "max_bytes": 8 * SEGMENT,
        "segment_bytes": SEGMENT,
        "key": KEY,
        "flush_interval_seconds": 0.01,
    }
    arguments.update(overrides)
    return AuditLog(path, **arguments)


def user_records(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """(kind, payload) of every record an application appended, oldest first."""
    return [
        (record.kind, record.payload)
        for record in read_records(path)
        if record.kind not in SYSTEM_KINDS
    ]


def records_of(path: Path, kind: str) -> list[dict[str, Any]]:
    return [record.payload for record in read_records(path) if record.kind == kind]


def segment_files(path: Path) -> list[Path]:
    return sorted(path.glob("segment-*.audit"))


def disk_bytes(path: Path) -> int:
    return sum(file.stat().st_size for file in segment_files(path))


def all_bytes(path: Path) -> bytes:
    return b"".join(file.read_bytes() for file in segment_files(path))


def copy_log(source: Path, target: Path) -> Path:
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(".lock"))
    return target


def lines_by_segment(path: Path) -> Iterator[tuple[Path, list[bytes]]]:
    for file in segment_files(path):
        yield file, file.read_bytes().split(b"\n")[:-1]


def payloads(entries: list[tuple[str, Mapping[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
    return [(kind, dict(payload)) for kind, payload in entries]
