"""The task store: every read and write of task rows, through named queries.

Speaks domain types (`Task`, `NewTask`, `ClaimedTask`, `Lease`, `Outcome`) on
one side and asyncpg on the other; driver errors become Treadle's errors in
`postgres.translated`. Payloads and results pass through as JSON text (asyncpg
returns json/jsonb columns as text): the store never decodes them.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
import uuid
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import asyncpg

from treadle.common.tasks import (
    Queue,
    QueueUpdate,
    ReplicaInfo,
    RetryPolicy,
    Submitted,
    Task,
    TaskError,
    TaskFilter,
    TaskSelection,
    TaskState,
)
from treadle.common.telemetry import trace_id_of
from treadle.scheduler import postgres
from treadle.scheduler.listener import cancel_channel, ready_channel
from treadle.scheduler.model import Applied, ClaimedTask, Lease, NewTask, Outcome, unrunnable

#: Seconds between looks for limited queues while none has ready tasks.
LIMITED_RECHECK = 0.5
#: The longest a replica leaves a start-limited queue whose window is full
#: alone (a long window: a raised limit applies within this).
MAX_HOLD = 5.0
#: Ready tasks a claim of a queue with a keyed start limit looks at (the
#: first in claim order): tasks further back wait while all of these belong
#: to keys whose window is full.
START_LIMIT_SCAN = 1000
#: Ready tasks with a concurrency key a keyed claim looks at (the first in
#: claim order): tasks further back wait while all of these belong to keys
#: at their limit.
KEYED_SCAN = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Limited:
    """The limits of a limited queue with ready tasks: `max_concurrent`
    (`concurrent`), a start limit, keyed by a payload field or not."""

    concurrent: bool
    start_limited: bool
    keyed: bool


def _retry(row: asyncpg.Record) -> RetryPolicy:
    return RetryPolicy(row["backoff_base"], row["backoff_factor"], row["backoff_max"])


_DEFAULT_RETRY = RetryPolicy()


def _shown_retry(row: asyncpg.Record) -> RetryPolicy:
    """The retry policy to show: a value that is not finite (a row written by
    hand) as the default, so every reader, GraphQL's Float included, takes it."""
    retry = _retry(row)
    return RetryPolicy(
        *(
            value if math.isfinite(value) else default
            for value, default in (
                (retry.base_seconds, _DEFAULT_RETRY.base_seconds),
                (retry.factor, _DEFAULT_RETRY.factor),
                (retry.max_seconds, _DEFAULT_RETRY.max_seconds),
            )
        )
    )


def _queue(row: asyncpg.Record) -> Queue:
    return postgres.from_row(Queue, row, retry=_shown_retry(row))


def _error(data: Any) -> TaskError:
    """A stored error; one that is not what the store writes (a row written by
    hand) is read as an `UnreadableError` showing what is there."""
    try:
        failed_at = data.get("failed_at")
        return TaskError(
            type=str(data["type"]),
            message=str(data["message"]),
            traceback=str(data.get("traceback", "")),
            attempt=int(data.get("attempt", 0)),
            failed_at=postgres.finite_time(datetime.fromisoformat(failed_at))
            if failed_at
            else None,
        )
    except (AttributeError, KeyError, TypeError, ValueError, OverflowError):
        return TaskError(type="UnreadableError", message=f"stored error: {json.dumps(data)[:500]}")


def _storable(text: str) -> str:
    """`text` as jsonb can store it: NUL and lone surrogates shown as escapes
    (`\\x00`, `\\ud800`), so what the handler said is still readable."""
    if text.isascii() and "\x00" not in text:
        return text
    return text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode()


def error_json(error: TaskError) -> str:
    data = dataclasses.asdict(error)
    data["failed_at"] = error.failed_at.isoformat() if error.failed_at else None
    for field in ("type", "message", "traceback"):
        data[field] = _storable(data[field])
    return json.dumps(data)


def _json(raw: str | None) -> Any:
    """A JSON column's value (SQL NULL as None), the most common ones unparsed:
    for the error columns, which the store itself writes."""
    if raw is None or raw == "null":
        return None
    if raw == "[]":
        return []
    return json.loads(raw)


def _task(row: asyncpg.Record) -> Task:
    error = _json(row["error"])
    errors = _json(row["errors"])
    timeout = row["timeout_seconds"]
    return postgres.from_row(
        Task,
        row,
        id=str(row["id"]),
        state=TaskState(row["state"]),
        payload_json=row["payload"],
        result_json=row["result"],
        error=_error(error) if error else None,
        errors=tuple(_error(e) for e in errors) if isinstance(errors, list) else (),
        timeout_seconds=timeout if timeout is None or math.isfinite(timeout) else None,
        retry=_shown_retry(row),
        trace_id=trace_id_of(row["trace_context"]),
        max_concurrent=row["concurrency_limit"],
    )


def _claimed(row: asyncpg.Record, owner: str) -> ClaimedTask:
    """A task `owner` just claimed, under the lease the claim took. A row
    that cannot run (written by hand, or by older code) still becomes one,
    with `poison` saying why: the worker ends it DEAD."""
    lease = Lease(str(row["id"]), owner, row["claims"])
    try:
        raw = row["trace_context"]
        task = postgres.from_row(
            ClaimedTask,
            row,
            lease=lease,
            payload_json=row["payload"],
            retry=_retry(row),
            trace_context=json.loads(raw) if raw else None,
            poison=None,
        )
    except Exception as exc:  # whatever a corrupt row makes the conversion raise
        return _poisoned(row, lease, f"its row cannot be read: {exc!r}")
    if postgres.infinite(row["run_at"]):
        sign = "-" if row["run_at"] == datetime.min else ""
        return dataclasses.replace(task, poison=f"run_at is {sign}infinity, not a finite time")
    poison = unrunnable(task)
    return dataclasses.replace(task, poison=poison) if poison else task


def _poisoned(row: asyncpg.Record, lease: Lease, reason: str) -> ClaimedTask:
    """The least of a claimed row a DEAD outcome needs."""
    return ClaimedTask(
        lease=lease,
        tenant=str(row["tenant"]),
        name=str(row["name"]),
        queue=str(row["queue"]),
        payload_json="null",
        attempts=int(row["attempts"]),
        max_attempts=1,
        run_at=datetime.min.replace(tzinfo=UTC),
        started_at=None,
        timeout_seconds=None,
        retry=RetryPolicy(),
        poison=reason,
    )


def _inserted(new: NewTask, row: asyncpg.Record) -> Task:
    """The task just stored: what was sent, and what the database decided."""
    return Task(
        id=str(new.id),
        name=new.name,
        queue=new.queue,
        state=TaskState(row["state"]),
        payload_json=new.payload_json,
        result_json=None,
        error=None,
        attempts=0,
        max_attempts=row["max_attempts"],
        priority=new.priority,
        run_at=postgres.finite_time(row["run_at"]),
        created_at=row["created_at"],
        idempotency_key=new.idempotency_key,
        timeout_seconds=row["timeout_seconds"],
        retry=_retry(row),
        trace_id=trace_id_of(new.trace_context),
        concurrency_key=new.concurrency_key,
        max_concurrent=new.max_concurrent,
    )


def _backoff(retry: RetryPolicy | None) -> tuple[float | None, float | None, float | None]:
    """A retry policy as its three columns (all None: the queue's, or as it is)."""
    if retry is None:
        return None, None, None
    return retry.base_seconds, retry.factor, retry.max_seconds


def _ids(selection: TaskSelection) -> list[uuid.UUID] | None:
    """The selection's ids (checked by the caller), None when it names none."""
    return [uuid.UUID(i) for i in selection.ids] or None


@dataclasses.dataclass(frozen=True)
class Changed:
    """A task a bulk action changed: its id, queue and state after it
    (RUNNING: asked to cancel; for a purge, the state it was deleted in)."""

    task_id: str
    queue: str
    state: TaskState


@dataclasses.dataclass(frozen=True)
class Reclaimed:
    """A task the reaper took back: its new state (QUEUED, or DEAD after too
    many losses), queue, the replica that lost it, and the error recorded."""

    task_id: str
    state: TaskState
    tenant: str
    queue: str
    owner: str
    error: TaskError
    name: str = ""
    max_attempts: int = 0
    #: The submitter's W3C trace context stored with the task (for its log line).
    trace_context: Mapping[str, str] | None = None


@dataclasses.dataclass(frozen=True)
class Poisoned:
    """A task whose stored row a loop could not handle, ended DEAD: its tenant,
    queue and why."""

    task_id: str
    tenant: str
    queue: str
    reason: str


class Store(postgres.PoolStore):
    """Task rows in one schema of one PostgreSQL database.

    Every method made for a caller takes the caller's tenant first, and the
    reads `submitted_by`: None reads every task of the tenant, a key id only
    those that key submitted (`principal.Principal.submitted_by`)."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        super().__init__(pool)
        self.schema = schema
        self.channel = ready_channel(schema)
        self.cancel_channel = cancel_channel(schema)
        #: Queues (tenant, name) with a max_concurrent limit or a start limit
        #: and ready tasks, as of the last claim, with their limits.
        self.limited: dict[tuple[str, str], Limited] = {}
        self._limited_checked_at = float("-inf")
        #: Tenants with ready tasks that carry a concurrency key, as of the last
        #: look (rechecked like `limited`).
        self.keyed: list[str] = []
        #: Start-limited queues whose window is full, until when (monotonic):
        #: no claim looks at them before then.
        self.held: dict[tuple[str, str], float] = {}

    async def insert(self, tasks: Sequence[NewTask], conn: Any | None = None) -> list[Submitted]:
        """Store `tasks` in one statement, on `conn` when given (inside the
        caller's transaction); an idempotency key already in use in the task's
        queue yields the existing task instead."""
        if conn is None:
            async with postgres.acquired(self.pool) as conn:
                return await self.insert(tasks, conn)
        backoffs = [_backoff(t.retry) for t in tasks]
        rows = await postgres.fetch(
            conn,
            "insert_tasks",
            ids=[t.id for t in tasks],
            names=[t.name for t in tasks],
            queues=[t.queue for t in tasks],
            payloads=[t.payload_json for t in tasks],
            max_attempts=[t.max_attempts for t in tasks],
            priorities=[t.priority for t in tasks],
            run_ats=[t.run_at for t in tasks],
            idempotency_keys=[t.idempotency_key for t in tasks],
            timeouts=[t.timeout_seconds for t in tasks],
            backoff_bases=[b[0] for b in backoffs],
            backoff_factors=[b[1] for b in backoffs],
            backoff_maxes=[b[2] for b in backoffs],
            trace_contexts=[
                json.dumps(t.trace_context) if t.trace_context else None for t in tasks
            ],
            concurrency_keys=[t.concurrency_key for t in tasks],
            concurrency_limits=[t.max_concurrent for t in tasks],
            tenants=[t.tenant for t in tasks],
            submitters=[t.submitted_by for t in tasks],
        )
        inserted = {row["id"]: row for row in rows}
        skipped = [t for t in tasks if t.id not in inserted]
        existing: dict[tuple[str, str, str | None], Task] = {}
        if skipped:
            found = await postgres.fetch(
                conn,
                "select_by_idempotency",
                tenants=[t.tenant for t in skipped],
                queues=[t.queue for t in skipped],
                keys=[t.idempotency_key for t in skipped],
            )
            existing = {(r["tenant"], r["queue"], r["idempotency_key"]): _task(r) for r in found}
        out = []
        for t in tasks:
            row = inserted.get(t.id)
            if row is not None:
                out.append(Submitted(_inserted(t, row)))
            else:
                key = (t.tenant, t.queue, t.idempotency_key)
                out.append(Submitted(existing[key], existing=True))
        return out

    async def get(
        self, tenant: str, task_id: uuid.UUID, submitted_by: str | None = None
    ) -> Task | None:
        rows = await self._fetch("get_task", tenant=tenant, submitted_by=submitted_by, id=task_id)
        return _task(rows[0]) if rows else None

    async def get_many(
        self, tenant: str, task_ids: Sequence[uuid.UUID], submitted_by: str | None = None
    ) -> dict[uuid.UUID, Task]:
        """The tasks of `task_ids` that exist, by id."""
        rows = await self._fetch(
            "get_tasks", tenant=tenant, submitted_by=submitted_by, ids=list(task_ids)
        )
        return {row["id"]: _task(row) for row in rows}

    async def page(
        self,
        tenant: str,
        queue: str | None,
        state: TaskState | None,
        before_seq: int | None,
        limit: int,
        submitted_by: str | None = None,
    ) -> tuple[list[Task], list[int], bool]:
        """A page of tasks, newest first, older than `before_seq` (None: from
        the newest), with their seqs and whether older ones remain."""
        if queue is not None and state is not None:
            rows = await self._fetch(
                "list_tasks_by_queue_state",
                tenant=tenant,
                submitted_by=submitted_by,
                queue=queue,
                state=state.value,
                before_seq=before_seq,
                limit=limit + 1,
            )
        elif queue is not None:
            rows = await self._fetch(
                "list_tasks_by_queue",
                tenant=tenant,
                submitted_by=submitted_by,
                queue=queue,
                before_seq=before_seq,
                limit=limit + 1,
            )
        elif state is not None:
            rows = await self._fetch(
                "list_tasks_by_state",
                tenant=tenant,
                submitted_by=submitted_by,
                state=state.value,
                before_seq=before_seq,
                limit=limit + 1,
            )
        else:
            rows = await self._fetch(
                "list_tasks",
                tenant=tenant,
                submitted_by=submitted_by,
                before_seq=before_seq,
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        return [_task(r) for r in rows], [r["seq"] for r in rows], more

    async def page_filtered(
        self,
        tenant: str,
        where: TaskFilter,
        cursor_seq: int | None,
        limit: int,
        submitted_by: str | None = None,
        backward: bool = False,
    ) -> tuple[list[Task], list[int], bool]:
        """Up to `limit` tasks matching `where`, newest first, with their seqs
        and whether more lie beyond them: older than `cursor_seq` (None: from
        the newest), or, `backward`, the newer ones just past it (None: from
        the oldest)."""
        states = [s.value for s in where.states] or None
        if backward:
            rows = await self._fetch(
                "list_tasks_backward",
                tenant=tenant,
                submitted_by=submitted_by,
                queue=where.queue,
                states=states,
                name=where.name,
                created_after=where.created_after,
                created_before=where.created_before,
                idempotency_key=where.idempotency_key,
                after_seq=cursor_seq or 0,
                limit=limit + 1,
            )
        else:
            rows = await self._fetch(
                "list_tasks_filtered",
                tenant=tenant,
                submitted_by=submitted_by,
                queue=where.queue,
                states=states,
                name=where.name,
                created_after=where.created_after,
                created_before=where.created_before,
                idempotency_key=where.idempotency_key,
                before_seq=cursor_seq,
                limit=limit + 1,
            )
        more = len(rows) > limit
        rows = rows[:limit]
        if backward:
            rows.reverse()
        return [_task(r) for r in rows], [r["seq"] for r in rows], more

    async def count(
        self, tenant: str, selection: TaskSelection, submitted_by: str | None = None
    ) -> int:
        """How many tasks `selection` matches."""
        count: int = await self._fetchval(
            "count_tasks",
            tenant=tenant,
            submitted_by=submitted_by,
            ids=_ids(selection),
            queue=selection.queue,
            states=[s.value for s in selection.states] or None,
            name=selection.name,
            created_after=selection.created_after,
            created_before=selection.created_before,
            finished_before=selection.finished_before,
        )
        return count

    async def bulk(
        self,
        action: str,
        tenant: str,
        selection: TaskSelection,
        states: Sequence[TaskState],
        limit: int,
    ) -> tuple[list[Changed], bool]:
        """One batch of `action` (retry, cancel or purge) on up to `limit`
        tasks `selection` matches in `states`, in one transaction: the tasks
        changed, and whether matching tasks in those states remain that
        another batch would change."""
        ids = _ids(selection)
        acting_on = [s.value for s in states]
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            if action == "retry":
                rows = await postgres.fetch(
                    conn,
                    "retry_tasks",
                    tenant=tenant,
                    ids=ids,
                    queue=selection.queue,
                    states=acting_on,
                    name=selection.name,
                    created_after=selection.created_after,
                    created_before=selection.created_before,
                    finished_before=selection.finished_before,
                    limit=limit,
                )
                if rows:
                    await self._notify_ready(conn)
            elif action == "cancel":
                rows = await postgres.fetch(
                    conn,
                    "cancel_tasks",
                    tenant=tenant,
                    ids=ids,
                    queue=selection.queue,
                    states=acting_on,
                    name=selection.name,
                    created_after=selection.created_after,
                    created_before=selection.created_before,
                    finished_before=selection.finished_before,
                    limit=limit,
                    channel=self.cancel_channel,
                )
            else:
                rows = await postgres.fetch(
                    conn,
                    "purge_tasks",
                    tenant=tenant,
                    ids=ids,
                    queue=selection.queue,
                    states=acting_on,
                    name=selection.name,
                    created_after=selection.created_after,
                    created_before=selection.created_before,
                    finished_before=selection.finished_before,
                    limit=limit,
                )
            more = await postgres.fetchval(
                conn,
                "bulk_remaining",
                tenant=tenant,
                ids=ids,
                queue=selection.queue,
                states=acting_on,
                name=selection.name,
                created_after=selection.created_after,
                created_before=selection.created_before,
                finished_before=selection.finished_before,
            )
        changed = [Changed(str(r["id"]), r["queue"], TaskState(r["state"])) for r in rows]
        return changed, bool(more)

    async def cancel(
        self, tenant: str, task_id: uuid.UUID
    ) -> tuple[Task, Mapping[str, str] | None] | None:
        """Cancel a waiting task, or ask the replica running it to cancel it:
        the task, and the trace context stored with it (for the log line).
        None when the task is missing or already finished."""
        rows = await self._fetch(
            "cancel_task", tenant=tenant, id=task_id, channel=self.cancel_channel
        )
        if not rows:
            return None
        raw = rows[0]["trace_context"]
        return _task(rows[0]), json.loads(raw) if raw else None

    async def _notify_ready(self, conn: Any) -> None:
        """Wake every replica's dispatcher: tasks are ready."""
        await postgres.execute(conn, "notify_ready", channel=self.channel)

    async def retry(self, tenant: str, task_id: uuid.UUID) -> Task | None:
        """Requeue a DEAD or CANCELLED task; None when it is missing or in another state."""
        async with postgres.acquired(self.pool) as conn:
            rows = await postgres.fetch(conn, "retry_task", tenant=tenant, id=task_id)
            if rows:
                await self._notify_ready(conn)
        return _task(rows[0]) if rows else None

    async def promote_due(self) -> int:
        """Make due scheduled tasks ready; returns how many."""
        async with postgres.acquired(self.pool) as conn:
            count = postgres.affected(await postgres.execute(conn, "promote_due"))
            if count:
                await self._notify_ready(conn)
            return count

    async def next_due(self) -> tuple[datetime | None, bool]:
        """When the next waiting task is due (None: none waits), and whether a
        waiting task's run time is not finite (`bury_unschedulable` ends those)."""
        (row,) = await self._fetch("next_due")
        first, last = row["first"], row["last"]
        unschedulable = postgres.infinite(first) or postgres.infinite(last)
        return postgres.finite_time(first), unschedulable

    async def bury_unschedulable(self) -> list[Poisoned]:
        """End DEAD the waiting tasks whose run time is not finite; returns them."""
        rows = await self._fetch("bury_unschedulable")
        return [Poisoned(str(r["id"]), r["tenant"], r["queue"], r["reason"]) for r in rows]

    async def claim(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        names: Sequence[str],
        queues: Sequence[str] | None = None,
    ) -> list[ClaimedTask]:
        """Claim up to `limit` ready tasks named in `names` (those the replica
        has handlers for), of the queues in `queues` (None: every queue):
        first from queues with a max_concurrent limit or a start limit
        (serialised per queue across replicas, never past a limit), then tasks
        with a concurrency key (serialised per tenant, never more running per
        key than its limit), then the others, in priority order."""
        names = list(names)
        queues = None if queues is None else list(queues)
        async with postgres.acquired(self.pool) as conn:
            rows: list[asyncpg.Record] = []
            now = time.monotonic()
            if self.limited or self.keyed or now - self._limited_checked_at >= LIMITED_RECHECK:
                # Most installations limit no queue: ask again only every
                # LIMITED_RECHECK seconds then. The plain claim below skips
                # limited queues by itself, so no limit is ever exceeded; a
                # newly limited queue just waits that long for its next claim.
                self._limited_checked_at = now
                ready = await postgres.fetch(
                    conn, "limited_queues_ready", queues=queues, names=names
                )
                self.limited = {
                    (r["tenant"], r["name"]): Limited(
                        r["concurrent"], r["start_limited"], r["keyed"]
                    )
                    for r in ready
                }
                keyed = await postgres.fetch(
                    conn, "keyed_tenants_ready", queues=queues, names=names
                )
                self.keyed = sorted(r["tenant"] for r in keyed)
            for (tenant, queue), limits in sorted(self.limited.items()):
                if len(rows) >= limit:
                    break
                if limits.start_limited and self.held.get((tenant, queue), 0.0) > now:
                    continue  # its window is full: nothing of it may start before it ends
                # A start-limited queue's keyed tasks are claimed with its
                # others, under the tenant's keyed lock (taken first, as
                # claim_keyed does), when the tenant has keyed tasks ready.
                with_keys = limits.start_limited and tenant in self.keyed
                async with conn.transaction():
                    if with_keys:
                        await postgres.execute(conn, "lock_queue", key=self._keyed_lock(tenant))
                    await postgres.execute(conn, "lock_queue", key=self._queue_lock(tenant, queue))
                    if limits.start_limited:
                        rows += await self._claim_start_limited(
                            conn,
                            tenant,
                            queue,
                            limits,
                            limit - len(rows),
                            owner,
                            lease_seconds,
                            names,
                            with_keys,
                        )
                        continue
                    rows += await postgres.fetch(
                        conn,
                        "claim_limited",
                        tenant=tenant,
                        queue=queue,
                        limit=limit - len(rows),
                        owner=owner,
                        lease_seconds=lease_seconds,
                        names=names,
                    )
            for tenant in self.keyed:
                if len(rows) >= limit:
                    break
                async with conn.transaction():
                    # The tenant's keyed lock, then those of its max_concurrent
                    # queues in name order (the order every keyed claim takes).
                    await postgres.execute(conn, "lock_queue", key=self._keyed_lock(tenant))
                    locked = [
                        r["name"]
                        for r in await postgres.fetch(conn, "keyed_limited_queues", tenant=tenant)
                        if queues is None or r["name"] in queues
                    ]
                    for queue in locked:
                        await postgres.execute(
                            conn, "lock_queue", key=self._queue_lock(tenant, queue)
                        )
                    rows += await postgres.fetch(
                        conn,
                        "claim_keyed",
                        tenant=tenant,
                        limit=limit - len(rows),
                        owner=owner,
                        lease_seconds=lease_seconds,
                        names=names,
                        queues=queues,
                        scan=KEYED_SCAN,
                        locked=locked,
                    )
            if len(rows) < limit and queues is None:
                rows += await postgres.fetch(
                    conn,
                    "claim",
                    limit=limit - len(rows),
                    owner=owner,
                    lease_seconds=lease_seconds,
                    names=names,
                )
            elif len(rows) < limit:
                rows += await postgres.fetch(
                    conn,
                    "claim_queues",
                    limit=limit - len(rows),
                    owner=owner,
                    lease_seconds=lease_seconds,
                    names=names,
                    queues=queues,
                )
        # UPDATE ... RETURNING promises no order: start them in claim order.
        rows.sort(key=lambda r: (-r["priority"], postgres.finite_time(r["run_at"]), r["seq"]))
        return [_claimed(r, owner) for r in rows]

    def look_for_limits(self) -> None:
        """Look for limited queues and keyed tasks at the next claim (not only
        LIMITED_RECHECK seconds after the last look): keyed tasks were made ready."""
        self._limited_checked_at = float("-inf")

    def _queue_lock(self, tenant: str, queue: str) -> str:
        """The advisory lock every claim in a limited queue holds."""
        return f"treadle:{self.schema}:{tenant}:{queue}"

    def _keyed_lock(self, tenant: str) -> str:
        """The advisory lock every claim of a keyed task of `tenant` holds."""
        return f"treadle-keyed:{self.schema}:{tenant}"

    async def _claim_start_limited(
        self,
        conn: Any,
        tenant: str,
        queue: str,
        limits: Limited,
        limit: int,
        owner: str,
        lease_seconds: float,
        names: list[str],
        with_keys: bool,
    ) -> list[asyncpg.Record]:
        """Claim from a start-limited queue (under its lock; with `with_keys`, its
        tasks with a concurrency key too, under the tenant's keyed lock); when
        its window is what holds back the rest, hold the queue until the window
        ends, for at most MAX_HOLD seconds (a keyed limit: LIMITED_RECHECK, so
        that a new key's tasks wait no longer)."""
        found = await postgres.fetch(
            conn,
            "claim_start_limited",
            tenant=tenant,
            queue=queue,
            limit=limit,
            owner=owner,
            lease_seconds=lease_seconds,
            scan=START_LIMIT_SCAN,
            names=names,
            with_keys=with_keys,
        )
        claimed = [r for r in found if r["id"] is not None]
        held = next((r["held_seconds"] for r in found if r["id"] is None), None)
        if held is not None:
            hold = min(held, LIMITED_RECHECK if limits.keyed else MAX_HOLD)
            self.held[(tenant, queue)] = time.monotonic() + max(0.0, hold)
        else:
            self.held.pop((tenant, queue), None)
        return claimed

    def held_for(self) -> float | None:
        """Seconds until the first held start-limited queue may start tasks
        again (a dispatcher wakes then); None when none is held."""
        now = time.monotonic()
        self.held = {key: until for key, until in self.held.items() if until > now}
        return min(self.held.values()) - now if self.held else None

    async def complete(self, outcomes: Sequence[Outcome]) -> dict[Lease, Applied]:
        """Record outcomes in one statement, each only while its lease holds;
        returns those that applied, by lease. Finishing tasks of a queue with
        max_concurrent, or with a concurrency key, frees slots: every replica
        is told."""
        async with postgres.acquired(self.pool) as conn:
            rows = await postgres.fetch(
                conn,
                "complete",
                ids=[uuid.UUID(o.lease.task_id) for o in outcomes],
                owners=[o.lease.owner for o in outcomes],
                claims=[o.lease.claim for o in outcomes],
                states=[o.state.value for o in outcomes],
                results=[o.result_json for o in outcomes],
                errors=[None if o.error is None else error_json(o.error) for o in outcomes],
                finished_ats=[o.finished_at for o in outcomes],
                run_ats=[o.run_at for o in outcomes],
            )
            if any(
                r["keyed"]
                or ((limited := self.limited.get((r["tenant"], r["queue"]))) and limited.concurrent)
                for r in rows
            ):
                await self._notify_ready(conn)
        return {
            Lease(str(r["id"]), r["lease_owner"], r["claims"]): Applied(
                r["tenant"], r["queue"], TaskState(r["state"]), r["started_at"]
            )
            for r in rows
        }

    @staticmethod
    def refused(exc: BaseException) -> bool:
        """Whether a failed write would fail again as it is (`postgres.refused`)."""
        return postgres.refused(exc)

    async def release(self, held: Sequence[Lease], delay: float = 0.0) -> set[str]:
        """Hand running tasks back, each while its lease holds, without charging
        their attempt, ready again at once or, with `delay`, after that many
        seconds. Returns the ids handed back."""
        if not held:
            return set()
        async with postgres.acquired(self.pool) as conn:
            rows = await postgres.fetch(
                conn,
                "release",
                ids=[uuid.UUID(lease.task_id) for lease in held],
                owners=[lease.owner for lease in held],
                claims=[lease.claim for lease in held],
                delay=delay,
            )
            if rows and not delay:
                await self._notify_ready(conn)
        return {str(r["id"]) for r in rows}

    async def prune(
        self, finished_before: datetime, keys_before: datetime, batch: int
    ) -> tuple[int, int]:
        """Delete one batch of finished tasks and free one batch of expired
        idempotency keys; returns how many of each."""
        async with postgres.acquired(self.pool) as conn:
            deleted = await postgres.execute(
                conn, "prune_finished", before=finished_before, batch=batch
            )
            expired = await postgres.execute(
                conn, "expire_idempotency_keys", before=keys_before, batch=batch
            )
        return postgres.affected(deleted), postgres.affected(expired)

    # -- queues ---------------------------------------------------------------

    async def ensure_queues(self, tenant: str, names: Sequence[str]) -> None:
        await self._execute("ensure_queues", tenant=tenant, names=list(names))

    async def queues(self, tenant: str) -> list[Queue]:
        return [_queue(r) for r in await self._fetch("list_queues", tenant=tenant)]

    async def queue(self, tenant: str, name: str) -> Queue | None:
        rows = await self._fetch("get_queue", tenant=tenant, name=name)
        return _queue(rows[0]) if rows else None

    async def update_queue(
        self, tenant: str, name: str, update: QueueUpdate, paused: bool | None = None
    ) -> Queue | None:
        """Change a queue's settings; None when there is no such queue. Pausing
        also marks its unfinished tasks (`queue_paused`: out of the claim's
        main index), in the same transaction."""
        base, factor, most = _backoff(update.retry)
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            rows = await postgres.fetch(
                conn,
                "update_queue",
                tenant=tenant,
                name=name,
                max_concurrent=update.max_concurrent,
                max_attempts=update.max_attempts,
                timeout_seconds=update.timeout_seconds,
                backoff_base=base,
                backoff_factor=factor,
                backoff_max=most,
                paused=paused,
                start_limit=update.start_limit,
                start_window_seconds=update.start_window_seconds,
                start_limit_key=update.start_limit_key,
            )
            if rows and paused:
                await postgres.execute(conn, "mark_paused_tasks", tenant=tenant, queue=name)
            elif rows:
                # resumed or widened: its ready tasks may run now
                await self._notify_ready(conn)
        return _queue(rows[0]) if rows else None

    # -- leases and replicas --------------------------------------------------

    async def register_replica(self, replica_id: str, host: str, pid: int, version: str) -> None:
        await self._execute("register_replica", id=replica_id, host=host, pid=pid, version=version)

    async def stop_replica(self, replica_id: str) -> None:
        await self._execute("stop_replica", id=replica_id)

    async def heartbeat(
        self, replica_id: str, held: Sequence[Lease], lease_seconds: float
    ) -> dict[str, bool]:
        """Say the replica is alive and extend the leases it holds, in one
        statement; returns the ids whose lease still holds, each with whether
        a cancel was asked for it."""
        rows = await self._fetch(
            "heartbeat",
            replica=replica_id,
            ids=[uuid.UUID(lease.task_id) for lease in held],
            owners=[lease.owner for lease in held],
            claims=[lease.claim for lease in held],
            lease_seconds=lease_seconds,
        )
        return {str(r["id"]): r["cancel_requested"] for r in rows}

    async def progress(self, lease: Lease, progress: float | None, message: str | None) -> bool:
        """Store a running attempt's progress; False when its lease moved on."""
        rows = await self._fetch(
            "task_progress",
            id=uuid.UUID(lease.task_id),
            owner=lease.owner,
            claim=lease.claim,
            progress=progress,
            message=message,
        )
        return bool(rows)

    async def reap(self, batch: int, max_reclaims: int) -> list[Reclaimed]:
        """Take back tasks whose lease expired."""
        async with postgres.acquired(self.pool) as conn:
            rows = await postgres.fetch(
                conn,
                "reap_expired",
                lock=f"treadle-reaper:{self.schema}",
                batch=batch,
                max_reclaims=max_reclaims,
            )
            if any(r["state"] == "QUEUED" for r in rows):
                await self._notify_ready(conn)
        return [
            Reclaimed(
                str(r["id"]),
                TaskState(r["state"]),
                r["tenant"],
                r["queue"],
                r["lease_owner"],
                _error(json.loads(r["error"])),
                r["name"],
                r["max_attempts"],
                json.loads(r["trace_context"]) if r["trace_context"] else None,
            )
            for r in rows
        ]

    async def replicas(self, tenant: str, lease_seconds: float) -> list[ReplicaInfo]:
        """Every replica, with the count of `tenant`'s tasks it runs."""
        rows = await self._fetch("list_replicas", tenant=tenant, lease_seconds=lease_seconds)
        return [postgres.from_row(ReplicaInfo, r) for r in rows]

    async def prune_replicas(self, older_than_seconds: float) -> None:
        await self._execute("prune_replicas", older_than_seconds=older_than_seconds)

    async def ping(self) -> None:
        """Raise `Unavailable` unless the database answers."""
        await self._fetchval("ping")
