"""The scheduler's Prometheus metrics: one `SchedulerMetrics` per replica, in its own registry.

Where the numbers come from:

- counters and histograms are updated as things happen, `SchedulerMetrics`
  being an observer of the replica's events (`events.Events`): submit, claim,
  start and end of an attempt, each flush of outcomes; of its pool
  (`postgres.PoolObserver`): every connection, and every SQL statement, named
  after its block in `sql/`; of the periodic round (`backlog.RoundObserver`);
  and every gRPC call (`grpc_metrics` interceptor);
- gauges of live state (pool, executor, worker, background loops), the
  worker's own counters (claims, leases, stale outcomes) and the last periodic
  round of queue and database counts (`backlog`) are read from a
  `ReplicaState` snapshot when Prometheus scrapes (`live_metrics`).

Labels stay bounded: `task` is a registered handler name (else "other"),
`queue` one of the first MAX_QUEUES queue names this replica meets (its
handlers' queues first; else "other"), `tenant` one of the first MAX_TENANTS
tenants (the default tenant first; else "other"), `query` a named query from
`sql/` (else "other"). Per-task and per-queue series carry the tenant, so two
tenants' queues of one name are two series.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime

from treadle.common import exposition, grpc_metrics
from treadle.common.loop_metrics import CounterChild, HistogramChild, LoopSeries
from treadle.common.tasks import Submitted, Task, TaskState
from treadle.scheduler.events import AppliedByLease, Events
from treadle.scheduler.live_metrics import LiveCollector
from treadle.scheduler.model import ClaimedTask, Outcome
from treadle.scheduler.principal import DEFAULT_TENANT
from treadle.scheduler.registry import Registry
from treadle.scheduler.state import ReplicaState

OTHER = "other"
#: The `outcome` label of `treadle_tasks_finished_total`.
OUTCOMES = ("succeeded", "failed", "timed_out", "dead", "cancelled")
#: The `stage` label of `treadle_poison_tasks_total`: where a row was found unhandleable.
POISON_STAGES = ("promote", "claim", "run", "record")
#: Distinct queue names used as label values; later ones count as "other".
MAX_QUEUES = 100
#: Tenants named in labels; the rest are counted as OTHER.
MAX_TENANTS = 100

#: Seconds from due to start: a few milliseconds when idle, minutes in a backlog.
LATENCY_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    300.0, 900.0, 3600.0,
)  # fmt: skip
#: Seconds a handler runs.
RUN_BUCKETS = (
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0,
    900.0, 3600.0,
)  # fmt: skip
#: Seconds one SQL statement takes.
QUERY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0,
)  # fmt: skip
#: Rows per claim or outcomes per flush.
BATCH_BUCKETS = (0, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000)


def outcome_label(outcome: Outcome) -> str:
    """succeeded, failed (will retry), timed_out (will retry), dead, or cancelled."""
    if outcome.state is TaskState.SUCCEEDED:
        return "succeeded"
    if outcome.state is TaskState.CANCELLED:
        return "cancelled"
    if outcome.state is TaskState.DEAD:
        return "dead"
    return "timed_out" if timed_out(outcome) else "failed"


def timed_out(outcome: Outcome) -> bool:
    return outcome.error is not None and outcome.error.type == "TimeoutError"


class _Bounded:
    """A label's values: the first `limit` names met are themselves, the rest OTHER."""

    __slots__ = ("limit", "names")

    def __init__(self, limit: int, first: Iterable[str] = ()) -> None:
        self.limit = limit
        self.names: set[str] = set()
        for name in first:
            self(name)

    def __call__(self, name: str) -> str:
        if name in self.names:
            return name
        if len(self.names) < self.limit:
            self.names.add(name)
            return name
        return OTHER


@dataclasses.dataclass(slots=True)
class _TaskSeries:
    """The series of one (queue, task) pair."""

    started: CounterChild
    latency: HistogramChild
    run: HistogramChild
    retries: CounterChild
    timeouts: CounterChild
    finished: dict[str, CounterChild]


class SchedulerMetrics(Events):
    """Every metric family of one replica, in `self.registry`; the live ones
    read `state()` at each scrape."""

    def __init__(self, handlers: Registry, state: Callable[[], ReplicaState]) -> None:
        self.registry = exposition.new_registry("scheduler")
        r = self.registry
        self._task_names = set(handlers.names)
        #: The bounded queue and tenant labels (handlers' queues and the
        #: default tenant named first).
        self.queue_label = _Bounded(MAX_QUEUES, (h.queue for h in handlers.handlers))
        self.tenant_label = _Bounded(MAX_TENANTS, (DEFAULT_TENANT,))
        self._by_task: dict[tuple[str, str, str], _TaskSeries] = {}

        self.grpc = grpc_metrics.ServerMetrics(r)
        # Updated on the replica's event loop, per task or per statement: see loop_metrics.
        fast = LoopSeries()
        qt = ("tenant", "queue", "task")
        # -- tasks ---------------------------------------------------------------
        self.tasks_submitted = fast.counter(
            "treadle_tasks_submitted_total",
            "Tasks stored by submissions to this replica (gRPC, GraphQL through the "
            "gateway); a submission whose idempotency key was taken is not counted here.",
            qt,
        )
        self.tasks_deduplicated = fast.counter(
            "treadle_tasks_deduplicated_total",
            "Submissions that returned an existing task because its idempotency key was taken.",
            ("tenant", "queue"),
        )
        self.tasks_started = fast.counter(
            "treadle_tasks_started_total",
            "Attempts this replica started (a handler began to run).",
            qt,
        )
        self.tasks_finished = fast.counter(
            "treadle_tasks_finished_total",
            "Attempts that ended on this replica, by outcome: succeeded; failed or timed_out "
            "(the task will retry); dead (no attempts left, or Permanent); cancelled.",
            (*qt, "outcome"),
        )
        self.task_retries = fast.counter(
            "treadle_task_retries_total",
            "Retries scheduled after a failed or timed-out attempt.",
            qt,
        )
        self.poison_tasks = fast.counter(
            "treadle_poison_tasks_total",
            "Tasks whose stored row could not be handled (a row written by hand, or by "
            "older code), ended DEAD with a PoisonTask error, by the stage that met it: "
            "promote, claim, run or record.",
            ("stage",),
        )
        for stage in POISON_STAGES:
            self.poison_tasks.labels(stage)  # each stage at 0 from the start
        self.poison_schedules = fast.counter(
            "treadle_poison_schedules_total",
            "Due schedules whose stored row could not be fired (a row written by hand, or "
            "by older code: a template without a task name, a cron expression that does "
            "not parse); each was paused.",
        )
        self.task_timeouts = fast.counter(
            "treadle_task_timeouts_total",
            "Attempts that ran past their timeout (whether the task retries or is dead).",
            qt,
        )
        self.start_latency = fast.histogram(
            "treadle_task_start_latency_seconds",
            "Seconds from when a task was due (submitted, or its run time) to its start.",
            qt,
            buckets=LATENCY_BUCKETS,
        )
        self.run_duration = fast.histogram(
            "treadle_task_run_duration_seconds",
            "Seconds an attempt's handler ran.",
            qt,
            buckets=RUN_BUCKETS,
        )
        # -- the worker's batches ------------------------------------------------
        self.claim_batch = fast.histogram(
            "treadle_claim_batch_size",
            "Tasks claimed per claim round (one statement per limited queue, one for the rest).",
            buckets=BATCH_BUCKETS,
        )
        self.claim_duration = fast.histogram(
            "treadle_claim_duration_seconds",
            "Seconds one claim round took.",
            buckets=QUERY_BUCKETS,
        )
        self.flush_batch = fast.histogram(
            "treadle_outcome_flush_batch_size",
            "Outcomes written per flush (one statement).",
            buckets=BATCH_BUCKETS,
        )
        self.flush_duration = fast.histogram(
            "treadle_outcome_flush_duration_seconds",
            "Seconds one flush of outcomes took.",
            buckets=QUERY_BUCKETS,
        )
        self.outcome_latency = fast.histogram(
            "treadle_outcome_flush_latency_seconds",
            "Seconds from the end of an attempt to its outcome being written.",
            buckets=QUERY_BUCKETS,
        )
        # -- database ------------------------------------------------------------
        self.query_duration = fast.histogram(
            "treadle_database_query_duration_seconds",
            "Seconds each SQL statement took, by its name in sql/ (other: unnamed statements).",
            ("query",),
            buckets=QUERY_BUCKETS,
        )
        self.query_errors = fast.counter(
            "treadle_database_errors_total",
            'SQL statements (and connection attempts, query="connect") that failed, by '
            "query name and kind of error (connection, timeout, conflict, unique_violation, "
            "cancelled, database, other).",
            ("query", "kind"),
        )
        self.connections_opened = fast.counter(
            "treadle_database_connections_opened_total",
            "Connections the pool opened (start-up, growth, recycling and reconnects).",
        )
        self.reconnects = fast.counter(
            "treadle_database_reconnects_total",
            "Times the pool connected again after the database was unreachable (a "
            "connection failed to open, or broke mid-statement).",
        )
        # -- the periodic round ---------------------------------------------------
        self.refresh_duration = fast.histogram(
            "treadle_metrics_refresh_duration_seconds",
            "Seconds one round of the periodic queue and database queries took.",
            buckets=QUERY_BUCKETS,
        )
        self.refresh_errors = fast.counter(
            "treadle_metrics_refresh_errors_total",
            "Rounds of the periodic queries that failed (the gauges keep the last values).",
        )
        r.register(fast)
        r.register(LiveCollector(state, self.queue_label, self.tenant_label))

    # -- labels ---------------------------------------------------------------

    def task_label(self, name: str) -> str:
        return name if name in self._task_names else OTHER

    def _labels(self, tenant: str, task: Task | ClaimedTask) -> tuple[str, str, str]:
        return self.tenant_label(tenant), self.queue_label(task.queue), self.task_label(task.name)

    def _series(self, task: ClaimedTask) -> _TaskSeries:
        """The series of a task's (bounded) tenant, queue and task labels, made
        once per triple."""
        labels = self._labels(task.tenant, task)
        series = self._by_task.get(labels)
        if series is None:
            series = self._by_task[labels] = _TaskSeries(
                started=self.tasks_started.labels(*labels),
                latency=self.start_latency.labels(*labels),
                run=self.run_duration.labels(*labels),
                retries=self.task_retries.labels(*labels),
                timeouts=self.task_timeouts.labels(*labels),
                finished={o: self.tasks_finished.labels(*labels, o) for o in OUTCOMES},
            )
        return series

    # -- events (events.Events) -------------------------------------------------

    def submitted(self, tenant: str, results: Iterable[Submitted]) -> None:
        new: collections.Counter[tuple[str, str, str]] = collections.Counter()
        existing: collections.Counter[tuple[str, str]] = collections.Counter()
        for s in results:
            if s.existing:
                existing[self.tenant_label(tenant), self.queue_label(s.task.queue)] += 1
            else:
                new[self._labels(tenant, s.task)] += 1
        for labels, count in new.items():
            self.tasks_submitted.labels(*labels).inc(count)
        for pair, count in existing.items():
            self.tasks_deduplicated.labels(*pair).inc(count)

    def claimed(self, count: int, seconds: float) -> None:
        self.claim_batch.observe(count)
        self.claim_duration.observe(seconds)

    def started(self, task: ClaimedTask) -> None:
        series = self._series(task)
        series.started.value += 1
        if task.started_at is not None:
            waited = (task.started_at - task.run_at).total_seconds()
            series.latency.observe(waited if waited > 0 else 0.0)

    def ended(self, task: ClaimedTask, outcome: Outcome, seconds: float | None) -> None:
        """An attempt's outcome was decided here; `seconds` its handler ran (None: never ran)."""
        series = self._series(task)
        if outcome.state is TaskState.SUCCEEDED:
            series.finished["succeeded"].value += 1
        else:
            series.finished[outcome_label(outcome)].value += 1
            if outcome.state is TaskState.RETRYING:
                series.retries.value += 1
            if timed_out(outcome):
                series.timeouts.value += 1
        if seconds is not None:
            series.run.observe(seconds)

    def poisoned(self, task_id: str, stage: str, reason: str) -> None:
        self.poison_tasks.labels(stage).inc()

    def schedule_poisoned(self, name: str, reason: str) -> None:
        self.poison_schedules.inc()

    def flushed(self, batch: Sequence[Outcome], applied: AppliedByLease, seconds: float) -> None:
        self.flush_batch.observe(len(batch))
        self.flush_duration.observe(seconds)
        now = datetime.now(UTC)
        for outcome in batch:
            self.outcome_latency.observe(max(0.0, (now - outcome.finished_at).total_seconds()))

    # -- the pool (postgres.PoolObserver) ---------------------------------------

    def connected(self, again: bool) -> None:
        self.connections_opened.inc()
        if again:
            self.reconnects.inc()

    def connect_failed(self, kind: str) -> None:
        self.query_errors.labels("connect", kind).inc()

    def query_done(self, name: str, seconds: float, error: str | None) -> None:
        self.query_duration.labels(name).observe(seconds)
        if error is not None:
            self.query_errors.labels(name, error).inc()

    # -- the periodic round (backlog.RoundObserver) -----------------------------

    def refreshed(self, seconds: float) -> None:
        self.refresh_duration.observe(seconds)

    def refresh_failed(self) -> None:
        self.refresh_errors.inc()
