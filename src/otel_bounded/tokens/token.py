"""`CapabilityToken` and its compact, URL-safe wire form.

An encoded token is ``otb1.<key id>.<payload>.<signature>``: the payload is
base64url (no padding) of a canonical JSON array, and the signature is
base64url of HMAC-SHA256 over everything before the last dot. The key id
travels in the clear so a verifier can pick the key before trusting anything.
Signing the text rather than the parsed fields means nothing is parsed before
the signature is checked.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

__all__ = [
    "MAX_ENCODED_LENGTH",
    "TOKEN_PREFIX",
    "CapabilityToken",
    "FrozenDict",
]

TOKEN_PREFIX = "otb1"
"""The format version; a future format gets a new prefix, never a reinterpretation."""

MAX_ENCODED_LENGTH = 4096
"""Longest encoded token accepted or issued: longer text is rejected before any work."""

_MAX_CONSTRAINT_DEPTH = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")
TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
"""What a token id in a signed payload may look like."""
ISSUED_TOKEN_ID = re.compile(r"[A-Za-z0-9_-]{21}[AQgw]")
"""Exactly what `issue` makes, `secrets.token_urlsafe(16)`: 128 bits in 22 characters,
the last carrying 2 bits. Only this is taken as a bare id to revoke, so a
signature or a secret passed by mistake is refused, not exported on a span."""

# Decoding by hand skips what json.loads and urlsafe_b64decode redo on every call.
_FROM_URLSAFE = bytes.maketrans(b"-_", b"+/")
_DECODER = json.JSONDecoder()


class FrozenDict(dict[str, Any]):
    """A read-only dict: constraints stay as signed, and `json.dumps` takes them as they are.

    A `dict` subclass rather than a `MappingProxyType`, which the JSON encoder
    refuses; every method that would change it raises `TypeError`.
    """

    __slots__ = ()

    def _read_only(self, *_args: object, **_kwargs: object) -> NoReturn:
        raise TypeError("token constraints are read-only")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))

    def __repr__(self) -> str:
        return repr(dict(self))


class _Frozen(FrozenDict):
    """A `FrozenDict` this module froze itself: checked and frozen all the way down."""

    __slots__ = ()

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        return (FrozenDict, (dict(self),))


# Shared by every token without constraints: nothing can change it.
_NO_CONSTRAINTS: Mapping[str, Any] = _Frozen()

Payload = tuple[str, str, str, float, float, str, Mapping[str, Any]]
"""token_id, capability_id, principal_id, issued_at, expires_at, audit_id, constraints."""


def is_key_id(text: object) -> bool:
    """Whether `text` can be a key id: it sits between dots in the encoded form."""
    return isinstance(text, str) and _KEY_ID.fullmatch(text) is not None


@dataclass(frozen=True)
class CapabilityToken:
    """A signed grant of one capability to one principal until `expires_at`.

    Immutable all the way down (constraints are frozen into read-only dicts
    and tuples, which `json.dumps` takes as they are), so a token that
    verified once cannot be altered into another one in place. The signature
    is left out of `repr` and of `to_dict` so a logged token does not leak a
    credential.
    """

    token_id: str
    capability_id: str
    principal_id: str
    issued_at: float
    expires_at: float
    constraints: Mapping[str, Any]
    audit_id: str
    key_id: str
    signature: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "constraints", freeze_constraints(self.constraints))

    def to_dict(self) -> dict[str, Any]:
        """The verified claims as plain JSON values, as `jwt.decode` gives them; no signature.

        ``json.loads(json.dumps(token.to_dict())) == token.to_dict()``, and a
        token decoded from `encode()` gives the same dict.
        """
        return {
            "token_id": self.token_id,
            "capability_id": self.capability_id,
            "principal_id": self.principal_id,
            "issued_at": self.issued_at,
            "expires_at": self.expires_at,
            "audit_id": self.audit_id,
            "constraints": _thaw_all(self.constraints),
            "key_id": self.key_id,
        }

    def __repr__(self) -> str:
        return (
            f"CapabilityToken(token_id={self.token_id!r}, capability_id={self.capability_id!r}, "
            f"principal_id={self.principal_id!r}, issued_at={self.issued_at!r}, "
            f"expires_at={self.expires_at!r}, constraints={dict(self.constraints)!r}, "
            f"audit_id={self.audit_id!r}, key_id={self.key_id!r})"
        )

    def __hash__(self) -> int:
        return hash((self.token_id, self.signature))

    def encode(self) -> str:
        """The compact URL-safe text form, for headers, cookies and query strings."""
        return f"{signing_input(self.key_id, self._payload())}.{self.signature}"

    def _payload(self) -> Payload:
        """The signed fields, in their wire order."""
        return (
            self.token_id,
            self.capability_id,
            self.principal_id,
            self.issued_at,
            self.expires_at,
            self.audit_id,
            self.constraints,
        )


def signing_input(key_id: str, payload: Payload) -> str:
    """The text the signature covers, built canonically from the fields."""
    return f"{TOKEN_PREFIX}.{key_id}.{b64encode(_canonical_json(payload))}"


def b64encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _canonical_json(value: object) -> bytes:
    return json.dumps(
        value,
        separators=(",", ":"),
        sort_keys=True,
        ensure_ascii=True,
        allow_nan=False,
        default=_not_json,
    ).encode("ascii")


def _not_json(value: object) -> object:
    raise TypeError(f"not JSON: {type(value).__name__}")


def _thaw_all(value: object) -> Any:
    if isinstance(value, Mapping):
        return {key: _thaw_all(item) for key, item in value.items()}
    if isinstance(value, tuple):
        return [_thaw_all(item) for item in value]
    return value


def freeze_constraints(constraints: object) -> Mapping[str, Any]:
    """A deeply read-only copy of `constraints`; `ValueError` when it is not plain JSON."""
    if constraints is None:
        return _NO_CONSTRAINTS
    if not isinstance(constraints, Mapping):
        raise ValueError(
            f"constraints must be a mapping of str to JSON values, not {type(constraints).__name__}"
        )
    if not constraints:
        return _NO_CONSTRAINTS
    if constraints.__class__ is _Frozen:
        return constraints  # checked and frozen all the way down when it was made
    return _freeze_mapping(constraints, 0)


def _freeze(value: object, depth: int) -> object:
    if depth > _MAX_CONSTRAINT_DEPTH:
        raise ValueError(f"constraints nest deeper than {_MAX_CONSTRAINT_DEPTH} levels")
    if isinstance(value, str):
        return _text(value)
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"constraints cannot hold {value!r}: it has no JSON form")
        return value
    if isinstance(value, Mapping):
        return _freeze_mapping(value, depth)
    if isinstance(value, list | tuple):
        return tuple(_freeze(item, depth + 1) for item in value)
    raise ValueError(f"constraints hold only JSON values, not {type(value).__name__}")


def _freeze_mapping(mapping: Mapping[Any, Any], depth: int) -> Mapping[str, Any]:
    frozen: dict[str, object] = {}
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise ValueError(f"constraints keys must be str, got {key!r}")
        frozen[_text(key)] = _freeze(item, depth + 1)
    return _Frozen(frozen)


def _text(value: str) -> str:
    # A lone surrogate has no UTF-8 form: no store, exporter or other replica could read it.
    if not (value.isascii() or _is_utf8(value)):
        raise ValueError("constraints hold a string that is not valid UTF-8 (a lone surrogate)")
    return str.__str__(value)


def parse_payload(payload: str) -> Payload:
    """The fields of an authenticated payload; `ValueError` when it is not one of ours."""
    data = payload.encode("ascii").translate(_FROM_URLSAFE) + b"=" * (-len(payload) % 4)
    text = binascii.a2b_base64(data).decode("ascii")
    fields, end = _DECODER.raw_decode(text)
    if end != len(text):
        raise ValueError("payload has trailing data")
    if fields.__class__ is not list or len(fields) != 7:
        raise ValueError("payload is not a 7-field array")
    token_id, capability_id, principal_id, issued_at, expires_at, audit_id, constraints = fields
    # Exact types: the encoder only ever writes these, so anything else was not made by it.
    if (
        token_id.__class__ is not str
        or capability_id.__class__ is not str
        or principal_id.__class__ is not str
        or audit_id.__class__ is not str
        or issued_at.__class__ is not float
        or expires_at.__class__ is not float
        or constraints.__class__ is not dict
        or TOKEN_ID.fullmatch(token_id) is None
        or not math.isfinite(issued_at)
        or not math.isfinite(expires_at)
        or not (capability_id.isascii() or _is_utf8(capability_id))
        or not (principal_id.isascii() or _is_utf8(principal_id))
        or not (audit_id.isascii() or _is_utf8(audit_id))
    ):
        raise ValueError("payload fields have the wrong types")
    # What a token object would refuse to hold (1e400, NaN, deep nesting) is no token either.
    frozen = _freeze_mapping(constraints, 0) if constraints else _NO_CONSTRAINTS
    return token_id, capability_id, principal_id, issued_at, expires_at, audit_id, frozen


def _is_utf8(text: str) -> bool:
    # JSON escapes can spell lone surrogates, which no store or exporter can encode.
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True
