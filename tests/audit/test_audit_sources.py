"""What goes in: evicted traces whole, every revocation and sweep, every approval decision."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, Status, StatusCode

from otel_bounded import (
    ApprovalError,
    ApprovalLedger,
    ApprovalScope,
    HMACTokenProvider,
    TokenError,
    TraceStore,
    telemetry,
)
from otel_bounded.audit import AuditLog, verify
from otel_bounded.audit.otlp import request_from_resource_spans
from otel_bounded.core import NO_AUDIT, audit_from_env
from tests.audit.helpers import KEY, all_bytes, records_of, small_log
from tests.support import FakeClock

SECRET = "audit test secret: at least thirty-two bytes of key material"
PUBLIC = [KEY.public_key()]


@pytest.fixture
def log(tmp_path: Path) -> Iterator[AuditLog]:
    audit_log = small_log(tmp_path / "log", max_bytes=1 << 22, segment_bytes=1 << 20)
    yield audit_log
    audit_log.close()


def test_each_evicted_trace_is_written_whole_and_converts_back_to_its_otlp_spans(
    log: AuditLog,
) -> None:
    store = TraceStore(max_traces=2, audit=log)
    originals = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(store)
    provider.add_span_processor(SimpleSpanProcessor(originals))
    tracer = provider.get_tracer("audit-test")
    for index in range(5):
        with tracer.start_as_current_span(f"root-{index}", attributes={"i": index}) as root:
            root.add_event("started", {"hostile": "\u202e\ud800\t"})
            with tracer.start_as_current_span("child", links=[Link(root.get_span_context())]):
                pass
            root.set_status(Status(StatusCode.ERROR, "boom"))
    log.close()

    evicted = records_of(log.path, telemetry.AUDIT_TRACE_EVICTED)
    assert len(evicted) == 3 == store.stats().evicted_traces
    spans_by_trace: dict[str, list[object]] = {}
    for span in originals.get_finished_spans():
        spans_by_trace.setdefault(f"{span.context.trace_id:032x}", []).append(span)
    evicted_ids = [payload["trace_id"] for payload in evicted]
    assert evicted_ids == list(spans_by_trace)[:3]  # oldest first
    for payload in evicted:
        assert payload["reason"] == telemetry.TraceEvictionReason.MAX_TRACES
        spans = spans_by_trace[payload["trace_id"]]
        assert payload["span_count"] == len(spans) == 2
        assert request_from_resource_spans(payload["spans"]) == encode_spans(spans)
    assert verify(log.path, PUBLIC).ok


def test_a_store_without_a_log_keeps_its_eviction_callback_off_after_the_first(
    tmp_path: Path,
) -> None:
    store = TraceStore(max_traces=1)
    assert store._audit is NO_AUDIT
    provider = TracerProvider()
    provider.add_span_processor(store)
    for index in range(3):
        with provider.get_tracer("t").start_as_current_span(f"s{index}"):
            pass
    assert store._traces.on_evict is None


def test_every_revocation_revoke_all_and_sweep_is_recorded_without_a_secret(
    log: AuditLog,
) -> None:
    clock = FakeClock()
    provider = HMACTokenProvider(SECRET, clock=clock, audit=log)
    token = provider.issue("deploy", "alice", ttl_seconds=60)
    other = provider.issue("read", "alice", ttl_seconds=60)
    encoded = token.encode()
    assert provider.revoke(encoded) is True
    assert provider.revoke(token.token_id) is False
    assert provider.revoke_all("alice") == 1
    clock.advance(3600)
    removed = provider.sweep()
    log.close()

    revokes = records_of(log.path, telemetry.AUDIT_TOKEN_REVOKE)
    assert [(r["token_id"], r["newly_revoked"]) for r in revokes] == [
        (token.token_id, True),
        (token.token_id, False),
    ]
    assert revokes[0]["principal_id"] == "alice"
    assert revokes[0]["expires_at"] == token.expires_at
    [revoke_all] = records_of(log.path, telemetry.AUDIT_TOKEN_REVOKE_ALL)
    assert (revoke_all["principal_id"], revoke_all["newly_revoked"]) == ("alice", 1)
    sweeps = records_of(log.path, telemetry.AUDIT_TOKEN_SWEEP)
    assert sweeps[-1]["removed"] == removed
    assert sweeps[-1]["trigger"] == telemetry.SweepTrigger.MANUAL

    on_disk = all_bytes(log.path)
    for secret in (SECRET, encoded, token.signature, other.encode(), other.signature):
        assert secret.encode() not in on_disk
    assert verify(log.path, PUBLIC).ok


def test_every_approval_decision_is_recorded_with_its_span_facts_and_no_token(
    log: AuditLog,
) -> None:
    ledger = ApprovalLedger(clock=FakeClock(), audit=log)
    scope = ApprovalScope("deploy", "release", "service-a")
    grant = ledger.request(scope, requested_by="alice", executor="bot", ttl_seconds=60)
    ledger.approve(grant.token, approver="bob")
    ledger.consume(grant.token, scope, "bot")
    with pytest.raises(ApprovalError) as refused:
        ledger.consume(grant.token, scope, "bot")
    with pytest.raises(ApprovalError):
        ledger.consume("not-a-token", scope, "bot")
    log.close()

    prefix = telemetry.AUDIT_APPROVAL_PREFIX
    decisions = [
        (record_kind, payload)
        for record_kind in (prefix + "request", prefix + "approve", prefix + "consume")
        for payload in records_of(log.path, record_kind)
    ]
    assert [kind for kind, _ in decisions] == [
        prefix + "request",
        prefix + "approve",
        prefix + "consume",
        prefix + "consume",
        prefix + "consume",
    ]
    consumes = records_of(log.path, prefix + "consume")
    assert [c[telemetry.OUTCOME] for c in consumes] == ["allowed", "refused", "refused"]
    assert consumes[1][telemetry.APPROVAL_REASON_CODE] == refused.value.reason_code
    assert consumes[0][telemetry.APPROVAL_ID] == grant.approval_id
    assert consumes[0][telemetry.APPROVAL_RESOURCE] == "service-a"
    assert grant.token.encode() not in all_bytes(log.path)
    assert verify(log.path, PUBLIC).ok


def test_from_env_attaches_one_shared_log_to_stores_and_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_AUDIT_PATH", str(tmp_path / "env-log"))
    monkeypatch.setenv("OTEL_BOUNDED_AUDIT_KEY", bytes(range(32)).hex())
    monkeypatch.setenv("OTEL_BOUNDED_TOKEN_SECRET", SECRET)
    monkeypatch.delenv("OTEL_BOUNDED_APPROVAL_STORE", raising=False)
    store = TraceStore.from_env()
    provider = HMACTokenProvider.from_env()
    ledger = ApprovalLedger.from_env()
    shared = audit_from_env()
    assert isinstance(shared, AuditLog)
    assert store._audit is shared
    assert provider._audit is shared
    assert ledger._audit is shared
    provider.revoke_all("alice")
    ledger.close()
    shared.close()
    assert records_of(tmp_path / "env-log", telemetry.AUDIT_TOKEN_REVOKE_ALL)
    assert verify(tmp_path / "env-log", PUBLIC).ok
    provider.close()


def test_from_env_without_a_path_attaches_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_BOUNDED_AUDIT_PATH", raising=False)
    assert TraceStore.from_env()._audit is NO_AUDIT


def test_an_invalid_audit_key_variable_refuses_to_start_without_quoting_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_AUDIT_PATH", str(tmp_path / "bad-key-log"))
    monkeypatch.setenv("OTEL_BOUNDED_AUDIT_KEY", "sekrit-but-not-a-key")
    with pytest.raises(ValueError, match="OTEL_BOUNDED_AUDIT_KEY") as raised:
        TraceStore.from_env()
    assert "sekrit" not in str(raised.value)


def test_a_secret_passed_where_a_token_id_belongs_never_reaches_the_log(log: AuditLog) -> None:
    provider = HMACTokenProvider(SECRET, audit=log)
    token = provider.issue("deploy", "alice", ttl_seconds=60)
    ledger = ApprovalLedger(audit=log)
    grant = ledger.request(
        ApprovalScope("deploy", "release"), requested_by="alice", executor="bot", ttl_seconds=60
    )
    for misplaced in (SECRET, token.signature, f"{token.encode()}x"):
        with pytest.raises(TokenError):
            provider.revoke(misplaced)
    with pytest.raises(ValueError, match="approval token"):
        ledger.approve(grant.token, approver=grant.token)
    log.close()
    on_disk = all_bytes(log.path)
    for secret in (SECRET, token.signature, token.encode(), grant.token):
        assert secret.encode() not in on_disk
    assert records_of(log.path, telemetry.AUDIT_TOKEN_REVOKE) == []
