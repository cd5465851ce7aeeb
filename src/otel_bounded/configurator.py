"""Zero-code registration: ``OTEL_PYTHON_CONFIGURATOR=otel_bounded opentelemetry-instrument``.

`BoundedConfigurator` is the ``otel_bounded`` entry point of the
``opentelemetry_configurator`` group. It sets the SDK up exactly as the
distro's configurator does (from the usual ``OTEL_*`` variables, or from
``OTEL_CONFIG_FILE``), then adds a `TraceStore.from_env()` to the global
tracer provider, which `get_trace_store()` returns. With
``OTEL_BOUNDED_HTTP_ENDPOINT=host:port`` (loopback only) it also serves the
store's read-only web view there, which `get_web_view()` returns.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk._configuration import _OTelSDKConfigurator
from opentelemetry.sdk.trace import TracerProvider

from otel_bounded import config, telemetry, web
from otel_bounded.traces import TraceStore

__all__ = ["ENTRY_POINT_NAME", "BoundedConfigurator", "get_trace_store", "get_web_view"]

ENTRY_POINT_NAME = "otel_bounded"
"""Our name in the ``opentelemetry_configurator`` entry point group."""

# opentelemetry-instrumentation's variable; the SDK does not declare it.
_CONFIGURATOR_VARIABLE = "OTEL_PYTHON_CONFIGURATOR"

_lock = threading.Lock()
_configured = False
_store: TraceStore | None = None
_view: web.WebView | None = None


def get_trace_store() -> TraceStore | None:
    """The store `BoundedConfigurator` added to the tracer provider; None when it added none."""
    return _store


def get_web_view() -> web.WebView | None:
    """The view `BoundedConfigurator` serves (``OTEL_BOUNDED_HTTP_ENDPOINT``); None if none."""
    return _view


class BoundedConfigurator(_OTelSDKConfigurator):
    """The SDK's own configurator, plus a `TraceStore` on the tracer provider it builds.

    The store is added only when ``OTEL_PYTHON_CONFIGURATOR=otel_bounded``
    chose this configurator by name: with the variable unset,
    `opentelemetry-instrument` runs whichever configurator it finds first,
    and installing otel-bounded alone must not add a store nobody asked for.

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
    global _store
    chosen = os.environ.get(_CONFIGURATOR_VARIABLE, "").strip()
    if chosen != ENTRY_POINT_NAME:
        telemetry.logger.warning(
            "The otel_bounded configurator set up the OpenTelemetry SDK but added no "
            "TraceStore, because %s=%r does not name it. Set %s=%s to add one, or %s=configurator "
            "to use the distro's configurator.",
            _CONFIGURATOR_VARIABLE,
            chosen,
            _CONFIGURATOR_VARIABLE,
            ENTRY_POINT_NAME,
            _CONFIGURATOR_VARIABLE,
        )
        return
    try:
        provider = trace.get_tracer_provider()
        if not isinstance(provider, TracerProvider):
            # Something set a non-SDK provider first (the SDK refuses to replace
            # it), or a configuration file declared no tracer provider.
            telemetry.logger.warning(
                "otel_bounded added no TraceStore: the global tracer provider is a %s, not the "
                "SDK's TracerProvider, so it cannot take a span processor.",
                type(provider).__name__,
            )
            return
        store = TraceStore.from_env()
        provider.add_span_processor(store)
        _store = store
    except Exception as exc:  # the application starts regardless
        telemetry.logger.warning(
            "otel_bounded added no TraceStore (%s: %s); the application runs without one.",
            type(exc).__name__,
            exc,
            exc_info=True,
        )
        return
    _serve_web_view(store)


def _serve_web_view(store: TraceStore) -> None:
    global _view
    endpoint = config.read(config.HTTP_ENDPOINT)  # an invalid value warns and reads as unset
    if endpoint is None:
        return
    host, _, port = endpoint.rpartition(":")
    try:
        _view = web.serve(store, host=host, port=int(port))
    except Exception as exc:  # say, the port is taken: the application starts regardless
        telemetry.logger.warning(
            "otel_bounded serves no trace view on %s (%s: %s); the store is recording anyway.",
            endpoint,
            type(exc).__name__,
            exc,
        )
        return
    telemetry.logger.info("otel_bounded serves the trace view at %s", _view.url)
