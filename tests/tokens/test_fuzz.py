"""Any input whatsoever gives a `TokenError`, and no altered token ever verifies."""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives import hashes, hmac
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from otel_bounded.errors import TokenError, TokenInvalid
from otel_bounded.tokens import HMACTokenProvider, derive_key_id
from tests.support import FakeClock
from tests.tokens.helpers import SECRET

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ALICE = {"expected_principal_id": "alice", "expected_capability_id": "read"}
KEY_ID = derive_key_id(SECRET)

_provider = HMACTokenProvider(SECRET, clock=FakeClock())
_genuine = _provider.issue(
    "read", "alice", ttl_seconds=600, constraints={"paths": ["/a"]}, audit_id="audit-7"
)
GENUINE = _genuine.encode()


def signed(signing_input: str) -> str:
    """`signing_input` with a valid signature: what only a holder of the secret can make."""
    mac = hmac.HMAC(SECRET, hashes.SHA256())
    mac.update(signing_input.encode("ascii"))
    signature = base64.urlsafe_b64encode(mac.finalize()).rstrip(b"=").decode()
    return f"{signing_input}.{signature}"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def assert_refused(text: object) -> None:
    with pytest.raises(TokenError):
        _provider.verify(text, **ALICE)  # type: ignore[arg-type]


def test_the_genuine_token_verifies() -> None:
    _provider.verify(GENUINE, **ALICE)


@FUZZ
@given(st.text(max_size=400))
def test_arbitrary_text_is_refused(text: str) -> None:
    assert_refused(text)


@FUZZ
@given(st.binary(max_size=400))
def test_arbitrary_bytes_as_text_are_refused(data: bytes) -> None:
    assert_refused(data.decode("latin-1"))
    assert_refused(data)


@FUZZ
@given(
    st.lists(
        st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_=+/"),
        min_size=0,
        max_size=6,
    )
)
def test_token_shaped_text_is_refused(parts: list[str]) -> None:
    assert_refused(".".join(["otb1", KEY_ID, *parts]))


@FUZZ
@given(st.data())
def test_no_single_character_change_verifies(data: st.DataObject) -> None:
    index = data.draw(st.integers(0, len(GENUINE) - 1))
    replacement = data.draw(st.characters())
    assume(replacement != GENUINE[index])

    assert_refused(GENUINE[:index] + replacement + GENUINE[index + 1 :])


@FUZZ
@given(st.data())
def test_no_insertion_deletion_or_truncation_verifies(data: st.DataObject) -> None:
    start = data.draw(st.integers(0, len(GENUINE)))
    end = data.draw(st.integers(start, len(GENUINE)))
    inserted = data.draw(st.text(max_size=8))
    altered = GENUINE[:start] + inserted + GENUINE[end:]
    assume(altered != GENUINE)

    assert_refused(altered)


@FUZZ
@given(st.binary(max_size=300))
def test_signed_garbage_payloads_are_invalid_not_crashes(payload: bytes) -> None:
    with pytest.raises(TokenInvalid):
        _provider.verify(signed(f"otb1.{KEY_ID}.{b64(payload)}"), **ALICE)


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=8) | st.dictionaries(st.text(max_size=5), inner),
    max_leaves=20,
)


@FUZZ
@given(JSON)
def test_signed_wrongly_shaped_json_is_invalid_not_crashes(value: object) -> None:
    text = json.dumps(value)
    with pytest.raises(TokenInvalid):
        _provider.verify(signed(f"otb1.{KEY_ID}.{b64(text.encode())}"), **ALICE)


@pytest.mark.parametrize(
    "payload",
    [
        "[" * 1400 + "]" * 1400,  # deep enough to hit the recursion limit, short enough to parse
        '["tokentokentokentoken","read","alice",1e400,2e400,"",{}]',
        '["tokentokentokentoken","read","alice",NaN,Infinity,"",{}]',
        '["tokentokentokentoken","read","alice",1,2,"",{}]',
        '["tokentokentokentoken","read","alice",2.0,1.0,"",{}]',
        '["short","read","alice",1.0,2.0,"",{}]',
        '["tokentokentokentoken","read","alice",1.0,2.0,"",{}] trailing',
        '["tokentokentokentoken","read","alice",1.0,2.0,"",{},"extra"]',
    ],
)
def test_signed_edge_payloads_are_invalid(payload: str) -> None:
    with pytest.raises(TokenInvalid):
        _provider.verify(signed(f"otb1.{KEY_ID}.{b64(payload.encode())}"), **ALICE)


@pytest.mark.parametrize(
    "garbage",
    [
        "x" * 5_000_000,
        "otb1." + "A" * 5_000_000,
        "." * 5_000_000,
        GENUINE + "A" * 5_000_000,
        "\udcff" * 1_000_000,
    ],
)
def test_megabytes_of_garbage_are_refused(garbage: str) -> None:
    with pytest.raises(TokenInvalid):
        _provider.verify(garbage, **ALICE)
    with pytest.raises(TokenInvalid):
        _provider.decode(garbage)
    with pytest.raises(TokenInvalid):
        _provider.revoke(garbage)


NOT_TEXT = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.binary(),
    st.lists(st.text(max_size=5)),
    st.dictionaries(st.text(max_size=5), st.text(max_size=5)),
    st.tuples(st.text(max_size=5)),
    st.builds(object),
)


@FUZZ
@given(NOT_TEXT)
def test_values_of_any_other_type_are_refused(value: object) -> None:
    assert_refused(value)
