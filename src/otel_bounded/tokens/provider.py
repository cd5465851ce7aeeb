"""`HMACTokenProvider`: issues, verifies and revokes capability tokens.

Keys live in `keys`, what this provider remembers of its own tokens in
`issued`, revocations in `revocations`; this module holds the rules that
join them, and the provider's time.

One rule above all: no replica accepts a revoked token before it expires,
whatever any replica's clock did; when in doubt, refuse. Hence: a provider's
time never goes back; it refuses to stamp a token more than
``max_clock_skew_seconds`` ahead of its clock; cut-offs reach that far ahead;
every entry is kept until its tokens have expired on every replica within the
skew; and a shared store says how far it was swept in the same read as each
lookup, so a token whose revocation another replica swept is refused as
expired, never accepted.
"""

from __future__ import annotations

import contextlib
import math
import secrets
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.trace import TracerProvider

from otel_bounded import config, telemetry
from otel_bounded.core import (
    NO_AUDIT,
    AuditSink,
    Clock,
    audit_from_env,
    reinit_after_fork,
    validate_clock,
)
from otel_bounded.errors import (
    RevocationStoreUnavailable,
    TokenClockSkew,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    TokenScopeError,
)
from otel_bounded.telemetry import SweepTrigger
from otel_bounded.tokens.arguments import (
    check_encoded_length,
    check_name,
    check_utf8,
    plain_ids,
    positive_seconds,
    skew_seconds,
)
from otel_bounded.tokens.issued import IssuedTokens
from otel_bounded.tokens.keys import (
    MIN_SECRET_BYTES,
    Keyring,
    Secret,
    derive_key_id,
    secret_from_env,
)
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
    freeze_constraints,
    signing_input,
)

__all__ = ["MAX_TTL_CEILING_SECONDS", "MIN_SECRET_BYTES", "HMACTokenProvider", "derive_key_id"]

MAX_TTL_CEILING_SECONDS = config.MAX_TTL_CEILING_SECONDS
"""Largest `max_ttl_seconds` (and `max_clock_skew_seconds`): ten years.

Beyond it, retention arithmetic stops being meaningful (a Redis PX in
milliseconds overflows long before a float does), and no revocation should
have to be kept longer.
"""

_COMPONENT_TYPE = "otel_bounded_token_provider"
# Store work of revoke_all, per lock hold or round trip: a principal with 20,000
# live tokens never holds up another principal's verify for long.
_REVOKE_ALL_BATCH = 256


class HMACTokenProvider:
    """Issues, verifies and revokes HMAC-SHA256 capability tokens.

    Revocations are bounded by expiry, not by count: each entry stays until
    the token it blocks has expired on every replica whose clock is within
    `max_clock_skew_seconds` (dropping one earlier would un-revoke a live
    token), and a sweep removes the rest at a cost proportional to what it
    removes. `verify` is the hot path: one HMAC, dictionary lookups and one
    lock; it logs nothing, creates no span, and holds no lock across a
    network round trip.

    The provider's now never goes back: it is the clock's reading, or the
    highest one seen if the clock stepped back.
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
        self._max_ttl = positive_seconds("max_ttl_seconds", max_ttl_seconds)
        if self._max_ttl > MAX_TTL_CEILING_SECONDS:
            raise ValueError(
                f"max_ttl_seconds must be at most {MAX_TTL_CEILING_SECONDS:.0f} (ten years), "
                f"got {max_ttl_seconds!r}"
            )
        self._max_skew = skew_seconds(max_clock_skew_seconds)
        self._sweep_interval = positive_seconds("sweep_interval_seconds", sweep_interval_seconds)
        self._keys = Keyring(secret, active_key_id)
        self._owns_store = revocations is None or isinstance(revocations, str)
        if revocations is None:
            self._store: RevocationStore = MemoryRevocationStore()
        elif isinstance(revocations, str):
            self._store = open_revocation_store(revocations)
        else:
            self._store = revocations
        self._lock = threading.Lock()
        # validate_clock saw a finite first reading; a later NaN is ignored by `_tick`.
        self._now = float(self._clock())
        if not math.isfinite(self._now):
            raise ValueError(f"clock() must return finite Unix seconds, got {self._now!r}")
        self._issued = IssuedTokens(self._read_now)
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
        if self._keys.development:
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
            settings["secret"] = secret_from_env()
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
        return self._keys.active_key_id

    @property
    def key_ids(self) -> frozenset[str]:
        """Ids of every key that verifies: the active one and those kept for rotation."""
        return self._keys.key_ids

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
        with self._store_guard():
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
        """A new token granting `capability_id` to `principal_id` for `ttl_seconds`.

        Raises `TokenClockSkew` rather than stamp it more than
        `max_clock_skew_seconds` ahead of the clock: after the clock stepped
        back that far, or (for one instant) right after a `revoke_all` of the
        principal here, whose cut-off reaches that far ahead.
        """
        check_name("capability_id", capability_id)
        check_name("principal_id", principal_id)
        if not isinstance(audit_id, str):
            raise ValueError(f"audit_id must be a str, got {type(audit_id).__name__}")
        check_utf8("audit_id", audit_id)
        ttl = positive_seconds("ttl_seconds", ttl_seconds)
        if ttl > self._max_ttl:
            raise ValueError(
                f"ttl_seconds={ttl_seconds!r} is above max_ttl_seconds={self._max_ttl!r}; "
                f"pass a shorter ttl_seconds or raise {config.TOKEN_MAX_TTL_SECONDS.name}"
            )
        frozen = freeze_constraints(constraints)
        token_id = secrets.token_urlsafe(16)
        key_id = self._keys.active_key_id
        check_encoded_length(key_id, token_id, capability_id, principal_id, audit_id, frozen)
        self._maybe_sweep()
        with self._lock:
            reading, issued_at = self._tick()
            # After every cut-off this provider set for the principal, so its own
            # revoke_all never blocks what it issues next.
            floor = self._issued.floor(principal_id)
            if issued_at <= floor:
                issued_at = math.nextafter(floor, math.inf)
            ahead = issued_at - reading
            if ahead > self._max_skew:
                raise TokenClockSkew(
                    f"refusing to issue: the token would be stamped {ahead:.3f} s ahead of this "
                    f"provider's clock, more than max_clock_skew_seconds={self._max_skew!r} "
                    "(its clock stepped back, or a revoke_all of this principal just set a "
                    "cut-off that far ahead); issue again once the clock has caught up",
                    ahead_seconds=ahead,
                )
            expires_at = issued_at + ttl
            if expires_at <= issued_at:
                raise ValueError(f"ttl_seconds={ttl_seconds!r} is lost in the clock's precision")
            self._issued.add(token_id, principal_id, issued_at, expires_at)
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
            signature=self._keys.sign(key_id, signing_input(key_id, payload)),
        )

    def decode(self, text: str) -> CapabilityToken:
        """The token `text` encodes, once its signature and lifetime check out.

        Says nothing about expiry, revocation or scope: that is `verify`,
        which returns the same token once all of those hold too.
        """
        if not isinstance(text, str):
            raise TokenInvalid(f"expected an encoded token (str), not {type(text).__name__}")
        fields, key_id, signature = self._authenticate(text, self._peek_now())
        return _token(fields, key_id, signature)

    def verify(
        self,
        token_or_text: CapabilityToken | str,
        *,
        expected_principal_id: str,
        expected_capability_id: str,
    ) -> CapabilityToken:
        """The verified token, if authentic, unexpired, in scope and not revoked; else raise.

        One call gives what `jwt.decode` gives: the claims, verified
        (``verify(...).to_dict()``). Raises `TokenInvalid`, `TokenExpired`,
        `TokenScopeError`, `TokenRevoked` or `RevocationStoreUnavailable`,
        all `TokenError`s. The expected ids must be `str`: anything else (a
        ``mock.ANY`` that equals everything) is a `TokenScopeError`.
        """
        now = self._peek_now()
        if now - self._last_sweep >= self._sweep_interval:
            self._maybe_sweep()
            now = self._peek_now()
        outcomes = telemetry.VerificationOutcome
        try:
            fields, key_id, signature = self._authenticate(token_or_text, now)
        except TokenInvalid:
            self._count(outcomes.INVALID, now)
            raise
        token_id, capability_id, principal_id, issued_at, expires_at, _, _ = fields
        if now >= expires_at:
            self._count(outcomes.EXPIRED, now)
            raise _expired(token_id, expires_at)
        if (
            expected_principal_id.__class__ is not str
            or expected_capability_id.__class__ is not str
        ):
            try:
                expected_principal_id, expected_capability_id = plain_ids(
                    expected_principal_id, expected_capability_id
                )
            except TokenScopeError:
                self._count(outcomes.SCOPE_MISMATCH, now)
                raise
        if principal_id != expected_principal_id or capability_id != expected_capability_id:
            self._count(outcomes.SCOPE_MISMATCH, now)
            raise TokenScopeError(
                f"token {token_id} grants another principal or capability than the one "
                "it was presented for",
                token_id=token_id,
            )
        store = self._store
        if store.thread_safe:
            try:
                revoked, gone_through = store.lookup(token_id, principal_id, issued_at)
            except RevocationStoreUnavailable:
                self._count(outcomes.UNAVAILABLE, now)
                raise
            with self._lock:
                now = self._advance_now(now)
                outcome = self._judge(revoked, gone_through, now, expires_at)
                self._outcomes[outcome] += 1
        else:
            # Expiry is judged at the reading the lookup is made at, under the lock every
            # sweep holds. (`_advance_now`, inlined: this is the hot path.)
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
                        revoked, gone_through = store.lookup(token_id, principal_id, issued_at)
                    except RevocationStoreUnavailable:
                        self._outcomes[outcomes.UNAVAILABLE] += 1
                        raise
                    outcome = self._judge(revoked, gone_through, now, expires_at)
                self._outcomes[outcome] += 1
        if outcome == outcomes.OK:
            if token_or_text.__class__ is CapabilityToken:
                return token_or_text
            return _token(fields, key_id, signature)
        if outcome == outcomes.EXPIRED:
            raise _expired(token_id, expires_at)
        raise TokenRevoked(
            f"token {token_id} was revoked; ask its issuer for a new one", token_id=token_id
        )

    def _judge(self, revoked: bool, gone_through: float, now: float, expires_at: float) -> str:
        outcomes = telemetry.VerificationOutcome
        if revoked:
            return outcomes.REVOKED
        # An entry for this token may have been swept (by any replica) only once it
        # had expired everywhere: then so has the token, whatever this clock says.
        if now >= expires_at or expires_at + self._max_skew <= gone_through:
            return outcomes.EXPIRED
        return outcomes.OK

    # -- revocation --------------------------------------------------------

    def revoke(self, token_or_id: CapabilityToken | str) -> bool:
        """Revoke a token (a `CapabilityToken`, its encoded text, or a bare token id).

        The entry is kept until the token has expired on every replica within
        the skew: the expiry comes from the token, from this provider's index,
        or for an id it never saw, the latest such a token could expire. It is
        written even when this provider's time (held ahead after a clock step
        back) or its clock says the token has expired: another replica's clock
        may say otherwise. Returns True when the token was newly revoked;
        False when it already was, or has expired by the clock. An encoded
        token that does not authenticate raises `TokenInvalid` (revoke it by
        id instead), and so does a string that is neither an encoded token nor
        shaped like the ids `issue` makes.
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
                fields, key_id, _ = self._authenticate(token_or_id, None)
                token_id, capability_id, principal_id, issued_at, expires_at, _, _ = fields
                known = (principal_id, issued_at, expires_at)
                span.set_attribute(telemetry.CAPABILITY_ID, capability_id)
                span.set_attribute(telemetry.TOKEN_KEY_ID, key_id)
            elif (
                isinstance(token_or_id, str)
                and len(token_or_id) < MAX_ENCODED_LENGTH
                and ISSUED_TOKEN_ID.fullmatch(token_or_id)
            ):
                token_id = str.__str__(token_or_id)
            else:
                # Never echoed: it may be a signature or a secret pasted by mistake.
                raise TokenInvalid(
                    "revoke takes a CapabilityToken, an encoded token or a token id "
                    "(22 characters, as issue makes them)"
                )
            span.set_attribute(telemetry.TOKEN_ID, token_id)
            with self._lock:
                reading, now = self._tick()
                if known is None:
                    known = self._issued.get(token_id, now)
            if known is not None:
                expires_at = known[2]
                keep_until = expires_at + self._max_skew
            else:
                # An unknown id's token may come from a clock up to the skew ahead, and
                # must stay refused on replicas up to the skew behind.
                expires_at = now + self._max_ttl + self._max_skew
                keep_until = expires_at + self._max_skew
            # Written even if this clock says the token expired long ago: this clock may be
            # the one that is wrong. A sweep removes what was not needed.
            store = self._store
            with self._store_guard():
                already = known is not None and store.lookup(token_id, known[0], known[1])[0]
                added = store.revoke_token(token_id, keep_until, reading)
            newly = added and not already and expires_at > reading
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

        Sets a per-principal cut-off at this provider's now plus
        `max_clock_skew_seconds`, kept until every token it blocks has
        expired, blocking tokens with ``issued_at <= cutoff``: tokens another
        replica stamped up to the skew ahead are caught too. Tokens this
        provider issues afterwards are stamped after it. Returns how many
        live tokens this provider issued to the principal were newly revoked.

        The store work goes in batches, and the provider's lock is never held
        across a network round trip, so other principals' verifications go on.
        """
        check_name("principal_id", principal_id)
        principal_id = str.__str__(principal_id)
        self._maybe_sweep()
        with self._tracer.start_as_current_span(
            telemetry.SPAN_TOKEN_REVOKE_ALL, attributes=self._span_attributes
        ) as span:
            span.set_attribute(telemetry.PRINCIPAL_ID, principal_id)
            store = self._store
            with self._lock:
                # Read under the lock: every token stamped here so far is at or before it.
                reading, now = self._tick()
                cutoff = now + self._max_skew
                self._issued.raise_floor(principal_id, cutoff)
                ids = self._issued.ids_of(principal_id)
            live: list[tuple[str, float]] = []
            for start in range(0, len(ids), _REVOKE_ALL_BATCH):
                with self._lock:
                    for token_id in ids[start : start + _REVOKE_ALL_BATCH]:
                        entry = self._issued.get(token_id, now)
                        if entry is not None and entry[2] > now:
                            live.append((token_id, entry[1]))
                # A zero sleep hands the interpreter to any thread waiting for it (a
                # verify), which would otherwise wait out the switch interval per batch.
                time.sleep(0)
            already = 0
            for start in range(0, len(live), _REVOKE_ALL_BATCH):
                with self._store_guard():
                    batch = live[start : start + _REVOKE_ALL_BATCH]
                    already += len(store.revoked_among(principal_id, batch))
                time.sleep(0)
            with self._store_guard():
                store.revoke_principal(
                    principal_id, cutoff, cutoff + self._max_ttl + self._max_skew, reading
                )
            newly = len(live) - already
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
        """Remove revocations whose tokens have expired everywhere; return how many went.

        Costs what it removes, not what it keeps. Never removes an entry
        before its token has expired on every replica within the skew.
        """
        return self._sweep(SweepTrigger.MANUAL)

    # -- telemetry ---------------------------------------------------------

    def telemetry_counts(self) -> telemetry.TokenCounts:
        """What the token instruments read at collection time."""
        # Unreachable store: the last known count stands; verifications report it.
        with contextlib.suppress(RevocationStoreUnavailable), self._store_guard():
            self._last_count = self._store.count()
        with self._lock:
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
            f"HMACTokenProvider(key_id={self._keys.active_key_id!r}, "
            f"max_ttl_seconds={self._max_ttl!r}, revocations={self._store!r})"
        )

    # -- internals -------------------------------------------------------

    def _authenticate(self, token_or_text: object, now: float | None) -> tuple[Payload, str, str]:
        """(fields, key id, signature) once signature and lifetime check out; else `TokenInvalid`.

        With `now`, a token issued further ahead of it than `max_clock_skew_seconds`
        is refused too: it would escape cut-offs and outlive revocations by id.
        """
        authenticated = self._keys.authenticate(token_or_text)
        fields = authenticated[0]
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
        return authenticated

    def _count(self, outcome: str, now: float) -> None:
        with self._lock:
            if now > self._now:
                self._now = now
            self._outcomes[outcome] += 1

    @contextlib.contextmanager
    def _store_guard(self) -> Iterator[None]:
        """Hold the lock around a store call only if the store needs it (and so is local)."""
        if self._store.thread_safe:
            yield
        else:
            with self._lock:
                yield

    # -- time --------------------------------------------------------------

    def _tick(self) -> tuple[float, float]:
        """(the clock's reading, the provider's now); the caller holds the lock.

        Now is the highest time seen, so expiry decisions, sweeps and lookups
        never go back. The reading (never above now) is what writes are
        measured from: a clock stepped back has that much more real time to
        run before the token expires. A reading that is not a number is no
        reading: now stands for it.
        """
        reading = self._clock()
        now = self._now
        if reading > now:
            now = self._now = float(reading)
        return (float(reading) if reading <= now else now), now

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
            with self._store_guard():
                removed = self._store.sweep(now)
                remaining = self._store.count()
            with self._lock:
                self._swept += removed
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

    def _at_fork_reinit(self) -> None:
        self._lock = threading.Lock()


def _token(fields: Payload, key_id: str, signature: str) -> CapabilityToken:
    token_id, capability_id, principal_id, issued_at, expires_at, audit_id, constraints = fields
    return CapabilityToken(
        token_id=token_id,
        capability_id=capability_id,
        principal_id=principal_id,
        issued_at=issued_at,
        expires_at=expires_at,
        constraints=constraints,
        audit_id=audit_id,
        key_id=key_id,
        signature=signature,
    )


def _expired(token_id: str, expires_at: float) -> TokenExpired:
    return TokenExpired(
        f"token {token_id} expired at {expires_at!r}; ask its issuer for a new one",
        token_id=token_id,
        expires_at=expires_at,
    )
