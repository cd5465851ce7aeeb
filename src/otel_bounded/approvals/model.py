"""The approval value types: what a ledger hands out, and never anything it can be forged from."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from enum import Enum

from otel_bounded.telemetry import ApprovalEvictionReason

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "ApprovalAudit",
    "ApprovalEvictionReason",
    "ApprovalGrant",
    "ApprovalOutcome",
    "ApprovalScope",
    "ApprovalStatus",
    "DelegationHop",
]

MAX_NAME_LENGTH = 256
"""Longest actor, session id, policy, action or resource: a ledger's memory is bounded by count."""
MAX_REASON_LENGTH = 1024
"""Longest free-text reason kept with a denial, revocation or delegation."""
# Unicode categories a name may not hold: they print as nothing (control, format,
# surrogate) or break the line (line and paragraph separators).
_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


class ApprovalStatus(str, Enum):
    """Where a grant is in its life; the last four are terminal and never left."""

    PENDING = "pending"
    GRANTED = "granted"
    CONSUMED = "consumed"
    EXPIRED = "expired"
    REVOKED = "revoked"
    DENIED = "denied"

    @property
    def is_terminal(self) -> bool:
        return self not in (ApprovalStatus.PENDING, ApprovalStatus.GRANTED)

    def __str__(self) -> str:
        return self.value


class ApprovalOutcome:
    """Values of ``otel_bounded.outcome`` on approval spans and the decisions metric."""

    ALLOWED = "allowed"
    REFUSED = "refused"


@dataclass(frozen=True)
class ApprovalScope:
    """What an approval authorises; two scopes match only when every field is equal.

    There is no wildcard and no prefix matching: an approval to deploy
    ``service-a`` says nothing about ``service-b``.
    """

    policy: str
    action: str
    resource: str | None = None

    def __post_init__(self) -> None:
        # Exact strings, so that matching is plain string equality and nothing else.
        object.__setattr__(self, "policy", check_name("policy", self.policy))
        object.__setattr__(self, "action", check_name("action", self.action))
        if self.resource is not None:
            object.__setattr__(self, "resource", check_name("resource", self.resource))


@dataclass(frozen=True)
class DelegationHop:
    """One link of a grant's chain of custody: who, why, and in which session."""

    actor: str
    reason: str
    session_id: str | None = None


@dataclass(frozen=True)
class ApprovalAudit:
    """The record of one operation on one grant, naming the people who did it.

    `actor` performed this operation. `delegation_chain` runs from the
    approver, through the executor it was granted to, to each delegate; its
    last hop is the current executor (empty until the grant is approved).
    `at` is the ledger clock's reading when the operation was decided.
    """

    operation: str
    actor: str
    approval_id: str
    scope: ApprovalScope
    requested_by: str
    approving_actor: str | None
    executing_actor: str
    status: ApprovalStatus
    uses: int
    max_uses: int
    expires_at: float
    delegated_execution: bool
    delegation_chain: tuple[DelegationHop, ...]
    at: float
    reason: str = ""


@dataclass(frozen=True)
class ApprovalGrant:
    """A new, pending approval request and the bearer token that names it.

    The token is the only copy the ledger ever hands out (the ledger keeps
    just its SHA-256), so it is left out of `repr` and of every audit: pass it
    to the approver and the executor, and to nothing that logs.
    """

    token: str = field(repr=False)
    approval_id: str
    scope: ApprovalScope
    requested_by: str
    executor: str
    status: ApprovalStatus
    max_uses: int
    expires_at: float
    """When the request lapses unless approved; approval sets a new expiry."""
    audit: ApprovalAudit


def plain_str(value: object) -> str | None:
    """`value` as an exact `str` when it is a string, else None; no method of `value` runs.

    A `str` subclass can redefine any method (`encode`, `__len__`, `__eq__`), so
    it is copied to a plain `str` before anything else touches it. The test is
    on `type()`: `isinstance` believes an object that forges its `__class__`.
    """
    if isinstance(value, str) and issubclass(type(value), str):
        return str.__str__(value)
    return None


def check_name(name: str, value: object) -> str:
    """`value` as an exact `str`; `ValueError` unless it is a name a person can read as written.

    Refused: anything but a string, the empty string, more than
    `MAX_NAME_LENGTH` characters, whitespace at either end, and characters that
    print as nothing or as a plain space (control and format characters, line
    and paragraph separators, spaces other than U+0020, lone surrogates).
    Otherwise ``"bot\u200b"`` would pass four eyes as someone other than
    ``"bot"`` while reading the same in every audit. The message never repeats
    the value: it may be a token passed in the wrong place.
    """
    text = plain_str(value)
    if text is None:
        raise ValueError(f"{name} must be a string, got a value of type {type(value).__name__}")
    if not text:
        raise ValueError(f"{name} must be a non-empty string")
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_NAME_LENGTH} characters, got {len(text)}")
    if text != text.strip():
        raise ValueError(f"{name} must not begin or end with whitespace")
    # isprintable() is one pass in C and true for nearly every name; only a name
    # it flags is looked at character by character.
    if not text.isprintable():
        for index, char in enumerate(text):
            category = unicodedata.category(char)
            if category in _UNSEEN_CATEGORIES or (category == "Zs" and char != " "):
                raise ValueError(
                    f"{name} must not contain U+{ord(char):04X} (Unicode category {category}, "
                    f"at index {index}): names may hold a plain space, but no control, format "
                    "or other invisible character"
                )
    return text


def same_person(name: str, other: str | None) -> bool:
    """Whether two checked names name the same person, for four eyes.

    Names are compared after Unicode compatibility normalisation and case
    folding (NFKC, then casefold, then NFKC again, since folding can leave
    text unnormalised): ``Bot``, ``BOT`` and ``bot`` typed in full-width
    letters are all ``bot``. This may only refuse more; records keep each
    name as given.
    """
    return other is not None and _folded(name) == _folded(other)


def _folded(name: str) -> str:
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())


def check_reason(name: str, value: object) -> str:
    """`value` as an exact `str`; `ValueError` unless it is a string of bounded length.

    A reason may be empty and may hold any character: it is free text for people.
    """
    text = plain_str(value)
    if text is None:
        raise ValueError(f"{name} must be a string, got a value of type {type(value).__name__}")
    if len(text) > MAX_REASON_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_REASON_LENGTH} characters, got {len(text)}")
    return text
