"""Approvals: scoped, executor-bound, expiring, use-limited and delegable grants for actions."""

from otel_bounded.approvals.arguments import arguments_digest, canonical_arguments
from otel_bounded.approvals.ledger import (
    DEFAULT_MAX_PENDING_PER_REQUESTER,
    MAX_DELEGATION_DEPTH,
    ApprovalLedger,
)
from otel_bounded.approvals.model import (
    MAX_NAME_LENGTH,
    MAX_REASON_LENGTH,
    ApprovalAudit,
    ApprovalEvictionReason,
    ApprovalGrant,
    ApprovalOutcome,
    ApprovalScope,
    ApprovalStatus,
    DelegationHop,
)
from otel_bounded.approvals.stores import (
    ApprovalStore,
    MemoryApprovalStore,
    RedisApprovalStore,
    SQLiteApprovalStore,
    StoreBounds,
    open_approval_store,
)

__all__ = [
    "DEFAULT_MAX_PENDING_PER_REQUESTER",
    "MAX_DELEGATION_DEPTH",
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "ApprovalAudit",
    "ApprovalEvictionReason",
    "ApprovalGrant",
    "ApprovalLedger",
    "ApprovalOutcome",
    "ApprovalScope",
    "ApprovalStatus",
    "ApprovalStore",
    "DelegationHop",
    "MemoryApprovalStore",
    "RedisApprovalStore",
    "SQLiteApprovalStore",
    "StoreBounds",
    "arguments_digest",
    "canonical_arguments",
    "open_approval_store",
]
