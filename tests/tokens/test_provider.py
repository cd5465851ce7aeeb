"""Issuing, encoding, decoding and verifying tokens; secrets, keys and configuration."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest

from otel_bounded.errors import (
    TokenClockSkew,
    TokenError,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    TokenScopeError,
)
from otel_bounded.tokens import (
    MAX_ENCODED_LENGTH,
    CapabilityToken,
    HMACTokenProvider,
    MemoryRevocationStore,
    SQLiteRevocationStore,
    derive_key_id,
)
from tests.support import FakeClock
from tests.tokens.helpers import OTHER_SECRET, SECRET, signed_token

ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}


def test_issued_token_carries_its_grant_and_verifies(provider: HMACTokenProvider) -> None:
    token = provider.issue("read", "alice", ttl_seconds=60, constraints={"bucket": "logs"})

    assert (token.capability_id, token.principal_id) == ("read", "alice")
    assert token.expires_at == token.issued_at + 60
    assert dict(token.constraints) == {"bucket": "logs"}
    assert token.key_id == provider.key_id
    assert re.fullmatch(r"[A-Za-z0-9_-]{22}", token.token_id)
    provider.verify(token, **ALICE)
    provider.verify(token.encode(), **ALICE)


def test_token_ids_are_unique(provider: HMACTokenProvider) -> None:
    ids = {provider.issue("read", "alice").token_id for _ in range(1000)}
    assert len(ids) == 1000


def test_encoded_token_is_url_safe_and_decodes_to_the_same_token(
    provider: HMACTokenProvider,
) -> None:
    token = provider.issue(
        "read", "ålice/ü", constraints={"paths": ["/a", "/b"], "n": 1.5, "x": None}, audit_id="a-1"
    )
    text = token.encode()

    assert re.fullmatch(r"[A-Za-z0-9_.-]+", text)
    assert len(text) <= MAX_ENCODED_LENGTH
    decoded = provider.decode(text)
    assert decoded == token
    assert decoded.encode() == text


def test_issued_at_keeps_the_clock_full_precision(clock: FakeClock) -> None:
    clock.now = 1_700_000_000.123456789
    provider = HMACTokenProvider(SECRET, clock=clock)

    token = provider.issue("read", "alice")

    assert provider.decode(token.encode()).issued_at == 1_700_000_000.123456789


def test_token_is_immutable_and_its_repr_hides_the_signature(
    provider: HMACTokenProvider,
) -> None:
    token = provider.issue("read", "alice", constraints={"paths": ["/a"], "nested": {"k": 1}})

    with pytest.raises(dataclasses.FrozenInstanceError):
        token.principal_id = "mallory"  # type: ignore[misc]
    with pytest.raises(TypeError):
        token.constraints["paths"] = ["/"]  # type: ignore[index]
    with pytest.raises(TypeError):
        token.constraints["nested"]["k"] = 2
    assert token.constraints["paths"] == ("/a",)
    assert token.signature not in repr(token)
    assert hash(token) == hash(provider.decode(token.encode()))


def test_a_token_altered_in_any_field_does_not_verify(provider: HMACTokenProvider) -> None:
    token = provider.issue("read", "alice", constraints={"bucket": "logs"})
    altered = [
        dataclasses.replace(token, principal_id="mallory"),
        dataclasses.replace(token, capability_id="write"),
        dataclasses.replace(token, expires_at=token.expires_at + 1),
        dataclasses.replace(token, issued_at=token.issued_at - 1),
        dataclasses.replace(token, constraints={"bucket": "secrets"}),
        dataclasses.replace(token, audit_id="other"),
        dataclasses.replace(token, token_id="A" * 22),
    ]
    for forged in altered:
        with pytest.raises(TokenInvalid):
            provider.verify(
                forged,
                expected_principal_id=forged.principal_id,
                expected_capability_id=forged.capability_id,
            )
        with pytest.raises(TokenInvalid):
            provider.verify(
                forged.encode(),
                expected_principal_id=forged.principal_id,
                expected_capability_id=forged.capability_id,
            )


def test_verify_rejects_wrong_principal_or_capability(provider: HMACTokenProvider) -> None:
    token = provider.issue("read", "alice")

    with pytest.raises(TokenScopeError) as wrong_principal:
        provider.verify(token, expected_principal_id="bob", expected_capability_id="read")
    with pytest.raises(TokenScopeError):
        provider.verify(token, expected_principal_id="alice", expected_capability_id="write")
    assert wrong_principal.value.token_id == token.token_id


def test_token_expires_exactly_at_expires_at(provider: HMACTokenProvider, clock: FakeClock) -> None:
    token = provider.issue("read", "alice", ttl_seconds=60)

    clock.now = token.expires_at - 0.001
    provider.verify(token, **ALICE)
    clock.now = token.expires_at
    with pytest.raises(TokenExpired) as expired:
        provider.verify(token, **ALICE)
    assert expired.value.expires_at == token.expires_at
    assert expired.value.token_id == token.token_id


def test_ttl_above_max_ttl_is_refused(clock: FakeClock) -> None:
    provider = HMACTokenProvider(SECRET, clock=clock, max_ttl_seconds=600)

    provider.issue("read", "alice", ttl_seconds=600)
    with pytest.raises(ValueError, match="max_ttl_seconds"):
        provider.issue("read", "alice", ttl_seconds=601)
    with pytest.raises(ValueError, match="max_ttl_seconds"):
        provider.issue("read", "alice")  # the 3600 s default


@pytest.mark.parametrize("ttl", [0, -1, float("inf"), float("nan"), True, "60", 1e-12])
def test_invalid_ttl_is_refused(provider: HMACTokenProvider, ttl: object) -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        provider.issue("read", "alice", ttl_seconds=ttl)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "constraints",
    [
        {1: "int key"},
        {"nan": float("nan")},
        {"set": {1, 2}},
        {"deep": [[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]},
        ["not", "a", "mapping"],
    ],
)
def test_constraints_must_be_plain_json(provider: HMACTokenProvider, constraints: object) -> None:
    with pytest.raises(ValueError, match="constraints"):
        provider.issue("read", "alice", constraints=constraints)  # type: ignore[arg-type]


def test_a_token_too_long_to_encode_is_refused(provider: HMACTokenProvider) -> None:
    with pytest.raises(ValueError, match=str(MAX_ENCODED_LENGTH)):
        provider.issue("read", "alice", constraints={"blob": "x" * MAX_ENCODED_LENGTH})


@pytest.mark.parametrize("principal", ["", None, 7])
def test_ids_must_be_non_empty_strings(provider: HMACTokenProvider, principal: object) -> None:
    with pytest.raises(ValueError, match="principal_id"):
        provider.issue("read", principal)  # type: ignore[arg-type]


def test_a_token_living_longer_than_this_provider_allows_is_invalid(clock: FakeClock) -> None:
    """A replica with a longer max_ttl could otherwise outlive every bound kept here."""
    lenient = HMACTokenProvider(SECRET, clock=clock, max_ttl_seconds=7200)
    strict = HMACTokenProvider(SECRET, clock=clock, max_ttl_seconds=3600)
    token = lenient.issue("read", "alice", ttl_seconds=3601)

    lenient.verify(token, **ALICE)
    with pytest.raises(TokenInvalid, match="max_ttl"):
        strict.verify(token, **ALICE)
    with pytest.raises(TokenInvalid):
        strict.decode(token.encode())


def test_tokens_verify_on_every_replica_sharing_the_secret(clock: FakeClock) -> None:
    issuer = HMACTokenProvider(SECRET, clock=clock)
    replica = HMACTokenProvider(SECRET.decode(), clock=clock)
    stranger = HMACTokenProvider(OTHER_SECRET, clock=clock)
    token = issuer.issue("read", "alice")

    assert replica.key_id == issuer.key_id
    replica.verify(token.encode(), **ALICE)
    with pytest.raises(TokenInvalid, match="unknown key id"):
        stranger.verify(token.encode(), **ALICE)


def test_key_id_is_deterministic_and_reveals_nothing_of_the_secret() -> None:
    key_id = derive_key_id(SECRET)

    assert key_id == derive_key_id(SECRET.decode()) == HMACTokenProvider(SECRET).key_id
    assert key_id != derive_key_id(OTHER_SECRET)
    assert re.fullmatch(r"[0-9a-f]{16}", key_id)
    assert key_id not in SECRET.hex()
    assert key_id.encode() not in SECRET


def test_rotation_signs_with_the_active_key_and_still_verifies_old_ones(
    clock: FakeClock,
) -> None:
    before = HMACTokenProvider(SECRET, clock=clock)
    old_token = before.issue("read", "alice")
    after = HMACTokenProvider(
        {derive_key_id(SECRET): SECRET, "2025-06": OTHER_SECRET},
        active_key_id="2025-06",
        clock=clock,
    )

    new_token = after.issue("read", "alice")

    assert new_token.key_id == "2025-06"
    after.verify(old_token, **ALICE)
    after.verify(new_token.encode(), **ALICE)
    with pytest.raises(TokenInvalid):
        before.verify(new_token, **ALICE)
    retired = HMACTokenProvider({"2025-06": OTHER_SECRET}, clock=clock)
    with pytest.raises(TokenInvalid, match="unknown key id"):
        retired.verify(old_token, **ALICE)


@pytest.mark.parametrize(
    ("secret", "active", "message"),
    [
        (b"short", None, "at least 32 bytes"),
        ("x" * 31, None, "at least 32 bytes"),
        ({"a": SECRET, "b": OTHER_SECRET}, None, "active_key_id"),
        ({"a": SECRET}, "b", "active_key_id"),
        ({"bad.id": SECRET}, None, "key id"),
        ({}, None, "empty"),
        (SECRET, "a", "active_key_id"),
        (12345, None, "bytes or str"),
    ],
)
def test_invalid_secrets_are_refused(secret: object, active: str | None, message: str) -> None:
    with pytest.raises(ValueError, match=message) as refused:
        HMACTokenProvider(secret, active_key_id=active)  # type: ignore[arg-type]
    assert "correct horse" not in str(refused.value)


def test_no_secret_means_a_random_development_secret_and_one_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        first = HMACTokenProvider()
        token = first.issue("read", "alice")
        first.verify(token, **ALICE)
        first.revoke(token)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "restart" in warnings[0].getMessage()
    assert "OTEL_BOUNDED_TOKEN_SECRET" in warnings[0].getMessage()
    second = HMACTokenProvider()
    assert second.key_id != first.key_id
    with pytest.raises(TokenInvalid):
        second.verify(token, **ALICE)


def test_verify_raises_only_token_errors_for_non_tokens(provider: HMACTokenProvider) -> None:
    for garbage in [None, 42, b"otb1.x.y.z", ["otb1"], object(), "", "otb1...."]:
        with pytest.raises(TokenInvalid):
            provider.verify(garbage, **ALICE)  # type: ignore[arg-type]
    with pytest.raises(TokenInvalid):
        provider.decode(provider.issue("read", "alice"))  # type: ignore[arg-type]


def test_a_str_subclass_token_verifies_like_a_str(provider: HMACTokenProvider) -> None:
    class Header(str):
        pass

    text = provider.issue("read", "alice").encode()
    provider.verify(Header(text), **ALICE)


def test_token_errors_share_one_base() -> None:
    for error in (TokenInvalid, TokenExpired, TokenRevoked, TokenScopeError):
        assert issubclass(error, TokenError)


# -- configuration -----------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (
        "OTEL_BOUNDED_TOKEN_SECRET",
        "OTEL_BOUNDED_TOKEN_SECRET_FILE",
        "OTEL_BOUNDED_TOKEN_MAX_TTL_SECONDS",
        "OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS",
        "OTEL_BOUNDED_REVOCATION_STORE",
    ):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_from_env_reads_every_token_variable(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SECRET", SECRET.decode())
    clean_env.setenv("OTEL_BOUNDED_TOKEN_MAX_TTL_SECONDS", "600")
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS", "5")
    clean_env.setenv("OTEL_BOUNDED_REVOCATION_STORE", f"sqlite:///{tmp_path}/revocations.db")

    with HMACTokenProvider.from_env() as provider:
        assert provider.key_id == derive_key_id(SECRET)
        assert provider.max_ttl_seconds == 600
        assert provider.sweep_interval_seconds == 5
        assert isinstance(provider.revocations, SQLiteRevocationStore)
    assert (tmp_path / "revocations.db").exists()


def test_from_env_defaults_to_memory_and_lets_arguments_win(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SECRET", SECRET.decode())
    clean_env.setenv("OTEL_BOUNDED_REVOCATION_STORE", "redis://unreachable.invalid:1/0")
    store = MemoryRevocationStore()

    provider = HMACTokenProvider.from_env(max_ttl_seconds=60, revocations=store)

    assert provider.revocations is store
    assert provider.max_ttl_seconds == 60
    clean_env.delenv("OTEL_BOUNDED_REVOCATION_STORE")
    assert isinstance(HMACTokenProvider.from_env().revocations, MemoryRevocationStore)


def test_from_env_reads_the_secret_file_without_its_trailing_newline(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(SECRET + b"\n")
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SECRET_FILE", str(path))

    assert HMACTokenProvider.from_env().key_id == derive_key_id(SECRET)


def test_invalid_numbers_warn_and_fall_back(
    clean_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SECRET", SECRET.decode())
    clean_env.setenv("OTEL_BOUNDED_TOKEN_MAX_TTL_SECONDS", "-5")
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS", "often")

    with caplog.at_level(logging.WARNING, logger="otel_bounded"):
        provider = HMACTokenProvider.from_env()

    assert provider.max_ttl_seconds == 86_400
    assert provider.sweep_interval_seconds == 60
    text = caplog.text
    assert "OTEL_BOUNDED_TOKEN_MAX_TTL_SECONDS" in text
    assert "OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS" in text


@pytest.mark.parametrize(
    ("variables", "named"),
    [
        ({"OTEL_BOUNDED_TOKEN_SECRET": "too short"}, "OTEL_BOUNDED_TOKEN_SECRET"),
        (
            {"OTEL_BOUNDED_TOKEN_SECRET_FILE": "/nonexistent/secret"},
            "OTEL_BOUNDED_TOKEN_SECRET_FILE",
        ),
        (
            {
                "OTEL_BOUNDED_TOKEN_SECRET": SECRET.decode(),
                "OTEL_BOUNDED_TOKEN_SECRET_FILE": "/etc/hostname",
            },
            "OTEL_BOUNDED_TOKEN_SECRET_FILE",
        ),
        (
            {
                "OTEL_BOUNDED_TOKEN_SECRET": SECRET.decode(),
                "OTEL_BOUNDED_REVOCATION_STORE": "postgres://db/revocations",
            },
            "OTEL_BOUNDED_REVOCATION_STORE",
        ),
        (
            {
                "OTEL_BOUNDED_TOKEN_SECRET": SECRET.decode(),
                "OTEL_BOUNDED_REVOCATION_STORE": "sqlite:///nonexistent-dir/x/revocations.db",
            },
            "OTEL_BOUNDED_REVOCATION_STORE",
        ),
    ],
)
def test_invalid_secret_or_store_raises_naming_the_variable(
    clean_env: pytest.MonkeyPatch, variables: dict[str, str], named: str
) -> None:
    for name, value in variables.items():
        clean_env.setenv(name, value)

    with pytest.raises(ValueError, match=named) as refused:
        HMACTokenProvider.from_env()
    assert SECRET.decode() not in str(refused.value)


@pytest.mark.parametrize(
    ("argument", "value"),
    [("max_ttl_seconds", 0), ("sweep_interval_seconds", -1), ("clock", "now")],
)
def test_invalid_arguments_raise_value_error(argument: str, value: object) -> None:
    with pytest.raises(ValueError, match=argument if argument != "clock" else "clock"):
        HMACTokenProvider(SECRET, **{argument: value})  # type: ignore[arg-type]


def test_token_constructed_by_hand_with_a_copied_signature_does_not_verify(
    provider: HMACTokenProvider,
) -> None:
    genuine = provider.issue("read", "alice")
    forged = CapabilityToken(
        token_id=genuine.token_id,
        capability_id="admin",
        principal_id="alice",
        issued_at=genuine.issued_at,
        expires_at=genuine.expires_at,
        constraints={},
        audit_id="",
        key_id=genuine.key_id,
        signature=genuine.signature,
    )
    with pytest.raises(TokenInvalid):
        provider.verify(forged, expected_principal_id="alice", expected_capability_id="admin")


# -- tokens from a clock ahead (not-before) -------------------------------------


def test_a_token_issued_further_ahead_than_the_clock_skew_is_invalid(clock: FakeClock) -> None:
    """A replica whose clock runs ahead mints tokens that would escape revoke_all cut-offs."""
    verifier = HMACTokenProvider(SECRET, clock=clock, max_clock_skew_seconds=60)
    within = HMACTokenProvider(SECRET, clock=FakeClock(clock.now + 60)).issue("read", "alice")
    beyond = HMACTokenProvider(SECRET, clock=FakeClock(clock.now + 61)).issue("read", "alice")

    verifier.verify(within, **ALICE)
    verifier.decode(within.encode())
    for form in (beyond, beyond.encode()):
        with pytest.raises(TokenInvalid, match="max_clock_skew_seconds") as refused:
            verifier.verify(form, **ALICE)
        assert refused.value.token_id == beyond.token_id
    with pytest.raises(TokenInvalid, match="future"):
        verifier.decode(beyond.encode())
    clock.advance(1)  # within the skew now
    verifier.verify(beyond, **ALICE)


def test_a_token_from_a_clock_far_ahead_cannot_escape_revoke_all(clock: FakeClock) -> None:
    ahead = HMACTokenProvider(SECRET, clock=FakeClock(clock.now + 3600))
    provider = HMACTokenProvider(SECRET, clock=clock)
    token = ahead.issue("read", "alice")

    provider.revoke_all("alice")

    with pytest.raises(TokenInvalid, match="future"):
        provider.verify(token, **ALICE)


@pytest.mark.parametrize("skew", [-1, float("nan"), float("inf"), True, "60", None, 1e12])
def test_invalid_clock_skew_is_refused(skew: object) -> None:
    with pytest.raises(ValueError, match="max_clock_skew_seconds"):
        HMACTokenProvider(SECRET, max_clock_skew_seconds=skew)  # type: ignore[arg-type]


def test_clock_skew_may_be_zero() -> None:
    """Zero: clocks that agree exactly, as on one host. A token after a cut-off at the
    same reading would be stamped ahead of every clock: refused until the clock ticks."""
    clock = FakeClock()
    provider = HMACTokenProvider(SECRET, clock=clock, max_clock_skew_seconds=0)
    provider.revoke_all("alice")
    with pytest.raises(TokenClockSkew):
        provider.issue("read", "alice")
    clock.advance(1e-6)

    token = provider.issue("read", "alice")

    assert token.issued_at == clock.now
    provider.verify(token, **ALICE)
    assert provider.max_clock_skew_seconds == 0


# -- text no store can encode ----------------------------------------------------

LONE_SURROGATE = json.loads('"bob\\ud800"')


@pytest.mark.parametrize("argument", ["capability_id", "principal_id", "audit_id"])
def test_issue_refuses_ids_with_no_utf8_form(provider: HMACTokenProvider, argument: str) -> None:
    arguments = {
        "capability_id": "read",
        "principal_id": "alice",
        "audit_id": "",
        argument: LONE_SURROGATE,
    }
    with pytest.raises(ValueError, match=argument):
        provider.issue(**arguments)


def test_revoke_all_refuses_a_principal_with_no_utf8_form(provider: HMACTokenProvider) -> None:
    with pytest.raises(ValueError, match="principal_id"):
        provider.revoke_all(LONE_SURROGATE)


@pytest.mark.parametrize("store", ["memory", "sqlite"])
def test_expected_ids_with_no_utf8_form_never_match(store: str, tmp_path: Path) -> None:
    revocations = "memory" if store == "memory" else f"sqlite:///{tmp_path}/revocations.db"
    with HMACTokenProvider(SECRET, revocations=revocations) as provider:
        token = provider.issue("read", "alice")
        with pytest.raises(TokenScopeError):
            provider.verify(
                token, expected_principal_id=LONE_SURROGATE, expected_capability_id="read"
            )


@pytest.mark.parametrize("store", ["memory", "sqlite"])
@pytest.mark.parametrize("field", [1, 2, 5])  # capability_id, principal_id, audit_id
def test_a_signed_token_with_no_utf8_form_is_invalid_not_a_crash(
    store: str, field: int, clock: FakeClock, tmp_path: Path
) -> None:
    """Signed by a replica (or a version) that let a lone surrogate through."""
    fields: list[object] = ["A" * 21 + "A", "read", "alice", clock.now, clock.now + 60, "", {}]
    fields[field] = LONE_SURROGATE
    text = signed_token(fields)
    revocations = "memory" if store == "memory" else f"sqlite:///{tmp_path}/revocations.db"
    with HMACTokenProvider(SECRET, clock=clock, revocations=revocations) as provider:
        for attempt in [
            lambda: provider.verify(
                text, expected_principal_id="alice", expected_capability_id="read"
            ),
            lambda: provider.decode(text),
            lambda: provider.revoke(text),
        ]:
            with pytest.raises(TokenInvalid):
                attempt()


# -- signed constraints a token cannot hold ---------------------------------------


@pytest.mark.parametrize(
    "constraints",
    [
        '{"limit":1e400}',
        '{"limit":NaN}',
        '{"limit":-Infinity}',
        '{"a":' + "[" * 17 + "]" * 17 + "}",
    ],
)
def test_signed_constraints_a_token_cannot_hold_are_invalid_everywhere(
    provider: HMACTokenProvider, clock: FakeClock, constraints: str
) -> None:
    text = signed_token(
        f'["{"A" * 22}","read","alice",{clock.now!r},{clock.now + 60!r},"",{constraints}]'
    )

    with pytest.raises(TokenInvalid):
        provider.decode(text)
    with pytest.raises(TokenInvalid):
        provider.verify(text, **ALICE)


def test_a_token_object_whose_fields_cannot_be_encoded_is_invalid(
    provider: HMACTokenProvider,
) -> None:
    class Unprintable(str):
        def __format__(self, spec: str) -> str:
            raise LookupError("not a key id")

    forged = dataclasses.replace(provider.issue("read", "alice"), key_id=Unprintable("k"))

    with pytest.raises(TokenInvalid):
        provider.verify(forged, **ALICE)
    with pytest.raises(TokenInvalid):
        provider.revoke(forged)


# -- secrets that are not UTF-8 --------------------------------------------------

NOT_UTF8 = "not-utf8-secret-" + "\udcff" * 20  # what os.environ makes of invalid bytes


def test_a_secret_with_no_utf8_form_is_refused_without_quoting_it() -> None:
    for secret, named in [(NOT_UTF8, "secret"), ({"k1": NOT_UTF8}, "secret['k1']")]:
        with pytest.raises(ValueError, match="is not valid UTF-8") as refused:
            HMACTokenProvider(secret)  # type: ignore[arg-type]
        assert str(refused.value) == f"{named} is not valid UTF-8"
        assert refused.value.__context__ is None  # the UnicodeError would quote it
        assert "not-utf8-secret" not in repr(refused.value)
    with pytest.raises(ValueError, match="secret is not valid UTF-8"):
        derive_key_id(NOT_UTF8)


def test_a_secret_variable_with_no_utf8_form_is_refused_naming_it(
    clean_env: pytest.MonkeyPatch,
) -> None:
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SECRET", NOT_UTF8)

    with pytest.raises(ValueError, match="not valid UTF-8") as refused:
        HMACTokenProvider.from_env()

    assert str(refused.value) == (
        "OTEL_BOUNDED_TOKEN_SECRET=<redacted> is invalid: not valid UTF-8"
    )
    assert refused.value.__context__ is None  # the UnicodeError would quote it
    assert "not-utf8-secret" not in repr(refused.value)


@pytest.mark.parametrize(
    ("content", "key"),
    [
        (SECRET + b"\n", SECRET),
        (SECRET + b"\r\n", SECRET),
        (SECRET, SECRET),
        (SECRET + b"\n\n", SECRET + b"\n"),  # only one newline is the file's
        (SECRET + b"\r\n\r\n", SECRET + b"\r\n"),
        (SECRET + b"\r", SECRET + b"\r"),  # not a newline: part of the key
    ],
)
def test_the_secret_file_loses_exactly_one_trailing_newline(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, content: bytes, key: bytes
) -> None:
    path = tmp_path / "secret"
    path.write_bytes(content)
    clean_env.setenv("OTEL_BOUNDED_TOKEN_SECRET_FILE", str(path))

    assert HMACTokenProvider.from_env().key_id == derive_key_id(key)


# -- bounds on lifetimes ----------------------------------------------------------


def test_max_ttl_is_at_most_ten_years() -> None:
    ten_years = 10 * 365.25 * 86_400
    assert HMACTokenProvider(SECRET, max_ttl_seconds=ten_years).max_ttl_seconds == ten_years

    for too_long in (ten_years + 1, 1e301, 1.7e308):
        with pytest.raises(ValueError, match="max_ttl_seconds must be at most"):
            HMACTokenProvider(SECRET, max_ttl_seconds=too_long)
