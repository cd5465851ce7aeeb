"""Races and forks: an approval is never used more often than granted."""

from __future__ import annotations

import multiprocessing
import os
import random
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

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


# -- processes sharing one store -----------------------------------------------

PROCESSES = 4
GRANTS_PER_RACE = 40
ATTEMPTS_PER_GRANT = 3


def _race_in_child(
    ledger: ApprovalLedger, tokens: list[str], seed: int, start: Any, results: Any
) -> None:
    # Each child walks the grants in its own order, so every pair of processes
    # meets on some grant at the same moment.
    order = random.Random(seed).sample(tokens, len(tokens))
    wins: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    start.wait()
    for token in order:
        for _ in range(ATTEMPTS_PER_GRANT):
            try:
                ledger.consume(token, DEPLOY, "deploy-agent")
                wins[token] += 1
                outcomes["ok"] += 1
            except ApprovalError as error:
                outcomes[error.reason_code] += 1
    results.put((dict(wins), dict(outcomes)))


@pytest.mark.servers
@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_processes_racing_on_one_store_consume_exactly_max_uses(shared_store_url: str) -> None:
    context = multiprocessing.get_context("fork")
    ledger = ApprovalLedger(store=shared_store_url)
    rng = random.Random(11)
    max_uses = {}
    for _ in range(GRANTS_PER_RACE):
        uses = rng.randint(1, ATTEMPTS_PER_GRANT * PROCESSES - 1)
        max_uses[granted(ledger, max_uses=uses)] = uses
    tokens = list(max_uses)
    start = context.Barrier(PROCESSES)
    results = context.Queue()
    # Each child uses the ledger it inherited: its store reconnects after the fork.
    children = [
        context.Process(target=_race_in_child, args=(ledger, tokens, seed, start, results))
        for seed in range(PROCESSES)
    ]
    for child in children:
        child.start()
    reports = [results.get(timeout=120) for _ in children]
    for child in children:
        child.join(60)
        assert child.exitcode == 0
    results.close()
    results.join_thread()
    wins: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    for child_wins, child_outcomes in reports:
        wins.update(child_wins)
        outcomes.update(child_outcomes)
    # The model: every grant is used exactly max_uses times, whoever raced for it.
    assert dict(wins) == max_uses
    attempts = GRANTS_PER_RACE * ATTEMPTS_PER_GRANT * PROCESSES
    assert outcomes == {
        "ok": sum(max_uses.values()),
        ApprovalReason.ALREADY_CONSUMED: attempts - sum(max_uses.values()),
    }
    for token in tokens:
        with pytest.raises(ApprovalError, match=ApprovalReason.ALREADY_CONSUMED):
            ledger.verify(token, DEPLOY, "deploy-agent")


@pytest.mark.servers
@pytest.mark.parametrize("max_uses", [1, 5])
def test_32_threads_racing_on_a_shared_store_get_exactly_max_uses(
    shared_store_url: str, max_uses: int
) -> None:
    ledger = ApprovalLedger(store=shared_store_url)
    token = granted(ledger, max_uses=max_uses)
    results = race([lambda: ledger.consume(token, DEPLOY, "deploy-agent")] * THREADS)
    assert results == {"ok": max_uses, ApprovalReason.ALREADY_CONSUMED: THREADS - max_uses}
    ledger.close()
