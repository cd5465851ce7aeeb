"""Several replicas sharing one revocation store, each with a clock of its own.

A model of the fleet, checked step by step: a true time, and per replica a
clock offset that steps forward and back, within and beyond the skew; issue,
revoke (by token, text or id, on any replica), revoke_all, sweeps, restarts
and key rotation. The replicas share a SQLite file, a real Redis, or one
in-process memory store. After every step, for every token and replica:

- a revoked token (by id anywhere, or stamped at or before a cut-off) never
  verifies (on Redis, whose server forgets by its own clock: while the token
  is live by the true time plus the skew);
- a token revoked nowhere verifies on every replica whose time has it live
  and not issued in the future, unless a sweep somewhere passed its expiry
  plus the skew (then every replica refuses it as expired);
- a revoke_all catches every token issued before it by a replica whose clock
  was not ahead of the revoking one's, whatever either clock did before.

The model keeps each replica's time as the docs define it: the highest clock
reading it has seen since it started; a sweep runs on the first call once
the interval has passed on that time.
"""

from __future__ import annotations

import math
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from otel_bounded.errors import (
    TokenClockSkew,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
)
from otel_bounded.tokens import (
    CapabilityToken,
    HMACTokenProvider,
    MemoryRevocationStore,
    RevocationStore,
    SQLiteRevocationStore,
    open_revocation_store,
)
from tests.servers import REDIS, RunningServer, launch
from tests.tokens.helpers import OTHER_SECRET, SECRET

MAX_TTL = 100.0
SKEW = 10.0
SWEEP_INTERVAL = 7.0
PRINCIPALS = ("alice", "bob")
REPLICAS = 3
KEYS = {"k1": SECRET, "k2": OTHER_SECRET}
CHECKED_TOKENS = 10  # the newest tokens are checked on every replica after each step
STEPS = [0.5, 3.0, SKEW - 1, SKEW + 1, 60.0, MAX_TTL + 1, 3600.0]


class ReplicaClock:
    """A replica's clock: the fleet's true time plus this replica's own offset."""

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.offset = 0.0

    def __call__(self) -> float:
        return self.fleet.truth + self.offset


@dataclass
class Fleet:
    truth: float


@dataclass
class Replica:
    clock: ReplicaClock
    provider: HMACTokenProvider
    instance: int = 0
    now: float = -math.inf  # the model's provider time: the highest reading since start
    last_sweep: float = -math.inf
    floors: dict[str, float] = field(default_factory=dict)  # cut-offs it set, by principal

    @property
    def reading(self) -> float:
        return self.clock()


@dataclass
class Issued:
    token: CapabilityToken
    replica: int
    instance: int
    reading: float  # the issuer's clock reading when it issued


class Backend:
    """How the replicas share revocations: one store per replica over one backing."""

    kind = ""
    gone_by_sweeps = True  # whether a sweep at a replica's time removes entries

    def open(self) -> RevocationStore:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SQLiteBackend(Backend):
    kind = "sqlite"

    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="otel-bounded-replicas-"))

    def open(self) -> RevocationStore:
        return SQLiteRevocationStore(self.directory / "revocations.db")

    def close(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


class MemoryBackend(Backend):
    kind = "memory"

    def __init__(self) -> None:
        self.store = MemoryRevocationStore()

    def open(self) -> RevocationStore:
        return self.store


class RedisBackend(Backend):
    kind = "redis"
    gone_by_sweeps = False  # keys expire by the server's clock, never a replica's
    server: RunningServer | None = None

    def __init__(self) -> None:
        assert RedisBackend.server is not None
        self.url = f"redis://{RedisBackend.server.address}/0"
        self.prefix = f"replicas-{uuid.uuid4().hex}:"

    def open(self) -> RevocationStore:
        return open_revocation_store(self.url, key_prefix=self.prefix)


class FleetModel(RuleBasedStateMachine):
    backend_type: type[Backend] = SQLiteBackend

    def __init__(self) -> None:
        super().__init__()
        self.backend = self.backend_type()
        # Anchored at the real time: Redis measures retention from its own clock too.
        self.fleet = Fleet(truth=float(math.floor(time.time())))
        self.replicas: list[Replica] = []
        self.issued: list[Issued] = []
        self.revoked_ids: set[str] = set()
        self.cutoffs: dict[str, float] = {}
        self.gone_through = -math.inf  # the latest time any replica swept at

    @initialize()
    def start(self) -> None:
        for _ in range(REPLICAS):
            clock = ReplicaClock(self.fleet)
            self.replicas.append(Replica(clock, self._open(clock, "k1")))
            self._started(self.replicas[-1])

    def _open(self, clock: ReplicaClock, active: str) -> HMACTokenProvider:
        return HMACTokenProvider(
            KEYS,
            active_key_id=active,
            clock=clock,
            max_ttl_seconds=MAX_TTL,
            max_clock_skew_seconds=SKEW,
            sweep_interval_seconds=SWEEP_INTERVAL,
            revocations=self.backend.open(),
        )

    def _started(self, replica: Replica) -> None:
        replica.now = replica.last_sweep = replica.reading
        replica.floors.clear()

    def observe(self, replica: Replica) -> None:
        """What every provider call starts with: a clock reading, and a sweep when due."""
        replica.now = max(replica.now, replica.reading)
        if replica.now - replica.last_sweep >= SWEEP_INTERVAL:
            self.swept(replica)

    def swept(self, replica: Replica) -> None:
        replica.last_sweep = replica.now
        if self.backend.gone_by_sweeps:
            self.gone_through = max(self.gone_through, replica.now)

    def teardown(self) -> None:
        for replica in self.replicas:
            replica.provider.revocations.close()
        self.backend.close()

    # -- the model -------------------------------------------------------

    def revoked(self, token: CapabilityToken) -> bool:
        cutoff = self.cutoffs.get(token.principal_id, -math.inf)
        return token.token_id in self.revoked_ids or token.issued_at <= cutoff

    def known_to(self, replica: Replica, issued: Issued, index: int) -> bool:
        """Whether `replica` finds the token in its own index (revoke by id)."""
        return (
            issued.replica == index
            and issued.instance == replica.instance
            and issued.token.expires_at > replica.now
        )

    # -- rules -----------------------------------------------------------

    @rule(
        index=st.integers(0, REPLICAS - 1),
        principal=st.sampled_from(PRINCIPALS),
        ttl=st.sampled_from([0.5, 10.0, 60.0, MAX_TTL]),
    )
    def issue(self, index: int, principal: str, ttl: float) -> None:
        replica = self.replicas[index]
        self.observe(replica)
        reading = replica.reading
        stamp = replica.now
        floor = replica.floors.get(principal, -math.inf)
        if stamp <= floor:
            stamp = math.nextafter(floor, math.inf)
        if stamp - reading > SKEW:
            with pytest.raises(TokenClockSkew):
                replica.provider.issue("read", principal, ttl_seconds=ttl)
            return
        token = replica.provider.issue("read", principal, ttl_seconds=ttl)
        assert token.issued_at == stamp
        assert token.issued_at - reading <= SKEW
        self.issued.append(Issued(token, index, replica.instance, reading))

    @precondition(lambda self: self.issued)
    @rule(
        data=st.data(),
        index=st.integers(0, REPLICAS - 1),
        form=st.sampled_from(["token", "encoded", "token_id"]),
    )
    def revoke(self, data: st.DataObject, index: int, form: str) -> None:
        issued = data.draw(st.sampled_from(self.issued[-CHECKED_TOKENS:]))
        token = issued.token
        replica = self.replicas[index]
        self.observe(replica)
        known = form != "token_id" or self.known_to(replica, issued, index)
        never_revoked = not self.revoked(token)
        handle = {"token": token, "encoded": token.encode(), "token_id": token.token_id}[form]

        newly = replica.provider.revoke(handle)

        self.revoked_ids.add(token.token_id)
        if known and token.expires_at <= replica.reading:
            assert newly is False  # expired by the clock it writes with
        elif never_revoked and (not known or token.expires_at > replica.reading):
            assert newly is True

    @rule(index=st.integers(0, REPLICAS - 1), principal=st.sampled_from(PRINCIPALS))
    def revoke_all(self, index: int, principal: str) -> None:
        replica = self.replicas[index]
        self.observe(replica)
        cutoff = replica.now + SKEW
        live_here = [
            issued
            for issued in self.issued
            if issued.replica == index
            and issued.instance == replica.instance
            and issued.token.principal_id == principal
            and issued.token.expires_at > replica.now
        ]

        newly = replica.provider.revoke_all(principal)

        assert 0 <= newly <= len(live_here)
        self.cutoffs[principal] = max(self.cutoffs.get(principal, -math.inf), cutoff)
        replica.floors[principal] = max(replica.floors.get(principal, -math.inf), cutoff)
        # Whatever any clock did before, tokens issued earlier by a replica whose clock
        # read no later than this one's does now are caught.
        for issued in self.issued:
            if issued.token.principal_id == principal and issued.reading <= replica.reading:
                assert issued.token.issued_at <= cutoff

    @rule(index=st.integers(0, REPLICAS - 1))
    def sweep(self, index: int) -> None:
        replica = self.replicas[index]
        replica.now = max(replica.now, replica.reading)
        self.swept(replica)
        assert replica.provider.sweep() >= 0

    @rule(seconds=st.sampled_from(STEPS))
    def time_passes(self, seconds: float) -> None:
        self.fleet.truth += seconds

    @rule(
        index=st.integers(0, REPLICAS - 1),
        seconds=st.sampled_from(STEPS),
        forward=st.booleans(),
    )
    def clock_steps(self, index: int, seconds: float, forward: bool) -> None:
        self.replicas[index].clock.offset += seconds if forward else -seconds

    @rule(index=st.integers(0, REPLICAS - 1), seconds=st.sampled_from(STEPS))
    def clock_glitches(self, index: int, seconds: float) -> None:
        """A bad NTP answer: the clock jumps ahead, the replica sweeps, the clock comes back."""
        replica = self.replicas[index]
        replica.clock.offset += seconds
        self.sweep(index)
        replica.clock.offset -= seconds

    @rule(index=st.integers(0, REPLICAS - 1))
    def clock_is_corrected(self, index: int) -> None:
        self.replicas[index].clock.offset = 0.0

    @rule(index=st.integers(0, REPLICAS - 1), active=st.sampled_from(sorted(KEYS)))
    def restart(self, index: int, active: str) -> None:
        """A restart, possibly signing with the other key (both keys verify everywhere)."""
        replica = self.replicas[index]
        replica.provider.revocations.close()
        replica.provider = self._open(replica.clock, active)
        replica.instance += 1
        self._started(replica)

    # -- the invariant ---------------------------------------------------

    @invariant()
    def every_replica_answers_as_the_model_says(self) -> None:
        checked = self.issued[-CHECKED_TOKENS:]
        if not checked:
            return
        for replica in self.replicas:
            self.observe(replica)
            for issued in checked:
                self._check(replica, issued.token)

    def _check(self, replica: Replica, token: CapabilityToken) -> None:
        scope = {"expected_principal_id": token.principal_id, "expected_capability_id": "read"}
        handle: CapabilityToken | str = token if len(token.token_id) % 2 else token.encode()
        if token.issued_at > replica.now + SKEW:
            with pytest.raises(TokenInvalid):
                replica.provider.verify(handle, **scope)
            return
        if replica.now >= token.expires_at:
            with pytest.raises(TokenExpired):
                replica.provider.verify(handle, **scope)
            return
        if self.revoked(token):
            if self.backend.gone_by_sweeps or self.fleet.truth < token.expires_at + SKEW:
                with pytest.raises(TokenError) as refused:
                    replica.provider.verify(handle, **scope)
                assert isinstance(refused.value, TokenRevoked | TokenExpired)
            return
        if token.expires_at + SKEW <= self.gone_through:
            # A sweep somewhere passed it: any revocation it had may be gone, so it is refused.
            with pytest.raises(TokenExpired):
                replica.provider.verify(handle, **scope)
            return
        assert replica.provider.verify(handle, **scope) == token


class SQLiteFleet(FleetModel):
    backend_type = SQLiteBackend


class MemoryFleet(FleetModel):
    backend_type = MemoryBackend


class RedisFleet(FleetModel):
    backend_type = RedisBackend


_SETTINGS = settings(
    max_examples=30,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
SQLiteFleet.TestCase.settings = _SETTINGS
MemoryFleet.TestCase.settings = _SETTINGS

test_replicas_sharing_sqlite = SQLiteFleet.TestCase
test_replicas_sharing_one_memory_store = MemoryFleet.TestCase


@pytest.fixture(scope="module")
def shared_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    server = launch(REDIS, tmp_path_factory.mktemp("redis"))
    RedisBackend.server = server
    yield server
    RedisBackend.server = None
    server.stop()


@pytest.mark.servers
def test_replicas_sharing_redis(shared_redis: RunningServer) -> None:
    run_state_machine_as_test(RedisFleet, settings=_SETTINGS)


# -- the findings, one by one, as an operator of a fleet met them ------------------------

ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}


def test_a_sweep_on_a_replica_whose_clock_jumped_ahead_unrevokes_nothing_elsewhere(
    tmp_path: Path,
) -> None:
    fleet = Fleet(truth=1_700_000_000.0)
    clock_a, clock_b = ReplicaClock(fleet), ReplicaClock(fleet)
    database = tmp_path / "revocations.db"
    a = HMACTokenProvider(SECRET, clock=clock_a, revocations=SQLiteRevocationStore(database))
    b = HMACTokenProvider(SECRET, clock=clock_b, revocations=SQLiteRevocationStore(database))
    token = b.issue("read", "alice", ttl_seconds=600)
    assert b.revoke(token) is True

    clock_a.offset = 3600  # a bad NTP answer
    assert a.sweep() == 1  # by A's clock the token expired long ago
    clock_a.offset = 0

    for replica in (a, b):  # whatever the replica, the token is refused
        with pytest.raises(TokenExpired):
            replica.verify(token, **ALICE)
    restarted = HMACTokenProvider(SECRET, clock=clock_b, revocations=f"sqlite:///{database}")
    with pytest.raises(TokenExpired):
        restarted.verify(token, **ALICE)


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("redis", marks=pytest.mark.servers)])
def test_a_revoke_on_a_replica_held_ahead_is_stored_for_every_replica(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "redis":
        url = f"redis://{request.getfixturevalue('redis_server').address}/0"
    else:
        url = f"sqlite:///{tmp_path / 'revocations.db'}"
    fleet = Fleet(truth=float(math.floor(time.time())))
    clock_a, clock_b = ReplicaClock(fleet), ReplicaClock(fleet)
    a = HMACTokenProvider(SECRET, clock=clock_a, revocations=url)
    b = HMACTokenProvider(SECRET, clock=clock_b, revocations=url)
    token = b.issue("read", "alice", ttl_seconds=300)  # minutes to live
    clock_a.offset = 600
    a.sweep()  # A's time is now 10 minutes ahead ...
    clock_a.offset = 0  # ... and stays there after its clock steps back

    assert a.revoke(token) is True  # live by the reading it writes with

    with pytest.raises(TokenRevoked):
        b.verify(token, **ALICE)
    a.close()
    b.close()


def test_a_replica_held_ahead_cannot_mint_tokens_that_escape_revoke_all(
    tmp_path: Path,
) -> None:
    fleet = Fleet(truth=1_700_000_000.0)
    clock_a, clock_b = ReplicaClock(fleet), ReplicaClock(fleet)
    database = tmp_path / "revocations.db"
    a = HMACTokenProvider(SECRET, clock=clock_a, revocations=SQLiteRevocationStore(database))
    b = HMACTokenProvider(SECRET, clock=clock_b, revocations=SQLiteRevocationStore(database))
    clock_a.offset = 600  # A saw a +10 min step ...
    a.issue("read", "bob")
    clock_a.offset = 0  # ... and its clock came back

    with pytest.raises(TokenClockSkew):
        a.issue("read", "alice")  # it would be stamped 10 min ahead
    fleet.truth += 570  # now A's time runs 30 s ahead of its clock: within the skew
    ahead = a.issue("read", "alice")
    assert ahead.issued_at == clock_b() + 30

    assert b.revoke_all("alice") == 0  # B, with the right time, issued none of them

    for replica in (a, b):
        with pytest.raises(TokenRevoked):
            replica.verify(ahead, **ALICE)
