"""The approval value types: what a ledger hands out, and never anything it can be forged from."""

from __future__ import annotations

from dataclasses import InitVar, dataclass, field
from enum import Enum

from otel_bounded.approvals.arguments import arguments_digest
from otel_bounded.approvals.names import MAX_NAME_LENGTH, MAX_REASON_LENGTH, check_name
from otel_bounded.telemetry import ApprovalEvictionReason

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "ApprovalAudit",
    "ApprovalEvictionReason",
    "ApprovalGrant",
    "ApprovalOutcome",
    "ApprovalScope",
    "ApprovalStatus",
    "DelegationHop",
]


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
    ``service-a`` says nothing about ``service-b``. `arguments`, any
    JSON-like value, binds the approval to the exact call: it is reduced at
    once to `arguments_digest` (see `otel_bounded.approvals.arguments` for
    the canonical form) and not kept, since arguments may hold secrets. A
    scope without arguments (the default) matches only a scope without
    arguments.
    """

    policy: str
    action: str
    resource: str | None = None
    arguments: InitVar[object] = None
    arguments_digest: str | None = field(default=None, init=False)

    def __post_init__(self, arguments: object) -> None:
        # Exact strings, so that matching is plain string equality and nothing else.
        object.__setattr__(self, "policy", check_name("policy", self.policy))
        object.__setattr__(self, "action", check_name("action", self.action))
        if self.resource is not None:
            object.__setattr__(self, "resource", check_name("resource", self.resource))
        if arguments is not None:
            object.__setattr__(self, "arguments_digest", arguments_digest(arguments))

    @classmethod
    def _restored(
        cls, policy: str, action: str, resource: str | None, digest: str | None
    ) -> ApprovalScope:
        """A scope as a store recorded it: its fields were checked when it was requested."""
        scope = object.__new__(cls)
        object.__setattr__(scope, "policy", policy)
        object.__setattr__(scope, "action", action)
        object.__setattr__(scope, "resource", resource)
        object.__setattr__(scope, "arguments_digest", digest)
        return scope


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
