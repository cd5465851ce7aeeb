"""`ApprovalLedger`: approvals for guarded actions, keeping every invariant, bounded and traced.

A grant authorises exactly one scope, for one executor at a time, until an
expiry, for a number of uses. The ledger never holds a usable token: it keys
grants by the token's SHA-256 and shows only a 16-hex-digit fingerprint of
it (``otel_bounded.approval.id``) in spans, errors and audits.
"""

from __future__ import annotations

import hashlib
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import NoReturn

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_bounded import telemetry
from otel_bounded.approvals.model import (
    ApprovalAudit,
    ApprovalEvictionReason,
    ApprovalGrant,
    ApprovalOutcome,
    ApprovalScope,
    ApprovalStatus,
    DelegationHop,
    check_name,
    check_reason,
    plain_str,
    same_person,
)
from otel_bounded.core import (
    NO_AUDIT,
    AuditSink,
    BoundedStore,
    Clock,
    EvictionReason,
    reinit_after_fork,
    validate_clock,
)
from otel_bounded.errors import ApprovalError, ApprovalReason
from otel_bounded.telemetry import ApprovalCounts

__all__ = ["MAX_DELEGATION_DEPTH", "ApprovalLedger"]

MAX_DELEGATION_DEPTH = 8
"""Default most delegations after the first executor: each hop dilutes who is accountable."""

_COMPONENT_TYPE = "otel_bounded_approval_ledger"
_TOKEN_BYTES = 32  # 256 bits from the OS CSPRNG: 43 URL-safe characters
# Longer input cannot be one of our tokens; refusing it early keeps hashing cheap.
_MAX_TOKEN_LENGTH = 128
_TOKEN_LENGTH = 43
_REDACTED = "<redacted: an approval token>"
_APPROVER_HOP = "approved"
_EXECUTOR_HOP = "executor"

_TERMINAL_REASON = {
    ApprovalStatus.CONSUMED: ApprovalReason.ALREADY_CONSUMED,
    ApprovalStatus.EXPIRED: ApprovalReason.EXPIRED,
    ApprovalStatus.REVOKED: ApprovalReason.REVOKED,
    ApprovalStatus.DENIED: ApprovalReason.DENIED,
}
# The terminal store has no weight bound, so these are its only two eviction reasons.
_EVICTION_REASONS = {
    EvictionReason.EXPIRED: ApprovalEvictionReason.RETENTION,
    EvictionReason.CAPACITY: ApprovalEvictionReason.MAX_TERMINAL,
}


class _Grant:
    """The ledger's mutable record of one approval; it holds no token, only its digest."""

    __slots__ = (
        "approval_id",
        "approving_actor",
        "chain",
        "closed_by",
        "executor",
        "expires_at",
        "key",
        "max_uses",
        "requested_by",
        "scope",
        "status",
        "ttl_seconds",
        "uses",
    )

    def __init__(
        self,
        key: str,
        scope: ApprovalScope,
        requested_by: str,
        executor: str,
        ttl_seconds: float,
        max_uses: int,
        expires_at: float,
    ) -> None:
        self.key = key
        self.approval_id = key[:16]
        self.scope = scope
        self.requested_by = requested_by
        self.executor = executor
        self.approving_actor: str | None = None
        self.ttl_seconds = ttl_seconds
        self.max_uses = max_uses
        self.uses = 0
        self.expires_at = expires_at
        self.status = ApprovalStatus.PENDING
        self.chain: list[DelegationHop] = []
        self.closed_by: str | None = None

    def __repr__(self) -> str:
        return f"<approval {self.approval_id} {self.status.value}>"


class _Refused(Exception):
    """Carries a refusal out of a decision, with the grant it concerned, for the span."""

    def __init__(self, error: ApprovalError, grant: _Grant | None) -> None:
        super().__init__(error.reason_code)
        self.error = error
        self.grant = grant


def _refuse(reason_code: str, message: str, grant: _Grant | None = None) -> NoReturn:
    approval_id = grant.approval_id if grant is not None else None
    raise _Refused(ApprovalError(reason_code, message, approval_id=approval_id), grant)


class ApprovalLedger:
    """Approvals for guarded actions: scoped, executor-bound, expiring, use-limited, delegable.

    Live grants (pending or granted) are capped by `max_live`; past the cap a
    request is refused, never made room for by dropping a live grant. A grant
    past its expiry becomes ``expired`` when next touched or swept. Terminal
    grants are kept `retention_seconds` (at most `max_terminal` of them), so a
    spent token is refused with its real reason, then forgotten: a forgotten
    token is refused as unknown, so forgetting never grants anything.

    Every operation is one span and one decision count; none logs. Invalid
    arguments (an empty actor, a non-positive ttl) raise `ValueError` before
    anything is decided; every decision refused raises `ApprovalError`.
    `verify` and `consume` never raise anything else: whatever they are
    given, they return an audit or refuse.
    """

    def __init__(
        self,
        *,
        clock: Clock = time.time,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        max_live: int = 10_000,
        retention_seconds: float = 3600,
        request_ttl_seconds: float = 3600,
        max_terminal: int = 100_000,
        max_delegation_depth: int = MAX_DELEGATION_DEPTH,
        audit: AuditSink = NO_AUDIT,
    ) -> None:
        self._max_live = _check_count("max_live", max_live)
        self._max_terminal = _check_count("max_terminal", max_terminal)
        self._max_delegation_depth = _check_count(
            "max_delegation_depth", max_delegation_depth, minimum=0
        )
        self._retention = _check_seconds("retention_seconds", retention_seconds)
        self._request_ttl = _check_seconds("request_ttl_seconds", request_ttl_seconds)
        self._clock = validate_clock(clock)
        self._audit = audit
        self._tracer = telemetry.get_tracer(tracer_provider)
        self._lock = threading.Lock()
        self._decisions: Counter[tuple[str, str]] = Counter()
        # Evictions counted by stores a fork replaced, by reason: the metric is a counter.
        self._evictions_before: Counter[str] = Counter()
        self._live, self._terminal = self._new_stores()
        self.component = telemetry.component_attributes(_COMPONENT_TYPE)
        reinit_after_fork(self._at_fork_reinit)
        telemetry.register_approval_instruments(meter_provider, self, self.component)

    # -- lifecycle -------------------------------------------------------

    def request(
        self,
        scope: ApprovalScope,
        *,
        requested_by: str,
        executor: str,
        ttl_seconds: float,
        max_uses: int = 1,
    ) -> ApprovalGrant:
        """Open a pending request for `executor` to act in `scope`; its audit is `.audit`.

        The request lapses after the ledger's `request_ttl_seconds` unless
        approved; once approved, it lasts `ttl_seconds` for `max_uses` uses.
        """
        # Exactly the class: a subclass's __eq__ could match scopes it was never granted for.
        if type(scope) is not ApprovalScope:
            raise ValueError(
                f"scope must be an ApprovalScope (not a subclass), got a {type(scope).__name__}"
            )
        requested_by = check_name("requested_by", requested_by)
        executor = check_name("executor", executor)
        ttl = _check_seconds("ttl_seconds", ttl_seconds)
        uses = _check_count("max_uses", max_uses)
        issued: list[str] = []

        def decide(now: float) -> _Grant:
            if len(self._live) >= self._max_live:
                _refuse(
                    ApprovalReason.CAPACITY_EXCEEDED,
                    f"{self._max_live} approvals are already pending or granted (max_live); "
                    "resolve or revoke some, or raise max_live",
                )
            token, key = self._new_token()
            grant = _Grant(key, scope, requested_by, executor, ttl, uses, now + self._request_ttl)
            self._live.put(key, grant, expires_at=grant.expires_at)
            issued.append(token)
            return grant

        audit = self._run("request", requested_by, scope, decide, given=(requested_by, executor))
        return ApprovalGrant(
            token=issued[0],
            approval_id=audit.approval_id,
            scope=scope,
            requested_by=requested_by,
            executor=executor,
            status=audit.status,
            max_uses=uses,
            expires_at=audit.expires_at,
            audit=audit,
        )

    def approve(self, token: str, *, approver: str) -> ApprovalAudit:
        """Grant a pending request; `approver` may be neither its requester nor its executor."""
        approver = check_name("approver", approver)

        def decide(now: float) -> _Grant:
            grant = self._find_live(token, now, need=ApprovalStatus.PENDING)
            if same_person(approver, grant.requested_by) or same_person(approver, grant.executor):
                _refuse(
                    ApprovalReason.SELF_APPROVAL,
                    f"{approver} requested or would execute approval {grant.approval_id}; "
                    "a different person must approve it (four eyes)",
                    grant,
                )
            grant.status = ApprovalStatus.GRANTED
            grant.approving_actor = approver
            grant.expires_at = now + grant.ttl_seconds
            grant.chain = [
                DelegationHop(approver, _APPROVER_HOP),
                DelegationHop(grant.executor, _EXECUTOR_HOP),
            ]
            self._live.put(grant.key, grant, expires_at=grant.expires_at)
            return grant

        return self._run("approve", approver, None, decide, given=(approver,))

    def deny(self, token: str, *, approver: str, reason: str) -> ApprovalAudit:
        """Refuse a pending request for good; the denial records `approver` and `reason`."""
        approver = check_name("approver", approver)
        reason = check_reason("reason", reason)

        def decide(now: float) -> _Grant:
            grant = self._find_live(token, now, need=ApprovalStatus.PENDING)
            self._close(grant, ApprovalStatus.DENIED, now, approver)
            return grant

        return self._run("deny", approver, None, decide, reason=reason, given=(approver, reason))

    def revoke(self, token: str, *, actor: str, reason: str = "") -> ApprovalAudit:
        """End a pending or granted approval for good; the revocation records `actor`."""
        actor = check_name("actor", actor)
        reason = check_reason("reason", reason)

        def decide(now: float) -> _Grant:
            grant = self._find_live(token, now, need=None)
            self._close(grant, ApprovalStatus.REVOKED, now, actor)
            return grant

        return self._run("revoke", actor, None, decide, reason=reason, given=(actor, reason))

    def delegate(
        self,
        token: str,
        *,
        by: str,
        to: str,
        reason: str,
        session_id: str | None = None,
        ttl_seconds: float | None = None,
        max_uses: int | None = None,
    ) -> ApprovalAudit:
        """Hand a granted approval from its current executor `by` to `to`.

        The delegate gets the same scope, and at most what is left: `ttl_seconds`
        may only bring the expiry closer, `max_uses` (the uses `to` may make)
        may only be fewer than remain. Afterwards only `to` may use it.
        """
        by = check_name("by", by)
        to = check_name("to", to)
        reason = check_reason("reason", reason)
        if session_id is not None:
            session_id = check_name("session_id", session_id)
        # Plain numbers from here on: a subclass's comparisons could widen the grant.
        ttl = None if ttl_seconds is None else _check_seconds("ttl_seconds", ttl_seconds)
        uses = None if max_uses is None else _check_count("max_uses", max_uses)

        def decide(now: float) -> _Grant:
            grant = self._find_live(token, now, need=ApprovalStatus.GRANTED)
            _check_uses_left(grant)
            if by != grant.executor:
                _refuse(
                    ApprovalReason.UNAUTHORIZED_DELEGATE,
                    f"{by} is not the executor of approval {grant.approval_id}; "
                    "only its current executor may delegate it",
                    grant,
                )
            if same_person(to, grant.approving_actor):
                _refuse(
                    ApprovalReason.SELF_APPROVAL,
                    f"{to} approved approval {grant.approval_id}, so may not execute it "
                    "(four eyes)",
                    grant,
                )
            if same_person(to, by):
                _refuse(
                    ApprovalReason.DELEGATION_NOT_ALLOWED,
                    f"{to} already executes approval {grant.approval_id}",
                    grant,
                )
            if len(grant.chain) - 2 >= self._max_delegation_depth:
                _refuse(
                    ApprovalReason.DELEGATION_NOT_ALLOWED,
                    f"approval {grant.approval_id} was already delegated "
                    f"{self._max_delegation_depth} times (max_delegation_depth); "
                    "request a new approval instead",
                    grant,
                )
            expires_at = grant.expires_at
            if ttl is not None:
                expires_at = now + ttl
                if expires_at > grant.expires_at:
                    _refuse(
                        ApprovalReason.DELEGATION_NOT_ALLOWED,
                        f"a delegation may not extend approval {grant.approval_id}: "
                        f"ttl_seconds={ttl:g} ends after its expiry, "
                        f"{grant.expires_at - now:.3f}s from now",
                        grant,
                    )
            remaining = grant.max_uses - grant.uses
            if uses is not None and uses > remaining:
                _refuse(
                    ApprovalReason.DELEGATION_NOT_ALLOWED,
                    f"a delegation may not add uses to approval {grant.approval_id}: "
                    f"max_uses={uses} but {remaining} remain",
                    grant,
                )
            grant.chain.append(DelegationHop(to, reason, session_id))
            grant.executor = to
            if uses is not None:
                grant.max_uses = grant.uses + uses
            if expires_at != grant.expires_at:
                grant.expires_at = expires_at
                self._live.put(grant.key, grant, expires_at=expires_at)
            return grant

        return self._run(
            "delegate", by, None, decide, reason=reason, given=(by, to, reason, session_id)
        )

    # -- use -------------------------------------------------------------

    def verify(self, token: str, scope: ApprovalScope, executing_actor: str) -> ApprovalAudit:
        """Whether `executing_actor` may act in `scope` now; changes nothing.

        Checks, in order: known token, status, expiry, remaining uses, exact
        scope, executor binding. Returns the audit, or raises `ApprovalError`.
        """

        def decide(now: float) -> _Grant:
            return self._check_use(token, scope, executing_actor, now)

        return self._run("verify", executing_actor, scope, decide, presented_scope=True)

    def consume(self, token: str, scope: ApprovalScope, executing_actor: str) -> ApprovalAudit:
        """Check as `verify` does and use the approval once, atomically.

        However many threads race, exactly `max_uses` calls succeed; the last
        one leaves the grant ``consumed``.
        """

        def decide(now: float) -> _Grant:
            grant = self._check_use(token, scope, executing_actor, now)
            grant.uses += 1
            if grant.uses >= grant.max_uses:
                self._close(grant, ApprovalStatus.CONSUMED, now, executing_actor)
            return grant

        return self._run("consume", executing_actor, scope, decide, presented_scope=True)

    # -- telemetry -------------------------------------------------------

    def telemetry_counts(self) -> ApprovalCounts:
        """Counts for the metric instruments, read at collection time."""
        with self._lock:
            self._expire()
            terminal = self._terminal
            return ApprovalCounts(
                live=len(self._live),
                terminal=len(terminal),
                decisions=dict(self._decisions),
                evictions={
                    reason: self._evictions_before[reason] + terminal.evictions[core_reason]
                    for core_reason, reason in _EVICTION_REASONS.items()
                },
            )

    # -- internals -------------------------------------------------------

    def _run(
        self,
        operation: str,
        actor: object,
        scope: object,
        decide: Callable[[float], _Grant],
        *,
        reason: str = "",
        presented_scope: bool = False,
        given: tuple[object, ...] = (),
    ) -> ApprovalAudit:
        # The span starts and ends outside the lock: its processors may export
        # synchronously, and no exporter should ever run under the ledger's lock.
        span = self._tracer.start_span(telemetry.SPAN_APPROVAL_PREFIX + operation)
        refusal: ApprovalError | None = None
        try:
            with self._lock:
                now = self._clock()
                self._expire()
                shown = self._shown(actor)
                # A token given as a name or a reason (arguments out of order) would be
                # recorded in the audit and spans of every later operation: refuse it.
                if any(self._shown(text) is _REDACTED for text in given):
                    raise ValueError(
                        f"an approval token was passed to {operation}() as a name or a reason; "
                        "check the order of the arguments"
                    )
                try:
                    grant = decide(now)
                except _Refused as refused:
                    refusal = refused.error
                    self._decisions[ApprovalOutcome.REFUSED, refusal.reason_code] += 1
                    attributes = _attributes(shown, scope, refused.grant, presented_scope)
                    attributes[telemetry.OUTCOME] = ApprovalOutcome.REFUSED
                    attributes[telemetry.APPROVAL_REASON_CODE] = refusal.reason_code
                else:
                    self._decisions[ApprovalOutcome.ALLOWED, ""] += 1
                    attributes = _attributes(shown, scope, grant, presented_scope)
                    attributes[telemetry.OUTCOME] = ApprovalOutcome.ALLOWED
                    audit = _audit(operation, shown, grant, now, reason)
        except BaseException as unexpected:
            span.set_status(Status(StatusCode.ERROR, type(unexpected).__name__))
            span.end()
            raise
        span.set_attributes(attributes)
        # The span's facts, never a token; `attributes` is not touched after this.
        self._audit.append(telemetry.AUDIT_APPROVAL_PREFIX + operation, attributes)
        if refusal is not None:
            span.set_status(Status(StatusCode.ERROR, refusal.reason_code))
            span.end()
            raise refusal
        span.end()
        return audit

    def _shown(self, actor: object) -> str | None:
        """`actor` as a plain `str` (None if it is none), or redacted if it is a token we hold.

        A held token there means arguments passed out of order.
        """
        text = plain_str(actor)
        if text is not None and len(text) == _TOKEN_LENGTH:
            key = _token_key(text)
            if key is not None and (key in self._live or key in self._terminal):
                return _REDACTED
        return text

    def _check_use(
        self, token: object, scope: object, executing_actor: object, now: float
    ) -> _Grant:
        grant = self._find_live(token, now, need=ApprovalStatus.GRANTED)
        _check_uses_left(grant)
        # Exact types: an object with a permissive __eq__ (say, mock.ANY) matches nothing,
        # and no method of a subclass runs (not even __repr__, for the message).
        if type(scope) is not ApprovalScope or scope != grant.scope:
            asked = repr(scope) if type(scope) is ApprovalScope else type(scope).__name__
            _refuse(
                ApprovalReason.SCOPE_MISMATCH,
                f"approval {grant.approval_id} does not cover {asked}; scopes match exactly",
                grant,
            )
        if plain_str(executing_actor) != grant.executor:
            _refuse(
                ApprovalReason.UNAUTHORIZED_DELEGATE,
                f"approval {grant.approval_id} is bound to another executor; only the "
                "executor it was granted or delegated to may use it",
                grant,
            )
        return grant

    def _find_live(self, token: object, now: float, *, need: ApprovalStatus | None) -> _Grant:
        """The live grant named by `token`, in status `need` (any live one if None), or a refusal.

        Checks known token, then status, then expiry, as every operation does.
        """
        key = _token_key(token)
        grant = None
        if key is not None:
            grant = self._live.get(key)
            if grant is None:
                grant = self._terminal.get(key)
        if grant is None:
            _refuse(
                ApprovalReason.NO_APPROVAL,
                "no approval is held for this token: it was never issued by this ledger, "
                "or it ended and its record passed its retention; request a new approval",
            )
        status = grant.status
        if status.is_terminal:
            _refuse(_TERMINAL_REASON[status], _ended(grant), grant)
        if need is not None and status is not need:
            if status is ApprovalStatus.PENDING:
                _refuse(
                    ApprovalReason.PENDING,
                    f"approval {grant.approval_id} awaits an approver's decision",
                    grant,
                )
            _refuse(
                ApprovalReason.INVALID_TRANSITION,
                f"approval {grant.approval_id} is already {status.value}; "
                "only a pending request can be approved or denied",
                grant,
            )
        if now >= grant.expires_at:
            # The interval sweep may not have reached it yet: it is expired all the same.
            self._live.pop(grant.key)
            self._retire(grant, ApprovalStatus.EXPIRED, grant.expires_at)
            _refuse(ApprovalReason.EXPIRED, _ended(grant), grant)
        return grant

    def _close(self, grant: _Grant, status: ApprovalStatus, now: float, by: str) -> None:
        self._live.pop(grant.key)
        grant.closed_by = by
        self._retire(grant, status, now)

    def _retire(self, grant: _Grant, status: ApprovalStatus, at: float) -> None:
        grant.status = status
        self._terminal.put(grant.key, grant, expires_at=at + self._retention)

    def _on_live_expired(self, _key: str, grant: _Grant, _reason: str) -> None:
        # The core evicts a live grant only when its expiry passes (it has no other bound).
        self._retire(grant, ApprovalStatus.EXPIRED, grant.expires_at)

    def _expire(self) -> None:
        # Expiry-ordered heaps: this costs what it removes, not what the ledger holds.
        self._live.expire()
        self._terminal.expire()

    def _new_token(self) -> tuple[str, str]:
        while True:
            token = secrets.token_urlsafe(_TOKEN_BYTES)
            key = hashlib.sha256(token.encode("ascii")).hexdigest()
            # A repeat is astronomically unlikely, but must never merge two grants.
            if key not in self._live and key not in self._terminal:
                return token, key

    def _new_stores(self) -> tuple[BoundedStore[str, _Grant], BoundedStore[str, _Grant]]:
        live: BoundedStore[str, _Grant] = BoundedStore(
            clock=self._clock, on_evict=self._on_live_expired
        )
        terminal: BoundedStore[str, _Grant] = BoundedStore(self._max_terminal, clock=self._clock)
        return live, terminal

    def _at_fork_reinit(self) -> None:
        # A child that kept the parent's grants could spend each use once more
        # than granted (once per process), so it starts empty: inherited tokens
        # are refused as unknown there. Fresh stores also drop any state another
        # thread was half-way through changing at fork time.
        self._lock = threading.Lock()
        for core_reason, reason in _EVICTION_REASONS.items():
            self._evictions_before[reason] += self._terminal.evictions[core_reason]
        self._live, self._terminal = self._new_stores()


def _token_key(token: object) -> str | None:
    """The SHA-256 hex digest a grant is held under, or None for what cannot be a token."""
    # Copied to a plain str first, so that no method of a str subclass runs.
    text = plain_str(token)
    if text is None or not text.isascii() or len(text) > _MAX_TOKEN_LENGTH:
        return None
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _check_uses_left(grant: _Grant) -> None:
    # The last use closes a grant, so this holds already; checked again because
    # an extra use is the one mistake an approval system must never make.
    if grant.uses >= grant.max_uses:
        _refuse(
            ApprovalReason.ALREADY_CONSUMED,
            f"approval {grant.approval_id} has no uses left",
            grant,
        )


def _ended(grant: _Grant) -> str:
    status = grant.status
    approval = f"approval {grant.approval_id}"
    if status is ApprovalStatus.CONSUMED:
        uses = f"{grant.uses} of {grant.max_uses}"
        return f"{approval} was used {uses} times, last by {grant.closed_by}"
    if status is ApprovalStatus.EXPIRED:
        return f"{approval} expired at {grant.expires_at:.3f}; request a new approval"
    if status is ApprovalStatus.REVOKED:
        return f"{approval} was revoked by {grant.closed_by}; request a new approval"
    return f"{approval} was denied by {grant.closed_by}"


def _audit(
    operation: str, actor: str | None, grant: _Grant, now: float, reason: str
) -> ApprovalAudit:
    chain = tuple(grant.chain)
    return ApprovalAudit(
        operation=operation,
        actor=actor if actor is not None else "",
        approval_id=grant.approval_id,
        scope=grant.scope,
        requested_by=grant.requested_by,
        approving_actor=grant.approving_actor,
        executing_actor=grant.executor,
        status=grant.status,
        uses=grant.uses,
        max_uses=grant.max_uses,
        expires_at=grant.expires_at,
        delegated_execution=len(chain) > 2,
        delegation_chain=chain,
        at=now,
        reason=reason,
    )


def _attributes(
    actor: str | None, scope: object, grant: _Grant | None, presented_scope: bool
) -> dict[str, AttributeValue]:
    """Span attributes: fingerprints, names and counts only, never a token."""
    attributes: dict[str, AttributeValue] = {}
    if actor is not None:
        attributes[telemetry.APPROVAL_ACTOR] = actor
    if grant is not None:
        attributes[telemetry.APPROVAL_ID] = grant.approval_id
        attributes[telemetry.APPROVAL_REQUESTED_BY] = grant.requested_by
        attributes[telemetry.APPROVAL_EXECUTING_ACTOR] = grant.executor
        if grant.approving_actor is not None:
            attributes[telemetry.APPROVAL_APPROVING_ACTOR] = grant.approving_actor
        attributes[telemetry.APPROVAL_STATUS] = grant.status.value
        attributes[telemetry.APPROVAL_USES] = grant.uses
        attributes[telemetry.APPROVAL_MAX_USES] = grant.max_uses
        attributes[telemetry.APPROVAL_DELEGATED] = len(grant.chain) > 2
        attributes[telemetry.APPROVAL_CHAIN_LENGTH] = len(grant.chain)
        if not presented_scope:
            scope = grant.scope
    # verify and consume show the scope asked for: on a mismatch that is the news.
    if type(scope) is ApprovalScope:
        attributes[telemetry.APPROVAL_POLICY] = scope.policy
        attributes[telemetry.APPROVAL_ACTION] = scope.action
        if scope.resource is not None:
            attributes[telemetry.APPROVAL_RESOURCE] = scope.resource
    return attributes


def _check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """`value` as a plain `int` >= `minimum`, or `ValueError`.

    Copied to a plain `int` before it is compared: a subclass's `__gt__` could
    let a delegation add uses.
    """
    # type(), not isinstance() alone: isinstance believes a forged __class__.
    if isinstance(value, int) and issubclass(type(value), int) and type(value) is not bool:
        count = int.__int__(value)
        if count >= minimum:
            return count
    raise ValueError(f"{name} must be an integer >= {minimum}, got {_described(value)}")


def _check_seconds(name: str, value: object) -> float:
    """`value` as a plain, finite `float` > 0, or `ValueError`.

    Copied to a plain `float` before it is compared, as `_check_count` does.
    """
    seconds = math.nan
    if isinstance(value, float) and issubclass(type(value), float):
        seconds = float.__float__(value)
    elif isinstance(value, int) and issubclass(type(value), int) and type(value) is not bool:
        try:
            seconds = float(int.__int__(value))
        except OverflowError:
            seconds = math.inf
    if seconds > 0 and not math.isinf(seconds):
        return seconds
    raise ValueError(f"{name} must be a finite number of seconds > 0, got {_described(value)}")


def _described(value: object) -> str:
    """An invalid argument as its error shows it: a plain number, else only its type.

    Never a string's text (a token passed in the wrong place would land in the
    message, and from there in logs), nor a subclass's own repr.
    """
    if type(value) is float or (type(value) is int and value.bit_length() <= 64):
        return repr(value)
    return f"a value of type {type(value).__name__}"
