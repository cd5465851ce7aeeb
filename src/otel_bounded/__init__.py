"""otel-bounded: bounded, correct and observable in-memory state for OpenTelemetry users.

Every public name is importable from here; each lives in the module named in
its docstring. Metric, span and attribute names are in `otel_bounded.telemetry`,
``OTEL_BOUNDED_*`` variables in `otel_bounded.config`, and every error type in
`otel_bounded.errors`.
"""

from otel_bounded.approvals import (
    ApprovalAudit,
    ApprovalEvictionReason,
    ApprovalGrant,
    ApprovalLedger,
    ApprovalOutcome,
    ApprovalScope,
    ApprovalStatus,
    DelegationHop,
)
from otel_bounded.audit import AuditLog
from otel_bounded.configurator import get_trace_store, get_web_view
from otel_bounded.core import BoundedStore, EvictionReason
from otel_bounded.errors import (
    ApprovalError,
    ApprovalReason,
    AuditLogError,
    RevocationStoreUnavailable,
    TokenClockSkew,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    TokenScopeError,
    TraceNotFound,
    WebViewError,
)
from otel_bounded.tokens import (
    CapabilityToken,
    HMACTokenProvider,
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    SQLiteRevocationStore,
    open_revocation_store,
)
from otel_bounded.traces import (
    DropReason,
    TraceEvictionReason,
    TraceStore,
    TraceStoreStats,
    TraceSummary,
)
from otel_bounded.traces.compaction import (
    CompactionPolicy,
    CompactionResult,
    compact_spans,
    operation_totals,
)
from otel_bounded.traces.store import UnresolvedReason
from otel_bounded.version import __version__

__all__ = [
    "ApprovalAudit",
    "ApprovalError",
    "ApprovalEvictionReason",
    "ApprovalGrant",
    "ApprovalLedger",
    "ApprovalOutcome",
    "ApprovalReason",
    "ApprovalScope",
    "ApprovalStatus",
    "AuditLog",
    "AuditLogError",
    "BoundedStore",
    "CapabilityToken",
    "CompactionPolicy",
    "CompactionResult",
    "DelegationHop",
    "DropReason",
    "EvictionReason",
    "HMACTokenProvider",
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "RevocationStore",
    "RevocationStoreUnavailable",
    "SQLiteRevocationStore",
    "TokenClockSkew",
    "TokenError",
    "TokenExpired",
    "TokenInvalid",
    "TokenRevoked",
    "TokenScopeError",
    "TraceEvictionReason",
    "TraceNotFound",
    "TraceStore",
    "TraceStoreStats",
    "TraceSummary",
    "UnresolvedReason",
    "WebViewError",
    "__version__",
    "compact_spans",
    "get_trace_store",
    "get_web_view",
    "open_revocation_store",
    "operation_totals",
]
