"""``otel-bounded audit``: verify, show, export (to a real OTLP receiver) and keygen."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from otel_bounded import TraceStore
from otel_bounded.cli import main
from tests.audit.helpers import KEY, segment_files, small_log
from tests.e2e.otlp_receiver import (
    WAIT_SECONDS,
    OTLPReceiver,
    otlp_receiver_fixture,  # noqa: F401  (registers the otlp_receiver fixture)
)
from tests.support import FakeClock

COMMAND = str(Path(sys.executable).with_name("otel-bounded"))
PUBLIC_HEX = (
    KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw).hex()
)


def _log(path: Path) -> Path:
    clock = FakeClock(1_700_000_000.0)
    log = small_log(path, clock=clock, checkpoint_interval_seconds=1e9)
    for index in range(5):
        log.append("token.revoke", {"token_id": f"id{index}"})
        clock.advance(10)
    log.append("approval.consume", {"otel_bounded.outcome": "allowed"})
    log.close()
    return path


def test_verify_exits_0_with_a_summary(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _log(tmp_path / "log")
    assert main(["audit", "verify", str(path), "--key", PUBLIC_HEX]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK: the log verifies")
    assert "records:     8 in 1 segment(s), seq 0..7" in out
    assert "2023-11-14T22:13:20.000+00:00 .. 2023-11-14T22:14:10.000+00:00" in out
    assert "signed with the key(s) given" in out


def test_verify_json_and_a_pem_key_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _log(tmp_path / "log")
    key_file = tmp_path / "public.pem"
    key_file.write_bytes(
        KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    assert main(["audit", "verify", str(path), "--key", str(key_file), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ok"] is True
    assert summary["pinned"] is True
    assert summary["kinds"] == {"genesis": 1, "token.revoke": 5, "approval.consume": 1,
                                "checkpoint": 1}  # fmt: skip


def test_verify_exits_1_naming_the_first_bad_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path / "log")
    [segment] = segment_files(path)
    segment.write_bytes(segment.read_bytes().replace(b"id3", b"id9"))
    assert main(["audit", "verify", str(path), "--key", PUBLIC_HEX]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"FAILED: record 4 ({segment.name}, line 5): edited:")


def test_verify_refuses_a_bad_key_without_echoing_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path / "log")
    assert main(["audit", "verify", str(path), "--key", "my-private-secret"]) == 2
    assert "my-private-secret" not in capsys.readouterr().err


def test_show_filters_by_kind_family_and_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path / "log")
    assert main(["audit", "show", str(path), "--kind", "approval", "--json"]) == 0
    [line] = capsys.readouterr().out.splitlines()
    assert json.loads(line)["kind"] == "approval.consume"
    since = "2023-11-14T22:13:40+00:00"
    assert main(["audit", "show", str(path), "--kind", "token.revoke", "--since", since]) == 0
    shown = capsys.readouterr().out.splitlines()
    assert [json.loads(line.split("\t")[3])["token_id"] for line in shown] == ["id2", "id3", "id4"]


def test_keygen_writes_a_private_key_the_log_and_verify_accept(tmp_path: Path) -> None:
    key_file = tmp_path / "audit.pem"
    result = subprocess.run(
        [COMMAND, "audit", "keygen", str(key_file)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert key_file.stat().st_mode & 0o077 == 0
    public = result.stdout.split("public key (give this to auditors, for --key): ")[1].split()[0]
    assert "PRIVATE" not in result.stdout
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["OTEL_BOUNDED_AUDIT_KEY_FILE"] = str(key_file)
    env["OTEL_BOUNDED_AUDIT_PATH"] = str(tmp_path / "log")
    script = (
        "from otel_bounded.audit import AuditLog\n"
        "log = AuditLog.from_env()\n"
        "log.append('token.sweep', {'removed': 0})\n"
        "log.close()\n"
    )
    subprocess.run([sys.executable, "-c", script], env=env, check=True, timeout=60)
    assert main(["audit", "verify", str(tmp_path / "log"), "--key", public]) == 0
    assert main(["audit", "keygen", str(key_file)]) == 1  # never overwrites


def test_export_resends_verified_evicted_traces_to_a_real_otlp_receiver(
    tmp_path: Path, otlp_receiver: OTLPReceiver, capsys: pytest.CaptureFixture[str]
) -> None:
    log = small_log(tmp_path / "log", max_bytes=1 << 22, segment_bytes=1 << 20)
    store = TraceStore(max_traces=1, audit=log)
    originals = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(store)
    provider.add_span_processor(SimpleSpanProcessor(originals))
    tracer = provider.get_tracer("export-test")
    for index in range(4):
        with tracer.start_as_current_span(f"step-{index}"), tracer.start_as_current_span("tool"):
            pass
    log.close()

    assert main(["audit", "export", str(log.path), "--otlp", otlp_receiver.endpoint]) == 0
    assert "exported 3 evicted trace(s), 6 span(s)" in capsys.readouterr().out
    with otlp_receiver._arrived:
        assert otlp_receiver._arrived.wait_for(lambda: otlp_receiver._traces, WAIT_SECONDS)
        [request] = otlp_receiver._traces
    by_trace: dict[int, list[ReadableSpan]] = {}
    for span in originals.get_finished_spans():
        by_trace.setdefault(span.context.trace_id, []).append(span)
    evicted = [spans for trace_id, spans in by_trace.items() if trace_id not in store.trace_ids()]
    # One resourceSpans per evicted trace, oldest first, each as the SDK's exporter encodes it.
    assert list(request.resource_spans) == [
        encode_spans(spans).resource_spans[0] for spans in evicted
    ]


def test_export_refuses_a_log_that_fails_verification(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path / "log")
    [segment] = segment_files(path)
    segment.write_bytes(segment.read_bytes()[:-10])
    assert main(["audit", "export", str(path), "--otlp", "127.0.0.1:1"]) == 1
    assert "refusing to export" in capsys.readouterr().err


def test_verify_prints_a_witness_that_a_later_verify_checks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = _log(tmp_path / "log")
    assert main(["audit", "verify", str(path), "--key", PUBLIC_HEX]) == 0
    [witness] = [
        line.split()[1]
        for line in capsys.readouterr().out.splitlines()
        if line.startswith("witness:")
    ]
    assert main(["audit", "verify", str(path), "--key", PUBLIC_HEX, "--witness", witness]) == 0
    assert "witnesses:   1 matched" in capsys.readouterr().out
    seq = int(witness.split(":")[0])
    ahead = f"{seq + 5}:{witness.split(':')[1]}"
    assert main(["audit", "verify", str(path), "--key", PUBLIC_HEX, "--witness", ahead]) == 1
    assert "rolled back" in capsys.readouterr().out
