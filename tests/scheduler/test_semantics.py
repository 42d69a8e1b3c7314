"""Retries, dead letters, timeouts, cancellation, delays, priorities, queue
limits, idempotency and pruning, on real replicas and PostgreSQL."""

from __future__ import annotations

import asyncio
import random
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
import taskapp
from support import make_settings, running_replica

from treadle.client import (
    Client,
    InvalidArgument,
    InvalidState,
    NotFound,
    RetryPolicy,
    TaskSpec,
    TaskState,
)
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

FAST = RetryPolicy(base_seconds=0.05, factor=2, max_seconds=0.2)


async def wait_state(client: Client, task_id: str, state: TaskState, timeout: float = 5) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while (await client.get(task_id)).state is not state:
        assert asyncio.get_running_loop().time() < deadline, f"{task_id} never reached {state}"
        await asyncio.sleep(0.01)


async def test_fails_twice_then_succeeds_with_two_recorded_errors(client: Client) -> None:
    key = uuid.uuid4().hex
    task = await client.submit("flaky", {"key": key, "fail": 2}, max_attempts=3, retry=FAST)
    done = await client.wait(task.id, timeout=10)
    assert done.state is TaskState.SUCCEEDED
    assert done.attempts == 3
    assert done.result == "finally"
    assert [e.message for e in done.errors] == ["flaky failure 1", "flaky failure 2"]
    assert [e.attempt for e in done.errors] == [1, 2]
    assert all(e.type == "RuntimeError" and e.failed_at for e in done.errors)


async def test_always_failing_ends_dead_then_retry_brings_it_back(client: Client) -> None:
    task = await client.submit("boom", {"n": 1}, max_attempts=3, retry=FAST)
    dead = await client.wait(task.id, timeout=10)
    assert dead.state is TaskState.DEAD
    assert dead.attempts == 3
    assert len(dead.errors) == 3
    dead_letters = await client.list(queue="default", state=TaskState.DEAD)
    assert [t.id for t in dead_letters.tasks] == [task.id]

    retried = await client.retry(task.id)
    assert retried.state is TaskState.QUEUED
    assert retried.attempts == 0
    again = await client.wait(task.id, timeout=10)
    assert again.state is TaskState.DEAD
    assert again.attempts == 3
    assert len(again.errors) == 6, "the history of the first round is kept"


async def test_retry_gives_a_task_dead_from_lost_replicas_a_fresh_start(
    client: Client, database_url: str, schema: str
) -> None:
    """A task that went DEAD because its replicas kept dying gets fresh
    attempts and a fresh count of lost leases when retried by hand, so the
    next lost lease does not kill it again at once."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    await client.submit("echo", None, queue=queue)
    await client.pause_queue(queue)
    task = await client.submit("echo", "again", queue=queue)
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"UPDATE \"{schema}\".tasks SET state = 'DEAD', reclaims = 4, attempts = 0, "
            "finished_at = now() WHERE id = $1",
            uuid.UUID(task.id),
        )
        retried = await client.retry(task.id)
        assert retried.state is TaskState.QUEUED
        reclaims = await conn.fetchval(
            f'SELECT reclaims FROM "{schema}".tasks WHERE id = $1', uuid.UUID(task.id)
        )
        assert reclaims == 0
    finally:
        await conn.close()
    await client.resume_queue(queue)
    assert (await client.wait(task.id, timeout=5)).result == "again"


async def test_permanent_error_skips_remaining_attempts(client: Client) -> None:
    task = await client.submit("permanent", max_attempts=5, retry=FAST)
    done = await client.wait(task.id, timeout=10)
    assert done.state is TaskState.DEAD
    assert done.attempts == 1
    assert done.error is not None
    assert done.error.type == "Permanent"


async def test_retrying_waits_for_its_backoff(client: Client) -> None:
    slow = RetryPolicy(base_seconds=30, factor=2, max_seconds=60)
    task = await client.submit("boom", max_attempts=2, retry=slow)
    await wait_state(client, task.id, TaskState.RETRYING)
    waiting = await client.get(task.id)
    assert waiting.attempts == 1
    assert waiting.run_at > datetime.now(UTC) + timedelta(seconds=10), "jitter is at most half"
    assert (await client.cancel(task.id)).state is TaskState.CANCELLED


async def test_coroutine_past_its_timeout_is_cancelled_and_retried(client: Client) -> None:
    key = uuid.uuid4().hex
    task = await client.submit(
        "cancellable",
        {"seconds": 30, "key": key},
        timeout_seconds=0.2,
        max_attempts=2,
        retry=FAST,
    )
    done = await client.wait(task.id, timeout=10)
    assert done.state is TaskState.DEAD
    assert done.attempts == 2
    assert [e.type for e in done.errors] == ["TimeoutError", "TimeoutError"]
    assert "timed out after 0.2s" in done.errors[0].message
    assert key in taskapp.CLEANED_UP, "the handler saw CancelledError and cleaned up"


async def test_a_handlers_own_timeout_error_is_an_ordinary_failure(client: Client) -> None:
    """A TimeoutError the handler raises itself, with no deadline of ours set,
    fails the attempt like any exception (it used to crash the attempt and
    leave the task RUNNING until its lease expired)."""
    task = await client.submit("own_timeout", None, max_attempts=2, retry=FAST)
    done = await client.wait(task.id, timeout=10)
    assert done.state is TaskState.DEAD
    assert done.attempts == 2
    assert [e.type for e in done.errors] == ["TimeoutError", "TimeoutError"]
    assert [e.message for e in done.errors] == ["", ""]
    assert "raise TimeoutError" in done.errors[0].traceback


async def test_a_missed_cancel_notify_is_caught_by_the_heartbeat(
    database_url: str, schema: str
) -> None:
    """A cancel whose NOTIFY never reached the replica (its LISTEN connection
    was down at the time) still stops the running coroutine: the heartbeat
    reads each held task's cancel flag."""
    async with (
        running_replica(database_url, schema, heartbeat_interval=0.2) as replica,
        Client(replica.address) as client,
    ):
        key = uuid.uuid4().hex
        task = await client.submit("cancellable", {"seconds": 30, "key": key})
        await wait_state(client, task.id, TaskState.RUNNING)
        conn = await asyncpg.connect(database_url)
        try:  # asked for behind the replica's back: no NOTIFY at all
            await conn.execute(
                f'UPDATE "{schema}".tasks SET cancel_requested = true WHERE id = $1',
                uuid.UUID(task.id),
            )
        finally:
            await conn.close()
        await wait_state(client, task.id, TaskState.CANCELLED, timeout=3)
        assert key in taskapp.CLEANED_UP, "the handler saw CancelledError"


async def test_a_cancel_that_overtakes_its_claim_still_cancels(
    replica: Replica, client: Client
) -> None:
    """The cancel NOTIFY for a task can reach a replica just before the reply
    to the claim that hands it the task: the replica remembers the id and
    cancels the task instead of starting it."""
    queue = f"q-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    await client.submit("echo", None, queue=queue)  # the queue exists
    await client.pause_queue(queue)
    task = await client.submit("cancellable", {"seconds": 30, "key": key}, queue=queue)
    assert replica.parts.worker is not None
    assert replica.parts.worker.cancel(task.id) is False, "not running here (yet)"
    await client.resume_queue(queue)
    done = await client.wait(task.id, timeout=5)
    assert done.state is TaskState.CANCELLED
    assert key not in taskapp.CLEANED_UP, "it never started"


async def test_sync_handler_late_result_is_discarded(client: Client) -> None:
    task = await client.submit("sync_sleep", {"seconds": 0.5}, timeout_seconds=0.1)
    done = await client.wait(task.id, timeout=10)
    assert done.state is TaskState.DEAD
    assert done.result is None
    assert done.error is not None
    assert done.error.type == "TimeoutError"


async def test_running_coroutine_is_cancelled_within_a_second(client: Client) -> None:
    key = uuid.uuid4().hex
    task = await client.submit("cancellable", {"seconds": 30, "key": key})
    await wait_state(client, task.id, TaskState.RUNNING)
    started = asyncio.get_running_loop().time()
    marked = await client.cancel(task.id)
    assert marked.cancel_requested
    await wait_state(client, task.id, TaskState.CANCELLED, timeout=1.0)
    assert asyncio.get_running_loop().time() - started < 1.0
    assert key in taskapp.CLEANED_UP
    done = await client.get(task.id)
    assert done.finished_at is not None
    with pytest.raises(InvalidState, match="already finished"):
        await client.cancel(task.id)


async def test_running_sync_handler_cancel_discards_its_result(client: Client) -> None:
    task = await client.submit("sync_sleep", {"seconds": 0.4})
    await wait_state(client, task.id, TaskState.RUNNING)
    await client.cancel(task.id)
    done = await client.wait(task.id, timeout=5)
    assert done.state is TaskState.CANCELLED
    assert done.result is None


async def test_delay_runs_on_time(database_url: str, schema: str) -> None:
    """The promoter sleeps until the next due time, not the poll interval:
    with a 30 s poll, delayed tasks still start within a fraction of a second
    of their time (typical lateness is a few ms; see docs/benchmarks.md)."""
    async with (
        running_replica(database_url, schema, poll_interval=30.0) as replica,
        Client(replica.address) as client,
    ):
        submitted = [
            await client.submit_spec(TaskSpec(name="echo", delay_seconds=delay))
            for delay in (0.3, 0.6, 0.9)
        ]
        assert all(s.task.state is TaskState.SCHEDULED for s in submitted)
        for s in submitted:
            done = await client.wait(s.task.id, timeout=5)
            assert done.state is TaskState.SUCCEEDED
            assert done.started_at is not None
            lateness = (done.started_at - done.run_at).total_seconds()
            assert 0 <= lateness < 0.25, lateness


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TaskSpec(name="echo", delay_seconds=-1), "delay_seconds must not be negative"),
        (
            TaskSpec(name="echo", delay_seconds=1, run_at=datetime.now(UTC)),
            "run_at or delay_seconds, not both",
        ),
        (TaskSpec(name="echo", max_attempts=0), "max_attempts must be at least 1"),
        (TaskSpec(name="echo", timeout_seconds=0), "timeout_seconds must be positive"),
        (
            TaskSpec(name="echo", retry=RetryPolicy(1, 0.5, 10)),
            "retry factor must be at least 1",
        ),
    ],
)
async def test_bad_semantics_input(client: Client, spec: TaskSpec, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await client.submit_spec(spec)


async def test_retry_of_a_running_or_finished_task_is_refused(client: Client) -> None:
    task = await client.submit("cancellable", {"seconds": 30, "key": "r"})
    await wait_state(client, task.id, TaskState.RUNNING)
    with pytest.raises(InvalidState, match="only DEAD or CANCELLED"):
        await client.retry(task.id)
    await client.cancel(task.id)
    ok = await client.wait((await client.submit("echo")).id, 5)
    with pytest.raises(InvalidState, match="SUCCEEDED"):
        await client.retry(ok.id)
    with pytest.raises(NotFound):
        await client.retry(str(uuid.uuid4()))


async def test_queue_settings_persist_and_apply(client: Client) -> None:
    queues = {q.name: q for q in await client.list_queues()}
    assert {"default", "math"} <= set(queues), "registered handlers' queues exist"
    updated = await client.update_queue(
        "math", max_concurrent=3, max_attempts=4, timeout_seconds=9, retry=FAST
    )
    assert (updated.max_concurrent, updated.max_attempts, updated.timeout_seconds) == (3, 4, 9)
    task = await client.submit("square", {"x": 2})
    assert (task.max_attempts, task.timeout_seconds, task.retry) == (4, 9, FAST)
    cleared = await client.update_queue("math", max_concurrent=0, timeout_seconds=0)
    assert cleared.max_concurrent is None
    assert cleared.timeout_seconds is None
    assert cleared.max_attempts == 4, "settings not given stay"
    assert (await client.get_queue("math")).max_attempts == 4
    with pytest.raises(NotFound, match="queue 'nope'"):
        await client.update_queue("nope", max_concurrent=1)
    with pytest.raises(InvalidArgument, match="max_attempts"):
        await client.update_queue("math", max_attempts=0)


async def test_paused_queue_accepts_but_starts_nothing(client: Client) -> None:
    paused = await client.pause_queue("default")
    assert paused.paused
    task = await client.submit("echo", "waiting")
    await asyncio.sleep(0.3)
    assert (await client.get(task.id)).state is TaskState.QUEUED
    await client.resume_queue("default")
    assert (await client.wait(task.id, 5)).state is TaskState.SUCCEEDED


async def test_priorities_order_1000_tasks(client: Client) -> None:
    await client.pause_queue("default")
    rng = random.Random(7)
    specs = []
    for i in range(1000):
        specs.append(
            TaskSpec(name="record", payload_json=f"[{rng.randint(-3, 3)}, {i}]", priority=0)
        )
    specs = [
        TaskSpec(
            name="record",
            payload_json=s.payload_json,
            priority=int(s.payload_json[1:-1].split(",")[0]),
        )
        for s in specs
    ]
    taskapp.STARTED.clear()
    ids = await client.submit_many(specs)
    await client.resume_queue("default")
    for task_id in ids[-5:]:
        await client.wait(task_id, 20)
    deadline = asyncio.get_running_loop().time() + 20
    while len(taskapp.STARTED) < 1000:
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.05)
    started = [tuple(p) for p in taskapp.STARTED]
    assert started == sorted(started, key=lambda p: (-p[0], p[1]))


async def test_fifty_concurrent_submissions_with_one_key_create_one_task(
    client: Client, database_url: str, schema: str
) -> None:
    results = await asyncio.gather(
        *(client.submit_spec(TaskSpec(name="echo", idempotency_key="once")) for _ in range(50))
    )
    assert len({r.task.id for r in results}) == 1
    assert sum(not r.existing for r in results) == 1
    conn = await asyncpg.connect(database_url)
    try:
        count = await conn.fetchval(
            f'SELECT count(*) FROM "{schema}".tasks WHERE idempotency_key = $1', "once"
        )
    finally:
        await conn.close()
    assert count == 1


@pytest.mark.timeout(120)
async def test_max_concurrent_holds_across_three_replicas(database_url: str, schema: str) -> None:
    replicas = [
        Replica(make_settings(schema, poll_interval=0.2), load_app("taskapp"), database_url)
        for _ in range(3)
    ]
    for r in replicas:
        await r.start()
    conn = await asyncpg.connect(database_url)
    try:
        async with Client(replicas[0].address) as client:
            await client.update_queue("default", max_concurrent=2)
            ids = await client.submit_many(
                [TaskSpec(name="sleep", payload_json='{"seconds": 0.01}')] * 300
            )
            samples: list[int] = []
            while True:
                running = await conn.fetchval(
                    f'SELECT count(*) FROM "{schema}".tasks '
                    "WHERE queue = 'default' AND state = 'RUNNING'"
                )
                samples.append(running)
                left = await conn.fetchval(
                    f"SELECT count(*) FROM \"{schema}\".tasks WHERE state <> 'SUCCEEDED'"
                )
                if left == 0:
                    break
                assert len(samples) < 5000, "the run did not finish"
                await asyncio.sleep(0.005)
            done = [await client.get(i) for i in ids]
    finally:
        await conn.close()
        for r in replicas:
            await r.stop()
    assert max(samples) <= 2, max(samples)
    assert max(samples) == 2, "the limit was reached, so the test measured something"
    assert len(samples) > 50
    assert {t.state for t in done} == {TaskState.SUCCEEDED}


async def test_prune_deletes_old_finished_tasks_and_frees_old_keys(
    replica: Replica, client: Client, database_url: str, schema: str
) -> None:
    old = await client.wait((await client.submit("echo", "old")).id, 5)
    recent = await client.wait((await client.submit("echo", "recent")).id, 5)
    waiting = await client.submit("echo", delay_seconds=3600)
    keyed = await client.submit_spec(TaskSpec(name="echo", idempotency_key="k", delay_seconds=3600))
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute(
            f"UPDATE \"{schema}\".tasks SET finished_at = now() - interval '8 days' WHERE id = $1",
            uuid.UUID(old.id),
        )
        await conn.execute(
            f"UPDATE \"{schema}\".tasks SET created_at = now() - interval '2 days' WHERE id = $1",
            uuid.UUID(keyed.task.id),
        )
    finally:
        await conn.close()
    assert replica.parts.scheduler is not None
    now = datetime.now(UTC)
    deleted, expired = await replica.parts.scheduler.store.prune(
        now - timedelta(days=7), now - timedelta(days=1), 500
    )
    assert (deleted, expired) == (1, 1)
    with pytest.raises(NotFound):
        await client.get(old.id)
    for kept in (recent.id, waiting.id, keyed.task.id):
        assert (await client.get(kept)).id == kept
    again = await client.submit_spec(TaskSpec(name="echo", idempotency_key="k"))
    assert not again.existing, "the expired key no longer deduplicates"
    assert again.task.id != keyed.task.id
