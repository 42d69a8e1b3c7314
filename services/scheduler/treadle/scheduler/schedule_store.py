"""The schedule store: every read and write of schedule rows, through the named
queries of `sql/schedules.sql`, and the one transaction that fires due schedules
(their tasks go in through `Store.insert`, the one way a task is inserted).

Speaks `Schedule` on one side and asyncpg on the other; driver errors become
Treadle's errors in `postgres.acquired` / `postgres.translated`. A template's
payload stays JSON text: written into the stored template and read back from
it (the queries split it off) without being decoded.
"""

from __future__ import annotations

import builtins
import dataclasses
import json
import uuid
from collections.abc import Callable
from datetime import datetime
from typing import Any

import asyncpg

from treadle.common.tasks import RetryPolicy, Schedule, Submitted, TaskSpec
from treadle.scheduler import postgres
from treadle.scheduler.model import NewTask
from treadle.scheduler.store import Store

#: Schedules fired per transaction: the LIMIT of schedule_lock_due.
FIRE_BATCH = 100


@dataclasses.dataclass(frozen=True)
class Fire:
    """One tick of one schedule, about to be fired."""

    #: The schedule's tenant: its task's too.
    tenant: str
    schedule: Schedule
    #: The tick fired: the schedule's stored next_fire_at.
    tick: datetime
    #: The tick after it; None pauses the schedule (it has no further tick).
    next_fire_at: datetime | None
    task_id: uuid.UUID
    idempotency_key: str

    def task(self) -> NewTask:
        """The task this tick submits: the schedule's template, due at the tick."""
        spec = self.schedule.task
        return NewTask(
            id=self.task_id,
            tenant=self.tenant,
            name=spec.name,
            queue=spec.queue or "",
            payload_json=spec.payload_json,
            priority=spec.priority,
            run_at=self.tick,
            max_attempts=spec.max_attempts,
            idempotency_key=self.idempotency_key,
            timeout_seconds=spec.timeout_seconds,
            retry=spec.retry,
            concurrency_key=spec.concurrency_key,
            max_concurrent=spec.max_concurrent,
        )


@dataclasses.dataclass(frozen=True)
class CodeSync:
    """What syncing the code's schedules does (`ScheduleStore.sync_code`)."""

    created: builtins.list[Schedule] = dataclasses.field(default_factory=list)
    updated: builtins.list[Schedule] = dataclasses.field(default_factory=list)
    #: Code-owned schedules the code no longer declares, deleted (with the flag).
    deleted: builtins.list[str] = dataclasses.field(default_factory=list)
    #: ...and those kept, reported only (without it).
    stale: builtins.list[str] = dataclasses.field(default_factory=list)
    #: Declared in code, but a schedule of that name was made through the API:
    #: left alone.
    conflicts: builtins.list[str] = dataclasses.field(default_factory=list)


def template_json(spec: TaskSpec) -> str:
    """A task template as stored in `schedules.task`: TaskSpec fields as a JSON
    object. The payload's text goes in as it is: `spec` was checked (`check_spec`).
    A concurrency key is stored only when set (templates without one read as before)."""
    fields: dict[str, Any] = {
        "name": spec.name,
        "queue": spec.queue,
        "priority": spec.priority,
        "max_attempts": spec.max_attempts,
        "timeout_seconds": spec.timeout_seconds,
        "retry": None if spec.retry is None else dataclasses.asdict(spec.retry),
    }
    if spec.concurrency_key is not None:
        fields["concurrency_key"] = spec.concurrency_key
        fields["max_concurrent"] = spec.max_concurrent
    rest = json.dumps(fields, allow_nan=False)
    return f'{{"payload": {spec.payload_json}, {rest[1:]}'


def _template(data: dict[str, Any], payload_json: str | None) -> TaskSpec:
    """A stored template: its fields but the payload, and the payload's text."""
    retry = data.get("retry")
    return TaskSpec(
        name=data["name"],
        payload_json=payload_json or "null",
        queue=data.get("queue"),
        priority=data.get("priority", 0),
        max_attempts=data.get("max_attempts"),
        timeout_seconds=data.get("timeout_seconds"),
        retry=None if retry is None else RetryPolicy(**retry),
        concurrency_key=data.get("concurrency_key"),
        max_concurrent=data.get("max_concurrent"),
    )


def _schedule(row: asyncpg.Record, firing: bool = False) -> Schedule:
    """A schedule row as read. A template that cannot be read (written by hand
    or by older code) raises when `firing` (`fire_due` pauses that schedule);
    otherwise it reads as a template with no task name, so listings answer."""
    try:
        task = _template(json.loads(row["template"]), row["template_payload"])
        if not task.name:
            raise ValueError("the task template has no task name")
    except (KeyError, TypeError, ValueError):
        if firing:
            raise
        task = TaskSpec(name="", payload_json=row["template_payload"] or "null")
    return postgres.from_row(Schedule, row, task=task)


class ScheduleStore(postgres.PoolStore):
    """Schedule rows in one schema of one PostgreSQL database. Each method made
    for a caller takes the caller's tenant first; firing works across tenants."""

    async def _one(self, name: str, /, **params: Any) -> Schedule | None:
        rows = await self._fetch(name, **params)
        return _schedule(rows[0]) if rows else None

    async def insert(
        self,
        tenant: str,
        name: str,
        cron: str,
        timezone: str,
        task: TaskSpec,
        next_fire_at: datetime,
    ) -> Schedule | None:
        """Store a new schedule; None when the name is taken."""
        return await self._one(
            "schedule_insert",
            tenant=tenant,
            name=name,
            cron=cron,
            timezone=timezone,
            task=template_json(task),
            next_fire_at=next_fire_at,
        )

    async def list(self, tenant: str) -> builtins.list[Schedule]:
        return [_schedule(r) for r in await self._fetch("schedule_list", tenant=tenant)]

    async def get(self, tenant: str, name: str) -> Schedule | None:
        return await self._one("schedule_get", tenant=tenant, name=name)

    async def pause(self, tenant: str, name: str) -> Schedule | None:
        return await self._one("schedule_pause", tenant=tenant, name=name)

    async def resume(self, tenant: str, name: str, next_fire_at: datetime) -> Schedule | None:
        """Resume a paused schedule; None when it is missing or not paused."""
        return await self._one(
            "schedule_resume", tenant=tenant, name=name, next_fire_at=next_fire_at
        )

    async def delete(self, tenant: str, name: str) -> bool:
        return bool(await self._fetch("schedule_delete", tenant=tenant, name=name))

    async def sync_code(
        self,
        tenant: str,
        plan: Callable[[builtins.list[Schedule], builtins.list[str]], CodeSync],
    ) -> CodeSync:
        """Bring `tenant`'s code-owned schedules in step with the code, in one
        transaction under the tenant's sync lock: `plan` gets the stored
        schedules and the names of those the code owns, and says what to
        insert, update and delete."""
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            await postgres.execute(conn, "schedule_code_lock", tenant=tenant)
            rows = await postgres.fetch(conn, "schedule_list", tenant=tenant)
            owned = [r["name"] for r in rows if r["code_owned"]]
            sync = plan([_schedule(r) for r in rows], owned)
            for s in sync.created:
                await postgres.execute(
                    conn,
                    "schedule_insert_code",
                    tenant=tenant,
                    name=s.name,
                    cron=s.cron,
                    timezone=s.timezone,
                    task=template_json(s.task),
                    next_fire_at=s.next_fire_at,
                )
            for s in sync.updated:
                await postgres.execute(
                    conn,
                    "schedule_update_code",
                    tenant=tenant,
                    name=s.name,
                    cron=s.cron,
                    timezone=s.timezone,
                    task=template_json(s.task),
                    next_fire_at=s.next_fire_at,
                )
            for name in sync.deleted:
                await postgres.execute(conn, "schedule_delete_code", tenant=tenant, name=name)
        return sync

    async def fire_due(
        self, plan: Callable[[str, Schedule, datetime], Fire], tasks: Store
    ) -> tuple[builtins.list[Fire], builtins.list[Submitted], dict[tuple[str, str], str]]:
        """Fire up to FIRE_BATCH due schedules in one transaction: lock them
        (skipping those another replica holds), insert one task per tick
        through `tasks` and move each to the tick `plan` gives. Returns the
        fires and, in the same order, what the insert made of each
        (`existing` when that tick had fired already); and the schedules whose
        stored row cannot be fired (written by hand or by older code: a
        template without a task name, a cron expression that does not parse),
        each (tenant, name) with the reason: those are paused, so they never
        stop the loop."""
        async with postgres.acquired(self.pool) as conn, conn.transaction():
            rows = await postgres.fetch(conn, "schedule_lock_due")
            if not rows:
                return [], [], {}
            now: datetime = rows[0]["now"]
            fires: builtins.list[Fire] = []
            new_tasks: builtins.list[NewTask] = []
            poisoned: dict[tuple[str, str], str] = {}
            for row in rows:
                try:
                    fire = plan(row["tenant"], _schedule(row, firing=True), now)
                    new_tasks.append(fire.task())
                    fires.append(fire)
                except Exception as exc:  # any row at all must not stop the loop
                    poisoned[row["tenant"], row["name"]] = f"{type(exc).__name__}: {exc}"[:500]
            if poisoned:
                await postgres.execute(
                    conn,
                    "schedule_pause_poisoned",
                    tenants=[t for t, _ in poisoned],
                    names=[n for _, n in poisoned],
                )
            submitted = await tasks.insert(new_tasks, conn) if new_tasks else []
            await postgres.execute(
                conn,
                "schedule_advance",
                tenants=[f.tenant for f in fires],
                names=[f.schedule.name for f in fires],
                fired_ats=[f.tick for f in fires],
                next_fire_ats=[f.next_fire_at for f in fires],
            )
        return fires, submitted, poisoned

    async def seconds_until_due(self) -> float | None:
        """Seconds until the next tick of any running schedule (<= 0: overdue)."""
        value: float | None = await self._fetchval("schedule_next_due")
        return value
