"""A paused queue costs nothing: its tasks are not claimed, not walked by the
claim (they are out of its main index), and submitting to it wakes no
dispatcher; resuming (which touches no task) makes them claimable at once.
On a real PostgreSQL, through the store."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from treadle.common.tasks import QueueUpdate
from treadle.scheduler import postgres
from treadle.scheduler.listener import ready_channel
from treadle.scheduler.model import NewTask
from treadle.scheduler.store import Store

OWNER = "test-replica"


@pytest.fixture
async def store(database_url: str, schema: str) -> AsyncIterator[Store]:
    pool = await postgres.create_pool(database_url, schema, 4)
    async with postgres.acquired(pool) as conn:
        await postgres.migrate(conn, schema)
    yield Store(pool, schema)
    await pool.close()


def new(queue: str, run_at: datetime | None = None) -> NewTask:
    return NewTask(
        id=uuid.uuid4(),
        name="echo",
        queue=queue,
        payload_json="null",
        priority=0,
        run_at=run_at,
        max_attempts=None,
        idempotency_key=None,
        tenant="default",
    )


async def submit(store: Store, queue: str, count: int = 1, conn: object = None) -> set[str]:
    submitted = await store.insert([new(queue) for _ in range(count)], conn)
    return {s.task.id for s in submitted}


async def pause(store: Store, queue: str, paused: bool = True) -> None:
    await store.ensure_queues("default", [queue])
    assert await store.update_queue("default", queue, QueueUpdate(), paused=paused) is not None


async def claimed(store: Store, limit: int = 100) -> set[str]:
    return {t.lease.task_id for t in await store.claim(OWNER, limit, 30, ["echo"])}


async def test_tasks_of_a_paused_queue_are_not_claimed(store: Store) -> None:
    await pause(store, "held")
    await submit(store, "held", 5)
    other = await submit(store, "open", 2)
    assert await claimed(store) == other
    assert await claimed(store) == set()


async def test_resuming_makes_them_claimable_at_once(store: Store) -> None:
    await pause(store, "held")
    waiting = await submit(store, "held", 3)
    assert await claimed(store) == set()
    await pause(store, "held", paused=False)
    assert await claimed(store) == waiting


async def test_pausing_while_tasks_wait_keeps_them_waiting(store: Store) -> None:
    waiting = await submit(store, "held", 3)
    later = await store.insert([new("held", datetime.now(UTC) + timedelta(seconds=0.2))])
    await pause(store, "held")
    assert await claimed(store) == set()
    # A scheduled task that comes due while its queue is paused waits too.
    await asyncio.sleep(0.3)
    assert await store.promote_due() == 1
    assert await claimed(store) == set()
    await pause(store, "held", paused=False)
    assert await claimed(store) == waiting | {later[0].task.id}


async def test_a_running_task_handed_back_to_a_paused_queue_waits(store: Store) -> None:
    (task_id,) = await submit(store, "held")
    (task,) = await store.claim(OWNER, 1, 30, ["echo"])
    await pause(store, "held")
    assert await store.release([task.lease]) == {task_id}
    assert await claimed(store) == set()
    await pause(store, "held", paused=False)
    assert await claimed(store) == {task_id}


async def test_a_retried_task_of_a_paused_queue_waits(
    store: Store, database_url: str, schema: str
) -> None:
    (task_id,) = await submit(store, "held")
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"UPDATE \"{schema}\".tasks SET state = 'DEAD', finished_at = now() WHERE id = $1",
            uuid.UUID(task_id),
        )
    finally:
        await conn.close()
    await pause(store, "held")
    assert await store.retry("default", uuid.UUID(task_id)) is not None
    assert await claimed(store) == set()
    await pause(store, "held", paused=False)
    assert await claimed(store) == {task_id}


async def ready_notifications(
    database_url: str, schema: str
) -> tuple[asyncpg.Connection, list[str]]:
    conn = await asyncpg.connect(database_url)
    heard: list[str] = []
    await conn.add_listener(ready_channel(schema), lambda *args: heard.append(args[3]))
    return conn, heard


async def test_submitting_to_a_paused_queue_wakes_no_dispatcher(
    store: Store, database_url: str, schema: str
) -> None:
    await pause(store, "held")
    listener, heard = await ready_notifications(database_url, schema)
    try:
        await submit(store, "held", 10)
        await asyncio.sleep(0.3)
        assert heard == []
        await submit(store, "open")
        for _ in range(50):
            if heard:
                break
            await asyncio.sleep(0.02)
        assert heard == ["ready"]
    finally:
        await listener.close()


async def test_the_claim_does_not_walk_a_paused_backlog(
    store: Store, database_url: str, schema: str
) -> None:
    """Structural: the claim's index scans meet no row of the paused queue."""
    await pause(store, "held")
    await submit(store, "held", 2000)
    await submit(store, "open", 1)
    conn = await postgres.connect(database_url, schema, "treadle-tests")
    try:
        await conn.execute("ANALYZE tasks")
        plan = "\n".join(
            r[0]
            for r in await conn.fetch(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                + postgres.load_queries()["claim"],
                10,
                OWNER,
                30.0,
                ["echo"],
            )
        )
    finally:
        await conn.close()
    assert "Index Scan using tasks_ready on tasks" in plan, plan
    # (Only the few rows of the queues table may be filtered.)
    assert all(int(n) < 100 for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)), plan
    assert "Seq Scan on tasks" not in plan, plan


async def test_the_claim_takes_the_best_tasks_across_queues(store: Store) -> None:
    low = await store.insert([new("a") for _ in range(3)])
    high = await store.insert([dataclasses.replace(new("b"), priority=5) for _ in range(2)])
    await pause(store, "c")
    await store.insert([dataclasses.replace(new("c"), priority=9)])
    assert await claimed(store, 2) == {s.task.id for s in high}
    assert await claimed(store, 10) == {s.task.id for s in low}


async def test_concurrent_claims_take_disjoint_tasks(store: Store) -> None:
    waiting = await submit(store, "a", 20) | await submit(store, "b", 20)
    batches = await asyncio.gather(*(claimed(store, 7) for _ in range(4)))
    taken = [task for batch in batches for task in batch]
    assert len(taken) == len(set(taken)) == 28
    assert set(taken) <= waiting


async def test_a_resumed_queues_tasks_keep_their_place_in_priority_order(store: Store) -> None:
    await pause(store, "b")
    high = await store.insert([dataclasses.replace(new("b"), priority=5) for _ in range(2)])
    low = await store.insert([new("a") for _ in range(2)])
    assert await claimed(store, 10) == {s.task.id for s in low}
    low = await store.insert([new("a") for _ in range(2)])
    await pause(store, "b", paused=False)
    assert await claimed(store, 2) == {s.task.id for s in high}
    assert await claimed(store, 10) == {s.task.id for s in low}
