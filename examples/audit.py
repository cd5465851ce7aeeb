"""An agent's evicted traces, revocations and approvals in a verifiable audit log.

Run: ``python examples/audit.py [DIR]``. It writes a small log into DIR (by
default a new temporary directory) with a fresh signing key, then verifies it
offline with the public key alone, as an auditor would (``otel-bounded audit
verify DIR --key KEY``).
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from opentelemetry.sdk.trace import TracerProvider

from otel_bounded import ApprovalLedger, ApprovalScope, HMACTokenProvider, TraceStore
from otel_bounded.audit import AuditLog, read_records, verify


def main(argv: list[str]) -> None:
    key = Ed25519PrivateKey.generate()
    public_key = key.public_key()
    parent = Path(argv[0]) if argv else Path(tempfile.mkdtemp(prefix="otel-bounded-audit-"))
    directory = parent / "audit"

    log = AuditLog(directory, max_bytes=1 << 20, key=key)
    store = TraceStore(max_traces=3, audit=log)  # small, so that it evicts
    provider = TracerProvider()
    provider.add_span_processor(store)
    tracer = provider.get_tracer("example-agent")
    for step in range(5):
        with (
            tracer.start_as_current_span(f"agent.step {step}"),
            tracer.start_as_current_span("tool.call", attributes={"tool": "search"}),
        ):
            pass

    tokens = HMACTokenProvider(b"example secret: at least thirty-two bytes long", audit=log)
    token = tokens.issue("deploy", "agent-7", ttl_seconds=600)
    tokens.revoke(token)

    ledger = ApprovalLedger(audit=log)
    scope = ApprovalScope("deploy", "release", "service-a")
    grant = ledger.request(scope, requested_by="alice", executor="agent-7", ttl_seconds=600)
    ledger.approve(grant.token, approver="bob")
    ledger.consume(grant.token, scope, "agent-7")
    log.close()

    for record in read_records(directory):
        print(f"{record.seq:3d}  {record.kind:18s}  {_summary(record.payload)}")
    report = verify(directory, [public_key])
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    print(f"\nverify: {'OK' if report.ok else report.problem}; {report.records} records")
    print(f"otel-bounded audit verify {directory} --key {raw.hex()}")


def _summary(payload: dict[str, object]) -> str:
    if "spans" in payload:
        return f"trace {payload['trace_id']} ({payload['reason']}, {payload['span_count']} spans)"
    shown = {key: value for key, value in payload.items() if not key.startswith("otel.component")}
    return ", ".join(f"{key}={value}" for key, value in list(shown.items())[:4])


if __name__ == "__main__":
    main(sys.argv[1:])
