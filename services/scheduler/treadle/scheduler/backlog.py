"""The periodic round: what every queue holds, the database's size, the replicas alive.

Counted by one round of indexed queries every `TREADLE_METRICS_INTERVAL`
seconds (the replica's `treadle-metrics` loop), never by a per-task row update;
`/metrics` and `GetHealth` read the last round (`Backlog.latest`). Between
rounds the same loop measures the event loop's lag. A round that fails is
logged and told to the observer; the figures of the last good round stay.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import datetime
from typing import Protocol

from treadle.common.errors import TreadleError
from treadle.common.health import QueueBacklog
from treadle.scheduler.loops import Clock, Loop, utcnow
from treadle.scheduler.metrics_store import MetricsStore
from treadle.scheduler.principal import DEFAULT_TENANT
from treadle.scheduler.store import Store

log = logging.getLogger("treadle.scheduler.backlog")

#: Seconds between two probes of the event loop's lag.
LAG_PROBE = 0.25
#: Seconds one periodic round may take before it is abandoned (and counted as failed).
REFRESH_TIMEOUT = 30.0


@dataclasses.dataclass(frozen=True)
class Round:
    """The figures of one round; the empty one before the first."""

    queues: tuple[QueueBacklog, ...] = ()
    #: When the round ended; None before the first.
    as_of: datetime | None = None
    database_size: int | None = None
    replicas_alive: int | None = None


class RoundObserver(Protocol):
    """Told how each round went (`metrics.SchedulerMetrics`)."""

    def refreshed(self, seconds: float) -> None:
        """A round succeeded in `seconds`."""

    def refresh_failed(self) -> None:
        """A round failed or timed out."""


@dataclasses.dataclass(eq=False)
class Backlog:
    """The `treadle-metrics` loop and the last round it made."""

    store: Store
    interval: float
    lease_seconds: float
    observer: RoundObserver
    clock: Clock = utcnow
    latest: Round = dataclasses.field(init=False, default_factory=Round)
    #: Seconds the event loop woke the last lag probe late.
    loop_lag: float = dataclasses.field(init=False, default=0.0)

    def loops(self) -> dict[str, Loop]:
        return {"metrics": self.run}

    async def run(self) -> None:
        """Count queues, size the database and the replicas alive every
        `interval` seconds, and probe the event loop's lag in between. Errors
        are logged and counted; this loop never stops the replica."""
        loop = asyncio.get_running_loop()
        probe = MetricsStore(self.store.pool)
        due = 0.0
        while True:
            if loop.time() >= due:
                try:
                    async with asyncio.timeout(REFRESH_TIMEOUT):
                        await self.refresh(probe)
                except (TreadleError, TimeoutError) as exc:
                    self.observer.refresh_failed()
                    log.warning("metrics round failed: %s", exc)
                except Exception:
                    self.observer.refresh_failed()
                    log.exception("metrics round failed unexpectedly")
                due = loop.time() + self.interval
            began = loop.time()
            await asyncio.sleep(LAG_PROBE)
            self.loop_lag = max(0.0, loop.time() - began - LAG_PROBE)

    async def refresh(self, probe: MetricsStore) -> None:
        began = time.perf_counter()
        queues = await probe.queues()
        size = await probe.database_size()
        # Whether each is alive is what counts here (the running count is any tenant's).
        replicas = await self.store.replicas(DEFAULT_TENANT, self.lease_seconds)
        self.latest = Round(
            queues=tuple(queues),
            as_of=self.clock(),
            database_size=size,
            replicas_alive=sum(1 for r in replicas if r.alive),
        )
        self.observer.refreshed(time.perf_counter() - began)
