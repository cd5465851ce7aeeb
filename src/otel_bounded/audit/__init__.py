"""A verifiable audit trail: what left memory, and every security decision, on disk.

`AuditLog` is an `otel_bounded.core.AuditSink`: attach it to a `TraceStore`,
an `HMACTokenProvider` or an `ApprovalLedger` (``audit=log``). `verify`
checks a log offline from its files and public key alone.
"""

from otel_bounded.audit.format import CheckpointReason, Kind
from otel_bounded.audit.log import FSYNC_POLICIES, AuditLog, key_from_env, shared_from_env
from otel_bounded.audit.verifier import (
    AuditRecord,
    Failure,
    Problem,
    VerifyReport,
    read_records,
    verify,
)
from otel_bounded.core import set_audit_opener

set_audit_opener(shared_from_env)

__all__ = [
    "FSYNC_POLICIES",
    "AuditLog",
    "AuditRecord",
    "CheckpointReason",
    "Failure",
    "Kind",
    "Problem",
    "VerifyReport",
    "key_from_env",
    "read_records",
    "shared_from_env",
    "verify",
]
