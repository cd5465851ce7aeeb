"""An application with no OpenTelemetry set-up of its own: run it under opentelemetry-instrument.

It makes `--count` traces of two spans each through the global tracer
provider, then prints one JSON line: the global tracer provider's class, its
resource's ``service.name``, the classes of its span processors,
`get_trace_store().stats()` (null without a store), and, when zero-code set-up
serves the trace view, what its ``/api/traces`` lists. `--configure` calls the
configurator itself, as `opentelemetry-instrument` does (a second time, if it
already ran); `--foreign-provider` first installs a tracer provider that is
not the SDK's, so that the store cannot be added. (Option names must not
abbreviate any of opentelemetry-instrument's own, which it would take.)
"""

from __future__ import annotations

import argparse
import json
import logging
import urllib.request
from collections.abc import Mapping
from dataclasses import fields
from typing import Any

from opentelemetry import trace

from otel_bounded.configurator import BoundedConfigurator, get_trace_store, get_web_view


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--count", type=int, default=8)
    parser.add_argument("--configure", action="store_true")
    parser.add_argument("--foreign-provider", action="store_true")
    args = parser.parse_args()

    if args.foreign_provider:
        trace.set_tracer_provider(trace.NoOpTracerProvider())
    before = get_trace_store()
    if args.configure:
        BoundedConfigurator().configure()
    store = get_trace_store()

    tracer = trace.get_tracer("zero_code_app")
    for index in range(args.count):
        with (
            tracer.start_as_current_span(f"request-{index}"),
            tracer.start_as_current_span("db.query"),
        ):
            pass

    provider = trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)
    # The SDK has no public list of a provider's processors: read its private one.
    processors = getattr(getattr(provider, "_active_span_processor", None), "_span_processors", ())
    report: dict[str, Any] = {
        "tracer_provider": type(provider).__name__,
        "service_name": None if resource is None else resource.attributes.get("service.name"),
        "span_processors": [type(processor).__name__ for processor in processors],
        "root_handlers": [type(handler).__module__ for handler in logging.getLogger().handlers],
        "store_kept": store is before,
        "store": None,
    }
    if store is not None:
        stats = store.stats()
        report["store"] = {
            field.name: dict(value) if isinstance(value, Mapping) else value
            for field in fields(stats)
            for value in [getattr(stats, field.name)]
        }
    view = get_web_view()
    report["view"] = None
    if view is not None:
        with urllib.request.urlopen(f"{view.url}api/traces?limit=1000", timeout=10) as response:
            listed = json.load(response)["traces"]
        report["view"] = {"host": view.host, "traces": len(listed)}
    print(json.dumps(report))


if __name__ == "__main__":
    main()
