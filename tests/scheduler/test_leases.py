"""Leases, heartbeats, reclaiming and the replica registry, on a real PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime

import asyncpg
import pytest
from scrape import scrape
from support import make_settings, running_replica

from treadle.client import Client, TaskSpec, TaskState
from treadle.common import logs
from treadle.scheduler import postgres, task_log
from treadle.scheduler.model import ClaimedTask, Lease, Outcome, check_spec
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
    specs = [
        check_spec(TaskSpec(name="echo"), "default", 1 << 20, now, tenant="default")
        for _ in range(count)
    ]
    return [s.task.id for s in await store.insert(specs)]


def success(task: ClaimedTask) -> Outcome:
    return Outcome(task.lease, task.attempts, TaskState.SUCCEEDED, datetime.now(UTC), "1")


async def claims_of(database_url: str, schema: str, task_id: str) -> int:
    """How many times the task was claimed (scheduler-internal: not in `Task`)."""
    conn = await asyncpg.connect(database_url)
    try:
        claims: int = await conn.fetchval(
            f'SELECT claims FROM "{schema}".tasks WHERE id = $1', uuid.UUID(task_id)
        )
        return claims
    finally:
        await conn.close()


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
    (first,) = await store.claim("replica-a", 10, 30, ["echo"])
    # replica-a goes silent: its lease runs out (the clock is the database's;
    # moving the expiry into the past is the same as waiting for it)
    await expire_leases(database_url, schema)
    reclaimed = await store.reap(100, max_reclaims=3)
    assert [(r.task_id, r.state, r.owner) for r in reclaimed] == [
        (task_id, TaskState.QUEUED, "replica-a")
    ]
    assert reclaimed[0].error.type == "LeaseExpired"
    (second,) = await store.claim("replica-b", 10, 30, ["echo"])
    assert second.attempts == first.attempts == 1, "the lost attempt was not charged"
    assert second.lease.claim == first.lease.claim + 1

    assert not await store.complete([success(first)]), "stale: discarded"
    assert set(await store.complete([success(second)])) == {Lease(task_id, "replica-b", 2)}
    done = await store.get("default", uuid.UUID(task_id))
    assert done is not None
    assert done.state is TaskState.SUCCEEDED
    assert [e.type for e in done.errors] == ["LeaseExpired"]
    assert "replica replica-a stopped renewing its lease" in done.errors[0].message


async def test_same_replica_cannot_apply_an_outcome_of_an_earlier_claim(
    store: Store, database_url: str, schema: str
) -> None:
    await submit(store)
    (first,) = await store.claim("replica-a", 10, 30, ["echo"])
    await expire_leases(database_url, schema)
    await store.reap(100, max_reclaims=3)
    (again,) = await store.claim("replica-a", 10, 30, ["echo"])
    assert (again.attempts, again.lease.claim) == (1, 2)
    assert not await store.complete([success(first)])
    assert set(await store.complete([success(again)])) == {Lease(again.id, "replica-a", 2)}


async def test_in_one_batch_only_the_current_claims_outcome_applies(
    store: Store, database_url: str, schema: str
) -> None:
    """Outcomes of two claims of one task written in one statement (the first
    was held past its lease): only the current claim's applies, and the
    result says which, by claim."""
    (task_id,) = await submit(store)
    (first,) = await store.claim("replica-a", 10, 30, ["echo"])
    await expire_leases(database_url, schema)
    await store.reap(100, max_reclaims=3)
    (again,) = await store.claim("replica-a", 10, 30, ["echo"])
    applied = await store.complete([success(first), success(again)])
    assert set(applied) == {Lease(task_id, "replica-a", again.lease.claim)}


async def test_heartbeat_extends_only_leases_still_held(
    store: Store, database_url: str, schema: str
) -> None:
    ids = await submit(store, 3)
    claimed = await store.claim("replica-a", 10, 30, ["echo"])
    held = [t.lease for t in claimed]
    await store.register_replica("replica-a", "host", 1, "test")
    assert set(await store.heartbeat("replica-a", held, 30)) == set(ids)
    await expire_leases(database_url, schema)
    await store.reap(100, max_reclaims=3)
    assert set(await store.heartbeat("replica-a", held, 30)) == set(), "reclaimed: no longer held"


async def test_a_task_that_keeps_losing_its_replica_ends_dead(
    store: Store, database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="treadle.scheduler.tasks")
    (task_id,) = await submit(store)
    for _ in range(3):
        await store.claim("crashy", 10, 30, ["echo"])
        await expire_leases(database_url, schema)
        reclaimed = await store.reap(100, max_reclaims=2)
        assert reclaimed[0].state in (TaskState.QUEUED, TaskState.DEAD)
        task_log.reclaimed(reclaimed)  # as the reaper logs them
    # Twice taken back (INFO), then DEAD (ERROR), each once; no trace stored, no ids.
    assert [(r.levelname, getattr(r, "event", None)) for r in caplog.records] == [
        ("INFO", "task_reclaimed"),
        ("INFO", "task_reclaimed"),
        ("ERROR", "task_dead"),
    ]
    assert caplog.records[-1].getMessage() == (
        f"task {task_id} (echo, queue default) is DEAD: it lost its replica too often "
        "(LeaseExpired: replica crashy stopped renewing its lease)"
    )
    assert not any(hasattr(r, "trace_id") for r in caplog.records)
    task = await store.get("default", uuid.UUID(task_id))
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
    assert await claims_of(database_url, schema, done.id) == 1, (
        "never reclaimed, so it ran exactly once"
    )
    assert done.errors == ()
    assert sum(r.parts.worker.reclaimed_total for r in replicas if r.parts.worker) == 0
    assert sum(r.parts.worker.leases_extended_total for r in replicas if r.parts.worker) >= 5


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


def metrics_url(replica: Replica) -> str:
    assert replica.metrics_server is not None
    return f"http://{replica.metrics_server.address}/metrics"


async def until(check: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.02)


async def test_a_late_outcome_is_discarded_and_counted_as_stale(
    database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    """An outcome that reaches the database after the task's lease moved on is
    discarded, and the discard is counted (Worker.stale_total and
    treadle_stale_outcomes_discarded_total) and logged."""
    caplog.set_level(logging.INFO, logger="treadle.scheduler")
    # Outcomes wait 1.5 s to be written; the lease runs out after 0.5 s.
    async with running_replica(
        database_url, schema, lease_seconds=0.5, heartbeat_interval=0.1, flush_interval=1.5
    ) as replica:
        worker = replica.parts.worker
        assert worker is not None
        scraped = await scrape(metrics_url(replica))
        assert scraped.value("treadle_stale_outcomes_discarded_total") == 0
        queue = f"q-{uuid.uuid4().hex[:8]}"
        async with Client(replica.address) as client:
            task = await client.submit("echo", "late", queue=queue)
            # echo returned at once; its outcome waits for the flush, the task stays RUNNING
            async with asyncio.timeout(1):
                while (await client.get(task.id)).state is not TaskState.RUNNING:
                    await asyncio.sleep(0.01)
            # nobody claims it again once reclaimed: the outcome arrives late, alone
            await client.pause_queue(queue)
            await until(lambda: worker.stale_total > 0)
            assert worker.stale_total == 1
            assert worker.reclaimed_total == 1
            assert worker.completed_total == 0
            handed = await client.get(task.id)
            claims = await claims_of(database_url, schema, task.id)
            assert (handed.state, handed.attempts, claims) == (TaskState.QUEUED, 0, 1)
            assert [e.type for e in handed.errors] == ["LeaseExpired"]
            scraped = await scrape(metrics_url(replica))
            assert scraped.value("treadle_stale_outcomes_discarded_total") == 1
            assert scraped.value("treadle_outcomes_recorded_total") == 0
            assert f"discarded 1 outcome(s) whose lease had moved on: ['{task.id}']" in caplog.text


async def test_stale_outcomes_are_counted_by_claim_within_one_batch(
    database_url: str, schema: str
) -> None:
    """Outcomes held past their lease while the task was claimed and run again
    reach the database in one batch with the current claim's: only that one
    applies, and every earlier one is counted stale (not taken for applied
    because the same task's later outcome applied)."""
    async with running_replica(
        database_url, schema, lease_seconds=0.5, heartbeat_interval=0.1, flush_interval=1.5
    ) as replica:
        worker = replica.parts.worker
        assert worker is not None
        async with Client(replica.address) as client:
            task = await client.submit("echo", "again and again")
            done = await client.wait(task.id, timeout=10)
        assert done.state is TaskState.SUCCEEDED
        claims = await claims_of(database_url, schema, done.id)
        assert claims >= 2, "it was reclaimed and claimed again before the flush"
        await until(lambda: worker.completed_total + worker.stale_total >= claims)
        assert worker.completed_total == 1
        assert worker.stale_total == claims - 1


async def test_an_expired_lease_is_reclaimed_counted_and_logged(
    store: Store, database_url: str, schema: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="treadle.scheduler")
    (task_id,) = await submit(store)
    await store.claim("ghost-replica", 10, 30, ["echo"])  # a replica that then dies
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    conn = await asyncpg.connect(database_url)
    try:  # as a traced submission stores it
        await conn.execute(
            f'UPDATE "{schema}".tasks SET trace_context = $1::jsonb',
            json.dumps({"traceparent": f"00-{trace_id}-{span_id}-01"}),
        )
    finally:
        await conn.close()
    # The replica's own lease is long (10 s) so that, on a loaded machine, a
    # stalled heartbeat cannot get its own attempt reclaimed too: only the
    # ghost's lease, expired by hand below, may be taken back.
    async with running_replica(
        database_url, schema, lease_seconds=10, heartbeat_interval=0.1
    ) as replica:
        worker = replica.parts.worker
        assert worker is not None
        await asyncio.sleep(0.35)  # a few reaper rounds: the lease still holds
        assert worker.reclaimed_total == 0
        assert (await scrape(metrics_url(replica))).value("treadle_leases_reclaimed_total") == 0
        assert "whose lease expired" not in caplog.text

        await expire_leases(database_url, schema)
        await until(lambda: worker.reclaimed_total > 0)
        assert worker.reclaimed_total == 1
        scraped = await scrape(metrics_url(replica))
        assert scraped.value("treadle_leases_reclaimed_total") == 1
        (record,) = [r for r in caplog.records if r.getMessage().startswith("reclaimed ")]
        assert record.levelno == logging.WARNING
        assert record.name == "treadle.scheduler.worker"
        assert record.getMessage() == (
            "reclaimed 1 task(s) whose lease expired (from ghost-replica)"
        )
        # And the task itself, at INFO, with its trace (text and JSON).
        (line,) = [r for r in caplog.records if getattr(r, "task_id", None) == task_id]
        assert (line.levelno, line.name) == (logging.INFO, "treadle.scheduler.tasks")
        text = logs.TextFormatter().format(line)
        assert text.endswith(
            f" INFO treadle.scheduler.tasks: task {task_id} (echo, queue default) taken back "
            "from replica ghost-replica, whose lease expired; queued again (attempt 1/1 not "
            f"charged) trace_id={trace_id} span_id={span_id}"
        )
        fields = json.loads(logs.JsonFormatter().format(line))
        assert {k: v for k, v in fields.items() if k not in ("time", "message")} == {
            "level": "INFO",
            "logger": "treadle.scheduler.tasks",
            "event": "task_reclaimed",
            "task_id": task_id,
            "task_name": "echo",
            "queue": "default",
            "tenant": "default",
            "state": "QUEUED",
            "attempt": 1,
            "max_attempts": 1,
            "replica": "ghost-replica",
            "error_type": "LeaseExpired",
            "error_message": "replica ghost-replica stopped renewing its lease",
            "trace_id": trace_id,
            "span_id": span_id,
        }
        async with Client(replica.address) as client:
            done = await client.wait(task_id, timeout=5)
        claims = await claims_of(database_url, schema, task_id)
        assert (done.state, done.attempts, claims) == (TaskState.SUCCEEDED, 1, 2)
        assert [e.message for e in done.errors] == [
            "replica ghost-replica stopped renewing its lease"
        ]
        assert worker.reclaimed_total == 1


async def age_heartbeat(database_url: str, schema: str, replica_id: str, seconds: float) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f'UPDATE "{schema}".replicas '
            "SET last_heartbeat_at = now() - make_interval(secs => $2) WHERE id = $1",
            replica_id,
            seconds,
        )
    finally:
        await conn.close()


async def test_a_replica_silent_for_longer_than_a_lease_is_not_alive(
    store: Store, database_url: str, schema: str
) -> None:
    settings = make_settings(schema, lease_seconds=5, heartbeat_interval=0.2)
    replica = Replica(settings, load_app("taskapp"), database_url)
    await replica.start()
    try:
        # a replica that registered, heartbeat, then went silent (crashed)
        await store.register_replica("ghost-replica", "elsewhere", 4242, "test")
        await store.heartbeat("ghost-replica", [], 5)
        async with Client(replica.address) as client:

            async def alive() -> dict[str, bool]:
                return {r.id: r.alive for r in await client.list_replicas()}

            assert await alive() == {settings.replica_id: True, "ghost-replica": True}
            assert (await client.health()).replicas_alive == 2

            await age_heartbeat(database_url, schema, "ghost-replica", 3)  # within the lease
            assert await alive() == {settings.replica_id: True, "ghost-replica": True}

            await age_heartbeat(database_url, schema, "ghost-replica", 6)  # past the lease
            assert await alive() == {settings.replica_id: True, "ghost-replica": False}
            (ghost,) = [r for r in await client.list_replicas() if r.id == "ghost-replica"]
            assert ghost.stopped_at is None, "silent, not stopped"
            assert (ghost.host, ghost.pid) == ("elsewhere", 4242)
            assert (await client.health()).replicas_alive == 1
    finally:
        await replica.stop()
