"""The eviction core every otel-bounded store stands on.

`BoundedStore` is an ordered map, oldest first, bounded three ways: by entry
count, by total weight (say, spans across traces) and by age (an idle time to
live, or an absolute expiry per entry). Inserting and evicting cost O(1)
amortized; expiring costs what it removes, not what it keeps; nothing on these
paths sorts, logs or allocates more than the entry itself.

It is not thread-safe: each owner guards it with one lock of its own
(re-created after fork through `reinit_after_fork`), because an owner's
operation usually spans several calls.
"""

from __future__ import annotations

import heapq
import math
import os
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, Protocol, TypeVar

__all__ = [
    "ENTRY_FULL",
    "NO_AUDIT",
    "NO_ROOM",
    "AuditSink",
    "BoundedStore",
    "Clock",
    "EvictionReason",
    "NoOpAuditSink",
    "Refusal",
    "audit_from_env",
    "reinit_after_fork",
    "set_audit_opener",
    "validate_clock",
]

K = TypeVar("K")
V = TypeVar("V")

Clock = Callable[[], float]
"""A zero-argument callable returning Unix seconds; tests inject one."""

# How many mutations pass between two interval sweeps of expired entries,
# so that an idle key space cannot hold expired entries forever.
_EXPIRE_INTERVAL = 128


class Refusal:
    """Why `BoundedStore.grow` changed nothing."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason

    def __repr__(self) -> str:
        return f"Refusal({self.reason!r})"


ENTRY_FULL = Refusal("entry_full")
"""The entry would pass `max_entry_weight`."""
NO_ROOM = Refusal("no_room")
"""The entry would not fit under `max_weight` even with every other entry evicted."""


class AuditSink(Protocol):
    """Where stores record what leaves memory and what they decide, for an audit trail.

    `append` never blocks and never raises: it only queues the record, which
    a writer elsewhere encodes and stores. The payload must not be changed
    after it is appended. Its values are JSON values, or zero-argument
    callables the writer calls off the caller's thread (so that the caller
    never pays for encoding); a callable may return a sequence of SDK
    `ReadableSpan`s, which the writer stores in the OTLP JSON encoding.
    """

    def append(self, kind: str, payload: Mapping[str, object]) -> None: ...


class NoOpAuditSink:
    """The sink used when no audit log is attached: appends cost one call and nothing else."""

    __slots__ = ()

    def append(self, kind: str, payload: Mapping[str, object]) -> None:
        pass


NO_AUDIT: AuditSink = NoOpAuditSink()
"""The shared no-op sink; stores hold it instead of asking whether an audit log is attached."""

_audit_opener: Callable[[], AuditSink] | None = None


def set_audit_opener(opener: Callable[[], AuditSink]) -> None:
    """How `audit_from_env` opens the configured log; `otel_bounded.audit` sets it on import.

    The capabilities reach the audit log only through this hook, never by importing it.
    """
    global _audit_opener
    _audit_opener = opener


def audit_from_env() -> AuditSink:
    """The log ``OTEL_BOUNDED_AUDIT_PATH`` names, shared by every `from_env` of the process.

    `NO_AUDIT` when the variable is unset. Importing any part of otel_bounded
    imports `otel_bounded.audit`, which installs the opener.
    """
    opener = _audit_opener
    if opener is None:
        raise RuntimeError("otel_bounded.audit is not imported, so no audit log can be opened")
    return opener()


class EvictionReason:
    """Why an entry left a store without its owner removing it."""

    CAPACITY = "capacity"
    WEIGHT = "weight"
    EXPIRED = "expired"


def validate_clock(clock: Clock) -> Clock:
    """`clock` itself, once it is known to be a zero-argument callable returning a number."""
    if not callable(clock):
        raise ValueError(f"clock must be a zero-argument callable returning seconds: {clock!r}")
    sample = clock()
    # NaN compares false with everything: a store started on it would never expire anything.
    if isinstance(sample, bool) or not isinstance(sample, int | float) or not math.isfinite(sample):
        raise ValueError(f"clock() must return Unix seconds as a finite number, not {sample!r}")
    return clock


class BoundedStore(Generic[K, V]):
    """An ordered map, oldest first, bounded by entries, total weight and age.

    Bounds: `max_entries`; `max_weight` over all entries, with `max_entry_weight`
    for one; `ttl_seconds` of idleness (time since an entry was put or grown);
    and an absolute `expires_at` per entry given to `put`.

    Eviction is oldest first and deterministic: the same calls with the same
    clock readings evict the same keys. When a bound forces an eviction,
    every entry already expired (by idleness or by its own `expires_at`,
    wherever it sits in the order) goes first, counted as expired: a cap
    never pushes out a live entry while an expired one stays. Every eviction is counted per reason
    in `evictions` and handed to `on_evict(key, value, reason)`, a callback
    its owner may replace or remove at any time.
    """

    __slots__ = (
        "_clock",
        "_entries",
        "_expire_heap",
        "_expires",
        "_heap_seq",
        "_last_stamp",
        "_max_entries",
        "_max_entry_weight",
        "_max_weight",
        "_mutations",
        "_touched",
        "_ttl",
        "_weight",
        "_weight_cap",
        "_weights",
        "evicted_weight",
        "evictions",
        "on_evict",
    )

    def __init__(
        self,
        max_entries: int | None = None,
        *,
        max_weight: int | None = None,
        max_entry_weight: int | None = None,
        ttl_seconds: float | None = None,
        clock: Clock = time.time,
        on_evict: Callable[[K, V, str], None] | None = None,
    ) -> None:
        _check_positive("max_entries", max_entries)
        _check_positive("max_weight", max_weight)
        _check_positive("max_entry_weight", max_entry_weight)
        if max_entry_weight is not None and max_weight is None:
            raise ValueError("max_entry_weight needs max_weight")
        _check_positive("ttl_seconds", ttl_seconds, numbers=True)
        self._clock = validate_clock(clock)
        self._max_entries = max_entries
        self._max_weight = max_weight
        self._weight_cap: float = max_weight if max_weight is not None else float("inf")
        self._max_entry_weight: float = (
            max_entry_weight if max_entry_weight is not None else float("inf")
        )
        self._ttl = ttl_seconds
        self.on_evict = on_evict
        self._entries: OrderedDict[K, V] = OrderedDict()
        # Each bookkeeping map exists only when its bound is in use.
        self._weights: dict[K, int] | None = {} if max_weight is not None else None
        self._touched: dict[K, float] | None = {} if ttl_seconds is not None else None
        self._expires: dict[K, float] = {}
        self._expire_heap: list[tuple[float, int, K]] = []
        self._heap_seq = 0
        self._weight = 0
        self._last_stamp = float("-inf")
        self._mutations = 0
        self.evictions: dict[str, int] = {
            EvictionReason.CAPACITY: 0,
            EvictionReason.WEIGHT: 0,
            EvictionReason.EXPIRED: 0,
        }
        self.evicted_weight = 0

    # -- reading ---------------------------------------------------------

    def __len__(self) -> int:
        """Entries held, expired ones included until the next `expire()`."""
        return len(self._entries)

    def __contains__(self, key: object) -> bool:
        return self.get(key) is not None  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[K]:
        """Keys, oldest first (call `expire()` first to leave out expired ones)."""
        return iter(self._entries)

    @property
    def weight(self) -> int:
        """Total weight held (0 when no `max_weight` is set)."""
        return self._weight

    @property
    def max_entries(self) -> int | None:
        return self._max_entries

    @property
    def max_weight(self) -> int | None:
        return self._max_weight

    def weight_of(self, key: K) -> int:
        weights = self._weights
        return weights.get(key, 0) if weights is not None else 0

    def get(self, key: K, default: V | None = None, *, now: float | None = None) -> V | None:
        """The live value of `key`, without making it newer; an expired one is evicted.

        `now` (default: the clock) is the moment the question is asked for.
        """
        value = self._entries.get(key)
        if value is None:
            return default
        if (self._touched is not None or key in self._expires) and self._is_expired(
            key, self._clock() if now is None else now
        ):
            self._evict(key, EvictionReason.EXPIRED)
            return default
        return value

    def expires_at(self, key: K) -> float | None:
        """The absolute expiry `put` gave `key`, if any."""
        return self._expires.get(key)

    # -- writing ---------------------------------------------------------

    def put(
        self,
        key: K,
        value: V,
        *,
        weight: int = 1,
        expires_at: float | None = None,
        now: float | None = None,
    ) -> None:
        """Insert or replace `key` as the newest entry, evicting the oldest while over a bound.

        `now` (default: the clock) is when the entry counts as last touched.
        """
        if value is None:
            raise ValueError("BoundedStore cannot hold None")
        entries = self._entries
        weights = self._weights
        if weights is not None:
            if weight < 0 or weight > self._max_entry_weight or weight > self._weight_cap:
                raise ValueError(f"weight must be between 0 and max_entry_weight, got {weight}")
            self._weight -= weights.pop(key, 0)
        if key in entries:
            del entries[key]
            self._expires.pop(key, None)
        max_entries = self._max_entries
        if max_entries is not None and len(entries) >= max_entries:
            self._expire_before_evicting(now)
            while len(entries) >= max_entries:
                self._evict_oldest(EvictionReason.CAPACITY, now)
        if weights is not None:
            weight_cap = self._weight_cap
            if entries and self._weight + weight > weight_cap:
                self._expire_before_evicting(now)
            while entries and self._weight + weight > weight_cap:
                self._evict_oldest(EvictionReason.WEIGHT, now)
            weights[key] = weight
            self._weight += weight
        entries[key] = value
        if self._touched is not None:
            self._touched[key] = self._stamp(self._clock() if now is None else now)
        if expires_at is not None:
            self._expires[key] = expires_at
            self._heap_seq += 1
            heapq.heappush(self._expire_heap, (expires_at, self._heap_seq, key))
        self._mutations += 1
        if self._mutations >= _EXPIRE_INTERVAL:
            self._interval_expire()

    def grow(self, key: K, delta: int = 1, *, now: float | None = None) -> V | Refusal | None:
        """Add `delta` weight to a live `key`, make it newest, and return its value.

        Older entries are evicted to make room. Returns None when `key` is not
        held (an expired one is evicted first), or a `Refusal` (nothing
        changed) when the entry would pass `max_entry_weight` or could not fit
        under `max_weight` even alone. `now` (default: the clock) is when the
        growth happened.
        """
        weights = self._weights
        if weights is None:
            raise ValueError("grow() needs a store with max_weight")
        value = self._entries.get(key)
        if value is None:
            return None
        touched = self._touched
        if touched is not None or self._expires:
            if now is None:
                now = self._clock()
            if self._is_expired(key, now):
                self._evict(key, EvictionReason.EXPIRED)
                return None
        new_weight = weights[key] + delta
        if new_weight > self._max_entry_weight:
            return ENTRY_FULL
        weight_cap = self._weight_cap
        if new_weight > weight_cap:
            return NO_ROOM
        self._entries.move_to_end(key)
        if self._weight + delta > weight_cap:
            self._expire_before_evicting(now)
        # `key` is newest now (and live), so this never evicts it.
        while self._weight + delta > weight_cap:
            self._evict_oldest(EvictionReason.WEIGHT, now)
        weights[key] = new_weight
        self._weight += delta
        if touched is not None:
            touched[key] = self._stamp(now)  # type: ignore[arg-type]
        self._mutations += 1
        if self._mutations >= _EXPIRE_INTERVAL:
            self._interval_expire()
        return value

    def set_weight(self, key: K, weight: int) -> None:
        """Set a held entry's weight without making it newer (say, after compacting it)."""
        weights = self._weights
        if weights is None or key not in weights:
            raise KeyError(key)
        if weight < 0 or weight > self._max_entry_weight or weight > self._weight_cap:
            raise ValueError(f"weight must be between 0 and max_weight, got {weight}")
        self._weight += weight - weights[key]
        weights[key] = weight

    def pop(self, key: K, default: V | None = None) -> V | None:
        """Remove `key` as its owner's decision: not an eviction, not counted."""
        value = self._entries.pop(key, None)
        if value is None:
            return default
        self._forget(key)
        return value

    def expire(self, *, now: float | None = None) -> int:
        """Evict every expired entry; costs what it removes, not what it keeps.

        `now` (default: the clock) is the moment expiry is judged at.
        """
        if now is None:
            now = self._clock()
        removed = 0
        touched = self._touched
        if touched is not None:
            entries = self._entries
            ttl = self._ttl
            while entries:
                oldest = next(iter(entries))
                if now - touched[oldest] < ttl:  # type: ignore[operator]
                    break
                self._evict(oldest, EvictionReason.EXPIRED)
                removed += 1
        heap = self._expire_heap
        expires = self._expires
        while heap and heap[0][0] <= now:
            expires_at, _, key = heapq.heappop(heap)
            if expires.get(key) == expires_at:
                self._evict(key, EvictionReason.EXPIRED)
                removed += 1
        if len(heap) > 2 * len(expires) + 64:
            # Lazy removal left mostly stale heap items: rebuild from the live ones.
            self._expire_heap = [item for item in heap if expires.get(item[2]) == item[0]]
            heapq.heapify(self._expire_heap)
        return removed

    def clear(self) -> None:
        """Remove everything without counting evictions."""
        self._entries.clear()
        if self._weights is not None:
            self._weights.clear()
        if self._touched is not None:
            self._touched.clear()
        self._expires.clear()
        self._expire_heap.clear()
        self._weight = 0

    # -- internals -------------------------------------------------------

    def _stamp(self, now: float) -> float:
        # Touch stamps never go backwards, so insertion order stays idle-expiry order
        # even when the wall clock is stepped back.
        if now < self._last_stamp:
            return self._last_stamp
        self._last_stamp = now
        return now

    def _is_expired(self, key: K, now: float) -> bool:
        touched = self._touched
        if touched is not None and now - touched[key] >= self._ttl:  # type: ignore[operator]
            return True
        expires_at = self._expires.get(key)
        return expires_at is not None and expires_at <= now

    def _expire_before_evicting(self, now: float | None) -> None:
        # Expired entries anywhere in the order make room before a live one is pushed out.
        if self._touched is not None or self._expire_heap:
            self.expire(now=now)

    def _interval_expire(self) -> None:
        self._mutations = 0
        if self._touched is not None or self._expire_heap:
            self.expire()

    def _evict_oldest(self, reason: str, now: float | None) -> None:
        # An oldest entry that had expired by `now` is counted as expired, not as pushed out.
        entries = self._entries
        if (self._touched is not None or self._expires) and self._is_expired(
            next(iter(entries)), self._clock() if now is None else now
        ):
            reason = EvictionReason.EXPIRED
        key, value = entries.popitem(last=False)
        self._count_eviction(key, value, reason)

    def _evict(self, key: K, reason: str) -> None:
        self._count_eviction(key, self._entries.pop(key), reason)

    def _count_eviction(self, key: K, value: V, reason: str) -> None:
        self.evictions[reason] += 1
        self.evicted_weight += self._forget(key)
        if self.on_evict is not None:
            self.on_evict(key, value, reason)

    def _forget(self, key: K) -> int:
        weight = 0
        if self._weights is not None:
            weight = self._weights.pop(key, 0)
            self._weight -= weight
        if self._touched is not None:
            del self._touched[key]
        self._expires.pop(key, None)
        return weight


def _check_positive(name: str, value: float | None, *, numbers: bool = False) -> None:
    if value is None:
        return
    kinds: tuple[type, ...] = (int, float) if numbers else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds) or not value > 0:
        kind = "a positive number" if numbers else "a positive integer"
        raise ValueError(f"{name} must be {kind} or None, got {value!r}")
    if numbers and value == float("inf"):
        raise ValueError(f"{name} must be finite, got {value!r}")


def reinit_after_fork(method: Callable[[], None]) -> None:
    """Call the bound `method` in every forked child, so it can re-create its locks.

    A lock held by another thread at `fork()` would stay held forever in the
    child; the owner's `method` replaces it. Only a weak reference is kept, so
    registering does not keep the owner alive.
    """
    if not hasattr(os, "register_at_fork"):
        return
    weak_method = weakref.WeakMethod(method)

    def _after_in_child() -> None:
        reinit = weak_method()
        if reinit is not None:
            reinit()

    os.register_at_fork(after_in_child=_after_in_child)
