"""Where revocations live: this process, a SQLite file, or a Redis shared by a fleet.

Every store keeps two kinds of entry, each until an absolute time (its
``keep_until``, in the ``expires_at`` column or score) after which the tokens
it blocks have expired on every replica within the skew: a revoked token id,
and a per-principal cut-off that blocks every token of that principal issued
at or before it. Stores never drop an entry earlier, and they fail closed: an
operation that cannot reach its backend raises `RevocationStoreUnavailable`.

Times are passed in from the provider, so one injected clock drives every
backend. Sweeps get the provider's now, which never goes back; writes get the
clock's reading, which a store that counts time itself (Redis PX) measures
retention from. Lookups take no time at all: an entry counts until a sweep
removes it, and a sweep records how far it went, so that no replica judges a
token live whose revocation another replica's sweep removed.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
import sys
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from otel_bounded import storage
from otel_bounded.config import redact_url
from otel_bounded.core import BoundedStore, EvictionReason, reinit_after_fork
from otel_bounded.errors import RevocationStoreUnavailable
from otel_bounded.storage import StoreFailure

if TYPE_CHECKING:
    import redis

__all__ = [
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "RevocationStore",
    "SQLiteRevocationStore",
    "open_revocation_store",
]


class RevocationStore(Protocol):
    """The small protocol every revocation backend implements.

    Every entry is kept until ``keep_until``, a time on the revoking
    replica's clock that the provider chooses late enough for the tokens it
    blocks to have expired on every replica whose clock is within
    ``max_clock_skew_seconds``. A sweep at ``now`` removes the entries kept
    until ``now`` or earlier; `lookup` reports how far entries may be gone
    (``gone_through``), in the same read as the lookup itself, so a replica
    whose clock is behind one that swept refuses those tokens as expired
    rather than finding no revocation.

    The provider calls these under its lock, except on a store whose
    `thread_safe` is true (a network store must not serialize every
    verification of a process behind one round trip).
    """

    kind: str
    """``memory``, ``sqlite`` or ``redis``: the ``otel_bounded.revocation_store`` attribute."""
    thread_safe: bool

    def revoke_token(self, token_id: str, keep_until: float, reading: float) -> bool:
        """Hold `token_id` until `keep_until` (or longer if already held); True when new.

        `reading` is the revoking provider's clock reading: an entry held only
        until then or earlier counts as gone, and a store that counts time
        itself measures retention from it (never from a later time).
        """
        ...

    def revoke_principal(
        self, principal_id: str, cutoff: float, keep_until: float, reading: float
    ) -> bool:
        """Block the principal's tokens issued at or before `cutoff`; True when this widened it."""
        ...

    def lookup(self, token_id: str, principal_id: str, issued_at: float) -> tuple[bool, float]:
        """(whether the token is revoked by id or by its principal's cut-off, gone_through).

        Entries kept until `gone_through` or earlier may have been swept;
        ``-inf`` when nothing is removed by a caller's clock.
        """
        ...

    def revoked_among(self, principal_id: str, tokens: Sequence[tuple[str, float]]) -> set[str]:
        """The ids among `tokens` ((token_id, issued_at) of one principal) already revoked."""
        ...

    def sweep(self, now: float) -> int:
        """Remove entries kept until `now` or earlier; return how many went."""
        ...

    def count(self) -> int:
        """Entries held, token ids and cut-offs together, until the next sweep."""
        ...

    def close(self) -> None: ...


class MemoryRevocationStore:
    """Revocations in this process only: fast, lost on restart, unknown to other replicas.

    Not thread-safe alone; its provider guards it. Each kind of entry sits in
    a `BoundedStore` with an absolute expiry and no other bound: dropping an
    entry early would un-revoke a live token. A sweep records how far it went,
    as in a shared file, so providers that share one (on one thread: each
    guards it with its own lock only) see each other's sweeps.
    """

    kind = "memory"
    thread_safe = False

    def __init__(self) -> None:
        # The cores expire entries only as far as a sweep has been: lookups never evict.
        self._swept_through = -sys.float_info.max
        self._tokens: BoundedStore[str, float] = BoundedStore(clock=self._read_swept_through)
        self._cutoffs: BoundedStore[str, float] = BoundedStore(clock=self._read_swept_through)
        self._reported_removals = 0

    def _read_swept_through(self) -> float:
        return self._swept_through

    def revoke_token(self, token_id: str, keep_until: float, reading: float) -> bool:
        tokens = self._tokens
        held_until = tokens.expires_at(token_id)
        if held_until is None or held_until < keep_until:
            tokens.put(token_id, keep_until, expires_at=keep_until)
        return held_until is None or held_until <= reading

    def revoke_principal(
        self, principal_id: str, cutoff: float, keep_until: float, reading: float
    ) -> bool:
        cutoffs = self._cutoffs
        held = cutoffs.get(principal_id, now=-math.inf)
        held_until = cutoffs.expires_at(principal_id)
        if held is None or held_until is None:
            cutoffs.put(principal_id, cutoff, expires_at=keep_until)
            return True
        if cutoff > held or keep_until > held_until:
            cutoffs.put(principal_id, max(cutoff, held), expires_at=max(keep_until, held_until))
        return cutoff > held or held_until <= reading

    def lookup(self, token_id: str, principal_id: str, issued_at: float) -> tuple[bool, float]:
        if self._tokens.get(token_id, now=-math.inf) is not None:
            return True, self._swept_through
        cutoff = self._cutoffs.get(principal_id, now=-math.inf)
        return cutoff is not None and issued_at <= cutoff, self._swept_through

    def revoked_among(self, principal_id: str, tokens: Sequence[tuple[str, float]]) -> set[str]:
        held = self._tokens
        cutoff = self._cutoffs.get(principal_id, now=-math.inf)
        floor = -math.inf if cutoff is None else cutoff
        return {
            token_id
            for token_id, issued_at in tokens
            if issued_at <= floor or held.get(token_id, now=-math.inf) is not None
        }

    def sweep(self, now: float) -> int:
        if now > self._swept_through:
            self._swept_through = now
        self._tokens.expire()
        self._cutoffs.expire()
        # Entries the cores expired on their own since the last sweep are reported now too.
        removed_total = (
            self._tokens.evictions[EvictionReason.EXPIRED]
            + self._cutoffs.evictions[EvictionReason.EXPIRED]
        )
        removed = removed_total - self._reported_removals
        self._reported_removals = removed_total
        return removed

    def count(self) -> int:
        return len(self._tokens) + len(self._cutoffs)

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"MemoryRevocationStore(entries={self.count()})"


_WHAT = "revocation store"
_SQLITE_SCHEMA_VERSION = 1
_SQLITE_BATCH = 500  # ids per IN (...) query: far below SQLite's variable limit
_SQLITE_SCHEMA = """
CREATE TABLE IF NOT EXISTS revoked_tokens (
    token_id TEXT PRIMARY KEY,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS revoked_tokens_by_expiry ON revoked_tokens (expires_at);
CREATE TABLE IF NOT EXISTS principal_cutoffs (
    principal_id TEXT PRIMARY KEY,
    cutoff REAL NOT NULL,
    expires_at REAL NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS principal_cutoffs_by_expiry ON principal_cutoffs (expires_at);
-- The latest time a sweep ran at: a provider started after a clock step back must
-- not judge tokens live whose revocations that sweep already removed.
CREATE TABLE IF NOT EXISTS sweep_state (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    swept_through REAL NOT NULL
);
INSERT OR IGNORE INTO sweep_state VALUES (0, -1e308);
-- COUNT(*) reads every row; triggers keep the count in step instead.
CREATE TABLE IF NOT EXISTS entry_count (
    id INTEGER PRIMARY KEY CHECK (id = 0),
    entries INTEGER NOT NULL
);
INSERT OR IGNORE INTO entry_count VALUES (0, 0);
CREATE TRIGGER IF NOT EXISTS revoked_tokens_added AFTER INSERT ON revoked_tokens
BEGIN UPDATE entry_count SET entries = entries + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS revoked_tokens_removed AFTER DELETE ON revoked_tokens
BEGIN UPDATE entry_count SET entries = entries - 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS principal_cutoffs_added AFTER INSERT ON principal_cutoffs
BEGIN UPDATE entry_count SET entries = entries + 1 WHERE id = 0; END;
CREATE TRIGGER IF NOT EXISTS principal_cutoffs_removed AFTER DELETE ON principal_cutoffs
BEGIN UPDATE entry_count SET entries = entries - 1 WHERE id = 0; END;
"""


class SQLiteRevocationStore:
    """Revocations in a SQLite file: they survive a restart, a ``kill -9`` and a reboot.

    WAL journaling with ``synchronous=FULL``: a revocation is on disk before
    `revoke_token` returns. Processes on one host may share the file. Not
    thread-safe alone; its provider guards it. The file's identity (device
    and inode) is checked before every access: a file deleted or replaced
    under a running process fails closed instead of taking revocations that
    a restart would forget.
    """

    kind = "sqlite"
    thread_safe = False

    def __init__(self, path: str | os.PathLike[str], *, timeout_seconds: float = 5.0) -> None:
        self._path = os.fspath(path)
        storage.check_sqlite_path(self._path, what=_WHAT)
        self._timeout = timeout_seconds
        self._connection, self._identity = self._connect()
        reinit_after_fork(self._reopen)

    def _connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        connection = storage.open_sqlite(
            self._path,
            schema=_SQLITE_SCHEMA,
            schema_version=_SQLITE_SCHEMA_VERSION,
            what=_WHAT,
            timeout_seconds=self._timeout,
        )
        try:
            stat = os.stat(self._path)
        except OSError as exc:
            connection.close()
            raise ValueError(f"cannot open SQLite {_WHAT} {self._path!r}: {exc.strerror}") from None
        return connection, (stat.st_dev, stat.st_ino)

    def _reopen(self) -> None:
        # A SQLite connection must not be used across fork(); the child opens its own.
        try:
            self._connection, self._identity = self._connect()
        except ValueError:
            # Fail closed: a closed connection makes every call raise RevocationStoreUnavailable.
            self._connection = storage.closed_sqlite_connection()

    def _unavailable(self, reason: object) -> RevocationStoreUnavailable:
        return RevocationStoreUnavailable(
            f"SQLite {_WHAT} {self._path!r} failed ({reason}); failing closed"
        )

    def _checked(self) -> sqlite3.Connection:
        """The connection, once the path still names the file it opened."""
        try:
            stat = os.stat(self._path)
        except OSError:
            raise self._unavailable("its file was deleted; restart to open a new one") from None
        if (stat.st_dev, stat.st_ino) != self._identity:
            raise self._unavailable(
                "its file was replaced by another; restart to open the file now at this path"
            )
        return self._connection

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the file it opened, rolled back whatever interrupts it.

        A transaction left open would hold the write lock of every process
        sharing the file until this connection closed.
        """
        try:
            with storage.sqlite_transaction(self._checked(), what=_WHAT) as db:
                yield db
        except StoreFailure as exc:
            raise self._unavailable(exc) from None

    def _read(self, sql: str, parameters: Sequence[object]) -> list[Any]:
        db = self._checked()
        try:
            with storage.sqlite_reading(_WHAT):
                return db.execute(sql, parameters).fetchall()
        except StoreFailure as exc:
            raise self._unavailable(exc) from None

    def revoke_token(self, token_id: str, keep_until: float, reading: float) -> bool:
        with self._write() as db:
            row = db.execute(
                "SELECT expires_at FROM revoked_tokens WHERE token_id = ?", (token_id,)
            ).fetchone()
            if row is None:
                db.execute("INSERT INTO revoked_tokens VALUES (?, ?)", (token_id, keep_until))
            elif row[0] < keep_until:
                db.execute(
                    "UPDATE revoked_tokens SET expires_at = ? WHERE token_id = ?",
                    (keep_until, token_id),
                )
        # An expired row not swept yet counts as gone, as in the other stores.
        return row is None or row[0] <= reading

    def revoke_principal(
        self, principal_id: str, cutoff: float, keep_until: float, reading: float
    ) -> bool:
        with self._write() as db:
            row = db.execute(
                "SELECT cutoff, expires_at FROM principal_cutoffs WHERE principal_id = ?",
                (principal_id,),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO principal_cutoffs VALUES (?, ?, ?)",
                    (principal_id, cutoff, keep_until),
                )
            elif row[0] < cutoff or row[1] < keep_until:
                db.execute(
                    "UPDATE principal_cutoffs SET cutoff = max(cutoff, ?), "
                    "expires_at = max(expires_at, ?) WHERE principal_id = ?",
                    (cutoff, keep_until, principal_id),
                )
        return row is None or row[1] <= reading or row[0] < cutoff

    def lookup(self, token_id: str, principal_id: str, issued_at: float) -> tuple[bool, float]:
        # One statement, one snapshot: a sweep commits its deletions and how far it went
        # together, so an entry missing here is always covered by the gone_through read with it.
        rows = self._read(
            "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE token_id = ?) "
            "OR EXISTS (SELECT 1 FROM principal_cutoffs "
            "WHERE principal_id = ? AND cutoff >= ?), "
            "(SELECT swept_through FROM sweep_state WHERE id = 0)",
            (token_id, principal_id, issued_at),
        )
        return bool(rows[0][0]), float(rows[0][1])

    def revoked_among(self, principal_id: str, tokens: Sequence[tuple[str, float]]) -> set[str]:
        if not tokens:
            return set()
        rows = self._read(
            "SELECT cutoff FROM principal_cutoffs WHERE principal_id = ?", (principal_id,)
        )
        floor = rows[0][0] if rows else -math.inf
        revoked = {token_id for token_id, issued_at in tokens if issued_at <= floor}
        ids = [token_id for token_id, _ in tokens]
        for start in range(0, len(ids), _SQLITE_BATCH):
            batch = ids[start : start + _SQLITE_BATCH]
            placeholders = ",".join("?" * len(batch))
            rows = self._read(
                # Only "?" placeholders are formatted in; the ids are bound.
                f"SELECT token_id FROM revoked_tokens WHERE token_id IN ({placeholders})",  # noqa: S608
                batch,
            )
            revoked.update(row[0] for row in rows)
        return revoked

    def sweep(self, now: float) -> int:
        with self._write() as db:
            removed = db.execute("DELETE FROM revoked_tokens WHERE expires_at <= ?", (now,))
            removed_tokens = removed.rowcount
            removed = db.execute("DELETE FROM principal_cutoffs WHERE expires_at <= ?", (now,))
            removed_cutoffs = removed.rowcount
            db.execute(
                "UPDATE sweep_state SET swept_through = max(swept_through, ?) WHERE id = 0",
                (now,),
            )
        return removed_tokens + removed_cutoffs

    def swept_through(self) -> float:
        """The latest `now` this file was swept at, by any process."""
        return float(self._read("SELECT swept_through FROM sweep_state", ())[0][0])

    def count(self) -> int:
        return int(self._read("SELECT entries FROM entry_count", ())[0][0])

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        return f"SQLiteRevocationStore({self._path!r})"


# Atomic on the server, so replicas racing on one key agree. The index sorted
# set (score: keep_until) lets a sweep and a count cost what they touch; the
# keys themselves expire through PX, so Redis only forgets expired revocations.
# PX is measured from the revoking replica's reading or the server's own time,
# whichever is earlier: a replica whose clock runs ahead cannot shorten it.
_REDIS_KEEP_MS = """
local server = redis.call('TIME')
local base = tonumber(server[1]) + tonumber(server[2]) / 1000000
local reading = tonumber(ARGV[2])
if reading < base then base = reading end
return math.ceil((tonumber(ARGV[1]) - base) * 1000)
"""
_REDIS_REVOKE_TOKEN = (
    "local function keep_ms()"
    + _REDIS_KEEP_MS
    + """end
local keep = keep_ms()
if keep <= 0 then return 0 end
local held_ms = redis.call('PTTL', KEYS[1])
if held_ms == -2 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])
  return 1
end
if held_ms >= 0 and held_ms < keep then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', keep)
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])
end
return 0
"""
)
_REDIS_REVOKE_PRINCIPAL = (
    "local function keep_ms()"
    + _REDIS_KEEP_MS
    + """end
local keep = keep_ms()
if keep <= 0 then return 0 end
local held = redis.call('GET', KEYS[1])
local held_ms = redis.call('PTTL', KEYS[1])
if held_ms > keep then keep = held_ms end
local widened = 0
local cutoff = ARGV[3]
if held and tonumber(held) >= tonumber(ARGV[3]) then
  cutoff = held
else
  widened = 1
end
if widened == 1 or held_ms < keep then
  redis.call('SET', KEYS[1], cutoff, 'PX', keep)
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[4])
end
return widened
"""
)
_REDIS_BATCH = 1000  # keys per MGET in revoked_among


class RedisRevocationStore:
    """Revocations in a Redis shared by every replica.

    Each entry is a key with ``PX = keep_until - min(reading, server time)``
    (to the millisecond, rounded up), so it lives as long as the tokens it
    blocks even when the revoking replica's clock runs ahead. Nothing is
    removed by a replica's clock, so `lookup` reports nothing gone. An
    unreachable or hung Redis: every call raises `RevocationStoreUnavailable`
    within ``timeout_seconds``, so verification fails closed.
    """

    kind = "redis"
    thread_safe = True

    def __init__(
        self,
        client: redis.Redis,
        *,
        key_prefix: str = "otel_bounded:revocations:",
        description: str = "redis",
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._index = f"{key_prefix}index"
        # Shown in reprs and errors, which reach span events: never a credential.
        self._description = redact_url(description)
        self._revoke_token = client.register_script(_REDIS_REVOKE_TOKEN)
        self._revoke_principal = client.register_script(_REDIS_REVOKE_PRINCIPAL)

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        key_prefix: str = "otel_bounded:revocations:",
        timeout_seconds: float = 2.0,
    ) -> RedisRevocationStore:
        """A store on ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS).

        Each call fails closed within `timeout_seconds` when Redis hangs: a
        timeout is not retried (only a connection a restarted server closed is).
        """
        client = storage.connect_redis(url, what=_WHAT, timeout_seconds=timeout_seconds)
        description = redact_url(url)
        return cls(client, key_prefix=key_prefix, description=description)

    def _token_key(self, token_id: str) -> str:
        return f"{self._prefix}t:{token_id}"

    def _principal_key(self, principal_id: str) -> str:
        return f"{self._prefix}p:{principal_id}"

    @contextlib.contextmanager
    def _calls(self) -> Iterator[None]:
        """Any backend failure inside the block as `RevocationStoreUnavailable`."""
        try:
            with storage.redis_calls(f"Redis {_WHAT} {self._description}"):
                yield
        except StoreFailure as exc:
            raise RevocationStoreUnavailable(f"{exc}; failing closed") from None

    def revoke_token(self, token_id: str, keep_until: float, reading: float) -> bool:
        with self._calls():
            added = self._revoke_token(
                keys=[self._token_key(token_id), self._index],
                args=[repr(keep_until), repr(reading), f"t:{token_id}"],
            )
        return bool(added)

    def revoke_principal(
        self, principal_id: str, cutoff: float, keep_until: float, reading: float
    ) -> bool:
        with self._calls():
            widened = self._revoke_principal(
                keys=[self._principal_key(principal_id), self._index],
                args=[repr(keep_until), repr(reading), repr(cutoff), f"p:{principal_id}"],
            )
        return bool(widened)

    def lookup(self, token_id: str, principal_id: str, issued_at: float) -> tuple[bool, float]:
        with self._calls():
            by_id, cutoff = self._client.mget(
                [self._token_key(token_id), self._principal_key(principal_id)]
            )
        return by_id is not None or (cutoff is not None and issued_at <= float(cutoff)), -math.inf

    def revoked_among(self, principal_id: str, tokens: Sequence[tuple[str, float]]) -> set[str]:
        revoked: set[str] = set()
        with self._calls():
            for start in range(0, len(tokens), _REDIS_BATCH):
                batch = tokens[start : start + _REDIS_BATCH]
                held = self._client.mget(
                    [self._principal_key(principal_id)]
                    + [self._token_key(token_id) for token_id, _ in batch]
                )
                floor = -math.inf if held[0] is None else float(held[0])
                revoked.update(
                    token_id
                    for (token_id, issued_at), by_id in zip(batch, held[1:], strict=True)
                    if by_id is not None or issued_at <= floor
                )
        return revoked

    def sweep(self, now: float) -> int:
        # The keys expired on their own; this trims the index that counts them.
        with self._calls():
            return int(self._client.zremrangebyscore(self._index, "-inf", now))

    def count(self) -> int:
        with self._calls():
            return int(self._client.zcard(self._index))

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisRevocationStore({self._description})"


def open_revocation_store(url: str, **options: Any) -> RevocationStore:
    """A store from ``memory``, ``sqlite:///path`` or ``redis://host:port/db``.

    As in SQLAlchemy, ``sqlite:///revocations.db`` is relative to the working
    directory and ``sqlite:////var/lib/app/revocations.db`` is absolute.
    Raises `ValueError` for anything else, or a store that cannot be opened.
    """
    location = storage.parse_store_url(url, what=_WHAT)
    if location.kind == storage.MEMORY:
        if options:
            raise ValueError(f"the memory revocation store takes no options: {sorted(options)}")
        return MemoryRevocationStore()
    if location.kind == storage.SQLITE:
        return SQLiteRevocationStore(location.target, **options)
    return RedisRevocationStore.from_url(location.target, **options)
