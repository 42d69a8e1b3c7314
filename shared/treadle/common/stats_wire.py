"""Conversions between the public statistics types and protobuf, used only at the edges."""

from __future__ import annotations

from datetime import datetime

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common.stats import (
    Alert,
    ErrorPattern,
    Granularity,
    Metric,
    Overview,
    QueueStats,
    Severity,
    SystemHealth,
    SystemStatus,
    TrendBucket,
    Trends,
)
from treadle.common.tasks import TaskState
from treadle.common.wire import state_from_proto, state_to_proto, time_from_proto, time_to_proto


def _required_time(msg: object, field: str) -> datetime:
    value = time_from_proto(msg, field)
    assert value is not None, f"{field} is always set"
    return value


def granularity_to_proto(value: Granularity) -> pb.Granularity.ValueType:
    return pb.Granularity.Value(f"GRANULARITY_{value.value}")


def granularity_from_proto(value: pb.Granularity.ValueType) -> Granularity:
    if value == pb.GRANULARITY_UNSPECIFIED:
        return Granularity.HOUR
    return Granularity(pb.Granularity.Name(value).removeprefix("GRANULARITY_"))


def queue_stats_to_proto(stats: QueueStats) -> pb.QueueStats:
    msg = pb.QueueStats(
        queue=stats.queue,
        length=stats.length,
        running=stats.running,
        scheduled=stats.scheduled,
        retrying=stats.retrying,
        max_concurrent=stats.max_concurrent or 0,
        paused=stats.paused,
        total_enqueued=stats.total_enqueued,
        total_completed=stats.total_completed,
        total_failed=stats.total_failed,
        total_dead=stats.total_dead,
        total_cancelled=stats.total_cancelled,
    )
    time_to_proto(stats.oldest_enqueued_at, msg.oldest_enqueued_at)
    return msg


def queue_stats_from_proto(msg: pb.QueueStats) -> QueueStats:
    return QueueStats(
        queue=msg.queue,
        length=msg.length,
        running=msg.running,
        scheduled=msg.scheduled,
        retrying=msg.retrying,
        max_concurrent=msg.max_concurrent or None,
        paused=msg.paused,
        oldest_enqueued_at=time_from_proto(msg, "oldest_enqueued_at"),
        total_enqueued=msg.total_enqueued,
        total_completed=msg.total_completed,
        total_failed=msg.total_failed,
        total_dead=msg.total_dead,
        total_cancelled=msg.total_cancelled,
    )


def overview_to_proto(overview: Overview) -> pb.Overview:
    msg = pb.Overview(
        total_queues=overview.total_queues,
        tasks_by_state=[
            pb.StateCount(state=state_to_proto(state), count=count)
            for state, count in overview.tasks_by_state.items()
        ],
        finished_last_minute=overview.finished_last_minute,
        finished_last_hour=overview.finished_last_hour,
        throughput_last_minute=overview.throughput_last_minute,
        throughput_last_hour=overview.throughput_last_hour,
        error_rate=overview.error_rate,
        avg_processing_seconds=overview.avg_processing_seconds,
        p95_processing_seconds=overview.p95_processing_seconds,
        active_replicas=overview.active_replicas,
        uptime_seconds=overview.uptime_seconds,
    )
    time_to_proto(overview.last_updated, msg.last_updated)
    return msg


def overview_from_proto(msg: pb.Overview) -> Overview:
    by_state: dict[TaskState, int] = {}
    for item in msg.tasks_by_state:
        state = state_from_proto(item.state)
        if state is not None:
            by_state[state] = item.count
    return Overview(
        total_queues=msg.total_queues,
        tasks_by_state=by_state,
        finished_last_minute=msg.finished_last_minute,
        finished_last_hour=msg.finished_last_hour,
        throughput_last_minute=msg.throughput_last_minute,
        throughput_last_hour=msg.throughput_last_hour,
        error_rate=msg.error_rate,
        avg_processing_seconds=(
            msg.avg_processing_seconds if msg.HasField("avg_processing_seconds") else None
        ),
        p95_processing_seconds=(
            msg.p95_processing_seconds if msg.HasField("p95_processing_seconds") else None
        ),
        active_replicas=msg.active_replicas,
        uptime_seconds=msg.uptime_seconds,
        last_updated=_required_time(msg, "last_updated"),
    )


def bucket_to_proto(bucket: TrendBucket) -> pb.TrendBucket:
    msg = pb.TrendBucket(
        submitted=bucket.submitted,
        completed=bucket.completed,
        failed=bucket.failed,
        dead=bucket.dead,
        cancelled=bucket.cancelled,
        avg_duration_seconds=bucket.avg_duration_seconds,
        p95_duration_seconds=bucket.p95_duration_seconds,
    )
    time_to_proto(bucket.start, msg.start)
    return msg


def bucket_from_proto(msg: pb.TrendBucket) -> TrendBucket:
    return TrendBucket(
        start=_required_time(msg, "start"),
        submitted=msg.submitted,
        completed=msg.completed,
        failed=msg.failed,
        dead=msg.dead,
        cancelled=msg.cancelled,
        avg_duration_seconds=(
            msg.avg_duration_seconds if msg.HasField("avg_duration_seconds") else None
        ),
        p95_duration_seconds=(
            msg.p95_duration_seconds if msg.HasField("p95_duration_seconds") else None
        ),
    )


def trends_to_proto(trends: Trends) -> pb.GetTrendsResponse:
    msg = pb.GetTrendsResponse(
        granularity=granularity_to_proto(trends.granularity),
        buckets=[bucket_to_proto(b) for b in trends.buckets],
    )
    time_to_proto(trends.since, msg.since)
    time_to_proto(trends.until, msg.until)
    return msg


def trends_from_proto(msg: pb.GetTrendsResponse, queues: tuple[str, ...]) -> Trends:
    return Trends(
        since=_required_time(msg, "since"),
        until=_required_time(msg, "until"),
        granularity=granularity_from_proto(msg.granularity),
        queues=queues,
        buckets=tuple(bucket_from_proto(b) for b in msg.buckets),
    )


def pattern_to_proto(pattern: ErrorPattern) -> pb.ErrorPattern:
    msg = pb.ErrorPattern(
        type=pattern.type,
        message=pattern.message,
        count=pattern.count,
        example_task_ids=list(pattern.example_task_ids),
        queues=list(pattern.queues),
    )
    time_to_proto(pattern.last_seen_at, msg.last_seen_at)
    return msg


def pattern_from_proto(msg: pb.ErrorPattern) -> ErrorPattern:
    return ErrorPattern(
        type=msg.type,
        message=msg.message,
        count=msg.count,
        example_task_ids=tuple(msg.example_task_ids),
        queues=tuple(msg.queues),
        last_seen_at=_required_time(msg, "last_seen_at"),
    )


def alert_to_proto(alert: Alert) -> pb.Alert:
    msg = pb.Alert(
        severity=pb.AlertSeverity.Value(f"ALERT_SEVERITY_{alert.severity.value}"),
        metric=alert.metric.value,
        message=alert.message,
        queue=alert.queue or "",
        value=alert.value,
        threshold=alert.threshold,
        replica=alert.replica or "",
    )
    time_to_proto(alert.at, msg.time)
    return msg


def alert_from_proto(msg: pb.Alert) -> Alert:
    return Alert(
        severity=Severity(pb.AlertSeverity.Name(msg.severity).removeprefix("ALERT_SEVERITY_")),
        metric=Metric(msg.metric),
        message=msg.message,
        queue=msg.queue or None,
        value=msg.value,
        threshold=msg.threshold,
        at=_required_time(msg, "time"),
        replica=msg.replica or None,
    )


def health_to_proto(health: SystemHealth) -> pb.GetSystemHealthResponse:
    msg = pb.GetSystemHealthResponse(
        status=pb.SystemStatus.Value(f"SYSTEM_STATUS_{health.status.value}"),
        alerts=[alert_to_proto(a) for a in health.alerts],
    )
    time_to_proto(health.checked_at, msg.checked_at)
    return msg


def health_from_proto(msg: pb.GetSystemHealthResponse) -> SystemHealth:
    return SystemHealth(
        status=SystemStatus(pb.SystemStatus.Name(msg.status).removeprefix("SYSTEM_STATUS_")),
        alerts=tuple(alert_from_proto(a) for a in msg.alerts),
        checked_at=_required_time(msg, "checked_at"),
    )
