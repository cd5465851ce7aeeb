"""Instructions and cache misses a span costs with TraceStore, counted by callgrind.

Wall-clock ratios move with the machine's load; instruction counts do not. This
script runs the agent-like workload of `bench/trace_store.py` (a root and 9
children with 2-3 attributes) under `valgrind --tool=callgrind --cache-sim=yes`
twice per variant (a warm-up alone, then warm-up plus the measured traces) and
reports the difference per span, so start-up and warm-up cancel out.

    python bench/instructions.py            # needs valgrind on PATH
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile

WARM_TRACES = 300
MEASURED_TRACES = 300
SPANS_PER_TRACE = 10
EVENTS = ("Ir", "Dr", "Dw", "I1mr", "D1mr", "D1mw", "ILmr", "DLmr", "DLmw")


def workload(variant: str, traces: int) -> None:
    """Run in the child: the workload through a provider with `variant`'s processor."""
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult

    import _baseline_store
    from otel_bounded import TraceStore
    from otel_bounded.traces import ExportPolicy

    class NoOpExporter:
        def export(self, spans: object) -> SpanExportResult:
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30_000) -> bool:
            return True

    provider = TracerProvider()
    if variant == "store":
        provider.add_span_processor(TraceStore(max_traces=200))
    elif variant == "store-before":
        provider.add_span_processor(_baseline_store.TraceStore(max_traces=200))
    elif variant == "store-export":
        provider.add_span_processor(
            TraceStore(
                max_traces=200,
                export=BatchSpanProcessor(NoOpExporter()),  # type: ignore[arg-type]
                export_when=ExportPolicy(error=True, slow=False, security=False, ratio=0.01),
            )
        )
    elif variant == "batch":
        provider.add_span_processor(BatchSpanProcessor(NoOpExporter()))  # type: ignore[arg-type]
    elif variant == "store-before-summaries":
        from trace_store import StoreBeforeSummaries

        provider.add_span_processor(StoreBeforeSummaries(max_traces=200))
    tracer = provider.get_tracer("bench.instructions")

    def run(count: int) -> None:
        for index in range(count):
            with tracer.start_as_current_span("agent.step", attributes={"step": index}):
                for _ in range(SPANS_PER_TRACE - 1):
                    with tracer.start_as_current_span(
                        "tool.call", attributes={"tool.name": "search", "n": 1, "ok": True}
                    ):
                        pass

    run(WARM_TRACES)  # fills the 200-trace store, so the measured part evicts
    run(traces)


def counted(variant: str, traces: int) -> dict[str, int]:
    with tempfile.TemporaryDirectory() as directory:
        out = os.path.join(directory, "callgrind.out")
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--cache-sim=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                __file__,
                "--child",
                variant,
                str(traces),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
    match = re.search(r"Collected : ([\d ]+)", result.stderr)
    if match is None:
        raise RuntimeError(f"no callgrind totals in:\n{result.stderr[-2000:]}")
    return dict(zip(EVENTS, map(int, match.group(1).split()), strict=True))


def per_span(variant: str) -> dict[str, float]:
    base = counted(variant, 0)
    full = counted(variant, MEASURED_TRACES)
    spans = MEASURED_TRACES * SPANS_PER_TRACE
    return {event: (full[event] - base[event]) / spans for event in EVENTS}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("VARIANT", "TRACES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        workload(args.child[0], int(args.child[1]))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind is not installed (Debian package valgrind)", file=sys.stderr)
        return 2
    none, store = per_span("none"), per_span("store")
    before = per_span("store-before-summaries")
    print(f"per span, {MEASURED_TRACES * SPANS_PER_TRACE} spans, store full and evicting")
    print(f"{'event':<8}{'no processor':>16}{'TraceStore':>16}{'ratio':>10}")
    for event in ("Ir", "I1mr", "D1mr", "D1mw"):
        ratio = store[event] / none[event] if none[event] else float("nan")
        print(f"{event:<8}{none[event]:>16,.0f}{store[event]:>16,.0f}{ratio:>9.3f}x")
    print("Ir: instructions; I1mr, D1mr, D1mw: L1 instruction, data-read, data-write misses")
    print()
    print("what the store adds to a span (less the span with no processor)")
    print(f"{'event':<8}{'before summaries':>18}{'with summaries':>16}{'ratio':>10}")
    for event in ("Ir", "I1mr", "D1mr", "D1mw"):
        old, new = before[event] - none[event], store[event] - none[event]
        ratio = new / old if old else float("nan")
        print(f"{event:<8}{old:>18,.0f}{new:>16,.0f}{ratio:>9.3f}x")
    print()
    retention_before = per_span("store-before")
    export, batch = per_span("store-export"), per_span("batch")
    print("instructions per span (Ir), including the SDK's own work and any worker thread")
    for label, figure, peer, peer_label, goal in (
        ("TraceStore", store, retention_before, "TraceStore before retention", 1.05),
        ("tail export (errors + 1%)", export, batch, "BatchSpanProcessor(no-op)", 1.0),
    ):
        ratio = figure["Ir"] / peer["Ir"]
        verdict = "PASS" if ratio <= goal else "NOT MET"
        print(
            f"  {label}: {figure['Ir']:,.0f} vs {peer_label}: {peer['Ir']:,.0f} "
            f"= {ratio:.3f}x (goal <= {goal:.2f}x: {verdict})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
