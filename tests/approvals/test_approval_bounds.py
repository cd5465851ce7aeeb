"""Bounded memory: live grants capped and never dropped, terminal ones retained then evicted."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any
from unittest.mock import ANY

import pytest

from otel_bounded.approvals import ApprovalLedger, ApprovalScope, ApprovalStatus
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, granted
from tests.support import FakeClock


class Sneaky(str):
    """A string whose equality says yes to everything, as a careless wrapper might."""

    def __eq__(self, other: object) -> bool:
        return True

    def __ne__(self, other: object) -> bool:
        return False

    __hash__ = str.__hash__


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(ApprovalError) as caught:
        call()
    return caught.value.reason_code


def request(ledger: ApprovalLedger, **overrides: Any) -> str:
    arguments: dict[str, Any] = {"requested_by": "agent", "executor": "agent", "ttl_seconds": 60}
    arguments.update(overrides)
    return ledger.request(DEPLOY, **arguments).token


# -- live grants ----------------------------------------------------------------


def test_past_max_live_a_request_is_refused_and_every_live_grant_survives(
    clock: FakeClock,
) -> None:
    ledger = ApprovalLedger(clock=clock, max_live=3)
    pending = request(ledger)
    held = [granted(ledger, max_uses=1) for _ in range(2)]
    assert reason_of(lambda: request(ledger)) == ApprovalReason.CAPACITY_EXCEEDED
    assert ledger.approve(pending, approver="alice").status is ApprovalStatus.GRANTED
    for token in held:
        assert ledger.verify(token, DEPLOY, "deploy-agent").status is ApprovalStatus.GRANTED
    assert ledger.telemetry_counts().live == 3


def test_a_grant_reaching_a_terminal_state_frees_its_live_slot(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, max_live=1)
    token = granted(ledger)
    assert reason_of(lambda: request(ledger)) == ApprovalReason.CAPACITY_EXCEEDED
    ledger.consume(token, DEPLOY, "deploy-agent")
    request(ledger)


def test_expired_live_grants_free_their_slots_without_being_touched(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, max_live=2, request_ttl_seconds=100)
    first, second = request(ledger), request(ledger)
    clock.advance(100)
    request(ledger)
    request(ledger)
    for token in (first, second):
        assert reason_of(lambda token=token: ledger.revoke(token, actor="alice")) == (
            ApprovalReason.EXPIRED
        )


def test_the_interval_sweep_moves_expired_grants_to_terminal(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock)
    for _ in range(5):
        granted(ledger, ttl_seconds=10)
    assert (ledger.telemetry_counts().live, ledger.telemetry_counts().terminal) == (5, 0)
    clock.advance(10)
    counts = ledger.telemetry_counts()
    assert (counts.live, counts.terminal) == (0, 5)


# -- terminal grants --------------------------------------------------------------


def test_a_terminal_grant_is_kept_for_retention_seconds_then_evicted_and_counted(
    clock: FakeClock,
) -> None:
    ledger = ApprovalLedger(clock=clock, retention_seconds=300)
    token = granted(ledger)
    ledger.revoke(token, actor="security-oncall")
    clock.advance(299)
    assert reason_of(lambda: ledger.verify(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.REVOKED
    )
    clock.advance(1)
    # Forgotten, and still refused: eviction never grants anything.
    assert reason_of(lambda: ledger.verify(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.NO_APPROVAL
    )
    counts = ledger.telemetry_counts()
    assert counts.terminal == 0
    assert counts.evictions == {"retention": 1, "max_terminal": 0}


def test_an_expired_grant_is_retained_from_its_expiry(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, retention_seconds=300)
    token = granted(ledger, ttl_seconds=60)
    clock.advance(60 + 299)
    assert reason_of(lambda: ledger.consume(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.EXPIRED
    )
    clock.advance(1)
    assert reason_of(lambda: ledger.consume(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.NO_APPROVAL
    )


def test_max_terminal_evicts_the_oldest_terminal_grant_first(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, max_terminal=2)
    tokens = []
    for _ in range(3):
        token = granted(ledger)
        ledger.consume(token, DEPLOY, "deploy-agent")
        tokens.append(token)
        clock.advance(1)
    codes = [reason_of(lambda t=t: ledger.verify(t, DEPLOY, "deploy-agent")) for t in tokens]
    assert codes == [
        ApprovalReason.NO_APPROVAL,
        ApprovalReason.ALREADY_CONSUMED,
        ApprovalReason.ALREADY_CONSUMED,
    ]
    assert ledger.telemetry_counts().evictions == {"retention": 0, "max_terminal": 1}


def test_memory_stays_bounded_under_request_and_revoke_churn(clock: FakeClock) -> None:
    ledger = ApprovalLedger(
        clock=clock, max_live=50, max_terminal=200, retention_seconds=30, request_ttl_seconds=3
    )
    for round_ in range(5_000):
        token = request(ledger)
        if round_ % 3:
            ledger.revoke(token, actor="alice")
        clock.advance(0.1)
        counts = ledger.telemetry_counts()
        assert counts.live <= 50
        assert counts.terminal <= 200
    assert sum(ledger.telemetry_counts().evictions.values()) > 0


# -- invalid arguments --------------------------------------------------------------


@pytest.mark.parametrize(
    "arguments",
    [
        {"max_live": 0},
        {"max_live": True},
        {"max_live": 1.5},
        {"retention_seconds": 0},
        {"retention_seconds": math.inf},
        {"request_ttl_seconds": -1},
        {"request_ttl_seconds": math.nan},
        {"max_terminal": 0},
        {"max_delegation_depth": -1},
        {"clock": "now"},
        {"clock": lambda: "noon"},
    ],
)
def test_invalid_ledger_arguments_raise_value_error(arguments: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - each case has its own message
        ApprovalLedger(**arguments)


@pytest.mark.parametrize(
    "bad_field",
    [{"policy": ""}, {"action": "  "}, {"resource": ""}, {"policy": None}, {"action": "x" * 257}],
)
def test_an_invalid_scope_raises_value_error(bad_field: dict[str, Any]) -> None:
    fields: dict[str, Any] = {"policy": "release", "action": "deploy", "resource": None}
    fields.update(bad_field)
    with pytest.raises(ValueError):  # noqa: PT011
        ApprovalScope(**fields)


@pytest.mark.parametrize(
    "overrides",
    [
        {"requested_by": ""},
        {"executor": None},
        {"ttl_seconds": 0},
        {"ttl_seconds": True},
        {"max_uses": 0},
        {"max_uses": 2.0},
    ],
)
def test_invalid_request_arguments_raise_value_error_and_create_nothing(
    ledger: ApprovalLedger, overrides: dict[str, Any]
) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        request(ledger, **overrides)
    assert ledger.telemetry_counts().live == 0


def test_a_request_for_something_not_a_scope_raises_value_error(ledger: ApprovalLedger) -> None:
    with pytest.raises(ValueError, match="ApprovalScope"):
        ledger.request(("release", "deploy"), requested_by="a", executor="a", ttl_seconds=1)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "call",
    [
        lambda ledger, token: ledger.approve(token, approver=""),
        lambda ledger, token: ledger.deny(token, approver="alice", reason=None),
        lambda ledger, token: ledger.revoke(token, actor=" "),
        lambda ledger, token: ledger.revoke(token, actor="alice", reason="x" * 1025),
        lambda ledger, token: ledger.delegate(token, by="deploy-agent", to="", reason="x"),
        lambda ledger, token: ledger.delegate(
            token, by="deploy-agent", to="bot", reason="x", ttl_seconds=-1
        ),
        lambda ledger, token: ledger.delegate(
            token, by="deploy-agent", to="bot", reason="x", max_uses=0
        ),
        lambda ledger, token: ledger.delegate(
            token, by="deploy-agent", to="bot", reason="x", session_id=""
        ),
    ],
)
def test_invalid_operation_arguments_raise_value_error_and_change_nothing(
    ledger: ApprovalLedger, call: Callable[[ApprovalLedger, str], object]
) -> None:
    token = granted(ledger)
    with pytest.raises(ValueError):  # noqa: PT011
        call(ledger, token)
    assert ledger.verify(token, DEPLOY, "deploy-agent").delegation_chain[-1].actor == (
        "deploy-agent"
    )


@pytest.mark.parametrize(
    ("token", "scope", "actor", "reason"),
    [
        (None, DEPLOY, "deploy-agent", ApprovalReason.NO_APPROVAL),
        (42, DEPLOY, "deploy-agent", ApprovalReason.NO_APPROVAL),
        ("", DEPLOY, "deploy-agent", ApprovalReason.NO_APPROVAL),
        ("é" * 43, DEPLOY, "deploy-agent", ApprovalReason.NO_APPROVAL),
        ("A" * 100_000, DEPLOY, "deploy-agent", ApprovalReason.NO_APPROVAL),
        ("<real>", None, "deploy-agent", ApprovalReason.SCOPE_MISMATCH),
        ("<real>", ("release", "deploy"), "deploy-agent", ApprovalReason.SCOPE_MISMATCH),
        ("<real>", DEPLOY, None, ApprovalReason.UNAUTHORIZED_DELEGATE),
        ("<real>", DEPLOY, "", ApprovalReason.UNAUTHORIZED_DELEGATE),
        ("<real>", ANY, "deploy-agent", ApprovalReason.SCOPE_MISMATCH),
        ("<real>", DEPLOY, ANY, ApprovalReason.UNAUTHORIZED_DELEGATE),
        ("<real>", DEPLOY, Sneaky("intruder"), ApprovalReason.UNAUTHORIZED_DELEGATE),
    ],
)
def test_verify_and_consume_refuse_any_input_with_approval_error_only(
    ledger: ApprovalLedger, token: object, scope: object, actor: object, reason: str
) -> None:
    real = granted(ledger)
    presented = real if token == "<real>" else token
    for use in (ledger.verify, ledger.consume):
        assert reason_of(lambda use=use: use(presented, scope, actor)) == reason  # type: ignore[arg-type]
    assert ledger.consume(real, DEPLOY, "deploy-agent").status is ApprovalStatus.CONSUMED


def test_a_string_that_claims_to_equal_anything_is_still_only_itself(
    ledger: ApprovalLedger,
) -> None:
    token = granted(ledger, executor="deploy-agent")
    assert reason_of(
        lambda: ledger.delegate(token, by=Sneaky("intruder"), to="intruder-bot", reason="x")
    ) == (ApprovalReason.UNAUTHORIZED_DELEGATE)
    sneaky_scope = ApprovalScope(Sneaky("release"), Sneaky("delete"), Sneaky("service-a"))
    assert reason_of(lambda: ledger.verify(token, sneaky_scope, "deploy-agent")) == (
        ApprovalReason.SCOPE_MISMATCH
    )
    audit = ledger.delegate(token, by=Sneaky("deploy-agent"), to=Sneaky("release-bot"), reason="")
    assert type(audit.executing_actor) is str
    assert reason_of(lambda: ledger.verify(token, DEPLOY, "intruder")) == (
        ApprovalReason.UNAUTHORIZED_DELEGATE
    )


def test_a_prefix_of_a_real_token_is_unknown(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    for cut in (8, 16, 42):
        assert reason_of(lambda cut=cut: ledger.verify(token[:cut], DEPLOY, "deploy-agent")) == (
            ApprovalReason.NO_APPROVAL
        )
