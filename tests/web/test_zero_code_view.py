"""``OTEL_BOUNDED_HTTP_ENDPOINT``: zero-code registration serves the view, loopback only."""

from __future__ import annotations

import pytest

from otel_bounded import config
from tests.e2e.test_zero_code import NO_EXPORT, OURS, clean_environment, pytestmark, run_app

__all__ = ["pytestmark"]


def test_the_endpoint_variable_serves_the_view_of_the_registered_store() -> None:
    env = clean_environment(**OURS, **NO_EXPORT, OTEL_BOUNDED_HTTP_ENDPOINT="127.0.0.1:0")
    report, _ = run_app("--count", "5", env=env)
    assert report["store"]["traces"] == 5
    assert report["view"] == {"host": "127.0.0.1", "traces": 5}


def test_a_non_loopback_endpoint_is_refused_with_a_warning_and_the_app_runs() -> None:
    env = clean_environment(**OURS, **NO_EXPORT, OTEL_BOUNDED_HTTP_ENDPOINT="0.0.0.0:0")
    report, stderr = run_app("--count", "3", env=env)
    assert report["store"]["traces"] == 3
    assert report["view"] is None
    assert "OTEL_BOUNDED_HTTP_ENDPOINT='0.0.0.0:0' is invalid" in stderr
    assert "not a loopback address" in stderr


def test_without_the_variable_nothing_listens() -> None:
    report, _ = run_app("--count", "2", env=clean_environment(**OURS, **NO_EXPORT))
    assert report["view"] is None


@pytest.mark.parametrize(
    ("raw", "accepted"),
    [
        ("127.0.0.1:8765", True),
        ("localhost:0", True),
        ("[::1]:8765", True),
        ("127.9.9.9:1", True),
        ("0.0.0.0:8765", False),
        ("[::]:8765", False),
        ("example.com:80", False),
        ("127.0.0.1", False),
        ("127.0.0.1:65536", False),
        ("127.0.0.1:-1", False),
        (":8765", False),
        ("127.0.0.1:http", False),
    ],
)
def test_endpoint_values(raw: str, accepted: bool) -> None:
    setting = config.resolve(config.HTTP_ENDPOINT, {config.HTTP_ENDPOINT.name: raw})
    assert (setting.ignored is None) == accepted, setting
    assert setting.value == (raw if accepted else None)
