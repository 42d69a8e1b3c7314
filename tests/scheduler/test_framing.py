"""gRPC framing: bytes that do not decode as the method's request are
INVALID_ARGUMENT on every method, never UNKNOWN, and a message over the
receive limit is RESOURCE_EXHAUSTED with a short, clean message. Real
grpc.aio calls on loopback against a real replica, which still runs `echo`
afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from treadle.client import Client
from treadle.common.grpc_limits import MAX_REQUEST_BYTES
from treadle.scheduler.rpc import MAX_DETAILS
from treadle.scheduler.supervisor import Replica

MiB = 1024 * 1024
SERVICE = "/treadle.api.v1.SchedulerService/"
#: Not a protobuf message: a field tag whose varint never ends.
JUNK = b"\xff\xff\xff\xff\xff"
#: Field 1 (a string) holding bytes that are not UTF-8.
NOT_UTF8 = b"\x0a\x02\xff\xfe"
#: Field 1 declared 5 bytes long, 2 sent.
TRUNCATED = b"\x0a\x05ab"


@pytest.fixture
async def channel(replica: Replica) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(replica.address) as opened:
        yield opened


async def unary(channel: grpc.aio.Channel, method: str, body: bytes) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await channel.unary_unary(method)(body, timeout=10)
    return raised.value


async def still_runs_echo(replica: Replica) -> None:
    async with Client(replica.address) as client:
        task = await client.submit("echo", payload={"ok": True})
        done = await client.wait(task.id, timeout=10)
    assert done.result == {"ok": True}


def _length(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def string_field(value: bytes) -> bytes:
    """Field 1, length-delimited: the wire form of `{id: value}`."""
    return b"\x0a" + _length(len(value)) + value


@pytest.mark.parametrize("body", [JUNK, NOT_UTF8, TRUNCATED], ids=["junk", "not-utf8", "short"])
@pytest.mark.parametrize(
    "method",
    [
        SERVICE + "GetTask",
        SERVICE + "SubmitTask",
        SERVICE + "SubmitTasks",
        SERVICE + "ListTasks",
        SERVICE + "CancelTask",
        "/grpc.health.v1.Health/Check",
    ],
)
async def test_undecodable_bytes_are_invalid_argument(
    replica: Replica, channel: grpc.aio.Channel, method: str, body: bytes
) -> None:
    error = await unary(channel, method, body)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    details = error.details() or ""
    assert "not a valid" in details
    assert "Traceback" not in details


async def test_undecodable_bytes_to_a_streaming_method_are_invalid_argument(
    replica: Replica, channel: grpc.aio.Channel
) -> None:
    call = channel.unary_stream(SERVICE + "WatchTask")(JUNK, timeout=10)
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        async for _ in call:
            pass
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value
    await still_runs_echo(replica)


async def test_a_message_over_the_receive_limit_is_resource_exhausted_cleanly(
    replica: Replica, channel: grpc.aio.Channel
) -> None:
    error = await unary(channel, SERVICE + "GetTask", string_field(b"x" * (MAX_REQUEST_BYTES + 1)))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
    details = error.details() or ""
    assert len(details) < 200
    assert "x" * 20 not in details
    await still_runs_echo(replica)


async def test_an_oversized_id_under_the_limit_is_a_short_invalid_argument(
    replica: Replica, channel: grpc.aio.Channel
) -> None:
    error = await unary(channel, SERVICE + "GetTask", string_field(b"x" * MiB))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error
    assert len(error.details() or "") <= MAX_DETAILS
    await still_runs_echo(replica)


async def test_the_replica_still_runs_echo_after_garbage(
    replica: Replica, channel: grpc.aio.Channel
) -> None:
    for body in (JUNK, NOT_UTF8, TRUNCATED):
        await unary(channel, SERVICE + "GetTask", body)
    await still_runs_echo(replica)
