"""The ``otel-bounded demo`` workload: a long-lived agent whose in-memory state stays bounded.

Each step is one small trace (an ``agent.step`` root with LLM, tool and
database children) recorded by ``TraceStore.from_env()``. Every step also
checkpoints into one long-running session trace started by a remote
orchestrator, so the per-trace cap is exercised too. Each step presents a
capability token for its tool call, and some steps ask an `ApprovalLedger`
before a guarded action (`otel_bounded.demo_security`). The default step
count outruns the default caps, so the run ends with evictions and drops to
show. Time is simulated (one second per step) so that tokens and approvals
expire and are swept within a run of seconds.

The table is read from the real components: the trace store's `stats()`
and, for tokens and approvals, the metrics their instruments export.

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
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_NAME, OTELResourceDetector, Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor, TracerProvider
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
from otel_bounded.demo_security import (
    ApprovalReport,
    SecurityWorkload,
    TokenReport,
    format_report,
    read_report,
)
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
_SIMULATED_SECONDS_PER_STEP = 1.0

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
    """Spans the SDK ended, counted by a span processor beside the store."""
    elapsed_seconds: float
    stats: TraceStoreStats
    memory: MemoryHeld
    endpoint: str | None
    interrupted: bool
    tokens: TokenReport | None = None
    approvals: ApprovalReport | None = None
    simulated_seconds: float = 0.0


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
        f"(simulated agent time: {_duration(result.simulated_seconds)}, one second per step)",
        "",
        f"trace store{'held':>27}{'cap':>12}",
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
        f"{'bytes held, estimated':<26}{_mebibytes(stats.bytes):>12}  (the store's own "
        f"estimate, made as each span is encoded; max_bytes={stats.max_bytes:,})",
        "",
    ]
    if result.tokens is not None and result.approvals is not None:
        lines += [*format_report(result.tokens, result.approvals), ""]
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
        clock = _SimulatedClock(time.time())
        store = TraceStore.from_env(clock=clock, meter_provider=pipelines.meter_provider)
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
        security = SecurityWorkload(
            clock=clock,
            tracer_provider=pipelines.tracer_provider,
            meter_provider=pipelines.meter_provider,
            rng=random.Random(_SEED + 1),
        )
        cleanup.callback(security.close)
        started = time.perf_counter()
        done, interrupted = _steps(tracer, steps, progress, store, security, clock)
        elapsed = time.perf_counter() - started
        progress.finish(done, interrupted=interrupted)
        stats = store.stats()
        tokens, approvals = read_report(pipelines.report_reader, security)
        # Before the store is cleared: the final metric export reads it.
        pipelines.shutdown()
        if keep:
            memory = MemoryHeld(0, "not measured: measuring clears the store, which --serve shows")
        else:
            view.close()
            memory = _memory_held(store)
    result = DemoResult(
        done,
        pipelines.spans_ended,
        elapsed,
        stats,
        memory,
        endpoint,
        interrupted,
        tokens,
        approvals,
        clock.elapsed,
    )
    return result, (view if keep else None)


class _SimulatedClock:
    """Unix seconds that advance one step at a time, so hours of agent work take seconds."""

    def __init__(self, start: float) -> None:
        self._start = start
        self.elapsed = 0.0

    def __call__(self) -> float:
        return self._start + self.elapsed

    def advance(self, seconds: float) -> None:
        self.elapsed += seconds


def _steps(
    tracer: trace.Tracer,
    steps: int,
    progress: _Progress,
    store: TraceStore,
    security: SecurityWorkload,
    clock: _SimulatedClock,
) -> tuple[int, bool]:
    rng = random.Random(_SEED)
    session = _remote_session()
    done = 0
    try:
        for index in range(steps):
            clock.advance(_SIMULATED_SECONDS_PER_STEP)
            _agent_step(tracer, rng, index, security.step)
            with tracer.start_as_current_span(
                "session.checkpoint",
                context=session,
                attributes={"session.id": "sess-orchestrator-1", "agent.step.index": index},
            ):
                pass
            done = index + 1
            progress.update(done, store)
    except KeyboardInterrupt:
        return done, True
    return done, False


def _agent_step(
    tracer: trace.Tracer, rng: random.Random, index: int, guard: Callable[[int], None]
) -> int:
    """One agent step as one trace: plan, call tools, answer; `guard` checks its tokens and
    approvals inside the step. Returns the spans the step made itself."""
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
        guard(index)
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
        self.tracer_provider = TracerProvider(resource=self._resource, shutdown_on_exit=False)
        self._span_counter = _SpanCounter()
        self.tracer_provider.add_span_processor(self._span_counter)
        # The table's token and approval figures are read from these metrics, offline too.
        self.report_reader = InMemoryMetricReader()
        readers: list[Any] = [self.report_reader]
        self._logger_provider: LoggerProvider | None = None
        self._handler: logging.Handler | None = None
        self._shut_down = False
        if exporting:
            readers.append(self._start_metrics_and_logs())
        self.meter_provider = SdkMeterProvider(
            metric_readers=readers, resource=self._resource, shutdown_on_exit=False
        )

    @property
    def spans_ended(self) -> int:
        return self._span_counter.ended

    def tracer(self, store: TraceStore) -> trace.Tracer:
        self.tracer_provider.add_span_processor(store)
        if self._exporting:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            self.tracer_provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        return self.tracer_provider.get_tracer(_TRACER_NAME, __version__)

    def shutdown(self) -> None:
        """Flush and stop every provider, spans first; later calls do nothing."""
        if self._shut_down:
            return
        self._shut_down = True
        # The store stays readable after its tracer provider is shut down.
        self.tracer_provider.shutdown()
        if self._handler is not None:
            telemetry.logger.removeHandler(self._handler)
        self.meter_provider.shutdown()
        if self._logger_provider is not None:
            self._logger_provider.shutdown()

    def _start_metrics_and_logs(self) -> PeriodicExportingMetricReader:
        """Start the OTLP log pipeline; the OTLP metric reader it returns joins the meter."""
        # Imported here so an offline run never loads gRPC.
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter

        interval = (
            None if os.environ.get("OTEL_METRIC_EXPORT_INTERVAL") else _METRIC_INTERVAL_MILLIS
        )
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(), export_interval_millis=interval
        )
        self._logger_provider = LoggerProvider(resource=self._resource, shutdown_on_exit=False)
        self._logger_provider.add_log_record_processor(BatchLogRecordProcessor(OTLPLogExporter()))
        with warnings.catch_warnings():
            # Deprecated in favour of opentelemetry-instrumentation-logging, which is not a
            # dependency; the SDK's handler still delivers the records.
            warnings.simplefilter("ignore", DeprecationWarning)
            self._handler = LoggingHandler(logger_provider=self._logger_provider)
        telemetry.logger.addHandler(self._handler)
        return reader


class _SpanCounter(SpanProcessor):
    """Counts the spans the SDK ends, independently of the store."""

    def __init__(self) -> None:
        self.ended = 0

    def on_end(self, span: ReadableSpan) -> None:
        self.ended += 1


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


def _duration(seconds: float) -> str:
    hours, rest = divmod(int(seconds), 3600)
    return f"{hours} h {rest // 60:02d} min" if hours else f"{rest // 60} min {rest % 60:02d} s"


def _mebibytes(size: int) -> str:
    return f"{size / (1 << 20):,.1f} MiB"


def _ordered(counts: Mapping[str, int], known: tuple[str, ...]) -> list[str]:
    """Known reasons in a stable order, then any the store added since."""
    return [*known, *sorted(set(counts) - set(known))]
