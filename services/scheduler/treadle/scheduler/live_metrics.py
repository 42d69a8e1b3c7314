"""The scheduler's metric families read at scrape time: the replica's live
state (pool, worker, executor, background loops), the worker's own counters
(claims, leases, stale outcomes), and the last periodic round of queue and
database counts kept by `SchedulerMetrics`. Families without a source yet come
out empty. Also the pool and executor figures that `GetHealth` reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import asyncpg
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from treadle.common.health import ExecutorHealth, PoolHealth, QueueBacklog

if TYPE_CHECKING:
    from treadle.scheduler.executor import Executor
    from treadle.scheduler.metrics import SchedulerMetrics

#: States counted per queue by `treadle_queue_depth` (RUNNING has its own gauge).
DEPTH_STATES = ("QUEUED", "SCHEDULED", "RETRYING", "DEAD")


def pool_health(pool: asyncpg.Pool | None) -> PoolHealth:
    if pool is None:
        return PoolHealth()
    size = pool.get_size()
    return PoolHealth(
        size=size,
        max_size=pool.get_max_size(),
        in_use=size - pool.get_idle_size(),
        waiting=pool_waiting(pool),
    )


def pool_waiting(pool: asyncpg.Pool) -> int:
    """Callers blocked in `pool.acquire()`. asyncpg has no public API for it:
    its free connections sit in an asyncio.Queue, whose waiting getters we count."""
    queue = getattr(pool, "_queue", None)
    getters = getattr(queue, "_getters", ())
    return sum(1 for waiter in getters if not waiter.done())


def executor_health(executor: Executor | None) -> ExecutorHealth:
    if executor is None:
        return ExecutorHealth()
    return ExecutorHealth(threads=executor.threads, busy=executor.busy, queued=executor.queued)


class LiveCollector(Collector):
    """Families read at scrape time: live state, the worker's counters, and the
    last periodic round. Families without a source yet come out empty."""

    def __init__(self, metrics: SchedulerMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        yield from self._database()
        yield from self._worker()
        yield from self._queues()
        lag = GaugeMetricFamily(
            "treadle_event_loop_lag_seconds",
            "How late the event loop woke the last probe (a quarter-second sleep): "
            "time spent by code that blocks the loop.",
        )
        lag.add_metric([], self.m.loop_lag)
        yield lag
        replicas = GaugeMetricFamily(
            "treadle_replicas_alive",
            "Scheduler replicas whose heartbeat is recent, as of the last periodic round.",
        )
        if self.m.replicas_alive is not None:
            replicas.add_metric([], self.m.replicas_alive)
        yield replicas

    def _database(self) -> Iterator[Metric]:
        replica = self.m.replica
        scheduler = replica.scheduler if replica is not None else None
        pool = pool_health(scheduler.store.pool if scheduler is not None else None)
        families = {
            "size": ("treadle_database_pool_size", "Connections open in the pool."),
            "max_size": ("treadle_database_pool_max_size", "Connections the pool may open."),
            "in_use": ("treadle_database_pool_in_use", "Connections lent out now."),
            "waiting": ("treadle_database_pool_waiting", "Callers waiting for a connection."),
        }
        for field, (name, help_text) in families.items():
            family = GaugeMetricFamily(name, help_text)
            if replica is not None:
                family.add_metric([], getattr(pool, field))
            yield family
        up = GaugeMetricFamily(
            "treadle_database_up",
            "1 while the replica's database answers its periodic ping, else 0.",
        )
        if replica is not None:
            up.add_metric([], 1 if replica.database_ok else 0)
        yield up
        size = GaugeMetricFamily(
            "treadle_database_size_bytes",
            "pg_database_size() of the database, as of the last periodic round.",
        )
        if self.m.database_size is not None:
            size.add_metric([], self.m.database_size)
        yield size

    def _worker(self) -> Iterator[Metric]:
        replica = self.m.replica
        worker = replica.worker if replica is not None else None
        gauges = {
            "treadle_worker_capacity": "Tasks this replica may run at once (TREADLE_CONCURRENCY).",
            "treadle_worker_tasks_running": "Tasks running on this replica now.",
            "treadle_executor_threads": "Threads that run plain def handlers.",
            "treadle_executor_threads_busy": "Executor threads running a handler now.",
            "treadle_executor_queue_length": "Handler calls waiting for an executor thread.",
        }
        executor = executor_health(worker.executor if worker is not None else None)
        values = (
            (
                worker.settings.concurrency,
                worker.running,
                executor.threads,
                executor.busy,
                executor.queued,
            )
            if worker is not None
            else None
        )
        for i, (name, help_text) in enumerate(gauges.items()):
            family = GaugeMetricFamily(name, help_text)
            if values is not None:
                family.add_metric([], values[i])
            yield family
        counters = {
            "treadle_tasks_claimed": ("claimed_total", "Tasks this replica claimed."),
            "treadle_outcomes_recorded": (
                "completed_total",
                "Outcomes written to the database while their attempt held the lease.",
            ),
            "treadle_stale_outcomes_discarded": (
                "stale_total",
                "Outcomes discarded because their lease had moved on (the task was "
                "reclaimed meanwhile).",
            ),
            "treadle_leases_extended": (
                "leases_extended_total",
                "Leases this replica's heartbeat renewed.",
            ),
            "treadle_leases_lost": (
                "leases_lost_total",
                "Tasks running here whose lease another replica had taken back.",
            ),
            "treadle_leases_reclaimed": (
                "reclaimed_total",
                "Tasks with an expired lease (their replica died) that this replica took back.",
            ),
        }
        for name, (attribute, help_text) in counters.items():
            counter = CounterMetricFamily(name, help_text)
            if worker is not None:
                counter.add_metric([], getattr(worker, attribute, 0))
            yield counter
        schedules = replica.schedules if replica is not None else None
        fires = CounterMetricFamily(
            "treadle_schedule_fires",
            "Cron ticks this replica fired, duplicates included (fires minus duplicate "
            "fires = tasks submitted).",
        )
        duplicates = CounterMetricFamily(
            "treadle_schedule_duplicate_fires",
            "Fired ticks whose task was there already (another firing of the same tick).",
        )
        if schedules is not None:
            fires.add_metric([], schedules.fired_total)
            duplicates.add_metric([], schedules.duplicates_total)
        yield fires
        yield duplicates
        loops = GaugeMetricFamily(
            "treadle_background_loop_up",
            "1 while the replica's background loop runs; 0 once it ended.",
            labels=("loop",),
        )
        for name, alive in sorted((replica.loops if replica is not None else {}).items()):
            loops.add_metric([name], 1 if alive else 0)
        yield loops

    def _queues(self) -> Iterator[Metric]:
        m = self.m
        depth = GaugeMetricFamily(
            "treadle_queue_depth",
            "Tasks waiting in each queue by state (QUEUED, SCHEDULED, RETRYING, DEAD), as of "
            "the last periodic round.",
            labels=("queue", "state"),
        )
        oldest = GaugeMetricFamily(
            "treadle_queue_oldest_task_age_seconds",
            "Seconds the oldest ready (QUEUED) task of each queue has waited; 0 when none.",
            labels=("queue",),
        )
        running = GaugeMetricFamily(
            "treadle_queue_running_tasks",
            "Tasks RUNNING in each queue, on every replica.",
            labels=("queue",),
        )
        limit = GaugeMetricFamily(
            "treadle_queue_max_concurrent",
            "Each queue's max_concurrent across replicas; 0 means no limit.",
            labels=("queue",),
        )
        paused = GaugeMetricFamily(
            "treadle_queue_paused", "1 while a queue is paused, else 0.", labels=("queue",)
        )
        merged: dict[str, list[QueueBacklog]] = {}
        for q in m.backlog:
            merged.setdefault(m.queue_label(q.queue), []).append(q)
        for name, parts in sorted(merged.items()):
            for state in DEPTH_STATES:
                depth.add_metric([name, state], sum(getattr(q, state.lower()) for q in parts))
            oldest.add_metric([name], max(q.oldest_queued_age_seconds for q in parts))
            running.add_metric([name], sum(q.running for q in parts))
            limit.add_metric([name], sum(q.max_concurrent or 0 for q in parts))
            paused.add_metric([name], 1 if all(q.paused for q in parts) else 0)
        stamp = GaugeMetricFamily(
            "treadle_metrics_last_refresh_timestamp_seconds",
            "Unix time of the last successful periodic round of queue and database queries.",
        )
        if m.backlog_as_of is not None:
            stamp.add_metric([], m.backlog_as_of.timestamp())
        yield from (depth, oldest, running, limit, paused, stamp)
