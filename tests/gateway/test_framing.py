"""HTTP framing: bodies the GraphQL view cannot read are 400s, oversized bodies 413s.

Every answer here is a GraphQL-shaped error with `extensions.code:
INVALID_ARGUMENT`, never a 500; a normal request beside them is unaffected.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from support import count_rows
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings
from treadle.scheduler.supervisor import Replica

from .helpers import GraphQL

MiB = 1024 * 1024
LIMIT = Settings().max_request_bytes
SUBMIT = 'mutation { submitTask(input: {name: "echo"}) { id state } }'


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body: dict[str, Any] = response.json()
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "INVALID_ARGUMENT"}
    message: str = error["message"]
    return message


async def post(http: httpx.AsyncClient, content: Any) -> httpx.Response:
    return await http.post(
        "/graphql", content=content, headers={"content-type": "application/json"}
    )


def test_the_default_limit_is_two_mebibytes() -> None:
    assert Settings().max_request_bytes == 2 * MiB


@pytest.mark.parametrize(
    "body",
    [
        b'\xff\xfe{"query": "{ tasks { nodes { id } } }"}',
        b'{"query": "{ tasks { nodes { id } } }", "x": "\xc3"}',
        '{"query": "{ tasks { nodes { id } } }"}'.encode("utf-16"),
    ],
    ids=["invalid-start-byte", "truncated-sequence", "utf-16"],
)
async def test_a_body_that_is_not_utf8_is_a_400(http: httpx.AsyncClient, body: bytes) -> None:
    assert "UTF-8" in refused(await post(http, body), 400)


@pytest.mark.parametrize(
    "body",
    [b"{not json", b"", b'{"query": NaN}', b'"a string"', b"42", b"null", b"[" * 100_000],
    ids=["garbage", "empty", "nan", "string", "number", "null", "deep"],
)
async def test_a_body_that_is_not_a_json_object_is_a_400(
    http: httpx.AsyncClient, body: bytes
) -> None:
    refused(await post(http, body), 400)


@pytest.mark.parametrize(
    ("variables", "status"), [("null", 200), ("{}", 200), ("5", 400), ("{bad", 400)]
)
async def test_get_variables_keep_their_rules(
    http: httpx.AsyncClient, variables: str, status: int
) -> None:
    response = await http.get(
        "/graphql",
        params={"query": "{ tasks { nodes { id } } }", "variables": variables},
        headers={"accept": "application/json"},
    )
    assert response.status_code == status, response.text
    if status == 400:
        refused(response, 400)


async def test_an_unsupported_content_type_is_a_graphql_shaped_400(
    http: httpx.AsyncClient,
) -> None:
    response = await http.post("/graphql", content=b"\xff", headers={"content-type": "text/plain"})
    refused(response, 400)


async def test_a_body_over_the_limit_with_content_length_is_a_413(
    http: httpx.AsyncClient, gql: GraphQL
) -> None:
    body = b'{"query": "' + b" " * (3 * MiB) + b'{ tasks { nodes { id } } }"}'
    assert "limit" in refused(await post(http, body), 413)
    assert (await gql(SUBMIT))["data"]["submitTask"]["state"] in ("QUEUED", "RUNNING", "SUCCEEDED")


async def test_a_chunked_body_over_the_limit_is_a_413(
    http: httpx.AsyncClient, gql: GraphQL
) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield b'{"query": "'
        for _ in range(3 * MiB // (64 * 1024)):
            yield b" " * (64 * 1024)
        yield b'{ tasks { nodes { id } } }"}'

    request = http.build_request(
        "POST", "/graphql", content=chunks(), headers={"content-type": "application/json"}
    )
    assert "content-length" not in request.headers
    assert request.headers["transfer-encoding"] == "chunked"
    assert "limit" in refused(await http.send(request), 413)
    assert (await gql(SUBMIT))["data"]["submitTask"]["state"] in ("QUEUED", "RUNNING", "SUCCEEDED")


async def raw_answer(gateway: Gateway, head: bytes) -> bytes:
    """Send a request head alone on a fresh connection; the answer's head and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(head)
        await writer.drain()
        answer = await reader.readuntil(b"\r\n\r\n")
        length = int(answer.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        return answer + await reader.readexactly(length)
    finally:
        writer.close()


async def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    gateway: Gateway,
) -> None:
    # Only the head is sent: the answer comes without waiting for the 3 MiB body.
    head = (
        b"POST /graphql HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\n\r\n" % (3 * MiB)
    )
    answer = await raw_answer(gateway, head)
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]
    assert b'"INVALID_ARGUMENT"' in answer


async def test_a_chunked_stream_is_refused_once_it_passes_the_limit(gateway: Gateway) -> None:
    # A chunked body that never ends: refused as soon as it passes the limit.
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(
            b"POST /graphql HTTP/1.1\r\nhost: test\r\ncontent-type: application/json\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        chunk = b"%x\r\n%s\r\n" % (64 * 1024, b" " * (64 * 1024))
        sent = 0
        while sent <= LIMIT:
            writer.write(chunk)
            await writer.drain()
            sent += 64 * 1024
        answer = await reader.readuntil(b"\r\n\r\n")
    finally:
        writer.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:200]


async def test_normal_requests_are_unaffected(http: httpx.AsyncClient, gql: GraphQL) -> None:
    # A body just under the limit is read and answered as usual.
    query = "{ tasks { nodes { id } } }"
    padding = LIMIT - len(f'{{"query": "{query}"}}') - 10
    body = ('{"query": "' + " " * padding + query + '"}').encode()
    assert len(body) < LIMIT
    response = await post(http, body)
    assert response.status_code == 200, response.text
    assert "errors" not in response.json()
    assert (await gql(SUBMIT))["data"]["submitTask"]["state"] in ("QUEUED", "RUNNING", "SUCCEEDED")


async def test_a_websocket_message_over_the_limit_closes_the_connection(
    gateway: Gateway, gql: GraphQL
) -> None:
    url = gateway.url.replace("http://", "ws://", 1) + "/graphql"
    async with connect(
        url,
        subprotocols=[Subprotocol("graphql-transport-ws")],
        open_timeout=5,
        max_size=None,
    ) as ws:
        await ws.send('{"type": "connection_init"}')
        assert '"connection_ack"' in str(await ws.recv())
        await ws.send('{"type": "ping", "payload": "' + " " * (3 * MiB) + '"}')
        with pytest.raises(ConnectionClosed) as closed:
            await ws.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1009  # message too big
    assert (await gql(SUBMIT))["data"]["submitTask"]["state"] in ("QUEUED", "RUNNING", "SUCCEEDED")


async def test_a_request_over_the_grpc_limit_is_refused_by_the_gateway(
    replica: Replica, database_url: str, schema: str
) -> None:
    """The gateway's channel keeps the scheduler's request limit: a larger
    submission is refused before it is sent (RESOURCE_EXHAUSTED) and stores nothing."""
    settings = Settings(
        http_port=0, scheduler_address=replica.address, grpc_max_request_bytes=16 * 1024
    )
    gateway = Gateway(settings)
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            query = 'mutation($p: JSON) { submitTask(input: {name: "echo", payload: $p}) { id } }'
            big = await http.post(
                "/graphql", json={"query": query, "variables": {"p": "x" * 20_000}}
            )
            small = await http.post("/graphql", json={"query": query, "variables": {"p": "x"}})
    finally:
        await gateway.stop()
    (error,) = big.json()["errors"]
    assert error["extensions"] == {"code": "RESOURCE_EXHAUSTED"}, error
    assert "x" * 20 not in error["message"]
    assert "errors" not in small.json(), small.text
    assert await count_rows(database_url, schema) == 1
