"""The Python client: plain dataclasses out, Treadle's errors instead of gRPC's."""

from __future__ import annotations

import asyncio
import socket
from datetime import datetime

import pytest

from treadle.client import (
    Client,
    DeadlineExceeded,
    InvalidArgument,
    SyncClient,
    TaskState,
    Unavailable,
)
from treadle.scheduler.supervisor import Replica


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_scheduler_raises_unavailable() -> None:
    async with Client(f"127.0.0.1:{closed_port()}", timeout=2) as client:
        with pytest.raises(Unavailable):
            await client.submit("echo", 1)
        with pytest.raises(Unavailable):
            await client.get("00000000-0000-0000-0000-000000000000")


async def test_a_scheduler_that_never_answers_hits_the_call_deadline() -> None:
    """A peer that accepts the connection and then says nothing (a hung
    scheduler, a black-holed proxy): each call ends at the client's deadline
    with DeadlineExceeded, instead of hanging."""
    accepted: list[asyncio.StreamWriter] = []

    async def silent(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.append(writer)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        async with Client(f"127.0.0.1:{port}", timeout=0.5) as client:
            began = asyncio.get_running_loop().time()
            with pytest.raises(DeadlineExceeded):
                await client.get("00000000-0000-4000-8000-000000000000")
            took = asyncio.get_running_loop().time() - began
            assert took < 5, took
        assert accepted, "the client did connect"
    finally:
        for writer in accepted:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_payload_that_is_not_json_is_refused_before_sending() -> None:
    async with Client(f"127.0.0.1:{closed_port()}") as client:
        with pytest.raises(InvalidArgument, match="JSON"):
            await client.submit("echo", {"bad": {1, 2}})
        with pytest.raises(InvalidArgument, match="JSON"):
            await client.submit("echo", float("nan"))
        with pytest.raises(InvalidArgument, match="time zone"):
            await client.submit("echo", run_at=datetime(2030, 1, 1))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), [1, {"x": float("-inf")}]])
async def test_nan_and_infinity_are_refused_naming_the_payload(value: object) -> None:
    # Standard JSON has no NaN or Infinity: the client, the CLI and the gateway
    # share one encoder (treadle.common.wire.encode_json) that refuses them.
    async with Client(f"127.0.0.1:{closed_port()}") as client:
        with pytest.raises(InvalidArgument, match=r"^payload is not JSON-serialisable: .*NaN"):
            await client.submit("echo", value)


async def test_wait_times_out_with_deadline_exceeded(client: Client) -> None:
    task = await client.submit("sleep", {"seconds": 5})
    with pytest.raises(DeadlineExceeded, match="still"):
        await client.wait(task.id, timeout=0.2)


async def test_iter_tasks_walks_all_pages(client: Client) -> None:
    created = [(await client.submit("echo", i, queue="iter")).id for i in range(12)]
    seen = [t.id async for t in client.iter_tasks(queue="iter", page_size=5)]
    assert seen == list(reversed(created))


async def test_sync_client_round_trip(replica: Replica) -> None:
    def use_sync() -> tuple[TaskState, object]:
        with SyncClient(replica.address) as sync:
            task = sync.submit("echo", {"sync": True})
            done = sync.wait(task.id, timeout=10)
            assert sync.get(task.id).id == task.id
            return done.state, done.result

    state, result = await asyncio.to_thread(use_sync)
    assert state is TaskState.SUCCEEDED
    assert result == {"sync": True}
