"""The shop's tasks, declared once: the web service imports this module to
enqueue them, and replicas run them (`treadle scheduler --app shop.tasks`).

- `send_receipt` mails an order's receipt. The mail server of this example
  refuses the first attempt of each receipt (as real ones do under load), so
  every receipt shows the retry policy at work.
- `daily_report` is a cron job declared in code: replicas create (or update)
  its schedule when they start.
"""

from __future__ import annotations

import dataclasses
import os

import asyncpg

from treadle.client import RetryPolicy
from treadle.tasks import TaskContext, task


@dataclasses.dataclass
class Receipt:
    order_id: int
    email: str
    total_cents: int


@dataclasses.dataclass
class ReceiptSent:
    order_id: int
    #: The attempt that got through (the first is always refused here).
    attempt: int


@dataclasses.dataclass
class Report:
    """The daily report's payload: a cron tick sends `Report()`."""

    shop_schema: str = "shop"


class MailServerBusy(Exception):
    """The mail server asked us to come back later: the attempt is retried."""


@task(
    "shop.send_receipt",
    queue="email",
    max_attempts=5,
    retry=RetryPolicy(base_seconds=0.2, factor=2.0, max_seconds=30.0),
    timeout=30,
    # One receipt per order, however often it is enqueued.
    idempotency_key=lambda receipt: f"receipt:{receipt.order_id}",
)
async def send_receipt(payload: Receipt, ctx: TaskContext) -> ReceiptSent:
    if ctx.attempt == 1:
        raise MailServerBusy("421 4.7.0 try again later")
    ctx.logger.info("receipt of order %d sent to %s", payload.order_id, payload.email)
    return ReceiptSent(order_id=payload.order_id, attempt=ctx.attempt)


@task("shop.daily_report", cron="0 6 * * *", timezone="Europe/Paris")
async def daily_report(payload: Report) -> int:
    """How many orders the shop holds (a real report would mail it)."""
    conn = await asyncpg.connect(os.environ["SHOP_DATABASE_URL"])
    try:
        count = await conn.fetchval(f'SELECT count(*) FROM "{payload.shop_schema}".orders')
    finally:
        await conn.close()
    return int(count)
