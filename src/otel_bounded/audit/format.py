"""The audit log's on-disk format: one ASCII line per record, each chained to the one before.

A record is the line ``SEQ TAB TIME TAB KIND TAB PAYLOAD TAB HASH LF``: SEQ
counts from 0 with no gap, TIME is the writer's clock (Unix seconds), KIND
names what happened, PAYLOAD is compact JSON with every non-ASCII character
escaped (so any string, even a lone surrogate, round-trips), and HASH is the
hex SHA-256 of the previous record's hash followed by this line up to its last
tab. Editing, removing or reordering any byte breaks the chain; checkpoints
signed with Ed25519 seal it, so that a rewritten chain needs the private key.

Segments are files named after their first record, ``segment-<SEQ>.audit``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

__all__ = [
    "FORMAT_VERSION",
    "GENESIS_PREVIOUS",
    "SEGMENT_PATTERN",
    "SYSTEM_KINDS",
    "AuditKey",
    "CheckpointReason",
    "Kind",
    "ParsedLine",
    "checkpoint_message",
    "encode_line",
    "key_id_of",
    "load_private_key",
    "load_public_key",
    "parse_line",
    "public_key_from_hex",
    "retention_message",
    "segment_name",
    "signature_valid",
]

FORMAT_VERSION = 1

GENESIS_PREVIOUS = hashlib.sha256(b"otel-bounded audit log v1").digest()
"""What record 0 is chained to."""

SEGMENT_PATTERN = re.compile(r"segment-([0-9]{20})\.audit")

KIND_PATTERN = re.compile(r"[a-z][a-z0-9_]*(?:\.[a-z0-9_]+)*")
MAX_KIND_LENGTH = 64


class Kind:
    """Kinds the log writes itself; appended records may not use them."""

    GENESIS = "genesis"
    """Record 0: the format, a random log id and the public key of the signing key."""
    OPEN = "open"
    """The log was opened again: whether the last writer closed it, and any torn tail sealed."""
    CHECKPOINT = "checkpoint"
    """A signed statement of the chain so far: periodic, at each segment's end, and at close."""
    RETENTION = "retention"
    """A signed statement that the records up to a sequence number are removed under max_bytes."""
    GAP = "gap"
    """Appends that never reached the log (queue full, failed writes), counted by reason."""


SYSTEM_KINDS = frozenset({Kind.GENESIS, Kind.OPEN, Kind.CHECKPOINT, Kind.RETENTION, Kind.GAP})


class CheckpointReason:
    """Why a checkpoint was written (``reason`` in its payload)."""

    INTERVAL = "interval"
    SEGMENT_END = "segment_end"
    CLOSE = "close"


def segment_name(first_seq: int) -> str:
    return f"segment-{first_seq:020d}.audit"


_encode_json = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False).encode


def _refuse(value: object) -> object:
    raise TypeError(f"not JSON: {type(value).__name__}")


def _c_encoder() -> Callable[[Any], str]:
    # JSONEncoder.encode builds a C encoder on every call; the writer encodes
    # every record, so it builds one once. Falls back where there is none.
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return _encode_json
    encode_chunks = make(
        {}, _refuse, json.encoder.encode_basestring_ascii, None, ":", ",", False, False, False
    )

    def encode(payload: Any) -> str:
        return "".join(encode_chunks(payload, 0))

    return encode


encode_payload_fast = _c_encoder()
"""`encode_payload` for the writer thread alone (its circular-reference memo is not shared)."""


def encode_payload(payload: Mapping[str, Any]) -> str:
    """Compact ASCII JSON; raises `TypeError` or `ValueError` for what JSON cannot hold."""
    return _encode_json(payload)


def encode_line(
    seq: int, at: float, kind: str, payload_json: str, previous: bytes
) -> tuple[bytes, bytes]:
    """The record's line and its hash (what the next record chains to)."""
    body = f"{seq}\t{at!r}\t{kind}\t{payload_json}".encode("ascii")
    digest = hashlib.sha256(previous + body).digest()
    return b"%s\t%s\n" % (body, digest.hex().encode("ascii")), digest


class ParsedLine(NamedTuple):
    seq: int
    at: float
    kind: str
    payload: bytes
    body: bytes
    hash_hex: bytes


def parse_line(line: bytes) -> ParsedLine:
    """One line (without its newline); `ValueError` if it is not shaped as a record."""
    body, tab, hash_hex = line.rpartition(b"\t")
    fields = body.split(b"\t", 3)
    if not tab or len(fields) != 4 or len(hash_hex) != 64:
        raise ValueError("not a record line")
    seq_text, at_text, kind, payload = fields
    if not seq_text.isdigit():
        raise ValueError("sequence number is not a plain integer")
    return ParsedLine(int(seq_text), float(at_text), kind.decode("ascii"), payload, body, hash_hex)


def checkpoint_message(through: int, chain_hex: str, reason: str) -> bytes:
    """What a checkpoint signs: the chain through record `through`."""
    return f"otel-bounded audit checkpoint v1\n{through}\n{chain_hex}\n{reason}".encode("ascii")


def retention_message(removed_through: int, chain_hex: str, reason: str) -> bytes:
    """What a retention record signs: records up to `removed_through` are removed."""
    return f"otel-bounded audit retention v1\n{removed_through}\n{chain_hex}\n{reason}".encode(
        "ascii"
    )


def key_id_of(public_key: Ed25519PublicKey) -> str:
    """A short, stable name for a public key: 16 hex digits of its SHA-256."""
    return hashlib.sha256(_raw_public(public_key)).hexdigest()[:16]


def _raw_public(public_key: Ed25519PublicKey) -> bytes:
    return public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


class AuditKey:
    """The signing key of one log; never shown, only its public half and key id."""

    __slots__ = ("_private", "key_id", "public_hex")

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        public = private.public_key()
        self.public_hex = _raw_public(public).hex()
        self.key_id = key_id_of(public)

    def sign(self, message: bytes) -> str:
        return self._private.sign(message).hex()

    def __repr__(self) -> str:
        return f"AuditKey(key_id={self.key_id!r})"


_HEX_KEY = re.compile(r"[0-9a-fA-F]{64}")


def load_private_key(value: object) -> Ed25519PrivateKey:
    """An Ed25519 private key from a key object, its 32-byte seed, 64 hex digits or PEM text.

    The `ValueError` never quotes the value: it is a secret.
    """
    if isinstance(value, Ed25519PrivateKey):
        return value
    if isinstance(value, bytes | bytearray) and len(value) == 32:
        return Ed25519PrivateKey.from_private_bytes(bytes(value))
    if isinstance(value, str):
        text = value.strip()
        if _HEX_KEY.fullmatch(text):
            return Ed25519PrivateKey.from_private_bytes(bytes.fromhex(text))
        if text.startswith("-----BEGIN"):
            try:
                key = serialization.load_pem_private_key(text.encode("ascii"), password=None)
            except (ValueError, TypeError, UnicodeEncodeError):
                raise ValueError("the audit key is not a readable PEM private key") from None
            if isinstance(key, Ed25519PrivateKey):
                return key
            raise ValueError("the audit key must be an Ed25519 key")
    raise ValueError(
        "the audit key must be an Ed25519 private key: 64 hex digits (its seed) or PEM text "
        "(otel-bounded audit keygen makes one)"
    )


def public_key_from_hex(text: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(text))


def load_public_key(text: str) -> Ed25519PublicKey:
    """A verifier's key: 64 hex digits of the public key, or PEM (public, or private)."""
    stripped = text.strip()
    if _HEX_KEY.fullmatch(stripped):
        return public_key_from_hex(stripped)
    if stripped.startswith("-----BEGIN PUBLIC KEY"):
        try:
            key = serialization.load_pem_public_key(stripped.encode("ascii"))
        except (ValueError, UnicodeEncodeError):
            raise ValueError("not a readable PEM public key") from None
        if isinstance(key, Ed25519PublicKey):
            return key
        raise ValueError("the audit key must be an Ed25519 key")
    return load_private_key(stripped).public_key()


def signature_valid(public_key: Ed25519PublicKey, signature_hex: object, message: bytes) -> bool:
    if not isinstance(signature_hex, str) or len(signature_hex) != 128:
        return False
    try:
        public_key.verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True
