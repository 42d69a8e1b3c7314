"""The few statements behind periodic metrics and health, through named queries
in `sql/metrics.sql`. Each walks an index; none reads a row per task."""

from __future__ import annotations

from treadle.common.health import QueueBacklog
from treadle.scheduler import postgres


class MetricsStore(postgres.PoolStore):
    async def queues(self) -> list[QueueBacklog]:
        """Every queue's tasks by state, its oldest ready task's wait, and its controls."""
        return [
            postgres.from_row(
                QueueBacklog,
                r,
                queue=r["name"],
                oldest_queued_age_seconds=max(0.0, r["oldest_queued_age"] or 0.0),
            )
            for r in await self._fetch("metrics_queues")
        ]

    async def database_size(self) -> int:
        """pg_database_size() of the current database, in bytes."""
        size: int = await self._fetchval("metrics_database")
        return size
