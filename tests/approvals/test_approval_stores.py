"""Approval stores: what survives a restart, what replicas share, and failing closed."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from otel_bounded import config
from otel_bounded.approvals import (
    ApprovalLedger,
    ApprovalScope,
    ApprovalStatus,
    SQLiteApprovalStore,
    open_approval_store,
)
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, granted
from tests.servers import REDIS, free_port, launch
from tests.support import FakeClock

pytestmark = pytest.mark.servers


def refusal(call: Callable[[], object]) -> ApprovalError:
    with pytest.raises(ApprovalError) as caught:
        call()
    return caught.value


def replica(url: str, clock: FakeClock, **options: object) -> ApprovalLedger:
    return ApprovalLedger(clock=clock, store=url, **options)  # type: ignore[arg-type]


# -- one store, several ledgers ------------------------------------------------


def test_every_store_runs_the_whole_lifecycle(store_url: str, clock: FakeClock) -> None:
    ledger = replica(store_url, clock)
    token = granted(ledger, max_uses=2)
    ledger.delegate(token, by="deploy-agent", to="runner", reason="hand-off", max_uses=1)
    audit = ledger.consume(token, DEPLOY, "runner")
    assert audit.status is ApprovalStatus.CONSUMED
    assert audit.delegation_chain[-1].actor == "runner"
    assert refusal(lambda: ledger.consume(token, DEPLOY, "runner")).reason_code == (
        ApprovalReason.ALREADY_CONSUMED
    )
    ledger.close()


def test_a_pending_request_made_before_a_restart_is_approved_after_it(
    shared_store_url: str, clock: FakeClock
) -> None:
    before = replica(shared_store_url, clock)
    grant = before.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=600)
    before.close()
    del before
    after = replica(shared_store_url, clock)
    approved = after.approve(grant.token, approver="alice")
    assert approved.status is ApprovalStatus.GRANTED
    assert after.consume(grant.token, DEPLOY, "agent").status is ApprovalStatus.CONSUMED
    after.close()


def test_replicas_with_their_own_clocks_share_every_decision(shared_store_url: str) -> None:
    ahead, behind = FakeClock(1_700_000_100.0), FakeClock(1_700_000_000.0)
    first, second = replica(shared_store_url, ahead), replica(shared_store_url, behind)
    token = granted(first, ttl_seconds=50)  # expires at 1_700_000_150 by the first clock
    second.verify(token, DEPLOY, "deploy-agent")
    ahead.advance(60)
    assert refusal(lambda: first.verify(token, DEPLOY, "deploy-agent")).reason_code == (
        ApprovalReason.EXPIRED
    )
    # The second replica's clock is 160 s behind: the grant ended all the same, for good.
    assert refusal(lambda: second.consume(token, DEPLOY, "deploy-agent")).reason_code == (
        ApprovalReason.EXPIRED
    )


def test_max_live_and_pending_per_requester_hold_per_store(shared_store_url: str) -> None:
    clock = FakeClock()
    first = replica(shared_store_url, clock, max_live=3, max_pending_per_requester=2)
    second = replica(shared_store_url, clock, max_live=3, max_pending_per_requester=2)
    first.request(DEPLOY, requested_by="agent", executor="x", ttl_seconds=60)
    second.request(DEPLOY, requested_by="AGENT", executor="x", ttl_seconds=60)
    error = refusal(
        lambda: first.request(DEPLOY, requested_by="agent", executor="x", ttl_seconds=60)
    )
    assert error.reason_code == ApprovalReason.TOO_MANY_PENDING
    second.request(DEPLOY, requested_by="other", executor="x", ttl_seconds=60)
    error = refusal(
        lambda: first.request(DEPLOY, requested_by="third", executor="x", ttl_seconds=60)
    )
    assert error.reason_code == ApprovalReason.CAPACITY_EXCEEDED
    # Requests lapse (request_ttl_seconds = 3600): their slots come back, swept by expiry.
    clock.advance(3600)
    for name in ("a", "b", "c"):
        second.request(DEPLOY, requested_by=name, executor="x", ttl_seconds=60)
    assert first.telemetry_counts().live == 3


def test_ended_grants_are_kept_for_retention_then_forgotten_per_store(
    shared_store_url: str,
) -> None:
    clock = FakeClock()
    first = replica(shared_store_url, clock, retention_seconds=100, max_terminal=2)
    second = replica(shared_store_url, clock, retention_seconds=100, max_terminal=2)
    tokens = [granted(first) for _ in range(3)]
    for token in tokens:
        second.revoke(token, actor="bob")
    # max_terminal=2: the oldest ended grant was pushed out.
    assert refusal(lambda: first.approve(tokens[0], approver="x")).reason_code == (
        ApprovalReason.NO_APPROVAL
    )
    assert refusal(lambda: first.approve(tokens[2], approver="x")).reason_code == (
        ApprovalReason.REVOKED
    )
    assert second.telemetry_counts().terminal == 2
    clock.advance(100)
    assert refusal(lambda: first.approve(tokens[2], approver="x")).reason_code == (
        ApprovalReason.NO_APPROVAL
    )
    assert first.telemetry_counts().terminal == 0
    evicted = [ledger.telemetry_counts().evictions for ledger in (first, second)]
    assert sum(counts["max_terminal"] for counts in evicted) == 1
    assert sum(counts["retention"] for counts in evicted) == 2


def test_tokens_are_stored_only_as_digests(shared_store_url: str, clock: FakeClock) -> None:
    ledger = replica(shared_store_url, clock)
    tokens = [granted(ledger, max_uses=2) for _ in range(3)]
    ledger.consume(tokens[0], DEPLOY, "deploy-agent")
    ledger.revoke(tokens[1], actor="bob")
    if shared_store_url.startswith("sqlite"):
        path = Path(shared_store_url.removeprefix("sqlite:///"))
        stored = b"".join(
            file.read_bytes() for file in path.parent.iterdir() if file.name.startswith(path.name)
        )
    else:
        client = redis.Redis.from_url(shared_store_url)
        stored = b"".join(key + (client.dump(key) or b"") for key in client.scan_iter(count=1000))
        client.close()
    assert stored
    for token in tokens:
        assert token.encode() not in stored


# -- processes -------------------------------------------------------------


def _consume_in_child(url: str, token: str, results: object) -> None:
    ledger = ApprovalLedger(store=url)
    try:
        outcome = ledger.consume(token, DEPLOY, "deploy-agent").status.value
    except ApprovalError as error:
        outcome = error.reason_code
    results.put(outcome)  # type: ignore[attr-defined]


def test_a_grant_approved_in_one_process_is_consumed_in_another(shared_store_url: str) -> None:
    import multiprocessing

    # A forked child opens its own ledger on the store: it shares nothing else.
    context = multiprocessing.get_context("fork")
    ledger = ApprovalLedger(store=shared_store_url)
    token = granted(ledger)
    results = context.Queue()
    child = context.Process(target=_consume_in_child, args=(shared_store_url, token, results))
    child.start()
    outcome = results.get(timeout=60)
    child.join(60)
    results.close()
    results.join_thread()
    assert outcome == "consumed"
    assert refusal(lambda: ledger.consume(token, DEPLOY, "deploy-agent")).reason_code == (
        ApprovalReason.ALREADY_CONSUMED
    )


_KILLED_WRITER = textwrap.dedent(
    """
    import sys
    from otel_bounded.approvals import ApprovalLedger, ApprovalScope
    ledger = ApprovalLedger(store=sys.argv[1])
    grant = ledger.request(
        ApprovalScope("release", "deploy", "service-a"),
        requested_by="agent", executor="agent", ttl_seconds=600,
    )
    print(grant.token, flush=True)
    sys.stdin.read()  # hold the database open until killed
    """
)


def test_a_sqlite_request_survives_kill_9(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'approvals.db'}"
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        token = (child.stdout.readline() if child.stdout else "").strip()
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    assert len(token) == 43
    ledger = ApprovalLedger(store=url)
    ledger.approve(token, approver="alice")
    assert ledger.consume(token, DEPLOY, "agent").status is ApprovalStatus.CONSUMED


# -- failing closed --------------------------------------------------------


def test_an_unreachable_redis_fails_every_decision_closed_and_writes_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    server = launch(REDIS, tmp_path / "redis")
    url = f"redis://{server.address}/0"
    ledger = replica(url, clock)
    token = granted(ledger, max_uses=3)
    pending = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    client = redis.Redis.from_url(url)
    before = {key: client.dump(key) for key in client.scan_iter()}
    assert ledger.telemetry_counts().live == 2
    server.kill()
    operations: list[Callable[[], object]] = [
        lambda: ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60),
        lambda: ledger.approve(pending.token, approver="alice"),
        lambda: ledger.deny(pending.token, approver="alice", reason="no"),
        lambda: ledger.revoke(token, actor="bob"),
        lambda: ledger.delegate(token, by="deploy-agent", to="runner", reason="r"),
        lambda: ledger.verify(token, DEPLOY, "deploy-agent"),
        lambda: ledger.consume(token, DEPLOY, "deploy-agent"),
        lambda: ledger.sweep(),
    ]
    for operation in operations:
        assert refusal(operation).reason_code == ApprovalReason.STORE_UNAVAILABLE
    counts = ledger.telemetry_counts()  # the last known counts stand
    # Seven decisions refused; a sweep is not a decision.
    assert (counts.live, counts.decisions[("refused", ApprovalReason.STORE_UNAVAILABLE)]) == (2, 7)
    # Back on the same port with the same data (it was copied above): nothing changed.
    restarted = launch(REDIS, tmp_path / "redis-again", port=server.port)
    try:
        client = redis.Redis.from_url(url)
        for key, value in before.items():
            client.restore(key, 0, value)
        assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1
        assert ledger.approve(pending.token, approver="alice").status is ApprovalStatus.GRANTED
    finally:
        client.close()
        restarted.stop()


def test_a_locked_sqlite_file_fails_closed_and_writes_nothing(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "approvals.db"
    ledger = ApprovalLedger(clock=clock, store=SQLiteApprovalStore(str(path), timeout_seconds=0.05))
    token = granted(ledger, max_uses=2)
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN EXCLUSIVE")
    try:
        for operation in (
            lambda: ledger.consume(token, DEPLOY, "deploy-agent"),
            lambda: ledger.request(DEPLOY, requested_by="a", executor="b", ttl_seconds=60),
        ):
            assert refusal(operation).reason_code == ApprovalReason.STORE_UNAVAILABLE
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
    # Nothing was half-written: the first real use is use 1 of 2.
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


def test_a_record_the_store_cannot_read_fails_closed(tmp_path: Path, clock: FakeClock) -> None:
    path = tmp_path / "approvals.db"
    ledger = ApprovalLedger(clock=clock, store=f"sqlite:///{path}")
    token = granted(ledger)
    with sqlite3.connect(path) as db:
        db.execute("UPDATE approval_grants SET record = '[1, \"forged\"]'")
    assert refusal(lambda: ledger.consume(token, DEPLOY, "deploy-agent")).reason_code == (
        ApprovalReason.STORE_UNAVAILABLE
    )


# -- configuration ---------------------------------------------------------


def test_from_env_opens_the_store_the_variable_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(config.APPROVAL_STORE.name, f"sqlite:///{tmp_path / 'a.db'}")
    ledger = ApprovalLedger.from_env(max_live=5)
    assert ledger.store.kind == "sqlite"
    token = granted(ledger)
    ledger.close()
    again = ApprovalLedger.from_env()
    assert again.verify(token, DEPLOY, "deploy-agent").status is ApprovalStatus.GRANTED
    again.close()


def test_from_env_defaults_to_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config.APPROVAL_STORE.name, raising=False)
    assert ApprovalLedger.from_env().store.kind == "memory"


@pytest.mark.parametrize(
    "value",
    [
        "mysql://user:hunter2@db/approvals",
        "sqlite:///",
        "sqlite:///:memory:",
        "redis://user:hunter2@127.0.0.1:notaport/0",
        f"sqlite:///{'/nonexistent-dir' * 2}/approvals.db",
    ],
)
def test_an_invalid_store_variable_raises_naming_it_without_credentials(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv(config.APPROVAL_STORE.name, value)
    with pytest.raises(ValueError, match=config.APPROVAL_STORE.name) as caught:
        ApprovalLedger.from_env()
    assert "hunter2" not in str(caught.value)


def test_open_approval_store_refuses_what_is_not_a_store() -> None:
    for url in ("", "memor", "file:///x", "sqlite://relative"):
        with pytest.raises(ValueError, match="approval store"):
            open_approval_store(url)
    with pytest.raises(ValueError, match="approval store URL is a str"):
        open_approval_store(None)  # type: ignore[arg-type]


def test_reprs_and_errors_never_show_a_redis_password() -> None:
    url = f"redis://:hunter2@127.0.0.1:{free_port()}/0"
    store = open_approval_store(url)
    assert "hunter2" not in repr(store)
    ledger = ApprovalLedger(store=store)
    for call in (
        lambda: ledger.verify("x" * 43, DEPLOY, "agent"),
        lambda: granted(ledger),
    ):
        error = refusal(call)
        assert error.reason_code == ApprovalReason.STORE_UNAVAILABLE
        assert "hunter2" not in str(error)
        assert "127.0.0.1" in str(error)  # which store failed is shown


def test_a_scope_restored_from_a_store_equals_the_one_requested(
    shared_store_url: str, clock: FakeClock
) -> None:
    scope = ApprovalScope("release", "deploy", "service-a", {"version": "1.2.3", "force": False})
    ledger = replica(shared_store_url, clock)
    grant = ledger.request(scope, requested_by="agent", executor="agent", ttl_seconds=60)
    audit = replica(shared_store_url, clock).approve(grant.token, approver="alice")
    assert audit.scope == scope
    assert grant.scope == scope


_BUSY_WRITER = textwrap.dedent(
    """
    import sys
    from otel_bounded.approvals import ApprovalLedger, ApprovalScope
    scope = ApprovalScope("release", "deploy", "service-a")
    ledger = ApprovalLedger(store=sys.argv[1], max_terminal=50)
    print("ready", flush=True)
    while True:  # until killed, mid-write sooner or later
        grant = ledger.request(scope, requested_by="agent", executor="agent", ttl_seconds=600)
        ledger.approve(grant.token, approver="alice")
        ledger.consume(grant.token, scope, "agent")
    """
)


def test_a_sqlite_store_killed_mid_write_is_whole_afterwards(tmp_path: Path) -> None:
    path = tmp_path / "approvals.db"
    url = f"sqlite:///{path}"
    for _ in range(3):
        child = subprocess.Popen(
            [sys.executable, "-c", _BUSY_WRITER, url], stdout=subprocess.PIPE, text=True
        )
        try:
            assert child.stdout is not None
            assert child.stdout.readline().strip() == "ready"
            # Let it end 20 more grants; kill -9 then lands wherever it is.
            with sqlite3.connect(path, timeout=30) as db:
                ended = "SELECT IFNULL(MAX(ended_order), 0) FROM approval_grants"
                target = db.execute(ended).fetchone()[0] + 20
                while db.execute(ended).fetchone()[0] < target:
                    pass
        finally:
            os.kill(child.pid, signal.SIGKILL)
            child.wait(30)
    with sqlite3.connect(path) as db:
        rows = db.execute("SELECT record, live FROM approval_grants").fetchall()
        live, ended = db.execute("SELECT live, ended FROM approval_counts").fetchone()
    # The counts the triggers keep match the rows, and every record reads whole.
    assert (live, ended) == (sum(row[1] for row in rows), sum(1 - row[1] for row in rows))
    ledger = ApprovalLedger(store=url, max_terminal=50)
    counts = ledger.telemetry_counts()
    assert counts.live == live
    assert counts.terminal <= 50
