"""`enqueue`: a task stored in the caller's own transaction, on asyncpg and
psycopg 3 connections; it exists, and replicas wake, only once that commits."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import psycopg
import pytest
from support import count_rows, make_settings

from treadle.client import Client
from treadle.client.enqueue import Enqueued, enqueue, enqueue_sync
from treadle.common.errors import InvalidArgument, Unavailable
from treadle.common.tasks import RetryPolicy, TaskSpec, TaskState
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica


@pytest.fixture
def settings(schema: str) -> Settings:
    """A replica that never polls within a test: only a NOTIFY wakes its
    dispatcher, so a task run promptly proves the commit woke it."""
    return make_settings(schema, poll_interval=600.0)


@pytest.fixture
async def conn(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """An application's own connection: its search_path is not Treadle's schema."""
    connection = await asyncpg.connect(database_url)
    yield connection
    await connection.close()


async def test_a_committed_task_wakes_a_waiting_replica_which_runs_it(
    conn: asyncpg.Connection, schema: str, client: Client, database_url: str
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(f"treadle_ready_{schema}", lambda *args: heard.put_nowait(args[3]))
    try:
        async with conn.transaction():
            await conn.execute("CREATE TEMP TABLE orders (id int)")
            await conn.execute("INSERT INTO orders VALUES (1)")
            done = await enqueue(conn, "echo", {"order": 1}, schema=schema, priority=5)
            assert done.state is TaskState.QUEUED and not done.existing
            assert await count_rows(database_url, schema) == 0, "not visible before commit"
            assert await conn.fetchval("SHOW search_path") == '"$user", public', "put back"
        async with asyncio.timeout(10):
            assert await heard.get() == "ready"
        finished = await client.wait(done.id, timeout=10)
    finally:
        await listener.close()
    assert finished.state is TaskState.SUCCEEDED and finished.result == {"order": 1}
    assert (finished.name, finished.queue, finished.priority) == ("echo", "default", 5)


async def test_a_keyed_task_says_keyed_on_commit_and_runs(
    conn: asyncpg.Connection, schema: str, client: Client, database_url: str
) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    listener = await asyncpg.connect(database_url)
    await listener.add_listener(f"treadle_ready_{schema}", lambda *args: heard.put_nowait(args[3]))
    try:
        async with conn.transaction():
            done = await enqueue(
                conn, "echo", 1, concurrency_key="order:1", max_concurrent=1, schema=schema
            )
        async with asyncio.timeout(10):
            assert await heard.get() == "keyed"
        finished = await client.wait(done.id, timeout=10)  # the replica never polls
    finally:
        await listener.close()
    assert finished.state is TaskState.SUCCEEDED
    assert (finished.concurrency_key, finished.max_concurrent) == ("order:1", 1)
    with pytest.raises(InvalidArgument, match="concurrency_key needs max_concurrent"):
        await enqueue(conn, "echo", 1, concurrency_key="order:1", schema=schema)


async def test_a_rolled_back_task_never_exists(
    conn: asyncpg.Connection, db: asyncpg.Connection, schema: str, database_url: str
) -> None:
    transaction = conn.transaction()
    await transaction.start()
    await enqueue(conn, "echo", 1, schema=schema)
    await transaction.rollback()
    assert await count_rows(database_url, schema) == 0


async def test_an_idempotency_key_inside_a_transaction(
    conn: asyncpg.Connection, db: asyncpg.Connection, schema: str, database_url: str
) -> None:
    async with conn.transaction():
        first = await enqueue(conn, "echo", 1, idempotency_key="order-7", schema=schema)
        again = await enqueue(conn, "echo", 2, idempotency_key="order-7", schema=schema)
    assert (again.id, again.existing, first.existing) == (first.id, True, False)
    later = await enqueue(conn, "echo", 3, idempotency_key="order-7", schema=schema)
    assert (later.id, later.existing) == (first.id, True)
    assert await count_rows(database_url, schema) == 1
    # The same key in another queue is another task.
    other = await enqueue(conn, "echo", 4, idempotency_key="order-7", queue="q2", schema=schema)
    assert other.id != first.id and not other.existing


async def test_without_a_transaction_it_commits_at_once(
    conn: asyncpg.Connection,
    db: asyncpg.Connection,
    schema: str,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TREADLE_DATABASE_SCHEMA", schema)
    done = await enqueue(conn, "echo", None, delay=3600, tenant="acme")
    assert not conn.is_in_transaction()
    assert await count_rows(database_url, schema) == 1
    row = await db.fetchrow("SELECT tenant, state, run_at FROM tasks WHERE id = $1", done.id)
    assert (row["tenant"], row["state"]) == ("acme", "SCHEDULED")
    assert done.state is TaskState.SCHEDULED and done.run_at == row["run_at"]


async def test_bad_input_is_refused_before_any_statement(
    conn: asyncpg.Connection, db: asyncpg.Connection, schema: str, database_url: str
) -> None:
    async with conn.transaction():
        with pytest.raises(InvalidArgument, match=r"priority 1000 is out of range -100\.\.100"):
            await enqueue(conn, "echo", 1, priority=1000, schema=schema)
        with pytest.raises(InvalidArgument, match="payload is not JSON-serialisable"):
            await enqueue(conn, "echo", float("nan"), schema=schema)
        with pytest.raises(InvalidArgument, match="give run_at or delay_seconds, not both"):
            await enqueue(conn, "echo", 1, delay=1, run_at=datetime.now(UTC), schema=schema)
        with pytest.raises(InvalidArgument, match="queue must not be blank"):
            await enqueue(conn, "echo", 1, queue=" ", schema=schema)
        assert await conn.fetchval("SELECT 1") == 1, "the transaction is still usable"
    assert await count_rows(database_url, schema) == 0
    with pytest.raises(TypeError, match="asyncpg Connection or a psycopg AsyncConnection"):
        await enqueue(object(), "echo", 1)  # type: ignore[arg-type]


async def test_a_schema_never_migrated_is_unavailable(conn: asyncpg.Connection) -> None:
    with pytest.raises(Unavailable, match=r'schema "t_nowhere" has no Treadle tables'):
        await enqueue(conn, "echo", 1, schema="t_nowhere")


class EchoRef:
    """A task reference as typed references make them: its own defaults, under
    the overrides given."""

    def __init__(self) -> None:
        self.overrides: dict[str, Any] = {}

    def spec(self, payload: Any, /, **overrides: Any) -> TaskSpec:
        self.overrides = overrides
        return TaskSpec(
            name="echo",
            payload_json=f'{{"wrapped": {payload}}}',
            queue=overrides.get("queue", "refs"),
            max_attempts=3,
        )


async def test_a_reference_makes_the_spec_with_only_the_overrides_given(
    conn: asyncpg.Connection, db: asyncpg.Connection, schema: str
) -> None:
    ref = EchoRef()
    done = await enqueue(conn, ref, 7, idempotency_key="k", schema=schema)
    assert ref.overrides == {"idempotency_key": "k"}
    row = await db.fetchrow("SELECT queue, payload, max_attempts FROM tasks WHERE id = $1", done.id)
    assert (row["queue"], row["payload"], row["max_attempts"]) == ("refs", '{"wrapped": 7}', 3)


async def test_psycopg_async_commit_runs_and_rollback_leaves_nothing(
    database_url: str, schema: str, client: Client
) -> None:
    async with await psycopg.AsyncConnection.connect(database_url) as pconn:
        async with pconn.transaction():
            kept = await enqueue(pconn, "echo", {"via": "psycopg"}, schema=schema)
            later = await enqueue(
                pconn,
                "echo",
                [1, "two"],
                delay=timedelta(minutes=5),
                priority=-5,
                max_attempts=3,
                timeout=2.5,
                retry=RetryPolicy(0.5, 3.0, 60.0),
                schema=schema,
            )
        async with pconn.transaction():
            await enqueue(pconn, "echo", {"via": "rolled back"}, schema=schema)
            raise psycopg.Rollback  # the block rolls back, and swallows it
        async with pconn.transaction():
            first = await enqueue(pconn, "echo", 1, idempotency_key="p", schema=schema)
            again = await enqueue(pconn, "echo", 2, idempotency_key="p", schema=schema)
        assert (again.id, again.existing) == (first.id, True)
    finished = await client.wait(kept.id, timeout=10)
    assert finished.state is TaskState.SUCCEEDED and finished.result == {"via": "psycopg"}
    waiting = await client.get(later.id)
    assert (waiting.state, waiting.payload, waiting.priority) == (
        TaskState.SCHEDULED,
        [1, "two"],
        -5,
    )
    assert (waiting.max_attempts, waiting.timeout_seconds) == (3, 2.5)
    assert waiting.retry == RetryPolicy(0.5, 3.0, 60.0)
    assert waiting.run_at == later.run_at and later.state is TaskState.SCHEDULED
    assert await count_rows(database_url, schema) == 3


async def test_psycopg_sync_connection(
    database_url: str, schema: str, client: Client, replica: Replica
) -> None:
    def in_a_transaction() -> tuple[Enqueued, int]:
        with psycopg.connect(database_url) as pconn:  # commits when the block ends
            done = enqueue_sync(pconn, "square", {"x": 3}, queue="math", schema=schema)
            with psycopg.connect(database_url, autocommit=True) as other:
                row = other.execute(f'SELECT count(*) FROM "{schema}".tasks').fetchone()
            assert row is not None
            return done, row[0]

    done, seen_before_commit = await asyncio.to_thread(in_a_transaction)
    assert seen_before_commit == 0
    finished = await client.wait(done.id, timeout=10)
    assert finished.state is TaskState.SUCCEEDED and finished.result["value"] == 9
    with pytest.raises(TypeError, match="enqueue_sync takes a psycopg Connection"):
        enqueue_sync(object(), "echo")  # type: ignore[arg-type]
