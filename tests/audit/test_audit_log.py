"""AuditLog: what is appended is on disk, in order, under the cap, and never silently lost."""

from __future__ import annotations

import logging
import math
import os
import threading
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from otel_bounded import telemetry
from otel_bounded.audit import verify
from otel_bounded.audit.format import Kind
from otel_bounded.errors import AuditLogError
from otel_bounded.telemetry import AuditDropReason, AuditOmitReason
from tests.audit.helpers import (
    KEY,
    SEGMENT,
    disk_bytes,
    records_of,
    segment_files,
    small_log,
    user_records,
)
from tests.support import FakeClock

HOSTILE = ["\t", "\n", "\r\n", "\u2028", "\x00", "\u202e", "\ud800", "\udfff", "é", "\ufeff", '"']
any_text = st.one_of(
    st.text(max_size=40),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=40),
    st.sampled_from(HOSTILE),
)
json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    any_text,
)
json_value = st.recursive(
    json_scalar,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(any_text, inner, max_size=4),
    max_leaves=12,
)
kinds = st.sampled_from(["trace.evicted", "token.revoke", "approval.consume", "x", "a.b_c.d9"])
entries = st.lists(st.tuples(kinds, st.dictionaries(any_text, json_value, max_size=5)), max_size=60)

_SETTINGS = settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _fresh(tmp_path: Path, name: str) -> Path:
    base = tmp_path / name
    index = 0
    while (base.parent / f"{base.name}-{index}").exists():
        index += 1
    return base.parent / f"{base.name}-{index}"


@_SETTINGS
@given(entries=entries)
def test_every_append_is_read_back_in_order_and_the_closed_log_verifies(
    tmp_path: Path, entries: list[tuple[str, dict[str, Any]]]
) -> None:
    path = _fresh(tmp_path, "log")
    log = small_log(path, max_bytes=1 << 20, segment_bytes=1 << 18)
    for kind, payload in entries:
        log.append(kind, payload)
    log.close()

    assert user_records(path) == entries
    report = verify(path, [KEY.public_key()])
    assert report.ok, report.problem
    assert report.closed
    assert report.signed
    assert report.pinned
    assert report.kinds.get(Kind.GAP, 0) == 0
    assert sum(n for kind, n in report.kinds.items() if kind not in Kind.__dict__.values()) == len(
        entries
    )


@_SETTINGS
@given(sizes=st.lists(st.integers(min_value=0, max_value=1500), min_size=1, max_size=120))
def test_disk_never_holds_more_than_max_bytes_and_retention_is_declared(
    tmp_path: Path, sizes: list[int]
) -> None:
    path = _fresh(tmp_path, "capped")
    max_bytes = 3 * SEGMENT
    log = small_log(path, max_bytes=max_bytes)
    for index, size in enumerate(sizes):
        log.append("token.revoke", {"i": index, "pad": "x" * size})
        if index % 7 == 0:
            assert log.flush()
            assert disk_bytes(path) <= max_bytes
    log.close()
    assert disk_bytes(path) <= max_bytes

    report = verify(path, [KEY.public_key()])
    assert report.ok, report.problem
    kept = [payload["i"] for kind, payload in user_records(path)]
    # What is left is the newest, contiguous: exactly what was appended after the cut.
    assert kept == list(range(len(sizes) - len(kept), len(sizes)))
    if report.first_seq:
        declared = [item["removed_through"] for item in report.retention]
        assert report.first_seq - 1 in declared
        assert log.telemetry_counts().segments_removed > 0
    else:
        assert kept == list(range(len(sizes)))


def test_an_oversize_payload_is_kept_as_its_size_and_hash(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log")
    log.append("trace.evicted", {"trace_id": "ab" * 16, "spans": ["y" * 10_000]})
    log.close()
    [payload] = records_of(tmp_path / "log", "trace.evicted")
    assert payload["omitted"] == AuditOmitReason.TOO_LARGE
    assert payload["trace_id"] == "ab" * 16
    assert payload["payload_bytes"] > 10_000
    assert len(payload["payload_sha256"]) == 64
    assert log.telemetry_counts().omitted[AuditOmitReason.TOO_LARGE] == 1
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


def test_append_never_raises_and_every_refusal_is_in_the_chain(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log")
    bad_kinds: list[Any] = ["", "Upper", "a\tb", "checkpoint", "gap", "x" * 65, 7, None]
    for kind in bad_kinds:
        log.append(kind, {"v": 1})
    log.append("token.revoke", {"nan": math.nan})
    log.append("token.revoke", {"object": object()})
    log.append("token.revoke", {"deferred": lambda: 1 / 0})
    log.append("token.revoke", {"deferred": lambda: [1, 2]})
    log.append("token.revoke", [1, 2])  # type: ignore[arg-type]
    log.append("token.revoke", MappingProxyType({"read_only": True}))
    log.close()

    gaps = records_of(tmp_path / "log", Kind.GAP)
    assert sum(gap["by_reason"].get(AuditDropReason.INVALID_KIND, 0) for gap in gaps) == len(
        bad_kinds
    )
    revokes = records_of(tmp_path / "log", "token.revoke")
    assert revokes[:3] == [{"omitted": AuditOmitReason.UNENCODABLE}] * 3
    assert revokes[3:] == [
        {"deferred": [1, 2]},
        {"omitted": AuditOmitReason.UNENCODABLE},
        {"read_only": True},
    ]
    counts = log.telemetry_counts()
    assert counts.dropped[AuditDropReason.INVALID_KIND] == len(bad_kinds)
    assert counts.omitted[AuditOmitReason.UNENCODABLE] == 4
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


def test_a_full_queue_is_counted_and_written_as_one_gap_with_its_count(tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    def blocking() -> str:
        entered.set()
        assert release.wait(10)
        return "released"

    log = small_log(tmp_path / "log", queue_size=8, max_bytes=1 << 20, segment_bytes=1 << 18)
    log.append("token.revoke", {"first": blocking})
    assert entered.wait(10)  # the writer is now busy with the first record
    accepted = [f"a{i}" for i in range(8)]
    for name in accepted:
        log.append("token.revoke", {"name": name})
    refused = 5
    for i in range(refused):
        log.append("token.revoke", {"name": f"refused{i}"})
    assert log.telemetry_counts().dropped[AuditDropReason.QUEUE_FULL] == refused
    release.set()
    assert log.flush()
    log.append("token.sweep", {"after": True})
    log.close()

    kinds = [(kind, payload) for kind, payload in user_records(tmp_path / "log")]
    names = [payload.get("name") for kind, payload in kinds if kind == "token.revoke"]
    assert names[1:] == accepted
    assert "refused0" not in str(kinds)
    [gap] = records_of(tmp_path / "log", Kind.GAP)
    assert gap == {"dropped": refused, "by_reason": {AuditDropReason.QUEUE_FULL: refused}}
    report = verify(tmp_path / "log", [KEY.public_key()])
    assert report.ok
    assert (report.gaps, report.dropped) == (1, refused)


def test_appends_after_close_are_counted_not_written(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log")
    log.close()
    log.append("token.revoke", {"late": True})
    assert log.telemetry_counts().dropped[AuditDropReason.CLOSED] == 1
    assert user_records(tmp_path / "log") == []
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


def test_a_second_writer_on_the_same_directory_is_refused(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log")
    with pytest.raises(AuditLogError, match="one writer"):
        small_log(tmp_path / "log")
    log.close()
    small_log(tmp_path / "log").close()
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


def test_a_forked_child_never_writes_its_parents_log(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log")
    log.append("token.revoke", {"who": "parent-before"})
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            log.append("token.revoke", {"who": "child"})
            counts = log.telemetry_counts()
            log.close()
            os.write(write_fd, str(counts.dropped[AuditDropReason.FORKED]).encode())
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child_forked = pipe.read()
    os.waitpid(pid, 0)
    log.append("token.revoke", {"who": "parent-after"})
    log.close()
    assert child_forked == "1"
    assert [p["who"] for _, p in user_records(tmp_path / "log")] == [
        "parent-before",
        "parent-after",
    ]
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


def test_times_come_from_the_injected_clock_even_when_it_steps_back(tmp_path: Path) -> None:
    clock = FakeClock(1_000.0)
    log = small_log(tmp_path / "log", clock=clock)
    log.append("token.revoke", {"n": 1})
    clock.now = 500.0
    log.append("token.revoke", {"n": 2})
    log.close()
    from otel_bounded.audit import read_records

    times = [r.time for r in read_records(tmp_path / "log") if r.kind == "token.revoke"]
    assert times == [1_000.0, 500.0]
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


def test_every_audit_series_is_reported_from_zero(tmp_path: Path) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    log = small_log(tmp_path / "log", meter_provider=provider)
    data = reader.get_metrics_data()
    points: dict[str, list[Any]] = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                points[metric.name] = list(metric.data.data_points)
    on_disk = disk_bytes(tmp_path / "log")
    log.close()
    dropped = {
        p.attributes[telemetry.DROP_REASON]: p.value for p in points[telemetry.AUDIT_DROPPED]
    }
    assert dropped == dict.fromkeys(AuditDropReason.ALL, 0)
    omitted = {
        p.attributes[telemetry.AUDIT_OMIT_REASON]: p.value
        for p in points[telemetry.AUDIT_PAYLOADS_OMITTED]
    }
    assert omitted == dict.fromkeys(AuditOmitReason.ALL, 0)
    for name in (
        telemetry.AUDIT_SEGMENTS_REMOVED,
        telemetry.AUDIT_RECORDS_REMOVED,
        telemetry.AUDIT_TORN_TAILS,
        telemetry.AUDIT_WRITE_ERRORS,
    ):
        assert [p.value for p in points[name]] == [0], name
    assert [p.value for p in points[telemetry.AUDIT_BYTES]] == [on_disk]


@pytest.mark.parametrize(
    ("argument", "value"),
    [
        ("segment_bytes", 100),
        ("max_bytes", SEGMENT),
        ("queue_size", 0),
        ("checkpoint_every", 0),
        ("fsync", "sometimes"),
        ("flush_interval_seconds", 0),
        ("checkpoint_interval_seconds", math.inf),
        ("key", "not a key"),
        ("key", b"short"),
    ],
)
def test_invalid_arguments_raise_value_error_without_quoting_a_key(
    tmp_path: Path, argument: str, value: object
) -> None:
    with pytest.raises(ValueError, match=r"\w") as raised:
        small_log(tmp_path / "log", **{argument: value})
    if argument == "key":
        assert "not a key" not in str(raised.value)


def test_the_log_directory_and_segments_are_private(tmp_path: Path) -> None:
    small_log(tmp_path / "log").close()
    assert (tmp_path / "log").stat().st_mode & 0o077 == 0
    for file in segment_files(tmp_path / "log"):
        assert file.stat().st_mode & 0o077 == 0


def test_close_is_idempotent_and_logs_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="otel_bounded")
    log = small_log(tmp_path / "log")
    log.close()
    log.close()
    assert caplog.records == []
    assert len(records_of(tmp_path / "log", Kind.CHECKPOINT)) == 1


def test_a_live_forked_child_does_not_keep_the_log_locked(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log")
    go_read, go_write = os.pipe()
    ready_read, ready_write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.write(ready_write, b"r")
            os.read(go_read, 1)
        finally:
            os._exit(0)
    try:
        assert os.read(ready_read, 1) == b"r"
        log.close()
        small_log(tmp_path / "log").close()  # AuditLogError if the child held the lock
    finally:
        os.write(go_write, b"g")
        os.waitpid(pid, 0)
        for fd in (go_read, go_write, ready_read, ready_write):
            os.close(fd)
    assert verify(tmp_path / "log", [KEY.public_key()]).ok


@_SETTINGS
@given(every=st.integers(1, 12), count=st.integers(0, 60))
def test_no_more_than_checkpoint_every_records_go_unsealed(
    tmp_path: Path, every: int, count: int
) -> None:
    from otel_bounded.audit import read_records

    path = _fresh(tmp_path, "sealed")
    release = threading.Event()
    log = small_log(
        path,
        checkpoint_every=every,
        checkpoint_interval_seconds=1e9,
        max_bytes=1 << 20,
        segment_bytes=1 << 18,
    )
    log.append("token.revoke", {"hold": lambda: release.wait(10)})
    for index in range(count):
        log.append("token.revoke", {"i": index})
    release.set()  # the writer now finds every record queued at once
    log.close()
    run = longest = 0
    for record in read_records(path):
        if record.kind == Kind.CHECKPOINT:
            run = 0
        elif record.kind == "token.revoke":
            run += 1
            longest = max(longest, run)
    assert longest <= every
    assert verify(path, [KEY.public_key()]).ok


operations = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(0, 1200)),
        st.tuples(st.just("flush"), st.just(0)),
        st.tuples(st.just("reopen"), st.sampled_from([3, 4, 6, 8])),
    ),
    max_size=80,
)


@_SETTINGS
@given(steps=operations)
def test_across_reopens_and_smaller_caps_the_newest_records_stay_whole_and_under_the_cap(
    tmp_path: Path, steps: list[tuple[str, int]]
) -> None:
    path = _fresh(tmp_path, "reopened")
    segments = 6
    log = small_log(path, max_bytes=segments * SEGMENT)
    appended = 0
    for operation, argument in steps:
        if operation == "append":
            log.append("token.revoke", {"i": appended, "pad": "p" * argument})
            appended += 1
        elif operation == "flush":
            assert log.flush()
            assert disk_bytes(path) <= segments * SEGMENT
        else:
            log.close()
            segments = argument
            log = small_log(path, max_bytes=segments * SEGMENT)
            assert disk_bytes(path) <= segments * SEGMENT
    log.close()
    assert disk_bytes(path) <= segments * SEGMENT

    report = verify(path, [KEY.public_key()])
    assert report.ok, report.problem
    kept = [payload["i"] for _, payload in user_records(path)]
    assert kept == list(range(appended - len(kept), appended))
    if kept[:1] != [0] and appended:
        assert report.first_seq
        assert report.first_seq - 1 in [item["removed_through"] for item in report.retention]
