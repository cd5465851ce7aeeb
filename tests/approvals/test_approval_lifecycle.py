"""The lifecycle: request, approve, deny, revoke, delegate, verify and consume, with real actors."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from otel_bounded.approvals import ApprovalLedger, ApprovalStatus, DelegationHop
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, granted
from tests.support import FakeClock


def reason_of(call: Callable[[], object]) -> str:
    with pytest.raises(ApprovalError) as caught:
        call()
    return caught.value.reason_code


# -- request and approve -----------------------------------------------------


def test_request_returns_a_pending_grant_whose_audit_names_the_requester(
    ledger: ApprovalLedger, clock: FakeClock
) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="planner", executor="deploy-agent", ttl_seconds=60, max_uses=3
    )
    assert grant.status is ApprovalStatus.PENDING
    assert (grant.requested_by, grant.executor, grant.max_uses) == ("planner", "deploy-agent", 3)
    assert grant.expires_at == clock.now + 3600  # the ledger's request_ttl_seconds
    audit = grant.audit
    assert (audit.operation, audit.actor, audit.requested_by) == ("request", "planner", "planner")
    assert audit.approving_actor is None
    assert audit.delegation_chain == ()
    assert audit.approval_id == grant.approval_id


def test_a_pending_request_lapses_after_request_ttl_seconds(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, request_ttl_seconds=300)
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    clock.advance(299)
    assert reason_of(lambda: ledger.verify(grant.token, DEPLOY, "agent")) == ApprovalReason.PENDING
    clock.advance(1)
    assert reason_of(lambda: ledger.approve(grant.token, approver="alice")) == (
        ApprovalReason.EXPIRED
    )


def test_ttl_seconds_counts_from_approval_not_from_request(
    ledger: ApprovalLedger, clock: FakeClock
) -> None:
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    clock.advance(1000)  # the approver took a while
    audit = ledger.approve(grant.token, approver="alice")
    assert audit.expires_at == clock.now + 60
    clock.advance(59)
    assert ledger.verify(grant.token, DEPLOY, "agent").status is ApprovalStatus.GRANTED
    clock.advance(1)  # the expiry instant itself is already too late
    assert reason_of(lambda: ledger.verify(grant.token, DEPLOY, "agent")) == (
        ApprovalReason.EXPIRED
    )


def test_approve_records_the_approver_then_the_executor_in_the_chain(
    ledger: ApprovalLedger,
) -> None:
    grant = ledger.request(DEPLOY, requested_by="planner", executor="deploy-agent", ttl_seconds=60)
    audit = ledger.approve(grant.token, approver="alice")
    assert (audit.operation, audit.actor, audit.approving_actor) == ("approve", "alice", "alice")
    assert [hop.actor for hop in audit.delegation_chain] == ["alice", "deploy-agent"]
    assert audit.executing_actor == "deploy-agent"
    assert audit.delegated_execution is False


def test_the_executor_may_not_approve_either(ledger: ApprovalLedger) -> None:
    grant = ledger.request(DEPLOY, requested_by="planner", executor="deploy-agent", ttl_seconds=60)
    assert reason_of(lambda: ledger.approve(grant.token, approver="deploy-agent")) == (
        ApprovalReason.SELF_APPROVAL
    )


# -- deny and revoke ----------------------------------------------------------


def test_deny_records_who_denied_and_why(ledger: ApprovalLedger) -> None:
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    audit = ledger.deny(grant.token, approver="alice", reason="change freeze")
    assert (audit.operation, audit.actor, audit.reason) == ("deny", "alice", "change freeze")
    assert audit.status is ApprovalStatus.DENIED


def test_denying_a_granted_approval_is_an_invalid_transition(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    assert reason_of(lambda: ledger.deny(token, approver="bob", reason="late")) == (
        ApprovalReason.INVALID_TRANSITION
    )
    assert ledger.verify(token, DEPLOY, "deploy-agent").status is ApprovalStatus.GRANTED


@pytest.mark.parametrize("approve_first", [False, True])
def test_revoke_records_who_revoked_pending_or_granted(
    ledger: ApprovalLedger, approve_first: bool
) -> None:
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    if approve_first:
        ledger.approve(grant.token, approver="alice")
    audit = ledger.revoke(grant.token, actor="security-oncall", reason="suspicious")
    assert (audit.operation, audit.actor, audit.reason) == (
        "revoke",
        "security-oncall",
        "suspicious",
    )
    assert audit.status is ApprovalStatus.REVOKED


# -- verify and consume -------------------------------------------------------


def test_verify_changes_nothing(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=1)
    for _ in range(5):
        audit = ledger.verify(token, DEPLOY, "deploy-agent")
        assert (audit.uses, audit.status) == (0, ApprovalStatus.GRANTED)
    assert ledger.consume(token, DEPLOY, "deploy-agent").status is ApprovalStatus.CONSUMED


def test_consume_audit_names_the_real_executor_never_system(ledger: ApprovalLedger) -> None:
    token = granted(ledger, executor="deploy-agent", approver="alice", max_uses=2)
    audit = ledger.consume(token, DEPLOY, "deploy-agent")
    assert (audit.operation, audit.actor, audit.executing_actor) == (
        "consume",
        "deploy-agent",
        "deploy-agent",
    )
    assert audit.approving_actor == "alice"
    assert "system" not in (audit.actor, audit.executing_actor, audit.approving_actor)
    assert (audit.uses, audit.max_uses, audit.status) == (1, 2, ApprovalStatus.GRANTED)


def test_the_last_use_leaves_the_grant_consumed(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=2)
    ledger.consume(token, DEPLOY, "deploy-agent")
    last = ledger.consume(token, DEPLOY, "deploy-agent")
    assert (last.uses, last.status) == (2, ApprovalStatus.CONSUMED)
    assert reason_of(lambda: ledger.verify(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.ALREADY_CONSUMED
    )


# -- delegation ---------------------------------------------------------------


def test_after_delegation_only_the_new_executor_may_use_it(ledger: ApprovalLedger) -> None:
    token = granted(ledger, executor="deploy-agent", max_uses=2)
    ledger.delegate(token, by="deploy-agent", to="release-bot", reason="hand-off")
    assert reason_of(lambda: ledger.consume(token, DEPLOY, "deploy-agent")) == (
        ApprovalReason.UNAUTHORIZED_DELEGATE
    )
    assert ledger.consume(token, DEPLOY, "release-bot").actor == "release-bot"


def test_the_chain_runs_approver_executor_then_each_delegate(ledger: ApprovalLedger) -> None:
    token = granted(ledger, executor="deploy-agent", approver="alice")
    ledger.delegate(token, by="deploy-agent", to="release-bot", reason="hand-off", session_id="s-1")
    audit = ledger.delegate(token, by="release-bot", to="canary-bot", reason="canary first")
    assert audit.delegation_chain == (
        DelegationHop("alice", "approved"),
        DelegationHop("deploy-agent", "executor"),
        DelegationHop("release-bot", "hand-off", "s-1"),
        DelegationHop("canary-bot", "canary first"),
    )
    assert audit.delegation_chain[-1].actor == audit.executing_actor == "canary-bot"
    assert (audit.actor, audit.approving_actor, audit.delegated_execution) == (
        "release-bot",
        "alice",
        True,
    )
    assert ledger.verify(token, DEPLOY, "canary-bot").delegation_chain == audit.delegation_chain


def test_only_the_current_executor_may_delegate(ledger: ApprovalLedger) -> None:
    token = granted(ledger, executor="deploy-agent", requested_by="planner")
    for outsider in ("planner", "alice", "intruder"):
        assert reason_of(
            lambda outsider=outsider: ledger.delegate(
                token, by=outsider, to="intruder-bot", reason="mine now"
            )
        ) == (ApprovalReason.UNAUTHORIZED_DELEGATE)
    ledger.delegate(token, by="deploy-agent", to="release-bot", reason="hand-off")
    assert reason_of(
        lambda: ledger.delegate(token, by="deploy-agent", to="other", reason="again")
    ) == (ApprovalReason.UNAUTHORIZED_DELEGATE)


def test_a_delegation_may_shorten_the_expiry_and_lower_the_uses(
    ledger: ApprovalLedger, clock: FakeClock
) -> None:
    token = granted(ledger, ttl_seconds=600, max_uses=5)
    ledger.consume(token, DEPLOY, "deploy-agent")
    audit = ledger.delegate(
        token, by="deploy-agent", to="release-bot", reason="one shot", ttl_seconds=30, max_uses=1
    )
    assert (audit.expires_at, audit.uses, audit.max_uses) == (clock.now + 30, 1, 2)
    assert ledger.consume(token, DEPLOY, "release-bot").status is ApprovalStatus.CONSUMED


def test_a_shortened_expiry_is_enforced(ledger: ApprovalLedger, clock: FakeClock) -> None:
    token = granted(ledger, ttl_seconds=600)
    ledger.delegate(token, by="deploy-agent", to="release-bot", reason="brief", ttl_seconds=30)
    clock.advance(30)
    assert reason_of(lambda: ledger.consume(token, DEPLOY, "release-bot")) == (
        ApprovalReason.EXPIRED
    )


def test_a_delegation_may_not_extend_the_expiry(ledger: ApprovalLedger, clock: FakeClock) -> None:
    token = granted(ledger, ttl_seconds=600)
    clock.advance(100)
    assert reason_of(
        lambda: ledger.delegate(
            token, by="deploy-agent", to="release-bot", reason="longer", ttl_seconds=501
        )
    ) == (ApprovalReason.DELEGATION_NOT_ALLOWED)
    # Nothing changed: the executor is still bound and the expiry still holds.
    audit = ledger.verify(token, DEPLOY, "deploy-agent")
    assert audit.expires_at == clock.now + 500


def test_the_delegation_chain_is_capped(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, max_delegation_depth=2)
    token = granted(ledger, executor="a0")
    ledger.delegate(token, by="a0", to="a1", reason="hop")
    ledger.delegate(token, by="a1", to="a2", reason="hop")
    assert reason_of(lambda: ledger.delegate(token, by="a2", to="a3", reason="hop")) == (
        ApprovalReason.DELEGATION_NOT_ALLOWED
    )
    assert ledger.consume(token, DEPLOY, "a2").executing_actor == "a2"


def test_delegating_to_the_approver_breaks_four_eyes(ledger: ApprovalLedger) -> None:
    token = granted(ledger, approver="alice")
    assert reason_of(
        lambda: ledger.delegate(token, by="deploy-agent", to="alice", reason="do it yourself")
    ) == (ApprovalReason.SELF_APPROVAL)


def test_delegating_to_oneself_is_refused(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    assert reason_of(
        lambda: ledger.delegate(token, by="deploy-agent", to="deploy-agent", reason="pad the chain")
    ) == (ApprovalReason.DELEGATION_NOT_ALLOWED)


def test_a_pending_request_cannot_be_delegated(ledger: ApprovalLedger) -> None:
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    assert reason_of(
        lambda: ledger.delegate(grant.token, by="agent", to="other", reason="early")
    ) == (ApprovalReason.PENDING)


# -- terminal states ----------------------------------------------------------


def _to_terminal(ledger: ApprovalLedger, clock: FakeClock, status: ApprovalStatus) -> str:
    if status is ApprovalStatus.DENIED:
        grant = ledger.request(
            DEPLOY, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60
        )
        ledger.deny(grant.token, approver="alice", reason="no")
        return grant.token
    token = granted(ledger, ttl_seconds=60)
    if status is ApprovalStatus.CONSUMED:
        ledger.consume(token, DEPLOY, "deploy-agent")
    elif status is ApprovalStatus.REVOKED:
        ledger.revoke(token, actor="alice")
    else:
        clock.advance(60)
        ledger.telemetry_counts()  # the sweep expires it without anyone touching it
    return token


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (ApprovalStatus.CONSUMED, ApprovalReason.ALREADY_CONSUMED),
        (ApprovalStatus.EXPIRED, ApprovalReason.EXPIRED),
        (ApprovalStatus.REVOKED, ApprovalReason.REVOKED),
        (ApprovalStatus.DENIED, ApprovalReason.DENIED),
    ],
)
def test_a_terminal_state_is_never_left(
    ledger: ApprovalLedger, clock: FakeClock, status: ApprovalStatus, reason: str
) -> None:
    token = _to_terminal(ledger, clock, status)
    clock.advance(-10_000)  # even a clock stepped back revives nothing
    attempts = [
        lambda: ledger.approve(token, approver="bob"),
        lambda: ledger.deny(token, approver="bob", reason="x"),
        lambda: ledger.revoke(token, actor="bob"),
        lambda: ledger.delegate(token, by="deploy-agent", to="bob", reason="x"),
        lambda: ledger.verify(token, DEPLOY, "deploy-agent"),
        lambda: ledger.consume(token, DEPLOY, "deploy-agent"),
    ]
    for attempt in attempts:
        assert reason_of(attempt) == reason
