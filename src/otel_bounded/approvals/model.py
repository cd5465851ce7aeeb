"""The approval value types: what a ledger hands out, and never anything it can be forged from."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "ApprovalAudit",
    "ApprovalGrant",
    "ApprovalOutcome",
    "ApprovalScope",
    "ApprovalStatus",
    "DelegationHop",
]

MAX_NAME_LENGTH = 256
"""Longest actor, session id, policy, action or resource: a ledger's memory is bounded by count."""
MAX_REASON_LENGTH = 1024
"""Longest free-text reason kept with a denial, revocation or delegation."""


class ApprovalStatus(str, Enum):
    """Where a grant is in its life; the last four are terminal and never left."""

    PENDING = "pending"
    GRANTED = "granted"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"

    @property
    def is_terminal(self) -> bool:
        return self not in (ApprovalStatus.PENDING, ApprovalStatus.GRANTED)

    def __str__(self) -> str:
        return self.value


class ApprovalOutcome:
    """Values of ``otel_bounded.outcome`` on approval spans and the decisions metric."""

    ALLOWED = "allowed"
    REFUSED = "refused"


@dataclass(frozen=True)
class ApprovalScope:
    """What an approval authorises; two scopes match only when every field is equal.

    There is no wildcard and no prefix matching: an approval to deploy
    ``service-a`` says nothing about ``service-b``.
    """

    policy: str
    action: str
    resource: str | None = None

    def __post_init__(self) -> None:
        # Exact strings, so that matching is plain string equality and nothing else.
        object.__setattr__(self, "policy", check_name("policy", self.policy))
        object.__setattr__(self, "action", check_name("action", self.action))
        if self.resource is not None:
            object.__setattr__(self, "resource", check_name("resource", self.resource))


@dataclass(frozen=True)
class DelegationHop:
    """One link of a grant's chain of custody: who, why, and in which session."""

    actor: str
    reason: str
    session_id: str | None = None


@dataclass(frozen=True)
class ApprovalAudit:
    """The record of one operation on one grant, naming the people who did it.

    `actor` performed this operation. `delegation_chain` runs from the
    approver, through the executor it was granted to, to each delegate; its
    last hop is the current executor (empty until the grant is approved).
    `at` is the ledger clock's reading when the operation was decided.
    """

    operation: str
    actor: str
    approval_id: str
    scope: ApprovalScope
    requested_by: str
    approving_actor: str | None
    executing_actor: str
    status: ApprovalStatus
    uses: int
    max_uses: int
    expires_at: float
    delegated_execution: bool
    delegation_chain: tuple[DelegationHop, ...]
    at: float
    reason: str = ""


@dataclass(frozen=True)
class ApprovalGrant:
    """A new, pending approval request and the bearer token that names it.

    The token is the only copy the ledger ever hands out (the ledger keeps
    just its SHA-256), so it is left out of `repr` and of every audit: pass it
    to the approver and the executor, and to nothing that logs.
    """

    token: str = field(repr=False)
    approval_id: str
    scope: ApprovalScope
    requested_by: str
    executor: str
    status: ApprovalStatus
    max_uses: int
    expires_at: float
    """When the request lapses unless approved; approval sets a new expiry."""
    audit: ApprovalAudit


def check_name(name: str, value: object) -> str:
    """`value` as an exact `str`; `ValueError` unless it is a non-empty, bounded string.

    A `str` subclass could redefine equality, and an actor or scope compared
    with a redefined equality could match anyone.
    """
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{name} must be a non-empty string, got {value!r}")
    if len(value) > MAX_NAME_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    return str.__str__(value)


def check_reason(name: str, value: object) -> None:
    """Raise `ValueError` unless `value` is a string of bounded length (it may be empty)."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {value!r}")
    if len(value) > MAX_REASON_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_REASON_LENGTH} characters, got {len(value)}")
