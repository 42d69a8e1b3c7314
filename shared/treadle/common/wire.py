"""Conversions between the public task types and protobuf, used only at the edges."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common.errors import InvalidArgument
from treadle.common.tasks import (
    Queue,
    ReplicaInfo,
    RetryPolicy,
    Schedule,
    Task,
    TaskError,
    TaskSpec,
    TaskState,
)


def state_to_proto(state: TaskState | None) -> pb.TaskState.ValueType:
    if state is None:
        return pb.TASK_STATE_UNSPECIFIED
    return pb.TaskState.Value(f"TASK_STATE_{state.value}")


def state_from_proto(value: pb.TaskState.ValueType) -> TaskState | None:
    if value == pb.TASK_STATE_UNSPECIFIED:
        return None
    return TaskState(pb.TaskState.Name(value).removeprefix("TASK_STATE_"))


def time_to_proto(value: datetime | None, target: Timestamp) -> None:
    if value is None:
        return
    if value.utcoffset() is None:
        raise InvalidArgument("times must carry a time zone (a naive datetime is ambiguous)")
    target.FromDatetime(value)


def time_from_proto(msg: Any, field: str) -> datetime | None:
    if not msg.HasField(field):
        return None
    stamp: Timestamp = getattr(msg, field)
    return stamp.ToDatetime(tzinfo=UTC)


def retry_to_proto(policy: RetryPolicy) -> pb.RetryPolicy:
    return pb.RetryPolicy(
        base_seconds=policy.base_seconds, factor=policy.factor, max_seconds=policy.max_seconds
    )


def retry_from_proto(msg: pb.RetryPolicy) -> RetryPolicy:
    return RetryPolicy(msg.base_seconds, msg.factor, msg.max_seconds)


def error_to_proto(error: TaskError) -> pb.TaskError:
    msg = pb.TaskError(
        type=error.type, message=error.message, traceback=error.traceback, attempt=error.attempt
    )
    time_to_proto(error.failed_at, msg.failed_at)
    return msg


def error_from_proto(msg: pb.TaskError) -> TaskError:
    return TaskError(
        msg.type, msg.message, msg.traceback, msg.attempt, time_from_proto(msg, "failed_at")
    )


def task_to_proto(task: Task) -> pb.Task:
    msg = pb.Task(
        id=task.id,
        name=task.name,
        queue=task.queue,
        state=state_to_proto(task.state),
        payload=json.dumps(task.payload),
        result="" if task.result is None else json.dumps(task.result),
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        priority=task.priority,
        idempotency_key=task.idempotency_key or "",
        errors=[error_to_proto(e) for e in task.errors],
        cancel_requested=task.cancel_requested,
        timeout_seconds=task.timeout_seconds or 0.0,
        retry=retry_to_proto(task.retry),
        claims=task.claims,
    )
    if task.error is not None:
        msg.error.CopyFrom(error_to_proto(task.error))
    time_to_proto(task.run_at, msg.run_at)
    time_to_proto(task.created_at, msg.created_at)
    time_to_proto(task.started_at, msg.started_at)
    time_to_proto(task.finished_at, msg.finished_at)
    return msg


def task_from_proto(msg: pb.Task) -> Task:
    error = error_from_proto(msg.error) if msg.HasField("error") else None
    state = state_from_proto(msg.state)
    assert state is not None, "a stored task always has a state"
    run_at = time_from_proto(msg, "run_at")
    created_at = time_from_proto(msg, "created_at")
    assert run_at is not None and created_at is not None
    return Task(
        id=msg.id,
        name=msg.name,
        queue=msg.queue,
        state=state,
        payload=json.loads(msg.payload) if msg.payload else None,
        result=json.loads(msg.result) if msg.result else None,
        error=error,
        attempts=msg.attempts,
        max_attempts=msg.max_attempts,
        priority=msg.priority,
        run_at=run_at,
        created_at=created_at,
        started_at=time_from_proto(msg, "started_at"),
        finished_at=time_from_proto(msg, "finished_at"),
        idempotency_key=msg.idempotency_key or None,
        errors=tuple(error_from_proto(e) for e in msg.errors),
        cancel_requested=msg.cancel_requested,
        timeout_seconds=msg.timeout_seconds or None,
        retry=retry_from_proto(msg.retry),
        claims=msg.claims,
    )


def spec_to_proto(spec: TaskSpec) -> pb.TaskSpec:
    msg = pb.TaskSpec(
        name=spec.name,
        payload=spec.payload_json,
        queue=spec.queue or "",
        priority=spec.priority,
        max_attempts=spec.max_attempts,
        idempotency_key=spec.idempotency_key or "",
        delay_seconds=spec.delay_seconds,
        timeout_seconds=spec.timeout_seconds,
    )
    if spec.retry is not None:
        msg.retry.CopyFrom(retry_to_proto(spec.retry))
    time_to_proto(spec.run_at, msg.run_at)
    return msg


def spec_from_proto(msg: pb.TaskSpec) -> TaskSpec:
    return TaskSpec(
        name=msg.name,
        payload_json=msg.payload or "null",
        queue=msg.queue or None,
        priority=msg.priority,
        run_at=time_from_proto(msg, "run_at"),
        max_attempts=msg.max_attempts if msg.HasField("max_attempts") else None,
        idempotency_key=msg.idempotency_key or None,
        delay_seconds=msg.delay_seconds if msg.HasField("delay_seconds") else None,
        timeout_seconds=msg.timeout_seconds if msg.HasField("timeout_seconds") else None,
        retry=retry_from_proto(msg.retry) if msg.HasField("retry") else None,
    )


def queue_to_proto(queue: Queue) -> pb.Queue:
    msg = pb.Queue(
        name=queue.name,
        max_concurrent=queue.max_concurrent or 0,
        paused=queue.paused,
        max_attempts=queue.max_attempts,
        timeout_seconds=queue.timeout_seconds or 0.0,
        retry=retry_to_proto(queue.retry),
    )
    time_to_proto(queue.created_at, msg.created_at)
    time_to_proto(queue.updated_at, msg.updated_at)
    return msg


def queue_from_proto(msg: pb.Queue) -> Queue:
    return Queue(
        name=msg.name,
        max_concurrent=msg.max_concurrent or None,
        paused=msg.paused,
        max_attempts=msg.max_attempts,
        timeout_seconds=msg.timeout_seconds or None,
        retry=retry_from_proto(msg.retry),
        created_at=time_from_proto(msg, "created_at"),
        updated_at=time_from_proto(msg, "updated_at"),
    )


def schedule_to_proto(schedule: Schedule) -> pb.Schedule:
    msg = pb.Schedule(
        name=schedule.name,
        cron=schedule.cron,
        timezone=schedule.timezone,
        task=spec_to_proto(schedule.task),
        paused=schedule.paused,
    )
    time_to_proto(schedule.next_fire_at, msg.next_fire_at)
    time_to_proto(schedule.last_fired_at, msg.last_fired_at)
    time_to_proto(schedule.created_at, msg.created_at)
    return msg


def schedule_from_proto(msg: pb.Schedule) -> Schedule:
    return Schedule(
        name=msg.name,
        cron=msg.cron,
        timezone=msg.timezone or "UTC",
        task=spec_from_proto(msg.task),
        paused=msg.paused,
        next_fire_at=time_from_proto(msg, "next_fire_at"),
        last_fired_at=time_from_proto(msg, "last_fired_at"),
        created_at=time_from_proto(msg, "created_at"),
    )


def replica_to_proto(replica: ReplicaInfo) -> pb.Replica:
    msg = pb.Replica(
        id=replica.id,
        host=replica.host,
        pid=replica.pid,
        version=replica.version,
        alive=replica.alive,
        running=replica.running,
    )
    time_to_proto(replica.started_at, msg.started_at)
    time_to_proto(replica.last_heartbeat_at, msg.last_heartbeat_at)
    time_to_proto(replica.stopped_at, msg.stopped_at)
    return msg


def replica_from_proto(msg: pb.Replica) -> ReplicaInfo:
    started_at = time_from_proto(msg, "started_at")
    last_heartbeat_at = time_from_proto(msg, "last_heartbeat_at")
    assert started_at is not None and last_heartbeat_at is not None
    return ReplicaInfo(
        id=msg.id,
        host=msg.host,
        pid=msg.pid,
        version=msg.version,
        started_at=started_at,
        last_heartbeat_at=last_heartbeat_at,
        alive=msg.alive,
        stopped_at=time_from_proto(msg, "stopped_at"),
        running=msg.running,
    )
