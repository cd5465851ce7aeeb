"""The Grafana dashboard asks only for what a real Prometheus really holds.

Every metric its PromQL names must be one the Prometheus end-to-end run saw
(`test_prometheus.prometheus_run`, shared for the session), and every query,
its Grafana variables filled in, must return data from that Prometheus.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from otel_bounded import telemetry
from tests.e2e.test_prometheus import (
    DROP_REASON_LABEL,
    EVICTION_REASON_LABEL,
    JOB,
    OUTCOME_LABEL,
    REASON_CODE_LABEL,
    SERIES,
    PrometheusRun,
    prometheus_run,
)

__all__ = ["prometheus_run"]  # the shared fixture, imported for this module's tests

STACK = Path(__file__).resolve().parents[2] / "examples" / "observability"
DASHBOARD = STACK / "grafana" / "dashboards" / "otel-bounded.json"
DATASOURCES = STACK / "grafana" / "provisioning" / "datasources" / "datasources.yaml"

REQUIRED = {
    "traces held": SERIES[telemetry.TRACE_STORE_TRACES],
    "capacity": SERIES[telemetry.TRACE_STORE_CAPACITY],
    "evictions": SERIES[telemetry.TRACE_STORE_EVICTIONS],
    "dropped spans": SERIES[telemetry.TRACE_STORE_SPANS_DROPPED],
    "compacted spans": SERIES[telemetry.TRACE_STORE_SPANS_COMPACTED],
    "revocations held": SERIES[telemetry.TOKEN_REVOCATIONS],
    "sweep removals": SERIES[telemetry.TOKEN_REVOCATIONS_SWEPT],
    "verification outcomes": SERIES[telemetry.TOKEN_VERIFICATIONS],
    "approval decisions": SERIES[telemetry.APPROVAL_DECISIONS],
}
"""What the dashboard must show, by the series that carries it."""

BROKEN_DOWN_BY = {
    SERIES[telemetry.TRACE_STORE_EVICTIONS]: EVICTION_REASON_LABEL,
    SERIES[telemetry.TRACE_STORE_SPANS_DROPPED]: DROP_REASON_LABEL,
    SERIES[telemetry.TOKEN_VERIFICATIONS]: OUTCOME_LABEL,
    SERIES[telemetry.APPROVAL_DECISIONS]: REASON_CODE_LABEL,
    SERIES[telemetry.APPROVAL_EVICTIONS]: EVICTION_REASON_LABEL,
}

# Stand-ins for Grafana's variables when a query goes straight to Prometheus.
GRAFANA_VARIABLES = {
    "service": ".*",  # the "All" value of the service variable
    "__rate_interval": "1m",
    "__interval": "1m",
    "__range": "1m",
}


# -- reading PromQL ------------------------------------------------------------

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGES = re.compile(r"\[[^\[\]]*\]")
_GROUPING = re.compile(
    r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", re.IGNORECASE
)
_IDENTIFIER = re.compile(r"(?<![\w:.$])[A-Za-z_:][\w:]*")
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "inf", "nan"}


def metric_names(promql: str) -> set[str]:
    """The metric names a PromQL expression selects by name.

    Strings, label matchers, ranges and grouping clauses are blanked first;
    what remains is a function name (followed by "("), a keyword, or a metric.
    """
    text = _STRINGS.sub('""', promql)
    text = _MATCHERS.sub("{}", text)
    text = _RANGES.sub("[]", text)
    text = _GROUPING.sub(" ", text)
    names = set()
    for found in _IDENTIFIER.finditer(text):
        if text[found.end() :].lstrip().startswith("("):
            continue
        if found.group().lower() in _KEYWORDS:
            continue
        names.add(found.group())
    return names


def fill_variables(promql: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in GRAFANA_VARIABLES:
            raise AssertionError(f"query uses ${name}, which this test has no value for")
        return GRAFANA_VARIABLES[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", value, promql)


def test_metric_names_are_read_past_functions_matchers_ranges_and_grouping() -> None:
    promql = (
        'sum by (job, reason) (rate(requests_total{job=~"$service", code!="5xx"}[$__rate_interval]'
        ")) / on (job) group_left () max without (instance) (capacity offset 5m) > bool 1e3"
    )

    assert metric_names(promql) == {"requests_total", "capacity"}
    assert metric_names('label_replace(up, "a", "$1", "b", "(.*)")') == {"up"}
    assert metric_names("histogram_quantile(0.9, sum by (le) (latency_bucket))") == {
        "latency_bucket"
    }


# -- the dashboard ---------------------------------------------------------------


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])  # inside a collapsed row


def queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every panel target."""
    return [
        (panel["title"], target["expr"])
        for panel in panels(dashboard)
        for target in panel.get("targets", [])
    ]


def test_every_dashboard_query_names_a_metric(dashboard: dict[str, Any]) -> None:
    found = queries(dashboard)

    assert found
    for title, promql in found:
        assert metric_names(promql), f"{title}: no metric found in {promql}"


@pytest.mark.servers
def test_every_metric_the_dashboard_queries_was_seen_by_prometheus(
    dashboard: dict[str, Any], prometheus_run: PrometheusRun
) -> None:
    for title, promql in queries(dashboard):
        unseen = metric_names(promql) - prometheus_run.metric_names
        assert not unseen, (
            f"panel {title!r} queries {sorted(unseen)}, which Prometheus never stored; "
            f"it stored {sorted(prometheus_run.metric_names)}"
        )


@pytest.mark.servers
def test_every_dashboard_query_returns_data_from_prometheus(
    dashboard: dict[str, Any], prometheus_run: PrometheusRun
) -> None:
    prometheus = prometheus_run.prometheus

    for title, promql in queries(dashboard):
        answer = prometheus.query(fill_variables(promql))
        assert answer, f"panel {title!r}: {promql} returned nothing"


@pytest.mark.servers
def test_service_variable_lists_the_scraped_app(
    dashboard: dict[str, Any], prometheus_run: PrometheusRun
) -> None:
    (variable,) = [v for v in dashboard["templating"]["list"] if v["name"] == "service"]
    call = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", variable["query"]["query"])
    assert call is not None, variable["query"]
    selector, label = call.groups()

    values = prometheus_run.prometheus.api(f"label/{label}/values", **{"match[]": selector})

    assert JOB in values
    assert variable["allValue"] == GRAFANA_VARIABLES["service"]


def test_dashboard_shows_every_signal_an_operator_needs(dashboard: dict[str, Any]) -> None:
    shown = set().union(*(metric_names(promql) for _title, promql in queries(dashboard)))

    missing = {signal: name for signal, name in REQUIRED.items() if name not in shown}
    assert not missing


def test_counters_are_broken_down_by_their_reason_label(dashboard: dict[str, Any]) -> None:
    for series, label in BROKEN_DOWN_BY.items():
        using = [promql for _title, promql in queries(dashboard) if series in metric_names(promql)]
        assert using, series
        for promql in using:
            grouping = re.search(r"\bby\s*\(([^)]*)\)", promql)
            assert grouping is not None, promql
            assert label in {name.strip() for name in grouping.group(1).split(",")}, promql


def test_counters_are_shown_as_rates_not_raw_totals(dashboard: dict[str, Any]) -> None:
    # A raw counter resets with the process and grows forever: only its rate reads well.
    for title, promql in queries(dashboard):
        for name in metric_names(promql):
            if name.endswith("_total"):
                assert re.search(rf"\b(?:rate|increase|irate)\(\s*{name}\b", promql), title


def test_every_panel_queries_the_provisioned_prometheus(dashboard: dict[str, Any]) -> None:
    provisioned = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    (prometheus,) = [source for source in provisioned if source["type"] == "prometheus"]
    (variable,) = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]

    assert variable["query"] == "prometheus"
    assert variable["current"]["value"] == prometheus["uid"]
    reference = {"type": "prometheus", "uid": f"${{{variable['name']}}}"}
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == reference, panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == reference, panel["title"]


def test_panels_have_unique_ids_and_do_not_overlap(dashboard: dict[str, Any]) -> None:
    everything = list(panels(dashboard))
    cells: dict[tuple[int, int], str] = {}

    assert len({panel["id"] for panel in everything}) == len(everything)
    for panel in everything:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[x, y]}"
                cells[x, y] = panel["title"]
