"""`subscription { taskUpdates(id) }` over a real WebSocket, spoken by hand.

The graphql-transport-ws protocol: connection_init → connection_ack, then
subscribe → next … → complete (or a single `error` when the subscription
cannot start). The scheduler replica behind the gateway runs one handler at a
time, so a task submitted behind a short `sleep` is still QUEUED when the
subscription starts.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from support import make_settings
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from treadle.gateway.server import Gateway
from treadle.scheduler.settings import Settings
from treadle.scheduler.supervisor import Replica

from .helpers import GraphQL

SUBMIT = "mutation($input: SubmitTaskInput!) { submitTask(input: $input) { id state } }"
UPDATES = "subscription($id: ID!) { taskUpdates(id: $id) { id state result finishedAt } }"


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema, concurrency=1, drain_timeout=0.1)


@pytest.fixture
async def ws(gateway: Gateway) -> AsyncIterator[ClientConnection]:
    url = gateway.url.replace("http://", "ws://", 1) + "/graphql"
    async with connect(
        url, subprotocols=[Subprotocol("graphql-transport-ws")], open_timeout=5
    ) as connection:
        assert connection.subprotocol == "graphql-transport-ws"
        await send(connection, type="connection_init")
        assert (await receive(connection))["type"] == "connection_ack"
        yield connection


async def send(ws: ClientConnection, **message: Any) -> None:
    await ws.send(json.dumps(message))


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(await asyncio.wait_for(ws.recv(), timeout))
    return message


async def subscribe(ws: ClientConnection, op: str, task_id: str) -> None:
    await send(
        ws, id=op, type="subscribe", payload={"query": UPDATES, "variables": {"id": task_id}}
    )


async def until_done(ws: ClientConnection, op: str) -> list[dict[str, Any]]:
    """Every message of operation `op` up to its `complete` or `error`."""
    messages = []
    while True:
        message = await receive(ws)
        assert message.get("id") == op, message
        messages.append(message)
        if message["type"] in ("complete", "error"):
            return messages


async def submit(gql: GraphQL, name: str, payload: Any) -> str:
    body = await gql(SUBMIT, input={"name": name, "payload": payload})
    assert "errors" not in body, body
    task_id: str = body["data"]["submitTask"]["id"]
    return task_id


async def test_task_updates_stream_queued_running_succeeded_then_complete(
    gql: GraphQL, ws: ClientConnection
) -> None:
    await submit(gql, "sleep", {"seconds": 0.5})  # holds the replica's only slot
    task_id = await submit(gql, "sleep", {"seconds": 0.3})
    began = time.monotonic()
    await subscribe(ws, "1", task_id)
    messages = await until_done(ws, "1")
    assert [m["type"] for m in messages] == ["next", "next", "next", "complete"]
    updates = [m["payload"]["data"]["taskUpdates"] for m in messages[:3]]
    assert all("errors" not in m["payload"] for m in messages[:3])
    assert [u["state"] for u in updates] == ["QUEUED", "RUNNING", "SUCCEEDED"]
    assert {u["id"] for u in updates} == {task_id}
    assert updates[-1]["result"] == "slept" and updates[-1]["finishedAt"] is not None
    assert time.monotonic() - began < 3


async def test_unknown_or_malformed_id_is_an_error_with_a_code(ws: ClientConnection) -> None:
    for op, task_id, code in (
        ("1", str(uuid.uuid4()), "NOT_FOUND"),
        ("2", "not-an-id", "INVALID_ARGUMENT"),
    ):
        await subscribe(ws, op, task_id)
        (message,) = await until_done(ws, op)
        assert message["type"] == "error", message
        (error,) = message["payload"]
        assert error["extensions"] == {"code": code}
        assert error["path"] == ["taskUpdates"]
        assert task_id in error["message"]


async def test_a_finished_task_gives_one_update(gql: GraphQL, ws: ClientConnection) -> None:
    task_id = await submit(gql, "boom", "x")
    await subscribe(ws, "1", task_id)
    messages = await until_done(ws, "1")
    states = [m["payload"]["data"]["taskUpdates"]["state"] for m in messages[:-1]]
    assert states[-1] == "DEAD" and len(states) == len(set(states))
    # Once finished, the stream is that one state.
    await subscribe(ws, "2", task_id)
    messages = await until_done(ws, "2")
    assert [m["type"] for m in messages] == ["next", "complete"]
    assert messages[0]["payload"]["data"]["taskUpdates"]["state"] == "DEAD"


async def test_completing_early_ends_the_watch_on_the_scheduler(
    gql: GraphQL, ws: ClientConnection, replica: Replica
) -> None:
    task_id = await submit(gql, "sleep", {"seconds": 30})
    await subscribe(ws, "1", task_id)
    assert (await receive(ws))["type"] == "next"
    assert replica.parts.watchers is not None and replica.parts.watchers.watched == 1
    await send(ws, id="1", type="complete")
    deadline = time.monotonic() + 5
    while replica.parts.watchers.watched:
        assert time.monotonic() < deadline, "the scheduler still watches the task"
        await asyncio.sleep(0.02)


async def test_a_replica_stopping_mid_stream_is_an_unavailable_error(
    gql: GraphQL, ws: ClientConnection, replica: Replica
) -> None:
    task_id = await submit(gql, "sleep", {"seconds": 30})
    await subscribe(ws, "1", task_id)
    assert (await receive(ws))["type"] == "next"
    await replica.stop()
    messages = await until_done(ws, "1")
    assert [m["type"] for m in messages][-2:] == ["next", "complete"]
    error_message = messages[-2]["payload"]
    assert error_message["data"] is None
    (error,) = error_message["errors"]
    assert error["extensions"] == {"code": "UNAVAILABLE"}
    assert error["message"] == "The service is unavailable; try again later."
    assert error["path"] == ["taskUpdates"]
