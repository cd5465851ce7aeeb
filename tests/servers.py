"""Real server binaries for end-to-end tests: redis-server today, prometheus next.

A test asks for a `ServerSpec`; `launch` finds the binary (skipping the test,
or failing it under ``OTEL_BOUNDED_REQUIRE_SERVERS=1``, when it is missing),
writes its config into a fresh directory, starts it on a free loopback port
and waits until the port accepts connections. Servers only ever bind to
127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pytest

__all__ = [
    "LOOPBACK",
    "REDIS",
    "RunningServer",
    "ServerSpec",
    "free_port",
    "launch",
    "require_binary",
    "running",
]

LOOPBACK = "127.0.0.1"
REQUIRE_SERVERS_VARIABLE = "OTEL_BOUNDED_REQUIRE_SERVERS"
_READY_TIMEOUT_SECONDS = 20.0
_STOP_TIMEOUT_SECONDS = 10.0
_POLL_SECONDS = 0.02
_PORT_ATTEMPTS = 3


@dataclass(frozen=True)
class ServerSpec:
    """How to run one kind of server.

    `argv(binary, port, workdir)` is the command line; `files(port, workdir)`
    maps file names (written into `workdir` first) to their contents;
    `ready(server)`, polled once the port accepts connections, can wait for
    more (say, an HTTP ``/-/ready`` answering 200).
    """

    binary: str
    debian_package: str
    argv: Callable[[str, int, Path], list[str]]
    files: Callable[[int, Path], Mapping[str, str]] = field(default=lambda _port, _dir: {})
    ready: Callable[[RunningServer], bool] | None = None


@dataclass
class RunningServer:
    """A started server: where it listens, and how to stop or kill it."""

    spec: ServerSpec
    port: int
    workdir: Path
    process: subprocess.Popen[bytes]
    host: str = LOOPBACK

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log(self) -> str:
        """What the server wrote to stdout and stderr so far, for failure messages."""
        path = self.workdir / "server.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def kill(self) -> None:
        """SIGKILL, as a crash would: no shutdown handlers run."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(_STOP_TIMEOUT_SECONDS)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if the server does not exit in time."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(_STOP_TIMEOUT_SECONDS)
            except subprocess.TimeoutExpired:
                self.kill()


def require_binary(binary: str, debian_package: str) -> str:
    """The path of `binary`; skip the test when it is missing (fail it under CI)."""
    path = shutil.which(binary)
    if path is not None:
        return path
    message = f"install the Debian package {debian_package} to run these tests"
    if os.environ.get(REQUIRE_SERVERS_VARIABLE) == "1":
        pytest.fail(f"{binary} not found and {REQUIRE_SERVERS_VARIABLE}=1: {message}")
    pytest.skip(message)


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((LOOPBACK, 0))
        return int(probe.getsockname()[1])


def launch(spec: ServerSpec, workdir: Path, *, port: int | None = None) -> RunningServer:
    """Start `spec` in `workdir` on a free loopback port, once it is ready.

    Pass `port` to restart a server where its clients expect it. A free port
    can be taken by another process before the server binds it, so a server
    that exits at once on a port chosen here is retried on a new one.
    """
    binary = require_binary(spec.binary, spec.debian_package)
    workdir.mkdir(parents=True, exist_ok=True)
    attempts = 1 if port is not None else _PORT_ATTEMPTS
    for attempt in range(1, attempts + 1):
        server = _start(spec, binary, workdir, port if port is not None else free_port())
        try:
            if _wait_until_ready(server, last_attempt=attempt == attempts):
                return server
        except BaseException:
            server.kill()
            raise
    raise AssertionError("unreachable: the last attempt fails the test")


@contextlib.contextmanager
def running(spec: ServerSpec, workdir: Path, *, port: int | None = None) -> Iterator[RunningServer]:
    """`launch`, then stop the server however the block ends."""
    server = launch(spec, workdir, port=port)
    try:
        yield server
    finally:
        server.stop()


def _start(spec: ServerSpec, binary: str, workdir: Path, port: int) -> RunningServer:
    for name, text in spec.files(port, workdir).items():
        (workdir / name).write_text(text)
    with open(workdir / "server.log", "wb") as log:
        process = subprocess.Popen(
            spec.argv(binary, port, workdir),
            cwd=workdir,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    return RunningServer(spec, port, workdir, process)


def _wait_until_ready(server: RunningServer, *, last_attempt: bool) -> bool:
    """True once ready; False if it exited early and another port may be tried."""
    # Readiness polling with a deadline, not a sleep standing in for a condition.
    deadline = time.monotonic() + _READY_TIMEOUT_SECONDS
    while True:
        if server.process.poll() is not None:
            if not last_attempt:
                return False
            pytest.fail(
                f"{server.spec.binary} exited with {server.process.returncode} before "
                f"listening on {server.address}:\n{server.log}"
            )
        if _accepts_connections(server) and (
            server.spec.ready is None or server.spec.ready(server)
        ):
            return True
        if time.monotonic() > deadline:
            pytest.fail(
                f"{server.spec.binary} was not ready on {server.address} within "
                f"{_READY_TIMEOUT_SECONDS:.0f}s:\n{server.log}"
            )
        time.sleep(_POLL_SECONDS)


def _accepts_connections(server: RunningServer) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(_POLL_SECONDS * 10)
        return probe.connect_ex((server.host, server.port)) == 0


def _redis_config(port: int, workdir: Path) -> Mapping[str, str]:
    return {
        "redis.conf": "\n".join(
            [
                f"bind {LOOPBACK}",
                f"port {port}",
                "protected-mode yes",
                "daemonize no",
                f'dir "{workdir}"',
                'save ""',
                "appendonly no",
                "loglevel warning",
                "",
            ]
        )
    }


REDIS = ServerSpec(
    binary="redis-server",
    debian_package="redis-server",
    argv=lambda binary, _port, workdir: [binary, str(workdir / "redis.conf")],
    files=_redis_config,
)
"""An empty, throwaway redis-server that keeps nothing on disk."""
