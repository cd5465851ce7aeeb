"""Approvals: an agent asks a human to approve a deploy, then hands the run to a second agent.

Run ``python examples/approvals.py``. Every decision, allowed or refused, is a
span; they are collected in memory here and printed at the end, as a collector
would receive them. The approval token itself appears nowhere but in the
variables that carry it.
"""

from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded import telemetry
from otel_bounded.approvals import ApprovalAudit, ApprovalLedger, ApprovalScope
from otel_bounded.errors import ApprovalError

spans = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(spans))
# In memory here; ApprovalLedger.from_env() and OTEL_BOUNDED_APPROVAL_STORE=sqlite:///approvals.db
# (or redis://...) keep approvals across restarts and share them between replicas.
ledger = ApprovalLedger(tracer_provider=provider)


def show(audit: ApprovalAudit) -> None:
    chain = " -> ".join(f"{hop.actor} ({hop.reason})" for hop in audit.delegation_chain)
    print(
        f"{audit.operation:>8} by {audit.actor:<12} status={audit.status.value:<8} "
        f"uses={audit.uses}/{audit.max_uses} executor={audit.executing_actor}"
        + (f"\n{'':>12}chain: {chain}" if chain else "")
    )


def attempt(description: str, call: Callable[[], object]) -> None:
    try:
        call()
    except ApprovalError as refused:
        print(f" refused: {description}: {refused.reason_code}")


# 1. The deploy agent asks for approval to deploy version 1.4.2 of service-a, once, within 10
#    minutes of approval. The arguments bind it to that exact call (only their digest is kept).
deploy = ApprovalScope(
    policy="release", action="deploy", resource="service-a", arguments={"version": "1.4.2"}
)
grant = ledger.request(
    deploy, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=600
)
show(grant.audit)
token = grant.token  # a bearer credential: hand it to the approver and the executor only

# 2. Four eyes: the agent cannot approve its own request; a human does.
attempt("the agent approves itself", lambda: ledger.approve(token, approver="deploy-agent"))
show(ledger.approve(token, approver="alice@example.com"))

# 3. The deploy agent hands the run to the release agent, for the next 5 minutes only.
show(
    ledger.delegate(
        token,
        by="deploy-agent",
        to="release-agent",
        reason="release-agent owns the rollout window",
        session_id="session-42",
        ttl_seconds=300,
    )
)

# 4. Only the release agent may use it now, only for exactly this scope, only once.
attempt("the first agent uses it", lambda: ledger.consume(token, deploy, "deploy-agent"))
staging = ApprovalScope(
    policy="release", action="deploy", resource="service-b", arguments={"version": "1.4.2"}
)
attempt("another service", lambda: ledger.consume(token, staging, "release-agent"))
other_version = ApprovalScope(
    policy="release", action="deploy", resource="service-a", arguments={"version": "1.5.0"}
)
attempt("another version", lambda: ledger.consume(token, other_version, "release-agent"))
show(ledger.verify(token, deploy, "release-agent"))
show(ledger.consume(token, deploy, "release-agent"))
attempt("a second use", lambda: ledger.consume(token, deploy, "release-agent"))

# 5. What the collector received: one span per decision, the token only as a fingerprint.
print("\nspans:")
for span in spans.get_finished_spans():
    attributes = span.attributes or {}
    print(
        f"  {span.name:<31} id={attributes.get(telemetry.APPROVAL_ID)} "
        f"actor={attributes.get(telemetry.APPROVAL_ACTOR)} "
        f"outcome={attributes.get(telemetry.OUTCOME)} "
        f"reason={attributes.get(telemetry.APPROVAL_REASON_CODE, '-')}"
    )
assert not any(token in span.to_json() for span in spans.get_finished_spans())
provider.shutdown()
