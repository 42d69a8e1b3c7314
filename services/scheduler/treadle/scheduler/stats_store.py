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
from typing import Any

import asyncpg

from treadle.common.stats import ErrorPattern, QueueStats
from treadle.common.tasks import TaskState
from treadle.scheduler import postgres
from treadle.scheduler.tally import Tally

_QUERIES = postgres.load_queries()


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


#: (queue, hour) -> tally
Hourly = Mapping[tuple[str, datetime], Tally]
#: (width: 1 or 60 seconds, start, queue) -> tally
Recent = Mapping[tuple[int, datetime, str], Tally]
#: (queue, hour, type, message) -> error tally
Errors = Mapping[tuple[str, datetime, str, str], ErrorTally]


@dataclasses.dataclass(frozen=True)
class LiveReplica:
    """A replica that did not stop, as the registry sees it."""

    id: str
    started_at: datetime
    alive: bool
    silent_seconds: float


def _array(values: Sequence[int]) -> str:
    return "{" + ",".join(str(v) for v in values) + "}"


def _tally(row: asyncpg.Record) -> Tally:
    return Tally(
        submitted=row.get("submitted") or 0,
        succeeded=row["succeeded"],
        failed=row["failed"],
        dead=row["dead"],
        cancelled=row["cancelled"],
        duration_sum=row["duration_sum"],
        duration_count=row["duration_count"],
        duration_max=row["duration_max"],
        duration_buckets=[count or 0 for count in row["duration_buckets"]],
    )


class StatsStore:
    """The statistics tables of one schema of one PostgreSQL database."""

    def __init__(self, pool: asyncpg.Pool, schema: str) -> None:
        self.pool = pool
        self.schema = schema

    async def _fetch(self, query: str, *args: Any) -> list[asyncpg.Record]:
        async with postgres.acquired(self.pool) as conn:
            rows: list[asyncpg.Record] = await conn.fetch(_QUERIES[query], *args)
            return rows

    async def flush(self, hourly: Hourly, recent: Recent, errors: Errors) -> None:
        """Add counters to the aggregates, in one statement."""
        h_keys = sorted(hourly)
        r_keys = sorted(recent)
        e_keys = sorted(errors)
        h = [hourly[k] for k in h_keys]
        r = [recent[k] for k in r_keys]
        e = [errors[k] for k in e_keys]
        async with postgres.acquired(self.pool) as conn:
            await conn.execute(
                _QUERIES["stats_flush"],
                [k[0] for k in h_keys],
                [k[1] for k in h_keys],
                [t.submitted for t in h],
                [t.succeeded for t in h],
                [t.failed for t in h],
                [t.dead for t in h],
                [t.cancelled for t in h],
                [t.duration_sum for t in h],
                [t.duration_count for t in h],
                [t.duration_max for t in h],
                [_array(t.duration_buckets) for t in h],
                [k[0] for k in r_keys],
                [k[1] for k in r_keys],
                [k[2] for k in r_keys],
                [t.succeeded for t in r],
                [t.failed for t in r],
                [t.dead for t in r],
                [t.cancelled for t in r],
                [t.duration_sum for t in r],
                [t.duration_count for t in r],
                [t.duration_max for t in r],
                [_array(t.duration_buckets) for t in r],
                [k[0] for k in e_keys],
                [k[1] for k in e_keys],
                [k[2] for k in e_keys],
                [k[3] for k in e_keys],
                [t.count for t in e],
                ["{" + ",".join(t.examples) + "}" for t in e],
                [t.last_seen_at for t in e],
            )

    async def prune(
        self, seconds_before: datetime, minutes_before: datetime, errors_before: datetime
    ) -> None:
        async with postgres.acquired(self.pool) as conn:
            await conn.execute(
                _QUERIES["stats_prune"],
                seconds_before,
                minutes_before,
                errors_before,
                f"treadle-stats:{self.schema}",
            )

    async def queues(self, name: str | None = None) -> list[QueueStats]:
        return [
            QueueStats(
                queue=r["name"],
                length=r["length"],
                running=r["running"],
                scheduled=r["scheduled"],
                retrying=r["retrying"],
                max_concurrent=r["max_concurrent"],
                paused=r["paused"],
                oldest_enqueued_at=r["oldest_enqueued_at"],
                total_enqueued=r["total_enqueued"],
                total_completed=r["total_completed"],
                total_failed=r["total_failed"],
                total_dead=r["total_dead"],
                total_cancelled=r["total_cancelled"],
            )
            for r in await self._fetch("stats_queues", name)
        ]

    async def state_counts(self) -> dict[TaskState, int]:
        rows = await self._fetch("stats_state_counts")
        found = {TaskState(r["state"]): r["count"] for r in rows}
        return {state: found.get(state, 0) for state in TaskState}

    async def queue_count(self) -> int:
        rows = await self._fetch("stats_queue_count")
        count: int = rows[0][0]
        return count

    async def window(self, width: int, since: datetime) -> dict[str, Tally]:
        """Per queue, what finished in the buckets `width` seconds wide (1 or 60)
        from `since` on."""
        return {r["queue"]: _tally(r) for r in await self._fetch("stats_window", width, since)}

    async def trends(
        self, unit: str, since: datetime, until: datetime, queues: Sequence[str] | None
    ) -> dict[datetime, Tally]:
        """Per bucket start (`unit` 'hour' or 'day'), the hourly aggregate summed."""
        rows = await self._fetch(
            "stats_trends", unit, since, until, None if queues is None else list(queues)
        )
        return {r["start"]: _tally(r) for r in rows}

    async def error_patterns(
        self, since: datetime, until: datetime, queue: str | None, limit: int
    ) -> list[ErrorPattern]:
        rows = await self._fetch("stats_error_patterns", since, until, queue, limit)
        return [
            ErrorPattern(
                type=r["type"],
                message=r["message"],
                count=r["count"],
                example_task_ids=tuple(r["examples"]),
                queues=tuple(sorted(r["queues"])),
                last_seen_at=r["last_seen_at"],
            )
            for r in rows
        ]

    async def replicas(self, lease_seconds: float) -> list[LiveReplica]:
        """Replicas that did not stop; alive when heard from within a lease."""
        return [
            LiveReplica(r["id"], r["started_at"], r["alive"], r["silent_seconds"])
            for r in await self._fetch("stats_replicas", lease_seconds)
        ]
