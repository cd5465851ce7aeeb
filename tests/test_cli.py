"""The ``otel-bounded`` command: ``config``, ``demo`` (offline and over a real OTLP receiver)."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import threading
import tracemalloc
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from otel_bounded import config, telemetry
from otel_bounded.cli import main, show_config
from otel_bounded.version import __version__

COMMAND = str(Path(sys.executable).with_name("otel-bounded"))
QUICKSTART = Path(__file__).resolve().parents[1] / "examples" / "quickstart.py"
SECRET = "correct-horse-battery-staple-0123456789abcdef"
SMALL_CAPS = {
    "OTEL_BOUNDED_TRACE_MAX_TRACES": "50",
    "OTEL_BOUNDED_TRACE_MAX_SPANS_PER_TRACE": "100",
}


def clean_env(**variables: str) -> dict[str, str]:
    """This process's environment without any OTEL_* variable, plus `variables`."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("OTEL_")}
    env.update(variables)
    return env


def run(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [COMMAND, *args], env=env, capture_output=True, text=True, timeout=120, check=False
    )


def config_json(**variables: str) -> dict[str, dict[str, Any]]:
    result = run("config", "--json", env=clean_env(**variables))
    assert result.returncode == 0, result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)["variables"]}


def table_row(output: str, label: str) -> list[int]:
    """The numbers on the demo table's line starting with `label`."""
    match = re.search(rf"^\s*{re.escape(label)}\s+([\d,]+)(?:\s+([\d,]+))?", output, re.M)
    assert match is not None, f"no {label!r} row in:\n{output}"
    return [int(group.replace(",", "")) for group in match.groups() if group is not None]


# -- --version, --help ---------------------------------------------------------


def test_version_prints_the_installed_package_version() -> None:
    result = run("--version", env=clean_env())
    assert result.returncode == 0
    assert result.stdout.strip() == f"otel-bounded {__version__}"


def test_help_names_both_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "demo" in out
    assert "config" in out


def test_no_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "COMMAND" in capsys.readouterr().err


# -- config --------------------------------------------------------------------


def test_config_shows_every_variable_at_its_default_when_nothing_is_set() -> None:
    rows = config_json()
    assert list(rows) == [variable.name for variable in config.VARIABLES]
    for variable in config.VARIABLES:
        row = rows[variable.name]
        assert row["source"] == "default"
        assert row["ignored"] is None
        if not variable.secret:
            assert row["value"] == variable.default


def test_config_table_aligns_one_line_per_variable() -> None:
    result = run("config", env=clean_env())
    assert result.returncode == 0
    table, sampler = result.stdout.split("\n\n")
    header, *lines = table.splitlines()
    assert sampler.startswith("Sampler: parentbased_always_on from the default")
    assert header.split() == ["VARIABLE", "VALUE", "SOURCE"]
    assert [line.split()[0] for line in lines] == [v.name for v in config.VARIABLES]
    # Aligned: every SOURCE column starts where the header's does.
    column = header.index("SOURCE")
    assert all(line[column:].startswith("default") for line in lines)
    default = config.TRACE_MAX_TRACES.default
    assert re.search(rf"^OTEL_BOUNDED_TRACE_MAX_TRACES\s+{default}\s+default$", result.stdout, re.M)


def test_config_shows_values_from_the_environment_as_environment() -> None:
    rows = config_json(
        OTEL_BOUNDED_TRACE_MAX_TRACES="50",
        OTEL_BOUNDED_TRACE_TTL_SECONDS="2.5",
        OTEL_BOUNDED_TRACE_COMPACTION_ENABLED="TRUE",
    )
    max_traces = rows["OTEL_BOUNDED_TRACE_MAX_TRACES"]
    assert (max_traces["value"], max_traces["source"]) == (50, "environment")
    assert rows["OTEL_BOUNDED_TRACE_TTL_SECONDS"]["value"] == 2.5
    assert rows["OTEL_BOUNDED_TRACE_COMPACTION_ENABLED"]["value"] is True
    assert rows["OTEL_BOUNDED_TRACE_MAX_SPANS"]["source"] == "default"


def test_config_shows_an_ignored_invalid_value_with_its_reason() -> None:
    env = clean_env(OTEL_BOUNDED_TRACE_MAX_TRACES="lots", OTEL_BOUNDED_TRACE_MAX_SPANS="-5")
    result = run("config", env=env)
    assert result.returncode == 0
    line = next(ln for ln in result.stdout.splitlines() if "MAX_TRACES" in ln)
    default = config.TRACE_MAX_TRACES.default
    assert re.match(
        rf"OTEL_BOUNDED_TRACE_MAX_TRACES\s+{default}\s+default \(ignored 'lots': ", line
    )
    assert "not an integer" in line
    assert "must be greater than 0" in result.stdout
    # config explains; it does not warn like the stores that read the variables do.
    assert result.stderr == ""
    rows = {
        row["name"]: row for row in json.loads(run("config", "--json", env=env).stdout)["variables"]
    }
    assert rows["OTEL_BOUNDED_TRACE_MAX_SPANS"]["ignored"] == "-5"
    assert rows["OTEL_BOUNDED_TRACE_MAX_SPANS"]["reason"] == "must be greater than 0"
    assert rows["OTEL_BOUNDED_TRACE_MAX_SPANS"]["value"] == config.TRACE_MAX_SPANS.default


def test_config_treats_an_empty_value_as_unset_without_complaint() -> None:
    row = config_json(OTEL_BOUNDED_TRACE_MAX_TRACES="")["OTEL_BOUNDED_TRACE_MAX_TRACES"]
    assert (row["source"], row["ignored"], row["reason"]) == ("default", None, None)


def test_config_never_prints_a_secret() -> None:
    env = clean_env(OTEL_BOUNDED_TOKEN_SECRET=SECRET)
    table = run("config", env=env)
    as_json = run("config", "--json", env=env)
    for result in (table, as_json):
        assert result.returncode == 0
        assert SECRET not in result.stdout + result.stderr
    assert re.search(r"^OTEL_BOUNDED_TOKEN_SECRET\s+<set>\s+environment$", table.stdout, re.M)
    rows = {row["name"]: row for row in json.loads(as_json.stdout)["variables"]}
    assert rows["OTEL_BOUNDED_TOKEN_SECRET"]["value"] == "<set>"
    assert config_json()["OTEL_BOUNDED_TOKEN_SECRET"]["value"] == "<unset>"


def _digits(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


STRICT = config.Variable("OTEL_BOUNDED_TEST_STRICT", 1, _digits, "integer > 0", "test", strict=True)
STRICT_SECRET = config.Variable(
    "OTEL_BOUNDED_TEST_KEY", None, _digits, "digits", "test", strict=True, secret=True
)


def test_config_shows_an_invalid_strict_variable_as_an_error_and_exits_1() -> None:
    out = io.StringIO()
    env = {"OTEL_BOUNDED_TEST_STRICT": "0", "OTEL_BOUNDED_TEST_KEY": SECRET}
    status = show_config(env, as_json=False, stdout=out, variables=(STRICT, STRICT_SECRET))
    assert status == 1
    lines = out.getvalue().splitlines()
    assert re.match(
        r"OTEL_BOUNDED_TEST_STRICT\s+ERROR: invalid value '0': must be greater", lines[1]
    )
    assert "refuses to start" in lines[1]
    # An invalid secret is an error too, and still never shown, not even inside the reason.
    assert re.match(r"OTEL_BOUNDED_TEST_KEY\s+ERROR: invalid value <redacted>", lines[2])
    assert "with base 10: '<redacted>'" in lines[2]
    assert SECRET not in out.getvalue()

    as_json = io.StringIO()
    assert show_config(env, as_json=True, stdout=as_json, variables=(STRICT, STRICT_SECRET)) == 1
    assert SECRET not in as_json.getvalue()
    key = json.loads(as_json.getvalue())["variables"][1]
    assert (key["value"], key["ignored"]) == ("<unset>", "<redacted>")
    assert key["error"] is not None


def test_config_valid_strict_variable_exits_0() -> None:
    out = io.StringIO()
    assert (
        show_config(
            {"OTEL_BOUNDED_TEST_STRICT": "7"}, as_json=False, stdout=out, variables=(STRICT,)
        )
        == 0
    )
    assert re.search(r"^OTEL_BOUNDED_TEST_STRICT\s+7\s+environment$", out.getvalue(), re.M)


def test_config_flags_a_misspelt_variable_without_printing_its_value() -> None:
    env = clean_env(OTEL_BOUNDED_TRACE_MAX_TRACE="50", OTEL_BOUNDED_TOKEN_SECRT=SECRET)
    result = run("config", env=env)
    assert result.returncode == 0
    assert re.search(
        r"^OTEL_BOUNDED_TRACE_MAX_TRACE\s+WARNING: .*did you mean OTEL_BOUNDED_TRACE_MAX_TRACES\?",
        result.stdout,
        re.M,
    )
    assert "did you mean OTEL_BOUNDED_TOKEN_SECRET?" in result.stdout
    assert SECRET not in result.stdout
    unknown = json.loads(run("config", "--json", env=env).stdout)["unknown"]
    assert [entry["name"] for entry in unknown] == [
        "OTEL_BOUNDED_TOKEN_SECRT",
        "OTEL_BOUNDED_TRACE_MAX_TRACE",
    ]


def test_config_in_process_logs_nothing(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_TRACE_MAX_TRACES", "zero")
    assert main(["config"]) == 0
    assert "ignored 'zero'" in capsys.readouterr().out
    assert caplog.records == []


# -- demo ----------------------------------------------------------------------

# Runs the demo in a fresh interpreter, then proves no exporter (and so no network client) loaded.
OFFLINE_DEMO = """
import sys
from otel_bounded.cli import main
status = main(["demo", "--steps", "300"])
loaded = sorted(m for m in sys.modules if m == "grpc" or m.startswith("opentelemetry.exporter"))
print("loaded:", loaded)
sys.exit(status)
"""


def test_demo_with_small_caps_evicts_reports_and_exports_nothing() -> None:
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_DEMO],
        env=clean_env(**SMALL_CAPS),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out, err = result.stdout, result.stderr
    assert "loaded: []" in out
    assert "offline, nothing exported" in out
    assert "ran 300 steps" in out
    assert table_row(out, "traces") == [50, 50]
    held_spans, max_spans = table_row(out, "spans")
    assert 0 < held_spans <= max_spans
    assert table_row(out, "max_traces")[0] > 0
    assert table_row(out, "ttl") == [0]
    assert table_row(out, "max_spans_per_trace")[0] > 0
    # Nothing is lost unaccounted for: received = held + evicted + dropped.
    received = table_row(out, "spans received")[0]
    created = re.search(r"ran 300 steps: ([\d,]+) spans", out)
    assert created is not None
    assert int(created.group(1).replace(",", "")) == received
    match = re.search(r"= ([\d,]+) held \+ ([\d,]+) in evicted traces \+ ([\d,]+) dropped", out)
    assert match is not None
    held, evicted, dropped = (int(g.replace(",", "")) for g in match.groups())
    assert (held, held + evicted + dropped) == (held_spans, received)
    assert re.search(
        r"^memory held\s+[\d.]+ MiB\s+\([\d,]+ B per span held; measured with tracemalloc",
        out,
        re.M,
    )
    # Progress on a pipe: whole lines, never redrawn in place.
    assert "\r" not in err
    assert "300/300 steps 100%" in err
    # The store's first eviction is logged once, naming the variable that raises the cap.
    evictions = [line for line in err.splitlines() if "evicted its first trace" in line]
    assert len(evictions) == 1
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in evictions[0]


TOKEN_OUTCOMES = ("ok", "revoked", "expired", "invalid", "scope_mismatch")
APPROVAL_REASONS = (
    "allowed",
    "approval_already_consumed",
    "approval_capacity_exceeded",
    "approval_denied",
    "approval_expired",
    "approval_pending",
    "approval_revoked",
    "approval_scope_mismatch",
    "approval_self_approval",
    "approval_unauthorized_delegate",
)


def test_demo_runs_tokens_and_approvals_into_every_main_refusal_within_their_caps() -> None:
    result = run("demo", "--steps", "1000", env=clean_env())
    assert result.returncode == 0, result.stderr
    out = result.stdout

    assert "capability tokens (otel_bounded_token_provider/0)" in out
    for outcome in TOKEN_OUTCOMES:
        assert table_row(out, outcome)[0] > 0, outcome
    # 1,000 simulated seconds outlive the 600 s tokens: revocations were swept, not hoarded.
    assert table_row(out, "revocations swept")[0] > 0
    assert table_row(out, "revocations held")[0] < table_row(out, "revocations swept")[0]

    for reason in APPROVAL_REASONS:
        assert table_row(out, reason)[0] > 0, reason
    live, max_live = table_row(out, "live (pending, granted)")
    retained, max_terminal = table_row(out, "ended, retained")
    assert 0 < live <= max_live
    assert 0 < retained <= max_terminal
    # The development-secret warning never shows: the demo brings its own key.
    assert "development secret" not in result.stderr


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_demo_redraws_its_progress_bar_in_place_on_a_terminal() -> None:
    import pty

    parent, child = pty.openpty()
    with subprocess.Popen(
        [COMMAND, "demo", "--steps", "300"],
        env=clean_env(**SMALL_CAPS),
        stdout=subprocess.PIPE,
        stderr=child,
        text=True,
    ) as process:
        os.close(child)
        chunks: list[bytes] = []
        reader = threading.Thread(target=_drain, args=(parent, chunks))
        reader.start()
        out, _ = process.communicate(timeout=120)
        reader.join(timeout=60)
    terminal = b"".join(chunks).decode()
    assert process.returncode == 0
    assert terminal.count("\r[") > 10
    assert "300/300 steps 100%" in terminal
    # A log line interrupting the bar starts on a line of its own.
    assert re.search(
        r"\n(\r)?WARNING otel_bounded: TraceStore \S+ evicted its first trace", terminal
    )
    assert table_row(out, "traces") == [50, 50]


def _drain(fd: int, chunks: list[bytes]) -> None:
    try:
        while data := os.read(fd, 65536):
            chunks.append(data)
    except OSError:  # EIO: the terminal's other end closed
        pass
    finally:
        os.close(fd)


def test_demo_in_process_leaves_logging_and_tracemalloc_as_it_found_them(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in SMALL_CAPS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    handlers = list(telemetry.logger.handlers)
    tracing = tracemalloc.is_tracing()
    assert main(["demo", "--steps", "120"]) == 0
    assert telemetry.logger.handlers == handlers
    assert tracemalloc.is_tracing() == tracing
    captured = capsys.readouterr()
    assert table_row(captured.out, "traces") == [50, 50]
    assert "evicted its first trace" in captured.err


@pytest.mark.parametrize("endpoint", [None, "", "   "])
def test_demo_otlp_without_an_endpoint_fails_clearly(endpoint: str | None) -> None:
    env = clean_env() if endpoint is None else clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint)
    result = run("demo", "--otlp", "--steps", "10", env=env)
    assert result.returncode == 2
    assert "--otlp needs OTEL_EXPORTER_OTLP_ENDPOINT" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize("steps", ["0", "-3", "many"])
def test_demo_rejects_a_step_count_that_is_not_a_positive_integer(
    steps: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["demo", "--steps", steps]) == 2
    assert "--steps" in capsys.readouterr().err


# -- demo over OTLP, into a real gRPC receiver ---------------------------------


@dataclass
class Received:
    traces: list[trace_service_pb2.ExportTraceServiceRequest] = field(default_factory=list)
    metrics: list[metrics_service_pb2.ExportMetricsServiceRequest] = field(default_factory=list)
    logs: list[logs_service_pb2.ExportLogsServiceRequest] = field(default_factory=list)


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.traces.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class _Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.metrics.append(request)
        return metrics_service_pb2.ExportMetricsServiceResponse()


class _Logs(logs_service_pb2_grpc.LogsServiceServicer):
    def __init__(self, received: Received) -> None:
        self.received = received

    def Export(self, request: Any, context: Any) -> Any:
        self.received.logs.append(request)
        return logs_service_pb2.ExportLogsServiceResponse()


@pytest.fixture
def otlp_receiver() -> Iterator[tuple[str, Received]]:
    """A real OTLP/gRPC receiver on a free loopback port: (endpoint, what it received)."""
    received = Received()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_Traces(received), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(_Metrics(received), server)
    logs_service_pb2_grpc.add_LogsServiceServicer_to_server(_Logs(received), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"http://127.0.0.1:{port}", received
    finally:
        server.stop(grace=None)


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: getattr(kv.value, kv.value.WhichOneof("value")) for kv in pairs}


def test_demo_exports_spans_metrics_and_logs_over_otlp(
    otlp_receiver: tuple[str, Received],
) -> None:
    endpoint, received = otlp_receiver
    result = run(
        "demo",
        "--otlp",
        "--steps",
        "300",
        env=clean_env(OTEL_EXPORTER_OTLP_ENDPOINT=endpoint, **SMALL_CAPS),
    )
    assert result.returncode == 0, result.stderr
    assert f"exported over OTLP to {endpoint}" in result.stdout

    span_names = set()
    for request in received.traces:
        for resource_spans in request.resource_spans:
            assert (
                _attributes(resource_spans.resource.attributes)["service.name"]
                == "otel-bounded-demo"
            )
            for scope_spans in resource_spans.scope_spans:
                span_names.update(span.name for span in scope_spans.spans)
    assert {"agent.step", "llm.call", "tool.call", "db.query", "session.checkpoint"} <= span_names

    # The last (cumulative) export of the eviction counter equals what the table reports;
    # each reason is reported per retention class, summed here.
    evictions: dict[str, int] = {}
    for request in received.metrics:
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == telemetry.TRACE_STORE_EVICTIONS:
                        exported: dict[str, int] = {}
                        for point in metric.sum.data_points:
                            reason = _attributes(point.attributes)[telemetry.EVICTION_REASON]
                            exported[reason] = exported.get(reason, 0) + point.as_int
                        evictions = exported
    assert evictions["max_traces"] > 0
    assert evictions["max_traces"] == table_row(result.stdout, "max_traces")[0]

    warnings = [
        record.body.string_value
        for request in received.logs
        for resource_logs in request.resource_logs
        for scope_logs in resource_logs.scope_logs
        for record in scope_logs.log_records
        if record.severity_text == "WARN"
    ]
    first_evictions = [body for body in warnings if "evicted its first trace" in body]
    assert len(first_evictions) == 1
    assert "OTEL_BOUNDED_TRACE_MAX_TRACES" in first_evictions[0]

    # The table's token and approval figures are the metrics a collector received.
    verifications = _last_points(received, telemetry.TOKEN_VERIFICATIONS, telemetry.OUTCOME)
    for outcome in TOKEN_OUTCOMES:
        assert verifications[outcome] == table_row(result.stdout, outcome)[0], outcome
    decisions = _last_points(received, telemetry.APPROVAL_DECISIONS, telemetry.APPROVAL_REASON_CODE)
    assert decisions.pop("") == table_row(result.stdout, "allowed")[0]
    assert any(decisions.values())
    for reason, count in decisions.items():
        # Every reason is exported from 0; the table lists those that occurred.
        if count:
            assert count == table_row(result.stdout, reason)[0], reason
        else:
            assert not re.search(rf"^\s*{reason}\s", result.stdout, re.M), reason


def _last_points(received: Received, name: str, key: str) -> dict[str, int]:
    """The last exported value of each point of a counter, by its `key` attribute."""
    values: dict[str, int] = {}
    for request in received.metrics:
        for resource_metrics in request.resource_metrics:
            for scope_metrics in resource_metrics.scope_metrics:
                for metric in scope_metrics.metrics:
                    if metric.name == name:
                        for point in metric.sum.data_points:
                            values[_attributes(point.attributes)[key]] = point.as_int
    return values


# -- examples/quickstart.py ----------------------------------------------------


def test_quickstart_example_reads_back_and_exports_its_traces() -> None:
    result = subprocess.run(
        [sys.executable, str(QUICKSTART)],
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "3 traces held, least recently active first:" in result.stdout
    # A trace's spans come back in the order they ended: the child first.
    assert len(re.findall(r"^  [0-9a-f]{32}: db.query, handle_order$", result.stdout, re.M)) == 3
    assert "exported 6 spans; 0 traces evicted so far" in result.stdout


@pytest.mark.parametrize(
    ("variable", "value", "reason"),
    [
        ("OTEL_BOUNDED_TOKEN_SECRET", "too-short", "shorter than 32 bytes"),
        ("OTEL_BOUNDED_TOKEN_SECRET_FILE", "/nonexistent/secret", "no readable file there"),
        ("OTEL_BOUNDED_REVOCATION_STORE", "bogus://x", "not memory, sqlite:///path"),
    ],
)
def test_config_flags_an_invalid_strict_variable_and_exits_1(
    variable: str, value: str, reason: str
) -> None:
    result = run("config", env=clean_env(**{variable: value}))
    assert result.returncode == 1
    assert reason in result.stdout + result.stderr
    if variable == "OTEL_BOUNDED_TOKEN_SECRET":
        assert value not in result.stdout + result.stderr


def test_config_says_which_sampler_is_in_effect_and_that_the_store_sees_only_its_spans() -> None:
    default = json.loads(run("config", "--json", env=clean_env()).stdout)["sampler"]
    assert (default["name"], default["source"], default["drops_traces"]) == (
        "parentbased_always_on",
        "default",
        False,
    )
    assert "sees only the spans the sampler records" in default["note"]
    env = clean_env(OTEL_TRACES_SAMPLER="parentbased_traceidratio", OTEL_TRACES_SAMPLER_ARG="0.1")
    ratio = json.loads(run("config", "--json", env=env).stdout)["sampler"]
    assert (ratio["name"], ratio["argument"], ratio["source"], ratio["drops_traces"]) == (
        "parentbased_traceidratio",
        "0.1",
        "environment",
        True,
    )
    table = run("config", env=env).stdout
    assert "Sampler: parentbased_traceidratio (0.1) from the environment" in table
    assert "OTEL_TRACES_SAMPLER=parentbased_always_on" in table
