"""Where revocations live: this process, a SQLite file, or a Redis shared by a fleet.

Every store keeps two kinds of entry, each until an absolute ``expires_at``
after which the tokens it blocks have expired anyway: a revoked token id, and
a per-principal cut-off that blocks every token of that principal issued at
or before it. Stores never drop an entry earlier, and they fail closed: an
operation that cannot reach its backend raises `RevocationStoreUnavailable`.

Times are passed in (``now``) from the provider, so one injected clock
drives every backend. Lookups and sweeps get the provider's now, which never
goes back; writes get the clock's reading, which a store that counts time
itself (Redis PX) measures retention from.
"""

from __future__ import annotations

import contextlib
import math
import os
import sqlite3
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Protocol

from otel_bounded.config import redact_url
from otel_bounded.core import BoundedStore, EvictionReason, reinit_after_fork
from otel_bounded.errors import RevocationStoreUnavailable

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

    The provider calls these under its revocation lock, except `is_revoked`
    on a store whose `thread_safe` is true (a network store should not
    serialize every verification of a process behind one round trip).

    A store that persists across restarts may also offer ``swept_through()
    -> float``, the latest `now` it was swept at: a provider that opens it
    starts its clock no earlier, since what that sweep removed is gone.
    """

    kind: str
    """``memory``, ``sqlite`` or ``redis``: the ``otel_bounded.revocation_store`` attribute."""
    thread_safe: bool

    def revoke_token(self, token_id: str, expires_at: float, now: float) -> bool:
        """Hold `token_id` until `expires_at` (or longer if already held); True when new."""
        ...

    def revoke_principal(
        self, principal_id: str, cutoff: float, expires_at: float, now: float
    ) -> bool:
        """Block the principal's tokens issued at or before `cutoff`; True when this widened it."""
        ...

    def is_revoked(self, token_id: str, principal_id: str, issued_at: float, now: float) -> bool:
        """Whether the token is revoked by id or by its principal's cut-off."""
        ...

    def sweep(self, now: float) -> int:
        """Remove entries whose `expires_at` <= `now`; return how many went."""
        ...

    def count(self) -> int:
        """Entries held, token ids and cut-offs together, until the next sweep."""
        ...

    def close(self) -> None: ...


class MemoryRevocationStore:
    """Revocations in this process only: fast, lost on restart, unknown to other replicas.

    Not thread-safe alone; its provider guards it. Each kind of entry sits in
    a `BoundedStore` with an absolute expiry and no other bound: dropping an
    entry early would un-revoke a live token.
    """

    kind = "memory"
    thread_safe = False

    def __init__(self) -> None:
        # The cores read the time their caller passed in, not a clock of their own.
        self._now = 0.0
        self._tokens: BoundedStore[str, float] = BoundedStore(clock=self._read_now)
        self._cutoffs: BoundedStore[str, float] = BoundedStore(clock=self._read_now)
        self._reported_removals = 0

    def _read_now(self) -> float:
        return self._now

    def revoke_token(self, token_id: str, expires_at: float, now: float) -> bool:
        self._now = now
        tokens = self._tokens
        if tokens.get(token_id) is None:
            tokens.put(token_id, expires_at, expires_at=expires_at)
            return True
        held_until = tokens.expires_at(token_id)
        if held_until is not None and held_until < expires_at:
            tokens.put(token_id, expires_at, expires_at=expires_at)
        return False

    def revoke_principal(
        self, principal_id: str, cutoff: float, expires_at: float, now: float
    ) -> bool:
        self._now = now
        cutoffs = self._cutoffs
        held = cutoffs.get(principal_id)
        held_until = cutoffs.expires_at(principal_id) if held is not None else None
        widened = held is None or cutoff > held
        if held is not None and held_until is not None:
            cutoff = max(cutoff, held)
            expires_at = max(expires_at, held_until)
        if widened or held_until != expires_at:
            cutoffs.put(principal_id, cutoff, expires_at=expires_at)
        return widened

    def is_revoked(self, token_id: str, principal_id: str, issued_at: float, now: float) -> bool:
        self._now = now
        if self._tokens.get(token_id) is not None:
            return True
        cutoff = self._cutoffs.get(principal_id)
        return cutoff is not None and issued_at <= cutoff

    def sweep(self, now: float) -> int:
        self._now = now
        self._tokens.expire()
        self._cutoffs.expire()
        # Entries the cores expired lazily since the last sweep are reported now too.
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


_SQLITE_SCHEMA_VERSION = 1
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
    thread-safe alone; its provider guards it.
    """

    kind = "sqlite"
    thread_safe = False

    def __init__(self, path: str | os.PathLike[str], *, timeout_seconds: float = 5.0) -> None:
        self._path = os.fspath(path)
        if self._path in ("", ":memory:") or self._path.startswith("file:"):
            raise ValueError(
                f"SQLite revocation store needs a file path, got {self._path!r} "
                "(use the memory store for revocations that need not survive a restart)"
            )
        self._timeout = timeout_seconds
        self._connection = self._connect()
        reinit_after_fork(self._reopen)

    def _connect(self) -> sqlite3.Connection:
        try:
            connection = sqlite3.connect(
                self._path, timeout=self._timeout, isolation_level=None, check_same_thread=False
            )
            try:
                version = connection.execute("PRAGMA user_version").fetchone()[0]
                if version > _SQLITE_SCHEMA_VERSION:
                    raise ValueError(
                        f"SQLite revocation store {self._path!r} has schema version {version}, "
                        f"newer than this otel-bounded understands ({_SQLITE_SCHEMA_VERSION})"
                    )
                mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise ValueError(f"SQLite revocation store {self._path!r} cannot use WAL")
                connection.execute("PRAGMA synchronous=FULL")
                connection.executescript(
                    f"BEGIN; {_SQLITE_SCHEMA} PRAGMA user_version = {_SQLITE_SCHEMA_VERSION}; "
                    "COMMIT;"
                )
            except BaseException:
                connection.close()
                raise
        except sqlite3.Error as exc:
            raise ValueError(f"cannot open SQLite revocation store {self._path!r}: {exc}") from None
        return connection

    def _reopen(self) -> None:
        # A SQLite connection must not be used across fork(); the child opens its own.
        try:
            self._connection = self._connect()
        except ValueError:
            # Fail closed: a closed connection makes every call raise RevocationStoreUnavailable.
            self._connection = sqlite3.connect(":memory:", check_same_thread=False)
            self._connection.close()

    def _unavailable(self, exc: sqlite3.Error | UnicodeError) -> RevocationStoreUnavailable:
        return RevocationStoreUnavailable(
            f"SQLite revocation store {self._path!r} failed ({exc}); failing closed"
        )

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, rolled back whatever interrupts it.

        A transaction left open would hold the write lock of every process
        sharing the file until this connection closed.
        """
        db = self._connection
        try:
            db.execute("BEGIN IMMEDIATE")
            yield db
            db.execute("COMMIT")
        except (sqlite3.Error, UnicodeError) as exc:
            raise self._unavailable(exc) from None
        finally:
            with contextlib.suppress(sqlite3.Error):
                if db.in_transaction:
                    db.execute("ROLLBACK")

    def revoke_token(self, token_id: str, expires_at: float, now: float) -> bool:
        with self._write() as db:
            row = db.execute(
                "SELECT expires_at FROM revoked_tokens WHERE token_id = ?", (token_id,)
            ).fetchone()
            if row is None:
                db.execute("INSERT INTO revoked_tokens VALUES (?, ?)", (token_id, expires_at))
            elif row[0] < expires_at:
                db.execute(
                    "UPDATE revoked_tokens SET expires_at = ? WHERE token_id = ?",
                    (expires_at, token_id),
                )
        # An expired row not swept yet counts as gone, as in the other stores.
        return row is None or row[0] <= now

    def revoke_principal(
        self, principal_id: str, cutoff: float, expires_at: float, now: float
    ) -> bool:
        with self._write() as db:
            row = db.execute(
                "SELECT cutoff, expires_at FROM principal_cutoffs WHERE principal_id = ?",
                (principal_id,),
            ).fetchone()
            if row is None:
                db.execute(
                    "INSERT INTO principal_cutoffs VALUES (?, ?, ?)",
                    (principal_id, cutoff, expires_at),
                )
            elif row[0] < cutoff or row[1] < expires_at:
                db.execute(
                    "UPDATE principal_cutoffs SET cutoff = max(cutoff, ?), "
                    "expires_at = max(expires_at, ?) WHERE principal_id = ?",
                    (cutoff, expires_at, principal_id),
                )
        return row is None or row[1] <= now or row[0] < cutoff

    def is_revoked(self, token_id: str, principal_id: str, issued_at: float, now: float) -> bool:
        try:
            row = self._connection.execute(
                "SELECT EXISTS (SELECT 1 FROM revoked_tokens WHERE token_id = ?) "
                "OR EXISTS (SELECT 1 FROM principal_cutoffs "
                "WHERE principal_id = ? AND cutoff >= ?)",
                (token_id, principal_id, issued_at),
            ).fetchone()
        except (sqlite3.Error, UnicodeError) as exc:
            raise self._unavailable(exc) from None
        return bool(row[0])

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
        try:
            row = self._connection.execute("SELECT swept_through FROM sweep_state").fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        return float(row[0])

    def count(self) -> int:
        try:
            row = self._connection.execute("SELECT entries FROM entry_count").fetchone()
        except sqlite3.Error as exc:
            raise self._unavailable(exc) from None
        return int(row[0])

    def close(self) -> None:
        self._connection.close()

    def __repr__(self) -> str:
        return f"SQLiteRevocationStore({self._path!r})"


# Atomic on the server, so replicas racing on one key agree. The index sorted
# set (score: expires_at) lets a sweep and a count cost what they touch; the
# keys themselves expire through PX, so Redis only forgets expired revocations.
_REDIS_REVOKE_TOKEN = """
local held_ms = redis.call('PTTL', KEYS[1])
if held_ms == -2 then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])
  return 1
end
if held_ms >= 0 and held_ms < tonumber(ARGV[2]) then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  redis.call('ZADD', KEYS[2], 'GT', ARGV[1], ARGV[3])
end
return 0
"""
_REDIS_REVOKE_PRINCIPAL = """
local held = redis.call('GET', KEYS[1])
local held_ms = redis.call('PTTL', KEYS[1])
local keep_ms = tonumber(ARGV[2])
if held_ms > keep_ms then keep_ms = held_ms end
local widened = 0
local cutoff = ARGV[1]
if held and tonumber(held) >= tonumber(ARGV[1]) then
  cutoff = held
else
  widened = 1
end
if widened == 1 or held_ms < keep_ms then
  redis.call('SET', KEYS[1], cutoff, 'PX', keep_ms)
  redis.call('ZADD', KEYS[2], 'GT', ARGV[4], ARGV[3])
end
return widened
"""


class RedisRevocationStore:
    """Revocations in a Redis shared by every replica.

    Each entry is a key with ``PX = expires_at - now`` taken from the
    provider's clock, so it lives exactly as long as the tokens it blocks
    (to the millisecond, rounded up); replicas' clocks must agree to within
    what the operator accepts. Unreachable Redis: every call raises
    `RevocationStoreUnavailable`, so verification fails closed.
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
        """A store on ``redis://[user:password@]host:port/db`` (or ``rediss://`` for TLS)."""
        try:
            import redis
            from redis.backoff import NoBackoff
            from redis.retry import Retry
        except ImportError:
            raise ValueError(
                "a Redis revocation store needs the redis package: "
                "pip install 'otel-bounded[redis]'"
            ) from None
        description = redact_url(url)
        try:
            client = redis.Redis.from_url(
                url,
                socket_timeout=timeout_seconds,
                socket_connect_timeout=timeout_seconds,
                # One immediate retry replaces a pooled connection a restarted server
                # closed; backing off would only delay failing closed.
                retry=Retry(NoBackoff(), 1),
            )
        except ValueError as exc:
            raise ValueError(f"invalid Redis URL {description}: {exc}") from None
        return cls(client, key_prefix=key_prefix, description=description)

    def _token_key(self, token_id: str) -> str:
        return f"{self._prefix}t:{token_id}"

    def _principal_key(self, principal_id: str) -> str:
        return f"{self._prefix}p:{principal_id}"

    def _unavailable(self, exc: Exception) -> RevocationStoreUnavailable:
        return RevocationStoreUnavailable(
            f"Redis revocation store {self._description} failed "
            f"({type(exc).__name__}: {exc}); failing closed"
        )

    def revoke_token(self, token_id: str, expires_at: float, now: float) -> bool:
        keep_ms = _milliseconds_until(expires_at, now)
        if keep_ms <= 0:
            return False
        from redis.exceptions import RedisError

        try:
            added = self._revoke_token(
                keys=[self._token_key(token_id), self._index],
                args=[repr(expires_at), keep_ms, f"t:{token_id}"],
            )
        except (RedisError, UnicodeError) as exc:
            raise self._unavailable(exc) from None
        return bool(added)

    def revoke_principal(
        self, principal_id: str, cutoff: float, expires_at: float, now: float
    ) -> bool:
        keep_ms = _milliseconds_until(expires_at, now)
        if keep_ms <= 0:
            return False
        from redis.exceptions import RedisError

        try:
            widened = self._revoke_principal(
                keys=[self._principal_key(principal_id), self._index],
                args=[repr(cutoff), keep_ms, f"p:{principal_id}", repr(expires_at)],
            )
        except (RedisError, UnicodeError) as exc:
            raise self._unavailable(exc) from None
        return bool(widened)

    def is_revoked(self, token_id: str, principal_id: str, issued_at: float, now: float) -> bool:
        from redis.exceptions import RedisError

        try:
            by_id, cutoff = self._client.mget(
                [self._token_key(token_id), self._principal_key(principal_id)]
            )
        except (RedisError, UnicodeError) as exc:
            raise self._unavailable(exc) from None
        return by_id is not None or (cutoff is not None and issued_at <= float(cutoff))

    def sweep(self, now: float) -> int:
        # The keys expired on their own; this trims the index that counts them.
        from redis.exceptions import RedisError

        try:
            return int(self._client.zremrangebyscore(self._index, "-inf", now))
        except (RedisError, UnicodeError) as exc:
            raise self._unavailable(exc) from None

    def count(self) -> int:
        from redis.exceptions import RedisError

        try:
            return int(self._client.zcard(self._index))
        except (RedisError, UnicodeError) as exc:
            raise self._unavailable(exc) from None

    def close(self) -> None:
        self._client.close()

    def __repr__(self) -> str:
        return f"RedisRevocationStore({self._description})"


def _milliseconds_until(expires_at: float, now: float) -> int:
    # Rounded up: Redis may keep an entry a millisecond late, never early.
    return math.ceil((expires_at - now) * 1000)


def open_revocation_store(url: str, **options: Any) -> RevocationStore:
    """A store from ``memory``, ``sqlite:///path`` or ``redis://host:port/db``.

    As in SQLAlchemy, ``sqlite:///revocations.db`` is relative to the working
    directory and ``sqlite:////var/lib/app/revocations.db`` is absolute.
    Raises `ValueError` for anything else, or a store that cannot be opened.
    """
    if not isinstance(url, str):
        raise ValueError(f"a revocation store URL is a str, not {type(url).__name__}")
    text = url.strip()
    if text == "memory":
        if options:
            raise ValueError(f"the memory revocation store takes no options: {sorted(options)}")
        return MemoryRevocationStore()
    if text.startswith("sqlite:///"):
        return SQLiteRevocationStore(text[len("sqlite:///") :], **options)
    scheme, separator, _ = text.partition("://")
    if separator and scheme.lower() in ("redis", "rediss"):
        return RedisRevocationStore.from_url(text, **options)
    raise ValueError(
        f"unknown revocation store {redact_url(text)!r}: "
        "expected memory, sqlite:///path or redis://host:port/db"
    )
