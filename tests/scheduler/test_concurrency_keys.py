"""Concurrency keys: at most `max_concurrent` RUNNING tasks per (tenant, key)
across replicas, the others waiting QUEUED without an attempt charged; the
plain claim leaves keyed tasks alone; submissions are checked."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import re
from collections import Counter

import asyncpg
import pytest
import taskapp
from support import make_settings, until

from treadle.client import Client, InvalidArgument, TaskSpec, TaskState
from treadle.scheduler import postgres
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica


async def _state_is(client: Client, task_id: str, state: TaskState) -> bool:
    return (await client.get(task_id)).state is state


def _overlap(key: str | None, limit: int | None, seconds: float = 0.02) -> TaskSpec:
    return TaskSpec(
        name="overlap",
        payload_json=f'{{"key": "{key or "-"}", "seconds": {seconds}}}',
        concurrency_key=key,
        max_concurrent=limit,
    )


async def _running_per_key_until_done(
    conn: asyncpg.Connection, schema: str, keys: tuple[str, str], max_samples: int = 5000
) -> list[tuple[int, int]]:
    """Sample how many tasks of each of `keys` are RUNNING (every 5 ms) until
    no task is left unfinished (none but SUCCEEDED or CANCELLED)."""
    samples: list[tuple[int, int]] = []
    while True:
        rows = await conn.fetch(
            f'SELECT concurrency_key, count(*) AS n FROM "{schema}".tasks '
            "WHERE state = 'RUNNING' AND concurrency_key IS NOT NULL "
            "GROUP BY concurrency_key"
        )
        running = {r["concurrency_key"]: r["n"] for r in rows}
        samples.append((running.get(keys[0], 0), running.get(keys[1], 0)))
        left = await conn.fetchval(
            f"SELECT count(*) FROM \"{schema}\".tasks WHERE state NOT IN ('SUCCEEDED', 'CANCELLED')"
        )
        if left == 0:
            return samples
        assert len(samples) < max_samples, "the tasks did not all finish"
        await asyncio.sleep(0.005)


async def test_the_limit_per_key_holds_across_three_replicas(
    database_url: str, schema: str
) -> None:
    taskapp.OVERLAP_RUNNING.clear()
    taskapp.OVERLAP_PEAK.clear()
    replicas = [
        Replica(make_settings(schema, poll_interval=0.2), load_app("taskapp"), database_url)
        for _ in range(3)
    ]
    for r in replicas:
        await r.start()
    conn = await asyncpg.connect(database_url)
    try:
        async with Client(replicas[0].address) as client:
            specs = (
                [_overlap("user-a", 2)] * 60
                + [_overlap("user-b", 1)] * 30
                + [_overlap(None, None)] * 30
            )
            ids = await client.submit_many(specs)
            samples = await _running_per_key_until_done(conn, schema, ("user-a", "user-b"))
            done = [await client.get(i) for i in ids]
    finally:
        await conn.close()
        for r in replicas:
            await r.stop()
    # What the handlers saw running at once, and what the table showed.
    assert taskapp.OVERLAP_PEAK["user-a"] == 2, taskapp.OVERLAP_PEAK
    assert taskapp.OVERLAP_PEAK["user-b"] == 1, taskapp.OVERLAP_PEAK
    assert taskapp.OVERLAP_PEAK["-"] > 1, "tasks without a key are not limited"
    assert max(a for a, _ in samples) <= 2 and max(b for _, b in samples) <= 1, samples
    assert {t.state for t in done} == {TaskState.SUCCEEDED}
    assert {t.attempts for t in done} == {1}, "waiting charged no attempt"
    keyed = [t for t in done if t.concurrency_key]
    assert {(t.concurrency_key, t.max_concurrent) for t in keyed} == {("user-a", 2), ("user-b", 1)}


async def test_keys_and_a_queues_max_concurrent_hold_together(
    database_url: str, schema: str
) -> None:
    """Keyed tasks of a queue with max_concurrent count against both limits;
    the queue's unkeyed tasks (claim_limited) share its slots."""
    taskapp.OVERLAP_PEAK.clear()
    replicas = [
        Replica(make_settings(schema, poll_interval=0.2), load_app("taskapp"), database_url)
        for _ in range(2)
    ]
    for r in replicas:
        await r.start()
    conn = await asyncpg.connect(database_url)
    try:
        async with Client(replicas[0].address) as client:
            await client.update_queue("default", max_concurrent=3)
            specs = [_overlap(f"k{i % 3}", 2) for i in range(45)] + [_overlap(None, None)] * 15
            ids = await client.submit_many(specs)
            samples: list[int] = []
            while True:
                samples.append(
                    await conn.fetchval(
                        f'SELECT count(*) FROM "{schema}".tasks '
                        "WHERE queue = 'default' AND state = 'RUNNING'"
                    )
                )
                left = await conn.fetchval(
                    f"SELECT count(*) FROM \"{schema}\".tasks WHERE state <> 'SUCCEEDED'"
                )
                if left == 0:
                    break
                assert len(samples) < 5000, "the run did not finish"
                await asyncio.sleep(0.005)
            done = [await client.get(i) for i in ids]
    finally:
        await conn.close()
        for r in replicas:
            await r.stop()
    assert max(samples) == 3, max(samples)
    assert max(taskapp.OVERLAP_PEAK[f"k{i}"] for i in range(3)) <= 2, taskapp.OVERLAP_PEAK
    assert {t.state for t in done} == {TaskState.SUCCEEDED}
    assert {t.attempts for t in done} == {1}


async def test_a_task_waits_queued_while_its_key_is_full_and_starts_when_a_slot_frees(
    database_url: str, schema: str
) -> None:
    replica = Replica(make_settings(schema, poll_interval=5.0), load_app("taskapp"), database_url)
    await replica.start()
    try:
        async with Client(replica.address) as client:
            first = await client.submit(
                "sleep", {"seconds": 1.0}, concurrency_key="k", max_concurrent=1
            )
            await until(lambda: _state_is(client, first.id, TaskState.RUNNING), timeout=5)
            second = await client.submit("echo", "after", concurrency_key="k", max_concurrent=1)
            other = await client.submit("echo", "other key", concurrency_key="j", max_concurrent=1)
            assert (await client.wait(other.id, 5)).state is TaskState.SUCCEEDED
            waiting = await client.get(second.id)
            assert (await client.get(first.id)).state is TaskState.RUNNING
            assert (waiting.state, waiting.attempts) == (TaskState.QUEUED, 0)
            # The first finishing wakes the claim (poll_interval is 5 s).
            done = await client.wait(second.id, 5)
            assert done.state is TaskState.SUCCEEDED and done.attempts == 1
            assert done.started_at is not None
            assert done.started_at >= (await client.get(first.id)).finished_at
    finally:
        await replica.stop()


async def test_keyed_tasks_of_a_start_limited_queue_keep_both_limits(
    database_url: str, schema: str
) -> None:
    """A start-limited queue's keyed tasks are claimed (by claim_start_limited,
    under the tenant's keyed lock): at most `limit` starts per window, at most
    each key's max_concurrent running, across two replicas."""
    taskapp.OVERLAP_PEAK.clear()
    limit, window = 10, 1.0
    replicas = [
        Replica(make_settings(schema, poll_interval=0.2), load_app("taskapp"), database_url)
        for _ in range(2)
    ]
    for r in replicas:
        await r.start()
    conn = await asyncpg.connect(database_url)
    try:
        async with Client(replicas[0].address) as client:
            made = await client.submit("noop", queue="paced", delay_seconds=3600)
            await client.cancel(made.id)  # the queue exists: give it its start limit
            await client.update_queue("paced", start_limit=limit, start_window_seconds=window)
            specs = (
                [_overlap("a", 1, 0.05)] * 10
                + [_overlap("b", 2, 0.05)] * 10
                + [_overlap(None, None)] * 10
            )
            ids = await client.submit_many([dataclasses.replace(s, queue="paced") for s in specs])
            # Before, they were never claimed: this gave up after 3000 samples.
            samples = await _running_per_key_until_done(conn, schema, ("a", "b"), 3000)
            done = [await client.get(i) for i in ids]
            started = await conn.fetch(
                f'SELECT extract(epoch FROM started_at)::float8 AS at FROM "{schema}".tasks '
                "WHERE queue = 'paced' AND started_at IS NOT NULL"
            )
    finally:
        await conn.close()
        for r in replicas:
            await r.stop()
    assert {t.state for t in done} == {TaskState.SUCCEEDED}
    assert {t.attempts for t in done} == {1}
    per_window = Counter(math.floor(r["at"] / window) for r in started)
    assert sum(per_window.values()) == 30 and max(per_window.values()) <= limit, per_window
    assert taskapp.OVERLAP_PEAK["a"] == 1 and taskapp.OVERLAP_PEAK["b"] <= 2, taskapp.OVERLAP_PEAK
    assert max(a for a, _ in samples) <= 1 and max(b for _, b in samples) <= 2, samples


@pytest.mark.parametrize(
    ("key", "limit", "message"),
    [
        ("k", None, "concurrency_key needs max_concurrent"),
        (None, 2, "max_concurrent needs a concurrency_key"),
        ("k", 0, "max_concurrent must be 1..1000000, got 0"),
        ("  ", 1, "concurrency_key must not be blank"),
        ("x" * 201, 1, "concurrency_key is longer than 200 characters"),
        ("a\x00b", 1, "concurrency_key must be printable text"),
    ],
)
async def test_bad_concurrency_options_are_refused_naming_the_field(
    client: Client, key: str | None, limit: int | None, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await client.submit("echo", concurrency_key=key, max_concurrent=limit)


async def test_the_plain_claim_walks_no_keyed_task(db: asyncpg.Connection) -> None:
    """Structural: tasks without a key are claimed as before, through
    tasks_ready, which holds no keyed task: a keyed backlog is never read."""
    await db.execute(
        "INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority, run_at,"
        " concurrency_key, concurrency_limit)"
        " SELECT gen_random_uuid(), 'echo', 'default', 'QUEUED', '1', 1, 1, now(), 'k', 1"
        " FROM generate_series(1, 2000)"
    )
    await db.execute(
        "INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority, run_at)"
        " VALUES (gen_random_uuid(), 'echo', 'default', 'QUEUED', '2', 1, 0, now())"
    )
    await db.execute("ANALYZE tasks")
    explained = db.transaction()
    await explained.start()  # rolled back: EXPLAIN ANALYZE claims what it reads
    try:
        plan = "\n".join(
            r[0]
            for r in await db.fetch(
                "EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF, SUMMARY OFF) "
                + postgres.QUERIES["claim"].sql,
                10,
                "t",
                30.0,
                ["echo"],
            )
        )
    finally:
        await explained.rollback()
    async with db.transaction():
        claimed = await postgres.fetch(
            db, "claim", limit=10, owner="t", lease_seconds=30.0, names=["echo"]
        )
        queues = await postgres.fetch(
            db,
            "claim_queues",
            limit=10,
            owner="t",
            lease_seconds=30.0,
            names=["echo"],
            queues=["default"],
        )
    assert "Index Scan using tasks_ready on tasks" in plan, plan
    assert all(int(n) < 100 for n in re.findall(r"Rows Removed by Filter: (\d+)", plan)), plan
    assert [r["payload"] for r in claimed] == ["2"], "only the task without a key"
    assert queues == []


async def test_tenants_never_share_a_key(db: asyncpg.Connection) -> None:
    """The same key in two tenants: two limits. Tenant b's running task does
    not hold back tenant a's, and a claim for a takes none of b's."""
    await db.execute("INSERT INTO queues (tenant, name) VALUES ('a', 'default'), ('b', 'default')")
    await db.execute(
        "INSERT INTO tasks (id, tenant, name, queue, state, payload, max_attempts, priority,"
        " run_at, concurrency_key, concurrency_limit)"
        " SELECT gen_random_uuid(), t, 'echo', 'default', s, '1', 1, 0, now(), 'user:1', 1"
        " FROM (VALUES ('b', 'RUNNING'), ('b', 'QUEUED'), ('a', 'QUEUED'), ('a', 'QUEUED'))"
        " AS v(t, s)"
    )

    async def claim(tenant: str) -> list[str]:
        async with db.transaction():
            rows = await postgres.fetch(
                db,
                "claim_keyed",
                tenant=tenant,
                limit=10,
                owner="t",
                lease_seconds=30.0,
                names=["echo"],
                queues=None,
                scan=1000,
                locked=[],
            )
        return [r["tenant"] for r in rows]

    assert await claim("a") == ["a"], "one of a's two: a's own limit, not b's running task"
    assert await claim("a") == [], "a's key is at its limit now"
    assert await claim("b") == [], "b's key was at its limit all along"
    ready = await postgres.fetch(db, "keyed_tenants_ready", queues=None, names=["echo"])
    assert sorted(r["tenant"] for r in ready) == ["a", "b"]
