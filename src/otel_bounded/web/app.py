"""The view as a WSGI application: read-only routes over one `TraceStore`.

Pages: ``/``, ``/traces/<trace_id>``, ``/stats``. JSON: ``/api/traces``,
``/api/traces/<trace_id>`` (OTLP/HTTP JSON), ``/api/stats``, ``/api/dump``
(every held trace, or those since a time or with a status, as one OTLP/HTTP
JSON body: `TraceStore.dump`). Only GET and
HEAD are answered (anything else is 405), every response is bounded in size
and carries a Content-Security-Policy that allows no script, and with `auth`
set every request must carry a bearer token `auth` accepts.
"""

from __future__ import annotations

import hmac
import json
import math
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qs

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from otel_bounded.errors import TraceNotFound
from otel_bounded.traces import TraceStore
from otel_bounded.web import pages
from otel_bounded.web.otlp_json import encode_otlp_json

__all__ = ["MAX_LIMIT", "MAX_RESPONSE_BYTES", "Auth", "WebApp", "wsgi_app"]

Auth = Callable[[str], bool]
"""Takes a request's bearer token; True lets the request through."""

MAX_LIMIT = 1_000
"""Most traces one list or ``/api/traces`` request returns."""
MAX_RESPONSE_BYTES = 16 * 1024 * 1024
"""Largest response body; a larger one is refused with 507 and a message saying why."""
_DEFAULT_LIMIT = 100
_MAX_QUERY_STRING = 4_096
_TRACE_PATH = re.compile(r"/(api/)?traces/([0-9a-f]{32})")
_FILTERS = ("status", "name", "min_duration_ms", "max_duration_ms", "limit")
_NUMBERS = ("min_duration_ms", "max_duration_ms", "since", "until")
_JSON_FILTERS = (*_FILTERS, "since", "until")

_SECURITY_HEADERS = [
    (
        "Content-Security-Policy",
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
    ("X-Frame-Options", "DENY"),
]

StartResponse = Callable[[str, list[tuple[str, str]]], Any]


class _HTTPError(Exception):
    def __init__(self, status: str, message: str, headers: list[tuple[str, str]] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or []


class WebApp:
    """The WSGI callable; `allowed_hosts`, when given, is every Host header accepted."""

    def __init__(
        self,
        store: TraceStore,
        *,
        auth: Auth | None = None,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        if not isinstance(store, TraceStore):
            raise ValueError(f"store must be a TraceStore, got {store!r}")
        if auth is not None and not callable(auth):
            raise ValueError("auth must be a callable taking the request's bearer token")
        self._store = store
        self._auth = auth
        self._allowed_hosts = allowed_hosts

    def __call__(
        self, environ: Mapping[str, Any], start_response: StartResponse
    ) -> Iterable[bytes]:
        path = str(environ.get("PATH_INFO") or "/")
        wants_json = path.startswith("/api/")
        try:
            self._admit(environ)
            status, content_type, body = self._route(path, str(environ.get("QUERY_STRING", "")))
        except _HTTPError as error:
            status, headers = error.status, error.headers
            if wants_json:
                content_type, body = _json({"error": error.message})
            else:
                content_type = "text/html; charset=utf-8"
                body = pages.error_page(error.status, error.message).encode()
            return _respond(start_response, environ, status, content_type, body, headers)
        return _respond(start_response, environ, status, content_type, body, [])

    # -- checks ----------------------------------------------------------

    def _admit(self, environ: Mapping[str, Any]) -> None:
        if self._allowed_hosts is not None:
            host = str(environ.get("HTTP_HOST", "")).lower()
            if host not in self._allowed_hosts:
                # A page elsewhere that rebinds its own name to 127.0.0.1 sends its own Host.
                raise _HTTPError("421 Misdirected Request", "this view answers loopback names only")
        method = environ.get("REQUEST_METHOD", "GET")
        if method not in ("GET", "HEAD"):
            raise _HTTPError(
                "405 Method Not Allowed", "this view is read-only", [("Allow", "GET, HEAD")]
            )
        if self._auth is not None and not self._authorized(environ):
            raise _HTTPError(
                "401 Unauthorized",
                "a valid bearer token is required (Authorization: Bearer <token>)",
                [("WWW-Authenticate", 'Bearer realm="otel-bounded"')],
            )

    def _authorized(self, environ: Mapping[str, Any]) -> bool:
        header = str(environ.get("HTTP_AUTHORIZATION", ""))
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if not hmac.compare_digest(scheme.lower().encode(), b"bearer") or not token:
            return False
        try:
            return self._auth(token) is True  # type: ignore[misc]
        except Exception:  # fail closed; the token is never logged or echoed
            return False

    # -- routes ----------------------------------------------------------

    def _route(self, path: str, query_string: str) -> tuple[str, str, bytes]:
        store = self._store
        if path == "/static/style.css":
            return "200 OK", "text/css; charset=utf-8", pages.STYLE.encode()
        if path == "/":
            filters = _filters(query_string, _FILTERS)
            try:
                summaries = store.query(**_query_arguments(filters))
            except ValueError as error:
                return (
                    "400 Bad Request",
                    _HTML,
                    pages.trace_list_page([], filters, str(error)).encode(),
                )
            return "200 OK", _HTML, pages.trace_list_page(summaries, filters).encode()
        if path == "/stats":
            return "200 OK", _HTML, pages.stats_page(store.stats()).encode()
        if path == "/api/stats":
            return ("200 OK", *_json(store.stats().as_dict()))
        if path == "/api/traces":
            filters = _filters(query_string, _JSON_FILTERS)
            try:
                summaries = store.query(**_query_arguments(filters))
            except ValueError as error:
                raise _HTTPError("400 Bad Request", str(error)) from None
            return ("200 OK", *_json({"traces": [s.as_dict() for s in summaries]}))
        match = _TRACE_PATH.fullmatch(path)
        if match is not None:
            trace_id = match.group(2)
            try:
                summary = store.summary(trace_id)
                spans = store.get(trace_id)
            except (TraceNotFound, ValueError) as error:
                raise _HTTPError("404 Not Found", _not_found(trace_id, error)) from None
            if match.group(1):
                return ("200 OK", *_json(encode_otlp_json(spans)))
            return "200 OK", _HTML, pages.trace_page(summary, spans).encode()
        if path == "/api/dump":
            return ("200 OK", *_json(_dump(store, _filters(query_string, _DUMP_FILTERS))))
        if path.startswith(("/traces/", "/api/traces/")):
            raise _HTTPError("404 Not Found", "a trace id is 32 lowercase hex digits")
        raise _HTTPError("404 Not Found", "no such page: see / , /stats, /api/traces or /api/dump")


_HTML = "text/html; charset=utf-8"


def _not_found(trace_id: str, error: Exception) -> str:
    if isinstance(error, TraceNotFound):
        return str(error)
    return f"trace {trace_id} is not held"


def _filters(query_string: str, names: tuple[str, ...]) -> dict[str, str]:
    if len(query_string) > _MAX_QUERY_STRING:
        raise _HTTPError("414 URI Too Long", f"the query string is over {_MAX_QUERY_STRING} bytes")
    try:
        parsed = parse_qs(query_string, max_num_fields=32, errors="strict")
    except ValueError:
        raise _HTTPError("400 Bad Request", "the query string is malformed") from None
    filters = {}
    for name, values in parsed.items():
        if name not in names:
            raise _HTTPError(
                "400 Bad Request", f"unknown parameter {name!r}; known: {', '.join(names)}"
            )
        if len(values) > 1:
            raise _HTTPError("400 Bad Request", f"{name} given more than once")
        filters[name] = values[0].strip()
    return filters


def _query_arguments(filters: Mapping[str, str]) -> dict[str, Any]:
    """`TraceStore.query` arguments from text filters; ValueError for a bad one."""
    arguments: dict[str, Any] = {"limit": _DEFAULT_LIMIT}
    for name, text in filters.items():
        if not text:
            continue
        if name in _NUMBERS:
            try:
                number = float(text)
            except ValueError:
                raise ValueError(f"{name} must be a number, got {text!r}") from None
            if not math.isfinite(number):
                raise ValueError(f"{name} must be a finite number, got {text!r}")
            arguments[name] = number
        elif name == "limit":
            if not text.isdecimal() or not 0 < int(text) <= MAX_LIMIT:
                raise ValueError(f"limit must be an integer from 1 to {MAX_LIMIT}, got {text!r}")
            arguments[name] = int(text)
        else:
            arguments[name] = text
    return arguments


_DUMP_FILTERS = ("since", "status")
_STATUS_CODES = {"error": StatusCode.ERROR, "ok": StatusCode.OK, "unset": StatusCode.UNSET}


def _dump(store: TraceStore, filters: Mapping[str, str]) -> dict[str, Any]:
    """`TraceStore.dump` as one OTLP/HTTP JSON body: the flight recorder's snapshot."""
    since: float | None = None
    if filters.get("since"):
        try:
            since = float(filters["since"])
        except ValueError:
            raise _HTTPError("400 Bad Request", "since must be Unix seconds") from None
        if not math.isfinite(since):
            raise _HTTPError("400 Bad Request", "since must be a finite number")
    status = None
    if filters.get("status"):
        status = _STATUS_CODES.get(filters["status"])
        if status is None:
            raise _HTTPError("400 Bad Request", "status must be error, ok or unset")
    collected = InMemorySpanExporter()
    store.dump(collected, since=since, status=status)
    return encode_otlp_json(collected.get_finished_spans())


def _json(data: Any) -> tuple[str, bytes]:
    # allow_nan=False: a NaN would make the body invalid JSON; protobuf's mapping spells them.
    return "application/json", json.dumps(data, allow_nan=False).encode()


def _respond(
    start_response: StartResponse,
    environ: Mapping[str, Any],
    status: str,
    content_type: str,
    body: bytes,
    headers: list[tuple[str, str]],
) -> list[bytes]:
    if len(body) > MAX_RESPONSE_BYTES:
        status = "507 Insufficient Storage"
        message = (
            f"the response would be {len(body):,} bytes, over this view's bound of "
            f"{MAX_RESPONSE_BYTES:,}; TraceStore.export_to() sends a trace of any size"
        )
        if content_type == "application/json":
            body = json.dumps({"error": message}).encode()
        else:
            body = pages.error_page(status, message).encode()
    start_response(
        status,
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            *_SECURITY_HEADERS,
            *headers,
        ],
    )
    return [] if environ.get("REQUEST_METHOD") == "HEAD" else [body]


def wsgi_app(store: TraceStore, *, auth: Auth | None = None) -> WebApp:
    """The view as a WSGI application, to mount in Flask, Django or any WSGI server.

    It answers whoever reaches it: where others can reach your server, pass
    `auth`, a callable that takes the request's bearer token and returns True
    to let the request through.
    """
    return WebApp(store, auth=auth)
