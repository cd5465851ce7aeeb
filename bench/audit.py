"""What the audit log costs: the caller's append, the writer's throughput, offline verification.

Run: ``.venv/bin/python bench/audit.py`` (``--quick`` for a smoke run).

1. The caller's cost of one `AuditLog.append` (a revocation-sized record),
   400 appends per timed loop so the writer is not woken inside it, next to
   the standard library's bounded `queue.Queue.put_nowait` of the same tuple,
   in interleaved rounds (see `_harness`). Goal: <= 2 us.
2. The writer's throughput with the default fsync policy (at every
   checkpoint, rotation and close): N records queued while the writer is
   held, then released; records per second until `flush()` returns. Also end
   to end, with the callers appending meanwhile (they share the interpreter).
   Peer: the same records written as plain JSON lines (no chain, no
   signature) to a buffered file, fsynced at the end. Goal: >= 100,000/s.
3. `verify` of a closed, signed log of 1,000,000 records, with its public
   key (by default one process per CPU for a log this size; also timed with
   one). Peer: reading the same files and parsing every line's JSON payload,
   verifying nothing, in one process. Goal: <= 5 s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from _harness import Goal, Variant, format_goals, format_table, run_interleaved
from otel_bounded.audit import AuditLog, verify
from otel_bounded.audit.verifier import default_workers

KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
PAYLOAD = {
    "token_id": "Qm9vdHN0cmFwcGVkVG9rZW4",
    "principal_id": "agent-7",
    "expires_at": 1_700_003_600.25,
    "newly_revoked": True,
    "otel.component.type": "otel_bounded_token_provider",
    "otel.component.name": "otel_bounded_token_provider/0",
}
KIND = "token.revoke"
APPENDS_PER_LOOP = 400

OURS_APPEND = "AuditLog.append"
PEER_APPEND = "queue.Queue.put_nowait"


def bench_append(directory: Path, rounds: int) -> tuple[list[list[str]], list[Goal]]:
    log = AuditLog(directory / "append", max_bytes=1 << 30, queue_size=1 << 16, key=KEY)
    peer: queue.Queue[tuple[float, str, dict[str, object]]] = queue.Queue(maxsize=1 << 16)
    append = log.append
    put = peer.put_nowait
    now = time.time

    def ours() -> None:
        for _ in range(APPENDS_PER_LOOP):
            append(KIND, PAYLOAD)

    def theirs() -> None:
        for _ in range(APPENDS_PER_LOOP):
            put((now(), KIND, PAYLOAD))

    def drain_peer() -> None:
        while not peer.empty():
            peer.get_nowait()

    timings = run_interleaved(
        [
            Variant(OURS_APPEND, ours, APPENDS_PER_LOOP, after=log.flush),
            Variant(PEER_APPEND, theirs, APPENDS_PER_LOOP, after=drain_peer),
        ],
        rounds,
    )
    log.close()
    low, ratio, high = timings.ratio_quartiles(OURS_APPEND, PEER_APPEND)
    rows = [
        [
            OURS_APPEND,
            f"{timings.median_us(OURS_APPEND):.3f}",
            f"{ratio:.3f}x [{low:.3f}-{high:.3f}]",
        ],
        [PEER_APPEND, f"{timings.median_us(PEER_APPEND):.3f}", "1.000x"],
    ]
    goal = Goal("caller's cost of one append", timings.median_us(OURS_APPEND), 2.0, unit=" us")
    return rows, [goal]


def _drain_rate(path: Path, records: int) -> float:
    """The writer alone: records queued while it is held, then the time it takes to write them."""
    log = AuditLog(path, max_bytes=1 << 32, queue_size=records + 1, key=KEY)
    release = threading.Event()
    log.append("bench.hold", {"held": lambda: release.wait(600)})
    for _ in range(records - 1):
        log.append(KIND, PAYLOAD)
    start = time.perf_counter()
    release.set()
    assert log.flush(timeout=600)
    rate = records / (time.perf_counter() - start)
    counts = log.telemetry_counts()
    log.close()
    assert sum(counts.dropped.values()) == 0, counts
    return rate


def _end_to_end_rate(path: Path, records: int) -> float:
    """Callers and writer together: from the first append until all is written."""
    log = AuditLog(path, max_bytes=1 << 32, queue_size=records + 1, key=KEY)
    start = time.perf_counter()
    for _ in range(records):
        log.append(KIND, PAYLOAD)
    assert log.flush(timeout=600)
    rate = records / (time.perf_counter() - start)
    counts = log.telemetry_counts()
    log.close()
    assert sum(counts.dropped.values()) == 0, counts
    return rate


def _plain_rate(path: Path, records: int) -> float:
    start = time.perf_counter()
    with open(path, "w", encoding="ascii") as file:
        for _ in range(records):
            file.write(f"{time.time()!r}\t{KIND}\t{json.dumps(PAYLOAD)}\n")
        file.flush()
        os.fsync(file.fileno())
    return records / (time.perf_counter() - start)


def bench_writer(directory: Path, records: int, rounds: int) -> tuple[list[list[str]], list[Goal]]:
    alone: list[float] = []
    together: list[float] = []
    peers: list[float] = []
    for index in range(rounds):
        for rates, measure in ((alone, _drain_rate), (together, _end_to_end_rate)):
            path = directory / f"writer-{index}"
            rates.append(measure(path, records))
            shutil.rmtree(path)
        peers.append(_plain_rate(directory / f"plain-{index}.jsonl", records))
        os.unlink(directory / f"plain-{index}.jsonl")
    mine, both, theirs = (statistics.median(rates) for rates in (alone, together, peers))
    rows = [
        [
            "AuditLog writer thread alone (queue filled first)",
            f"{mine:,.0f}",
            f"{mine / theirs:.3f}x",
        ],
        [
            "AuditLog, callers appending meanwhile (end to end)",
            f"{both:,.0f}",
            f"{both / theirs:.3f}x",
        ],
        ["plain JSON lines, buffered, one fsync", f"{theirs:,.0f}", "1.000x"],
    ]
    # Goal phrased as a cost so that <= reads right: seconds per 100,000 records.
    goal = Goal("writer: seconds per 100,000 records", 100_000 / mine, 1.0, unit=" s")
    return rows, [goal]


def bench_verify(directory: Path, records: int, rounds: int) -> tuple[list[list[str]], list[Goal]]:
    path = directory / "verify"
    log = AuditLog(path, max_bytes=1 << 32, queue_size=1 << 16, key=KEY)
    for index in range(records):
        log.append(KIND, PAYLOAD)
        if index % 50_000 == 0:
            log.flush(timeout=600)
    log.close()
    ours: list[float] = []
    alone: list[float] = []
    peers: list[float] = []
    report = None
    for _ in range(rounds):
        start = time.perf_counter()
        report = verify(path, [KEY.public_key()], workers=default_workers(path))
        ours.append(time.perf_counter() - start)
        assert report.ok, report.problem

        start = time.perf_counter()
        assert verify(path, [KEY.public_key()], workers=1) == report
        alone.append(time.perf_counter() - start)

        start = time.perf_counter()
        parsed = 0
        for segment in sorted(path.glob("segment-*.audit")):
            for line in segment.read_bytes().split(b"\n")[:-1]:
                json.loads(line.split(b"\t", 3)[3][:-65])
                parsed += 1
        peers.append(time.perf_counter() - start)
    assert report is not None
    mine, theirs = statistics.median(ours), statistics.median(peers)
    single = statistics.median(alone)
    size = sum(file.stat().st_size for file in path.glob("segment-*.audit"))
    rows = [
        [
            f"verify({report.records:,} records, {report.segments} segments, {size / 1e6:.0f} MB)",
            f"{mine:.2f}",
            f"{mine / theirs:.3f}x",
        ],
        ["same, workers=1 (one process)", f"{single:.2f}", f"{single / theirs:.3f}x"],
        ["read + json.loads every payload, verify nothing", f"{theirs:.2f}", "1.000x"],
    ]
    per_million = mine * 1_000_000 / report.records
    goal = Goal("verify: seconds per 1,000,000 records", per_million, 5.0, unit=" s")
    return rows, [goal]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="a smoke run; figures not meaningful")
    args = parser.parse_args(argv)
    append_rounds = 5 if args.quick else 40
    writer_records, writer_rounds = (5_000, 1) if args.quick else (200_000, 3)
    verify_records, verify_rounds = (5_000, 1) if args.quick else (1_000_000, 3)
    print(
        f"Python {platform.python_version()}, {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f}"
    )
    goals: list[Goal] = []
    with tempfile.TemporaryDirectory(prefix="otel-bounded-audit-bench-") as tmp:
        directory = Path(tmp)
        rows, found = bench_append(directory, append_rounds)
        goals += found
        print("\n" + format_table(["append", "us/call", "vs peer"], rows))
        rows, found = bench_writer(directory, writer_records, writer_rounds)
        goals += found
        print("\n" + format_table(["writer", "records/s", "vs peer"], rows))
        rows, found = bench_verify(directory, verify_records, verify_rounds)
        goals += found
        print("\n" + format_table(["verification", "seconds", "vs peer"], rows))
    print("\n" + format_goals(goals))
    return 0 if all(goal.met for goal in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
