"""What the ledger accepts as arguments: plain numbers and scopes exactly as we made them.

Every check copies its value to a plain type before comparing it, so no
method of a subclass (an `__eq__` that says yes, a `__gt__` that widens a
grant) ever runs; each raises `ValueError` naming the argument.
"""

from __future__ import annotations

import math

from otel_bounded.approvals.model import ApprovalScope
from otel_bounded.approvals.names import check_name

__all__ = ["check_count", "check_seconds", "requested_scope", "scope_fields"]

ScopeFields = tuple[str, str, str | None, str | None]
"""(policy, action, resource, arguments digest) as exact strings."""


def scope_fields(scope: object) -> ScopeFields | None:
    """The scope's fields as exact strings, or None if it is not a scope as we made it.

    Exactly the class, and exactly `str` fields: a subclass's `__eq__`, or a
    field overwritten with an object equal to everything (``mock.ANY``),
    matches nothing. No method of the scope or its fields runs.
    """
    if type(scope) is not ApprovalScope:
        return None
    read = object.__getattribute__
    fields = (
        read(scope, "policy"),
        read(scope, "action"),
        read(scope, "resource"),
        read(scope, "arguments_digest"),
    )
    policy, action, resource, digest = fields
    if type(policy) is not str or type(action) is not str:
        return None
    if not (resource is None or type(resource) is str) or not (
        digest is None or type(digest) is str
    ):
        return None
    return policy, action, resource, digest


def requested_scope(scope: object) -> ScopeFields:
    fields = scope_fields(scope)
    if fields is None:
        raise ValueError(
            "scope must be an ApprovalScope (not a subclass) whose fields are strings, "
            f"got a {type(scope).__name__}"
        )
    # Checked again: the fields of a frozen dataclass can still be overwritten.
    policy, action, resource, digest = fields
    check_name("policy", policy)
    check_name("action", action)
    if resource is not None:
        check_name("resource", resource)
    if digest is not None and (len(digest) != 64 or not set(digest) <= set("0123456789abcdef")):
        raise ValueError("scope.arguments_digest is not a SHA-256 digest")
    return fields


def check_count(name: str, value: object, *, minimum: int = 1) -> int:
    """`value` as a plain `int` >= `minimum`, or `ValueError`.

    Copied to a plain `int` before it is compared: a subclass's `__gt__` could
    let a delegation add uses.
    """
    # type(), not isinstance() alone: isinstance believes a forged __class__.
    if isinstance(value, int) and issubclass(type(value), int) and type(value) is not bool:
        count = int.__int__(value)
        if count >= minimum:
            return count
    raise ValueError(f"{name} must be an integer >= {minimum}, got {_described(value)}")


def check_seconds(name: str, value: object) -> float:
    """`value` as a plain, finite `float` > 0, or `ValueError`.

    Copied to a plain `float` before it is compared, as `check_count` does.
    """
    seconds = math.nan
    if isinstance(value, float) and issubclass(type(value), float):
        seconds = float.__float__(value)
    elif isinstance(value, int) and issubclass(type(value), int) and type(value) is not bool:
        try:
            seconds = float(int.__int__(value))
        except OverflowError:
            seconds = math.inf
    if seconds > 0 and not math.isinf(seconds):
        return seconds
    raise ValueError(f"{name} must be a finite number of seconds > 0, got {_described(value)}")


def _described(value: object) -> str:
    """An invalid argument as its error shows it: a plain number, else only its type.

    Never a string's text (a token passed in the wrong place would land in the
    message, and from there in logs), nor a subclass's own repr.
    """
    if type(value) is float or (type(value) is int and value.bit_length() <= 64):
        return repr(value)
    return f"a value of type {type(value).__name__}"
