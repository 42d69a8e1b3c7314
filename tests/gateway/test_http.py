"""The HTTP surface around GraphQL: GraphiQL, /health, an unreachable scheduler."""

from __future__ import annotations

import socket

import httpx
import pytest

from treadle.common.errors import Unavailable
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings

from .helpers import closed_port, graphql_over, started


async def test_graphiql_is_served_to_browsers(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", headers={"Accept": "text/html"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "graphiql" in response.text.lower()


async def test_health(http: httpx.AsyncClient) -> None:
    response = await http.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_get_queries_work(http: httpx.AsyncClient) -> None:
    response = await http.get("/graphql", params={"query": "{ tasks { nodes { id } } }"})
    assert response.status_code == 200
    assert response.json() == {"data": {"tasks": {"nodes": []}}}


async def test_unreachable_scheduler_is_unavailable() -> None:
    gateway = await started(f"127.0.0.1:{closed_port()}", rpc_timeout=2)
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            body = await graphql_over(http)('mutation { submitTask(input: {name: "echo"}) { id } }')
            assert (await http.get("/health")).json() == {"status": "ok"}
    finally:
        await gateway.stop()
    assert body["data"] is None
    (error,) = body["errors"]
    assert error["extensions"] == {"code": "UNAVAILABLE"}
    assert "Traceback" not in error["message"]
    assert 'File "' not in error["message"]


async def test_port_zero_binds_a_real_port_and_stop_is_idempotent(gateway: Gateway) -> None:
    assert gateway.port > 0
    assert gateway.url == f"http://127.0.0.1:{gateway.port}"
    await gateway.stop()
    await gateway.stop()


async def test_port_in_use_fails_start_with_unavailable() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        gateway = Gateway(Settings(http_port=port, scheduler_address="127.0.0.1:1"))
        with pytest.raises(Unavailable, match=f"127.0.0.1:{port}"):
            await gateway.start()
        await gateway.stop()
