"""What every persistent store shares: its URL, its SQLite file, its Redis connection.

Capabilities keep their own schemas and decisions; this module only opens
and guards the backends, so that each store fails the same way. Every
backend failure surfaces as `StoreFailure`, whose message never holds a
credential; each capability turns it into its own error type (a store
never lets a backend's exception reach the application), and refuses
whatever it was deciding: stores fail closed.
"""

from __future__ import annotations

import contextlib
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from otel_bounded.config import redact_url

if TYPE_CHECKING:
    import redis

__all__ = [
    "MEMORY",
    "REDIS",
    "SQLITE",
    "StoreFailure",
    "StoreLocation",
    "check_sqlite_path",
    "closed_sqlite_connection",
    "connect_redis",
    "open_sqlite",
    "parse_store_url",
    "redis_calls",
    "redis_errors",
    "sqlite_reading",
    "sqlite_transaction",
]

MEMORY = "memory"
SQLITE = "sqlite"
REDIS = "redis"
_SQLITE_PREFIX = "sqlite:///"


class StoreFailure(Exception):
    """A backend could not be reached or answered nonsense; the message is safe to show.

    Internal: capabilities catch it and raise their own error type instead.
    """


@dataclass(frozen=True)
class StoreLocation:
    """Where a store lives: `kind` (memory, sqlite, redis), `target` and a safe `description`.

    `target` is the SQLite path or the full Redis URL (credentials and all);
    `description` is what reprs, errors and spans may show.
    """

    kind: str
    target: str
    description: str


def parse_store_url(url: object, *, what: str) -> StoreLocation:
    """``memory``, ``sqlite:///path`` or ``redis[s]://...`` as a `StoreLocation`, else ValueError.

    As in SQLAlchemy, ``sqlite:///state.db`` is relative to the working
    directory and ``sqlite:////var/lib/app/state.db`` is absolute. `what`
    ("approval store") names the store in messages, which never repeat a
    credential.
    """
    if type(url) is not str:
        raise ValueError(f"a {what} URL is a str, not {type(url).__name__}")
    text = url.strip()
    if text == MEMORY:
        return StoreLocation(MEMORY, "", MEMORY)
    if text.startswith(_SQLITE_PREFIX):
        path = text[len(_SQLITE_PREFIX) :]
        check_sqlite_path(path, what=what)
        return StoreLocation(SQLITE, path, text)
    scheme, separator, _ = text.partition("://")
    if separator and scheme.lower() in ("redis", "rediss"):
        return StoreLocation(REDIS, text, redact_url(text))
    raise ValueError(
        f"unknown {what} {redact_url(text)!r}: expected memory, sqlite:///path or "
        "redis://host:port/db"
    )


def check_sqlite_path(path: str, *, what: str) -> None:
    """ValueError unless `path` names a file: an in-memory database would survive nothing."""
    if path in ("", ":memory:") or path.startswith("file:"):
        raise ValueError(
            f"a SQLite {what} needs a file path, got {path!r} "
            f"(use the memory {what} for state that need not survive a restart)"
        )


# -- SQLite ------------------------------------------------------------------


def open_sqlite(
    path: str, *, schema: str, schema_version: int, what: str, timeout_seconds: float = 5.0
) -> sqlite3.Connection:
    """A connection to `path` in WAL mode with ``synchronous=FULL``, its `schema` applied.

    Every commit is on disk before it returns, so what a store wrote
    survives ``kill -9`` and power loss; several processes on one host may
    share the file. The connection runs in autocommit mode: writers use
    `sqlite_transaction`. A file of a newer `schema_version` is refused
    rather than misread. Raises ValueError naming the file.
    """
    check_sqlite_path(path, what=what)
    try:
        connection = sqlite3.connect(
            path, timeout=timeout_seconds, isolation_level=None, check_same_thread=False
        )
        try:
            version = connection.execute("PRAGMA user_version").fetchone()[0]
            if version > schema_version:
                raise ValueError(
                    f"SQLite {what} {path!r} has schema version {version}, newer than "
                    f"this otel-bounded understands ({schema_version})"
                )
            mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise ValueError(f"SQLite {what} {path!r} cannot use WAL")
            connection.execute("PRAGMA synchronous=FULL")
            connection.executescript(
                f"BEGIN IMMEDIATE; {schema} PRAGMA user_version = {schema_version}; COMMIT;"
            )
        except BaseException:
            connection.close()
            raise
    except sqlite3.Error as exc:
        raise ValueError(f"cannot open SQLite {what} {path!r}: {exc}") from None
    return connection


def closed_sqlite_connection() -> sqlite3.Connection:
    """A connection that refuses every call: what a store holds when reopening failed."""
    connection = sqlite3.connect(":memory:", check_same_thread=False)
    connection.close()
    return connection


@contextlib.contextmanager
def sqlite_transaction(
    connection: sqlite3.Connection, *, what: str
) -> Iterator[sqlite3.Connection]:
    """One write transaction (``BEGIN IMMEDIATE``), rolled back whatever interrupts it.

    Taking the write lock first makes every read inside it current, so a
    read-decide-write sequence is atomic across threads and processes. A
    transaction left open would hold the write lock of every process sharing
    the file, so any exception rolls back; a backend error becomes
    `StoreFailure`.
    """
    try:
        connection.execute("BEGIN IMMEDIATE")
        yield connection
        connection.execute("COMMIT")
    except (sqlite3.Error, UnicodeError) as exc:
        raise StoreFailure(f"{what} failed ({type(exc).__name__}: {exc})") from None
    finally:
        with contextlib.suppress(sqlite3.Error):
            if connection.in_transaction:
                connection.execute("ROLLBACK")


@contextlib.contextmanager
def sqlite_reading(what: str) -> Iterator[None]:
    """Turn a backend error in a read into `StoreFailure`."""
    try:
        yield
    except (sqlite3.Error, UnicodeError) as exc:
        raise StoreFailure(f"{what} failed ({type(exc).__name__}: {exc})") from None


# -- Redis -------------------------------------------------------------------


def connect_redis(url: str, *, what: str, timeout_seconds: float = 2.0) -> redis.Redis:
    """A client for ``redis://[user:password@]host:port/db`` (``rediss://`` for TLS).

    Every call times out after `timeout_seconds`. A connection error is
    retried once at once (to replace a pooled connection a restarted server
    closed); a timeout is not, and nothing backs off: either would only delay
    failing closed past `timeout_seconds` when the server hangs. Connecting is
    lazy: an unreachable server fails the first call, not this one. Raises
    ValueError, without the credentials, for a malformed URL or a missing
    redis package.
    """
    try:
        import redis
        from redis.backoff import NoBackoff
        from redis.exceptions import ConnectionError as RedisConnectionError
        from redis.retry import Retry
    except ImportError:
        raise ValueError(
            f"a Redis {what} needs the redis package: pip install 'otel-bounded[redis]'"
        ) from None
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1, supported_errors=(RedisConnectionError,)),
        )
    except ValueError as exc:
        message = str(exc).replace(url, redact_url(url))
        raise ValueError(f"invalid Redis URL {redact_url(url)}: {message}") from None


def redis_errors() -> tuple[type[Exception], ...]:
    """What a Redis call may raise when the server is gone or answers nonsense."""
    from redis.exceptions import RedisError

    return (RedisError, UnicodeError, ValueError, OSError)


@contextlib.contextmanager
def redis_calls(what: str) -> Iterator[None]:
    """Turn any backend error inside the block into `StoreFailure`."""
    try:
        yield
    except redis_errors() as exc:
        raise StoreFailure(f"{what} failed ({type(exc).__name__}: {exc})") from None
