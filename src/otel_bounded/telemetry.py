"""Every metric, span, attribute and logger name otel-bounded emits, and its instruments.

Instruments are asynchronous (observable): each store keeps plain counts
under its own lock, and a callback reads them at collection time. The hot
paths (`on_end`, `verify`, `consume`) therefore pay nothing for metrics,
whether or not a meter provider is configured, and a provider set globally
after a store was built still receives its metrics (through the API's proxy).
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry import metrics, trace
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation
from opentelemetry.trace import TracerProvider

from otel_bounded import logs
from otel_bounded.version import __version__

# -- scope ---------------------------------------------------------------

INSTRUMENTATION_NAME = "otel_bounded"
"""The meter, tracer and logger name."""

logger = logging.getLogger(INSTRUMENTATION_NAME)
logs.install(logger)  # its WARNINGs reach stderr and OTel logs whatever the app did to logging

# -- attributes ------------------------------------------------------------

# The SDK's own processor metrics tell instances apart with these two keys.
COMPONENT_TYPE = "otel.component.type"
COMPONENT_NAME = "otel.component.name"

EVICTION_REASON = "otel_bounded.eviction.reason"
DROP_REASON = "otel_bounded.drop.reason"
OUTCOME = "otel_bounded.outcome"

TOKEN_ID = "otel_bounded.token.id"
TOKEN_KEY_ID = "otel_bounded.token.key_id"
TOKEN_EXPIRES_AT = "otel_bounded.token.expires_at"
PRINCIPAL_ID = "otel_bounded.principal.id"
CAPABILITY_ID = "otel_bounded.capability.id"
REVOKE_NEWLY = "otel_bounded.revoke.newly_revoked"
REVOKE_ALL_COUNT = "otel_bounded.revoke_all.count"
REVOKE_ALL_CUTOFF = "otel_bounded.revoke_all.cutoff"
SWEEP_REMOVED = "otel_bounded.sweep.removed"
SWEEP_REMAINING = "otel_bounded.sweep.remaining"
SWEEP_TRIGGER = "otel_bounded.sweep.trigger"
REVOCATION_STORE_KIND = "otel_bounded.revocation_store"

APPROVAL_ID = "otel_bounded.approval.id"
APPROVAL_POLICY = "otel_bounded.approval.policy"
APPROVAL_ACTION = "otel_bounded.approval.action"
APPROVAL_RESOURCE = "otel_bounded.approval.resource"
APPROVAL_ACTOR = "otel_bounded.approval.actor"
APPROVAL_REQUESTED_BY = "otel_bounded.approval.requested_by"
APPROVAL_APPROVING_ACTOR = "otel_bounded.approval.approving_actor"
APPROVAL_EXECUTING_ACTOR = "otel_bounded.approval.executing_actor"
APPROVAL_STATUS = "otel_bounded.approval.status"
APPROVAL_USES = "otel_bounded.approval.uses"
APPROVAL_MAX_USES = "otel_bounded.approval.max_uses"
APPROVAL_DELEGATED = "otel_bounded.approval.delegated_execution"
APPROVAL_CHAIN_LENGTH = "otel_bounded.approval.delegation_chain.length"
APPROVAL_REASON_CODE = "otel_bounded.approval.reason_code"
APPROVAL_ARGUMENTS_DIGEST = "otel_bounded.approval.arguments_digest"
APPROVAL_STORE_KIND = "otel_bounded.approval_store"

# On the first-eviction and first-drop log records, beside the eviction or drop reason.
CAP_NAME = "otel_bounded.cap.name"
"""The argument whose cap was reached: ``max_traces``, ``max_spans``, ``ttl_seconds``..."""
CAP_VALUE = "otel_bounded.cap.value"
CAP_VARIABLE = "otel_bounded.cap.variable"
"""The ``OTEL_BOUNDED_*`` variable that raises the cap."""

COMPOSITE_COUNT = "otel_bounded.composite.count"
COMPOSITE_DURATION_SUM_NS = "otel_bounded.composite.duration_sum_ns"
COMPOSITE_MIN_NS = "otel_bounded.composite.min_ns"
COMPOSITE_MAX_NS = "otel_bounded.composite.max_ns"
COMPOSITE_STRATEGY = "otel_bounded.composite.strategy"
COMPOSITE_NAMES = "otel_bounded.composite.names"
COMPOSITE_COUNTS = "otel_bounded.composite.counts"
COMPOSITE_DURATION_SUMS_NS = "otel_bounded.composite.duration_sums_ns"
COMPOSITE_MINS_NS = "otel_bounded.composite.mins_ns"
COMPOSITE_MAXES_NS = "otel_bounded.composite.maxes_ns"
COMPOSITE_VARIED_KEYS = "otel_bounded.composite.varied_keys"
COMPOSITE_VARIED_DISTINCT = "otel_bounded.composite.varied_distinct"
COMPOSITE_VARIED_DISTINCT_EXACT = "otel_bounded.composite.varied_distinct_exact"
COMPOSITE_VARIED_SAMPLES = "otel_bounded.composite.varied_samples"
COMPACTION_UNRESOLVED_REASON = "otel_bounded.compaction.unresolved.reason"

RETENTION_CLASS = "otel_bounded.retention.class"
TRUNCATED_ATTRIBUTES = "otel_bounded.truncated_attributes"
"""On a held span (or event): the keys of the attribute values `max_attribute_length` cut."""
EXPORT_REASON = "otel_bounded.export.reason"

# -- metrics -----------------------------------------------------------------

TRACE_STORE_TRACES = "otel_bounded.trace_store.traces"
TRACE_STORE_SPANS = "otel_bounded.trace_store.spans"
TRACE_STORE_CAPACITY = "otel_bounded.trace_store.capacity"
TRACE_STORE_EVICTIONS = "otel_bounded.trace_store.evictions"
TRACE_STORE_SPANS_DROPPED = "otel_bounded.trace_store.spans.dropped"
TRACE_STORE_COMPACTIONS = "otel_bounded.trace_store.compactions"
TRACE_STORE_SPANS_COMPACTED = "otel_bounded.trace_store.spans.compacted"
TRACE_STORE_COMPACTION_UNRESOLVED = "otel_bounded.trace_store.compaction.unresolved"
TRACE_STORE_BYTES = "otel_bounded.trace_store.bytes"
TRACE_STORE_CAPACITY_SPANS = "otel_bounded.trace_store.capacity.spans"
TRACE_STORE_CAPACITY_BYTES = "otel_bounded.trace_store.capacity.bytes"
TRACE_STORE_ATTRIBUTES_TRUNCATED = "otel_bounded.trace_store.attributes.truncated"
TRACE_STORE_EXPORTED = "otel_bounded.trace_store.exported"
TRACE_STORE_NOT_EXPORTED = "otel_bounded.trace_store.not_exported"

TOKEN_REVOCATIONS = "otel_bounded.token.revocations"
TOKEN_REVOCATIONS_SWEPT = "otel_bounded.token.revocations.swept"
TOKEN_VERIFICATIONS = "otel_bounded.token.verifications"

APPROVAL_DECISIONS = "otel_bounded.approval.decisions"
APPROVAL_GRANTS = "otel_bounded.approval.grants"
APPROVAL_EVICTIONS = "otel_bounded.approval.evictions"

AUDIT_RECORDS = "otel_bounded.audit.records"
AUDIT_DROPPED = "otel_bounded.audit.dropped"
AUDIT_BYTES = "otel_bounded.audit.bytes"
AUDIT_QUEUE_SIZE = "otel_bounded.audit.queue.size"
AUDIT_SEGMENTS_REMOVED = "otel_bounded.audit.segments.removed"
AUDIT_RECORDS_REMOVED = "otel_bounded.audit.records.removed"
AUDIT_TORN_TAILS = "otel_bounded.audit.torn_tails"
AUDIT_WRITE_ERRORS = "otel_bounded.audit.write_errors"
AUDIT_PAYLOADS_OMITTED = "otel_bounded.audit.payloads.omitted"

# -- spans -------------------------------------------------------------------

SPAN_TOKEN_REVOKE = "otel_bounded.token.revoke"
SPAN_TOKEN_REVOKE_ALL = "otel_bounded.token.revoke_all"
SPAN_TOKEN_SWEEP = "otel_bounded.token.sweep"

SPAN_APPROVAL_PREFIX = "otel_bounded.approval."
"""Followed by request | approve | deny | delegate | verify | consume | revoke."""

# -- audit record kinds --------------------------------------------------------

AUDIT_TRACE_EVICTED = "trace.evicted"
"""A whole trace evicted from a TraceStore: its spans in OTLP JSON and the eviction reason."""
AUDIT_TOKEN_REVOKE = "token.revoke"
AUDIT_TOKEN_REVOKE_ALL = "token.revoke_all"
AUDIT_TOKEN_SWEEP = "token.sweep"
AUDIT_APPROVAL_PREFIX = "approval."
"""Followed by the operation, as on the approval spans; the payload holds the span's facts."""

# -- helpers -----------------------------------------------------------------

_component_counter: Counter[str] = Counter()
_component_lock = threading.Lock()


def component_attributes(component_type: str) -> dict[str, str]:
    """``otel.component.type`` and a unique ``otel.component.name`` (``type/0``, ``type/1``...)."""
    with _component_lock:
        index = _component_counter[component_type]
        _component_counter[component_type] = index + 1
    return {COMPONENT_TYPE: component_type, COMPONENT_NAME: f"{component_type}/{index}"}


def get_meter(meter_provider: MeterProvider | None) -> metrics.Meter:
    """Our meter from `meter_provider`, or from the global one when None (as OTel libraries do)."""
    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    return provider.get_meter(INSTRUMENTATION_NAME, __version__)


def get_tracer(tracer_provider: TracerProvider | None) -> trace.Tracer:
    """Our tracer from `tracer_provider`, or from the global one when None."""
    provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
    return provider.get_tracer(INSTRUMENTATION_NAME, __version__)


Reading = Iterable[tuple[int | float, Mapping[str, Any]]]
"""What an owner reports to one instrument: (value, attributes) pairs."""

Owners = weakref.WeakKeyDictionary[Any, dict[str, str]]
"""The owners reporting through one group of instruments, with their component attributes."""

# Each meter provider (held weakly) has one group of instruments per kind of owner.
_groups: weakref.WeakKeyDictionary[object, dict[str, Owners]] = weakref.WeakKeyDictionary()
# Groups made for the global provider, possibly through the API's proxy before a
# provider was set: the proxy forwards them to the one set later, so owners that
# name that provider explicitly must join these groups, not make a second set.
_global_groups: dict[str, Owners] = {}
_groups_lock = threading.Lock()


def _join(
    meter_provider: MeterProvider | None,
    kind: str,
    owner: object,
    component: Mapping[str, str],
    create: Callable[[metrics.Meter, Owners], None],
) -> None:
    """Add `owner` to the instruments of its kind on `meter_provider`, creating them once.

    A meter keeps the first instrument of a name and ignores the callbacks of
    a second one, so every owner of a kind reports through one shared set of
    instruments, told apart by ``otel.component.name``. Owners and providers
    are held weakly: a collected store stops reporting instead of being kept
    alive by the meter, and a dropped provider is not kept alive by us.
    """
    with _groups_lock:
        current_global = metrics.get_meter_provider()
        provider = meter_provider if meter_provider is not None else current_global
        try:
            by_kind = _groups.setdefault(provider, {})
        except TypeError:  # a provider that cannot be weakly referenced: no sharing
            by_kind = {}
        owners = by_kind.get(kind)
        if owners is None and provider is current_global:
            owners = _global_groups.get(kind)
        if owners is None:
            owners = weakref.WeakKeyDictionary()
            create(get_meter(provider), owners)
            if provider is current_global:
                _global_groups[kind] = owners
        by_kind[kind] = owners
        owners[owner] = dict(component)


def _reinit_locks_after_fork() -> None:
    # A lock held by another thread at fork() would stay held in the child.
    global _groups_lock, _component_lock
    _groups_lock = threading.Lock()
    _component_lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reinit_locks_after_fork)


def _callback(
    owners: Owners, read: Callable[[Any, dict[str, str]], Reading]
) -> Callable[[CallbackOptions], Iterable[Observation]]:
    def callback(_options: CallbackOptions) -> Iterable[Observation]:
        return [
            Observation(value, dict(attributes))
            for owner, component in list(owners.items())
            for value, attributes in read(owner, component)
        ]

    return callback


def _count(field: str, source: str = "stats") -> Callable[[Any, dict[str, str]], Reading]:
    """Read one count from what the owner's `source` method returns."""

    def read(owner: Any, component: dict[str, str]) -> Reading:
        return [(getattr(getattr(owner, source)(), field), component)]

    return read


def _counts_by(
    field: str, key: str, source: str = "stats", every: Iterable[str] = ()
) -> Callable[[Any, dict[str, str]], Reading]:
    """Read a mapping of counts, one point per label, the label under attribute `key`.

    Every label in `every` is reported, from 0, before its first event: a
    series that first appears at 1 hides that event from `increase()`.
    """
    zeros = dict.fromkeys(every, 0)

    def read(owner: Any, component: dict[str, str]) -> Reading:
        counts: Mapping[str, int] = {**zeros, **getattr(getattr(owner, source)(), field)}
        return [(count, {**component, key: label}) for label, count in counts.items()]

    return read


# -- instruments -------------------------------------------------------------


class TraceStoreCounts(Protocol):
    """What the trace store instruments read at collection time."""

    @property
    def traces(self) -> int: ...
    @property
    def spans(self) -> int: ...
    @property
    def max_traces(self) -> int: ...
    @property
    def evictions_by_reason(self) -> Mapping[str, int]: ...
    @property
    def drops_by_reason(self) -> Mapping[str, int]: ...
    @property
    def compactions(self) -> int: ...
    @property
    def spans_compacted(self) -> int: ...
    @property
    def unresolved_by_reason(self) -> Mapping[str, int]: ...
    @property
    def bytes(self) -> int: ...
    @property
    def max_spans(self) -> int: ...
    @property
    def max_bytes(self) -> int: ...
    @property
    def evictions_by_class(self) -> Mapping[str, Mapping[str, int]]: ...
    @property
    def truncated_attributes(self) -> int: ...
    @property
    def exported_by_reason(self) -> Mapping[str, int]: ...
    @property
    def not_exported(self) -> int: ...


class HasTraceStoreCounts(Protocol):
    def stats(self) -> TraceStoreCounts: ...


def register_trace_store_instruments(
    meter_provider: MeterProvider | None, store: HasTraceStoreCounts, component: Mapping[str, str]
) -> None:
    """Report `store` through the trace store instruments, read from `store.stats()`."""
    _join(meter_provider, "trace_store", store, component, _create_trace_store_instruments)


def _read_evictions_by_class(store: Any, component: dict[str, str]) -> Reading:
    counts: Mapping[str, Mapping[str, int]] = store.stats().evictions_by_class
    return [
        (count, {**component, EVICTION_REASON: reason, RETENTION_CLASS: cls})
        for cls, by_reason in counts.items()
        for reason, count in by_reason.items()
    ]


def _create_trace_store_instruments(meter: metrics.Meter, owners: Owners) -> None:
    meter.create_observable_up_down_counter(
        TRACE_STORE_TRACES,
        callbacks=[_callback(owners, _count("traces"))],
        unit="{trace}",
        description="Traces held by the trace store.",
    )
    meter.create_observable_up_down_counter(
        TRACE_STORE_SPANS,
        callbacks=[_callback(owners, _count("spans"))],
        unit="{span}",
        description="Spans held by the trace store, composite spans counted once.",
    )
    meter.create_observable_up_down_counter(
        TRACE_STORE_CAPACITY,
        callbacks=[_callback(owners, _count("max_traces"))],
        unit="{trace}",
        description="Most traces the trace store holds before evicting the oldest.",
    )
    meter.create_observable_up_down_counter(
        TRACE_STORE_CAPACITY_SPANS,
        callbacks=[_callback(owners, _count("max_spans"))],
        unit="{span}",
        description="Most spans the trace store holds before evicting the oldest traces.",
    )
    meter.create_observable_up_down_counter(
        TRACE_STORE_CAPACITY_BYTES,
        callbacks=[_callback(owners, _count("max_bytes"))],
        unit="By",
        description="Most bytes (estimated) the trace store holds before evicting traces.",
    )
    meter.create_observable_up_down_counter(
        TRACE_STORE_BYTES,
        callbacks=[_callback(owners, _count("bytes"))],
        unit="By",
        description="Bytes held by the trace store, as estimated when each span is encoded.",
    )
    meter.create_observable_counter(
        TRACE_STORE_EVICTIONS,
        # Every reason and class from 0: the store reports each pair.
        callbacks=[_callback(owners, _read_evictions_by_class)],
        unit="{trace}",
        description=(
            "Whole traces evicted, by reason (max_traces, max_spans, max_bytes or ttl) and "
            "retention class (normal, error, slow or security)."
        ),
    )
    meter.create_observable_counter(
        TRACE_STORE_ATTRIBUTES_TRUNCATED,
        callbacks=[_callback(owners, _count("truncated_attributes"))],
        unit="{attribute}",
        description="Attribute values shortened to max_attribute_length before being held.",
    )
    meter.create_observable_counter(
        TRACE_STORE_EXPORTED,
        callbacks=[
            _callback(
                owners, _counts_by("exported_by_reason", EXPORT_REASON, every=ExportReason.ALL)
            )
        ],
        unit="{trace}",
        description="Traces handed to the tail export, by reason: error, slow, security or ratio.",
    )
    meter.create_observable_counter(
        TRACE_STORE_NOT_EXPORTED,
        callbacks=[_callback(owners, _count("not_exported"))],
        unit="{trace}",
        description="Traces the tail export decided not to export.",
    )
    meter.create_observable_counter(
        TRACE_STORE_SPANS_DROPPED,
        callbacks=[
            _callback(owners, _counts_by("drops_by_reason", DROP_REASON, every=DropReason.ALL))
        ],
        unit="{span}",
        description="Spans not stored, by reason: max_spans_per_trace, max_spans or error.",
    )
    meter.create_observable_counter(
        TRACE_STORE_COMPACTIONS,
        callbacks=[_callback(owners, _count("compactions"))],
        unit="{trace}",
        description="Compaction passes over a trace that merged at least one span.",
    )
    meter.create_observable_counter(
        TRACE_STORE_SPANS_COMPACTED,
        callbacks=[_callback(owners, _count("spans_compacted"))],
        unit="{span}",
        description="Spans merged away into composite spans.",
    )
    meter.create_observable_counter(
        TRACE_STORE_COMPACTION_UNRESOLVED,
        callbacks=[
            _callback(owners, _counts_by("unresolved_by_reason", COMPACTION_UNRESOLVED_REASON))
        ],
        unit="{span}",
        description="Merged-away span ids forgotten while their trace is held, by reason.",
    )


class TraceEvictionReason:
    """Values of ``otel_bounded.eviction.reason`` on the evictions metric."""

    MAX_TRACES = "max_traces"
    MAX_SPANS = "max_spans"
    TTL = "ttl"
    MAX_BYTES = "max_bytes"

    ALL = (MAX_TRACES, MAX_SPANS, TTL, MAX_BYTES)


class DropReason:
    """Values of ``otel_bounded.drop.reason`` on the dropped spans metric."""

    MAX_SPANS_PER_TRACE = "max_spans_per_trace"
    MAX_SPANS = "max_spans"
    ERROR = "error"
    MAX_BYTES = "max_bytes"

    ALL = (MAX_SPANS_PER_TRACE, MAX_SPANS, ERROR, MAX_BYTES)


class RetentionClass:
    """Values of ``otel_bounded.retention.class`` on the evictions metric."""

    NORMAL = "normal"
    ERROR = "error"
    SLOW = "slow"
    SECURITY = "security"

    ALL = (NORMAL, ERROR, SLOW, SECURITY)


class ExportReason:
    """Values of ``otel_bounded.export.reason`` on the exported traces metric."""

    ERROR = "error"
    SLOW = "slow"
    SECURITY = "security"
    RATIO = "ratio"

    ALL = (ERROR, SLOW, SECURITY, RATIO)


class UnresolvedReason:
    """Values of ``otel_bounded.compaction.unresolved.reason`` on the unresolved ids metric."""

    MAX_REMEMBERED_IDS = "max_remembered_ids"
    """The store's budget of remembered merged-away span ids was full."""


class ApprovalEvictionReason:
    """Values of ``otel_bounded.eviction.reason`` on the approval evictions metric.

    Only ended grants are ever evicted; a live grant that expires becomes an
    ended (``expired``) one, which is not an eviction.
    """

    RETENTION = "retention"
    """Its `retention_seconds` passed."""
    MAX_TERMINAL = "max_terminal"
    """`max_terminal` ended grants were held, and it was the oldest."""


class SweepTrigger:
    """Values of ``otel_bounded.sweep.trigger`` on the sweep span."""

    MANUAL = "manual"
    INTERVAL = "interval"


class VerificationOutcome:
    """Values of ``otel_bounded.outcome`` on the token verifications metric."""

    OK = "ok"
    REVOKED = "revoked"
    EXPIRED = "expired"
    INVALID = "invalid"
    SCOPE_MISMATCH = "scope_mismatch"
    UNAVAILABLE = "unavailable"

    ALL = (OK, REVOKED, EXPIRED, INVALID, SCOPE_MISMATCH, UNAVAILABLE)


@dataclass(frozen=True)
class TokenCounts:
    """What the token instruments read at collection time."""

    revocations: int
    swept: int
    verifications: Mapping[str, int]


class HasTokenCounts(Protocol):
    def telemetry_counts(self) -> TokenCounts: ...


def register_token_instruments(
    meter_provider: MeterProvider | None, provider: HasTokenCounts, component: Mapping[str, str]
) -> None:
    """Report `provider` through the token instruments, read from `telemetry_counts()`."""
    _join(meter_provider, "token_provider", provider, component, _create_token_instruments)


def _create_token_instruments(meter: metrics.Meter, owners: Owners) -> None:
    meter.create_observable_up_down_counter(
        TOKEN_REVOCATIONS,
        callbacks=[_callback(owners, _count("revocations", "telemetry_counts"))],
        unit="{revocation}",
        description="Revocation entries held (token ids and per-principal cut-offs).",
    )
    meter.create_observable_counter(
        TOKEN_REVOCATIONS_SWEPT,
        callbacks=[_callback(owners, _count("swept", "telemetry_counts"))],
        unit="{revocation}",
        description="Revocation entries removed by sweeps once their token expired.",
    )
    meter.create_observable_counter(
        TOKEN_VERIFICATIONS,
        callbacks=[
            _callback(
                owners,
                _counts_by(
                    "verifications", OUTCOME, "telemetry_counts", every=VerificationOutcome.ALL
                ),
            )
        ],
        unit="{verification}",
        description="Token verifications, by outcome.",
    )


@dataclass(frozen=True)
class ApprovalCounts:
    """What the approval instruments read at collection time."""

    live: int
    terminal: int
    decisions: Mapping[tuple[str, str], int]
    """Keyed by (outcome, reason code); the reason code is "" for an allowed decision.

    Every pair is present from the start, at 0, so each series exists before its first event.
    """
    evictions: Mapping[str, int]
    """Ended grants evicted, by reason: ``retention`` or ``max_terminal`` (both always present)."""


class HasApprovalCounts(Protocol):
    def telemetry_counts(self) -> ApprovalCounts: ...


def register_approval_instruments(
    meter_provider: MeterProvider | None, ledger: HasApprovalCounts, component: Mapping[str, str]
) -> None:
    """Report `ledger` through the approval instruments, read from `telemetry_counts()`."""
    _join(meter_provider, "approval_ledger", ledger, component, _create_approval_instruments)


def _read_decisions(ledger: Any, component: dict[str, str]) -> Reading:
    # The ledger reports every (outcome, reason code) pair, from 0.
    decisions: Mapping[tuple[str, str], int] = ledger.telemetry_counts().decisions
    return [
        (count, {**component, OUTCOME: outcome, APPROVAL_REASON_CODE: reason})
        for (outcome, reason), count in decisions.items()
    ]


def _read_grants(ledger: Any, component: dict[str, str]) -> Reading:
    counts = ledger.telemetry_counts()
    return [
        (counts.live, {**component, APPROVAL_STATUS: "live"}),
        (counts.terminal, {**component, APPROVAL_STATUS: "terminal"}),
    ]


def _create_approval_instruments(meter: metrics.Meter, owners: Owners) -> None:
    meter.create_observable_counter(
        APPROVAL_DECISIONS,
        callbacks=[_callback(owners, _read_decisions)],
        unit="{decision}",
        description="Approval operations decided, by outcome and reason code.",
    )
    meter.create_observable_up_down_counter(
        APPROVAL_GRANTS,
        callbacks=[_callback(owners, _read_grants)],
        unit="{grant}",
        description="Approval grants held: live (pending or granted) and terminal (retained).",
    )
    meter.create_observable_counter(
        APPROVAL_EVICTIONS,
        callbacks=[_callback(owners, _counts_by("evictions", EVICTION_REASON, "telemetry_counts"))],
        unit="{grant}",
        description="Ended approval grants evicted, by reason: retention or max_terminal.",
    )


class AuditDropReason:
    """Values of ``otel_bounded.drop.reason`` on the audit dropped metric."""

    QUEUE_FULL = "queue_full"
    """The writer could not keep up: written into the chain as a gap record."""
    WRITE_ERROR = "write_error"
    """The disk refused a write: written into the chain as a gap record once it accepts one."""
    INVALID_KIND = "invalid_kind"
    """A kind that is not a dotted lower-case name, or one the log writes itself: a gap record."""
    CLOSED = "closed"
    """Appended after `close()`: the log has ended, so no record can say so."""
    FORKED = "forked"
    """Appended in a forked child, which never writes its parent's log."""

    ALL = (QUEUE_FULL, WRITE_ERROR, INVALID_KIND, CLOSED, FORKED)


class AuditOmitReason:
    """Values of ``otel_bounded.audit.omit.reason``: why a record was kept without its payload."""

    TOO_LARGE = "too_large"
    UNENCODABLE = "unencodable"

    ALL = (TOO_LARGE, UNENCODABLE)


AUDIT_OMIT_REASON = "otel_bounded.audit.omit.reason"


@dataclass(frozen=True)
class AuditCounts:
    """What the audit instruments read at collection time."""

    records: int
    dropped: Mapping[str, int]
    bytes: int
    queued: int
    segments_removed: int
    records_removed: int
    torn_tails: int
    write_errors: int
    omitted: Mapping[str, int]


class HasAuditCounts(Protocol):
    def telemetry_counts(self) -> AuditCounts: ...


def register_audit_instruments(
    meter_provider: MeterProvider | None, log: HasAuditCounts, component: Mapping[str, str]
) -> None:
    """Report `log` through the audit instruments, read from `telemetry_counts()`."""
    _join(meter_provider, "audit_log", log, component, _create_audit_instruments)


def _create_audit_instruments(meter: metrics.Meter, owners: Owners) -> None:
    source = "telemetry_counts"
    meter.create_observable_counter(
        AUDIT_RECORDS,
        callbacks=[_callback(owners, _count("records", source))],
        unit="{record}",
        description="Records written to the audit log, its own checkpoints included.",
    )
    meter.create_observable_counter(
        AUDIT_DROPPED,
        callbacks=[_callback(owners, _counts_by("dropped", DROP_REASON, source))],
        unit="{record}",
        description="Appends that never became records, by reason; gaps are also in the chain.",
    )
    meter.create_observable_up_down_counter(
        AUDIT_BYTES,
        callbacks=[_callback(owners, _count("bytes", source))],
        unit="By",
        description="Bytes the audit log's segments hold on disk, never above max_bytes.",
    )
    meter.create_observable_up_down_counter(
        AUDIT_QUEUE_SIZE,
        callbacks=[_callback(owners, _count("queued", source))],
        unit="{record}",
        description="Appends waiting for the audit log's writer thread.",
    )
    meter.create_observable_counter(
        AUDIT_SEGMENTS_REMOVED,
        callbacks=[_callback(owners, _count("segments_removed", source))],
        unit="{segment}",
        description="Oldest segments removed under max_bytes, each after a retention record.",
    )
    meter.create_observable_counter(
        AUDIT_RECORDS_REMOVED,
        callbacks=[_callback(owners, _count("records_removed", source))],
        unit="{record}",
        description="Records in the segments removed under max_bytes.",
    )
    meter.create_observable_counter(
        AUDIT_TORN_TAILS,
        callbacks=[_callback(owners, _count("torn_tails", source))],
        unit="{tail}",
        description="Torn tails (a crash mid-write) found and sealed over when the log opened.",
    )
    meter.create_observable_counter(
        AUDIT_WRITE_ERRORS,
        callbacks=[_callback(owners, _count("write_errors", source))],
        unit="{error}",
        description="Writes the disk refused; the records lost are written as a gap record.",
    )
    meter.create_observable_counter(
        AUDIT_PAYLOADS_OMITTED,
        callbacks=[_callback(owners, _counts_by("omitted", AUDIT_OMIT_REASON, source))],
        unit="{record}",
        description="Records written without their payload (its size and hash kept), by reason.",
    )
