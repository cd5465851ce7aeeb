"""Every alert and recording rule the documentation shows is one Prometheus accepts.

Each ```promql block of the docs holds expressions separated by blank lines,
each after its comment. They are loaded into a rule file and checked with
the real `promtool check rules`; then every metric an expression selects is
looked up among the metrics otel-bounded actually exports (collected from
live instruments, named as Prometheus exporters name them), so a placeholder
or a misspelt name, which PromQL reads as a selector matching nothing, fails.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, MetricsData
from opentelemetry.sdk.metrics.export import Sum as SumData

from otel_bounded import TraceStore
from otel_bounded.approvals import ApprovalLedger
from otel_bounded.tokens import HMACTokenProvider
from tests.servers import require_binary

DOCS = Path(__file__).resolve().parent.parent / "docs"
_BLOCK = re.compile(r"```promql\n(.*?)```", re.DOTALL)
_RULES_BLOCK = re.compile(r"```yaml\n(groups:.*?)```", re.DOTALL)
_KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan",
}  # fmt: skip


def documented_expressions() -> list[tuple[str, str]]:
    """(where, expression) for every expression in a promql block of the docs."""
    found = []
    for page in sorted(DOCS.glob("*.md")):
        for block_index, block in enumerate(_BLOCK.findall(page.read_text())):
            for chunk_index, chunk in enumerate(re.split(r"\n\s*\n", block)):
                expression = "\n".join(
                    line for line in chunk.splitlines() if not line.lstrip().startswith("#")
                ).strip()
                if expression:
                    found.append((f"{page.name}:{block_index}:{chunk_index}", expression))
    return found


def documented_rule_groups() -> list[dict[str, object]]:
    """Rule groups the docs show as YAML (``groups:`` blocks), if any."""
    groups: list[dict[str, object]] = []
    for page in sorted(DOCS.glob("*.md")):
        for block in _RULES_BLOCK.findall(page.read_text()):
            groups.extend(yaml.safe_load(block)["groups"])
    return groups


def exported_metric_names() -> set[str]:
    """Every metric otel-bounded exports, as Prometheus names it: dots to underscores,
    counters with ``_total``."""
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    owners = (
        TraceStore(meter_provider=provider),
        HMACTokenProvider(b"k" * 32, meter_provider=provider),
        ApprovalLedger(meter_provider=provider),
    )
    data: MetricsData | None = reader.get_metrics_data()
    provider.shutdown()
    del owners
    names = set()
    for resource_metrics in data.resource_metrics if data else ():
        for scope_metrics in resource_metrics.scope_metrics:
            for metric in scope_metrics.metrics:
                name = metric.name.replace(".", "_")
                monotonic = isinstance(metric.data, SumData) and metric.data.is_monotonic
                names.add(f"{name}_total" if monotonic else name)
    return names


def selected_metrics(expression: str) -> set[str]:
    """The metric names an expression selects (identifiers that are not functions,
    keywords, label names or parts of strings and durations)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expression)
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text
    )  # grouping labels
    identifiers = re.finditer(r"(?<![\w.])([A-Za-z_:][\w:]*)(\s*\()?", text)
    return {
        match.group(1)
        for match in identifiers
        if match.group(2) is None and match.group(1).lower() not in _KEYWORDS
    }


def test_the_docs_show_alerts_to_check() -> None:
    assert len(documented_expressions()) >= 12


def test_every_documented_alert_and_rule_passes_promtool(tmp_path: Path) -> None:
    promtool = require_binary("promtool", "prometheus")
    rules: list[dict[str, object]] = [
        {"alert": f"Documented{index}", "expr": expression}
        for index, (_where, expression) in enumerate(documented_expressions())
    ]
    groups = [{"name": "documented", "rules": rules}, *documented_rule_groups()]
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    count = len(rules) + sum(len(group["rules"]) for group in groups[1:])  # type: ignore[arg-type]
    assert f"SUCCESS: {count} rules" in result.stdout


@pytest.mark.parametrize(("where", "expression"), documented_expressions())
def test_every_documented_alert_selects_only_metrics_otel_bounded_exports(
    where: str, expression: str
) -> None:
    unknown = selected_metrics(expression) - exported_metric_names()
    assert not unknown, f"{where} selects {sorted(unknown)}, which otel-bounded never exports"


def test_a_placeholder_threshold_would_be_caught() -> None:
    # The old `otel_bounded_token_revocations > N` read N as a metric name.
    assert selected_metrics("otel_bounded_token_revocations > N") == {
        "otel_bounded_token_revocations",
        "N",
    }
    assert selected_metrics(
        'sum by (a, b) (rate(x_total{reason=~"y|z"}[5m])) / on(c) group_left(d) w > 0.5'
    ) == {"x_total", "w"}
