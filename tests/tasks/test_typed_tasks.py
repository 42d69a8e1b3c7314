"""The typed task API (treadle.tasks) against a real replica running `typedapp`:
typed references from defer to wait, validation on both sides, declared
options and their precedence, the handler's TaskContext and its progress."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
import typedapp
from gateway.helpers import graphql_over, started
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support import make_settings, running_replica, until
from typedrefs import Email, Sent, add, send_email

from treadle.client import Client, InvalidArgument, SyncClient, TaskState
from treadle.common.tasks import RetryPolicy
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica
from treadle.tasks import TaskContext, TaskFailed, configure


@pytest.fixture
async def replica(database_url: str, schema: str) -> AsyncIterator[Replica]:
    async with running_replica(database_url, schema, app="typedapp") as started_replica:
        yield started_replica


@pytest.fixture
async def client(replica: Replica) -> AsyncIterator[Client]:
    async with Client(replica.address) as c:
        yield c


async def test_types_flow_from_defer_to_wait(client: Client) -> None:
    handle = await send_email.defer(Email(to="a@example.com"), client=client)
    sent = await handle.wait(timeout=10)
    assert sent == Sent(to="a@example.com", attempt=1)  # a msgspec Struct, decoded
    assert (handle.task.queue, handle.task.max_attempts) == ("email", 3), "the ref's options"
    assert handle.task.idempotency_key == "email:a@example.com", "the key function's"
    again = await send_email.defer(Email(to="a@example.com", subject="other"), client=client)
    assert (again.existing, again.id) == (True, handle.id), "same key: the same task"

    assert await (await add.defer({"a": 2, "b": 3}, client=client)).wait(10) == 5  # TypedDict

    point = await (await typedapp.norm.defer(typedapp.Point(x=2), client=client)).wait(10)
    assert point == typedapp.Point(x=4, y=0)  # Pydantic in and out

    # By name (other languages, scripts): the same handler, plain JSON.
    task = await client.submit("typed.add", {"a": 1, "b": 1})
    assert (await client.wait(task.id, timeout=10)).result == 2


async def test_a_failed_task_raises_on_wait(client: Client) -> None:
    handle = await typedapp.slow_sync.defer(typedapp.Job(key="w"), client=client)
    with pytest.raises(TaskFailed, match="ended DEAD: TimeoutError") as caught:
        await handle.wait(timeout=10)
    assert caught.value.task.state is TaskState.DEAD


async def test_a_payload_that_does_not_fit_is_refused_before_it_is_sent() -> None:
    # No scheduler is involved: the check is the producer's own.
    with pytest.raises(InvalidArgument, match=r"payload of task 'typed.email'.*\$\.to"):
        await send_email.defer({"to": 5}, client=None)  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match=r"missing required field `b`"):
        add.defer_sync({"a": 1})  # type: ignore[typeddict-item]
    with pytest.raises(InvalidArgument, match=r"valid Point: x: Input should be a valid integer"):
        await typedapp.norm.defer({"x": "many"})  # type: ignore[arg-type]
    with pytest.raises(InvalidArgument, match="NaN"):
        await typedapp.plain.defer(float("nan"))


async def test_a_stored_payload_that_does_not_decode_fails_for_good(client: Client) -> None:
    task = await client.submit("typed.email", {"to": 7})  # by name: not checked against the type
    done = await client.wait(task.id, timeout=10)
    assert done.state is TaskState.DEAD
    assert done.attempts == 1, "not retried, though the task allows 3 attempts"
    assert done.error is not None and done.error.type == "InvalidPayload"
    assert "Email" in done.error.message and "$.to" in done.error.message


async def test_options_precedence_call_task_queue_global(client: Client) -> None:
    await client.update_queue("default", max_attempts=6, timeout_seconds=50)
    # typed.plain declares max_attempts=4 and no timeout: task > queue, then queue.
    by_name = await client.submit("typed.plain", 1)
    assert (by_name.max_attempts, by_name.timeout_seconds) == (4, 50)
    typed = (await typedapp.plain.defer(1, client=client)).task
    assert (typed.max_attempts, typed.timeout_seconds) == (4, 50)
    # The call wins over the task.
    call = (await typedapp.plain.defer(1, max_attempts=2, timeout=7, client=client)).task
    assert (call.max_attempts, call.timeout_seconds) == (2, 7)
    # typed.pydantic declares timeout=20 and priority 5, no max_attempts: the queue's.
    norm = (await typedapp.norm.defer(typedapp.Point(x=1), client=client)).task
    assert (norm.timeout_seconds, norm.max_attempts, norm.priority) == (20, 6, 5)
    assert (
        await typedapp.norm.defer(typedapp.Point(x=1), priority=9, client=client)
    ).task.priority == 9
    # A queue without settings, a task declaring none: the global defaults.
    steps = (await typedapp.steps.defer(typedapp.Job(steps=1), client=client)).task
    assert (steps.queue, steps.max_attempts, steps.timeout_seconds) == ("steps", 1, None)
    assert steps.retry == RetryPolicy()
    # The declared retry policy and attempts make a failing first attempt retry at once.
    handle = await send_email.defer(Email(to="b@example.com", subject="fail once"), client=client)
    assert await handle.wait(timeout=10) == Sent(to="b@example.com", attempt=2)
    assert handle.task.retry == RetryPolicy(base_seconds=0, factor=1, max_seconds=0)


async def test_the_handler_sees_its_context(
    client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    handle = await send_email.defer(Email(to="ctx@example.com"), client=client)
    await handle.wait(timeout=10)
    ctx = typedapp.SEEN[handle.id]
    assert (ctx.id, ctx.name, ctx.queue) == (handle.id, "typed.email", "email")
    assert (ctx.attempt, ctx.max_attempts, ctx.deadline) == (1, 3, None)
    assert not ctx.cancelled.is_set()
    with caplog.at_level(logging.INFO, logger="treadle.task"):
        ctx.logger.info("hello")
    record = caplog.records[-1]
    assert record.getMessage() == f"[task {handle.id}] hello"
    assert (record.name, record.task_id, record.attempt) == (
        "treadle.task.typed.email",
        handle.id,
        1,
    )  # type: ignore[attr-defined]

    timed = await typedapp.norm.defer(typedapp.Point(x=1), client=client)
    await timed.wait(10)
    # norm does not ask for a context: its attempt made none.
    assert timed.id not in typedapp.SEEN


async def test_progress_is_stored_and_shown_in_graphql(replica: Replica, client: Client) -> None:
    handle = await typedapp.steps.defer(typedapp.Job(steps=4), client=client)
    assert await handle.wait(timeout=10) == {"done": 4}
    task = await handle.get()
    assert (task.progress, task.progress_message) == (1.0, "step 4")
    assert "use `await ctx.heartbeat(...)`" in typedapp.SYNC_REFUSED[0], "no deadlock"
    assert task.progress_at is not None and task.started_at is not None
    assert task.progress_at >= task.started_at

    gateway = await started(replica.address)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            body = await graphql_over(http)(
                "query($id: ID!) { task(id: $id) { progress progressMessage progressAt } }",
                id=handle.id,
            )
    finally:
        await gateway.stop()
    shown = body["data"]["task"]
    assert (shown["progress"], shown["progressMessage"]) == (1.0, "step 4")
    assert shown["progressAt"] is not None


async def test_a_sync_handler_stops_when_its_task_is_cancelled(client: Client) -> None:
    key = uuid.uuid4().hex
    handle = await typedapp.sync_steps.defer(typedapp.Job(key=key), client=client)

    async def half_way() -> bool:
        return (await handle.get()).progress == 0.5

    await until(half_way)  # heartbeat_sync from the handler's thread, stored
    assert (await handle.get()).progress_message == "half way"
    await handle.cancel()
    done = await client.wait(handle.id, timeout=10)
    assert done.state is TaskState.CANCELLED
    assert key in typedapp.STOPPED, "the handler saw ctx.cancelled and returned"


async def test_a_sync_handler_past_its_deadline_sees_cancelled(client: Client) -> None:
    key = uuid.uuid4().hex
    handle = await typedapp.slow_sync.defer(typedapp.Job(key=key), client=client)
    done = await client.wait(handle.id, timeout=10)
    assert done.state is TaskState.DEAD
    assert done.error is not None and "timed out after 0.2s" in done.error.message
    await until(lambda: asyncio.sleep(0, key in typedapp.STOPPED))


async def test_defer_sync_and_the_default_client(replica: Replica) -> None:
    def blocking() -> int:
        with SyncClient(replica.address) as sync:
            return add.defer_sync({"a": 20, "b": 22}, client=sync).wait(timeout=10)

    assert await asyncio.to_thread(blocking) == 42
    configure(replica.address)
    try:
        handle = await add.defer({"a": 1, "b": 2})  # no client=: the configured one
        assert await handle.wait(timeout=10) == 3
    finally:
        configure(None)


async def test_a_task_function_is_still_the_function() -> None:
    assert typedapp.adder({"a": 1, "b": 2}) == 3
    ctx = TaskContext(
        id="t1",
        name="typed.email",
        queue="email",
        attempt=1,
        max_attempts=3,
        deadline=None,
        trace_id=None,
    )
    assert await typedapp.deliver(Email(to="x@example.com"), ctx) == Sent("x@example.com", 1)
    assert await ctx.heartbeat(progress=0.5) is True, "outside a replica: stored nowhere"
    with pytest.raises(InvalidArgument, match=r"progress must be a number in 0\.\.1"):
        await ctx.heartbeat(progress=2)


async def test_a_sync_handler_stops_when_its_lease_is_lost_or_the_replica_stops(
    database_url: str, schema: str
) -> None:
    lost, drained = uuid.uuid4().hex, uuid.uuid4().hex
    async with (
        running_replica(
            database_url, schema, app="typedapp", heartbeat_interval=0.1, drain_timeout=0.5
        ) as replica,
        Client(replica.address) as client,
    ):
        first = await typedapp.sync_steps.defer(typedapp.Job(key=lost), client=client)
        second = await typedapp.sync_steps.defer(typedapp.Job(key=drained), client=client)

        async def both_half_way() -> bool:
            return all([(await client.get(h.id)).progress == 0.5 for h in (first, second)])

        await until(both_half_way)
        # Another replica took the first task's lease (as the reaper would).
        conn = await asyncpg.connect(database_url)
        try:
            await conn.execute(
                f'UPDATE "{schema}".tasks SET lease_owner = $1 WHERE id = $2',
                "elsewhere",
                uuid.UUID(first.id),
            )
        finally:
            await conn.close()
        await until(lambda: asyncio.sleep(0, lost in typedapp.STOPPED))
        ctx = typedapp.SEEN[first.id]
        assert ctx.cancelled.is_set()
        assert await asyncio.to_thread(ctx.heartbeat_sync, 0.9) is False, "not its lease now"
    # The replica stopped: past the drain timeout the second was handed back,
    # and its handler saw ctx.cancelled, so its thread did not run on.
    assert drained in typedapp.STOPPED
    assert replica.stranded == []


async def test_the_context_carries_the_trace_id(database_url: str, schema: str) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    replica = Replica(
        make_settings(schema), load_app("typedapp"), database_url, tracer_provider=provider
    )
    await replica.start()
    try:
        async with Client(replica.address) as client:
            handle = await send_email.defer(Email(to="trace@example.com"), client=client)
            await handle.wait(timeout=10)
    finally:
        await replica.stop()
        provider.shutdown()
    trace_id = typedapp.SEEN[handle.id].trace_id
    assert trace_id is not None and len(trace_id) == 32
    # The attempt's span runs in that trace.
    attempt = [
        s for s in exporter.get_finished_spans() if s.attributes.get("treadle.task.id") == handle.id
    ]
    assert attempt and {f"{s.context.trace_id:032x}" for s in attempt} == {trace_id}


async def test_a_declared_concurrency_key_limits_each_key(replica: Replica, client: Client) -> None:
    typedapp.UPLOADS_PEAK.clear()
    handles = [
        await typedapp.per_user.defer(typedapp.Upload(user=user), client=client)
        for user in ("ada", "bob") * 6
    ]
    assert {(h.task.concurrency_key, h.task.max_concurrent) for h in handles} == {
        ("user:ada", 1),
        ("user:bob", 1),
    }
    assert sorted([await h.wait(timeout=20) for h in handles]) == ["ada"] * 6 + ["bob"] * 6
    assert typedapp.UPLOADS_PEAK == {"ada": 1, "bob": 1}
    # By name, the key is the submitter's to give (the replica computes none).
    by_name = await client.submit(
        "typed.per_user", {"user": "cy"}, concurrency_key="user:cy", max_concurrent=1
    )
    assert (by_name.concurrency_key, by_name.max_concurrent) == ("user:cy", 1)
    unkeyed = await client.submit("typed.per_user", {"user": "cy"})
    assert unkeyed.concurrency_key is None
