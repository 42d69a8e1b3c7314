"""Cron schedules declared in code (`cronapp`, then its next version
`cronapp2`), synced when replicas start: created, updated, left alone when
unchanged, reported and pruned only when asked, API-made ones never touched,
and many replicas starting at once agree."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import asyncpg
import pytest
from support import running_replica, until

from treadle.client import Client, TaskSpec, TaskState


async def stored(database_url: str, schema: str) -> dict[str, dict[str, Any]]:
    """Each schedule row by name (read behind the replicas' backs)."""
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            f"SELECT name, cron, timezone, task::text AS task, code_owned, next_fire_at, "
            f'updated_at FROM "{schema}".schedules'
        )
    finally:
        await conn.close()
    return {r["name"]: dict(r) for r in rows}


async def test_code_schedules_follow_the_code(
    database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with running_replica(database_url, schema, app="cronapp") as replica:
        first = await stored(database_url, schema)
        assert set(first) == {"cron.tick", "cron.hourly", "cron.dropped"}
        assert all(row["code_owned"] for row in first.values())
        assert '"n": 1' in first["cron.hourly"]["task"]
        # A schedule made through the API (the operator's): never the code's.
        async with Client(replica.address) as client:
            await client.create_schedule(
                "ops.manual", "0 0 * * *", TaskSpec(name="cron.report", payload_json='{"n": 9}')
            )

            # The code's tick fires like any schedule.
            async def ticked() -> bool:
                page = await client.list(state=TaskState.SUCCEEDED)
                return any(t.name == "cron.tick" for t in page.tasks)

            await until(ticked)

    # The same code again: nothing changes (not even updated_at).
    async with running_replica(database_url, schema, app="cronapp"):
        again = await stored(database_url, schema)
    for name in ("cron.hourly", "cron.dropped"):  # (cron.tick's row moves as it fires)
        assert again[name]["updated_at"] == first[name]["updated_at"]
        assert again[name]["next_fire_at"] == first[name]["next_fire_at"]

    # The next version: hourly changed, dropped gone (reported, kept without the flag).
    with caplog.at_level(logging.WARNING, logger="treadle.scheduler.schedules"):
        async with running_replica(database_url, schema, app="cronapp2"):
            changed = await stored(database_url, schema)
    hourly = changed["cron.hourly"]
    assert (hourly["timezone"], '"n": 7' in hourly["task"]) == ("Europe/Paris", True)
    assert "cron.dropped" in changed, "kept: pruning needs the flag"
    warned = [r.getMessage() for r in caplog.records if "no longer declared" in r.getMessage()]
    assert warned and "cron.dropped" in warned[0] and "--prune-schedules" in warned[0]
    assert changed["ops.manual"]["code_owned"] is False

    # With the flag: deleted. The API's schedule stays whatever the code says.
    async with running_replica(database_url, schema, app="cronapp2", prune_schedules=True):
        pruned = await stored(database_url, schema)
    assert set(pruned) == {"cron.tick", "cron.hourly", "ops.manual"}
    assert '"n": 9' in pruned["ops.manual"]["task"]


async def test_an_api_schedule_of_the_same_name_is_left_alone(
    database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with (
        running_replica(database_url, schema, app="cronapp") as replica,
        Client(replica.address) as client,
    ):
        await client.delete_schedule("cron.hourly")
        await client.create_schedule(
            "cron.hourly", "30 * * * *", TaskSpec(name="cron.report", payload_json='{"n": 3}')
        )
    with caplog.at_level(logging.WARNING, logger="treadle.scheduler.schedules"):
        async with running_replica(database_url, schema, app="cronapp2", prune_schedules=True):
            rows = await stored(database_url, schema)
    assert (rows["cron.hourly"]["cron"], rows["cron.hourly"]["code_owned"]) == ("30 * * * *", False)
    assert any("made through the API" in r.getMessage() for r in caplog.records)


async def test_replicas_starting_together_agree(database_url: str, schema: str) -> None:
    async with contextlib.AsyncExitStack() as stack:
        # The first migrates the schema; then three start at once, each syncing.
        await stack.enter_async_context(running_replica(database_url, schema, app="cronapp"))
        await asyncio.gather(
            *(
                stack.enter_async_context(running_replica(database_url, schema, app="cronapp2"))
                for _ in range(3)
            )
        )
        rows = await stored(database_url, schema)
    assert set(rows) == {"cron.tick", "cron.hourly", "cron.dropped"}
    assert rows["cron.hourly"]["timezone"] == "Europe/Paris"
