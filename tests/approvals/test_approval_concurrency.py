"""Races and forks: an approval is never used more often than granted."""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Callable, Sequence

import pytest

from otel_bounded.approvals import ApprovalLedger
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, Telemetry, granted
from tests.support import FakeClock

THREADS = 32


def race(calls: Sequence[Callable[[], object]]) -> Counter[str]:
    """Run every call at once, one thread each; count "ok" and each reason code."""
    barrier = threading.Barrier(len(calls))
    results: Counter[str] = Counter()
    results_lock = threading.Lock()

    def run(call: Callable[[], object]) -> None:
        barrier.wait()
        try:
            call()
            outcome = "ok"
        except ApprovalError as error:
            outcome = error.reason_code
        with results_lock:
            results[outcome] += 1

    threads = [threading.Thread(target=run, args=(call,)) for call in calls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


@pytest.mark.parametrize("max_uses", [1, 5, THREADS])
def test_32_threads_racing_to_consume_get_exactly_max_uses(
    clock: FakeClock, otel: Telemetry, max_uses: int
) -> None:
    ledger = ApprovalLedger(clock=clock, tracer_provider=otel.tracer_provider)
    token = granted(ledger, max_uses=max_uses)
    results = race([lambda: ledger.consume(token, DEPLOY, "deploy-agent")] * THREADS)
    assert results["ok"] == max_uses
    assert results[ApprovalReason.ALREADY_CONSUMED] == THREADS - max_uses
    consumed = [
        span
        for span in otel.spans.get_finished_spans()
        if span.name.endswith(".consume")
        and (span.attributes or {}).get("otel_bounded.outcome") == "allowed"
    ]
    assert sorted((span.attributes or {})["otel_bounded.approval.uses"] for span in consumed) == (
        list(range(1, max_uses + 1))
    )


def test_racing_approvers_grant_once(ledger: ApprovalLedger) -> None:
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    results = race(
        [
            lambda approver=f"approver-{n}": ledger.approve(grant.token, approver=approver)
            for n in range(THREADS)
        ]
    )
    assert results == {"ok": 1, ApprovalReason.INVALID_TRANSITION: THREADS - 1}


def test_a_revocation_racing_consumers_leaves_no_use_after_it(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=THREADS)
    revoked_at: list[int] = []
    uses: list[int] = []
    order_lock = threading.Lock()

    def consume() -> None:
        audit = ledger.consume(token, DEPLOY, "deploy-agent")
        with order_lock:
            uses.append(audit.uses)

    def revoke() -> None:
        audit = ledger.revoke(token, actor="security-oncall")
        with order_lock:
            revoked_at.append(audit.uses)

    results = race([consume] * (THREADS - 1) + [revoke])
    assert results["ok"] == len(uses) + 1
    assert results[ApprovalReason.REVOKED] == THREADS - 1 - len(uses)
    # Every successful use happened before the revocation saw the grant.
    assert sorted(uses) == list(range(1, revoked_at[0] + 1))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_cannot_spend_the_parents_grants(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=1)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            try:
                ledger.consume(token, DEPLOY, "deploy-agent")
                outcome = "ok"
            except ApprovalError as error:
                outcome = error.reason_code
            # The child's ledger still works for its own grants.
            own = granted(ledger)
            ledger.consume(own, DEPLOY, "deploy-agent")
            os.write(write_end, outcome.encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_outcome = pipe.read()
    os.waitpid(pid, 0)
    assert child_outcome == ApprovalReason.NO_APPROVAL
    assert ledger.consume(token, DEPLOY, "deploy-agent").uses == 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_keeps_counting_evictions_by_reason(clock: FakeClock) -> None:
    # The evictions metric is a counter: a child's fresh stores must not restart it.
    ledger = ApprovalLedger(clock=clock, retention_seconds=10, max_terminal=1)
    for _ in range(2):
        ledger.consume(granted(ledger), DEPLOY, "deploy-agent")  # the second pushes one out
    clock.advance(10)  # the other passes its retention
    assert ledger.telemetry_counts().evictions == {"retention": 1, "max_terminal": 1}
    ledger.consume(granted(ledger), DEPLOY, "deploy-agent")  # the child forgets it: no eviction
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        try:
            os.close(read_end)
            evictions = ledger.telemetry_counts().evictions
            os.write(write_end, repr(sorted(evictions.items())).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        child_evictions = pipe.read()
    os.waitpid(pid, 0)
    assert child_evictions == repr([("max_terminal", 1), ("retention", 1)])
