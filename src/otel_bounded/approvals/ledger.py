"""`ApprovalLedger`: approvals for guarded actions, keeping every invariant, bounded and traced.

A grant authorises exactly one scope (arguments included), for one executor
at a time, until an expiry, for a number of uses. The ledger never holds a
usable token: its store keys grants by the token's SHA-256, and spans,
errors and audits show only a 16-hex-digit fingerprint of it
(``otel_bounded.approval.id``). Decisions are made here, as pure functions
of a stored record; the store (memory, SQLite, Redis) makes each one atomic.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import Status, StatusCode, TracerProvider
from opentelemetry.util.types import AttributeValue

from otel_bounded import config, telemetry
from otel_bounded.approvals.checks import (
    check_count,
    check_seconds,
    requested_scope,
    scope_fields,
)
from otel_bounded.approvals.model import (
    ApprovalAudit,
    ApprovalGrant,
    ApprovalOutcome,
    ApprovalScope,
    ApprovalStatus,
    DelegationHop,
)
from otel_bounded.approvals.names import (
    MAX_NAME_LENGTH,
    TOKEN_LENGTH,
    check_name,
    check_reason,
    plain_str,
    presented,
    same_person,
    token_shaped_windows,
)
from otel_bounded.approvals.record import GrantRecord
from otel_bounded.approvals.stores import (
    DUPLICATE_KEY,
    ApprovalStore,
    StoreBounds,
    open_approval_store,
)
from otel_bounded.core import (
    NO_AUDIT,
    AuditSink,
    Clock,
    audit_from_env,
    reinit_after_fork,
    validate_clock,
)
from otel_bounded.errors import ApprovalError, ApprovalReason
from otel_bounded.storage import StoreFailure
from otel_bounded.telemetry import ApprovalCounts

__all__ = ["DEFAULT_MAX_PENDING_PER_REQUESTER", "MAX_DELEGATION_DEPTH", "ApprovalLedger"]

MAX_DELEGATION_DEPTH = 8
"""Default most delegations after the first executor: each hop dilutes who is accountable."""
DEFAULT_MAX_PENDING_PER_REQUESTER = 100
"""Default most pending requests of one requester: one caller cannot fill `max_live` alone."""

_COMPONENT_TYPE = "otel_bounded_approval_ledger"
_TOKEN_BYTES = 32  # 256 bits from the OS CSPRNG: 43 URL-safe characters
# Longer input cannot be one of our tokens; refusing it early keeps hashing cheap.
_MAX_TOKEN_LENGTH = 128
_REDACTED = "<redacted: an approval token>"
_APPROVER_HOP = "approved"
_EXECUTOR_HOP = "executor"

_TERMINAL_REASON = {
    ApprovalStatus.CONSUMED.value: ApprovalReason.ALREADY_CONSUMED,
    ApprovalStatus.EXPIRED.value: ApprovalReason.EXPIRED,
    ApprovalStatus.REVOKED.value: ApprovalReason.REVOKED,
    ApprovalStatus.DENIED.value: ApprovalReason.DENIED,
}
_DECISIONS = [(ApprovalOutcome.ALLOWED, "")] + [
    (ApprovalOutcome.REFUSED, reason) for reason in sorted(ApprovalReason.ALL)
]


class _Refused(Exception):
    """A refusal on its way out of a decision, with the record it concerned.

    `write` is what the refusal itself changes (a grant found past its expiry
    is ended as expired), written as any decision is.
    """

    def __init__(
        self, error: ApprovalError, grant: GrantRecord | None, write: GrantRecord | None = None
    ) -> None:
        super().__init__(error.reason_code)
        self.error = error
        self.grant = grant
        self.write = write


def _refuse(reason_code: str, message: str, grant: GrantRecord | None = None) -> NoReturn:
    approval_id = grant.approval_id if grant is not None else None
    raise _Refused(ApprovalError(reason_code, message, approval_id=approval_id), grant)


class _Presented:
    """What a caller presented, as spans and messages may show it."""

    __slots__ = ("actor", "scope")

    def __init__(
        self, actor: str | None, scope: tuple[str, str, str | None, str | None] | None
    ) -> None:
        self.actor = actor
        self.scope = scope


class ApprovalLedger:
    """Approvals for guarded actions: scoped, executor-bound, expiring, use-limited, delegable.

    Grants live in a store: this process's memory (the default), a SQLite
    file or a Redis shared by replicas (`store=`, a URL or an
    `ApprovalStore`). Live grants (pending or granted) are capped by
    `max_live` per store, and a requester's pending ones by
    `max_pending_per_requester`; past a cap a request is refused, never made
    room for by dropping a live grant. A grant past its expiry becomes
    ``expired`` when next touched or swept. Ended grants are kept
    `retention_seconds` (at most `max_terminal` of them), so a spent token is
    refused with its real reason, then forgotten: a forgotten token is
    refused as unknown, so forgetting never grants anything.

    Every operation is one span and one decision count; none logs. Invalid
    arguments (an empty actor, a non-positive ttl) raise `ValueError` before
    anything is decided; every decision refused raises `ApprovalError`,
    including every decision a store could not make
    (``approval_store_unavailable``). `verify` and `consume` never raise
    anything else: whatever they are given, they return an audit or refuse.
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
        max_pending_per_requester: int = DEFAULT_MAX_PENDING_PER_REQUESTER,
        store: ApprovalStore | str | None = None,
        audit: AuditSink = NO_AUDIT,
    ) -> None:
        self._bounds = StoreBounds(
            max_live=check_count("max_live", max_live),
            max_pending_per_requester=check_count(
                "max_pending_per_requester", max_pending_per_requester
            ),
            max_terminal=check_count("max_terminal", max_terminal),
            retention_seconds=check_seconds("retention_seconds", retention_seconds),
        )
        self._max_delegation_depth = check_count(
            "max_delegation_depth", max_delegation_depth, minimum=0
        )
        self._request_ttl = check_seconds("request_ttl_seconds", request_ttl_seconds)
        self._clock = validate_clock(clock)
        self._audit = audit
        # The span's facts are worked out only for a recording span or an audit log.
        self._audited = audit is not NO_AUDIT
        self._tracer = telemetry.get_tracer(tracer_provider)
        if store is None:
            store = "memory"
        self._owns_store = isinstance(store, str)
        self._store: ApprovalStore = open_approval_store(store) if isinstance(store, str) else store
        # Guards only the decision counts and the last counts read: never held across I/O.
        self._lock = threading.Lock()
        self._decisions: Counter[tuple[str, str]] = Counter(dict.fromkeys(_DECISIONS, 0))
        self._last_counts = (0, 0)
        self.component = telemetry.component_attributes(_COMPONENT_TYPE)
        reinit_after_fork(self._at_fork_reinit)
        telemetry.register_approval_instruments(meter_provider, self, self.component)

    @classmethod
    def from_env(cls, **overrides: Any) -> ApprovalLedger:
        """A ledger on the store ``OTEL_BOUNDED_APPROVAL_STORE`` names; arguments win.

        An invalid or unopenable store raises `ValueError` naming the
        variable: falling back to memory would silently lose approvals on
        restart and split them between replicas.
        """
        if "audit" not in overrides:
            overrides["audit"] = audit_from_env()
        if "store" not in overrides:
            url = config.read(config.APPROVAL_STORE)
            try:
                overrides["store"] = open_approval_store(url)
            except ValueError as exc:
                raise ValueError(f"{config.APPROVAL_STORE.name} is invalid: {exc}") from None
            try:
                ledger = cls(**overrides)
            except BaseException:
                overrides["store"].close()
                raise
            ledger._owns_store = True
            return ledger
        return cls(**overrides)

    @property
    def store(self) -> ApprovalStore:
        return self._store

    def close(self) -> None:
        """Close the store if this ledger opened it (from a URL or the environment)."""
        if self._owns_store:
            self._store.close()

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
        fields = requested_scope(scope)
        requested_by = check_name("requested_by", requested_by)
        executor = check_name("executor", executor)
        ttl = check_seconds("ttl_seconds", ttl_seconds)
        uses = check_count("max_uses", max_uses)
        issued: list[str] = []
        # The record's own copy: the caller's object can still be overwritten.
        held_scope = ApprovalScope._restored(*fields)

        def act(now: float) -> GrantRecord:
            while True:
                token, key = _new_token()
                record = GrantRecord(
                    key,
                    scope=held_scope,
                    requested_by=requested_by,
                    executor=executor,
                    approving_actor=None,
                    status=ApprovalStatus.PENDING.value,
                    uses=0,
                    max_uses=uses,
                    ttl_seconds=ttl,
                    expires_at=now + self._request_ttl,
                )
                refusal = self._store.insert(record, now, self._bounds)
                # A repeated token is astronomically unlikely, but must never merge two grants.
                if refusal != DUPLICATE_KEY:
                    break
            if refusal == ApprovalReason.CAPACITY_EXCEEDED:
                _refuse(
                    refusal,
                    f"{self._bounds.max_live} approvals are already pending or granted "
                    "(max_live); resolve or revoke some, or raise max_live",
                )
            if refusal == ApprovalReason.TOO_MANY_PENDING:
                _refuse(
                    refusal,
                    f"{requested_by} already has {self._bounds.max_pending_per_requester} "
                    "requests pending (max_pending_per_requester); wait for decisions "
                    "or revoke some",
                )
            issued.append(token)
            return record

        audit = self._run(
            "request",
            requested_by,
            act,
            presented_scope=scope,
            given=(requested_by, executor, *fields[:3]),
        )
        return ApprovalGrant(
            token=issued[0],
            approval_id=audit.approval_id,
            scope=audit.scope,
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

        def change(grant: GrantRecord, now: float) -> GrantRecord:
            if same_person(approver, grant.requested_by) or same_person(approver, grant.executor):
                _refuse(
                    ApprovalReason.SELF_APPROVAL,
                    f"{approver} requested or would execute approval {grant.approval_id}; "
                    "a different person must approve it (four eyes)",
                    grant,
                )
            return grant.replace(
                status=ApprovalStatus.GRANTED.value,
                approving_actor=approver,
                expires_at=now + grant.ttl_seconds,
                chain=(
                    DelegationHop(approver, _APPROVER_HOP),
                    DelegationHop(grant.executor, _EXECUTOR_HOP),
                ),
            )

        return self._run(
            "approve",
            approver,
            self._deciding(token, ApprovalStatus.PENDING, change),
            given=(approver,),
        )

    def deny(self, token: str, *, approver: str, reason: str) -> ApprovalAudit:
        """Refuse a pending request for good; the denial records `approver` and `reason`."""
        approver = check_name("approver", approver)
        reason = check_reason("reason", reason)

        def change(grant: GrantRecord, now: float) -> GrantRecord:
            return self._ended(grant, ApprovalStatus.DENIED, now, approver)

        return self._run(
            "deny",
            approver,
            self._deciding(token, ApprovalStatus.PENDING, change),
            reason=reason,
            given=(approver, reason),
        )

    def revoke(self, token: str, *, actor: str, reason: str = "") -> ApprovalAudit:
        """End a pending or granted approval for good; the revocation records `actor`."""
        actor = check_name("actor", actor)
        reason = check_reason("reason", reason)

        def change(grant: GrantRecord, now: float) -> GrantRecord:
            return self._ended(grant, ApprovalStatus.REVOKED, now, actor)

        return self._run(
            "revoke",
            actor,
            self._deciding(token, None, change),
            reason=reason,
            given=(actor, reason),
        )

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
        ttl = None if ttl_seconds is None else check_seconds("ttl_seconds", ttl_seconds)
        uses = None if max_uses is None else check_count("max_uses", max_uses)

        def change(grant: GrantRecord, now: float) -> GrantRecord:
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
            return grant.replace(
                chain=(*grant.chain, DelegationHop(to, reason, session_id)),
                executor=to,
                max_uses=grant.max_uses if uses is None else grant.uses + uses,
                expires_at=expires_at,
            )

        return self._run(
            "delegate",
            by,
            self._deciding(token, ApprovalStatus.GRANTED, change),
            reason=reason,
            given=(by, to, reason, session_id),
        )

    # -- use -------------------------------------------------------------

    def verify(self, token: str, scope: ApprovalScope, executing_actor: str) -> ApprovalAudit:
        """Whether `executing_actor` may act in `scope` now; changes nothing.

        Checks, in order: known token, status, expiry, remaining uses, exact
        scope, executor binding. Returns the audit, or raises `ApprovalError`.
        """

        def change(grant: GrantRecord, _now: float) -> GrantRecord:
            _check_use(grant, scope, executing_actor)
            return grant

        return self._run(
            "verify",
            executing_actor,
            self._deciding(token, ApprovalStatus.GRANTED, change),
            presented_scope=scope,
        )

    def consume(self, token: str, scope: ApprovalScope, executing_actor: str) -> ApprovalAudit:
        """Check as `verify` does and use the approval once, atomically.

        However many threads or processes race on one store, exactly
        `max_uses` calls succeed; the last one leaves the grant ``consumed``.
        """

        def change(grant: GrantRecord, now: float) -> GrantRecord:
            _check_use(grant, scope, executing_actor)
            uses = grant.uses + 1
            if uses >= grant.max_uses:
                return grant.replace(
                    uses=uses,
                    status=ApprovalStatus.CONSUMED.value,
                    closed_by=grant.executor,
                    forget_at=now + self._bounds.retention_seconds,
                )
            return grant.replace(uses=uses)

        return self._run(
            "consume",
            executing_actor,
            self._deciding(token, ApprovalStatus.GRANTED, change),
            presented_scope=scope,
        )

    def sweep(self) -> None:
        """End grants past their expiry and forget ended ones past retention, now.

        Decisions and metric collection sweep as they go; call this to bound
        a shared store that sees neither for a while. Raises `ApprovalError`
        (``approval_store_unavailable``) if the store cannot be reached.
        """
        try:
            self._store.sweep(self._clock(), self._bounds)
        except StoreFailure as failure:
            raise _unavailable(failure) from None

    # -- telemetry -------------------------------------------------------

    def telemetry_counts(self) -> ApprovalCounts:
        """Counts for the metric instruments, read at collection time.

        A store that cannot be reached keeps its last known grant counts.
        """
        try:
            counts = self._store.counts(self._clock(), self._bounds)
        except StoreFailure:
            counts = None
        with self._lock:
            if counts is not None:
                self._last_counts = counts
            live, terminal = self._last_counts
            decisions = dict(self._decisions)
        return ApprovalCounts(
            live=live,
            terminal=terminal,
            decisions=decisions,
            evictions=dict(self._store.evictions),
        )

    # -- internals -------------------------------------------------------

    def _deciding(
        self,
        token: object,
        need: ApprovalStatus | None,
        change: Callable[[GrantRecord, float], GrantRecord],
    ) -> Callable[[float], GrantRecord]:
        """The operation on the grant `token` names, decided inside one store transaction."""
        key = _token_key(token)

        def act(now: float) -> GrantRecord:
            if key is None:
                _no_approval()

            def decide(held: GrantRecord | None) -> tuple[GrantRecord | None, Any]:
                try:
                    grant = self._find_live(held, now, need)
                    changed = change(grant, now)
                except _Refused as refused:
                    return refused.write, refused
                return (changed if changed is not grant else None), changed

            outcome = self._store.update(key, now, self._bounds, decide)
            if isinstance(outcome, _Refused):
                raise outcome
            return outcome  # type: ignore[no-any-return]

        return act

    def _find_live(
        self, grant: GrantRecord | None, now: float, need: ApprovalStatus | None
    ) -> GrantRecord:
        """`grant` if it is live and in status `need` (any live one if None), or a refusal.

        Checks known token, then status, then expiry, as every operation does.
        """
        if grant is None:
            _no_approval()
        status = grant.status
        if not grant.live:
            _refuse(_TERMINAL_REASON[status], _ended_message(grant), grant)
        if need is not None and status != need.value:
            if status == ApprovalStatus.PENDING.value:
                _refuse(
                    ApprovalReason.PENDING,
                    f"approval {grant.approval_id} awaits an approver's decision",
                    grant,
                )
            _refuse(
                ApprovalReason.INVALID_TRANSITION,
                f"approval {grant.approval_id} is already {status}; "
                "only a pending request can be approved or denied",
                grant,
            )
        if now >= grant.expires_at:
            # The sweep may not have reached it yet: it is expired all the same.
            expired = self._ended(grant, ApprovalStatus.EXPIRED, grant.expires_at, None)
            refusal = _Refused(
                ApprovalError(
                    ApprovalReason.EXPIRED,
                    _ended_message(expired),
                    approval_id=grant.approval_id,
                ),
                expired,
                write=expired,
            )
            raise refusal
        return grant

    def _ended(
        self, grant: GrantRecord, status: ApprovalStatus, at: float, by: str | None
    ) -> GrantRecord:
        return grant.ended(status, at, by, self._bounds.retention_seconds)

    def _run(
        self,
        operation: str,
        actor: object,
        act: Callable[[float], GrantRecord],
        *,
        reason: str = "",
        presented_scope: object = None,
        given: tuple[str | None, ...] = (),
    ) -> ApprovalAudit:
        # The span starts and ends outside every lock: its processors may export
        # synchronously, and no exporter should ever run while a decision waits.
        span = self._tracer.start_span(telemetry.SPAN_APPROVAL_PREFIX + operation)
        try:
            now = self._clock()
            store_down = False
            try:
                # A token given as a name, a reason or a scope field (arguments out of
                # order, or a bearer header pasted whole) would be recorded in the
                # audits and spans of every later operation: refuse it.
                if self._holds_token_in(given):
                    raise ValueError(
                        f"an approval token was passed to {operation}() as a name, a reason "
                        "or a scope field; check the order of the arguments"
                    )
                outcome: GrantRecord | _Refused = act(now)
            except StoreFailure as failure:
                outcome = _Refused(_unavailable(failure), None)
                store_down = True
            except _Refused as refused:
                outcome = refused
            result = self._decided(operation, now, actor, outcome, reason)
            # What was presented is escaped and searched for tokens only for a span
            # that records it or an audit log: with neither, that costs nothing.
            if span.is_recording() or self._audited:
                attributes = self._span_attributes(actor, presented_scope, outcome, store_down)
                span.set_attributes(attributes)
                # The span's facts, never a token; `attributes` is not touched after this.
                self._audit.append(telemetry.AUDIT_APPROVAL_PREFIX + operation, attributes)
        except BaseException as unexpected:
            span.set_status(Status(StatusCode.ERROR, type(unexpected).__name__))
            span.end()
            raise
        if isinstance(result, ApprovalError):
            span.set_status(Status(StatusCode.ERROR, result.reason_code))
            span.end()
            raise result
        span.end()
        return result

    def _decided(
        self,
        operation: str,
        now: float,
        actor: object,
        outcome: GrantRecord | _Refused,
        reason: str,
    ) -> ApprovalAudit | ApprovalError:
        """Where every decision is recorded: its count, and its audit or its error.

        The one place a decision leaves the ledger, so that anything else that
        must see every decision (an audit log) is attached here. An allowed
        decision's actor is a checked name, or (for `verify` and `consume`)
        exactly the executor's, so the audit shows it as given.
        """
        if isinstance(outcome, _Refused):
            with self._lock:
                self._decisions[ApprovalOutcome.REFUSED, outcome.error.reason_code] += 1
            return outcome.error
        with self._lock:
            self._decisions[ApprovalOutcome.ALLOWED, ""] += 1
        return _audit(operation, plain_str(actor), outcome, now, reason)

    def _span_attributes(
        self, actor: object, scope: object, outcome: GrantRecord | _Refused, store_down: bool
    ) -> dict[str, AttributeValue]:
        if store_down:
            shown = _Presented(_shown_plainly(actor), None)
        else:
            shown = self._presented(actor, scope)
        if isinstance(outcome, _Refused):
            attributes = _attributes(shown, outcome.grant)
            attributes[telemetry.OUTCOME] = ApprovalOutcome.REFUSED
            attributes[telemetry.APPROVAL_REASON_CODE] = outcome.error.reason_code
        else:
            attributes = _attributes(shown, outcome)
            attributes[telemetry.OUTCOME] = ApprovalOutcome.ALLOWED
        attributes[telemetry.APPROVAL_STORE_KIND] = self._store.kind
        return attributes

    def _holds_token_in(self, texts: Iterable[str | None]) -> bool:
        """Whether any of `texts` contains a token this ledger's store holds."""
        keys = {
            _digest(window)
            for text in texts
            if text is not None
            for _, window in token_shaped_windows(text)
        }
        return bool(keys) and self._store.holds_any(keys)

    def _presented(self, actor: object, scope: object) -> _Presented:
        """`actor` and `scope` as spans show them: escaped, bounded, held tokens redacted."""
        fields = scope_fields(scope) if scope is not None else None
        return _Presented(
            self._shown(actor),
            None
            if fields is None
            else (
                self._shown(fields[0]) or "",
                self._shown(fields[1]) or "",
                self._shown(fields[2]),
                fields[3],
            ),
        )

    def _shown(self, value: object) -> str | None:
        text = plain_str(value)
        if text is None:
            return None
        # Only what can be shown is searched (a token straddling the cut included),
        # so a 5 MB actor costs what a short one does.
        head = text[: MAX_NAME_LENGTH + TOKEN_LENGTH]
        windows = {window for _, window in token_shaped_windows(head)}
        if windows:
            try:
                held = self._store.holds_any({_digest(window) for window in windows})
            except StoreFailure:
                held = True  # cannot tell: hide whatever could be a token
            if held:
                head = _redact_token_shaped(head)
        return presented(head, len(text))

    def _at_fork_reinit(self) -> None:
        # A lock held by another thread at fork() would stay held forever in the
        # child. The store re-creates its own state (a memory store starts empty).
        self._lock = threading.Lock()


def _new_token() -> tuple[str, str]:
    token = secrets.token_urlsafe(_TOKEN_BYTES)
    return token, _digest(token)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def _token_key(token: object) -> str | None:
    """The SHA-256 hex digest a grant is held under, or None for what cannot be a token."""
    # Copied to a plain str first, so that no method of a str subclass runs.
    text = plain_str(token)
    if text is None or not text.isascii() or len(text) > _MAX_TOKEN_LENGTH:
        return None
    return _digest(text)


def _redact_token_shaped(text: str) -> str:
    pieces: list[str] = []
    last = 0
    for index, window in token_shaped_windows(text):
        if index >= last:
            pieces.append(text[last:index])
            pieces.append(_REDACTED)
        last = max(last, index + len(window))
    pieces.append(text[last:])
    return "".join(pieces)


def _shown_plainly(actor: object) -> str | None:
    # The store is gone, so held tokens cannot be told apart: hide every candidate.
    text = plain_str(actor)
    if text is None:
        return None
    return presented(_redact_token_shaped(text[: MAX_NAME_LENGTH + TOKEN_LENGTH]), len(text))


def _no_approval() -> NoReturn:
    _refuse(
        ApprovalReason.NO_APPROVAL,
        "no approval is held for this token: it was never issued by this ledger's store, "
        "or it ended and its record passed its retention; request a new approval",
    )


def _unavailable(failure: StoreFailure) -> ApprovalError:
    return ApprovalError(
        ApprovalReason.STORE_UNAVAILABLE,
        f"{failure}; nothing was decided or written (failing closed): retry once the store is back",
    )


def _check_use(grant: GrantRecord, scope: object, executing_actor: object) -> None:
    _check_uses_left(grant)
    fields = scope_fields(scope)
    granted = grant.scope
    held = (granted.policy, granted.action, granted.resource, granted.arguments_digest)
    if fields != held:
        _refuse(
            ApprovalReason.SCOPE_MISMATCH,
            f"approval {grant.approval_id} does not cover the scope presented "
            f"({_scope_difference(fields, held)}); scopes match exactly",
            grant,
        )
    if plain_str(executing_actor) != grant.executor:
        _refuse(
            ApprovalReason.UNAUTHORIZED_DELEGATE,
            f"approval {grant.approval_id} is bound to another executor; only the "
            "executor it was granted or delegated to may use it",
            grant,
        )


def _scope_difference(
    fields: tuple[str, str, str | None, str | None] | None,
    held: tuple[str, str, str | None, str | None],
) -> str:
    # Names the fields that differ, never their values: a value may be a secret.
    if fields is None:
        return "not an ApprovalScope with string fields"
    names = ("policy", "action", "resource", "arguments")
    pairs = zip(names, fields, held, strict=True)
    differ = [name for name, mine, theirs in pairs if mine != theirs]
    return ", ".join(differ) + " differ"


def _check_uses_left(grant: GrantRecord) -> None:
    # The last use closes a grant, so this holds already; checked again because
    # an extra use is the one mistake an approval system must never make.
    if grant.uses >= grant.max_uses:
        _refuse(
            ApprovalReason.ALREADY_CONSUMED,
            f"approval {grant.approval_id} has no uses left",
            grant,
        )


def _ended_message(grant: GrantRecord) -> str:
    status = grant.status
    approval = f"approval {grant.approval_id}"
    if status == ApprovalStatus.CONSUMED.value:
        uses = f"{grant.uses} of {grant.max_uses}"
        return f"{approval} was used {uses} times, last by {grant.closed_by}"
    if status == ApprovalStatus.EXPIRED.value:
        return f"{approval} expired at {grant.expires_at:.3f}; request a new approval"
    if status == ApprovalStatus.REVOKED.value:
        return f"{approval} was revoked by {grant.closed_by}; request a new approval"
    return f"{approval} was denied by {grant.closed_by}"


def _audit(
    operation: str, actor: str | None, grant: GrantRecord, now: float, reason: str
) -> ApprovalAudit:
    chain = grant.chain
    return ApprovalAudit(
        operation=operation,
        actor=actor if actor is not None else "",
        approval_id=grant.approval_id,
        scope=grant.scope,
        requested_by=grant.requested_by,
        approving_actor=grant.approving_actor,
        executing_actor=grant.executor,
        status=ApprovalStatus(grant.status),
        uses=grant.uses,
        max_uses=grant.max_uses,
        expires_at=grant.expires_at,
        delegated_execution=len(chain) > 2,
        delegation_chain=chain,
        at=now,
        reason=reason,
    )


def _attributes(shown: _Presented, grant: GrantRecord | None) -> dict[str, AttributeValue]:
    """Span attributes: fingerprints, names, digests and counts only, never a token."""
    attributes: dict[str, AttributeValue] = {}
    if shown.actor is not None:
        attributes[telemetry.APPROVAL_ACTOR] = shown.actor
    scope = shown.scope
    if grant is not None:
        attributes[telemetry.APPROVAL_ID] = grant.approval_id
        attributes[telemetry.APPROVAL_REQUESTED_BY] = grant.requested_by
        attributes[telemetry.APPROVAL_EXECUTING_ACTOR] = grant.executor
        if grant.approving_actor is not None:
            attributes[telemetry.APPROVAL_APPROVING_ACTOR] = grant.approving_actor
        attributes[telemetry.APPROVAL_STATUS] = grant.status
        attributes[telemetry.APPROVAL_USES] = grant.uses
        attributes[telemetry.APPROVAL_MAX_USES] = grant.max_uses
        attributes[telemetry.APPROVAL_DELEGATED] = len(grant.chain) > 2
        attributes[telemetry.APPROVAL_CHAIN_LENGTH] = len(grant.chain)
        if scope is None:
            held = grant.scope
            scope = (held.policy, held.action, held.resource, held.arguments_digest)
    # verify and consume show the scope asked for: on a mismatch that is the news.
    if scope is not None:
        policy, action, resource, digest = scope
        attributes[telemetry.APPROVAL_POLICY] = policy
        attributes[telemetry.APPROVAL_ACTION] = action
        if resource is not None:
            attributes[telemetry.APPROVAL_RESOURCE] = resource
        if digest is not None:
            attributes[telemetry.APPROVAL_ARGUMENTS_DIGEST] = digest
    return attributes
