"""tests/servers.py: a missing server binary skips its tests, or fails them under CI."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import pytest

from tests.servers import (
    LOOPBACK,
    REDIS,
    RunningServer,
    ServerSpec,
    free_port,
    launch,
    require_binary,
)

MISSING = "otel-bounded-no-such-server-binary"


def test_missing_binary_skips_with_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_BOUNDED_REQUIRE_SERVERS", raising=False)

    with pytest.raises(pytest.skip.Exception, match="install the Debian package some-package"):
        require_binary(MISSING, "some-package")


def test_missing_binary_fails_when_servers_are_required(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_BOUNDED_REQUIRE_SERVERS", "1")

    with pytest.raises(pytest.fail.Exception, match="install the Debian package some-package"):
        require_binary(MISSING, "some-package")


def test_free_port_is_on_loopback_and_unused() -> None:
    port = free_port()

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, port))


@pytest.mark.servers
def test_launched_redis_listens_on_loopback_only(tmp_path: Path) -> None:
    server = launch(REDIS, tmp_path)
    try:
        assert server.host == LOOPBACK
        assert f"bind {LOOPBACK}" in (tmp_path / "redis.conf").read_text()
        with socket.create_connection((LOOPBACK, server.port), timeout=5) as connection:
            connection.sendall(b"PING\r\n")
            assert connection.recv(16) == b"+PONG\r\n"
    finally:
        server.stop()
    assert server.process.returncode is not None


def test_a_server_that_exits_at_once_fails_with_its_log(tmp_path: Path) -> None:
    failing = ServerSpec(
        binary="sh",
        debian_package="dash",
        argv=lambda binary, _port, _workdir: [binary, "-c", "echo broken config >&2; exit 3"],
    )

    with pytest.raises(pytest.fail.Exception, match="broken config"):
        launch(failing, tmp_path)


@pytest.mark.servers
def test_launch_waits_for_a_custom_readiness_check(tmp_path: Path) -> None:
    asked: list[int] = []

    def ready_on_third_ask(server: RunningServer) -> bool:
        asked.append(server.port)
        return len(asked) >= 3

    spec = dataclasses.replace(REDIS, ready=ready_on_third_ask)
    server = launch(spec, tmp_path)
    server.stop()

    assert asked == [server.port] * 3
