"""Spans, metrics, and the bearer token kept out of every one of them."""

from __future__ import annotations

import gc
import hashlib
import logging
import re
from collections.abc import Callable

import pytest
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.trace import StatusCode

from otel_bounded import telemetry
from otel_bounded.approvals import ApprovalLedger, ApprovalScope
from otel_bounded.errors import ApprovalError, ApprovalReason
from tests.approvals.helpers import DEPLOY, Telemetry, granted
from tests.support import FakeClock

OPERATIONS = ("request", "approve", "deny", "delegate", "verify", "consume", "revoke")


def attempt(call: Callable[[], object]) -> ApprovalError | None:
    try:
        call()
    except ApprovalError as error:
        return error
    return None


# -- spans --------------------------------------------------------------------


def test_every_operation_is_one_span_named_after_it(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    denied = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    ledger.deny(denied.token, approver="alice", reason="no")
    token = granted(ledger, max_uses=2)
    ledger.delegate(token, by="deploy-agent", to="release-bot", reason="hand-off")
    ledger.verify(token, DEPLOY, "release-bot")
    ledger.consume(token, DEPLOY, "release-bot")
    ledger.revoke(token, actor="security-oncall")
    names = [span.name for span in otel.spans.get_finished_spans()]
    assert names == [
        telemetry.SPAN_APPROVAL_PREFIX + operation
        for operation in (
            "request",
            "deny",
            "request",
            "approve",
            "delegate",
            "verify",
            "consume",
            "revoke",
        )
    ]
    assert {name.rsplit(".", 1)[1] for name in names} == set(OPERATIONS)


def test_an_allowed_consume_span_carries_scope_actors_and_outcome(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    token = granted(ledger, requested_by="planner", executor="deploy-agent", approver="alice")
    audit = ledger.consume(token, DEPLOY, "deploy-agent")
    span = otel.spans.get_finished_spans()[-1]
    assert span.name == "otel_bounded.approval.consume"
    assert dict(span.attributes or {}) == {
        telemetry.APPROVAL_ID: audit.approval_id,
        telemetry.APPROVAL_POLICY: "release",
        telemetry.APPROVAL_ACTION: "deploy",
        telemetry.APPROVAL_RESOURCE: "service-a",
        telemetry.APPROVAL_ACTOR: "deploy-agent",
        telemetry.APPROVAL_REQUESTED_BY: "planner",
        telemetry.APPROVAL_APPROVING_ACTOR: "alice",
        telemetry.APPROVAL_EXECUTING_ACTOR: "deploy-agent",
        telemetry.APPROVAL_STATUS: "consumed",
        telemetry.APPROVAL_USES: 1,
        telemetry.APPROVAL_MAX_USES: 1,
        telemetry.APPROVAL_DELEGATED: False,
        telemetry.APPROVAL_CHAIN_LENGTH: 2,
        telemetry.OUTCOME: "allowed",
        telemetry.APPROVAL_STORE_KIND: "memory",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_a_refused_span_carries_the_reason_code_and_who_tried(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    token = granted(ledger, executor="deploy-agent")
    wrong = ApprovalScope("release", "delete", "service-a")
    attempt(lambda: ledger.consume(token, wrong, "intruder"))
    span = otel.spans.get_finished_spans()[-1]
    attributes = dict(span.attributes or {})
    assert attributes[telemetry.OUTCOME] == "refused"
    assert attributes[telemetry.APPROVAL_REASON_CODE] == ApprovalReason.SCOPE_MISMATCH
    assert attributes[telemetry.APPROVAL_ACTOR] == "intruder"
    assert attributes[telemetry.APPROVAL_EXECUTING_ACTOR] == "deploy-agent"
    # The span shows the scope that was asked for: on a mismatch, that is the news.
    assert attributes[telemetry.APPROVAL_ACTION] == "delete"
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == ApprovalReason.SCOPE_MISMATCH


def test_a_refused_request_span_names_the_requester(clock: FakeClock, otel: Telemetry) -> None:
    ledger = ApprovalLedger(clock=clock, tracer_provider=otel.tracer_provider, max_live=1)
    ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    attempt(lambda: ledger.request(DEPLOY, requested_by="agent-2", executor="x", ttl_seconds=60))
    attributes = dict(otel.spans.get_finished_spans()[-1].attributes or {})
    assert attributes[telemetry.APPROVAL_ACTOR] == "agent-2"
    assert attributes[telemetry.APPROVAL_REASON_CODE] == ApprovalReason.CAPACITY_EXCEEDED
    assert attributes[telemetry.APPROVAL_POLICY] == DEPLOY.policy


def test_the_span_is_a_child_of_the_callers_span(ledger: ApprovalLedger, otel: Telemetry) -> None:
    token = granted(ledger)
    tracer = otel.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("deploy") as parent:
        ledger.consume(token, DEPLOY, "deploy-agent")
    consume = next(s for s in otel.spans.get_finished_spans() if s.name.endswith(".consume"))
    assert consume.parent is not None
    assert consume.parent.span_id == parent.get_span_context().span_id


def test_spans_end_after_the_ledger_lock_is_released(clock: FakeClock, otel: Telemetry) -> None:
    # A processor may export synchronously; under the ledger's lock it would stall every caller.
    lock_free_at_end: list[bool] = []

    class LockProbe(SpanProcessor):
        def on_end(self, span: ReadableSpan) -> None:
            acquired = ledger._lock.acquire(blocking=False)
            if acquired:
                ledger._lock.release()
            lock_free_at_end.append(acquired)

    otel.tracer_provider.add_span_processor(LockProbe())
    ledger = ApprovalLedger(clock=clock, tracer_provider=otel.tracer_provider)
    token = granted(ledger)
    ledger.consume(token, DEPLOY, "deploy-agent")
    attempt(lambda: ledger.consume(token, DEPLOY, "deploy-agent"))
    assert lock_free_at_end == [True, True, True, True]


# -- metrics --------------------------------------------------------------------


def test_decisions_are_counted_by_outcome_and_reason_code(
    ledger: ApprovalLedger, otel: Telemetry
) -> None:
    token = granted(ledger)  # two allowed
    attempt(lambda: ledger.consume(token, DEPLOY, "intruder"))
    attempt(lambda: ledger.consume(token, DEPLOY, "intruder"))
    ledger.consume(token, DEPLOY, "deploy-agent")  # three allowed
    attempt(lambda: ledger.consume(token, DEPLOY, "deploy-agent"))
    counts = {
        (attributes[telemetry.OUTCOME], attributes[telemetry.APPROVAL_REASON_CODE]): value
        for attributes, value in otel.points(telemetry.APPROVAL_DECISIONS)
    }
    # Every (outcome, reason code) pair is reported, from 0, so increase() sees a first event.
    expected = {("allowed", ""): 3} | {("refused", code): 0 for code in ApprovalReason.ALL}
    expected[("refused", ApprovalReason.UNAUTHORIZED_DELEGATE)] = 2
    expected[("refused", ApprovalReason.ALREADY_CONSUMED)] = 1
    assert counts == expected


def test_invalid_arguments_are_not_decisions(ledger: ApprovalLedger, otel: Telemetry) -> None:
    token = granted(ledger)
    with pytest.raises(ValueError, match="approver"):
        ledger.approve(token, approver="")
    assert [span.name.rsplit(".", 1)[1] for span in otel.spans.get_finished_spans()] == [
        "request",
        "approve",
    ]
    decisions = ledger.telemetry_counts().decisions
    assert {pair: count for pair, count in decisions.items() if count} == {("allowed", ""): 2}


def test_grant_and_eviction_metrics_follow_the_ledger(clock: FakeClock, otel: Telemetry) -> None:
    ledger = ApprovalLedger(clock=clock, meter_provider=otel.meter_provider, retention_seconds=60)
    spent = granted(ledger)
    granted(ledger)
    ledger.consume(spent, DEPLOY, "deploy-agent")
    grants = {a[telemetry.APPROVAL_STATUS]: v for a, v in otel.points(telemetry.APPROVAL_GRANTS)}
    assert grants == {"live": 1, "terminal": 1}
    clock.advance(60)
    grants = {a[telemetry.APPROVAL_STATUS]: v for a, v in otel.points(telemetry.APPROVAL_GRANTS)}
    assert grants == {"live": 1, "terminal": 0}
    evictions = otel.points(telemetry.APPROVAL_EVICTIONS)
    assert {a[telemetry.EVICTION_REASON]: v for a, v in evictions} == {
        "retention": 1,
        "max_terminal": 0,
    }
    for attributes, _ in evictions:
        assert attributes[telemetry.COMPONENT_TYPE] == "otel_bounded_approval_ledger"


def test_evictions_are_counted_by_reason_and_an_expired_live_grant_is_not_one(
    clock: FakeClock, otel: Telemetry
) -> None:
    ledger = ApprovalLedger(
        clock=clock, meter_provider=otel.meter_provider, retention_seconds=100, max_terminal=2
    )
    for _ in range(3):
        ledger.consume(granted(ledger), DEPLOY, "deploy-agent")  # the third pushes one out
    lapsing = granted(ledger, ttl_seconds=10)
    clock.advance(10)  # `lapsing` expires: it ends, and ending is not an eviction

    def evictions() -> dict[object, int | float]:
        points = otel.points(telemetry.APPROVAL_EVICTIONS)
        return {attributes[telemetry.EVICTION_REASON]: value for attributes, value in points}

    assert evictions() == {"retention": 0, "max_terminal": 2}
    refusal = attempt(lambda: ledger.verify(lapsing, DEPLOY, "deploy-agent"))
    assert refusal is not None
    assert refusal.reason_code == ApprovalReason.EXPIRED
    clock.advance(100)
    assert evictions() == {"retention": 2, "max_terminal": 2}


# -- the token is a bearer credential -----------------------------------------


def exercise(ledger: ApprovalLedger, clock: FakeClock, ending: str, seen: list[str]) -> str:
    """Every operation, allowed and refused, on one grant that ends by `ending`; its token."""

    def run(call: Callable[[], object]) -> None:
        try:
            seen.append(repr(call()))
        except ApprovalError as error:
            seen.extend((str(error), repr(error), repr(error.args), str(error.approval_id)))

    grant = ledger.request(DEPLOY, requested_by="planner", executor="agent", ttl_seconds=30)
    seen.append(repr(grant))
    token = grant.token
    if ending == "deny":
        run(lambda: ledger.deny(token, approver="alice", reason="no"))
        run(lambda: ledger.approve(token, approver="alice"))
        return token
    run(lambda: ledger.approve(token, approver="planner"))
    run(lambda: ledger.approve(token, approver="alice"))
    run(lambda: ledger.delegate(token, by="agent", to="bot", reason="r", session_id="s"))
    run(lambda: ledger.delegate(token, by="agent", to="bot", reason="r"))
    run(lambda: ledger.verify(token, DEPLOY, "bot"))
    run(lambda: ledger.verify(token, ApprovalScope("x", "y"), "bot"))
    run(lambda: ledger.verify(token, DEPLOY, "agent"))
    # Arguments passed out of order: the token lands where an actor or a scope goes.
    run(lambda: ledger.verify(token, DEPLOY, token))
    run(lambda: ledger.consume("agent", token, token))  # type: ignore[arg-type]
    run(lambda: ledger.consume(token, token, "bot"))  # type: ignore[arg-type]
    if ending == "consume":
        run(lambda: ledger.consume(token, DEPLOY, "bot"))
    elif ending == "revoke":
        run(lambda: ledger.revoke(token, actor="alice"))
    elif ending == "expire":
        clock.advance(30)
    run(lambda: ledger.consume(token, DEPLOY, "bot"))
    run(lambda: ledger.revoke(token, actor="alice"))
    return token


def test_no_raw_token_reaches_a_span_metric_log_error_or_audit(
    ledger: ApprovalLedger, clock: FakeClock, otel: Telemetry, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    tokens = [
        exercise(ledger, clock, ending, seen)
        for ending in ("consume", "deny", "revoke", "expire", "refusals")
    ]
    exported = [span.to_json() for span in otel.spans.get_finished_spans()]
    metrics = otel.metrics.get_metrics_data()
    assert metrics is not None
    places = {
        "spans": "\n".join(exported),
        "metrics": metrics.to_json(),
        "logs": caplog.text,
        "errors and audits": "\n".join(seen),
    }
    assert len(exported) > 50
    for token in tokens:
        for where, text in places.items():
            assert token not in text, f"a raw token reached the {where}"
        # Its fingerprint is what the collector sees instead.
        fingerprint = hashlib.sha256(token.encode()).hexdigest()[:16]
        assert fingerprint in places["spans"]


def test_the_ledger_keeps_no_raw_token_in_memory(ledger: ApprovalLedger) -> None:
    token = granted(ledger, max_uses=2)
    ledger.delegate(token, by="deploy-agent", to="bot", reason="r")
    ledger.consume(token, DEPLOY, "bot")
    held: list[str] = []
    stack: list[object] = [ledger]
    visited: set[int] = set()
    while stack:
        item = stack.pop()
        if id(item) in visited:
            continue
        visited.add(id(item))
        if isinstance(item, str):
            held.append(item)
            continue
        module = type(item).__module__
        if isinstance(item, dict | list | tuple | set | frozenset) or module.startswith(
            "otel_bounded"
        ):
            stack.extend(gc.get_referents(item))
    assert len(held) > 10  # the walk did reach the grants
    assert token not in held
    assert hashlib.sha256(token.encode()).hexdigest() in held


def test_tokens_are_unique_and_long_even_at_one_clock_instant(clock: FakeClock) -> None:
    ledger = ApprovalLedger(clock=clock, max_pending_per_requester=2_000)
    grants = [
        ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
        for _ in range(2_000)
    ]
    tokens = [grant.token for grant in grants]
    assert len(set(tokens)) == len(tokens)
    assert len({grant.approval_id for grant in grants}) == len(grants)
    assert all(len(token) >= 43 for token in tokens)
    assert all(re.fullmatch(r"[A-Za-z0-9_-]+", token) for token in tokens)
    # Nothing of the clock shows through: no shared prefix beyond chance.
    assert len({token[:4] for token in tokens}) > 1_900


def test_two_ledgers_on_identical_clocks_issue_different_tokens() -> None:
    first, second = ApprovalLedger(clock=FakeClock()), ApprovalLedger(clock=FakeClock())
    a = first.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    b = second.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    assert a.token != b.token
    assert a.approval_id != b.approval_id


def test_grant_repr_hides_the_token(ledger: ApprovalLedger) -> None:
    grant = ledger.request(DEPLOY, requested_by="agent", executor="agent", ttl_seconds=60)
    assert grant.token not in repr(grant)
    assert grant.token not in str(grant)
    assert grant.approval_id in repr(grant)


@pytest.mark.parametrize(
    "operation",
    ["request", "approve", "deny_approver", "deny_reason", "revoke", "delegate_to", "delegate_by"],
)
def test_a_token_given_as_a_name_or_reason_is_refused_before_it_is_recorded(
    operation: str,
) -> None:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from otel_bounded import ApprovalLedger, ApprovalScope
    from tests.support import FakeClock

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    ledger = ApprovalLedger(clock=FakeClock(), tracer_provider=provider)
    scope = ApprovalScope(policy="release", action="deploy")
    grant = ledger.request(scope, requested_by="agent", executor="runner", ttl_seconds=60)
    token = grant.token
    calls = {
        "request": lambda: ledger.request(
            scope, requested_by="agent", executor=token, ttl_seconds=60
        ),
        "approve": lambda: ledger.approve(token, approver=token),
        "deny_approver": lambda: ledger.deny(token, approver=token, reason="no"),
        "deny_reason": lambda: ledger.deny(token, approver="alice", reason=token),
        "revoke": lambda: ledger.revoke(token, actor="alice", reason=token),
        "delegate_to": lambda: ledger.delegate(token, by="runner", to=token, reason="r"),
        "delegate_by": lambda: ledger.delegate(token, by=token, to="other", reason="r"),
    }
    if operation.startswith("delegate"):
        ledger.approve(token, approver="alice")
    with pytest.raises(ValueError, match="approval token was passed"):
        calls[operation]()
    for span in exporter.get_finished_spans():
        for value in (span.attributes or {}).values():
            assert token not in str(value)
    # The grant is untouched: it still works for its real executor.
    if operation.startswith("delegate"):
        ledger.verify(token, scope, "runner")
