"""The gateway forwards each caller's own API key, and the scheduler decides:
GraphQL errors carry UNAUTHENTICATED or PERMISSION_DENIED in extensions.code;
subscriptions authenticate in connection_init; /health/detailed needs a key
the scheduler accepts; callers with different keys never share a group call."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from auth_support import authed_replica, make_key
from websockets.asyncio.client import connect
from websockets.typing import Subprotocol

from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings
from treadle.scheduler.principal import Scope


@dataclass
class Setup:
    gateway: Gateway
    http: httpx.AsyncClient
    admin: str
    reader: str
    submitter: str


@pytest.fixture
async def setup(database_url: str, schema: str) -> AsyncIterator[Setup]:
    async with authed_replica(database_url, schema) as replica:
        keys = [
            await make_key(replica, scopes, name=name)
            for name, scopes in (
                ("admin", [Scope.ADMIN]),
                ("reader", [Scope.READ]),
                ("submitter", [Scope.SUBMIT]),
            )
        ]
        gateway = Gateway(Settings(http_port=0, scheduler_address=replica.address))
        await gateway.start()
        try:
            async with httpx.AsyncClient(base_url=gateway.url) as http:
                yield Setup(gateway, http, *keys)
        finally:
            await gateway.stop()


async def _post(s: Setup, query: str, key: str | None, **variables: Any) -> dict[str, Any]:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    response = await s.http.post(
        "/graphql", json={"query": query, "variables": variables}, headers=headers
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def _codes(body: dict[str, Any]) -> list[str]:
    return [e["extensions"]["code"] for e in body.get("errors", [])]


SUBMIT = 'mutation { submitTask(input: {name: "echo", payload: 1}) { id state } }'


async def test_without_a_key_every_field_is_unauthenticated(setup: Setup) -> None:
    assert _codes(await _post(setup, "{ queues { name } }", None)) == ["UNAUTHENTICATED"]
    assert _codes(await _post(setup, SUBMIT, None)) == ["UNAUTHENTICATED"]
    body = await _post(setup, "{ queues { name } }", "trdl_not_a_key")
    assert _codes(body) == ["UNAUTHENTICATED"]
    assert "Internal" not in json.dumps(body)
    # The header in another form than Bearer: refused the same way.
    response = await setup.http.post(
        "/graphql",
        json={"query": "{ queues { name } }"},
        headers={"authorization": f"Basic {setup.admin}"},
    )
    assert _codes(response.json()) == ["UNAUTHENTICATED"]


async def test_scopes_decide_and_errors_say_which(setup: Setup) -> None:
    submitted = await _post(setup, SUBMIT, setup.submitter)
    task_id = submitted["data"]["submitTask"]["id"]
    assert _codes(await _post(setup, SUBMIT, setup.reader)) == ["PERMISSION_DENIED"]
    assert _codes(await _post(setup, "{ queues { name } }", setup.submitter)) == [
        "PERMISSION_DENIED"
    ]
    audit = "{ auditEvents { events { action target keyName } } }"
    assert _codes(await _post(setup, audit, setup.reader)) == ["PERMISSION_DENIED"]
    cancel = "mutation($id: ID!) { cancelTask(id: $id) { id } }"
    assert _codes(await _post(setup, cancel, setup.reader, id=task_id)) == ["PERMISSION_DENIED"]
    # A submit-only key reads what it submitted; a reader reads everything of its tenant.
    read = "query($id: ID!) { task(id: $id) { id } }"
    for key in (setup.submitter, setup.reader, setup.admin):
        body = await _post(setup, read, key, id=task_id)
        assert body["data"]["task"]["id"] == task_id, body
    others = await _post(setup, SUBMIT, setup.admin)
    mine_only = await _post(setup, read, setup.submitter, id=others["data"]["submitTask"]["id"])
    assert mine_only["data"]["task"] is None and "errors" not in mine_only
    await _post(setup, 'mutation { pauseQueue(name: "default") { name } }', setup.admin)
    audited = await _post(setup, audit, setup.admin)
    assert {"action": "PauseQueue", "target": "default", "keyName": "admin"} in audited["data"][
        "auditEvents"
    ]["events"], audited


async def test_callers_with_different_keys_are_answered_each_as_themselves(
    setup: Setup,
) -> None:
    """Concurrent reads through one gateway (whose client groups calls made
    together) are grouped per key: a reader's reads never ride on the
    submitter's credential, nor the other way round."""
    made = await _post(setup, SUBMIT, setup.admin)
    task_id = made["data"]["submitTask"]["id"]
    read = "query($id: ID!) { task(id: $id) { id } }"
    bodies = await asyncio.gather(
        *(_post(setup, read, key, id=task_id) for key in [setup.submitter, setup.reader] * 20)
    )
    for key, body in zip([setup.submitter, setup.reader] * 20, bodies, strict=True):
        expected = None if key == setup.submitter else {"id": task_id}
        assert body["data"]["task"] == expected, body


async def _subscribe(s: Setup, init: dict[str, Any], task_id: str) -> list[dict[str, Any]]:
    url = s.gateway.url.replace("http://", "ws://") + "/graphql"
    messages = []
    async with connect(url, subprotocols=[Subprotocol("graphql-transport-ws")]) as ws:
        await ws.send(json.dumps({"type": "connection_init", "payload": init}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"
        query = "subscription($id: ID!) { taskUpdates(id: $id) { id state } }"
        payload = {"query": query, "variables": {"id": task_id}}
        await ws.send(json.dumps({"id": "1", "type": "subscribe", "payload": payload}))
        async with asyncio.timeout(10):
            while True:
                message = json.loads(await ws.recv())
                messages.append(message)
                if message["type"] != "next" or message["payload"].get("errors"):
                    break
                if message["payload"]["data"]["taskUpdates"]["state"] == "SUCCEEDED":
                    break
    return messages


async def test_subscriptions_authenticate_in_connection_init(setup: Setup) -> None:
    made = await _post(setup, SUBMIT, setup.admin)
    task_id = made["data"]["submitTask"]["id"]
    refused = await _subscribe(setup, {}, task_id)
    assert refused[-1]["type"] == "error"
    assert refused[-1]["payload"][0]["extensions"]["code"] == "UNAUTHENTICATED"
    watched = await _subscribe(setup, {"authorization": f"Bearer {setup.reader}"}, task_id)
    assert watched[-1]["payload"]["data"]["taskUpdates"]["state"] == "SUCCEEDED", watched


async def test_detailed_health_needs_a_key_the_scheduler_accepts(setup: Setup) -> None:
    without = await setup.http.get("/health/detailed")
    assert without.status_code == 503
    assert "UNAUTHENTICATED" in without.text
    reader = await setup.http.get(
        "/health/detailed", headers={"authorization": f"Bearer {setup.reader}"}
    )
    assert reader.status_code == 200, reader.text
    assert reader.json()["status"] in ("ok", "degraded")
