"""A real gateway over HTTP on a loopback port, in front of the real scheduler replica."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from treadle.gateway.server import Gateway
from treadle.scheduler.supervisor import Replica

from .helpers import GraphQL, graphql_over, started


@pytest.fixture
async def gateway(replica: Replica) -> AsyncIterator[Gateway]:
    server = await started(replica.address)
    yield server
    await server.stop()


@pytest.fixture
async def http(gateway: Gateway) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        yield client


@pytest.fixture
def gql(http: httpx.AsyncClient) -> GraphQL:
    """POST one operation to the gateway; returns the whole response body."""
    return graphql_over(http)
