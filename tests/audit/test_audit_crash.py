"""kill -9 mid-write: the log verifies to its last complete record, and the next open seals it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random
import resource
import signal
from pathlib import Path

import pytest

from otel_bounded.audit import verify
from otel_bounded.audit.format import Kind, segment_name
from otel_bounded.errors import AuditLogError
from otel_bounded.telemetry import AuditDropReason
from tests.audit.helpers import KEY, records_of, segment_files, small_log, user_records

PUBLIC = [KEY.public_key()]
TRIALS = 16


def _write_until_killed(path: Path, report_fd: int, payload_bytes: int) -> None:
    """The child: append forever; after each flush, report the last index known written."""
    log = small_log(path, max_bytes=1 << 22, segment_bytes=1 << 18, flush_interval_seconds=0.001)
    index = 0
    while True:
        for _ in range(20):
            log.append("token.revoke", {"i": index, "pad": "p" * payload_bytes})
            index += 1
        log.flush()
        os.write(report_fd, f"{index - 1}\n".encode())


def _run_and_kill(path: Path, reports_before_kill: int, payload_bytes: int) -> int:
    """Fork a writer, kill -9 it after some reports; the last index it reported written."""
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read_fd)
            _write_until_killed(path, write_fd, payload_bytes)
        finally:
            os._exit(1)
    os.close(write_fd)
    acknowledged = -1
    with os.fdopen(read_fd, "rb") as reports:
        for _ in range(reports_before_kill):
            line = reports.readline()
            assert line, "the writer died before it was killed"
            acknowledged = int(line)
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status)
    assert os.WTERMSIG(status) == signal.SIGKILL
    return acknowledged


def test_kill_9_leaves_a_log_that_verifies_up_to_its_last_complete_record(
    tmp_path: Path,
) -> None:
    rng = random.Random(14)
    unclean = 0
    for trial in range(TRIALS):
        path = tmp_path / f"trial-{trial}"
        acknowledged = _run_and_kill(path, rng.randint(1, 4), rng.choice([10, 2_000, 30_000]))

        # As the crash left it: every acknowledged record, then a prefix of the rest.
        report = verify(path, PUBLIC, allow_open=True)
        assert report.ok, (trial, report.problem)
        assert not report.closed
        indices = [payload["i"] for _, payload in user_records(path)]
        assert indices == list(range(len(indices)))
        assert len(indices) > acknowledged

        # Opened again: the tail is sealed over, the chain continues, and closes.
        log = small_log(path, max_bytes=1 << 22, segment_bytes=1 << 18)
        log.append("token.revoke", {"i": "after"})
        log.close()
        report = verify(path, PUBLIC)
        assert report.ok, (trial, report.problem)
        assert report.closed
        [opened] = records_of(path, Kind.OPEN)
        assert opened["previous_closed"] is False
        unclean += report.unclean_opens
        after = [payload["i"] for _, payload in user_records(path)]
        assert after == [*indices, "after"]
    assert unclean == TRIALS


def _closed_log(path: Path) -> None:
    log = small_log(path)
    for index in range(30):
        log.append("token.revoke", {"i": index})
    log.close()


def test_a_torn_tail_is_reported_counted_and_sealed_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "log"
    _closed_log(path)
    torn = b'17\t1700000000.0\ttoken.revoke\t{"i":'
    with open(segment_files(path)[-1], "ab") as file:
        file.write(torn)
    assert not verify(path, PUBLIC).ok

    caplog.set_level(logging.WARNING, logger="otel_bounded")
    log = small_log(path)
    assert log.telemetry_counts().torn_tails == 1
    log.close()

    [warning] = [r for r in caplog.records if "torn" in r.getMessage()]
    assert f"{len(torn)} torn bytes" in warning.getMessage()
    [opened] = records_of(path, Kind.OPEN)
    assert opened["torn_bytes"] == len(torn)
    assert opened["torn_sha256"] == hashlib.sha256(torn).hexdigest()
    assert opened["previous_closed"] is False
    report = verify(path, PUBLIC)
    assert report.ok, report.problem
    assert report.torn_bytes_sealed == len(torn)
    assert [payload["i"] for _, payload in user_records(path)] == list(range(30))


def test_damage_inside_the_newest_segment_is_refused_and_left_as_it_is(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _closed_log(path)
    newest = segment_files(path)[-1]
    lines = newest.read_bytes().split(b"\n")
    lines[1] = lines[1].replace(b"token", b"TOKEN", 1)
    newest.write_bytes(b"\n".join(lines))
    before = {file.name: file.read_bytes() for file in segment_files(path)}

    with pytest.raises(AuditLogError, match="damaged or edited"):
        small_log(path)
    assert {file.name: file.read_bytes() for file in segment_files(path)} == before


def test_an_empty_segment_left_by_a_crash_after_rotation_is_dropped(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _closed_log(path)
    report = verify(path, PUBLIC)
    assert report.last_seq is not None
    (path / segment_name(report.last_seq + 1)).write_bytes(b"")

    small_log(path).close()
    report = verify(path, PUBLIC)
    assert report.ok, report.problem
    assert [payload["i"] for _, payload in user_records(path)] == list(range(30))


def test_a_clean_close_then_open_is_recorded_as_clean(tmp_path: Path) -> None:
    path = tmp_path / "log"
    _closed_log(path)
    small_log(path).close()
    [opened] = records_of(path, Kind.OPEN)
    assert opened["previous_closed"] is True
    assert opened["torn_bytes"] == 0
    report = verify(path, PUBLIC)
    assert report.ok
    assert (report.opens, report.unclean_opens) == (1, 0)


def test_a_disk_that_refuses_writes_costs_a_counted_gap_record_never_the_chain(
    tmp_path: Path,
) -> None:
    """A real refusal: the file size limit (RLIMIT_FSIZE) makes write(2) fail with EFBIG."""
    path = tmp_path / "log"
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover (the child)
        try:
            os.close(read_fd)
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            log = small_log(path, max_bytes=1 << 20, segment_bytes=1 << 16)
            for index in range(5):
                log.append("token.revoke", {"i": index})
            log.flush()
            soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
            full = segment_files(path)[-1].stat().st_size + 10
            resource.setrlimit(resource.RLIMIT_FSIZE, (full, hard))
            for index in range(5, 15):
                log.append("token.revoke", {"i": index})
                log.flush()
            refused = log.telemetry_counts()
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            log.append("token.revoke", {"i": 15})
            log.close()
            os.write(
                write_fd,
                json.dumps(
                    {
                        "dropped": refused.dropped[AuditDropReason.WRITE_ERROR],
                        "errors": refused.write_errors,
                    }
                ).encode(),
            )
        finally:
            os._exit(0)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        child = json.loads(pipe.read())
    os.waitpid(pid, 0)

    assert child["dropped"] == 10
    assert child["errors"] >= 1
    assert [payload["i"] for _, payload in user_records(path)] == [0, 1, 2, 3, 4, 15]
    gaps = records_of(path, Kind.GAP)
    assert gaps == [{"dropped": 10, "by_reason": {AuditDropReason.WRITE_ERROR: 10}}]
    report = verify(path, PUBLIC)
    assert report.ok, report.problem
    assert report.dropped == 10
