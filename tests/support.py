"""Small test helpers shared by every test module."""

from __future__ import annotations


class FakeClock:
    """A clock tests move by hand: a zero-argument callable returning Unix seconds."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds
