"""The statistics store: the one statement that flushes a replica's counters,
and the reads behind the statistics APIs, through the named queries of
`sql/stats.sql`.

Speaks tallies and the public statistics types on one side and asyncpg on the
other; driver errors become Treadle's errors in `postgres.acquired`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from datetime import datetime

import asyncpg

from treadle.common.stats import ErrorPattern, QueueStats
from treadle.common.tasks import TaskState
from treadle.scheduler import postgres
from treadle.scheduler.tally import Tally


@dataclasses.dataclass
class ErrorTally:
    """Failed attempts with one error in one queue and hour."""

    count: int = 0
    #: Up to three task ids, in the order they failed.
    examples: list[str] = dataclasses.field(default_factory=list)
    last_seen_at: datetime | None = None

    def add(self, other: ErrorTally) -> None:
        self.count += other.count
        for task_id in other.examples:
            if len(self.examples) < 3 and task_id not in self.examples:
                self.examples.append(task_id)
        if other.last_seen_at is not None and (
            self.last_seen_at is None or other.last_seen_at > self.last_seen_at
        ):
            self.last_seen_at = other.last_seen_at


#: (tenant, queue, hour) -> tally
Hourly = Mapping[tuple[str, str, datetime], Tally]
#: (width: 1 or 60 seconds, start, tenant, queue) -> tally
Recent = Mapping[tuple[int, datetime, str, str], Tally]
#: (tenant, queue, hour, type, message) -> error tally
Errors = Mapping[tuple[str, str, datetime, str, str], ErrorTally]


@dataclasses.dataclass(frozen=True)
class LiveReplica:
    """A replica that did not stop, as the registry sees it."""

    id: str
    started_at: datetime
    alive: bool
    silent_seconds: float


def _array(values: Sequence[int]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


@dataclasses.dataclass(frozen=True)
class _Columns:
    """Tallies as the columns stats_flush takes (one array per counter)."""

    succeeded: list[int]
    failed: list[int]
    dead: list[int]
    cancelled: list[int]
    duration_sums: list[float]
    duration_counts: list[int]
    duration_maxes: list[float]
    buckets: list[str]

    @classmethod
    def of(cls, tallies: Sequence[Tally]) -> _Columns:
        return cls(
            [t.succeeded for t in tallies],
            [t.failed for t in tallies],
            [t.dead for t in tallies],
            [t.cancelled for t in tallies],
            [t.duration_sum for t in tallies],
            [t.duration_count for t in tallies],
            [t.duration_max for t in tallies],
            [_array(t.duration_buckets) for t in tallies],
        )


def _tally(row: asyncpg.Record) -> Tally:
    return postgres.from_row(
        Tally,
        row,
        submitted=row.get("submitted") or 0,
        duration_buckets=[count or 0 for count in row["duration_buckets"]],
    )


class StatsStore(postgres.PoolStore):
    """The statistics tables of one schema of one PostgreSQL database."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        super().__init__(pool)
        self.schema = schema

    async def flush(self, hourly: Hourly, recent: Recent, errors: Errors) -> None:
        """Add counters to the aggregates, in one statement."""
        h_keys = sorted(hourly)
        r_keys = sorted(recent)
        e_keys = sorted(errors)
        h = _Columns.of([hourly[k] for k in h_keys])
        r = _Columns.of([recent[k] for k in r_keys])
        e = [errors[k] for k in e_keys]
        await self._execute(
            "stats_flush",
            hourly_tenants=[k[0] for k in h_keys],
            hourly_queues=[k[1] for k in h_keys],
            hourly_hours=[k[2] for k in h_keys],
            hourly_submitted=[hourly[k].submitted for k in h_keys],
            hourly_succeeded=h.succeeded,
            hourly_failed=h.failed,
            hourly_dead=h.dead,
            hourly_cancelled=h.cancelled,
            hourly_duration_sums=h.duration_sums,
            hourly_duration_counts=h.duration_counts,
            hourly_duration_maxes=h.duration_maxes,
            hourly_buckets=h.buckets,
            recent_widths=[k[0] for k in r_keys],
            recent_ats=[k[1] for k in r_keys],
            recent_tenants=[k[2] for k in r_keys],
            recent_queues=[k[3] for k in r_keys],
            recent_succeeded=r.succeeded,
            recent_failed=r.failed,
            recent_dead=r.dead,
            recent_cancelled=r.cancelled,
            recent_duration_sums=r.duration_sums,
            recent_duration_counts=r.duration_counts,
            recent_duration_maxes=r.duration_maxes,
            recent_buckets=r.buckets,
            error_tenants=[k[0] for k in e_keys],
            error_queues=[k[1] for k in e_keys],
            error_hours=[k[2] for k in e_keys],
            error_types=[k[3] for k in e_keys],
            error_messages=[k[4] for k in e_keys],
            error_counts=[t.count for t in e],
            error_examples=["{" + ",".join(t.examples) + "}" for t in e],
            error_last_seen_ats=[t.last_seen_at for t in e],
        )

    async def prune(
        self, seconds_before: datetime, minutes_before: datetime, errors_before: datetime
    ) -> None:
        await self._execute(
            "stats_prune",
            seconds_before=seconds_before,
            minutes_before=minutes_before,
            errors_before=errors_before,
            lock=f"treadle-stats:{self.schema}",
        )

    async def queues(self, tenant: str, name: str | None = None) -> list[QueueStats]:
        return [
            postgres.from_row(QueueStats, r, queue=r["name"])
            for r in await self._fetch("stats_queues", tenant=tenant, queue=name)
        ]

    async def state_counts(self, tenant: str) -> dict[TaskState, int]:
        rows = await self._fetch("stats_state_counts", tenant=tenant)
        found = {TaskState(r["state"]): r["count"] for r in rows}
        return {state: found.get(state, 0) for state in TaskState}

    async def queue_count(self, tenant: str) -> int:
        rows = await self._fetch("stats_queue_count", tenant=tenant)
        count: int = rows[0][0]
        return count

    async def window(self, tenant: str, width: int, since: datetime) -> dict[str, Tally]:
        """Per queue of `tenant`, what finished in the buckets `width` seconds
        wide (1 or 60) from `since` on."""
        return {
            r["queue"]: _tally(r)
            for r in await self._fetch("stats_window", tenant=tenant, width=width, since=since)
        }

    async def trends(
        self,
        tenant: str,
        unit: str,
        since: datetime,
        until: datetime,
        queues: Sequence[str] | None,
    ) -> dict[datetime, Tally]:
        """Per bucket start (`unit` 'hour' or 'day'), the hourly aggregate summed."""
        rows = await self._fetch(
            "stats_trends",
            tenant=tenant,
            unit=unit,
            since=since,
            until=until,
            queues=None if queues is None else list(queues),
        )
        return {r["start"]: _tally(r) for r in rows}

    async def error_patterns(
        self, tenant: str, since: datetime, until: datetime, queue: str | None, limit: int
    ) -> list[ErrorPattern]:
        rows = await self._fetch(
            "stats_error_patterns",
            tenant=tenant,
            since=since,
            until=until,
            queue=queue,
            limit=limit,
        )
        return [
            postgres.from_row(
                ErrorPattern,
                r,
                example_task_ids=tuple(r["examples"]),
                queues=tuple(sorted(r["queues"])),
            )
            for r in rows
        ]

    async def replicas(self, lease_seconds: float) -> list[LiveReplica]:
        """Replicas that did not stop; alive when heard from within a lease."""
        return [
            LiveReplica(r["id"], r["started_at"], r["alive"], r["silent_seconds"])
            for r in await self._fetch("stats_replicas", lease_seconds=lease_seconds)
        ]
