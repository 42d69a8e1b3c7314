"""Enqueue a task inside your own database transaction.

    from treadle.client.enqueue import enqueue

    async with pool.acquire() as conn, conn.transaction():
        order_id = await conn.fetchval("INSERT INTO orders ... RETURNING id")
        await enqueue(conn, "email.send", {"order": order_id}, queue="email")
    # committed: the order and its task exist, and idle replicas were woken;
    # rolled back: neither exists, and no replica ever heard of the task.

`enqueue` writes through the scheduler's own submit statement (`insert_tasks`
of `treadle/scheduler/sql/queries.sql`, read as a file: no scheduler code runs
here) after the scheduler's own checks (`treadle.common.submission`), on the
connection you pass: an asyncpg `Connection` (or a pool's proxy of one) or a
psycopg 3 `AsyncConnection`, told apart by type, so one function serves both.
`enqueue_sync` takes a psycopg 3 `Connection`. No driver is imported here:
the one your connection belongs to is already loaded.

The insert's trigger sends the NOTIFY that wakes idle replicas; PostgreSQL
delivers it when, and only if, the transaction commits. A connection that is
in no transaction (asyncpg; psycopg with autocommit on) gets one of its own,
committed at once; a psycopg connection without autocommit works as psycopg
always does: you commit.

The task goes into `schema` (default: TREADLE_DATABASE_SCHEMA, else
`treadle`), for the duration of these statements only (`SET LOCAL
search_path`, put back afterwards: your own statements in the same
transaction see your search path), in `tenant` (default `default`).

What the scheduler's API does and this does not: check that a replica has a
handler for the task (a task no replica runs waits QUEUED: see
docs/operations.md), authenticate a key, apply rate limits and quotas, and
count the submission in the replica's metrics. Whoever holds the database's
credentials is trusted like a replica. Bad input raises `InvalidArgument`
naming the field, before any statement runs; a schema that was never migrated
raises `Unavailable`; any other database error is your driver's own, raised
as it is (your transaction is then aborted, as for any failed statement).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import sys
from collections.abc import Generator, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar

from treadle.common import errors, telemetry, wire
from treadle.common.queries import Query, parse_queries
from treadle.common.submission import (
    DEFAULT_TENANT,
    MAX_PAYLOAD_BYTES,
    MAX_PAYLOAD_DEPTH,
    NewTask,
    check_spec,
)
from treadle.common.tasks import DEFAULT_QUEUE, RetryPolicy, TaskSpec, TaskState

if TYPE_CHECKING:
    import asyncpg
    import psycopg

__all__ = ["DEFAULT_SCHEMA", "Enqueued", "SupportsSpec", "enqueue", "enqueue_sync"]

#: The schema when neither `schema` nor TREADLE_DATABASE_SCHEMA names one
#: (the scheduler's default).
DEFAULT_SCHEMA = "treadle"
#: SQLSTATE undefined_table: the schema holds no Treadle tables.
_UNDEFINED_TABLE = "42P01"

#: A reference's payload type: `enqueue(conn, ref, payload)` checks `payload` against it.
P = TypeVar("P")
P_contra = TypeVar("P_contra", contravariant=True)

#: A statement and its arguments, in $1..$n order.
Statement: TypeAlias = tuple[str, Sequence[Any]]
#: What a driver returns for a statement: its rows, each readable by column name.
Rows: TypeAlias = Sequence[Mapping[str, Any]]
#: The statements of one enqueue, in order; each is sent the rows of the last.
Steps: TypeAlias = Generator[Statement, Rows, "Enqueued"]


class SupportsSpec(Protocol[P_contra]):
    """A task reference (`treadle.tasks.TaskRef` is one): makes the `TaskSpec`
    of one submission of its task with a payload of its type, with its own
    defaults (queue, priority, retries...) under the overrides given to
    `enqueue` (only those given)."""

    def spec(
        self,
        payload: P_contra,
        /,
        *,
        delay: float | timedelta | None = ...,
        run_at: datetime | None = ...,
        priority: int | None = ...,
        idempotency_key: str | None = ...,
        queue: str | None = ...,
        max_attempts: int | None = ...,
        timeout: float | None = ...,
        retry: RetryPolicy | None = ...,
        concurrency_key: str | None = ...,
        max_concurrent: int | None = ...,
    ) -> TaskSpec: ...


@dataclasses.dataclass(frozen=True)
class Enqueued:
    """A task `enqueue` stored (or found: `existing`, its idempotency key was
    taken), as the transaction sees it: visible to others once it commits."""

    id: str
    existing: bool
    state: TaskState
    queue: str
    run_at: datetime


def _submit_queries() -> dict[str, Query]:
    """The scheduler's submit statements, from its SQL file. The file is found
    through the `treadle` namespace, so that no code of `treadle.scheduler`
    (its package `__init__` included) runs in a client."""
    sql = resources.files("treadle") / "scheduler" / "sql" / "queries.sql"
    queries = parse_queries(sql.read_text(), "treadle/scheduler/sql/queries.sql")
    return {name: queries[name] for name in ("insert_tasks", "select_by_idempotency")}


_QUERIES = _submit_queries()
_SET_PATH = "SELECT current_setting('search_path') AS old, set_config('search_path', $1, true)"
_PUT_BACK_PATH = "SELECT set_config('search_path', $1, true)"


def _spec(task: str | SupportsSpec[Any], payload: Any, overrides: Mapping[str, Any]) -> TaskSpec:
    given = {name: value for name, value in overrides.items() if value is not None}
    if isinstance(task, str):
        delay = given.get("delay")
        return TaskSpec(
            name=task,
            payload_json=wire.encode_json(payload, "payload"),
            queue=given.get("queue"),
            priority=given.get("priority", 0),
            run_at=given.get("run_at"),
            max_attempts=given.get("max_attempts"),
            idempotency_key=given.get("idempotency_key"),
            delay_seconds=delay.total_seconds() if isinstance(delay, timedelta) else delay,
            timeout_seconds=given.get("timeout"),
            retry=given.get("retry"),
            concurrency_key=given.get("concurrency_key"),
            max_concurrent=given.get("max_concurrent"),
        )
    make = getattr(task, "spec", None)
    if not callable(make):
        raise TypeError(
            f"task must be a task name (str) or a reference with a spec() method, "
            f"got {type(task).__name__}"
        )
    spec = make(payload, **given)
    if not isinstance(spec, TaskSpec):
        raise TypeError(
            f"{type(task).__name__}.spec() returned {type(spec).__name__}, not TaskSpec"
        )
    return spec


def _prepare(
    task: str | SupportsSpec[Any],
    payload: Any,
    tenant: str,
    schema: str | None,
    **overrides: Any,
) -> tuple[Steps, str]:
    """The statements that store the submission, once checked by the
    scheduler's rules (`InvalidArgument` naming the field), in `tenant`; and
    the search_path they run under: `schema` (or TREADLE_DATABASE_SCHEMA's,
    else the default)."""
    if not isinstance(tenant, str) or not tenant.strip():
        raise errors.InvalidArgument("tenant must not be blank")
    new = check_spec(
        _spec(task, payload, overrides),
        DEFAULT_QUEUE,
        MAX_PAYLOAD_BYTES,
        datetime.now(UTC),
        telemetry.current_carrier(),
        MAX_PAYLOAD_DEPTH,
        tenant=tenant,
    )
    name = schema or os.environ.get("TREADLE_DATABASE_SCHEMA") or DEFAULT_SCHEMA
    path = '"' + name.replace('"', '""') + '"'
    return _steps(new, path), path


@contextlib.contextmanager
def _schema_checked(path: str) -> Iterator[None]:
    """A schema without Treadle's tables raises `Unavailable` saying so; any
    other error of the driver goes up as it is."""
    try:
        yield
    except Exception as exc:
        if getattr(exc, "sqlstate", None) != _UNDEFINED_TABLE:
            raise
        raise errors.Unavailable(
            f"schema {path} has no Treadle tables ({exc}): run `treadle migrate` with "
            "TREADLE_DATABASE_SCHEMA set to it, or pass enqueue the schema= your replicas use"
        ) from exc


def _steps(new: NewTask, path: str) -> Steps:
    """The statements of one enqueue: into the schema, the insert (and, when
    the idempotency key was taken, the read of the task holding it), back to
    the caller's search_path."""
    (row,) = yield _SET_PATH, [path]
    old = row["old"]
    insert = _QUERIES["insert_tasks"]
    rows = yield (
        insert.sql,
        insert.args(
            ids=[new.id],
            names=[new.name],
            queues=[new.queue],
            payloads=[new.payload_json],
            max_attempts=[new.max_attempts],
            priorities=[new.priority],
            run_ats=[new.run_at],
            idempotency_keys=[new.idempotency_key],
            timeouts=[new.timeout_seconds],
            backoff_bases=[new.retry.base_seconds if new.retry else None],
            backoff_factors=[new.retry.factor if new.retry else None],
            backoff_maxes=[new.retry.max_seconds if new.retry else None],
            trace_contexts=[
                wire.encode_json(dict(new.trace_context)) if new.trace_context else None
            ],
            tenants=[new.tenant],
            submitters=[new.submitted_by],
            concurrency_keys=[new.concurrency_key],
            concurrency_limits=[new.max_concurrent],
        ),
    )
    existing = not rows
    if existing:
        select = _QUERIES["select_by_idempotency"]
        rows = yield (
            select.sql,
            select.args(tenants=[new.tenant], queues=[new.queue], keys=[new.idempotency_key]),
        )
        if not rows:
            raise errors.Unavailable(
                f"the task holding idempotency key {new.idempotency_key!r} was removed "
                "while this enqueue ran; try again"
            )
    yield _PUT_BACK_PATH, [old]
    row = rows[0]
    return Enqueued(
        id=str(row["id"]),
        existing=existing,
        state=TaskState(row["state"]),
        queue=row["queue"] if existing else new.queue,
        run_at=row["run_at"],
    )


def _is(conn: Any, module: str, *classes: str) -> bool:
    """Whether `conn` is an instance of one of `module`'s `classes` (dotted
    below the module); False when the driver was never imported."""
    loaded = sys.modules.get(module)
    if loaded is None:
        return False
    for dotted in classes:
        cls: Any = loaded
        for part in dotted.split("."):
            cls = getattr(cls, part, None)
        if isinstance(cls, type) and isinstance(conn, cls):
            return True
    return False


async def enqueue(
    conn: asyncpg.Connection | psycopg.AsyncConnection[Any],
    task: str | SupportsSpec[P],
    payload: P = None,  # type: ignore[assignment]
    *,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    concurrency_key: str | None = None,
    max_concurrent: int | None = None,
    tenant: str = DEFAULT_TENANT,
    schema: str | None = None,
) -> Enqueued:
    """Store `task` (a name, or a reference: `SupportsSpec`) with `payload` in
    `conn`'s transaction; replicas see it and wake when that commits.

    `delay` (seconds, or a timedelta) or `run_at` schedule it; `priority`,
    `queue`, `max_attempts`, `timeout` (seconds per attempt) and `retry`
    override the reference's defaults, then the queue's (a name's queue is
    `default` unless given); `idempotency_key` returns the task already
    holding the key in that queue (`Enqueued.existing`), committed or made
    earlier in this same transaction; `concurrency_key` with `max_concurrent`
    limits the tasks of that key running at once (docs/python-api.md)."""
    steps, path = _prepare(
        task,
        payload,
        tenant,
        schema,
        delay=delay,
        run_at=run_at,
        priority=priority,
        queue=queue,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        timeout=timeout,
        retry=retry,
        concurrency_key=concurrency_key,
        max_concurrent=max_concurrent,
    )
    if _is(conn, "asyncpg", "Connection", "pool.PoolConnectionProxy"):
        with _schema_checked(path):
            return await _on_asyncpg(conn, steps)
    if _is(conn, "psycopg", "AsyncConnection"):
        with _schema_checked(path):
            return await _on_psycopg(conn, steps)
    if _is(conn, "psycopg", "Connection"):
        raise TypeError("a sync psycopg Connection: call enqueue_sync(conn, ...)")
    raise TypeError(
        f"enqueue takes an asyncpg Connection or a psycopg AsyncConnection, "
        f"got {type(conn).__module__}.{type(conn).__name__}"
    )


def enqueue_sync(
    conn: psycopg.Connection[Any],
    task: str | SupportsSpec[P],
    payload: P = None,  # type: ignore[assignment]
    *,
    delay: float | timedelta | None = None,
    run_at: datetime | None = None,
    priority: int | None = None,
    queue: str | None = None,
    idempotency_key: str | None = None,
    max_attempts: int | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | None = None,
    concurrency_key: str | None = None,
    max_concurrent: int | None = None,
    tenant: str = DEFAULT_TENANT,
    schema: str | None = None,
) -> Enqueued:
    """`enqueue` on a psycopg 3 (sync) `Connection`."""
    if not _is(conn, "psycopg", "Connection"):
        raise TypeError(
            f"enqueue_sync takes a psycopg Connection, got "
            f"{type(conn).__module__}.{type(conn).__name__} (asyncpg: await enqueue(...))"
        )
    steps, path = _prepare(
        task,
        payload,
        tenant,
        schema,
        delay=delay,
        run_at=run_at,
        priority=priority,
        queue=queue,
        idempotency_key=idempotency_key,
        max_attempts=max_attempts,
        timeout=timeout,
        retry=retry,
        concurrency_key=concurrency_key,
        max_concurrent=max_concurrent,
    )
    from psycopg import RawCursor, pq
    from psycopg.rows import dict_row

    def run(steps: Steps) -> Enqueued:
        with RawCursor(conn, row_factory=dict_row) as cur:
            statement = next(steps)
            while True:
                cur.execute(*statement)
                try:
                    statement = steps.send(cur.fetchall())
                except StopIteration as done:
                    result: Enqueued = done.value
                    return result

    with _schema_checked(path):
        if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
            with conn.transaction():
                return run(steps)
        return run(steps)


async def _on_asyncpg(conn: Any, steps: Steps) -> Enqueued:
    async def run() -> Enqueued:
        statement = next(steps)
        while True:
            sql, args = statement
            rows = await conn.fetch(sql, *args)
            try:
                statement = steps.send(rows)
            except StopIteration as done:
                result: Enqueued = done.value
                return result

    if conn.is_in_transaction():
        return await run()
    async with conn.transaction():
        return await run()


async def _on_psycopg(conn: Any, steps: Steps) -> Enqueued:
    from psycopg import AsyncRawCursor, pq
    from psycopg.rows import dict_row

    async def run() -> Enqueued:
        async with AsyncRawCursor(conn, row_factory=dict_row) as cur:
            statement = next(steps)
            while True:
                await cur.execute(*statement)
                try:
                    statement = steps.send(await cur.fetchall())
                except StopIteration as done:
                    result: Enqueued = done.value
                    return result

    if conn.autocommit and conn.info.transaction_status == pq.TransactionStatus.IDLE:
        async with conn.transaction():
            return await run()
    return await run()
