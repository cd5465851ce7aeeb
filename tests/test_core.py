"""The eviction core: bounded, oldest first, deterministic, counted, expiry in O(removed)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bounded.core import ENTRY_FULL, NO_ROOM, BoundedStore, EvictionReason
from tests.support import FakeClock


def test_oldest_entry_is_evicted_first_when_max_entries_is_reached() -> None:
    evicted: list[tuple[str, int, str]] = []
    store: BoundedStore[str, int] = BoundedStore(
        3, on_evict=lambda k, v, r: evicted.append((k, v, r))
    )
    for index, key in enumerate("abcde"):
        store.put(key, index)
    assert list(store) == ["c", "d", "e"]
    assert evicted == [("a", 0, EvictionReason.CAPACITY), ("b", 1, EvictionReason.CAPACITY)]
    assert store.evictions[EvictionReason.CAPACITY] == 2


def test_putting_an_existing_key_makes_it_newest_without_evicting() -> None:
    store: BoundedStore[str, int] = BoundedStore(3)
    for key in "abc":
        store.put(key, 1)
    store.put("a", 2)
    store.put("d", 3)
    assert list(store) == ["c", "a", "d"]
    assert store.get("a") == 2
    assert store.evictions[EvictionReason.CAPACITY] == 1


def test_grow_evicts_oldest_other_entries_to_stay_under_max_weight() -> None:
    store: BoundedStore[str, list[int]] = BoundedStore(max_weight=10)
    store.put("old", [1], weight=4)
    store.put("mid", [2], weight=4)
    store.put("new", [3], weight=2)
    assert store.grow("new", 3) == [3]
    assert list(store) == ["mid", "new"]
    assert store.weight == 9
    assert store.evictions[EvictionReason.WEIGHT] == 1
    assert store.evicted_weight == 4


def test_grow_refuses_past_max_entry_weight_and_changes_nothing() -> None:
    store: BoundedStore[str, int] = BoundedStore(max_weight=100, max_entry_weight=3)
    store.put("a", 1, weight=3)
    store.put("b", 2, weight=1)
    assert store.grow("a") is ENTRY_FULL
    assert list(store) == ["a", "b"]
    assert store.weight_of("a") == 3


def test_grow_refuses_an_entry_that_cannot_fit_even_alone() -> None:
    store: BoundedStore[str, int] = BoundedStore(max_weight=5)
    store.put("other", 1, weight=1)
    store.put("big", 2, weight=5 - 1)
    assert store.grow("big", 2) is NO_ROOM
    # Nothing was evicted for a growth that could not happen anyway.
    assert list(store) == ["other", "big"]


def test_grow_of_a_missing_key_returns_none() -> None:
    store: BoundedStore[str, int] = BoundedStore(max_weight=5)
    assert store.grow("nope") is None


def test_idle_entries_expire_after_ttl_and_are_never_returned() -> None:
    clock = FakeClock()
    store: BoundedStore[str, int] = BoundedStore(ttl_seconds=10, clock=clock)
    store.put("a", 1)
    clock.advance(5)
    store.put("b", 2)
    clock.advance(5)
    assert store.get("a") is None  # idle exactly ttl: expired
    assert store.get("b") == 2
    assert store.evictions[EvictionReason.EXPIRED] == 1
    clock.advance(5)
    assert store.expire() == 1
    assert len(store) == 0


def test_clock_stepping_back_never_reorders_idle_expiry() -> None:
    clock = FakeClock()
    store: BoundedStore[str, int] = BoundedStore(ttl_seconds=10, clock=clock)
    store.put("a", 1)
    clock.advance(-5)
    store.put("b", 2)
    clock.advance(14)
    assert store.expire() == 0
    clock.advance(1)
    assert store.expire() == 2
    assert list(store) == []


def test_absolute_expiry_is_honoured_exactly_and_not_before() -> None:
    clock = FakeClock(100.0)
    store: BoundedStore[str, int] = BoundedStore(clock=clock)
    store.put("late", 1, expires_at=200.0)
    store.put("early", 2, expires_at=150.0)
    clock.now = 149.999
    assert store.expire() == 0
    assert store.get("early") == 2
    clock.now = 150.0
    assert store.get("early") is None
    assert store.get("late") == 1
    clock.now = 200.0
    assert store.expire() == 1
    assert store.expires_at("late") is None


def test_expire_removes_only_expired_entries_among_many_live_ones() -> None:
    clock = FakeClock(0.0)
    store: BoundedStore[int, int] = BoundedStore(clock=clock)
    for key in range(10_000):
        store.put(key, key, expires_at=1_000.0 + key)
    for key in range(10_000, 10_100):
        store.put(key, key, expires_at=10.0)
    clock.now = 10.0
    assert store.expire() == 100
    assert len(store) == 10_000
    assert store.evictions[EvictionReason.EXPIRED] == 100


def test_replaced_entry_keeps_only_its_new_expiry() -> None:
    clock = FakeClock(0.0)
    store: BoundedStore[str, int] = BoundedStore(clock=clock)
    store.put("a", 1, expires_at=10.0)
    store.put("a", 2, expires_at=20.0)
    clock.now = 15.0
    assert store.expire() == 0
    assert store.get("a") == 2


def test_an_expired_oldest_entry_is_counted_as_expired_not_as_pushed_out() -> None:
    clock = FakeClock()
    store: BoundedStore[str, int] = BoundedStore(2, ttl_seconds=10, clock=clock)
    store.put("a", 1)
    store.put("b", 2)
    clock.advance(10)
    store.put("c", 3)
    # Both had been idle for the ttl: both go as expired, before any is pushed out.
    assert store.evictions == {
        EvictionReason.CAPACITY: 0,
        EvictionReason.WEIGHT: 0,
        EvictionReason.EXPIRED: 2,
    }


def test_pop_and_clear_are_not_evictions() -> None:
    store: BoundedStore[str, int] = BoundedStore(2, max_weight=10)
    store.put("a", 1, weight=3)
    store.put("b", 2, weight=3)
    assert store.pop("a") == 1
    assert store.weight == 3
    store.clear()
    assert len(store) == 0
    assert store.weight == 0
    assert sum(store.evictions.values()) == 0


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"max_entries": 0}, "max_entries"),
        ({"max_entries": -1}, "max_entries"),
        ({"max_entries": 1.5}, "max_entries"),
        ({"max_entries": True}, "max_entries"),
        ({"max_weight": 0}, "max_weight"),
        ({"max_entry_weight": 2}, "needs max_weight"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": float("inf")}, "ttl_seconds"),
        ({"clock": 5}, "clock"),
        ({"clock": lambda: "now"}, "clock"),
    ],
)
def test_invalid_arguments_raise_value_error(arguments: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BoundedStore(**arguments)  # type: ignore[arg-type]


def test_none_values_and_oversized_weights_are_refused() -> None:
    store: BoundedStore[str, object] = BoundedStore(max_weight=5, max_entry_weight=2)
    with pytest.raises(ValueError, match="None"):
        store.put("a", None)
    with pytest.raises(ValueError, match="weight"):
        store.put("a", 1, weight=3)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 30), st.integers(0, 4), st.sampled_from(["put", "grow"])),
        max_size=200,
    ),
    st.integers(1, 8),
    st.integers(4, 20),
)
def test_bounds_hold_after_every_call_and_eviction_is_deterministic(
    operations: list[tuple[int, int, str]], max_entries: int, max_weight: int
) -> None:
    def run() -> tuple[list[int], dict[str, int], list[int]]:
        evicted: list[int] = []
        store: BoundedStore[int, int] = BoundedStore(
            max_entries, max_weight=max_weight, on_evict=lambda k, v, r: evicted.append(k)
        )
        for key, weight, operation in operations:
            if operation == "put":
                store.put(key, key, weight=weight)
            else:
                store.grow(key, weight)
            assert len(store) <= max_entries
            assert store.weight <= max_weight
            assert store.weight == sum(store.weight_of(k) for k in store)
        return list(store), dict(store.evictions), evicted

    assert run() == run()


def test_a_cap_evicts_an_expired_entry_before_a_live_older_one() -> None:
    clock = FakeClock()
    store: BoundedStore[str, str] = BoundedStore(2, clock=clock)
    store.put("live", "l", expires_at=clock.now + 3600)
    store.put("short", "s", expires_at=clock.now + 5)
    clock.advance(10)

    store.put("new", "n")

    assert list(store) == ["live", "new"]
    assert store.evictions[EvictionReason.EXPIRED] == 1
    assert store.evictions[EvictionReason.CAPACITY] == 0


def test_a_weight_bound_evicts_expired_entries_first_in_put_and_grow() -> None:
    clock = FakeClock()
    store: BoundedStore[str, str] = BoundedStore(max_weight=4, clock=clock)
    store.put("live", "l", weight=2, expires_at=clock.now + 3600)
    store.put("short", "s", weight=2, expires_at=clock.now + 5)
    clock.advance(10)
    store.put("new", "n", weight=1)
    assert list(store) == ["live", "new"]
    store.put("short2", "s", weight=1, expires_at=clock.now + 1)
    clock.advance(2)
    assert store.grow("new", 1) == "n"
    assert list(store) == ["live", "new"]
    assert store.evictions[EvictionReason.EXPIRED] == 2
    assert store.evictions[EvictionReason.WEIGHT] == 0


def _unexpired(store: BoundedStore[int, int], key: int, now: float) -> bool:
    expires_at = store.expires_at(key)
    return expires_at is None or expires_at > now


class _ModelEntry:
    """An entry of the reference model: a plain list, oldest first."""

    def __init__(self, key: int, expires_at: float | None) -> None:
        self.key = key
        self.expires_at = expires_at

    def expired(self, now: float) -> bool:
        return self.expires_at is not None and self.expires_at <= now


@settings(max_examples=150, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.tuples(
                st.just("put"), st.integers(0, 12), st.sampled_from([None, 1.0, 5.0, 50.0, 500.0])
            ),
            st.tuples(st.just("advance"), st.sampled_from([0.5, 3.0, 20.0, 100.0]), st.none()),
            st.tuples(st.just("get"), st.integers(0, 12), st.none()),
        ),
        max_size=120,
    ),
    st.integers(1, 6),
)
def test_a_cap_never_evicts_a_live_entry_while_an_expired_one_is_held(
    operations: list[tuple[str, float, float | None]], max_entries: int
) -> None:
    clock = FakeClock(0.0)
    pushed_out: list[int] = []
    store: BoundedStore[int, int] = BoundedStore(
        max_entries,
        clock=clock,
        on_evict=lambda k, v, r: pushed_out.append(k) if r == EvictionReason.CAPACITY else None,
    )
    model: list[_ModelEntry] = []
    model_pushed_out: list[int] = []
    for operation, argument, ttl in operations:
        now = clock.now
        if operation == "advance":
            clock.advance(argument)
        elif operation == "get":
            held = next((e for e in model if e.key == argument and not e.expired(now)), None)
            assert store.get(int(argument)) == (held.key if held else None)
        else:
            key = int(argument)
            model = [entry for entry in model if entry.key != key]
            if len(model) >= max_entries:
                model = [entry for entry in model if not entry.expired(now)]
            while len(model) >= max_entries:
                model_pushed_out.append(model.pop(0).key)
            model.append(_ModelEntry(key, None if ttl is None else now + ttl))
            store.put(key, key, expires_at=None if ttl is None else now + ttl)
        live = [entry.key for entry in model if not entry.expired(clock.now)]
        assert [key for key in store if _unexpired(store, key, clock.now)] == live
        assert pushed_out == model_pushed_out


@pytest.mark.parametrize("reading", [float("nan"), float("inf"), float("-inf")])
def test_a_clock_whose_first_reading_is_not_finite_is_refused(reading: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        BoundedStore(clock=lambda: reading)
