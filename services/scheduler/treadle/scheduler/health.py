"""What `GetHealth` reports: one replica's view of itself and its database.

It answers quickly whatever the database does: the database is asked once,
within `timeout` seconds (its latency and size, then the replicas alive);
everything else is read from memory (pool, executor, worker, loops) or from
the last periodic round of the metrics loop (the backlog per queue).
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from treadle.common.errors import TreadleError
from treadle.common.exposition import VERSION
from treadle.common.health import DatabaseHealth, SchedulerHealth
from treadle.scheduler.live_metrics import executor_health, pool_health
from treadle.scheduler.metrics_store import MetricsStore

if TYPE_CHECKING:
    from treadle.scheduler.store import Store
    from treadle.scheduler.supervisor import Replica

#: Seconds the database gets to answer a health check.
DATABASE_TIMEOUT = 1.0


class HealthReporter:
    def __init__(self, replica: Replica, timeout: float = DATABASE_TIMEOUT) -> None:
        self.replica = replica
        self.timeout = timeout

    async def report(self) -> SchedulerHealth:
        replica = self.replica
        database, alive = await self._database()
        worker = replica.worker
        metrics = replica.metrics
        return SchedulerHealth(
            replica_id=replica.settings.replica_id,
            version=VERSION,
            serving=replica.database_ok,
            database=database,
            pool=pool_health(self._store.pool if self._store is not None else None),
            executor=executor_health(worker.executor if worker is not None else None),
            running=worker.running if worker is not None else 0,
            capacity=replica.settings.concurrency,
            backlog=metrics.backlog,
            backlog_as_of=metrics.backlog_as_of,
            loops=replica.loops,
            replicas_alive=alive,
        )

    @property
    def _store(self) -> Store | None:
        scheduler = self.replica.scheduler
        return scheduler.store if scheduler is not None else None

    async def _database(self) -> tuple[DatabaseHealth, int | None]:
        store = self._store
        if store is None:
            return DatabaseHealth(reachable=False, error="not connected yet"), None
        began = time.perf_counter()
        try:
            async with asyncio.timeout(self.timeout):
                size = await MetricsStore(store.pool).database_size()
        except TimeoutError:
            error = f"no answer within {self.timeout:g}s"
            return DatabaseHealth(reachable=False, error=error), None
        except TreadleError as exc:
            return DatabaseHealth(reachable=False, error=exc.message), None
        latency = time.perf_counter() - began
        try:
            async with asyncio.timeout(self.timeout):
                replicas = await store.replicas(self.replica.settings.lease_seconds)
            alive: int | None = sum(1 for r in replicas if r.alive)
        except (TimeoutError, TreadleError):
            alive = None
        return DatabaseHealth(reachable=True, latency_seconds=latency, size_bytes=size), alive
