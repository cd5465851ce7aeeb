"""Eight threads issuing, revoking, verifying and sweeping at once."""

from __future__ import annotations

import os
import random
import signal
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from otel_bounded.errors import TokenRevoked
from otel_bounded.telemetry import VerificationOutcome
from otel_bounded.tokens import (
    CapabilityToken,
    HMACTokenProvider,
    MemoryRevocationStore,
    RevocationStore,
    SQLiteRevocationStore,
    open_revocation_store,
)
from tests.support import FakeClock
from tests.tokens.helpers import SECRET

THREADS = 8
ROUNDS = 300


class SharedClock(FakeClock):
    """A fake clock several threads may advance."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def run_workers(provider: HMACTokenProvider, clock: SharedClock, rounds: int) -> Counter[str]:
    """Run the workers; return how many verifications each outcome should have counted."""
    start = threading.Barrier(THREADS)
    failures: list[BaseException] = []
    expected: Counter[str] = Counter()
    expected_lock = threading.Lock()

    def worker(index: int) -> None:
        rng = random.Random(index)
        principal = f"worker-{index}"
        scope = {"expected_principal_id": principal, "expected_capability_id": "read"}
        live: list[CapabilityToken] = []
        revoked: list[CapabilityToken] = []
        mine: Counter[str] = Counter()
        start.wait()
        try:
            for _ in range(rounds):
                live.append(provider.issue("read", principal, ttl_seconds=3600))
                choice = rng.random()
                if choice < 0.3 and live:
                    token = live.pop(rng.randrange(len(live)))
                    assert provider.revoke(rng.choice([token, token.encode(), token.token_id]))
                    revoked.append(token)
                elif choice < 0.35:
                    assert provider.revoke_all(principal) == len(live)
                    revoked.extend(live)
                    live.clear()
                    clock.advance(1e-6)  # the cut-off blocks what this same reading stamps
                elif choice < 0.45:
                    provider.sweep()
                    clock.advance(0.01)  # keeps automatic sweeps coming too
                for token in live[-3:]:
                    provider.verify(token.encode(), **scope)
                    mine[VerificationOutcome.OK] += 1
                for token in revoked[-3:]:
                    with pytest.raises(TokenRevoked):
                        provider.verify(token, **scope)
                    mine[VerificationOutcome.REVOKED] += 1
        except BaseException as exc:
            failures.append(exc)
        with expected_lock:
            expected.update(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return expected


@pytest.mark.parametrize(
    "store", ["memory", "sqlite", pytest.param("redis", marks=pytest.mark.servers)]
)
def test_eight_threads_never_see_a_revoked_token_verify(
    store: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    clock = SharedClock()
    revocations: RevocationStore | str | None = None
    if store == "sqlite":
        revocations = SQLiteRevocationStore(tmp_path / "r.db")
    elif store == "redis":
        revocations = request.getfixturevalue("redis_url")
    provider = HMACTokenProvider(
        SECRET, clock=clock, sweep_interval_seconds=0.05, revocations=revocations
    )
    rounds = ROUNDS if store == "memory" else ROUNDS // 3

    expected = run_workers(provider, clock, rounds)

    counted = provider.telemetry_counts().verifications
    assert counted[VerificationOutcome.OK] == expected[VerificationOutcome.OK]
    assert counted[VerificationOutcome.REVOKED] == expected[VerificationOutcome.REVOKED]
    assert sum(counted.values()) == sum(expected.values())
    assert len(provider._issued) == THREADS * rounds
    provider.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_a_forked_child_verifies_even_if_the_lock_was_held_at_fork(
    store: str, tmp_path: Path
) -> None:
    revocations = SQLiteRevocationStore(tmp_path / "r.db") if store == "sqlite" else None
    provider = HMACTokenProvider(SECRET, clock=FakeClock(), revocations=revocations)
    token = provider.issue("read", "alice")
    kept = provider.issue("read", "alice")
    provider.revoke(token)
    held, release = threading.Event(), threading.Event()

    def hold_the_lock() -> None:
        with provider._lock:
            held.set()
            release.wait()

    holder = threading.Thread(target=hold_the_lock)
    holder.start()
    held.wait()
    pid = os.fork()
    if pid == 0:  # the child: a deadlock would end in SIGALRM, a wrong answer in exit 1
        signal.alarm(20)
        code = 1
        try:
            scope = {"expected_principal_id": "alice", "expected_capability_id": "read"}
            provider.verify(kept, **scope)
            try:
                provider.verify(token, **scope)
            except TokenRevoked:
                code = 0
        finally:
            os._exit(code)
    release.set()
    holder.join()
    _, status = os.waitpid(pid, 0)

    assert os.waitstatus_to_exitcode(status) == 0


# -- revoke_all over many tokens never holds other principals up ----------------------

MANY = 20_000


class HoldRecordingLock:
    """The provider's lock, recording how much work each hold covered."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.holds = 0
        self.work_in_hold = 0
        self.most_work_in_one_hold = 0

    def __enter__(self) -> HoldRecordingLock:
        self._lock.acquire()
        self.holds += 1
        self.work_in_hold = 0
        return self

    def __exit__(self, *_exc: object) -> None:
        self.most_work_in_one_hold = max(self.most_work_in_one_hold, self.work_in_hold)
        self._lock.release()

    def locked(self) -> bool:
        return self._lock.locked()


class RecordingStore:
    """A real store, recording every call and whether the provider's lock was held for it."""

    def __init__(self, store: RevocationStore, lock: HoldRecordingLock) -> None:
        self._store = store
        self._lock = lock
        self.kind = store.kind
        self.thread_safe = store.thread_safe
        self.calls: list[tuple[str, int, bool]] = []  # (method, tokens, lock held)

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._store, name)

        def recorded(*args: Any) -> Any:
            tokens = len(args[1]) if name == "revoked_among" else 1
            self.calls.append((name, tokens, self._lock.locked()))
            if self._lock.locked():
                self._lock.work_in_hold += tokens
            return method(*args)

        return recorded


class CountingIndex:
    """The provider's index of issued tokens, counting each lookup as work in the hold."""

    def __init__(self, index: Any, lock: HoldRecordingLock) -> None:
        self._index = index
        self._lock = lock

    def get(self, token_id: str, now: float) -> Any:
        self._lock.work_in_hold += 1
        return self._index.get(token_id, now)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def revoke_all_over_many_tokens(store: RevocationStore) -> tuple[HoldRecordingLock, RecordingStore]:
    lock = HoldRecordingLock()
    recording = RecordingStore(store, lock)
    provider = HMACTokenProvider(
        SECRET,
        clock=FakeClock(),
        sweep_interval_seconds=1e9,
        revocations=recording,  # type: ignore[arg-type]
    )
    for _ in range(MANY):
        provider.issue("read", "alice")
    provider.revoke(provider.issue("read", "alice"))  # one already revoked by id
    provider._lock = lock  # type: ignore[assignment]
    provider._issued = CountingIndex(provider._issued, lock)  # type: ignore[assignment]
    recording.calls.clear()

    assert provider.revoke_all("alice") == MANY

    return lock, recording


@pytest.mark.servers
def test_revoke_all_makes_no_redis_round_trip_under_the_lock_and_batches_them(
    redis_url: str,
) -> None:
    store = open_revocation_store(redis_url)
    lock, recording = revoke_all_over_many_tokens(store)

    assert [call for call in recording.calls if call[2]] == []  # none under the lock
    batches = [tokens for name, tokens, _ in recording.calls if name == "revoked_among"]
    assert sum(batches) == MANY + 1
    assert len(recording.calls) <= MANY // 256 + 3  # batched, not one per token
    # The index is walked in short holds, so another principal's verify waits little.
    assert lock.most_work_in_one_hold <= 256
    store.close()


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_revoke_all_on_a_local_store_holds_the_lock_only_for_short_batches(
    store: str, tmp_path: Path
) -> None:
    opened: RevocationStore = (
        MemoryRevocationStore()
        if store == "memory"
        else SQLiteRevocationStore(tmp_path / "revocations.db")
    )
    lock, recording = revoke_all_over_many_tokens(opened)

    assert lock.holds >= 2 * (MANY // 256)  # the index walk, then the store lookups
    assert lock.most_work_in_one_hold <= 256
    assert len(recording.calls) <= MANY // 256 + 3
    opened.close()
