"""Spans for revoke, revoke_all and sweep; metrics by outcome; no credential anywhere."""

from __future__ import annotations

import base64
import logging
from pathlib import Path
from typing import Any

import pytest

from otel_bounded.errors import TokenError, TokenInvalid
from otel_bounded.telemetry import (
    CAPABILITY_ID,
    COMPONENT_NAME,
    OUTCOME,
    PRINCIPAL_ID,
    REVOCATION_STORE_KIND,
    REVOKE_ALL_COUNT,
    REVOKE_ALL_CUTOFF,
    REVOKE_NEWLY,
    SPAN_TOKEN_REVOKE,
    SPAN_TOKEN_REVOKE_ALL,
    SPAN_TOKEN_SWEEP,
    SWEEP_REMAINING,
    SWEEP_REMOVED,
    SWEEP_TRIGGER,
    TOKEN_EXPIRES_AT,
    TOKEN_ID,
    TOKEN_KEY_ID,
    TOKEN_REVOCATIONS,
    TOKEN_REVOCATIONS_SWEPT,
    TOKEN_VERIFICATIONS,
    VerificationOutcome,
)
from otel_bounded.tokens import HMACTokenProvider, SQLiteRevocationStore
from tests.support import FakeClock
from tests.tokens.helpers import SECRET, Telemetry

ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}


def attributes(span: Any) -> dict[str, Any]:
    return dict(span.attributes or {})


def test_revoke_creates_one_span_with_the_token_and_its_expiry(
    provider: HMACTokenProvider, otel: Telemetry
) -> None:
    token = provider.issue("read", "alice")

    provider.revoke(token)
    provider.revoke(token.token_id)

    first, second = otel.spans(SPAN_TOKEN_REVOKE)
    assert first.instrumentation_scope is not None
    assert first.instrumentation_scope.name == "otel_bounded"
    assert attributes(first) == {
        **provider.component,
        REVOCATION_STORE_KIND: "memory",
        TOKEN_ID: token.token_id,
        TOKEN_KEY_ID: token.key_id,
        CAPABILITY_ID: "read",
        PRINCIPAL_ID: "alice",
        TOKEN_EXPIRES_AT: token.expires_at,
        REVOKE_NEWLY: True,
    }
    assert attributes(second)[REVOKE_NEWLY] is False
    assert attributes(second)[PRINCIPAL_ID] == "alice"  # found in the index of issued tokens
    assert CAPABILITY_ID not in attributes(second)


def test_revoke_all_creates_one_span_with_its_count_and_cutoff(
    provider: HMACTokenProvider, otel: Telemetry, clock: FakeClock
) -> None:
    provider.issue("read", "alice")
    provider.issue("read", "alice")

    provider.revoke_all("alice")

    (span,) = otel.spans(SPAN_TOKEN_REVOKE_ALL)
    assert attributes(span)[PRINCIPAL_ID] == "alice"
    assert attributes(span)[REVOKE_ALL_COUNT] == 2
    assert attributes(span)[REVOKE_ALL_CUTOFF] == clock.now + provider.max_clock_skew_seconds


def test_sweep_creates_one_span_with_removed_and_remaining(
    provider: HMACTokenProvider, otel: Telemetry, clock: FakeClock
) -> None:
    provider.revoke(provider.issue("read", "alice", ttl_seconds=10))
    provider.revoke(provider.issue("read", "alice", ttl_seconds=20))
    clock.advance(10 + provider.max_clock_skew_seconds)  # expired on every replica

    provider.sweep()

    (span,) = otel.spans(SPAN_TOKEN_SWEEP)
    assert attributes(span)[SWEEP_REMOVED] == 1
    assert attributes(span)[SWEEP_REMAINING] == 1
    assert attributes(span)[SWEEP_TRIGGER] == "manual"


def test_verify_creates_no_span(provider: HMACTokenProvider, otel: Telemetry) -> None:
    token = provider.issue("read", "alice")
    provider.revoke(provider.issue("read", "alice"))
    otel.exporter.clear()

    for _ in range(50):
        provider.verify(token, **ALICE)
        with pytest.raises(TokenError):
            provider.verify("garbage", **ALICE)

    assert otel.spans() == []


def test_metrics_count_revocations_sweeps_and_every_verification_outcome(
    clock: FakeClock, otel: Telemetry, tmp_path: Path
) -> None:
    store = SQLiteRevocationStore(tmp_path / "revocations.db")
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=store, **otel.providers())
    name = provider.component[COMPONENT_NAME]
    ok = provider.issue("read", "alice", ttl_seconds=600)
    revoked = provider.issue("read", "alice", ttl_seconds=30)
    provider.revoke(revoked)
    provider.revoke_all("bob")
    provider.verify(ok, **ALICE)
    provider.verify(ok, **ALICE)
    for attempt in [
        lambda: provider.verify(revoked, **ALICE),
        lambda: provider.verify("otb1.garbage", **ALICE),
        lambda: provider.verify(ok, expected_principal_id="bob", expected_capability_id="read"),
    ]:
        with pytest.raises(TokenError):
            attempt()
    assert [value for _, value in otel.points(TOKEN_REVOCATIONS, name)] == [2]
    clock.advance(30 + provider.max_clock_skew_seconds)  # expired on every replica
    provider.sweep()
    with pytest.raises(TokenError):
        provider.verify(revoked, **ALICE)
    store.close()
    with pytest.raises(TokenError):
        provider.verify(ok, **ALICE)

    outcomes = {point[OUTCOME]: value for point, value in otel.points(TOKEN_VERIFICATIONS, name)}
    assert outcomes == {
        VerificationOutcome.OK: 2,
        VerificationOutcome.REVOKED: 1,
        VerificationOutcome.INVALID: 1,
        VerificationOutcome.SCOPE_MISMATCH: 1,
        VerificationOutcome.EXPIRED: 1,
        VerificationOutcome.UNAVAILABLE: 1,
    }
    assert [value for _, value in otel.points(TOKEN_REVOCATIONS_SWEPT, name)] == [1]
    # The store is gone: the last count it gave stands.
    assert [value for _, value in otel.points(TOKEN_REVOCATIONS, name)] == [1]


def test_no_secret_signature_or_encoded_token_reaches_spans_metrics_or_logs(
    clock: FakeClock, otel: Telemetry, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    store = SQLiteRevocationStore(tmp_path / "revocations.db")
    provider = HMACTokenProvider(
        SECRET, clock=clock, sweep_interval_seconds=5, revocations=store, **otel.providers()
    )
    tokens = [provider.issue("read", "alice", constraints={"n": i}) for i in range(5)]
    forged = tokens[0].encode()[:-4] + "AAAA"
    provider.verify(tokens[0], **ALICE)
    provider.revoke(tokens[1])
    provider.revoke(tokens[2].encode())
    provider.revoke(tokens[3].token_id)
    with pytest.raises(TokenInvalid):
        provider.revoke(forged)  # recorded on its span as an exception
    provider.revoke_all("alice")
    clock.advance(5)
    for token in tokens:
        with pytest.raises(TokenError):
            provider.verify(token.encode(), **ALICE)
    with pytest.raises(TokenError):
        provider.verify(forged, **ALICE)
    provider.sweep()
    store.close()
    for attempt in [lambda: provider.revoke(tokens[4].encode()), provider.sweep]:
        with pytest.raises(TokenError):
            attempt()
    logging.getLogger("otel_bounded").warning("provider state: %r", provider)
    logging.getLogger("otel_bounded").warning("token: %r", tokens[4])

    emitted = _everything_emitted(otel, caplog)
    forbidden = {
        "secret": SECRET.decode(),
        "secret hex": SECRET.hex(),
        "secret base64": base64.urlsafe_b64encode(SECRET).decode().rstrip("="),
        "forged token": forged,
        **{f"signature {i}": token.signature for i, token in enumerate(tokens)},
        **{f"encoded token {i}": token.encode() for i, token in enumerate(tokens)},
    }
    # The scenario did emit spans, exception events and logs worth searching.
    assert len(otel.spans()) >= 7
    assert "exception.message" in emitted
    assert "provider state" in emitted
    for label, value in forbidden.items():
        assert value not in emitted, f"{label} leaked"


def _everything_emitted(otel: Telemetry, caplog: pytest.LogCaptureFixture) -> str:
    texts: list[str] = []
    for span in otel.spans():
        texts.append(span.name)
        texts.extend(f"{key}={value!r}" for key, value in (span.attributes or {}).items())
        texts.append(str(span.status.description))
        for event in span.events:
            texts.append(event.name)
            texts.extend(f"{key}={value!r}" for key, value in (event.attributes or {}).items())
    for metric in otel.metrics():
        for point in metric.data.data_points:
            texts.extend(f"{key}={value!r}" for key, value in (point.attributes or {}).items())
    texts.append(caplog.text)
    texts.extend(record.getMessage() for record in caplog.records)
    return "\n".join(texts)
