"""The shared storage layer: store URLs, SQLite in WAL mode, Redis clients, failing closed."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from otel_bounded import storage
from otel_bounded.storage import StoreFailure, StoreLocation
from tests.servers import free_port

SCHEMA = "CREATE TABLE IF NOT EXISTS things (id INTEGER PRIMARY KEY, value TEXT NOT NULL);"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("memory", StoreLocation("memory", "", "memory")),
        (" memory ", StoreLocation("memory", "", "memory")),
        ("sqlite:///state.db", StoreLocation("sqlite", "state.db", "sqlite:///state.db")),
        (
            "sqlite:////var/lib/a.db",
            StoreLocation("sqlite", "/var/lib/a.db", "sqlite:////var/lib/a.db"),
        ),
        (
            "redis://:hunter2@cache:6379/1",
            StoreLocation("redis", "redis://:hunter2@cache:6379/1", "redis://:***@cache:6379/1"),
        ),
        (
            "rediss://user:hunter2@cache/0?password=other",
            StoreLocation(
                "redis",
                "rediss://user:hunter2@cache/0?password=other",
                "rediss://***:***@cache/0?password=***",
            ),
        ),
    ],
)
def test_store_urls_parse_to_a_location_whose_description_hides_credentials(
    url: str, expected: StoreLocation
) -> None:
    assert storage.parse_store_url(url, what="test store") == expected


@pytest.mark.parametrize(
    "url",
    [
        "",
        "memo",
        "sqlite://relative.db",
        "sqlite:///",
        "sqlite:///:memory:",
        "mysql://u:hunter2@h/db",
    ],
)
def test_anything_else_is_a_value_error_naming_the_store_without_credentials(url: str) -> None:
    with pytest.raises(ValueError, match="test store") as caught:
        storage.parse_store_url(url, what="test store")
    assert "hunter2" not in str(caught.value)


def test_a_non_string_url_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="a test store URL is a str, not bytes"):
        storage.parse_store_url(b"memory", what="test store")


def test_sqlite_opens_in_wal_mode_with_full_sync_and_its_schema(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    connection = storage.open_sqlite(path, schema=SCHEMA, schema_version=3, what="test store")
    assert connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert connection.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    assert connection.execute("PRAGMA user_version").fetchone()[0] == 3
    connection.execute("INSERT INTO things (value) VALUES ('a')")
    connection.close()


def test_a_newer_schema_is_refused_not_misread(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    storage.open_sqlite(path, schema=SCHEMA, schema_version=5, what="test store").close()
    with pytest.raises(ValueError, match="schema version 5, newer"):
        storage.open_sqlite(path, schema=SCHEMA, schema_version=4, what="test store")


def test_a_transaction_commits_whole_or_not_at_all(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    connection = storage.open_sqlite(path, schema=SCHEMA, schema_version=1, what="test store")
    with storage.sqlite_transaction(connection, what="test store") as db:
        db.execute("INSERT INTO things (value) VALUES ('kept')")

    def interrupted() -> None:
        with storage.sqlite_transaction(connection, what="test store") as db:
            db.execute("INSERT INTO things (value) VALUES ('half')")
            raise RuntimeError("interrupted")

    def failing() -> None:
        with storage.sqlite_transaction(connection, what="test store") as db:
            db.execute("INSERT INTO things (value) VALUES ('half')")
            db.execute("INSERT INTO nowhere VALUES (1)")

    with pytest.raises(RuntimeError, match="interrupted"):
        interrupted()
    with pytest.raises(StoreFailure, match="test store failed"):
        failing()
    assert not connection.in_transaction
    assert connection.execute("SELECT value FROM things").fetchall() == [("kept",)]


def test_a_locked_file_fails_as_a_store_failure(tmp_path: Path) -> None:
    path = str(tmp_path / "s.db")
    connection = storage.open_sqlite(
        path, schema=SCHEMA, schema_version=1, what="test store", timeout_seconds=0.05
    )
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        with (
            pytest.raises(StoreFailure, match="locked"),
            storage.sqlite_transaction(connection, what="test store"),
        ):
            pass
    finally:
        blocker.execute("ROLLBACK")


def test_a_closed_connection_refuses_every_call() -> None:
    with pytest.raises(StoreFailure), storage.sqlite_reading("test store"):
        storage.closed_sqlite_connection().execute("SELECT 1")


def test_an_unreachable_redis_is_a_store_failure_without_credentials() -> None:
    client = storage.connect_redis(
        f"redis://:hunter2@127.0.0.1:{free_port()}/0", what="test store", timeout_seconds=0.5
    )
    with pytest.raises(StoreFailure) as caught, storage.redis_calls("test store"):
        client.ping()
    assert "hunter2" not in str(caught.value)


def test_a_malformed_redis_url_is_a_value_error_without_credentials() -> None:
    with pytest.raises(ValueError, match="invalid Redis URL") as caught:
        storage.connect_redis("redis://:hunter2@host:port/0", what="test store")
    assert "hunter2" not in str(caught.value)
