"""Statistics through gRPC (the Python client), checked exactly against a
scripted workload (see stats_support) on a real replica and PostgreSQL."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import stats_support as w
from support import make_settings, running_replica

from treadle.client import Client, InvalidArgument, NotFound, TaskError, TaskState, Unavailable
from treadle.common.stats import Granularity, Metric, Severity, SystemStatus
from treadle.common.tasks import Submitted, Task
from treadle.scheduler import postgres
from treadle.scheduler.registry import load_app
from treadle.scheduler.stats import StatsRecorder
from treadle.scheduler.stats_store import StatsStore
from treadle.scheduler.store import Reclaimed
from treadle.scheduler.supervisor import Replica
from treadle.scheduler.tally import Tally, day_of, hour_of


@pytest.fixture
async def workload(replica: Replica, client: Client) -> w.Workload:
    done = await w.run(client)
    await w.settle(replica, client)
    return done


async def test_queue_stats_are_exact(client: Client, workload: w.Workload) -> None:
    ok = await client.queue_stats(w.OK)
    assert (ok.length, ok.running, ok.scheduled, ok.retrying) == (0, 0, 0, 0)
    assert ok.oldest_enqueued_at is None
    assert (ok.max_concurrent, ok.paused) == (None, False)
    assert (
        ok.total_enqueued,
        ok.total_completed,
        ok.total_failed,
        ok.total_dead,
        ok.total_cancelled,
    ) == (7, 7, 0, 0, 0)

    mixed = await client.queue_stats(w.MIXED)
    assert (mixed.length, mixed.running, mixed.scheduled, mixed.retrying) == (0, 0, 0, 0)
    assert (
        mixed.total_enqueued,
        mixed.total_completed,
        mixed.total_failed,
        mixed.total_dead,
        mixed.total_cancelled,
    ) == (6, 3, 7, 2, 1)

    held = await client.queue_stats(w.HELD)
    assert (held.length, held.running, held.scheduled, held.paused) == (3, 0, 1, True)
    assert held.oldest_enqueued_at == workload.oldest_held
    assert (held.total_enqueued, held.total_completed) == (4, 0)

    every = await client.list_queue_stats()
    assert [s.queue for s in every] == ["default", "math", w.HELD, w.MIXED, w.OK]
    assert {s.queue: s for s in every}[w.MIXED] == mixed

    with pytest.raises(NotFound):
        await client.queue_stats("no-such-queue")


async def test_overview_is_exact(client: Client, workload: w.Workload) -> None:
    overview = await client.overview()
    assert overview.total_queues == 5
    assert overview.tasks_by_state == {
        TaskState.QUEUED: 3,
        TaskState.SCHEDULED: 1,
        TaskState.RUNNING: 0,
        TaskState.SUCCEEDED: 10,
        TaskState.RETRYING: 0,
        TaskState.DEAD: 2,
        TaskState.CANCELLED: 1,
    }
    assert (overview.finished_last_minute, overview.finished_last_hour) == (12, 12)
    assert overview.throughput_last_minute == 12 / 60
    assert overview.throughput_last_hour == 12 / 3600
    assert overview.error_rate == 7 / 17
    assert overview.avg_processing_seconds is not None
    assert overview.p95_processing_seconds is not None
    assert 0 < overview.avg_processing_seconds < 1
    assert 0 < overview.p95_processing_seconds < 1
    assert overview.active_replicas == 1
    assert 0 < overview.uptime_seconds < 60
    assert abs((datetime.now(UTC) - overview.last_updated).total_seconds()) < 5


async def test_trends_per_hour_and_day(client: Client, workload: w.Workload) -> None:
    now = datetime.now(UTC)
    since = hour_of(now) - timedelta(hours=2)
    trends = await client.trends(since=since - timedelta(minutes=5), until=now)
    assert trends.granularity is Granularity.HOUR
    assert trends.since == since - timedelta(hours=1), "rounded down to the hour"
    assert [b.start for b in trends.buckets] == [since + timedelta(hours=i) for i in range(-1, 3)]
    totals = [
        sum(getattr(b, field) for b in trends.buckets)
        for field in ("submitted", "completed", "failed", "dead", "cancelled")
    ]
    assert totals == [17, 10, 7, 2, 1]
    assert all(b.submitted == 0 for b in trends.buckets[:2])
    assert trends.buckets[0].avg_duration_seconds is None

    # One queue: the processing times are those of its tasks, exactly.
    ok = await client.trends(since=since, until=now, queues=[w.OK])
    expected = workload.ok_by_hour()
    for bucket in ok.buckets:
        tally = expected.get(bucket.start, Tally())
        assert bucket.completed == tally.duration_count
        assert bucket.avg_duration_seconds == pytest.approx(tally.average, abs=1e-9)
        assert bucket.p95_duration_seconds == pytest.approx(tally.percentile(0.95), abs=1e-9)
    assert sum(b.completed for b in ok.buckets) == 7
    assert sum(b.failed for b in ok.buckets) == 0

    days = await client.trends(granularity=Granularity.DAY, until=now)
    assert [b.start for b in days.buckets] == [day_of(now - timedelta(days=1)), day_of(now)]
    assert sum(b.submitted for b in days.buckets) == 17
    assert sum(b.dead for b in days.buckets) == 2


async def test_trends_refuse_bad_ranges(client: Client) -> None:
    now = datetime.now(UTC)
    with pytest.raises(InvalidArgument, match="before until"):
        await client.trends(since=now, until=now - timedelta(hours=1))
    with pytest.raises(InvalidArgument, match="at most 1000 buckets"):
        await client.trends(since=now - timedelta(days=100), until=now)
    days = await client.trends(
        since=now - timedelta(days=100), until=now, granularity=Granularity.DAY
    )
    assert len(days.buckets) == 101


async def test_error_patterns_group_failed_attempts(client: Client, workload: w.Workload) -> None:
    patterns = await client.error_patterns()
    assert [(p.type, p.message, p.count, p.queues) for p in patterns] == [
        ("ValueError", "boom: x", 4, (w.MIXED,)),
        ("RuntimeError", "flaky failure 1", 3, (w.MIXED,)),
    ]
    boom, flaky = patterns
    assert sorted(boom.example_task_ids) == sorted(t.id for t in workload.dead)
    assert sorted(flaky.example_task_ids) == sorted(t.id for t in workload.flaky)
    last_failure = max(e.failed_at for t in workload.flaky for e in t.errors if e.failed_at)
    assert flaky.last_seen_at == last_failure

    assert [p.count for p in await client.error_patterns(limit=1)] == [4]
    assert await client.error_patterns(queue=w.OK) == []
    later = datetime.now(UTC) + timedelta(hours=2)
    assert await client.error_patterns(since=later, until=later + timedelta(hours=1)) == []
    with pytest.raises(InvalidArgument):
        await client.error_patterns(limit=101)


async def test_totals_come_from_the_aggregate_not_the_task_table(
    replica: Replica, client: Client, workload: w.Workload, database_url: str, schema: str
) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(f'DELETE FROM "{schema}".tasks WHERE queue = $1', w.OK)
    finally:
        await conn.close()
    ok = await client.queue_stats(w.OK)
    assert (ok.total_enqueued, ok.total_completed) == (7, 7), "pruned tasks stay counted"
    assert (await client.overview()).tasks_by_state[TaskState.SUCCEEDED] == 3


async def test_cron_submissions_are_counted(replica: Replica, client: Client) -> None:
    from treadle.client import TaskSpec

    await client.create_schedule("tick", "* * * * * *", TaskSpec(name="noop", queue="s-cron"))
    await w.poll(lambda: _count(client, "s-cron", 2), timeout=5)
    await client.pause_schedule("tick")
    await asyncio.sleep(0.1)
    assert replica.parts.recorder is not None
    await replica.parts.recorder.flush()
    stored = len((await client.list(queue="s-cron", page_size=100)).tasks)
    assert (await client.queue_stats("s-cron")).total_enqueued == stored


async def _count(client: Client, queue: str, at_least: int) -> bool:
    return len((await client.list(queue=queue)).tasks) >= at_least


async def test_a_stopping_replica_flushes_its_counters(database_url: str, schema: str) -> None:
    replica = Replica(
        make_settings(schema, stats_flush_interval=3600), load_app("taskapp"), database_url
    )
    await replica.start()
    try:
        async with Client(replica.address) as client:
            task = await client.submit("echo", 1, queue="s-stop")
            await client.wait(task.id, timeout=5)
            await asyncio.sleep(0.05)  # let the worker count the outcome
    finally:
        await replica.stop()
    conn = await asyncpg.connect(database_url)
    try:
        row = await conn.fetchrow(
            f'SELECT sum(submitted) AS s, sum(succeeded) AS c FROM "{schema}".task_stats_hourly'
            " WHERE queue = 's-stop'"
        )
    finally:
        await conn.close()
    assert (row["s"], row["c"]) == (1, 1)


# -- system health ------------------------------------------------------------


@contextlib.asynccontextmanager
async def _health_replica(
    database_url: str, schema: str, **thresholds: object
) -> AsyncIterator[tuple[Replica, Client]]:
    async with (
        running_replica(database_url, schema, **thresholds) as replica,
        Client(replica.address) as client,
    ):
        yield replica, client


async def test_system_health_is_healthy_when_idle(client: Client) -> None:
    health = await client.system_health()
    assert (health.status, health.alerts) == (SystemStatus.HEALTHY, ())


async def test_system_health_raises_every_kind_of_alert(database_url: str, schema: str) -> None:
    thresholds = {
        "alert_backlog": 1,
        "alert_error_rate": 0.2,
        "alert_min_attempts": 5,
        "alert_slow_seconds": 0.0001,
        "alert_oldest_seconds": 0.01,
    }
    async with _health_replica(database_url, schema, **thresholds) as (replica, client):
        workload = await w.run(client)
        await w.settle(replica, client)
        lost = f"lost-{uuid.uuid4().hex[:6]}"
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                f'INSERT INTO "{schema}".replicas (id, host, pid, version, started_at,'
                " last_heartbeat_at) VALUES ($1, 'gone', 1, 'x', now() - interval '1 hour',"
                " now() - interval '100 seconds')",
                lost,
            )
        finally:
            await conn.close()
        await asyncio.sleep(0.02)  # the oldest ready task has waited longer than 10 ms
        health = await client.system_health()

    assert health.status is SystemStatus.CRITICAL
    found = {(a.metric, a.queue or a.replica): a for a in health.alerts}
    assert set(found) == {
        (Metric.BACKLOG, w.HELD),
        (Metric.OLDEST_WAIT_SECONDS, w.HELD),
        (Metric.ERROR_RATE, w.MIXED),
        (Metric.P95_PROCESSING_SECONDS, w.OK),
        (Metric.P95_PROCESSING_SECONDS, w.MIXED),
        (Metric.REPLICA_SILENT_SECONDS, lost),
    }
    assert {a.severity for a in health.alerts} == {Severity.CRITICAL}
    assert {a.at for a in health.alerts} == {health.checked_at}

    backlog = found[Metric.BACKLOG, w.HELD]
    assert (backlog.value, backlog.threshold) == (3, 1)
    oldest = found[Metric.OLDEST_WAIT_SECONDS, w.HELD]
    assert oldest.value == (health.checked_at - workload.oldest_held).total_seconds()
    assert oldest.threshold == 0.01
    rate = found[Metric.ERROR_RATE, w.MIXED]
    assert (rate.value, rate.threshold) == (7 / 10, 0.2)
    slow = found[Metric.P95_PROCESSING_SECONDS, w.OK]
    assert slow.value == pytest.approx(workload.ok_tally().percentile(0.95), abs=1e-9)
    silent = found[Metric.REPLICA_SILENT_SECONDS, lost]
    assert 99 < silent.value < 110
    assert silent.threshold == 30
    assert silent.queue is None
    assert "lost" in silent.message


async def test_system_health_warns_below_twice_the_threshold(
    database_url: str, schema: str
) -> None:
    thresholds = {"alert_backlog": 2, "alert_error_rate": 1.0}
    async with _health_replica(database_url, schema, **thresholds) as (replica, client):
        await w.run(client)
        await w.settle(replica, client)
        health = await client.system_health()
    assert health.status is SystemStatus.WARNING
    assert [(a.severity, a.metric, a.queue, a.value) for a in health.alerts] == [
        (Severity.WARNING, Metric.BACKLOG, w.HELD, 3)
    ]


# -- the recorder ---------------------------------------------------------------


def _new_task(queue: str) -> Submitted:
    """What a submission that stored one task in `queue` reports."""
    now = datetime.now(UTC)
    task = Task(
        id=str(uuid.uuid4()),
        name="noop",
        queue=queue,
        state=TaskState.QUEUED,
        payload_json="null",
        result_json=None,
        error=None,
        attempts=0,
        max_attempts=1,
        priority=0,
        run_at=now,
        created_at=now,
    )
    return Submitted(task)


async def test_a_failed_flush_keeps_its_counts_for_the_next(
    database_url: str, schema: str, db: asyncpg.Connection
) -> None:
    settings = make_settings(schema)
    broken = await postgres.create_pool(database_url, schema, 1)
    await broken.close()
    recorder = StatsRecorder(StatsStore(broken, schema), settings)
    recorder.submitted("default", [_new_task("s-flush"), _new_task("s-flush")])
    recorder.cancelled("default", "s-flush")
    lost_id = str(uuid.uuid4())
    error = TaskError("LeaseExpired", "replica r1 stopped renewing")
    recorder.reclaimed([Reclaimed(lost_id, TaskState.DEAD, "default", "s-flush", "r1", error)])
    with pytest.raises(Unavailable):
        await recorder.flush()
    assert recorder.pending
    recorder.submitted("default", [_new_task("s-flush")])

    pool = await postgres.create_pool(database_url, schema, 1)
    try:
        recorder.store = StatsStore(pool, schema)
        await recorder.flush()
        assert not recorder.pending
        await recorder.flush()  # nothing pending: no statement
    finally:
        await pool.close()
    row = await db.fetchrow("SELECT submitted, cancelled, failed, dead FROM task_stats_totals")
    assert tuple(row) == (3, 1, 1, 1)
    error = await db.fetchrow("SELECT type, count, examples FROM task_error_stats")
    assert (error["type"], error["count"], [str(e) for e in error["examples"]]) == (
        "LeaseExpired",
        1,
        [lost_id],
    )
    assert await db.fetchval("SELECT sum(cancelled) FROM task_stats_recent WHERE width = 1") == 1


async def test_prune_drops_rows_no_window_reaches(
    database_url: str, schema: str, db: asyncpg.Connection
) -> None:
    now = datetime.now(UTC)
    await db.execute(
        "INSERT INTO task_stats_recent (width, at, queue) VALUES"
        " (1, $1, 'q'), (1, $2, 'q'), (60, $3, 'q'), (60, $4, 'q')",
        now - timedelta(minutes=3),
        now,
        now - timedelta(minutes=62),
        now - timedelta(minutes=30),
    )
    await db.execute(
        "INSERT INTO task_error_stats (queue, hour, type, message, count, examples, last_seen_at)"
        " VALUES ('q', $1, 'E', 'old', 1, '{}', $1), ('q', $2, 'E', 'new', 1, '{}', $2)",
        now - timedelta(days=40),
        now - timedelta(days=2),
    )
    pool = await postgres.create_pool(database_url, schema, 1)
    try:
        await StatsRecorder(StatsStore(pool, schema), make_settings(schema)).prune()
    finally:
        await pool.close()
    left = await db.fetch("SELECT width, at FROM task_stats_recent ORDER BY width")
    assert [(r["width"], r["at"]) for r in left] == [
        (1, now),
        (60, now - timedelta(minutes=30)),
    ]
    assert await db.fetchval("SELECT array_agg(message) FROM task_error_stats") == ["new"]
