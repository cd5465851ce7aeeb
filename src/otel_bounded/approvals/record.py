"""`GrantRecord`: one approval as every store keeps it, immutable, holding no token.

A decision never changes a record in place: it returns a new one, which a
store writes only if the whole decision stands, so a refused or failed
operation leaves nothing half-written.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any, NamedTuple

from otel_bounded.approvals.model import ApprovalScope, ApprovalStatus, DelegationHop
from otel_bounded.approvals.names import folded
from otel_bounded.storage import StoreFailure

__all__ = ["GrantRecord", "Hop"]

Hop = tuple[str, str, "str | None"]
"""(actor, reason, session id): one link of a grant's chain of custody."""

_LIVE = frozenset({ApprovalStatus.PENDING.value, ApprovalStatus.GRANTED.value})
_STATUSES = frozenset(status.value for status in ApprovalStatus)
_FORMAT = 1  # bumped whenever the stored JSON changes meaning


class GrantRecord(NamedTuple):
    """One grant: keyed by its token's SHA-256, never by the token.

    A named tuple: immutable, and copied with changes (`replace`) several
    times faster than a frozen dataclass, on the path of every decision.
    """

    key: str
    policy: str
    action: str
    resource: str | None
    arguments_digest: str | None
    requested_by: str
    executor: str
    approving_actor: str | None
    status: str
    uses: int
    max_uses: int
    ttl_seconds: float
    expires_at: float
    """When a live grant expires (for an ended one, when it was due to)."""
    chain: tuple[Hop, ...] = ()
    closed_by: str | None = None
    forget_at: float | None = None
    """When an ended grant's record may be dropped: its end + the retention."""

    @property
    def approval_id(self) -> str:
        return self.key[:16]

    @property
    def live(self) -> bool:
        return self.status in _LIVE

    @property
    def pending(self) -> bool:
        return self.status == ApprovalStatus.PENDING.value

    @property
    def requester_key(self) -> str:
        """Whom `max_pending_per_requester` counts against: the folded requester, hashed."""
        name = folded(self.requested_by).encode("utf-8", "surrogatepass")
        return hashlib.sha256(name).hexdigest()

    @property
    def held_until(self) -> float:
        """Until when a store keeps this record as it is: its expiry, or its forget time."""
        return self.expires_at if self.forget_at is None else self.forget_at

    def scope(self) -> ApprovalScope:
        return ApprovalScope._restored(
            self.policy, self.action, self.resource, self.arguments_digest
        )

    def delegation_chain(self) -> tuple[DelegationHop, ...]:
        return tuple(DelegationHop(actor, reason, session) for actor, reason, session in self.chain)

    def replace(self, **changes: Any) -> GrantRecord:
        return self._replace(**changes)

    def ended(
        self, status: ApprovalStatus, at: float, by: str | None, retention_seconds: float
    ) -> GrantRecord:
        """This grant, ended with `status` at `at` (by `by`), kept `retention_seconds` more."""
        return self.replace(status=status.value, closed_by=by, forget_at=at + retention_seconds)

    def to_json(self) -> str:
        return json.dumps([_FORMAT, *self], ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> GrantRecord:
        """A record a store held; `StoreFailure` (fail closed) if it is not one we wrote."""
        try:
            data = json.loads(text)
            if not isinstance(data, list) or data[0] != _FORMAT:
                raise ValueError("unknown record format")
            fields: list[Any] = [*data[1:-3], tuple(_hop(hop) for hop in data[-3]), *data[-2:]]
            record = cls(*fields)
            record._validate()
        except (ValueError, TypeError, IndexError, UnicodeError) as exc:
            raise StoreFailure(f"an approval store holds a record it cannot read ({exc})") from None
        return record

    def _validate(self) -> None:
        strings = (self.key, self.policy, self.action, self.requested_by, self.executor)
        optional = (self.resource, self.arguments_digest, self.approving_actor, self.closed_by)
        numbers = (self.ttl_seconds, self.expires_at)
        if (
            not all(type(text) is str for text in strings)
            or not all(text is None or type(text) is str for text in optional)
            or self.status not in _STATUSES
            or not all(type(count) is int for count in (self.uses, self.max_uses))
            or not all(type(n) in (int, float) and math.isfinite(n) for n in numbers)
            or not (self.forget_at is None or type(self.forget_at) in (int, float))
        ):
            raise ValueError("a field has the wrong type")


def _hop(hop: object) -> Hop:
    if (
        isinstance(hop, list)
        and len(hop) == 3
        and type(hop[0]) is str
        and type(hop[1]) is str
        and (hop[2] is None or type(hop[2]) is str)
    ):
        return (hop[0], hop[1], hop[2])
    raise ValueError("a delegation hop has the wrong shape")
