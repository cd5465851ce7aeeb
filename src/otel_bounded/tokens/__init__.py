"""Capability tokens: `HMACTokenProvider`, `CapabilityToken` and the revocation stores."""

from otel_bounded.telemetry import SweepTrigger
from otel_bounded.tokens.provider import HMACTokenProvider, derive_key_id
from otel_bounded.tokens.revocations import (
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStore,
    SQLiteRevocationStore,
    open_revocation_store,
)
from otel_bounded.tokens.token import MAX_ENCODED_LENGTH, CapabilityToken, FrozenDict

__all__ = [
    "MAX_ENCODED_LENGTH",
    "CapabilityToken",
    "FrozenDict",
    "HMACTokenProvider",
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "RevocationStore",
    "SQLiteRevocationStore",
    "SweepTrigger",
    "derive_key_id",
    "open_revocation_store",
]
