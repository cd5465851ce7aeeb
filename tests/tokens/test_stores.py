"""The revocation stores: one protocol, then what only SQLite and Redis promise."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from opentelemetry.trace import StatusCode

from otel_bounded.errors import RevocationStoreUnavailable, TokenRevoked
from otel_bounded.telemetry import SPAN_TOKEN_REVOKE, SPAN_TOKEN_SWEEP, VerificationOutcome
from otel_bounded.tokens import (
    HMACTokenProvider,
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    SQLiteRevocationStore,
    open_revocation_store,
)
from tests.servers import REDIS, RunningServer, launch
from tests.support import FakeClock
from tests.tokens.helpers import SECRET, Telemetry

ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}
NOW = 1_700_000_000.0


@pytest.fixture(params=["memory", "sqlite", pytest.param("redis", marks=pytest.mark.servers)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[RevocationStore]:
    if request.param == "memory":
        opened: RevocationStore = MemoryRevocationStore()
    elif request.param == "sqlite":
        opened = SQLiteRevocationStore(tmp_path / "revocations.db")
    else:
        server = launch(REDIS, tmp_path / "redis")
        opened = open_revocation_store(f"redis://{server.address}/0")
    yield opened
    opened.close()
    if request.param == "redis":
        server.stop()


# -- the protocol, for every store -------------------------------------------


def test_store_holds_a_token_id_until_its_expiry(store: RevocationStore) -> None:
    assert store.revoke_token("token-id-0000000001", NOW + 60, NOW) is True
    assert store.revoke_token("token-id-0000000001", NOW + 60, NOW) is False

    assert store.lookup("token-id-0000000001", "alice", NOW - 1)[0]
    assert not store.lookup("token-id-0000000002", "alice", NOW - 1)[0]
    assert store.sweep(NOW + 59.999) == 0
    assert store.count() == 1
    assert store.sweep(NOW + 60) == 1
    assert store.count() == 0


def test_store_keeps_the_later_expiry_of_two_revocations(store: RevocationStore) -> None:
    store.revoke_token("token-id-0000000001", NOW + 60, NOW)
    store.revoke_token("token-id-0000000001", NOW + 600, NOW)
    store.revoke_token("token-id-0000000001", NOW + 30, NOW)

    assert store.sweep(NOW + 599) == 0
    assert store.lookup("token-id-0000000001", "alice", NOW)[0]
    assert store.sweep(NOW + 600) == 1


def test_store_cutoff_blocks_tokens_issued_at_or_before_it(store: RevocationStore) -> None:
    cutoff = NOW + 0.000001
    assert store.revoke_principal("alice", cutoff, cutoff + 3600, NOW) is True

    assert store.lookup("token-id-0000000001", "alice", cutoff)[0]
    assert store.lookup("token-id-0000000001", "alice", NOW)[0]
    assert not store.lookup("token-id-0000000001", "alice", NOW + 0.000002)[0]
    assert not store.lookup("token-id-0000000001", "bob", NOW)[0]


def test_store_cutoff_only_ever_widens(store: RevocationStore) -> None:
    store.revoke_principal("alice", NOW + 10, NOW + 3610, NOW)

    assert store.revoke_principal("alice", NOW + 5, NOW + 3605, NOW) is False
    assert store.lookup("token-id-0000000001", "alice", NOW + 9)[0]
    assert store.revoke_principal("alice", NOW + 20, NOW + 3620, NOW) is True
    assert store.lookup("token-id-0000000001", "alice", NOW + 19)[0]
    assert store.count() == 1
    assert store.sweep(NOW + 3619) == 0
    assert store.sweep(NOW + 3620) == 1


# -- through the provider, for every store --------------------------------------


def test_provider_revocations_work_on_every_store(store: RevocationStore, clock: FakeClock) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=store)
    revoked = provider.issue("read", "alice", ttl_seconds=600)
    kept = provider.issue("read", "alice", ttl_seconds=600)
    bob = provider.issue("read", "bob", ttl_seconds=600)

    assert provider.revoke(revoked) is True
    clock.advance(1)
    assert provider.revoke_all("bob") == 1

    for token, principal in [(revoked, "alice"), (bob, "bob")]:
        with pytest.raises(TokenRevoked):
            provider.verify(token, expected_principal_id=principal, expected_capability_id="read")
    provider.verify(kept, **ALICE)
    assert provider.revocation_count == 2
    clock.now = revoked.expires_at - 0.01
    provider.sweep()
    with pytest.raises(TokenRevoked):
        provider.verify(revoked, **ALICE)
    clock.now = revoked.expires_at + provider.max_clock_skew_seconds - 0.01
    assert provider.sweep() == 0
    clock.now = revoked.expires_at + provider.max_clock_skew_seconds
    assert provider.sweep() == 1


# -- SQLite --------------------------------------------------------------------


def test_sqlite_revocations_survive_a_restart(clock: FakeClock, tmp_path: Path) -> None:
    database = tmp_path / "revocations.db"
    with HMACTokenProvider(SECRET, clock=clock, revocations=f"sqlite:///{database}") as first:
        token = first.issue("read", "alice")
        other = first.issue("read", "bob")
        first.revoke(token)
        first.revoke_all("bob")

    with HMACTokenProvider(SECRET, clock=clock, revocations=f"sqlite:///{database}") as second:
        with pytest.raises(TokenRevoked):
            second.verify(token, **ALICE)
        with pytest.raises(TokenRevoked):
            second.verify(other, expected_principal_id="bob", expected_capability_id="read")
        assert second.revocation_count == 2


def test_sqlite_uses_wal(tmp_path: Path) -> None:
    store = SQLiteRevocationStore(tmp_path / "revocations.db")
    store.revoke_token("token-id-0000000001", NOW + 60, NOW)

    assert (tmp_path / "revocations.db-wal").exists()
    store.close()


_KILLED_CHILD = textwrap.dedent(
    """
    import sys
    from otel_bounded.tokens import HMACTokenProvider, SQLiteRevocationStore

    provider = HMACTokenProvider(
        sys.argv[1].encode(), clock=lambda: 1_700_000_000.0,
        revocations=SQLiteRevocationStore(sys.argv[2]),
    )
    token = provider.issue("read", "alice")
    provider.revoke(token)
    provider.revoke_all("bob")
    print(token.encode(), flush=True)
    sys.stdin.read()  # hold the database open until killed
    """
)


def test_sqlite_revocation_survives_kill_9(tmp_path: Path) -> None:
    database = tmp_path / "revocations.db"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_CHILD, SECRET.decode(), str(database)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout is not None
        encoded = child.stdout.readline().strip()
        assert encoded, "the child exited before revoking"
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    assert child.returncode == -signal.SIGKILL

    provider = HMACTokenProvider(
        SECRET, clock=FakeClock(NOW), revocations=SQLiteRevocationStore(database)
    )
    with pytest.raises(TokenRevoked):
        provider.verify(encoded, **ALICE)
    assert provider.revocation_count == 2


def test_sqlite_shared_by_two_providers_agrees(clock: FakeClock, tmp_path: Path) -> None:
    database = tmp_path / "revocations.db"
    first = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    second = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    token = first.issue("read", "alice")

    second.revoke(token.encode())

    with pytest.raises(TokenRevoked):
        first.verify(token, **ALICE)


def test_sqlite_that_cannot_be_written_fails_closed(clock: FakeClock, tmp_path: Path) -> None:
    store = SQLiteRevocationStore(tmp_path / "revocations.db")
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=store)
    token = provider.issue("read", "alice")
    store.close()  # as good as a vanished disk: every statement now fails

    with pytest.raises(RevocationStoreUnavailable):
        provider.verify(token, **ALICE)
    with pytest.raises(RevocationStoreUnavailable):
        provider.revoke(token)


def test_sqlite_locked_by_another_writer_makes_revoke_raise_not_lose(
    clock: FakeClock, tmp_path: Path
) -> None:
    database = tmp_path / "revocations.db"
    provider = HMACTokenProvider(
        SECRET, clock=clock, revocations=SQLiteRevocationStore(database, timeout_seconds=0.05)
    )
    token = provider.issue("read", "alice")
    other_writer = sqlite3.connect(database, isolation_level=None)
    other_writer.execute("BEGIN IMMEDIATE")
    try:
        with pytest.raises(RevocationStoreUnavailable):
            provider.revoke(token)
        provider.verify(token, **ALICE)  # WAL readers still see every committed revocation
    finally:
        other_writer.execute("ROLLBACK")
        other_writer.close()
    assert provider.revoke(token) is True


@pytest.mark.parametrize(
    "url", ["sqlite:///:memory:", "sqlite:///", "sqlite:///no/such/dir/revocations.db"]
)
def test_sqlite_urls_that_cannot_persist_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="SQLite"):
        open_revocation_store(url)


@pytest.mark.parametrize("url", ["memcached://x", "", "sqlite://relative", "redis"])
def test_unknown_store_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError, match="revocation store"):
        open_revocation_store(url)


def test_store_urls_never_echo_a_password() -> None:
    with pytest.raises(ValueError, match="unknown revocation store") as refused:
        open_revocation_store("mongodb://admin:hunter2@db/revocations")
    assert "hunter2" not in str(refused.value)
    store = open_revocation_store("redis://admin:hunter2@127.0.0.1:1/0")
    assert "hunter2" not in repr(store)


# -- Redis ---------------------------------------------------------------------


@pytest.fixture
def redis_provider(clock: FakeClock, redis_url: str, otel: Telemetry) -> HMACTokenProvider:
    return HMACTokenProvider(SECRET, clock=clock, revocations=redis_url, **otel.providers())


@pytest.mark.servers
def test_redis_key_expires_when_its_token_does(
    redis_provider: HMACTokenProvider, clock: FakeClock, redis_url: str
) -> None:
    import redis

    token = redis_provider.issue("read", "alice", ttl_seconds=120)
    clock.advance(20)  # Redis keeps it for what is left of the token's life and the skew

    redis_provider.revoke(token)

    client = redis.Redis.from_url(redis_url)
    keys = client.keys("otel_bounded:revocations:t:*")
    assert len(keys) == 1
    left_ms = client.pttl(keys[0])
    assert 0 < left_ms <= 100_000 + 60_000
    assert left_ms > 150_000  # set from the provider's clock, not the token's 120 s
    client.close()


@pytest.mark.servers
def test_redis_is_shared_by_every_replica(clock: FakeClock, redis_url: str) -> None:
    replicas = [HMACTokenProvider(SECRET, clock=clock, revocations=redis_url) for _ in range(3)]
    token = replicas[0].issue("read", "alice")
    bob = replicas[1].issue("read", "bob")

    replicas[2].revoke(token.token_id)
    clock.advance(1)
    replicas[2].revoke_all("bob")

    for replica in replicas:
        with pytest.raises(TokenRevoked):
            replica.verify(token, **ALICE)
        with pytest.raises(TokenRevoked):
            replica.verify(bob, expected_principal_id="bob", expected_capability_id="read")


@pytest.mark.servers
def test_unreachable_redis_fails_closed_and_never_loses_a_revocation(
    clock: FakeClock, redis_server: RunningServer, otel: Telemetry
) -> None:
    provider = HMACTokenProvider(
        SECRET,
        clock=clock,
        sweep_interval_seconds=10,
        revocations=f"redis://{redis_server.address}/0",
        **otel.providers(),
    )
    token = provider.issue("read", "alice")
    provider.verify(token, **ALICE)

    redis_server.kill()

    with pytest.raises(RevocationStoreUnavailable):
        provider.verify(token, **ALICE)
    with pytest.raises(RevocationStoreUnavailable):
        provider.revoke(token)
    with pytest.raises(RevocationStoreUnavailable):
        provider.revoke_all("alice")
    with pytest.raises(RevocationStoreUnavailable):
        provider.sweep()
    clock.advance(10)  # an automatic sweep fails too, but verify still fails closed itself
    with pytest.raises(RevocationStoreUnavailable):
        provider.verify(token, **ALICE)

    outcomes = provider.telemetry_counts().verifications
    assert outcomes[VerificationOutcome.UNAVAILABLE] == 2
    assert outcomes[VerificationOutcome.OK] == 1
    failed = [s for s in otel.spans() if s.name in (SPAN_TOKEN_REVOKE, SPAN_TOKEN_SWEEP)]
    assert len(failed) == 3
    assert all(span.status.status_code is StatusCode.ERROR for span in failed)


@pytest.mark.servers
def test_redis_recovers_once_the_server_is_back(clock: FakeClock, tmp_path: Path) -> None:
    server = launch(REDIS, tmp_path / "first")
    provider = HMACTokenProvider(
        SECRET, clock=clock, revocations=RedisRevocationStore.from_url(f"redis://{server.address}")
    )
    token = provider.issue("read", "alice")
    provider.verify(token, **ALICE)
    server.kill()
    with pytest.raises(RevocationStoreUnavailable):
        provider.verify(token, **ALICE)

    restarted = launch(REDIS, tmp_path / "second", port=server.port)
    try:
        provider.verify(token, **ALICE)  # an empty Redis: nothing was revoked there
        assert provider.revoke(token) is True
        with pytest.raises(TokenRevoked):
            provider.verify(token, **ALICE)
    finally:
        restarted.stop()


# -- text a backend cannot encode ------------------------------------------------

LONE_SURROGATE = json.loads('"bob\\ud800"')


def store_calls_with_unencodable_text(store: RevocationStore) -> list[Callable[[], object]]:
    return [
        lambda: store.revoke_token(LONE_SURROGATE, NOW + 60, NOW),
        lambda: store.revoke_principal(LONE_SURROGATE, NOW, NOW + 60, NOW),
        lambda: store.lookup("token-id-0000000001", LONE_SURROGATE, NOW)[0],
    ]


def test_sqlite_fails_closed_on_unencodable_text_and_releases_its_write_lock(
    tmp_path: Path,
) -> None:
    database = tmp_path / "revocations.db"
    store = SQLiteRevocationStore(database)
    other_process = sqlite3.connect(database, timeout=0, isolation_level=None)

    for call in store_calls_with_unencodable_text(store):
        with pytest.raises(RevocationStoreUnavailable):
            call()
        other_process.execute("BEGIN IMMEDIATE")  # "database is locked" if left in a transaction
        other_process.execute("ROLLBACK")

    assert store.revoke_token("token-id-0000000001", NOW + 60, NOW) is True
    other_process.close()
    store.close()


@pytest.mark.servers
def test_redis_fails_closed_on_unencodable_text(redis_url: str) -> None:
    store = open_revocation_store(redis_url)

    for call in store_calls_with_unencodable_text(store):
        with pytest.raises(RevocationStoreUnavailable):
            call()
    store.close()


# -- time ---------------------------------------------------------------------------


def test_sqlite_remembers_the_latest_time_it_was_swept_at(tmp_path: Path) -> None:
    database = tmp_path / "revocations.db"
    store = SQLiteRevocationStore(database)
    store.sweep(NOW + 100)
    store.sweep(NOW)  # another process, its clock behind: the record never goes back
    store.close()

    reopened = SQLiteRevocationStore(database)
    assert reopened.swept_through() == NOW + 100
    reopened.close()


@pytest.mark.servers
def test_redis_counts_a_key_lifetime_from_the_clock_reading_after_a_step_back(
    redis_provider: HMACTokenProvider, clock: FakeClock, redis_url: str
) -> None:
    """The provider's now holds at its highest reading, but Redis counts real time: the key
    must last as long as the token has left by the clock, or it would expire early."""
    import redis

    token = redis_provider.issue("read", "alice", ttl_seconds=120)
    clock.advance(100)
    redis_provider.issue("read", "bob")  # the provider's now reaches issued_at + 100
    clock.advance(-100)

    redis_provider.revoke(token)

    client = redis.Redis.from_url(redis_url)
    (key,) = client.keys("otel_bounded:revocations:t:*")
    assert client.pttl(key) > 110_000
    client.close()


@pytest.mark.servers
def test_redis_holds_an_unknown_id_for_the_longest_max_ttl(
    clock: FakeClock, redis_url: str
) -> None:
    ten_years = 10 * 365.25 * 86_400
    provider = HMACTokenProvider(
        SECRET, clock=clock, max_ttl_seconds=ten_years, revocations=redis_url
    )

    assert provider.revoke("unknown" + "0" * 14 + "A") is True

    assert provider.revocation_count == 1
    provider.close()
