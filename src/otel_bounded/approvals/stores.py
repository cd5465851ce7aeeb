"""Where approvals live: this process, a SQLite file, or a Redis shared by every replica.

Every store holds `GrantRecord`s keyed by the SHA-256 of their token (never
the token) and makes each decision atomic: `update` reads a record, lets
the ledger decide, and writes the outcome only if nothing else wrote that
record meanwhile, whichever process or thread did. Bounds hold per store,
for every ledger sharing it: at most `max_live` live grants, at most
`max_pending_per_requester` pending ones per requester, ended ones kept
until their retention passes and at most `max_terminal` of them.

A store that cannot reach its backend raises `StoreFailure`, before it has
written anything; the ledger refuses the decision (fail closed).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from otel_bounded import storage
from otel_bounded.approvals.model import ApprovalStatus
from otel_bounded.approvals.record import GrantRecord
from otel_bounded.config import redact_url
from otel_bounded.core import BoundedStore, EvictionReason, reinit_after_fork
from otel_bounded.errors import ApprovalReason
from otel_bounded.storage import StoreFailure
from otel_bounded.telemetry import ApprovalEvictionReason

if TYPE_CHECKING:
    import redis

__all__ = [
    "DUPLICATE_KEY",
    "ApprovalStore",
    "MemoryApprovalStore",
    "RedisApprovalStore",
    "SQLiteApprovalStore",
    "StoreBounds",
    "open_approval_store",
]

T = TypeVar("T")
Decide = Callable[[GrantRecord | None], tuple[GrantRecord | None, T]]
"""Given the record held (None if none), what to write (None: nothing) and what to return."""

DUPLICATE_KEY = "duplicate_key"
"""`insert` found the key taken (a token repeated): the ledger draws another."""
_WHAT = "approval store"


@dataclass(frozen=True)
class StoreBounds:
    """The ledger's bounds, passed with every call that may need them."""

    max_live: int
    max_pending_per_requester: int
    max_terminal: int
    retention_seconds: float


class ApprovalStore(Protocol):
    """The small protocol every approval backend implements; every method is thread-safe."""

    kind: str
    """``memory``, ``sqlite`` or ``redis``."""

    def insert(self, record: GrantRecord, now: float, bounds: StoreBounds) -> str | None:
        """Add a new pending `record`; None, or why not (a reason code, or `DUPLICATE_KEY`)."""
        ...

    def update(self, key: str, now: float, bounds: StoreBounds, decide: Decide[T]) -> T:
        """Apply `decide` to the record under `key`, atomically; return what it returned."""
        ...

    def holds_any(self, keys: Collection[str]) -> bool:
        """Whether any of `keys` names a record held (live or ended)."""
        ...

    def sweep(self, now: float, bounds: StoreBounds) -> None:
        """End live grants whose expiry passed; drop ended ones past retention or the cap."""
        ...

    def counts(self, now: float, bounds: StoreBounds) -> tuple[int, int]:
        """(live, ended) records held, after a sweep."""
        ...

    @property
    def evictions(self) -> Mapping[str, int]:
        """Ended records this process dropped, by `ApprovalEvictionReason`."""
        ...

    def close(self) -> None: ...


def _expired(record: GrantRecord, bounds: StoreBounds) -> GrantRecord:
    # An expired grant ends at its expiry, whenever the sweep gets to it.
    return record.ended(ApprovalStatus.EXPIRED, record.expires_at, None, bounds.retention_seconds)


class _EvictionCounts:
    """Per-process eviction counts; a metric counter, so they survive a fork."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter(
            {ApprovalEvictionReason.RETENTION: 0, ApprovalEvictionReason.MAX_TERMINAL: 0}
        )
        reinit_after_fork(self._reinit)

    def add(self, retention: int, max_terminal: int) -> None:
        if retention or max_terminal:
            with self._lock:
                self._counts[ApprovalEvictionReason.RETENTION] += retention
                self._counts[ApprovalEvictionReason.MAX_TERMINAL] += max_terminal

    def read(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _reinit(self) -> None:
        self._lock = threading.Lock()


# -- memory ------------------------------------------------------------------


class MemoryApprovalStore:
    """Approvals in this process only: fast, lost on restart, unknown to other replicas.

    A forked child starts empty: if it kept the parent's grants, each use
    could be spent once in each process.
    """

    kind = storage.MEMORY

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._evictions = _EvictionCounts()
        self._reset()
        reinit_after_fork(self._reset)

    def _reset(self) -> None:
        # The cores read the time their caller passed in, not a clock of their own.
        self._lock = threading.Lock()
        self._now = 0.0
        self._bounds: StoreBounds | None = None
        self._live: BoundedStore[str, GrantRecord] = BoundedStore(
            clock=self._read_now, on_evict=self._on_live_expired
        )
        self._ended: BoundedStore[str, GrantRecord] = BoundedStore(
            clock=self._read_now, on_evict=self._on_ended_expired
        )
        self._pending: Counter[str] = Counter()

    def _read_now(self) -> float:
        return self._now

    def _enter(self, now: float, bounds: StoreBounds) -> None:
        self._now = now
        self._bounds = bounds
        # Expiry-ordered heaps: this costs what it removes, not what the store holds.
        self._live.expire()
        self._ended.expire()

    def insert(self, record: GrantRecord, now: float, bounds: StoreBounds) -> str | None:
        with self._lock:
            self._enter(now, bounds)
            if record.key in self._live or record.key in self._ended:
                return DUPLICATE_KEY
            if len(self._live) >= bounds.max_live:
                return ApprovalReason.CAPACITY_EXCEEDED
            if self._pending[record.requester_key] >= bounds.max_pending_per_requester:
                return ApprovalReason.TOO_MANY_PENDING
            self._write(None, record)
            return None

    def update(self, key: str, now: float, bounds: StoreBounds, decide: Decide[T]) -> T:
        with self._lock:
            self._enter(now, bounds)
            held = self._live.get(key)
            if held is None:
                held = self._ended.get(key)
            new, result = decide(held)
            if new is not None:
                self._write(held, new)
            return result

    def holds_any(self, keys: Collection[str]) -> bool:
        with self._lock:
            return any(key in self._live or key in self._ended for key in keys)

    def sweep(self, now: float, bounds: StoreBounds) -> None:
        with self._lock:
            self._enter(now, bounds)

    def counts(self, now: float, bounds: StoreBounds) -> tuple[int, int]:
        with self._lock:
            self._enter(now, bounds)
            return len(self._live), len(self._ended)

    @property
    def evictions(self) -> Mapping[str, int]:
        return self._evictions.read()

    def close(self) -> None:
        pass

    def _write(self, old: GrantRecord | None, new: GrantRecord) -> None:
        if old is not None and old.pending and not new.pending:
            self._unpend(old)
        if new.live:
            if old is None:
                self._pending[new.requester_key] += 1
            self._live.put(new.key, new, expires_at=new.expires_at)
        else:
            self._live.pop(new.key)
            self._retire(new)

    def _unpend(self, record: GrantRecord) -> None:
        requester = record.requester_key
        self._pending[requester] -= 1
        if self._pending[requester] <= 0:
            del self._pending[requester]

    def _retire(self, record: GrantRecord) -> None:
        ended = self._ended
        ended.put(record.key, record, expires_at=record.held_until)
        bounds = self._bounds
        if bounds is not None:
            while len(ended) > bounds.max_terminal:
                ended.pop(next(iter(ended)))
                self._evictions.add(0, 1)

    def _on_live_expired(self, _key: str, record: GrantRecord, _reason: str) -> None:
        # The core evicts a live grant only when its expiry passes (it has no other bound).
        if record.pending:
            self._unpend(record)
        bounds = self._bounds
        retention = bounds.retention_seconds if bounds is not None else 0.0
        self._retire(record.ended(ApprovalStatus.EXPIRED, record.expires_at, None, retention))

    def _on_ended_expired(self, _key: str, _record: GrantRecord, reason: str) -> None:
        if reason == EvictionReason.EXPIRED:
            self._evictions.add(1, 0)

    def __repr__(self) -> str:
        return f"MemoryApprovalStore(live={len(self._live)}, ended={len(self._ended)})"


# -- SQLite ------------------------------------------------------------------

_MAX_IDLE_CONNECTIONS = 8

_SQLITE_SCHEMA_VERSION = 1
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS approval_grants (
    key TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    live INTEGER NOT NULL,
    -- The hashed, folded requester while the grant is pending, else NULL.
    requester TEXT,
    -- Live: when the grant expires. Ended: when its record may be dropped.
    held_until REAL NOT NULL,
    -- Ended: the order grants ended in, oldest first, for max_terminal.
    ended_order INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS approval_grants_by_end ON approval_grants (ended_order);
CREATE INDEX IF NOT EXISTS approval_grants_by_expiry ON approval_grants (live, held_until);
CREATE INDEX IF NOT EXISTS approval_grants_pending ON approval_grants (requester, held_until);
-- COUNT(*) reads every row; triggers keep the counts in step instead.
CREATE TABLE IF NOT EXISTS approval_counts (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    live INTEGER NOT NULL,
    ended INTEGER NOT NULL
);
INSERT OR IGNORE INTO approval_counts VALUES (0, 0, 0);
CREATE TRIGGER IF NOT EXISTS approval_grants_added AFTER INSERT ON approval_grants
BEGIN UPDATE approval_counts SET live = live + NEW.live, ended = ended + 1 - NEW.live; END;
CREATE TRIGGER IF NOT EXISTS approval_grants_removed AFTER DELETE ON approval_grants
BEGIN UPDATE approval_counts SET live = live - OLD.live, ended = ended - 1 + OLD.live; END;
CREATE TRIGGER IF NOT EXISTS approval_grants_moved AFTER UPDATE OF live ON approval_grants
BEGIN UPDATE approval_counts
    SET live = live - OLD.live + NEW.live, ended = ended + OLD.live - NEW.live; END;
"""


class SQLiteApprovalStore:
    """Approvals in a SQLite file: they survive a restart, a ``kill -9`` and a reboot.

    WAL journaling with ``synchronous=FULL``: a decision is on disk before
    it returns. Each decision is one ``BEGIN IMMEDIATE`` transaction, so
    threads and processes on one host sharing the file decide one at a
    time. Connections are borrowed from a small pool (at most
    `_MAX_IDLE_CONNECTIONS` kept idle), so no Python lock is held while
    SQLite works and short-lived threads leave no connection behind; a
    forked child opens its own.
    """

    kind = storage.SQLITE

    def __init__(self, path: str, *, timeout_seconds: float = 5.0) -> None:
        storage.check_sqlite_path(path, what=_WHAT)
        self._path = path
        self._timeout = timeout_seconds
        self._what = f"SQLite {_WHAT} {path!r}"
        self._evictions = _EvictionCounts()
        self._pool_lock = threading.Lock()
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        # Open one now, so that a bad path is a ValueError here, not a refusal later.
        self._idle.append(self._open())
        reinit_after_fork(self._after_fork)

    def _open(self) -> sqlite3.Connection:
        return storage.open_sqlite(
            self._path,
            schema=_SQLITE_SCHEMA,
            schema_version=_SQLITE_SCHEMA_VERSION,
            what=_WHAT,
            timeout_seconds=self._timeout,
        )

    @contextlib.contextmanager
    def _borrowed(self) -> Iterator[sqlite3.Connection]:
        with self._pool_lock:
            if self._closed:
                raise StoreFailure(f"{self._what} is closed")
            connection = self._idle.pop() if self._idle else None
        if connection is None:
            try:
                connection = self._open()
            except ValueError as exc:  # the file went away or became unreadable
                raise StoreFailure(str(exc)) from None
        try:
            yield connection
        finally:
            with self._pool_lock:
                keep = not self._closed and len(self._idle) < _MAX_IDLE_CONNECTIONS
                if keep:
                    self._idle.append(connection)
            if not keep:
                connection.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with (
            self._borrowed() as connection,
            storage.sqlite_transaction(connection, what=self._what) as db,
        ):
            yield db

    def insert(self, record: GrantRecord, now: float, bounds: StoreBounds) -> str | None:
        with self._transaction() as db:
            if db.execute("SELECT 1 FROM approval_grants WHERE key = ?", (record.key,)).fetchone():
                return DUPLICATE_KEY
            if self._live_count(db) >= bounds.max_live:
                # Expired grants still count until swept: sweep, then count again.
                self._sweep(db, now, bounds)
                if self._live_count(db) >= bounds.max_live:
                    return ApprovalReason.CAPACITY_EXCEEDED
            pending = db.execute(
                "SELECT COUNT(*) FROM approval_grants WHERE requester = ? AND held_until > ?",
                (record.requester_key, now),
            ).fetchone()[0]
            if pending >= bounds.max_pending_per_requester:
                return ApprovalReason.TOO_MANY_PENDING
            self._write(db, record, now, bounds)
        return None

    def update(self, key: str, now: float, bounds: StoreBounds, decide: Decide[T]) -> T:
        with self._transaction() as db:
            row = db.execute("SELECT record FROM approval_grants WHERE key = ?", (key,)).fetchone()
            held = GrantRecord.from_json(row[0]) if row is not None else None
            if held is not None and not held.live and held.held_until <= now:
                held = None  # past its retention: forgotten, whether or not swept yet
            new, result = decide(held)
            if new is not None:
                self._write(db, new, now, bounds)
        return result

    def holds_any(self, keys: Collection[str]) -> bool:
        if not keys:
            return False
        with self._borrowed() as connection, storage.sqlite_reading(self._what):
            row = connection.execute(
                "SELECT EXISTS (SELECT 1 FROM approval_grants "
                "WHERE key IN (SELECT value FROM json_each(?)))",
                (json.dumps(sorted(keys)),),
            ).fetchone()
        return bool(row[0])

    def sweep(self, now: float, bounds: StoreBounds) -> None:
        with self._transaction() as db:
            self._sweep(db, now, bounds)

    def counts(self, now: float, bounds: StoreBounds) -> tuple[int, int]:
        with self._transaction() as db:
            self._sweep(db, now, bounds)
            live, ended = db.execute("SELECT live, ended FROM approval_counts").fetchone()
        return int(live), int(ended)

    @property
    def evictions(self) -> Mapping[str, int]:
        return self._evictions.read()

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for connection in idle:
            connection.close()

    def _after_fork(self) -> None:
        # A SQLite connection must not be used across fork(); the child opens its own.
        self._pool_lock = threading.Lock()
        self._idle = []

    @staticmethod
    def _live_count(db: sqlite3.Connection) -> int:
        return int(db.execute("SELECT live FROM approval_counts").fetchone()[0])

    def _write(
        self, db: sqlite3.Connection, record: GrantRecord, now: float, bounds: StoreBounds
    ) -> None:
        db.execute(
            # An upsert, not INSERT OR REPLACE: a replace deletes without firing the
            # delete trigger, and the counts would drift.
            "INSERT INTO approval_grants VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE "
            "SET record = excluded.record, live = excluded.live, requester = excluded.requester, "
            "held_until = excluded.held_until, ended_order = excluded.ended_order",
            (
                record.key,
                record.to_json(),
                int(record.live),
                record.requester_key if record.pending else None,
                record.held_until,
                None
                if record.live
                else db.execute(
                    "SELECT IFNULL(MAX(ended_order), 0) + 1 FROM approval_grants"
                ).fetchone()[0],
            ),
        )
        if not record.live:
            self._trim(db, bounds)

    def _sweep(self, db: sqlite3.Connection, now: float, bounds: StoreBounds) -> None:
        expired = db.execute(
            "SELECT record FROM approval_grants WHERE live = 1 AND held_until <= ?", (now,)
        ).fetchall()
        for (text,) in expired:
            self._write(db, _expired(GrantRecord.from_json(text), bounds), now, bounds)
        forgotten = db.execute(
            "DELETE FROM approval_grants WHERE live = 0 AND held_until <= ?", (now,)
        ).rowcount
        self._evictions.add(forgotten, 0)
        self._trim(db, bounds)

    def _trim(self, db: sqlite3.Connection, bounds: StoreBounds) -> None:
        over = int(db.execute("SELECT ended FROM approval_counts").fetchone()[0])
        over -= bounds.max_terminal
        if over > 0:
            # The earliest ended first.
            db.execute(
                "DELETE FROM approval_grants WHERE key IN (SELECT key FROM approval_grants "
                "WHERE ended_order IS NOT NULL ORDER BY ended_order LIMIT ?)",
                (over,),
            )
            self._evictions.add(0, over)

    def __repr__(self) -> str:
        return f"SQLiteApprovalStore({self._path!r})"


# -- Redis -------------------------------------------------------------------

# Files an ended record (ARGV[4], unless empty) under its forget time (ARGV[5])
# and its end order, then drops ended records past retention, then the
# earliest ended past max_terminal. It runs inside the decision's MULTI, so the
# bound holds the moment the decision commits.
# KEYS: the ended index by forget time, by end order, the end counter.
# ARGV: now, max_terminal, the record key prefix, the key ending, its forget time.
_REDIS_RETIRE = """
if ARGV[4] ~= '' then
  local order = redis.call('INCR', KEYS[3])
  redis.call('ZADD', KEYS[1], ARGV[5], ARGV[4])
  redis.call('ZADD', KEYS[2], order, ARGV[4])
end
local forgotten = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
for _, key in ipairs(forgotten) do
  redis.call('DEL', ARGV[3] .. key)
  redis.call('ZREM', KEYS[2], key)
end
if #forgotten > 0 then redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1]) end
local over = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[2])
local pushed = 0
if over > 0 then
  local oldest = redis.call('ZPOPMIN', KEYS[2], over)
  for i = 1, #oldest, 2 do
    redis.call('DEL', ARGV[3] .. oldest[i])
    redis.call('ZREM', KEYS[1], oldest[i])
    pushed = pushed + 1
  end
end
return {#forgotten, pushed}
"""
# Optimistic transactions retried this often under contention before failing closed.
_REDIS_ATTEMPTS = 1000


class RedisApprovalStore:
    """Approvals in a Redis shared by every replica.

    Each record is a string key; sorted sets index live grants (by expiry),
    pending ones per requester, and ended ones (by forget time). A decision
    is one optimistic transaction: WATCH the record, read it, decide, then
    MULTI/EXEC the writes, retried if another replica wrote the record
    meanwhile; so under any race exactly one outcome is written. Times come
    from the deciding ledger's clock, so replicas' clocks must agree to
    within what the operator accepts.
    """

    kind = storage.REDIS

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = "otel_bounded:approvals:",
        description: str = "redis",
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._records = f"{key_prefix}g:"
        self._live = f"{key_prefix}live"
        self._ended = f"{key_prefix}ended"
        self._ended_order = f"{key_prefix}ended_order"
        self._ended_count = f"{key_prefix}ended_count"
        # Shown in reprs and errors, which reach spans: never a credential.
        self._description = redact_url(description)
        self._what = f"Redis {_WHAT} {self._description}"
        self._evictions = _EvictionCounts()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "otel_bounded:approvals:",
        timeout_seconds: float = 2.0,
    ) -> RedisApprovalStore:
        """A store on ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS)."""
        client = storage.connect_redis(url, what=_WHAT, timeout_seconds=timeout_seconds)
        return cls(client, key_prefix=key_prefix, description=url)

    def _pending(self, requester_key: str) -> str:
        return f"{self._prefix}pending:{requester_key}"

    def insert(self, record: GrantRecord, now: float, bounds: StoreBounds) -> str | None:
        from redis.exceptions import WatchError

        pending = self._pending(record.requester_key)
        record_key = self._records + record.key
        with storage.redis_calls(self._what):
            for _ in range(_REDIS_ATTEMPTS):
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(record_key, self._live, pending)  # type: ignore[no-untyped-call]
                        if pipe.exists(record_key):
                            return DUPLICATE_KEY
                        if pipe.zcard(self._live) >= bounds.max_live:
                            pipe.unwatch()
                            # Expired grants still count until swept: sweep, then retry.
                            self.sweep(now, bounds)
                            pipe.watch(record_key, self._live, pending)  # type: ignore[no-untyped-call]
                            if pipe.zcard(self._live) >= bounds.max_live:
                                return ApprovalReason.CAPACITY_EXCEEDED
                        if pipe.zcount(pending, f"({now!r}", "+inf") >= (
                            bounds.max_pending_per_requester
                        ):
                            return ApprovalReason.TOO_MANY_PENDING
                        pipe.multi()
                        self._queue_write(pipe, None, record, now, bounds)
                        self._count_trim(pipe.execute())
                        return None
                    except WatchError:
                        continue
        raise StoreFailure(f"{self._what}: too much contention; failing closed")

    def update(self, key: str, now: float, bounds: StoreBounds, decide: Decide[T]) -> T:
        from redis.exceptions import WatchError

        record_key = self._records + key
        with storage.redis_calls(self._what):
            for _ in range(_REDIS_ATTEMPTS):
                with self._client.pipeline(transaction=True) as pipe:
                    try:
                        pipe.watch(record_key)  # type: ignore[no-untyped-call]
                        text = pipe.get(record_key)
                        held = GrantRecord.from_json(text) if text is not None else None
                        if held is not None and not held.live and held.held_until <= now:
                            held = None  # past its retention: forgotten, swept or not
                        new, result = decide(held)
                        if new is None:
                            return result
                        pipe.multi()
                        self._queue_write(pipe, held, new, now, bounds)
                        self._count_trim(pipe.execute())
                        return result
                    except WatchError:
                        continue
        raise StoreFailure(f"{self._what}: too much contention; failing closed")

    def holds_any(self, keys: Collection[str]) -> bool:
        if not keys:
            return False
        with storage.redis_calls(self._what):
            return int(self._client.exists(*(self._records + key for key in keys))) > 0

    def sweep(self, now: float, bounds: StoreBounds) -> None:
        with storage.redis_calls(self._what):
            expired = self._client.zrangebyscore(self._live, "-inf", now)
            for member in expired:
                key = member.decode("ascii") if isinstance(member, bytes) else str(member)
                self.update(key, now, bounds, lambda held: _expire_decision(held, now, bounds))
            self._count_trim(
                [self._client.eval(_REDIS_RETIRE, 3, *self._retire_args(None, now, bounds))]
            )

    def counts(self, now: float, bounds: StoreBounds) -> tuple[int, int]:
        self.sweep(now, bounds)
        with storage.redis_calls(self._what), self._client.pipeline(transaction=True) as pipe:
            pipe.zcard(self._live)
            pipe.zcard(self._ended)
            live, ended = pipe.execute()
        return int(live), int(ended)

    @property
    def evictions(self) -> Mapping[str, int]:
        return self._evictions.read()

    def close(self) -> None:
        self._client.close()

    def _retire_args(
        self, ending: GrantRecord | None, now: float, bounds: StoreBounds
    ) -> tuple[str | int, ...]:
        """The keys and arguments of `_REDIS_RETIRE` (its three keys first)."""
        return (
            self._ended,
            self._ended_order,
            self._ended_count,
            repr(now),
            bounds.max_terminal,
            self._records,
            "" if ending is None else ending.key,
            "" if ending is None else repr(ending.held_until),
        )

    def _queue_write(
        self,
        pipe: redis.client.Pipeline,
        old: GrantRecord | None,
        new: GrantRecord,
        now: float,
        bounds: StoreBounds,
    ) -> None:
        key = new.key
        pending = self._pending(new.requester_key)
        pipe.set(self._records + key, new.to_json())
        if new.live:
            pipe.zadd(self._live, {key: new.expires_at})
        else:
            pipe.zrem(self._live, key)
        if new.pending:
            pipe.zadd(pending, {key: new.expires_at})
        elif old is None or old.pending:
            pipe.zrem(pending, key)
        if not new.live:
            # Only an ending grows the ended records, so only an ending needs a trim;
            # records past retention are forgotten by every read until one runs.
            pipe.eval(_REDIS_RETIRE, 3, *self._retire_args(new, now, bounds))

    def _count_trim(self, replies: list[Any]) -> None:
        trimmed = replies[-1]
        if isinstance(trimmed, list):  # the retire script ran last
            forgotten, pushed = trimmed
            self._evictions.add(int(forgotten), int(pushed))

    def __repr__(self) -> str:
        return f"RedisApprovalStore({self._description})"


def _expire_decision(
    held: GrantRecord | None, now: float, bounds: StoreBounds
) -> tuple[GrantRecord | None, None]:
    # Another replica may have ended or extended it since the index was read.
    if held is None or not held.live or held.expires_at > now:
        return None, None
    return _expired(held, bounds), None


def open_approval_store(url: str, **options: object) -> ApprovalStore:
    """A store from ``memory``, ``sqlite:///path`` or ``redis://host:port/db``.

    Raises `ValueError` (never showing a credential) for anything else, or
    a file that cannot be opened. A Redis store connects lazily: one that
    cannot be reached fails its first decision, closed.
    """
    location = storage.parse_store_url(url, what=_WHAT)
    if location.kind == storage.MEMORY:
        if options:
            raise ValueError(f"the memory approval store takes no options: {sorted(options)}")
        return MemoryApprovalStore()
    if location.kind == storage.SQLITE:
        return SQLiteApprovalStore(location.target, **options)  # type: ignore[arg-type]
    return RedisApprovalStore.from_url(location.target, **options)  # type: ignore[arg-type]
