"""What a provider remembers of its own tokens: each until it expires, and its own cut-offs.

`revoke(token_id)` finds an exact expiry here, `revoke_all` counts the live
tokens it newly revokes, and `issue` stamps a principal's tokens after every
cut-off this provider set for it. Not thread-safe: the provider's lock guards it.
"""

from __future__ import annotations

import math

from otel_bounded.core import BoundedStore, Clock

__all__ = ["IssuedTokens"]

IssuedEntry = tuple[str, float, float]
"""principal_id, issued_at, expires_at."""


class IssuedTokens:
    """Live tokens this provider issued, by id and by principal; and its per-principal floors."""

    __slots__ = ("_by_principal", "_floors", "_tokens")

    def __init__(self, clock: Clock) -> None:
        # `clock` is the provider's now: entries expire by it and by nothing else.
        self._tokens: BoundedStore[str, IssuedEntry] = BoundedStore(
            clock=clock, on_evict=self._forget
        )
        self._by_principal: dict[str, set[str]] = {}
        # The latest cut-off this provider set per principal, until its now passes it.
        self._floors: BoundedStore[str, float] = BoundedStore(clock=clock)

    def __len__(self) -> int:
        """Tokens held, expired ones included until the next `expire`."""
        return len(self._tokens)

    @property
    def principal_count(self) -> int:
        return len(self._by_principal)

    def add(self, token_id: str, principal_id: str, issued_at: float, expires_at: float) -> None:
        self._tokens.put(token_id, (principal_id, issued_at, expires_at), expires_at=expires_at)
        self._by_principal.setdefault(principal_id, set()).add(token_id)

    def get(self, token_id: str, now: float) -> IssuedEntry | None:
        return self._tokens.get(token_id, now=now)

    def ids_of(self, principal_id: str) -> tuple[str, ...]:
        """The principal's token ids, expired ones included until the next `expire`."""
        return tuple(self._by_principal.get(principal_id, ()))

    def floor(self, principal_id: str) -> float:
        """The latest cut-off this provider set for `principal_id` that its now has not passed."""
        floor = self._floors.get(principal_id)
        return -math.inf if floor is None else floor

    def raise_floor(self, principal_id: str, cutoff: float) -> None:
        if cutoff > self.floor(principal_id):
            # Kept until now has passed it: from then on every stamp is above it anyway.
            self._floors.put(principal_id, cutoff, expires_at=math.nextafter(cutoff, math.inf))

    def expire(self) -> None:
        self._tokens.expire()
        self._floors.expire()

    def _forget(self, token_id: str, entry: IssuedEntry, _reason: str) -> None:
        # Called by the index: the principal's set shrinks with it.
        ids = self._by_principal.get(entry[0])
        if ids is not None:
            ids.discard(token_id)
            if not ids:
                del self._by_principal[entry[0]]
