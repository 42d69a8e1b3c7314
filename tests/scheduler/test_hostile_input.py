"""Hostile input at the gRPC edge: every refused request is INVALID_ARGUMENT
naming the field, stores nothing, and leaves the replica running `echo`.
(The same rules over GraphQL: tests/gateway/test_hostile_input.py.)"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import grpc
import pytest
from support import count_rows, make_settings, running_replica

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, TaskSpec, TaskState
from treadle.scheduler.supervisor import Replica

#: google.protobuf.Timestamp seconds of 9999-12-31T23:59:59Z and 0001-01-01T00:00:00Z.
LAST_SECOND = 253_402_300_799
FIRST_SECOND = -62_135_596_800


async def refused(call: Any, field: str) -> str:
    """Await `call`; it must fail INVALID_ARGUMENT with a short message naming `field`."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    details = caught.value.details() or ""
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
    assert field in details, details
    assert len(details) < 400, "an echoed value is cut short"
    return details


async def still_runs_echo(address: str) -> None:
    async with Client(address) as client:
        task = await client.wait((await client.submit("echo", {"after": "hostile"})).id, 10)
        assert task.state is TaskState.SUCCEEDED
        assert task.result == {"after": "hostile"}


def spec(**fields: Any) -> pb.TaskSpec:
    return pb.TaskSpec(name=fields.pop("name", "echo"), **fields)


HOSTILE_SPECS = [
    (spec(run_at={"seconds": LAST_SECOND, "nanos": 999_999_999}), "run_at 9999-12-31"),
    (spec(run_at={"seconds": LAST_SECOND, "nanos": 999_999_000}), "run_at 9999-12-31"),
    (spec(run_at={"seconds": FIRST_SECOND}), "run_at 0001-01-01"),
    (spec(run_at={"seconds": 0, "nanos": -1}), "run_at.nanos"),
    (spec(run_at={"seconds": 0, "nanos": 1_000_000_000}), "run_at.nanos"),
    (spec(run_at={"seconds": LAST_SECOND + 1}), "run_at.seconds"),
    (spec(run_at={"seconds": -(2**62)}), "run_at.seconds"),
    (spec(delay_seconds=float("nan")), "delay_seconds"),
    (spec(delay_seconds=float("inf")), "delay_seconds"),
    (spec(delay_seconds=1e300), "delay_seconds"),
    (spec(delay_seconds=3e11), "delay_seconds"),
    (spec(timeout_seconds=float("nan")), "timeout_seconds"),
    (spec(timeout_seconds=float("-inf")), "timeout_seconds"),
    (spec(retry=pb.RetryPolicy(base_seconds=1, factor=float("nan"), max_seconds=1)), "factor"),
    (spec(retry=pb.RetryPolicy(base_seconds=1, factor=2, max_seconds=1e308)), "max_seconds"),
    (spec(retry=pb.RetryPolicy(base_seconds=float("inf"), factor=2)), "base_seconds"),
    (spec(payload="NaN"), "payload"),
    (spec(payload="1e400"), "payload"),
    (spec(payload="-1e400"), "payload"),
    (spec(payload='"\\ud800"'), "payload"),
    (spec(payload='{"k": "\\udfff"}'), "payload"),
    (spec(payload='"\\u0000"'), "payload"),
    (spec(payload="[" * 1000 + "]" * 1000), "payload nests"),
    (spec(payload='{"a":' * 65 + "1" + "}" * 65), "payload nests 65 deep"),
    (spec(queue="a\x00b"), "queue"),
    (spec(queue="line\nbreak"), "queue"),
    (spec(queue="   "), "queue"),
    (spec(queue="q" * 10_000), "queue"),
    (spec(name="echo\x00"), "task name"),
    (spec(name="x" * 10_000), "task name"),
    (spec(idempotency_key="k\x00"), "idempotency_key"),
    (spec(idempotency_key=" \t"), "idempotency_key"),
]


@pytest.mark.parametrize(("task", "field"), HOSTILE_SPECS)
async def test_hostile_submission_is_refused_naming_the_field_and_stores_nothing(
    replica: Replica, database_url: str, schema: str, task: pb.TaskSpec, field: str
) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        await refused(stub.SubmitTask(pb.SubmitTaskRequest(task=task)), field)
        batch = pb.SubmitTasksRequest(tasks=[spec(), task, spec()])
        assert (await refused(stub.SubmitTasks(batch), field)).startswith("task 1: ")
    assert await count_rows(database_url, schema) == 0
    await still_runs_echo(replica.address)


async def test_hostile_lookups_are_refused_naming_the_field(replica: Replica) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        await refused(stub.ListTasks(pb.ListTasksRequest(state=99)), "state 99")
        await refused(stub.ListTasks(pb.ListTasksRequest(state=-1)), "state -1")
        await refused(stub.ListTasks(pb.ListTasksRequest(queue="a\x00")), "queue")
        await refused(stub.ListTasks(pb.ListTasksRequest(page_token="x" * 10_000)), "cursor")
        # A cursor that decodes to a number past bigint.
        await refused(
            stub.ListTasks(
                pb.ListTasksRequest(page_token="c2VxOjk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5OTk5")
            ),
            "cursor",
        )
        huge_id = "a" * 10_000
        await refused(stub.GetTask(pb.GetTaskRequest(id=huge_id)), "task id")
        await refused(stub.CancelTask(pb.CancelTaskRequest(id=huge_id)), "task id")
        await refused(stub.RetryTask(pb.RetryTaskRequest(id=huge_id)), "task id")
        watch = stub.WatchTask(pb.WatchTaskRequest(id=huge_id))
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            async for _ in watch:
                pass
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert len(caught.value.details() or "") < 400
        await refused(stub.GetQueue(pb.GetQueueRequest(name="q\x00")), "queue name")
        await refused(stub.PauseQueue(pb.PauseQueueRequest(name="q\x00")), "queue name")
        await refused(
            stub.UpdateQueue(pb.UpdateQueueRequest(name="default", timeout_seconds=float("nan"))),
            "timeout_seconds",
        )
        await refused(
            stub.UpdateQueue(
                pb.UpdateQueueRequest(
                    name="default",
                    retry=pb.RetryPolicy(base_seconds=1, factor=2, max_seconds=1e300),
                )
            ),
            "max_seconds",
        )
        await refused(stub.GetTrends(pb.GetTrendsRequest(granularity=42)), "granularity 42")
        await refused(
            stub.GetTrends(pb.GetTrendsRequest(since={"seconds": 0, "nanos": -5})), "since.nanos"
        )
    await still_runs_echo(replica.address)


async def test_hostile_schedule_and_statistics_requests_are_refused(replica: Replica) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        await refused(stub.PauseSchedule(pb.PauseScheduleRequest(name="s\x00")), "schedule name")
        await refused(stub.ResumeSchedule(pb.ResumeScheduleRequest(name="s\x00")), "schedule name")
        await refused(stub.DeleteSchedule(pb.DeleteScheduleRequest(name="s" * 10_000)), "schedule")
        schedule = pb.Schedule(
            name="nightly", cron="@daily", timezone="x" * 10_000, task=pb.TaskSpec(name="echo")
        )
        await refused(stub.CreateSchedule(pb.CreateScheduleRequest(schedule=schedule)), "time zone")
        bad_queue = pb.Schedule(name="q", cron="@daily", task=spec(queue="a\x00"))
        await refused(stub.CreateSchedule(pb.CreateScheduleRequest(schedule=bad_queue)), "queue")
        await refused(stub.GetQueueStats(pb.GetQueueStatsRequest(queue="q\x00")), "queue")
        await refused(stub.GetErrorPatterns(pb.GetErrorPatternsRequest(queue="q\x00")), "queue")
        await refused(stub.GetTrends(pb.GetTrendsRequest(queues=["ok", "q\x00"])), "queues")
        year_one = pb.GetTrendsRequest(since={"seconds": FIRST_SECOND})
        await refused(stub.GetTrends(year_one), "since 0001-01-01")
    await still_runs_echo(replica.address)


async def test_the_edges_are_accepted_and_round_trip(client: Client) -> None:
    for run_at in (datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)):
        submitted = await client.submit_spec(TaskSpec("echo", run_at=run_at))
        assert (await client.get(submitted.task.id)).run_at == run_at
    deep = "[" * 64 + "]" * 64
    task = await client.wait(
        (await client.submit_spec(TaskSpec("echo", payload_json=deep))).task.id, 10
    )
    assert task.state is TaskState.SUCCEEDED


async def test_the_depth_limit_is_a_setting(database_url: str, schema: str) -> None:
    async with (
        running_replica(database_url, schema, max_payload_depth=3) as replica,
        Client(replica.address) as client,
        grpc.aio.insecure_channel(replica.address) as channel,
    ):
        assert (await client.submit("echo", [[[1]]])).id
        stub = pb_grpc.SchedulerServiceStub(channel)
        request = pb.SubmitTaskRequest(task=spec(payload="[[[[1]]]]"))
        await refused(stub.SubmitTask(request), "payload nests 4 deep, over the limit of 3")
        # A handler's result is held to the same limit: the attempt fails Permanent.
        task = await client.submit("hostile_result", {"kind": "deep", "depth": 4})
        done = await client.wait(task.id, 10)
        assert done.state is TaskState.DEAD
        assert done.attempts == 1
        assert done.error is not None
        assert "handler result nests 5 deep, over the limit of 3" in done.error.message


@pytest.mark.parametrize(
    ("kind", "message"),
    [("nul", "must not contain NUL"), ("surrogate", "lone UTF-16 surrogate")],
)
async def test_a_result_jsonb_refuses_fails_the_attempt_permanently(
    client: Client, kind: str, message: str
) -> None:
    done = await client.wait((await client.submit("hostile_result", {"kind": kind})).id, 10)
    assert done.state is TaskState.DEAD
    assert done.attempts == 1, "Permanent: not retried"
    assert done.error is not None and message in done.error.message
    assert done.error.type == "Permanent"
    echo = await client.wait((await client.submit("echo", 1)).id, 10)
    assert echo.state is TaskState.SUCCEEDED, "the flush of other outcomes goes on"


async def test_an_error_message_with_nul_and_surrogates_is_recorded(client: Client) -> None:
    done = await client.wait((await client.submit("hostile_error", None)).id, 10)
    assert done.state is TaskState.DEAD
    assert done.error is not None
    assert done.error.message == "bad\\x00message\\ud800"


def test_settings_for_the_depth_limit(schema: str) -> None:
    assert make_settings(schema).max_payload_depth == 64


async def test_the_client_leaves_the_depth_limit_to_the_scheduler(
    database_url: str, schema: str
) -> None:
    deep: Any = 1
    for _ in range(80):
        deep = [deep]
    async with (
        running_replica(database_url, schema, max_payload_depth=100) as replica,
        Client(replica.address) as client,
    ):
        done = await client.wait((await client.submit("echo", deep)).id, 10)
        assert done.state is TaskState.SUCCEEDED
        assert done.result == deep
