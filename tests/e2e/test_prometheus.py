"""Prometheus end to end: a real Prometheus scrapes the app and answers with what the app did.

The app runs in this process: a TraceStore, an HMACTokenProvider and an
ApprovalLedger report through `opentelemetry-exporter-prometheus`, served by
`prometheus_client` on a loopback port. A real `prometheus` binary scrapes it
every second; the tests ask Prometheus' HTTP API, never the app.

Most of the run is Prometheus' own start-up: it hands newly discovered targets
to its scrapers only every 5 s, so the first scrape comes ~5 s after it starts;
later ones follow every second. The tests poll with a deadline instead of waiting a fixed time.

The `prometheus_run` fixture is shared with `test_dashboard.py` (which checks
its queries against what this Prometheus saw): it starts once per session,
whichever module asks first.
"""

from __future__ import annotations

import contextlib
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import pytest
from opentelemetry.exporter.prometheus import PrometheusMetricReader
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import Tracer
from prometheus_client import REGISTRY, CollectorRegistry, start_http_server

from otel_bounded import ApprovalError, ApprovalLedger, ApprovalScope, TraceStore, telemetry
from otel_bounded.errors import (
    ApprovalReason,
    TokenExpired,
    TokenInvalid,
    TokenRevoked,
    TokenScopeError,
)
from otel_bounded.tokens import CapabilityToken, HMACTokenProvider
from tests.servers import LOOPBACK, RunningServer, ServerSpec, launch
from tests.support import FakeClock

pytestmark = pytest.mark.servers

JOB = "otel-bounded-e2e"
"""The scrape job's name: every series Prometheus stores from the app carries ``job`` = this."""

SERIES = {
    telemetry.TRACE_STORE_TRACES: "otel_bounded_trace_store_traces",
    telemetry.TRACE_STORE_SPANS: "otel_bounded_trace_store_spans",
    telemetry.TRACE_STORE_CAPACITY: "otel_bounded_trace_store_capacity",
    telemetry.TRACE_STORE_EVICTIONS: "otel_bounded_trace_store_evictions_total",
    telemetry.TRACE_STORE_SPANS_DROPPED: "otel_bounded_trace_store_spans_dropped_total",
    telemetry.TRACE_STORE_COMPACTIONS: "otel_bounded_trace_store_compactions_total",
    telemetry.TRACE_STORE_SPANS_COMPACTED: "otel_bounded_trace_store_spans_compacted_total",
    telemetry.TRACE_STORE_COMPACTION_UNRESOLVED: (
        "otel_bounded_trace_store_compaction_unresolved_total"
    ),
    telemetry.TOKEN_REVOCATIONS: "otel_bounded_token_revocations",
    telemetry.TOKEN_REVOCATIONS_SWEPT: "otel_bounded_token_revocations_swept_total",
    telemetry.TOKEN_VERIFICATIONS: "otel_bounded_token_verifications_total",
    telemetry.APPROVAL_DECISIONS: "otel_bounded_approval_decisions_total",
    telemetry.APPROVAL_GRANTS: "otel_bounded_approval_grants",
    telemetry.APPROVAL_EVICTIONS: "otel_bounded_approval_evictions_total",
}
"""Each metric's exact Prometheus series name, as the exporter writes it.

Dots become underscores, counters gain ``_total``, and the curly-brace units
(``{trace}``) add no suffix. Up-down counters are gauges, without ``_total``.
"""

# Attribute keys become label names the same way: dots turn into underscores.
COMPONENT_TYPE_LABEL = "otel_component_type"
COMPONENT_NAME_LABEL = "otel_component_name"
EVICTION_REASON_LABEL = "otel_bounded_eviction_reason"
DROP_REASON_LABEL = "otel_bounded_drop_reason"
OUTCOME_LABEL = "otel_bounded_outcome"
REASON_CODE_LABEL = "otel_bounded_approval_reason_code"
STATUS_LABEL = "otel_bounded_approval_status"

SCRAPE_INTERVAL_SECONDS = 1
DEADLINE_SECONDS = 20.0
POLL_SECONDS = 0.1

MAX_TRACES = 3
MAX_SPANS_PER_TRACE = 2
TRACE_TTL_SECONDS = 600.0
IDLE_TRACES = 1
"""Finished first, then left idle past the TTL: each is one ``ttl`` eviction."""
SINGLE_SPAN_TRACES = 5
OVERSIZED_TRACES = 1
"""Each has one span more than MAX_SPANS_PER_TRACE: one span dropped each."""
TRACES_AFTER_FIRST_SCRAPE = 2

TOKEN_SECRET = b"prometheus end-to-end secret, 32+ bytes long"
SHORT_TTL_SECONDS = 60.0
LONG_TTL_SECONDS = 3600.0

_OUTCOME_OF_ERROR = {
    TokenRevoked: telemetry.VerificationOutcome.REVOKED,
    TokenExpired: telemetry.VerificationOutcome.EXPIRED,
    TokenInvalid: telemetry.VerificationOutcome.INVALID,
    TokenScopeError: telemetry.VerificationOutcome.SCOPE_MISMATCH,
}

T = TypeVar("T")


# -- the app ---------------------------------------------------------------


@dataclass
class App:
    """The in-process app and what its callers were told: what Prometheus must report."""

    store: TraceStore
    tokens: HMACTokenProvider
    ledger: ApprovalLedger
    tracer: Tracer
    trace_clock: FakeClock
    token_clock: FakeClock
    verifications: Counter[str] = field(default_factory=Counter)
    decisions: Counter[tuple[str, str]] = field(default_factory=Counter)
    swept: int = 0
    revocations_held: int = 0
    grants_live: int = 0
    grants_terminal: int = 0
    undisclosed: list[str] = field(default_factory=list)
    """Secrets, encoded tokens and approval tokens: none may reach Prometheus."""


def build_app(meter_provider: MeterProvider) -> App:
    trace_clock, token_clock = FakeClock(), FakeClock()
    store = TraceStore(
        max_traces=MAX_TRACES,
        max_spans_per_trace=MAX_SPANS_PER_TRACE,
        ttl_seconds=TRACE_TTL_SECONDS,
        clock=trace_clock,
        meter_provider=meter_provider,
    )
    traced = TracerProvider()
    traced.add_span_processor(store)
    # Token and approval spans go nowhere, so the store's counts are the scenario's alone.
    untraced = TracerProvider()
    tokens = HMACTokenProvider(
        TOKEN_SECRET,
        clock=token_clock,
        max_ttl_seconds=LONG_TTL_SECONDS,
        sweep_interval_seconds=1e9,  # only the scenario's own sweep runs
        tracer_provider=untraced,
        meter_provider=meter_provider,
    )
    ledger = ApprovalLedger(
        clock=FakeClock(), tracer_provider=untraced, meter_provider=meter_provider
    )
    return App(store, tokens, ledger, traced.get_tracer("e2e.app"), trace_clock, token_clock)


def finish_traces(tracer: Tracer, count: int, spans_per_trace: int = 1) -> None:
    for _ in range(count):
        with tracer.start_as_current_span("request"):
            for index in range(spans_per_trace - 1):
                with tracer.start_as_current_span(f"step-{index}"):
                    pass


def drive_trace_store(app: App) -> None:
    """Evict by ttl and by max_traces, and drop a span per oversized trace."""
    finish_traces(app.tracer, IDLE_TRACES)
    app.trace_clock.advance(TRACE_TTL_SECONDS + 1)
    assert len(app.store) == 0  # reading the size expires the idle traces
    finish_traces(app.tracer, SINGLE_SPAN_TRACES)
    finish_traces(app.tracer, OVERSIZED_TRACES, spans_per_trace=MAX_SPANS_PER_TRACE + 1)


def drive_tokens(app: App) -> None:
    """Verify with every outcome a caller can cause, revoke, expire and sweep."""
    provider = app.tokens
    short = provider.issue("reports.read", "alice", ttl_seconds=SHORT_TTL_SECONDS)
    revoked = provider.issue("reports.read", "bob", ttl_seconds=LONG_TTL_SECONDS)
    kept = provider.issue("reports.read", "carol", ttl_seconds=LONG_TTL_SECONDS)
    encoded = kept.encode()
    tampered = encoded[:-5] + ("x" if encoded[-5] != "x" else "y") + encoded[-4:]
    app.undisclosed += [TOKEN_SECRET.decode()]
    app.undisclosed += [token.encode() for token in (short, revoked, kept)]
    app.undisclosed += [token.signature for token in (short, revoked, kept)]

    def verify(token: CapabilityToken | str, principal: str) -> None:
        try:
            provider.verify(
                token,
                expected_principal_id=principal,
                expected_capability_id="reports.read",
            )
        except (TokenRevoked, TokenExpired, TokenInvalid, TokenScopeError) as refused:
            app.verifications[_OUTCOME_OF_ERROR[type(refused)]] += 1
        else:
            app.verifications[telemetry.VerificationOutcome.OK] += 1

    verify(short, "alice")
    verify(kept.encode(), "carol")
    assert provider.revoke(short)
    assert provider.revoke(revoked)
    verify(revoked, "bob")
    verify(kept, "mallory")
    verify(tampered, "carol")
    # Expired on every replica within the skew: its revocation can go.
    app.token_clock.advance(SHORT_TTL_SECONDS + provider.max_clock_skew_seconds + 1)
    verify(short, "alice")
    app.swept = provider.sweep()
    app.revocations_held = provider.revocation_count


def drive_approvals(app: App) -> None:
    """Allowed decisions and refusals with several reason codes."""
    ledger = app.ledger
    deploy = ApprovalScope(policy="release", action="deploy", resource="service-a")
    drop_table = ApprovalScope(policy="release", action="drop-table", resource="orders")

    def decide(operation: Callable[[], T]) -> T | None:
        try:
            result = operation()
        except ApprovalError as refused:
            app.decisions["refused", refused.reason_code] += 1
            return None
        app.decisions["allowed", ""] += 1
        return result

    grant = decide(
        lambda: ledger.request(
            deploy, requested_by="deploy-agent", executor="deploy-agent", ttl_seconds=600
        )
    )
    assert grant is not None
    token = grant.token
    app.undisclosed.append(token)
    decide(lambda: ledger.approve(token, approver="deploy-agent"))  # self-approval
    decide(lambda: ledger.approve(token, approver="alice@example.com"))
    decide(lambda: ledger.consume(token, drop_table, "deploy-agent"))  # scope mismatch
    decide(lambda: ledger.consume(token, deploy, "mallory"))  # not the executor
    decide(lambda: ledger.consume(token, deploy, "deploy-agent"))
    decide(lambda: ledger.consume(token, deploy, "deploy-agent"))  # already consumed
    decide(lambda: ledger.verify("never-issued", deploy, "deploy-agent"))
    pending = decide(
        lambda: ledger.request(
            drop_table, requested_by="ops-agent", executor="ops-agent", ttl_seconds=600
        )
    )
    assert pending is not None
    app.undisclosed.append(pending.token)
    app.grants_live, app.grants_terminal = 1, 1  # `pending` waits; `grant` was consumed


# -- Prometheus --------------------------------------------------------------


def prometheus_spec(target: str) -> ServerSpec:
    """A Prometheus scraping `target` every second, keeping its data in its workdir."""

    def files(_port: int, _workdir: Path) -> Mapping[str, str]:
        config = {
            "global": {
                "scrape_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
                "scrape_timeout": f"{SCRAPE_INTERVAL_SECONDS}s",
                "evaluation_interval": f"{SCRAPE_INTERVAL_SECONDS}s",
            },
            "scrape_configs": [{"job_name": JOB, "static_configs": [{"targets": [target]}]}],
        }
        return {"prometheus.yml": json.dumps(config)}  # YAML is a superset of JSON

    def argv(binary: str, port: int, workdir: Path) -> list[str]:
        return [
            binary,
            f"--config.file={workdir / 'prometheus.yml'}",
            f"--storage.tsdb.path={workdir / 'data'}",
            f"--web.listen-address={LOOPBACK}:{port}",
        ]

    def ready(server: RunningServer) -> bool:
        try:
            with urllib.request.urlopen(f"http://{server.address}/-/ready", timeout=1) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    return ServerSpec(
        binary="prometheus", debian_package="prometheus", argv=argv, files=files, ready=ready
    )


@dataclass
class Prometheus:
    """Prometheus' HTTP API, as the tests and the dashboard use it."""

    server: RunningServer

    def api(self, path: str, **params: str) -> Any:
        url = f"http://{self.server.address}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        try:
            with urllib.request.urlopen(url, timeout=5) as answer:
                body = json.load(answer)
        except urllib.error.HTTPError as error:
            body = json.load(error)
        if body.get("status") != "success":
            raise AssertionError(f"Prometheus refused {path} {params}: {body}")
        return body["data"]

    def query(self, promql: str) -> list[dict[str, Any]]:
        """The instant vector `promql` evaluates to now: [{"metric": labels, "value": [t, v]}]."""
        data = self.api("query", query=promql)
        assert data["resultType"] == "vector", data
        return list(data["result"])

    def values(self, promql: str, by: str) -> dict[str, float]:
        """Each series' value, keyed by its label `by` ("" where the label is absent)."""
        return {
            series["metric"].get(by, ""): float(series["value"][1]) for series in self.query(promql)
        }

    def metric_names(self) -> frozenset[str]:
        """Every metric name Prometheus stored from the app's scrape job."""
        return frozenset(self.api("label/__name__/values", **{"match[]": f'{{job="{JOB}"}}'}))

    def wait_for(self, what: str, read: Callable[[], T], done: Callable[[T], bool]) -> T:
        """Poll `read` until `done` holds, within a deadline (scrapes come every second)."""
        deadline = time.monotonic() + DEADLINE_SECONDS
        while True:
            seen = read()
            if done(seen):
                return seen
            if time.monotonic() > deadline:
                pytest.fail(
                    f"Prometheus did not show {what} within {DEADLINE_SECONDS:.0f}s; "
                    f"last saw {seen!r}\n{self.server.log[-3000:]}"
                )
            time.sleep(POLL_SECONDS)


@dataclass(frozen=True)
class PrometheusRun:
    """A Prometheus that scraped the app, the app, and the metric names it stored."""

    prometheus: Prometheus
    app: App
    metric_names: frozenset[str]
    evictions_before_more_traffic: Mapping[str, float]


def evictions_seen(prometheus: Prometheus) -> Callable[[], dict[str, float]]:
    return lambda: prometheus.values(
        f'{SERIES[telemetry.TRACE_STORE_EVICTIONS]}{{job="{JOB}"}}', by=EVICTION_REASON_LABEL
    )


def prometheus_reader() -> tuple[PrometheusMetricReader, CollectorRegistry]:
    """A reader on a registry of its own, or on the global one before `registry=` existed."""
    registry = CollectorRegistry()
    try:
        return PrometheusMetricReader(registry=registry), registry
    except TypeError:  # added in open-telemetry/opentelemetry-python#5055
        return PrometheusMetricReader(), REGISTRY


def _start_run(stack: contextlib.ExitStack, workdir: Path) -> PrometheusRun:
    reader, registry = prometheus_reader()
    meter_provider = MeterProvider(metric_readers=[reader])
    stack.callback(meter_provider.shutdown)
    http_server, _thread = start_http_server(0, addr=LOOPBACK, registry=registry)
    stack.callback(http_server.server_close)
    stack.callback(http_server.shutdown)

    app = build_app(meter_provider)
    drive_trace_store(app)
    drive_tokens(app)
    drive_approvals(app)
    expected_before = {
        "max_traces": float(SINGLE_SPAN_TRACES + OVERSIZED_TRACES - MAX_TRACES),
        "ttl": float(IDLE_TRACES),
        "max_spans": 0.0,
    }

    spec = prometheus_spec(f"{LOOPBACK}:{http_server.server_port}")
    server = launch(spec, workdir)
    stack.callback(server.stop)
    prometheus = Prometheus(server)

    before = prometheus.wait_for(
        f"the first evictions {expected_before}",
        evictions_seen(prometheus),
        lambda seen: seen == expected_before,
    )
    finish_traces(app.tracer, TRACES_AFTER_FIRST_SCRAPE)
    prometheus.wait_for(
        f"{TRACES_AFTER_FIRST_SCRAPE} more max_traces evictions",
        evictions_seen(prometheus),
        lambda seen: seen.get("max_traces") == before["max_traces"] + TRACES_AFTER_FIRST_SCRAPE,
    )
    return PrometheusRun(prometheus, app, prometheus.metric_names(), before)


_RUN = pytest.StashKey[PrometheusRun]()


@pytest.fixture(scope="session")
def prometheus_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> PrometheusRun:
    """One Prometheus scrape scenario per session, kept running until the session ends.

    Kept in the session's stash rather than in pytest's fixture cache: a module
    importing this fixture gets its own fixture definition, and both must share
    one run.
    """
    stash = request.config.stash
    if _RUN not in stash:
        stack = contextlib.ExitStack()
        try:
            stash[_RUN] = _start_run(stack, tmp_path_factory.mktemp("prometheus"))
        except BaseException:
            stack.close()
            raise
        request.config.add_cleanup(stack.close)
    return stash[_RUN]


# -- tests -------------------------------------------------------------------


def of_component(name: str, app_component: Mapping[str, str]) -> str:
    component = app_component[telemetry.COMPONENT_NAME]
    return f'{name}{{job="{JOB}", {COMPONENT_NAME_LABEL}="{component}"}}'


def test_trace_store_evictions_reach_prometheus_by_reason(prometheus_run: PrometheusRun) -> None:
    store = prometheus_run.app.store
    series = prometheus_run.prometheus.query(
        of_component(SERIES[telemetry.TRACE_STORE_EVICTIONS], store.component)
    )

    by_reason = {s["metric"][EVICTION_REASON_LABEL]: float(s["value"][1]) for s in series}
    assert by_reason == {
        "max_traces": SINGLE_SPAN_TRACES
        + OVERSIZED_TRACES
        + TRACES_AFTER_FIRST_SCRAPE
        - MAX_TRACES,
        "ttl": IDLE_TRACES,
        "max_spans": 0,
    }
    for one in series:
        labels = one["metric"]
        assert labels["__name__"] == "otel_bounded_trace_store_evictions_total"
        assert labels[COMPONENT_TYPE_LABEL] == "otel_bounded_trace_store"
        assert labels[COMPONENT_NAME_LABEL] == store.component[telemetry.COMPONENT_NAME]
        assert labels["job"] == JOB


def test_evictions_after_the_first_scrape_reach_the_next_scrapes(
    prometheus_run: PrometheusRun,
) -> None:
    history = prometheus_run.prometheus.api(
        "query",
        query=f'{SERIES[telemetry.TRACE_STORE_EVICTIONS]}{{job="{JOB}", '
        f'{EVICTION_REASON_LABEL}="max_traces"}}[5m]',
    )["result"]

    assert len(history) == 1
    samples = [float(value) for _at, value in history[0]["values"]]
    first = prometheus_run.evictions_before_more_traffic["max_traces"]
    assert sorted(set(samples)) == [first, first + TRACES_AFTER_FIRST_SCRAPE]
    assert samples == sorted(samples), "a counter Prometheus scraped went backwards"


def test_trace_store_holdings_drops_and_compactions_reach_prometheus(
    prometheus_run: PrometheusRun,
) -> None:
    prometheus, store = prometheus_run.prometheus, prometheus_run.app.store

    def value(metric: str) -> float:
        (one,) = prometheus.query(of_component(SERIES[metric], store.component))
        return float(one["value"][1])

    assert value(telemetry.TRACE_STORE_TRACES) == MAX_TRACES
    assert value(telemetry.TRACE_STORE_CAPACITY) == MAX_TRACES
    # The oversized trace, kept at its cap, and the traces finished after the first scrape.
    assert value(telemetry.TRACE_STORE_SPANS) == MAX_SPANS_PER_TRACE + TRACES_AFTER_FIRST_SCRAPE
    assert value(telemetry.TRACE_STORE_COMPACTIONS) == 0
    assert value(telemetry.TRACE_STORE_SPANS_COMPACTED) == 0
    dropped = prometheus.values(
        of_component(SERIES[telemetry.TRACE_STORE_SPANS_DROPPED], store.component),
        by=DROP_REASON_LABEL,
    )
    assert dropped == {"max_spans_per_trace": OVERSIZED_TRACES, "max_spans": 0, "error": 0}


def test_token_revocations_sweeps_and_verification_outcomes_reach_prometheus(
    prometheus_run: PrometheusRun,
) -> None:
    prometheus, app = prometheus_run.prometheus, prometheus_run.app
    component = app.tokens.component

    (held,) = prometheus.query(of_component(SERIES[telemetry.TOKEN_REVOCATIONS], component))
    (swept,) = prometheus.query(of_component(SERIES[telemetry.TOKEN_REVOCATIONS_SWEPT], component))
    outcomes = prometheus.values(
        of_component(SERIES[telemetry.TOKEN_VERIFICATIONS], component), by=OUTCOME_LABEL
    )

    assert app.swept == 1, "the short-lived token's revocation is swept once it expired"
    assert float(swept["value"][1]) == app.swept
    assert float(held["value"][1]) == app.revocations_held == 1
    assert held["metric"][COMPONENT_TYPE_LABEL] == "otel_bounded_token_provider"
    assert len(app.verifications) == 5, "the scenario covers five outcomes"
    assert outcomes == {
        outcome: float(app.verifications[outcome]) for outcome in telemetry.VerificationOutcome.ALL
    }


def test_approval_decisions_reach_prometheus_by_outcome_and_reason_code(
    prometheus_run: PrometheusRun,
) -> None:
    prometheus, app = prometheus_run.prometheus, prometheus_run.app
    component = app.ledger.component

    decisions = {
        (one["metric"][OUTCOME_LABEL], one["metric"].get(REASON_CODE_LABEL, "")): float(
            one["value"][1]
        )
        for one in prometheus.query(of_component(SERIES[telemetry.APPROVAL_DECISIONS], component))
    }
    grants = prometheus.values(
        of_component(SERIES[telemetry.APPROVAL_GRANTS], component), by=STATUS_LABEL
    )

    refusals = {reason for outcome, reason in app.decisions if outcome == "refused"}
    assert len(refusals) == 5, "the scenario covers five reason codes"
    # Prometheus drops empty labels: an allowed decision has no reason code label.
    # Every (outcome, reason code) series exists from 0, not only those the scenario hit.
    expected = {("allowed", ""): 0.0} | {("refused", code): 0.0 for code in ApprovalReason.ALL}
    expected.update({key: float(count) for key, count in app.decisions.items()})
    assert decisions == expected
    assert grants == {"live": app.grants_live, "terminal": app.grants_terminal}


def test_prometheus_stores_exactly_the_documented_series_names(
    prometheus_run: PrometheusRun,
) -> None:
    ours = {name for name in prometheus_run.metric_names if name.startswith("otel_bounded_")}

    assert ours == set(SERIES.values())


def test_no_secret_or_token_reaches_prometheus(prometheus_run: PrometheusRun) -> None:
    stored = prometheus_run.prometheus.api("series", **{"match[]": f'{{job="{JOB}"}}'})
    text = json.dumps(stored)

    for secret in prometheus_run.app.undisclosed:
        assert secret not in text
