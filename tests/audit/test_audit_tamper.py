"""Verification detects every edit, deletion, duplication, reordering and truncation, every time."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bounded.audit import Failure, read_records, verify
from otel_bounded.audit.format import checkpoint_message, parse_line
from tests.audit.helpers import KEY, OTHER_KEY, copy_log, segment_files, small_log

PUBLIC = [KEY.public_key()]


def _build(path: Path, records: int, max_bytes: int) -> Path:
    log = small_log(path, max_bytes=max_bytes)
    for index in range(records):
        log.append("token.revoke", {"token_id": f"id{index:04d}", "note": "é\t\n" * (index % 5)})
        if index % 40 == 0:
            assert log.flush()
    log.close()
    # Opened and closed again: an open record, and a segment after it.
    log = small_log(path, max_bytes=max_bytes)
    log.append("approval.consume", {"otel_bounded.approval.id": "a1"})
    log.close()
    assert verify(path, PUBLIC).ok
    return path


@pytest.fixture(scope="module")
def retained_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several segments, the oldest removed under max_bytes (declared by retention records)."""
    path = _build(tmp_path_factory.mktemp("retained") / "log", 160, 5 * 4096)
    report = verify(path, PUBLIC)
    assert report.first_seq
    assert report.segments >= 4
    return path


@pytest.fixture(scope="module")
def whole_log(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Several segments from record 0 on."""
    path = _build(tmp_path_factory.mktemp("whole") / "log", 60, 1 << 20)
    report = verify(path, PUBLIC)
    assert report.first_seq == 0
    assert report.segments >= 3
    return path


@pytest.fixture
def scratch() -> Iterator[Path]:
    directory = Path(tempfile.mkdtemp(prefix="audit-tamper-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# -- mutations: each returns False when it would change nothing -----------------


def _lines(file: Path) -> list[bytes]:
    return file.read_bytes().split(b"\n")[:-1]


def _write_lines(file: Path, lines: list[bytes]) -> None:
    file.write_bytes(b"".join(line + b"\n" for line in lines))


def edit_bytes(files: list[Path], data: st.DataObject) -> bool:
    file = data.draw(st.sampled_from(files))
    content = bytearray(file.read_bytes())
    start = data.draw(st.integers(0, len(content) - 1))
    length = data.draw(st.integers(1, min(8, len(content) - start)))
    replacement = data.draw(st.binary(min_size=length, max_size=length))
    if bytes(content[start : start + length]) == replacement:
        return False
    content[start : start + length] = replacement
    file.write_bytes(bytes(content))
    return True


def delete_record(files: list[Path], data: st.DataObject) -> bool:
    file = data.draw(st.sampled_from(files))
    lines = _lines(file)
    del lines[data.draw(st.integers(0, len(lines) - 1))]
    _write_lines(file, lines)
    return True


def duplicate_record(files: list[Path], data: st.DataObject) -> bool:
    file = data.draw(st.sampled_from(files))
    lines = _lines(file)
    source = data.draw(st.integers(0, len(lines) - 1))
    lines.insert(data.draw(st.integers(0, len(lines))), lines[source])
    _write_lines(file, lines)
    return True


def reorder_records(files: list[Path], data: st.DataObject) -> bool:
    file = data.draw(st.sampled_from(files))
    lines = _lines(file)
    if len(lines) < 2:
        return False
    first = data.draw(st.integers(0, len(lines) - 2))
    second = data.draw(st.integers(first + 1, len(lines) - 1))
    lines[first], lines[second] = lines[second], lines[first]
    _write_lines(file, lines)
    return True


def move_record_across_segments(files: list[Path], data: st.DataObject) -> bool:
    source, target = data.draw(st.permutations(files))[:2]
    lines = _lines(source)
    moved = lines.pop(data.draw(st.integers(0, len(lines) - 1)))
    _write_lines(source, lines)
    target_lines = _lines(target)
    target_lines.insert(data.draw(st.integers(0, len(target_lines))), moved)
    _write_lines(target, target_lines)
    return True


def truncate(files: list[Path], data: st.DataObject) -> bool:
    file = data.draw(st.sampled_from(files))
    content = file.read_bytes()
    file.write_bytes(content[: data.draw(st.integers(0, len(content) - 1))])
    return True


def delete_byte_range(files: list[Path], data: st.DataObject) -> bool:
    file = data.draw(st.sampled_from(files))
    content = file.read_bytes()
    start = data.draw(st.integers(0, len(content) - 1))
    end = data.draw(st.integers(start + 1, len(content)))
    file.write_bytes(content[:start] + content[end:])
    return True


def delete_segment(files: list[Path], data: st.DataObject) -> bool:
    data.draw(st.sampled_from(files)).unlink()
    return True


MUTATIONS = [
    edit_bytes,
    delete_record,
    duplicate_record,
    reorder_records,
    move_record_across_segments,
    truncate,
    delete_byte_range,
    delete_segment,
]


@settings(max_examples=300, deadline=None)
@given(data=st.data())
def test_every_random_tampering_is_detected(
    retained_log: Path, whole_log: Path, data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from([retained_log, whole_log]), label="log")
    with tempfile.TemporaryDirectory(prefix="audit-tamper-") as directory:
        _tamper_and_verify(base, copy_log(base, Path(directory) / "log"), data)


def _tamper_and_verify(base: Path, target: Path, data: st.DataObject) -> None:
    mutation = data.draw(st.sampled_from(MUTATIONS), label="mutation")
    if not mutation(segment_files(target), data):
        return
    report = verify(target, PUBLIC)
    assert not report.ok, f"{mutation.__name__} was not detected"
    # Allow-open accepts a crash's missing tail, never anything inside the log.
    if mutation is not truncate and mutation is not delete_segment:
        assert not verify(target, PUBLIC, allow_open=True).ok or _only_tail_lost(base, target)


def _only_tail_lost(base: Path, target: Path) -> bool:
    """Whether `target` is `base` minus some whole records at its very end (a crash's loss)."""
    original = b"".join(file.read_bytes() for file in segment_files(base))
    now = b"".join(file.read_bytes() for file in segment_files(target))
    complete = now[: now.rfind(b"\n") + 1]  # a torn last line is a crash's, not a record
    return original.startswith(complete)


# -- each failure named ----------------------------------------------------------


def _copy(base: Path, scratch: Path) -> tuple[Path, list[Path]]:
    target = copy_log(base, scratch / "log")
    return target, segment_files(target)


def test_an_edited_record_is_named_edited(whole_log: Path, scratch: Path) -> None:
    target, files = _copy(whole_log, scratch)
    lines = _lines(files[1])
    lines[2] = lines[2].replace(b"id", b"ID", 1)
    _write_lines(files[1], lines)
    problem = verify(target, PUBLIC).problem
    assert problem is not None
    assert problem.failure == Failure.EDITED
    assert (problem.segment, problem.line) == (files[1].name, 3)
    assert problem.seq == parse_line(lines[2]).seq


def test_a_removed_record_is_named_removed(whole_log: Path, scratch: Path) -> None:
    target, files = _copy(whole_log, scratch)
    lines = _lines(files[1])
    removed = parse_line(lines.pop(3)).seq
    _write_lines(files[1], lines)
    problem = verify(target, PUBLIC).problem
    assert problem is not None
    assert problem.failure == Failure.REMOVED
    assert problem.seq == removed


def test_swapped_records_are_named_reordered(whole_log: Path, scratch: Path) -> None:
    target, files = _copy(whole_log, scratch)
    lines = _lines(files[1])
    lines[2], lines[4] = lines[4], lines[2]
    _write_lines(files[1], lines)
    problem = verify(target, PUBLIC).problem
    assert problem is not None
    assert problem.failure in (Failure.REMOVED, Failure.REORDERED)


def test_a_cut_end_is_named_truncated(whole_log: Path, scratch: Path) -> None:
    target, files = _copy(whole_log, scratch)
    lines = _lines(files[-1])
    _write_lines(files[-1], lines[:-1])
    problem = verify(target, PUBLIC).problem
    assert problem is not None
    assert problem.failure == Failure.TRUNCATED
    # A crash's missing tail is what allow_open accepts, and reports.
    report = verify(target, PUBLIC, allow_open=True)
    assert report.ok
    assert not report.closed


def test_the_oldest_segment_removed_without_retention_is_named_removed(
    retained_log: Path, scratch: Path
) -> None:
    target, files = _copy(retained_log, scratch)
    files[0].unlink()
    problem = verify(target, PUBLIC).problem
    assert problem is not None
    assert problem.failure == Failure.REMOVED
    assert "no retention record" in problem.detail


def _rewrite_chain(file: Path, edit_line: int, previous: bytes, resign: bool) -> None:
    """An attacker without the key: edit one record, then recompute every hash after it."""
    lines = _lines(file)
    out = []
    for number, line in enumerate(lines):
        parsed = parse_line(line)
        body = parsed.body
        if number == edit_line:
            body = body.replace(b"id", b"ID", 1)
        if number >= edit_line and parsed.kind == "checkpoint" and resign:
            payload = json.loads(parsed.payload)
            payload["chain"] = previous.hex()
            payload["sig"] = OTHER_KEY.sign(
                checkpoint_message(payload["through"], payload["chain"], payload["reason"])
            ).hex()
            text = json.dumps(payload, separators=(",", ":"))
            body = b"\t".join([*body.split(b"\t", 3)[:3], text.encode()])
        digest = hashlib.sha256(previous + body).digest()
        out.append(body + b"\t" + digest.hex().encode())
        previous = digest
    _write_lines(file, out)


@pytest.mark.parametrize("resign", [False, True])
def test_a_recomputed_chain_fails_at_its_checkpoint(
    whole_log: Path, scratch: Path, resign: bool
) -> None:
    target, files = _copy(whole_log, scratch)
    last = files[-1]
    before = files[-2].read_bytes().split(b"\n")[-2]
    previous = bytes.fromhex(parse_line(before).hash_hex.decode())
    _rewrite_chain(last, 0, previous, resign)
    problem = verify(target, PUBLIC).problem
    assert problem is not None
    assert problem.failure == Failure.BAD_CHECKPOINT


def test_a_key_other_than_the_writers_fails_every_checkpoint(whole_log: Path) -> None:
    problem = verify(whole_log, [OTHER_KEY.public_key()]).problem
    assert problem is not None
    assert problem.failure == Failure.BAD_CHECKPOINT
    assert "not a key you gave" in problem.detail


def test_an_unsigned_log_fails_when_a_key_is_given(tmp_path: Path) -> None:
    log = small_log(tmp_path / "log", key=None)
    log.append("token.revoke", {"token_id": "x"})
    log.close()
    report = verify(tmp_path / "log")
    assert report.ok
    assert not report.signed
    problem = verify(tmp_path / "log", PUBLIC).problem
    assert problem is not None
    assert problem.failure == Failure.BAD_CHECKPOINT


def test_a_rollback_to_an_earlier_close_is_caught_only_by_a_witness(scratch: Path) -> None:
    path = scratch / "log"
    log = small_log(path)
    for index in range(20):
        log.append("token.revoke", {"i": index})
    log.close()
    earlier = verify(path, PUBLIC)
    log = small_log(path)
    log.append("token.revoke", {"i": "later"})
    log.close()
    later = verify(path, PUBLIC)
    assert later.ok
    assert later.last_checkpoint is not None
    assert earlier.last_checkpoint is not None
    assert earlier.last_seq is not None

    # Roll back: cut the log at its earlier closing checkpoint, drop what followed.
    for file in segment_files(path):
        lines = _lines(file)
        kept = [line for line in lines if parse_line(line).seq <= earlier.last_seq]
        if kept:
            _write_lines(file, kept)
        else:
            file.unlink()

    # The files alone cannot tell: this is a log as it once was, closed and signed.
    assert verify(path, PUBLIC).ok
    report = verify(path, PUBLIC, witnesses=[later.last_checkpoint])
    assert report.problem is not None
    assert report.problem.failure == Failure.TRUNCATED
    assert "rolled back" in report.problem.detail
    assert verify(path, PUBLIC, witnesses=[earlier.last_checkpoint]).witnesses_checked == 1


def test_a_rewritten_log_fails_its_witness(whole_log: Path, scratch: Path) -> None:
    report = verify(whole_log, PUBLIC)
    assert report.last_checkpoint is not None
    seq, chain = report.last_checkpoint
    forged = chain[:-1] + ("0" if chain[-1] != "0" else "1")
    problem = verify(whole_log, PUBLIC, witnesses=[(seq, forged)]).problem
    assert problem is not None
    assert problem.failure == Failure.EDITED
    assert problem.seq == seq


@settings(max_examples=12, deadline=None)
@given(data=st.data())
def test_parallel_verification_reports_exactly_what_one_process_does(
    retained_log: Path, whole_log: Path, data: st.DataObject
) -> None:
    base = data.draw(st.sampled_from([retained_log, whole_log]), label="log")
    with tempfile.TemporaryDirectory(prefix="audit-parallel-") as directory:
        target = copy_log(base, Path(directory) / "log")
        if data.draw(st.booleans(), label="tamper"):
            data.draw(st.sampled_from(MUTATIONS), label="mutation")(segment_files(target), data)
        allow_open = data.draw(st.booleans(), label="allow_open")
        alone = verify(target, PUBLIC, allow_open=allow_open, workers=1)
        assert verify(target, PUBLIC, allow_open=allow_open, workers=2) == alone


def test_a_log_whose_first_record_left_is_a_checkpoint_verifies(scratch: Path) -> None:
    path = scratch / "log"
    for _ in range(6):  # each open starts a segment that the next close begins with a checkpoint
        small_log(path, max_bytes=2 * 4096).close()
    report = verify(path, PUBLIC)
    assert report.ok, report.problem
    first = next(iter(read_records(path)))
    assert (first.seq, first.kind) == (report.first_seq, "checkpoint")
    assert report.first_seq

    # What that checkpoint states must still be what the retention record states.
    [segment] = [f for f in segment_files(path) if f.name.endswith(f"{first.seq:020d}.audit")]
    lines = _lines(segment)
    payload = json.loads(parse_line(lines[0]).payload)
    payload["chain"] = "0" * 64
    body = b"\t".join(
        [*parse_line(lines[0]).body.split(b"\t", 3)[:3], json.dumps(payload).encode()]
    )
    problem = _rechained_first(path, segment, lines, body)
    assert problem is not None
    assert problem.failure in (Failure.BAD_CHECKPOINT, Failure.EDITED)


def _rechained_first(path: Path, segment: Path, lines: list[bytes], body: bytes) -> object:
    """Replace the first record without its key: its hash as the retention record's chain gives."""
    retention = [r for r in read_records(path) if r.kind == "retention"][-1].payload
    digest = hashlib.sha256(bytes.fromhex(retention["chain"]) + body).digest()
    previous = digest
    out = [body + b"\t" + digest.hex().encode()]
    for line in lines[1:]:
        rest = parse_line(line).body
        previous = hashlib.sha256(previous + rest).digest()
        out.append(rest + b"\t" + previous.hex().encode())
    _write_lines(segment, out)
    return verify(path, PUBLIC).problem
