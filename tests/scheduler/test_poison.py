"""Poison rows: tasks whose stored row a loop cannot handle (written straight
into the table, as older code, a bug or a manual UPDATE would), on a running
replica. Each ends DEAD with a PoisonTask error saying why, is counted in
treadle_poison_tasks_total by stage, and the replica runs on: a task
submitted afterwards succeeds, and every read still answers."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from scrape import scrape
from support import until

from treadle.client import Client, TaskState
from treadle.common.tasks import Task, TaskSpec
from treadle.scheduler.supervisor import Replica


async def sql(database_url: str, schema: str, statement: str, *args: object) -> None:
    """Run `statement` in the replica's schema, behind its back."""
    conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
    try:
        await conn.execute(statement, *args)
    finally:
        await conn.close()


async def poisons(replica: Replica, stage: str) -> float:
    assert replica.metrics_server is not None
    scraped = await scrape(f"http://{replica.metrics_server.address}/metrics")
    return scraped.value("treadle_poison_tasks_total", stage=stage)


async def reads_answer(client: Client, task_id: str) -> Task:
    """Every read a dashboard makes answers; returns the task as read."""
    task = await client.get(task_id)
    listed = await client.list(state=task.state)
    assert task_id in [t.id for t in listed.tasks]
    assert task_id in [t.id for t in (await client.list()).tasks]
    await client.queue_stats(task.queue)
    await client.list_queue_stats()
    await client.overview()
    await client.system_health()
    await client.health()
    return task


async def still_runs_echo(client: Client) -> None:
    echo = await client.submit("echo", {"after": "poison"})
    assert (await client.wait(echo.id, timeout=10)).state is TaskState.SUCCEEDED


@pytest.mark.parametrize(
    ("sets", "stage", "why"),
    [
        ("state = 'SCHEDULED', run_at = 'infinity'", "promote", "run_at is infinity"),
        ("state = 'RETRYING', run_at = 'infinity'", "promote", "run_at is infinity"),
        ("state = 'SCHEDULED', run_at = '-infinity'", "claim", "run_at is -infinity"),
        ("state = 'QUEUED', run_at = '-infinity'", "claim", "run_at is -infinity"),
        ("state = 'QUEUED', run_at = 'infinity'", "claim", "run_at is infinity"),
        ("state = 'QUEUED', timeout_seconds = 'NaN'", "claim", "timeout_seconds is nan"),
        ("state = 'QUEUED', timeout_seconds = 'infinity'", "claim", "timeout_seconds is inf"),
        ("state = 'QUEUED', backoff_factor = 'NaN'", "claim", "backoff_factor is not a number"),
        ("state = 'QUEUED', trace_context = '[1, 2]'", "claim", "trace_context"),
        ("state = 'QUEUED', trace_context = '{\"a\": 1}'", "claim", "trace_context"),
    ],
)
async def test_a_poison_row_ends_dead_and_the_replica_runs_on(
    database_url: str,
    schema: str,
    replica: Replica,
    client: Client,
    sets: str,
    stage: str,
    why: str,
) -> None:
    # Submitted for later, so no loop touches it before it is poisoned.
    task = await client.submit("echo", {"poisoned": True}, delay_seconds=3600)
    await sql(database_url, schema, f"UPDATE tasks SET {sets} WHERE id = $1", uuid.UUID(task.id))
    replica.parts.worker.catch_up()  # as a NOTIFY from the writer would

    dead = await client.wait(task.id, timeout=10)
    assert dead.state is TaskState.DEAD
    assert dead.error is not None
    assert dead.error.type == "PoisonTask"
    assert why in dead.error.message, dead.error.message
    assert dead.errors[-1] == dead.error
    assert await until(lambda: poisons(replica, stage))
    assert await poisons(replica, stage) == 1

    await still_runs_echo(client)
    assert (await reads_answer(client, task.id)).state is TaskState.DEAD
    assert all(replica.loops.values()), replica.loops


async def test_a_poison_row_is_logged_once(
    database_url: str,
    schema: str,
    replica: Replica,
    client: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    task = await client.submit("echo", 1, delay_seconds=3600)
    await sql(
        database_url,
        schema,
        "UPDATE tasks SET state = 'QUEUED', timeout_seconds = 'NaN' WHERE id = $1",
        uuid.UUID(task.id),
    )
    replica.parts.worker.wake()
    assert (await client.wait(task.id, timeout=10)).state is TaskState.DEAD
    await still_runs_echo(client)
    said = [r for r in caplog.records if task.id in r.getMessage()]
    (line,) = [r for r in said if "cannot be handled" in r.getMessage()]
    assert (line.levelname, line.name, getattr(line, "event", None)) == (
        "ERROR",
        "treadle.scheduler.tasks",
        "task_dead",
    )


async def test_infinite_times_read_as_the_earliest_and_latest(
    database_url: str, schema: str, replica: Replica, client: Client
) -> None:
    """A finished task's times may be infinite too: every read still answers."""
    task = await client.submit("echo", 1)
    assert (await client.wait(task.id)).state is TaskState.SUCCEEDED
    await sql(
        database_url,
        schema,
        "UPDATE tasks SET run_at = '-infinity', created_at = '-infinity', "
        "started_at = '-infinity', finished_at = 'infinity' WHERE id = $1",
        uuid.UUID(task.id),
    )
    read = await reads_answer(client, task.id)
    assert read.run_at.year == 1 and read.run_at.utcoffset() is not None
    assert read.finished_at is not None and read.finished_at.year == 9999
    await still_runs_echo(client)


async def test_garbage_in_the_error_columns_reads(
    database_url: str, schema: str, replica: Replica, client: Client
) -> None:
    task = await client.submit("boom", 1)
    assert (await client.wait(task.id)).state is TaskState.DEAD
    await sql(
        database_url,
        schema,
        """UPDATE tasks SET error = '"garbage"', errors = '{"a": 1}' WHERE id = $1""",
        uuid.UUID(task.id),
    )
    read = await reads_answer(client, task.id)
    assert read.error is not None and read.error.type == "UnreadableError"
    assert "garbage" in read.error.message
    assert read.errors == ()
    # retried, it runs again and records its error over the garbage
    await client.retry(task.id)
    again = await client.wait(task.id)
    assert again.state is TaskState.DEAD and again.error is not None
    assert again.error.type == "ValueError"
    await still_runs_echo(client)


async def test_a_backoff_that_overflows_keeps_the_real_error(
    database_url: str, schema: str, replica: Replica, client: Client
) -> None:
    """A stored retry policy whose next delay overflows any time: the retry is
    capped (about a century away), the handler's own error recorded."""
    task = await client.submit("boom", "overflow", delay_seconds=3600, max_attempts=3)
    await sql(
        database_url,
        schema,
        "UPDATE tasks SET state = 'QUEUED', attempts = 1, backoff_factor = 1e308, "
        "backoff_max = 'infinity' "
        "WHERE id = $1",
        uuid.UUID(task.id),
    )
    replica.parts.worker.wake()

    async def retrying() -> Task | None:
        read = await client.get(task.id)
        return read if read.state is TaskState.RETRYING else None

    read = await until(retrying)
    assert read.error is not None and read.error.type == "ValueError"
    assert read.run_at.year > 2100
    await still_runs_echo(client)


async def test_an_error_jsonb_cannot_store_is_recorded_cleaned(
    replica: Replica, client: Client
) -> None:
    """A handler's error message with a NUL character (jsonb refuses it) is
    recorded with the character shown as an escape; the outcomes after it are
    not held up."""
    task = await client.submit("raises_nul", 1)
    dead = await client.wait(task.id, timeout=10)
    assert dead.state is TaskState.DEAD and dead.error is not None
    assert dead.error.type == "ValueError"
    assert dead.error.message == "bad\\x00byte"
    await still_runs_echo(client)


async def test_an_outcome_the_database_refuses_ends_dead_alone(
    database_url: str, schema: str, replica: Replica, client: Client
) -> None:
    """An outcome the database refuses (here a constraint added behind the
    replica's back) fails its batch: the batch is written again one by one,
    the refused task ends DEAD saying why, the others are recorded as they are."""
    bad = await client.submit("sleep", {"seconds": 1})
    good = await client.submit("sleep", {"seconds": 1})
    await sql(
        database_url,
        schema,
        f"ALTER TABLE tasks ADD CONSTRAINT refuses_one "
        f"CHECK (id <> '{bad.id}' OR state <> 'SUCCEEDED') NOT VALID",
    )
    dead = await client.wait(bad.id, timeout=10)
    assert dead.state is TaskState.DEAD and dead.error is not None
    assert dead.error.type == "PoisonTask"
    assert "could not be recorded" in dead.error.message
    assert "refuses_one" in dead.error.message
    assert (await client.wait(good.id, timeout=10)).state is TaskState.SUCCEEDED
    assert await poisons(replica, "record") == 1
    await still_runs_echo(client)
    await reads_answer(client, bad.id)


async def test_an_attempt_that_breaks_outside_its_handler_ends_dead(
    replica: Replica, client: Client
) -> None:
    """An attempt whose failure cannot even be described (the exception's
    message raises) ends DEAD at the run stage instead of leaving its task
    RUNNING until its lease expires."""
    task = await client.submit("unprintable", 1, max_attempts=3)
    dead = await client.wait(task.id, timeout=10)
    assert dead.state is TaskState.DEAD and dead.error is not None
    assert dead.error.type == "PoisonTask"
    assert "(run)" in dead.error.message
    assert "this exception cannot be shown" in dead.error.message
    assert await until(lambda: poisons(replica, "run"))
    await still_runs_echo(client)


async def test_a_payload_too_deep_to_decode_ends_dead_at_once(
    database_url: str, schema: str, replica: Replica, client: Client
) -> None:
    """jsonb stores nesting deeper than Python decodes: no attempt can take
    that payload, so the task is not retried but ends DEAD saying why."""
    task = await client.submit("echo", 1, delay_seconds=3600, max_attempts=5)
    deep = "[" * 5000 + "]" * 5000
    await sql(
        database_url,
        schema,
        "UPDATE tasks SET state = 'QUEUED', payload = $2::jsonb WHERE id = $1",
        uuid.UUID(task.id),
        deep,
    )
    replica.parts.worker.wake()
    dead = await client.wait(task.id, timeout=10)
    assert dead.state is TaskState.DEAD and dead.error is not None
    assert dead.error.type == "PoisonTask"
    assert "(run)" in dead.error.message and "payload" in dead.error.message
    assert dead.attempts == 1
    await still_runs_echo(client)


async def test_a_schedule_row_that_cannot_be_fired_is_paused_and_cron_goes_on(
    database_url: str,
    schema: str,
    replica: Replica,
    client: Client,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A due schedule whose stored template has no task name (a row no API
    call can write) used to kill the cron loop, and the replica with it: it
    is paused, logged once and counted, and the loop fires the others. (A
    cron expression that does not parse was already paused, as having no
    further tick; it stays so.)"""
    await sql(
        database_url,
        schema,
        "INSERT INTO schedules (name, cron, timezone, task, next_fire_at) "
        """VALUES ('broken', '* * * * *', 'UTC', '{"payload": 1}', now()), """
        """('bad-cron', 'not a cron', 'UTC', '{"name": "echo"}', now())""",
    )
    await client.create_schedule("every-second", "*/1 * * * * *", TaskSpec("echo"))
    replica.parts.schedules.wake()

    async def paused() -> dict[str, bool] | None:
        conn = await asyncpg.connect(database_url, server_settings={"search_path": schema})
        try:
            rows = await conn.fetch("SELECT name, paused FROM schedules")
        finally:
            await conn.close()
        found = {r["name"]: r["paused"] for r in rows}
        return found if found["broken"] and found["bad-cron"] else None

    assert await until(paused) == {"broken": True, "bad-cron": True, "every-second": False}
    fired = replica.parts.schedules.fired_total

    async def fired_again() -> bool:
        return replica.parts.schedules.fired_total > fired

    await until(fired_again)  # the cron loop is alive and fires the sound schedule
    assert all(replica.loops.values()), replica.loops
    assert replica.metrics_server is not None
    scraped = await scrape(f"http://{replica.metrics_server.address}/metrics")
    assert scraped.value("treadle_poison_schedules_total") == 1
    said = [r.getMessage() for r in caplog.records if "cannot be fired" in r.getMessage()]
    assert said == [
        "schedule 'broken' of tenant 'default' cannot be fired (KeyError: 'name'); paused it"
    ]
    # Listings answer, showing the unreadable template without a task name.
    listed = {s.name: s for s in await client.list_schedules()}
    assert listed["broken"].paused and listed["broken"].task.name == ""
    await still_runs_echo(client)
