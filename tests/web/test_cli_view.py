"""``otel-bounded traces``, ``trace`` and ``stats`` against a live view."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from otel_bounded import TraceStore
from otel_bounded.cli import main
from otel_bounded.web import WebView, serve
from tests.servers import free_port
from tests.web.helpers import HOSTILE_NAME

COMMAND = str(Path(sys.executable).with_name("otel-bounded"))


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_traces_lists_what_the_store_holds(
    capsys: pytest.CaptureFixture[str], view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, ids = recorded
    code, out, err = run(capsys, "traces", "--url", view.url)
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == [
        "TRACE",
        "ID",
        "STATUS",
        "DURATION",
        "SPANS",
        "ERRORS",
        "SERVICE",
        "ROOT",
    ]
    assert len(lines) == 1 + len(store)
    assert {line.split()[0] for line in lines[1:]} == {f"{t:032x}" for t in ids.values()}

    code, out, _ = run(capsys, "traces", "--url", view.url, "--status", "error", "--json")
    assert code == 0
    assert json.loads(out) == {
        "traces": [s.as_dict() for s in store.query(status="error", limit=20)]
    }

    code, out, _ = run(
        capsys,
        "traces",
        "--url",
        view.url,
        "--name",
        "SELECT*",
        "--min-duration-ms",
        "0",
        "--limit",
        "1",
    )
    assert code == 0
    assert out.splitlines()[1].split()[0] == f"{ids['ok']:032x}"


def test_trace_prints_an_indented_tree(
    capsys: pytest.CaptureFixture[str], view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, ids = recorded
    code, out, err = run(capsys, "trace", f"{ids['ok']:032x}", "--url", view.url)
    assert code == 0, err
    lines = out.splitlines()
    held = store.get(ids["ok"])
    assert lines[0].startswith("GET /orders  ")
    assert " ok  " in lines[0]
    assert len(lines) == len(held)
    assert all(line.startswith("  ") and not line.startswith("   ") for line in lines[1:])
    (composite,) = [
        s for s in held if s.attributes and "otel_bounded.composite.count" in s.attributes
    ]
    merged = [line for line in lines if "merged)" in line]
    assert merged == [
        line
        for line in lines
        if f"x{composite.attributes['otel_bounded.composite.count']} merged" in line
    ]
    assert merged[0].startswith("  SELECT orders  ")
    assert lines[-1].startswith("  llm.chat  ")

    code, out, _ = run(capsys, "trace", f"{ids['hostile']:032x}", "--url", view.url)
    assert code == 0
    first, second = out.splitlines()
    assert first.startswith(HOSTILE_NAME)
    assert second.startswith("  tool.call  ")
    assert "ERROR" in second
    assert "boom <b>bold</b>" in second


def test_trace_json_is_otlp(
    capsys: pytest.CaptureFixture[str], view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    _, ids = recorded
    code, out, _ = run(capsys, "trace", f"{ids['ok']:032x}", "--url", view.url, "--json")
    assert code == 0
    assert list(json.loads(out)) == ["resourceSpans"]


def test_control_characters_never_reach_the_terminal(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from opentelemetry.sdk.trace import TracerProvider

    store = TraceStore()
    provider = TracerProvider()
    provider.add_span_processor(store)
    with provider.get_tracer("t").start_as_current_span("red \x1b[31m\x07 bell") as span:
        trace_id = span.get_span_context().trace_id
    with serve(store) as running:
        for argv in (("traces",), ("trace", f"{trace_id:032x}")):
            code, out, _ = run(capsys, *argv, "--url", running.url)
            assert code == 0
            assert "\x1b" not in out
            assert "\x07" not in out
            assert "red \\x1b[31m\\x07 bell" in out


def test_stats_prints_held_against_caps(
    capsys: pytest.CaptureFixture[str], view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, _ = recorded
    code, out, _ = run(capsys, "stats", "--url", view.url)
    assert code == 0
    stats = store.stats()
    assert out.splitlines()[1].split() == ["traces", f"{stats.traces:,}", f"{stats.max_traces:,}"]
    assert "merged by compaction" in out
    code, out, _ = run(capsys, "stats", "--url", view.url, "--json")
    assert json.loads(out) == json.loads(json.dumps(stats.as_dict()))


def test_an_unknown_trace_is_one_line_and_exit_1(
    capsys: pytest.CaptureFixture[str], view: WebView
) -> None:
    code, out, err = run(capsys, "trace", "ab" * 16, "--url", view.url)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "is not held" in err
    code, _, err = run(capsys, "trace", "not-a-trace", "--url", view.url)
    assert code == 1
    assert "32 hex digits" in err


def test_an_unreachable_url_is_one_line_and_exit_1_without_traceback() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (["traces"], ["trace", "ab" * 16], ["stats"]):
        result = subprocess.run(
            [COMMAND, *argv, "--url", url], capture_output=True, text=True, timeout=60, check=False
        )
        assert result.returncode == 1
        assert result.stdout == ""
        assert result.stderr.count("\n") == 1, result.stderr
        assert "cannot reach" in result.stderr
        assert "Traceback" not in result.stderr


def test_a_url_that_is_not_a_view_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "stats", "--url", "ftp://example.invalid/")
    assert code == 1
    assert "http://" in err
    assert err.count("\n") == 1
