"""Rate limits through the gateway: a refused submit is a GraphQL error with
`extensions.code` RESOURCE_EXHAUSTED and `extensions.retryAfter`."""

from __future__ import annotations

import pytest
from support import make_settings

from treadle.scheduler.settings import Settings

from .helpers import GraphQL

SUBMIT = 'mutation { submitTask(input: {name: "echo"}) { id state } }'


@pytest.fixture
def settings(schema: str) -> Settings:
    return make_settings(schema, tenant_submit_rate=2.0, tenant_submit_burst=1)


async def test_a_refused_submit_says_when_to_try_again(gql: GraphQL) -> None:
    first = await gql(SUBMIT)
    assert first["data"]["submitTask"]["state"] == "QUEUED"
    refused = await gql(SUBMIT)
    assert refused["data"] is None
    (error,) = refused["errors"]
    assert error["extensions"]["code"] == "RESOURCE_EXHAUSTED"
    assert 0 < error["extensions"]["retryAfter"] <= 0.5
    assert "tenant 'default' may submit 2 submits per second (burst 1)" in error["message"]
