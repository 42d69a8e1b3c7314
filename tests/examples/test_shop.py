"""The worked example (examples/shop) end to end: its web service enqueues a
typed task in the order's own transaction, a replica running `shop.tasks`
retries it to success, a refused order leaves neither order nor task, the
cron job declared in code is a schedule, and `mypy --strict` passes on it."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import asyncpg
import httpx
import pytest
from support import running_replica

from treadle.client import Client
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.supervisor import Replica

SHOP = Path(__file__).resolve().parents[2] / "examples" / "shop"


@pytest.fixture(scope="module", autouse=True)
def shop_on_path() -> Iterator[None]:
    """`shop` imports as it does when run from its folder."""
    sys.path.insert(0, str(SHOP))
    yield
    sys.path.remove(str(SHOP))


@pytest.fixture
async def replica(
    database_url: str, schema: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Replica]:
    monkeypatch.setenv("SHOP_DATABASE_URL", database_url)
    async with running_replica(database_url, schema, app="shop.tasks") as started_replica:
        yield started_replica


@pytest.fixture
async def shop(database_url: str, schema: str, replica: Replica) -> AsyncIterator[str]:
    from shop.web import create_app

    shop_schema = f"{schema}_shop"
    app = create_app(database_url, replica.address, shop_schema=shop_schema, treadle_schema=schema)
    server = Gateway(GatewaySettings(http_port=0), app=app)
    await server.start()
    try:
        yield server.url
    finally:
        await server.stop()
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{shop_schema}" CASCADE')
        finally:
            await conn.close()


async def test_an_order_and_its_receipt(shop: str, replica: Replica, schema: str) -> None:
    from shop.tasks import Report, daily_report

    async with httpx.AsyncClient(base_url=shop, timeout=30) as http:
        placed = await http.post("/orders", json={"email": "ada@example.com", "item": "teapot"})
        assert placed.status_code == 201, placed.text
        order = placed.json()
        # The first attempt is refused by the example's mail server: retried.
        receipt = await http.get(f"/orders/{order['order']}/receipt", params={"timeout": 20})
        assert receipt.json() == {"order": order["order"], "attempt": 2}

        refused = await http.post("/orders", json={"email": "bo@example.com", "item": "samovar"})
        assert refused.status_code == 409
        bad = await http.post(
            "/orders", json={"email": "bo@example.com", "item": "cup", "quantity": 0}
        )
        assert bad.status_code == 400

    async with Client(replica.address) as client:
        receipts = (await client.list(name="shop.send_receipt")).tasks
        assert [t.id for t in receipts] == [order["receipt_task"]], (
            "the refused order's rolled back"
        )
        (done,) = receipts
        assert (done.queue, done.attempts, done.max_attempts) == ("email", 2, 5)
        assert done.idempotency_key == f"receipt:{order['order']}"

        schedules = {s.name: s for s in await client.list_schedules()}
        nightly = schedules["shop.daily_report"]
        assert (nightly.cron, nightly.timezone) == ("0 6 * * *", "Europe/Paris")

        handle = await daily_report.defer(Report(shop_schema=f"{schema}_shop"), client=client)
        assert await handle.wait(timeout=10) == 1, "one order: the refused one rolled back"


def test_the_example_passes_mypy_strict() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--no-error-summary"],
        cwd=SHOP,
        capture_output=True,
        text=True,
        timeout=55,
    )
    assert done.returncode == 0, done.stdout + done.stderr
