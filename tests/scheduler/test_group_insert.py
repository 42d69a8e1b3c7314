"""Group commit of single submissions (`treadle.scheduler.group`), on a real
store: what arrives together shares a statement; each caller keeps its own
outcome; a lone submission is stored on its own."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator

import asyncpg
import pytest

from treadle.common.errors import TreadleError
from treadle.common.tasks import TaskSpec
from treadle.scheduler import postgres
from treadle.scheduler.group import GroupInsert
from treadle.scheduler.loops import utcnow
from treadle.scheduler.model import NewTask, check_spec
from treadle.scheduler.store import Store


@pytest.fixture
async def store(db: asyncpg.Connection, database_url: str, schema: str) -> AsyncIterator[Store]:
    pool = await postgres.create_pool(database_url, schema, 4)
    try:
        yield Store(pool, schema)
    finally:
        await postgres.close_pool(pool)


def new_task(**spec: object) -> NewTask:
    values: dict[str, object] = {"name": "noop", "queue": "q", "payload_json": "null"}
    values.update(spec)
    return check_spec(TaskSpec(**values), "", 1 << 20, utcnow(), None, 64, tenant="default")  # type: ignore[arg-type]


async def stored(db: asyncpg.Connection) -> int:
    return int(await db.fetchval("SELECT count(*) FROM tasks"))


async def test_a_lone_submission_is_stored_on_its_own(store: Store, db: asyncpg.Connection) -> None:
    grouped = GroupInsert(store.insert)
    for _ in range(3):
        submitted, together = await grouped(new_task())
        assert together == 1
        row = await db.fetchrow("SELECT id, state FROM tasks WHERE id = $1", submitted.task.id)
        assert row is not None and row["state"] == "QUEUED"
    assert await stored(db) == 3


async def test_submissions_that_arrive_together_share_statements(
    store: Store, db: asyncpg.Connection
) -> None:
    grouped = GroupInsert(store.insert)
    tasks = [new_task(payload_json=str(i)) for i in range(50)]
    results = await asyncio.gather(*(grouped(t) for t in tasks))
    # The first is stored alone; the 49 that queued behind it, together.
    assert [together for _, together in results] == [1] + [49] * 49
    # Each caller got its own task back, committed.
    assert [s.task.id for s, _ in results] == [str(t.id) for t in tasks]
    rows = await db.fetch("SELECT id::text, payload::text FROM tasks")
    expected = {(str(t.id), str(i)) for i, t in enumerate(tasks)}
    assert {(r["id"], r["payload"]) for r in rows} == expected


async def test_a_group_is_at_most_max_group(store: Store, db: asyncpg.Connection) -> None:
    grouped = GroupInsert(store.insert, max_group=10)
    results = await asyncio.gather(*(grouped(new_task()) for _ in range(31)))
    assert sorted(together for _, together in results) == [1] + [10] * 30
    assert await stored(db) == 31


async def test_a_refused_member_fails_alone(store: Store, db: asyncpg.Connection) -> None:
    grouped = GroupInsert(store.insert)
    good = [new_task() for _ in range(6)]
    # Past the checks (built by hand), refused by the table's CHECK constraint.
    bad = dataclasses.replace(new_task(), priority=1000)
    outcomes = await asyncio.gather(
        *(grouped(t) for t in [good[0], *good[1:3], bad, *good[3:]]), return_exceptions=True
    )
    assert isinstance(outcomes[3], TreadleError)
    assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 3)
    ids = {r["id"] for r in await db.fetch("SELECT id FROM tasks")}
    assert ids == {t.id for t in good}


async def test_the_same_idempotency_key_twice_in_a_group_yields_one_task(
    store: Store, db: asyncpg.Connection
) -> None:
    grouped = GroupInsert(store.insert)
    _, second, third = await asyncio.gather(
        grouped(new_task()),
        grouped(new_task(idempotency_key="k")),
        grouped(new_task(idempotency_key="k")),
    )
    assert second[0].task.id == third[0].task.id
    assert (second[0].existing, third[0].existing) == (False, True)
    assert await stored(db) == 2


async def test_a_caller_cancelled_before_its_statement_stores_nothing(
    store: Store, db: asyncpg.Connection
) -> None:
    grouped = GroupInsert(store.insert)
    leader = asyncio.create_task(grouped(new_task()))
    await asyncio.sleep(0)  # the leader's statement is in flight
    follower = asyncio.create_task(grouped(new_task()))
    await asyncio.sleep(0)
    follower.cancel()
    await leader
    with pytest.raises(asyncio.CancelledError):
        await follower
    assert await stored(db) == 1
    # The group goes on working afterwards.
    assert (await grouped(new_task()))[1] == 1
    assert await stored(db) == 2
