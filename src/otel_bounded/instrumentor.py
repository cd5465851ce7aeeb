"""Zero-code registration: ``opentelemetry-instrument python app.py``, nothing else.

`BoundedInstrumentor` is the ``otel_bounded`` entry point of the
``opentelemetry_instrumentor`` group. ``opentelemetry-instrument`` runs every
instrumentor after the configurator (the distro's, a vendor's, or the SDK's
reading ``OTEL_CONFIG_FILE``) has set the SDK up, so it adds
`TraceStore.from_env()` to whatever tracer provider that produced.
``OTEL_PYTHON_DISABLED_INSTRUMENTATIONS=otel_bounded`` opts out, as for any
instrumentor.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

# The module declares itself untyped (a file-level "type: ignore").
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined]
    BaseInstrumentor,
)

from otel_bounded import registration

__all__ = ["ENTRY_POINT_NAME", "BoundedInstrumentor"]

ENTRY_POINT_NAME = "otel_bounded"
"""Our name in the ``opentelemetry_instrumentor`` group, and in its opt-out variable."""


class BoundedInstrumentor(BaseInstrumentor):  # type: ignore[misc]
    """Adds `TraceStore.from_env()` to the tracer provider, unless one is already there.

    ``instrument(tracer_provider=...)`` names the provider; by default it is
    the global one. The store is shared with the ``otel_bounded``
    configurator: whichever runs second adds nothing.
    """

    def instrumentation_dependencies(self) -> Collection[str]:
        return ()  # it instruments no library, so no library version can conflict

    def _instrument(self, **kwargs: Any) -> None:
        registration.add_trace_store(kwargs.get("tracer_provider"))

    def _uninstrument(self, **kwargs: Any) -> None:
        # An SDK tracer provider cannot remove a span processor: the store stays
        # on it, readable, and instrumenting again finds it instead of adding one.
        pass
