"""Checks on what callers pass a provider: each raises a clear, typed error and keeps nothing."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from otel_bounded import config
from otel_bounded.errors import TokenScopeError
from otel_bounded.tokens.token import MAX_ENCODED_LENGTH, TOKEN_PREFIX, signing_input

__all__ = [
    "check_encoded_length",
    "check_name",
    "check_utf8",
    "plain_ids",
    "positive_seconds",
    "skew_seconds",
]

SIGNATURE_LENGTH = 43  # base64url of 32 bytes, unpadded
WIDEST_FLOAT = -2.2250738585072014e-308
MAX_TTL_CEILING_SECONDS = config.MAX_TTL_CEILING_SECONDS


def check_encoded_length(
    key_id: str,
    token_id: str,
    capability_id: str,
    principal_id: str,
    audit_id: str,
    constraints: Mapping[str, Any],
) -> None:
    """`ValueError` unless the encoded token fits `MAX_ENCODED_LENGTH`, whatever its times."""
    # The longest float reprs stand in for timestamps not known yet.
    widest = (token_id, capability_id, principal_id, WIDEST_FLOAT, WIDEST_FLOAT, audit_id)
    signed = signing_input(key_id, (*widest, constraints))
    length = len(signed) + 1 + SIGNATURE_LENGTH
    if length > MAX_ENCODED_LENGTH:
        raise ValueError(
            f"the encoded token could reach {length} characters, above {MAX_ENCODED_LENGTH}: "
            "shorten the ids, audit_id or constraints"
        )


def plain_ids(principal_id: object, capability_id: object) -> tuple[str, str]:
    """The expected ids as plain `str`: a subclass's own `__eq__` must not decide scope."""
    plain = []
    for name, value in (("principal", principal_id), ("capability", capability_id)):
        if not isinstance(value, str):
            raise TokenScopeError(
                f"expected_{name}_id must be a str, not {type(value).__name__}: "
                "scope is compared exactly"
            )
        # Measured before it is copied; no id in a token is that long.
        plain.append(str.__str__(value) if len(value) <= MAX_ENCODED_LENGTH else "\0")
    return plain[0], plain[1]


def positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number of seconds above 0, got {value!r}")
    return float(value)


def skew_seconds(value: object) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not 0 <= value <= MAX_TTL_CEILING_SECONDS
    ):
        raise ValueError(
            "max_clock_skew_seconds must be a finite number of seconds, 0 or more "
            f"(at most {MAX_TTL_CEILING_SECONDS:.0f}), got {value!r}"
        )
    return float(value)


def check_name(name: str, value: object) -> None:
    # Never repeat the value: a token or secret passed here by mistake would leak into the error.
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got a {type(value).__name__}")
    if str.__contains__(value, _ENCODED_TOKEN_MARK):
        # An encoded token (perhaps behind "Bearer ") in an id would reach spans and stores.
        raise ValueError(f"{name} holds an encoded token; pass the id, never a token")
    check_utf8(name, value)


_ENCODED_TOKEN_MARK = f"{TOKEN_PREFIX}."


def check_utf8(name: str, value: str) -> None:
    # A lone surrogate has no UTF-8 form: SQLite, Redis and OTLP exporters would all fail on it.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} must be valid UTF-8 text: {value!r} is not") from None
