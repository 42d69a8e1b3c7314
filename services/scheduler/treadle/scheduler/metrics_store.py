"""The few statements behind periodic metrics and health, through named queries
in `sql/metrics.sql`. Each walks an index; none reads a row per task."""

from __future__ import annotations

from treadle.common.health import QueueBacklog
from treadle.scheduler import postgres


class MetricsStore(postgres.PoolStore):
    async def queues(self) -> list[QueueBacklog]:
        """Every queue's tasks by state, its oldest ready task's wait, and its controls."""
        return [
            QueueBacklog(
                queue=r["name"],
                queued=r["queued"],
                scheduled=r["scheduled"],
                retrying=r["retrying"],
                running=r["running"],
                dead=r["dead"],
                oldest_queued_age_seconds=max(0.0, r["oldest_queued_age"] or 0.0),
                paused=r["paused"],
                max_concurrent=r["max_concurrent"],
            )
            for r in await self._fetch("metrics_queues")
        ]

    async def database_size(self) -> int:
        """pg_database_size() of the current database, in bytes."""
        size: int = await self._fetchval("metrics_database")
        return size
