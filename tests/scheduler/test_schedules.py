"""Cron schedules: the pure rules with a fixed clock, then firing on real
replicas and PostgreSQL (exactly once per tick across replicas, missed ticks,
pause and resume, bad input)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from support import make_settings

from treadle.client import Client, InvalidArgument, NotFound, Schedule, SyncClient, TaskSpec
from treadle.common.errors import AlreadyExists
from treadle.common.tasks import RetryPolicy
from treadle.scheduler import schedules
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

PARIS = ZoneInfo("Europe/Paris")


# -- rules, no database -----------------------------------------------------------


def at(*args: int, tz: Any = UTC) -> datetime:
    return datetime(*args, tzinfo=tz)  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cron", "after", "expected"),
    [
        ("*/15 * * * *", at(2025, 1, 1, 10, 7, 30), at(2025, 1, 1, 10, 15)),
        ("0 9 * * MON-FRI", at(2025, 1, 3, 9, 0), at(2025, 1, 6, 9, 0)),  # Friday -> Monday
        ("* * * * * *", at(2025, 1, 1, 0, 0, 0), at(2025, 1, 1, 0, 0, 1)),  # strictly after
        ("*/10 * * * * *", at(2025, 1, 1, 0, 0, 5, 500), at(2025, 1, 1, 0, 0, 10)),
        ("@daily", at(2025, 1, 1, 0, 0, 0), at(2025, 1, 2)),
        ("@HOURLY", at(2025, 1, 1, 0, 30), at(2025, 1, 1, 1)),
        ("0 0 L * *", at(2025, 2, 3), at(2025, 2, 28)),
    ],
)
def test_next_tick(cron: str, after: datetime, expected: datetime) -> None:
    assert schedules.next_tick(cron, ZoneInfo("UTC"), after) == expected


def test_time_zone_and_daylight_saving() -> None:
    # 09:00 in Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert schedules.next_tick("0 9 * * *", PARIS, at(2025, 1, 10, 12)) == at(2025, 1, 11, 8)
    assert schedules.next_tick("0 9 * * *", PARIS, at(2025, 7, 10, 12)) == at(2025, 7, 11, 7)
    # 02:30 does not exist on 2025-03-30 in Paris: that day it fires at 03:00.
    assert schedules.next_tick("30 2 * * *", PARIS, at(2025, 3, 29, 12)) == at(2025, 3, 30, 1)
    # 02:30 happens twice on 2025-10-26: a fixed time fires once, at the first.
    first = schedules.next_tick("30 2 * * *", PARIS, at(2025, 10, 25, 12))
    assert first == at(2025, 10, 26, 0, 30)
    second_pass = datetime(2025, 10, 26, 2, 15, tzinfo=PARIS, fold=1)
    assert schedules.next_tick("30 2 * * *", PARIS, second_pass) == at(2025, 10, 27, 1, 30)


@pytest.mark.parametrize(
    ("cron", "message"),
    [
        ("", "must not be empty"),
        ("not a cron", "invalid cron expression 'not a cron'"),
        ("61 * * * *", "Bad minute"),
        ("* * * *", "Wrong number of fields"),
        ("0 0 31 2 *", "Bad day-of-month"),
        ("x" * 201, "longer than 200"),
    ],
)
def test_bad_cron_expressions(cron: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        schedules.check_cron(cron, ZoneInfo("UTC"), at(2025, 1, 1))


@pytest.mark.parametrize("name", ["", "with space", "semi;colon", "é", "x" * 201])
def test_bad_schedule_names(name: str) -> None:
    with pytest.raises(InvalidArgument):
        schedules.check_name(name)


@pytest.mark.parametrize("name", ["Mars/Olympus", "../etc/passwd", "/etc/localtime"])
def test_unknown_time_zones(name: str) -> None:
    with pytest.raises(InvalidArgument, match="unknown time zone"):
        schedules.zone(name)


def test_missed_ticks_fire_once_then_from_now() -> None:
    now = at(2025, 1, 1, 12, 0, 30)
    due = Schedule(
        name="minutely",
        cron="* * * * *",
        task=TaskSpec(name="noop", queue="default"),
        next_fire_at=now - timedelta(hours=1, seconds=30),
    )
    fire = schedules.plan("default", due, now)
    assert fire.tick == at(2025, 1, 1, 11, 0)
    assert fire.next_fire_at == at(2025, 1, 1, 12, 1)
    assert fire.idempotency_key == "cron:minutely:2025-01-01T11:00:00+00:00"
    # Fired on time, the next tick is the one right after.
    every_second = Schedule(
        name="s", cron="* * * * * *", task=due.task, next_fire_at=at(2025, 1, 1, 12, 0, 30)
    )
    assert schedules.plan(
        "default", every_second, now + timedelta(milliseconds=200)
    ).next_fire_at == at(2025, 1, 1, 12, 0, 31)


# -- on real replicas ---------------------------------------------------------------


@pytest.fixture
async def conn(database_url: str, schema: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection whose search_path is the test's schema."""
    connection = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    yield connection
    await connection.close()


async def cron_tasks(conn: asyncpg.Connection, name: str) -> list[asyncpg.Record]:
    rows: list[asyncpg.Record] = await conn.fetch(
        "SELECT * FROM tasks WHERE idempotency_key LIKE $1 ORDER BY run_at",
        f"cron:{name}:%",
    )
    return rows


async def until(check: Any, timeout: float = 5.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(interval)


async def test_every_second_fires_each_tick_exactly_once_across_three_replicas(
    database_url: str, schema: str, replica: Replica, client: Client, conn: asyncpg.Connection
) -> None:
    others = [Replica(make_settings(schema), load_app("taskapp"), database_url) for _ in range(2)]
    for other in others:
        await other.start()
    replicas = [replica, *others]
    try:
        created = await client.create_schedule("every-second", "*/1 * * * * *", TaskSpec("noop"))
        assert created.next_fire_at is not None
        assert created.next_fire_at > datetime.now(UTC) - timedelta(seconds=1)

        async def ten_ticks() -> bool:
            return len(await cron_tasks(conn, "every-second")) >= 10

        await until(ten_ticks, timeout=15, interval=0.2)
        await client.pause_schedule("every-second")
    finally:
        for other in others:
            await other.stop()

    rows = await cron_tasks(conn, "every-second")
    ticks = [r["run_at"] for r in rows]
    assert ticks[0] == created.next_fire_at
    # One task per tick: no duplicates, no gaps.
    assert ticks == [ticks[0] + timedelta(seconds=i) for i in range(len(ticks))]
    assert [r["idempotency_key"] for r in rows] == [
        f"cron:every-second:{t.isoformat()}" for t in ticks
    ]
    # No replica ever fired a tick that another had fired (the idempotency key
    # is only the second line of defence).
    fired = [r.parts.schedules.fired_total for r in replicas if r.parts.schedules is not None]
    assert sum(fired) == len(ticks), fired
    assert all(
        r.parts.schedules is not None and r.parts.schedules.duplicates_total == 0 for r in replicas
    )
    row = await conn.fetchrow("SELECT * FROM schedules WHERE name = 'every-second'")
    assert row["last_fired_at"] == ticks[-1]
    assert row["paused"]


async def test_missed_ticks_fire_once_when_a_replica_starts(
    database_url: str, schema: str, conn: asyncpg.Connection
) -> None:
    first = Replica(make_settings(schema), load_app("taskapp"), database_url)
    await first.start()
    try:
        async with Client(first.address) as client:
            await client.create_schedule("minutely", "* * * * *", TaskSpec("noop"))
    finally:
        await first.stop()
    # Everything was down for an hour: sixty ticks were missed.
    missed = await conn.fetchval(
        "UPDATE schedules SET next_fire_at = date_trunc('minute', now()) - interval '1 hour' "
        "RETURNING next_fire_at"
    )
    started = await conn.fetchval("SELECT now()")

    second = Replica(make_settings(schema), load_app("taskapp"), database_url)
    await second.start()
    try:

        async def fired() -> list[asyncpg.Record]:
            return await cron_tasks(conn, "minutely")

        await until(fired)
        assert second.parts.schedules is not None
        assert await second.parts.schedules.fire_due() == 0, "nothing else is due"
    finally:
        await second.stop()
    rows = [r for r in await cron_tasks(conn, "minutely") if r["run_at"] < started]
    assert [r["run_at"] for r in rows] == [missed]
    row = await conn.fetchrow("SELECT * FROM schedules WHERE name = 'minutely'")
    assert row["last_fired_at"] == missed
    assert started < row["next_fire_at"] <= started + timedelta(minutes=1)


async def test_bad_input_is_refused_and_stores_nothing(
    client: Client, conn: asyncpg.Connection
) -> None:
    noop = TaskSpec("noop")
    cases: list[tuple[dict[str, Any], str]] = [
        ({"cron": "every day"}, "invalid cron expression 'every day'"),
        ({"cron": "0 25 * * *"}, "Bad hour"),
        ({"timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"task": TaskSpec("missing")}, "no handler is registered for task 'missing'"),
        ({"task": TaskSpec("noop", payload_json="{nope")}, "payload is not valid JSON"),
        ({"task": TaskSpec("noop", priority=1000)}, "priority 1000 is out of range"),
        ({"name": "has space"}, "may hold only letters"),
        ({"name": ""}, "must not be empty"),
    ]
    for override, message in cases:
        args: dict[str, Any] = {"name": "nightly", "cron": "0 3 * * *", "task": noop, **override}
        with pytest.raises(InvalidArgument, match=message):
            await client.create_schedule(**args)
    assert await conn.fetchval("SELECT count(*) FROM schedules") == 0

    await client.create_schedule("nightly", "0 3 * * *", noop, timezone="Europe/Paris")
    with pytest.raises(AlreadyExists, match="schedule 'nightly' already exists"):
        await client.create_schedule("nightly", "*/5 * * * *", TaskSpec("echo"))
    for call in (client.pause_schedule, client.resume_schedule, client.delete_schedule):
        with pytest.raises(NotFound, match="schedule 'absent' not found"):
            await call("absent")
    rows = await conn.fetch("SELECT name, cron, timezone FROM schedules")
    assert [tuple(r) for r in rows] == [("nightly", "0 3 * * *", "Europe/Paris")]
    assert await conn.fetchval("SELECT count(*) FROM tasks") == 0


async def test_create_list_and_delete(client: Client, conn: asyncpg.Connection) -> None:
    spec = TaskSpec(
        "square",
        payload_json='{"x": 3}',
        priority=7,
        max_attempts=2,
        run_at=datetime.now(UTC),  # ignored: each tick sets its own
        idempotency_key="ignored",
    )
    created = await client.create_schedule("squares", "0 9 * * 1", spec, timezone="Europe/Paris")
    assert created.name == "squares" and created.cron == "0 9 * * 1"
    assert created.timezone == "Europe/Paris" and not created.paused
    assert created.task.name == "square" and created.task.queue == "math"
    assert json.loads(created.task.payload_json) == {"x": 3}
    assert created.task.priority == 7 and created.task.max_attempts == 2
    assert created.task.run_at is None and created.task.idempotency_key is None
    assert created.next_fire_at is not None and created.next_fire_at > datetime.now(UTC)
    assert created.next_fire_at.astimezone(PARIS).strftime("%a %H:%M") == "Mon 09:00"
    assert created.last_fired_at is None and created.created_at is not None

    await client.create_schedule("a-first", "@hourly", TaskSpec("noop"))
    assert [s.name for s in await client.list_schedules()] == ["a-first", "squares"]
    assert (await client.list_schedules())[1] == created
    await client.delete_schedule("squares")
    assert [s.name for s in await client.list_schedules()] == ["a-first"]


async def test_sync_client_schedule_calls(replica: Replica) -> None:
    def use_sync() -> list[Schedule]:
        with SyncClient(replica.address) as sync:
            created = sync.create_schedule("s", "@weekly", TaskSpec("noop"), timezone="Asia/Tokyo")
            assert sync.pause_schedule("s").paused
            assert not sync.resume_schedule("s").paused
            assert sync.list_schedules()[0].name == created.name
            sync.delete_schedule("s")
            return sync.list_schedules()

    assert await asyncio.to_thread(use_sync) == []


async def test_fired_task_takes_the_template_then_the_queue_defaults(
    replica: Replica, client: Client, conn: asyncpg.Connection
) -> None:
    await conn.execute(
        "INSERT INTO queues (name, max_attempts, timeout_seconds, backoff_base) "
        "VALUES ('reports', 3, 7.5, 0.25)"
    )
    await client.create_schedule(
        "report",
        "0 0 1 1 *",
        TaskSpec("echo", payload_json='{"a": 1}', queue="reports", priority=5),
    )
    explicit = TaskSpec(
        "echo", queue="brand-new", max_attempts=2, timeout_seconds=4.0, retry=RetryPolicy(0.5, 3, 9)
    )
    await client.create_schedule("fresh", "0 0 1 1 *", explicit)
    tick = await conn.fetchval(
        "UPDATE schedules SET next_fire_at = date_trunc('second', now()) - interval '1 minute' "
        "RETURNING next_fire_at"
    )
    assert replica.parts.schedules is not None
    # The replica's own cron loop may fire them first (its commit can land
    # after this call returns): either way, each fires once.
    await replica.parts.schedules.fire_due()

    async def both_fired() -> dict[str, list[asyncpg.Record]] | None:
        rows = {name: await cron_tasks(conn, name) for name in ("report", "fresh")}
        return rows if all(rows.values()) else None

    fired = await until(both_fired)
    assert [len(rows) for rows in fired.values()] == [1, 1]

    report, fresh = fired["report"][0], fired["fresh"][0]
    assert (report["name"], report["queue"], report["priority"]) == ("echo", "reports", 5)
    assert json.loads(report["payload"]) == {"a": 1}
    assert report["run_at"] == tick
    assert report["idempotency_key"] == f"cron:report:{tick.isoformat()}"
    assert (report["max_attempts"], report["timeout_seconds"]) == (3, 7.5)
    assert (report["backoff_base"], report["backoff_factor"]) == (0.25, 2)
    # What the template sets wins; a queue nobody used before is created.
    assert (fresh["queue"], fresh["max_attempts"], fresh["timeout_seconds"]) == (
        "brand-new",
        2,
        4.0,
    )
    assert (fresh["backoff_base"], fresh["backoff_factor"], fresh["backoff_max"]) == (0.5, 3, 9)
    assert await conn.fetchval("SELECT count(*) FROM queues WHERE name = 'brand-new'") == 1
    done = await client.wait(str(report["id"]), timeout=5)
    assert done.result == {"a": 1}

    row = await conn.fetchrow("SELECT * FROM schedules WHERE name = 'report'")
    assert row["last_fired_at"] == tick
    assert row["next_fire_at"] == datetime(tick.year + 1, 1, 1, tzinfo=UTC)


async def test_pause_stops_firing_and_resume_restarts_from_now(
    replica: Replica, client: Client, conn: asyncpg.Connection
) -> None:
    await client.create_schedule("beat", "* * * * * *", TaskSpec("noop"))

    async def fired() -> int:
        return len(await cron_tasks(conn, "beat"))

    await until(fired)
    paused = await client.pause_schedule("beat")
    assert paused.paused
    assert (await client.pause_schedule("beat")).paused, "pausing twice is harmless"
    count = await fired()
    # Even long overdue, a paused schedule does not fire.
    await conn.execute("UPDATE schedules SET next_fire_at = now() - interval '1 hour'")
    assert replica.parts.schedules is not None
    assert await replica.parts.schedules.fire_due() == 0
    assert await fired() == count

    before = datetime.now(UTC)
    resumed = await client.resume_schedule("beat")
    assert not resumed.paused
    assert resumed.next_fire_at is not None
    assert before < resumed.next_fire_at <= before + timedelta(seconds=1)
    assert await client.resume_schedule("beat") == resumed, "resuming twice is harmless"

    async def fired_again() -> bool:
        return await fired() > count

    await until(fired_again)
    ticks = [r["run_at"] for r in await cron_tasks(conn, "beat")]
    assert ticks[count] == resumed.next_fire_at, "the missed hour did not fire"
