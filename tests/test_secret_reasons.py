"""An invalid secret's reason is shown whole, and what is shown never depends on the secret.

The model: a secret's value may only change which of a few fixed messages is
shown (its validity class), never a single character of the output. So the
output for any invalid secret must equal the output for a reference secret
of the same class, whatever letters, quotes or Unicode the secret holds.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_bounded import HMACTokenProvider, config
from otel_bounded.cli import show_config

SHORT = "shorter than 32 bytes"


def config_output(secret: str, *, as_json: bool = False) -> str:
    out = io.StringIO()
    show_config(
        {config.TOKEN_SECRET.name: secret},
        as_json=as_json,
        stdout=out,
        variables=(config.TOKEN_SECRET,),
    )
    return out.getvalue()


def from_env_error(monkeypatch: pytest.MonkeyPatch, secret: str) -> str:
    monkeypatch.setenv(config.TOKEN_SECRET.name, secret)
    monkeypatch.delenv(config.TOKEN_SECRET_FILE.name, raising=False)
    with pytest.raises(ValueError, match=config.TOKEN_SECRET.name) as caught:
        HMACTokenProvider.from_env()
    return str(caught.value)


# Short secrets that are not blank after stripping (a blank value means unset).
short_secrets = st.text(min_size=1, max_size=31).filter(
    lambda text: text.strip() != "" and len(text.encode("utf-8", "surrogatepass")) < 32
)


@pytest.mark.parametrize("secret", ["e", "r", "short", "shorter than 32 bytes", "<redacted>"])
def test_config_keeps_the_whole_reason_for_a_secret_made_of_its_letters(secret: str) -> None:
    for as_json in (False, True):
        shown = config_output(secret, as_json=as_json)
        assert SHORT in shown
        assert shown == config_output("x", as_json=as_json)


@pytest.mark.parametrize("secret", ["short", "e", "shorter than 32 bytes"])
def test_from_env_keeps_the_reason_for_a_short_secret(
    monkeypatch: pytest.MonkeyPatch, secret: str
) -> None:
    message = from_env_error(monkeypatch, secret)
    assert message == f"{config.TOKEN_SECRET.name}=<redacted> is invalid: {SHORT}"


@settings(max_examples=150, deadline=None)
@given(secret=short_secrets)
def test_what_config_shows_for_a_short_secret_never_depends_on_it(secret: str) -> None:
    try:
        secret.encode("utf-8")
    except UnicodeEncodeError:
        reference = "\ud800"  # the other validity class: not valid UTF-8
    else:
        reference = "x"
    assert config_output(secret) == config_output(reference)
    assert config_output(secret, as_json=True) == config_output(reference, as_json=True)


def _digits(text: str) -> int:
    return int(text)  # int() quotes the value it refuses


QUOTING_SECRET = config.Variable(
    "OTEL_BOUNDED_TEST_KEY", None, _digits, "digits", "test", strict=True, secret=True
)


@settings(max_examples=150, deadline=None)
@given(secret=st.text(min_size=1, max_size=40).filter(lambda text: text.strip() != ""))
def test_a_parser_that_quotes_the_secret_shows_one_of_two_fixed_reasons(secret: str) -> None:
    try:
        int(secret)
    except ValueError:
        pass
    else:
        return  # a valid value: nothing refused
    setting = config.resolve(QUOTING_SECRET, {QUOTING_SECRET.name: secret})
    assert setting.reason in {
        "invalid literal for int() with base 10: '<redacted>'",
        "invalid value (the reason is withheld: it would reveal the secret)",
    }


def test_a_secret_that_is_not_utf8_keeps_that_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    # os.environ holds undecodable bytes as lone surrogates (surrogateescape).
    message = from_env_error(monkeypatch, "\udcff-" + "x" * 40)
    assert message == f"{config.TOKEN_SECRET.name}=<redacted> is invalid: not valid UTF-8"
