"""Leases, heartbeats, reclaiming and the replica registry, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest
from support import make_settings

from treadle.client import Client, TaskSpec, TaskState
from treadle.common.tasks import Task
from treadle.scheduler import postgres
from treadle.scheduler.model import Outcome, check_spec
from treadle.scheduler.registry import load_app
from treadle.scheduler.store import Store
from treadle.scheduler.supervisor import Replica


@pytest.fixture
async def store(database_url: str, schema: str) -> AsyncIterator[Store]:
    pool = await postgres.create_pool(database_url, schema, 4)
    async with postgres.acquired(pool) as conn:
        await postgres.migrate(conn, schema)
    yield Store(pool, schema)
    await pool.close()


async def submit(store: Store, count: int = 1) -> list[str]:
    now = datetime.now(UTC)
    specs = [check_spec(TaskSpec(name="echo"), "default", 1 << 20, now) for _ in range(count)]
    return [s.task.id for s in await store.insert(specs)]


def success(task: Task) -> Outcome:
    return Outcome(
        task.id, task.attempts, TaskState.SUCCEEDED, datetime.now(UTC), "1", claim=task.claims
    )


async def expire_leases(database_url: str, schema: str) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"UPDATE \"{schema}\".tasks SET lease_expires_at = now() - interval '1 second' "
            "WHERE state = 'RUNNING'"
        )
    finally:
        await conn.close()


async def test_stale_outcome_is_rejected_after_the_lease_moved(
    store: Store, database_url: str, schema: str
) -> None:
    (task_id,) = await submit(store)
    (first,) = await store.claim("replica-a", 10, 30)
    # replica-a goes silent: its lease runs out (the clock is the database's;
    # moving the expiry into the past is the same as waiting for it)
    await expire_leases(database_url, schema)
    reclaimed = await store.reap(100, max_reclaims=3)
    assert [(r.task_id, r.state, r.owner) for r in reclaimed] == [
        (task_id, TaskState.QUEUED, "replica-a")
    ]
    assert reclaimed[0].error.type == "LeaseExpired"
    (second,) = await store.claim("replica-b", 10, 30)
    assert second.attempts == first.attempts == 1, "the lost attempt was not charged"
    assert second.claims == first.claims + 1

    assert not await store.complete("replica-a", [success(first)]), "stale: discarded"
    assert set(await store.complete("replica-b", [success(second)])) == {task_id}
    done = await store.get(uuid.UUID(task_id))
    assert done is not None
    assert done.state is TaskState.SUCCEEDED
    assert [e.type for e in done.errors] == ["LeaseExpired"]
    assert "replica replica-a stopped renewing its lease" in done.errors[0].message


async def test_same_replica_cannot_apply_an_outcome_of_an_earlier_claim(
    store: Store, database_url: str, schema: str
) -> None:
    await submit(store)
    (first,) = await store.claim("replica-a", 10, 30)
    await expire_leases(database_url, schema)
    await store.reap(100, max_reclaims=3)
    (again,) = await store.claim("replica-a", 10, 30)
    assert (again.attempts, again.claims) == (1, 2)
    assert not await store.complete("replica-a", [success(first)])
    assert set(await store.complete("replica-a", [success(again)])) == {again.id}


async def test_heartbeat_extends_only_leases_still_held(
    store: Store, database_url: str, schema: str
) -> None:
    ids = await submit(store, 3)
    claimed = await store.claim("replica-a", 10, 30)
    held = [(t.id, t.claims) for t in claimed]
    await store.register_replica("replica-a", "host", 1, "test")
    assert set(await store.heartbeat("replica-a", held, 30)) == set(ids)
    await expire_leases(database_url, schema)
    await store.reap(100, max_reclaims=3)
    assert set(await store.heartbeat("replica-a", held, 30)) == set(), "reclaimed: no longer held"


async def test_a_task_that_keeps_losing_its_replica_ends_dead(
    store: Store, database_url: str, schema: str
) -> None:
    (task_id,) = await submit(store)
    for _ in range(3):
        await store.claim("crashy", 10, 30)
        await expire_leases(database_url, schema)
        assert (await store.reap(100, max_reclaims=2))[0].state in (
            TaskState.QUEUED,
            TaskState.DEAD,
        )
    task = await store.get(uuid.UUID(task_id))
    assert task is not None
    assert task.state is TaskState.DEAD
    assert len(task.errors) == 3
    assert task.finished_at is not None


async def test_slow_is_not_dead(database_url: str, schema: str) -> None:
    """A handler running for 3x the lease on a live replica keeps its lease and runs once."""
    settings = make_settings(schema, lease_seconds=0.6, heartbeat_interval=0.15)
    replicas = [Replica(settings, load_app("taskapp"), database_url) for _ in range(2)]
    for r in replicas:
        await r.start()
    try:
        async with Client(replicas[0].address) as client:
            task = await client.submit("sleep", {"seconds": 1.8})
            done = await client.wait(task.id, timeout=10)
    finally:
        for r in replicas:
            await r.stop()
    assert done.state is TaskState.SUCCEEDED
    assert done.attempts == 1
    assert done.claims == 1, "never reclaimed, so it ran exactly once"
    assert done.errors == ()
    assert sum(r.worker.reclaimed_total for r in replicas if r.worker) == 0
    assert sum(r.worker.leases_extended_total for r in replicas if r.worker) >= 5


async def test_replica_registry(database_url: str, schema: str) -> None:
    settings = make_settings(schema, lease_seconds=1, heartbeat_interval=0.2)
    first = Replica(settings, load_app("taskapp"), database_url)
    second = Replica(
        make_settings(schema, lease_seconds=1, heartbeat_interval=0.2),
        load_app("taskapp"),
        database_url,
    )
    await first.start()
    await second.start()
    try:
        async with Client(first.address) as client:
            task = await client.submit("sleep", {"seconds": 1})
            await asyncio.sleep(0.3)
            replicas = {r.id: r for r in await client.list_replicas()}
            assert set(replicas) >= {settings.replica_id, second.settings.replica_id}
            assert all(r.alive for r in replicas.values())
            assert sum(r.running for r in replicas.values()) == 1
            await second.stop()
            replicas = {r.id: r for r in await client.list_replicas()}
            gone = replicas[second.settings.replica_id]
            assert not gone.alive
            assert gone.stopped_at is not None
            await client.wait(task.id, 5)
    finally:
        await second.stop()
        await first.stop()
