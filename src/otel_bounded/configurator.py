"""Zero-code registration by name: ``OTEL_PYTHON_CONFIGURATOR=otel_bounded``.

Plain ``opentelemetry-instrument`` needs no configurator of ours: the
``otel_bounded`` instrumentor adds the store to whatever the distro set up
(`otel_bounded.instrumentor`). `BoundedConfigurator`, the ``otel_bounded``
entry point of the ``opentelemetry_configurator`` group, is for those who
prefer to name it: it sets the SDK up exactly as the distro's configurator
does (from the usual ``OTEL_*`` variables, or from ``OTEL_CONFIG_FILE``),
then adds a `TraceStore.from_env()` to the global tracer provider, which
`get_trace_store()` returns (and, with ``OTEL_BOUNDED_HTTP_ENDPOINT``, serves
its read-only web view, which `get_web_view()` returns). Both doors share
one registration, so the store is never added twice and the view is served
once.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry.sdk._configuration import _OTelSDKConfigurator

from otel_bounded import registration
from otel_bounded.registration import get_trace_store, get_web_view

__all__ = ["ENTRY_POINT_NAME", "BoundedConfigurator", "get_trace_store", "get_web_view"]

ENTRY_POINT_NAME = "otel_bounded"
"""Our name in the ``opentelemetry_configurator`` entry point group."""

# opentelemetry-instrumentation's variable; the SDK does not declare it.
_CONFIGURATOR_VARIABLE = "OTEL_PYTHON_CONFIGURATOR"

_lock = threading.Lock()
_configured = False


class BoundedConfigurator(_OTelSDKConfigurator):
    """The SDK's own configurator, plus a `TraceStore` on the tracer provider it builds.

    The store is added here only when ``OTEL_PYTHON_CONFIGURATOR=otel_bounded``
    chose this configurator by name: with the variable unset,
    `opentelemetry-instrument` runs whichever configurator it finds first,
    and the instrumentor, which runs next, adds the store unless
    ``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS`` opted out.

    Configuring twice does nothing the second time (the SDK's global
    providers can be set only once). A failure to add the store is logged
    as a WARNING on the ``otel_bounded`` logger and never stops the
    application; a failure of the SDK's own set-up propagates as it would
    with the distro's configurator.
    """

    def _configure(self, **kwargs: Any) -> None:
        global _configured
        with _lock:
            if _configured:
                return
            _configured = True
            super()._configure(**kwargs)  # type: ignore[no-untyped-call]
            _register_trace_store()


def _register_trace_store() -> None:
    chosen = os.environ.get(_CONFIGURATOR_VARIABLE, "").strip()
    if chosen != ENTRY_POINT_NAME:
        # Not asked for by name: the otel_bounded instrumentor adds the store
        # (unless OTEL_PYTHON_DISABLED_INSTRUMENTATIONS opts out, which must hold).
        return
    registration.add_trace_store()
