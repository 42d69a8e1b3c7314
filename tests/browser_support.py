"""The console's browser tests: a live `treadle up` (a subprocess on the test
database, its own schema, the tests' task app) and headless Chromium driven by
Playwright, with every page's console errors and every request off this machine
recorded.

Chromium is Debian's (`/usr/bin/chromium`, installed by scripts/system_tools.sh):
Playwright's own browser downloads are not possible here. Without it the tests
skip, unless TREADLE_TEST_REQUIRE_BROWSER=1 (CI), where they fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
#: Screenshots of each page, written by every run (git-ignored).
SCREENSHOTS = ROOT / "tests" / "screenshots"
LOOPBACK = {"127.0.0.1", "localhost", "[::1]", "::1"}


def chromium() -> str:
    """The system Chromium's path; skips (fails in CI) when there is none."""
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "no chromium (Debian package chromium; scripts/system_tools.sh installs it)"
        if os.environ.get("TREADLE_TEST_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return path


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclasses.dataclass
class Live:
    """A running `treadle up`: its URL, and the environment its commands need."""

    url: str
    env: dict[str, str]
    output: list[str]
    #: The replica's gRPC address.
    address: str

    def graphql(self, query: str, key: str | None = None, **variables: Any) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        reply = httpx.post(
            f"{self.url}/graphql",
            json={"query": query, "variables": variables},
            headers=headers,
            timeout=10,
        )
        body: dict[str, Any] = reply.json()
        assert "errors" not in body, body
        return body["data"]  # type: ignore[no-any-return]

    def treadle(self, *args: str) -> str:
        """Run a `treadle` command against this installation's database; its stdout."""
        done = subprocess.run(
            [sys.executable, "-m", "treadle.cli", *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert done.returncode == 0, done.stderr
        return done.stdout


async def _drop(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    finally:
        await conn.close()


@contextlib.contextmanager
def treadle_up(
    database_url: str, while_starting: Callable[[], object] = lambda: None, **settings: str
) -> Iterator[Live]:
    """`treadle up` on a schema of its own with the tests' task app, until the
    block ends. `while_starting` is called while it starts (to launch the
    browser meanwhile)."""
    schema = f"t_{uuid.uuid4().hex[:16]}"
    http_port, grpc_port = free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TREADLE_")}
    env |= {
        "TREADLE_DATABASE_URL": database_url,
        "TREADLE_DATABASE_SCHEMA": schema,
        "TREADLE_APP": "taskapp",
        "PYTHONPATH": os.pathsep.join([str(ROOT / "tests"), env.get("PYTHONPATH", "")]),
        **settings,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "treadle.cli", "up", "--http-port", str(http_port),
         "--grpc-port", str(grpc_port), "--metrics-port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, text=True,
    )  # fmt: skip
    assert proc.stdout is not None
    output: list[str] = []
    # Read its output on a thread, so that a full pipe never blocks it.
    up = threading.Event()

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            if line.lstrip().startswith("auth "):  # the banner's last line
                up.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        while_starting()
        deadline = time.monotonic() + 30
        while not up.wait(0.1):
            assert proc.poll() is None, "treadle up exited early:\n" + "".join(output)
            assert time.monotonic() < deadline, "treadle up did not start:\n" + "".join(output)
        yield Live(f"http://127.0.0.1:{http_port}", env, output, f"127.0.0.1:{grpc_port}")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(timeout=5)
        proc.stdout.close()
        # On a thread of its own: Playwright's sync API keeps an event loop
        # running on this one while the browser is open.
        dropping = threading.Thread(target=asyncio.run, args=(_drop(database_url, schema),))
        dropping.start()
        dropping.join(timeout=30)


@dataclasses.dataclass
class Watched:
    """What a browser page did that a test checks: console errors, uncaught
    exceptions, and requests that tried to leave this machine (refused)."""

    errors: list[str] = dataclasses.field(default_factory=list)
    offsite: list[str] = dataclasses.field(default_factory=list)

    def clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.offsite == [], self.offsite


def watch(context: Any) -> Watched:
    """Record console errors and page errors of `context`'s pages, and refuse
    (and record) every request to a host that is not loopback."""
    seen = Watched()

    def route(route: Any) -> None:
        host = urlsplit(route.request.url).hostname or ""
        if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
            route.continue_()
        else:
            seen.offsite.append(route.request.url)
            route.abort()

    context.route("**/*", route)

    def on_page(page: Any) -> None:
        page.on(
            "console",
            lambda m: seen.errors.append(f"{page.url}: {m.text}") if m.type == "error" else None,
        )
        page.on("pageerror", lambda e: seen.errors.append(f"{page.url}: {e}"))

    context.on("page", on_page)
    return seen


def screenshot(page: Any, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)


@contextlib.contextmanager
def browser() -> Iterator[Any]:
    """Headless system Chromium under Playwright."""
    from playwright.sync_api import expect, sync_playwright

    path = chromium()
    # Generous waits: the tests share two cores with the rest of the suite.
    expect.set_options(timeout=10_000)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=path, headless=True)
        try:
            yield launched
        finally:
            launched.close()


@contextlib.contextmanager
def tab(browser: Any, base_url: str) -> Iterator[tuple[Any, Watched]]:
    """A fresh browser context (its own session storage) with one page, watched."""
    context = browser.new_context(base_url=base_url, viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    seen = watch(context)
    try:
        yield context.new_page(), seen
    finally:
        context.close()


def show(page: Any, view: str) -> None:
    """Go to a console view (`#/tasks?queue=q`) and wait until <main> shows it
    (not the view before it, still on screen while the new one loads)."""
    page.goto(f"/{view}")
    shown = page.evaluate("window.location.hash") or "#/"
    page.locator(f"main[data-shown={json.dumps(shown)}]").wait_for()
