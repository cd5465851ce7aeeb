"""The ``otel-bounded demo`` workload: a long-lived agent whose recent traces stay bounded.

Each step is one small trace (an ``agent.step`` root with LLM, tool and
database children) recorded by ``TraceStore.from_env()``. Every step also
checkpoints into one long-running session trace started by a remote
orchestrator, so the per-trace cap is exercised too. The default step count
outruns the default caps, so the run ends with evictions and drops to show.

With ``OTEL_EXPORTER_OTLP_ENDPOINT`` set, spans, metrics and logs (the
store's first-eviction WARNING among them) are also exported over OTLP/gRPC;
without it nothing leaves the process.
"""

from __future__ import annotations

import gc
import logging
import os
import random
import threading
import time
import tracemalloc
import warnings
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, TextIO
from urllib.parse import urlsplit, urlunsplit

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk._logs import LoggerProvider, LoggingHandler
from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.trace import (
    NonRecordingSpan,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
)

from otel_bounded import telemetry, web
from otel_bounded.traces import DropReason, TraceEvictionReason, TraceStore, TraceStoreStats
from otel_bounded.version import __version__
from otel_bounded.web import WebView

__all__ = ["DEFAULT_STEPS", "ENDPOINT_VARIABLE", "DemoResult", "MemoryHeld", "run"]

DEFAULT_STEPS = 15_000
"""Enough steps to outrun the default 10,000-trace cap, yet finish in seconds."""

ENDPOINT_VARIABLE = "OTEL_EXPORTER_OTLP_ENDPOINT"
_SERVICE_NAME = "otel-bounded-demo"
_TRACER_NAME = "otel_bounded.demo"
# Faster than the SDK's 60 s default, so a collector shows the store filling during a short run.
_METRIC_INTERVAL_MILLIS = 5_000
_SEED = 20_240_601

_MODELS = ("gpt-4o-mini", "claude-3-5-haiku", "llama-3.1-8b-instruct")
_PROVIDERS = {
    "gpt-4o-mini": "openai",
    "claude-3-5-haiku": "anthropic",
    "llama-3.1-8b-instruct": "vllm",
}
# tool name -> (table it reads, query text); parameters stay placeholders, as in real db spans.
_TOOLS = {
    "lookup_order": ("orders", "SELECT status, eta FROM orders WHERE id = $1"),
    "search_kb": ("kb_articles", "SELECT id, title FROM kb_articles WHERE body @@ $1 LIMIT 5"),
    "get_customer": ("customers", "SELECT name, tier FROM customers WHERE id = $1"),
    "send_email": (None, None),
}
_TOOL_NAMES = tuple(_TOOLS)
_TOOL_ERROR_RATE = 0.02


@dataclass(frozen=True)
class MemoryHeld:
    """Bytes the store held at the end, and how that figure was obtained."""

    bytes: int
    method: str


@dataclass(frozen=True)
class DemoResult:
    """What a demo run did: its steps and spans, the store's final counts and memory."""

    steps: int
    spans_created: int
    elapsed_seconds: float
    stats: TraceStoreStats
    memory: MemoryHeld
    endpoint: str | None
    interrupted: bool


def run(
    steps: int = DEFAULT_STEPS,
    *,
    otlp: bool = False,
    stdout: TextIO,
    stderr: TextIO,
    serve: bool = False,
    port: int = 0,
) -> int:
    """Run the demo, print its table on `stdout`, and return the process exit status.

    Progress and the store's own log lines go to `stderr`. `otlp` demands an
    endpoint; without one the demo refuses rather than silently staying offline.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    endpoint = os.environ.get(ENDPOINT_VARIABLE, "").strip() or None
    if otlp and endpoint is None:
        stderr.write(
            f"otel-bounded demo: --otlp needs {ENDPOINT_VARIABLE}, which is not set. Set it to "
            "your collector's OTLP/gRPC address (e.g. http://localhost:4317), or leave out "
            "--otlp to run offline.\n"
        )
        return 2
    if endpoint is not None:
        stderr.write(
            f"otel-bounded demo: exporting spans, metrics and logs over OTLP/gRPC to "
            f"{_without_credentials(endpoint)}\n"
        )
    else:
        stderr.write(
            f"otel-bounded demo: offline ({ENDPOINT_VARIABLE} is not set), nothing is exported\n"
        )
    try:
        result, view = _run_workload(steps, endpoint=endpoint, stderr=stderr, port=port, keep=serve)
    except _ViewUnavailable as error:
        stderr.write(f"otel-bounded demo: {error}\n")
        return 2
    stdout.write(format_table(result))
    if view is None:
        return 130 if result.interrupted else 0
    stdout.write(f"Serving the trace view at {view.url} until Ctrl-C.\n")
    stdout.flush()
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        view.close()
    return 130 if result.interrupted else 0


class _ViewUnavailable(Exception):
    """The trace view could not start (say, its port is taken)."""


def format_table(result: DemoResult) -> str:
    """The end-of-run report: held vs cap, evictions and drops by reason, memory held."""
    stats = result.stats
    where = (
        f"exported over OTLP to {_without_credentials(result.endpoint)}"
        if result.endpoint is not None
        else "offline, nothing exported"
    )
    done = "interrupted after" if result.interrupted else "ran"
    per_span = result.memory.bytes / stats.spans if stats.spans else 0.0
    lines = [
        "",
        f"otel-bounded demo {done} {result.steps:,} steps: {result.spans_created:,} spans in "
        f"{result.elapsed_seconds:.1f} s, {where}",
        # tracemalloc slows every allocation several times over; speed is the benchmark's job.
        "(timed under tracemalloc; python bench/trace_store.py measures speed)",
        "",
        f"{'':<26}{'held':>12}{'cap':>12}",
        f"{'traces':<26}{stats.traces:>12,}{stats.max_traces:>12,}",
        f"{'spans':<26}{stats.spans:>12,}{stats.max_spans:>12,}",
        f"{'spans per trace (max)':<26}{'':>12}{stats.max_spans_per_trace:>12,}",
        "",
        f"{'evictions by reason':<26}{'traces':>12}",
    ]
    reasons = (
        TraceEvictionReason.MAX_TRACES,
        TraceEvictionReason.MAX_SPANS,
        TraceEvictionReason.TTL,
    )
    for reason in _ordered(stats.evictions_by_reason, reasons):
        lines.append(f"  {reason:<24}{stats.evictions_by_reason.get(reason, 0):>12,}")
    lines += ["", f"{'spans dropped by reason':<26}{'spans':>12}"]
    drops = (DropReason.MAX_SPANS_PER_TRACE, DropReason.MAX_SPANS, DropReason.ERROR)
    for reason in _ordered(stats.drops_by_reason, drops):
        lines.append(f"  {reason:<24}{stats.drops_by_reason.get(reason, 0):>12,}")
    compacted = (
        f" + {stats.spans_compacted:,} merged by compaction" if stats.spans_compacted else ""
    )
    lines += [
        "",
        f"{'spans received':<26}{stats.received_spans:>12,}  = {stats.spans:,} held + "
        f"{stats.evicted_spans:,} in evicted traces + {stats.dropped_spans:,} dropped{compacted}",
        f"{'memory held':<26}{_mebibytes(result.memory.bytes):>12}  ({per_span:,.0f} B per span "
        f"held; {result.memory.method})"
        if not result.memory.method.startswith("not measured")
        else f"{'memory held':<26}{'-':>12}  ({result.memory.method})",
        "",
    ]
    return "\n".join(lines)


# -- the workload ------------------------------------------------------------


def _run_workload(
    steps: int, *, endpoint: str | None, stderr: TextIO, port: int, keep: bool
) -> tuple[DemoResult, WebView | None]:
    """The workload, with the trace view served while it runs (and after, when `keep`)."""
    progress = _Progress(steps, stderr)
    with ExitStack() as cleanup:
        # The store's WARNINGs (invalid variables, first eviction) must not land mid progress bar.
        console = _ProgressAwareHandler(progress, stderr)
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        telemetry.logger.addHandler(console)
        cleanup.callback(telemetry.logger.removeHandler, console)
        if not tracemalloc.is_tracing():
            tracemalloc.start()
            cleanup.callback(tracemalloc.stop)
        pipelines = _Pipelines(exporting=endpoint is not None)
        cleanup.callback(pipelines.shutdown)
        store = TraceStore.from_env(meter_provider=pipelines.meter_provider)
        try:
            view = web.serve(store, port=port)
        except OSError as error:
            raise _ViewUnavailable(
                f"cannot serve the trace view on 127.0.0.1:{port} ({error}); choose another "
                "--port, or 0 for any free one"
            ) from None
        if not keep:
            cleanup.callback(view.close)
        stderr.write(
            f"otel-bounded demo: trace view at {view.url} "
            f"({'until Ctrl-C' if keep else 'while the demo runs; --serve keeps it open'})\n"
        )
        tracer = pipelines.tracer(store)
        started = time.perf_counter()
        done, spans, interrupted = _steps(tracer, steps, progress, store)
        elapsed = time.perf_counter() - started
        progress.finish(done, interrupted=interrupted)
        stats = store.stats()
        # Before the store is cleared: the final metric export reads it.
        pipelines.shutdown()
        if keep:
            memory = MemoryHeld(0, "not measured: measuring clears the store, which --serve shows")
        else:
            view.close()
            memory = _memory_held(store)
    return DemoResult(done, spans, elapsed, stats, memory, endpoint, interrupted), (
        view if keep else None
    )


def _steps(
    tracer: trace.Tracer, steps: int, progress: _Progress, store: TraceStore
) -> tuple[int, int, bool]:
    rng = random.Random(_SEED)
    session = _remote_session()
    spans = 0
    done = 0
    try:
        for index in range(steps):
            spans += _agent_step(tracer, rng, index)
            with tracer.start_as_current_span(
                "session.checkpoint",
                context=session,
                attributes={"session.id": "sess-orchestrator-1", "agent.step.index": index},
            ):
                spans += 1
            done = index + 1
            progress.update(done, store)
    except KeyboardInterrupt:
        return done, spans, True
    return done, spans, False


def _agent_step(tracer: trace.Tracer, rng: random.Random, index: int) -> int:
    """One agent step as one trace: plan with an LLM, call tools, answer; returns spans made."""
    model = _MODELS[index % len(_MODELS)]
    llm_attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _PROVIDERS[model],
        "gen_ai.request.model": model,
        "gen_ai.request.temperature": 0.2,
    }
    spans = 3  # the step and its two LLM calls; tool calls add theirs
    with tracer.start_as_current_span(
        "agent.step",
        attributes={
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.agent.name": "support-agent",
            "agent.step.index": index,
            "user.id": f"user-{rng.randrange(500):03d}",
        },
    ) as step:
        with tracer.start_as_current_span(
            "llm.call", kind=SpanKind.CLIENT, attributes=llm_attributes
        ) as plan:
            plan.set_attributes(_usage(rng, finish="tool_calls"))
        for _ in range(rng.choice((0, 1, 1, 2))):
            spans += _tool_call(tracer, rng)
        with tracer.start_as_current_span(
            "llm.call", kind=SpanKind.CLIENT, attributes=llm_attributes
        ) as answer:
            answer.set_attributes(_usage(rng, finish="stop"))
        step.set_attribute("agent.step.spans", spans)
    return spans


def _tool_call(tracer: trace.Tracer, rng: random.Random) -> int:
    name = rng.choice(_TOOL_NAMES)
    table, query = _TOOLS[name]
    spans = 1
    with tracer.start_as_current_span(
        "tool.call",
        attributes={
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": f"call_{rng.getrandbits(48):012x}",
        },
    ) as tool:
        if table is not None:
            spans += 1
            with tracer.start_as_current_span(
                "db.query",
                kind=SpanKind.CLIENT,
                attributes={
                    "db.system.name": "postgresql",
                    "db.namespace": "support",
                    "db.operation.name": "SELECT",
                    "db.collection.name": table,
                    "db.query.text": query,
                    "server.address": "db.internal",
                    "server.port": 5432,
                },
            ) as db:
                db.set_attribute("db.response.returned_rows", rng.randrange(6))
        if rng.random() < _TOOL_ERROR_RATE:
            tool.set_attribute("error.type", "TimeoutError")
            tool.add_event(
                "exception",
                {"exception.type": "TimeoutError", "exception.message": f"{name} timed out"},
            )
            tool.set_status(Status(StatusCode.ERROR, f"{name} timed out after 10 s"))
    return spans


def _usage(rng: random.Random, *, finish: str) -> dict[str, Any]:
    return {
        "gen_ai.usage.input_tokens": rng.randrange(200, 4_000),
        "gen_ai.usage.output_tokens": rng.randrange(20, 600),
        "gen_ai.response.finish_reasons": (finish,),
    }


def _remote_session() -> Context:
    """A context whose parent is an orchestrator's session span in another process."""
    ids = RandomIdGenerator()
    parent = SpanContext(
        trace_id=ids.generate_trace_id(),
        span_id=ids.generate_span_id(),
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
    )
    return trace.set_span_in_context(NonRecordingSpan(parent))


def _resource() -> Resource:
    # OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES win over the demo's own name.
    named = SERVICE_NAME in OTELResourceDetector().detect().attributes
    return Resource.create({} if named else {SERVICE_NAME: _SERVICE_NAME})


def _memory_held(store: TraceStore) -> MemoryHeld:
    """Bytes freed by clearing the store, as tracemalloc counts them; the store ends empty."""
    if not tracemalloc.is_tracing():
        return MemoryHeld(0, "not measured: tracemalloc was stopped during the run")
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    store.clear()
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    return MemoryHeld(
        max(before - after, 0), "measured with tracemalloc: the bytes freed by clearing the store"
    )


# -- providers -----------------------------------------------------------------


class _Pipelines:
    """The demo's providers; when exporting, OTLP/gRPC pipelines for spans, metrics and logs.

    Exporters read the endpoint, headers, certificates and timeouts from the
    usual ``OTEL_EXPORTER_OTLP_*`` variables, exactly as the SDK does.
    """

    def __init__(self, *, exporting: bool) -> None:
        self._resource = _resource()
        self._exporting = exporting
        # Shut down explicitly (see `shutdown`), not at exit: no provider outlives a run.
        self._tracer_provider = TracerProvider(resource=self._resource, shutdown_on_exit=False)
        self.meter_provider: SdkMeterProvider | None = None
        self._logger_provider: LoggerProvider | None = None
        self._handler: logging.Handler | None = None
        self._shut_down = False
        if exporting:
            self._start_metrics_and_logs()

    def tracer(self, store: TraceStore) -> trace.Tracer:
        self._tracer_provider.add_span_processor(store)
        if self._exporting:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            self._tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return self._tracer_provider.get_tracer(_TRACER_NAME, __version__)

    def shutdown(self) -> None:
        """Flush and stop every provider, spans first; later calls do nothing."""
        if self._shut_down:
            return
        self._shut_down = True
        # The store stays readable after its tracer provider is shut down.
        self._tracer_provider.shutdown()
        if self._handler is not None:
            telemetry.logger.removeHandler(self._handler)
        if self.meter_provider is not None:
            self.meter_provider.shutdown()
        if self._logger_provider is not None:
            self._logger_provider.shutdown()

    def _start_metrics_and_logs(self) -> None:
        # Imported here so an offline run never loads gRPC.
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        interval = (
            None if os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") else _METRIC_INTERVAL_MILLIS
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(), export_interval_millis=interval
        )
        self.meter_provider = SdkMeterProvider(
            metric_readers=[reader], resource=self._resource, shutdown_on_exit=False
        )
        self._logger_provider = LoggerProvider(resource=self._resource, shutdown_on_exit=False)
        self._logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        with warnings.catch_warnings():
            # Deprecated in favour of opentelemetry-instrumentation-logging, which is not a
            # dependency; the SDK's handler still delivers the records.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._handler = LoggingHandler(logger_provider=self._logger_provider)
        telemetry.logger.addHandler(self._handler)


# -- progress ------------------------------------------------------------------


class _Progress:
    """A plain-text progress bar: redrawn in place on a terminal, a few lines otherwise."""

    _WIDTH = 30

    def __init__(self, total: int, stream: TextIO) -> None:
        self._total = total
        self._stream = stream
        self._tty = _isatty(stream)
        # A terminal gets ~200 redraws; a log file gets four lines.
        self._every = max(1, total // (200 if self._tty else 4))
        self._drawn = False

    def update(self, done: int, store: TraceStore) -> None:
        if done % self._every and done != self._total:
            return
        self._show(done, store.stats())

    def interrupt(self) -> None:
        """End a partly drawn bar, so a log line starts on a line of its own."""
        if self._drawn:
            self._stream.write("\n")
            self._drawn = False

    def finish(self, done: int, *, interrupted: bool) -> None:
        if interrupted:
            self.interrupt()
            self._stream.write(f"otel-bounded demo: interrupted after {done:,} steps\n")
        elif self._drawn:
            self._stream.write("\n")
            self._drawn = False
        self._stream.flush()

    def _show(self, done: int, stats: TraceStoreStats) -> None:
        fraction = done / self._total
        text = (
            f"{done:>{len(f'{self._total:,}')},}/{self._total:,} steps {fraction:>4.0%}  "
            f"holding {stats.traces:,}/{stats.max_traces:,} traces, "
            f"{stats.evicted_traces:,} evicted, {stats.dropped_spans:,} spans dropped"
        )
        if self._tty:
            filled = int(self._WIDTH * fraction)
            bar = "#" * filled + "." * (self._WIDTH - filled)
            self._stream.write(f"\r[{bar}] {text}")
            self._drawn = True
        else:
            self._stream.write(f"otel-bounded demo: {text}\n")
        self._stream.flush()


class _ProgressAwareHandler(logging.StreamHandler):  # type: ignore[type-arg]
    def __init__(self, progress: _Progress, stream: TextIO) -> None:
        super().__init__(stream)
        self._progress = progress

    def emit(self, record: logging.LogRecord) -> None:
        self._progress.interrupt()
        super().emit(record)


def _isatty(stream: TextIO) -> bool:
    isatty: Callable[[], bool] | None = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def _without_credentials(endpoint: str) -> str:
    """The endpoint as safe to print: any user:password@ part is removed."""
    parts = urlsplit(endpoint)
    if parts.hostname is None or "@" not in parts.netloc:
        return endpoint
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=host))


def _mebibytes(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _ordered(counts: Mapping[str, int], known: tuple[str, ...]) -> list[str]:
    """Known reasons in a stable order, then any the store added since."""
    return [*known, *sorted(set(counts) - set(known))]
