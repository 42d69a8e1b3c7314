"""Submit -> run -> result through the gRPC contract, on a real replica and PostgreSQL."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import grpc
import pytest
from support import count_rows, make_settings, running_replica

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, InvalidArgument, InvalidState, NotFound, TaskSpec, TaskState
from treadle.common.tasks import QueueUpdate, RetryPolicy
from treadle.scheduler import postgres
from treadle.scheduler.core import Scheduler
from treadle.scheduler.registry import load_app
from treadle.scheduler.store import Store
from treadle.scheduler.supervisor import Replica


async def test_generated_stub_submit_runs_to_succeeded(replica: Replica) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        reply = await stub.SubmitTask(
            pb.SubmitTaskRequest(task=pb.TaskSpec(name="echo", payload='{"hello": "bar"}'))
        )
        assert reply.task.state == pb.TASK_STATE_QUEUED
        assert not reply.existing
        for _ in range(200):
            got = await stub.GetTask(pb.GetTaskRequest(id=reply.task.id))
            if got.task.state == pb.TASK_STATE_SUCCEEDED:
                break
            await asyncio.sleep(0.02)
        assert got.task.state == pb.TASK_STATE_SUCCEEDED
        assert json.loads(got.task.result) == {"hello": "bar"}
        assert got.task.attempts == 1
        assert got.task.HasField("started_at") and got.task.HasField("finished_at")


async def test_async_and_sync_handlers(client: Client) -> None:
    echo = await client.submit("echo", {"n": [1, 2, 3]})
    square = await client.submit("square", {"x": 7})
    assert square.queue == "math", "the handler's registered queue is the default"
    done_echo = await client.wait(echo.id, timeout=10)
    done_square = await client.wait(square.id, timeout=10)
    assert done_echo.state is TaskState.SUCCEEDED
    assert done_echo.result == {"n": [1, 2, 3]}
    assert done_square.state is TaskState.SUCCEEDED
    assert done_square.result["value"] == 49
    # plain `def` handlers run in the executor's threads, not on the event loop
    assert done_square.result["thread"].startswith("treadle-handler")


async def test_handler_exception_is_recorded_and_task_dead(client: Client) -> None:
    for name, error_type in (("boom", "ValueError"), ("sync_boom", "KeyError")):
        task = await client.wait((await client.submit(name, {"why": 1})).id, timeout=10)
        assert task.state is TaskState.DEAD
        assert task.error is not None
        assert task.error.type == error_type
        assert "Traceback" in task.error.traceback
        assert task.result is None
        assert task.finished_at is not None


async def test_unserialisable_result_fails_the_task(client: Client) -> None:
    task = await client.wait((await client.submit("not_json")).id, timeout=10)
    assert task.state is TaskState.DEAD
    assert task.error is not None
    assert "JSON" in task.error.message


async def test_batch_submit_one_call_in_order(client: Client) -> None:
    specs = [TaskSpec(name="echo", payload_json=json.dumps(i)) for i in range(300)]
    ids = await client.submit_many(specs)
    assert len(ids) == len(set(ids)) == 300
    results = [await client.wait(task_id, timeout=20) for task_id in ids]
    assert [t.result for t in results] == list(range(300))
    assert all(t.state is TaskState.SUCCEEDED for t in results)


async def test_batch_is_all_or_nothing(client: Client, database_url: str, settings: object) -> None:
    specs = [TaskSpec(name="echo"), TaskSpec(name="echo", priority=500), TaskSpec(name="echo")]
    with pytest.raises(InvalidArgument, match=r"task 1: priority 500"):
        await client.submit_many(specs)
    assert await count_rows(database_url, settings.database_schema) == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (TaskSpec(name=""), "name must not be empty"),
        (TaskSpec(name="nope"), "no handler is registered for task 'nope'"),
        (TaskSpec(name="echo", payload_json="{not json"), "not valid JSON"),
        (TaskSpec(name="echo", payload_json="NaN"), "payload is not valid JSON: NaN"),
        (TaskSpec(name="echo", payload_json='[1, {"x": -Infinity}]'), "not valid JSON"),
        (TaskSpec(name="echo", payload_json='"a\\u0000b"'), "must not contain NUL"),
        (TaskSpec(name="echo", payload_json=json.dumps("x" * 1_100_000)), "over the limit"),
        (TaskSpec(name="echo", priority=101), "out of range -100..100"),
        (TaskSpec(name="echo", priority=-101), "out of range -100..100"),
        (TaskSpec(name="echo", max_attempts=-1), "max_attempts must be at least 1"),
        (TaskSpec(name="echo", max_attempts=0), "max_attempts must be at least 1"),
    ],
)
async def test_bad_input_is_refused_and_stores_nothing(
    client: Client, database_url: str, settings: object, spec: TaskSpec, message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await client.submit_spec(spec)
    assert await count_rows(database_url, settings.database_schema) == 0  # type: ignore[attr-defined]


async def test_bad_input_gives_invalid_argument_status(replica: Replica) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.SubmitTask(pb.SubmitTaskRequest(task=pb.TaskSpec(name="echo", payload="{")))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "payload is not valid JSON" in (caught.value.details() or "")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.GetTask(pb.GetTaskRequest(id="not-a-uuid"))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_get_unknown_task_is_not_found(client: Client) -> None:
    with pytest.raises(NotFound):
        await client.get("00000000-0000-0000-0000-000000000000")


async def test_list_pages_through_every_task(client: Client) -> None:
    ids = await client.submit_many(
        [TaskSpec(name="echo", queue="a")] * 7 + [TaskSpec(name="echo", queue="b")] * 3
    )
    for task_id in ids:
        await client.wait(task_id, timeout=10)
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await client.list(queue="a", page_size=3, cursor=cursor)
        pages += 1
        seen += [t.id for t in page.tasks]
        assert all(t.queue == "a" for t in page.tasks)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert pages == 3
    assert seen == list(reversed(ids[:7])), "newest first, no gaps, no repeats"
    done = await client.list(state=TaskState.SUCCEEDED, page_size=100)
    assert len(done.tasks) == 10
    assert (await client.list(state=TaskState.DEAD)).tasks == []
    with pytest.raises(InvalidArgument, match="cursor"):
        await client.list(cursor="garbage!")
    with pytest.raises(InvalidArgument, match="page size"):
        await client.list(page_size=5000)


async def test_cancel_before_start(client: Client) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    task = await client.submit("echo", 1, run_at=later)
    assert task.state is TaskState.SCHEDULED
    cancelled = await client.cancel(task.id)
    assert cancelled.state is TaskState.CANCELLED
    assert cancelled.finished_at is not None
    with pytest.raises(InvalidState, match="already finished"):
        await client.cancel(task.id)
    with pytest.raises(NotFound):
        await client.cancel("00000000-0000-0000-0000-000000000000")


async def test_cancel_of_a_queued_task(client: Client) -> None:
    """A ready task that has not started (its queue is paused) is cancelled at
    once and never runs, even after the queue resumes."""
    queue = "held"
    await client.submit("echo", 0, queue=queue)
    await client.pause_queue(queue)
    task = await client.submit("echo", "never", queue=queue)
    assert task.state is TaskState.QUEUED
    cancelled = await client.cancel(task.id)
    assert cancelled.state is TaskState.CANCELLED
    assert cancelled.finished_at is not None and cancelled.started_at is None
    await client.resume_queue(queue)
    marker = await client.submit("echo", "after", queue=queue)
    assert (await client.wait(marker.id, timeout=5)).state is TaskState.SUCCEEDED
    again = await client.get(task.id)
    assert again.state is TaskState.CANCELLED
    assert again.attempts == 0 and again.result is None


async def test_scheduled_task_runs_when_due(client: Client) -> None:
    soon = datetime.now(UTC) + timedelta(seconds=0.3)
    task = await client.submit("echo", "later", run_at=soon)
    assert task.state is TaskState.SCHEDULED
    done = await client.wait(task.id, timeout=5)
    assert done.state is TaskState.SUCCEEDED
    assert done.started_at is not None and done.started_at >= soon


async def test_idempotency_key_returns_existing_task(client: Client) -> None:
    first = await client.submit_spec(TaskSpec(name="echo", idempotency_key="k1"))
    again = await client.submit_spec(TaskSpec(name="echo", idempotency_key="k1"))
    assert not first.existing
    assert again.existing
    assert again.task.id == first.task.id
    other_queue = await client.submit_spec(
        TaskSpec(name="echo", idempotency_key="k1", queue="elsewhere")
    )
    assert not other_queue.existing


async def test_higher_priority_runs_first(database_url: str, schema: str) -> None:
    # One slot, so start order is claim order; submit everything before starting.

    async with (
        running_replica(database_url, schema, concurrency=1) as replica,
        Client(replica.address) as client,
    ):
        gate = await client.submit("sleep", {"seconds": 0.3}, priority=100)
        await asyncio.sleep(0.1)  # the gate occupies the only slot
        specs = [
            TaskSpec(name="echo", payload_json=json.dumps([p, i]), priority=p)
            for i, p in enumerate([0, 5, -5, 5, 0, 10, -5, 10])
        ]
        ids = await client.submit_many(specs)
        tasks = [await client.wait(i, timeout=10) for i in ids]
        await client.wait(gate.id, timeout=10)
    order = [t.result for t in sorted(tasks, key=lambda t: t.started_at)]  # type: ignore[arg-type, return-value]
    assert order == [[10, 5], [10, 7], [5, 1], [5, 3], [0, 0], [0, 4], [-5, 2], [-5, 6]]


async def test_submitted_task_is_the_stored_row(database_url: str, schema: str) -> None:
    """The reply to a submission is built from what was sent plus the columns
    the database decides (state, defaults from the queue, times); it must
    equal the task as read back, field for field."""
    settings = make_settings(schema)
    pool = await postgres.create_pool(database_url, schema, 2)
    try:
        async with postgres.acquired(pool) as conn:
            await postgres.migrate(conn, schema)
        core = Scheduler(Store(pool, schema), load_app("taskapp"), settings)
        await core.submit_many([TaskSpec(name="echo", queue="tuned")])
        await core.update_queue(
            "tuned",
            QueueUpdate(max_attempts=4, timeout_seconds=9.5, retry=RetryPolicy(0.5, 3.0, 60.0)),
        )
        specs = [
            TaskSpec(name="echo"),
            TaskSpec(name="echo", payload_json='{"a": [1, 2.5, "x"], "b": null}', priority=7),
            TaskSpec(name="echo", payload_json='"text"', queue="tuned"),
            TaskSpec(name="echo", queue="tuned", max_attempts=2, timeout_seconds=1.25),
            TaskSpec(name="echo", retry=RetryPolicy(2.0, 1.5, 30.0), idempotency_key="k1"),
            TaskSpec(name="echo", delay_seconds=60),
            TaskSpec(name="echo", run_at=datetime.now(UTC) - timedelta(seconds=5)),
        ]
        submitted = await core.submit_many(specs)
        for s in submitted:
            assert not s.existing
            assert s.task == await core.get(s.task.id)
        states = [s.task.state for s in submitted]
        assert states == [TaskState.QUEUED] * 5 + [TaskState.SCHEDULED, TaskState.QUEUED]
        tuned = submitted[2].task
        assert (tuned.max_attempts, tuned.timeout_seconds) == (4, 9.5)
        assert tuned.retry == RetryPolicy(0.5, 3.0, 60.0)
        assert submitted[1].task.payload == {"a": [1, 2.5, "x"], "b": None}
        again = await core.submit_many([TaskSpec(name="echo", idempotency_key="k1")])
        assert again[0].existing
        assert again[0].task == submitted[4].task
    finally:
        await pool.close()
