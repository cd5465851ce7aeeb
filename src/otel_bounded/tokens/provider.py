"""`HMACTokenProvider`: capability tokens whose revocations are kept exactly until expiry."""

from __future__ import annotations

import contextlib
import hmac as _stdlib_hmac
import math
import os
import secrets
import threading
import time
from collections.abc import Mapping
from typing import Any

from cryptography.hazmat.primitives import hashes, hmac
from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from otel_bounded import config, telemetry
from otel_bounded.core import (
    NO_AUDIT,
    AuditSink,
    BoundedStore,
    Clock,
    audit_from_env,
    reinit_after_fork,
    validate_clock,
)
from otel_bounded.errors import (
    RevocationStoreUnavailable,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    TokenScopeError,
)
from otel_bounded.telemetry import SweepTrigger
from otel_bounded.tokens.revocations import (
    MemoryRevocationStore,
    RevocationStore,
    open_revocation_store,
)
from otel_bounded.tokens.token import (
    ISSUED_TOKEN_ID,
    MAX_ENCODED_LENGTH,
    TOKEN_PREFIX,
    CapabilityToken,
    Payload,
    b64encode,
    freeze_constraints,
    is_key_id,
    parse_payload,
    signing_input,
)

__all__ = ["MAX_TTL_CEILING_SECONDS", "MIN_SECRET_BYTES", "HMACTokenProvider", "derive_key_id"]

MIN_SECRET_BYTES = config.MIN_SECRET_BYTES
"""Shortest secret accepted: HMAC-SHA256 keys shorter than its output weaken it."""

MAX_TTL_CEILING_SECONDS = config.MAX_TTL_CEILING_SECONDS
"""Largest `max_ttl_seconds` (and `max_clock_skew_seconds`): ten years.

Beyond it, retention arithmetic stops being meaningful (a Redis PX in
milliseconds overflows long before a float does), and no revocation should
have to be kept longer.
"""

_COMPONENT_TYPE = "otel_bounded_token_provider"
_KEY_ID_LABEL = b"otel-bounded key id"
_SIGNATURE_LENGTH = 43  # base64url of 32 bytes, unpadded
_WIDEST_FLOAT = -2.2250738585072014e-308

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


class HMACTokenProvider:
    """Issues, verifies and revokes HMAC-SHA256 capability tokens.

    Revocations are bounded by expiry, not by count: each entry stays exactly
    until the token it blocks expires (dropping one earlier would un-revoke a
    live token), and a sweep removes the rest at a cost proportional to what
    it removes. `verify` is the hot path: one HMAC, dictionary lookups and
    one lock; it logs nothing and creates no span.

    The provider's now never goes back: it is the clock's reading, or the
    highest one seen if the clock stepped back. A sweep at a later reading
    removed entries a step back would otherwise need again.
    """

    def __init__(
        self,
        secret: Secret | Mapping[str, Secret] | None = None,
        *,
        active_key_id: str | None = None,
        clock: Clock = time.time,
        max_ttl_seconds: float = config.TOKEN_MAX_TTL_SECONDS.default,
        max_clock_skew_seconds: float = 60.0,
        sweep_interval_seconds: float = config.TOKEN_SWEEP_INTERVAL_SECONDS.default,
        revocations: RevocationStore | str | None = None,
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        audit: AuditSink = NO_AUDIT,
    ) -> None:
        self._clock = validate_clock(clock)
        self._audit = audit
        self._max_ttl = _positive_seconds("max_ttl_seconds", max_ttl_seconds)
        if self._max_ttl > MAX_TTL_CEILING_SECONDS:
            raise ValueError(
                f"max_ttl_seconds must be at most {MAX_TTL_CEILING_SECONDS:.0f} (ten years), "
                f"got {max_ttl_seconds!r}"
            )
        self._max_skew = _skew_seconds(max_clock_skew_seconds)
        self._sweep_interval = _positive_seconds("sweep_interval_seconds", sweep_interval_seconds)
        self._keys, self._active_key_id, self._development_secret = _load_keys(
            secret, active_key_id
        )
        self._owns_store = revocations is None or isinstance(revocations, str)
        if revocations is None:
            self._store: RevocationStore = MemoryRevocationStore()
        elif isinstance(revocations, str):
            self._store = open_revocation_store(revocations)
        else:
            self._store = revocations
        self._lock = threading.Lock()
        # Never below a time the store was swept at: the entries that sweep
        # removed are gone, even if this process started after a clock step back.
        self._now = max(float(self._clock()), self._swept_through())
        # Every token this provider issued and that has not expired, so that
        # revoke_all can count them and revoke(id) can find an exact expiry.
        self._issued: BoundedStore[str, tuple[str, float, float]] = BoundedStore(
            clock=self._read_now, on_evict=self._forget_issued
        )
        self._issued_by_principal: dict[str, set[str]] = {}
        # issued_at never at or before a cut-off this provider set.
        self._issue_floor = -math.inf
        self._last_sweep = self._now
        self._swept = 0
        self._last_count = 0
        self._outcomes = dict.fromkeys(telemetry.VerificationOutcome.ALL, 0)
        self.component = telemetry.component_attributes(_COMPONENT_TYPE)
        self._span_attributes = {
            **self.component,
            telemetry.REVOCATION_STORE_KIND: self._store.kind,
        }
        self._tracer = telemetry.get_tracer(tracer_provider)
        reinit_after_fork(self._at_fork_reinit)
        telemetry.register_token_instruments(meter_provider, self, self.component)
        if self._development_secret:
            telemetry.logger.warning(
                "HMACTokenProvider %s has no secret and is using a random development secret: "
                "its tokens will not verify on other replicas, and neither they nor its "
                "revocations survive a restart. Set %s (or %s) to a secret of at least %d bytes.",
                self.component[telemetry.COMPONENT_NAME],
                config.TOKEN_SECRET.name,
                config.TOKEN_SECRET_FILE.name,
                MIN_SECRET_BYTES,
            )

    @classmethod
    def from_env(cls, **overrides: Any) -> HMACTokenProvider:
        """A provider configured from the ``OTEL_BOUNDED_TOKEN_*`` variables; arguments win.

        An invalid secret or revocation store raises `ValueError` naming the
        variable: falling back would silently change keys or lose revocations.
        """
        settings = config.read_arguments(
            {
                "max_ttl_seconds": config.TOKEN_MAX_TTL_SECONDS,
                "sweep_interval_seconds": config.TOKEN_SWEEP_INTERVAL_SECONDS,
            },
            overrides,
        )
        if "secret" not in overrides:
            settings["secret"] = _secret_from_env()
        if "audit" not in overrides:
            settings["audit"] = audit_from_env()
        opened: RevocationStore | None = None
        if "revocations" not in overrides:
            url = config.read(config.REVOCATION_STORE)
            try:
                opened = open_revocation_store(url)
            except ValueError as exc:
                raise ValueError(f"{config.REVOCATION_STORE.name} is invalid: {exc}") from None
            settings["revocations"] = opened
        try:
            provider = cls(**settings)
        except BaseException:
            if opened is not None:
                opened.close()
            raise
        provider._owns_store = provider._owns_store or opened is not None
        return provider

    # -- properties --------------------------------------------------------

    @property
    def key_id(self) -> str:
        """The id of the key new tokens are signed with."""
        return self._active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of every key that verifies: the active one and those kept for rotation."""
        return frozenset(self._keys)

    @property
    def max_ttl_seconds(self) -> float:
        return self._max_ttl

    @property
    def max_clock_skew_seconds(self) -> float:
        return self._max_skew

    @property
    def sweep_interval_seconds(self) -> float:
        return self._sweep_interval

    @property
    def revocations(self) -> RevocationStore:
        return self._store

    @property
    def revocation_count(self) -> int:
        """Revocation entries held, token ids and per-principal cut-offs together."""
        with self._lock:
            count = self._store.count()
            self._last_count = count
        return count

    @staticmethod
    def key_id_for(secret: Secret) -> str:
        """The key id a plain `secret` gets (see `derive_key_id`)."""
        return derive_key_id(secret)

    # -- tokens ------------------------------------------------------------

    def issue(
        self,
        capability_id: str,
        principal_id: str,
        *,
        ttl_seconds: float = 3600,
        constraints: Mapping[str, Any] | None = None,
        audit_id: str = "",
    ) -> CapabilityToken:
        """A new token granting `capability_id` to `principal_id` for `ttl_seconds`."""
        _check_name("capability_id", capability_id)
        _check_name("principal_id", principal_id)
        if not isinstance(audit_id, str):
            raise ValueError(f"audit_id must be a str, got {type(audit_id).__name__}")
        _check_utf8("audit_id", audit_id)
        ttl = _positive_seconds("ttl_seconds", ttl_seconds)
        if ttl > self._max_ttl:
            raise ValueError(
                f"ttl_seconds={ttl_seconds!r} is above max_ttl_seconds={self._max_ttl!r}; "
                f"pass a shorter ttl_seconds or raise {config.TOKEN_MAX_TTL_SECONDS.name}"
            )
        frozen = freeze_constraints(constraints)
        token_id = secrets.token_urlsafe(16)
        self._check_encoded_length(token_id, capability_id, principal_id, audit_id, frozen)
        self._maybe_sweep()
        with self._lock:
            issued_at = self._tick()[1]
            if issued_at <= self._issue_floor:
                issued_at = math.nextafter(self._issue_floor, math.inf)
            expires_at = issued_at + ttl
            if expires_at <= issued_at:
                raise ValueError(f"ttl_seconds={ttl_seconds!r} is lost in the clock's precision")
            # Now has reached every issued_at stamped here, so a later cut-off covers it.
            self._now = issued_at
            self._issued.put(token_id, (principal_id, issued_at, expires_at), expires_at=expires_at)
            self._issued_by_principal.setdefault(principal_id, set()).add(token_id)
        key_id = self._active_key_id
        payload = (token_id, capability_id, principal_id, issued_at, expires_at, audit_id, frozen)
        return CapabilityToken(
            token_id=token_id,
            capability_id=capability_id,
            principal_id=principal_id,
            issued_at=issued_at,
            expires_at=expires_at,
            constraints=frozen,
            audit_id=audit_id,
            key_id=key_id,
            signature=self._sign(key_id, signing_input(key_id, payload)),
        )

    def decode(self, text: str) -> CapabilityToken:
        """The token `text` encodes, once its signature and lifetime check out.

        Says nothing about expiry, revocation or scope: that is `verify`.
        """
        if not isinstance(text, str):
            raise TokenInvalid(f"expected an encoded token (str), not {type(text).__name__}")
        fields = self._authenticate(text, self._peek_now())
        token_id, capability_id, principal_id, issued_at, expires_at, audit_id, constraints = fields
        signed, _, signature = str.__str__(text).rpartition(".")
        return CapabilityToken(
            token_id=token_id,
            capability_id=capability_id,
            principal_id=principal_id,
            issued_at=issued_at,
            expires_at=expires_at,
            constraints=constraints,
            audit_id=audit_id,
            key_id=signed.split(".")[1],
            signature=signature,
        )

    def verify(
        self,
        token_or_text: CapabilityToken | str,
        *,
        expected_principal_id: str,
        expected_capability_id: str,
    ) -> None:
        """Return if the token is authentic, unexpired, in scope and not revoked; else raise.

        Raises `TokenInvalid`, `TokenExpired`, `TokenScopeError`,
        `TokenRevoked` or `RevocationStoreUnavailable`, all `TokenError`s.
        """
        now = self._peek_now()
        if now - self._last_sweep >= self._sweep_interval:
            self._maybe_sweep()
            now = self._peek_now()
        try:
            token_id, capability_id, principal_id, issued_at, expires_at, _, _ = self._authenticate(
                token_or_text, now
            )
        except TokenInvalid:
            self._count(telemetry.VerificationOutcome.INVALID, now)
            raise
        if now >= expires_at:
            self._count(telemetry.VerificationOutcome.EXPIRED, now)
            raise _expired(token_id, expires_at)
        if principal_id != expected_principal_id or capability_id != expected_capability_id:
            self._count(telemetry.VerificationOutcome.SCOPE_MISMATCH, now)
            raise TokenScopeError(
                f"token {token_id} grants another principal or capability than the one "
                "it was presented for",
                token_id=token_id,
            )
        store = self._store
        outcomes = telemetry.VerificationOutcome
        if store.thread_safe:
            try:
                revoked = store.is_revoked(token_id, principal_id, issued_at, now)
            except RevocationStoreUnavailable:
                self._count(outcomes.UNAVAILABLE, now)
                raise
            with self._lock:
                # A sweep since `now` may have removed the entry: then the token has expired.
                now = self._advance_now(now)
                outcome = (
                    outcomes.REVOKED
                    if revoked
                    else outcomes.EXPIRED
                    if now >= expires_at
                    else outcomes.OK
                )
                self._outcomes[outcome] += 1
        else:
            # Expiry is judged at the reading the lookup is made at, under the lock every
            # sweep holds, so no sweep can remove the entry in between. (`_advance_now`,
            # inlined: this is the hot path.)
            with self._lock:
                reading = self._clock()
                if reading > now:
                    now = reading
                if now > self._now:
                    self._now = float(now)
                else:
                    now = self._now
                if now >= expires_at:
                    outcome = outcomes.EXPIRED
                else:
                    try:
                        revoked = store.is_revoked(token_id, principal_id, issued_at, now)
                    except RevocationStoreUnavailable:
                        self._outcomes[outcomes.UNAVAILABLE] += 1
                        raise
                    outcome = outcomes.REVOKED if revoked else outcomes.OK
                self._outcomes[outcome] += 1
        if outcome == outcomes.OK:
            return
        if outcome == outcomes.EXPIRED:
            raise _expired(token_id, expires_at)
        raise TokenRevoked(
            f"token {token_id} was revoked; ask its issuer for a new one", token_id=token_id
        )

    # -- revocation --------------------------------------------------------

    def revoke(self, token_or_id: CapabilityToken | str) -> bool:
        """Revoke a token (a `CapabilityToken`, its encoded text, or a bare token id).

        The entry is kept until the token expires: the expiry comes from the
        token, from this provider's index, or for an id it never saw, the
        latest such a token could expire (now + `max_ttl_seconds` +
        `max_clock_skew_seconds`, as its issuer's clock may be ahead). Returns
        True when the token was newly revoked; False when it already was, or
        has already expired. An encoded token that does not authenticate
        raises `TokenInvalid` (revoke it by id instead), and so does a string
        that is neither an encoded token nor shaped like the ids `issue` makes.
        """
        self._maybe_sweep()
        with self._tracer.start_as_current_span(
            telemetry.SPAN_TOKEN_REVOKE, attributes=self._span_attributes
        ) as span:
            known: tuple[str, float, float] | None = None
            if isinstance(token_or_id, CapabilityToken) or (
                isinstance(token_or_id, str) and token_or_id.startswith(TOKEN_PREFIX + ".")
            ):
                # No clock check: a token issued in the future still verifies once that
                # future comes, so its revocation must hold until it expires.
                token_id, capability_id, principal_id, issued_at, expires_at, _, _ = (
                    self._authenticate(token_or_id, None)
                )
                known = (principal_id, issued_at, expires_at)
                span.set_attribute(telemetry.CAPABILITY_ID, capability_id)
                span.set_attribute(
                    telemetry.TOKEN_KEY_ID,
                    token_or_id.key_id
                    if isinstance(token_or_id, CapabilityToken)
                    else token_or_id.split(".", 2)[1],
                )
            elif isinstance(token_or_id, str) and ISSUED_TOKEN_ID.fullmatch(token_or_id):
                token_id = str.__str__(token_or_id)
            else:
                # Never echoed: it may be a signature or a secret pasted by mistake.
                raise TokenInvalid(
                    "revoke takes a CapabilityToken, an encoded token or a token id "
                    "(22 characters, as issue makes them)"
                )
            span.set_attribute(telemetry.TOKEN_ID, token_id)
            store = self._store
            with self._lock:
                reading, now = self._tick()
                if known is None:
                    known = self._issued.get(token_id, now=now)
                # An unknown id's token may come from a clock up to the skew ahead.
                expires_at = known[2] if known is not None else now + self._max_ttl + self._max_skew
                newly = False
                if expires_at > now:
                    already = known is not None and store.is_revoked(
                        token_id, known[0], known[1], now
                    )
                    added = store.revoke_token(token_id, expires_at, reading)
                    newly = added and not already
            if known is not None:
                span.set_attribute(telemetry.PRINCIPAL_ID, known[0])
            span.set_attribute(telemetry.TOKEN_EXPIRES_AT, expires_at)
            span.set_attribute(telemetry.REVOKE_NEWLY, newly)
        self._audit.append(
            telemetry.AUDIT_TOKEN_REVOKE,
            {
                "token_id": token_id,
                "principal_id": known[0] if known is not None else None,
                "expires_at": expires_at,
                "newly_revoked": newly,
                **self._span_attributes,
            },
        )
        return newly

    def revoke_all(self, principal_id: str) -> int:
        """Revoke every token of `principal_id` issued up to now, by anyone sharing the secret.

        Sets a per-principal cut-off, kept for `max_ttl_seconds`, blocking
        tokens with ``issued_at <= cutoff``; tokens this provider issues
        afterwards get a later ``issued_at``. Returns how many live tokens
        this provider issued to the principal were newly revoked.
        """
        _check_name("principal_id", principal_id)
        self._maybe_sweep()
        with self._tracer.start_as_current_span(
            telemetry.SPAN_TOKEN_REVOKE_ALL, attributes=self._span_attributes
        ) as span:
            span.set_attribute(telemetry.PRINCIPAL_ID, principal_id)
            store = self._store
            with self._lock:
                # Read under the lock, after any sweep and wait: a token issued meanwhile
                # is covered too. Now has reached every issued_at stamped here.
                reading, cutoff = self._tick()
                newly = 0
                for token_id in tuple(self._issued_by_principal.get(principal_id, ())):
                    entry = self._issued.get(token_id, now=cutoff)
                    if (
                        entry is not None
                        and entry[2] > cutoff
                        and not store.is_revoked(token_id, principal_id, entry[1], cutoff)
                    ):
                        newly += 1
                store.revoke_principal(principal_id, cutoff, cutoff + self._max_ttl, reading)
                if cutoff > self._issue_floor:
                    self._issue_floor = cutoff
            span.set_attribute(telemetry.REVOKE_ALL_CUTOFF, cutoff)
            span.set_attribute(telemetry.REVOKE_ALL_COUNT, newly)
        self._audit.append(
            telemetry.AUDIT_TOKEN_REVOKE_ALL,
            {
                "principal_id": principal_id,
                "cutoff": cutoff,
                "newly_revoked": newly,
                **self._span_attributes,
            },
        )
        return newly

    def sweep(self) -> int:
        """Remove revocations whose tokens have expired; return how many went.

        Holds the revocation lock; costs what it removes, not what it keeps.
        Never removes an entry before its token expires.
        """
        return self._sweep(SweepTrigger.MANUAL)

    # -- telemetry ---------------------------------------------------------

    def telemetry_counts(self) -> telemetry.TokenCounts:
        """What the token instruments read at collection time."""
        with self._lock:
            # Unreachable store: the last known count stands; verifications report it.
            with contextlib.suppress(RevocationStoreUnavailable):
                self._last_count = self._store.count()
            return telemetry.TokenCounts(
                revocations=self._last_count,
                swept=self._swept,
                verifications=dict(self._outcomes),
            )

    def close(self) -> None:
        """Close the revocation store if this provider opened it."""
        if self._owns_store:
            self._store.close()

    def __enter__(self) -> HMACTokenProvider:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return (
            f"HMACTokenProvider(key_id={self._active_key_id!r}, max_ttl_seconds={self._max_ttl!r}, "
            f"revocations={self._store!r})"
        )

    # -- internals -------------------------------------------------------

    def _authenticate(self, token_or_text: object, now: float | None) -> Payload:
        """The payload fields, once the signature and lifetime check out; else `TokenInvalid`.

        With `now`, a token issued further ahead of it than `max_clock_skew_seconds`
        is refused too: it would escape cut-offs and outlive revocations by id.
        """
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
        key = self._keys.get(parts[1])
        if key is None:
            raise TokenInvalid(
                "token signed with an unknown key id: issued elsewhere, or its key was retired"
            )
        mac = key.copy()
        mac.update(signed.encode("ascii"))
        if not _stdlib_hmac.compare_digest(b64encode(mac.finalize()), signature):
            raise TokenInvalid("token signature does not match: altered or forged")
        try:
            fields = parse_payload(parts[2])
        except (ValueError, RecursionError):
            raise TokenInvalid("token payload is malformed") from None
        issued_at = fields[3]
        if not issued_at < fields[4] <= issued_at + self._max_ttl:
            raise TokenInvalid(
                "token lifetime exceeds this provider's max_ttl_seconds",
                token_id=fields[0],
            )
        if now is not None and issued_at > now + self._max_skew:
            raise TokenInvalid(
                "token issued in the future: replica clocks disagree by more than "
                "max_clock_skew_seconds",
                token_id=fields[0],
            )
        return fields

    def _sign(self, key_id: str, signed: str) -> str:
        mac = self._keys[key_id].copy()
        mac.update(signed.encode("ascii"))
        return b64encode(mac.finalize())

    def _check_encoded_length(
        self,
        token_id: str,
        capability_id: str,
        principal_id: str,
        audit_id: str,
        constraints: Mapping[str, Any],
    ) -> None:
        # The longest float reprs stand in for timestamps not known yet.
        widest = (token_id, capability_id, principal_id, _WIDEST_FLOAT, _WIDEST_FLOAT, audit_id)
        signed = signing_input(self._active_key_id, (*widest, constraints))
        length = len(signed) + 1 + _SIGNATURE_LENGTH
        if length > MAX_ENCODED_LENGTH:
            raise ValueError(
                f"the encoded token could reach {length} characters, above {MAX_ENCODED_LENGTH}: "
                "shorten the ids, audit_id or constraints"
            )

    def _count(self, outcome: str, now: float) -> None:
        with self._lock:
            if now > self._now:
                self._now = now
            self._outcomes[outcome] += 1

    # -- time --------------------------------------------------------------

    def _tick(self) -> tuple[float, float]:
        """(the clock's reading, the provider's now); the caller holds the lock.

        Now is the highest time seen, so expiry decisions, sweeps and lookups
        never go back. The reading (never above now) is what a store that
        counts time itself (Redis PX) measures retention from: a clock
        stepped back has that much more real time to run before the token
        expires here.
        """
        reading = self._clock()
        now = self._now
        if reading > now:
            now = self._now = float(reading)
        return (reading if reading <= now else now), now

    def _advance_now(self, floor: float) -> float:
        """The provider's now, at least `floor` (a reading taken earlier); hold the lock."""
        now = self._tick()[1]
        if floor > now:
            now = self._now = floor
        return now

    def _peek_now(self) -> float:
        """The provider's now, without the lock and without recording it.

        For decisions that either refuse, or are checked again under the lock
        (`_advance_now`) before anything is allowed.
        """
        reading = self._clock()
        now = self._now
        return reading if reading > now else now

    def _read_now(self) -> float:
        # The issued-token index's clock: the provider's now, without a new reading.
        return self._now

    def _swept_through(self) -> float:
        """The latest time the store was swept at, if it keeps one (a file others share)."""
        swept_through = getattr(self._store, "swept_through", None)
        if swept_through is None:
            return -math.inf
        # Unreachable: every call fails closed anyway, and the next sweep reads it again.
        with contextlib.suppress(RevocationStoreUnavailable):
            return float(swept_through())
        return -math.inf

    def _maybe_sweep(self) -> None:
        with self._lock:
            now = self._tick()[1]
            if now - self._last_sweep < self._sweep_interval:
                return
            self._last_sweep = now
        # A failure is recorded on the sweep's span; the caller's own store access fails closed.
        with contextlib.suppress(RevocationStoreUnavailable):
            self._sweep(SweepTrigger.INTERVAL)

    def _sweep(self, trigger: str) -> int:
        with self._tracer.start_as_current_span(
            telemetry.SPAN_TOKEN_SWEEP, attributes=self._span_attributes
        ) as span:
            span.set_attribute(telemetry.SWEEP_TRIGGER, trigger)
            with self._lock:
                now = self._tick()[1]
                self._last_sweep = now
                self._issued.expire()
                removed = self._store.sweep(now)
                # Another process sharing the store may have swept at a later time.
                swept_through = self._swept_through()
                if swept_through > self._now:
                    self._now = swept_through
                self._swept += removed
                remaining = self._store.count()
                self._last_count = remaining
            span.set_attribute(telemetry.SWEEP_REMOVED, removed)
            span.set_attribute(telemetry.SWEEP_REMAINING, remaining)
        self._audit.append(
            telemetry.AUDIT_TOKEN_SWEEP,
            {
                "removed": removed,
                "remaining": remaining,
                "trigger": trigger,
                **self._span_attributes,
            },
        )
        return removed

    def _forget_issued(self, token_id: str, entry: tuple[str, float, float], _reason: str) -> None:
        # Called by the index under the lock: the principal's set shrinks with it.
        ids = self._issued_by_principal.get(entry[0])
        if ids is not None:
            ids.discard(token_id)
            if not ids:
                del self._issued_by_principal[entry[0]]

    def _at_fork_reinit(self) -> None:
        self._lock = threading.Lock()


def _load_keys(
    secret: Secret | Mapping[str, Secret] | None, active_key_id: str | None
) -> tuple[dict[str, hmac.HMAC], str, bool]:
    """Keyed HMAC templates by key id, the active key id, and whether it is a dev secret."""
    development = secret is None
    if secret is None:
        secret = secrets.token_bytes(MIN_SECRET_BYTES)
    if isinstance(secret, Mapping):
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
            active_key_id = next(iter(keyed))
        elif active_key_id not in keyed:
            raise ValueError(f"active_key_id {active_key_id!r} is not a key of the secret mapping")
    else:
        if active_key_id is not None:
            raise ValueError("active_key_id applies to a mapping of secrets {key_id: secret}")
        key = _secret_bytes(secret, "secret")
        active_key_id = derive_key_id(key)
        keyed = {active_key_id: key}
    templates = {key_id: hmac.HMAC(key, hashes.SHA256()) for key_id, key in keyed.items()}
    return templates, active_key_id, development


def _expired(token_id: str, expires_at: float) -> TokenExpired:
    return TokenExpired(
        f"token {token_id} expired at {expires_at!r}; ask its issuer for a new one",
        token_id=token_id,
        expires_at=expires_at,
    )


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


def _secret_from_env() -> bytes | None:
    text = config.read(config.TOKEN_SECRET)
    path = config.read(config.TOKEN_SECRET_FILE)
    if text is not None and path is not None:
        raise ValueError(
            f"set {config.TOKEN_SECRET.name} or {config.TOKEN_SECRET_FILE.name}, not both"
        )
    if path is not None:
        try:
            with open(os.path.expanduser(path), "rb") as file:
                secret = file.read(1 << 16)
        except OSError as exc:
            raise ValueError(
                f"{config.TOKEN_SECRET_FILE.name}={path!r} cannot be read: {exc.strerror}"
            ) from None
        # Files written by `echo` or an editor end in one newline that is not part of
        # the key; anything more is the operator's, and kept.
        if secret.endswith(b"\r\n"):
            secret = secret[:-2]
        elif secret.endswith(b"\n"):
            secret = secret[:-1]
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


def _utf8_secret(secret: str, name: str) -> bytes:
    try:
        return secret.encode("utf-8")
    except UnicodeEncodeError:
        # Not chained: the error's repr quotes the whole secret.
        raise ValueError(f"{name} is not valid UTF-8") from None


def _positive_seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < math.inf:
        raise ValueError(f"{name} must be a finite number of seconds above 0, got {value!r}")
    return float(value)


def _skew_seconds(value: object) -> float:
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


def _check_name(name: str, value: object) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} must be a non-empty str, got {value!r}")
    _check_utf8(name, value)


def _check_utf8(name: str, value: str) -> None:
    # A lone surrogate has no UTF-8 form: SQLite, Redis and OTLP exporters would all fail on it.
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(f"{name} must be valid UTF-8 text: {value!r} is not") from None
