"""Offline verification of an audit log: from its files and a public key, nothing else.

`verify` walks every segment once, recomputing the hash chain, checking
sequence numbers, each segment's closing checkpoint, every signature, and
that anything missing from the start is declared by a signed retention
record. It stops at the first bad record and says what is wrong with it.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from otel_bounded.audit.format import (
    GENESIS_PREVIOUS,
    SEGMENT_PATTERN,
    CheckpointReason,
    Kind,
    checkpoint_message,
    key_id_of,
    parse_line,
    public_key_from_hex,
    retention_message,
    signature_valid,
)

__all__ = [
    "AuditRecord",
    "Failure",
    "Problem",
    "VerifyReport",
    "default_workers",
    "read_records",
    "verify",
]


class Failure:
    """What is wrong with the first bad record."""

    EDITED = "edited"
    REMOVED = "removed"
    REORDERED = "reordered"
    TRUNCATED = "truncated"
    BAD_CHECKPOINT = "bad checkpoint"


@dataclass(frozen=True)
class Problem:
    """The first bad record: where it is, what is wrong, and why verification says so."""

    failure: str
    segment: str
    line: int | None
    seq: int | None
    detail: str

    def __str__(self) -> str:
        where = f"record {self.seq}" if self.seq is not None else "the log"
        place = f"{self.segment}, line {self.line}" if self.line is not None else self.segment
        return f"{where} ({place}): {self.failure}: {self.detail}"


@dataclass(frozen=True)
class VerifyReport:
    """What verification found: counts, the time covered, and the first problem if any."""

    problem: Problem | None
    records: int = 0
    segments: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    first_time: float | None = None
    last_time: float | None = None
    checkpoints: int = 0
    retention: tuple[dict[str, Any], ...] = ()
    gaps: int = 0
    dropped: int = 0
    opens: int = 0
    unclean_opens: int = 0
    torn_bytes_sealed: int = 0
    key_ids: tuple[str, ...] = ()
    signed: bool = False
    pinned: bool = False
    closed: bool = False
    unsealed: int = 0
    torn_tail: int = 0
    kinds: dict[str, int] = field(default_factory=dict)
    last_checkpoint: tuple[int, str] | None = None
    """(through, chain) of the last checkpoint: keep it elsewhere, pass it as a witness later."""
    witnesses_checked: int = 0
    witnesses_unchecked: int = 0

    @property
    def ok(self) -> bool:
        return self.problem is None


class _Failed(Exception):
    def __init__(self, problem: Problem) -> None:
        self.problem = problem


_SYSTEM = {kind.encode("ascii") for kind in (Kind.GENESIS, Kind.OPEN, Kind.CHECKPOINT)} | {
    Kind.RETENTION.encode("ascii"),
    Kind.GAP.encode("ascii"),
}
_CHECKPOINT = Kind.CHECKPOINT.encode("ascii")


def list_segments(directory: Path) -> list[tuple[int, str]]:
    return sorted(
        (int(match.group(1)), name)
        for name in os.listdir(directory)
        if (match := SEGMENT_PATTERN.fullmatch(name))
    )


def verify(
    path: str | os.PathLike[str],
    keys: Sequence[Ed25519PublicKey] = (),
    *,
    allow_open: bool = False,
    witnesses: Sequence[tuple[int, str]] = (),
    workers: int = 1,
) -> VerifyReport:
    """Verify the log at `path`; `keys` pins the public keys checkpoints must be signed with.

    `witnesses` are (seq, chain hash) pairs seen before, say the last
    checkpoint of an earlier verification (`VerifyReport.last_checkpoint`),
    kept away from the log's host: the log must still reach each one with
    the same hash. That is what catches a rollback to an earlier state,
    which the files alone cannot show (a witness in the part removed by
    retention is counted as unchecked).

    `workers` > 1 checks segments in that many processes (forked: leave it
    at 1 inside an application with threads of its own); the report is the
    same either way. ``otel-bounded audit verify`` uses one per CPU for a log
    of 64 MiB or more (`default_workers`).

    Without `keys`, signatures are checked against the keys the log itself
    declares, which proves nothing against someone who rewrote it with a key of
    their own: an auditor always passes the key. A log whose last record is
    not its closing checkpoint fails as truncated unless `allow_open` (a log
    still being written, or whose writer crashed): then the records after the
    last checkpoint, and a torn last line, are reported instead.
    """
    walker = _Walker(Path(path), {key_id_of(key): key for key in keys}, allow_open)
    try:
        walker.run(workers)
        for seq, chain in witnesses:
            walker.check_witness(seq, chain)
    except _Failed as failed:
        return walker.report(failed.problem)
    return walker.report(None)


class _Walker:
    def __init__(self, directory: Path, pinned: dict[str, Ed25519PublicKey], allow_open: bool):
        self.directory = directory
        self.pinned = pinned
        self.allow_open = allow_open
        self.declared: dict[str, Ed25519PublicKey] = {}
        self.current_key: str | None = None
        self.records = 0
        self.segments = 0
        self.first_seq: int | None = None
        self.expected = 0
        self.previous: bytes | None = None
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.checkpoints = 0
        self.retention: list[dict[str, Any]] = []
        self.gaps = 0
        self.dropped = 0
        self.opens = 0
        self.unclean_opens = 0
        self.torn_sealed = 0
        self.key_ids: list[str] = []
        self.signed = False
        self.unsigned = False
        self.last_kind = b""
        self.last_reason: object = None
        self.since_checkpoint = 0
        self.torn_tail = 0
        self.kinds: dict[bytes, int] = {}
        self.segment = ""
        self.line = 0
        self.pending_first: tuple[bytes, bytes, str] | None = None
        self.first_checkpoint_chain: str | None = None
        self.last_checkpoint: tuple[int, str] | None = None
        self.names: list[tuple[int, str]] = []
        self.witnesses_checked = 0
        self.witnesses_unchecked = 0

    def fail(self, failure: str, detail: str, seq: int | None, line: int | None = None) -> _Failed:
        return _Failed(Problem(failure, self.segment, line, seq, detail))

    def report(self, problem: Problem | None) -> VerifyReport:
        return VerifyReport(
            problem=problem,
            records=self.records,
            segments=self.segments,
            first_seq=self.first_seq,
            last_seq=self.expected - 1 if self.records else None,
            first_time=self.first_time,
            last_time=self.last_time,
            checkpoints=self.checkpoints,
            retention=tuple(self.retention),
            gaps=self.gaps,
            dropped=self.dropped,
            opens=self.opens,
            unclean_opens=self.unclean_opens,
            torn_bytes_sealed=self.torn_sealed,
            key_ids=tuple(self.key_ids),
            signed=self.signed and not self.unsigned,
            pinned=bool(self.pinned),
            closed=self.last_kind == _CHECKPOINT and self.last_reason == CheckpointReason.CLOSE,
            unsealed=self.since_checkpoint,
            torn_tail=self.torn_tail,
            kinds={kind.decode("ascii", "replace"): n for kind, n in self.kinds.items()},
            last_checkpoint=self.last_checkpoint,
            witnesses_checked=self.witnesses_checked,
            witnesses_unchecked=self.witnesses_unchecked,
        )

    def run(self, workers: int) -> None:
        try:
            names = list_segments(self.directory)
        except OSError as error:
            raise self.fail(Failure.REMOVED, f"cannot list the log: {error}", None) from None
        if not names:
            raise self.fail(Failure.REMOVED, "no segment files: the log is gone", None)
        self.names = names
        self.first_seq = self.expected = names[0][0]
        # Each segment is checked from the hash the one before states at its end:
        # that one's own check proves the statement, so segments are independent.
        previous: list[bytes | None] = [GENESIS_PREVIOUS if self.expected == 0 else None]
        previous += [_stated_last_hash(self.directory / name) for _, name in names[:-1]]
        jobs = [
            (self.directory, name, first_seq, head, index == len(names) - 1, self.allow_open)
            for index, ((first_seq, name), head) in enumerate(zip(names, previous, strict=True))
        ]
        if workers > 1 and len(jobs) > 1:
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(jobs))) as pool:
                # In order, each replayed as it arrives: the first problem is the earliest.
                for scan in pool.map(_scan_job, jobs):
                    self._apply(scan)
        else:
            for job in jobs:
                self._apply(_scan_job(job))
        if not self.allow_open and not (
            self.last_kind == _CHECKPOINT and self.last_reason == CheckpointReason.CLOSE
        ):
            raise self.fail(
                Failure.TRUNCATED,
                "the log does not end with its closing checkpoint: records were removed from "
                "its end, or it is still open or its writer crashed (verify with allow_open "
                "/ --allow-open to check what is there)",
                self.expected - 1,
            )
        self._check_start()

    def _apply(self, scan: _Scan) -> None:
        """Take one segment's scan in order: its place in the log, its system records, its end."""
        self.segment = scan.name
        self.segments += 1
        if scan.first_line_seq is not None and scan.first_line_seq != self.expected:
            raise self._out_of_order(b"%d" % scan.first_line_seq, self.expected, 1)
        since = self.since_checkpoint
        last_index = -1
        for index, kind, payload, head in scan.systems:
            since += index - last_index - 1
            self.expected, self.line = scan.first_seq + index, index + 1
            since = self._system(kind, payload, head, since)
            last_index = index
            self.last_kind = kind
        since += scan.count - last_index - 1
        self.since_checkpoint = since
        self.records += scan.count
        self.expected = scan.first_seq + scan.count
        for kind, count in scan.kinds.items():
            self.kinds[kind] = self.kinds.get(kind, 0) + count
        if scan.first_pending is not None and self.pending_first is None:
            self.pending_first = (*scan.first_pending, scan.name)
        if scan.count:
            if self.first_time is None:
                self.first_time = scan.first_time
            self.last_time = scan.last_time
            self.last_kind = scan.last_kind
        self.torn_tail = scan.torn
        if scan.problem is not None:
            raise _Failed(scan.problem)
        if not scan.last and not (
            self.last_kind == _CHECKPOINT and self.last_reason == CheckpointReason.SEGMENT_END
        ):
            raise self.fail(
                Failure.TRUNCATED,
                "the segment does not end with its checkpoint: records were removed from its end",
                self.expected - 1,
                scan.count,
            )

    def _out_of_order(self, seq_text: bytes, expected: int, number: int) -> _Failed:
        return _Failed(_misnumbered(self.segment, seq_text, expected, number))

    def _system(self, kind: bytes, payload_bytes: bytes, previous: bytes | None, since: int) -> int:
        seq, number = self.expected, self.line
        try:
            payload = json.loads(payload_bytes)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            raise self.fail(Failure.EDITED, "its payload is not a JSON object", seq, number)
        if kind == b"checkpoint":
            self.checkpoints += 1
            through, chain, reason = (
                payload.get("through"),
                payload.get("chain"),
                payload.get("reason"),
            )
            if previous is None and through == seq - 1 and isinstance(chain, str):
                # The first record left after retention: what it states is compared
                # with the retention record's statement once every record is read.
                self.first_checkpoint_chain = chain
            elif through != seq - 1 or previous is None or chain != previous.hex():
                raise self.fail(
                    Failure.BAD_CHECKPOINT,
                    "it does not state the chain of the records before it",
                    seq,
                    number,
                )
            if reason not in (
                CheckpointReason.INTERVAL,
                CheckpointReason.SEGMENT_END,
                CheckpointReason.CLOSE,
            ):
                raise self.fail(Failure.BAD_CHECKPOINT, "unknown checkpoint reason", seq, number)
            self._check_signature(payload, checkpoint_message(through, chain, reason))
            self.last_reason = reason
            self.last_checkpoint = (through, chain)
            return 0
        self.last_reason = None
        if kind == b"genesis" or kind == b"open":
            if kind == b"genesis" and seq != 0:
                raise self.fail(Failure.EDITED, "a genesis record after record 0", seq, number)
            self._declare(payload)
            if kind == b"open":
                self.opens += 1
                if payload.get("previous_closed") is not True:
                    self.unclean_opens += 1
                torn = payload.get("torn_bytes")
                if isinstance(torn, int):
                    self.torn_sealed += torn
        elif kind == b"retention":
            removed_through, chain = payload.get("removed_through"), payload.get("chain")
            reason = payload.get("reason")
            if not isinstance(removed_through, int) or not isinstance(chain, str):
                raise self.fail(Failure.BAD_CHECKPOINT, "a malformed retention record", seq, number)
            self._check_signature(payload, retention_message(removed_through, chain, str(reason)))
            self.retention.append({"seq": seq, **payload})
        elif kind == b"gap":
            self.gaps += 1
            dropped = payload.get("dropped")
            if isinstance(dropped, int):
                self.dropped += dropped
        return since

    def _declare(self, payload: dict[str, Any]) -> None:
        key_id, public = payload.get("key_id"), payload.get("public_key")
        if key_id is None:
            self.current_key = None
            return
        try:
            key = public_key_from_hex(public) if isinstance(public, str) else None
        except ValueError:
            key = None
        if key is None or key_id_of(key) != key_id:
            raise self.fail(
                Failure.EDITED, "its public key does not match its key id", self.expected, self.line
            )
        self.declared[key_id] = key
        self.current_key = key_id
        if key_id not in self.key_ids:
            self.key_ids.append(key_id)

    def _check_signature(self, payload: dict[str, Any], message: bytes) -> None:
        seq, number = self.expected, self.line
        key_id, signature = payload.get("key_id"), payload.get("sig")
        if key_id is None and signature is None:
            if self.pinned:
                raise self.fail(
                    Failure.BAD_CHECKPOINT, "unsigned, but a verifying key was given", seq, number
                )
            if self.current_key is not None:
                raise self.fail(
                    Failure.BAD_CHECKPOINT,
                    f"unsigned, though the log declared key {self.current_key}",
                    seq,
                    number,
                )
            self.unsigned = True
            return
        if self.current_key is not None and key_id != self.current_key:
            raise self.fail(
                Failure.BAD_CHECKPOINT,
                f"signed by key {key_id!s:.16}, not the key the log declared",
                seq,
                number,
            )
        if self.pinned:
            key = self.pinned.get(key_id) if isinstance(key_id, str) else None
            if key is None:
                raise self.fail(
                    Failure.BAD_CHECKPOINT,
                    f"signed by key {key_id!s:.16}, which is not a key you gave",
                    seq,
                    number,
                )
        else:
            # Unpinned: the key it names, which proves integrity but not authorship.
            key = self._named_key(payload)
            if key is None:
                raise self.fail(
                    Failure.BAD_CHECKPOINT, "its public key does not match its key id", seq, number
                )
        if isinstance(key_id, str) and key_id not in self.key_ids:
            self.key_ids.append(key_id)
        if not signature_valid(key, signature, message):
            raise self.fail(Failure.BAD_CHECKPOINT, "its signature does not verify", seq, number)
        self.signed = True

    def check_witness(self, seq: int, chain: str) -> None:
        """Record `seq` must be here, with the chain hash a witness saw."""
        first = self.first_seq or 0
        if seq < first:
            self.witnesses_unchecked += 1
            return
        if seq >= self.expected:
            raise self.fail(
                Failure.TRUNCATED,
                f"the log ends at record {self.expected - 1}, before record {seq} that a witness "
                "saw: records were removed from its end (rolled back)",
                seq,
            )
        first_seq, name = max(item for item in self.names if item[0] <= seq)
        self.segment = name
        lines = (self.directory / name).read_bytes().split(b"\n")
        stated = lines[seq - first_seq][-64:].decode("ascii")
        if stated != chain:
            raise self.fail(
                Failure.EDITED,
                "its chain hash is not the one a witness saw: the log was rewritten from here "
                "or before",
                seq,
                seq - first_seq + 1,
            )
        self.witnesses_checked += 1

    def _named_key(self, payload: dict[str, Any]) -> Ed25519PublicKey | None:
        key_id, public = payload.get("key_id"), payload.get("public_key")
        try:
            key = public_key_from_hex(public) if isinstance(public, str) else None
        except ValueError:
            return None
        return key if key is not None and key_id_of(key) == key_id else None

    def _check_start(self) -> None:
        """Records missing from the start are fine only if a signed retention record says so."""
        first = self.first_seq
        if not first:
            return
        declared = [item for item in self.retention if item.get("removed_through") == first - 1]
        pending = self.pending_first
        self.segment = pending[2] if pending is not None else self.segment
        if not declared or pending is None:
            raise self.fail(
                Failure.REMOVED,
                f"records 0 to {first - 1} are missing and no retention record declares "
                "their removal",
                first,
                1,
            )
        body, hash_hex, _ = pending
        for item in declared:
            try:
                previous = bytes.fromhex(item["chain"])
            except ValueError:
                continue
            if hashlib.sha256(previous + body).hexdigest().encode("ascii") != hash_hex:
                continue
            if self.first_checkpoint_chain not in (None, item["chain"]):
                raise self.fail(
                    Failure.BAD_CHECKPOINT,
                    "it does not state the chain its retention record states",
                    first,
                    1,
                )
            return
        raise self.fail(
            Failure.EDITED,
            "the first record left does not follow the chain its retention record states",
            first,
            1,
        )


@dataclass
class _Scan:
    """One segment checked alone: its chain, numbering and shape; system records kept for later."""

    name: str
    first_seq: int
    last: bool
    count: int = 0
    problem: Problem | None = None
    first_line_seq: int | None = None
    systems: list[tuple[int, bytes, bytes, bytes | None]] = field(default_factory=list)
    kinds: dict[bytes, int] = field(default_factory=dict)
    first_pending: tuple[bytes, bytes] | None = None
    first_time: float | None = None
    last_time: float | None = None
    last_kind: bytes = b""
    torn: int = 0


def _scan_job(job: tuple[Path, str, int, bytes | None, bool, bool]) -> _Scan:
    directory, name, first_seq, previous, last, allow_open = job
    scan = _Scan(name, first_seq, last)

    def fail(failure: str, detail: str, seq: int | None, line: int | None) -> _Scan:
        scan.problem = Problem(failure, name, line, seq, detail)
        return scan

    try:
        data = (directory / name).read_bytes()
    except OSError as error:
        return fail(Failure.REMOVED, f"cannot read the segment: {error}", None, None)
    end = data.rfind(b"\n") + 1
    if end < len(data):
        if not (last and allow_open):
            return fail(
                Failure.TRUNCATED,
                f"the segment ends mid-record ({len(data) - end} bytes after the last "
                "complete line)",
                None,
                data.count(b"\n", 0, end) + 1,
            )
        scan.torn = len(data) - end
    lines = data[:end].split(b"\n")
    lines.pop()
    if not lines:
        if not (last and allow_open):
            fail(Failure.TRUNCATED, "the segment holds no record", first_seq, None)
        return scan
    head = lines[0].split(b"\t", 1)[0]
    if head.isdigit():
        scan.first_line_seq = int(head)
        if scan.first_line_seq != first_seq:
            return fail(
                Failure.EDITED,
                f"its segment's file name says the segment starts at record {first_seq}",
                scan.first_line_seq,
                1,
            )
    _walk_lines(scan, lines, previous)
    return scan


def _walk_lines(scan: _Scan, lines: list[bytes], previous: bytes | None) -> None:
    """The hot loop: every record's shape, number and hash, in one pass."""
    sha256 = hashlib.sha256
    system = _SYSTEM
    systems = scan.systems
    kinds: list[bytes] = []
    seen = kinds.append
    expected = scan.first_seq
    kind = b""
    number = 0
    try:
        for number, line in enumerate(lines, 1):
            body, tab, hash_hex = line[:-65], line[-65:-64], line[-64:]
            fields = body.split(b"\t", 3)
            if len(fields) != 4 or tab != b"\t":
                scan.problem = Problem(
                    Failure.EDITED, scan.name, number, expected, "not a record line"
                )
                return
            if fields[0] != b"%d" % expected:
                scan.problem = _misnumbered(scan.name, fields[0], expected, number)
                return
            if previous is None:
                # The first record left after retention: its chain comes from the
                # retention record, checked once every record has been read.
                scan.first_pending = (body, hash_hex)
                try:
                    digest = bytes.fromhex(hash_hex.decode("ascii"))
                except ValueError:
                    scan.problem = Problem(
                        Failure.EDITED, scan.name, number, expected, "its hash is not hex"
                    )
                    return
            else:
                hashed = sha256(previous + body)
                if hashed.hexdigest().encode("ascii") != hash_hex:
                    scan.problem = Problem(
                        Failure.EDITED,
                        scan.name,
                        number,
                        expected,
                        "its content does not match its hash chained from the record before",
                    )
                    return
                digest = hashed.digest()
            kind = fields[2]
            seen(kind)
            if kind in system:
                systems.append((number - 1, kind, fields[3], previous))
            previous = digest
            expected += 1
    finally:
        scan.count = expected - scan.first_seq
        if scan.count:
            scan.last_kind = lines[scan.count - 1].split(b"\t", 3)[2]
            scan.first_time = _time(lines[0].split(b"\t", 2)[1])
            scan.last_time = _time(lines[scan.count - 1].split(b"\t", 2)[1])
        scan.kinds = dict(Counter(kinds))


def _misnumbered(segment: str, seq_text: bytes, expected: int, number: int) -> Problem:
    if not seq_text.isdigit():
        return Problem(
            Failure.EDITED, segment, number, expected, "its sequence number is not a number"
        )
    seq = int(seq_text)
    if seq > expected:
        return Problem(
            Failure.REMOVED,
            segment,
            number,
            expected,
            f"records {expected} to {seq - 1} are missing before record {seq}",
        )
    return Problem(
        Failure.REORDERED,
        segment,
        number,
        expected,
        f"record {seq} appears where record {expected} belongs (duplicated or moved)",
    )


_PARALLEL_FROM_BYTES = 64 << 20


def default_workers(directory: str | os.PathLike[str]) -> int:
    """One process per CPU for a large log, where starting them costs little in comparison."""
    try:
        size = sum(entry.stat().st_size for entry in Path(directory).glob("segment-*.audit"))
    except OSError:
        return 1
    return (os.cpu_count() or 1) if size >= _PARALLEL_FROM_BYTES else 1


def _stated_last_hash(path: Path) -> bytes | None:
    """The hash the segment's last line states, as the next segment's starting point."""
    try:
        with open(path, "rb") as file:
            file.seek(max(0, file.seek(0, os.SEEK_END) - 4096))
            tail = file.read()
        return bytes.fromhex(tail.rstrip(b"\n").rsplit(b"\n", 1)[-1][-64:].decode("ascii"))
    except (OSError, ValueError):
        # The segment's own check reports what is wrong with it, before this matters.
        return b""


def _time(text: bytes) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class AuditRecord:
    """One record as `read_records` yields it."""

    seq: int
    time: float
    kind: str
    payload: dict[str, Any]
    segment: str


def read_records(path: str | os.PathLike[str]) -> Iterator[AuditRecord]:
    """Every complete record, oldest first, without verifying anything (run `verify` first)."""
    directory = Path(path)
    for _, name in list_segments(directory):
        data = (directory / name).read_bytes()
        for line in data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]:
            try:
                parsed = parse_line(line)
                payload = json.loads(parsed.payload)
            except ValueError:
                continue
            if isinstance(payload, dict):
                yield AuditRecord(parsed.seq, parsed.at, parsed.kind, payload, name)
