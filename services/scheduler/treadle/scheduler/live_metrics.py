"""The scheduler's metric families read at scrape time, from a `ReplicaState`
snapshot: the replica's live state (pool, worker, executor, background loops),
the worker's own counters (claims, leases, stale outcomes), and the last
periodic round of queue and database counts (`backlog`). Families without a
source yet come out empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from treadle.common.health import QueueBacklog
from treadle.scheduler.state import ReplicaState

#: States counted per queue by `treadle_queue_depth` (RUNNING has its own gauge).
DEPTH_STATES = ("QUEUED", "SCHEDULED", "RETRYING", "DEAD")


class LiveCollector(Collector):
    """Families read at scrape time from `state()`; `queue_label` bounds the
    queue label as the other families do."""

    def __init__(
        self, state: Callable[[], ReplicaState], queue_label: Callable[[str], str]
    ) -> None:
        self.state = state
        self.queue_label = queue_label

    def collect(self) -> Iterator[Metric]:
        state = self.state()
        yield from self._database(state)
        yield from self._worker(state)
        yield from self._queues(state)
        lag = GaugeMetricFamily(
            "treadle_event_loop_lag_seconds",
            "How late the event loop woke the last probe (a quarter-second sleep): "
            "time spent by code that blocks the loop.",
        )
        lag.add_metric([], state.loop_lag)
        yield lag
        replicas = GaugeMetricFamily(
            "treadle_replicas_alive",
            "Scheduler replicas whose heartbeat is recent, as of the last periodic round.",
        )
        if state.backlog.replicas_alive is not None:
            replicas.add_metric([], state.backlog.replicas_alive)
        yield replicas

    def _database(self, state: ReplicaState) -> Iterator[Metric]:
        pool = state.pool
        families = {
            "size": ("treadle_database_pool_size", "Connections open in the pool."),
            "max_size": ("treadle_database_pool_max_size", "Connections the pool may open."),
            "in_use": ("treadle_database_pool_in_use", "Connections lent out now."),
            "waiting": ("treadle_database_pool_waiting", "Callers waiting for a connection."),
        }
        for field, (name, help_text) in families.items():
            family = GaugeMetricFamily(name, help_text)
            if state.started:
                family.add_metric([], getattr(pool, field))
            yield family
        up = GaugeMetricFamily(
            "treadle_database_up",
            "1 while the replica's database answers its periodic ping, else 0.",
        )
        if state.started:
            up.add_metric([], 1 if state.serving else 0)
        yield up
        size = GaugeMetricFamily(
            "treadle_database_size_bytes",
            "pg_database_size() of the database, as of the last periodic round.",
        )
        if state.backlog.database_size is not None:
            size.add_metric([], state.backlog.database_size)
        yield size

    def _worker(self, state: ReplicaState) -> Iterator[Metric]:
        gauges = {
            "treadle_worker_capacity": "Tasks this replica may run at once (TREADLE_CONCURRENCY).",
            "treadle_worker_tasks_running": "Tasks running on this replica now.",
            "treadle_executor_threads": "Threads that run plain def handlers.",
            "treadle_executor_threads_busy": "Executor threads running a handler now.",
            "treadle_executor_queue_length": "Handler calls waiting for an executor thread.",
        }
        executor = state.executor
        values = (state.capacity, state.running, executor.threads, executor.busy, executor.queued)
        for i, (name, help_text) in enumerate(gauges.items()):
            family = GaugeMetricFamily(name, help_text)
            if state.started:
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
            if state.started:
                counter.add_metric([], getattr(state, attribute))
            yield counter
        fires = CounterMetricFamily(
            "treadle_schedule_fires",
            "Cron ticks this replica fired, duplicates included (fires minus duplicate "
            "fires = tasks submitted).",
        )
        duplicates = CounterMetricFamily(
            "treadle_schedule_duplicate_fires",
            "Fired ticks whose task was there already (another firing of the same tick).",
        )
        if state.started:
            fires.add_metric([], state.fired_total)
            duplicates.add_metric([], state.duplicates_total)
        yield fires
        yield duplicates
        loops = GaugeMetricFamily(
            "treadle_background_loop_up",
            "1 while the replica's background loop runs; 0 once it ended.",
            labels=("loop",),
        )
        for name, alive in sorted(state.loops.items()):
            loops.add_metric([name], 1 if alive else 0)
        yield loops

    def _queues(self, state: ReplicaState) -> Iterator[Metric]:
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
        for q in state.backlog.queues:
            merged.setdefault(self.queue_label(q.queue), []).append(q)
        for name, parts in sorted(merged.items()):
            for depth_state in DEPTH_STATES:
                counted = sum(getattr(q, depth_state.lower()) for q in parts)
                depth.add_metric([name, depth_state], counted)
            oldest.add_metric([name], max(q.oldest_queued_age_seconds for q in parts))
            running.add_metric([name], sum(q.running for q in parts))
            limit.add_metric([name], sum(q.max_concurrent or 0 for q in parts))
            paused.add_metric([name], 1 if all(q.paused for q in parts) else 0)
        stamp = GaugeMetricFamily(
            "treadle_metrics_last_refresh_timestamp_seconds",
            "Unix time of the last successful periodic round of queue and database queries.",
        )
        if state.backlog.as_of is not None:
            stamp.add_metric([], state.backlog.as_of.timestamp())
        yield from (depth, oldest, running, limit, paused, stamp)
