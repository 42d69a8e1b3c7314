"""WatchTask: a task's states streamed as they change, woken by the database's NOTIFY.

Replicas here run one handler at a time, so a task submitted behind a short
`sleep` stays QUEUED long enough for a watch to see every state.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from support import make_settings

from treadle.api.v1 import scheduler_pb2 as pb
from treadle.api.v1 import scheduler_pb2_grpc as pb_grpc
from treadle.client import Client, NotFound, SyncClient, Task, TaskState, Unavailable
from treadle.common import wire
from treadle.scheduler.registry import load_app
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica

QUEUED, RUNNING, SUCCEEDED = TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema, concurrency=1, drain_timeout=0.1)


async def states(client: Client, task_id: str, timeout: float = 5.0) -> list[TaskState]:
    async with asyncio.timeout(timeout):
        return [task.state async for task in client.watch(task_id)]


async def started(settings: Settings, database_url: str) -> Replica:
    replica = Replica(settings, load_app("taskapp"), database_url)
    await replica.start()
    return replica


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await check():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.02)


async def state_is(client: Client, task_id: str, state: TaskState) -> bool:
    return (await client.get(task_id)).state is state


def none_watched(replica: Replica) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        assert replica.parts.watchers is not None
        return replica.parts.watchers.watched == 0

    return check


async def rest(updates: AsyncIterator[Task]) -> list[Task]:
    return [task async for task in updates]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_stream_through_the_stub_has_each_state_once_in_order(
    replica: Replica, client: Client
) -> None:
    await client.submit("sleep", {"seconds": 0.5})  # holds the only slot
    task = await client.submit("sleep", {"seconds": 0.3})
    async with grpc.aio.insecure_channel(replica.address) as channel:
        call = pb_grpc.SchedulerServiceStub(channel).WatchTask(pb.WatchTaskRequest(id=task.id))
        async with asyncio.timeout(5):
            replies = [reply async for reply in call]
        assert await call.code() == grpc.StatusCode.OK
    tasks = [wire.task_from_proto(r.task) for r in replies]
    assert [t.state for t in tasks] == [QUEUED, RUNNING, SUCCEEDED]
    assert {t.id for t in tasks} == {task.id}
    assert tasks[-1].result == "slept"
    assert tasks[1].started_at is not None and tasks[-1].finished_at is not None
    assert replica.parts.watchers is not None and replica.parts.watchers.watched == 0


async def test_a_finished_task_gives_one_message(client: Client) -> None:
    task = await client.submit("boom", "x")
    done = await client.wait(task.id, timeout=5)
    assert done.state is TaskState.DEAD
    updates = [t async for t in client.watch(task.id)]
    assert [t.state for t in updates] == [TaskState.DEAD]
    assert updates[0].error is not None and "boom: x" in updates[0].error.message


async def test_unknown_or_malformed_id(replica: Replica, client: Client) -> None:
    async with grpc.aio.insecure_channel(replica.address) as channel:
        stub = pb_grpc.SchedulerServiceStub(channel)
        for task_id, code in (
            (str(uuid.uuid4()), grpc.StatusCode.NOT_FOUND),
            ("not-an-id", grpc.StatusCode.INVALID_ARGUMENT),
        ):
            call = stub.WatchTask(pb.WatchTaskRequest(id=task_id))
            with pytest.raises(grpc.aio.AioRpcError) as raised:
                replies = [reply async for reply in call]
            assert raised.value.code() == code, replies
    with pytest.raises(NotFound):
        await states(client, str(uuid.uuid4()))
    with pytest.raises(NotFound):
        await client.wait(str(uuid.uuid4()), timeout=2)
    assert replica.parts.watchers is not None and replica.parts.watchers.watched == 0


async def test_a_watch_on_one_replica_sees_a_task_run_on_another(
    database_url: str, schema: str
) -> None:
    # The watching replica polls only every 30 s and is kept busy: whatever
    # it sees within seconds came from the other replica through NOTIFY.
    watching = await started(
        make_settings(schema, concurrency=1, poll_interval=30, drain_timeout=0.1), database_url
    )
    try:
        async with Client(watching.address) as client:
            blocker = await client.submit("sleep", {"seconds": 30})
            await until(lambda: state_is(client, blocker.id, RUNNING))
            running = await started(make_settings(schema, concurrency=1), database_url)
            try:
                async with Client(running.address) as elsewhere:
                    await elsewhere.submit("sleep", {"seconds": 0.4})  # holds its only slot
                    task = await elsewhere.submit("sleep", {"seconds": 0.2})
                    began = time.monotonic()
                    assert await states(client, task.id) == [QUEUED, RUNNING, SUCCEEDED]
                    assert time.monotonic() - began < 3
                assert running.parts.worker is not None and running.parts.worker.claimed_total == 2
            finally:
                await running.stop()
        assert watching.parts.worker is not None and watching.parts.worker.claimed_total == 1
    finally:
        await watching.stop()


async def test_many_watchers_of_one_task_all_finish(replica: Replica, client: Client) -> None:
    await client.submit("sleep", {"seconds": 0.5})
    task = await client.submit("sleep", {"seconds": 0.2})
    seen = await asyncio.gather(*(states(client, task.id) for _ in range(20)))
    assert seen == [[QUEUED, RUNNING, SUCCEEDED]] * 20
    assert replica.parts.watchers is not None and replica.parts.watchers.watched == 0


async def test_a_client_that_leaves_ends_its_watch(replica: Replica, client: Client) -> None:
    task = await client.submit("sleep", {"seconds": 30})
    assert replica.parts.watchers is not None
    async with contextlib.aclosing(client.watch(task.id)) as updates:
        async for update in updates:
            assert update.state in (QUEUED, RUNNING)
            assert replica.parts.watchers.watched == 1
            break
    await until(none_watched(replica))


async def test_wait_follows_the_stream(client: Client) -> None:
    task = await client.submit("sleep", {"seconds": 0.3})
    began = time.monotonic()
    done = await client.wait(task.id, timeout=5)
    assert done.state is SUCCEEDED and done.result == "slept"
    assert time.monotonic() - began < 1.0


async def test_sync_client_watch(replica: Replica) -> None:
    def follow() -> list[TaskState]:
        with SyncClient(replica.address) as sync:
            task = sync.submit("sleep", {"seconds": 0.1})
            return [t.state for t in sync.watch(task.id)]

    seen = await asyncio.wait_for(asyncio.to_thread(follow), 5)
    assert seen[-1] is SUCCEEDED and len(seen) == len(set(seen))


async def test_stopping_a_replica_ends_open_watches_at_once(database_url: str, schema: str) -> None:
    replica = await started(make_settings(schema, drain_timeout=0.1), database_url)
    stopped = False
    try:
        async with Client(replica.address) as client:
            task = await client.submit("sleep", {"seconds": 30})
            updates = client.watch(task.id)
            assert (await anext(updates)).state in (QUEUED, RUNNING)
            began = time.monotonic()
            stopping = asyncio.create_task(replica.stop())
            with pytest.raises(Unavailable, match="shutting down"):
                await asyncio.wait_for(rest(updates), 5)
            await stopping
            stopped = True
            assert time.monotonic() - began < 0.9  # less than the server's grace period
    finally:
        if not stopped:
            await replica.stop()


async def test_wait_watches_again_when_its_replica_restarts(database_url: str, schema: str) -> None:
    settings = make_settings(schema, grpc_port=free_port(), drain_timeout=0.1)
    first = await started(settings, database_url)
    async with Client(first.address) as client:
        task = await client.submit("sleep", {"seconds": 0.5})
        waiting = asyncio.create_task(client.wait(task.id, timeout=10))
        await until(lambda: state_is(client, task.id, RUNNING))
        await first.stop()  # hands the task back; the stream breaks with UNAVAILABLE
        assert not waiting.done()
        second = await started(settings, database_url)
        try:
            done = await waiting
        finally:
            await second.stop()
    assert done.state is SUCCEEDED and done.result == "slept"
