"""Approvals: scoped, executor-bound, expiring, use-limited and delegable grants for actions."""

from otel_bounded.approvals.ledger import MAX_DELEGATION_DEPTH, ApprovalLedger
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

__all__ = [
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
    "DelegationHop",
]
