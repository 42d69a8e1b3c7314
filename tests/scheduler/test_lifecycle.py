"""Start, stop, restart and drain a replica; migrations under concurrency; health and reflection."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid

import asyncpg
import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from support import make_settings, running_replica

from treadle.client import Client, TaskSpec, TaskState
from treadle.scheduler import loops, postgres
from treadle.scheduler.core import Scheduler
from treadle.scheduler.registry import Handler, Registry, load_app
from treadle.scheduler.store import Store
from treadle.scheduler.supervisor import Replica


async def test_health_serving_and_reflection_lists_service(replica: Replica) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        for service in ("", "treadle.api.v1.SchedulerService"):
            reply = await health.Check(health_pb2.HealthCheckRequest(service=service))
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        names: list[str] = []
        async for response in stub.ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")])
        ):
            names += [s.name for s in response.list_services_response.service]
        assert "treadle.api.v1.SchedulerService" in names
        assert "grpc.health.v1.Health" in names


async def test_queued_tasks_survive_a_restart(database_url: str, schema: str) -> None:
    settings = make_settings(schema)
    registry = load_app("taskapp")
    # Store tasks while no replica runs (the core alone, as a replica would).
    pool = await postgres.create_pool(database_url, schema, 2)
    try:
        async with postgres.acquired(pool) as conn:
            await postgres.migrate(conn, schema)
        core = Scheduler(Store(pool, schema), registry, settings)
        submitted = await core.submit_many(
            [TaskSpec(name="echo", payload_json=str(i)) for i in range(25)]
        )
    finally:
        await pool.close()
    assert all(s.task.state is TaskState.QUEUED for s in submitted)

    replica = Replica(settings, registry, database_url)
    await replica.start()
    try:
        async with Client(replica.address) as client:
            done = [await client.wait(s.task.id, timeout=10) for s in submitted]
    finally:
        await replica.stop()
    assert [t.result for t in done] == list(range(25))


async def test_queued_tasks_survive_a_replica_restart(database_url: str, schema: str) -> None:
    """Tasks accepted by a replica that then stops run on the next one."""
    settings = make_settings(schema)
    registry = load_app("taskapp")
    first = Replica(settings, registry, database_url)
    await first.start()
    try:
        async with Client(first.address) as client:
            await client.submit("echo", 0, queue="later")
            await client.pause_queue("later")
            ids = await client.submit_many(
                [TaskSpec(name="echo", queue="later", payload_json=str(i)) for i in range(10)]
            )
    finally:
        await first.stop()
    second = Replica(settings, registry, database_url)
    await second.start()
    try:
        async with Client(second.address) as client:
            assert {(await client.get(i)).state for i in ids} == {TaskState.QUEUED}
            await client.resume_queue("later")
            done = [await client.wait(i, timeout=10) for i in ids]
    finally:
        await second.stop()
    assert [t.result for t in done] == list(range(10))


async def test_notify_wakes_the_dispatcher_not_polling(database_url: str, schema: str) -> None:
    """With a 30 s poll interval, a submitted task still starts at once: the
    INSERT's NOTIFY wakes the idle dispatcher."""
    async with (
        running_replica(database_url, schema, poll_interval=30.0) as replica,
        Client(replica.address) as client,
    ):
        await client.wait((await client.submit("echo", 0)).id, timeout=5)
        await asyncio.sleep(0.3)  # the dispatcher is idle now, in its 30 s wait
        task = await client.submit("echo", 1)
        done = await client.wait(task.id, timeout=5)
        assert done.started_at is not None
        assert (done.started_at - done.created_at).total_seconds() < 2.0


async def _until_a_claim_waits_on_a_lock(conn: asyncpg.Connection, timeout: float = 20) -> None:
    """Until a claim waits on a lock: its claim statement (it sets `claims =
    t.claims + 1`) or the look for limited queues that a claim makes first
    every few seconds (`limited_queues_ready`)."""
    deadline = time.monotonic() + timeout
    # `conn` is inside the transaction that holds the lock, and PostgreSQL keeps
    # a transaction's first read of pg_stat_activity: drop it before each look,
    # or a claim that came a moment after the first look is never seen.
    while await conn.execute("SELECT pg_stat_clear_snapshot()") and not await conn.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
        "AND (query LIKE '%claims = t.claims + 1%' OR query LIKE '%start_limit IS NOT NULL)"
        " AND NOT paused%') AND pid <> pg_backend_pid()"
    ):
        if time.monotonic() > deadline:  # say what every other session was doing
            rows = await conn.fetch(
                "SELECT pid, state, wait_event_type, wait_event, left(query, 120) AS query"
                " FROM pg_stat_activity WHERE pid <> pg_backend_pid()"
                " AND datname = current_database()"
            )
            raise AssertionError(
                "no claim came to wait on the lock:\n" + "\n".join(str(dict(r)) for r in rows)
            )
        await asyncio.sleep(0.02)


async def test_a_claim_in_flight_at_stop_is_drained_and_handed_back(
    database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A stop that comes while a claim is on its way waits for it: the task
    it brings starts, then drains and is handed back like the rest (it used
    to start after the drain had looked, and run on unseen as the replica
    stopped, leaving the task RUNNING until its lease expired)."""
    caplog.set_level(logging.INFO, logger="treadle.scheduler")
    # No poll-interval claim: one begun before the resume committed would wait
    # on the lock too, then find the queue still paused in its snapshot, and
    # be the claim this test waits for. Only the claim the resume wakes counts.
    settings = make_settings(schema, drain_timeout=0.5, poll_interval=30)
    replica = Replica(settings, load_app("taskapp"), database_url)
    await replica.start()
    stopping: asyncio.Task[None] | None = None
    locker = await asyncpg.connect(database_url)
    try:
        async with Client(replica.address) as client:
            # (The queue exists once a task was submitted to it; that task must
            # be over before the pause, or the resumed claim brings it too.)
            await client.wait((await client.submit("echo", 0, queue="blocked")).id)
            await client.pause_queue("blocked")
            task = await client.submit("cancellable", {"seconds": 30, "key": "x"}, queue="blocked")
            lock = locker.transaction()
            await lock.start()
            # The dispatcher's next claim waits behind this lock.
            await locker.execute(f'LOCK TABLE "{schema}".tasks IN ACCESS EXCLUSIVE MODE')
            await client.resume_queue("blocked")
            # Woken by the resume, the dispatcher's claim is now stuck on the lock
            # (waited for, not slept: on a loaded machine 0.5 s was not always enough).
            await _until_a_claim_waits_on_a_lock(locker)
            stopping = asyncio.create_task(replica.stop())
            await asyncio.sleep(0.3)
            assert not stopping.done(), "the drain waits for the claim in flight"
            await lock.rollback()
            await asyncio.wait_for(stopping, 15)
        row = await locker.fetchrow(
            f'SELECT state, attempts, lease_owner FROM "{schema}".tasks WHERE id = $1',
            uuid.UUID(task.id),
        )
        assert row is not None
        assert (row["state"], row["attempts"], row["lease_owner"]) == ("QUEUED", 0, None)
        assert "draining 1 running task(s)" in caplog.text
        assert "handed back 1 task(s) without charging an attempt" in caplog.text
    finally:
        await locker.close()
        if stopping is None:
            await replica.stop()


async def test_drain_hands_back_unfinished_work_without_charging(
    database_url: str, schema: str
) -> None:
    registry = load_app("taskapp")
    first = Replica(make_settings(schema, concurrency=2, drain_timeout=0.3), registry, database_url)
    await first.start()
    async with Client(first.address) as client:
        quick = await client.submit("sleep", {"seconds": 0.05})
        slow = await client.submit("sleep", {"seconds": 30})
        queued = await client.submit_many([TaskSpec(name="echo")] * 5)
        for _ in range(100):
            if (await client.get(slow.id)).state is TaskState.RUNNING:
                break
            await asyncio.sleep(0.02)
    await first.stop()
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            f'SELECT state, attempts, lease_owner FROM "{schema}".tasks WHERE id = $1',
            uuid.UUID(slow.id),
        )
    finally:
        await conn.close()
    assert dict(row) == {"state": "QUEUED", "attempts": 0, "lease_owner": None}

    second = Replica(make_settings(schema, drain_timeout=0.1), registry, database_url)
    await second.start()
    try:
        async with Client(second.address) as client:
            assert (await client.wait(quick.id, 5)).state is TaskState.SUCCEEDED
            for task_id in queued:
                assert (await client.wait(task_id, 5)).state is TaskState.SUCCEEDED
            for _ in range(100):
                again = await client.get(slow.id)
                if again.state is TaskState.RUNNING:
                    break
                await asyncio.sleep(0.02)
            assert again.state is TaskState.RUNNING
            assert again.attempts == 1, "the handed-back attempt was not charged"
    finally:
        await second.stop()


async def test_stop_cancels_and_awaits_every_background_task(
    replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="treadle.scheduler")
    loops = sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith("treadle-") and not t.get_name().startswith("treadle-task-")
    )
    assert set(loops) >= {
        "treadle-dispatch",
        "treadle-promote",
        "treadle-flush",
        "treadle-prune",
        "treadle-cron",
    }
    await replica.stop()
    await replica.stop()  # idempotent
    left = [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("treadle-")]
    assert left == []
    assert (
        f"cancelled and awaited {len(loops)} background task(s): {', '.join(loops)}" in caplog.text
    )


async def test_a_dying_loop_stops_the_replica(
    replica: Replica, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken() -> None:
        raise RuntimeError("loop broke")

    replica.background.spawn("broken", broken())
    await asyncio.wait_for(replica.serve(), timeout=10)
    assert "background loop treadle-broken died" in caplog.text


async def test_stop_does_not_hang_on_a_loop_that_loses_its_cancellation(
    replica: Replica, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A loop that swallows one cancellation (as Python 3.11's wait_for can make
    a loop do) is named with its stack and cancelled again; stop() finishes."""
    monkeypatch.setattr(loops, "CANCEL_WAIT", 0.2)
    swallowed = asyncio.Event()

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed.is_set():
                    raise
                swallowed.set()

    replica.background.spawn("stubborn", stubborn())
    await asyncio.wait_for(replica.stop(), timeout=10)
    assert swallowed.is_set()
    assert "background loop treadle-stubborn did not end when cancelled (round 1 of 3)" in (
        caplog.text
    )
    assert "in stubborn" in caplog.text  # its stack
    assert [t for t in asyncio.all_tasks() if t.get_name() == "treadle-stubborn"] == []


async def test_concurrent_migrations_apply_once(database_url: str, schema: str) -> None:
    conns = [await asyncpg.connect(database_url) for _ in range(5)]
    try:
        results = await asyncio.gather(*(postgres.migrate(c, schema) for c in conns))
    finally:
        for c in conns:
            await c.close()
    assert sorted(len(r) for r in results) == [0, 0, 0, 0, len(postgres.load_migrations())]
    conn = await postgres.connect(database_url, schema)
    try:
        await postgres.check_schema(conn)
    finally:
        await conn.close()


async def test_tasks_without_a_local_handler_are_claimed_only_by_a_replica_that_has_one(
    database_url: str, schema: str
) -> None:
    async def elsewhere(payload: object) -> str:
        return "ran elsewhere"

    other_app = Registry([Handler(name="elsewhere", queue="default", fn=elsewhere)])
    # A replica of the test app (no "elsewhere" handler) starts first.
    plain = Replica(make_settings(schema, poll_interval=0.1), load_app("taskapp"), database_url)
    await plain.start()
    other = Replica(make_settings(schema, poll_interval=0.1), other_app, database_url)
    try:
        assert other_app.get("elsewhere") is not None
        async with Client(plain.address) as client:
            echo = await client.submit("echo", "here")
            assert (await client.wait(echo.id, 5)).state is TaskState.SUCCEEDED
        await other.start()
        async with Client(other.address) as client:
            # Only the replica with the handler claims them: none is handed back.
            ids = await client.submit_many([TaskSpec(name="elsewhere")] * 40)
            done = [await client.wait(task_id, 10) for task_id in ids]
        assert {t.state for t in done} == {TaskState.SUCCEEDED}
        assert {t.result for t in done} == {"ran elsewhere"}
        assert {t.attempts for t in done} == {1}
        conn = await asyncpg.connect(database_url)
        try:
            claims = await conn.fetch(
                f'SELECT DISTINCT claims FROM "{schema}".tasks WHERE name = $1', "elsewhere"
            )
        finally:
            await conn.close()
        assert [r["claims"] for r in claims] == [1], "claimed once each: never handed back"
    finally:
        await other.stop()
        await plain.stop()
