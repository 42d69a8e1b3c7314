"""The scheduler's Prometheus metrics, scraped over HTTP from a real replica."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import httpx
import pytest
from scrape import Scraped, scrape
from support import make_settings, until

from treadle.client import Client, TaskState
from treadle.common.errors import NotFound, Unavailable
from treadle.common.tasks import TaskSpec
from treadle.scheduler.registry import load_app
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema, metrics_interval=0.1)


def metrics_url(replica: Replica) -> str:
    assert replica.metrics_server is not None
    return f"http://{replica.metrics_server.address}/metrics"


async def fresh(replica: Replica) -> Scraped:
    """A scrape taken after the next periodic round of queue counts."""
    before = replica.parts.backlog.latest.as_of
    await until(lambda: _later(replica, before))
    return await scrape(metrics_url(replica))


async def _later(replica: Replica, before: Any) -> bool:
    after = replica.parts.backlog.latest.as_of
    return after is not None and (before is None or after > before)


async def test_task_counters_match_the_tasks_run(replica: Replica, client: Client) -> None:
    ids = [(await client.submit("echo", {"i": i})).id for i in range(7)]
    ids += [(await client.submit("square", {"x": i})).id for i in range(3)]
    ids += [(await client.submit("boom", i)).id for i in range(2)]
    ids.append((await client.submit("flaky", {"key": "m1", "fail": 1}, max_attempts=2)).id)
    ids.append((await client.submit("sleep", {"seconds": 5}, timeout_seconds=0.05)).id)
    ids.append((await client.submit("echo", 1, idempotency_key="k")).id)
    assert (await client.submit("echo", 1, idempotency_key="k")).id == ids[-1]
    finished = [await client.wait(i, timeout=10) for i in ids]
    assert [t.state for t in finished].count(TaskState.SUCCEEDED) == 7 + 3 + 1 + 1

    m = await until(lambda: _flushed(replica, len(ids)))
    value = m.value
    assert value("treadle_tasks_submitted_total", queue="default", task="echo") == 8
    assert value("treadle_tasks_submitted_total", queue="math", task="square") == 3
    assert value("treadle_tasks_submitted_total") == len(ids)
    assert value("treadle_tasks_deduplicated_total", queue="default") == 1
    assert value("treadle_tasks_started_total", task="echo") == 8
    assert value("treadle_tasks_started_total", task="square") == 3
    assert value("treadle_tasks_started_total") == len(ids) + 1  # flaky ran twice
    fin = "treadle_tasks_finished_total"
    assert value(fin, task="echo", outcome="succeeded") == 8
    assert value(fin, queue="math", task="square", outcome="succeeded") == 3
    assert value(fin, task="boom", outcome="dead") == 2
    assert value(fin, task="flaky", outcome="failed") == 1
    assert value(fin, task="flaky", outcome="succeeded") == 1
    assert value(fin, task="sleep", outcome="dead") == 1
    assert value(fin) == value("treadle_tasks_started_total")
    assert value("treadle_task_retries_total", task="flaky") == 1
    assert value("treadle_task_timeouts_total", task="sleep") == 1
    assert value("treadle_task_run_duration_seconds_count") == len(ids) + 1
    assert value("treadle_task_start_latency_seconds_count", task="echo") == 8
    assert value("treadle_tasks_claimed_total") == len(ids) + 1
    assert value("treadle_outcomes_recorded_total") == len(ids) + 1
    assert value("treadle_outcome_flush_batch_size_sum") == len(ids) + 1
    assert value("treadle_stale_outcomes_discarded_total") == 0
    handled = "treadle_grpc_server_handled_total"
    assert value(handled, grpc_method="SubmitTask", grpc_code="OK") == len(ids) + 1
    with pytest.raises(NotFound):
        await client.get("00000000-0000-4000-8000-000000000000")
    m = await scrape(metrics_url(replica))
    assert m.value(handled, grpc_method="GetTask", grpc_code="NOT_FOUND") == 1


async def _flushed(replica: Replica, count: int) -> Scraped | None:
    """A scrape once `count`+1 outcomes (flaky ran twice) were written."""
    m = await scrape(metrics_url(replica))
    return m if m.value("treadle_outcomes_recorded_total") >= count + 1 else None


async def test_queue_gauges_come_from_the_periodic_count(replica: Replica, client: Client) -> None:
    await client.wait((await client.submit("echo", 0, queue="parked")).id)
    await client.pause_queue("parked")
    for i in range(5):
        await client.submit("echo", i, queue="parked")
    await client.submit("echo", "later", queue="parked", delay_seconds=60)
    await client.update_queue("parked", max_concurrent=3)
    await asyncio.sleep(0.2)

    m = await fresh(replica)
    depth = "treadle_queue_depth"
    assert m.value(depth, queue="parked", state="QUEUED") == 5
    assert m.value(depth, queue="parked", state="SCHEDULED") == 1
    assert m.value(depth, queue="parked", state="DEAD") == 0
    assert m.value("treadle_queue_paused", queue="parked") == 1
    assert m.value("treadle_queue_paused", queue="default") == 0
    assert m.value("treadle_queue_max_concurrent", queue="parked") == 3
    assert m.value("treadle_queue_oldest_task_age_seconds", queue="parked") >= 0.2
    assert m.value("treadle_queue_running_tasks", queue="parked") == 0
    assert m.value("treadle_metrics_last_refresh_timestamp_seconds") > time.time() - 5

    await client.resume_queue("parked")

    async def drained() -> bool:
        m = await fresh(replica)
        return m.value(depth, queue="parked", state="QUEUED") == 0

    await until(drained)
    m = await scrape(metrics_url(replica))
    assert m.value("treadle_queue_oldest_task_age_seconds", queue="parked") == 0
    assert m.value("treadle_queue_paused", queue="parked") == 0


async def test_database_pool_and_loop_metrics(replica: Replica, client: Client) -> None:
    await client.wait((await client.submit("echo", 1)).id)
    m = await fresh(replica)
    assert m.value("treadle_database_query_duration_seconds_count", query="claim") >= 1
    assert m.value("treadle_database_query_duration_seconds_count", query="complete") >= 1
    assert m.value("treadle_database_query_duration_seconds_count", query="insert_tasks") == 1
    assert m.value("treadle_database_query_duration_seconds_count", query="metrics_queues") >= 1
    assert m.value("treadle_database_pool_max_size") == replica.settings.database_pool_size
    assert 1 <= m.value("treadle_database_pool_size") <= replica.settings.database_pool_size
    assert m.value("treadle_database_pool_waiting") == 0
    assert m.value("treadle_database_connections_opened_total") >= 1
    assert m.value("treadle_database_up") == 1
    assert m.value("treadle_database_size_bytes") > 1_000_000
    assert m.value("treadle_replicas_alive") >= 1
    assert m.value("treadle_executor_threads") == replica.settings.executor_threads
    assert m.value("treadle_executor_threads_busy") == 0
    assert m.value("treadle_worker_capacity") == replica.settings.concurrency
    assert m.value("treadle_worker_tasks_running") == 0
    assert 0 <= m.value("treadle_event_loop_lag_seconds") < 1
    loops = {labels["loop"]: v for labels, v in m.series("treadle_background_loop_up")}
    for name in ("treadle-dispatch", "treadle-flush", "treadle-promote", "treadle-metrics"):
        assert loops[name] == 1, loops
    assert m.value("treadle_claim_batch_size_count") >= 1
    assert m.value("treadle_build_info", service="scheduler") == 1


async def test_sync_handlers_show_in_the_executor_gauges(database_url: str, schema: str) -> None:
    replica = Replica(
        make_settings(schema, executor_threads=2, metrics_interval=0.1),
        load_app("taskapp"),
        database_url,
    )
    await replica.start()
    try:
        async with Client(replica.address) as client:
            ids = [(await client.submit("sync_sleep", {"seconds": 0.6})).id for _ in range(3)]

            async def busy() -> Scraped | None:
                m = await scrape(metrics_url(replica))
                full = m.value("treadle_executor_threads_busy") == 2
                return m if full and m.value("treadle_executor_queue_length") == 1 else None

            m = await until(busy)
            assert m.value("treadle_worker_tasks_running") == 3
            for task_id in ids:
                await client.wait(task_id, timeout=10)
    finally:
        await replica.stop()


async def test_replicas_in_one_process_keep_their_own_metrics(
    database_url: str, schema: str, replica: Replica, client: Client
) -> None:
    other = Replica(make_settings(schema), load_app("taskapp"), database_url)
    await other.start()
    try:
        async with Client(other.address) as second:
            await second.wait((await second.submit("echo", 2)).id)
        await client.wait((await client.submit("echo", 1)).id)
        await client.wait((await client.submit("echo", 1)).id)
        one, two = await scrape(metrics_url(replica)), await scrape(metrics_url(other))
        assert other.metrics_server is not None and replica.metrics_server is not None
        assert other.metrics_server.port != replica.metrics_server.port
        assert one.value("treadle_tasks_submitted_total") == 2
        assert two.value("treadle_tasks_submitted_total") == 1
    finally:
        await other.stop()


async def test_a_taken_metrics_port_fails_start_naming_the_setting(
    database_url: str, schema: str
) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        replica = Replica(
            make_settings(schema, metrics_port=port), load_app("taskapp"), database_url
        )
        with pytest.raises(Unavailable, match=f"127.0.0.1:{port}.*TREADLE_METRICS_PORT"):
            await replica.start()
        assert not replica.loops or not any(replica.loops.values())


async def test_stop_releases_the_metrics_port(database_url: str, schema: str) -> None:
    replica = Replica(make_settings(schema), load_app("taskapp"), database_url)
    await replica.start()
    assert replica.metrics_server is not None
    port = replica.metrics_server.port
    async with httpx.AsyncClient() as http:
        assert (await http.get(f"http://127.0.0.1:{port}/")).status_code == 200
        assert (await http.get(f"http://127.0.0.1:{port}/nope")).status_code == 404
        assert (await http.post(f"http://127.0.0.1:{port}/metrics")).status_code == 405
    await replica.stop()
    await replica.stop()
    with socket.socket() as again:
        # SO_REUSEADDR passes over the scrapes' TIME_WAIT, never over a listener
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen()


async def test_get_health_reports_the_replica(replica: Replica, client: Client) -> None:
    await fresh(replica)
    health = await client.health(timeout=5)
    assert health.replica_id == replica.settings.replica_id
    assert health.serving
    assert health.database.reachable
    assert health.database.latency_seconds is not None and health.database.latency_seconds < 1
    assert health.database.size_bytes is not None and health.database.size_bytes > 0
    assert health.pool.max_size == replica.settings.database_pool_size
    assert health.executor.threads == replica.settings.executor_threads
    assert health.capacity == replica.settings.concurrency
    assert health.running == 0
    assert {q.queue for q in health.backlog} >= {"default", "math"}
    assert health.backlog_as_of is not None
    assert health.loops["treadle-dispatch"] and health.loops["treadle-metrics"]
    assert health.replicas_alive is not None and health.replicas_alive >= 1
    assert health.problems() == []


async def test_cron_fires_count_as_submissions(replica: Replica, client: Client) -> None:
    """A task a schedule fired is a submitted task, counted like one from the API."""
    await client.create_schedule("every-second", "*/1 * * * * *", TaskSpec("echo", queue="cron"))

    async def two_fired() -> Scraped | None:
        m = await scrape(metrics_url(replica))
        new = m.value("treadle_schedule_fires_total") - m.value(
            "treadle_schedule_duplicate_fires_total"
        )
        return m if new >= 2 else None

    m = await until(two_fired, timeout=10)
    await client.pause_schedule("every-second")
    m = await scrape(metrics_url(replica))
    fired = m.value("treadle_schedule_fires_total") - m.value(
        "treadle_schedule_duplicate_fires_total"
    )
    assert m.value("treadle_tasks_submitted_total", queue="cron", task="echo") == fired
    assert m.value("treadle_tasks_deduplicated_total") == 0


async def test_metrics_listen_on_their_own_host_when_given(database_url: str, schema: str) -> None:
    """TREADLE_METRICS_HOST binds /metrics apart from gRPC (here gRPC on
    127.0.0.1, metrics on 127.0.0.2, both loopback)."""
    replica = Replica(
        make_settings(schema, grpc_host="127.0.0.1", metrics_host="127.0.0.2"),
        load_app("taskapp"),
        database_url,
    )
    await replica.start()
    try:
        assert replica.metrics_server is not None
        assert replica.metrics_server.address.startswith("127.0.0.2:")
        assert replica.address.startswith("127.0.0.1:")
        scraped = await scrape(metrics_url(replica))
        assert scraped.value("treadle_tasks_submitted_total") == 0
    finally:
        await replica.stop()
