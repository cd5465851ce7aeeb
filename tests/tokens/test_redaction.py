"""A revocation store's credentials never reach a repr, an error, a span or `otel-bounded config`.

redis-py takes a password from the userinfo (``redis://:pw@host``) and from
the query (``redis://host?password=pw``): both forms are hidden everywhere a
store URL is shown, while the rest of the URL stays visible to operators.
"""

from __future__ import annotations

import io
import json
import urllib.parse
from pathlib import Path

import pytest

from otel_bounded import config
from otel_bounded.cli import show_config
from otel_bounded.config import redact_url
from otel_bounded.errors import RevocationStoreUnavailable
from otel_bounded.telemetry import SPAN_TOKEN_REVOKE, SPAN_TOKEN_REVOKE_ALL, SPAN_TOKEN_SWEEP
from otel_bounded.tokens import HMACTokenProvider, RedisRevocationStore, open_revocation_store
from tests.servers import REDIS, free_port, launch
from tests.support import FakeClock
from tests.tokens.helpers import SECRET, Telemetry

PASSWORD = "hunter2-p@ss/w#rd?"
QUOTED = urllib.parse.quote(PASSWORD, safe="")


def credential_forms(address: str) -> list[str]:
    """Every way a Redis URL can carry the password (and a username) that redis-py honours."""
    return [
        f"redis://:{QUOTED}@{address}/0",
        f"redis://admin:{QUOTED}@{address}/0",
        f"redis://{address}/0?password={QUOTED}",
        f"redis://{address}/0?db=0&username=admin&password={QUOTED}",
        f"rediss://{address}/0?ssl_password={QUOTED}",
    ]


def assert_hidden(text: str) -> None:
    for form in ("hunter2", PASSWORD, QUOTED, urllib.parse.quote_plus(PASSWORD)):
        assert form not in text, f"the password leaked in: {text}"


@pytest.mark.parametrize("url", credential_forms("redis.internal:6379"))
def test_redact_url_hides_the_password_in_every_form_and_keeps_the_host(url: str) -> None:
    shown = redact_url(url)

    assert_hidden(shown)
    assert "admin" not in shown
    assert "redis.internal:6379/0" in shown
    assert "***" in shown


@pytest.mark.parametrize(
    "url",
    [
        "redis://:s3#cr3t@host/0",  # unescaped: urllib cuts the password at # or ?
        "redis://:s3?cr3t@host/0",
        "redis://host/0?x=@&password=s3cr3t",
        "redis://host/0?pass%77ord=s3cr3t",  # a percent-encoded name is still the password
        "redis://host/0?pass\tword=s3cr3t",  # urllib drops tabs before parsing
        "redis://host/0#s3cr3t",
    ],
)
def test_redact_url_hides_passwords_in_malformed_urls_too(url: str) -> None:
    shown = redact_url(url)

    for part in ("s3", "cr3t"):
        assert part not in shown


@pytest.mark.parametrize(
    "url", ["memory", "sqlite:///revocations.db", "sqlite:////var/lib/a@b.db", "redis://h:1/0"]
)
def test_redact_url_leaves_urls_without_credentials_as_written(url: str) -> None:
    assert redact_url(url) == url


@pytest.mark.parametrize("url", credential_forms("127.0.0.1:6379"))
def test_store_and_provider_reprs_never_show_the_password(url: str) -> None:
    store = open_revocation_store(url)  # connects lazily: nothing is reached here
    provider = HMACTokenProvider(SECRET, revocations=store)

    assert_hidden(repr(store))
    assert_hidden(repr(provider))
    assert "127.0.0.1:6379" in repr(provider)
    store.close()


def test_a_store_description_given_as_a_url_is_redacted_too() -> None:
    import redis

    client = redis.Redis.from_url(f"redis://:{QUOTED}@127.0.0.1:1/0")
    store = RedisRevocationStore(client, description=f"redis://:{QUOTED}@127.0.0.1:1/0")

    assert_hidden(repr(store))
    client.close()


@pytest.mark.parametrize("url", credential_forms(f"127.0.0.1:{free_port()}"))
def test_unreachable_store_errors_and_span_events_never_show_the_password(
    url: str, otel: Telemetry
) -> None:
    """Nothing listens on that port: every store call fails, and says where, without it."""
    clock = FakeClock()
    provider = HMACTokenProvider(
        SECRET, clock=clock, sweep_interval_seconds=1, revocations=url, **otel.providers()
    )
    token = provider.issue("read", "alice")
    scope = {"expected_principal_id": "alice", "expected_capability_id": "read"}
    errors = []
    for attempt in [
        lambda: provider.verify(token, **scope),
        lambda: provider.revoke(token),
        lambda: provider.revoke_all("alice"),
        provider.sweep,
    ]:
        with pytest.raises(RevocationStoreUnavailable) as failed:
            attempt()
        errors.append(failed.value)
    clock.advance(1)
    provider.issue("read", "bob")  # an automatic sweep fails on its span, not here

    for error in errors:
        assert_hidden(str(error))
        assert_hidden(repr(error))
        assert "127.0.0.1" in str(error)
    failed_spans = otel.spans(SPAN_TOKEN_REVOKE) + otel.spans(SPAN_TOKEN_REVOKE_ALL)
    failed_spans += otel.spans(SPAN_TOKEN_SWEEP)
    assert len(failed_spans) == 4
    events = [event for span in failed_spans for event in span.events]
    assert len(events) == 4
    for span in failed_spans:
        assert_hidden(str(span.status.description))
        for event in span.events:
            assert_hidden(json.dumps(dict(event.attributes or {}), default=str))
    provider.close()


@pytest.mark.servers
def test_a_password_in_the_query_is_a_real_credential_and_stays_hidden(
    tmp_path: Path, otel: Telemetry
) -> None:
    """A real Redis that requires the password: the query form authenticates, then fails hidden."""
    import redis

    server = launch(REDIS, tmp_path / "redis")
    try:
        admin = redis.Redis(host="127.0.0.1", port=server.port)
        admin.config_set("requirepass", PASSWORD)
        admin.close()
        url = f"redis://{server.address}/0?password={QUOTED}"
        provider = HMACTokenProvider(SECRET, clock=FakeClock(), revocations=url, **otel.providers())
        token = provider.issue("read", "alice")
        assert provider.revoke(token) is True  # authenticated with the query's password

        server.kill()
        with pytest.raises(RevocationStoreUnavailable) as failed:
            provider.revoke(provider.issue("read", "alice"))
    finally:
        server.stop()
    assert_hidden(str(failed.value))
    assert_hidden(repr(provider))
    for span in otel.spans():
        for event in span.events:
            assert_hidden(json.dumps(dict(event.attributes or {}), default=str))
    provider.close()


@pytest.mark.parametrize("as_json", [False, True])
@pytest.mark.parametrize("url", credential_forms("redis.internal:6379"))
def test_otel_bounded_config_shows_the_store_without_its_password(url: str, as_json: bool) -> None:
    out = io.StringIO()

    status = show_config({config.REVOCATION_STORE.name: url}, as_json=as_json, stdout=out)

    assert status == 0
    assert_hidden(out.getvalue())
    assert "redis.internal:6379/0" in out.getvalue()  # operators still see which store


def test_otel_bounded_config_redacts_a_value_it_ignored() -> None:
    """A variable with `redact` whose value was refused shows it, and the reason, redacted."""

    def refuse(text: str) -> str:
        raise ValueError(f"cannot use {text}")

    variable = config.Variable(
        "OTEL_BOUNDED_EXAMPLE_STORE",
        "memory",
        refuse,
        "a URL",
        "An example.",
        strict=True,
        redact=redact_url,
    )
    url = f"redis://:{QUOTED}@redis.internal:6379/0"
    out = io.StringIO()

    status = show_config({variable.name: url}, as_json=True, stdout=out, variables=[variable])

    assert status == 1
    (row,) = json.loads(out.getvalue())["variables"]
    assert row["ignored"] == "redis://:***@redis.internal:6379/0"
    assert row["reason"] == "cannot use redis://:***@redis.internal:6379/0"
    assert_hidden(out.getvalue())


def test_an_invalid_store_url_from_the_environment_is_refused_without_its_password(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(config.TOKEN_SECRET.name, SECRET.decode())
    monkeypatch.setenv(config.REVOCATION_STORE.name, f"redis://:{QUOTED}@host:notaport/0")

    with pytest.raises(ValueError, match=config.REVOCATION_STORE.name) as refused:
        HMACTokenProvider.from_env()

    assert_hidden(str(refused.value))


@pytest.mark.parametrize("wrap", ["{}", "Bearer {}", "user:{}", " {} "])
def test_a_token_passed_as_a_principal_is_refused_before_any_span_or_store_sees_it(
    wrap: str,
) -> None:
    telemetry = Telemetry.create()
    provider = HMACTokenProvider(SECRET, clock=FakeClock(1_000_000.0), **telemetry.providers())
    encoded = provider.issue("read", "alice", ttl_seconds=60).encode()
    misplaced = wrap.format(encoded)

    for call in (
        lambda: provider.revoke_all(misplaced),
        lambda: provider.issue("read", misplaced, ttl_seconds=60),
        lambda: provider.issue(misplaced, "alice", ttl_seconds=60),
    ):
        with pytest.raises(ValueError, match="encoded token") as caught:
            call()
        assert encoded not in str(caught.value)
        signature = encoded.rsplit(".", 1)[1]
        assert signature not in str(caught.value)

    exported = [json.dumps(dict(span.attributes or {})) for span in telemetry.spans()]
    assert all(encoded.rsplit(".", 1)[1] not in text for text in exported)
    assert provider.revoke_all("alice") == 1
    telemetry.shutdown()
