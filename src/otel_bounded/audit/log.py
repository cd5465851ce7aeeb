"""`AuditLog`: an append-only, hash-chained, size-capped log on disk, written by one thread.

Callers only queue: `append` takes one lock, stamps the time and adds the
record to a bounded list. One writer thread drains it, encodes, chains and
writes whole batches; what did not fit in the queue is counted and written
into the chain as a gap record, so a loss is never silent. The writer alone
touches the files.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import hashlib
import json
import logging
import math
import os
import secrets
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from hashlib import sha256
from pathlib import Path
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan

from otel_bounded import config, telemetry
from otel_bounded.audit.format import (
    FORMAT_VERSION,
    GENESIS_PREVIOUS,
    KIND_PATTERN,
    MAX_KIND_LENGTH,
    SEGMENT_PATTERN,
    SYSTEM_KINDS,
    AuditKey,
    CheckpointReason,
    Kind,
    checkpoint_message,
    encode_payload,
    encode_payload_fast,
    load_private_key,
    parse_line,
    retention_message,
    segment_name,
)
from otel_bounded.audit.otlp import spans_to_resource_spans
from otel_bounded.core import NO_AUDIT, Clock, reinit_after_fork, validate_clock
from otel_bounded.core import AuditSink as AuditSinkType
from otel_bounded.errors import AuditLogError
from otel_bounded.telemetry import AuditDropReason, AuditOmitReason

__all__ = ["FSYNC_POLICIES", "AuditLog", "key_from_env", "shared_from_env"]

FSYNC_POLICIES = ("checkpoint", "batch", "never")
"""``checkpoint`` (default): at every checkpoint, rotation and close; ``batch``: after every
write; ``never``: leave it to the operating system (a power cut may then lose more)."""

_COMPONENT_TYPE = "otel_bounded_audit_log"
_LOCK_NAME = ".lock"
# Room kept at the end of every segment for the records that close it:
# a retention record and a checkpoint, each well under 1 KiB.
_RESERVE = 2048
_logger = logging.getLogger(telemetry.INSTRUMENTATION_NAME)
# Kinds known valid, so the writer checks each new kind once.
_MAX_REMEMBERED_KINDS = 1024
# Records that close a segment: written into its reserve, never rotated for.
_SEALS = frozenset({Kind.CHECKPOINT, Kind.RETENTION})


@dataclass
class _Segment:
    first_seq: int
    path: Path
    size: int
    last_seq: int
    last_hash: bytes


class AuditLog:
    """An append-only log of records in rotating segment files under a hard total-size cap.

    Each record carries a sequence number, a time, a kind, a JSON payload and
    the SHA-256 of the previous record chained into its own. Checkpoints
    signed with the Ed25519 `key` end every segment, are written every
    `checkpoint_every` records or `checkpoint_interval_seconds`, and close the
    log, so that a verifier holding only the public key can prove that nothing
    was edited, removed or reordered. Before the oldest segments are removed
    to stay under `max_bytes`, a signed retention record says which. Opening a
    log a crash left with a torn tail seals the tail over (logged, counted)
    and continues the chain.

    `append` never blocks on the disk and never raises. Without a `key` the
    chain still detects accidental damage, but anyone can rewrite it whole.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        max_bytes: int = config.AUDIT_MAX_BYTES.default,
        segment_bytes: int | None = None,
        key: object = None,
        fsync: str = "checkpoint",
        queue_size: int = 65_536,
        checkpoint_every: int = 10_000,
        checkpoint_interval_seconds: float = 5.0,
        flush_interval_seconds: float = 0.2,
        clock: Clock = time.time,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        if segment_bytes is None:
            segment_bytes = max(config.MIN_AUDIT_SEGMENT_BYTES, min(16 << 20, max_bytes // 8))
        _check_int("segment_bytes", segment_bytes, config.MIN_AUDIT_SEGMENT_BYTES)
        _check_int("max_bytes", max_bytes, 2 * segment_bytes)
        _check_int("queue_size", queue_size, 1)
        _check_int("checkpoint_every", checkpoint_every, 1)
        _check_seconds("checkpoint_interval_seconds", checkpoint_interval_seconds)
        _check_seconds("flush_interval_seconds", flush_interval_seconds)
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"fsync must be one of {', '.join(FSYNC_POLICIES)}, got {fsync!r}")
        self._key = AuditKey(load_private_key(key)) if key is not None else None
        self._clock = validate_clock(clock)
        self._dir = Path(path)
        self._max_bytes = max_bytes
        self._segment_bytes = segment_bytes
        self._limit = segment_bytes - _RESERVE
        self._max_record = self._limit // 2
        self._fsync = fsync
        self._queue_size = queue_size
        self._wake_at = max(1, min(512, queue_size // 2))
        self._checkpoint_every = checkpoint_every
        self._checkpoint_interval = checkpoint_interval_seconds
        self._flush_interval = flush_interval_seconds

        # Shared with callers, under the lock.
        self._lock = threading.Lock()
        self._flushed_cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._queue: list[tuple[float, str, Mapping[str, object]]] = []
        self._pending_gap: dict[str, int] = {}
        self._accepting = True
        self._closing = False
        self._flush_requested = 0
        self._flushed = 0
        self._dropped = dict.fromkeys(AuditDropReason.ALL, 0)
        # Counts the writer keeps; read (without the lock) by telemetry.
        self._records = 0
        self._omitted = dict.fromkeys(AuditOmitReason.ALL, 0)
        self._segments_removed = 0
        self._records_removed = 0
        self._torn_tails = 0
        self._write_errors = 0
        self._bytes = 0

        # The writer's state: only the writer thread (and, before it starts, __init__) uses it.
        self._segments: list[_Segment] = []
        self._fd = -1
        self._seq = 0
        self._previous = GENESIS_PREVIOUS
        self._since_checkpoint = 0
        self._last_checkpoint_at = self._now()
        self._buffer: list[bytes] = []
        self._buffered = 0
        self._buffered_records = 0
        self._valid_kinds: set[str] = set()
        self._warned_write_error = False

        self._dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._lock_fd = os.open(self._dir / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(self._lock_fd)
            raise AuditLogError(
                f"the audit log at {self._dir} is open in another process or object; "
                "each log has exactly one writer"
            ) from None
        try:
            self._open()
        except BaseException:
            self._close_files()
            raise
        self.component = telemetry.component_attributes(_COMPONENT_TYPE)
        self._pid = os.getpid()
        self._thread = self._start_writer()
        reinit_after_fork(self._at_fork_reinit)
        atexit.register(_close_at_exit, weakref.ref(self))
        telemetry.register_audit_instruments(meter_provider, self, self.component)

    @classmethod
    def from_env(cls, **overrides: Any) -> AuditLog | None:
        """The log the ``OTEL_BOUNDED_AUDIT_*`` variables describe; None when no path is set.

        An invalid key or key file raises `ValueError` naming the variable:
        falling back would silently write an unsigned log.
        """
        arguments = config.read_arguments(
            {"path": config.AUDIT_PATH, "max_bytes": config.AUDIT_MAX_BYTES}, overrides
        )
        if arguments.get("path") is None:
            return None
        if "key" not in overrides:
            arguments["key"] = key_from_env()
        return cls(**arguments)

    # -- appending -------------------------------------------------------

    def append(self, kind: str, payload: Mapping[str, object]) -> None:
        """Queue a record; never blocks on the disk, never raises.

        Past `queue_size` waiting records the append is counted (reason
        ``queue_full``) and the writer records the gap in the chain.
        """
        try:
            now = self._clock()
        except Exception:
            now = math.nan
        with self._lock:
            queue = self._queue
            if self._accepting and len(queue) < self._queue_size:
                queue.append((now, kind, payload))
                if len(queue) == self._wake_at:
                    self._wake.set()
                return
            reason = (
                AuditDropReason.QUEUE_FULL
                if self._accepting
                else AuditDropReason.FORKED
                if os.getpid() != self._pid
                else AuditDropReason.CLOSED
            )
            self._dropped[reason] += 1
            if reason == AuditDropReason.QUEUE_FULL:
                self._pending_gap[reason] = self._pending_gap.get(reason, 0) + 1

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until everything appended before this call is written; False on timeout."""
        with self._lock:
            if not self._thread.is_alive():
                return not self._queue
            self._flush_requested += 1
            wanted = self._flush_requested
            self._wake.set()
            return self._flushed_cond.wait_for(lambda: self._flushed >= wanted, timeout)

    def close(self, timeout: float | None = 30.0) -> None:
        """Write what is queued, then a closing checkpoint; later appends are counted as dropped."""
        with self._lock:
            if not self._accepting and self._closing:
                return
            self._accepting = False
            self._closing = True
            self._wake.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> AuditLog:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    @property
    def path(self) -> Path:
        return self._dir

    @property
    def public_key(self) -> str | None:
        """The hex public key verifiers need (None for an unsigned log)."""
        return self._key.public_hex if self._key is not None else None

    def telemetry_counts(self) -> telemetry.AuditCounts:
        """What the audit instruments read at collection time."""
        with self._lock:
            dropped = dict(self._dropped)
            queued = len(self._queue)
        return telemetry.AuditCounts(
            records=self._records,
            dropped=dropped,
            bytes=self._bytes,
            queued=queued,
            segments_removed=self._segments_removed,
            records_removed=self._records_removed,
            torn_tails=self._torn_tails,
            write_errors=self._write_errors,
            omitted=dict(self._omitted),
        )

    def __repr__(self) -> str:
        key = self._key.key_id if self._key is not None else None
        return f"AuditLog({str(self._dir)!r}, max_bytes={self._max_bytes}, key_id={key!r})"

    # -- opening ---------------------------------------------------------

    def _open(self) -> None:
        found = sorted(
            (int(match.group(1)), self._dir / name)
            for name in os.listdir(self._dir)
            if (match := SEGMENT_PATTERN.fullmatch(name))
        )
        if not found:
            self._open_fresh()
            return
        discarded: tuple[int, str] | None = None
        while found and _holds_no_record(found[-1][1]):
            # A crash right after a rotation (or before the first record): no record to keep.
            path = found.pop()[1]
            data = path.read_bytes()
            if data:
                discarded = (len(data), hashlib.sha256(data).hexdigest())
            path.unlink()
        if not found:
            self._open_fresh()
            return
        for first_seq, path in found[:-1]:
            self._segments.append(_read_closed_segment(first_seq, path))
        first_seq, path = found[-1]
        closed, torn = self._recover(first_seq, path)
        torn = torn or discarded
        self._bytes = sum(segment.size for segment in self._segments)
        if torn:
            self._torn_tails += 1
            _logger.warning(
                "Audit log %s: the last writer stopped mid-write (crash or kill); %d torn "
                "bytes after record %d were removed and the chain continues. The open record "
                "holds their length and SHA-256; %s counts this.",
                self._dir,
                torn[0],
                self._seq - 1,
                telemetry.AUDIT_TORN_TAILS,
            )
        payload: dict[str, object] = {
            "previous_closed": closed,
            "torn_bytes": torn[0] if torn else 0,
            "torn_sha256": torn[1] if torn else None,
            **self._key_fields(),
        }
        self._emit(Kind.OPEN, encode_payload(payload))
        # Every open starts a segment, which also brings an existing log under a smaller cap.
        self._rotate()

    def _open_fresh(self) -> None:
        self._start_segment(0)
        payload: dict[str, object] = {
            "format": FORMAT_VERSION,
            "log_id": secrets.token_hex(16),
            **self._key_fields(),
        }
        self._emit(Kind.GENESIS, encode_payload(payload))
        self._write_out()
        self._sync()

    def _recover(self, first_seq: int, path: Path) -> tuple[bool, tuple[int, str] | None]:
        """Take up the newest segment: seal over a torn tail, refuse one damaged inside."""
        data = path.read_bytes()
        end = data.rfind(b"\n") + 1
        torn: tuple[int, str] | None = None
        if end < len(data):
            torn = (len(data) - end, hashlib.sha256(data[end:]).hexdigest())
        lines = data[:end].split(b"\n")[:-1]
        if not lines:
            raise AuditLogError(
                f"the newest audit segment {path} holds no complete record; move it aside "
                "after checking it, then open the log again"
            )
        previous: bytes | None = None
        seq = first_seq
        kind = ""
        reason: object = None
        for number, line in enumerate(lines):
            try:
                parsed = parse_line(line)
            except ValueError:
                raise AuditLogError(
                    f"audit segment {path}, line {number + 1}, is not a record and is not at "
                    "the end of the file: the log was damaged or edited; run "
                    "otel-bounded audit verify on it"
                ) from None
            digest = bytes.fromhex(parsed.hash_hex.decode("ascii"))
            if parsed.seq != seq or (
                previous is not None and hashlib.sha256(previous + parsed.body).digest() != digest
            ):
                raise AuditLogError(
                    f"audit segment {path}: record {parsed.seq} does not follow the chain: the "
                    "log was damaged or edited; run otel-bounded audit verify on it"
                )
            previous = digest
            seq += 1
            kind = parsed.kind
            if kind == Kind.CHECKPOINT:
                reason = _payload_field(parsed.payload, "reason")
        if torn is not None:
            with open(path, "r+b") as file:
                file.truncate(end)
                os.fsync(file.fileno())
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        assert previous is not None
        self._current = _Segment(first_seq, path, end, seq - 1, previous)
        self._segments.append(self._current)
        self._seq = seq
        self._previous = previous
        closed = kind == Kind.CHECKPOINT and reason == CheckpointReason.CLOSE and torn is None
        return closed, torn

    # -- the writer thread ---------------------------------------------------

    def _start_writer(self) -> threading.Thread:
        thread = threading.Thread(
            target=_writer_loop,
            args=(weakref.ref(self),),
            name=f"otel-bounded-audit {self.component[telemetry.COMPONENT_NAME]}",
            daemon=True,
        )
        thread.start()
        return thread

    def _drain_once(self) -> bool:
        """One pass of the writer; False once the log is closed."""
        self._wake.wait(self._flush_interval)
        with self._lock:
            self._wake.clear()
            batch, self._queue = self._queue, []
            gap, self._pending_gap = self._pending_gap, {}
            closing = self._closing
            flush_wanted = self._flush_requested
        try:
            every = self._checkpoint_every
            # A long queue is written in slices, so a checkpoint follows every `every` records.
            for start in range(0, max(len(batch), 1), every):
                self._write_batch(batch[start : start + every], gap if start == 0 else {})
                if self._since_checkpoint >= every:
                    self._seal(CheckpointReason.INTERVAL)
            if (
                self._since_checkpoint
                and self._now() - self._last_checkpoint_at >= self._checkpoint_interval
            ):
                self._seal(CheckpointReason.INTERVAL)
            elif self._fsync == "batch" or flush_wanted > self._flushed:
                self._sync()
            if closing:
                self._seal(CheckpointReason.CLOSE)
        except OSError as error:
            self._write_failed(error, [])
        finally:
            with self._lock:
                if flush_wanted > self._flushed:
                    self._flushed = flush_wanted
                    self._flushed_cond.notify_all()
        if closing:
            self._close_files()
            return False
        return True

    def _write_batch(
        self, batch: Sequence[tuple[float, str, Mapping[str, object]]], gap: Mapping[str, int]
    ) -> None:
        if gap:
            self._write_gap(gap)
        if not batch:
            return
        # `_emit` inlined, with the chain in locals: this loop is the writer's throughput.
        valid = self._valid_kinds
        encode = encode_payload_fast
        max_record = self._max_record
        seq, previous, buffered = self._seq, self._previous, self._buffered
        append = self._buffer.append
        room = self._limit - self._current.size
        invalid = done = pending = 0
        try:
            for at, kind, payload in batch:
                if kind not in valid:
                    if not _is_valid_kind(kind):
                        invalid += 1
                        done += 1
                        continue
                    if len(valid) < _MAX_REMEMBERED_KINDS:
                        valid.add(kind)
                try:
                    if payload.__class__ is not dict:
                        raise TypeError("not a plain dict")
                    text = encode(payload)
                except Exception:
                    # Deferred values, spans, or something JSON cannot hold.
                    text = self._encode(payload)
                else:
                    if len(text) > max_record:
                        text = self._omit(payload, text)
                body = f"{seq}\t{at!r}\t{kind}\t{text}".encode("ascii")
                if buffered + len(body) + 66 > room:
                    self._seq, self._previous, self._buffered = seq, previous, buffered
                    self._since_checkpoint += pending
                    self._buffered_records += pending
                    pending = 0
                    self._rotate()
                    seq, previous, buffered = self._seq, self._previous, self._buffered
                    append = self._buffer.append
                    room = self._limit - self._current.size
                    body = f"{seq}\t{at!r}\t{kind}\t{text}".encode("ascii")
                hashed = sha256(previous + body)
                line = body + b"\t" + hashed.hexdigest().encode("ascii") + b"\n"
                append(line)
                buffered += len(line)
                seq += 1
                previous = hashed.digest()
                pending += 1
                done += 1
            self._seq, self._previous, self._buffered = seq, previous, buffered
            self._since_checkpoint += pending
            self._buffered_records += pending
            pending = 0
            self._write_out()
        except OSError as error:
            self._buffered_records += pending
            self._write_failed(error, batch[done:])
        if invalid:
            with self._lock:
                self._dropped[AuditDropReason.INVALID_KIND] += invalid
            self._write_gap({AuditDropReason.INVALID_KIND: invalid})

    def _write_gap(self, gap: Mapping[str, int]) -> None:
        payload = {"dropped": sum(gap.values()), "by_reason": dict(gap)}
        try:
            self._emit(Kind.GAP, encode_payload(payload))
            self._write_out()
        except OSError as error:
            # Still owed: it goes into the next gap record.
            with self._lock:
                for reason, count in gap.items():
                    self._pending_gap[reason] = self._pending_gap.get(reason, 0) + count
            self._write_failed(error, [])

    def _write_failed(self, error: OSError, lost: Sequence[object]) -> None:
        """A refused write: roll back to what is on disk and owe a gap record for the rest."""
        self._write_errors += 1
        lost_count = len(lost) + self._buffered_records
        self._buffer.clear()
        self._buffered = 0
        self._buffered_records = 0
        segment = self._segments[-1] if self._segments else None
        if segment is not None:
            # The chain continues from the last record known to be on disk.
            self._seq = segment.last_seq + 1
            self._previous = segment.last_hash
            with contextlib.suppress(OSError):
                os.ftruncate(self._fd, segment.size)
        with self._lock:
            if lost_count:
                self._dropped[AuditDropReason.WRITE_ERROR] += lost_count
                self._pending_gap[AuditDropReason.WRITE_ERROR] = (
                    self._pending_gap.get(AuditDropReason.WRITE_ERROR, 0) + lost_count
                )
        if not self._warned_write_error:
            self._warned_write_error = True
            _logger.warning(
                "Audit log %s could not write (%s); the records lost are counted in %s "
                "(reason write_error) and written as a gap record once the disk accepts "
                "writes again. Further failures are counted in %s, not logged.",
                self._dir,
                type(error).__name__,
                telemetry.AUDIT_DROPPED,
                telemetry.AUDIT_WRITE_ERRORS,
            )

    def _encode(self, payload: Mapping[str, object]) -> str:
        """The payload as JSON with deferred values computed and spans in OTLP JSON."""
        try:
            values = {
                key: _materialize(value() if callable(value) else value)
                for key, value in payload.items()
            }
            text = encode_payload(values)
        except Exception:
            self._omitted[AuditOmitReason.UNENCODABLE] += 1
            return encode_payload({"omitted": AuditOmitReason.UNENCODABLE})
        return text if len(text) <= self._max_record else self._omit(values, text)

    def _omit(self, values: Mapping[str, object], text: str) -> str:
        """An oversize payload as its short scalar fields, its size and its SHA-256."""
        self._omitted[AuditOmitReason.TOO_LARGE] += 1
        kept = {
            key: value
            for key, value in values.items()
            if isinstance(value, int | float | bool | None)
            or (isinstance(value, str) and len(value) <= 256)
        }
        kept["omitted"] = AuditOmitReason.TOO_LARGE
        kept["payload_bytes"] = len(text)
        kept["payload_sha256"] = hashlib.sha256(text.encode("ascii")).hexdigest()
        return encode_payload(kept)

    # -- records, segments, checkpoints ----------------------------------

    def _emit(self, kind: str, payload_json: str, at: float | None = None) -> None:
        """Chain one record into the buffer, rotating first if the segment is full."""
        if at is None:
            at = self._now()
        body = f"{self._seq}\t{at!r}\t{kind}\t{payload_json}".encode("ascii")
        if (
            self._current.size + self._buffered + len(body) + 66 > self._limit
            and kind not in _SEALS
        ):
            self._rotate()
            body = f"{self._seq}\t{at!r}\t{kind}\t{payload_json}".encode("ascii")
        hashed = sha256(self._previous + body)
        line = body + b"\t" + hashed.hexdigest().encode("ascii") + b"\n"
        self._buffer.append(line)
        self._buffered += len(line)
        self._seq += 1
        self._previous = hashed.digest()
        if kind in SYSTEM_KINDS:
            return
        self._since_checkpoint += 1
        self._buffered_records += 1

    def _write_out(self) -> None:
        if not self._buffer:
            return
        data = b"".join(self._buffer)
        segment = self._segments[-1]
        view = memoryview(data)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        records = len(self._buffer)
        self._buffer.clear()
        self._buffered = 0
        self._buffered_records = 0
        segment.size += len(data)
        segment.last_seq = self._seq - 1
        segment.last_hash = self._previous
        self._bytes += len(data)
        self._records += records

    def _seal(self, reason: str) -> None:
        """A checkpoint, written and synced."""
        self._checkpoint(reason)
        self._write_out()
        self._sync()

    def _checkpoint(self, reason: str) -> None:
        through = self._seq - 1
        chain = self._previous.hex()
        payload: dict[str, object] = {"through": through, "chain": chain, "reason": reason}
        payload.update(self._signature(checkpoint_message(through, chain, reason)))
        self._emit(Kind.CHECKPOINT, encode_payload(payload))
        self._since_checkpoint = 0
        self._last_checkpoint_at = self._now()

    def _now(self) -> float:
        try:
            return float(self._clock())
        except Exception:
            return math.nan

    def _rotate(self) -> None:
        """Close the current segment (retention record if needed, checkpoint), open the next."""
        self._write_out()
        current = self._segments[-1]
        kept = self._bytes + self._buffered + _RESERVE
        removed: list[_Segment] = []
        for segment in self._segments[:-1]:
            if kept + self._segment_bytes <= self._max_bytes:
                break
            removed.append(segment)
            kept -= segment.size
        if removed:
            last = removed[-1]
            chain = last.last_hash.hex()
            payload: dict[str, object] = {
                "removed_through": last.last_seq,
                "chain": chain,
                "reason": "max_bytes",
                "max_bytes": self._max_bytes,
                "segments": len(removed),
                "records": last.last_seq + 1 - removed[0].first_seq,
                "bytes": sum(segment.size for segment in removed),
            }
            payload.update(self._signature(retention_message(last.last_seq, chain, "max_bytes")))
            self._emit(Kind.RETENTION, encode_payload(payload))
        self._checkpoint(CheckpointReason.SEGMENT_END)
        self._write_out()
        os.fsync(self._fd)
        # Opened before the old one is let go: if this fails, the log goes on as it was.
        fd, segment = self._open_segment(self._seq)
        os.close(self._fd)
        self._fd, self._current = fd, segment
        self._segments.append(segment)
        if removed:
            # Declared and on disk first: only then are the segments removed.
            for segment in removed:
                segment.path.unlink(missing_ok=True)
                self._bytes -= segment.size
                self._segments.remove(segment)
            self._segments_removed += len(removed)
            self._records_removed += removed[-1].last_seq + 1 - removed[0].first_seq
        del current
        _sync_directory(self._dir)

    def _start_segment(self, first_seq: int) -> None:
        self._fd, self._current = self._open_segment(first_seq)
        self._segments.append(self._current)
        _sync_directory(self._dir)

    def _open_segment(self, first_seq: int) -> tuple[int, _Segment]:
        path = self._dir / segment_name(first_seq)
        flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND
        try:
            fd = os.open(path, flags | os.O_EXCL, 0o600)
        except FileExistsError:
            # Left empty by an earlier attempt that failed after creating it; never one with data.
            if path.stat().st_size:
                raise
            fd = os.open(path, flags, 0o600)
        return fd, _Segment(first_seq, path, 0, first_seq - 1, self._previous)

    def _sync(self) -> None:
        if self._fsync != "never" and self._fd >= 0:
            os.fsync(self._fd)

    def _signature(self, message: bytes) -> dict[str, object]:
        if self._key is None:
            return {"key_id": None, "public_key": None, "sig": None}
        return {
            "key_id": self._key.key_id,
            "public_key": self._key.public_hex,
            "sig": self._key.sign(message),
        }

    def _key_fields(self) -> dict[str, object]:
        if self._key is None:
            return {"key_id": None, "public_key": None}
        return {"key_id": self._key.key_id, "public_key": self._key.public_hex}

    def _close_files(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def _at_fork_reinit(self) -> None:
        # A child never writes its parent's log: two writers would fork the chain.
        self._lock = threading.Lock()
        self._flushed_cond = threading.Condition(self._lock)
        self._wake = threading.Event()
        self._queue = []
        self._pending_gap = {}
        self._accepting = False
        self._closing = True
        # The parent's descriptors: closed here so that the lock goes when the parent lets go.
        for fd in (self._fd, self._lock_fd):
            if fd >= 0:
                with contextlib.suppress(OSError):
                    os.close(fd)
        self._fd = self._lock_fd = -1


def _close_at_exit(log_ref: weakref.ref[AuditLog]) -> None:
    log = log_ref()
    if log is not None:
        log.close(timeout=5.0)


def _writer_loop(log_ref: weakref.ref[AuditLog]) -> None:
    logged = False
    while True:
        log = log_ref()
        if log is None:
            return
        try:
            running = log._drain_once()
        except Exception:
            # Not a disk error (those are handled): a defect. Logged once, never a flood.
            log._write_errors += 1
            if not logged:
                logged = True
                _logger.exception(
                    "Audit log %s: the writer failed unexpectedly; it keeps running and "
                    "counts further failures in %s. Please report it.",
                    log.path,
                    telemetry.AUDIT_WRITE_ERRORS,
                )
            running = True
        del log
        if not running:
            return


def _materialize(value: object) -> object:
    if isinstance(value, list | tuple) and value and isinstance(value[0], ReadableSpan):
        return spans_to_resource_spans(value)
    return value


def _is_valid_kind(kind: object) -> bool:
    return (
        kind.__class__ is str
        and len(kind) <= MAX_KIND_LENGTH
        and kind not in SYSTEM_KINDS
        and KIND_PATTERN.fullmatch(kind) is not None
    )


def _payload_field(payload: bytes, name: str) -> object:
    try:
        value = json.loads(payload)
    except ValueError:
        return None
    return value.get(name) if isinstance(value, dict) else None


def _holds_no_record(path: Path) -> bool:
    with open(path, "rb") as file:
        return b"\n" not in file.read()


def _read_closed_segment(first_seq: int, path: Path) -> _Segment:
    """A closed segment's size and last record, read from its tail."""
    size = path.stat().st_size
    with open(path, "rb") as file:
        file.seek(max(0, size - 4096))
        tail = file.read()
    lines = tail.rstrip(b"\n").rsplit(b"\n", 1)
    try:
        last = parse_line(lines[-1])
    except ValueError:
        raise AuditLogError(
            f"audit segment {path} does not end with a record: the log was damaged or "
            "edited; run otel-bounded audit verify on it"
        ) from None
    return _Segment(first_seq, path, size, last.seq, bytes.fromhex(last.hash_hex.decode()))


def _sync_directory(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def key_from_env() -> object:
    """The audit signing key from ``OTEL_BOUNDED_AUDIT_KEY`` or ``_KEY_FILE``, or None."""
    text = config.read(config.AUDIT_KEY)
    path = config.read(config.AUDIT_KEY_FILE)
    if text is not None and path is not None:
        raise ValueError(f"set {config.AUDIT_KEY.name} or {config.AUDIT_KEY_FILE.name}, not both")
    if path is not None:
        try:
            text = Path(path).expanduser().read_text("ascii")
        except (OSError, UnicodeDecodeError):
            raise ValueError(f"{config.AUDIT_KEY_FILE.name}: the file cannot be read") from None
        name = config.AUDIT_KEY_FILE.name
    else:
        name = config.AUDIT_KEY.name
    if text is None:
        return None
    try:
        return load_private_key(text)
    except ValueError as error:
        raise ValueError(f"{name} is invalid: {error}") from None


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seconds(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")


_shared: dict[str, AuditLog] = {}
_shared_lock = threading.Lock()


def shared_from_env() -> AuditSinkType:
    """The one log per directory every `from_env` of this process shares, or `NO_AUDIT`."""
    path = config.read(config.AUDIT_PATH)
    if path is None:
        return NO_AUDIT
    resolved = os.path.realpath(os.path.expanduser(path))
    with _shared_lock:
        log = _shared.get(resolved)
        if log is None or not log._accepting:
            log = AuditLog.from_env(path=resolved)
            assert log is not None
            _shared[resolved] = log
        return log
