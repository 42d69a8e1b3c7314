"""Cron schedules: submit a task from a template on every tick of a cron expression.

The rules (names, cron expressions, time zones, the next tick, what one firing
does) are pure functions of their inputs, the clock included. `Schedules`
holds the use cases (create, list, pause, resume, delete) and the firing loop
that every replica runs as `treadle-cron`.

Exactly once per tick, across replicas: a replica locks the due schedule rows
(`FOR UPDATE SKIP LOCKED`), inserts one task per row and moves the row's
`next_fire_at` past now, all in one transaction, so no other replica can fire
the same tick. The task's idempotency key, `cron:<name>:<tick>`, makes a
second insert of the same tick a no-op even if that ever failed.

Missed ticks (every replica down, or a firing later than the next tick) fire
once: the schedule fires its earliest missed tick, then continues with the
first tick strictly after now.
"""

from __future__ import annotations

import asyncio
import builtins
import dataclasses
import json
import logging
import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from cronsim import CronSim, CronSimError

from treadle.common import wire
from treadle.common.errors import AlreadyExists, InvalidArgument, NotFound, TreadleError
from treadle.common.tasks import Schedule, Submitted, TaskSpec
from treadle.common.wakeup import wait_event
from treadle.scheduler import principal
from treadle.scheduler.core import Scheduler
from treadle.scheduler.loops import Backoff, Loop
from treadle.scheduler.model import found
from treadle.scheduler.schedule_store import FIRE_BATCH, CodeSync, Fire, ScheduleStore
from treadle.tasks import ScheduleDecl

log = logging.getLogger("treadle.scheduler.schedules")

MAX_NAME_LENGTH = 200
MAX_CRON_LENGTH = 200
_NAME = re.compile(r"[A-Za-z0-9._-]+")

#: Shorthands accepted for common expressions.
NICKNAMES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}

#: Seconds to wait when a due schedule is being fired by another replica.
LOCKED_RETRY = 0.05
#: Ticks examined for one "next tick" before giving up (see `next_tick`).
_MAX_STEPS = 1000


# -- rules ----------------------------------------------------------------------


def check_name(name: str) -> None:
    if not name:
        raise InvalidArgument("schedule name must not be empty")
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidArgument(f"schedule name is longer than {MAX_NAME_LENGTH} characters")
    if not _NAME.fullmatch(name):
        raise InvalidArgument(
            f"schedule name {name!r} may hold only letters, digits, '.', '_' and '-'"
        )


def _named(name: str) -> str:
    """A schedule name to look up: checked like a new one's, so a NUL or a
    10 KB name is INVALID_ARGUMENT, not a database error."""
    check_name(name)
    return name


def expand(cron: str) -> str:
    """The five- or six-field expression behind `cron` (nicknames like @daily resolved)."""
    text = " ".join(cron.split())
    return NICKNAMES.get(text.lower(), text)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name` ("" means UTC), or `InvalidArgument`."""
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise InvalidArgument(
            f"unknown time zone {wire.shown(name)}: use an IANA name such as 'UTC' or "
            "'Europe/Paris'"
        ) from None


def next_tick(cron: str, tz: ZoneInfo, after: datetime) -> datetime | None:
    """The first tick of `cron`, read in `tz`, strictly after `after`, in UTC.

    None when the expression has no tick in the next 50 years. Raises
    `CronSimError` for an expression that does not parse.
    """
    after = after.astimezone(UTC)
    start = after if tz.key == "UTC" else after.astimezone(tz)
    # Near a daylight-saving change cronsim reads fixed-time expressions in
    # local wall time and can return an instant at or before `after` (the
    # first pass of a repeated hour); such ticks have already been had.
    # (Compared in UTC: datetimes sharing a tzinfo compare by wall time.)
    for step, local in enumerate(CronSim(expand(cron), start)):
        tick = local.astimezone(UTC)
        if tick > after:
            return tick
        if step >= _MAX_STEPS:
            break
    return None


def check_cron(cron: str, tz: ZoneInfo, now: datetime) -> datetime:
    """Check `cron` and return its first tick after `now`, or raise `InvalidArgument`."""
    if not cron.strip():
        raise InvalidArgument("cron expression must not be empty")
    if len(cron) > MAX_CRON_LENGTH:
        raise InvalidArgument(f"cron expression is longer than {MAX_CRON_LENGTH} characters")
    try:
        first = next_tick(cron, tz, now)
    except (CronSimError, ValueError) as exc:
        raise InvalidArgument(
            f"invalid cron expression {cron!r} ({exc}): expected five fields "
            "(minute hour day-of-month month day-of-week) or six with seconds first"
        ) from None
    if first is None:
        raise InvalidArgument(f"cron expression {cron!r} never fires")
    return first


def template(spec: TaskSpec, queue: str | None) -> TaskSpec:
    """The task a schedule submits: the spec with its queue resolved; run_at,
    delay_seconds and idempotency_key are set per tick, so they are dropped."""
    return dataclasses.replace(
        spec, queue=queue, run_at=None, delay_seconds=None, idempotency_key=None
    )


def idempotency_key(name: str, tick: datetime) -> str:
    return f"cron:{name}:{tick.astimezone(UTC).isoformat()}"


def _same(have: Schedule, want: Schedule) -> bool:
    """Whether a stored schedule already is what the code declares (payloads
    compared as values: jsonb keeps its own key order)."""
    if (have.cron, have.timezone) != (want.cron, want.timezone):
        return False
    a, b = have.task, want.task
    payloads = json.loads(a.payload_json) == json.loads(b.payload_json)
    return payloads and dataclasses.replace(a, payload_json="") == dataclasses.replace(
        b, payload_json=""
    )


def plan(tenant: str, schedule: Schedule, now: datetime) -> Fire:
    """What firing a due `schedule` of `tenant` at `now` does: submit its task for the
    stored tick, then wait for the first tick strictly after now (so ticks
    missed while nothing ran fire once, not once each)."""
    tick = schedule.next_fire_at
    assert tick is not None, "a stored schedule always has a next tick"
    try:
        following = next_tick(schedule.cron, zone(schedule.timezone), max(now, tick))
    except (CronSimError, ValueError, InvalidArgument) as exc:
        log.error("schedule %s cannot compute its next tick: %s", schedule.name, exc)
        following = None
    if following is None:
        log.error("schedule %s has no further tick; pausing it", schedule.name)
    return Fire(
        tenant=tenant,
        schedule=schedule,
        tick=tick,
        next_fire_at=following,
        task_id=uuid.uuid4(),
        idempotency_key=idempotency_key(schedule.name, tick),
    )


# -- use cases --------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class Schedules:
    """Create, list, pause, resume and delete schedules, and fire them when due."""

    store: ScheduleStore
    #: Checks and submits the tasks; its settings and clock are the schedules' too.
    scheduler: Scheduler
    _wake: asyncio.Event = dataclasses.field(init=False, default_factory=asyncio.Event)
    #: Ticks this replica fired, and how many of them found their task already there.
    fired_total: int = dataclasses.field(init=False, default=0)
    duplicates_total: int = dataclasses.field(init=False, default=0)

    def wake(self) -> None:
        """A schedule was created or resumed: look at the next tick again."""
        self._wake.set()

    async def create(self, schedule: Schedule) -> Schedule:
        check_name(schedule.name)
        tz = zone(schedule.timezone)
        first = check_cron(schedule.cron, tz, self.scheduler.clock())
        spec = self.scheduler.with_declared(schedule.task)
        checked = self.scheduler.check(template(spec, spec.queue))
        created = await self.store.insert(
            checked.tenant,
            schedule.name,
            schedule.cron,
            tz.key,
            template(spec, checked.queue),
            first,
        )
        if created is None:
            raise AlreadyExists(f"schedule {schedule.name!r} already exists")
        self.wake()
        return created

    async def sync_code(self, declared: Sequence[ScheduleDecl], prune: bool) -> CodeSync:
        """Bring the schedules the app declares in code in step, in the
        caller's tenant (the default one at start): create the new ones,
        update those that changed (a new cron or time zone starts from its
        first tick after now), leave the same ones alone; report code-owned
        schedules the code no longer declares, and delete them only with
        `prune`. A schedule of the same name made through the API is never
        touched (reported). Replicas starting together take turns (a lock)."""
        now = self.scheduler.clock()
        wanted: dict[str, Schedule] = {}
        for d in declared:
            check_name(d.name)
            tz = zone(d.timezone)
            first = check_cron(d.cron, tz, now)
            spec = self.scheduler.with_declared(d.task)
            checked = self.scheduler.check(template(spec, spec.queue))
            wanted[d.name] = Schedule(
                name=d.name,
                cron=d.cron,
                task=template(spec, checked.queue),
                timezone=tz.key,
                next_fire_at=first,
            )

        def plan(stored: builtins.list[Schedule], owned: builtins.list[str]) -> CodeSync:
            by_name = {s.name: s for s in stored}
            sync = CodeSync()
            for name, want in wanted.items():
                have = by_name.get(name)
                if have is None:
                    sync.created.append(want)
                elif name not in owned:
                    sync.conflicts.append(name)
                elif not _same(have, want):
                    moved = (have.cron, have.timezone) != (want.cron, want.timezone)
                    tick = want.next_fire_at if moved else have.next_fire_at
                    sync.updated.append(dataclasses.replace(want, next_fire_at=tick))
            gone = sorted(set(owned) - set(wanted))
            (sync.deleted if prune else sync.stale).extend(gone)
            return sync

        sync = await self.store.sync_code(principal.current().tenant, plan)
        for what, names in (("created", sync.created), ("updated", sync.updated)):
            if names:
                log.info("schedules declared in code, %s: %s", what, [s.name for s in names])
        if sync.deleted:
            log.info("schedules no longer declared in code, deleted: %s", sync.deleted)
        if sync.stale:
            log.warning(
                "schedules declared in code earlier are no longer declared: %s; they still "
                "fire: delete them (treadle schedule delete NAME) or start a replica with "
                "--prune-schedules (TREADLE_PRUNE_SCHEDULES=1)",
                sync.stale,
            )
        if sync.conflicts:
            log.warning(
                "schedules declared in code share their names with schedules made through "
                "the API, which are left as they are: %s",
                sync.conflicts,
            )
        if sync.created or sync.updated:
            self.wake()
        return sync

    async def list(self) -> builtins.list[Schedule]:
        return await self.store.list(principal.current().tenant)

    async def pause(self, name: str) -> Schedule:
        paused = await self.store.pause(principal.current().tenant, _named(name))
        return found(paused, f"schedule {name!r}")

    async def resume(self, name: str) -> Schedule:
        """Fire again from the first tick after now; a running schedule is left as it is."""
        current = await self._get(_named(name))
        if not current.paused:
            return current
        following = check_cron(current.cron, zone(current.timezone), self.scheduler.clock())
        resumed = await self.store.resume(principal.current().tenant, name, following)
        if resumed is None:  # resumed or deleted meanwhile
            return await self._get(name)
        self.wake()
        return resumed

    async def delete(self, name: str) -> None:
        if not await self.store.delete(principal.current().tenant, _named(name)):
            raise NotFound(f"schedule {name!r} not found")

    async def _get(self, name: str) -> Schedule:
        return found(await self.store.get(principal.current().tenant, name), f"schedule {name!r}")

    # -- firing ---------------------------------------------------------------

    async def fire_due(self) -> int:
        """Fire every due schedule no other replica is firing (up to a batch);
        returns how many fired."""
        fires, submitted, poisoned = await self.store.fire_due(plan, self.scheduler.store)
        for (tenant, name), reason in poisoned.items():
            log.warning(
                "schedule %r of tenant %r cannot be fired (%s); paused it", name, tenant, reason
            )
            self.scheduler.events.schedule_poisoned(name, reason)
        by_tenant: dict[str, builtins.list[Submitted]] = {}
        for fire, s in zip(fires, submitted, strict=True):
            if not s.existing:
                by_tenant.setdefault(fire.tenant, []).append(s)
        inserted = sum(len(new) for new in by_tenant.values())
        # Counted like any submission; a tick that had fired already is
        # not a deduplicated submission, so it is left out.
        for tenant, new in by_tenant.items():
            self.scheduler.events.submitted(tenant, new)
        if fires:
            self.fired_total += len(fires)
            self.duplicates_total += len(fires) - inserted
            log.debug("fired %d schedule(s): %s", len(fires), [f.idempotency_key for f in fires])
        if inserted < len(fires):
            log.warning("%d tick(s) had fired already; no task added", len(fires) - inserted)
        return len(fires)

    def _sleep_for(self, due_in: float | None) -> float:
        poll = self.scheduler.settings.poll_interval
        if due_in is None:
            return poll
        if due_in <= 0:
            # Due, yet not fired here: another replica holds it right now.
            return min(poll, LOCKED_RETRY)
        return min(poll, due_in + 0.001)

    def loops(self) -> dict[str, Loop]:
        return {"cron": self.run}

    async def run(self) -> None:
        """Fire schedules as they come due, until cancelled. Sleeps until the
        next tick (at most the poll interval); `wake()` cuts the sleep short."""
        backoff = Backoff(log)
        while True:
            self._wake.clear()
            try:
                fired = await self.fire_due()
                if fired >= FIRE_BATCH:
                    continue  # more may be due
                due_in = await self.store.seconds_until_due()
            except TreadleError as exc:
                await backoff.failed("firing cron schedules", exc)
                continue
            backoff.ok()
            await wait_event(self._wake, self._sleep_for(due_in))
