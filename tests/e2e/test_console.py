"""The web console in a real browser (headless Chromium) against a live
`treadle up`: every page loads with no console errors and nothing fetched from
elsewhere, task states change live, bulk retry from the dead letters, a paused
queue holds its tasks, GraphiQL works offline. Screenshots land in
tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from browser_support import Live, screenshot, tab, treadle_up
from playwright.sync_api import Page, expect

SUBMIT = """mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }"""


@pytest.fixture(scope="module")
def live(database_url: str) -> Iterator[Live]:
    with treadle_up(database_url) as running:
        yield running


@pytest.fixture
def page(chromium_browser: Any, live: Live) -> Iterator[Page]:
    """A fresh tab on the console; the test fails if the page logged an error
    or tried to fetch anything from another host."""
    with tab(chromium_browser, live.url) as (opened, seen):
        yield opened
        seen.clean()


def submit(live: Live, **task: Any) -> str:
    return str(live.graphql(SUBMIT, input=task)["submitTask"]["id"])


def state_of(page: Page) -> Any:
    return expect(page.locator(".fields .state"))


def test_every_page_loads_with_data(page: Page, live: Live) -> None:
    done = submit(live, name="echo", payload={"hello": "console"})
    failed = submit(live, name="boom", payload="x", maxAttempts=1)
    live.graphql(
        'mutation { createSchedule(input: {name: "nightly", cron: "0 3 * * *", '
        'task: {name: "noop"}}) { name } }'
    )
    pages = {
        "overview": ("#/", "table"),
        "tasks": ("#/tasks", f'tr[data-id="{done}"]'),
        "task": (f"#/task/{failed}", ".traceback"),
        "dead": ("#/dead", f'tr[data-id="{failed}"]'),
        "queues": ("#/queues", 'tr[data-id="default"]'),
        "schedules": ("#/schedules", 'tr[data-id="nightly"]'),
        "replicas": ("#/replicas", ".tag.ok"),
        "errors": ("#/errors", "table"),
    }
    for name, (path, ready) in pages.items():
        page.goto(f"/{path}")
        page.locator(ready).first.wait_for(state="attached")
        expect(page.locator("main h1")).not_to_contain_text("Could not load")
        screenshot(page, name)
    # The overview's figures, charts and queue table.
    page.goto("/#/")
    expect(page.locator(".figure").first).to_contain_text("tasks/s")
    expect(page.locator(".chart canvas")).to_have_count(3)
    expect(page.locator('tr[data-id="default"]')).to_contain_text("no limit")
    # The task page: the failure, its traceback, the timeline; times absolute in a title.
    page.goto(f"/#/task/{failed}")
    expect(page.locator(".errors")).to_contain_text("ValueError")
    expect(page.locator(".traceback")).to_contain_text("boom: x")
    expect(page.locator(".timeline")).to_contain_text("attempt 1 failed")
    assert page.locator("time").first.get_attribute("title")
    # The error patterns name the failure and link to an example.
    page.goto("/#/errors")
    expect(page.locator("main table")).to_contain_text("ValueError")
    expect(page.locator(f'a[href="#/task/{failed}"]')).to_be_visible()
    # Keyboard: the first Tab reaches the skip link, focus is visible there.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()


def test_failing_task_goes_dead_live_and_succeeds_when_retried(page: Page, live: Live) -> None:
    # `flaky` fails its first run per key and succeeds after: one attempt, so DEAD.
    key = uuid.uuid4().hex
    task = submit(
        live, name="flaky", payload={"key": key, "fail": 1}, maxAttempts=1, delaySeconds=1.5
    )
    page.goto(f"/#/task/{task}")
    state_of(page).to_have_text("SCHEDULED")
    expect(page.locator("#live")).to_have_text("live")
    # No reload: the subscription moves it on.
    state_of(page).to_have_text("DEAD")
    expect(page.locator(".errors")).to_contain_text("flaky failure 1")

    page.goto("/#/dead")
    row = page.locator(f'tr[data-id="{task}"]')
    row.locator("input.pick").check()
    expect(page.locator(".bulk")).to_contain_text("1 task selected")
    page.get_by_role("button", name="Retry selected").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Retry 1 task?")
    screenshot(page, "dead-confirm")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator(".status-line")).to_contain_text("1 task retried")

    page.goto(f"/#/task/{task}")
    state_of(page).to_have_text("SUCCEEDED")
    expect(page.locator(".timeline")).to_contain_text("succeeded")


def test_a_paused_queue_holds_its_tasks_until_resumed(page: Page, live: Live) -> None:
    page.goto("/#/queues")
    row = page.locator('tr[data-id="math"]')
    row.get_by_role("button", name="Pause").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused")

    task = submit(live, name="square", payload={"x": 7})
    page.goto("/#/tasks?queue=math&state=QUEUED")
    expect(page.locator(f'tr[data-id="{task}"]')).to_contain_text("QUEUED")
    page.goto("/#/")
    expect(page.locator('tr[data-id="math"]')).to_contain_text("paused")
    page.goto(f"/#/task/{task}")
    state_of(page).to_have_text("QUEUED")
    page.wait_for_timeout(500)  # a running queue would have started it by now
    state_of(page).to_have_text("QUEUED")

    page.goto("/#/queues")
    page.locator('tr[data-id="math"]').get_by_role("button", name="Resume").click()
    expect(page.locator('tr[data-id="math"]')).to_contain_text("running")
    page.goto(f"/#/task/{task}")
    state_of(page).to_have_text("SUCCEEDED")
    expect(page.locator(".two")).to_contain_text('"value": 49')


def test_queue_and_schedule_changes_from_the_pages(page: Page, live: Live) -> None:
    page.goto("/#/queues")
    page.locator('tr[data-id="default"]').get_by_role("button", name="Edit").click()
    form = page.get_by_role("form", name="Edit queue default")
    form.get_by_label("Max concurrent").fill("3")
    form.get_by_label("Time limit (s)").fill("90")
    form.get_by_label("Base (s)").fill("2")
    form.get_by_role("button", name="Save").click()
    row = page.locator('tr[data-id="default"]')
    expect(row).to_contain_text("1.5 min")
    expect(row).to_contain_text("2 s \u00d7 2")
    assert live.graphql('{ queue(name: "default") { maxConcurrent } }')["queue"] == {
        "maxConcurrent": 3
    }

    page.goto("/#/schedules")
    form = page.get_by_role("form", name="Create a schedule")
    form.get_by_label("Name", exact=True).fill("every-minute")
    form.get_by_label("Cron").fill("* * * * *")
    form.get_by_label("Time zone").fill("UTC")
    form.get_by_label("Task name").fill("noop")
    form.get_by_role("button", name="Create").click()
    row = page.locator('tr[data-id="every-minute"]')
    expect(row.locator("time").first).to_have_text(re.compile(r"^in \d+ seconds?$|^now$"))
    row.get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused")
    row.get_by_role("button", name="Delete").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)


def test_graphiql_runs_a_query_with_no_network(page: Page, live: Live) -> None:
    """Every request to another host is refused (and recorded: none may be tried)."""
    query = "{ overview { totalQueues activeReplicas } }"
    page.goto(f"/graphql?q={httpx.QueryParams({'q': query})['q']}")
    expect(page.locator(".graphiql-container")).to_be_visible()
    page.locator(".graphiql-execute-button").click()
    expect(page.locator(".graphiql-response")).to_contain_text('"activeReplicas": 1')
    screenshot(page, "graphiql")


def test_pages_forbid_other_origins(live: Live) -> None:
    for path in ("/", "/graphql"):
        reply = httpx.get(live.url + path, headers={"accept": "text/html"})
        assert reply.status_code == 200
        policy = reply.headers["content-security-policy"]
        assert "script-src 'self';" in policy and "default-src 'none'" in policy
        assert "unpkg" not in reply.text and "cdn" not in reply.text.lower()
    asset = httpx.get(live.url + "/console/vendor/graphiql.min.js")
    assert asset.status_code == 200 and asset.headers["content-type"].startswith(
        ("text/javascript", "application/javascript")
    )
