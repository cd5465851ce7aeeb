"""Edges an operator or a caller finds by mistake: each one fails closed, loudly and typed."""

from __future__ import annotations

import json
import math
import os
import signal
import sqlite3
import time
import traceback
import tracemalloc
from pathlib import Path
from unittest import mock

import pytest

from otel_bounded import config
from otel_bounded.errors import (
    RevocationStoreUnavailable,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    TokenScopeError,
)
from otel_bounded.tokens import (
    CapabilityToken,
    FrozenDict,
    HMACTokenProvider,
    RedisRevocationStore,
    SQLiteRevocationStore,
)
from tests.servers import REDIS, launch
from tests.support import FakeClock
from tests.tokens.helpers import SECRET

ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}


# -- the SQLite file goes away under a running provider ---------------------------


def test_a_deleted_sqlite_file_fails_closed_instead_of_taking_revocations(
    clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "revocations.db"
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(path))
    token = provider.issue("read", "alice")
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)

    with pytest.raises(RevocationStoreUnavailable, match="deleted"):
        provider.revoke(token)
    with pytest.raises(RevocationStoreUnavailable):
        provider.revoke_all("alice")
    with pytest.raises(RevocationStoreUnavailable):
        provider.verify(token, **ALICE)


def test_a_replaced_sqlite_file_fails_closed_and_a_restart_reads_the_new_one(
    clock: FakeClock, tmp_path: Path
) -> None:
    path = tmp_path / "revocations.db"
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(path))
    token = provider.issue("read", "alice")
    elsewhere = tmp_path / "restored.db"
    SQLiteRevocationStore(elsewhere).close()
    os.replace(elsewhere, path)  # a restore from backup, or a deploy, swaps the file

    with pytest.raises(RevocationStoreUnavailable, match="replaced"):
        provider.revoke(token)
    with pytest.raises(RevocationStoreUnavailable, match="replaced"):
        provider.verify(token, **ALICE)
    provider.close()

    with HMACTokenProvider(SECRET, clock=clock, revocations=f"sqlite:///{path}") as restarted:
        assert restarted.revoke(token) is True
        with pytest.raises(TokenRevoked):
            restarted.verify(token, **ALICE)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM revoked_tokens").fetchone()[0] == 1


# -- clocks that give nonsense ------------------------------------------------------


def test_a_nan_first_clock_reading_is_refused() -> None:
    with pytest.raises(ValueError, match="finite"):
        HMACTokenProvider(SECRET, clock=lambda: math.nan)


def test_a_nan_reading_later_is_no_reading_and_tokens_still_expire() -> None:
    readings = [1_700_000_000.0]
    provider = HMACTokenProvider(SECRET, clock=lambda: readings[-1])
    token = provider.issue("read", "alice", ttl_seconds=10)
    readings.append(math.nan)
    provider.verify(token, **ALICE)  # the provider's time stands
    readings.append(1_700_000_010.0)
    with pytest.raises(TokenExpired):
        provider.verify(token, **ALICE)
    readings.append(math.nan)

    with pytest.raises(TokenExpired):
        provider.verify(token, **ALICE)
    assert provider.revoke(token) is False
    assert not math.isnan(provider.issue("read", "alice").issued_at)


# -- secrets in the wrong place -------------------------------------------------------


def _everything_the_error_holds(error: BaseException) -> str:
    """The message, args and repr of the error and of every exception chained to it."""
    seen: list[str] = []
    current: BaseException | None = error
    while current is not None:
        seen += [str(current), repr(current), repr(current.args)]
        seen += [repr(getattr(current, name, None)) for name in ("filename", "object")]
        current = current.__cause__ or current.__context__
    seen.append("".join(traceback.format_exception(error)))
    return "\n".join(seen)


def test_a_secret_put_in_the_secret_file_variable_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    secret = "s3cr3t-put-where-the-path-belongs-0123456789"
    for name in (config.TOKEN_SECRET.name, config.REVOCATION_STORE.name):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.TOKEN_SECRET_FILE.name, secret)

    with pytest.raises(ValueError, match=config.TOKEN_SECRET_FILE.name) as refused:
        HMACTokenProvider.from_env()

    assert "s3cr3t" not in _everything_the_error_holds(refused.value)


def test_an_unreadable_secret_file_is_refused_without_its_path_or_content(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    directory = tmp_path / "s3cr3t-directory"  # readable, and no file
    directory.mkdir()
    for name in (config.TOKEN_SECRET.name, config.REVOCATION_STORE.name):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(config.TOKEN_SECRET_FILE.name, str(directory))

    with pytest.raises(ValueError, match=config.TOKEN_SECRET_FILE.name) as refused:
        HMACTokenProvider.from_env()

    assert "s3cr3t" not in _everything_the_error_holds(refused.value)


def test_a_secret_with_no_utf8_form_leaves_nothing_in_the_exception_chain() -> None:
    secret = "s3cr3t-not-utf8-" + "\udcff" * 20
    with pytest.raises(ValueError, match="UTF-8") as refused:
        HMACTokenProvider(secret)

    assert refused.value.__context__ is None
    assert "s3cr3t" not in _everything_the_error_holds(refused.value)


# -- hostile arguments -------------------------------------------------------------------


class HugeText(str):
    """A str subclass: copying it (str.__str__, slicing) would cost its whole size."""


def test_a_huge_str_subclass_is_refused_without_being_copied(
    provider: HMACTokenProvider,
) -> None:
    huge = HugeText("otb1." + "A" * (64 * 1024 * 1024))
    tracemalloc.start()
    try:
        for call in (
            lambda: provider.verify(huge, **ALICE),
            lambda: provider.decode(huge),
            lambda: provider.revoke(huge),
        ):
            with pytest.raises(TokenInvalid):
                call()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1024 * 1024, f"{peak} bytes allocated: the text was copied"


@pytest.mark.parametrize(
    "constraints",
    [
        {"path": json.loads('"/tmp/\\ud800"')},
        {json.loads('"\\udfff"'): 1},
        {"nested": [{"deeper": ["ok", json.loads('"\\ud83d"')]}]},
    ],
)
def test_constraints_with_a_lone_surrogate_are_refused(
    provider: HMACTokenProvider, constraints: dict[str, object]
) -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        provider.issue("read", "alice", constraints=constraints)


class EqualsEverything(str):
    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


@pytest.mark.parametrize(
    "expected",
    [
        {"expected_principal_id": mock.ANY, "expected_capability_id": "read"},
        {"expected_principal_id": "alice", "expected_capability_id": mock.ANY},
        {"expected_principal_id": EqualsEverything("mallory"), "expected_capability_id": "read"},
        {"expected_principal_id": None, "expected_capability_id": "read"},
    ],
)
def test_an_expected_id_that_equals_everything_is_a_scope_error(
    provider: HMACTokenProvider, expected: dict[str, object]
) -> None:
    token = provider.issue("read", "alice")

    with pytest.raises(TokenScopeError):
        provider.verify(token, **expected)  # type: ignore[arg-type]


def test_a_str_subclass_naming_the_right_ids_is_compared_as_text(
    provider: HMACTokenProvider,
) -> None:
    token = provider.issue("read", "alice")

    assert (
        provider.verify(
            token, expected_principal_id=HugeText("alice"), expected_capability_id="read"
        )
        == token
    )


# -- what verify gives back ------------------------------------------------------------


def test_verify_returns_the_verified_token_whose_claims_json_takes_as_they_are(
    provider: HMACTokenProvider,
) -> None:
    constraints = {"tenant": "acme", "paths": ["/a", "/b"], "limits": {"rows": 10, "ok": True}}
    issued = provider.issue("read", "alice", constraints=constraints, audit_id="req-1")

    verified = provider.verify(issued.encode(), **ALICE)

    assert verified == issued == provider.decode(issued.encode())
    assert json.loads(json.dumps(verified.constraints)) == constraints
    claims = verified.to_dict()
    assert json.loads(json.dumps(claims)) == claims
    assert claims["constraints"] == constraints
    assert claims == provider.decode(issued.encode()).to_dict()
    assert "signature" not in claims
    assert issued.signature not in json.dumps(claims)
    assert provider.verify(verified, **ALICE) is verified


def test_verified_constraints_cannot_be_changed_in_place(provider: HMACTokenProvider) -> None:
    token = provider.verify(
        provider.issue("read", "alice", constraints={"tenant": "acme"}).encode(), **ALICE
    )
    with pytest.raises(TypeError):
        token.constraints["tenant"] = "evil"  # type: ignore[index]
    with pytest.raises(TypeError):
        token.constraints.update(tenant="evil")  # type: ignore[attr-defined]
    assert CapabilityToken(**{**token.__dict__}).constraints == {"tenant": "acme"}


# -- a hung Redis ---------------------------------------------------------------------------


@pytest.mark.servers
def test_a_hung_redis_fails_closed_within_the_timeout(clock: FakeClock, tmp_path: Path) -> None:
    server = launch(REDIS, tmp_path / "redis")
    timeout = 0.3
    store = RedisRevocationStore.from_url(f"redis://{server.address}/0", timeout_seconds=timeout)
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=store)
    token = provider.issue("read", "alice")
    provider.verify(token, **ALICE)  # the pooled connection is open
    server.process.send_signal(signal.SIGSTOP)
    try:
        for call in (
            lambda: provider.verify(token, **ALICE),
            lambda: provider.revoke(token),
            lambda: provider.revoke_all("alice"),
        ):
            started = time.perf_counter()
            with pytest.raises(RevocationStoreUnavailable):
                call()
            elapsed = time.perf_counter() - started
            # One timeout, not one per retry: generous for a loaded machine, far
            # below the two or more timeouts a retried call would take.
            assert elapsed < 1.8 * timeout, f"failed closed after {elapsed:.2f} s"
    finally:
        server.process.send_signal(signal.SIGCONT)
        provider.close()
        server.stop()


def test_a_frozen_dict_made_by_the_caller_is_still_checked_and_frozen(
    provider: HMACTokenProvider,
) -> None:
    with pytest.raises(ValueError, match="UTF-8"):
        provider.issue("read", "alice", constraints=FrozenDict({"x": json.loads('"\\ud800"')}))
    paths = ["/a"]
    token = provider.issue("read", "alice", constraints=FrozenDict({"paths": paths}))
    paths.append("/etc")

    assert token.constraints == {"paths": ("/a",)}
    assert provider.verify(token, **ALICE) == token
