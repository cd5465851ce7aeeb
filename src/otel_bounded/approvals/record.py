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

__all__ = ["GrantRecord"]

_LIVE = frozenset({ApprovalStatus.PENDING.value, ApprovalStatus.GRANTED.value})
_STATUSES = frozenset(status.value for status in ApprovalStatus)
_FORMAT = 1  # bumped whenever the stored JSON changes meaning
_FIELDS = 17  # the format number and the JSON fields `to_json` writes


class GrantRecord(NamedTuple):
    """One grant: keyed by its token's SHA-256, never by the token.

    A named tuple: immutable, and copied with changes (`replace`) several
    times faster than a frozen dataclass, on the path of every decision. It
    holds its own scope and hops, which audits share as they are.
    """

    key: str
    scope: ApprovalScope
    requested_by: str
    executor: str
    approving_actor: str | None
    status: str
    uses: int
    max_uses: int
    ttl_seconds: float
    expires_at: float
    """When a live grant expires (for an ended one, when it was due to)."""
    chain: tuple[DelegationHop, ...] = ()
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

    def replace(self, **changes: Any) -> GrantRecord:
        return self._replace(**changes)

    def ended(
        self, status: ApprovalStatus, at: float, by: str | None, retention_seconds: float
    ) -> GrantRecord:
        """This grant, ended with `status` at `at` (by `by`), kept `retention_seconds` more."""
        return self._replace(status=status.value, closed_by=by, forget_at=at + retention_seconds)

    def to_json(self) -> str:
        scope = self.scope
        fields = [
            _FORMAT,
            self.key,
            scope.policy,
            scope.action,
            scope.resource,
            scope.arguments_digest,
            self.requested_by,
            self.executor,
            self.approving_actor,
            self.status,
            self.uses,
            self.max_uses,
            self.ttl_seconds,
            self.expires_at,
            [[hop.actor, hop.reason, hop.session_id] for hop in self.chain],
            self.closed_by,
            self.forget_at,
        ]
        return json.dumps(fields, ensure_ascii=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str | bytes) -> GrantRecord:
        """A record a store held; `StoreFailure` (fail closed) if it is not one we wrote."""
        try:
            data = json.loads(text)
            if not isinstance(data, list) or len(data) != _FIELDS or data[0] != _FORMAT:
                raise ValueError("unknown record format")
            (_, key, policy, action, resource, digest, *people, chain, closed_by, forget_at) = data
            requested_by, executor, approving_actor, status, uses, max_uses, ttl, expires = people
            strings = (key, policy, action, requested_by, executor)
            optional = (resource, digest, approving_actor, closed_by)
            if (
                not all(type(text) is str for text in strings)
                or not all(text is None or type(text) is str for text in optional)
                or status not in _STATUSES
                or not all(type(count) is int for count in (uses, max_uses))
                or not all(_is_number(number) for number in (ttl, expires))
                or not (forget_at is None or _is_number(forget_at))
                or not isinstance(chain, list)
            ):
                raise ValueError("a field has the wrong type")
            return cls(
                key,
                ApprovalScope._restored(policy, action, resource, digest),
                requested_by,
                executor,
                approving_actor,
                status,
                uses,
                max_uses,
                ttl,
                expires,
                tuple(_hop(hop) for hop in chain),
                closed_by,
                forget_at,
            )
        except (ValueError, TypeError, UnicodeError) as exc:
            raise StoreFailure(f"an approval store holds a record it cannot read ({exc})") from None


def _is_number(value: object) -> bool:
    return type(value) in (int, float) and math.isfinite(value)  # type: ignore[arg-type]


def _hop(hop: object) -> DelegationHop:
    if (
        isinstance(hop, list)
        and len(hop) == 3
        and type(hop[0]) is str
        and type(hop[1]) is str
        and (hop[2] is None or type(hop[2]) is str)
    ):
        return DelegationHop(hop[0], hop[1], hop[2])
    raise ValueError("a delegation hop has the wrong shape")
