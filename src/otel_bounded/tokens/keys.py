"""Signing keys: secrets, key ids, rotation, and the check every token passes first.

A `Keyring` holds one keyed HMAC-SHA256 template per key id. It signs with
the active key and authenticates with any of them: the signature is checked
in constant time over the exact encoded text before a single field is parsed.
"""

from __future__ import annotations

import contextlib
import hmac as _stdlib_hmac
import os
import secrets
from collections.abc import Mapping

from cryptography.hazmat.primitives import hashes, hmac

from otel_bounded import config
from otel_bounded.errors import TokenInvalid
from otel_bounded.tokens.token import (
    MAX_ENCODED_LENGTH,
    TOKEN_PREFIX,
    CapabilityToken,
    Payload,
    b64encode,
    is_key_id,
    parse_payload,
)

__all__ = ["MIN_SECRET_BYTES", "Keyring", "Secret", "derive_key_id", "secret_from_env"]

MIN_SECRET_BYTES = config.MIN_SECRET_BYTES
"""Shortest secret accepted: HMAC-SHA256 keys shorter than its output weaken it."""

_KEY_ID_LABEL = b"otel-bounded key id"

Secret = bytes | str


def derive_key_id(secret: Secret) -> str:
    """The key id of a plain secret: deterministic, so replicas sharing it agree.

    The first 8 bytes of HMAC-SHA256(secret, label), in hex: a PRF output
    that says nothing about the secret. Use it as the key of the old secret
    when moving from a plain secret to a rotation mapping.
    """
    key = _secret_bytes(secret, "secret")
    mac = hmac.HMAC(key, hashes.SHA256())
    mac.update(_KEY_ID_LABEL)
    return mac.finalize()[:8].hex()


class Keyring:
    """The keys a provider verifies with, and the one it signs with."""

    __slots__ = ("_templates", "active_key_id", "development")

    def __init__(self, secret: Secret | Mapping[str, Secret] | None, active_key_id: str | None):
        self.development = secret is None
        if secret is None:
            secret = secrets.token_bytes(MIN_SECRET_BYTES)
        keyed = _keyed_secrets(secret, active_key_id)
        if active_key_id is None:
            active_key_id = next(iter(keyed))
        self.active_key_id = active_key_id
        self._templates = {key_id: hmac.HMAC(key, hashes.SHA256()) for key_id, key in keyed.items()}

    @property
    def key_ids(self) -> frozenset[str]:
        return frozenset(self._templates)

    def sign(self, key_id: str, signed: str) -> str:
        mac = self._templates[key_id].copy()
        mac.update(signed.encode("ascii"))
        return b64encode(mac.finalize())

    def authenticate(self, token_or_text: object) -> tuple[Payload, str, str]:
        """(payload fields, key id, signature) once the signature checks out, or `TokenInvalid`."""
        if token_or_text.__class__ is str:
            text: str = token_or_text
        elif isinstance(token_or_text, CapabilityToken):
            # Re-encoding proves the fields are exactly the ones that were signed.
            # Whatever a forged object's fields raise, it is no token.
            try:
                text = token_or_text.encode()
            except Exception:
                raise TokenInvalid("token fields cannot have been signed") from None
        elif isinstance(token_or_text, str):
            # Measured before it is copied: a str subclass may be hundreds of megabytes.
            if len(token_or_text) > MAX_ENCODED_LENGTH:
                raise TokenInvalid("not an otel-bounded token: too long or not ASCII")
            text = str.__str__(token_or_text)
        else:
            kind = type(token_or_text).__name__
            raise TokenInvalid(f"expected an encoded token or a CapabilityToken, not {kind}")
        if len(text) > MAX_ENCODED_LENGTH or not text.isascii():
            raise TokenInvalid("not an otel-bounded token: too long or not ASCII")
        signed, _, signature = text.rpartition(".")
        parts = signed.split(".")
        if len(parts) != 3 or parts[0] != TOKEN_PREFIX:
            raise TokenInvalid("not an otel-bounded token: malformed")
        key_id = parts[1]
        template = self._templates.get(key_id)
        if template is None:
            raise TokenInvalid(
                "token signed with an unknown key id: issued elsewhere, or its key was retired"
            )
        mac = template.copy()
        mac.update(signed.encode("ascii"))
        if not _stdlib_hmac.compare_digest(b64encode(mac.finalize()), signature):
            raise TokenInvalid("token signature does not match: altered or forged")
        try:
            fields = parse_payload(parts[2])
        except (ValueError, RecursionError):
            raise TokenInvalid("token payload is malformed") from None
        return fields, key_id, signature


def _keyed_secrets(
    secret: Secret | Mapping[str, Secret], active_key_id: str | None
) -> dict[str, bytes]:
    if not isinstance(secret, Mapping):
        if active_key_id is not None:
            raise ValueError("active_key_id applies to a mapping of secrets {key_id: secret}")
        key = _secret_bytes(secret, "secret")
        return {derive_key_id(key): key}
    if not secret:
        raise ValueError("secret mapping is empty: give at least one {key_id: secret}")
    keyed: dict[str, bytes] = {}
    for key_id, value in secret.items():
        if not is_key_id(key_id):
            raise ValueError(
                f"key id {key_id!r} must be 1 to 64 characters of A-Z, a-z, 0-9, _ or -"
            )
        keyed[key_id] = _secret_bytes(value, f"secret[{key_id!r}]")
    if active_key_id is None:
        if len(keyed) > 1:
            raise ValueError("several secrets given: name the one to sign with, active_key_id=")
    elif active_key_id not in keyed:
        raise ValueError(f"active_key_id {active_key_id!r} is not a key of the secret mapping")
    else:
        keyed = {active_key_id: keyed.pop(active_key_id), **keyed}
    return keyed


def _secret_bytes(secret: object, name: str) -> bytes:
    if isinstance(secret, str):
        secret = _utf8_secret(secret, name)
    if not isinstance(secret, bytes | bytearray):
        raise ValueError(f"{name} must be bytes or str, not {type(secret).__name__}")
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{name} is too short: an HMAC secret needs at least {MIN_SECRET_BYTES} bytes"
        )
    return bytes(secret)


def secret_from_env() -> bytes | None:
    """The secret ``OTEL_BOUNDED_TOKEN_SECRET`` or ``_SECRET_FILE`` gives, if either is set.

    No error names the value: a secret put in the file variable by mistake
    would otherwise be echoed, and neither message nor exception chain holds it.
    """
    text = config.read(config.TOKEN_SECRET)
    path = config.read(config.TOKEN_SECRET_FILE)
    if text is not None and path is not None:
        raise ValueError(
            f"set {config.TOKEN_SECRET.name} or {config.TOKEN_SECRET_FILE.name}, not both"
        )
    if path is not None:
        secret = _read_secret_file(path)
        name = config.TOKEN_SECRET_FILE.name
    elif text is not None:
        name = config.TOKEN_SECRET.name
        secret = _utf8_secret(text, name)
    else:
        return None
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(
            f"{name} is too short: an HMAC secret needs at least {MIN_SECRET_BYTES} bytes"
        )
    return secret


def _read_secret_file(path: str) -> bytes:
    failure: str | None = None
    try:
        with open(os.path.expanduser(path), "rb") as file:
            secret = file.read(1 << 16)
    except (OSError, ValueError) as exc:
        # Only the reason: the OSError itself quotes the path, which may be the secret.
        failure = exc.strerror if isinstance(exc, OSError) and exc.strerror else "invalid path"
    if failure is not None:
        # Raised outside the handler, so no __context__ carries the path either.
        raise ValueError(
            f"{config.TOKEN_SECRET_FILE.name} cannot be read ({failure}); it must name a file "
            "holding the secret (its value is not shown: it may be the secret itself)"
        )
    # Files written by `echo` or an editor end in one newline that is not part of
    # the key; anything more is the operator's, and kept.
    if secret.endswith(b"\r\n"):
        return secret[:-2]
    if secret.endswith(b"\n"):
        return secret[:-1]
    return secret


def _utf8_secret(secret: str, name: str) -> bytes:
    encoded: bytes | None = None
    # The error quotes the whole secret: it is dropped, and ours raised with no context.
    with contextlib.suppress(UnicodeEncodeError):
        encoded = secret.encode("utf-8")
    if encoded is None:
        raise ValueError(f"{name} is not valid UTF-8")
    return encoded
