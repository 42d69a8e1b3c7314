"""Treadle's public statistics types: plain frozen dataclasses, no protobuf.

The scheduler computes them (`treadle.scheduler.stats`), the client returns
them, the gateway turns them into GraphQL; `treadle.common.stats_wire`
converts them to and from protobuf at the edges.

Counting rules, the same everywhere:

- `submitted`: tasks stored by a submission or a cron tick (an idempotency key
  that returned an existing task is not counted);
- `completed`: tasks that ended SUCCEEDED;
- `failed`: failed attempts, whether retried or not (a task that fails twice
  then succeeds counts 2 failed and 1 completed);
- `dead`: tasks that ended DEAD; `cancelled`: tasks that ended CANCELLED;
- processing time: how long an attempt that succeeded or failed ran, from its
  claim to its outcome, in seconds.
"""

from __future__ import annotations

import dataclasses
import enum
from datetime import datetime

from treadle.common.tasks import TaskState


class Granularity(enum.StrEnum):
    """The width of a trend bucket (buckets start on whole UTC hours or days)."""

    HOUR = "HOUR"
    DAY = "DAY"


class SystemStatus(enum.StrEnum):
    """The worst severity among the current alerts; HEALTHY when there are none."""

    HEALTHY = "HEALTHY"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class Severity(enum.StrEnum):
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"


class Metric(enum.StrEnum):
    """What an alert measured."""

    #: Ready (QUEUED) tasks of a queue.
    BACKLOG = "backlog"
    #: Failed attempts / finished attempts of a queue over the alert window.
    ERROR_RATE = "error_rate"
    #: 95th percentile processing time of a queue over the alert window, seconds.
    P95_PROCESSING_SECONDS = "p95_processing_seconds"
    #: Seconds the longest-waiting ready task of a queue has waited.
    OLDEST_WAIT_SECONDS = "oldest_wait_seconds"
    #: Seconds since a replica that did not stop last sent a heartbeat.
    REPLICA_SILENT_SECONDS = "replica_silent_seconds"


@dataclasses.dataclass(frozen=True)
class QueueStats:
    """One queue now (exact, from the task table) and over its lifetime
    (totals from the hourly aggregate)."""

    queue: str
    #: Ready tasks (QUEUED).
    length: int
    running: int
    scheduled: int
    retrying: int
    #: None: no limit.
    max_concurrent: int | None
    paused: bool
    #: When the longest-waiting ready task became ready; None when none waits.
    oldest_enqueued_at: datetime | None
    total_enqueued: int
    total_completed: int
    total_failed: int
    total_dead: int
    total_cancelled: int


@dataclasses.dataclass(frozen=True)
class Overview:
    """The whole installation. Windows slide: "last minute" is the 60
    one-second buckets up to now, "last hour" the 60 one-minute buckets up to
    now (the current ones included)."""

    total_queues: int
    #: Tasks stored, for every state (zero included), in TaskState order.
    tasks_by_state: dict[TaskState, int]
    #: Tasks that ended SUCCEEDED or DEAD in the window.
    finished_last_minute: int
    finished_last_hour: int
    #: finished_last_minute / 60 and finished_last_hour / 3600, per second.
    throughput_last_minute: float
    throughput_last_hour: float
    #: Failed attempts / (completed + failed attempts) over the last hour; 0 when none.
    error_rate: float
    #: Over attempts that succeeded or failed in the last hour; None when none did.
    avg_processing_seconds: float | None
    p95_processing_seconds: float | None
    #: Replicas not stopped that sent a heartbeat within a lease.
    active_replicas: int
    #: Seconds since the longest-running live replica started.
    uptime_seconds: float
    #: When these figures were read. Counters reach the aggregate every
    #: TREADLE_STATS_FLUSH_INTERVAL, so the windowed figures lag by up to that.
    last_updated: datetime


@dataclasses.dataclass(frozen=True)
class TrendBucket:
    start: datetime
    submitted: int
    completed: int
    failed: int
    dead: int
    cancelled: int
    #: None when no attempt succeeded or failed in the bucket.
    avg_duration_seconds: float | None
    p95_duration_seconds: float | None


@dataclasses.dataclass(frozen=True)
class Trends:
    """Every bucket from `since` (rounded down to the granularity) until
    before `until`, empty ones included."""

    since: datetime
    until: datetime
    granularity: Granularity
    #: The queues counted; empty means every queue.
    queues: tuple[str, ...]
    buckets: tuple[TrendBucket, ...]


@dataclasses.dataclass(frozen=True)
class ErrorPattern:
    """Failed attempts with the same error type and message."""

    type: str
    message: str
    count: int
    #: Up to three tasks that failed so, the most recent first.
    example_task_ids: tuple[str, ...]
    queues: tuple[str, ...]
    #: When an attempt last failed so.
    last_seen_at: datetime


@dataclasses.dataclass(frozen=True)
class Alert:
    severity: Severity
    metric: Metric
    message: str
    #: The queue measured; None for a replica alert.
    queue: str | None
    value: float
    threshold: float
    #: When the alert was raised (the health check's time).
    at: datetime
    #: The replica measured (REPLICA_SILENT_SECONDS only).
    replica: str | None = None


@dataclasses.dataclass(frozen=True)
class SystemHealth:
    status: SystemStatus
    alerts: tuple[Alert, ...]
    checked_at: datetime
