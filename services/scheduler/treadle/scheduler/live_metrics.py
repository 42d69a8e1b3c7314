"""The scheduler's metric families read at scrape time, from a `ReplicaState`
snapshot: the replica's live state (pool, worker, executor, background loops),
the worker's own counters (claims, leases, stale outcomes), and the last
periodic round of queue and database counts (`backlog`). Families without a
source yet come out empty.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from treadle.common.health import QueueBacklog
from treadle.scheduler.state import ReplicaState

#: States counted per queue by `treadle_queue_depth` (RUNNING has its own gauge).
DEPTH_STATES = ("QUEUED", "SCHEDULED", "RETRYING", "DEAD")


#: An unlabelled family's help text and its one value (None: not known yet).
Single = tuple[str, float | None]


def _once_started(state: ReplicaState, table: Mapping[str, tuple[str, float]]) -> dict[str, Single]:
    """`table`, its values known only once the replica has built its parts."""
    return {name: (h, value if state.started else None) for name, (h, value) in table.items()}


def _singles(
    kind: type[GaugeMetricFamily] | type[CounterMetricFamily], table: dict[str, Single]
) -> Iterator[Metric]:
    for name, (help_text, value) in table.items():
        family = kind(name, help_text)
        if value is not None:
            family.add_metric([], value)
        yield family


class LiveCollector(Collector):
    """Families read at scrape time from `state()`; `queue_label` and
    `tenant_label` bound those labels as the other families do."""

    def __init__(
        self,
        state: Callable[[], ReplicaState],
        queue_label: Callable[[str], str],
        tenant_label: Callable[[str], str],
    ) -> None:
        self.state = state
        self.queue_label = queue_label
        self.tenant_label = tenant_label

    def collect(self) -> Iterator[Metric]:
        state = self.state()
        yield from _singles(GaugeMetricFamily, self._gauges(state))
        yield from _singles(CounterMetricFamily, self._counters(state))
        loops = GaugeMetricFamily(
            "treadle_background_loop_up",
            "1 while the replica's background loop runs; 0 once it ended.",
            labels=("loop",),
        )
        for name, alive in sorted(state.loops.items()):
            loops.add_metric([name], 1 if alive else 0)
        yield loops
        yield from self._queues(state)

    def _gauges(self, state: ReplicaState) -> dict[str, Single]:
        pool, executor = state.pool, state.executor
        as_of = state.backlog.as_of
        live = {
            "treadle_database_pool_size": ("Connections open in the pool.", pool.size),
            "treadle_database_pool_max_size": ("Connections the pool may open.", pool.max_size),
            "treadle_database_pool_in_use": ("Connections lent out now.", pool.in_use),
            "treadle_database_pool_waiting": ("Callers waiting for a connection.", pool.waiting),
            "treadle_database_up": (
                "1 while the replica's database answers its periodic ping, else 0.",
                1 if state.serving else 0,
            ),
            "treadle_worker_capacity": (
                "Tasks this replica may run at once (TREADLE_CONCURRENCY).",
                state.capacity,
            ),
            "treadle_worker_tasks_running": ("Tasks running on this replica now.", state.running),
            "treadle_executor_threads": ("Threads that run plain def handlers.", executor.threads),
            "treadle_executor_threads_busy": (
                "Executor threads running a handler now.",
                executor.busy,
            ),
            "treadle_executor_queue_length": (
                "Handler calls waiting for an executor thread.",
                executor.queued,
            ),
        }
        return {
            **_once_started(state, live),
            "treadle_database_size_bytes": (
                "pg_database_size() of the database, as of the last periodic round.",
                state.backlog.database_size,
            ),
            "treadle_event_loop_lag_seconds": (
                "How late the event loop woke the last probe (a quarter-second sleep): "
                "time spent by code that blocks the loop.",
                state.loop_lag,
            ),
            "treadle_replicas_alive": (
                "Scheduler replicas whose heartbeat is recent, as of the last periodic round.",
                state.backlog.replicas_alive,
            ),
            "treadle_metrics_last_refresh_timestamp_seconds": (
                "Unix time of the last successful periodic round of queue and database queries.",
                as_of.timestamp() if as_of is not None else None,
            ),
        }

    def _counters(self, state: ReplicaState) -> dict[str, Single]:
        """The replica's own counters since it started."""
        counters = {
            "treadle_tasks_claimed": ("Tasks this replica claimed.", state.claimed_total),
            "treadle_outcomes_recorded": (
                "Outcomes written to the database while their attempt held the lease.",
                state.completed_total,
            ),
            "treadle_stale_outcomes_discarded": (
                "Outcomes discarded because their lease had moved on (the task was "
                "reclaimed meanwhile).",
                state.stale_total,
            ),
            "treadle_leases_extended": (
                "Leases this replica's heartbeat renewed.",
                state.leases_extended_total,
            ),
            "treadle_leases_lost": (
                "Tasks running here whose lease another replica had taken back.",
                state.leases_lost_total,
            ),
            "treadle_leases_reclaimed": (
                "Tasks with an expired lease (their replica died) that this replica took back.",
                state.reclaimed_total,
            ),
            "treadle_schedule_fires": (
                "Cron ticks this replica fired, duplicates included (fires minus duplicate "
                "fires = tasks submitted).",
                state.fired_total,
            ),
            "treadle_schedule_duplicate_fires": (
                "Fired ticks whose task was there already (another firing of the same tick).",
                state.duplicates_total,
            ),
        }
        return _once_started(state, counters)

    def _queues(self, state: ReplicaState) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "treadle_queue_depth",
            "Tasks waiting in each queue by state (QUEUED, SCHEDULED, RETRYING, DEAD), as of "
            "the last periodic round.",
            labels=("tenant", "queue", "state"),
        )
        oldest = GaugeMetricFamily(
            "treadle_queue_oldest_task_age_seconds",
            "Seconds the oldest ready (QUEUED) task of each queue has waited; 0 when none.",
            labels=("tenant", "queue"),
        )
        running = GaugeMetricFamily(
            "treadle_queue_running_tasks",
            "Tasks RUNNING in each queue, on every replica.",
            labels=("tenant", "queue"),
        )
        limit = GaugeMetricFamily(
            "treadle_queue_max_concurrent",
            "Each queue's max_concurrent across replicas; 0 means no limit.",
            labels=("tenant", "queue"),
        )
        paused = GaugeMetricFamily(
            "treadle_queue_paused", "1 while a queue is paused, else 0.", labels=("tenant", "queue")
        )
        merged: dict[tuple[str, str], list[QueueBacklog]] = {}
        for q in state.backlog.queues:
            key = (self.tenant_label(q.tenant), self.queue_label(q.queue))
            merged.setdefault(key, []).append(q)
        for (tenant, name), parts in sorted(merged.items()):
            for depth_state in DEPTH_STATES:
                counted = sum(getattr(q, depth_state.lower()) for q in parts)
                depth.add_metric([tenant, name, depth_state], counted)
            oldest.add_metric([tenant, name], max(q.oldest_queued_age_seconds for q in parts))
            running.add_metric([tenant, name], sum(q.running for q in parts))
            limit.add_metric([tenant, name], sum(q.max_concurrent or 0 for q in parts))
            paused.add_metric([tenant, name], 1 if all(q.paused for q in parts) else 0)
        yield from (depth, oldest, running, limit, paused)
