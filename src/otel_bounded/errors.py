"""Every error type otel-bounded raises, in one place.

Each error carries the data a caller needs to act on it, and a message that
says what to do. Token code raises only `TokenError` subclasses; approval code
raises only `ApprovalError`.
"""

from __future__ import annotations

__all__ = [
    "ApprovalError",
    "ApprovalReason",
    "AuditLogError",
    "RevocationStoreUnavailable",
    "TokenClockSkew",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenRevoked",
    "TokenScopeError",
    "TraceNotFound",
    "WebViewError",
]


class TraceNotFound(KeyError):
    """A trace id the store does not hold: never seen, evicted or expired."""

    def __init__(self, trace_id: int, *, evicted_traces: int, max_traces: int) -> None:
        self.trace_id = trace_id
        self.evicted_traces = evicted_traces
        self.max_traces = max_traces
        super().__init__(trace_id)

    def __str__(self) -> str:
        return (
            f"trace {self.trace_id:032x} is not held: it may have been evicted "
            f"({self.evicted_traces} traces evicted so far; max_traces={self.max_traces}; "
            "raise OTEL_BOUNDED_TRACE_MAX_TRACES, _MAX_SPANS or _TTL_SECONDS, whichever "
            "otel_bounded.trace_store.evictions names, to keep more) or never recorded"
        )


class TokenError(Exception):
    """Base of every error raised by token code; `token_id` is set when it is known."""

    def __init__(self, message: str, *, token_id: str | None = None) -> None:
        super().__init__(message)
        self.token_id = token_id


class TokenInvalid(TokenError):
    """Malformed, wrongly signed, signed with an unknown key, or an impossible lifetime."""


class TokenExpired(TokenError):
    """The token's lifetime is over; ask its issuer for a new one."""

    def __init__(self, message: str, *, token_id: str | None = None, expires_at: float) -> None:
        super().__init__(message, token_id=token_id)
        self.expires_at = expires_at


class TokenRevoked(TokenError):
    """The token, or every token of its principal, was revoked before it expired."""


class TokenScopeError(TokenError):
    """A valid token presented for another principal or capability than the one it grants."""


class RevocationStoreUnavailable(TokenError):
    """The revocation store could not be reached; verification fails closed."""


class TokenClockSkew(TokenError):
    """`issue` refused: the token would be stamped more than the skew ahead of the clock.

    A provider's time never goes back, so after its clock stepped back it runs
    ahead of the clock; stamping tokens that far ahead would let them escape
    every `revoke_all` made meanwhile. `ahead_seconds` says by how much; issue
    again once the clock has caught up (or restart the provider).
    """

    def __init__(self, message: str, *, ahead_seconds: float) -> None:
        super().__init__(message)
        self.ahead_seconds = ahead_seconds


class ApprovalReason:
    """The stable reason codes of `ApprovalError`; dashboards and alerts key on them."""

    NO_APPROVAL = "no_approval"
    PENDING = "approval_pending"
    DENIED = "approval_denied"
    EXPIRED = "approval_expired"
    REVOKED = "approval_revoked"
    ALREADY_CONSUMED = "approval_already_consumed"
    SCOPE_MISMATCH = "approval_scope_mismatch"
    UNAUTHORIZED_DELEGATE = "approval_unauthorized_delegate"
    SELF_APPROVAL = "approval_self_approval"
    INVALID_TRANSITION = "approval_invalid_transition"
    DELEGATION_NOT_ALLOWED = "approval_delegation_not_allowed"
    CAPACITY_EXCEEDED = "approval_capacity_exceeded"
    TOO_MANY_PENDING = "approval_too_many_pending"
    STORE_UNAVAILABLE = "approval_store_unavailable"

    ALL = frozenset(
        {
            NO_APPROVAL,
            PENDING,
            DENIED,
            EXPIRED,
            REVOKED,
            ALREADY_CONSUMED,
            SCOPE_MISMATCH,
            UNAUTHORIZED_DELEGATE,
            SELF_APPROVAL,
            INVALID_TRANSITION,
            DELEGATION_NOT_ALLOWED,
            CAPACITY_EXCEEDED,
            TOO_MANY_PENDING,
            STORE_UNAVAILABLE,
        }
    )


class ApprovalError(Exception):
    """A refused approval operation; `reason_code` is one of `ApprovalReason`."""

    def __init__(self, reason_code: str, message: str, *, approval_id: str | None = None) -> None:
        super().__init__(f"{reason_code}: {message}")
        self.reason_code = reason_code
        self.approval_id = approval_id


class WebViewError(Exception):
    """A request to a running process's trace view failed (unreachable, not held, not a view).

    The message is one line a person can act on; the command line prints it.
    """


class AuditLogError(Exception):
    """An audit log that cannot be opened as it is: held by another writer, or damaged inside.

    Never raised by `AuditLog.append`. A damaged log is never repaired
    silently: verify it (``otel-bounded audit verify``), keep it as evidence,
    and start a new log elsewhere.
    """
