"""The web console when the gateway asks for API keys (TREADLE_AUTH=keys): it
asks for a key once, keeps it for the browser session, sends it with every
request and on its WebSocket, and asks again when the key is refused."""

from __future__ import annotations

import functools
import json
from collections.abc import Iterator
from typing import Any

import pytest
from browser_support import Live, screenshot, show, tab, treadle_up
from playwright.sync_api import Page, expect


@pytest.fixture(scope="module")
def live(database_url: str, request: pytest.FixtureRequest) -> Iterator[Live]:
    # The browser starts while treadle up does.
    browser = functools.partial(request.getfixturevalue, "chromium_browser")
    with treadle_up(database_url, browser, TREADLE_AUTH="keys") as running:
        yield running


@pytest.fixture(scope="module")
def token(live: Live) -> str:
    made = live.treadle(
        "keys", "create", "--tenant", "default", "--scope", "admin", "--name", "console", "--json"
    )
    return str(json.loads(made)["token"])


@pytest.fixture
def page(chromium_browser: Any, live: Live) -> Iterator[Page]:
    with tab(chromium_browser, live.url) as (opened, seen):
        yield opened
        seen.clean()


def test_the_console_asks_for_a_key_once_and_uses_it(page: Page, live: Live, token: str) -> None:
    submitted = live.graphql(
        'mutation { submitTask(input: {name: "sleep", payload: {seconds: 1}}) { id } }', key=token
    )
    task = submitted["submitTask"]["id"]

    page.goto("/#/")  # not `show`: the page waits for the key
    dialog = page.locator("#key-dialog")
    expect(dialog).to_be_visible()
    screenshot(page, "key")
    dialog.get_by_label("Key").fill("trdl_not_a_real_key")
    dialog.get_by_role("button", name="Use key").click()
    expect(dialog).to_contain_text("refused")  # asked again, saying why
    dialog.get_by_label("Key").fill(token)
    dialog.get_by_role("button", name="Use key").click()
    expect(page.locator("main h1")).to_have_text("Overview")
    expect(page.locator('tr[data-id="default"]')).to_be_visible()

    # The subscription carries the key too: the running task finishes live.
    show(page, f"#/task/{task}")
    expect(page.locator(".fields .state")).to_have_text("SUCCEEDED", timeout=15_000)

    # Kept for the session: a reload does not ask again.
    page.reload()
    expect(page.locator("main h1")).to_contain_text("Task")
    expect(dialog).to_be_hidden()
    # GraphiQL sends the console's key as well.
    page.goto("/graphql?q=%7B%20queues%20%7B%20name%20%7D%20%7D")
    page.locator(".graphiql-execute-button").click()
    expect(page.locator(".graphiql-response")).to_contain_text('"name": "default"')
