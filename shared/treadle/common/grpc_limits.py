"""gRPC message and stream limits, the same at both ends of a call.

A scheduler replica reads requests up to `TREADLE_GRPC_MAX_REQUEST_BYTES`,
sends responses up to `TREADLE_GRPC_MAX_RESPONSE_BYTES`, and lets each
connection have `TREADLE_GRPC_MAX_CONCURRENT_STREAMS` calls open at once
(`server_options`). A client's channel takes the same two message limits the
other way round (`channel_options`): it sends no request the scheduler would
refuse (grpc refuses it on the caller's side, RESOURCE_EXHAUSTED, without
sending it) and accepts every response the scheduler may send. The gateway
reads the same two variables for its channel, so one setting holds for both.

A message over a limit ends that call with RESOURCE_EXHAUSTED ("Received
message larger than max" / "Sent message larger than max"); the connection
and every other call go on. A call past the stream limit waits, on the
client, until one of the connection's calls ends.
"""

from __future__ import annotations

MiB = 1024 * 1024
#: The largest request message a scheduler reads (grpc's own default, stated).
MAX_REQUEST_BYTES = 4 * MiB
#: The largest response message a scheduler sends: a page of 1,000 tasks with
#: their payloads and results can be large, a runaway one is refused.
MAX_RESPONSE_BYTES = 64 * MiB
#: Calls open at once on one connection. A gateway keeps one connection to its
#: scheduler, shared by every call it makes and every subscription it serves.
MAX_CONCURRENT_STREAMS = 1000
#: grpc takes these limits as a C int.
LARGEST = 2**31 - 1


def server_options(
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
    max_concurrent_streams: int = MAX_CONCURRENT_STREAMS,
) -> list[tuple[str, int]]:
    """The options of a scheduler's `grpc.aio.server`."""
    return [
        ("grpc.max_receive_message_length", max_request_bytes),
        ("grpc.max_send_message_length", max_response_bytes),
        ("grpc.max_concurrent_streams", max_concurrent_streams),
    ]


def channel_options(
    max_request_bytes: int = MAX_REQUEST_BYTES,
    max_response_bytes: int = MAX_RESPONSE_BYTES,
) -> list[tuple[str, int]]:
    """The message limits of a channel to a scheduler: requests out, responses in."""
    return [
        ("grpc.max_send_message_length", max_request_bytes),
        ("grpc.max_receive_message_length", max_response_bytes),
    ]
