"""What a gateway shows to whoever reaches it: introspection and GraphiQL only
on a loopback address unless told otherwise; CORS headers for the listed
origins only, and WebSockets only from the gateway's own or a listed origin.
Real gateways over HTTP on loopback; one is given the settings of a gateway
on another address."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus
from websockets.typing import Origin, Subprotocol

from treadle.common import config
from treadle.common.errors import InvalidArgument
from treadle.gateway.app import create_app
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings, is_loopback
from treadle.scheduler.supervisor import Replica

SCHEMA = "{ __schema { queryType { name } } }"
TYPE = '{ __type(name: "Task") { name fields { name } } }'


@contextlib.asynccontextmanager
async def serving(replica: Replica, **settings: Any) -> AsyncIterator[httpx.AsyncClient]:
    """A gateway on loopback whose app has `settings` (an `http_host` among
    them is the app's, not where it listens)."""
    listen = Settings(http_port=0, scheduler_address=replica.address)
    app = create_app(Settings(scheduler_address=replica.address, **settings))
    gateway = Gateway(listen, app)
    await gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            yield http
    finally:
        await gateway.stop()


async def query(http: httpx.AsyncClient, text: str) -> dict[str, Any]:
    response = await http.post("/graphql", json={"query": text})
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.0.0.2", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("10.1.2.3", False),
        ("gateway.example.com", False),
    ],
)
def test_auto_means_on_for_a_loopback_address_only(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback
    assert Settings(http_host=host).introspection() is loopback
    assert Settings(http_host=host, graphql_introspection="on").introspection() is True
    assert Settings(http_host=host, graphql_introspection="off").introspection() is False


def test_the_setting_takes_auto_on_or_off() -> None:
    assert config.load(Settings, {"TREADLE_GRAPHQL_INTROSPECTION": "off"}).introspection() is False
    with pytest.raises(InvalidArgument, match="TREADLE_GRAPHQL_INTROSPECTION must be auto or on"):
        config.load(Settings, {"TREADLE_GRAPHQL_INTROSPECTION": "yes"})


async def test_introspection_is_on_for_a_gateway_on_loopback(replica: Replica) -> None:
    async with serving(replica, http_host="127.0.0.1") as http:
        assert await query(http, SCHEMA) == {"data": {"__schema": {"queryType": {"name": "Query"}}}}
        assert (await query(http, TYPE))["data"]["__type"]["name"] == "Task"


@pytest.mark.parametrize(
    "app_settings",
    [{"http_host": "0.0.0.0"}, {"http_host": "127.0.0.1", "graphql_introspection": "off"}],
    ids=["auto-on-another-address", "off"],
)
async def test_without_introspection_schema_and_type_are_refused(
    replica: Replica, app_settings: dict[str, str]
) -> None:
    async with serving(replica, **app_settings) as http:
        for text, field in ((SCHEMA, "__schema"), (TYPE, "__type")):
            body = await query(http, text)
            assert body.get("data") is None, body
            (error,) = body["errors"]
            assert error["extensions"] == {"code": "INVALID_ARGUMENT"}
            assert error["message"] == (
                f"GraphQL introspection is turned off on this gateway: '{field}' cannot be queried"
            )
        # Hidden in a fragment or behind an alias, it is refused all the same.
        hidden = "query { ...F } fragment F on Query { s: __schema { types { name } } }"
        assert "introspection is turned off" in (await query(http, hidden))["errors"][0]["message"]
        # __typename is not introspection, and ordinary queries run.
        body = await query(http, "{ __typename tasks { __typename nodes { id } } }")
        assert body == {
            "data": {"__typename": "Query", "tasks": {"__typename": "TaskConnection", "nodes": []}}
        }
        # No GraphiQL for a browser; GET queries still work.
        page = await http.get("/graphql", headers={"Accept": "text/html"})
        assert page.status_code == 404
        assert "graphiql" not in page.text.lower()
        response = await http.get("/graphql", params={"query": "{ tasks { nodes { id } } }"})
        assert response.json() == {"data": {"tasks": {"nodes": []}}}


ALLOWED = "https://app.example.com"
OTHER = "https://evil.example.net"


def preflight(origin: str) -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, authorization",
    }


def cors_headers(response: httpx.Response) -> set[str]:
    return {k for k in response.headers if k.lower().startswith("access-control-")}


async def test_without_allowed_origins_no_answer_has_cors_headers(replica: Replica) -> None:
    async with serving(replica) as http:
        assert Settings().allowed_origins() == ()
        answer = await http.options("/graphql", headers=preflight(ALLOWED))
        assert cors_headers(answer) == set(), answer.headers
        answer = await http.post("/graphql", json={"query": SCHEMA}, headers={"Origin": ALLOWED})
        assert answer.status_code == 200
        assert cors_headers(answer) == set(), answer.headers


async def test_an_allowed_origin_gets_cors_headers_and_another_does_not(
    replica: Replica,
) -> None:
    listed = f"{ALLOWED}, http://localhost:3000"
    async with serving(replica, cors_origins=listed) as http:
        answer = await http.options("/graphql", headers=preflight(ALLOWED))
        assert answer.status_code == 200, answer.text
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "POST" in answer.headers["access-control-allow-methods"]
        assert "authorization" in answer.headers["access-control-allow-headers"].lower()
        assert "access-control-allow-credentials" not in answer.headers
        answer = await http.post("/graphql", json={"query": SCHEMA}, headers={"Origin": ALLOWED})
        assert answer.status_code == 200
        assert answer.headers["access-control-allow-origin"] == ALLOWED
        assert "Origin" in answer.headers["vary"]

        refused = await http.options("/graphql", headers=preflight(OTHER))
        assert refused.status_code == 400
        assert "access-control-allow-origin" not in refused.headers
        answer = await http.post("/graphql", json={"query": SCHEMA}, headers={"Origin": OTHER})
        assert "access-control-allow-origin" not in answer.headers


def test_origins_are_checked_at_start() -> None:
    given = " HTTPS://App.Example.com:443/ ,, http://localhost:3000"
    assert Settings(cors_origins=given).allowed_origins() == (ALLOWED, "http://localhost:3000")
    for bad in ("*", "https://app.example.com/app", "app.example.com", "null", "ftp://x.org"):
        with pytest.raises(InvalidArgument, match=r"TREADLE_CORS_ORIGINS: .* is not an origin"):
            config.load(Settings, {"TREADLE_CORS_ORIGINS": bad})


async def open_socket(url: str, origin: str | None) -> None:
    """Open the GraphQL WebSocket as a page of `origin` would, and say hello."""
    async with connect(
        url,
        origin=None if origin is None else Origin(origin),
        subprotocols=[Subprotocol("graphql-transport-ws")],
    ) as ws:
        await ws.send(json.dumps({"type": "connection_init"}))
        assert json.loads(await ws.recv())["type"] == "connection_ack"


async def test_a_websocket_from_another_origin_is_refused(replica: Replica) -> None:
    """Browsers apply no CORS to WebSockets: the gateway checks their Origin."""
    listen = Settings(http_port=0, scheduler_address=replica.address, cors_origins=ALLOWED)
    gateway = Gateway(listen)
    await gateway.start()
    try:
        url = gateway.url.replace("http://", "ws://", 1) + "/graphql"
        with pytest.raises(InvalidStatus) as refused:
            await open_socket(url, OTHER)
        assert refused.value.response.status_code == 403
        await open_socket(url, ALLOWED)  # listed
        await open_socket(url, gateway.url)  # the gateway's own page
        await open_socket(url, None)  # not a browser
    finally:
        await gateway.stop()
