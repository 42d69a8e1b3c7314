"""Statistics in GraphQL: `queueStats`, `queueStatsList`, `overview`, `trends`,
`errorPatterns` and `systemHealth`, each one call to the scheduler.

`StatsQuery` holds the fields; the schema's `Query` inherits them. Counts that
grow for good (lifetime totals, trends) are `Long`: an integer that may
exceed GraphQL's 32-bit `Int`, sent as a JSON number.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, NewType

import strawberry
from strawberry.types.scalar import ScalarDefinition

from treadle.client import Client
from treadle.common import stats
from treadle.common.errors import NotFound
from treadle.gateway.types import TaskState, from_domain


def _long(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"Long cannot represent {value!r}")
    return int(value)


Long = NewType("Long", int)

#: Custom scalars, for `StrawberryConfig(scalar_map=...)`.
SCALARS: dict[object, ScalarDefinition] = {
    Long: strawberry.scalar(
        name="Long",
        description="An integer that may exceed 32 bits, sent as a JSON number.",
        serialize=int,
        parse_value=_long,
    )
}


# GraphQL shows the shared enums themselves, under these names (`strawberry.enum`
# marks each class).
TrendGranularity = stats.Granularity
SystemStatus = stats.SystemStatus
AlertSeverity = stats.Severity
AlertMetric = stats.Metric
for _enum, _name, _description in (
    (
        TrendGranularity,
        "TrendGranularity",
        "The width of a trend bucket (whole UTC hours or days).",
    ),
    (SystemStatus, "SystemStatus", "The worst severity among the current alerts."),
    (AlertSeverity, "AlertSeverity", "WARNING over a threshold, CRITICAL at twice it."),
    (AlertMetric, "AlertMetric", "What an alert measured."),
):
    strawberry.enum(_enum, name=_name, description=_description)


@strawberry.type(
    description="One queue now (exact) and over its lifetime. Totals count: enqueued, "
    "tasks stored; completed, tasks that SUCCEEDED; failed, failed attempts (retried or "
    "not); dead and cancelled, tasks that ended so."
)
class QueueStats:
    queue: str
    length: int = strawberry.field(description="Ready tasks (QUEUED).")
    running: int
    scheduled: int
    retrying: int
    max_concurrent: int | None = strawberry.field(description="Null: no limit.")
    paused: bool
    oldest_enqueued_at: datetime | None = strawberry.field(
        description="When the longest-waiting ready task became ready; null when none waits."
    )
    total_enqueued: Long
    total_completed: Long
    total_failed: Long
    total_dead: Long
    total_cancelled: Long


@strawberry.type(description="How many stored tasks are in one state.")
class StateCount:
    state: TaskState
    count: Long


@strawberry.type(
    description="The whole installation. Windows slide: the last minute is the 60 "
    "one-second buckets up to now, the last hour the 60 one-minute buckets up to now."
)
class Overview:
    total_queues: int
    tasks_by_state: list[StateCount] = strawberry.field(description="Every state, zero included.")
    finished_last_minute: Long = strawberry.field(
        description="Tasks that ended SUCCEEDED or DEAD in the last minute."
    )
    finished_last_hour: Long
    throughput_last_minute: float = strawberry.field(description="Finished tasks per second.")
    throughput_last_hour: float
    error_rate: float = strawberry.field(
        description="Failed attempts / (succeeded + failed attempts) over the last hour."
    )
    avg_processing_seconds: float | None = strawberry.field(
        description="Over attempts that succeeded or failed in the last hour; null when none."
    )
    p95_processing_seconds: float | None
    active_replicas: int
    uptime_seconds: float = strawberry.field(
        description="Since the longest-running live replica started."
    )
    last_updated: datetime = strawberry.field(description="When these figures were read.")

    @classmethod
    def from_overview(cls, o: stats.Overview) -> Overview:
        by_state = [StateCount(state=s, count=Long(n)) for s, n in o.tasks_by_state.items()]
        return from_domain(cls, o, tasks_by_state=by_state)


@strawberry.type(description="What happened in one trend bucket.")
class TrendBucket:
    start: datetime
    submitted: Long
    completed: Long
    failed: Long = strawberry.field(description="Failed attempts.")
    dead: Long
    cancelled: Long
    avg_duration_seconds: float | None = strawberry.field(
        description="Null when no attempt succeeded or failed in the bucket."
    )
    p95_duration_seconds: float | None


@strawberry.type(description="Every bucket from since (rounded down) until before until.")
class Trends:
    since: datetime
    until: datetime
    granularity: TrendGranularity
    buckets: list[TrendBucket]


@strawberry.type(description="Failed attempts with the same error type and message.")
class ErrorPattern:
    type: str
    message: str
    count: Long
    example_task_ids: list[strawberry.ID] = strawberry.field(
        description="Up to three tasks that failed so, the most recent first."
    )
    queues: list[str]
    last_seen_at: datetime


@strawberry.type(description="One threshold crossed.")
class Alert:
    severity: AlertSeverity
    metric: AlertMetric
    message: str
    queue: str | None = strawberry.field(description="Null for a replica alert.")
    value: float
    threshold: float
    time: datetime
    replica: str | None = strawberry.field(description="Set for REPLICA_SILENT_SECONDS.")


@strawberry.type(description="HEALTHY, or the alerts whose thresholds are crossed now.")
class SystemHealth:
    status: SystemStatus
    alerts: list[Alert]
    checked_at: datetime

    @classmethod
    def from_health(cls, h: stats.SystemHealth) -> SystemHealth:
        # `stats.Alert.at` is `time` in GraphQL.
        alerts = [from_domain(Alert, a, time=a.at) for a in h.alerts]
        return from_domain(cls, h, alerts=alerts)


def _client(info: strawberry.Info[Any, Any]) -> Client:
    client: Client = info.context.client
    return client


async def queue_stats(info: strawberry.Info[Any, Any], queue: str) -> QueueStats | None:
    try:
        return from_domain(QueueStats, await _client(info).queue_stats(queue))
    except NotFound:
        return None


async def queue_stats_list(info: strawberry.Info[Any, Any]) -> list[QueueStats]:
    return [from_domain(QueueStats, s) for s in await _client(info).list_queue_stats()]


async def overview(info: strawberry.Info[Any, Any]) -> Overview:
    return Overview.from_overview(await _client(info).overview())


async def trends(
    info: strawberry.Info[Any, Any],
    since: datetime | None = None,
    until: datetime | None = None,
    granularity: TrendGranularity = TrendGranularity.HOUR,
    queues: list[str] | None = None,
) -> Trends:
    found = await _client(info).trends(
        since=since,
        until=until,
        granularity=granularity,
        queues=queues or (),
    )
    return from_domain(Trends, found)


async def error_patterns(
    info: strawberry.Info[Any, Any],
    since: datetime | None = None,
    until: datetime | None = None,
    queue: str | None = None,
    limit: int = 10,
) -> list[ErrorPattern]:
    found = await _client(info).error_patterns(since=since, until=until, queue=queue, limit=limit)
    return [from_domain(ErrorPattern, p) for p in found]


async def system_health(info: strawberry.Info[Any, Any]) -> SystemHealth:
    return SystemHealth.from_health(await _client(info).system_health())


@strawberry.type
class StatsQuery:
    queue_stats: QueueStats | None = strawberry.field(
        resolver=queue_stats,
        description="One queue's current state and lifetime totals; null when there is no "
        "such queue.",
    )
    queue_stats_list: list[QueueStats] = strawberry.field(
        resolver=queue_stats_list, description="queueStats for every queue, by name."
    )
    overview: Overview = strawberry.field(
        resolver=overview,
        description="Tasks by state, throughput, error rate, processing time, replicas.",
    )
    trends: Trends = strawberry.field(
        resolver=trends,
        description="Per-hour or per-day counts from since (default: 24 h before until, "
        "rounded down) until until (default: now), over queues (default: all).",
    )
    error_patterns: list[ErrorPattern] = strawberry.field(
        resolver=error_patterns,
        description="The most frequent errors (type, message) of attempts that failed in "
        "the range (default: the last 24 h), with up to three example task ids each.",
    )
    system_health: SystemHealth = strawberry.field(
        resolver=system_health,
        description="HEALTHY, WARNING or CRITICAL, with the alert thresholds crossed now.",
    )
