"""A model of revocation, checked step by step against a provider on SQLite.

Whatever the order of issue, revoke, revoke_all, sweep, clock advance and
restart, no revoked token ever verifies before it expires, no other live
token is refused, and `revoke` / `revoke_all` report what was newly revoked.
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

from otel_bounded.errors import TokenExpired, TokenRevoked
from otel_bounded.tokens import CapabilityToken, HMACTokenProvider, SQLiteRevocationStore
from tests.support import FakeClock
from tests.tokens.helpers import SECRET

MAX_TTL = 100.0
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
        self.revoked_ids: set[str] = set()
        # The entries the store holds for ids, as (kept until), to predict `revoke`'s answer.
        self.id_entries: dict[str, float] = {}
        self.cutoffs: dict[str, float] = {}
        self.cutoff_set_by_instance: dict[str, float] = {}
        self.latest_issued_at = -math.inf

    def _open(self) -> HMACTokenProvider:
        return HMACTokenProvider(
            SECRET,
            clock=self.clock,
            max_ttl_seconds=MAX_TTL,
            sweep_interval_seconds=7,
            revocations=SQLiteRevocationStore(self.directory / "revocations.db"),
        )

    def teardown(self) -> None:
        self.provider.revocations.close()
        shutil.rmtree(self.directory, ignore_errors=True)

    # -- the model -------------------------------------------------------

    def revoked(self, token: CapabilityToken) -> bool:
        cutoff = self.cutoffs.get(token.principal_id, -math.inf)
        return token.token_id in self.revoked_ids or token.issued_at <= cutoff

    def live(self, token: CapabilityToken) -> bool:
        return self.clock.now < token.expires_at

    # -- rules -----------------------------------------------------------

    @rule(principal=st.sampled_from(PRINCIPALS), ttl=st.sampled_from([0.5, 10.0, 60.0, MAX_TTL]))
    def issue(self, principal: str, ttl: float) -> None:
        token = self.provider.issue("read", principal, ttl_seconds=ttl)
        self.issued.append(Issued(token, self.instance))
        self.latest_issued_at = max(self.latest_issued_at, token.issued_at)
        # A provider's tokens always come after the cut-offs it set itself.
        assert token.issued_at > self.cutoff_set_by_instance.get(principal, -math.inf)

    @precondition(lambda self: self.issued)
    @rule(data=st.data(), form=st.sampled_from(["token", "encoded", "token_id"]))
    def revoke(self, data: st.DataObject, form: str) -> None:
        issued = data.draw(st.sampled_from(self.issued))
        token = issued.token
        now = self.clock.now
        known = form != "token_id" or (issued.instance == self.instance and self.live(token))
        kept_until = token.expires_at if known else now + MAX_TTL
        if kept_until <= now:
            expected = False
        else:
            already = known and self.revoked(token)
            added = self.id_entries.get(token.token_id, -math.inf) <= now
            expected = added and not already
            self.id_entries[token.token_id] = max(
                self.id_entries.get(token.token_id, -math.inf), kept_until
            )
            self.revoked_ids.add(token.token_id)
        handle = {"token": token, "encoded": token.encode(), "token_id": token.token_id}[form]

        assert self.provider.revoke(handle) is expected

    @rule(principal=st.sampled_from(PRINCIPALS))
    def revoke_all(self, principal: str) -> None:
        expected = sum(
            1
            for issued in self.issued
            if issued.instance == self.instance
            and issued.token.principal_id == principal
            and self.live(issued.token)
            and not self.revoked(issued.token)
        )
        cutoff = max(self.clock.now, self.latest_issued_at)
        self.cutoffs[principal] = max(self.cutoffs.get(principal, -math.inf), cutoff)
        self.cutoff_set_by_instance[principal] = cutoff

        assert self.provider.revoke_all(principal) == expected

    @rule()
    def sweep(self) -> None:
        assert self.provider.sweep() >= 0

    @rule(seconds=st.sampled_from([0.0, 1e-6, 0.5, 5.0, 30.0, 99.0, MAX_TTL + 1]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def restart(self) -> None:
        self.provider.revocations.close()
        self.instance += 1
        self.provider = self._open()
        self.latest_issued_at = -math.inf
        self.cutoff_set_by_instance.clear()

    # -- the invariant ---------------------------------------------------

    @invariant()
    def no_revoked_token_verifies_before_it_expires(self) -> None:
        for issued in self.issued:
            token = issued.token
            scope = {
                "expected_principal_id": token.principal_id,
                "expected_capability_id": "read",
            }
            if not self.live(token):
                with pytest.raises(TokenExpired):
                    self.provider.verify(token, **scope)
            elif self.revoked(token):
                with pytest.raises(TokenRevoked):
                    self.provider.verify(token.encode(), **scope)
            else:
                self.provider.verify(token, **scope)


RevocationModel.TestCase.settings = settings(max_examples=40, stateful_step_count=30, deadline=None)
test_revocation_model = RevocationModel.TestCase
