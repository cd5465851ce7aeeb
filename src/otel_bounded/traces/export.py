"""Tail export: the store decides, once a trace's local root ends, whether to ship it.

The decision looks at the whole trace as held (any ERROR span, a slow local
root, a security refusal, or a share of the rest chosen by trace id) and
hands every held span of an exported trace, in one batch, to a downstream
span processor: usually the SDK's ``BatchSpanProcessor`` over an OTLP
exporter, so the exporter's own settings apply. Decisions are remembered
(bounded, least recently decided forgotten first) so that spans ending after
the decision follow it, as in the Collector's ``tail_sampling`` processor.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from otel_bounded import config
from otel_bounded.telemetry import ExportReason
from otel_bounded.traces.retention import ERROR, SECURITY, SLOW

__all__ = ["ExportPolicy", "ExportReason", "TailExport", "downstream_from_env"]

_LOW_64_BITS = (1 << 64) - 1


# The first that applies names the reason, in the order of the retention classes.
_FLAG_REASONS = (
    (SECURITY, ExportReason.SECURITY),
    (ERROR, ExportReason.ERROR),
    (SLOW, ExportReason.SLOW),
)


@dataclass(frozen=True)
class ExportPolicy:
    """Which traces the tail export ships: those with an error, slow, security, plus a ratio.

    The ratio is decided by trace id, as the SDK's ``TraceIdRatioBased``
    sampler does: the same traces on every replica, and a trace a head
    sampler kept at that ratio is one this policy keeps too.
    """

    error: bool = True
    slow: bool = True
    security: bool = True
    ratio: float = 0.0

    def __post_init__(self) -> None:
        for name in ("error", "slow", "security"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        ratio = self.ratio
        if isinstance(ratio, bool) or not isinstance(ratio, int | float) or not 0 <= ratio <= 1:
            raise ValueError(f"ratio must be a number from 0 to 1, got {ratio!r}")

    @classmethod
    def parse(cls, text: str) -> ExportPolicy:
        """``error,slow,security,ratio:0.01``: the form of ``OTEL_BOUNDED_TRACE_EXPORT_WHEN``."""
        conditions, ratio = config.parse_export_when(text)
        return cls(
            error="error" in conditions,
            slow="slow" in conditions,
            security="security" in conditions,
            ratio=ratio,
        )

    @classmethod
    def from_env(cls) -> ExportPolicy:
        return cls.parse(config.read(config.TRACE_EXPORT_WHEN))

    def reason(self, trace_id: int, flags: int) -> str | None:
        """Why a trace with these flags is exported, or None when it is not."""
        mask = (ERROR if self.error else 0) | (SLOW if self.slow else 0)
        mask |= SECURITY if self.security else 0
        if flags & mask:
            for bit, reason in _FLAG_REASONS:
                if flags & mask & bit:
                    return reason
        if self.ratio and (trace_id & _LOW_64_BITS) < self.ratio * (1 << 64):
            return ExportReason.RATIO
        return None


class TailExport:
    """Decisions and counts of one store's tail export; used under the store's lock.

    Handing spans to the downstream processor happens after the lock is
    released (`hand_off`), so no exporter ever runs under it.
    """

    __slots__ = (
        "_decisions",
        "_max_decisions",
        "downstream",
        "exported",
        "failures",
        "not_exported",
        "policy",
    )

    def __init__(
        self, downstream: SpanProcessor | SpanExporter, policy: ExportPolicy, max_decisions: int
    ) -> None:
        if isinstance(downstream, SpanExporter):
            # An exporter may block on the network: never in the application's thread.
            downstream = BatchSpanProcessor(downstream)
        if not isinstance(downstream, SpanProcessor):
            raise ValueError(
                f"export must be a SpanProcessor or a SpanExporter, got {downstream!r}"
            )
        if not isinstance(policy, ExportPolicy):
            raise ValueError(f"export_when must be an ExportPolicy, got {policy!r}")
        self.downstream = downstream
        self.policy = policy
        self._max_decisions = max_decisions
        # trace id -> exported?, least recently decided first.
        self._decisions: OrderedDict[int, bool] = OrderedDict()
        self.exported = dict.fromkeys(ExportReason.ALL, 0)
        self.not_exported = 0
        self.failures = 0

    def decided(self, trace_id: int) -> bool | None:
        """The decision already made for `trace_id`, if one is remembered."""
        return self._decisions.get(trace_id)

    def decide(self, trace_id: int, flags: int) -> bool:
        """Decide a trace whose local root just ended, from its flags; remembered."""
        reason = self.policy.reason(trace_id, flags)
        decisions = self._decisions
        decisions[trace_id] = reason is not None
        if len(decisions) > self._max_decisions:
            decisions.popitem(last=False)
        if reason is None:
            self.not_exported += 1
            return False
        self.exported[reason] += 1
        return True

    def hand_off(self, spans: Sequence[ReadableSpan]) -> None:
        """Give `spans` to the downstream processor, one trace's batch in a row."""
        on_end = self.downstream.on_end
        for span in spans:
            on_end(span)

    def clear(self) -> None:
        self._decisions.clear()


def downstream_from_env() -> SpanProcessor | None:
    """The processor ``OTEL_BOUNDED_TRACE_EXPORT`` names, or None for ``none``."""
    target = config.read(config.TRACE_EXPORT)
    if target == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return BatchSpanProcessor(OTLPSpanExporter())
    if target == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return BatchSpanProcessor(ConsoleSpanExporter())
    return None
