"""Revocations are kept exactly until the tokens they block expire, then swept."""

from __future__ import annotations

import gc
import threading
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from opentelemetry.context import Context
from opentelemetry.sdk.trace import Span, SpanProcessor

from otel_bounded.errors import TokenClockSkew, TokenExpired, TokenInvalid, TokenRevoked
from otel_bounded.telemetry import SPAN_TOKEN_SWEEP, SWEEP_REMOVED, SWEEP_TRIGGER
from otel_bounded.tokens import (
    CapabilityToken,
    HMACTokenProvider,
    MemoryRevocationStore,
    SQLiteRevocationStore,
)
from tests.support import FakeClock
from tests.tokens.helpers import SECRET, Telemetry

ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}
SKEW = 60.0  # the default max_clock_skew_seconds


def assert_revoked(provider: HMACTokenProvider, token: object, principal: str = "alice") -> None:
    with pytest.raises(TokenRevoked):
        provider.verify(
            token,  # type: ignore[arg-type]
            expected_principal_id=principal,
            expected_capability_id="read",
        )


@pytest.mark.parametrize("form", ["token", "encoded", "token_id"])
def test_revoke_takes_a_token_its_text_or_its_id(provider: HMACTokenProvider, form: str) -> None:
    token = provider.issue("read", "alice")
    other = provider.issue("read", "alice")
    handle = {"token": token, "encoded": token.encode(), "token_id": token.token_id}[form]

    assert provider.revoke(handle) is True
    assert provider.revoke(handle) is False
    assert_revoked(provider, token)
    assert_revoked(provider, token.encode())
    provider.verify(other, **ALICE)


def test_revoked_unexpired_token_fails_after_sweep(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    token = provider.issue("read", "alice", ttl_seconds=600)
    provider.revoke(token)

    for _ in range(20):
        clock.advance(29.99)  # 599.8 s in all: every sweep happens before expiry
        provider.sweep()
        assert_revoked(provider, token)
    assert provider.revocation_count == 1


def test_revocation_entry_is_kept_until_its_token_expired_on_every_replica_within_the_skew(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    token = provider.issue("read", "alice", ttl_seconds=600)
    provider.revoke(token)

    clock.now = token.expires_at - 1e-6
    assert provider.sweep() == 0
    assert_revoked(provider, token)
    clock.now = token.expires_at + SKEW - 1e-6  # a replica SKEW behind still sees it live
    assert provider.sweep() == 0
    assert provider.revocation_count == 1
    clock.now = token.expires_at + SKEW
    assert provider.sweep() == 1
    assert provider.revocation_count == 0


def test_revoking_a_known_id_keeps_it_only_until_that_token_expires(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    token = provider.issue("read", "alice", ttl_seconds=60)

    provider.revoke(token.token_id)

    clock.now = token.expires_at + SKEW - 1e-6
    assert provider.sweep() == 0
    clock.now = token.expires_at + SKEW
    assert provider.sweep() == 1


def test_revoking_an_unknown_id_keeps_it_for_max_ttl_plus_twice_the_clock_skew(
    clock: FakeClock, tmp_path: Path
) -> None:
    """Another replica issued it, its clock up to max_clock_skew_seconds ahead of this one:
    the token can expire no later than now + max_ttl_seconds + max_clock_skew_seconds,
    and must stay refused on replicas up to max_clock_skew_seconds behind."""
    database = tmp_path / "revocations.db"
    ahead = FakeClock(clock.now + 60)  # by the default max_clock_skew_seconds
    issuer = HMACTokenProvider(SECRET, clock=ahead, revocations=SQLiteRevocationStore(database))
    revoker = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    token = issuer.issue("read", "alice", ttl_seconds=86_400)

    assert revoker.revoke(token.token_id) is True

    clock.now = token.expires_at - 1e-3  # still live on the revoker's clock
    assert revoker.sweep() == 0
    with pytest.raises(TokenRevoked):
        revoker.verify(token, **ALICE)
    clock.now = token.expires_at + SKEW - 1e-3
    assert revoker.sweep() == 0
    clock.now = token.expires_at + SKEW
    assert revoker.sweep() == 1


def test_revoking_a_token_expired_beyond_the_skew_keeps_it_only_until_the_next_sweep(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    """This clock may be the wrong one: the entry is written, and a sweep drops it."""
    token = provider.issue("read", "alice", ttl_seconds=60)
    clock.now = token.expires_at + SKEW

    assert provider.revoke(token) is False
    assert provider.revoke(token.encode()) is False
    assert provider.sweep() == 1
    assert provider.revocation_count == 0


def test_revoking_a_token_just_expired_here_keeps_it_for_replicas_behind(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    token = provider.issue("read", "alice", ttl_seconds=60)
    clock.now = token.expires_at

    assert provider.revoke(token) is False  # expired by this clock: not newly revoked
    assert provider.revocation_count == 1  # but a replica up to SKEW behind may accept it


@pytest.mark.parametrize("handle", ["otb1.not.a.token", "short", "has spaces in it ok?", 7, None])
def test_revoke_refuses_what_is_not_a_token(provider: HMACTokenProvider, handle: object) -> None:
    with pytest.raises(TokenInvalid):
        provider.revoke(handle)  # type: ignore[arg-type]
    assert provider.revocation_count == 0


def test_revoking_a_forged_token_text_is_refused(provider: HMACTokenProvider) -> None:
    """A forged text could otherwise plant a short expiry for a real token's id."""
    text = provider.issue("read", "alice").encode()
    forged = text[:-2] + ("AA" if not text.endswith("AA") else "BB")

    with pytest.raises(TokenInvalid):
        provider.revoke(forged)


def test_revoke_all_counts_live_tokens_issued_here_and_blocks_them(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    live = [provider.issue("read", "alice", ttl_seconds=600) for _ in range(3)]
    expired = provider.issue("read", "alice", ttl_seconds=1)
    already = provider.issue("read", "alice", ttl_seconds=600)
    bob = provider.issue("read", "bob")
    provider.revoke(already)
    clock.advance(5)

    assert provider.revoke_all("alice") == 3

    for token in [*live, already]:
        assert_revoked(provider, token)
    provider.verify(bob, expected_principal_id="bob", expected_capability_id="read")
    assert provider.revoke_all("alice") == 0
    assert provider.revoke(live[0]) is False
    # Two ids and the cut-off: an id is recorded even under a cut-off, in case that
    # cut-off came from a replica misconfigured with a shorter max_ttl.
    assert provider.revocation_count == 3
    assert provider.revoke_all("alice") == 0
    del expired


def test_revoke_all_blocks_tokens_other_replicas_issued_before_it(
    clock: FakeClock, tmp_path: Path
) -> None:
    database = tmp_path / "revocations.db"
    replica = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    admin = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    token = replica.issue("read", "alice")
    clock.advance(1)

    assert admin.revoke_all("alice") == 0  # admin issued none of them

    assert_revoked(replica, token)
    assert_revoked(admin, token)


def test_tokens_issued_after_revoke_all_are_stamped_after_its_cutoff(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    before = provider.issue("read", "alice")
    bob = provider.issue("read", "bob")
    provider.revoke_all("alice")
    # The cut-off reaches the skew ahead; a stamp after it at this very reading
    # would be further ahead of the clock than any replica accepts.
    with pytest.raises(TokenClockSkew):
        provider.issue("read", "alice")
    provider.issue("read", "bob")  # other principals are not held up
    clock.advance(1e-6)

    after = provider.issue("read", "alice")

    assert after.issued_at > before.issued_at + SKEW
    assert_revoked(provider, before)
    provider.verify(after, **ALICE)
    provider.verify(bob, expected_principal_id="bob", expected_capability_id="read")


def test_cutoff_compares_issued_at_at_full_precision(clock: FakeClock, tmp_path: Path) -> None:
    database = tmp_path / "revocations.db"
    issuer = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    admin = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    clock.now = 1_700_000_000.000001
    admin.revoke_all("alice")  # cut-off: now + SKEW, for replicas up to SKEW ahead
    clock.now = 1_700_000_000.000001 + SKEW
    at_cutoff = issuer.issue("read", "alice")
    clock.now = 1_700_000_000.000002 + SKEW
    just_after = issuer.issue("read", "alice")

    assert_revoked(issuer, at_cutoff)
    issuer.verify(just_after, **ALICE)


def test_revoke_all_still_blocks_a_token_when_the_clock_steps_back(
    provider: HMACTokenProvider, clock: FakeClock
) -> None:
    token = provider.issue("read", "alice")
    clock.advance(-30)

    assert provider.revoke_all("alice") == 1

    assert_revoked(provider, token)


def test_cutoff_is_kept_for_max_ttl_then_swept(clock: FakeClock) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, max_ttl_seconds=600)
    token = provider.issue("read", "alice", ttl_seconds=600)
    provider.revoke_all("alice")

    clock.now = token.expires_at - 1e-3
    provider.sweep()
    assert_revoked(provider, token)
    # Blocks tokens stamped up to SKEW ahead, each kept until SKEW after it expires.
    clock.now = token.issued_at + SKEW + 600 + SKEW - 1e-3
    assert provider.sweep() == 0
    assert provider.revocation_count == 1
    clock.now = token.issued_at + SKEW + 600 + SKEW
    assert provider.sweep() == 1
    assert provider.revocation_count == 0


def test_revocation_count_holds_ids_and_cutoffs(provider: HMACTokenProvider) -> None:
    for _ in range(3):
        provider.revoke(provider.issue("read", "alice"))
    provider.revoke_all("bob")
    provider.revoke_all("carol")

    assert provider.revocation_count == 5


def test_expired_entries_are_eventually_removed_without_manual_sweeps(clock: FakeClock) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, sweep_interval_seconds=30)
    for _ in range(100):
        provider.revoke(provider.issue("read", "alice", ttl_seconds=10))
    provider.revoke_all("alice")
    assert provider.revocation_count == 101

    clock.advance(SKEW + 86_400 + SKEW + 30)  # the cut-off's tokens expired everywhere
    provider.issue("read", "bob")  # any call runs the sweep once it is due

    assert provider.revocation_count == 0


def test_automatic_sweep_runs_on_the_first_call_once_the_interval_has_passed(
    clock: FakeClock, otel: Telemetry
) -> None:
    provider = HMACTokenProvider(
        SECRET,
        clock=clock,
        sweep_interval_seconds=60,
        max_clock_skew_seconds=10,
        **otel.providers(),
    )
    token = provider.issue("read", "alice", ttl_seconds=30)  # kept until 30 + 10 s
    provider.revoke(token)
    clock.advance(59.9)
    provider.verify(provider.issue("read", "alice"), **ALICE)
    assert otel.spans(SPAN_TOKEN_SWEEP) == []

    clock.advance(0.1)
    provider.verify(provider.issue("read", "alice"), **ALICE)
    provider.verify(provider.issue("read", "alice"), **ALICE)

    sweeps = otel.spans(SPAN_TOKEN_SWEEP)
    assert len(sweeps) == 1
    assert sweeps[0].attributes is not None
    assert sweeps[0].attributes[SWEEP_TRIGGER] == "interval"
    assert sweeps[0].attributes[SWEEP_REMOVED] == 1
    clock.advance(60)
    provider.revoke(provider.issue("read", "alice"))
    assert len(otel.spans(SPAN_TOKEN_SWEEP)) == 2


@pytest.mark.parametrize("trigger", ["verify", "revoke", "revoke_all", "issue"])
def test_every_entry_point_runs_a_due_sweep(
    clock: FakeClock, otel: Telemetry, trigger: str
) -> None:
    provider = HMACTokenProvider(
        SECRET,
        clock=clock,
        sweep_interval_seconds=1,
        max_clock_skew_seconds=0,  # entries kept exactly until their tokens expire
        **otel.providers(),
    )
    token = provider.issue("read", "alice", ttl_seconds=5)
    provider.revoke(provider.issue("read", "alice", ttl_seconds=5))
    clock.advance(5)

    if trigger == "verify":
        with pytest.raises(Exception):  # noqa: PT011 - the token expired; only the sweep matters
            provider.verify(token, **ALICE)
    elif trigger == "revoke":
        provider.revoke(token)
    elif trigger == "revoke_all":
        provider.revoke_all("bob")
    else:
        provider.issue("read", "bob")

    assert [s.attributes[SWEEP_REMOVED] for s in otel.spans(SPAN_TOKEN_SWEEP) if s.attributes] == [
        1
    ]


def test_sweeps_resume_once_a_clock_stepped_far_back_catches_up(clock: FakeClock) -> None:
    """After a step back the provider's now holds at its highest reading, so nothing it
    revoked comes back to life, and automatic sweeps carry on once the clock passes it."""
    provider = HMACTokenProvider(SECRET, clock=clock, sweep_interval_seconds=60)
    token = provider.issue("read", "alice", ttl_seconds=10)
    provider.revoke(token)
    clock.advance(-3600)
    clock.advance(60)

    assert_revoked(provider, token)  # any call would run a due sweep: none is due

    assert provider.revocation_count == 1
    with pytest.raises(TokenClockSkew):  # it would stamp tokens an hour ahead of its clock
        provider.issue("read", "bob")
    clock.advance(3600 + SKEW)  # 60 s past the highest reading, and the token's skew
    with pytest.raises(TokenExpired):
        provider.verify(token, **ALICE)
    assert provider.revocation_count == 0
    provider.issue("read", "bob")


def test_sweep_touches_only_the_entries_it_removes() -> None:
    """Its cost follows what it removes: live entries are never hashed or compared."""

    class CountingId(str):
        touches = 0

        def __hash__(self) -> int:
            CountingId.touches += 1
            return str.__hash__(self)

        def __eq__(self, other: object) -> bool:
            CountingId.touches += 1
            return str.__eq__(self, other)

    store = MemoryRevocationStore()
    for index in range(2000):
        store.revoke_token(f"expiring-{index:06d}", 100.0 + index, reading=0.0)
    for index in range(5000):
        store.revoke_token(CountingId(f"live-{index:06d}"), 1e9, reading=0.0)
    CountingId.touches = 0

    removed = store.sweep(now=100.0 + 1999)

    assert removed == 2000
    assert store.count() == 5000
    assert CountingId.touches == 0


def test_principal_index_never_outlives_its_tokens(clock: FakeClock) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock)
    for index in range(500):
        provider.issue("read", f"principal-{index}", ttl_seconds=60)
    clock.advance(60)

    provider.sweep()

    assert provider._issued.principal_count == 0
    assert len(provider._issued) == 0


def test_memory_stays_bounded_under_grant_and_revoke_over_many_principals(
    clock: FakeClock,
) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, max_ttl_seconds=30, sweep_interval_seconds=5)

    def one_second(round_index: int) -> None:
        for index in range(20):
            principal = f"user-{round_index}-{index}"  # never seen again: many principals
            token = provider.issue("read", principal, ttl_seconds=15)
            if index % 2:
                provider.revoke(token)
            elif index % 5 == 0:
                provider.revoke_all(principal)
            else:
                provider.verify(
                    token.encode(), expected_principal_id=principal, expected_capability_id="read"
                )
        provider.revoke(f"unknown{round_index:014d}A")  # shaped like an id issue makes
        clock.advance(1)

    tracemalloc.start()
    try:
        # The longest retention, a cut-off's or an unknown id's (max_ttl + twice the default
        # max_clock_skew_seconds + a sweep interval, 155 s), has passed by then: the state
        # is as large as it gets.
        for round_index in range(160):
            one_second(round_index)
        gc.collect()
        steady, _ = tracemalloc.get_traced_memory()
        for round_index in range(160, 400):
            one_second(round_index)
        gc.collect()
        later, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    # Per second: 10 ids kept 15 + 60 s (their ttl, then the default max_clock_skew_seconds),
    # 2 cut-offs and 1 unknown id kept 30 + 2 * 60 s (max_ttl, and the skew before and
    # after), each possibly one sweep interval (5 s) longer.
    assert provider.revocation_count <= 10 * (15 + 60 + 5) + 3 * (30 + 120 + 5)
    # Unbounded, 240 more rounds would add ~7000 index entries and ~3000 revocations (> 2 MB).
    assert later - steady < 256 * 1024, f"grew by {later - steady} bytes"


# -- time: steps back, sweeps at later readings, tokens from ahead ----------------


class OnSweepStart(SpanProcessor):
    """Runs `action` once, as the next sweep span starts: what happens while a sweep runs."""

    def __init__(self, action: Callable[[], object]) -> None:
        self._action: Callable[[], object] | None = action

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if span.name == SPAN_TOKEN_SWEEP and self._action is not None:
            action, self._action = self._action, None
            action()


class ClockWithAHook(FakeClock):
    """A fake clock whose next reading also runs `on_next_read`, in a thread of its own."""

    def __init__(self) -> None:
        super().__init__()
        self.on_next_read: Callable[[], object] | None = None

    def __call__(self) -> float:
        reading = self.now
        action, self.on_next_read = self.on_next_read, None
        if action is not None:
            other = threading.Thread(target=action)
            other.start()
            other.join(30)
            assert not other.is_alive(), "the provider held its lock while reading the clock"
        return reading


def revocations_url(store: str, tmp_path: Path) -> str:
    return "memory" if store == "memory" else f"sqlite:///{tmp_path}/revocations.db"


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_clock_stepping_forward_then_back_does_not_unrevoke_a_live_token(
    store: str, clock: FakeClock, tmp_path: Path
) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=revocations_url(store, tmp_path))
    token = provider.issue("read", "alice", ttl_seconds=100)
    provider.revoke(token)
    clock.advance(200)
    assert provider.sweep() == 1  # the token had expired at that reading

    clock.advance(-200)  # by this reading the token is live again

    with pytest.raises(TokenExpired):
        provider.verify(token, **ALICE)
    # By this reading the token is live on any replica whose clock agrees: the
    # revocation is stored again, for them.
    assert provider.revoke(token) is True
    assert provider.revocation_count == 1


def test_a_provider_restarted_after_a_clock_step_back_starts_from_the_last_sweep(
    clock: FakeClock, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/revocations.db"
    with HMACTokenProvider(SECRET, clock=clock, revocations=url) as first:
        token = first.issue("read", "alice", ttl_seconds=100)
        first.revoke(token)
        clock.advance(200)
        assert first.sweep() == 1
    clock.advance(-200)

    with (
        HMACTokenProvider(SECRET, clock=clock, revocations=url) as second,
        pytest.raises(TokenExpired),
    ):
        second.verify(token, **ALICE)


def test_a_sweep_verify_runs_at_a_later_reading_cannot_unrevoke_the_token(
    clock: FakeClock, otel: Telemetry
) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, sweep_interval_seconds=5, **otel.providers())
    token = provider.issue("read", "alice", ttl_seconds=10)
    provider.revoke(token)
    clock.now = token.expires_at - 0.1  # a sweep is due; the token is live
    otel.tracer_provider.add_span_processor(OnSweepStart(lambda: clock.advance(0.2)))

    with pytest.raises(TokenExpired):
        provider.verify(token, **ALICE)  # the sweep removed the entry at expires_at + 0.1


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_sweep_between_verify_reading_the_clock_and_its_lookup_cannot_unrevoke(
    store: str, tmp_path: Path
) -> None:
    clock = ClockWithAHook()
    provider = HMACTokenProvider(SECRET, clock=clock, revocations=revocations_url(store, tmp_path))
    token = provider.issue("read", "alice", ttl_seconds=10)
    provider.revoke(token)
    clock.now = token.expires_at - 0.1

    def another_thread_sweeps_later() -> None:
        clock.now = token.expires_at + SKEW + 0.1
        assert provider.sweep() == 1

    clock.on_next_read = another_thread_sweeps_later
    with pytest.raises(TokenExpired):
        provider.verify(token, **ALICE)


def test_revoke_all_cutoff_covers_a_token_issued_while_it_swept(
    clock: FakeClock, otel: Telemetry, tmp_path: Path
) -> None:
    database = tmp_path / "revocations.db"
    replica = HMACTokenProvider(SECRET, clock=clock, revocations=SQLiteRevocationStore(database))
    admin = HMACTokenProvider(
        SECRET,
        clock=clock,
        sweep_interval_seconds=5,
        revocations=SQLiteRevocationStore(database),
        **otel.providers(),
    )
    clock.advance(5)  # admin's next call sweeps first
    issued_meanwhile: list[CapabilityToken] = []

    def the_replica_issues_a_token_meanwhile() -> None:
        clock.advance(0.5)
        issued_meanwhile.append(replica.issue("read", "alice"))

    otel.tracer_provider.add_span_processor(OnSweepStart(the_replica_issues_a_token_meanwhile))
    admin.revoke_all("alice")

    (token,) = issued_meanwhile
    assert_revoked(admin, token)
    assert_revoked(replica, token)


def test_revoking_a_token_issued_ahead_holds_until_it_expires(clock: FakeClock) -> None:
    """It verifies once the revoker's clock is within the skew: the revocation must hold."""
    ahead = HMACTokenProvider(SECRET, clock=FakeClock(clock.now + 3600))
    provider = HMACTokenProvider(SECRET, clock=clock)
    token = ahead.issue("read", "alice", ttl_seconds=600)

    assert provider.revoke(token.encode()) is True

    clock.now = token.expires_at - 1e-3
    assert provider.sweep() == 0
    assert_revoked(provider, token)


# -- what revoke accepts as a bare id ----------------------------------------------


def test_revoke_refuses_a_signature_or_any_text_not_shaped_like_an_issued_id(
    provider: HMACTokenProvider, otel: Telemetry
) -> None:
    token = provider.issue("read", "alice")
    not_ids = [token.signature, token.key_id, "a" * 22, "A" * 21, "A" * 23, "A" * 64]

    for text in not_ids:
        with pytest.raises(TokenInvalid) as refused:
            provider.revoke(text)
        assert text not in str(refused.value)

    assert provider.revocation_count == 0
    exported = repr([(span.attributes, span.events) for span in otel.spans()])
    assert token.signature not in exported
    assert provider.revoke("unknown" + "0" * 14 + "w") is True  # the shape issue makes
