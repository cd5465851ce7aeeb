"""Which sampler decides what a trace store sees: it sees only the spans that are recorded.

A head sampler that drops a trace drops it before any span processor runs,
so a store (and its tail export) never learns of it. With tail export the
sampler should record everything and let the store decide.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

__all__ = ["SamplerInfo", "describe_sampler", "ratio_sampler_note"]

_SAMPLER = "OTEL_TRACES_SAMPLER"
_SAMPLER_ARG = "OTEL_TRACES_SAMPLER_ARG"
_DEFAULT = "parentbased_always_on"
_RATIO_SAMPLERS = ("traceidratio", "parentbased_traceidratio")


@dataclass(frozen=True)
class SamplerInfo:
    """The sampler in effect, where that was learnt, and whether it drops a share of traces."""

    name: str
    argument: str | None
    source: str
    """``tracer provider``, ``environment`` or ``default``."""
    ratio: bool

    def describe(self) -> str:
        shown = self.name if self.argument is None else f"{self.name} ({self.argument})"
        return f"{shown} from the {self.source}"


def describe_sampler(
    environ: Mapping[str, str] | None = None, provider: object | None = None
) -> SamplerInfo:
    """The sampler of `provider` (default: global) if it is the SDK's; else the variables'."""
    provider = trace.get_tracer_provider() if provider is None else provider
    if isinstance(provider, TracerProvider):
        sampler = provider.sampler
        description = sampler.get_description()
        ratio = "TraceIdRatioBased" in description
        return SamplerInfo(description, None, "tracer provider", ratio)
    env = os.environ if environ is None else environ
    name = env.get(_SAMPLER, "").strip().lower()
    if not name:
        return SamplerInfo(_DEFAULT, None, "default", False)
    argument = env.get(_SAMPLER_ARG, "").strip() or None
    return SamplerInfo(name, argument, "environment", name in _RATIO_SAMPLERS)


def ratio_sampler_note() -> str | None:
    """A phrase naming the ratio sampler in effect, or None when every trace is recorded."""
    info = describe_sampler()
    if not info.ratio:
        return None
    return f"the sampler is {info.describe()}"
