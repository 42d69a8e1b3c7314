"""Helpers for the gateway tests: start a real gateway, speak GraphQL over HTTP, poll."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import httpx

from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings

GraphQL = Callable[..., Awaitable[dict[str, Any]]]


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then closed)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def started(scheduler_address: str, rpc_timeout: float = 5.0) -> Gateway:
    """A gateway listening on a free loopback port."""
    gateway = Gateway(
        Settings(http_port=0, scheduler_address=scheduler_address, rpc_timeout=rpc_timeout)
    )
    await gateway.start()
    return gateway


def graphql_over(http: httpx.AsyncClient) -> GraphQL:
    """POST one operation; the call returns the whole response body (data and errors)."""

    async def call(query: str, **variables: Any) -> dict[str, Any]:
        response = await http.post("/graphql", json={"query": query, "variables": variables})
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    return call


async def poll(
    check: Callable[[], Awaitable[Any]], timeout: float = 5.0, interval: float = 0.02
) -> Any:
    """Call `check` until it returns something truthy, failing after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)
