"""A read-only view of a `TraceStore`: trace list, waterfall and counts, as pages and JSON.

`serve(store)` runs it on loopback from a daemon thread; `wsgi_app(store)`
is the same view to mount in any WSGI server. See docs/web.md.
"""

from otel_bounded.web.app import Auth, WebApp, wsgi_app
from otel_bounded.web.otlp_json import encode_otlp_json
from otel_bounded.web.server import WebView, serve

__all__ = ["Auth", "WebApp", "WebView", "encode_otlp_json", "serve", "wsgi_app"]
