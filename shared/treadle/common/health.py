"""A scheduler replica's health, as plain dataclasses, and their protobuf form.

The scheduler fills a `SchedulerHealth` for `GetHealth`; the gateway reads it
(`treadle.client.Client.health()`) for `/health/detailed`. Conversions to and
from `GetHealthResponse` live here, at the edge, like `wire` does for tasks.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

from treadle.api.v1 import scheduler_pb2 as pb


@dataclasses.dataclass(frozen=True)
class DatabaseHealth:
    reachable: bool
    #: Seconds a trivial query took; None when unreachable.
    latency_seconds: float | None = None
    size_bytes: int | None = None
    #: Why it is unreachable.
    error: str = ""


@dataclasses.dataclass(frozen=True)
class PoolHealth:
    size: int = 0
    max_size: int = 0
    in_use: int = 0
    waiting: int = 0


@dataclasses.dataclass(frozen=True)
class ExecutorHealth:
    threads: int = 0
    busy: int = 0
    queued: int = 0


@dataclasses.dataclass(frozen=True)
class QueueBacklog:
    """One queue's tasks by state, as of the last periodic count."""

    queue: str
    queued: int = 0
    scheduled: int = 0
    retrying: int = 0
    running: int = 0
    dead: int = 0
    #: Seconds the oldest ready task has waited; 0 when none is ready.
    oldest_queued_age_seconds: float = 0.0
    paused: bool = False
    #: None: no limit.
    max_concurrent: int | None = None


@dataclasses.dataclass(frozen=True)
class SchedulerHealth:
    replica_id: str
    version: str
    #: True while grpc.health.v1 reports SERVING.
    serving: bool
    database: DatabaseHealth
    pool: PoolHealth
    executor: ExecutorHealth
    running: int
    capacity: int
    backlog: tuple[QueueBacklog, ...] = ()
    backlog_as_of: datetime | None = None
    #: Each background loop by name, and whether it still runs.
    loops: dict[str, bool] = dataclasses.field(default_factory=dict)
    #: None when the database cannot say.
    replicas_alive: int | None = None

    def problems(self) -> list[str]:
        """What makes this replica less than healthy, in words; empty when all is well."""
        found = []
        if not self.database.reachable:
            found.append(f"database unreachable: {self.database.error or 'no answer'}")
        found += [
            f"background loop {name} is not running" for name, up in self.loops.items() if not up
        ]
        if not self.serving and self.database.reachable:
            found.append("replica is not serving (stopping)")
        return found


def health_to_proto(h: SchedulerHealth) -> pb.GetHealthResponse:
    reply = pb.GetHealthResponse(
        replica_id=h.replica_id,
        version=h.version,
        serving=h.serving,
        database=pb.GetHealthResponse.Database(
            reachable=h.database.reachable,
            latency_seconds=h.database.latency_seconds or 0.0,
            size_bytes=h.database.size_bytes or 0,
            error=h.database.error,
        ),
        pool=pb.GetHealthResponse.Pool(**dataclasses.asdict(h.pool)),
        executor=pb.GetHealthResponse.Executor(**dataclasses.asdict(h.executor)),
        running=h.running,
        capacity=h.capacity,
        backlog=[
            pb.GetHealthResponse.QueueBacklog(
                **{**dataclasses.asdict(q), "max_concurrent": q.max_concurrent or 0}
            )
            for q in h.backlog
        ],
        loops=[pb.GetHealthResponse.Loop(name=n, alive=up) for n, up in sorted(h.loops.items())],
    )
    if h.backlog_as_of is not None:
        reply.backlog_as_of.FromDatetime(h.backlog_as_of)
    if h.replicas_alive is not None:
        reply.replicas_alive = h.replicas_alive
    return reply


def health_from_proto(reply: pb.GetHealthResponse) -> SchedulerHealth:
    db = reply.database
    return SchedulerHealth(
        replica_id=reply.replica_id,
        version=reply.version,
        serving=reply.serving,
        database=DatabaseHealth(
            reachable=db.reachable,
            latency_seconds=db.latency_seconds if db.reachable else None,
            size_bytes=db.size_bytes if db.reachable else None,
            error=db.error,
        ),
        pool=PoolHealth(
            reply.pool.size, reply.pool.max_size, reply.pool.in_use, reply.pool.waiting
        ),
        executor=ExecutorHealth(reply.executor.threads, reply.executor.busy, reply.executor.queued),
        running=reply.running,
        capacity=reply.capacity,
        backlog=tuple(
            QueueBacklog(
                queue=q.queue,
                queued=q.queued,
                scheduled=q.scheduled,
                retrying=q.retrying,
                running=q.running,
                dead=q.dead,
                oldest_queued_age_seconds=q.oldest_queued_age_seconds,
                paused=q.paused,
                max_concurrent=q.max_concurrent or None,
            )
            for q in reply.backlog
        ),
        backlog_as_of=(
            reply.backlog_as_of.ToDatetime(tzinfo=UTC) if reply.HasField("backlog_as_of") else None
        ),
        loops={loop.name: loop.alive for loop in reply.loops},
        replicas_alive=reply.replicas_alive if reply.HasField("replicas_alive") else None,
    )
