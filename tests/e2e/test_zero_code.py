"""Zero-code registration: a real `opentelemetry-instrument` subprocess, nothing else.

Every test runs `tests/e2e/apps/zero_code_app.py`, an application with no
set-up code of its own, in a fresh interpreter with a clean environment
(no inherited ``OTEL_*`` variable, no proxy), and reads the one JSON line it
prints: the global tracer provider's class, resource and span processors,
and `get_trace_store().stats()`. The ``otel_bounded`` instrumentor adds the
store to whatever a configurator set up: the distro's, ours by name, a
vendor's, or the SDK's reading ``OTEL_CONFIG_FILE``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
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
OPT_OUT = {"OTEL_PYTHON_DISABLED_INSTRUMENTATIONS": "otel_bounded"}
# The two doors to a store: the instrumentor alone, or our configurator named too.
DOORS = pytest.mark.parametrize(
    "door", [pytest.param({}, id="plain-instrument"), pytest.param(OURS, id="our-configurator")]
)
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


@DOORS
def test_instrumented_app_holds_one_store_capped_by_the_environment(door: dict[str, str]) -> None:
    env = clean_environment(
        **door,
        **NO_EXPORT,
        OTEL_BOUNDED_TRACE_MAX_TRACES="5",
        OTEL_BOUNDED_TRACE_MAX_SPANS="40",
    )
    report, stderr = run_app("--count", "8", env=env)

    store = report["store"]
    assert report["tracer_provider"] == "TracerProvider"
    # Configurator and instrumentor both ran with ours named: still one store, each span once.
    assert report["span_processors"].count("TraceStore") == 1
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


# How the stdlib logging bridge gets onto the root logger, if at all.
BRIDGES = pytest.mark.parametrize(
    "bridge",
    [
        # opentelemetry-instrumentation-logging (a dev dependency) puts its handler there.
        pytest.param({}, id="instrumentation-logging"),
        # The SDK's (deprecated) switch for its own LoggingHandler.
        pytest.param(
            {"OTEL_PYTHON_LOGGING_AUTO_INSTRUMENTATION_ENABLED": "true"}, id="sdk-handler"
        ),
        # No bridge at all: the store's own handler emits through the logs API.
        pytest.param({"OTEL_PYTHON_LOG_AUTO_INSTRUMENTATION": "false"}, id="no-bridge"),
    ],
)


@BRIDGES
def test_instrumented_app_exports_spans_evictions_and_one_structured_warning_over_otlp(
    otlp_receiver: OTLPReceiver, bridge: dict[str, str]
) -> None:
    env = otlp_receiver.subprocess_environment(
        clean_environment(
            **bridge,
            OTEL_TRACES_EXPORTER="otlp",
            OTEL_METRICS_EXPORTER="otlp",
            OTEL_LOGS_EXPORTER="otlp",
            OTEL_SERVICE_NAME="zero-code-app",
            OTEL_BOUNDED_TRACE_MAX_TRACES="5",
        )
    )
    report, _ = run_app("--count", "8", env=env)
    assert report["store"]["evictions_by_reason"]["max_traces"] == 3

    # The SDK the distro set up from OTEL_* exports at exit, as for any app.
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
    assert warning.resource["service.name"] == "zero-code-app"
    assert {
        key: warning.attributes.get(key)
        for key in (
            telemetry.EVICTION_REASON,
            telemetry.CAP_NAME,
            telemetry.CAP_VALUE,
            telemetry.CAP_VARIABLE,
            telemetry.COMPONENT_NAME,
        )
    } == {
        telemetry.EVICTION_REASON: "max_traces",
        telemetry.CAP_NAME: "max_traces",
        telemetry.CAP_VALUE: 5,
        telemetry.CAP_VARIABLE: "OTEL_BOUNDED_TRACE_MAX_TRACES",
        telemetry.COMPONENT_NAME: "otel_bounded_trace_store/0",
    }
    # Exactly once: a bridge and the logs API never both deliver it.
    warnings = [log for log in otlp_receiver.logs() if "evicted its first trace" in log.body]
    assert len(warnings) == 1


def test_the_warning_reaches_stderr_when_the_logging_bridge_exports_nowhere() -> None:
    env = clean_environment(**NO_EXPORT, OTEL_BOUNDED_TRACE_MAX_TRACES="5")
    report, stderr = run_app("--count", "8", env=env)

    # The premise: instrumentation-logging's bridge is the root logger's only handler.
    assert report["root_handlers"] == ["opentelemetry.instrumentation.logging.handler"]
    assert report["store"]["evictions_by_reason"]["max_traces"] == 3
    assert stderr.count("evicted its first trace") == 1
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in stderr


@pytest.mark.parametrize(
    ("how", "variables", "instrument", "expected_provider"),
    [
        ("opted out", OPT_OUT, True, "TracerProvider"),
        ("no opentelemetry-instrument", OURS, False, "ProxyTracerProvider"),
        ("no opentelemetry-instrument", {}, False, "ProxyTracerProvider"),
    ],
)
def test_without_instrumentation_or_opted_out_there_is_no_store(
    how: str, variables: dict[str, str], instrument: bool, expected_provider: str
) -> None:
    report, _ = run_app(
        env=clean_environment(**variables, **NO_EXPORT, OTEL_BOUNDED_TRACE_MAX_TRACES="5"),
        instrument=instrument,
    )
    assert report["store"] is None, how
    assert report["tracer_provider"] == expected_provider, how
    assert "TraceStore" not in report["span_processors"], how


def test_naming_our_configurator_adds_the_store_even_with_the_instrumentor_opted_out() -> None:
    report, _ = run_app(env=clean_environment(**OURS, **OPT_OUT, **NO_EXPORT))
    assert report["span_processors"].count("TraceStore") == 1
    assert report["store"]["received_spans"] == 16


VENDOR_MODULE = textwrap.dedent(
    """
    # A vendor's distribution: its own configurator, resource and span processor.
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider


    class VendorProcessor(SpanProcessor):
        ended = 0

        def on_end(self, span):
            VendorProcessor.ended += 1


    class VendorConfigurator:
        def configure(self, **kwargs):
            provider = TracerProvider(resource=Resource({"service.name": "vendor-app"}))
            provider.add_span_processor(VendorProcessor())
            trace.set_tracer_provider(provider)
    """
)


def install_vendor_distribution(root: Path) -> Path:
    """A third-party-style package with an ``opentelemetry_configurator`` entry point."""
    (root / "vendor_otel.py").write_text(VENDOR_MODULE)
    metadata = root / "vendor_otel-1.0.dist-info"
    metadata.mkdir()
    (metadata / "METADATA").write_text("Metadata-Version: 2.1\nName: vendor-otel\nVersion: 1.0\n")
    (metadata / "entry_points.txt").write_text(
        "[opentelemetry_configurator]\nvendor = vendor_otel:VendorConfigurator\n"
    )
    return root


def test_the_store_joins_the_provider_a_vendors_configurator_built(tmp_path: Path) -> None:
    env = clean_environment(
        **NO_EXPORT,
        OTEL_PYTHON_CONFIGURATOR="vendor",
        PYTHONPATH=str(install_vendor_distribution(tmp_path)),
    )
    report, stderr = run_app("--count", "3", env=env)

    assert report["service_name"] == "vendor-app", stderr
    assert report["span_processors"] == ["VendorProcessor", "TraceStore"]
    assert report["store"]["received_spans"] == 6


@pytest.mark.skipif(
    importlib.util.find_spec("opentelemetry.configuration") is None,
    reason="opentelemetry-configuration (a dev dependency) is not installed",
)
@DOORS
def test_the_store_joins_the_provider_a_config_file_declared(
    tmp_path: Path, otlp_receiver: OTLPReceiver, door: dict[str, str]
) -> None:
    config_file = tmp_path / "otel.yaml"
    config_file.write_text(
        textwrap.dedent(
            f"""
            file_format: "1.0"
            resource:
              attributes:
                - name: service.name
                  value: from-config-file
            tracer_provider:
              processors:
                - simple:
                    exporter:
                      otlp_grpc:
                        endpoint: {otlp_receiver.endpoint}
                        tls:
                          insecure: true
            """
        )
    )
    env = clean_environment(
        **door, OTEL_CONFIG_FILE=str(config_file), OTEL_BOUNDED_TRACE_MAX_TRACES="2"
    )
    report, stderr = run_app("--count", "3", env=env)

    assert report["service_name"] == "from-config-file", stderr
    assert report["span_processors"].count("TraceStore") == 1
    assert report["store"]["max_traces"] == 2
    assert report["store"]["received_spans"] == 6
    # The file's own pipeline still exports: the store was added beside it, not instead.
    span = otlp_receiver.wait_for_span("request-2")
    assert span.resource["service.name"] == "from-config-file"


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


def hide_configuration_package(root: Path) -> Path:
    """A path entry on which ``import opentelemetry.configuration`` fails, as if not installed.

    ``opentelemetry`` is a namespace package, so this portion, first on the
    path, answers for ``opentelemetry.configuration`` before the installed one.
    """
    package = root / "opentelemetry" / "configuration"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(
        'raise ImportError("opentelemetry-configuration hidden by the test")\n'
    )
    return root


def test_a_config_file_without_its_package_leaves_the_app_running_without_a_store(
    tmp_path: Path,
) -> None:
    config_file = tmp_path / "otel.yaml"
    config_file.write_text('file_format: "1.0"\n')
    env = clean_environment(
        **OURS,
        OTEL_CONFIG_FILE=str(config_file),
        PYTHONPATH=str(hide_configuration_package(tmp_path / "hidden")),
    )
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
