"""The gateway's Prometheus metrics at GET /metrics, read over real HTTP."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from scrape import Scraped, parse
from support import make_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from treadle.gateway.server import Gateway
from treadle.scheduler.settings import Settings

from .helpers import GraphQL

SUBMIT = 'mutation Submit($p: JSON) { submitTask(input: {name: "echo", payload: $p}) { id } }'
UPDATES = "subscription Follow($id: ID!) { taskUpdates(id: $id) { id state } }"


@pytest.fixture
async def ws(gateway: Gateway) -> AsyncIterator[ClientConnection]:
    url = gateway.url.replace("http://", "ws://", 1) + "/graphql"
    async with connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=5
    ) as connection:
        await send(connection, type="connection_init")
        assert (await receive(connection))["type"] == "connection_ack"
        yield connection


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), 5))
    return message


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema, concurrency=1, drain_timeout=0.1)


async def metrics(http: httpx.AsyncClient) -> Scraped:
    response = await http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def test_graphql_http_and_grpc_calls_are_counted(
    http: httpx.AsyncClient, gql: GraphQL
) -> None:
    for i in range(4):
        body = await gql(SUBMIT, p=i)
        assert "errors" not in body, body
    body = await gql('query Missing { task(id: "not-a-uuid") { id } }')
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
    body = await gql("{ nope }")
    assert body["errors"]
    assert (await http.get("/health")).status_code == 200
    assert (await http.get("/no/such/page")).status_code == 404

    m = await metrics(http)
    ops = "treadle_graphql_operations_total"
    assert m.value(ops, operation_type="mutation", operation_name="Submit", outcome="ok") == 4
    assert m.value(ops, operation_type="query", operation_name="Missing", outcome="error") == 1
    assert m.value(ops, operation_name="anonymous", outcome="invalid") == 1
    errors = "treadle_graphql_errors_total"
    assert m.value(errors, operation_name="Missing", code="INVALID_ARGUMENT") == 1
    assert m.value(errors, operation_name="anonymous", code="GRAPHQL_VALIDATION_FAILED") == 1
    assert m.value("treadle_graphql_operation_duration_seconds_count", operation_name="Submit") == 4
    assert m.value("treadle_graphql_operations_in_flight") == 0

    requests = "treadle_http_requests_total"
    assert m.value(requests, method="POST", route="/graphql", status="200") == 6
    assert m.value(requests, method="GET", route="/health", status="200") == 1
    assert m.value(requests, method="GET", route="other", status="404") == 1
    assert m.value("treadle_http_request_size_bytes_sum", route="/graphql") > 6 * 50
    assert m.value("treadle_http_response_size_bytes_sum", route="/graphql") > 6 * 20
    assert m.value("treadle_http_request_duration_seconds_count", route="/graphql") == 6
    assert m.value("treadle_http_requests_in_flight", route="/metrics") == 1  # this scrape

    handled = "treadle_grpc_client_handled_total"
    assert m.value(handled, grpc_method="SubmitTask", grpc_code="OK") == 4
    assert m.value(handled, grpc_method="GetTask", grpc_code="INVALID_ARGUMENT") == 1
    assert m.value("treadle_grpc_client_calls_in_flight") == 0
    assert m.value("treadle_build_info", service="gateway") == 1
    # The gateway's own metrics only: no scheduler families here.
    assert m.value("treadle_tasks_submitted_total") == 0


async def test_subscriptions_open_is_a_live_gauge(
    ws: ClientConnection, http: httpx.AsyncClient, gql: GraphQL
) -> None:
    blocker = (await gql(SUBMIT.replace('"echo"', '"sleep"'), p={"seconds": 0.4}))["data"]
    task = (await gql(SUBMIT, p="watched"))["data"]["submitTask"]["id"]
    await send(ws, id="w1", type="subscribe", payload={"query": UPDATES, "variables": {"id": task}})
    first = await receive(ws)
    assert first["type"] == "next", first

    m = await metrics(http)
    assert m.value("treadle_graphql_subscriptions_open") == 1
    assert m.value("treadle_websocket_connections_open") == 1
    assert m.value("treadle_graphql_operations_in_flight") == 1
    while (message := await receive(ws))["type"] == "next":
        pass
    assert message == {"id": "w1", "type": "complete"}
    assert blocker is not None

    deadline = time.monotonic() + 5
    while (m := await metrics(http)).value("treadle_graphql_subscriptions_open") != 0:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    ops = "treadle_graphql_operations_total"
    assert m.value(ops, operation_type="subscription", outcome="ok") == 1
    assert m.value("treadle_graphql_subscription_duration_seconds_count") == 1
    assert m.value("treadle_websocket_connections_total") == 1
    assert m.value("treadle_websocket_messages_received_total") >= 2  # init, subscribe
    assert m.value("treadle_websocket_messages_sent_total") >= 3  # ack, next..., complete
    stream = "treadle_grpc_client_handled_total"
    assert m.value(stream, grpc_method="WatchTask", grpc_type="server_stream") == 1


@pytest.fixture
async def two_gateways(gateway: Gateway) -> AsyncIterator[tuple[Gateway, Gateway]]:
    from .helpers import started

    other = await started(gateway.settings.scheduler_address)
    yield gateway, other
    await other.stop()


async def test_gateways_in_one_process_keep_their_own_metrics(
    two_gateways: tuple[Gateway, Gateway],
) -> None:
    one, two = two_gateways
    async with httpx.AsyncClient(base_url=one.url) as a, httpx.AsyncClient(base_url=two.url) as b:
        await a.get("/health")
        await a.get("/health")
        await b.get("/health")
        assert (await metrics(a)).value("treadle_http_requests_total", route="/health") == 2
        assert (await metrics(b)).value("treadle_http_requests_total", route="/health") == 1
