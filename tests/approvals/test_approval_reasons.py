"""One focused test per reason code, and the order in which the use checks run."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from otel_bounded.approvals import ApprovalLedger, ApprovalScope
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, granted
from tests.servers import free_port
from tests.support import FakeClock

TESTED: dict[str, Callable[..., None]] = {}


def covers(reason_code: str) -> Callable[[Callable[..., None]], Callable[..., None]]:
    def register(test: Callable[..., None]) -> Callable[..., None]:
        TESTED[reason_code] = test
        return test

    return register


def refusal(call: Callable[[], object]) -> ApprovalError:
    with pytest.raises(ApprovalError) as caught:
        call()
    return caught.value


@covers(ApprovalReason.NO_APPROVAL)
def test_token_never_issued_is_no_approval(ledger: ApprovalLedger) -> None:
    real = granted(ledger)
    forged = real[:-1] + ("A" if real[-1] != "A" else "B")
    error = refusal(lambda: ledger.consume(forged, DEPLOY, "deploy-agent"))
    assert error.reason_code == ApprovalReason.NO_APPROVAL
    assert error.approval_id is None


@covers(ApprovalReason.PENDING)
def test_consuming_a_pending_request_is_approval_pending(ledger: ApprovalLedger) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60
    )
    error = refusal(lambda: ledger.consume(grant.token, DEPLOY, "deploy-agent"))
    assert error.reason_code == ApprovalReason.PENDING
    assert error.approval_id == grant.approval_id


@covers(ApprovalReason.DENIED)
def test_consuming_a_denied_request_is_approval_denied(ledger: ApprovalLedger) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60
    )
    ledger.deny(grant.token, approver="alice", reason="change freeze")
    error = refusal(lambda: ledger.consume(grant.token, DEPLOY, "deploy-agent"))
    assert error.reason_code == ApprovalReason.DENIED
    assert "alice" in str(error)


@covers(ApprovalReason.EXPIRED)
def test_consuming_after_the_ttl_is_approval_expired(
    ledger: ApprovalLedger, clock: FakeClock
) -> None:
    token = granted(ledger, ttl_seconds=60)
    clock.advance(60)
    error = refusal(lambda: ledger.consume(token, DEPLOY, "deploy-agent"))
    assert error.reason_code == ApprovalReason.EXPIRED


@covers(ApprovalReason.REVOKED)
def test_consuming_a_revoked_grant_is_approval_revoked(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    ledger.revoke(token, actor="security-oncall", reason="credential leak")
    error = refusal(lambda: ledger.consume(token, DEPLOY, "deploy-agent"))
    assert error.reason_code == ApprovalReason.REVOKED
    assert "security-oncall" in str(error)


@covers(ApprovalReason.ALREADY_CONSUMED)
def test_a_use_past_max_uses_is_approval_already_consumed(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=2)
    ledger.consume(token, DEPLOY, "deploy-agent")
    ledger.consume(token, DEPLOY, "deploy-agent")
    error = refusal(lambda: ledger.consume(token, DEPLOY, "deploy-agent"))
    assert error.reason_code == ApprovalReason.ALREADY_CONSUMED


@covers(ApprovalReason.SCOPE_MISMATCH)
def test_another_resource_is_approval_scope_mismatch(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    other = ApprovalScope(DEPLOY.policy, DEPLOY.action, "service-b")
    error = refusal(lambda: ledger.consume(token, other, "deploy-agent"))
    assert error.reason_code == ApprovalReason.SCOPE_MISMATCH
    # The refusal spent nothing: the right scope still works.
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


@covers(ApprovalReason.UNAUTHORIZED_DELEGATE)
def test_an_actor_other_than_the_executor_is_approval_unauthorized_delegate(
    ledger: ApprovalLedger,
) -> None:
    token = granted(ledger, executor="deploy-agent")
    error = refusal(lambda: ledger.consume(token, DEPLOY, "intruder"))
    assert error.reason_code == ApprovalReason.UNAUTHORIZED_DELEGATE
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


@covers(ApprovalReason.SELF_APPROVAL)
def test_the_requester_approving_is_approval_self_approval(ledger: ApprovalLedger) -> None:
    grant = ledger.request(DEPLOY, requested_by="deploy-agent", executor="runner", ttl_seconds=60)
    error = refusal(lambda: ledger.approve(grant.token, approver="deploy-agent"))
    assert error.reason_code == ApprovalReason.SELF_APPROVAL
    # Still pending: someone else may approve.
    assert ledger.approve(grant.token, approver="alice").approving_actor == "alice"


@covers(ApprovalReason.INVALID_TRANSITION)
def test_approving_twice_is_approval_invalid_transition(ledger: ApprovalLedger) -> None:
    token = granted(ledger, approver="alice")
    error = refusal(lambda: ledger.approve(token, approver="bob"))
    assert error.reason_code == ApprovalReason.INVALID_TRANSITION
    assert ledger.verify(token, DEPLOY, "deploy-agent").approving_actor == "alice"


@covers(ApprovalReason.DELEGATION_NOT_ALLOWED)
def test_delegating_more_uses_than_remain_is_approval_delegation_not_allowed(
    ledger: ApprovalLedger,
) -> None:
    token = granted(ledger, max_uses=2)
    ledger.consume(token, DEPLOY, "deploy-agent")
    error = refusal(
        lambda: ledger.delegate(
            token, by="deploy-agent", to="runner", reason="hand-off", max_uses=2
        )
    )
    assert error.reason_code == ApprovalReason.DELEGATION_NOT_ALLOWED


@covers(ApprovalReason.CAPACITY_EXCEEDED)
def test_a_request_past_max_live_is_approval_capacity_exceeded(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, max_live=2)
    for _ in range(2):
        ledger.request(DEPLOY, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60)
    error = refusal(
        lambda: ledger.request(
            DEPLOY, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60
        )
    )
    assert error.reason_code == ApprovalReason.CAPACITY_EXCEEDED
    assert "max_live" in str(error)


@covers(ApprovalReason.TOO_MANY_PENDING)
def test_a_requesters_excess_pending_request_is_approval_too_many_pending(
    clock: FakeClock,
) -> None:
    ledger = ApprovalLedger(clock=clock, max_pending_per_requester=2)
    for _ in range(2):
        ledger.request(DEPLOY, requested_by="deploy-agent", executor="runner", ttl_seconds=60)
    error = refusal(
        lambda: ledger.request(
            DEPLOY, requested_by="Deploy-Agent", executor="runner", ttl_seconds=60
        )
    )
    assert error.reason_code == ApprovalReason.TOO_MANY_PENDING
    assert "max_pending_per_requester" in str(error)
    # Another requester is not held back by this one.
    ledger.request(DEPLOY, requested_by="other-agent", executor="runner", ttl_seconds=60)


@covers(ApprovalReason.STORE_UNAVAILABLE)
def test_a_store_that_cannot_be_reached_is_approval_store_unavailable(clock: FakeClock) -> None:
    pytest.importorskip("redis")
    ledger = ApprovalLedger(clock=clock, store=f"redis://:hunter2@127.0.0.1:{free_port()}/0")
    error = refusal(
        lambda: ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    )
    assert error.reason_code == ApprovalReason.STORE_UNAVAILABLE
    assert "hunter2" not in str(error)


def test_every_reason_code_has_its_own_test() -> None:
    assert set(TESTED) == ApprovalReason.ALL


# -- the order of checks -----------------------------------------------------


def test_status_is_checked_before_expiry(ledger: ApprovalLedger, clock: FakeClock) -> None:
    token = granted(ledger, ttl_seconds=60)
    ledger.revoke(token, actor="alice")
    clock.advance(3600 - 1)  # past the grant's expiry, within the record's retention
    error = refusal(lambda: ledger.consume(token, DEPLOY, "intruder"))
    assert error.reason_code == ApprovalReason.REVOKED


def test_pending_is_reported_before_scope_and_executor(ledger: ApprovalLedger) -> None:
    grant = ledger.request(
        DEPLOY, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=60
    )
    other = ApprovalScope("release", "delete")
    error = refusal(lambda: ledger.verify(grant.token, other, "intruder"))
    assert error.reason_code == ApprovalReason.PENDING


def test_expiry_is_checked_before_scope_and_executor(
    ledger: ApprovalLedger, clock: FakeClock
) -> None:
    token = granted(ledger, ttl_seconds=60)
    clock.advance(61)
    other = ApprovalScope("release", "delete")
    error = refusal(lambda: ledger.verify(token, other, "intruder"))
    assert error.reason_code == ApprovalReason.EXPIRED


def test_remaining_uses_are_checked_before_scope_and_executor(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=1)
    ledger.consume(token, DEPLOY, "deploy-agent")
    other = ApprovalScope("release", "delete")
    error = refusal(lambda: ledger.verify(token, other, "intruder"))
    assert error.reason_code == ApprovalReason.ALREADY_CONSUMED


def test_scope_is_checked_before_executor(ledger: ApprovalLedger) -> None:
    token = granted(ledger)
    other = ApprovalScope("release", "delete")
    error = refusal(lambda: ledger.verify(token, other, "intruder"))
    assert error.reason_code == ApprovalReason.SCOPE_MISMATCH
