"""Rate limits through the gateway: a refused submit is a GraphQL error with
`extensions.code` RESOURCE_EXHAUSTED and `extensions.retryAfter`; a queue's
start limit is set and shown in GraphQL."""

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


async def test_a_queue_start_limit_is_set_and_shown(gql: GraphQL) -> None:
    body = await gql(
        """mutation($input: UpdateQueueInput!) {
             updateQueue(input: $input) { name startLimit startWindowSeconds startLimitKey } }""",
        input={"name": "math", "startLimit": 5, "startWindowSeconds": 60, "startLimitKey": "x"},
    )
    assert body["data"]["updateQueue"] == {
        "name": "math",
        "startLimit": 5,
        "startWindowSeconds": 60.0,
        "startLimitKey": "x",
    }
    body = await gql(
        """mutation { updateQueue(input: {name: "math", startLimit: 0, startLimitKey: ""}) {
             startLimit startLimitKey } }"""
    )
    assert body["data"]["updateQueue"] == {"startLimit": None, "startLimitKey": None}
    body = await gql('mutation { updateQueue(input: {name: "math", startLimit: -1}) { name } }')
    assert body["errors"][0]["extensions"]["code"] == "INVALID_ARGUMENT"
