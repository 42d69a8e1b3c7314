"""Single submits and task reads made together on one client travel in group
calls (`SubmitTaskGroup`, `GetTasks`; treadle.client._group), yet each caller
gets its own result or its own error, and each task keeps its own caller's
trace context. A scheduler without the group calls gets single ones."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import grpc
import pytest
from opentelemetry.sdk.trace import TracerProvider
from scrape import scrape
from support import make_settings

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, TaskSpec
from treadle.common import telemetry
from treadle.common.errors import DeadlineExceeded, InvalidArgument, NotFound
from treadle.scheduler.registry import load_app
from treadle.scheduler.rpc import SchedulerServicer
from treadle.scheduler.supervisor import Replica

HANDLED = "treadle_grpc_server_handled_total"


async def handled(replica: Replica, method: str) -> float:
    assert replica.metrics_server is not None
    m = await scrape(f"http://{replica.metrics_server.address}/metrics")
    return m.value(HANDLED, grpc_method=method, grpc_code="OK")


async def test_submits_made_together_are_grouped_and_each_gets_its_own_task(
    replica: Replica, client: Client, database_url: str, schema: str
) -> None:
    submitted = await asyncio.gather(*(client.submit("echo", {"n": i}) for i in range(64)))
    assert [t.payload for t in submitted] == [{"n": i} for i in range(64)]
    assert len({t.id for t in submitted}) == 64
    # The first calls went out alone; the rest waited and went together.
    singles = await handled(replica, "SubmitTask")
    groups = await handled(replica, "SubmitTaskGroup")
    assert 1 <= singles < 64
    assert 1 <= groups < 64 - singles
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(f'SELECT id::text, payload::text FROM "{schema}".tasks')
    finally:
        await conn.close()
    assert {(r["id"], r["payload"]) for r in rows} == {
        (t.id, f'{{"n": {i}}}') for i, t in enumerate(submitted)
    }


async def test_a_lone_caller_is_never_grouped(replica: Replica, client: Client) -> None:
    for i in range(5):
        await client.submit("echo", i)
    assert await handled(replica, "SubmitTask") == 5
    assert await handled(replica, "SubmitTaskGroup") == 0


async def test_a_refused_submission_in_a_group_fails_only_its_caller(client: Client) -> None:
    names = ["echo"] * 10
    names[7] = "no-such-task"
    outcomes = await asyncio.gather(
        *(client.submit(name, i) for i, name in enumerate(names)), return_exceptions=True
    )
    assert isinstance(outcomes[7], InvalidArgument)
    assert "no handler is registered" in str(outcomes[7])
    assert all(not isinstance(o, BaseException) for i, o in enumerate(outcomes) if i != 7)


async def test_the_same_idempotency_key_in_a_group_yields_one_task(client: Client) -> None:
    submitted = await asyncio.gather(
        *(client.submit("echo", i, idempotency_key="once") for i in range(8))
    )
    assert len({t.id for t in submitted}) == 1


async def test_each_task_keeps_its_callers_trace_grouped_or_not(
    database_url: str, schema: str
) -> None:
    """With tracing on at both ends, a single call carries its caller's trace
    in the metadata; a grouped submission carries it in the group."""
    server_side, client_side = TracerProvider(), TracerProvider()
    replica = Replica(
        make_settings(schema), load_app("taskapp"), database_url, tracer_provider=server_side
    )
    await replica.start()
    try:
        async with Client(
            replica.address, interceptors=telemetry.client_interceptors(client_side)
        ) as client:
            tracer = client_side.get_tracer("test")

            async def traced(i: int) -> tuple[str, str]:
                with tracer.start_as_current_span(f"caller-{i}") as span:
                    task = await client.submit("echo", i)
                return task.id, format(span.get_span_context().trace_id, "032x")

            calls = await asyncio.gather(*(traced(i) for i in range(16)))
        assert await handled(replica, "SubmitTaskGroup") >= 1
    finally:
        await replica.stop()
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(f'SELECT id::text, trace_context FROM "{schema}".tasks')
    finally:
        await conn.close()
    stored = {r["id"]: json.loads(r["trace_context"]) for r in rows}
    for task_id, trace_id in calls:
        assert stored[task_id]["traceparent"].split("-")[1] == trace_id


async def test_submit_task_group_answers_each_submission(replica: Replica) -> None:
    """The RPC itself: results in order, refusals as status codes, a trace
    context that is not one ignored."""
    good = pb.TaskSpec(name="echo", payload="1")
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        reply = await stub.SubmitTaskGroup(
            pb.SubmitTaskGroupRequest(
                submissions=[
                    pb.GroupedSubmission(task=good),
                    pb.GroupedSubmission(task=pb.TaskSpec(name="echo", payload="{bad")),
                    pb.GroupedSubmission(task=good, trace_context={"traceparent": "junk"}),
                    pb.GroupedSubmission(task=pb.TaskSpec(name="echo", priority=1000)),
                ]
            )
        )
    first, bad_json, junk_trace, bad_priority = reply.results
    assert first.HasField("submitted") and first.submitted.task.payload == "1"
    assert junk_trace.HasField("submitted")
    for refused in (bad_json, bad_priority):
        assert not refused.HasField("submitted")
        assert refused.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        assert refused.message


async def test_an_empty_group_is_answered_empty(replica: Replica) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        reply = await stub.SubmitTaskGroup(pb.SubmitTaskGroupRequest())
    assert list(reply.results) == []


@pytest.mark.parametrize("in_flight", [3, 200])
async def test_every_caller_returns_whatever_the_concurrency(
    client: Client, in_flight: int
) -> None:
    submitted = await asyncio.gather(*(client.submit("echo", i) for i in range(in_flight)))
    assert [t.payload for t in submitted] == list(range(in_flight))


async def test_reads_made_together_are_grouped_and_each_gets_its_own_answer(
    replica: Replica, client: Client
) -> None:
    tasks = await client.submit_many(
        [TaskSpec(name="echo", payload_json=str(i)) for i in range(40)]
    )
    unknown = "00000000-0000-4000-8000-000000000000"
    asked = [*tasks, unknown, "not-a-task-id"]
    answers = await asyncio.gather(*(client.get(i) for i in asked), return_exceptions=True)
    for task_id, answer in zip(tasks, answers, strict=False):
        assert not isinstance(answer, BaseException)
        assert answer.id == task_id
    assert isinstance(answers[-2], NotFound) and unknown in str(answers[-2])
    assert isinstance(answers[-1], InvalidArgument)
    assert await handled(replica, "GetTasks") >= 1
    assert await handled(replica, "GetTask") < len(asked)


async def test_get_tasks_answers_each_id(replica: Replica, client: Client) -> None:
    task = await client.submit("echo", 1)
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        reply = await stub.GetTasks(
            pb.GetTasksRequest(ids=[task.id, "00000000-0000-4000-8000-000000000000", "x"])
        )
        found, missing, malformed = reply.results
        assert found.task.id == task.id
        assert missing.code == grpc.StatusCode.NOT_FOUND.value[0] and not missing.HasField("task")
        assert malformed.code == grpc.StatusCode.INVALID_ARGUMENT.value[0]
        with pytest.raises(grpc.aio.AioRpcError) as too_many:
            await stub.GetTasks(pb.GetTasksRequest(ids=[task.id] * 1001))
        assert too_many.value.code() is grpc.StatusCode.INVALID_ARGUMENT


class WithoutGroupCalls(SchedulerServicer):
    """A scheduler from before the group calls: they answer UNIMPLEMENTED."""

    SubmitTaskGroup = pb_grpc.SchedulerServiceServicer.SubmitTaskGroup  # type: ignore[assignment]
    GetTasks = pb_grpc.SchedulerServiceServicer.GetTasks  # type: ignore[assignment]


async def test_a_scheduler_without_group_calls_gets_single_calls(replica: Replica) -> None:
    server = grpc.aio.server()
    pb_grpc.add_SchedulerServiceServicer_to_server(
        WithoutGroupCalls(replica.parts.scheduler), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with Client(f"127.0.0.1:{port}") as old:
            for _ in range(2):  # the second time, it knows
                submitted = await asyncio.gather(*(old.submit("echo", i) for i in range(20)))
                assert [t.payload for t in submitted] == list(range(20))
                read = await asyncio.gather(*(old.get(t.id) for t in submitted))
                assert [t.id for t in read] == [t.id for t in submitted]
            with pytest.raises(InvalidArgument):
                await asyncio.gather(*(old.submit("no-such-task") for _ in range(5)))
    finally:
        await server.stop(None)


async def test_a_waiting_caller_keeps_its_own_deadline(
    replica: Replica, database_url: str, schema: str
) -> None:
    """A submit that waits to go with others fails by its own deadline, not
    after the wait plus a whole group call. (The database is held by a lock,
    so no submit can finish.)"""
    locker = await asyncpg.connect(database_url)
    lock = locker.transaction()
    await lock.start()
    await locker.execute(f'LOCK TABLE "{schema}".tasks IN ACCESS EXCLUSIVE MODE')
    try:
        async with Client(replica.address, timeout=2.0) as client:
            began = asyncio.get_running_loop().time()
            outcomes = await asyncio.gather(
                *(client.submit("echo", i) for i in range(6)), return_exceptions=True
            )
            elapsed = asyncio.get_running_loop().time() - began
    finally:
        await lock.rollback()
        await locker.close()
    assert all(isinstance(o, DeadlineExceeded) for o in outcomes), outcomes
    # Two single calls time out at 2 s; the four that waited behind them end
    # then too, rather than at 4 s after a group call of their own.
    assert elapsed < 3.5, elapsed
