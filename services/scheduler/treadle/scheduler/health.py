"""What `GetHealth` reports: one replica's view of itself and its database.

It answers quickly whatever the database does: the database is asked once,
within `timeout` seconds (its latency and size, then the replicas alive);
everything else comes from a `ReplicaState` snapshot, read from memory (pool,
executor, worker, loops) or from the last periodic round (the backlog per
queue, `backlog`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable

from treadle.common.errors import TreadleError
from treadle.common.exposition import VERSION
from treadle.common.health import DatabaseHealth, SchedulerHealth
from treadle.scheduler import postgres
from treadle.scheduler.metrics_store import MetricsStore
from treadle.scheduler.principal import DEFAULT_TENANT
from treadle.scheduler.state import ReplicaState
from treadle.scheduler.store import Store

#: Seconds the database gets to answer a health check.
DATABASE_TIMEOUT = 1.0


@dataclasses.dataclass(eq=False)
class HealthReporter:
    store: Store
    state: Callable[[], ReplicaState]
    lease_seconds: float
    timeout: float = DATABASE_TIMEOUT

    async def report(self) -> SchedulerHealth:
        database, alive = await self._database()
        state = self.state()
        # The rest (replica id, serving, pool, executor, running, capacity)
        # is the state's field of the same name.
        return postgres.from_row(
            SchedulerHealth,
            vars(state),
            version=VERSION,
            database=database,
            backlog=state.backlog.queues,
            backlog_as_of=state.backlog.as_of,
            loops=dict(state.loops),
            replicas_alive=alive,
        )

    async def _database(self) -> tuple[DatabaseHealth, int | None]:
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                size = await MetricsStore(self.store.pool).database_size()
        except TimeoutError:
            error = f"no answer within {self.timeout:g}s"
            return DatabaseHealth(reachable=False, error=error), None
        except TreadleError as exc:
            return DatabaseHealth(reachable=False, error=exc.message), None
        latency = time.perf_counter() - began
        try:
            async with asyncio.timeout(self.timeout):
                # Whether each is alive is what counts here.
                replicas = await self.store.replicas(DEFAULT_TENANT, self.lease_seconds)
            alive: int | None = sum(1 for r in replicas if r.alive)
        except (TimeoutError, TreadleError):
            alive = None
        return DatabaseHealth(reachable=True, latency_seconds=latency, size_bytes=size), alive
