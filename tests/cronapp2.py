"""Cron in code, version 2 of `cronapp`: `cron.hourly` moved to Paris time
with another payload, `cron.dropped` gone, `cron.tick` unchanged."""

from __future__ import annotations

from typing import Any

from treadle.tasks import schedule, task


@task("cron.tick", cron="* * * * * *")
async def tick(payload: Any) -> str:
    return "tick"


@task("cron.report")
async def report(payload: dict[str, int]) -> int:
    return payload["n"]


hourly = schedule(
    "cron.hourly", cron="0 * * * *", task=report, payload={"n": 7}, timezone="Europe/Paris"
)
