"""A scheduler replica's health, as plain dataclasses, and their protobuf form.

The scheduler fills a `SchedulerHealth` for `GetHealth`; the gateway reads it
(`treadle.client.Client.health()`) for `/health/detailed`. Their `wire.Codec`s,
for `GetHealthResponse`, live here too.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.common import wire


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
    #: The queue's tenant (not sent: a caller sees only its own tenant's queues).
    tenant: str = "default"


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


def _loops_to_proto(loops: dict[str, bool]) -> list[pb.GetHealthResponse.Loop]:
    return [pb.GetHealthResponse.Loop(name=n, alive=up) for n, up in sorted(loops.items())]


_DATABASE = wire.Codec(
    DatabaseHealth,
    pb.GetHealthResponse.Database,
    # Figures of an unreachable database are not figures, even when zero.
    decode={
        "latency_seconds": lambda db: db.latency_seconds if db.reachable else None,
        "size_bytes": lambda db: db.size_bytes if db.reachable else None,
    },
)
_POOL = wire.Codec(PoolHealth, pb.GetHealthResponse.Pool)
_EXECUTOR = wire.Codec(ExecutorHealth, pb.GetHealthResponse.Executor)
_BACKLOG = wire.Codec(QueueBacklog, pb.GetHealthResponse.QueueBacklog)
_HEALTH = wire.Codec(
    SchedulerHealth,
    pb.GetHealthResponse,
    encode={"loops": _loops_to_proto},
    decode={"loops": lambda reply: {loop.name: loop.alive for loop in reply.loops}},
)

scheduler_health_to_proto = _HEALTH.to_proto
scheduler_health_from_proto = _HEALTH.from_proto
