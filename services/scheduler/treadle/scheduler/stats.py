"""Statistics: the counters each replica keeps, and the statistics use cases.

Counting never touches a shared row per task. Each replica's
`StatsRecorder` observes its events (`events.Events`) and adds what it sees to
tallies in memory, keyed by tenant, queue and second:

- a submission, once its insert returned a new task (`submitted`, `fired`);
- an outcome, once the store says it applied, with the state the task really
  ended in (`flushed`), and its processing time; a failed attempt also counts
  its error (type, message) with up to three example task ids;
- a task the lease reaper ended DEAD (`reclaimed`): a failed attempt, a dead
  task and its error;
- a waiting task cancelled at once (`cancelled`).

`StatsRecorder.run()` (the `treadle-stats` loop) adds them to the aggregates
every TREADLE_STATS_FLUSH_INTERVAL in one statement, again when the replica
stops, and prunes window rows no window reaches any more. A flush that fails
keeps its counts for the next one.

`Stats` answers the statistics APIs: current figures from the task table
through its indexes, totals from one row per queue, trends from the hourly
aggregate, throughput, error rate and processing time over sliding windows
from one-second and one-minute buckets, and alerts against the configured
thresholds.
"""

from __future__ import annotations

import asyncio
import builtins
import logging
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from treadle.common.errors import InvalidArgument, NotFound, TreadleError
from treadle.common.stats import (
    Alert,
    ErrorPattern,
    Granularity,
    Metric,
    Overview,
    QueueStats,
    Severity,
    SystemHealth,
    SystemStatus,
    TrendBucket,
    Trends,
)
from treadle.common.tasks import Submitted, TaskError, TaskState
from treadle.scheduler import principal
from treadle.scheduler.events import AppliedByLease, Events
from treadle.scheduler.loops import Backoff, Clock, Loop, utcnow
from treadle.scheduler.model import Outcome, check_name, check_time
from treadle.scheduler.settings import Settings
from treadle.scheduler.stats_store import ErrorTally, LiveReplica, StatsStore
from treadle.scheduler.tally import Tally, day_of, hour_of, window

if TYPE_CHECKING:
    from treadle.scheduler.store import Reclaimed

log = logging.getLogger("treadle.scheduler.stats")

#: The widths (seconds) of the buckets of the sliding windows, and how long
#: their rows are kept: one-second rows for two minutes, one-minute ones for an
#: hour and a minute.
WIDTHS = {1: 120, 60: 3660}
#: Seconds between pruning rounds of the `treadle-stats` loop.
PRUNE_EVERY = 60.0
#: Distinct errors counted per queue and hour by one replica; the rest are
#: counted under their type with the message OTHER_MESSAGES.
MAX_PATTERNS = 100
OTHER_MESSAGES = "(other messages)"
MAX_TYPE_LENGTH = 200
MAX_MESSAGE_LENGTH = 500
#: Seconds the last flush may take when the replica stops.
FINAL_FLUSH_TIMEOUT = 2.0
#: Seconds to wait after a failed flush before the next: the first wait, the longest.
FLUSH_BACKOFF = (0.5, 10.0)

DEFAULT_RANGE = timedelta(hours=24)
MAX_BUCKETS = 1000
DEFAULT_PATTERNS = 10
MAX_PATTERNS_LIMIT = 100


class StatsRecorder(Events):
    """One replica's counters, added to the aggregates by `flush()`.

    Counting is synchronous and cheap (a dict lookup and a few additions per
    task): everything is tallied per tenant's queue and second (epoch seconds, UTC);
    `flush()` rolls the seconds up into the hour, minute and second rows."""

    def __init__(self, store: StatsStore, settings: Settings, clock: Clock = utcnow) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        #: (tenant, queue, epoch second) -> counts.
        self._seconds: dict[tuple[str, str, int], Tally] = {}
        #: (tenant, queue, hour in epoch seconds, type, message) -> failed attempts.
        self._errors: dict[tuple[str, str, int, str, str], ErrorTally] = {}
        #: Distinct errors counted per queue and hour (MAX_PATTERNS bounds it).
        self._patterns: dict[tuple[str, str, int], set[tuple[str, str]]] = {}
        self._lock = asyncio.Lock()
        self.flushes_total = 0

    # -- counting (synchronous: never waits, never fails) ----------------------

    def _tally(self, tenant: str, queue: str, at: datetime) -> Tally:
        key = (tenant, queue, int(at.timestamp()))
        tally = self._seconds.get(key)
        if tally is None:
            tally = self._seconds[key] = Tally()
        return tally

    def submitted(self, tenant: str, results: Sequence[Submitted]) -> None:
        """Count the tasks a submission stored (not those an idempotency key returned)."""
        now = self.clock()
        for s in results:
            if not s.existing:
                self._tally(tenant, s.task.queue, now).submitted += 1

    def cancelled(self, tenant: str, queue: str) -> None:
        """Count a waiting task cancelled at once."""
        self._tally(tenant, queue, self.clock()).cancelled += 1

    def flushed(self, batch: Sequence[Outcome], applied: AppliedByLease, seconds: float) -> None:
        """Count the outcomes of `batch` that the store applied, as it applied them."""
        for outcome in batch:
            done = applied.get(outcome.lease)
            if done is None:
                continue  # stale: its lease had moved on
            at = outcome.finished_at
            state = done.state
            tally = self._tally(done.tenant, done.queue, at)
            if state is TaskState.SUCCEEDED:
                tally.succeeded += 1
            elif state is TaskState.RETRYING or state is TaskState.DEAD:
                tally.failed += 1
                if state is TaskState.DEAD:
                    tally.dead += 1
                if outcome.error is not None:
                    self._error(done.tenant, done.queue, at, outcome.task_id, outcome.error)
            else:
                if state is TaskState.CANCELLED:
                    tally.cancelled += 1
                continue
            if done.started_at is not None:
                tally.took((at - done.started_at).total_seconds())

    def reclaimed(self, rows: Sequence[Reclaimed]) -> None:
        """Count each task the lease reaper ended DEAD (its replica was lost once
        too often): a failed attempt, a dead task and its error."""
        for row in rows:
            if row.state is not TaskState.DEAD:
                continue
            now = self.clock()
            tally = self._tally(row.tenant, row.queue, now)
            tally.failed += 1
            tally.dead += 1
            self._error(row.tenant, row.queue, now, row.task_id, row.error)

    def _error(self, tenant: str, queue: str, at: datetime, task_id: str, error: TaskError) -> None:
        hour = int(at.timestamp()) // 3600 * 3600
        kind = error.type[:MAX_TYPE_LENGTH]
        message = error.message[:MAX_MESSAGE_LENGTH]
        counted = self._errors.get((tenant, queue, hour, kind, message))
        if counted is None:
            seen = self._patterns.setdefault((tenant, queue, hour), set())
            if (kind, message) not in seen and len(seen) >= MAX_PATTERNS:
                message = OTHER_MESSAGES
            seen.add((kind, message))
            counted = self._errors.setdefault((tenant, queue, hour, kind, message), ErrorTally())
        counted.count += 1
        if len(counted.examples) < 3 and task_id not in counted.examples:
            counted.examples.append(task_id)
        if counted.last_seen_at is None or at > counted.last_seen_at:
            counted.last_seen_at = at

    @property
    def pending(self) -> bool:
        """Whether counts wait for the next flush."""
        return bool(self._seconds or self._errors)

    # -- flushing ---------------------------------------------------------------

    def _rows(
        self, seconds: Mapping[tuple[str, str, int], Tally]
    ) -> tuple[dict[tuple[str, str, datetime], Tally], dict[tuple[int, datetime, str, str], Tally]]:
        """The hourly rows, and the window rows still within reach, of `seconds`."""
        now = self.clock().timestamp()
        hourly: dict[tuple[str, str, datetime], Tally] = {}
        recent: dict[tuple[int, datetime, str, str], Tally] = {}
        for (tenant, queue, second), tally in seconds.items():
            hour = datetime.fromtimestamp(second - second % 3600, UTC)
            hourly.setdefault((tenant, queue, hour), Tally()).add(tally)
            if not tally.counts_outcomes:
                continue
            for width, keep in WIDTHS.items():
                start = second - second % width
                if start >= now - keep:
                    at = datetime.fromtimestamp(start, UTC)
                    recent.setdefault((width, at, tenant, queue), Tally()).add(tally)
        return hourly, recent

    async def flush(self) -> None:
        """Add every pending count to the aggregates in one statement; on
        failure the counts stay pending."""
        async with self._lock:
            seconds, self._seconds = self._seconds, {}
            errors, self._errors = self._errors, {}
            if not (seconds or errors):
                return
            hourly, recent = self._rows(seconds)
            by_hour = {
                (t, q, datetime.fromtimestamp(h, UTC), kind, message): counted
                for (t, q, h, kind, message), counted in errors.items()
            }
            try:
                await self.store.flush(hourly, recent, by_hour)
            except BaseException:
                for s_key, tally in seconds.items():
                    self._seconds.setdefault(s_key, Tally()).add(tally)
                for e_key, counted in errors.items():
                    self._errors.setdefault(e_key, ErrorTally()).add(counted)
                raise
            self.flushes_total += 1
            current = int(self.clock().timestamp()) // 3600 * 3600
            for key in [k for k in self._patterns if k[2] < current]:
                del self._patterns[key]

    async def prune(self) -> None:
        """Drop window rows no window reaches any more, and old error rows."""
        now = self.clock()
        await self.store.prune(
            now - timedelta(seconds=WIDTHS[1]),
            now - timedelta(seconds=WIDTHS[60]),
            hour_of(now) - timedelta(seconds=self.settings.stats_error_retention_seconds),
        )

    def loops(self) -> dict[str, Loop]:
        return {"stats": self.run}

    async def run(self) -> None:
        """Flush every TREADLE_STATS_FLUSH_INTERVAL and prune every minute;
        flush once more when cancelled (the replica stops). A failed round is
        tried again after a backoff instead of the interval."""
        backoff = Backoff(log, FLUSH_BACKOFF)
        pruned = 0.0
        try:
            while True:
                await asyncio.sleep(self.settings.stats_flush_interval)
                while True:
                    try:
                        await self.flush()
                        if time.monotonic() - pruned >= PRUNE_EVERY:
                            await self.prune()
                            pruned = time.monotonic()
                    except TreadleError as exc:
                        await backoff.failed("flushing statistics", exc)
                        continue
                    break
                backoff.ok()
        except asyncio.CancelledError:
            if self.pending:
                try:
                    async with asyncio.timeout(FINAL_FLUSH_TIMEOUT):
                        await self.flush()
                except (TreadleError, TimeoutError) as exc:
                    log.error("could not flush the last statistics on shutdown: %s", exc)
            raise


def _severity(value: float, threshold: float) -> Severity:
    return Severity.CRITICAL if value >= 2 * threshold else Severity.WARNING


def alerts(
    settings: Settings,
    queues: Sequence[QueueStats],
    recent: Mapping[str, Tally],
    replicas: Sequence[LiveReplica],
    now: datetime,
) -> list[Alert]:
    """The thresholds crossed: WARNING over a threshold, CRITICAL at twice it."""
    s = settings
    found: list[Alert] = []

    def alert(
        metric: Metric,
        message: str,
        value: float,
        threshold: float,
        queue: str | None = None,
        replica: str | None = None,
    ) -> None:
        found.append(
            Alert(
                _severity(value, threshold), metric, message, queue, value, threshold, now, replica
            )
        )

    for q in queues:
        paused = " (paused)" if q.paused else ""
        if q.length > s.alert_backlog:
            alert(
                Metric.BACKLOG,
                f"queue {q.queue}{paused} has {q.length} ready tasks (threshold {s.alert_backlog})",
                q.length,
                s.alert_backlog,
                q.queue,
            )
        if q.oldest_enqueued_at is not None:
            waited = (now - q.oldest_enqueued_at).total_seconds()
            if waited > s.alert_oldest_seconds:
                alert(
                    Metric.OLDEST_WAIT_SECONDS,
                    f"the oldest ready task of queue {q.queue}{paused} has waited "
                    f"{waited:.1f}s (threshold {s.alert_oldest_seconds:g}s)",
                    waited,
                    s.alert_oldest_seconds,
                    q.queue,
                )
    for name, tally in sorted(recent.items()):
        if tally.attempts >= s.alert_min_attempts and tally.error_rate > s.alert_error_rate:
            alert(
                Metric.ERROR_RATE,
                f"{tally.failed} of {tally.attempts} attempts in queue {name} failed in the "
                f"last {s.alert_window_seconds:g}s (threshold {s.alert_error_rate:g})",
                tally.error_rate,
                s.alert_error_rate,
                name,
            )
        p95 = tally.percentile(0.95)
        if p95 is not None and p95 > s.alert_slow_seconds:
            alert(
                Metric.P95_PROCESSING_SECONDS,
                f"95% of attempts in queue {name} took up to {p95:.3g}s in the last "
                f"{s.alert_window_seconds:g}s (threshold {s.alert_slow_seconds:g}s)",
                p95,
                s.alert_slow_seconds,
                name,
            )
    for r in replicas:
        if not r.alive:
            alert(
                Metric.REPLICA_SILENT_SECONDS,
                f"replica {r.id} has sent no heartbeat for {r.silent_seconds:.1f}s "
                f"(lease {s.lease_seconds:g}s): lost",
                r.silent_seconds,
                s.lease_seconds,
                replica=r.id,
            )
    order = {Severity.CRITICAL: 0, Severity.WARNING: 1}
    return sorted(
        found, key=lambda a: (order[a.severity], a.metric, a.queue or "", a.replica or "")
    )


class Stats:
    """The statistics use cases behind GetQueueStats, GetOverview, GetTrends,
    GetErrorPatterns and GetSystemHealth."""

    def __init__(self, store: StatsStore, settings: Settings, clock: Clock = utcnow) -> None:
        self.store = store
        self.settings = settings
        self.clock = clock
        #: This replica's start: the uptime when the registry lists no live replica.
        self.started_at = clock()

    async def queue(self, name: str) -> QueueStats:
        check_name(name, "queue")
        found = await self.store.queues(principal.current().tenant, name)
        if not found:
            raise NotFound(f"queue {name!r} not found")
        return found[0]

    async def queues(self) -> builtins.list[QueueStats]:
        return await self.store.queues(principal.current().tenant)

    async def overview(self) -> Overview:
        now = self.clock()
        tenant = principal.current().tenant
        by_state = await self.store.state_counts(tenant)
        total_queues = await self.store.queue_count(tenant)
        minute = _total((await self.store.window(tenant, *window(now, 60))).values())
        hour = _total((await self.store.window(tenant, *window(now, 3600))).values())
        alive = [r for r in await self.store.replicas(self.settings.lease_seconds) if r.alive]
        started = min((r.started_at for r in alive), default=self.started_at)
        return Overview(
            total_queues=total_queues,
            tasks_by_state=by_state,
            finished_last_minute=minute.finished,
            finished_last_hour=hour.finished,
            throughput_last_minute=minute.finished / 60,
            throughput_last_hour=hour.finished / 3600,
            error_rate=hour.error_rate,
            avg_processing_seconds=hour.average,
            p95_processing_seconds=hour.percentile(0.95),
            active_replicas=len(alive),
            uptime_seconds=max(0.0, (now - started).total_seconds()),
            last_updated=now,
        )

    def _range(self, since: datetime | None, until: datetime | None) -> tuple[datetime, datetime]:
        for name, value in (("since", since), ("until", until)):
            if value is not None:
                check_time(value, name)
        end = until if until is not None else self.clock()
        start = since if since is not None else end - DEFAULT_RANGE
        if start >= end:
            raise InvalidArgument(f"since ({start.isoformat()}) must be before until")
        return start.astimezone(UTC), end.astimezone(UTC)

    async def trends(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        granularity: Granularity = Granularity.HOUR,
        queues: Sequence[str] = (),
    ) -> Trends:
        """Every bucket from `since` (rounded down) until before `until`."""
        start, end = self._range(since, until)
        step = timedelta(hours=1) if granularity is Granularity.HOUR else timedelta(days=1)
        first = hour_of(start) if granularity is Granularity.HOUR else day_of(start)
        count = -(-(end - first) // step)
        if count > MAX_BUCKETS:
            raise InvalidArgument(
                f"at most {MAX_BUCKETS} buckets per call, this range has {count}: "
                "narrow it or use a coarser granularity"
            )
        names = tuple(dict.fromkeys(q for q in queues if q))
        for name in names:
            check_name(name, "queues")
        rows = await self.store.trends(
            principal.current().tenant,
            granularity.value.lower(),
            hour_of(first),
            end,
            names or None,
        )
        buckets = []
        for i in range(count):
            at = first + i * step
            tally = rows.get(at, Tally())
            buckets.append(
                TrendBucket(
                    start=at,
                    submitted=tally.submitted,
                    completed=tally.succeeded,
                    failed=tally.failed,
                    dead=tally.dead,
                    cancelled=tally.cancelled,
                    avg_duration_seconds=tally.average,
                    p95_duration_seconds=tally.percentile(0.95),
                )
            )
        return Trends(first, end, granularity, names, tuple(buckets))

    async def error_patterns(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        queue: str | None = None,
        limit: int | None = None,
    ) -> builtins.list[ErrorPattern]:
        """The most frequent errors of attempts that failed in the hours from
        `since` (rounded down) until before `until`."""
        start, end = self._range(since, until)
        if queue:
            check_name(queue, "queue")
        size = limit or DEFAULT_PATTERNS
        if not 1 <= size <= MAX_PATTERNS_LIMIT:
            raise InvalidArgument(f"limit must be between 1 and {MAX_PATTERNS_LIMIT}, got {size}")
        return await self.store.error_patterns(
            principal.current().tenant, hour_of(start), end, queue or None, size
        )

    async def health(self) -> SystemHealth:
        """Check every threshold now."""
        now = self.clock()
        s = self.settings
        tenant = principal.current().tenant
        queues = await self.store.queues(tenant)
        recent = await self.store.window(tenant, *window(now, math.ceil(s.alert_window_seconds)))
        replicas = await self.store.replicas(s.lease_seconds)
        raised = alerts(s, queues, recent, replicas, now)
        status = SystemStatus.HEALTHY
        if any(a.severity is Severity.CRITICAL for a in raised):
            status = SystemStatus.CRITICAL
        elif raised:
            status = SystemStatus.WARNING
        return SystemHealth(status, tuple(raised), now)


def _total(tallies: Iterable[Tally]) -> Tally:
    total = Tally()
    for tally in tallies:
        total.add(tally)
    return total
