"""What an approval decision costs on each store, next to the bare work it cannot avoid.

Run: ``.venv/bin/python bench/approvals.py`` (``--quick`` for a smoke run).

Each round times, interleaved (see `_harness`), one ``consume`` per variant
on a fresh grant of a ledger using the global no-op tracer, and a peer doing
only the storage work a use needs, measured in the same round:

1. memory store: ``ApprovalLedger.consume`` next to a SHA-256 of the token, a
   dict lookup and an update under a lock. Goal: <= 15x the peer (the ledger
   also checks names and scopes, copies its record, opens a span and counts).
2. SQLite store (a file, WAL, ``synchronous=FULL``): next to one bare
   ``BEGIN IMMEDIATE``/``SELECT``/``UPDATE``/``COMMIT`` on the same kind of
   file. Goal: <= 2x the peer.
3. Redis store (a local redis-server, if installed): next to one bare
   ``WATCH``/``GET``/``MULTI``/``SET``/``EXEC`` with redis-py. Goal: <= 2x.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import platform
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from _harness import Goal, Variant, format_goals, format_table, run_interleaved
from otel_bounded.approvals import ApprovalLedger, ApprovalScope

SCOPE = ApprovalScope("release", "deploy", "service-a", {"version": "1.2.3"})
CALLS = 200


def granted_tokens(ledger: ApprovalLedger, count: int) -> list[str]:
    tokens = []
    for _ in range(count):
        grant = ledger.request(SCOPE, requested_by="agent", executor="agent", ttl_seconds=3600)
        ledger.approve(grant.token, approver="alice")
        tokens.append(grant.token)
    return tokens


def consume_variant(name: str, ledger: ApprovalLedger, calls: int) -> Variant:
    """`calls` consumes, each on a grant made (untimed) just before the loop."""
    tokens: list[str] = []

    def before() -> None:
        tokens[:] = granted_tokens(ledger, calls)

    def loop() -> None:
        for token in tokens:
            ledger.consume(token, SCOPE, "agent")

    return Variant(name, loop, calls, before=before)


def memory_peer(calls: int) -> Variant:
    table: dict[str, int] = {}
    lock = threading.Lock()
    tokens: list[str] = []

    def before() -> None:
        tokens[:] = [os.urandom(32).hex() for _ in range(calls)]
        for token in tokens:
            table[hashlib.sha256(token.encode()).hexdigest()] = 0

    def loop() -> None:
        for token in tokens:
            key = hashlib.sha256(token.encode()).hexdigest()
            with lock:
                table[key] = table[key] + 1

    return Variant("peer: sha256 + dict + lock", loop, calls, before=before)


def sqlite_peer(path: Path, calls: int) -> Variant:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS g (key TEXT PRIMARY KEY, record TEXT) WITHOUT ROWID")
    keys: list[str] = []

    def before() -> None:
        keys[:] = [os.urandom(32).hex() for _ in range(calls)]
        db.execute("BEGIN")
        db.executemany("INSERT INTO g VALUES (?, '[0]')", [(key,) for key in keys])
        db.execute("COMMIT")

    def loop() -> None:
        for key in keys:
            db.execute("BEGIN IMMEDIATE")
            db.execute("SELECT record FROM g WHERE key = ?", (key,)).fetchone()
            db.execute("UPDATE g SET record = '[1]' WHERE key = ?", (key,))
            db.execute("COMMIT")

    return Variant("peer: bare SQLite transaction", loop, calls, before=before)


def redis_peer(url: str, calls: int) -> Variant:
    import redis

    client = redis.Redis.from_url(url)
    keys: list[str] = []

    def before() -> None:
        keys[:] = [f"peer:{os.urandom(16).hex()}" for _ in range(calls)]
        client.mset(dict.fromkeys(keys, "[0]"))

    def loop() -> None:
        for key in keys:
            with client.pipeline(transaction=True) as pipe:
                pipe.watch(key)
                pipe.get(key)
                pipe.multi()
                pipe.set(key, "[1]")
                pipe.execute()

    return Variant("peer: bare Redis WATCH/MULTI", loop, calls, before=before)


@contextmanager
def redis_server() -> Iterator[str | None]:
    binary = shutil.which("redis-server")
    if binary is None:
        yield None
        return
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        server = subprocess.Popen(
            [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--dir", workdir],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            deadline = time.monotonic() + 10
            while True:
                with socket.socket() as probe:
                    if probe.connect_ex(("127.0.0.1", port)) == 0:
                        break
                if time.monotonic() > deadline:
                    raise SystemExit("redis-server did not start")
                time.sleep(0.02)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            server.terminate()
            server.wait(10)


def compare(
    label: str, ours: Variant, peer: Variant, rounds: int, goal: float
) -> tuple[list[list[str]], Goal]:
    timings = run_interleaved([ours, peer], rounds, warmup_rounds=1)
    low, middle, high = timings.ratio_quartiles(ours.name, peer.name)
    rows = [
        [
            ours.name,
            f"{timings.median_us(ours.name):.1f}",
            f"{middle:.2f}",
            f"{low:.2f}-{high:.2f}",
        ],
        [peer.name, f"{timings.median_us(peer.name):.1f}", "1", ""],
    ]
    return rows, Goal(label, timings.median_ratio(ours.name, peer.name), goal)


def run(rounds: int, calls: int) -> tuple[list[list[str]], list[Goal]]:
    rows: list[list[str]] = []
    goals: list[Goal] = []
    with tempfile.TemporaryDirectory() as workdir:
        cases: list[tuple[str, Callable[[], Variant], Callable[[], Variant], float]] = [
            (
                "memory consume / peer",
                lambda: consume_variant(
                    "consume (memory)", ApprovalLedger(max_live=calls * 4), calls
                ),
                lambda: memory_peer(calls),
                15.0,
            ),
            (
                "SQLite consume / peer",
                lambda: consume_variant(
                    "consume (SQLite)",
                    ApprovalLedger(max_live=calls * 4, store=f"sqlite:///{workdir}/a.db"),
                    calls,
                ),
                lambda: sqlite_peer(Path(workdir) / "peer.db", calls),
                2.0,
            ),
        ]
        for label, ours, peer, goal in cases:
            case_rows, case_goal = compare(label, ours(), peer(), rounds, goal)
            rows += case_rows
            goals.append(case_goal)
    with redis_server() as url:
        if url is None:
            print("redis-server not installed: the Redis case is skipped")
        else:
            ledger = ApprovalLedger(max_live=calls * 4, store=url)
            case_rows, case_goal = compare(
                "Redis consume / peer",
                consume_variant("consume (Redis)", ledger, calls),
                redis_peer(url, calls),
                rounds,
                2.0,
            )
            ledger.close()
            rows += case_rows
            goals.append(case_goal)
    return rows, goals


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few rounds, few calls")
    args = parser.parse_args(argv)
    rounds, calls = (3, 20) if args.quick else (15, CALLS)
    print(f"Python {platform.python_version()} on {platform.machine()}, {platform.system()}")
    print(f"SQLite {sqlite3.sqlite_version}")
    print()
    rows, goals = run(rounds, calls)
    print(f"consume, {rounds} interleaved rounds of {calls} calls each")
    print(format_table(["variant", "median us/call", "ratio to peer", "ratio IQR"], rows))
    print()
    print(format_goals(goals))
    return 0 if all(goal.met for goal in goals) or args.quick else 1


if __name__ == "__main__":
    sys.exit(main())
