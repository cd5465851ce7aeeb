"""A stateful property test: random operations, actors, scopes and clock moves against a model.

The model predicts every outcome. Whatever the sequence, no terminal state is
ever left, no grant is used past its `max_uses`, and no one but the bound
executor ever uses one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from otel_bounded.approvals import ApprovalAudit, ApprovalLedger, ApprovalScope, ApprovalStatus
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY
from tests.support import FakeClock

ACTORS = ("ann", "bob", "cat", "dan")
SCOPES = (DEPLOY, ApprovalScope("release", "deploy", "service-b"))
MAX_LIVE = 4
MAX_DEPTH = 1
REQUEST_TTL = 30

actors = st.sampled_from(ACTORS)
scopes = st.sampled_from(SCOPES)


@dataclass
class Expected:
    """What the model believes about one grant."""

    scope: ApprovalScope
    requested_by: str
    executor: str
    max_uses: int
    expires_at: float
    ttl_seconds: int
    status: ApprovalStatus = ApprovalStatus.PENDING
    approver: str | None = None
    uses: int = 0
    delegations: int = 0
    forgotten: bool = False

    @property
    def live(self) -> bool:
        return not self.status.is_terminal


TERMINAL_CODE = {
    ApprovalStatus.CONSUMED: ApprovalReason.ALREADY_CONSUMED,
    ApprovalStatus.EXPIRED: ApprovalReason.EXPIRED,
    ApprovalStatus.REVOKED: ApprovalReason.REVOKED,
    ApprovalStatus.DENIED: ApprovalReason.DENIED,
}


class ApprovalMachine(RuleBasedStateMachine):
    grants = Bundle("grants")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.ledger = ApprovalLedger(
            clock=self.clock,
            max_live=MAX_LIVE,
            max_terminal=6,
            retention_seconds=40,
            request_ttl_seconds=REQUEST_TTL,
            max_delegation_depth=MAX_DEPTH,
        )
        self.model: dict[str, Expected] = {}

    # -- the model's one judgement shared by every rule ----------------------

    def check(
        self, token: str, refusal: str | None, call: Callable[[], ApprovalAudit]
    ) -> ApprovalAudit | None:
        """Run `call`; it must refuse with `refusal`, or succeed when `refusal` is None."""
        expected = self.model[token]
        if expected.forgotten:
            refusal = ApprovalReason.NO_APPROVAL
        elif not expected.live:
            # A terminal grant is refused with its own reason, until its record is evicted.
            refusal = TERMINAL_CODE[expected.status]
        try:
            audit = call()
        except ApprovalError as error:
            refused = error.reason_code
        else:
            assert refusal is None, f"allowed, but the model expected {refusal}"
            assert expected.live, "a terminal grant came back"
            return audit
        if refused == ApprovalReason.NO_APPROVAL and not expected.live:
            expected.forgotten = True
        else:
            assert refused == refusal, (refused, refusal)
        return None

    def state_refusal(self, expected: Expected, need: ApprovalStatus) -> str | None:
        if expected.status is need:
            return None
        if expected.status is ApprovalStatus.PENDING:
            return ApprovalReason.PENDING
        return ApprovalReason.INVALID_TRANSITION

    # -- rules -----------------------------------------------------------------

    @rule(
        target=grants,
        scope=scopes,
        requested_by=actors,
        executor=actors,
        ttl=st.integers(1, 40),
        max_uses=st.integers(1, 3),
    )
    def request(
        self, scope: ApprovalScope, requested_by: str, executor: str, ttl: int, max_uses: int
    ) -> object:
        live = sum(expected.live for expected in self.model.values())
        refused: str | None = None
        try:
            grant = self.ledger.request(
                scope,
                requested_by=requested_by,
                executor=executor,
                ttl_seconds=ttl,
                max_uses=max_uses,
            )
        except ApprovalError as error:
            refused = error.reason_code
        if refused is not None:
            assert (refused, live) == (ApprovalReason.CAPACITY_EXCEEDED, MAX_LIVE)
            return multiple()
        assert live < MAX_LIVE
        assert grant.token not in self.model
        self.model[grant.token] = Expected(
            scope, requested_by, executor, max_uses, self.clock.now + REQUEST_TTL, ttl
        )
        return grant.token

    @rule(token=grants, approver=actors)
    def approve(self, token: str, approver: str) -> None:
        expected = self.model[token]
        refusal = self.state_refusal(expected, ApprovalStatus.PENDING)
        if refusal is None and approver in (expected.requested_by, expected.executor):
            refusal = ApprovalReason.SELF_APPROVAL
        audit = self.check(token, refusal, lambda: self.ledger.approve(token, approver=approver))
        if audit is not None:
            expected.status = ApprovalStatus.GRANTED
            expected.approver = approver
            expected.expires_at = self.clock.now + expected.ttl_seconds
            assert audit.expires_at == expected.expires_at

    @rule(token=grants)
    def approve_with_four_eyes(self, token: str) -> None:
        # Random actors rarely make a valid approval; this rule reaches the granted states.
        expected = self.model[token]
        others = [a for a in ACTORS if a not in (expected.requested_by, expected.executor)]
        self.approve(token, others[0])

    @rule(token=grants, approver=actors)
    def deny(self, token: str, approver: str) -> None:
        expected = self.model[token]
        refusal = self.state_refusal(expected, ApprovalStatus.PENDING)
        audit = self.check(
            token, refusal, lambda: self.ledger.deny(token, approver=approver, reason="no")
        )
        if audit is not None:
            assert audit.actor == approver
            expected.status = ApprovalStatus.DENIED

    @rule(token=grants, actor=actors)
    def revoke(self, token: str, actor: str) -> None:
        audit = self.check(token, None, lambda: self.ledger.revoke(token, actor=actor))
        if audit is not None:
            assert audit.actor == actor
            self.model[token].status = ApprovalStatus.REVOKED

    @rule(
        token=grants,
        by=actors,
        to=actors,
        ttl=st.none() | st.integers(1, 40),
        max_uses=st.none() | st.integers(1, 3),
    )
    def delegate(self, token: str, by: str, to: str, ttl: int | None, max_uses: int | None) -> None:
        expected = self.model[token]
        refusal = self.state_refusal(expected, ApprovalStatus.GRANTED)
        remaining = expected.max_uses - expected.uses
        if refusal is not None:
            pass
        elif by != expected.executor:
            refusal = ApprovalReason.UNAUTHORIZED_DELEGATE
        elif to == expected.approver:
            refusal = ApprovalReason.SELF_APPROVAL
        elif (
            to == by
            or expected.delegations >= MAX_DEPTH
            or (ttl is not None and self.clock.now + ttl > expected.expires_at)
            or (max_uses is not None and max_uses > remaining)
        ):
            refusal = ApprovalReason.DELEGATION_NOT_ALLOWED
        audit = self.check(
            token,
            refusal,
            lambda: self.ledger.delegate(
                token, by=by, to=to, reason="hand-off", ttl_seconds=ttl, max_uses=max_uses
            ),
        )
        if audit is not None:
            expected.executor = to
            expected.delegations += 1
            if ttl is not None:
                expected.expires_at = self.clock.now + ttl
            if max_uses is not None:
                expected.max_uses = expected.uses + max_uses
            assert audit.executing_actor == audit.delegation_chain[-1].actor == to
            assert audit.max_uses - audit.uses <= remaining

    def use_refusal(self, expected: Expected, scope: ApprovalScope, actor: str) -> str | None:
        refusal = self.state_refusal(expected, ApprovalStatus.GRANTED)
        if refusal is None and scope != expected.scope:
            return ApprovalReason.SCOPE_MISMATCH
        if refusal is None and actor != expected.executor:
            return ApprovalReason.UNAUTHORIZED_DELEGATE
        return refusal

    @rule(token=grants, scope=scopes, actor=actors)
    def verify(self, token: str, scope: ApprovalScope, actor: str) -> None:
        expected = self.model[token]
        refusal = self.use_refusal(expected, scope, actor)
        audit = self.check(token, refusal, lambda: self.ledger.verify(token, scope, actor))
        if audit is not None:
            assert (audit.uses, audit.executing_actor) == (expected.uses, actor)

    @rule(token=grants, scope=scopes, actor=actors)
    def consume(self, token: str, scope: ApprovalScope, actor: str) -> None:
        expected = self.model[token]
        refusal = self.use_refusal(expected, scope, actor)
        audit = self.check(token, refusal, lambda: self.ledger.consume(token, scope, actor))
        if audit is not None:
            # Only the bound executor, only in scope, never past max_uses.
            assert actor == expected.executor
            assert scope == expected.scope
            expected.uses += 1
            assert audit.uses == expected.uses <= expected.max_uses
            if expected.uses == expected.max_uses:
                expected.status = ApprovalStatus.CONSUMED
            assert audit.status is expected.status

    @rule(token=grants, delegate=actors, ttl=st.none() | st.integers(1, 40))
    def delegate_as_executor(self, token: str, delegate: str, ttl: int | None) -> None:
        self.delegate(token, self.model[token].executor, delegate, ttl, None)

    @rule(token=grants, hops=st.lists(actors, min_size=1, max_size=MAX_DEPTH + 1))
    def approve_then_delegate_along(self, token: str, hops: list[str]) -> None:
        # A chain of hand-offs on one grant: reaches the depth cap and shortened grants.
        if self.model[token].status is ApprovalStatus.PENDING:
            self.approve_with_four_eyes(token)
        for hop in hops:
            self.delegate(token, self.model[token].executor, hop, None, None)

    @rule(token=grants, verify_first=st.booleans())
    def use_as_executor(self, token: str, verify_first: bool) -> None:
        expected = self.model[token]
        if verify_first:
            self.verify(token, expected.scope, expected.executor)
        self.consume(token, expected.scope, expected.executor)

    @rule(
        token=st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    )
    def forged_token(self, token: str) -> None:
        with pytest.raises(ApprovalError) as refused:
            self.ledger.consume(token, DEPLOY, "ann")
        assert refused.value.reason_code == ApprovalReason.NO_APPROVAL

    @rule(seconds=st.integers(-5, 20))
    def move_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)
        for expected in self.model.values():
            if expected.live and self.clock.now >= expected.expires_at:
                expected.status = ApprovalStatus.EXPIRED

    @precondition(lambda self: bool(self.model))
    @invariant()
    def live_grants_are_exactly_the_models(self) -> None:
        counts = self.ledger.telemetry_counts()
        assert counts.live == sum(expected.live for expected in self.model.values())
        assert counts.live <= MAX_LIVE
        assert counts.terminal <= 6


ApprovalMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_approval_state_machine = ApprovalMachine.TestCase


class SharedStoreMachine(ApprovalMachine):
    """The same model, on a store two replicas share, each with its own clock, with restarts.

    Whichever replica acts, however far apart their clocks (each steps
    forward and back on its own), and however often a ledger is closed and
    opened anew on the same store, the outcomes are the model's: nothing a
    restart loses, nothing one replica decides that the other does not see,
    no terminal state left because another replica's clock is behind.
    """

    url = ""  # set by the test that runs this machine

    def __init__(self) -> None:
        super().__init__()
        self.ledger.close()
        self.clocks = [self.clock, FakeClock(self.clock.now + 7)]
        self.replicas = [self.open_replica(0), self.open_replica(1)]
        self.ledger = self.replicas[0]

    def open_replica(self, which: int) -> ApprovalLedger:
        return ApprovalLedger(
            clock=self.clocks[which],
            max_live=MAX_LIVE,
            max_terminal=6,
            retention_seconds=40,
            request_ttl_seconds=REQUEST_TTL,
            max_delegation_depth=MAX_DEPTH,
            store=self.url,
        )

    @rule(which=st.integers(0, 1))
    def switch_replica(self, which: int) -> None:
        self.ledger, self.clock = self.replicas[which], self.clocks[which]
        # The invariant's collection sweeps with this replica's clock.
        self.move_clock(0)

    @rule(which=st.integers(0, 1))
    def restart_replica(self, which: int) -> None:
        self.replicas[which].close()
        self.replicas[which] = self.open_replica(which)
        self.switch_replica(which)

    def teardown(self) -> None:
        for replica in self.replicas:
            replica.close()


@pytest.mark.servers
def test_the_model_holds_on_a_shared_store_across_replicas_and_restarts(
    shared_store_url: str, tmp_path: Path
) -> None:
    counter = itertools.count()

    def machine() -> SharedStoreMachine:
        # A fresh store for every example: a new file, or an emptied database.
        if shared_store_url.startswith("sqlite"):
            SharedStoreMachine.url = f"sqlite:///{tmp_path / f'example-{next(counter)}.db'}"
        else:
            client = redis.Redis.from_url(shared_store_url)
            client.flushdb()
            client.close()
            SharedStoreMachine.url = shared_store_url
        return SharedStoreMachine()

    run_state_machine_as_test(
        machine, settings=settings(max_examples=25, stateful_step_count=30, deadline=None)
    )
