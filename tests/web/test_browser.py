"""The HTML view in a real headless Chromium: list, click through to the waterfall, no XSS."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from otel_bounded import TraceStore
from otel_bounded.web import WebView
from tests.servers import REQUIRE_SERVERS_VARIABLE, require_binary
from tests.web.helpers import HOSTILE_NAME

pytestmark = pytest.mark.servers


def _selenium() -> Any:
    try:
        from selenium import webdriver
    except ImportError:
        message = "install selenium (pip install -e '.[dev]') to run the browser tests"
        if os.environ.get(REQUIRE_SERVERS_VARIABLE) == "1":
            pytest.fail(message)
        pytest.skip(message)
    return webdriver


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    webdriver = _selenium()
    chromium = require_binary("chromium", "chromium")
    driver_binary = require_binary("chromedriver", "chromium-driver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    profile: Path = tmp_path_factory.mktemp("chromium-profile")
    for argument in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(executable_path=driver_binary), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def assert_no_alert(driver: Any) -> None:
    from selenium.common.exceptions import NoAlertPresentException

    with pytest.raises(NoAlertPresentException):
        driver.switch_to.alert  # noqa: B018 - raises when no dialog is open


def test_list_shows_the_traces_and_a_click_opens_the_waterfall(
    browser: Any, view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    from selenium.webdriver.common.by import By

    store, ids = recorded
    browser.get(view.url)
    rows = browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")
    assert len(rows) == len(store) == 2
    listed = {row.find_element(By.CSS_SELECTOR, "a").text for row in rows}
    assert listed == {f"{trace_id:032x}" for trace_id in ids.values()}
    assert_no_alert(browser)

    browser.find_element(By.LINK_TEXT, f"{ids['ok']:032x}").click()
    assert browser.current_url == f"{view.url}traces/{ids['ok']:032x}"
    spans = browser.find_elements(By.CSS_SELECTOR, "#waterfall tr.span")
    names = [span.find_element(By.TAG_NAME, "summary").text for span in spans]
    held = store.get(ids["ok"])
    assert names[0] == "GET /orders"
    assert len(names) == len(held)
    # Children in start order, each one indent deeper than the root.
    children = sorted((s for s in held if s.parent is not None), key=lambda s: s.start_time or 0)
    expected = [
        f"{s.name} \u00d7{s.attributes['otel_bounded.composite.count']}"  # a composite's count
        if s.attributes and "otel_bounded.composite.count" in s.attributes
        else s.name
        for s in children
    ]
    assert names[1:] == expected
    assert any("\u00d7" in name for name in names)
    indents = [len(span.find_elements(By.CSS_SELECTOR, "span.indent")) for span in spans]
    assert indents == [0] + [1] * len(children)
    # Details open on a click, with attributes and events as text.
    chat = spans[names.index("llm.chat")]
    chat.find_element(By.TAG_NAME, "summary").click()
    details = chat.text
    assert "gen_ai.request.model" in details
    assert "</td><script>alert(2)</script>" in details
    assert_no_alert(browser)


def test_a_hostile_span_name_is_shown_as_text_and_runs_nothing(
    browser: Any, view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    from selenium.webdriver.common.by import By

    _, ids = recorded
    browser.get(view.url)
    assert HOSTILE_NAME in browser.find_element(By.ID, "traces").text
    assert browser.find_elements(By.CSS_SELECTOR, "#traces img") == []
    assert_no_alert(browser)

    browser.get(f"{view.url}traces/{ids['hostile']:032x}")
    first = browser.find_element(By.CSS_SELECTOR, "#waterfall tr.span summary")
    assert first.text == HOSTILE_NAME
    for summary in browser.find_elements(By.CSS_SELECTOR, "#waterfall summary"):
        summary.click()
    text = browser.find_element(By.ID, "waterfall").text
    assert "boom <b>bold</b>" in text
    assert browser.find_elements(By.CSS_SELECTOR, "img, script, b") == []
    assert_no_alert(browser)
    # Nothing the page may run: the policy forbids every script.
    assert browser.execute_script("return document.scripts.length") == 0


def test_the_filter_form_queries_the_store(
    browser: Any, view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    _, ids = recorded
    browser.get(view.url)
    Select(browser.find_element(By.NAME, "status")).select_by_value("error")
    browser.find_element(By.CSS_SELECTOR, "form button").click()
    assert "status=error" in browser.current_url
    rows = browser.find_elements(By.CSS_SELECTOR, "#traces tbody tr")
    assert [row.find_element(By.CSS_SELECTOR, "a").text for row in rows] == [
        f"{ids['hostile']:032x}"
    ]


def test_stats_page_shows_held_against_caps(
    browser: Any, view: WebView, recorded: tuple[TraceStore, dict[str, int]]
) -> None:
    from selenium.webdriver.common.by import By

    store, _ = recorded
    browser.get(f"{view.url}stats")
    held = browser.find_element(By.ID, "held").text
    stats = store.stats()
    assert f"traces {stats.traces:,} {stats.max_traces:,}" in held
    assert f"spans {stats.spans:,} {stats.max_spans:,}" in held
    assert "max_traces" in browser.find_element(By.ID, "evictions").text
    assert "max_spans_per_trace" in browser.find_element(By.ID, "drops").text
