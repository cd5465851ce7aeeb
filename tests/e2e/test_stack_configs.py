"""The collector/Jaeger/Prometheus/Grafana stack in examples/observability, checked statically.

Docker is not needed: each config is parsed and cross-checked against the
others, so that a service name, a port or a mount path changed in one file
and not in the others fails here rather than in a user's first `compose up`.
The example app runs a few ticks against the real SDK with in-memory readers.
"""

from __future__ import annotations

import importlib.util
import json
import random
import re
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded import telemetry
from tests.servers import require_binary
from tests.support import FakeClock

STACK = Path(__file__).resolve().parents[2] / "examples" / "observability"
GRAFANA_PROVISIONING = "/etc/grafana/provisioning"
"""Where Grafana looks for provisioning files: fixed by the image, not by our configs."""
PIPELINE_SIGNALS = ("traces", "metrics", "logs")
JAEGER_OTLP_GRPC_PORT = 4317
"""Jaeger's OTLP gRPC receiver port, fixed by its image's default configuration."""


def load_yaml(name: str) -> Any:
    return yaml.safe_load((STACK / name).read_text())


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml("compose.yaml")


@pytest.fixture(scope="module")
def collector() -> dict[str, Any]:
    return load_yaml("otel-collector.yaml")


@pytest.fixture(scope="module")
def prometheus() -> dict[str, Any]:
    return load_yaml("prometheus.yml")


@pytest.fixture(scope="module")
def datasources() -> list[dict[str, Any]]:
    return list(load_yaml("grafana/provisioning/datasources/datasources.yaml")["datasources"])


@pytest.fixture(scope="module")
def dashboard_providers() -> list[dict[str, Any]]:
    return list(load_yaml("grafana/provisioning/dashboards/dashboards.yaml")["providers"])


# -- compose helpers ---------------------------------------------------------


@dataclass(frozen=True)
class Published:
    host_ip: str
    host_port: int
    container_port: int


def published_ports(service: dict[str, Any]) -> list[Published]:
    ports = []
    for entry in service.get("ports", []):
        host_ip, host_port, container_port = str(entry).split("/")[0].rsplit(":", 2)
        ports.append(Published(host_ip, int(host_port), int(container_port)))
    return ports


def mounts(service: dict[str, Any]) -> dict[PurePosixPath, Path]:
    """Container path -> host path (relative to the compose file) of each bind mount."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_mode = str(volume).split(":")
        found[PurePosixPath(container)] = (STACK / host).resolve()
    return found


def service_running(compose: dict[str, Any], image: str) -> tuple[str, dict[str, Any]]:
    """The one service whose image is `image` (any tag)."""
    matches = [
        (name, service)
        for name, service in compose["services"].items()
        if service["image"].rsplit(":", 1)[0] == image
    ]
    assert len(matches) == 1, f"expected one service running {image}, found {matches}"
    return matches[0]


def flag(service: dict[str, Any], name: str) -> str | None:
    """The value of ``--name=value`` in the service's command, if given."""
    command = service.get("command", [])
    for argument in [command] if isinstance(command, str) else command:
        if argument.startswith(f"{name}="):
            return str(argument.split("=", 1)[1])
    return None


def port_of(endpoint: str) -> int:
    return int(endpoint.rsplit(":", 1)[1])


# -- every file ----------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "compose.yaml",
        "otel-collector.yaml",
        "prometheus.yml",
        "grafana/provisioning/datasources/datasources.yaml",
        "grafana/provisioning/dashboards/dashboards.yaml",
    ],
)
def test_stack_config_parses_as_a_yaml_mapping(name: str) -> None:
    assert isinstance(load_yaml(name), dict)


def test_dashboard_parses_as_json() -> None:
    dashboard = json.loads((STACK / "grafana/dashboards/otel-bounded.json").read_text())

    assert dashboard["uid"] == "otel-bounded"
    assert dashboard["panels"]


# -- compose -------------------------------------------------------------------


def test_compose_runs_collector_jaeger_prometheus_and_grafana(compose: dict[str, Any]) -> None:
    images = {service["image"].rsplit(":", 1)[0] for service in compose["services"].values()}

    assert images == {
        "otel/opentelemetry-collector-contrib",
        "jaegertracing/jaeger",
        "prom/prometheus",
        "grafana/grafana",
    }


def test_every_image_is_pinned_to_a_version(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        _image, _, tag = service["image"].rpartition(":")
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", tag), f"{name}: {service['image']} is not pinned"


def test_ports_are_published_on_loopback_only_and_never_twice(compose: dict[str, Any]) -> None:
    host_ports = Counter(
        published.host_port
        for service in compose["services"].values()
        for published in published_ports(service)
    )

    for service in compose["services"].values():
        for published in published_ports(service):
            assert published.host_ip == "127.0.0.1", service
    assert host_ports, "the stack publishes its UIs and the OTLP ports"
    assert max(host_ports.values()) == 1, host_ports


def test_every_mounted_file_or_folder_exists(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for container, host in mounts(service).items():
            assert host.exists(), f"{name} mounts {host} at {container}: missing"


def test_services_depend_only_on_services_of_the_stack(compose: dict[str, Any]) -> None:
    for service in compose["services"].values():
        for other in service.get("depends_on", []):
            assert other in compose["services"]


# -- collector -----------------------------------------------------------------


def test_collector_reads_the_mounted_config(compose: dict[str, Any]) -> None:
    _name, service = service_running(compose, "otel/opentelemetry-collector-contrib")

    config = flag(service, "--config")
    assert config is not None
    assert mounts(service)[PurePosixPath(config)] == STACK / "otel-collector.yaml"


def test_collector_pipelines_use_only_defined_components(collector: dict[str, Any]) -> None:
    pipelines = collector["service"]["pipelines"]
    used: dict[str, set[str]] = {"receivers": set(), "processors": set(), "exporters": set()}

    for pipeline_name, pipeline in pipelines.items():
        assert pipeline_name.split("/")[0] in PIPELINE_SIGNALS, pipeline_name
        assert pipeline["receivers"], pipeline_name
        assert pipeline["exporters"], pipeline_name
        for kind, names in used.items():
            for component in pipeline.get(kind, []):
                assert component in (collector.get(kind) or {}), (
                    f"pipeline {pipeline_name} uses {kind[:-1]} {component}, never defined"
                )
                names.add(component)
    for extension in collector["service"].get("extensions", []):
        assert extension in collector["extensions"], f"extension {extension} is not defined"
    for kind, names in used.items():
        assert set(collector.get(kind) or {}) == names, f"{kind} defined but unused"


def test_collector_pipelines_send_traces_to_jaeger_metrics_to_prometheus_logs_to_debug(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    pipelines = collector["service"]["pipelines"]
    exporters = collector["exporters"]
    jaeger, _service = service_running(compose, "jaegertracing/jaeger")

    (to_jaeger,) = pipelines["traces"]["exporters"]
    assert to_jaeger.split("/")[0] == "otlp"
    assert exporters[to_jaeger]["endpoint"] == f"{jaeger}:{JAEGER_OTLP_GRPC_PORT}"
    assert exporters[to_jaeger]["tls"]["insecure"] is True  # inside the compose network
    assert [e.split("/")[0] for e in pipelines["metrics"]["exporters"]] == ["prometheus"]
    assert [e.split("/")[0] for e in pipelines["logs"]["exporters"]] == ["debug"]
    for signal in PIPELINE_SIGNALS:
        assert pipelines[signal]["receivers"] == ["otlp"]


def test_collector_publishes_exactly_its_otlp_receiver_ports(
    collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    _name, service = service_running(compose, "otel/opentelemetry-collector-contrib")
    protocols = collector["receivers"]["otlp"]["protocols"]

    receiver_ports = {port_of(protocol["endpoint"]) for protocol in protocols.values()}
    published = {(p.host_port, p.container_port) for p in published_ports(service)}

    assert receiver_ports == {4317, 4318}, "the OTLP ports the app's exporters default to"
    assert published == {(port, port) for port in receiver_ports}


def test_collector_listens_on_every_interface_inside_its_container(
    collector: dict[str, Any],
) -> None:
    # Other containers reach it by service name: a loopback address would hide it.
    endpoints = [p["endpoint"] for p in collector["receivers"]["otlp"]["protocols"].values()]
    endpoints.append(collector["exporters"]["prometheus"]["endpoint"])

    for endpoint in endpoints:
        assert endpoint.rsplit(":", 1)[0] == "0.0.0.0", endpoint


# -- Prometheus ------------------------------------------------------------------


def test_prometheus_reads_the_mounted_config(compose: dict[str, Any]) -> None:
    _name, service = service_running(compose, "prom/prometheus")

    config = flag(service, "--config.file")
    assert config is not None
    assert mounts(service)[PurePosixPath(config)] == STACK / "prometheus.yml"


def test_prometheus_scrapes_the_collectors_prometheus_exporter(
    prometheus: dict[str, Any], collector: dict[str, Any], compose: dict[str, Any]
) -> None:
    collector_service, _service = service_running(compose, "otel/opentelemetry-collector-contrib")
    exporter_port = port_of(collector["exporters"]["prometheus"]["endpoint"])

    scraping = [
        job
        for job in prometheus["scrape_configs"]
        for static in job.get("static_configs", [])
        if f"{collector_service}:{exporter_port}" in static["targets"]
    ]

    assert len(scraping) == 1
    # The collector labels series with the app's service.name as job: keep it.
    assert scraping[0]["honor_labels"] is True


def test_promtool_accepts_the_prometheus_config() -> None:
    promtool = require_binary("promtool", "prometheus")
    checked = subprocess.run(
        [promtool, "check", "config", str(STACK / "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert checked.returncode == 0, checked.stdout + checked.stderr


# -- Grafana ---------------------------------------------------------------------


def test_grafana_mounts_its_provisioning_folder(compose: dict[str, Any]) -> None:
    _name, service = service_running(compose, "grafana/grafana")

    provisioning = mounts(service)[PurePosixPath(GRAFANA_PROVISIONING)]

    assert provisioning == STACK / "grafana" / "provisioning"
    assert (provisioning / "datasources").is_dir()
    assert (provisioning / "dashboards").is_dir()


def test_prometheus_datasource_points_at_the_prometheus_service(
    datasources: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    name, service = service_running(compose, "prom/prometheus")
    listen = flag(service, "--web.listen-address") or "0.0.0.0:9090"
    (source,) = [s for s in datasources if s["type"] == "prometheus"]

    url = urlsplit(source["url"])

    assert (url.hostname, url.port) == (name, port_of(listen))
    assert source["isDefault"] is True


def test_jaeger_datasource_points_at_the_jaeger_ui(
    datasources: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    name, service = service_running(compose, "jaegertracing/jaeger")
    (source,) = [s for s in datasources if s["type"] == "jaeger"]

    url = urlsplit(source["url"])

    assert url.hostname == name
    assert url.port in {p.container_port for p in published_ports(service)}


def test_datasource_scrape_interval_matches_prometheus(
    datasources: list[dict[str, Any]], prometheus: dict[str, Any]
) -> None:
    # Grafana derives $__rate_interval from it: too short a guess leaves rate() panels empty.
    (source,) = [s for s in datasources if s["type"] == "prometheus"]

    assert source["jsonData"]["timeInterval"] == prometheus["global"]["scrape_interval"]


def test_dashboard_provider_reads_the_mounted_dashboards_folder(
    dashboard_providers: list[dict[str, Any]], compose: dict[str, Any]
) -> None:
    _name, service = service_running(compose, "grafana/grafana")
    (provider,) = dashboard_providers

    folder = mounts(service)[PurePosixPath(provider["options"]["path"])]

    assert provider["type"] == "file"
    assert folder == STACK / "grafana" / "dashboards"
    assert (folder / "otel-bounded.json").is_file()


# -- the example app -------------------------------------------------------------


@pytest.fixture
def example_app(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "otel_bounded_observability_app", STACK / "app.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, module)  # dataclasses look their module up
    spec.loader.exec_module(module)
    for name, value in module.DEMO_DEFAULTS.items():
        monkeypatch.setenv(name, value)
    return module


def test_example_app_gives_every_dashboard_panel_data(
    example_app: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TOKEN_SWEEP_INTERVAL_SECONDS", "10")
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    spans = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(spans))
    clock = FakeClock()
    demo = example_app.build(tracer_provider, meter_provider, clock=clock, rng=random.Random(7))

    # Tokens live at least 5 s and their revocations the skew (60 s) longer; with a
    # sweep every 10 s, the one at 70 s has something to remove.
    for _ in range(75):
        example_app.tick(demo)
        clock.advance(1)
    points = collected(reader)

    assert points[telemetry.TRACE_STORE_EVICTIONS]["max_traces"] > 0
    # The batch job's alike spans are compacted, or past the per-trace cap dropped.
    relieved = points[telemetry.TRACE_STORE_SPANS_DROPPED]["max_spans_per_trace"]
    assert relieved + points[telemetry.TRACE_STORE_SPANS_COMPACTED][""] > 0
    assert points[telemetry.TOKEN_REVOCATIONS_SWEPT][""] > 0
    assert points[telemetry.TOKEN_REVOCATIONS][""] > 0
    verified = {k for k, v in points[telemetry.TOKEN_VERIFICATIONS].items() if v}
    assert verified >= {"ok", "revoked", "expired", "invalid", "scope_mismatch"}
    refused = {k for k, v in points[telemetry.APPROVAL_DECISIONS].items() if v and k != "allowed"}
    assert len(refused) >= 3, refused
    assert points[telemetry.APPROVAL_DECISIONS]["allowed"] > 0
    assert any(s.name == "otel_bounded.approval.consume" for s in spans.get_finished_spans())
    tracer_provider.shutdown()
    meter_provider.shutdown()


def collected(reader: InMemoryMetricReader) -> dict[str, dict[str, float]]:
    """Metric -> its values by reason label (eviction, drop, outcome or reason code)."""
    labels = (
        telemetry.EVICTION_REASON,
        telemetry.DROP_REASON,
        telemetry.APPROVAL_REASON_CODE,
        telemetry.OUTCOME,
    )
    found: dict[str, dict[str, float]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                values = found.setdefault(metric.name, Counter())
                for point in metric.data.data_points:
                    attributes = dict(point.attributes or {})
                    key = next((str(attributes[k]) for k in labels if attributes.get(k)), "")
                    values[key] += point.value
    return found
