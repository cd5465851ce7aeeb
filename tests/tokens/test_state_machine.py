"""A model of revocation, checked step by step against a provider on SQLite.

Whatever the order of issue, revoke, revoke_all, sweep, clock steps forward
and back, and restart, no revoked token ever verifies before it expires, no
other live token is refused, and `revoke` / `revoke_all` report exactly what
was newly revoked.

The model keeps the provider's time as the provider defines it: the highest
clock reading it has seen since it started (the clock may step back). It keeps
the store's entries as the docs define them: each until its tokens have
expired on every replica within the skew, removed by a sweep at a later time,
and a token whose entry a sweep may have removed is refused as expired.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from otel_bounded.errors import TokenClockSkew, TokenExpired, TokenRevoked
from otel_bounded.tokens import CapabilityToken, HMACTokenProvider, SQLiteRevocationStore
from tests.support import FakeClock
from tests.tokens.helpers import SECRET

MAX_TTL = 100.0
SKEW = 60.0  # the default max_clock_skew_seconds
SWEEP_INTERVAL = 7.0
PRINCIPALS = ("alice", "bob", "carol")


@dataclass
class Issued:
    token: CapabilityToken
    instance: int  # which provider instance (between restarts) issued it


class RevocationModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.directory = Path(tempfile.mkdtemp(prefix="otel-bounded-model-"))
        self.clock = FakeClock()
        self.instance = 0
        self.provider = self._open()
        self.issued: list[Issued] = []
        # What the store holds: per id, and per principal (cutoff, kept until).
        self.id_entries: dict[str, float] = {}
        self.cutoff_entries: dict[str, tuple[float, float]] = {}
        self.floors: dict[str, float] = {}  # cut-offs this instance set, per principal
        self.peak = self.clock.now  # the highest reading the clock ever gave
        self.now = self.clock.now  # the provider's now
        self.last_sweep = self.now
        self.swept_through = -math.inf  # the latest now a sweep ran at, kept in the file

    def _open(self) -> HMACTokenProvider:
        return HMACTokenProvider(
            SECRET,
            clock=self.clock,
            max_ttl_seconds=MAX_TTL,
            sweep_interval_seconds=SWEEP_INTERVAL,
            revocations=SQLiteRevocationStore(self.directory / "revocations.db"),
        )

    def observe(self) -> None:
        """What every provider call starts with: a clock reading, and a sweep when due."""
        self.now = max(self.now, self.clock.now)
        if self.now - self.last_sweep >= SWEEP_INTERVAL:
            self.swept(self.now)

    def swept(self, at: float) -> None:
        self.last_sweep = at
        self.swept_through = max(self.swept_through, at)
        self.id_entries = {k: v for k, v in self.id_entries.items() if v > at}
        self.cutoff_entries = {k: v for k, v in self.cutoff_entries.items() if v[1] > at}

    def teardown(self) -> None:
        self.provider.revocations.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the model -------------------------------------------------------

    def held(self, token: CapabilityToken) -> bool:
        """Whether the store holds an entry revoking `token`."""
        cutoff = self.cutoff_entries.get(token.principal_id, (-math.inf, 0.0))[0]
        return token.token_id in self.id_entries or token.issued_at <= cutoff

    def live(self, token: CapabilityToken) -> bool:
        return self.now < token.expires_at

    # -- rules -----------------------------------------------------------

    @rule(principal=st.sampled_from(PRINCIPALS), ttl=st.sampled_from([0.5, 10.0, 60.0, MAX_TTL]))
    def issue(self, principal: str, ttl: float) -> None:
        self.observe()
        stamp = self.now
        floor = self.floors.get(principal, -math.inf)
        if stamp <= floor:
            stamp = math.nextafter(floor, math.inf)
        if stamp - self.clock.now > SKEW:
            with pytest.raises(TokenClockSkew):
                self.provider.issue("read", principal, ttl_seconds=ttl)
            return
        token = self.provider.issue("read", principal, ttl_seconds=ttl)
        self.issued.append(Issued(token, self.instance))
        assert token.issued_at == stamp
        # A provider's tokens always come after the cut-offs it set itself.
        assert token.issued_at > floor

    @precondition(lambda self: self.issued)
    @rule(data=st.data(), form=st.sampled_from(["token", "encoded", "token_id"]))
    def revoke(self, data: st.DataObject, form: str) -> None:
        issued = data.draw(st.sampled_from(self.issued))
        token = issued.token
        self.observe()
        reading = self.clock.now
        known = form != "token_id" or (issued.instance == self.instance and self.live(token))
        if known:
            expires_at = token.expires_at
            kept_until = expires_at + SKEW
        else:
            expires_at = self.now + MAX_TTL + SKEW
            kept_until = expires_at + SKEW
        already = known and self.held(token)
        added = self.id_entries.get(token.token_id, -math.inf) <= reading
        expected = added and not already and expires_at > reading
        self.id_entries[token.token_id] = max(
            self.id_entries.get(token.token_id, -math.inf), kept_until
        )
        handle = {"token": token, "encoded": token.encode(), "token_id": token.token_id}[form]

        assert self.provider.revoke(handle) is expected

    @rule(principal=st.sampled_from(PRINCIPALS))
    def revoke_all(self, principal: str) -> None:
        self.observe()
        expected = sum(
            1
            for issued in self.issued
            if issued.instance == self.instance
            and issued.token.principal_id == principal
            and self.live(issued.token)
            and not self.held(issued.token)
        )
        cutoff = self.now + SKEW
        held_cutoff, held_until = self.cutoff_entries.get(principal, (-math.inf, -math.inf))
        self.cutoff_entries[principal] = (
            max(held_cutoff, cutoff),
            max(held_until, cutoff + MAX_TTL + SKEW),
        )
        self.floors[principal] = max(self.floors.get(principal, -math.inf), cutoff)

        assert self.provider.revoke_all(principal) == expected

    @rule()
    def sweep(self) -> None:
        self.now = max(self.now, self.clock.now)
        self.swept(self.now)
        assert self.provider.sweep() >= 0

    @rule(seconds=st.sampled_from([0.0, 1e-6, 0.5, 5.0, 30.0, 99.0, MAX_TTL + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        self.peak = max(self.peak, self.clock.now)

    @rule(seconds=st.sampled_from([1e-6, 0.5, 5.0, 30.0, 99.0, MAX_TTL + 1]))
    def step_back(self, seconds: float) -> None:
        self.clock.advance(-seconds)

    # A restarted provider starts from its clock: its own tokens then come from a
    # replica whose clock was up to peak - now ahead, which must stay within
    # max_clock_skew_seconds, as between any two replicas.
    @precondition(lambda self: self.peak - self.clock.now < SKEW)
    @rule()
    def restart(self) -> None:
        self.provider.revocations.close()
        self.instance += 1
        self.provider = self._open()
        self.now = self.clock.now
        self.last_sweep = self.now
        self.floors.clear()

    # -- the invariant ---------------------------------------------------

    @invariant()
    def no_revoked_token_verifies_before_it_expires(self) -> None:
        if self.issued:
            self.observe()
        for issued in self.issued:
            token = issued.token
            scope = {
                "expected_principal_id": token.principal_id,
                "expected_capability_id": "read",
            }
            if not self.live(token):
                with pytest.raises(TokenExpired):
                    self.provider.verify(token, **scope)
            elif self.held(token):
                with pytest.raises(TokenRevoked):
                    self.provider.verify(token.encode(), **scope)
            elif token.expires_at + SKEW <= self.swept_through:
                # Swept past: any entry it had may be gone, so it is refused as expired.
                with pytest.raises(TokenExpired):
                    self.provider.verify(token, **scope)
            else:
                assert self.provider.verify(token, **scope) == token


RevocationModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_revocation_model = RevocationModel.TestCase
