"""OTEL_BOUNDED_TRACE_* variables, read as the OpenTelemetry specification reads SDK variables."""

from __future__ import annotations

import logging

import pytest

from otel_bounded import TraceStore

CAPS = [
    ("OTEL_BOUNDED_TRACE_MAX_TRACES", "max_traces", 10_000),
    ("OTEL_BOUNDED_TRACE_MAX_SPANS", "max_spans", 100_000),
    ("OTEL_BOUNDED_TRACE_MAX_SPANS_PER_TRACE", "max_spans_per_trace", 1_000),
]


def bounded_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "otel_bounded" and record.levelno == logging.WARNING
    ]


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for variable in list(os.environ):
        if variable.startswith("OTEL_BOUNDED_"):
            monkeypatch.delenv(variable)


def test_defaults_apply_when_nothing_is_set(caplog: pytest.LogCaptureFixture) -> None:
    stats = TraceStore.from_env().stats()
    assert (stats.max_traces, stats.max_spans, stats.max_spans_per_trace) == (
        10_000,
        100_000,
        1_000,
    )
    assert bounded_warnings(caplog) == []


@pytest.mark.parametrize(("variable", "field", "default"), CAPS)
def test_a_valid_value_sets_its_cap(
    monkeypatch: pytest.MonkeyPatch, variable: str, field: str, default: int
) -> None:
    monkeypatch.setenv(variable, " 42 ")
    assert getattr(TraceStore.from_env().stats(), field) == 42


@pytest.mark.parametrize(("variable", "field", "default"), CAPS)
def test_an_empty_value_means_unset_without_a_warning(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    field: str,
    default: int,
) -> None:
    monkeypatch.setenv(variable, "")
    assert getattr(TraceStore.from_env().stats(), field) == default
    assert bounded_warnings(caplog) == []


@pytest.mark.parametrize(("variable", "field", "default"), CAPS)
@pytest.mark.parametrize("invalid", ["abc", "0", "-3", "1.5", "1e3", "1_000", "\uff11\uff12"])
def test_an_invalid_value_warns_naming_variable_and_value_then_uses_the_default(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    variable: str,
    field: str,
    default: int,
    invalid: str,
) -> None:
    monkeypatch.setenv(variable, invalid)
    assert getattr(TraceStore.from_env().stats(), field) == default
    (warning,) = bounded_warnings(caplog)
    assert variable in warning
    assert repr(invalid) in warning


def test_ttl_is_read_as_a_positive_number_of_seconds(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from tests.support import FakeClock
    from tests.traces.helpers import make_trace, tracer_for

    clock = FakeClock()
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_TTL_SECONDS", "2.5")
    store = TraceStore.from_env(clock=clock)
    make_trace(tracer_for(store))
    clock.advance(2.4)
    assert len(store) == 1
    clock.advance(0.1)
    assert len(store) == 0
    (expired,) = bounded_warnings(caplog)
    assert "expired its first trace" in expired
    assert "OTEL_BOUNDED_TRACE_TTL_SECONDS" in expired


@pytest.mark.parametrize("invalid", ["soon", "0", "-1", "inf", "nan"])
def test_an_invalid_ttl_warns_and_means_no_age_limit(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, invalid: str
) -> None:
    from tests.support import FakeClock
    from tests.traces.helpers import make_trace, tracer_for

    clock = FakeClock()
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_TTL_SECONDS", invalid)
    store = TraceStore.from_env(clock=clock)
    make_trace(tracer_for(store))
    clock.advance(10**9)
    assert len(store) == 1
    (warning,) = bounded_warnings(caplog)
    assert "OTEL_BOUNDED_TRACE_TTL_SECONDS" in warning


def test_arguments_override_the_environment_without_reading_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_MAX_TRACES", "not-a-number")
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_MAX_SPANS", "77")
    stats = TraceStore.from_env(max_traces=5).stats()
    assert stats.max_traces == 5
    assert stats.max_spans == 77
    assert bounded_warnings(caplog) == []


def test_invalid_overrides_raise_value_error() -> None:
    with pytest.raises(ValueError, match="max_traces"):
        TraceStore.from_env(max_traces=0)
