"""The demo agent's security work: capability tokens for its tools, approvals for its actions.

Each agent step presents a capability token for the tool it calls, and every
tenth step asks an `ApprovalLedger` before a guarded action (a refund, an
email). Some of what the agent presents is wrong on purpose (revoked, expired,
tampered with, for someone else; approvals self-approved, denied, out of
scope, used twice, flooding `max_live`), so each refusal reason shows up.

The demo never counts outcomes itself: the report is read from the metrics
the provider and the ledger export (`read_report`), exactly what a collector
receives.
"""

from __future__ import annotations

import contextlib
import random
import secrets
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.trace import TracerProvider

from otel_bounded import config, telemetry
from otel_bounded.approvals import ApprovalLedger, ApprovalScope
from otel_bounded.errors import ApprovalError, ApprovalReason, TokenError
from otel_bounded.tokens import CapabilityToken, HMACTokenProvider

__all__ = [
    "APPROVAL_LIMITS",
    "ApprovalReport",
    "SecurityWorkload",
    "TokenReport",
    "format_report",
    "read_report",
]

APPROVAL_LIMITS: Mapping[str, float] = {
    "max_live": 25,
    "max_terminal": 130,
    "retention_seconds": 1_200,
    "request_ttl_seconds": 900,
}
"""Small enough that a demo run reaches each (the ledger reads no environment variable)."""

_USERS = tuple(f"user-{n:03d}" for n in range(40))
_AGENT = "support-agent"
_APPROVERS = ("alice", "bob")
_TOOL_CAPABILITY = "tool.lookup_order"
_TOKEN_TTL_SECONDS = 600.0
_TOKENS_HELD = 30
_ISSUE_EVERY = 20
_REVOKE_EVERY = 300
_APPROVE_EVERY = 10
_FLOOD_EVERY = 2_000
_FIRST_FLOOD = 250
_FLOOD_CLEARED_AFTER_STEPS = 20
_FLOOD_SIZE = 30
_LATE_AFTER_STEPS = 400

# (what goes wrong, weight) for one approval; "ok" is an approval used as meant.
_APPROVAL_SCENARIOS = (
    ("ok", 50),
    ("self_approval", 6),
    ("scope_mismatch", 6),
    ("wrong_executor", 6),
    ("used_twice", 6),
    ("denied", 6),
    ("pending", 6),
    ("revoked", 6),
    ("late", 6),
    ("unanswered", 2),
)


class SecurityWorkload:
    """The agent's tokens and approvals, on the demo's clock and providers."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        rng: random.Random,
    ) -> None:
        overrides: dict[str, Any] = {}
        if (
            config.resolve(config.TOKEN_SECRET).value is None
            and config.resolve(config.TOKEN_SECRET_FILE).value is None
        ):
            # A fresh key per run: the demo has no replica to share it with.
            overrides["secret"] = secrets.token_bytes(32)
        self.tokens = HMACTokenProvider.from_env(
            clock=clock, tracer_provider=tracer_provider, meter_provider=meter_provider, **overrides
        )
        self.ledger = ApprovalLedger(
            clock=clock,
            tracer_provider=tracer_provider,
            meter_provider=meter_provider,
            max_live=int(APPROVAL_LIMITS["max_live"]),
            max_terminal=int(APPROVAL_LIMITS["max_terminal"]),
            retention_seconds=APPROVAL_LIMITS["retention_seconds"],
            request_ttl_seconds=APPROVAL_LIMITS["request_ttl_seconds"],
        )
        self._rng = rng
        self._held: deque[CapabilityToken] = deque(maxlen=_TOKENS_HELD)
        self._expired: deque[CapabilityToken] = deque(maxlen=_TOKENS_HELD)
        self._late: deque[tuple[int, str, ApprovalScope]] = deque()
        self._orders = 0
        self._flooded: list[str] = []

    def close(self) -> None:
        self.tokens.close()

    def step(self, index: int) -> None:
        """One agent step's security work, inside the step's span."""
        self._use_a_token(index)
        if index % _APPROVE_EVERY == 0:
            self._ask_for_approval(index)
        if index % _FLOOD_EVERY == _FIRST_FLOOD:
            self._flood()
        elif index % _FLOOD_EVERY == _FIRST_FLOOD + _FLOOD_CLEARED_AFTER_STEPS:
            self._clear_flood()
        while self._late and self._late[0][0] <= index:
            _, token, scope = self._late.popleft()
            with _refused():
                self.ledger.consume(token, scope, _AGENT)

    # -- tokens ------------------------------------------------------------

    def _use_a_token(self, index: int) -> None:
        rng = self._rng
        if index % _ISSUE_EVERY == 0 or not self._held:
            if self._held and len(self._held) == self._held.maxlen:
                self._expired.append(self._held[0])  # long past its expiry by the time it is used
            user = rng.choice(_USERS)
            self._held.append(
                self.tokens.issue(_TOOL_CAPABILITY, user, ttl_seconds=_TOKEN_TTL_SECONDS)
            )
        if index % _REVOKE_EVERY == 0:
            self.tokens.revoke(rng.choice(self._held))  # its user signed out
        token = rng.choice(self._held)
        text, principal = token.encode(), token.principal_id
        roll = rng.random()
        if roll < 0.03:
            text = _tampered(text)
        elif roll < 0.06:
            principal = rng.choice(_USERS[:-1] if principal == _USERS[-1] else _USERS[-1:])
        elif roll < 0.08 and self._expired:
            stale = rng.choice(self._expired)
            text, principal = stale.encode(), stale.principal_id
        # A refused tool call: the provider counts the outcome.
        with contextlib.suppress(TokenError):
            self.tokens.verify(
                text, expected_principal_id=principal, expected_capability_id=_TOOL_CAPABILITY
            )

    # -- approvals -----------------------------------------------------------

    def _ask_for_approval(self, index: int) -> None:
        rng, ledger = self._rng, self.ledger
        self._orders += 1
        action = rng.choice(("refund", "send_email"))
        scope = ApprovalScope(policy="support", action=action, resource=f"order-{self._orders}")
        other = ApprovalScope(policy="support", action="delete_account", resource=scope.resource)
        names, weights = zip(*_APPROVAL_SCENARIOS, strict=True)
        scenario = rng.choices(names, weights)[0]
        try:
            grant = ledger.request(scope, requested_by=_AGENT, executor=_AGENT, ttl_seconds=300)
        except ApprovalError:
            return  # max_live reached: refused, and counted
        token, approver = grant.token, rng.choice(_APPROVERS)
        if scenario == "unanswered":
            return  # lapses after request_ttl_seconds
        if scenario == "pending":
            with _refused():
                ledger.consume(token, scope, _AGENT)
            return
        if scenario == "self_approval":
            with _refused():
                ledger.approve(token, approver=_AGENT)
            with _refused():
                ledger.consume(token, scope, _AGENT)
            return
        if scenario == "denied":
            ledger.deny(token, approver=approver, reason="not for this customer")
            with _refused():
                ledger.consume(token, scope, _AGENT)
            return
        ledger.approve(token, approver=approver)
        if scenario == "revoked":
            ledger.revoke(token, actor=approver, reason="customer withdrew")
        elif scenario == "late":
            self._late.append((index + _LATE_AFTER_STEPS, token, scope))
            return
        elif scenario == "scope_mismatch":
            with _refused():
                ledger.consume(token, other, _AGENT)
        elif scenario == "wrong_executor":
            with _refused():
                ledger.consume(token, scope, "intern-agent")
        with _refused():
            ledger.consume(token, scope, _AGENT)
        if scenario == "used_twice":
            with _refused():
                ledger.consume(token, scope, _AGENT)

    def _flood(self) -> None:
        """A runaway loop asks for far more approvals than anyone answers."""
        for n in range(_FLOOD_SIZE):
            scope = ApprovalScope(policy="support", action="refund", resource=f"flood-{n}")
            with _refused():  # past max_live: refused, never made room for
                grant = self.ledger.request(
                    scope, requested_by=_AGENT, executor=_AGENT, ttl_seconds=300
                )
                self._flooded.append(grant.token)

    def _clear_flood(self) -> None:
        """An operator notices and revokes the flood, so real requests fit again."""
        for token in self._flooded:
            with _refused():
                self.ledger.revoke(token, actor="alice", reason="runaway loop")
        self._flooded.clear()


def _refused() -> contextlib.suppress:
    """Where the agent lets a refusal go: the ledger has counted it by reason code."""
    return contextlib.suppress(ApprovalError)


def _tampered(text: str) -> str:
    """`text` with one character of its signature changed."""
    last = text[-3]
    return text[:-3] + ("A" if last != "A" else "B") + text[-2:]


# -- the report, read from the metrics -----------------------------------------


@dataclass(frozen=True)
class TokenReport:
    """What the token instruments reported for one provider."""

    component: str
    revocations_held: int
    revocations_swept: int
    verifications: Mapping[str, int]


@dataclass(frozen=True)
class ApprovalReport:
    """What the approval instruments reported for one ledger."""

    component: str
    live: int
    terminal: int
    decisions: Mapping[str, int]
    """Allowed decisions under ``allowed``, refusals under their reason code."""
    evictions: Mapping[str, int]


def read_report(
    reader: InMemoryMetricReader, workload: SecurityWorkload
) -> tuple[TokenReport, ApprovalReport]:
    """Collect `reader` once and read this workload's provider and ledger from the points."""
    data = reader.get_metrics_data()
    tokens = workload.tokens.component[telemetry.COMPONENT_NAME]
    ledger = workload.ledger.component[telemetry.COMPONENT_NAME]

    def points(name: str, component: str) -> list[tuple[Mapping[str, Any], int]]:
        return [
            (attributes, value)
            for attributes, value in _points(data, name)
            if attributes.get(telemetry.COMPONENT_NAME) == component
        ]

    def total(name: str, component: str) -> int:
        return sum(value for _, value in points(name, component))

    def by(name: str, component: str, key: str) -> dict[str, int]:
        return {str(attributes[key]): value for attributes, value in points(name, component)}

    decisions: dict[str, int] = {}
    for attributes, value in points(telemetry.APPROVAL_DECISIONS, ledger):
        reason = str(attributes.get(telemetry.APPROVAL_REASON_CODE) or "allowed")
        decisions[reason] = decisions.get(reason, 0) + value
    grants = by(telemetry.APPROVAL_GRANTS, ledger, telemetry.APPROVAL_STATUS)
    return (
        TokenReport(
            component=tokens,
            revocations_held=total(telemetry.TOKEN_REVOCATIONS, tokens),
            revocations_swept=total(telemetry.TOKEN_REVOCATIONS_SWEPT, tokens),
            verifications=by(telemetry.TOKEN_VERIFICATIONS, tokens, telemetry.OUTCOME),
        ),
        ApprovalReport(
            component=ledger,
            live=grants.get("live", 0),
            terminal=grants.get("terminal", 0),
            decisions=decisions,
            evictions=by(telemetry.APPROVAL_EVICTIONS, ledger, telemetry.EVICTION_REASON),
        ),
    )


def _points(data: MetricsData | None, name: str) -> list[tuple[Mapping[str, Any], int]]:
    if data is None:
        return []
    return [
        (point.attributes or {}, int(point.value))
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.data.data_points
        if hasattr(point, "value")
    ]


_LABEL = 44  # wide enough for the ledger's name, so its held and cap columns line up


def format_report(tokens: TokenReport, approvals: ApprovalReport) -> list[str]:
    """The token and approval sections of the demo's table."""
    lines = [
        f"capability tokens ({tokens.component})",
        f"  {'revocations held':<{_LABEL - 2}}{tokens.revocations_held:>12,}  "
        "(each until its token expires)",
        f"  {'revocations swept':<{_LABEL - 2}}{tokens.revocations_swept:>12,}",
        "  verifications by outcome",
    ]
    for outcome in _ordered(tokens.verifications, telemetry.VerificationOutcome.ALL):
        count = tokens.verifications.get(outcome, 0)
        lines.append(f"    {outcome:<{_LABEL - 4}}{count:>12,}")
    title = f"approvals ({approvals.component})"
    lines += [
        "",
        f"{title:<{_LABEL}}{'held':>12}{'cap':>12}",
        f"  {'live (pending, granted)':<{_LABEL - 2}}{approvals.live:>12,}"
        f"{int(APPROVAL_LIMITS['max_live']):>12,}",
        f"  {'ended, retained':<{_LABEL - 2}}{approvals.terminal:>12,}"
        f"{int(APPROVAL_LIMITS['max_terminal']):>12,}",
        "  decisions by reason",
    ]
    known = ("allowed", *sorted(ApprovalReason.ALL))
    for reason in _ordered(approvals.decisions, known):
        count = approvals.decisions.get(reason, 0)
        if count or reason == "allowed":
            lines.append(f"    {reason:<{_LABEL - 4}}{count:>12,}")
    lines.append("  ended grants evicted")
    for reason in _ordered(approvals.evictions, ("retention", "max_terminal")):
        lines.append(f"    {reason:<{_LABEL - 4}}{approvals.evictions.get(reason, 0):>12,}")
    return lines


def _ordered(counts: Mapping[str, int], known: Sequence[str]) -> list[str]:
    """Known labels in a stable order, then any others reported."""
    return [*known, *sorted(set(counts) - set(known))]
