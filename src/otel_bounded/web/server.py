"""`serve`: the view on a stdlib HTTP server in a daemon thread, loopback unless authenticated."""

from __future__ import annotations

import ipaddress
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from otel_bounded.traces import TraceStore
from otel_bounded.web.app import Auth, WebApp

__all__ = ["LOOPBACK", "WebView", "is_loopback", "serve"]

LOOPBACK = "127.0.0.1"
_LOOPBACK_NAMES = ("localhost",)
_MAX_THREADS_HINT = "a daemon thread per request"


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True
    allow_reuse_address = True


class _Server6(_Server):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    """No access log on stderr: the application's output is its own."""

    def log_message(self, format: str, *args: Any) -> None:
        pass


class WebView:
    """A running view: `url` to open, `port` it listens on, `close()` to stop it."""

    def __init__(self, server: _Server, thread: threading.Thread, url: str) -> None:
        self._server = server
        self._thread = thread
        self.url = url
        self.host = server.server_address[0]
        self.port: int = server.server_address[1]

    def close(self) -> None:
        """Stop serving and release the port; safe to call more than once."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> WebView:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<WebView {self.url}>"


def is_loopback(host: str) -> bool:
    """Whether `host` names only this machine: localhost, 127.0.0.0/8 or ::1."""
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def serve(
    store: TraceStore, host: str = LOOPBACK, port: int = 0, *, auth: Auth | None = None
) -> WebView:
    """Serve the view of `store` on `host`:`port` (0: any free port) from a daemon thread.

    Binding anything but a loopback address without `auth` raises
    ValueError: a flight recorder holds what the application saw, and
    nobody else should read it unasked. Without `auth`, requests must also
    name a loopback host, so a web page that rebinds its own name to
    127.0.0.1 cannot read the view through the browser.
    """
    if not isinstance(host, str) or not host:
        raise ValueError(f"host must be a host name or address, got {host!r}")
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ValueError(f"port must be an integer from 0 to 65535, got {port!r}")
    loopback = is_loopback(host)
    if not loopback and auth is None:
        raise ValueError(
            f"refusing to serve the trace view on {host!r} without auth: bind a loopback "
            "address (127.0.0.1, the default), or pass auth=, a callable that checks the "
            "request's bearer token"
        )
    bind = host.strip("[]")
    server_class = _Server6 if ":" in bind else _Server
    app = WebApp(store, auth=auth)
    server = make_server(bind, port, app, server_class=server_class, handler_class=_QuietHandler)
    bound_port = server.server_address[1]
    shown = f"[{bind}]" if ":" in bind else bind
    if loopback and auth is None:
        app._allowed_hosts = frozenset(
            f"{name}:{bound_port}" for name in ("localhost", "127.0.0.1", "[::1]", shown.lower())
        )
    thread = threading.Thread(
        target=server.serve_forever, name=f"otel-bounded-web:{bound_port}", daemon=True
    )
    thread.start()
    return WebView(server, thread, f"http://{shown}:{bound_port}/")
