"""Zero-code registration: a real `opentelemetry-instrument` subprocess picks our configurator.

Every test runs `tests/e2e/apps/zero_code_app.py`, an application with no
set-up code of its own, in a fresh interpreter with a clean environment
(no inherited ``OTEL_*`` variable, no proxy), and reads the one JSON line it
prints: the global tracer provider's class and `get_trace_store().stats()`.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from otel_bounded import telemetry
from tests.e2e.otlp_receiver import (
    OTLPReceiver,
    otlp_receiver_fixture,  # noqa: F401  (registers the otlp_receiver fixture)
)

APP = Path(__file__).parent / "apps" / "zero_code_app.py"
BIN = Path(sys.executable).parent
INSTRUMENT = BIN / "opentelemetry-instrument"
SUBPROCESS_TIMEOUT_SECONDS = 60

NO_EXPORT = {
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}
OURS = {"OTEL_PYTHON_CONFIGURATOR": "otel_bounded"}
_PROXY_VARIABLES = {"http_proxy", "https_proxy", "grpc_proxy", "HTTP_PROXY", "HTTPS_PROXY"}

pytestmark = pytest.mark.skipif(
    not INSTRUMENT.exists(), reason="opentelemetry-instrument is not installed (the all extra)"
)


def clean_environment(**variables: str) -> dict[str, str]:
    """This process's environment without any OTEL_* variable or proxy, plus `variables`."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("OTEL_") and key not in _PROXY_VARIABLES
    }
    env.update(variables)
    return env


def run_app(*args: str, env: dict[str, str], instrument: bool = True) -> tuple[dict[str, Any], str]:
    """Run the app (under opentelemetry-instrument unless told not to): (its report, stderr)."""
    command = [sys.executable, str(APP), *args]
    if instrument:
        command = [str(INSTRUMENT), *command]
    result = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT_SECONDS,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_instrumented_app_holds_a_store_capped_by_the_environment() -> None:
    env = clean_environment(
        **OURS,
        **NO_EXPORT,
        OTEL_BOUNDED_TRACE_MAX_TRACES="5",
        OTEL_BOUNDED_TRACE_MAX_SPANS="40",
    )
    report, stderr = run_app("--count", "8", env=env)

    store = report["store"]
    assert report["tracer_provider"] == "TracerProvider"
    assert (store["max_traces"], store["max_spans"]) == (5, 40)
    # 8 traces of 2 spans into 5 slots: the 3 least recently active are evicted.
    assert (store["traces"], store["spans"], store["received_spans"]) == (5, 10, 16)
    assert store["evictions_by_reason"] == {
        "max_traces": 3,
        "max_spans": 0,
        "ttl": 0,
        "max_bytes": 0,
    }
    # The first eviction is the one WARNING, naming the variable that raises the cap.
    assert stderr.count("evicted its first trace") == 1
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in stderr


def test_instrumented_app_exports_its_spans_and_eviction_count_over_otlp(
    otlp_receiver: OTLPReceiver,
) -> None:
    env = otlp_receiver.subprocess_environment(
        clean_environment(
            **OURS,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            # The SDK's (deprecated) switch that puts its LoggingHandler on the root logger.
            OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED="true",
            OTEL_SERVICE_NAME="zero-code-app",
            OTEL_BOUNDED_TRACE_MAX_TRACES="5",
        )
    )
    report, _ = run_app("--count", "8", env=env)
    assert report["store"]["evictions_by_reason"]["max_traces"] == 3

    # The SDK the configurator set up from OTEL_* exports at exit, as for any app.
    span = otlp_receiver.wait_for_span("request-7")
    assert span.resource["service.name"] == "zero-code-app"
    points = otlp_receiver.wait_for_metric(telemetry.TRACE_STORE_EVICTIONS)
    by_reason: dict[str, int] = {}
    for point in points:  # each reason per retention class, summed
        reason = point.attributes[telemetry.EVICTION_REASON]
        by_reason[reason] = by_reason.get(reason, 0) + int(point.value)
    assert by_reason == {"max_traces": 3, "max_spans": 0, "ttl": 0, "max_bytes": 0}
    assert points[0].resource["service.name"] == "zero-code-app"
    warning = otlp_receiver.wait_for_log("evicted its first trace")
    assert warning.scope == telemetry.INSTRUMENTATION_NAME
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in warning.body


@pytest.mark.parametrize(
    ("how", "variables", "instrument"),
    [
        ("the distro's configurator, by name", {"OTEL_PYTHON_CONFIGURATOR": "configurator"}, True),
        ("no configurator named", {}, True),
        ("no opentelemetry-instrument", OURS, False),
    ],
)
def test_without_our_configurator_chosen_there_is_no_store(
    how: str, variables: dict[str, str], instrument: bool
) -> None:
    report, _ = run_app(
        env=clean_environment(**variables, **NO_EXPORT, OTEL_BOUNDED_TRACE_MAX_TRACES="5"),
        instrument=instrument,
    )
    assert report["store"] is None, how
    expected_provider = "TracerProvider" if instrument else "ProxyTracerProvider"
    assert report["tracer_provider"] == expected_provider, how


def test_configuring_again_keeps_the_one_store() -> None:
    env = clean_environment(**OURS, **NO_EXPORT)
    report, stderr = run_app("--configure", "--count", "3", env=env)

    assert report["store_kept"] is True
    # One store on the provider, once: each span reached it exactly once.
    assert report["store"]["received_spans"] == 6
    assert "Overriding of current" not in stderr


def test_a_store_that_cannot_be_added_is_a_warning_not_a_failed_start() -> None:
    env = clean_environment(**OURS, **NO_EXPORT)
    report, stderr = run_app("--foreign-provider", "--configure", env=env, instrument=False)

    assert report["store"] is None
    assert report["tracer_provider"] == "NoOpTracerProvider"
    assert "otel_bounded added no TraceStore" in stderr
    assert "NoOpTracerProvider" in stderr


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.configuration") is not None,
    reason="opentelemetry-configuration is installed: OTEL_CONFIG_FILE would work",
)
def test_a_config_file_without_its_package_leaves_the_app_running_without_a_store(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "otel.yaml"
    config_file.write_text('file_format: "1.0"\n')
    env = clean_environment(**OURS, OTEL_CONFIG_FILE=str(config_file))
    report, stderr = run_app(env=env)

    # The SDK refuses the file it cannot read; opentelemetry-instrument logs that and goes on.
    assert "opentelemetry-configuration is not installed" in stderr
    assert report["store"] is None
    assert report["tracer_provider"] == "ProxyTracerProvider"


def test_an_invalid_cap_is_reported_and_the_default_applies() -> None:
    env = clean_environment(**OURS, **NO_EXPORT, OTEL_BOUNDED_TRACE_MAX_TRACES="lots")
    report, stderr = run_app("--count", "2", env=env)

    assert report["store"]["max_traces"] == 10_000
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES='lots' is invalid" in stderr
