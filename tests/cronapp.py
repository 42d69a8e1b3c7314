"""Cron in code, version 1 (`cronapp2` is the next version of the same app)."""

from __future__ import annotations

from typing import Any

from treadle.tasks import schedule, task


@task("cron.tick", cron="* * * * * *")
async def tick(payload: Any) -> str:
    return "tick"


@task("cron.report")
async def report(payload: dict[str, int]) -> int:
    return payload["n"]


hourly = schedule("cron.hourly", cron="0 * * * *", task=report, payload={"n": 1})
dropped = schedule("cron.dropped", cron="0 0 * * *", task=report, payload={"n": 2})
