"""`ReplicaState`: a snapshot of one replica's live figures.

The supervisor takes it (`Replica.state()`) whenever `/metrics` is scraped
(`live_metrics`) or `GetHealth` is called (`health`), so neither reads the
replica, nor imports it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

from treadle.common.health import ExecutorHealth, PoolHealth
from treadle.scheduler.backlog import Round


@dataclasses.dataclass(frozen=True)
class ReplicaState:
    replica_id: str
    #: False until the replica has built its parts: the live figures below are zeros.
    started: bool
    #: As of the last database ping; grpc.health.v1 says NOT_SERVING while False.
    serving: bool
    pool: PoolHealth
    executor: ExecutorHealth
    #: Tasks running here now, and how many may run at once.
    running: int
    capacity: int
    #: Each background loop by name, and whether it still runs.
    loops: Mapping[str, bool]
    #: The worker's counters since the replica started.
    claimed_total: int = 0
    completed_total: int = 0
    stale_total: int = 0
    leases_extended_total: int = 0
    leases_lost_total: int = 0
    reclaimed_total: int = 0
    #: Cron ticks this replica fired, and those whose task was there already.
    fired_total: int = 0
    duplicates_total: int = 0
    #: The last periodic round (`backlog`), and the event loop's lag.
    backlog: Round = dataclasses.field(default_factory=Round)
    loop_lag: float = 0.0
