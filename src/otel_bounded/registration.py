"""The one place zero-code set-up adds a `TraceStore` to a tracer provider, at most once.

Both doors come here: the ``otel_bounded`` instrumentor, which
``opentelemetry-instrument`` runs after whichever configurator (the distro's,
a vendor's, ``OTEL_CONFIG_FILE``) built the SDK, and the ``otel_bounded``
configurator, for those who name it. Whichever comes second finds the store
already on the provider and adds nothing, so every span reaches one store once.
"""

from __future__ import annotations

import os
import threading

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from otel_bounded import config, telemetry, web
from otel_bounded.traces import TraceStore

__all__ = ["add_trace_store", "get_trace_store", "get_web_view"]

_lock = threading.Lock()
_store: TraceStore | None = None
_view: web.WebView | None = None


def get_trace_store() -> TraceStore | None:
    """The store zero-code set-up added to the tracer provider; None when it added none."""
    return _store


def get_web_view() -> web.WebView | None:
    """The view zero-code set-up serves (``OTEL_BOUNDED_HTTP_ENDPOINT``); None if none."""
    return _view


def add_trace_store(tracer_provider: object | None = None) -> TraceStore | None:
    """Add `TraceStore.from_env()` to `tracer_provider` (the global one when None), once.

    Returns the store the provider holds: the one added now, or the one found
    there already. Never raises: a provider that cannot take a span processor
    (not the SDK's) or a store that cannot be built is a WARNING on the
    ``otel_bounded`` logger, and the application runs without a store.
    """
    global _store
    with _lock:
        try:
            provider = tracer_provider or trace.get_tracer_provider()
            if not isinstance(provider, TracerProvider):
                _report_foreign_provider(provider)
                return None
            existing = _store_on(provider)
            if existing is not None:
                _store = existing
                return existing
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
            return None
        _serve_web_view(store)
        return store


def _serve_web_view(store: TraceStore) -> None:
    """Serve the store's view where ``OTEL_BOUNDED_HTTP_ENDPOINT`` says (loopback only), once."""
    global _view
    endpoint = config.read(config.HTTP_ENDPOINT)  # an invalid value warns and reads as unset
    if endpoint is None or _view is not None:
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


def _store_on(provider: TracerProvider) -> TraceStore | None:
    """The `TraceStore` already on `provider`: ours, or one the application added itself."""
    if _store is not None and _store in _span_processors(provider):
        return _store
    return next((p for p in _span_processors(provider) if isinstance(p, TraceStore)), None)


def _span_processors(provider: TracerProvider) -> tuple[object, ...]:
    # The SDK offers no public list of a provider's processors; without one, none is found.
    active = getattr(provider, "_active_span_processor", None)
    processors = getattr(active, "_span_processors", ())
    return tuple(processors) if isinstance(processors, tuple | list) else ()


def _report_foreign_provider(provider: object) -> None:
    if os.environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return  # the SDK was switched off on purpose: no provider is the expected outcome
    # Something set a non-SDK provider first (the SDK refuses to replace it), a
    # configuration file declared no tracer provider, or nothing set one up.
    telemetry.logger.warning(
        "otel_bounded added no TraceStore: the global tracer provider is a %s, not the "
        "SDK's TracerProvider, so it cannot take a span processor.",
        type(provider).__name__,
    )
