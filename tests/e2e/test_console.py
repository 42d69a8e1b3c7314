"""The web console in a real browser (headless Chromium) against a live
`treadle up`: every page loads with no console errors and nothing fetched from
elsewhere, task states change live, bulk retry from the dead letters, a paused
queue holds its tasks, GraphiQL works offline. Screenshots land in
tests/screenshots/ (git-ignored)."""

from __future__ import annotations

import concurrent.futures
import functools
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import httpx
import pytest
from browser_support import Live, screenshot, show, tab, treadle_up
from playwright.sync_api import Page, expect

from treadle.client import SyncClient, TaskSpec

SUBMIT = """mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id } }"""


@pytest.fixture(scope="module")
def live(database_url: str, request: pytest.FixtureRequest) -> Iterator[Live]:
    # The browser starts while treadle up does.
    browser = functools.partial(request.getfixturevalue, "chromium_browser")
    with treadle_up(database_url, browser) as running:
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


def dead(live: Live, task: str) -> None:
    """Wait until the task is DEAD (through GraphQL)."""
    query = "query($id: ID!) { task(id: $id) { state } }"
    deadline = time.monotonic() + 10
    while live.graphql(query, id=task)["task"]["state"] != "DEAD":
        assert time.monotonic() < deadline, f"task {task} did not go DEAD"
        time.sleep(0.05)


def state_of(page: Page) -> Any:
    return expect(page.locator(".fields .state"))


def test_every_page_loads_with_data(page: Page, live: Live) -> None:
    done = [submit(live, name="echo", payload={"hello": i}) for i in range(5)][-1]
    failed = submit(live, name="boom", payload="x", maxAttempts=1)
    live.graphql(
        'mutation { createSchedule(input: {name: "nightly", cron: "0 3 * * *", '
        'task: {name: "noop"}}) { name } }'
    )
    dead(live, failed)
    overview, task, errors = "#/", f"#/task/{failed}", "#/errors"
    pages = {
        "overview": (overview, "table"),
        "tasks": ("#/tasks", f'tr[data-id="{done}"]'),
        "task": (task, ".traceback"),
        "dead": ("#/dead", f'tr[data-id="{failed}"]'),
        "queues": ("#/queues", 'tr[data-id="default"]'),
        "schedules": ("#/schedules", 'tr[data-id="nightly"]'),
        "replicas": ("#/replicas", ".tag.ok"),
        "errors": (errors, "table"),
    }
    for name, (path, ready) in pages.items():
        show(page, path)
        page.locator(ready).first.wait_for(state="attached")
        expect(page.locator("main h1")).not_to_contain_text("Could not load")
        if path == overview:  # figures, charts, the queue table
            expect(page.locator(".figure").first).to_contain_text(re.compile(r"tasks/(s|min)"))
            expect(page.locator(".chart canvas")).to_have_count(3)
            expect(page.locator('tr[data-id="default"]')).to_contain_text("no limit")
        elif path == task:  # the failure, its traceback, the timeline; absolute times in titles
            expect(page.locator(".errors")).to_contain_text("ValueError")
            expect(page.locator(".traceback")).to_contain_text("boom: x")
            expect(page.locator(".timeline")).to_contain_text("attempt 1 failed")
            assert page.locator("time").first.get_attribute("title")
        elif path == errors:  # the failure, with a link to the task
            expect(page.locator("main table")).to_contain_text("ValueError")
            expect(page.locator(f'a[href="#/task/{failed}"]')).to_be_visible()
        screenshot(page, name)
    # Keyboard: the first Tab reaches the skip link, focus is visible there.
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()


def test_failing_task_goes_dead_live_and_succeeds_when_retried(page: Page, live: Live) -> None:
    # `flaky` fails its first run per key and succeeds after: one attempt, so DEAD.
    # Its queue is paused until the page shows the task, so the page sees it change.
    live.graphql('mutation { pauseQueue(name: "default") { paused } }')
    key = uuid.uuid4().hex
    task = submit(live, name="flaky", payload={"key": key, "fail": 1}, maxAttempts=1)
    show(page, f"#/task/{task}")
    state_of(page).to_have_text("QUEUED")
    expect(page.locator("#live")).to_have_text("live")
    live.graphql('mutation { resumeQueue(name: "default") { paused } }')
    # No reload: the subscription moves it on.
    state_of(page).to_have_text("DEAD")
    expect(page.locator(".errors")).to_contain_text("flaky failure 1")

    show(page, "#/dead")
    row = page.locator(f'tr[data-id="{task}"]')
    row.locator("input.pick").check()
    expect(page.locator(".bulk")).to_contain_text("1 task selected")
    page.get_by_role("button", name="Retry selected").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Retry 1 task?")
    screenshot(page, "dead-confirm")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator(".status-line")).to_contain_text("1 task retried")

    show(page, f"#/task/{task}")
    state_of(page).to_have_text("SUCCEEDED")
    expect(page.locator(".timeline")).to_contain_text("succeeded")


def test_every_dead_letter_the_filters_match_is_deleted_in_batches(page: Page, live: Live) -> None:
    doomed = [submit(live, name="permanent", payload=i) for i in range(3)]
    for task in doomed:
        dead(live, task)
    show(page, "#/dead?name=permanent&size=2")  # more than one page
    page.get_by_role("button", name="Delete all matching…").click()
    dialog = page.locator("#confirm-dialog")
    expect(dialog).to_contain_text("Delete all 3 matching tasks?")
    dialog.get_by_role("button", name="Confirm").click()
    expect(page.locator(".status-line")).to_contain_text("3 tasks deleted")
    expect(page.locator("main")).to_contain_text("No tasks match.")
    assert live.graphql('{ tasks(name: "permanent") { nodes { id } } }')["tasks"]["nodes"] == []


def test_a_paused_queue_holds_its_tasks_until_resumed(page: Page, live: Live) -> None:
    show(page, "#/queues")
    row = page.locator('tr[data-id="math"]')
    row.get_by_role("button", name="Pause").click()
    page.locator("#confirm-dialog").get_by_role("button", name="Pause").click()
    expect(row).to_contain_text("paused")

    task = submit(live, name="square", payload={"x": 7})
    show(page, "#/tasks?queue=math&state=QUEUED")
    expect(page.locator(f'tr[data-id="{task}"]')).to_contain_text("QUEUED")
    show(page, "#/")
    expect(page.locator('tr[data-id="math"]')).to_contain_text("paused")
    show(page, f"#/task/{task}")
    state_of(page).to_have_text("QUEUED")
    page.wait_for_timeout(500)  # a running queue would have started it by now
    state_of(page).to_have_text("QUEUED")

    show(page, "#/queues")
    page.locator('tr[data-id="math"]').get_by_role("button", name="Resume").click()
    expect(page.locator('tr[data-id="math"]')).to_contain_text("running")
    show(page, f"#/task/{task}")
    state_of(page).to_have_text("SUCCEEDED")
    expect(page.locator(".two")).to_contain_text('"value": 49')


def test_queue_and_schedule_changes_from_the_pages(page: Page, live: Live) -> None:
    show(page, "#/queues")
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

    show(page, "#/schedules")
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
    page.goto(f"/graphql?q={quote(query)}")
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


def test_tasks_filter_and_page_both_ways(page: Page, live: Live) -> None:
    # A queue of this test's own: other tests' tasks (a schedule firing noop among
    # them) share the live server.
    queue = f"paging-{uuid.uuid4().hex[:8]}"
    made = [submit(live, name="noop", queue=queue, payload=i) for i in range(7)]
    keyed = submit(
        live, name="noop", queue=queue, payload="k", idempotencyKey=f"console-{uuid.uuid4().hex}"
    )
    newest_first = [keyed, *reversed(made)]

    def shown() -> list[str]:
        """The ids listed, once the page shows the view its URL names."""
        view = page.evaluate("window.location.hash")
        page.locator(f'main[data-shown="{view}"]').wait_for()
        return [r.get_attribute("data-id") or "" for r in page.locator("main tbody tr").all()]

    # The filter form writes the URL; three a page.
    show(page, "#/tasks")
    shown()
    form = page.get_by_role("search")
    form.get_by_label("Name").fill("noop")
    form.get_by_label("Per page").select_option("20")
    form.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"#/tasks\?name=noop&size=20$"))
    show(page, f"#/tasks?queue={queue}&name=noop&size=3")
    assert shown() == newest_first[:3]
    page.get_by_role("link", name="Older →").click()
    assert shown() == newest_first[3:6]
    page.get_by_role("link", name="Older →").click()
    assert shown() == newest_first[6:]
    assert page.get_by_role("link", name="Older →").count() == 0
    page.get_by_role("link", name="← Newer").click()
    assert shown() == newest_first[3:6]
    page.get_by_role("link", name="← Newer").click()
    assert shown() == newest_first[:3]

    # The idempotency key, a time range, a task id.
    key = live.graphql("query($id: ID!) { task(id: $id) { idempotencyKey } }", id=keyed)
    show(page, f"#/tasks?key={key['task']['idempotencyKey']}")
    assert shown() == [keyed]
    show(page, f"#/tasks?queue={queue}&since=2999-01-01T00:00:00.000Z")
    expect(page.locator("main")).to_contain_text("No tasks match.")
    show(page, "#/tasks")
    shown()
    page.get_by_role("search").get_by_label("Task id").fill(made[0])
    page.get_by_role("search").get_by_role("button", name="Apply").click()
    expect(page.locator(".fields")).to_contain_text(made[0])


#: The console's page size (PAGE_SIZE in console/js/tasklist.js).
PAGE_SIZE = 50


def test_ten_thousand_tasks_are_listed_a_page_at_a_time(page: Page, live: Live) -> None:
    """A queue holding 10,000 tasks: the list shows one page of them, pages on,
    and the browser never receives (or renders) the rest."""
    queue = f"big-{uuid.uuid4().hex[:8]}"
    spec = TaskSpec(name="noop", queue=queue, delay_seconds=3600)  # they wait: SCHEDULED

    def submit() -> None:
        with SyncClient(live.address) as client:
            for _ in range(10):
                client.submit_many([spec] * 1000)

    # On a thread of its own: Playwright's sync API holds this thread's event loop.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(submit).result(timeout=30)
    received: list[int] = []
    page.on(
        "response",
        lambda r: received.append(len(r.body())) if r.url.endswith("/graphql") else None,
    )
    show(page, f"#/tasks?queue={queue}")
    rows = page.locator("main tbody tr")
    expect(rows).to_have_count(PAGE_SIZE)
    first = rows.first.get_attribute("data-id")
    page.get_by_role("link", name="Older →").click()
    expect(rows).to_have_count(PAGE_SIZE)
    expect(rows.first).not_to_have_attribute("data-id", first or "")
    assert max(received) < 200_000, "a page of tasks, not the queue"
    screenshot(page, "tasks-10000")
