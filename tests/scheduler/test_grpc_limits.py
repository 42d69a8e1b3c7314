"""The replica's gRPC limits come from its settings: a request or a response
over its message limit ends that call with RESOURCE_EXHAUSTED while the
replica goes on serving, and a connection has at most its stream limit of
calls open at once. Real replicas on loopback, raw grpc.aio calls."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from support import count_rows, make_settings

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, TaskSpec
from treadle.common import grpc_limits, wire
from treadle.common.errors import ResourceExhausted
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica

KiB = 1024


async def still_runs_echo(replica: Replica) -> None:
    async with Client(replica.address) as client:
        task = await client.submit("echo", payload={"ok": True})
        done = await client.wait(task.id, timeout=10)
    assert done.result == {"ok": True}


@pytest.fixture
def settings(schema: str, request: pytest.FixtureRequest) -> Settings:
    """The replica's settings, with a test's limits (`indirect` parameters)."""
    return make_settings(schema, **getattr(request, "param", {}))


@pytest.fixture
async def stub(replica: Replica) -> AsyncIterator[pb_grpc.SchedulerServiceStub]:
    """A stub on a channel without limits of its own: only the replica's apply."""
    options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
    async with grpc.aio.insecure_channel(replica.address, options=options) as channel:
        yield pb_grpc.SchedulerServiceStub(channel)


def test_the_defaults_are_stated() -> None:
    settings = Settings()
    assert settings.grpc_max_request_bytes == grpc_limits.MAX_REQUEST_BYTES == 4 * 1024 * KiB
    assert settings.grpc_max_response_bytes == grpc_limits.MAX_RESPONSE_BYTES == 64 * 1024 * KiB
    assert settings.grpc_max_concurrent_streams == grpc_limits.MAX_CONCURRENT_STREAMS == 1000


@pytest.mark.parametrize("settings", [{"grpc_max_request_bytes": 64 * KiB}], indirect=True)
async def test_a_request_over_the_set_limit_is_resource_exhausted(
    replica: Replica, stub: pb_grpc.SchedulerServiceStub, database_url: str, schema: str
) -> None:
    big = TaskSpec(name="echo", payload_json='"' + "x" * (64 * KiB) + '"')
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.SubmitTask(pb.SubmitTaskRequest(task=wire.spec_to_proto(big)), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
    assert "larger than max" in (raised.value.details() or ""), raised.value
    assert "x" * 20 not in (raised.value.details() or "")
    assert await count_rows(database_url, schema) == 0
    # Just under the limit is read, and the replica goes on.
    under = TaskSpec(name="echo", payload_json='"' + "x" * (60 * KiB) + '"')
    await stub.SubmitTask(pb.SubmitTaskRequest(task=wire.spec_to_proto(under)), timeout=10)
    await still_runs_echo(replica)


@pytest.mark.parametrize("settings", [{"grpc_max_response_bytes": 16 * KiB}], indirect=True)
async def test_a_response_over_the_set_limit_is_resource_exhausted(
    replica: Replica, stub: pb_grpc.SchedulerServiceStub
) -> None:
    async with Client(replica.address) as client:
        await client.pause_queue("default")  # the tasks stay as submitted
        (big,) = await client.submit_many(
            [TaskSpec(name="echo", payload_json='"' + "x" * (20 * KiB) + '"')]
        )
        small = await client.submit("echo", {"small": True})
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await stub.GetTask(pb.GetTaskRequest(id=big), timeout=10)
    assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, raised.value
    assert "larger than max" in (raised.value.details() or ""), raised.value
    reply = await stub.GetTask(pb.GetTaskRequest(id=small.id), timeout=10)
    assert reply.task.id == small.id
    async with Client(replica.address) as client:
        await client.resume_queue("default")
    await still_runs_echo(replica)


async def test_the_client_refuses_a_request_over_its_limit_without_sending_it(
    replica: Replica, database_url: str, schema: str
) -> None:
    async with Client(replica.address, max_request_bytes=16 * KiB) as client:
        with pytest.raises(ResourceExhausted):
            await client.submit("echo", "x" * (20 * KiB))
        assert (await client.submit("echo", "x" * KiB)).name == "echo"
    assert await count_rows(database_url, schema) == 1


@pytest.mark.parametrize("settings", [{"grpc_max_concurrent_streams": 2}], indirect=True)
async def test_a_connection_has_at_most_the_set_streams_open(replica: Replica) -> None:
    """Two watches hold the connection's two streams: a third call waits (here
    past its deadline) until one ends; another connection is not held up."""
    async with Client(replica.address) as client:
        waiting = await client.submit("echo", delay_seconds=3600)
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        await stub.GetTask(pb.GetTaskRequest(id=waiting.id), timeout=10)  # settings exchanged
        watches = [stub.WatchTask(pb.WatchTaskRequest(id=waiting.id)) for _ in range(2)]
        for watch in watches:
            await watch.read()  # the task now: the stream is open
        with pytest.raises(grpc.aio.AioRpcError) as raised:
            await stub.GetTask(pb.GetTaskRequest(id=waiting.id), timeout=1)
        assert raised.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED, raised.value
        async with Client(replica.address) as other:  # its own connection
            assert (await other.get(waiting.id)).id == waiting.id
        watches[0].cancel()
        reply = await stub.GetTask(pb.GetTaskRequest(id=waiting.id), timeout=10)
        assert reply.task.id == waiting.id
        watches[1].cancel()
        await asyncio.sleep(0)
    await still_runs_echo(replica)
