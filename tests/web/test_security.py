"""The view's security model: loopback unless authenticated, read-only, escaped, bounded."""

from __future__ import annotations

import http.client
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from opentelemetry.sdk.trace import TracerProvider

from otel_bounded import TraceStore
from otel_bounded.web import WebView, app, serve, wsgi_app
from otel_bounded.web.server import is_loopback
from tests.web.helpers import HOSTILE_NAME, get, request

SECRET_TOKEN = "tok-3f9a1c2b7d6e5f4a"


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.com", "127.0.0.1.nip.io"])
def test_binding_beyond_loopback_without_auth_raises(host: str) -> None:
    with pytest.raises(ValueError, match="without auth"):
        serve(TraceStore(), host=host)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "127.0.0.2", "::1", "[::1]"])
def test_loopback_names(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("port", [-1, 65536, True, "80", 1.5])
def test_invalid_ports_raise(port: Any) -> None:
    with pytest.raises(ValueError, match="port"):
        serve(TraceStore(), port=port)


def test_auth_guards_every_route_and_never_echoes_the_token() -> None:
    seen: list[str] = []

    def auth(token: str) -> bool:
        seen.append(token)
        return token == SECRET_TOKEN

    with serve(TraceStore(), host="0.0.0.0", auth=auth) as running:
        url = f"http://127.0.0.1:{running.port}/"
        for path in ("", "stats", "api/traces", "api/stats", f"api/traces/{'a' * 32}"):
            status, headers, body = get(url + path)
            assert status == 401, path
            assert headers["WWW-Authenticate"].startswith("Bearer")
            status, _, body = get(url + path, Authorization="Bearer wrong-token")
            assert status == 401
            assert b"wrong-token" not in body
        status, _, _ = get(url + "api/stats", Authorization=f"Bearer {SECRET_TOKEN}")
        assert status == 200
        status, _, _ = get(url + "api/stats", Authorization=f"Basic {SECRET_TOKEN}")
        assert status == 401
    assert seen.count(SECRET_TOKEN) == 1


def test_an_auth_callable_that_raises_or_answers_truthy_non_true_denies() -> None:
    def broken(token: str) -> bool:
        raise RuntimeError(f"backend down while checking {token}")

    for auth in (broken, lambda _token: 1, lambda _token: "yes"):
        with serve(TraceStore(), auth=auth) as running:  # type: ignore[arg-type]
            status, _, body = get(running.url + "api/stats", Authorization="Bearer abc")
            assert status == 401
            assert b"abc" not in body


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_read_only_every_other_method_is_405(view: WebView, method: str) -> None:
    status, headers, _ = request(view.url + "api/traces", method)
    assert status == 405
    assert headers["Allow"] == "GET, HEAD"


def test_head_answers_without_a_body(view: WebView) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    connection.request("HEAD", "/api/stats")
    response = connection.getresponse()
    assert response.status == 200
    assert response.read() == b""
    connection.close()


def test_a_rebound_host_name_is_refused(view: WebView) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
    connection.request("GET", "/api/stats", headers={"Host": f"attacker.example:{view.port}"})
    response = connection.getresponse()
    assert response.status == 421
    connection.close()
    for host in (f"localhost:{view.port}", f"127.0.0.1:{view.port}"):
        connection = http.client.HTTPConnection("127.0.0.1", view.port, timeout=10)
        connection.request("GET", "/api/stats", headers={"Host": host})
        assert connection.getresponse().status == 200
        connection.close()


def test_every_page_forbids_scripts_and_framing(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    _, ids = recorded
    for path in ("", "stats", f"traces/{ids['hostile']:032x}", "api/stats", "nothing"):
        _, headers, _ = get(view.url + path)
        policy = headers["Content-Security-Policy"]
        assert "default-src 'none'" in policy
        assert "script-src" not in policy
        assert "frame-ancestors 'none'" in policy
        assert headers["X-Content-Type-Options"] == "nosniff"


def test_pages_carry_no_external_resource(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    _, ids = recorded
    for path in ("", "stats", f"traces/{ids['ok']:032x}"):
        _, _, body = get(view.url + path)
        for reference in re.findall(rb'(?:href|src)="([^"]*)"', body):
            assert reference.startswith(b"/"), reference


hostile_text = st.lists(
    st.sampled_from([*"<>&\"'/=() a\u00e9\u0000\u202e\u2028`", "<script>", "</td>", "<img "]),
    min_size=1,
    max_size=12,
).map("".join)


@settings(max_examples=40, deadline=None)
@given(name=hostile_text, key=hostile_text, value=hostile_text, event=hostile_text)
def test_application_text_never_becomes_markup(name: str, key: str, value: str, event: str) -> None:
    store = TraceStore()
    provider = TracerProvider()
    provider.add_span_processor(store)
    with provider.get_tracer("t").start_as_current_span(name, attributes={key: value}) as span:
        span.add_event(event)
        trace_id = span.get_span_context().trace_id
    application = wsgi_app(store)
    for path in ("/", f"/traces/{trace_id:032x}", "/", "/stats"):
        body = _call(application, path, f"name={name[:10]}" if path == "/" else "")
        # Every tag in the page is one the page itself writes.
        tags = set(re.findall(r"<\s*([a-zA-Z][a-zA-Z0-9]*)", body))
        assert tags <= _OWN_TAGS, tags - _OWN_TAGS
        assert "<script" not in body.lower()


_OWN_TAGS = {
    "html", "head", "meta", "title", "link", "body", "nav", "a", "h1", "h4", "h2", "form",
    "label", "select", "option", "input", "button", "p", "table", "thead", "tbody", "tr", "th",
    "td", "span", "details", "summary", "dl", "dt", "dd", "svg", "rect", "ul", "li", "strong",
}  # fmt: skip


def _call(application: Any, path: str, query: str) -> str:
    captured: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        captured["status"] = status

    environ = {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "HTTP_HOST": "127.0.0.1:1",
    }
    body = b"".join(application(environ, start_response))
    return body.decode()


def test_a_response_over_the_bound_is_refused_with_a_reason(
    monkeypatch: pytest.MonkeyPatch, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    store, ids = recorded
    monkeypatch.setattr(app, "MAX_RESPONSE_BYTES", 200)
    with serve(store) as running:
        status, _, body = get(f"{running.url}api/traces/{ids['ok']:032x}")
        assert status == 507
        assert b"over this view's bound" in body
        assert b"export_to" in body


def test_long_values_are_cut_on_pages_and_the_cut_is_said() -> None:
    store = TraceStore()
    provider = TracerProvider()
    provider.add_span_processor(store)
    with provider.get_tracer("t").start_as_current_span("s", attributes={"big": "x" * 5000}) as s:
        trace_id = s.get_span_context().trace_id
    body = _call(wsgi_app(store), f"/traces/{trace_id:032x}", "")
    assert "x" * 1000 in body
    assert "x" * 1001 not in body
    assert "4,000 more characters not shown" in body


def test_the_hostile_name_is_escaped_in_the_raw_html(
    view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    _, ids = recorded
    _, _, body = get(f"{view.url}traces/{ids['hostile']:032x}")
    assert HOSTILE_NAME.encode() not in body
    assert b"&lt;img src=x onerror=alert(1)&gt;" in body


def test_wsgi_app_refuses_what_is_not_a_store() -> None:
    with pytest.raises(ValueError, match="TraceStore"):
        wsgi_app({})  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="auth"):
        wsgi_app(TraceStore(), auth="secret")  # type: ignore[arg-type]


def test_close_releases_the_port() -> None:
    running = serve(TraceStore())
    port = running.port
    running.close()
    running.close()
    with serve(TraceStore(), port=port) as again:
        assert again.port == port
